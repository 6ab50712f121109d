/* vfio.backend: the devices the trap core reaches (backend.h):
 *   core.replay(fixture)                          a recorded device (vfio.record's tables)
 *   core.vfio_backend(device [, {mmap=, name=}])  a kernel VFIO device (vfio.device)
 *   core.vfio_backend(fd, regions, irqs [, name]) any fd described by hand (specs over files)
 * and their raw views (config_read, region_read, stats, mapped) for specs. */
#include "l_objects.h"
#include "l_trap.h"
#include "base/le.h"

#include <stdio.h>
#include <errno.h>
#include <string.h>

struct lv_backend_ud *lv_checkbackend(lua_State *L, int i)
{
    struct lv_backend_ud *b = luaL_checkudata(L, i, LV_BACKEND_T);
    if (!b->be.ops || b->close_pending)
        luaL_error(L, "backend %s is closed", b->be.name);
    return b;
}

static int fixture_int(lua_State *L, int t, const char *k, lua_Integer dflt)
{
    lua_getfield(L, t, k);
    lua_Integer v = lua_isnil(L, -1) ? dflt : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return (int)v;
}

static uint64_t field_u64(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    uint64_t v = lua_isnil(L, -1) ? 0 : (uint64_t)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

static void set_name(lua_State *L, struct lv_backend *be, int t, const char *dflt)
{
    const char *n = dflt;
    if (lua_type(L, t) == LUA_TTABLE) {
        lua_getfield(L, t, "name");
        if (lua_isstring(L, -1))
            n = lua_tostring(L, -1);
        snprintf(be->name, sizeof be->name, "%s", n);   /* copied before the pop */
        lua_pop(L, 1);
        return;
    } else if (lua_isstring(L, t)) {
        n = lua_tostring(L, t);
    }
    snprintf(be->name, sizeof be->name, "%s", n);
}

/* core.replay{config=<256|4096 bytes>, regions={[0]={size=,flags=,data={{off=,bytes=}}}},
 *             irqs={[0]={count=,flags=}}, name=} */
static int l_replay(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "config");
    size_t clen;
    const char *cfg = luaL_checklstring(L, -1, &clen);
    if (clen != 256 && clen != 4096)
        return luaL_argerror(L, 1, "config must be 256 or 4096 bytes");
    struct lv_backend_ud *b = lv_newobject(L, sizeof *b, LV_BACKEND_T, 0);
    int bi = lua_gettop(L);
    int rc = lv_backend_replay_init(&b->be, (const uint8_t *)cfg, clen);
    set_name(L, &b->be, 1, "replay");
    if (rc < 0)
        return lv_syserror(L, -rc, "create replay backend", b->be.name);
    lua_getfield(L, 1, "regions");
    if (lua_istable(L, -1)) {
        int rt = lua_gettop(L);
        for (int i = 0; i < LV_REGION_MAX; i++) {
            if (i == LV_REGION_CONFIG || lua_rawgeti(L, rt, i) != LUA_TTABLE) {
                lua_pop(L, i == LV_REGION_CONFIG ? 0 : 1);
                continue;
            }
            int r = lua_gettop(L);
            rc = lv_replay_set_region(&b->be, (unsigned)i, field_u64(L, r, "size"),
                                      (uint32_t)fixture_int(L, r, "flags", 0));
            if (rc < 0)
                return lv_syserrorf(L, -rc, "replay region", "%s[%d]", b->be.name, i);
            lua_getfield(L, r, "data");
            if (lua_istable(L, -1)) {
                int d = lua_gettop(L);
                for (lua_Integer k = 1; lua_rawgeti(L, d, k) == LUA_TTABLE; k++) {
                    int c = lua_gettop(L);
                    uint64_t off = field_u64(L, c, "off");
                    lua_getfield(L, c, "bytes");
                    size_t n;
                    const char *bytes = luaL_checklstring(L, -1, &n);
                    rc = lv_replay_fill(&b->be, (unsigned)i, off, bytes, n);
                    if (rc < 0)
                        return lv_syserrorf(L, -rc, "replay fill", "%s[%d]+%#llx", b->be.name, i,
                                            (unsigned long long)off);
                    lua_pop(L, 2);
                }
                lua_pop(L, 1);
            }
            lua_pop(L, 2);
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "irqs");
    if (lua_istable(L, -1)) {
        int it = lua_gettop(L);
        for (int i = 0; i < LV_IRQ_MAX; i++) {
            if (lua_rawgeti(L, it, i) == LUA_TTABLE) {
                int r = lua_gettop(L);
                lv_replay_set_irq(&b->be, (unsigned)i, (uint32_t)fixture_int(L, r, "count", 0),
                                  (uint32_t)fixture_int(L, r, "flags", 0));
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_pushvalue(L, bi);
    return 1;
}

/* Region and IRQ tables given for a device that is no VFIO device (a file standing in
 * for one in specs): regions[i] = {offset=, size=, flags=, mmap=bool}, irqs[i] =
 * {count=, flags=}. Only descriptions: no address or fd is taken from Lua. */
static void given_info(lua_State *L, int opts, int rt, struct lv_vfio_region *regions,
                       struct lv_irq_info *irqs, int mmap)
{
    /* rt: the regions table, read once by the caller (a second read of a proxy's field
     * may answer something else) */
    for (int i = 0; i < LV_REGION_MAX; i++) {
        if (lua_rawgeti(L, rt, i) == LUA_TTABLE) {
            int r = lua_gettop(L);
            regions[i].offset = field_u64(L, r, "offset");
            regions[i].size = field_u64(L, r, "size");
            regions[i].flags = (uint32_t)field_u64(L, r, "flags");
            lua_getfield(L, r, "mmap");
            regions[i].want_mmap = mmap && lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (lua_getfield(L, opts, "irqs") == LUA_TTABLE) {
        int it = lua_gettop(L);
        for (int i = 0; i < LV_IRQ_MAX; i++) {
            if (lua_rawgeti(L, it, i) == LUA_TTABLE) {
                irqs[i].count = (uint32_t)field_u64(L, -1, "count");
                irqs[i].flags = (uint32_t)field_u64(L, -1, "flags");
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* core.vfio_backend(device [, {mmap = true, name = device name, regions =, irqs =}]):
 * the region and IRQ info come from the device itself (VFIO_DEVICE_GET_*_INFO), so
 * nothing crosses into Lua and back; `regions`/`irqs` describe them instead for a device
 * that is not a VFIO device (core.device_file). A region whose info fails stays empty
 * (size 0), as the device object shows it. With mmap (the default) the backend maps each
 * mappable BAR and the ROM itself and unmaps them on close. The backend keeps the device
 * object alive and reads its fd where the device keeps it: once the device is closed,
 * every access fails (EBADF) and nothing reaches whatever file takes the number. */
static int l_vfio_backend(lua_State *L)
{
    luaL_checkudata(L, 1, LV_DEVICE);
    int mmap = 1, given = 0, named = 0;
    char name[sizeof ((struct lv_backend *)0)->name];
    struct lv_vfio_region regions[LV_REGION_MAX];
    struct lv_irq_info irqs[LV_IRQ_MAX];
    memset(regions, 0, sizeof regions);
    memset(irqs, 0, sizeof irqs);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "mmap") != LUA_TNIL)
            mmap = lua_toboolean(L, -1);
        if (lua_getfield(L, 2, "name") != LUA_TNIL) {
            /* copied now: what __index returned may be referenced by nothing else, and
             * the reads below may run the collector */
            snprintf(name, sizeof name, "%s", luaL_checkstring(L, -1));
            named = 1;
        }
        given = lua_getfield(L, 2, "regions") == LUA_TTABLE;
        if (given)
            given_info(L, 2, lua_gettop(L), regions, irqs, mmap);
        lua_pop(L, 3);
    }
    /* the device after every read of the options, which may run Lua that closes it */
    lv_device *d = lv_checkdevice(L, 1);
    if (!named)
        snprintf(name, sizeof name, "%.*s", (int)sizeof name - 1, d->name);
    if (!given) {
        struct vfio_dev_desc info;
        int rc = vfio_device_info(d->fd, &info);
        if (rc < 0)
            return lv_syserror(L, -rc, "VFIO_DEVICE_GET_INFO", d->name);
        for (uint32_t i = 0; i < info.num_regions && i < LV_REGION_MAX; i++) {
            struct vfio_region_desc r;
            if (vfio_device_region_info(d->fd, i, &r) < 0)
                continue;
            regions[i].offset = r.offset;
            regions[i].size = r.size;
            regions[i].flags = r.flags;
            regions[i].want_mmap = mmap && i <= LV_REGION_ROM && (r.flags & LV_REGION_MMAP);
            vfio_region_desc_free(&r);
        }
        for (uint32_t i = 0; i < info.num_irqs && i < LV_IRQ_MAX; i++) {
            struct vfio_irq_desc q;
            if (vfio_device_irq_info(d->fd, i, &q) == 0) {
                irqs[i].count = q.count;
                irqs[i].flags = q.flags;
            }
        }
    }
    struct lv_backend_ud *b = lv_newobject(L, sizeof *b, LV_BACKEND_T, 1);
    snprintf(b->be.name, sizeof b->be.name, "%s", name);
    d = lv_checkdevice(L, 1);   /* again: the allocation is a GC step */
    int rc = lv_backend_vfio_init(&b->be, &d->fd, regions, LV_REGION_MAX, irqs, LV_IRQ_MAX);
    if (rc < 0)
        return lv_syserror(L, -rc, "create vfio backend", b->be.name);
    lv_set_parent(L, -1, 1, 1);
    return 1;
}

static int b_close(lua_State *L)
{
    struct lv_backend_ud *b = luaL_checkudata(L, 1, LV_BACKEND_T);
    /* Lifetime rule: its BAR mappings stay while a VM slot borrows them. */
    if (b->pins > 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "close vfio.backend %s: its mappings back %d VM memory slot(s); "
                        "vm:unmap them first", b->be.name, b->pins);
        lua_pushinteger(L, EBUSY);
        return 3;
    }
    if (b->busy) {
        b->close_pending = 1;   /* from a window handler: closed when the access ends */
        return 0;
    }
    lv_backend_destroy(&b->be);
    return 0;
}

static int b_tostring(lua_State *L)
{
    struct lv_backend_ud *b = luaL_checkudata(L, 1, LV_BACKEND_T);
    lua_pushfstring(L, "vfio.backend(%s %s)%s",
                    b->be.ops && !b->close_pending ? b->be.ops->kind : "closed",
                    b->be.name, "");
    return 1;
}

/* backend:stats() (replay only): accesses that reached the recorded device. */
static int b_stats(lua_State *L)
{
    struct lv_backend_ud *b = lv_checkbackend(L, 1);
    const struct lv_replay_stats *live = lv_replay_stats(&b->be);
    if (!live)
        return luaL_error(L, "stats: %s is not a recorded device", b->be.name);
    /* a copy: the pushes below are GC steps, whose finalizers may close the backend */
    const struct lv_replay_stats copy = *live, *s = &copy;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)s->cfg_reads); lua_setfield(L, -2, "cfg_reads");
    lua_pushinteger(L, (lua_Integer)s->cfg_writes); lua_setfield(L, -2, "cfg_writes");
    lua_pushinteger(L, (lua_Integer)s->region_reads); lua_setfield(L, -2, "region_reads");
    lua_pushinteger(L, (lua_Integer)s->region_writes); lua_setfield(L, -2, "region_writes");
    lua_pushinteger(L, s->last_cfg_write_off); lua_setfield(L, -2, "last_cfg_write_off");
    lua_pushinteger(L, s->last_cfg_write_len); lua_setfield(L, -2, "last_cfg_write_len");
    return 1;
}

/* backend:mapped() -> {[region] = true | errno}: regions served through a mapping, or
 * why mapping them failed (vfio backends; empty for recordings). */
static int b_mapped(lua_State *L)
{
    struct lv_backend_ud *b = lv_checkbackend(L, 1);
    int errnos[LV_REGION_MAX];
    uint32_t bits = lv_backend_vfio_mapped(&b->be, errnos);
    int is_vfio = strcmp(b->be.ops->kind, "vfio") == 0;   /* before the allocation */
    lua_newtable(L);
    if (!is_vfio)
        return 1;
    for (int i = 0; i < LV_REGION_MAX; i++) {
        if (bits & (1u << i)) {
            lua_pushboolean(L, 1);
            lua_rawseti(L, -2, i);
        } else if (errnos[i]) {
            lua_pushinteger(L, errnos[i]);
            lua_rawseti(L, -2, i);
        }
    }
    return 1;
}

/* backend:mapping(region) -> offset, length: the part of the region the backend has
 * mapped (vfio backends), or nil, message, errno. The VM layer borrows it for memory
 * slots (vm:map(gpa, size, backend, {region=, offset=})) instead of mapping the BAR
 * again; its host address stays in C. */
static int b_mapping(lua_State *L)
{
    struct lv_backend_ud *b = lv_checkbackend(L, 1);
    unsigned idx = (unsigned)lv_checkrange(L, 2, 0, LV_REGION_MAX - 1);
    void *p;
    uint64_t off, len;
    int rc = lv_backend_mapping(&b->be, idx, &p, &off, &len);
    if (rc < 0)
        return lv_syserrorf(L, -rc, "mapping", "%s[%u]", b->be.name, idx);
    (void)p;
    lua_pushinteger(L, (lua_Integer)off);
    lua_pushinteger(L, (lua_Integer)len);
    return 2;
}

static int b_reset(lua_State *L)
{
    lv_replay_reset(&lv_checkbackend(L, 1)->be);
    return 0;
}

/* backend:config_read(off, n) / region_read(idx, off, n): raw device view. */
static int b_config_read(lua_State *L)
{
    struct lv_backend_ud *b = lv_checkbackend(L, 1);
    uint32_t off = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    uint32_t n = (uint32_t)lv_checkrange(L, 3, 1, 4096);
    char buf[4096];
    int rc = b->be.ops->cfg_read(b->be.ctx, off, buf, n);
    if (rc < 0)
        return lv_syserror(L, -rc, "config read", b->be.name);
    lua_pushlstring(L, buf, n);
    return 1;
}

static int b_region_read(lua_State *L)
{
    struct lv_backend_ud *b = lv_checkbackend(L, 1);
    unsigned idx = (unsigned)lv_checkrange(L, 2, 0, LV_REGION_MAX - 1);
    uint64_t off = (uint64_t)luaL_checkinteger(L, 3);
    uint32_t n = (uint32_t)lv_checkrange(L, 4, 1, 8);
    uint8_t buf[8];
    int rc = b->be.ops->region_read(b->be.ctx, idx, off, buf, n);
    if (rc < 0)
        return lv_syserrorf(L, -rc, "region read", "%s[%u]", b->be.name, idx);
    lua_pushinteger(L, (lua_Integer)lv_le_get(buf, n));
    return 1;
}

/*** @module vfio.core */

/***
A backend replaying a recorded device (vfio.record's fixtures): config space, region
contents and IRQ info, no hardware.
@function replay
@tparam table fixture `{config = 256 or 4096 bytes, regions = {[0] = {size=, flags=, data = {{off=, bytes=}}}}, irqs = {[0] = {count=, flags=}}, name=}`
@treturn backend the backend, or `nil, message, errno`
*/

/***
A backend over a VFIO device, borrowing it: region and IRQ info come from the device
(`regions`/`irqs` describe them instead for a file from `device_file`). With mmap (the
default) it maps each mappable BAR and the ROM itself. Once the device is closed every
access fails (EBADF).
@function vfio_backend
@tparam device dev the device
@tparam[opt] table opts `{mmap = true, name =, regions =, irqs =}`
@treturn backend the backend, or `nil, message, errno`
*/

/***
A device backend (`vfio.backend`) a trap runs over: a VFIO device or a recording.
@type backend
*/

/***
Close the backend and unmap its BARs. Refused while its mappings back VM memory slots.
@function backend:close
@return nothing, or `nil, message, EBUSY`
*/

/***
Accesses that reached the recorded device (replay only; raises for other backends).
@function backend:stats
@treturn table
*/

/***
Reset a replay backend's state to the recording.
@function backend:reset
*/

/***
Regions served through a mapping, or why mapping them failed (empty for recordings).
@function backend:mapped
@treturn table `{[region] = true | errno}`
*/

/***
The part of a region the backend has mapped (the VM borrows it for `vm:map`).
@function backend:mapping
@tparam int region the region index
@return offset, length; or `nil, message, errno`
*/

/***
Raw device config bytes.
@function backend:config_read
@tparam int off 0 to 4095
@tparam int n 1 to 4096
@treturn string the bytes, or `nil, message, errno`
*/

/***
A raw device region read.
@function backend:region_read
@tparam int index the region
@tparam int off offset
@tparam int size 1 to 8
@treturn int the value, or `nil, message, errno`
*/

void lv_open_backend(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"close", b_close}, {"stats", b_stats}, {"reset", b_reset}, {"mapped", b_mapped},
        {"mapping", b_mapping},
        {"config_read", b_config_read}, {"region_read", b_region_read}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", b_close}, {"__close", b_close}, {"__tostring", b_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_BACKEND_T, methods, meta);
    static const luaL_Reg fns[] = {
        {"replay", l_replay}, {"vfio_backend", l_vfio_backend}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
