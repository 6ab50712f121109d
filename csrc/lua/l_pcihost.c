/* Lua binding: vfio.core.pcihost, the C host bridge (kvm/pcihost.h). The functions it
 * serves are C-backed: a trap (wire/trap_kvm.h, registered by l_trap_kvm.c), an emulated config space (l_cfgspace.c)
 * or a root port (l_rootport.c), which routes accesses to the bus behind it. */
#include "lv.h"
#include "kvm/pcihost.h"
#include "base/le.h"

#include <errno.h>
#include <string.h>

#define PCIHOST_T "vfio.pcihost"

static int l_noop(lua_State *L) { (void)L; return 0; }

/* ---- vfio.pcihost ---- */

static int l_pcihost_new(lua_State *L)
{
    uint64_t base = 0, buses = 0;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        if (lua_getfield(L, 1, "ecam_base") != LUA_TNIL) {
            base = (uint64_t)luaL_checkinteger(L, -1);
            buses = 1;
        }
        if (lua_getfield(L, 1, "ecam_buses") != LUA_TNIL)
            buses = (uint64_t)luaL_checkinteger(L, -1);
        lua_pop(L, 2);
        if (base && ((base & 0xfffff) || buses < 1 || buses > 256))
            return luaL_argerror(L, 1, "ecam_base must be 1 MiB aligned, ecam_buses in [1, 256]");
    }
    struct kvm_pcihost *h = lv_newobject(L, sizeof *h, PCIHOST_T, 1);
    h->ecam_base = base;
    h->ecam_size = base ? buses * KVM_PCIHOST_ECAM_BUS_SIZE : 0;
    lua_newtable(L); /* attached objects, kept alive by bdf */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static void checkbdf(lua_State *L, unsigned *b, unsigned *d, unsigned *f)
{
    *b = (unsigned)lv_checkrange(L, 2, 0, 255);
    *d = (unsigned)lv_checkrange(L, 3, 0, 31);
    *f = (unsigned)lv_checkrange(L, 4, 0, 7);
}

/* host:attach(bus, dev, fn, obj): obj implements config access in C (LV_CAP_PCI_CFG). */
static int l_pcihost_attach(lua_State *L)
{
    struct kvm_pcihost *h = luaL_checkudata(L, 1, PCIHOST_T);
    unsigned b, d, f;
    checkbdf(L, &b, &d, &f);
    const struct kvm_pci_cfg_ops *ops = lv_testcap(L, 5, LV_CAP_PCI_CFG);
    if (!ops)
        return luaL_argerror(L, 5, "a PCI function with config access in C (vfio.trap, vfio.cfgspace, vfio.rootport)");
    int e = kvm_pcihost_attach(h, b, d, f, ops, lua_touserdata(L, 5));
    if (e < 0)
        return lv_syserrorf(L, -e, "attach", "%02x:%02x.%u", b, d, f);
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 5);
    lua_rawseti(L, -2, b << 8 | d << 3 | f);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_pcihost_detach(lua_State *L)
{
    struct kvm_pcihost *h = luaL_checkudata(L, 1, PCIHOST_T);
    unsigned b, d, f;
    checkbdf(L, &b, &d, &f);
    int e = kvm_pcihost_detach(h, b, d, f);
    if (e < 0)
        return lv_syserrorf(L, -e, "detach", "%02x:%02x.%u", b, d, f);
    lua_getiuservalue(L, 1, 1);
    lua_pushnil(L);
    lua_rawseti(L, -2, b << 8 | d << 3 | f);
    lua_pushboolean(L, 1);
    return 1;
}

/* host:access(exit) -> handled, read value (nil for writes), event [, bdf, offset, size,
 * value]: the same decode the run loop uses, for an exit table {space=, port=|addr=,
 * size=, write=, value=}; event is true when a written function asked for the VM
 * layer's attention; the last four say which function access the decode made of it
 * (bdf = bus << 8 | dev << 3 | fn), when it reached one. */
static int l_pcihost_access(lua_State *L)
{
    struct kvm_pcihost *h = luaL_checkudata(L, 1, PCIHOST_T);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "space");
    int space = strcmp(luaL_optstring(L, -1, ""), "pio") == 0 ? KVM_VMM_PIO : KVM_VMM_MMIO;
    lua_getfield(L, 2, space == KVM_VMM_PIO ? "port" : "addr");
    uint64_t addr = (uint64_t)luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "size");
    lua_Integer size = luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "write");
    int is_write = lua_toboolean(L, -1);
    lua_getfield(L, 2, "value");
    uint64_t value = (uint64_t)luaL_optinteger(L, -1, 0);
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return luaL_argerror(L, 2, "size must be 1, 2, 4 or 8");
    uint8_t data[8];
    lv_le_put(data, value, 8);
    int r = kvm_pcihost_access(h, space, addr, data, (unsigned)size, is_write);
    if (r == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushboolean(L, 1);
    if (is_write)
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)lv_le_get(data, (unsigned)size));
    lua_pushboolean(L, r == 2); /* a function asked for attention */
    if (!h->last.hit)
        return 3;
    /* what the decode reached: function (bus << 8 | dev << 3 | fn), offset, size, value */
    lua_pushinteger(L, h->last.bdf);
    lua_pushinteger(L, h->last.off);
    lua_pushinteger(L, h->last.size);
    lua_pushinteger(L, h->last.value);
    return 7;
}

/* host:ranges() -> {{space, base, size}...} to register with vm:add_range. */
static int l_pcihost_ranges(lua_State *L)
{
    struct kvm_pcihost *h = luaL_checkudata(L, 1, PCIHOST_T);
    lua_newtable(L);
    lua_createtable(L, 3, 0);
    lua_pushliteral(L, "pio");
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, 0xcf8);
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, 8);
    lua_rawseti(L, -2, 3);
    lua_rawseti(L, -2, 1);
    if (h->ecam_size) {
        lua_createtable(L, 3, 0);
        lua_pushliteral(L, "mmio");
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, (lua_Integer)h->ecam_base);
        lua_rawseti(L, -2, 2);
        lua_pushinteger(L, (lua_Integer)h->ecam_size);
        lua_rawseti(L, -2, 3);
        lua_rawseti(L, -2, 2);
    }
    return 1;
}

static int l_pcihost_tostring(lua_State *L)
{
    struct kvm_pcihost *h = luaL_checkudata(L, 1, PCIHOST_T);
    lua_pushfstring(L, "vfio.pcihost (%d functions)", (int)h->nfn);
    return 1;
}

/*** @module vfio.core */

/***
The PCI host bridge answered in C: CF8/CFC and an ECAM window, dispatching to functions
that implement config access in C (`cfgspace`, `trap`).
@function pcihost
@tparam table opts `{ecam_base = addr (1 MiB aligned), ecam_buses = n (1 to 256)}`
@treturn pcihost
*/

/***
A host bridge (`vfio.pcihost`).
@type pcihost
*/

/***
Put a function at bus:dev.fn.
@function pcihost:attach
@tparam int bus bus
@tparam int dev device
@tparam int fn function
@param obj a `cfgspace`, a `trap` or a `rootport` (whose bus numbers route accesses to
the buses below it)
@treturn boolean true, or `nil, message, errno`
*/

/***
Remove the function at bus:dev.fn.
@function pcihost:detach
@tparam int bus bus
@tparam int dev device
@tparam int fn function
@treturn boolean true, or `nil, message, errno`
*/

/***
The run loop's decode, for an exit table.
attention), and when a function was reached its bdf (bus << 8 | dev << 3 | fn), offset,
size, value
@function pcihost:access
@tparam table exit `{space=, port= | addr=, size=, write=, value=}`
@return handled, the read value (nil for writes), event (a written function asked for
*/

/***
The ranges to register with `vm:add_range`.
@function pcihost:ranges
@treturn table `{{space, base, size}...}`
*/

/***
Nothing to release (present for the object conventions).
@function pcihost:close
*/

void lv_open_pcihost(lua_State *L)
{
    static const luaL_Reg h_m[] = {
        {"attach", l_pcihost_attach}, {"detach", l_pcihost_detach},
        {"access", l_pcihost_access}, {"ranges", l_pcihost_ranges}, {"close", l_noop},
        {NULL, NULL}};
    static const luaL_Reg h_mt[] = {
        {"__gc", l_noop}, {"__close", l_noop}, {"__tostring", l_pcihost_tostring},
        {NULL, NULL}};
    lv_newclass(L, PCIHOST_T, h_m, h_mt);
    lv_setcap(L, PCIHOST_T, LV_CAP_KVM_IO, &kvm_pcihost_io_ops);
    lua_pushcfunction(L, l_pcihost_new);
    lua_setfield(L, -2, "pcihost");
}
