/* vfio.rootport: a PCIe root port with a native hot-plug slot (kvm/rootport.h), made with
 * core.rootport{...}; its class registers LV_CAP_PCI_CFG, so it attaches to the C host
 * bridge, and the function behind it (a trap, a cfgspace) is kept alive by its user value
 * 1 while inserted. */
#include "lv.h"
#include "kvm/rootport.h"

#include <errno.h>
#include <stdio.h>

#define ROOTPORT_T "vfio.rootport"

/* One integer field of the option table at idx, or def when absent, in [lo, hi]. */
static lua_Integer optfield(lua_State *L, int idx, const char *name, lua_Integer def,
                            lua_Integer lo, lua_Integer hi)
{
    lua_Integer v = def;
    if (lua_getfield(L, idx, name) != LUA_TNIL) {
        int isnum;
        v = lua_tointegerx(L, -1, &isnum);
        if (!isnum || v < lo || v > hi)
            luaL_error(L, "rootport: %s must be an integer in [%I, %I]", name, lo, hi);
    }
    lua_pop(L, 1);
    return v;
}

/* A window {base = , size = } (absent: closed), aligned to its granule. */
static void optwindow(lua_State *L, int idx, const char *name, uint64_t granule, uint64_t top,
                      uint64_t *base, uint64_t *size)
{
    *base = *size = 0;
    int t = lua_getfield(L, idx, name);
    if (t != LUA_TNIL) {
        if (t != LUA_TTABLE)
            luaL_error(L, "rootport: %s must be a table {base =, size =}", name);
        int w = lua_absindex(L, -1);
        *base = (uint64_t)optfield(L, w, "base", 0, 0, (lua_Integer)(top - granule));
        *size = (uint64_t)optfield(L, w, "size", 0, 0, (lua_Integer)top);
        if (*base % granule || *size % granule || *size > top - *base)
            luaL_error(L, "rootport: the %s window must be aligned to 0x%I bytes and end "
                       "below 0x%I", name, (lua_Integer)granule, (lua_Integer)top);
    }
    lua_pop(L, 1);
}

/* core.rootport{vendor=, device=, port=, slot=, primary=, secondary=, subordinate=,
 * io = {base=, size=}, mem = {base=, size=}, pref = {base=, size=}} */
static int l_rootport_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct kvm_rootport_setup s = {0};
    uint64_t base, size;
    s.vendor = (uint16_t)optfield(L, 1, "vendor", 0x1b36, 0, 0xffff);
    s.device = (uint16_t)optfield(L, 1, "device", 0x000c, 0, 0xffff);
    s.port_number = (uint8_t)optfield(L, 1, "port", 0, 0, 0xff);
    s.slot_number = (uint16_t)optfield(L, 1, "slot", 0, 0, 0x1fff);
    s.primary = (uint8_t)optfield(L, 1, "primary", 0, 0, 0xff);
    s.secondary = (uint8_t)optfield(L, 1, "secondary", 0, 0, 0xff);
    s.subordinate = (uint8_t)optfield(L, 1, "subordinate", s.secondary, 0, 0xff);
    optwindow(L, 1, "io", 0x1000, 0x10000, &base, &size);
    s.io_base = (uint32_t)base, s.io_size = (uint32_t)size;
    optwindow(L, 1, "mem", 1u << 20, 1ull << 32, &base, &size);
    s.mem_base = (uint32_t)base, s.mem_size = (uint32_t)size;
    optwindow(L, 1, "pref", 1u << 20, 1ull << 52, &base, &size);
    s.pref_base = base, s.pref_size = size;
    if (s.subordinate < s.secondary)
        return luaL_argerror(L, 1, "subordinate must not be below secondary");
    struct kvm_rootport *p = lv_newobject(L, sizeof *p, ROOTPORT_T, 1);
    kvm_rootport_init(p, &s);
    return 1;
}

static struct kvm_rootport *checkport(lua_State *L)
{
    return luaL_checkudata(L, 1, ROOTPORT_T);
}

/* rp:insert(fn [, at_boot]) -> true, or nil, message, errno (EBUSY: occupied). */
static int l_rootport_insert(lua_State *L)
{
    struct kvm_rootport *p = checkport(L);
    const struct kvm_pci_cfg_ops *ops = lv_testcap(L, 2, LV_CAP_PCI_CFG);
    bool at_boot = lua_toboolean(L, 3);
    if (!ops)
        return luaL_argerror(L, 2, "a PCI function with config access in C (vfio.trap, "
                                   "vfio.cfgspace)");
    if (lua_rawequal(L, 1, 2))
        return luaL_argerror(L, 2, "a port cannot sit behind itself");
    int e = kvm_rootport_insert(p, ops, lua_touserdata(L, 2), at_boot);
    if (e < 0)
        return lv_syserrorf(L, -e, "insert into", "root port (secondary bus %d)",
                            (int)p->cfg[0x19]);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, 1, 1);
    lua_pushboolean(L, 1);
    return 1;
}

/* rp:remove() -> true, or nil, message, errno (ENOENT: empty). */
static int l_rootport_remove(lua_State *L)
{
    struct kvm_rootport *p = checkport(L);
    int e = kvm_rootport_remove(p);
    if (e < 0)
        return lv_syserrorf(L, -e, "remove from", "root port (secondary bus %d)",
                            (int)p->cfg[0x19]);
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_rootport_press(lua_State *L)
{
    kvm_rootport_press(checkport(L));
    return 0;
}

static const struct {
    unsigned bit;
    const char *name;
} event_names[] = {
    {KVM_ROOTPORT_EV_MSI, "msi"},           {KVM_ROOTPORT_EV_INTX, "intx"},
    {KVM_ROOTPORT_EV_POWER_OFF, "power_off"}, {KVM_ROOTPORT_EV_POWER_ON, "power_on"},
    {KVM_ROOTPORT_EV_BUS_RESET, "bus_reset"},
};

/* rp:events() -> {name...}: the pending events, taken. */
static int l_rootport_events(lua_State *L)
{
    checkport(L);
    lua_createtable(L, 4, 0);
    unsigned ev = kvm_rootport_events(checkport(L));   /* after the allocation */
    int n = 0;
    for (size_t i = 0; i < sizeof event_names / sizeof event_names[0]; i++)
        if (ev & event_names[i].bit) {
            lua_pushstring(L, event_names[i].name);
            lua_rawseti(L, -2, ++n);
        }
    return 1;
}

/* rp:msi() -> address, data; nil when the guest has not enabled MSI. */
static int l_rootport_msi(lua_State *L)
{
    uint64_t addr;
    uint32_t data;
    if (!kvm_rootport_msi(checkport(L), &addr, &data)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)addr);
    lua_pushinteger(L, data);
    return 2;
}

static int l_rootport_intx(lua_State *L)
{
    lua_pushboolean(L, kvm_rootport_intx(checkport(L)));
    return 1;
}

static const char *const indicator_names[] = {"reserved", "on", "blink", "off"};

/* rp:state() -> {present=, powered=, link_up=, power_indicator=, attention_indicator=,
 * slot_control=, slot_status=, link_status=, secondary=, subordinate=} */
static int l_rootport_state(lua_State *L)
{
    checkport(L);
    lua_createtable(L, 0, 10);
    struct kvm_rootport *p = checkport(L);
    struct kvm_rootport_state st;
    kvm_rootport_state(p, &st);
    uint8_t sec = p->cfg[0x19], sub = p->cfg[0x1a];
    lua_pushboolean(L, st.present);
    lua_setfield(L, -2, "present");
    lua_pushboolean(L, st.powered);
    lua_setfield(L, -2, "powered");
    lua_pushboolean(L, st.link_up);
    lua_setfield(L, -2, "link_up");
    lua_pushstring(L, indicator_names[st.power_indicator & 3]);
    lua_setfield(L, -2, "power_indicator");
    lua_pushstring(L, indicator_names[st.attention_indicator & 3]);
    lua_setfield(L, -2, "attention_indicator");
    lua_pushinteger(L, st.slot_control);
    lua_setfield(L, -2, "slot_control");
    lua_pushinteger(L, st.slot_status);
    lua_setfield(L, -2, "slot_status");
    lua_pushinteger(L, st.link_status);
    lua_setfield(L, -2, "link_status");
    lua_pushinteger(L, sec);
    lua_setfield(L, -2, "secondary");
    lua_pushinteger(L, sub);
    lua_setfield(L, -2, "subordinate");
    return 1;
}

/* rp:child() -> the function behind the port, or nil. */
static int l_rootport_child(lua_State *L)
{
    checkport(L);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

static void checkaccess(lua_State *L, uint32_t *off, uint32_t *len)
{
    *off = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    *len = (uint32_t)luaL_checkinteger(L, 3);
    if ((*len != 1 && *len != 2 && *len != 4) || *off % *len)
        luaL_argerror(L, 3, "length must be 1, 2 or 4, offset aligned to it");
}

/* rp:cfg_read(off, len) / rp:cfg_write(off, len, v): the guest's view (aligned). */
static int l_rootport_cfg_read(lua_State *L)
{
    uint32_t off, len, v;
    checkport(L);
    checkaccess(L, &off, &len);
    kvm_rootport_cfg_ops.read(checkport(L), off, len, &v);
    lua_pushinteger(L, v);
    return 1;
}

/* cfg_write returns true when the port holds events for the VMM (rp:events). */
static int l_rootport_cfg_write(lua_State *L)
{
    uint32_t off, len;
    checkport(L);
    checkaccess(L, &off, &len);
    uint32_t v = (uint32_t)luaL_checkinteger(L, 4);
    int ev = kvm_rootport_cfg_ops.write(checkport(L), off, len, v);
    lua_pushboolean(L, ev == KVM_PCI_CFG_EVENT);
    return 1;
}

static int l_rootport_tostring(lua_State *L)
{
    struct kvm_rootport *p = checkport(L);
    char s[96];   /* lua_pushfstring has no %x */
    snprintf(s, sizeof s, "vfio.rootport (%04x:%04x, bus %u-%u, %s)",
             p->cfg[0] | p->cfg[1] << 8, p->cfg[2] | p->cfg[3] << 8, p->cfg[0x19],
             p->cfg[0x1a], p->child.ops ? "occupied" : "empty");
    lua_pushstring(L, s);
    return 1;
}

/* Nothing to release: the registers live in the userdata, the child in its user value. */
static int l_noop(lua_State *L) { (void)L; return 0; }

/*** @module vfio.core */

/***
A PCI Express root port with a native hot-plug slot (attention button, power controller,
indicators, presence detect, DLL Link Active reporting, Command Completed, an MSI for the
slot's events) that attaches to the C host bridge; its bus numbers route config accesses
to the function inserted behind it.
@function rootport
@tparam table opts `{vendor = 0x1b36, device = 0x000c, port = link port number, slot =
physical slot number, primary = 0, secondary = bus, subordinate = bus, io = {base =, size =},
mem = {base =, size =}, pref = {base =, size =}}`: the windows as firmware leaves them
(4 KiB I/O granules, 1 MiB memory granules; absent: closed)
@treturn rootport
*/

/***
A PCIe root port (`vfio.rootport`).
@type rootport
*/

/***
Put a function behind the empty port: a hot-add (presence detected; the guest powers
the slot on after the attention button), or present from power-on.
@function rootport:insert
@param fn a `trap` or a `cfgspace`
@tparam[opt=false] boolean at_boot there from power-on: powered, link up, no event
@treturn boolean true, or `nil, message, errno` (EBUSY: occupied)
*/

/***
The function leaves the port: presence and link lost (a surprise removal unless the
guest powered the slot off first, event `"power_off"`).
@function rootport:remove
@treturn boolean true, or `nil, message, errno` (ENOENT: empty)
*/

/***
Press the attention button: the guest's pciehp powers an occupied slot off (a removal
request) or an empty, occupied-but-off one on.
@function rootport:press
*/

/***
Take the pending events: `"msi"` (send `rootport:msi()` now), `"intx"` (the level
changed: `rootport:intx()`), `"power_off"` (the guest powered the occupied slot off:
release the device, then `rootport:remove()`), `"power_on"`, `"bus_reset"` (Secondary
Bus Reset set).
@function rootport:events
@treturn table a list of names
*/

/***
The MSI the port sends.
@function rootport:msi
@treturn int address, or nil when the guest has not enabled MSI
@treturn int data
*/

/***
The INTx level (MSI off, INTx enabled, a slot event pending and enabled).
@function rootport:intx
@treturn boolean
*/

/***
The slot decoded.
@function rootport:state
@treturn table `{present, powered, link_up, power_indicator, attention_indicator
("on", "blink", "off"), slot_control, slot_status, link_status, secondary, subordinate}`
*/

/***
The function behind the port.
@function rootport:child
@return the inserted `trap` or `cfgspace`, or nil
*/

/***
A guest read (aligned).
@function rootport:cfg_read
@tparam int off offset
@tparam int len 1, 2 or 4
@treturn int
*/

/***
A guest write (aligned).
@function rootport:cfg_write
@tparam int off offset
@tparam int len 1, 2 or 4
@tparam int v the value
@treturn boolean whether the port holds events for the VMM
*/

/***
Nothing to release (present for the object conventions).
@function rootport:close
*/

void lv_open_rootport(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"insert", l_rootport_insert}, {"remove", l_rootport_remove},
        {"press", l_rootport_press},   {"events", l_rootport_events},
        {"msi", l_rootport_msi},       {"intx", l_rootport_intx},
        {"state", l_rootport_state},   {"child", l_rootport_child},
        {"cfg_read", l_rootport_cfg_read}, {"cfg_write", l_rootport_cfg_write},
        {"close", l_noop},             {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", l_noop}, {"__close", l_noop}, {"__tostring", l_rootport_tostring},
        {NULL, NULL}};
    lv_newclass(L, ROOTPORT_T, methods, meta);
    lv_setcap(L, ROOTPORT_T, LV_CAP_PCI_CFG, &kvm_rootport_cfg_ops);
    lua_pushcfunction(L, l_rootport_new);
    lua_setfield(L, -2, "rootport");
}
