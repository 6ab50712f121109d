/* Error reporting and object plumbing shared by all bindings. */
#include "lv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

void lv_addmethods(lua_State *L, const char *tname, const luaL_Reg *methods)
{
    luaL_getmetatable(L, tname);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
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

/* vfio.core.strerror(errno) -> message, for Lua code that formats its own errors. */
static int l_strerror(lua_State *L)
{
    lua_pushstring(L, strerror((int)luaL_checkinteger(L, 1)));
    return 1;
}

void lv_open_util(lua_State *L)
{
    static const luaL_Reg fns[] = {{"strerror", l_strerror}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
