/* vfio.group: binding of csrc/vfio/vfio_group.c. */
#include "l_objects.h"

#include <ctype.h>
#include <errno.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

lv_group *lv_checkgroup(lua_State *L, int idx)
{
    lv_group *g = luaL_checkudata(L, idx, LV_GROUP);
    if (g->fd < 0)
        luaL_argerror(L, idx, "group is closed");
    return g;
}

/* The group number is the trailing number of its path (/dev/vfio/N, /dev/vfio/noiommu-N). */
static int path_number(const char *p)
{
    size_t n = strlen(p), i = n;
    while (i > 0 && isdigit((unsigned char)p[i - 1]))
        i--;
    if (i == n || n - i > 9)
        return -1;
    return atoi(p + i);
}

/* core.group(number | path) -> group | nil, msg, errno */
static int l_group_open(lua_State *L)
{
    char path[128];
    if (lua_type(L, 1) == LUA_TNUMBER) {
        lua_Integer n = lv_checkrange(L, 1, 0, 0x7fffffff);
        snprintf(path, sizeof path, "/dev/vfio/%lld", (long long)n);
    } else {
        size_t len;
        const char *s = luaL_checklstring(L, 1, &len);
        if (len >= sizeof path)
            luaL_argerror(L, 1, "path too long");
        memcpy(path, s, len + 1);
    }
    int fd = vfio_group_open(path);
    if (fd < 0)
        return lv_syserror(L, -fd, "open group", path);
    lv_group *g = lv_newobject(L, sizeof *g, LV_GROUP, 1);
    g->fd = fd;
    g->number = path_number(path);
    memcpy(g->path, path, sizeof path);
    return 1;
}

static int g_status(lua_State *L)
{
    lv_group *g = lv_checkgroup(L, 1);
    uint32_t flags;
    int r = vfio_group_status(g->fd, &flags);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_GROUP_GET_STATUS", g->path);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, flags);
    lua_setfield(L, -2, "flags");
    /* Bit tests: other flags may be set alongside. */
    lua_pushboolean(L, (flags & VFIO_GROUP_FLAGS_VIABLE) != 0);
    lua_setfield(L, -2, "viable");
    lua_pushboolean(L, (flags & VFIO_GROUP_FLAGS_CONTAINER_SET) != 0);
    lua_setfield(L, -2, "container_set");
    return 1;
}

static int g_set_container(lua_State *L)
{
    lv_group *g = lv_checkgroup(L, 1);
    lv_container *c = lv_checkcontainer(L, 2);
    int r = vfio_group_set_container(g->fd, c->fd);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_GROUP_SET_CONTAINER", "%s (container %s)", g->path,
                            c->path);
    lv_set_parent(L, 1, 2, 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int g_unset_container(lua_State *L)
{
    lv_group *g = lv_checkgroup(L, 1);
    int r = vfio_group_unset_container(g->fd);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_GROUP_UNSET_CONTAINER", g->path);
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int g_container(lua_State *L)
{
    lv_checkgroup(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* g:device(name) -> device | nil, msg, errno */
static int g_device(lua_State *L)
{
    luaL_checkudata(L, 1, LV_GROUP);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);   /* a number converts: a GC step */
    if (len == 0 || len >= sizeof(((lv_device *)0)->name))
        luaL_argerror(L, 2, "device name empty or too long");
    lv_group *g = lv_checkgroup(L, 1);
    int fd = vfio_group_device_fd(g->fd, name);
    if (fd < 0)
        return lv_syserrorf(L, -fd, "VFIO_GROUP_GET_DEVICE_FD", "%s in %s", name, g->path);
    lv_pushdevice(L, fd, name, 1);
    return 1;
}

static int g_fileno(lua_State *L)
{
    lua_pushinteger(L, lv_checkgroup(L, 1)->fd);
    return 1;
}

static int g_number(lua_State *L)
{
    lv_group *g = luaL_checkudata(L, 1, LV_GROUP);
    if (g->number < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, g->number);
    return 1;
}

static int g_path(lua_State *L)
{
    lua_pushstring(L, ((lv_group *)luaL_checkudata(L, 1, LV_GROUP))->path);
    return 1;
}

static int g_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_group *)luaL_checkudata(L, 1, LV_GROUP))->fd < 0);
    return 1;
}

static int g_close(lua_State *L)
{
    lv_group *g = luaL_checkudata(L, 1, LV_GROUP);
    if (g->fd >= 0) {
        close(g->fd);
        g->fd = -1;
        lua_pushnil(L);
        lua_setiuservalue(L, 1, 1);
    }
    return 0;
}

static int g_tostring(lua_State *L)
{
    lv_group *g = luaL_checkudata(L, 1, LV_GROUP);
    if (g->fd < 0)
        lua_pushfstring(L, "vfio.group (%s, closed)", g->path);
    else
        lua_pushfstring(L, "vfio.group (%s, fd %d)", g->path, g->fd);
    return 1;
}

/*** @module vfio.core */

/***
Open a VFIO group: its number (`/dev/vfio/N`) or a path (`/dev/vfio/noiommu-N`).
@function group
@param n the group number or node path
@treturn group the group, or `nil, message, errno`
*/

/***
A VFIO group (`vfio.group`).
@type group
*/

/***
VFIO_GROUP_GET_STATUS.
@function group:status
@treturn table `{viable, container_set, flags}`, or `nil, message, errno`
*/

/***
VFIO_GROUP_SET_CONTAINER: attach the group to a container (which it then keeps alive).
@function group:set_container
@tparam container c the container
@treturn boolean true, or `nil, message, errno`
*/

/***
VFIO_GROUP_UNSET_CONTAINER.
@function group:unset_container
@treturn boolean true, or `nil, message, errno`
*/

/***
The container the group is attached to, or nil.
@function group:container
@treturn container|nil
*/

/***
VFIO_GROUP_GET_DEVICE_FD: a device of the group by name (a PCI address or an mdev's UUID).
@function group:device
@tparam string name the device's name
@treturn device the device, or `nil, message, errno`
*/

/***
The group fd's number.
@function group:fileno
@treturn int
*/

/***
The group's number (nil for a group opened by a path with none).
@function group:number
@treturn int|nil
*/

/***
The node it was opened from.
@function group:path
@treturn string
*/

/***
Whether it is closed.
@function group:closed
@treturn boolean
*/

/***
Close the group fd (idempotent).
@function group:close
*/

void lv_open_group(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"status", g_status},   {"set_container", g_set_container},
        {"unset_container", g_unset_container},
        {"container", g_container},
        {"device", g_device},   {"fileno", g_fileno},
        {"number", g_number},   {"path", g_path},
        {"closed", g_closed},   {"close", g_close},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", g_close}, {"__close", g_close}, {"__tostring", g_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_GROUP, methods, meta);
    lua_pushcfunction(L, l_group_open);
    lua_setfield(L, -2, "group");
}
