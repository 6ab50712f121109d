/* vfio.debugcon: a C-side buffer for a guest's debug port output (kvm/debugcon.h's debug
 * console, answered in the run loop), with vm:add_debugcon and vm:debug_output. */
#include "l_kvm.h"
#include "kvm/debugcon.h"

#define DEBUGCON_T "vfio.debugcon"

static int l_debugcon_new(lua_State *L)
{
    lv_newobject(L, sizeof(struct kvm_debugcon), DEBUGCON_T, 0);
    return 1;
}

/* debugcon:output([clear]) -> bytes written so far, bytes dropped (beyond the cap) */
static int l_debugcon_output(lua_State *L)
{
    struct kvm_debugcon *d = luaL_checkudata(L, 1, DEBUGCON_T);
    return lv_push_capture(L, d->buf, &d->len, &d->dropped);
}

static int l_debugcon_close(lua_State *L)
{
    kvm_debugcon_close(luaL_checkudata(L, 1, DEBUGCON_T));
    return 0;
}

static int l_debugcon_tostring(lua_State *L)
{
    struct kvm_debugcon *d = luaL_checkudata(L, 1, DEBUGCON_T);
    if (d->closed)
        lua_pushliteral(L, "vfio.debugcon (closed)");
    else
        lua_pushfstring(L, "vfio.debugcon (%d bytes)", (int)d->len);
    return 1;
}

/* vm:add_debugcon(port [, debugcon]) -> id, debugcon. The first one is the VM's default,
 * read by vm:debug_output(). */
int lv_vm_add_debugcon(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    unsigned port = (unsigned)lv_checkrange(L, 2, 0, 0xffff);
    if (lua_isnoneornil(L, 3))
        l_debugcon_new(L);
    else
        luaL_checkudata(L, 3, DEBUGCON_T), lua_pushvalue(L, 3);
    int con = lua_gettop(L);
    struct lv_vm_ud *v = lv_checkvm(L, 1);   /* after the allocation (a GC step) */
    if (lv_vm_add_range_obj(L, v, KVM_VMM_PIO, port, 1, con) != 1)
        return 3;
    lua_getiuservalue(L, 1, 2);
    if (lua_getfield(L, -1, "debugcon") == LUA_TNIL) {
        lua_pushvalue(L, con);
        lua_setfield(L, -3, "debugcon");
    }
    lua_pop(L, 2);
    lua_pushvalue(L, con);
    return 2;
}

/* vm:debug_output([clear]) -> what the guest wrote to the default debug console, dropped */
int lv_vm_debug_output(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    lua_settop(L, 2);
    lua_getiuservalue(L, 1, 2);
    if (lua_getfield(L, -1, "debugcon") == LUA_TNIL) {
        lua_pushliteral(L, "");
        lua_pushinteger(L, 0);
        return 2;
    }
    lua_replace(L, 1);
    lua_settop(L, 2);
    return l_debugcon_output(L);
}

/*** @module vfio.core */

/***
A C-side buffer for a guest's debug port output, to give `vm:add_debugcon`.
@function debugcon
@treturn debugcon
*/

/***
A debug console (`vfio.debugcon`): the guest's writes to its port, kept in C.
@type debugcon
*/

/***
What the guest wrote so far.
@function debugcon:output
@tparam[opt] boolean clear empty the buffer after
@treturn string the bytes
@treturn int bytes dropped beyond the cap
*/

/***
Free the buffer (idempotent).
@function debugcon:close
*/

void lv_open_debugcon(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"output", l_debugcon_output}, {"close", l_debugcon_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", l_debugcon_close}, {"__close", l_debugcon_close},
        {"__tostring", l_debugcon_tostring}, {NULL, NULL}};
    lv_newclass(L, DEBUGCON_T, methods, meta);
    lv_setcap(L, DEBUGCON_T, LV_CAP_KVM_IO, &kvm_debugcon_ops);
    lua_pushcfunction(L, l_debugcon_new);
    lua_setfield(L, -2, "debugcon");
}
