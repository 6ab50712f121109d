/* Device migration (csrc/vfio/vfio_migration.c): the vfio.device methods migration(),
 * mig_state(), set_mig_state(state) and mig_data_size(), and vfio.migfile, the data
 * transfer fd a state change opens (STOP_COPY, PRE_COPY, RESUMING). A migfile keeps its
 * device alive (user value 1). */
#include "l_objects.h"
#include "vfio/vfio_uapi_mig.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LV_MIGFILE "vfio.migfile"

typedef struct {
    int fd;
    uint32_t state;  /* the state whose arc opened it */
    char name[128];  /* the device's */
} lv_migfile;

/* One read or write request at most: a Lua string this long is already unusual. */
#define MIG_IO_MAX ((lua_Integer)1 << 30)
/* read() without a length reads the stream in chunks of this size. */
#define MIG_CHUNK ((size_t)64 << 10)

static const char *state_label(uint32_t s)
{
    const char *n = vfio_mig_state_name(s);
    return n ? n : "unknown";
}

/* The migration system error, with a hint when the device has no migration at all. */
static int mig_error(lua_State *L, int err, const char *op, const lv_device *d,
                     const char *what)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s%s: %s%s", op, d->name, what ? what : "", strerror(err),
                    err == ENOTTY ? " (the device does not support migration)" : "");
    lua_pushinteger(L, err);
    return 3;
}

/* d:migration() -> {flags, stop_copy, p2p, pre_copy} | nil, msg, errno */
int lv_device_migration(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    uint64_t flags = 0;
    int r = vfio_mig_flags(d->fd, &flags);
    if (r < 0)
        return mig_error(L, -r, "VFIO_DEVICE_FEATURE_MIGRATION", d, NULL);
    lua_createtable(L, 0, 4);
    lv_setint(L, "flags", (lua_Integer)flags);
    lv_setbool(L, "stop_copy", flags & VFIO_MIGRATION_STOP_COPY);
    lv_setbool(L, "p2p", flags & VFIO_MIGRATION_P2P);
    lv_setbool(L, "pre_copy", flags & VFIO_MIGRATION_PRE_COPY);
    return 1;
}

/* d:mig_state() -> name (an integer for a state newer than this module) | nil, msg, errno */
int lv_device_mig_state(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    uint32_t s = 0;
    int r = vfio_mig_get_state(d->fd, &s);
    if (r < 0)
        return mig_error(L, -r, "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE", d, " (get)");
    const char *n = vfio_mig_state_name(s);
    if (n)
        lua_pushstring(L, n);
    else
        lua_pushinteger(L, s);
    return 1;
}

/* A state argument: a name or a number; "error" is no state one can ask for. */
static uint32_t check_state(lua_State *L, int arg)
{
    int s;
    if (lua_type(L, arg) == LUA_TNUMBER) {
        s = (int)lv_checkrange(L, arg, 1, VFIO_MIG_NSTATES - 1);
    } else {
        const char *name = luaL_checkstring(L, arg);
        s = vfio_mig_state_number(name);
        if (s < 0)
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown migration state '%s' (stop, "
                                                  "running, stop_copy, resuming, running_p2p, "
                                                  "pre_copy, pre_copy_p2p)", name));
        if (s == VFIO_MIG_ERROR)
            luaL_argerror(L, arg, "error is a state the device falls into, never one to set");
    }
    return (uint32_t)s;
}

static lv_migfile *check_migfile(lua_State *L, int idx)
{
    lv_migfile *m = luaL_checkudata(L, idx, LV_MIGFILE);
    if (m->fd < 0)
        luaL_argerror(L, idx, "migfile is closed");
    return m;
}

/* d:set_mig_state(state) -> migfile when the arc opens a data fd, else true;
 * nil, msg, errno when the kernel refuses (the message names both states). */
int lv_device_set_mig_state(lua_State *L)
{
    luaL_checkudata(L, 1, LV_DEVICE);
    uint32_t s = check_state(L, 2);
    /* The object first: once the kernel has handed out a data fd nothing may raise (an
     * allocation failure would leak the fd, and the state change would be lost to Lua). */
    lv_migfile *m = lv_newobject(L, sizeof *m, LV_MIGFILE, 1);
    m->fd = -1;
    lv_device *d = lv_checkdevice(L, 1);   /* after the allocation (a GC step) */
    m->state = s;
    snprintf(m->name, sizeof m->name, "%s", d->name);
    int data_fd = -1;
    int r = vfio_mig_set_state(d->fd, s, &data_fd);
    if (r < 0) {
        char what[64];
        snprintf(what, sizeof what, " (to %s)", state_label(s));
        return mig_error(L, -r, "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE", d, what);
    }
    if (data_fd < 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    m->fd = data_fd;
    lv_set_parent(L, -1, 1, 1);
    return 1;
}

/* d:mig_data_size() -> bytes | nil, msg, errno */
int lv_device_mig_data_size(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    uint64_t n = 0;
    int r = vfio_mig_data_size(d->fd, &n);
    if (r < 0)
        return mig_error(L, -r, "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE", d, NULL);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int file_error(lua_State *L, int err, const char *op, const lv_migfile *m,
                      size_t partial)
{
    if (partial)
        return lv_syserrorf(L, err, op, "%s data fd of %s (after %zu bytes)",
                            state_label(m->state), m->name, partial);
    return lv_syserrorf(L, err, op, "%s data fd of %s", state_label(m->state), m->name);
}

/* f:read([n]) -> up to n bytes (all that is left when n is absent); "" at the end of the
 * stream (for PRE_COPY: when nothing more is ready now, which the kernel's drivers say
 * with ENOMSG: the uAPI's temporary end of stream, no failure). Bytes read before a
 * failure are returned; the failure comes on the next call. */
static int f_read(lua_State *L)
{
    lv_migfile *m = check_migfile(L, 1);
    int all = lua_isnoneornil(L, 2);
    size_t want = all ? 0 : (size_t)lv_checkrange(L, 2, 0, MIG_IO_MAX);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t total = 0;
    for (;;) {
        size_t ask = all ? MIG_CHUNK : want - total;
        if (ask > MIG_CHUNK)
            ask = MIG_CHUNK; /* the buffer grows with what arrives, not with the request */
        if (ask == 0)
            break;
        char *p = luaL_prepbuffsize(&b, ask);
        /* the buffer's growth is a GC step, whose finalizers may have closed the file */
        if (m->fd < 0)
            return luaL_argerror(L, 1, "migfile is closed");
        size_t got = 0;
        int r = vfio_mig_read(m->fd, p, ask, &got);
        luaL_addsize(&b, got);
        total += got;
        if (r == -ENOMSG)
            break; /* PRE_COPY's temporary end: what is ready has been read */
        if (r < 0) {
            if (total > 0)
                break;
            return file_error(L, -r, "read", m, 0);
        }
        if (got < ask)
            break; /* the end of the stream */
    }
    luaL_pushresult(&b);
    return 1;
}

/* f:write(s) -> #s | nil, msg, errno (the message says how much went in first) */
static int f_write(lua_State *L)
{
    luaL_checkudata(L, 1, LV_MIGFILE);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);   /* a number converts: a GC step */
    lv_migfile *m = check_migfile(L, 1);
    size_t done = 0;
    int r = vfio_mig_write(m->fd, s, n, &done);
    if (r < 0)
        return file_error(L, -r, "write", m, done);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* f:precopy_info() -> {initial_bytes, dirty_bytes, flags} | nil, msg, errno */
static int f_precopy_info(lua_State *L)
{
    lv_migfile *m = check_migfile(L, 1);
    uint64_t initial = 0, dirty = 0;
    uint32_t flags = 0;
    int r = vfio_mig_precopy_info(m->fd, &initial, &dirty, &flags);
    if (r < 0)
        return file_error(L, -r, "VFIO_MIG_GET_PRECOPY_INFO", m, 0);
    lua_createtable(L, 0, 3);
    lv_setint(L, "initial_bytes", (lua_Integer)initial);
    lv_setint(L, "dirty_bytes", (lua_Integer)dirty);
    lv_setint(L, "flags", flags);
    return 1;
}

static int f_state(lua_State *L)
{
    lua_pushstring(L, state_label(((lv_migfile *)luaL_checkudata(L, 1, LV_MIGFILE))->state));
    return 1;
}

static int f_fileno(lua_State *L)
{
    lua_pushinteger(L, check_migfile(L, 1)->fd);
    return 1;
}

static int f_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_migfile *)luaL_checkudata(L, 1, LV_MIGFILE))->fd < 0);
    return 1;
}

static int f_close(lua_State *L)
{
    lv_migfile *m = luaL_checkudata(L, 1, LV_MIGFILE);
    if (m->fd >= 0) {
        close(m->fd);
        m->fd = -1;
        lua_pushnil(L);
        lua_setiuservalue(L, 1, 1);
    }
    return 0;
}

static int f_tostring(lua_State *L)
{
    lv_migfile *m = luaL_checkudata(L, 1, LV_MIGFILE);
    if (m->fd < 0)
        lua_pushfstring(L, "vfio.migfile (%s of %s, closed)", state_label(m->state), m->name);
    else
        lua_pushfstring(L, "vfio.migfile (%s of %s, fd %d)", state_label(m->state), m->name,
                        m->fd);
    return 1;
}

/* core.migration_abi() -> the sizes and numbers this build uses, for the specs. */
static int l_migration_abi(lua_State *L)
{
    lua_createtable(L, 0, 8);
    lv_setint(L, "feature_migration", sizeof(struct vfio_device_feature_migration));
    lv_setint(L, "mig_state", sizeof(struct vfio_device_feature_mig_state));
    lv_setint(L, "mig_data_size", sizeof(struct vfio_device_feature_mig_data_size));
    lv_setint(L, "precopy_info", sizeof(struct vfio_precopy_info));
    lv_setint(L, "PRECOPY_INFO_IOCTL", VFIO_MIG_GET_PRECOPY_INFO);
    lv_setint(L, "FEATURE_MIG_DATA_SIZE", VFIO_DEVICE_FEATURE_MIG_DATA_SIZE);
    return 1;
}

/*** @module vfio.core */

/***
Spec hook: the sizes and numbers of the migration uAPI this build uses.
@function migration_abi
@treturn table
*/

/***
The data fd of a migration state change (`vfio.migfile`); it keeps its device alive.
@type migfile
*/

/***
Read the stream: up to n bytes (all to the end without n; n at most 1 GiB). Retries EINTR
and continues short reads; bytes read before a failure are returned and the failure comes
on the next call.
@function migfile:read
@tparam[opt] int n bytes
@treturn string the bytes; `""` at the end (in PRE_COPY: nothing more ready now), or `nil, message, errno`
*/

/***
Write s to the stream (EINTR retried, short writes continued).
@function migfile:write
@tparam string s the bytes
@treturn int `#s`, or `nil, message, errno` (the message says how much went in first)
*/

/***
VFIO_MIG_GET_PRECOPY_INFO (PRE_COPY states only).
@function migfile:precopy_info
@treturn table `{initial_bytes, dirty_bytes, flags}`, or `nil, message, errno`
*/

/***
The state whose arc opened this file.
@function migfile:state
@treturn string
*/

/***
The fd's number.
@function migfile:fileno
@treturn int
*/

/***
Whether it is closed.
@function migfile:closed
@treturn boolean
*/

/***
Close the data fd (idempotent).
@function migfile:close
*/

void lv_open_migration(lua_State *L)
{
    static const luaL_Reg methods[] = {{"read", f_read},     {"write", f_write},
                                       {"precopy_info", f_precopy_info},
                                       {"state", f_state},   {"fileno", f_fileno},
                                       {"closed", f_closed}, {"close", f_close},
                                       {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", f_close}, {"__close", f_close}, {"__tostring", f_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_MIGFILE, methods, meta);

    lua_createtable(L, 0, VFIO_MIG_NSTATES);
    static const char *const upper[VFIO_MIG_NSTATES] = {
        "ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY",
        "PRE_COPY_P2P"};
    for (int i = 0; i < VFIO_MIG_NSTATES; i++)
        lv_setint(L, upper[i], i);
    lua_setfield(L, -2, "MIG_STATE");
    lua_createtable(L, 0, 3);
    lv_setint(L, "STOP_COPY", VFIO_MIGRATION_STOP_COPY);
    lv_setint(L, "P2P", VFIO_MIGRATION_P2P);
    lv_setint(L, "PRE_COPY", VFIO_MIGRATION_PRE_COPY);
    lua_setfield(L, -2, "MIGRATION");
    /* FEATURE comes from the device binding, registered before this one. */
    if (lua_getfield(L, -1, "FEATURE") == LUA_TTABLE)
        lv_setint(L, "MIG_DATA_SIZE", VFIO_DEVICE_FEATURE_MIG_DATA_SIZE);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_migration_abi);
    lua_setfield(L, -2, "migration_abi");
}
