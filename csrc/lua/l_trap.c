/* vfio.trap: the Lua binding of the trap core (the backends it runs over: l_backend.c).
 *   core.trap(backend [, {pcie=bool}]) -> vfio.trap
 * Guest-facing accesses never raise for guest-controlled values (offsets, data): out of
 * range config reads float high; backend failures return nil, message, errno. Only
 * API misuse (an access size other than 1/2/4[/8]) raises. */
#include "l_trap.h"
#include "base/le.h"
#include "l_kvm.h"

#include <errno.h>
#include <string.h>

enum { UV_BACKEND = 1, UV_WINDOWS, UV_CALLBACK, UV_SOURCES, UV_COUNT = 4 };

struct lv_trap_ud *lv_checktrap(lua_State *L, int i)
{
    struct lv_trap_ud *t = luaL_checkudata(L, i, LV_TRAP_T);
    if (!t->open || t->close_pending)
        luaL_error(L, "vfio.trap is closed");
    if (!t->fn.be->ops || ((struct lv_backend_ud *)t->fn.be)->close_pending)
        luaL_error(L, "vfio.trap: its backend %s is closed", t->fn.be->name);
    t->L = L;
    t->handler_err = 0;
    return t;
}

/* The backend userdata a trap's fn.be points into (its first member, l_trap.h). */
static struct lv_backend_ud *trap_backend(struct lv_trap_ud *t)
{
    return (struct lv_backend_ud *)t->fn.be;
}

void lv_trap_enter(struct lv_trap_ud *t)
{
    t->busy++;
    trap_backend(t)->busy++;
}

/* The closes a window handler asked for happen here, once nothing of the core's dispatch
 * is on the stack. */
void lv_trap_leave(struct lv_trap_ud *t)
{
    struct lv_backend_ud *b = trap_backend(t);
    if (--b->busy == 0 && b->close_pending) {
        b->close_pending = 0;
        if (b->pins == 0)   /* as backend:close() itself: never under a VM slot */
            lv_backend_destroy(&b->be);
    }
    if (--t->busy == 0 && t->close_pending) {
        t->close_pending = 0;
        trap_free(&t->fn);
        t->open = 0;
    }
}

/* Windows registered from Lua: handler tables live in user value UV_WINDOWS, by id. */
static int lua_window(struct trap_fn *fn, void *ctx, int id, bool write, uint64_t off,
                      uint32_t len, uint64_t *val)
{
    struct lv_trap_ud *t = ctx;
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
               lua_pushinteger(L, e->data); lua_setfield(L, -2, "data");
               lua_pushinteger(L, e->mask); lua_setfield(L, -2, "mask"); }
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
static void after_access(lua_State *L, struct lv_trap_ud *t)
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
    luaL_checkudata(L, 1, LV_BACKEND_T);
    bool pcie = true;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "pcie");
        if (!lua_isnil(L, -1))
            pcie = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    struct lv_trap_ud *t = lv_newobject(L, sizeof *t, LV_TRAP_T, UV_COUNT);
    /* the backend after the options and the allocation, which may run Lua that closes it */
    struct lv_backend_ud *b = lv_checkbackend(L, 1);
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
    lua_newtable(L);
    lua_setiuservalue(L, -2, UV_SOURCES);
    return 1;
}

static int t_cfg_read(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    uint32_t off = cfg_offset(L, 2), len = checksize(L, 3, 0), v;
    int rc = trap_cfg_read(&t->fn, off, len, &v);
    if (rc < 0)
        return lv_syserrorf(L, -rc, "config read", "%s+%#x", t->fn.be->name, off);
    lua_pushinteger(L, v);
    return 1;
}

static int t_cfg_write(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
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
    luaL_checkudata(L, 1, LV_TRAP_T);
    unsigned bar = (unsigned)lv_checkrange(L, 2, 0, TRAP_NBARS - 1);
    uint64_t off = (uint64_t)luaL_checkinteger(L, 3);
    uint32_t len = checksize(L, 4, 1);
    uint64_t v = write ? (uint64_t)luaL_checkinteger(L, 5) : 0;
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    lv_trap_enter(t);
    int rc = trap_bar_access(&t->fn, bar, off, len, write, &v);
    lv_trap_leave(t);
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
    luaL_checkudata(L, 1, LV_TRAP_T);
    uint64_t addr = (uint64_t)luaL_checkinteger(L, 2);
    uint32_t len = checksize(L, 3, 1);
    uint64_t v = write ? (uint64_t)luaL_checkinteger(L, 4) : 0;
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    lv_trap_enter(t);
    int rc = trap_addr_access(&t->fn, io, addr, len, write, &v);
    lv_trap_leave(t);
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
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    unsigned idx = (unsigned)lv_checkrange(L, 2, 0, LV_REGION_ROM);
    uint64_t off = (uint64_t)luaL_checkinteger(L, 3);
    uint32_t len = checksize(L, 4, 1);
    uint64_t v = write ? (uint64_t)luaL_checkinteger(L, 5) : 0;
    uint8_t buf[8];
    lv_le_put(buf, v, len);
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
    lua_pushinteger(L, (lua_Integer)lv_le_get(buf, len));
    return 1;
}
static int t_device_read(lua_State *L) { return device_rw(L, false); }
static int t_device_write(lua_State *L) { return device_rw(L, true); }

static int t_events(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
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
    lv_checktrap(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    lua_setiuservalue(L, 1, UV_CALLBACK);
    return 0;
}

static int t_bars(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    lua_createtable(L, TRAP_NBARS, 1);
    for (int i = 0; i < TRAP_NBARS; i++) {
        const struct trap_bar *b = &t->fn.bars[i];
        lua_createtable(L, 0, 10);
        lv_setint(L, "index", i);
        lv_setint(L, "size", (lua_Integer)b->size);
        lv_setint(L, "phys_size", (lua_Integer)b->phys_size);
        lv_setbool(L, "io", b->io);
        lv_setbool(L, "is64", b->is64);
        lv_setbool(L, "prefetch", b->prefetch);
        lv_setbool(L, "upper", b->upper);
        lv_setbool(L, "rom", i == 6);
        lv_setint(L, "addr", (lua_Integer)b->addr);
        lv_setbool(L, "mapped", b->size && !b->upper && b->mapped != TRAP_UNMAPPED);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

static int t_caps(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    lua_createtable(L, (int)t->fn.ncaps, 0);
    for (unsigned i = 0; i < t->fn.ncaps; i++) {
        const struct trap_cap *c = &t->fn.caps[i];
        lua_createtable(L, 0, 6);
        lv_setint(L, "id", c->id);
        lv_setint(L, "off", c->off);
        lv_setint(L, "len", c->len);
        lv_setbool(L, "ext", c->ext);
        lv_setbool(L, "hidden", c->hidden);
        lv_setbool(L, "added", c->added);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int t_info(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    lua_createtable(L, 0, 6);
    lv_setint(L, "cfg_size", t->fn.cfg_size);
    lv_setint(L, "dev_cfg_size", t->fn.dev_cfg_size);
    lv_setint(L, "guard_hits", t->fn.cap_guard_hits);
    lv_setint(L, "events_lost", (lua_Integer)t->fn.ev_lost);
    lv_setint(L, "events_queued", t->fn.ev_count);
    lv_setint(L, "windows", t->fn.nwindows);
    lua_pushstring(L, t->fn.be->name);
    lua_setfield(L, -2, "name");
    return 1;
}

static int t_msi(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    if (!t->fn.msi.off)
        return 0;
    lua_createtable(L, 0, 9);
    lv_setint(L, "off", t->fn.msi.off);
    lv_setint(L, "vectors", 1 << t->fn.msi.mmc);
    lv_setint(L, "enabled_vectors", 1 << t->fn.msi.mme);
    lv_setbool(L, "enabled", t->fn.msi.enabled);
    lv_setbool(L, "is64", t->fn.msi.is64);
    lv_setbool(L, "maskable", t->fn.msi.pvm);
    lv_setint(L, "addr", (lua_Integer)t->fn.msi.addr);
    lv_setint(L, "data", t->fn.msi.data);
    lv_setint(L, "mask", t->fn.msi.mask);
    return 1;
}

static int t_msix(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    if (!t->fn.msix.off)
        return 0;
    lua_createtable(L, 0, 9);
    lv_setint(L, "off", t->fn.msix.off);
    lv_setint(L, "n", t->fn.msix.n);
    lv_setint(L, "table_bar", t->fn.msix.table_bar);
    lv_setint(L, "table_off", (lua_Integer)t->fn.msix.table_off);
    lv_setint(L, "pba_bar", t->fn.msix.pba_bar);
    lv_setint(L, "pba_off", (lua_Integer)t->fn.msix.pba_off);
    lv_setbool(L, "enabled", t->fn.msix.enabled);
    lv_setbool(L, "fmask", t->fn.msix.fmask);
    return 1;
}

/* trap:windows() -> list of {bar=, off=, len=, lua=bool}: the BAR windows quirks
 * installed; lua = a Lua handler (the others are config mirrors, served in C). */
static int t_windows(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    lua_createtable(L, (int)t->fn.nwindows, 0);
    for (unsigned i = 0; i < t->fn.nwindows && i < TRAP_WINDOWS_MAX; i++) {
        const struct trap_window *w = &t->fn.windows[i];
        lua_createtable(L, 0, 4);
        lv_setint(L, "bar", w->bar);
        lv_setint(L, "off", (lua_Integer)w->off);
        lv_setint(L, "len", (lua_Integer)w->len);
        lv_setbool(L, "lua", w->kind == WIN_HANDLER);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int rc_result(lua_State *L, struct lv_trap_ud *t, int rc, const char *op)
{
    if (rc < 0)
        return lv_syserror(L, -rc, op, t->fn.be->name);
    lua_pushboolean(L, 1);
    return 1;
}

static int t_hide_cap(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
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
    luaL_checkudata(L, 1, LV_TRAP_T);
    uint16_t off = (uint16_t)lv_checkrange(L, 2, 0, 4095);
    size_t n;
    const uint8_t *bytes = (const uint8_t *)luaL_checklstring(L, 3, &n);
    luaL_argcheck(L, n <= 4096, 3, "too long");
    const uint8_t *wm = opt_mask(L, 4, n);
    struct lv_trap_ud *t = lv_checktrap(L, 1);   /* after the string conversions */
    return rc_result(L, t, trap_add_cap(&t->fn, off, bytes, wm, (uint16_t)n, lua_toboolean(L, 5)),
                     "add capability to");
}

static int t_set_config(lua_State *L)
{
    luaL_checkudata(L, 1, LV_TRAP_T);
    uint32_t off = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    size_t n;
    const uint8_t *bytes = (const uint8_t *)luaL_checklstring(L, 3, &n);
    const uint8_t *wm = opt_mask(L, 4, n);
    struct lv_trap_ud *t = lv_checktrap(L, 1);   /* after the string conversions */
    int rc = trap_set_config(&t->fn, off, (uint32_t)n, bytes, wm);
    if (rc == 0)
        trap_rechain(&t->fn);   /* an override of a next pointer is not kept: chains win */
    return rc_result(L, t, rc, "override config of");
}

static int t_set_perm(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    uint32_t off = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    uint32_t len = checksize(L, 3, 0);
    uint32_t emul = (uint32_t)luaL_checkinteger(L, 4), wm = (uint32_t)luaL_checkinteger(L, 5),
             dwm = (uint32_t)luaL_checkinteger(L, 6);
    return rc_result(L, t, trap_set_perm(&t->fn, off, len, emul, wm, dwm), "set permissions of");
}

static int t_hide_rom(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    return rc_result(L, t, trap_hide_rom(&t->fn), "hide ROM of");
}

static int t_set_bar_size(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    unsigned bar = (unsigned)lv_checkrange(L, 2, 0, 5);
    uint64_t size = (uint64_t)luaL_checkinteger(L, 3);
    return rc_result(L, t, trap_set_bar_size(&t->fn, bar, size), "resize BAR of");
}

/* trap:add_window(bar, off, len, {read=function(off, size), write=function(off, size, v)}) */
static int t_add_window(lua_State *L)
{
    luaL_checkudata(L, 1, LV_TRAP_T);
    struct trap_window w = {0};
    w.bar = (uint8_t)lv_checkrange(L, 2, 0, 5);
    w.off = (uint64_t)luaL_checkinteger(L, 3);
    w.len = (uint64_t)luaL_checkinteger(L, 4);
    luaL_checktype(L, 5, LUA_TTABLE);
    /* The handlers are read now, into a table of our own: the dispatch then looks them
     * up with no metamethod to run (it cannot raise inside the core), and the table given
     * is read before the trap is checked. */
    lua_createtable(L, 0, 2);
    lua_getfield(L, 5, "read");
    lua_setfield(L, -2, "read");
    lua_getfield(L, 5, "write");
    lua_setfield(L, -2, "write");
    lua_replace(L, 5);
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    w.kind = WIN_HANDLER;
    w.handler = lua_window;
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
    struct lv_trap_ud *t = lv_checktrap(L, 1);
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
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    unsigned bar = (unsigned)lv_checkrange(L, 2, 0, 5);
    uint64_t to = (uint64_t)luaL_checkinteger(L, 3), po = (uint64_t)luaL_checkinteger(L, 4);
    return rc_result(L, t, trap_msix_relocate(&t->fn, bar, to, po), "relocate MSI-X of");
}

static int t_set_pending(lua_State *L)
{
    luaL_checkudata(L, 1, LV_TRAP_T);
    static const char *const kinds[] = {"msi", "msix", NULL};
    int k = luaL_checkoption(L, 2, NULL, kinds);   /* a number converts: a GC step */
    unsigned v = (unsigned)lv_checkrange(L, 3, 0, TRAP_MSIX_MAX - 1);
    bool on = lua_toboolean(L, 4);
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    int rc = k == 0 ? trap_msi_set_pending(&t->fn, v, on) : trap_msix_set_pending(&t->fn, v, on);
    return rc_result(L, t, rc, "set pending of");
}

/* trap:set_source(kind, vector, irqfd|nil): while the VM keeps a masked vector from the
 * guest, its irqfd's eventfd is the vector's pending state (trap_set_source). The trap
 * keeps the irqfd alive (user value UV_SOURCES, by kind and vector), and reads the fd
 * through the irqfd, never as a number of its own. */
static int t_set_source(lua_State *L)
{
    luaL_checkudata(L, 1, LV_TRAP_T);
    static const char *const kinds[] = {"msi", "msix", NULL};
    int k = luaL_checkoption(L, 2, NULL, kinds);   /* a number converts: a GC step */
    unsigned v = (unsigned)lv_checkrange(L, 3, 0, TRAP_MSIX_MAX - 1);
    const int *fdp = lua_isnoneornil(L, 4) ? NULL : lv_irqfd_fdp(L, 4);
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    int rc = trap_set_source(&t->fn, k == 1, v, fdp);
    if (rc == 0) {
        lua_getiuservalue(L, 1, UV_SOURCES);
        if (fdp)
            lua_pushvalue(L, 4);
        else
            lua_pushnil(L);
        lua_rawseti(L, -2, (lua_Integer)k * TRAP_MSIX_MAX + v);
        lua_pop(L, 1);
    }
    return rc_result(L, t, rc, "set the interrupt source of");
}

static int t_msix_entry(lua_State *L)
{
    struct lv_trap_ud *t = lv_checktrap(L, 1);
    lua_Integer v = luaL_checkinteger(L, 2);
    if (!t->fn.msix.off || v < 0 || v >= t->fn.msix.n)
        return 0;
    const uint8_t *b = t->fn.msix.table[v].b;
    lua_pushinteger(L, (lua_Integer)lv_le_get(b, 8));       /* address */
    lua_pushinteger(L, (lua_Integer)lv_le_get(b + 8, 4));   /* data */
    lua_pushboolean(L, b[12] & 1);
    return 3;
}

static int t_close(lua_State *L)
{
    struct lv_trap_ud *t = luaL_checkudata(L, 1, LV_TRAP_T);
    if (t->open && t->busy) {
        t->close_pending = 1;   /* from a window handler: closed when the access ends */
    } else if (t->open) {
        trap_free(&t->fn);
        t->open = 0;
    }
    return 0;
}

static int t_tostring(lua_State *L)
{
    struct lv_trap_ud *t = luaL_checkudata(L, 1, LV_TRAP_T);
    lua_pushfstring(L, "vfio.trap(%s)%s", t->fn.be ? t->fn.be->name : "?",
                    t->open && !t->close_pending ? "" : " closed");
    return 1;
}

/*** @module vfio.core */

/***
The PCI trap core over a backend: the virtual function a guest sees (virtual config
space, BARs, MSI/MSI-X, capability edits, quirk windows). Guest-facing accesses never
raise for guest-controlled values: out-of-range config reads float high; backend failures
return `nil, message, errno`; only API misuse (an access size other than 1, 2, 4 or 8)
raises. A closed trap answers all ones and drops writes everywhere.
@function trap
@tparam backend b the backend (`vfio_backend`, `replay`)
@tparam[opt] table opts `{pcie = true}` (false: a conventional 256-byte config space)
@treturn trap the trap, or `nil, message, errno`
*/

/***
A trap (`vfio.trap`): the virtual PCI function over a backend.
@type trap
*/

/***
Read the guest's config space.
@function trap:cfg_read
@tparam int off offset
@tparam int size 1, 2 or 4
@treturn int the value, or `nil, message, errno`
*/

/***
Write the guest's config space (emulated bits to the shadow, the rest as the permissions say).
@function trap:cfg_write
@tparam int off offset
@tparam int size 1, 2 or 4
@tparam int v the value
@treturn boolean true, or `nil, message, errno`
*/

/***
Read BAR bar at off as the guest would (MSI-X table and PBA, windows, then the device).
@function trap:bar_read
@tparam int bar 0 to 5
@tparam int off offset
@tparam int size 1, 2, 4 or 8
@treturn int the value, or `nil, message, errno`
*/

/***
Write BAR bar at off as the guest would.
@function trap:bar_write
@tparam int bar 0 to 5
@tparam int off offset
@tparam int size 1, 2, 4 or 8
@tparam int v the value
@treturn boolean true, or `nil, message, errno`
*/

/***
A guest-physical read, decoded against the BARs as the guest programmed them.
@function trap:mmio_read
@tparam int addr guest-physical address
@tparam int size 1, 2, 4 or 8
@return the value (all ones when unclaimed) and whether a BAR claimed it; or `nil, message, errno`
*/

/***
A guest-physical write, decoded against the BARs.
@function trap:mmio_write
@tparam int addr guest-physical address
@tparam int size 1, 2, 4 or 8
@tparam int v the value
@return true and whether a BAR claimed it; or `nil, message, errno`
*/

/***
A guest port read, decoded against the I/O BARs.
@function trap:io_read
@tparam int port the port
@tparam int size 1, 2 or 4
@return the value and whether a BAR claimed it; or `nil, message, errno`
*/

/***
A guest port write, decoded against the I/O BARs.
@function trap:io_write
@tparam int port the port
@tparam int size 1, 2 or 4
@tparam int v the value
@return true and whether a BAR claimed it; or `nil, message, errno`
*/

/***
The device's region itself, bypassing MSI-X and windows (for quirk handlers that forward).
@function trap:device_read
@tparam int index region index (0 to 6)
@tparam int off offset
@tparam int size 1, 2, 4 or 8
@treturn int the value, or `nil, message, errno`
*/

/***
Write the device's region itself, bypassing MSI-X and windows.
@function trap:device_write
@tparam int index region index (0 to 6)
@tparam int off offset
@tparam int size 1, 2, 4 or 8
@tparam int v the value
@treturn boolean true, or `nil, message, errno`
*/

/***
Drain the queued events (BAR mapped, decode changed, MSI/MSI-X enabled, routes, masks).
@function trap:events
@treturn table `{{type=, ...}...}` in order
*/

/***
Call fn(event) for each event instead of queueing it; nil goes back to queueing.
@function trap:on_event
@tparam function|nil fn the callback
*/

/***
The BARs as the guest sees them.
@function trap:bars
@treturn table `[0..6] = {index, size, phys_size, io, is64, prefetch, upper, rom, addr, mapped}`
*/

/***
The capability list: `{{id, off, len, ext, hidden, added}...}`.
@function trap:caps
@treturn table
*/

/***
`{cfg_size, dev_cfg_size, guard_hits, events_lost, events_queued, windows, name}`.
@function trap:info
@treturn table
*/

/***
The MSI capability's state, or nothing without one.
@function trap:msi
@treturn table `{off, vectors, enabled_vectors, enabled, is64, maskable, addr, data, mask}`
*/

/***
The MSI-X capability's state, or nothing without one.
@function trap:msix
@treturn table `{off, n, table_bar, table_off, pba_bar, pba_off, enabled, fmask}`
*/

/***
MSI-X table entry v, or nothing out of range.
@function trap:msix_entry
@tparam int v the vector
@return address, data, masked
*/

/***
The BAR windows quirks installed.
@function trap:windows
@treturn table `{{bar, off, len, lua}...}`: lua = a Lua handler (the others are config mirrors, served in C)
*/

/***
Hide a capability from the guest's chain.
@function trap:hide_cap
@tparam int id the capability id
@tparam[opt] boolean ext an extended capability
@treturn boolean true, or `nil, message, errno`
*/

/***
Add a capability to the guest's chain at off.
@function trap:add_cap
@tparam int off offset
@tparam string bytes its contents
@tparam[opt] string wmask the guest-writable bits (as long as bytes)
@tparam[opt] boolean ext an extended capability
@treturn boolean true, or `nil, message, errno`
*/

/***
Override config bytes at off (emulated from then on).
@function trap:set_config
@tparam int off offset
@tparam string bytes the contents
@tparam[opt] string wmask the guest-writable bits
@treturn boolean true, or `nil, message, errno`
*/

/***
Set the permissions of a config field: emul (bits served from the shadow), wmask (bits the
guest may write), dwmask (bits a guest write forwards to the device).
@function trap:set_perm
@tparam int off offset
@tparam int size 1, 2 or 4
@tparam int emul emulated bits
@tparam int wmask writable bits
@tparam int dwmask forwarded bits
@treturn boolean true, or `nil, message, errno`
*/

/***
Hide the expansion ROM BAR.
@function trap:hide_rom
@treturn boolean true, or `nil, message, errno`
*/

/***
Present BAR bar with another size.
@function trap:set_bar_size
@tparam int bar 0 to 5
@tparam int size bytes
@treturn boolean true, or `nil, message, errno`
*/

/***
A BAR window handled in Lua: read(off, size) returns the value, write(off, size, v). A
close from inside a handler takes effect when the access ends.
@function trap:add_window
@tparam int bar 0 to 5
@tparam int off offset
@tparam int len length
@tparam table handlers `{read = function(off, size), write = function(off, size, v)}`
@treturn boolean true, or `nil, message, errno`
*/

/***
A BAR window that reads and writes config space from cfg_off, served in C.
@function trap:mirror_config
@tparam int bar 0 to 5
@tparam int off offset
@tparam int len length
@tparam int cfg_off config offset
@treturn boolean true, or `nil, message, errno`
*/

/***
Move the MSI-X table and PBA to BAR bar at the offsets given (as the guest sees them).
@function trap:relocate_msix
@tparam int bar 0 to 5
@tparam int table_off table offset
@tparam int pba_off PBA offset
@treturn boolean true, or `nil, message, errno`
*/

/***
Set or clear a vector's pending bit.
@function trap:set_pending
@tparam string kind `"msi"` or `"msix"`
@tparam int vector the vector
@tparam boolean on pending
@treturn boolean true, or `nil, message, errno`
*/

/***
While the VM keeps a masked vector from the guest, its irqfd's eventfd is the vector's
pending state (the PBA, or MSI's pending bits, read its count); nil ends that. The trap
keeps the irqfd alive.
@function trap:set_source
@tparam string kind `"msi"` or `"msix"`
@tparam int vector the vector
@tparam irqfd|nil q the irqfd
@treturn boolean true, or `nil, message, errno`
*/

/***
Close the trap (idempotent; from a window handler, when the access ends).
@function trap:close
*/

/***
Nanoseconds per operation, measured in C for bench/trap.lua: `"cfg"` n config reads of
size bytes at offset a; `"bar"` n BAR reads at BAR a, offset b; `"pread"` n preads from a
temporary file (the syscall floor); `"memcpy"` n copies (the memory floor).
(Registered by l_trap_bench.c.)
@function trap:bench
@tparam string kind `"cfg"`, `"bar"`, `"pread"` or `"memcpy"`
@tparam int n operations
@tparam[opt=0] int a see kind
@tparam[opt=0] int b see kind
@tparam int size 1 to 8 bytes
@treturn number ns per operation, or `nil, message, errno`
*/

void lv_open_trap(lua_State *L)
{
    static const luaL_Reg tmethods[] = {
        {"cfg_read", t_cfg_read}, {"cfg_write", t_cfg_write},
        {"bar_read", t_bar_read}, {"bar_write", t_bar_write},
        {"mmio_read", t_mmio_read}, {"mmio_write", t_mmio_write},
        {"io_read", t_io_read}, {"io_write", t_io_write},
        {"device_read", t_device_read}, {"device_write", t_device_write},
        {"events", t_events}, {"on_event", t_on_event},
        {"bars", t_bars}, {"caps", t_caps}, {"info", t_info}, {"msi", t_msi}, {"msix", t_msix},
        {"msix_entry", t_msix_entry}, {"windows", t_windows},
        {"hide_cap", t_hide_cap}, {"add_cap", t_add_cap}, {"set_config", t_set_config},
        {"set_perm", t_set_perm}, {"hide_rom", t_hide_rom}, {"set_bar_size", t_set_bar_size},
        {"add_window", t_add_window}, {"mirror_config", t_mirror_config},
        {"relocate_msix", t_relocate_msix}, {"set_pending", t_set_pending},
        {"set_source", t_set_source},
        {"bench", lv_trap_bench},  /* l_trap_bench.c */
        {"close", t_close}, {NULL, NULL}};
    static const luaL_Reg tmeta[] = {
        {"__gc", t_close}, {"__close", t_close}, {"__tostring", t_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_TRAP_T, tmethods, tmeta);
    static const luaL_Reg fns[] = {{"trap", l_trap_new}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
