/* vfio.irqfd: an eventfd wired to a GSI of a VM (and its resample eventfd), made with
 * vm:irqfd(gsi [, opts]). The eventfds are the VFIO layer's (vfio_eventfd_*). The irqfd
 * owns both fds (a caller's eventfd is duplicated), so its fds are never a number that
 * Lua closed and the process reused. detach()/attach() take the eventfd away from the
 * guest and give it back, for a masked MSI/MSI-X vector: while detached, the device's
 * interrupts stay counted in the eventfd (the vector's pending state). */
#include "l_kvm.h"
#include "l_objects.h"

#include <stdint.h>
#include <unistd.h>

#define IRQFD_T "vfio.irqfd"

struct irqfd_ud {
    int fd, resample_fd, assigned;
    uint32_t gsi;
};

static struct irqfd_ud *checkirqfd(lua_State *L, int arg)
{
    struct irqfd_ud *q = luaL_checkudata(L, arg, IRQFD_T);
    if (q->fd < 0)
        luaL_error(L, "attempt to use a closed irqfd");
    return q;
}

/* vm:irqfd(gsi [, {fd=, resample=true|fd}]) -> irqfd. Without fd an eventfd is created
 * (and owned); resample=true creates the resample eventfd for level-triggered INTx. */
int lv_vm_irqfd(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    uint32_t gsi = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    int want_resample = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "fd") != LUA_TNIL)
            lv_checkfd(L, lua_gettop(L));     /* checked now, duplicated below */
        lua_pop(L, 1);
        int t = lua_getfield(L, 3, "resample");
        if (t == LUA_TBOOLEAN)
            want_resample = lua_toboolean(L, -1);
        else if (t != LUA_TNIL)
            lv_checkfd(L, lua_gettop(L)), want_resample = 1;
        lua_pop(L, 1);
    }
    struct irqfd_ud *q = lv_newobject(L, sizeof *q, IRQFD_T, 1);
    q->fd = q->resample_fd = -1;
    q->gsi = gsi;
    int obj = lua_gettop(L);
    /* the fds are duplicated once the object exists, so __gc closes them on any error */
    if (!lua_isnoneornil(L, 3)) {
        if (lua_getfield(L, 3, "fd") != LUA_TNIL)
            q->fd = lv_dupfd(L, lua_gettop(L));
        if (lua_getfield(L, 3, "resample") > LUA_TBOOLEAN)
            q->resample_fd = lv_dupfd(L, lua_gettop(L));
        lua_settop(L, obj);
    }
    if (q->fd < 0 && (q->fd = vfio_eventfd_create(0, 0)) < 0)
        return lv_syserrorf(L, -q->fd, "eventfd", "irqfd gsi %u", gsi);
    if (want_resample && q->resample_fd < 0 &&
        (q->resample_fd = vfio_eventfd_create(0, 0)) < 0)
        return lv_syserrorf(L, -q->resample_fd, "eventfd", "resample gsi %u", gsi);
    /* the VM after the options (their metamethods and fileno() methods run Lua) */
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int e = kvm_assign_irqfd(&v->vm, gsi, q->fd, q->resample_fd, 0);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_IRQFD", "gsi %u%s", gsi,
                            q->resample_fd >= 0 ? " resample" : "");
    q->assigned = 1;
    lv_set_parent(L, -1, 1, 1);
    return 1;
}

static void irqfd_release(lua_State *L, struct irqfd_ud *q, int idx)
{
    if (q->assigned) {
        lua_getiuservalue(L, idx, 1);
        struct lv_vm_ud *v = luaL_testudata(L, -1, LV_VM_T);
        if (v && v->vm.fd >= 0)
            kvm_assign_irqfd(&v->vm, q->gsi, q->fd, -1, 1);
        lua_pop(L, 1);
        q->assigned = 0;
    }
    if (q->fd >= 0)
        close(q->fd);
    if (q->resample_fd >= 0)
        close(q->resample_fd);
    q->fd = q->resample_fd = -1;
}

const int *lv_irqfd_fdp(lua_State *L, int idx)
{
    return &checkirqfd(L, idx)->fd;
}

/* The VM of the irqfd at idx (its parent, kept alive by it), raising if it is closed. */
static struct lv_vm_ud *irqfd_vm(lua_State *L, int idx)
{
    lua_getiuservalue(L, idx, 1);
    struct lv_vm_ud *v = luaL_testudata(L, -1, LV_VM_T);
    lua_pop(L, 1);
    if (!v || v->vm.fd < 0)
        luaL_error(L, "irqfd: its VM is closed");
    return v;
}

/* irqfd:detach() / irqfd:attach(): KVM_IRQFD deassign / assign again, keeping the
 * eventfd. Idempotent; true, or nil, message, errno. */
static int l_irqfd_attach_op(lua_State *L, int attach)
{
    struct irqfd_ud *q = checkirqfd(L, 1);
    struct lv_vm_ud *v = irqfd_vm(L, 1);
    if (q->assigned != attach) {
        int e = kvm_assign_irqfd(&v->vm, q->gsi, q->fd, attach ? q->resample_fd : -1, !attach);
        if (e < 0)
            return lv_syserrorf(L, -e, "KVM_IRQFD", "%s gsi %u", attach ? "assign" : "deassign",
                                q->gsi);
        q->assigned = attach;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_irqfd_detach(lua_State *L) { return l_irqfd_attach_op(L, 0); }
static int l_irqfd_attach(lua_State *L) { return l_irqfd_attach_op(L, 1); }

static int l_irqfd_attached(lua_State *L)
{
    lua_pushboolean(L, checkirqfd(L, 1)->assigned);
    return 1;
}

/* irqfd:take() -> the count the eventfd held (0 if none), now cleared: what a device
 * signalled while the irqfd was detached. */
static int l_irqfd_take(lua_State *L)
{
    struct irqfd_ud *q = checkirqfd(L, 1);
    return lv_push_eventfd_count(L, q->fd, 0, "irqfd eventfd");
}

static int l_irqfd_close(lua_State *L)
{
    struct irqfd_ud *q = luaL_checkudata(L, 1, IRQFD_T);
    irqfd_release(L, q, 1);
    return 0;
}

static int l_irqfd_fileno(lua_State *L)
{
    lua_pushinteger(L, checkirqfd(L, 1)->fd);
    return 1;
}

static int l_irqfd_resample_fileno(lua_State *L)
{
    struct irqfd_ud *q = checkirqfd(L, 1);
    if (q->resample_fd < 0)
        return 0;
    lua_pushinteger(L, q->resample_fd);
    return 1;
}

static int l_irqfd_gsi(lua_State *L)
{
    lua_pushinteger(L, checkirqfd(L, 1)->gsi);
    return 1;
}

/* irqfd:trigger([n]): what a device's interrupt does to the eventfd. */
static int l_irqfd_trigger(lua_State *L)
{
    struct irqfd_ud *q = checkirqfd(L, 1);
    uint64_t n = lua_isnoneornil(L, 2) ? 1 : (uint64_t)lv_checkrange(L, 2, 1, INT32_MAX);
    int e = vfio_eventfd_write(q->fd, n);
    if (e < 0)
        return lv_syserrorf(L, -e, "write", "irqfd gsi %u", q->gsi);
    lua_pushboolean(L, 1);
    return 1;
}

/* irqfd:resampled([timeout_ms]) -> how many times the guest EOI'd the level interrupt. */
static int l_irqfd_resampled(lua_State *L)
{
    struct irqfd_ud *q = checkirqfd(L, 1);
    int ms = lv_opt_timeout_ms(L, 2, 0);
    if (q->resample_fd < 0)
        return luaL_error(L, "irqfd gsi %u has no resample fd", q->gsi);
    return lv_push_eventfd_count(L, q->resample_fd, ms, "resample eventfd");
}

static int l_irqfd_tostring(lua_State *L)
{
    struct irqfd_ud *q = luaL_checkudata(L, 1, IRQFD_T);
    if (q->fd < 0)
        lua_pushliteral(L, "vfio.irqfd (closed)");
    else
        lua_pushfstring(L, "vfio.irqfd (gsi %d, fd %d%s)", (int)q->gsi, q->fd,
                        q->resample_fd >= 0 ? ", resample" : "");
    return 1;
}

/*** @module vfio.core */

/***
An irqfd (`vfio.irqfd`): device interrupts reach the guest without an exit. Detached, a
masked MSI/MSI-X vector is kept from the guest while the device keeps signalling.
@type irqfd
*/

/***
The eventfd's number (what VFIO_DEVICE_SET_IRQS is given).
@function irqfd:fileno
@treturn int
*/

/***
The resample eventfd's number, or nothing without one.
@function irqfd:resample_fileno
@treturn int
*/

/***
The GSI.
@function irqfd:gsi
@treturn int
*/

/***
Signal the eventfd, as a device's interrupt does.
@function irqfd:trigger
@tparam[opt=1] int n the count
@treturn boolean true, or `nil, message, errno`
*/

/***
How many times the guest EOI'd the level interrupt; raises without a resample fd.
@function irqfd:resampled
@tparam[opt=0] int ms how long to wait
@treturn int the count
*/

/***
KVM_IRQFD deassign, keeping the eventfd (idempotent).
@function irqfd:detach
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_IRQFD assign again (idempotent).
@function irqfd:attach
@treturn boolean true, or `nil, message, errno`
*/

/***
Whether KVM has it assigned.
@function irqfd:attached
@treturn boolean
*/

/***
Read and clear the eventfd's count: what a device signalled while detached.
@function irqfd:take
@treturn int the count (0 if none)
*/

/***
Deassign and close (idempotent).
@function irqfd:close
*/

void lv_open_irqfd(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"fileno", l_irqfd_fileno}, {"resample_fileno", l_irqfd_resample_fileno},
        {"gsi", l_irqfd_gsi}, {"trigger", l_irqfd_trigger}, {"resampled", l_irqfd_resampled},
        {"detach", l_irqfd_detach}, {"attach", l_irqfd_attach}, {"attached", l_irqfd_attached},
        {"take", l_irqfd_take},
        {"close", l_irqfd_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", l_irqfd_close}, {"__close", l_irqfd_close}, {"__tostring", l_irqfd_tostring},
        {NULL, NULL}};
    lv_newclass(L, IRQFD_T, methods, meta);
}
