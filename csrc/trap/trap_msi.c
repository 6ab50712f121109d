/* MSI and MSI-X, fully emulated: the device's own MSI/MSI-X registers are never
 * written by the guest (the VM layer programs VFIO_DEVICE_SET_IRQS from the events). */
#include "trap.h"
#include "base/le.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define ALL 0xffffffffu

static uint32_t msi_data_off(const struct trap_fn *fn)
{
    return fn->msi.off + (fn->msi.is64 ? 0x0c : 0x08);
}

int trap_msi_setup(struct trap_fn *fn, uint16_t off)
{
    uint32_t count = fn->irqs[LV_IRQ_MSI].count;
    if (!count)
        return -1;   /* VFIO cannot deliver MSI: do not offer it */
    uint16_t flags = (uint16_t)trap_shadow_get(fn, off + 2, 2);
    unsigned mmc = (flags >> 1) & 7;
    if (mmc > 5)
        mmc = 5;     /* reserved encodings */
    while (mmc && (1u << mmc) > count)
        mmc--;
    fn->msi.off = off;
    fn->msi.mmc = (uint8_t)mmc;
    fn->msi.is64 = flags & 0x80;
    fn->msi.pvm = flags & 0x100;
    fn->msi.enabled = false;
    fn->msi.mme = 0;
    fn->msi.addr = 0;
    fn->msi.data = fn->msi.mask = fn->msi.pending = 0;
    memset(fn->msi.src, 0, sizeof fn->msi.src);
    trap_apply_perm(fn, off + 2, 2, ALL, 0x0071, 0, 0, OWN_MSI);
    trap_shadow_set(fn, off + 2, 2, (flags & 0x180u) | mmc << 1);
    trap_apply_perm(fn, off + 4, 4, ALL, 0xfffffffcu, 0, 0, OWN_MSI);
    trap_shadow_set(fn, off + 4, 4, 0);
    if (fn->msi.is64) {
        trap_apply_perm(fn, off + 8, 4, ALL, ALL, 0, 0, OWN_MSI);
        trap_shadow_set(fn, off + 8, 4, 0);
    }
    uint32_t d = msi_data_off(fn);
    /* 16-bit data; the extended message data half reads zero */
    trap_apply_perm(fn, d, 4, ALL, 0xffff, 0, 0, OWN_MSI);
    trap_shadow_set(fn, d, 4, 0);
    if (fn->msi.pvm) {
        unsigned nv = 1u << mmc;
        trap_apply_perm(fn, d + 4, 4, ALL, nv >= 32 ? ALL : (1u << nv) - 1, 0, 0, OWN_MSI);
        trap_shadow_set(fn, d + 4, 4, 0);
        trap_apply_perm(fn, d + 8, 4, ALL, 0, 0, 0, OWN_MSI);   /* pending: emulated */
        trap_shadow_set(fn, d + 8, 4, 0);
    }
    return 0;
}

void trap_hook_msi(struct trap_fn *fn)
{
    if (!fn->msi.off)
        return;
    uint32_t off = fn->msi.off, d = msi_data_off(fn);
    uint16_t flags = (uint16_t)trap_shadow_get(fn, off + 2, 2);
    unsigned mme = (flags >> 4) & 7;
    if (mme > fn->msi.mmc) {
        /* more vectors than we can deliver: clamp as hardware would */
        mme = fn->msi.mmc;
        flags = (uint16_t)((flags & ~0x70u) | mme << 4);
        trap_shadow_set(fn, off + 2, 2, flags);
    }
    bool en = flags & 1;
    uint64_t addr = trap_shadow_get(fn, off + 4, 4);
    if (fn->msi.is64)
        addr |= (uint64_t)trap_shadow_get(fn, off + 8, 4) << 32;
    uint32_t data = trap_shadow_get(fn, d, 2);
    uint32_t mask = fn->msi.pvm ? trap_shadow_get(fn, d + 4, 4) : 0;
    struct trap_event ev = {.addr = addr, .data = data, .count = 1u << mme, .mask = mask};
    if (en != fn->msi.enabled) {
        ev.type = TRAP_EV_MSI_ENABLE;
        ev.flags = en;
        trap_event(fn, &ev);
    } else if (en && (addr != fn->msi.addr || data != fn->msi.data || mme != fn->msi.mme)) {
        ev.type = TRAP_EV_MSI_ROUTE;
        trap_event(fn, &ev);
    }
    uint32_t changed = mask ^ fn->msi.mask;
    for (unsigned v = 0; changed && v < 32; v++)
        if (changed & (1u << v)) {
            struct trap_event me = {.type = TRAP_EV_MSI_MASK, .vector = v,
                                    .flags = (mask >> v) & 1, .addr = addr, .data = data + v};
            trap_event(fn, &me);
        }
    fn->msi.enabled = en;
    fn->msi.mme = (uint8_t)mme;
    fn->msi.addr = addr;
    fn->msi.data = data;
    fn->msi.mask = mask;
}

/* Has the source eventfd a count? A poll of 0 ms: it does not consume the count, which
 * the VM layer takes when the vector is unmasked. */
static bool source_pending(const int *src)
{
    if (!src || *src < 0)
        return false;
    struct pollfd p = {.fd = *src, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static unsigned msi_vectors(const struct trap_fn *fn) { return 1u << fn->msi.mmc; }

int trap_msi_set_pending(struct trap_fn *fn, unsigned vector, bool on)
{
    if (!fn->msi.off || !fn->msi.pvm || vector >= msi_vectors(fn))
        return -EINVAL;
    fn->msi.pending = on ? fn->msi.pending | 1u << vector : fn->msi.pending & ~(1u << vector);
    trap_msi_sync_pending(fn, msi_data_off(fn) + 8, 4);
    return 0;
}

void trap_msi_sync_pending(struct trap_fn *fn, uint32_t off, uint32_t len)
{
    if (!fn->msi.off || !fn->msi.pvm)
        return;
    uint32_t p = msi_data_off(fn) + 8;
    if (off >= p + 4 || off + len <= p)
        return;
    uint32_t v = fn->msi.pending;
    for (unsigned i = 0; i < msi_vectors(fn); i++)
        if (source_pending(fn->msi.src[i]))
            v |= 1u << i;
    trap_shadow_set(fn, p, 4, v);
}

int trap_set_source(struct trap_fn *fn, bool msix, unsigned vector, const int *fd)
{
    if (msix) {
        if (!fn->msix.off || vector >= fn->msix.n)
            return -EINVAL;
        fn->msix.src[vector] = fd;
    } else {
        if (!fn->msi.off || vector >= msi_vectors(fn))
            return -EINVAL;
        fn->msi.src[vector] = fd;
    }
    return 0;
}

static bool msix_fits(const struct trap_fn *fn, unsigned bar, uint64_t off, uint64_t len)
{
    if (bar >= 6)
        return false;
    const struct trap_bar *b = &fn->bars[bar];
    return b->size && !b->upper && off < b->size && len <= b->size - off;
}

static uint64_t pba_len(uint16_t n)
{
    return ((uint64_t)n + 63) / 64 * 8;
}

/* Would a table of n entries and its PBA share bytes? */
static bool table_pba_overlap(unsigned tbar, uint64_t toff, unsigned pbar, uint64_t poff, uint16_t n)
{
    return tbar == pbar && toff < poff + pba_len(n) && poff < toff + (uint64_t)n * 16;
}

int trap_msix_setup(struct trap_fn *fn, uint16_t off)
{
    if (!fn->irqs[LV_IRQ_MSIX].count)
        return -1;
    uint16_t ctrl = (uint16_t)trap_shadow_get(fn, off + 2, 2);
    uint32_t tbl = trap_shadow_get(fn, off + 4, 4), pba = trap_shadow_get(fn, off + 8, 4);
    uint16_t n = (uint16_t)((ctrl & 0x7ff) + 1);
    if (!msix_fits(fn, tbl & 7, tbl & ~7u, (uint64_t)n * 16) ||
        !msix_fits(fn, pba & 7, pba & ~7u, pba_len(n)))
        return -1;   /* table outside any BAR: malformed, hide */
    if (table_pba_overlap(tbl & 7, tbl & ~7u, pba & 7, pba & ~7u, n))
        return -1;   /* table and PBA overlap: malformed, hide (as relocation refuses) */
    struct trap_msix_entry *t = calloc(n, sizeof *t);
    const int **src = calloc(n, sizeof *src);
    if (!t || !src) {
        free(t);
        free(src);
        return -1;
    }
    free(fn->msix.table);
    free(fn->msix.src);
    fn->msix.table = t;
    fn->msix.src = src;
    for (unsigned i = 0; i < n; i++)
        t[i].b[12] = 1;   /* vectors start masked */
    fn->msix.off = off;
    fn->msix.n = n;
    fn->msix.table_bar = tbl & 7;
    fn->msix.table_off = tbl & ~7u;
    fn->msix.pba_bar = pba & 7;
    fn->msix.pba_off = pba & ~7u;
    fn->msix.enabled = fn->msix.fmask = false;
    memset(fn->msix.pending, 0, sizeof fn->msix.pending);
    trap_apply_perm(fn, off + 2, 2, ALL, 0xc000, 0, 0, OWN_MSIX);
    trap_shadow_set(fn, off + 2, 2, ctrl & 0x7ffu);
    trap_apply_perm(fn, off + 4, 4, ALL, 0, 0, 0, OWN_NONE);
    trap_apply_perm(fn, off + 8, 4, ALL, 0, 0, 0, OWN_NONE);
    return 0;
}

void trap_hook_msix(struct trap_fn *fn)
{
    if (!fn->msix.off)
        return;
    uint16_t ctrl = (uint16_t)trap_shadow_get(fn, fn->msix.off + 2, 2);
    bool en = ctrl & 0x8000, fm = ctrl & 0x4000;
    if (en != fn->msix.enabled) {
        struct trap_event ev = {.type = TRAP_EV_MSIX_ENABLE, .count = fn->msix.n,
                                .flags = (uint16_t)(en | fm << 1)};
        trap_event(fn, &ev);
    } else if (fm != fn->msix.fmask) {
        struct trap_event ev = {.type = TRAP_EV_MSIX_FMASK, .flags = fm};
        trap_event(fn, &ev);
    }
    fn->msix.enabled = en;
    fn->msix.fmask = fm;
}

int trap_msix_relocate(struct trap_fn *fn, unsigned bar, uint64_t table_off, uint64_t pba_off)
{
    if (!fn->msix.off)
        return -ENOENT;
    uint64_t tl = (uint64_t)fn->msix.n * 16, pl = pba_len(fn->msix.n);
    if ((table_off & 7) || (pba_off & 7) || table_off > UINT32_MAX || pba_off > UINT32_MAX ||
        !msix_fits(fn, bar, table_off, tl) || !msix_fits(fn, bar, pba_off, pl) ||
        table_pba_overlap(bar, table_off, bar, pba_off, fn->msix.n))
        return -EINVAL;
    fn->msix.table_bar = fn->msix.pba_bar = (uint8_t)bar;
    fn->msix.table_off = table_off;
    fn->msix.pba_off = pba_off;
    trap_shadow_set(fn, fn->msix.off + 4, 4, (uint32_t)table_off | bar);
    trap_shadow_set(fn, fn->msix.off + 8, 4, (uint32_t)pba_off | bar);
    return 0;
}

int trap_msix_set_pending(struct trap_fn *fn, unsigned vector, bool on)
{
    if (!fn->msix.off || vector >= fn->msix.n)
        return -EINVAL;
    uint64_t bit = 1ull << (vector % 64);
    if (on)
        fn->msix.pending[vector / 64] |= bit;
    else
        fn->msix.pending[vector / 64] &= ~bit;
    return 0;
}

/* Guest-writable bits of a table entry: address (dword aligned), upper address, data,
 * and only the mask bit of vector control. */
static const uint8_t entry_wmask[16] = {0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                        0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00};

static uint64_t entry_addr(const struct trap_msix_entry *e) { return lv_le_get(e->b, 8); }

static uint32_t entry_data(const struct trap_msix_entry *e)
{
    return (uint32_t)lv_le_get(e->b + 8, 4);
}

static void entry_events(struct trap_fn *fn, unsigned v, const struct trap_msix_entry *old)
{
    const struct trap_msix_entry *e = &fn->msix.table[v];
    struct trap_event ev = {.vector = v, .addr = entry_addr(e), .data = entry_data(e)};
    if (memcmp(old->b, e->b, 12)) {
        ev.type = TRAP_EV_MSIX_ROUTE;
        trap_event(fn, &ev);
    }
    if ((old->b[12] ^ e->b[12]) & 1) {
        ev.type = TRAP_EV_MSIX_MASK;
        ev.flags = e->b[12] & 1;
        trap_event(fn, &ev);
    }
}

/* Which part of MSI-X an access at [off, off+len) of `bar` touches: 0 none, 1 the table,
 * 2 the PBA. The table wins where both would claim it (setup refuses overlaps, this keeps
 * every index below inside the array of the structure it names anyway). */
enum { MSIX_NONE, MSIX_TABLE, MSIX_PBA };
static int msix_part(const struct trap_fn *fn, unsigned bar, uint64_t off, uint32_t len)
{
    if (!fn->msix.off)
        return MSIX_NONE;
    uint64_t tl = (uint64_t)fn->msix.n * 16, pl = pba_len(fn->msix.n);
    if (bar == fn->msix.table_bar && off < fn->msix.table_off + tl && off + len > fn->msix.table_off)
        return MSIX_TABLE;
    if (bar == fn->msix.pba_bar && off < fn->msix.pba_off + pl && off + len > fn->msix.pba_off)
        return MSIX_PBA;
    return MSIX_NONE;
}

bool trap_msix_claims(const struct trap_fn *fn, unsigned bar, uint64_t off, uint32_t len)
{
    return msix_part(fn, bar, off, len) != MSIX_NONE;
}

int trap_msix_access(struct trap_fn *fn, unsigned bar, uint64_t off, uint32_t len, bool write,
                     uint64_t *val)
{
    int part = msix_part(fn, bar, off, len);
    if (part == MSIX_NONE)
        return 0;
    bool in_t = part == MSIX_TABLE, in_p = part == MSIX_PBA;
    uint64_t tl = (uint64_t)fn->msix.n * 16, pl = pba_len(fn->msix.n);
    uint64_t base = in_t ? fn->msix.table_off : fn->msix.pba_off, lim = in_t ? tl : pl;
    if (off < base || off + len > base + lim) {
        if (!write)
            *val = len >= 8 ? UINT64_MAX : (1ull << (8 * len)) - 1;
        return 1;   /* straddles the table edge: ignored */
    }
    uint64_t rel = off - base;
    if (in_p) {
        if (!write) {
            uint64_t v = 0;
            for (uint32_t i = 0; i < len; i++) {
                uint64_t byte = rel + i;
                uint8_t bits = (uint8_t)(fn->msix.pending[byte / 8] >> (8 * (byte % 8)));
                for (unsigned b = 0; b < 8; b++) {
                    uint64_t vec = byte * 8 + b;
                    if (vec < fn->msix.n && source_pending(fn->msix.src[vec]))
                        bits |= (uint8_t)(1u << b);
                }
                v |= (uint64_t)bits << (8 * i);
            }
            *val = v;
        }
        return 1;   /* PBA is read-only */
    }
    if (!write) {
        uint64_t v = 0;
        for (uint32_t i = 0; i < len; i++) {
            uint64_t byte = rel + i;
            v |= (uint64_t)fn->msix.table[byte / 16].b[byte % 16] << (8 * i);
        }
        *val = v;
        return 1;
    }
    /* an access of at most 8 bytes touches at most two entries */
    unsigned first = (unsigned)(rel / 16), last = (unsigned)((rel + len - 1) / 16);
    struct trap_msix_entry old[2] = {fn->msix.table[first], fn->msix.table[last]};
    for (uint32_t i = 0; i < len; i++) {
        uint64_t byte = rel + i;
        uint8_t *p = &fn->msix.table[byte / 16].b[byte % 16];
        uint8_t m = entry_wmask[byte % 16];
        *p = (uint8_t)((*p & ~m) | ((uint8_t)(*val >> (8 * i)) & m));
    }
    entry_events(fn, first, &old[0]);
    if (last != first)
        entry_events(fn, last, &old[1]);
    return 1;
}
