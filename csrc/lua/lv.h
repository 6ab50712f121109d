/* luavfio internal helpers shared by every C file of vfio.core.
 *
 * Conventions (csrc/lua/README.md):
 *  - argument errors raise (luaL_argerror / luaL_error);
 *  - system errors return nil, message, errno: lv_syserror() builds the message
 *    "<operation> <subject>: <strerror>" so a caller always learns what failed, on what;
 *  - every object type has one metatable named "vfio.<type>" with __name, __index,
 *    __tostring, __gc and __close; close() is idempotent;
 *  - a child keeps its parent alive through user value 1 (lv_set_parent). */
#ifndef LUAVFIO_LV_H
#define LUAVFIO_LV_H

#include <lua.h>
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define LV_EXPORT __attribute__((visibility("default")))
#define LV_UNUSED __attribute__((unused))
#else
#define LV_EXPORT
#define LV_UNUSED
#endif

/* Push nil, "<op> <subject>: strerror(err)", err and return 3. */
int lv_syserror(lua_State *L, int err, const char *op, const char *subject);
/* Same, with a printf-formatted subject. */
int lv_syserrorf(lua_State *L, int err, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Create a new full userdata of `size` bytes (zeroed) with `nuv` user values and the
 * metatable `tname`. */
void *lv_newobject(lua_State *L, size_t size, const char *tname, int nuv);

/* Register a metatable `tname` whose methods are `methods`; __index points at a method
 * table, __name is set, and `meta` adds metamethods (__gc, __close, __tostring...). */
void lv_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                 const luaL_Reg *meta);

/* Add `methods` to the class `tname` registered earlier, so one object type can keep a
 * concern of its own in a file of its own (trap:bench). */
void lv_addmethods(lua_State *L, const char *tname, const luaL_Reg *methods);

/* Store the value at `parent` as user value `slot` of the userdata at `child`, so a child
 * object keeps its parent alive for as long as it lives. */
void lv_set_parent(lua_State *L, int child, int parent, int slot);

/* Read an integer argument that must lie in [lo, hi]; raises otherwise. */
lua_Integer lv_checkrange(lua_State *L, int arg, lua_Integer lo, lua_Integer hi);

/* Each concern registers its functions/classes into the module table at the stack top.
 * Add one line per concern to LV_MODULES in modules.h. */
typedef void (*lv_open_fn)(lua_State *L);

#endif
