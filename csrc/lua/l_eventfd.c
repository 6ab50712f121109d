/* vfio.eventfd: the kernel's interrupt carrier (csrc/vfio/vfio_irq.c). Non-blocking, so
 * read() never hangs; wait() polls with a timeout. fileno() works with luaposix's poll. */
#include "l_objects.h"

#include <errno.h>
#include <unistd.h>

lv_eventfd *lv_checkeventfd(lua_State *L, int idx)
{
    lv_eventfd *e = luaL_checkudata(L, idx, LV_EVENTFD);
    if (e->fd < 0)
        luaL_argerror(L, idx, "eventfd is closed");
    return e;
}

/* core.eventfd([initval [, {semaphore=true}]]) -> eventfd | nil, msg, errno */
static int l_eventfd_new(lua_State *L)
{
    unsigned init = lua_isnoneornil(L, 1) ? 0 : (unsigned)lv_checkrange(L, 1, 0, 0xffffffff);
    int sem = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "semaphore");
        sem = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    int fd = vfio_eventfd_create(init, sem);
    if (fd < 0)
        return lv_syserror(L, -fd, "eventfd", NULL);
    lv_eventfd *e = lv_newobject(L, sizeof *e, LV_EVENTFD, 0);
    e->fd = fd;
    return 1;
}

int lv_push_eventfd_count(lua_State *L, int fd, int ms, const char *what)
{
    int r = vfio_fd_wait(fd, ms);
    if (r < 0)
        return lv_syserror(L, -r, "poll", what);
    uint64_t v = 0;
    if (r > 0 && (r = vfio_eventfd_read(fd, &v)) < 0) {
        if (r != -EAGAIN)
            return lv_syserror(L, -r, "read", what);
        v = 0;   /* drained by someone else since the poll */
    }
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int push_count(lua_State *L, lv_eventfd *e, int r, uint64_t v)
{
    if (r < 0)
        return lv_syserrorf(L, -r, "read", "eventfd %d", e->fd);
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

/* e:read() -> count | nil, msg, EAGAIN when nothing is pending */
static int e_read(lua_State *L)
{
    lv_eventfd *e = lv_checkeventfd(L, 1);
    uint64_t v = 0;
    int r = vfio_eventfd_read(e->fd, &v); /* before reading v: argument order is unspecified */
    return push_count(L, e, r, v);
}

static int e_write(lua_State *L)
{
    lv_eventfd *e = lv_checkeventfd(L, 1);
    lua_Integer v = luaL_optinteger(L, 2, 1);
    if (v <= 0 || (uint64_t)v == UINT64_MAX)
        luaL_argerror(L, 2, "value must be positive");
    int r = vfio_eventfd_write(e->fd, (uint64_t)v);
    if (r < 0)
        return lv_syserrorf(L, -r, "write", "eventfd %d", e->fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* e:wait([timeout_ms]) -> count | nil, "...: timed out", ETIMEDOUT. No timeout (or a
 * negative one) waits forever. */
static int e_wait(lua_State *L)
{
    lv_eventfd *e = lv_checkeventfd(L, 1);
    int t = lv_opt_timeout_ms(L, 2, -1);
    for (;;) {
        int r = vfio_fd_wait(e->fd, t);
        if (r < 0)
            return lv_syserrorf(L, -r, "poll", "eventfd %d", e->fd);
        if (r == 0)
            return lv_syserrorf(L, ETIMEDOUT, "wait", "eventfd %d", e->fd);
        uint64_t v = 0;
        int rr = vfio_eventfd_read(e->fd, &v);
        /* Someone else drained it between poll and read: keep waiting. */
        if (rr == -EAGAIN)
            continue;
        return push_count(L, e, rr, v);
    }
}

static int e_fileno(lua_State *L)
{
    lua_pushinteger(L, lv_checkeventfd(L, 1)->fd);
    return 1;
}

static int e_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_eventfd *)luaL_checkudata(L, 1, LV_EVENTFD))->fd < 0);
    return 1;
}

static int e_close(lua_State *L)
{
    lv_eventfd *e = luaL_checkudata(L, 1, LV_EVENTFD);
    if (e->fd >= 0) {
        close(e->fd);
        e->fd = -1;
    }
    return 0;
}

static int e_tostring(lua_State *L)
{
    lv_eventfd *e = luaL_checkudata(L, 1, LV_EVENTFD);
    if (e->fd < 0)
        lua_pushliteral(L, "vfio.eventfd (closed)");
    else
        lua_pushfstring(L, "vfio.eventfd (fd %d)", e->fd);
    return 1;
}

/*** @module vfio.core */

/***
A non-blocking eventfd.
@function eventfd
@tparam[opt=0] int initval the initial count
@tparam[opt] table opts `{semaphore = true}`
@treturn eventfd the eventfd, or `nil, message, errno`
*/

/***
An eventfd (`vfio.eventfd`), for interrupts (`device:set_irqs`) and irqfds.
@type eventfd
*/

/***
Read and reset the count.
@function eventfd:read
@treturn int the count, or `nil, message, EAGAIN` when nothing is pending
*/

/***
Add to the count.
@function eventfd:write
@tparam[opt=1] int n the amount
@treturn boolean true, or `nil, message, errno`
*/

/***
Wait until the count is not zero, then read it.
@function eventfd:wait
@tparam[opt] int ms timeout in milliseconds (none, or negative: forever)
@treturn int the count, or `nil, "...: timed out", ETIMEDOUT`, or `nil, message, errno`
*/

/***
The fd's number (for poll).
@function eventfd:fileno
@treturn int
*/

/***
Whether it is closed.
@function eventfd:closed
@treturn boolean
*/

/***
Close the eventfd (idempotent).
@function eventfd:close
*/

void lv_open_eventfd(lua_State *L)
{
    static const luaL_Reg methods[] = {{"read", e_read},     {"write", e_write},
                                       {"wait", e_wait},     {"fileno", e_fileno},
                                       {"closed", e_closed}, {"close", e_close},
                                       {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", e_close}, {"__close", e_close}, {"__tostring", e_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_EVENTFD, methods, meta);
    lua_pushcfunction(L, l_eventfd_new);
    lua_setfield(L, -2, "eventfd");
}
