/* luavfio internal helpers shared by every C file of vfio.core.
 *
 * Conventions (csrc/lua/README.md):
 *  - argument errors raise (luaL_argerror / luaL_error);
 *  - system errors return nil, message, errno: lv_syserror() builds the message
 *    "<operation> <subject>: <strerror>" so a caller always learns what failed, on what;
 *  - every object type has one metatable named "vfio.<type>" with __name, __index,
 *    __tostring, __gc and __close; close() is idempotent;
 *  - a child keeps its parent alive through user value 1 (lv_set_parent);
 *  - read, then check: a binding reads all its arguments (option tables, lists, strings:
 *    copied or left on the stack) and makes its allocations before it checks an object
 *    (lv_check<type>), or checks it again after the last call that can run Lua:
 *    metamethods of what it reads (__index, __len), fileno(), string conversions, and
 *    every allocation (a GC step may run any __gc) can close it;
 *  - no host address reaches Lua (no %p in a message or a __tostring);
 *  - types cannot be forged from Lua: every metatable carries __metatable, so Lua code
 *    never reaches one (getmetatable returns a read-only description of the class), C
 *    checks an object's type by its metatable's identity (luaL_checkudata), and what an
 *    object implements in C (config access, handled ranges) is found by that identity in
 *    a registry table (lv_setcap / lv_testcap), never in a field Lua could write. */
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

/* An optional timeout in milliseconds for poll(): `dflt` when absent, -1 (forever) when
 * negative, saturated at INT_MAX when larger (never truncated: 2^32 ms is no 0). */
int lv_opt_timeout_ms(lua_State *L, int arg, int dflt);
/* After lv_syserror's three values for a DMA map of `size` bytes: when err is ENOMEM,
 * the message on the stack (index -2) gains what the memlock limit (RLIMIT_MEMLOCK) is,
 * what is locked already, and the `ulimit -l` the map needs. Returns 3. */
int lv_dma_map_error(lua_State *L, int err, uint64_t size);

/* Create a new full userdata of `size` bytes (zeroed) with `nuv` user values and the
 * metatable `tname`. */
void *lv_newobject(lua_State *L, size_t size, const char *tname, int nuv);

/* Register a metatable `tname` whose methods are `methods`; __index points at a method
 * table, __name is set, and `meta` adds metamethods (__gc, __close, __tostring...). */
void lv_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                 const luaL_Reg *meta);

/* Copy every field of the table at `from` into the table at `to` (raw, shallow). */
void lv_copy_fields(lua_State *L, int from, int to);

/* Make every class registered so far unreachable from Lua: each gets __metatable, a
 * description table ({__name, __index = a copy of its methods, __tostring}) that
 * getmetatable returns instead. Called once the whole module is open. */
void lv_protect_classes(lua_State *L);

/* Record that objects of class `tname` implement `cap` with the C table `ops`, and find
 * it again for the object at `idx` (NULL when the object is not of such a class). */
#define LV_CAP_KVM_IO "kvm_io"   /* struct kvm_io_ops: a handled range of a VM */
#define LV_CAP_PCI_CFG "pci_cfg" /* struct kvm_pci_cfg_ops: a function of the host bridge */
void lv_setcap(lua_State *L, const char *tname, const char *cap, const void *ops);
const void *lv_testcap(lua_State *L, int idx, const char *cap);

/* Store the value at `parent` as user value `slot` of the userdata at `child`, so a child
 * object keeps its parent alive for as long as it lives. */
void lv_set_parent(lua_State *L, int child, int parent, int slot);
/* The output([clear]) method of a capture buffer (a debug console's, a UART's): pushes
 * the bytes and the count dropped past the cap; a true argument at index 2 empties it. */
int lv_push_capture(lua_State *L, const char *buf, size_t *len, uint64_t *dropped);

/* Read an integer argument that must lie in [lo, hi]; raises otherwise. */
lua_Integer lv_checkrange(lua_State *L, int arg, lua_Integer lo, lua_Integer hi);

/* Set field k of the table on top to an integer / to a boolean (v nonzero: true). */
void lv_setint(lua_State *L, const char *k, lua_Integer v);
void lv_setbool(lua_State *L, const char *k, int v);

/* Each concern registers its functions/classes into the module table at the stack top.
 * Add one line per concern to LV_MODULES in modules.h. */
typedef void (*lv_open_fn)(lua_State *L);

#endif
