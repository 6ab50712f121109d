/* Error reporting and object plumbing shared by all bindings. */
#include "lv.h"

#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

int lv_syserror(lua_State *L, int err, const char *op, const char *subject)
{
    lua_pushnil(L);
    if (subject && *subject)
        lua_pushfstring(L, "%s %s: %s", op, subject, strerror(err));
    else
        lua_pushfstring(L, "%s: %s", op, strerror(err));
    lua_pushinteger(L, err);
    return 3;
}

int lv_syserrorf(lua_State *L, int err, const char *op, const char *fmt, ...)
{
    char subject[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(subject, sizeof subject, fmt, ap);
    va_end(ap);
    return lv_syserror(L, err, op, subject);
}

/* VmLck and VmPin (KiB) and CAP_IPC_LOCK in the effective set, from /proc/self/status. */
static void locked_now(uint64_t *kib, int *ipc_lock)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "re");
    *kib = 0;
    *ipc_lock = 0;
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "VmLck: %llu kB", &v) == 1 || sscanf(line, "VmPin: %llu kB", &v) == 1)
            *kib += v;
        else if (sscanf(line, "CapEff: %llx", &v) == 1)
            *ipc_lock = (v >> 14) & 1; /* CAP_IPC_LOCK */
    }
    fclose(f);
}

int lv_dma_map_error(lua_State *L, int err, uint64_t size)
{
    if (err != ENOMEM)
        return 3;
    struct rlimit rl;
    uint64_t locked;
    int ipc_lock;
    char hint[512];
    locked_now(&locked, &ipc_lock);
    uint64_t need = locked + (size + 1023) / 1024;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0)
        snprintf(hint, sizeof hint, " (the memlock limit could not be read: %s)",
                 strerror(errno));
    else if (rl.rlim_cur == RLIM_INFINITY || ipc_lock)
        snprintf(hint, sizeof hint, " (the memlock limit does not apply: %s; the host is short "
                 "of memory, or the IOMMU of mappings)",
                 ipc_lock ? "CAP_IPC_LOCK" : "ulimit -l is unlimited");
    else
        snprintf(hint, sizeof hint,
                 ": VFIO pins mapped memory against the memlock limit (RLIMIT_MEMLOCK), %" PRIu64
                 " KiB, with %" PRIu64 " KiB locked already: this map needs at least %" PRIu64
                 " KiB (ulimit -l %" PRIu64 ", or memlock in /etc/security/limits.conf, "
                 "LimitMEMLOCK= for a systemd service; or CAP_IPC_LOCK, as root)",
                 (uint64_t)rl.rlim_cur / 1024, locked, need, need);
    const char *msg = lua_tostring(L, -2);
    lua_pushfstring(L, "%s%s", msg ? msg : "", hint);
    lua_replace(L, -3);
    return 3;
}

void *lv_newobject(lua_State *L, size_t size, const char *tname, int nuv)
{
    void *p = lua_newuserdatauv(L, size, nuv);
    memset(p, 0, size);
    luaL_setmetatable(L, tname);
    return p;
}

void lv_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                 const luaL_Reg *meta)
{
    luaL_newmetatable(L, tname); /* sets __name */
    if (meta)
        luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    if (methods)
        luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

/* Registry key of the capability table: metatable -> { cap name -> light userdata }. */
static const char CAPS_KEY[] = "luavfio.caps";

void lv_setcap(lua_State *L, const char *tname, const char *cap, const void *ops)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, CAPS_KEY);
    luaL_getmetatable(L, tname);
    if (lua_rawget(L, -2) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        luaL_getmetatable(L, tname);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_pushlightuserdata(L, (void *)ops);
    lua_setfield(L, -2, cap);
    lua_pop(L, 2);
}

const void *lv_testcap(lua_State *L, int idx, const char *cap)
{
    const void *ops = NULL;
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return NULL;
    if (lua_getfield(L, LUA_REGISTRYINDEX, CAPS_KEY) == LUA_TTABLE) {
        lua_pushvalue(L, -2);
        if (lua_rawget(L, -2) == LUA_TTABLE && lua_getfield(L, -1, cap) == LUA_TLIGHTUSERDATA)
            ops = lua_touserdata(L, -1);
    }
    lua_settop(L, top);
    return ops;
}

void lv_copy_fields(lua_State *L, int from, int to)
{
    from = lua_absindex(L, from);
    to = lua_absindex(L, to);
    lua_pushnil(L);
    while (lua_next(L, from)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, to);
    }
}

/* The table getmetatable() shows for objects of the class at `mt`: its name, a copy of
 * its methods (so the REPL can complete them) and its __tostring. Writing to it changes
 * nothing of the class. */
static void push_description(lua_State *L, int mt)
{
    lua_createtable(L, 0, 3);
    lua_getfield(L, mt, "__name");
    lua_setfield(L, -2, "__name");
    lua_getfield(L, mt, "__tostring");
    lua_setfield(L, -2, "__tostring");
    if (lua_getfield(L, mt, "__index") == LUA_TTABLE) {
        lua_newtable(L);
        lv_copy_fields(L, -2, -1);
        lua_remove(L, -2);
    }
    lua_setfield(L, -2, "__index");
}

void lv_protect_classes(lua_State *L)
{
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX)) {
        /* classes are registry entries "vfio.<type>" whose __name is their own key */
        if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1) &&
            strncmp(lua_tostring(L, -2), "vfio.", 5) == 0) {
            int mt = lua_gettop(L);
            lua_getfield(L, mt, "__name");
            int is_class = lua_rawequal(L, -1, mt - 1);
            lua_pop(L, 1);
            if (is_class) {
                push_description(L, mt);
                lua_setfield(L, mt, "__metatable");
            }
        }
        lua_pop(L, 1);
    }
}

void lv_set_parent(lua_State *L, int child, int parent, int slot)
{
    child = lua_absindex(L, child);
    lua_pushvalue(L, parent);
    lua_setiuservalue(L, child, slot);
}

lua_Integer lv_checkrange(lua_State *L, int arg, lua_Integer lo, lua_Integer hi)
{
    lua_Integer v = luaL_checkinteger(L, arg);
    if (v < lo || v > hi)
        luaL_argerror(L, arg, lua_pushfstring(L, "%I out of range [%I, %I]", v, lo, hi));
    return v;
}

void lv_setint(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

void lv_setbool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v != 0);
    lua_setfield(L, -2, k);
}

/* vfio.core.strerror(errno) -> message, for Lua code that formats its own errors. */
static int l_strerror(lua_State *L)
{
    lua_pushstring(L, strerror((int)luaL_checkinteger(L, 1)));
    return 1;
}

/*** @module vfio.core */

/***
The system's message for an errno, for Lua code that formats its own errors.
@function strerror
@tparam int errno the number
@treturn string
*/

void lv_open_util(lua_State *L)
{
    static const luaL_Reg fns[] = {{"strerror", l_strerror}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}

int lv_push_capture(lua_State *L, const char *buf, size_t *len, uint64_t *dropped)
{
    int clear = lua_toboolean(L, 2); /* before the pushes take index 2 */
    lua_pushlstring(L, buf ? buf : "", *len);
    lua_pushinteger(L, (lua_Integer)*dropped);
    if (clear)
        *len = 0, *dropped = 0;
    return 2;
}

int lv_opt_timeout_ms(lua_State *L, int arg, int dflt)
{
    lua_Integer t = luaL_optinteger(L, arg, dflt);
    if (t < 0)
        return -1;
    return t > INT_MAX ? INT_MAX : (int)t;
}
