/* vfio.ioeventfd: a guest write that signals an eventfd without exiting, made with
 * vm:ioeventfd{...}. The eventfd is the VFIO layer's (vfio_eventfd_*). */
#include "l_kvm.h"
#include "l_objects.h"

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#define IOEVENTFD_T "vfio.ioeventfd"

struct ioeventfd_ud {
    int fd, assigned, space, has_dm;
    unsigned len;
    uint64_t addr, datamatch;
};

/* vm:ioeventfd{addr=, len=, pio=bool, datamatch=?, fd=?} -> ioeventfd */
int lv_vm_ioeventfd(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    luaL_checktype(L, 2, LUA_TTABLE);
    struct ioeventfd_ud q0 = {.fd = -1};
    lua_getfield(L, 2, "addr");
    q0.addr = (uint64_t)luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "len");
    q0.len = (unsigned)luaL_optinteger(L, -1, 4);
    lua_getfield(L, 2, "pio");
    q0.space = lua_toboolean(L, -1) ? KVM_VMM_PIO : KVM_VMM_MMIO;
    lua_getfield(L, 2, "datamatch");
    if (!lua_isnil(L, -1))
        q0.has_dm = 1, q0.datamatch = (uint64_t)luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "fd");
    int user_fd = !lua_isnil(L, -1);
    if (user_fd)
        lv_checkfd(L, lua_gettop(L));
    lua_pop(L, 5);
    if (q0.len != 0 && q0.len != 1 && q0.len != 2 && q0.len != 4 && q0.len != 8)
        return luaL_argerror(L, 2, "len must be 0, 1, 2, 4 or 8");
    struct ioeventfd_ud *q = lv_newobject(L, sizeof *q, IOEVENTFD_T, 1);
    *q = q0;
    /* a caller's eventfd is duplicated: the object owns every fd it keeps */
    if (user_fd) {
        lua_getfield(L, 2, "fd");
        q->fd = lv_dupfd(L, lua_gettop(L));
        lua_pop(L, 1);
    } else if ((q->fd = vfio_eventfd_create(0, 0)) < 0) {
        return lv_syserror(L, -q->fd, "eventfd", "ioeventfd");
    }
    /* the VM after the options (their metamethods and fileno() methods run Lua) */
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int e = kvm_assign_ioeventfd(&v->vm, q->space, q->addr, q->len, q->fd, q->has_dm,
                                 q->datamatch, 0);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_IOEVENTFD", "%s 0x%llx len %u",
                            q->space == KVM_VMM_PIO ? "port" : "gpa",
                            (unsigned long long)q->addr, q->len);
    q->assigned = 1;
    lv_set_parent(L, -1, 1, 1);
    return 1;
}

static struct ioeventfd_ud *checkioev(lua_State *L, int arg)
{
    struct ioeventfd_ud *q = luaL_checkudata(L, arg, IOEVENTFD_T);
    if (q->fd < 0)
        luaL_error(L, "attempt to use a closed ioeventfd");
    return q;
}

static int l_ioev_close(lua_State *L)
{
    struct ioeventfd_ud *q = luaL_checkudata(L, 1, IOEVENTFD_T);
    if (q->assigned) {
        lua_getiuservalue(L, 1, 1);
        struct lv_vm_ud *v = luaL_testudata(L, -1, LV_VM_T);
        if (v && v->vm.fd >= 0)
            kvm_assign_ioeventfd(&v->vm, q->space, q->addr, q->len, q->fd, q->has_dm,
                                 q->datamatch, 1);
        q->assigned = 0;
    }
    if (q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    return 0;
}

static int l_ioev_fileno(lua_State *L)
{
    lua_pushinteger(L, checkioev(L, 1)->fd);
    return 1;
}

/* ioeventfd:count([timeout_ms]) -> number of guest writes since the last call */
static int l_ioev_count(lua_State *L)
{
    struct ioeventfd_ud *q = checkioev(L, 1);
    return lv_push_eventfd_count(L, q->fd, lv_opt_timeout_ms(L, 2, 0), "ioeventfd");
}

static int l_ioev_tostring(lua_State *L)
{
    struct ioeventfd_ud *q = luaL_checkudata(L, 1, IOEVENTFD_T);
    if (q->fd < 0)
        lua_pushliteral(L, "vfio.ioeventfd (closed)");
    else {
        char s[80];   /* lua_pushfstring has no %x */
        snprintf(s, sizeof s, "vfio.ioeventfd (%s 0x%llx, fd %d)",
                 q->space == KVM_VMM_PIO ? "port" : "gpa", (unsigned long long)q->addr, q->fd);
        lua_pushstring(L, s);
    }
    return 1;
}

/*** @module vfio.core */

/***
An ioeventfd (`vfio.ioeventfd`).
@type ioeventfd
*/

/***
The guest writes since the last call.
@function ioeventfd:count
@tparam[opt=0] int ms how long to wait for one
@treturn int the count
*/

/***
The eventfd's number.
@function ioeventfd:fileno
@treturn int
*/

/***
Deassign and close (idempotent).
@function ioeventfd:close
*/

void lv_open_ioeventfd(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"fileno", l_ioev_fileno}, {"count", l_ioev_count}, {"close", l_ioev_close},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", l_ioev_close}, {"__close", l_ioev_close}, {"__tostring", l_ioev_tostring},
        {NULL, NULL}};
    lv_newclass(L, IOEVENTFD_T, methods, meta);
}
