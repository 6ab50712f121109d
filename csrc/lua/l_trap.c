/* Lua binding of the trap core and its backends:
 *   core.replay(fixture)            recorded device (fixture tables from vfio.record)
 *   core.vfio_backend(fd, regions, irqs [, name])   kernel VFIO device fd
 *   core.trap(backend [, {pcie=bool}]) -> vfio.trap
 * Guest-facing accesses never raise for guest-controlled values (offsets, data): out of
 * range config reads float high; backend failures return nil, message, errno. Only
 * API misuse (an access size other than 1/2/4[/8]) raises. */
#include "lv.h"
#include "trap/trap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BACKEND_T "vfio.backend"
#define TRAP_T "vfio.trap"

enum { UV_BACKEND = 1, UV_WINDOWS, UV_CALLBACK, UV_COUNT = 3 };

struct l_backend {
    struct lv_backend be;
};

struct l_trap {
    struct trap_fn fn;
    lua_State *L;          /* the state of the current access, for window handlers */
    int handler_err;       /* a Lua window handler raised: its message is on the stack */
    int open;
};

/* ---- backends ---- */

static struct l_backend *checkbackend(lua_State *L, int i)
{
    struct l_backend *b = luaL_checkudata(L, i, BACKEND_T);
    if (!b->be.ops)
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
        lua_pop(L, 1);
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
    struct l_backend *b = lv_newobject(L, sizeof *b, BACKEND_T, 0);
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

/* core.vfio_backend(fd, regions, irqs [, name]): regions[i] = {offset=, size=, flags=,
 * map=<lightuserdata or address>, map_offset=, map_len=, mmap=bool} for i = 0..8. The fd
 * and given maps are borrowed from the device object, which must outlive the backend;
 * with mmap=true the backend maps a mappable region itself (and unmaps it on close). */
static int l_vfio_backend(lua_State *L)
{
    int fd = (int)lv_checkrange(L, 1, 0, 0x7fffffff);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    struct lv_vfio_region regions[LV_REGION_MAX];
    struct lv_irq_info irqs[LV_IRQ_MAX];
    memset(regions, 0, sizeof regions);
    memset(irqs, 0, sizeof irqs);
    for (int i = 0; i < LV_REGION_MAX; i++) {
        if (lua_rawgeti(L, 2, i) == LUA_TTABLE) {
            int r = lua_gettop(L);
            regions[i].offset = field_u64(L, r, "offset");
            regions[i].size = field_u64(L, r, "size");
            regions[i].flags = (uint32_t)field_u64(L, r, "flags");
            lua_getfield(L, r, "map");
            if (lua_islightuserdata(L, -1))
                regions[i].map = lua_touserdata(L, -1);
            else if (lua_isinteger(L, -1))
                regions[i].map = (void *)(uintptr_t)lua_tointeger(L, -1);
            lua_pop(L, 1);
            regions[i].map_offset = field_u64(L, r, "map_offset");
            regions[i].map_len = regions[i].map ? field_u64(L, r, "map_len") : 0;
            lua_getfield(L, r, "mmap");
            regions[i].want_mmap = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    for (int i = 0; i < LV_IRQ_MAX; i++) {
        if (lua_rawgeti(L, 3, i) == LUA_TTABLE) {
            irqs[i].count = (uint32_t)field_u64(L, -1, "count");
            irqs[i].flags = (uint32_t)field_u64(L, -1, "flags");
        }
        lua_pop(L, 1);
    }
    struct l_backend *b = lv_newobject(L, sizeof *b, BACKEND_T, 0);
    set_name(L, &b->be, 4, "vfio device");
    int rc = lv_backend_vfio_init(&b->be, fd, regions, LV_REGION_MAX, irqs, LV_IRQ_MAX);
    if (rc < 0)
        return lv_syserror(L, -rc, "create vfio backend", b->be.name);
    return 1;
}

static int b_close(lua_State *L)
{
    struct l_backend *b = luaL_checkudata(L, 1, BACKEND_T);
    lv_backend_destroy(&b->be);
    return 0;
}

static int b_tostring(lua_State *L)
{
    struct l_backend *b = luaL_checkudata(L, 1, BACKEND_T);
    lua_pushfstring(L, "vfio.backend(%s %s)%s", b->be.ops ? b->be.ops->kind : "closed",
                    b->be.name, "");
    return 1;
}

/* backend:stats() (replay only): accesses that reached the recorded device. */
static int b_stats(lua_State *L)
{
    struct l_backend *b = checkbackend(L, 1);
    const struct lv_replay_stats *s = lv_replay_stats(&b->be);
    if (!s)
        return luaL_error(L, "stats: %s is not a recorded device", b->be.name);
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
    struct l_backend *b = checkbackend(L, 1);
    int errnos[LV_REGION_MAX];
    uint32_t bits = lv_backend_vfio_mapped(&b->be, errnos);
    lua_newtable(L);
    if (strcmp(b->be.ops->kind, "vfio"))
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

static int b_reset(lua_State *L)
{
    lv_replay_reset(&checkbackend(L, 1)->be);
    return 0;
}

/* backend:config_read(off, n) / region_read(idx, off, n): raw device view. */
static int b_config_read(lua_State *L)
{
    struct l_backend *b = checkbackend(L, 1);
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
    struct l_backend *b = checkbackend(L, 1);
    unsigned idx = (unsigned)lv_checkrange(L, 2, 0, LV_REGION_MAX - 1);
    uint64_t off = (uint64_t)luaL_checkinteger(L, 3);
    uint32_t n = (uint32_t)lv_checkrange(L, 4, 1, 8);
    uint8_t buf[8];
    int rc = b->be.ops->region_read(b->be.ctx, idx, off, buf, n);
    if (rc < 0)
        return lv_syserrorf(L, -rc, "region read", "%s[%u]", b->be.name, idx);
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v |= (uint64_t)buf[i] << (8 * i);
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

/* ---- trap ---- */

static struct l_trap *checktrap(lua_State *L, int i)
{
    struct l_trap *t = luaL_checkudata(L, i, TRAP_T);
    if (!t->open)
        luaL_error(L, "vfio.trap is closed");
    if (!t->fn.be->ops)
        luaL_error(L, "vfio.trap: its backend %s is closed", t->fn.be->name);
    t->L = L;
    t->handler_err = 0;
    return t;
}

/* Windows registered from Lua: handler tables live in user value UV_WINDOWS, by id. */
static int lua_window(struct trap_fn *fn, void *ctx, int id, bool write, uint64_t off,
                      uint32_t len, uint64_t *val)
{
    struct l_trap *t = ctx;
    lua_State *L = t->L;
    if (t->handler_err)
        return -EIO;
    lua_getiuservalue(L, 1, UV_WINDOWS);
    lua_rawgeti(L, -1, id);
    lua_getfield(L, -1, write ? "write" : "read");
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 3);
        if (!write)
            *val = 0;
        return 0;
    }
    lua_pushinteger(L, (lua_Integer)off);
    lua_pushinteger(L, len);
    if (write)
        lua_pushinteger(L, (lua_Integer)*val);
    if (lua_pcall(L, write ? 3 : 2, 1, 0) != LUA_OK) {
        lua_replace(L, -3);   /* keep the message, drop the tables */
        lua_pop(L, 1);
        t->handler_err = 1;
        return -EIO;
    }
    if (!write) {
        /* never raise from here (we are inside the core's dispatch): a bad result
         * becomes the handler's error, raised once the core has returned */
        int isint = 0;
        lua_Integer r = lua_isnil(L, -1) ? 0 : lua_tointegerx(L, -1, &isint);
        if (!lua_isnil(L, -1) && !isint) {
            lua_pushfstring(L, "BAR window handler %d: read returned %s, not an integer", id,
                            luaL_typename(L, -1));
            lua_replace(L, -4);
            lua_pop(L, 2);
            t->handler_err = 1;
            return -EIO;
        }
        *val = (uint64_t)r;
    }
    lua_pop(L, 3);
    return 0;
}

static void push_event(lua_State *L, const struct trap_event *e)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, trap_event_name(e->type));
    lua_setfield(L, -2, "type");
    switch (e->type) {
    case TRAP_EV_BAR_MAP:
        lua_pushinteger(L, e->bar); lua_setfield(L, -2, "bar");
        lua_pushboolean(L, e->addr != TRAP_UNMAPPED); lua_setfield(L, -2, "mapped");
        if (e->addr != TRAP_UNMAPPED) { lua_pushinteger(L, (lua_Integer)e->addr); lua_setfield(L, -2, "addr"); }
        if (e->old != TRAP_UNMAPPED) { lua_pushinteger(L, (lua_Integer)e->old); lua_setfield(L, -2, "old"); }
        lua_pushboolean(L, e->flags & 2); lua_setfield(L, -2, "io");
        break;
    case TRAP_EV_DECODE:
        lua_pushboolean(L, e->flags & 1); lua_setfield(L, -2, "memory");
        lua_pushboolean(L, e->flags & 2); lua_setfield(L, -2, "io");
        lua_pushinteger(L, e->data); lua_setfield(L, -2, "command");
        break;
    case TRAP_EV_MSI_ENABLE:
    case TRAP_EV_MSIX_ENABLE:
        lua_pushboolean(L, e->flags & 1); lua_setfield(L, -2, "enabled");
        lua_pushinteger(L, e->count); lua_setfield(L, -2, "count");
        if (e->type == TRAP_EV_MSIX_ENABLE) { lua_pushboolean(L, e->flags & 2); lua_setfield(L, -2, "fmask"); }
        else { lua_pushinteger(L, (lua_Integer)e->addr); lua_setfield(L, -2, "addr");
               lua_pushinteger(L, e->data); lua_setfield(L, -2, "data"); }
        break;
    case TRAP_EV_MSI_ROUTE:
        lua_pushinteger(L, e->count); lua_setfield(L, -2, "count");
        /* fallthrough */
    case TRAP_EV_MSIX_ROUTE:
        lua_pushinteger(L, e->vector); lua_setfield(L, -2, "vector");
        lua_pushinteger(L, (lua_Integer)e->addr); lua_setfield(L, -2, "addr");
        lua_pushinteger(L, e->data); lua_setfield(L, -2, "data");
        break;
    case TRAP_EV_MSI_MASK:
    case TRAP_EV_MSIX_MASK:
        lua_pushinteger(L, e->vector); lua_setfield(L, -2, "vector");
        lua_pushboolean(L, e->flags & 1); lua_setfield(L, -2, "masked");
        lua_pushinteger(L, (lua_Integer)e->addr); lua_setfield(L, -2, "addr");
        lua_pushinteger(L, e->data); lua_setfield(L, -2, "data");
        break;
    case TRAP_EV_MSIX_FMASK:
        lua_pushboolean(L, e->flags & 1); lua_setfield(L, -2, "masked");
        break;
    default:
        break;
    }
}

/* After a guest write: raise a handler's error, then feed queued events to the
 * callback if one is registered (otherwise they wait for trap:events()). */
static void after_access(lua_State *L, struct l_trap *t)
{
    if (t->handler_err)
        lua_error(L);
    if (!t->fn.ev_count || lua_getiuservalue(L, 1, UV_CALLBACK) != LUA_TFUNCTION) {
        if (t->fn.ev_count)
            lua_pop(L, 1);
        return;
    }
    int cb = lua_gettop(L);
    struct trap_event e;
    while (trap_event_pop(&t->fn, &e)) {
        lua_pushvalue(L, cb);
        push_event(L, &e);
        lua_call(L, 1, 0);
    }
    lua_pop(L, 1);
}

static uint32_t checksize(lua_State *L, int i, int allow8)
{
    lua_Integer n = luaL_checkinteger(L, i);
    if (!(n == 1 || n == 2 || n == 4 || (allow8 && n == 8)))
        luaL_argerror(L, i, allow8 ? "size must be 1, 2, 4 or 8" : "size must be 1, 2 or 4");
    return (uint32_t)n;
}

/* Guest offsets: anything; values outside 32 bits can never be in range. */
static uint32_t cfg_offset(lua_State *L, int i)
{
    lua_Integer o = luaL_checkinteger(L, i);
    return o < 0 || o > 0xffffffffLL ? 0xffffffffu : (uint32_t)o;
}

static int l_trap_new(lua_State *L)
{
    struct l_backend *b = checkbackend(L, 1);
    bool pcie = true;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "pcie");
        if (!lua_isnil(L, -1))
            pcie = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    struct l_trap *t = lv_newobject(L, sizeof *t, TRAP_T, UV_COUNT);
    int rc = trap_init(&t->fn, &b->be, pcie);
    if (rc < 0) {
        trap_free(&t->fn);
        return lv_syserror(L, -rc, "create trap for", b->be.name);
    }
    if (!pcie)
        trap_hide_cap(&t->fn, 0x10, false);   /* conventional bus: no PCIe cap, 256 B */
    t->open = 1;
    lv_set_parent(L, -1, 1, UV_BACKEND);
    lua_newtable(L);
    lua_setiuservalue(L, -2, UV_WINDOWS);
    return 1;
}

static int t_cfg_read(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    uint32_t off = cfg_offset(L, 2), len = checksize(L, 3, 0), v;
    int rc = trap_cfg_read(&t->fn, off, len, &v);
    if (rc < 0)
        return lv_syserrorf(L, -rc, "config read", "%s+%#x", t->fn.be->name, off);
    lua_pushinteger(L, v);
    return 1;
}

static int t_cfg_write(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    uint32_t off = cfg_offset(L, 2), len = checksize(L, 3, 0);
    uint32_t v = (uint32_t)luaL_checkinteger(L, 4);
    int rc = trap_cfg_write(&t->fn, off, len, v);
    after_access(L, t);
    if (rc < 0)
        return lv_syserrorf(L, -rc, "config write", "%s+%#x", t->fn.be->name, off);
    lua_pushboolean(L, 1);
    return 1;
}

static int bar_rw(lua_State *L, bool write)
{
    struct l_trap *t = checktrap(L, 1);
    unsigned bar = (unsigned)lv_checkrange(L, 2, 0, TRAP_NBARS - 1);
    uint64_t off = (uint64_t)luaL_checkinteger(L, 3);
    uint32_t len = checksize(L, 4, 1);
    uint64_t v = write ? (uint64_t)luaL_checkinteger(L, 5) : 0;
    int rc = trap_bar_access(&t->fn, bar, off, len, write, &v);
    after_access(L, t);
    if (rc < 0)
        return lv_syserrorf(L, -rc, write ? "BAR write" : "BAR read", "%s BAR%u+%#llx",
                            t->fn.be->name, bar, (unsigned long long)off);
    if (write)
        lua_pushboolean(L, 1);
    else
        lua_pushinteger(L, (lua_Integer)v);
    return 1;
}
static int t_bar_read(lua_State *L) { return bar_rw(L, false); }
static int t_bar_write(lua_State *L) { return bar_rw(L, true); }

/* Guest physical address / port dispatch: returns value (or true), claimed. */
static int addr_rw(lua_State *L, bool io, bool write)
{
    struct l_trap *t = checktrap(L, 1);
    uint64_t addr = (uint64_t)luaL_checkinteger(L, 2);
    uint32_t len = checksize(L, 3, 1);
    uint64_t v = write ? (uint64_t)luaL_checkinteger(L, 4) : 0;
    int rc = trap_addr_access(&t->fn, io, addr, len, write, &v);
    after_access(L, t);
    if (rc < 0 && rc != -ENXIO)
        return lv_syserrorf(L, -rc, write ? "write" : "read", "%s %s %#llx", t->fn.be->name,
                            io ? "port" : "address", (unsigned long long)addr);
    if (write)
        lua_pushboolean(L, 1);
    else
        lua_pushinteger(L, (lua_Integer)v);
    lua_pushboolean(L, rc != -ENXIO);
    return 2;
}
static int t_mmio_read(lua_State *L) { return addr_rw(L, false, false); }
static int t_mmio_write(lua_State *L) { return addr_rw(L, false, true); }
static int t_io_read(lua_State *L) { return addr_rw(L, true, false); }
static int t_io_write(lua_State *L) { return addr_rw(L, true, true); }

/* trap:device_read(bar, off, size) / device_write(bar, off, size, v): the device's region
 * itself, bypassing MSI-X and windows, for quirk handlers that forward to the device. */
static int device_rw(lua_State *L, bool write)
{
    struct l_trap *t = checktrap(L, 1);
    unsigned idx = (unsigned)lv_checkrange(L, 2, 0, LV_REGION_ROM);
    uint64_t off = (uint64_t)luaL_checkinteger(L, 3);
    uint32_t len = checksize(L, 4, 1);
    uint64_t v = write ? (uint64_t)luaL_checkinteger(L, 5) : 0;
    uint8_t buf[8];
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(v >> (8 * i));
    const struct lv_backend_ops *ops = t->fn.be->ops;
    int rc = write ? ops->region_write(t->fn.be->ctx, idx, off, buf, len)
                   : ops->region_read(t->fn.be->ctx, idx, off, buf, len);
    if (rc < 0)
        return lv_syserrorf(L, -rc, write ? "region write" : "region read", "%s[%u]+%#llx",
                            t->fn.be->name, idx, (unsigned long long)off);
    if (write) {
        lua_pushboolean(L, 1);
        return 1;
    }
    v = 0;
    for (uint32_t i = 0; i < len; i++)
        v |= (uint64_t)buf[i] << (8 * i);
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}
static int t_device_read(lua_State *L) { return device_rw(L, false); }
static int t_device_write(lua_State *L) { return device_rw(L, true); }

static int t_events(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    lua_createtable(L, (int)t->fn.ev_count, 0);
    struct trap_event e;
    for (lua_Integer i = 1; trap_event_pop(&t->fn, &e); i++) {
        push_event(L, &e);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

static int t_on_event(lua_State *L)
{
    checktrap(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    lua_setiuservalue(L, 1, UV_CALLBACK);
    return 0;
}

static void setint(lua_State *L, const char *k, lua_Integer v) { lua_pushinteger(L, v); lua_setfield(L, -2, k); }
static void setbool(lua_State *L, const char *k, int v) { lua_pushboolean(L, v); lua_setfield(L, -2, k); }

static int t_bars(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    lua_createtable(L, TRAP_NBARS, 1);
    for (int i = 0; i < TRAP_NBARS; i++) {
        const struct trap_bar *b = &t->fn.bars[i];
        lua_createtable(L, 0, 10);
        setint(L, "index", i);
        setint(L, "size", (lua_Integer)b->size);
        setint(L, "phys_size", (lua_Integer)b->phys_size);
        setbool(L, "io", b->io);
        setbool(L, "is64", b->is64);
        setbool(L, "prefetch", b->prefetch);
        setbool(L, "upper", b->upper);
        setbool(L, "rom", i == 6);
        setint(L, "addr", (lua_Integer)b->addr);
        setbool(L, "mapped", b->size && !b->upper && b->mapped != TRAP_UNMAPPED);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

static int t_caps(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    lua_createtable(L, (int)t->fn.ncaps, 0);
    for (unsigned i = 0; i < t->fn.ncaps; i++) {
        const struct trap_cap *c = &t->fn.caps[i];
        lua_createtable(L, 0, 6);
        setint(L, "id", c->id);
        setint(L, "off", c->off);
        setint(L, "len", c->len);
        setbool(L, "ext", c->ext);
        setbool(L, "hidden", c->hidden);
        setbool(L, "added", c->added);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int t_info(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    lua_createtable(L, 0, 6);
    setint(L, "cfg_size", t->fn.cfg_size);
    setint(L, "dev_cfg_size", t->fn.dev_cfg_size);
    setint(L, "guard_hits", t->fn.cap_guard_hits);
    setint(L, "events_lost", (lua_Integer)t->fn.ev_lost);
    setint(L, "events_queued", t->fn.ev_count);
    setint(L, "windows", t->fn.nwindows);
    lua_pushstring(L, t->fn.be->name);
    lua_setfield(L, -2, "name");
    return 1;
}

static int t_msi(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    if (!t->fn.msi.off)
        return 0;
    lua_createtable(L, 0, 9);
    setint(L, "off", t->fn.msi.off);
    setint(L, "vectors", 1 << t->fn.msi.mmc);
    setint(L, "enabled_vectors", 1 << t->fn.msi.mme);
    setbool(L, "enabled", t->fn.msi.enabled);
    setbool(L, "is64", t->fn.msi.is64);
    setbool(L, "maskable", t->fn.msi.pvm);
    setint(L, "addr", (lua_Integer)t->fn.msi.addr);
    setint(L, "data", t->fn.msi.data);
    setint(L, "mask", t->fn.msi.mask);
    return 1;
}

static int t_msix(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    if (!t->fn.msix.off)
        return 0;
    lua_createtable(L, 0, 9);
    setint(L, "off", t->fn.msix.off);
    setint(L, "n", t->fn.msix.n);
    setint(L, "table_bar", t->fn.msix.table_bar);
    setint(L, "table_off", (lua_Integer)t->fn.msix.table_off);
    setint(L, "pba_bar", t->fn.msix.pba_bar);
    setint(L, "pba_off", (lua_Integer)t->fn.msix.pba_off);
    setbool(L, "enabled", t->fn.msix.enabled);
    setbool(L, "fmask", t->fn.msix.fmask);
    return 1;
}

static int rc_result(lua_State *L, struct l_trap *t, int rc, const char *op)
{
    if (rc < 0)
        return lv_syserror(L, -rc, op, t->fn.be->name);
    lua_pushboolean(L, 1);
    return 1;
}

static int t_hide_cap(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    uint16_t id = (uint16_t)lv_checkrange(L, 2, 0, 0xffff);
    return rc_result(L, t, trap_hide_cap(&t->fn, id, lua_toboolean(L, 3)), "hide capability of");
}

/* Optional mask string must match the bytes' length. */
static const uint8_t *opt_mask(lua_State *L, int i, size_t n)
{
    if (lua_isnoneornil(L, i))
        return NULL;
    size_t m;
    const char *s = luaL_checklstring(L, i, &m);
    if (m != n)
        luaL_argerror(L, i, "mask length differs from bytes");
    return (const uint8_t *)s;
}

static int t_add_cap(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    uint16_t off = (uint16_t)lv_checkrange(L, 2, 0, 4095);
    size_t n;
    const uint8_t *bytes = (const uint8_t *)luaL_checklstring(L, 3, &n);
    luaL_argcheck(L, n <= 4096, 3, "too long");
    const uint8_t *wm = opt_mask(L, 4, n);
    return rc_result(L, t, trap_add_cap(&t->fn, off, bytes, wm, (uint16_t)n, lua_toboolean(L, 5)),
                     "add capability to");
}

static int t_set_config(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    uint32_t off = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    size_t n;
    const uint8_t *bytes = (const uint8_t *)luaL_checklstring(L, 3, &n);
    const uint8_t *wm = opt_mask(L, 4, n);
    int rc = trap_set_config(&t->fn, off, (uint32_t)n, bytes, wm);
    if (rc == 0)
        trap_rechain(&t->fn);   /* an override of a next pointer is not kept: chains win */
    return rc_result(L, t, rc, "override config of");
}

static int t_set_perm(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    uint32_t off = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    uint32_t len = checksize(L, 3, 0);
    uint32_t emul = (uint32_t)luaL_checkinteger(L, 4), wm = (uint32_t)luaL_checkinteger(L, 5),
             dwm = (uint32_t)luaL_checkinteger(L, 6);
    return rc_result(L, t, trap_set_perm(&t->fn, off, len, emul, wm, dwm), "set permissions of");
}

static int t_hide_rom(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    return rc_result(L, t, trap_hide_rom(&t->fn), "hide ROM of");
}

static int t_set_bar_size(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    unsigned bar = (unsigned)lv_checkrange(L, 2, 0, 5);
    uint64_t size = (uint64_t)luaL_checkinteger(L, 3);
    return rc_result(L, t, trap_set_bar_size(&t->fn, bar, size), "resize BAR of");
}

/* trap:add_window(bar, off, len, {read=function(off, size), write=function(off, size, v)}) */
static int t_add_window(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    struct trap_window w = {0};
    w.bar = (uint8_t)lv_checkrange(L, 2, 0, 5);
    w.off = (uint64_t)luaL_checkinteger(L, 3);
    w.len = (uint64_t)luaL_checkinteger(L, 4);
    luaL_checktype(L, 5, LUA_TTABLE);
    w.kind = WIN_HANDLER;
    w.fn = lua_window;
    w.ctx = t;
    w.id = (int)t->fn.nwindows + 1;
    int rc = trap_add_window(&t->fn, &w);
    if (rc == 0) {
        lua_getiuservalue(L, 1, UV_WINDOWS);
        lua_pushvalue(L, 5);
        lua_rawseti(L, -2, w.id);
        lua_pop(L, 1);
    }
    return rc_result(L, t, rc, "add BAR window to");
}

/* trap:mirror_config(bar, off, len, cfg_off): the window reads/writes config space. */
static int t_mirror_config(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    struct trap_window w = {0};
    w.bar = (uint8_t)lv_checkrange(L, 2, 0, 5);
    w.off = (uint64_t)luaL_checkinteger(L, 3);
    w.len = (uint64_t)luaL_checkinteger(L, 4);
    w.cfg_off = (uint32_t)lv_checkrange(L, 5, 0, 4095);
    w.kind = WIN_MIRROR;
    return rc_result(L, t, trap_add_window(&t->fn, &w), "add config mirror to");
}

static int t_relocate_msix(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    unsigned bar = (unsigned)lv_checkrange(L, 2, 0, 5);
    uint64_t to = (uint64_t)luaL_checkinteger(L, 3), po = (uint64_t)luaL_checkinteger(L, 4);
    return rc_result(L, t, trap_msix_relocate(&t->fn, bar, to, po), "relocate MSI-X of");
}

static int t_set_pending(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    static const char *const kinds[] = {"msi", "msix", NULL};
    int k = luaL_checkoption(L, 2, NULL, kinds);
    unsigned v = (unsigned)lv_checkrange(L, 3, 0, TRAP_MSIX_MAX - 1);
    bool on = lua_toboolean(L, 4);
    int rc = k == 0 ? trap_msi_set_pending(&t->fn, v, on) : trap_msix_set_pending(&t->fn, v, on);
    return rc_result(L, t, rc, "set pending of");
}

static int t_msix_entry(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    lua_Integer v = luaL_checkinteger(L, 2);
    if (!t->fn.msix.off || v < 0 || v >= t->fn.msix.n)
        return 0;
    const uint8_t *b = t->fn.msix.table[v].b;
    uint64_t a = 0;
    for (int i = 7; i >= 0; i--)
        a = a << 8 | b[i];
    lua_pushinteger(L, (lua_Integer)a);
    lua_pushinteger(L, (lua_Integer)((uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 |
                                     (uint32_t)b[11] << 24));
    lua_pushboolean(L, b[12] & 1);
    return 3;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* trap:bench(kind, n [, a, b, size]) -> ns per operation, measured in C for bench/trap.lua:
 *   "cfg"    n config reads of `size` bytes at offset a
 *   "bar"    n BAR reads of `size` bytes at BAR a, offset b
 *   "pread"  n preads of `size` bytes from a temporary file (the syscall floor)
 *   "memcpy" n copies of `size` bytes (the memory floor) */
static int t_bench(lua_State *L)
{
    struct l_trap *t = checktrap(L, 1);
    static const char *const kinds[] = {"cfg", "bar", "pread", "memcpy", NULL};
    int kind = luaL_checkoption(L, 2, NULL, kinds);
    lua_Integer n = lv_checkrange(L, 3, 1, 1000000000);
    lua_Integer a = luaL_optinteger(L, 4, 0), b = luaL_optinteger(L, 5, 0);
    uint32_t size = (uint32_t)lv_checkrange(L, 6, 1, 8);
    volatile uint64_t sink = 0;
    double t0 = 0, t1 = 0;
    if (kind == 0 || kind == 1) {
        t0 = now_ns();
        for (lua_Integer i = 0; i < n; i++) {
            uint32_t v32;
            uint64_t v64;
            int rc = kind == 0 ? trap_cfg_read(&t->fn, (uint32_t)a, size, &v32)
                               : trap_bar_access(&t->fn, (unsigned)a, (uint64_t)b, size, false, &v64);
            if (rc < 0)
                return lv_syserror(L, -rc, "bench", t->fn.be->name);
            sink += kind == 0 ? v32 : v64;
        }
        t1 = now_ns();
    } else if (kind == 2) {
        char path[] = "/tmp/luavfio-bench-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0)
            return lv_syserror(L, errno, "mkstemp", path);
        unlink(path);
        uint8_t page[4096] = {1};
        if (write(fd, page, sizeof page) != (ssize_t)sizeof page) {
            int e = errno;
            close(fd);
            return lv_syserror(L, e, "write", path);
        }
        uint8_t buf[8];
        t0 = now_ns();
        for (lua_Integer i = 0; i < n; i++) {
            if (pread(fd, buf, size, (off_t)(i & 1023) * 4) < 0) {
                int e = errno;
                close(fd);
                return lv_syserror(L, e, "pread", path);
            }
            sink += buf[0];
        }
        t1 = now_ns();
        close(fd);
    } else {
        static uint8_t src[4096];
        uint8_t dst[8];
        t0 = now_ns();
        for (lua_Integer i = 0; i < n; i++) {
            const uint8_t *p = src + (i & 1023) * 4;
            __asm__ volatile("" : "+r"(p));   /* keep the copy from being folded away */
            memcpy(dst, p, size);
            __asm__ volatile("" : : "r"(dst) : "memory");
            sink += dst[0];
        }
        t1 = now_ns();
    }
    (void)sink;
    lua_pushnumber(L, (t1 - t0) / (double)n);
    return 1;
}

static int t_close(lua_State *L)
{
    struct l_trap *t = luaL_checkudata(L, 1, TRAP_T);
    if (t->open) {
        trap_free(&t->fn);
        t->open = 0;
    }
    return 0;
}

static int t_tostring(lua_State *L)
{
    struct l_trap *t = luaL_checkudata(L, 1, TRAP_T);
    lua_pushfstring(L, "vfio.trap(%s)%s", t->fn.be ? t->fn.be->name : "?", t->open ? "" : " closed");
    return 1;
}

void lv_open_trap(lua_State *L)
{
    static const luaL_Reg bmethods[] = {
        {"close", b_close}, {"stats", b_stats}, {"reset", b_reset}, {"mapped", b_mapped},
        {"config_read", b_config_read}, {"region_read", b_region_read}, {NULL, NULL}};
    static const luaL_Reg bmeta[] = {
        {"__gc", b_close}, {"__close", b_close}, {"__tostring", b_tostring}, {NULL, NULL}};
    static const luaL_Reg tmethods[] = {
        {"cfg_read", t_cfg_read}, {"cfg_write", t_cfg_write},
        {"bar_read", t_bar_read}, {"bar_write", t_bar_write},
        {"mmio_read", t_mmio_read}, {"mmio_write", t_mmio_write},
        {"io_read", t_io_read}, {"io_write", t_io_write},
        {"device_read", t_device_read}, {"device_write", t_device_write},
        {"events", t_events}, {"on_event", t_on_event},
        {"bars", t_bars}, {"caps", t_caps}, {"info", t_info}, {"msi", t_msi}, {"msix", t_msix},
        {"msix_entry", t_msix_entry},
        {"hide_cap", t_hide_cap}, {"add_cap", t_add_cap}, {"set_config", t_set_config},
        {"set_perm", t_set_perm}, {"hide_rom", t_hide_rom}, {"set_bar_size", t_set_bar_size},
        {"add_window", t_add_window}, {"mirror_config", t_mirror_config},
        {"relocate_msix", t_relocate_msix}, {"set_pending", t_set_pending},
        {"bench", t_bench}, {"close", t_close}, {NULL, NULL}};
    static const luaL_Reg tmeta[] = {
        {"__gc", t_close}, {"__close", t_close}, {"__tostring", t_tostring}, {NULL, NULL}};
    lv_newclass(L, BACKEND_T, bmethods, bmeta);
    lv_newclass(L, TRAP_T, tmethods, tmeta);
    static const luaL_Reg fns[] = {
        {"replay", l_replay}, {"vfio_backend", l_vfio_backend}, {"trap", l_trap_new}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
