/* Glue between the trap core (vfio.trap) and the KVM run loop, so a guest's config and
 * trapped BAR accesses are answered in C without reaching Lua:
 *   - the "vfio.trap" metatable gets __pci_cfg (C host bridge functions, pcihost.h) and
 *     __kvm_io (handled ranges, kvm.h); the opaque pointer is the trap's userdata block,
 *     whose first member is its struct trap_fn. Accesses that touch a Lua-handled window
 *     are left alone here: those handlers need a Lua call frame (trap:windows() tells the
 *     VM layer which ones to keep out of the C ranges). */
#include "l_trap.h"
#include "base/le.h"
#include "kvm/kvm.h"
#include "kvm/pcihost.h"

#include <errno.h>
#include <stdint.h>

/* A closed backend has no ops: the function then answers like an absent one. */
static struct trap_fn *live_fn(void *opaque)
{
    struct trap_fn *fn = opaque;
    return fn && fn->be && fn->be->ops ? fn : NULL;
}

static int cfg_read(void *opaque, uint32_t off, uint32_t len, uint32_t *val)
{
    struct trap_fn *fn = live_fn(opaque);
    if (!fn)
        return -ENODEV;
    return trap_cfg_read(fn, off, len, val);
}

static int cfg_write(void *opaque, uint32_t off, uint32_t len, uint32_t val)
{
    struct trap_fn *fn = live_fn(opaque);
    if (!fn)
        return -ENODEV;
    int rc = trap_cfg_write(fn, off, len, val);
    if (rc < 0)
        return rc;
    return fn->ev_count ? LV_PCI_CFG_EVENT : 0;
}

static const struct lv_pci_cfg_ops trap_cfg_ops = {.read = cfg_read, .write = cfg_write};

/* True if [addr, addr+len) touches a Lua-handled window of the BAR decoding it. Those
 * handlers run on the trap method's Lua frame, which the run loop does not have. */
static bool hits_lua_window(const struct trap_fn *fn, bool io, uint64_t addr, uint32_t len)
{
    for (unsigned i = 0; i < TRAP_NBARS; i++) {
        const struct trap_bar *b = &fn->bars[i];
        if (!b->size || b->upper || b->mapped == TRAP_UNMAPPED || b->io != io ||
            addr < b->mapped || addr - b->mapped >= b->size)
            continue;
        uint64_t off = addr - b->mapped;
        for (unsigned w = 0; w < fn->nwindows; w++) {
            const struct trap_window *win = &fn->windows[w];
            if (win->bar == i && win->kind == WIN_HANDLER && off < win->off + win->len &&
                off + len > win->off)
                return true;
        }
        return false;
    }
    return false;
}

static int io_access(void *opaque, int space, uint64_t addr, uint8_t *data, unsigned size,
                     int is_write)
{
    struct trap_fn *fn = live_fn(opaque);
    bool io = space == LV_KVM_PIO;
    if (!fn || !(size == 1 || size == 2 || size == 4 || size == 8) ||
        hits_lua_window(fn, io, addr, size))
        return LV_KVM_IO_DONE;   /* reads stay all ones, writes are dropped */
    uint64_t v = is_write ? lv_le_get(data, size) : 0;
    int rc = trap_addr_access(fn, io, addr, size, is_write, &v);
    if (!is_write && rc >= 0)
        lv_le_put(data, v, size);
    return fn->ev_count ? LV_KVM_IO_STOP : LV_KVM_IO_DONE;
}

static const struct lv_kvm_io_ops trap_io_ops = {.access = io_access, .release = NULL};

void lv_open_trap_kvm(lua_State *L)
{
    if (luaL_getmetatable(L, LV_TRAP_T) == LUA_TTABLE) {
        lua_pushlightuserdata(L, (void *)&trap_cfg_ops);
        lua_setfield(L, -2, LV_PCI_CFG_FIELD);
        lua_pushlightuserdata(L, (void *)&trap_io_ops);
        lua_setfield(L, -2, LV_KVM_IO_FIELD);
    }
    lua_pop(L, 1);
}
