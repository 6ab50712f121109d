/* vfio.cfgspace: an emulated configuration space (bytes, a guest-writable mask, bytes
 * whose writes notify the VM layer) that attaches to the C host bridge (its class
 * registers LV_CAP_PCI_CFG), made with core.cfgspace(size). */
#include "lv.h"
#include "base/le.h"
#include "kvm/pcihost.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define CFGSPACE_T "vfio.cfgspace"

static int l_cfgspace_new(lua_State *L)
{
    lua_Integer size = luaL_optinteger(L, 1, 256);
    if (size != 256 && size != 4096)
        return luaL_argerror(L, 1, "size must be 256 or 4096");
    struct kvm_cfgspace *c = lv_newobject(L, sizeof *c, CFGSPACE_T, 0);
    c->size = (uint32_t)size;
    return 1;
}

static void checkspan(lua_State *L, struct kvm_cfgspace *c, uint32_t *off, uint32_t *len)
{
    *off = (uint32_t)lv_checkrange(L, 2, 0, c->size - 1);
    *len = (uint32_t)luaL_checkinteger(L, 3);
    if ((*len != 1 && *len != 2 && *len != 4) || *off + *len > c->size)
        luaL_argerror(L, 3, "length must be 1, 2 or 4 and stay inside the space");
}

/* cfgspace:set(off, len, value [, wmask]): build content (not a guest write). */
static int l_cfgspace_set(lua_State *L)
{
    struct kvm_cfgspace *c = luaL_checkudata(L, 1, CFGSPACE_T);
    uint32_t off, len;
    checkspan(L, c, &off, &len);
    lv_le_put(c->bytes + off, (uint32_t)luaL_checkinteger(L, 4), len);
    if (!lua_isnoneornil(L, 5))
        lv_le_put(c->wmask + off, (uint32_t)luaL_checkinteger(L, 5), len);
    return 0;
}

/* Guest accesses may reach past a 256-byte space (ECAM): those read all ones. */
static void checkaccess(lua_State *L, uint32_t *off, uint32_t *len)
{
    *off = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    *len = (uint32_t)luaL_checkinteger(L, 3);
    if ((*len != 1 && *len != 2 && *len != 4) || *off % *len)
        luaL_argerror(L, 3, "length must be 1, 2 or 4, offset aligned to it");
}

/* cfgspace:cfg_read(off, len) / cfg_write(off, len, v): guest view (aligned accesses). */
static int l_cfgspace_read(lua_State *L)
{
    struct kvm_cfgspace *c = luaL_checkudata(L, 1, CFGSPACE_T);
    uint32_t off, len, v;
    checkaccess(L, &off, &len);
    kvm_cfgspace_ops.read(c, off, len, &v);
    lua_pushinteger(L, v);
    return 1;
}

/* cfg_write returns true when the write touched a notify byte (see cfgspace:notify). */
static int l_cfgspace_write(lua_State *L)
{
    struct kvm_cfgspace *c = luaL_checkudata(L, 1, CFGSPACE_T);
    uint32_t off, len;
    checkaccess(L, &off, &len);
    int ev = kvm_cfgspace_ops.write(c, off, len, (uint32_t)luaL_checkinteger(L, 4));
    lua_pushboolean(L, ev == KVM_PCI_CFG_EVENT);
    return 1;
}

/* cfgspace:notify(off, len [, on=true]): guest writes to these bytes end the run loop
 * with a "stop" exit so Lua can react (as a trap core does for BARs and MSI). */
static int l_cfgspace_notify(lua_State *L)
{
    struct kvm_cfgspace *c = luaL_checkudata(L, 1, CFGSPACE_T);
    uint32_t off = (uint32_t)lv_checkrange(L, 2, 0, c->size - 1);
    uint32_t len = (uint32_t)lv_checkrange(L, 3, 1, c->size - off);
    memset(c->notify + off, lua_isnone(L, 4) || lua_toboolean(L, 4), len);
    return 0;
}

static int l_cfgspace_tostring(lua_State *L)
{
    struct kvm_cfgspace *c = luaL_checkudata(L, 1, CFGSPACE_T);
    char s[64];   /* lua_pushfstring has no %x */
    snprintf(s, sizeof s, "vfio.cfgspace (%u bytes, %04x:%04x)", (unsigned)c->size,
             c->bytes[0] | c->bytes[1] << 8, c->bytes[2] | c->bytes[3] << 8);
    lua_pushstring(L, s);
    return 1;
}

/* Nothing to release: the bytes live in the userdata. */
static int l_noop(lua_State *L) { (void)L; return 0; }

/*** @module vfio.core */

/***
An emulated configuration space (bytes, a guest-writable mask, bytes whose writes notify
the VM layer) that attaches to the C host bridge.
@function cfgspace
@tparam[opt=256] int size 256 or 4096
@treturn cfgspace
*/

/***
An emulated config space (`vfio.cfgspace`).
@type cfgspace
*/

/***
Build content (not a guest write).
@function cfgspace:set
@tparam int off offset
@tparam int len 1, 2 or 4
@tparam int value the value
@tparam[opt] int wmask the guest-writable bits
*/

/***
A guest read (aligned).
@function cfgspace:cfg_read
@tparam int off offset
@tparam int len 1, 2 or 4
@treturn int
*/

/***
A guest write (aligned), through the writable mask.
@function cfgspace:cfg_write
@tparam int off offset
@tparam int len 1, 2 or 4
@tparam int v the value
@treturn boolean whether it touched a notify byte
*/

/***
Guest writes to these bytes end the run loop with a `"stop"` exit so Lua can react.
@function cfgspace:notify
@tparam int off offset
@tparam int len bytes
@tparam[opt=true] boolean on
*/

/***
Nothing to release (present for the object conventions).
@function cfgspace:close
*/

void lv_open_cfgspace(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"set", l_cfgspace_set}, {"cfg_read", l_cfgspace_read},
        {"cfg_write", l_cfgspace_write}, {"notify", l_cfgspace_notify}, {"close", l_noop},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", l_noop}, {"__close", l_noop}, {"__tostring", l_cfgspace_tostring},
        {NULL, NULL}};
    lv_newclass(L, CFGSPACE_T, methods, meta);
    lv_setcap(L, CFGSPACE_T, LV_CAP_PCI_CFG, &kvm_cfgspace_ops);
    lua_pushcfunction(L, l_cfgspace_new);
    lua_setfield(L, -2, "cfgspace");
}
