/* BAR emulation and BAR access dispatch.
 * The guest programs BARs in the shadow only: sizing is answered from the writable
 * mask (never by writing the device), and a mapping exists only while COMMAND enables
 * the BAR's space and the address is valid. Dispatch goes MSI-X table/PBA, then quirk
 * windows, then the device region. */
#include "trap.h"
#include "base/le.h"

#include <errno.h>
#include <string.h>

#define CMD_IO 0x1
#define CMD_MEM 0x2

static uint64_t pow2_at_least(uint64_t v)
{
    uint64_t p = 1;
    while (p < v && p)
        p <<= 1;
    return p;   /* 0 on overflow */
}

static uint32_t bar_off(unsigned i)
{
    return i == 6 ? 0x30 : 0x10 + 4 * i;
}

/* (Re)write the masks of BAR i from bars[i]; the address is cleared. */
static void bar_perms(struct trap_fn *fn, unsigned i)
{
    struct trap_bar *b = &fn->bars[i];
    uint32_t off = bar_off(i);
    uint8_t own = i == 6 ? OWN_ROM : OWN_BAR;
    uint32_t wm = 0, shadow = 0;
    if (b->size) {
        if (i == 6)
            wm = ((uint32_t)~(b->size - 1) & 0xfffff800u) | 1u;
        else if (b->io)
            wm = (uint32_t)~(b->size - 1) & ~3u;
        else
            wm = (uint32_t)~(b->size - 1) & ~0xfu;
        shadow = b->type;
    }
    trap_apply_perm(fn, off, 4, 0xffffffffu, wm, 0, 0, own);
    trap_shadow_set(fn, off, 4, shadow);
    if (i < 6 && b->is64 && i + 1 < 6) {
        trap_apply_perm(fn, off + 4, 4, 0xffffffffu, (uint32_t)(~(b->size - 1) >> 32), 0, 0, own);
        trap_shadow_set(fn, off + 4, 4, 0);
    }
}

int trap_bar_setup(struct trap_fn *fn)
{
    memset(fn->bars, 0, sizeof fn->bars);
    for (unsigned i = 0; i < 6; i++) {
        struct trap_bar *b = &fn->bars[i];
        uint32_t raw = (uint32_t)fn->dev_init[bar_off(i)] | (uint32_t)fn->dev_init[bar_off(i) + 1] << 8;
        uint64_t size = fn->regions[i].size;
        b->io = raw & 1;
        if (b->io) {
            b->type = 1;
        } else {
            b->type = raw & 0xf;
            b->is64 = ((raw >> 1) & 3) == 2;
            b->prefetch = raw & 8;
            if (b->is64 && i == 5) {   /* no room for the upper half: treat as 32-bit */
                b->is64 = false;
                b->type &= ~6u;
            }
            if (((raw >> 1) & 3) == 1 || ((raw >> 1) & 3) == 3)
                b->type &= ~6u;         /* reserved/below-1M types: plain 32-bit */
        }
        uint64_t vsize = size ? pow2_at_least(size < (b->io ? 4u : 16u) ? (b->io ? 4u : 16u) : size) : 0;
        /* a 32-bit BAR cannot describe 4 GiB or more */
        if (vsize && !b->is64 && vsize > (1ull << 31))
            vsize = 0;
        if (!vsize) {
            memset(b, 0, sizeof *b);
            bar_perms(fn, i);
            continue;
        }
        b->size = vsize;
        b->phys_size = size;
        b->addr = 0;
        b->mapped = TRAP_UNMAPPED;
        bar_perms(fn, i);
        if (b->is64) {
            fn->bars[i + 1].upper = true;
            i++;
        }
    }
    struct trap_bar *rom = &fn->bars[6];
    uint64_t rs = fn->regions[LV_REGION_ROM].size;
    if (rs && rs <= (1ull << 31)) {
        rom->size = pow2_at_least(rs < 2048 ? 2048 : rs);
        rom->phys_size = rs;
        rom->mapped = TRAP_UNMAPPED;
    }
    bar_perms(fn, 6);
    return 0;
}

static uint64_t bar_guest_addr(const struct trap_fn *fn, unsigned i)
{
    const struct trap_bar *b = &fn->bars[i];
    uint32_t lo = trap_shadow_get(fn, bar_off(i), 4);
    if (i == 6)
        return lo & 0xfffff800u;
    if (b->io)
        return lo & ~3u;
    uint64_t a = lo & ~0xfu;
    if (b->is64)
        a |= (uint64_t)trap_shadow_get(fn, bar_off(i) + 4, 4) << 32;
    return a;
}

/* An address decodes only if it is non-zero and the whole BAR fits its space: the
 * all-ones pattern left by sizing does not (like real bridges, which ignore it). */
static bool bar_addr_valid(const struct trap_bar *b, uint64_t a, bool rom)
{
    uint64_t last = a + b->size - 1;
    if (a == 0 || last < a)
        return false;
    if (b->io)
        return last <= 0xffff;
    if (!b->is64 || rom)
        return last < 0xffffffffull;
    return last != UINT64_MAX;
}

void trap_hook_bars(struct trap_fn *fn)
{
    for (unsigned i = 0; i < TRAP_NBARS; i++) {
        struct trap_bar *b = &fn->bars[i];
        if (!b->size || b->upper)
            continue;
        b->addr = bar_guest_addr(fn, i);
        bool on = (fn->command & (b->io ? CMD_IO : CMD_MEM)) != 0;
        if (i == 6)
            on = on && (fn->shadow[0x30] & 1);
        uint64_t m = on && bar_addr_valid(b, b->addr, i == 6) ? b->addr : TRAP_UNMAPPED;
        if (m != b->mapped) {
            struct trap_event ev = {.type = TRAP_EV_BAR_MAP, .bar = (uint8_t)i, .addr = m,
                                    .old = b->mapped, .flags = b->io ? 2 : 1};
            b->mapped = m;
            trap_event(fn, &ev);
        }
    }
}

void trap_hook_command(struct trap_fn *fn)
{
    uint16_t cmd = (uint16_t)trap_shadow_get(fn, 0x04, 2);
    if ((cmd ^ fn->command) & (CMD_IO | CMD_MEM)) {
        struct trap_event ev = {.type = TRAP_EV_DECODE, .data = cmd,
                                .flags = (uint16_t)(((cmd & CMD_MEM) ? 1 : 0) |
                                                    ((cmd & CMD_IO) ? 2 : 0))};
        trap_event(fn, &ev);
    }
    fn->command = cmd;
    trap_hook_bars(fn);
}

static uint64_t ones(uint32_t len)
{
    return len >= 8 ? UINT64_MAX : (1ull << (8 * len)) - 1;
}

static int window_access(struct trap_fn *fn, const struct trap_window *w, uint64_t rel,
                         uint32_t len, bool write, uint64_t *val)
{
    if (w->kind == WIN_HANDLER)
        return w->handler(fn, w->ctx, w->id, write, rel, len, val);
    /* config mirror: through the trap, so emulated registers stay emulated; 8-byte
     * accesses are two dword accesses */
    uint32_t step = len == 8 ? 4 : len, n = len == 8 ? 2 : 1;
    uint64_t out = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t co = (uint32_t)(w->cfg_off + rel + k * step);
        uint32_t v = (uint32_t)(*val >> (32 * k));
        int rc = write ? trap_cfg_write(fn, co, step, v) : trap_cfg_read(fn, co, step, &v);
        if (rc < 0)
            return rc;
        out |= (uint64_t)v << (32 * k);
    }
    if (!write)
        *val = out;
    return 0;
}

int trap_bar_access(struct trap_fn *fn, unsigned bar, uint64_t off, uint32_t len, bool write,
                    uint64_t *val)
{
    if (bar >= TRAP_NBARS || !(len == 1 || len == 2 || len == 4 || len == 8))
        return -EINVAL;
    struct trap_bar *b = &fn->bars[bar];
    if (!b->size || b->upper || off >= b->size || len > b->size - off)
        return -ERANGE;
    if (fn->closed) {
        /* a closed function forwards nothing, not even where its MSI-X table was */
        if (!write)
            *val = ones(len);
        return 0;
    }
    if (!write)
        *val = 0;
    else
        *val &= ones(len);
    if (bar == 6) {
        if (write)
            return 0;   /* ROM */
    } else {
        int r = trap_msix_access(fn, bar, off, len, write, val);
        if (r)
            return r < 0 ? r : 0;
        const struct trap_window *w = trap_window_at(fn, bar, off, len);
        if (w) {
            if (off < w->off || off + len > w->off + w->len) {
                if (!write)
                    *val = ones(len);   /* straddles the window edge */
                return 0;
            }
            return window_access(fn, w, off - w->off, len, write, val);
        }
    }
    if (off >= b->phys_size || len > b->phys_size - off) {
        /* past the device's region (BAR rounded up or grown by a quirk) */
        if (!write)
            *val = bar == 6 ? ones(len) : 0;
        return 0;
    }
    uint8_t buf[8];
    const struct lv_backend_ops *ops = fn->be->ops;
    unsigned region = bar;
    if (write) {
        lv_le_put(buf, *val, len);
        return ops->region_write(fn->be->ctx, region, off, buf, len);
    }
    int rc = ops->region_read(fn->be->ctx, region, off, buf, len);
    if (rc < 0) {
        *val = ones(len);
        return rc;
    }
    *val = lv_le_get(buf, len);
    return 0;
}

int trap_decode(const struct trap_fn *fn, bool io, uint64_t addr, uint32_t len, uint64_t *off)
{
    for (unsigned i = 0; i < TRAP_NBARS; i++) {
        const struct trap_bar *b = &fn->bars[i];
        if (!b->size || b->upper || b->mapped == TRAP_UNMAPPED || b->io != io)
            continue;
        if (addr < b->mapped || addr - b->mapped >= b->size || len > b->size - (addr - b->mapped))
            continue;
        *off = addr - b->mapped;
        return (int)i;
    }
    return -1;
}

const struct trap_window *trap_window_at(const struct trap_fn *fn, unsigned bar, uint64_t off,
                                         uint32_t len)
{
    for (unsigned i = 0; i < fn->nwindows; i++) {
        const struct trap_window *w = &fn->windows[i];
        if (w->bar == bar && off < w->off + w->len && off + len > w->off)
            return w;
    }
    return NULL;
}

/* Whether trap_bar_access would give [off, off+len) of `bar` to a handler window: the
 * MSI-X table and PBA come first, then a window that holds the whole access (one that
 * straddles a window's edge reads all ones without a handler). */
static bool handler_takes(const struct trap_fn *fn, unsigned bar, uint64_t off, uint32_t len)
{
    if (bar == 6 || fn->closed || trap_msix_claims(fn, bar, off, len))
        return false;
    const struct trap_window *w = trap_window_at(fn, bar, off, len);
    return w && w->kind == WIN_HANDLER && off >= w->off && off + len <= w->off + w->len;
}

static int addr_access(struct trap_fn *fn, bool io, uint64_t addr, uint32_t len, bool write,
                       uint64_t *val, bool handlers)
{
    uint64_t off;
    int bar = trap_decode(fn, io, addr, len, &off);
    if (bar >= 0) {
        if (!handlers && handler_takes(fn, (unsigned)bar, off, len))
            return TRAP_PASS;
        return trap_bar_access(fn, (unsigned)bar, off, len, write, val);
    }
    if (!write)
        *val = ones(len);
    return -ENXIO;   /* nobody decodes it: reads float high */
}

int trap_addr_access(struct trap_fn *fn, bool io, uint64_t addr, uint32_t len, bool write,
                     uint64_t *val)
{
    return addr_access(fn, io, addr, len, write, val, true);
}

int trap_addr_try(struct trap_fn *fn, bool io, uint64_t addr, uint32_t len, bool write,
                  uint64_t *val)
{
    return addr_access(fn, io, addr, len, write, val, false);
}

int trap_set_bar_size(struct trap_fn *fn, unsigned bar, uint64_t size)
{
    if (bar >= 6 || fn->bars[bar].upper || !size || (size & (size - 1)))
        return -EINVAL;
    struct trap_bar *b = &fn->bars[bar];
    if (!b->size) {
        /* a new 32-bit memory BAR in an unused slot (for a relocated MSI-X table) */
        if (size < 16 || size > (1ull << 31))
            return -EINVAL;
        memset(b, 0, sizeof *b);
        b->size = size;
        b->mapped = TRAP_UNMAPPED;
    } else {
        if (size < b->size || (!b->is64 && size > (1ull << 31)) || (b->io && size > 0x10000))
            return -EINVAL;
        b->size = size;
    }
    bar_perms(fn, bar);
    trap_hook_bars(fn);
    return 0;
}

int trap_hide_rom(struct trap_fn *fn)
{
    struct trap_bar *rom = &fn->bars[6];
    bool was = rom->mapped != TRAP_UNMAPPED && rom->size;
    uint64_t old = rom->mapped;
    memset(rom, 0, sizeof *rom);
    rom->mapped = TRAP_UNMAPPED;
    bar_perms(fn, 6);
    if (was) {
        struct trap_event ev = {.type = TRAP_EV_BAR_MAP, .bar = 6, .addr = TRAP_UNMAPPED,
                                .old = old, .flags = 1};
        trap_event(fn, &ev);
    }
    return 0;
}

int trap_add_window(struct trap_fn *fn, const struct trap_window *w)
{
    if (w->bar >= 6 || fn->nwindows >= TRAP_WINDOWS_MAX || !w->len)
        return -EINVAL;
    const struct trap_bar *b = &fn->bars[w->bar];
    if (!b->size || b->upper || w->off >= b->size || w->len > b->size - w->off)
        return -ERANGE;
    if (w->kind == WIN_MIRROR && (w->cfg_off >= TRAP_CFG_MAX || w->len > TRAP_CFG_MAX - w->cfg_off))
        return -ERANGE;
    if (w->kind == WIN_HANDLER && !w->handler)
        return -EINVAL;
    for (unsigned i = 0; i < fn->nwindows; i++) {
        const struct trap_window *o = &fn->windows[i];
        if (o->bar == w->bar && w->off < o->off + o->len && o->off < w->off + w->len)
            return -EBUSY;
    }
    fn->windows[fn->nwindows++] = *w;
    return 0;
}
