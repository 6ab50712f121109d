/* vfio.region: typed and bulk access to a device region, through a mapping when one
 * covers the access (a plain volatile load or store) and through pread/pwrite otherwise.
 *
 * Each region gets its own metatable holding its fields (size, offset, flags...) and a
 * copy of the methods; its own metatable is the shared class "vfio.region". `r.size` and
 * `r:read32(o)` then resolve with one table lookup inside the VM, without a C __index
 * function, which keeps the mapped read close to a bare C call. Methods verify `self` by comparing the
 * class (cached in an upvalue) instead of luaL_checkudata's registry lookup. */
#include "l_objects.h"

#include <errno.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int region_typeerror(lua_State *L)
{
    return luaL_typeerror(L, 1, LV_REGION);
}

static inline lv_region *region_self(lua_State *L)
{
    lv_region *r = lua_touserdata(L, 1);
    /* The two metatables pushed here are left on the stack: callers use absolute
     * argument indexes and return only what they push last, so popping would be work. */
    /* Pointer identity of the class table: the same test as lua_rawequal on two tables,
     * measurably cheaper on this hot path. */
    if (r && lua_getmetatable(L, 1) && lua_getmetatable(L, -1) &&
        lua_topointer(L, -1) == lua_topointer(L, lua_upvalueindex(1)))
        return r;
    region_typeerror(L);
    return NULL;
}

static void unlink_region(lv_region *r)
{
    if (r->pprev) {
        *r->pprev = r->next;
        if (r->next)
            r->next->pprev = r->pprev;
        r->pprev = NULL;
        r->next = NULL;
    }
}

static void unmap_region(lv_region *r)
{
    for (uint32_t i = 0; i < r->nareas; i++)
        vfio_unmap_area(&r->areas[i]);
    /* Clear the counts first-class: the fast paths test them before touching areas. */
    r->nrd = r->nwr = 0;
    r->nareas = 0;
    free(r->areas);
    r->areas = NULL;
}

void lv_device_unmap_regions(lv_device *dev)
{
    lv_region *r = dev->regions;
    while (r) {
        lv_region *next = r->next;
        unmap_region(r);
        r->pprev = NULL;
        r->next = NULL;
        r = next;
    }
    dev->regions = NULL;
}

static const char *region_devname(const lv_region *r)
{
    return r->dev ? r->dev->name : "?";
}

/* Raises unless [off, off + n) lies inside the region and the access is allowed. */
static void check_access(lua_State *L, lv_region *r, lua_Integer off, uint64_t n, int write)
{
    if (!r->dev)
        luaL_error(L, "region %d is closed", (int)r->index);
    if (r->dev->fd < 0)
        luaL_error(L, "region %d of %s: device is closed", (int)r->index, region_devname(r));
    if (r->err)
        return; /* reported as a system error by the caller */
    uint32_t need = write ? VFIO_REGION_INFO_FLAG_WRITE : VFIO_REGION_INFO_FLAG_READ;
    if (!(r->flags & need))
        luaL_error(L, "region %d of %s is not %s", (int)r->index, region_devname(r),
                   write ? "writable" : "readable");
    if (off < 0 || (uint64_t)off > r->size || r->size - (uint64_t)off < n)
        luaL_error(L, "region %d of %s: access of %I bytes at offset %I is outside the region "
                      "(size %I)",
                   (int)r->index, region_devname(r), (lua_Integer)n, off,
                   (lua_Integer)r->size);
}

static int region_error(lua_State *L, lv_region *r, const char *op)
{
    return lv_syserrorf(L, r->err, op, "region %u of %s", r->index, region_devname(r));
}

/* Slow path of readN: range/flag checks, then pread at the region's file offset. */
static int read_slow(lua_State *L, lv_region *r, lua_Integer off, unsigned w)
{
    check_access(L, r, off, w, 0);
    if (r->err)
        return region_error(L, r, "read");
    uint8_t buf[8];
    /* A mapped-but-unaligned access lands here too: one pread keeps it a single access
     * from the kernel's point of view. */
    int e = vfio_pread_all(r->dev->fd, buf, w, r->offset + (uint64_t)off);
    if (e < 0)
        return lv_syserrorf(L, -e, "read", "region %u of %s at 0x%llx", r->index,
                            r->dev->name, (unsigned long long)off);
    uint64_t v = 0;
    switch (w) {
    case 1: v = buf[0]; break;
    case 2: { uint16_t x; memcpy(&x, buf, 2); v = x; break; }
    case 4: { uint32_t x; memcpy(&x, buf, 4); v = x; break; }
    default: memcpy(&v, buf, 8); break;
    }
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int write_slow(lua_State *L, lv_region *r, lua_Integer off, unsigned w, uint64_t v)
{
    check_access(L, r, off, w, 1);
    if (r->err)
        return region_error(L, r, "write");
    uint8_t buf[8];
    switch (w) {
    case 1: buf[0] = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(buf, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(buf, &x, 4); break; }
    default: memcpy(buf, &v, 8); break;
    }
    int e = vfio_pwrite_all(r->dev->fd, buf, w, r->offset + (uint64_t)off);
    if (e < 0)
        return lv_syserrorf(L, -e, "write", "region %u of %s at 0x%llx", r->index,
                            r->dev->name, (unsigned long long)off);
    lua_pushboolean(L, 1);
    return 1;
}

/* The mapped area holding a naturally aligned access of w bytes at off, or NULL. */
static inline uint8_t *area_ptr(const lv_region *r, uint32_t n, uint64_t off, unsigned w)
{
    const struct vfio_map_area *a = r->areas;
    for (uint32_t i = 0; i < n; i++, a++) {
        uint64_t rel = off - a->off;
        if (off >= a->off && rel < a->size && a->size - rel >= w && !(rel & (w - 1)))
            return a->ptr + rel;
    }
    return NULL;
}

#define DEF_READ(bits, w)                                                              \
    static int r_read##bits(lua_State *L)                                              \
    {                                                                                  \
        lv_region *r = region_self(L);                                                 \
        lua_Integer off = luaL_checkinteger(L, 2);                                     \
        uint8_t *p = r->nrd ? area_ptr(r, r->nrd, (uint64_t)off, w) : NULL;            \
        if (p) {                                                                       \
            lua_pushinteger(L, (lua_Integer) * (volatile uint##bits##_t *)p);          \
            return 1;                                                                  \
        }                                                                              \
        return read_slow(L, r, off, w);                                                \
    }

static uint64_t check_value(lua_State *L, int arg, unsigned w)
{
    lua_Integer v = luaL_checkinteger(L, arg);
    if (w < 8) {
        lua_Integer hi = ((lua_Integer)1 << (8 * w)) - 1, lo = -((lua_Integer)1 << (8 * w - 1));
        if (v < lo || v > hi)
            luaL_argerror(L, arg, lua_pushfstring(L, "value %I does not fit in %d bits", v,
                                                  (int)(8 * w)));
    }
    return (uint64_t)v;
}

#define DEF_WRITE(bits, w)                                                             \
    static int r_write##bits(lua_State *L)                                             \
    {                                                                                  \
        lv_region *r = region_self(L);                                                 \
        lua_Integer off = luaL_checkinteger(L, 2);                                     \
        uint64_t v = check_value(L, 3, w);                                             \
        uint8_t *p = r->nwr ? area_ptr(r, r->nwr, (uint64_t)off, w) : NULL;            \
        if (p) {                                                                       \
            *(volatile uint##bits##_t *)p = (uint##bits##_t)v;                         \
            lua_pushboolean(L, 1);                                                     \
            return 1;                                                                  \
        }                                                                              \
        return write_slow(L, r, off, w, v);                                            \
    }

DEF_READ(8, 1)
DEF_READ(16, 2)
DEF_READ(32, 4)
DEF_READ(64, 8)
DEF_WRITE(8, 1)
DEF_WRITE(16, 2)
DEF_WRITE(32, 4)
DEF_WRITE(64, 8)

/* Split [off, end) at mapping boundaries: returns the length of the piece starting at
 * off and sets *p to its mapping (NULL: use pread/pwrite for it). */
static uint64_t next_piece(const lv_region *r, uint32_t n, uint64_t off, uint64_t end,
                           uint8_t **p)
{
    uint64_t stop = end;
    *p = NULL;
    for (uint32_t i = 0; i < n; i++) {
        const struct vfio_map_area *a = &r->areas[i];
        if (off >= a->off && off - a->off < a->size) {
            uint64_t aend = a->off + a->size;
            *p = a->ptr + (off - a->off);
            return (aend < end ? aend : end) - off;
        }
        if (a->off > off && a->off < stop)
            stop = a->off;
    }
    return stop - off;
}

/* Bulk copies out of and into a mapping: a device's registers want exact-width accesses
 * (vfio_copy_*_io); the mapping of an ordinary file is memory, and memcpy is faster. */
static void copy_from_map(const lv_region *r, void *dst, const uint8_t *src, size_t n)
{
    if (r->dev && r->dev->is_memory)
        memcpy(dst, src, n);
    else
        vfio_copy_from_io(dst, src, n);
}

static void copy_to_map(const lv_region *r, uint8_t *dst, const void *src, size_t n)
{
    if (r->dev && r->dev->is_memory)
        memcpy(dst, src, n);
    else
        vfio_copy_to_io(dst, src, n);
}

/* r:read(off, n) -> string | nil, msg, errno. Mapped parts are copied with device-safe
 * word accesses (vfio_copy_from_io); other parts use pread. */
static int r_read(lua_State *L)
{
    lv_region *r = region_self(L);
    lua_Integer off = luaL_checkinteger(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    if (n < 0)
        luaL_argerror(L, 3, "negative length");
    check_access(L, r, off, (uint64_t)n, 0);
    if (r->err)
        return region_error(L, r, "read");
    uint64_t pos = (uint64_t)off, end = pos + (uint64_t)n;
    uint8_t *p;
    if (n == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, (size_t)n);
    /* again: the buffer's allocation is a GC step, whose finalizers may have closed or
     * unmapped the region */
    check_access(L, r, off, (uint64_t)n, 0);
    if (r->err)
        return region_error(L, r, "read");
    while (pos < end) {
        uint64_t len = next_piece(r, r->nrd, pos, end, &p);
        if (p) {
            copy_from_map(r, out, p, len);
        } else {
            int e = vfio_pread_all(r->dev->fd, out, len, r->offset + pos);
            if (e < 0)
                return lv_syserrorf(L, -e, "read", "region %u of %s at 0x%llx", r->index,
                                    r->dev->name, (unsigned long long)pos);
        }
        out += len;
        pos += len;
    }
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* r:write(off, s) -> true | nil, msg, errno */
static int r_write(lua_State *L)
{
    lv_region *r = region_self(L);
    lua_Integer off = luaL_checkinteger(L, 2);
    size_t n;
    const char *s = luaL_checklstring(L, 3, &n);
    check_access(L, r, off, n, 1);
    if (r->err)
        return region_error(L, r, "write");
    uint64_t pos = (uint64_t)off, end = pos + n;
    while (pos < end) {
        uint8_t *p;
        uint64_t len = next_piece(r, r->nwr, pos, end, &p);
        if (p) {
            copy_to_map(r, p, s, len);
        } else {
            int e = vfio_pwrite_all(r->dev->fd, s, len, r->offset + pos);
            if (e < 0)
                return lv_syserrorf(L, -e, "write", "region %u of %s at 0x%llx", r->index,
                                    r->dev->name, (unsigned long long)pos);
        }
        s += len;
        pos += len;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Copy [off, off + n) of the region to/from memory `mem`, piece by piece. */
static int copy_pieces(lua_State *L, lv_region *r, uint64_t off, uint8_t *mem, uint64_t n,
                       int write)
{
    uint64_t pos = off, end = off + n;
    while (pos < end) {
        uint8_t *p;
        uint64_t len = next_piece(r, write ? r->nwr : r->nrd, pos, end, &p);
        int e = 0;
        if (p && write)
            copy_to_map(r, p, mem, len);
        else if (p)
            copy_from_map(r, mem, p, len);
        else if (write)
            e = vfio_pwrite_all(r->dev->fd, mem, len, r->offset + pos);
        else
            e = vfio_pread_all(r->dev->fd, mem, len, r->offset + pos);
        if (e < 0)
            return lv_syserrorf(L, -e, write ? "write" : "read", "region %u of %s at 0x%llx",
                                r->index, r->dev->name, (unsigned long long)pos);
        mem += len;
        pos += len;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static lv_dmabuf *buf_range(lua_State *L, int arg, lua_Integer boff, lua_Integer n)
{
    lv_dmabuf *b = lv_checkdmabuf(L, arg);
    if (boff < 0 || (uint64_t)boff > b->rounded || b->rounded - (uint64_t)boff < (uint64_t)n)
        luaL_argerror(L, arg + 1, "range outside the DMA buffer");
    return b;
}

/* Region <-> DMA buffer without building a Lua string; `write` picks the direction. */
static int transfer_dmabuf(lua_State *L, int write)
{
    lv_region *r = region_self(L);
    lua_Integer off = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
    lua_Integer boff = luaL_optinteger(L, 5, 0);
    if (n < 0)
        luaL_argerror(L, 3, "negative length");
    lv_dmabuf *b = buf_range(L, 4, boff, n);
    check_access(L, r, off, (uint64_t)n, write);
    if (r->err)
        return region_error(L, r, write ? "write" : "read");
    return copy_pieces(L, r, (uint64_t)off, b->ptr + boff, (uint64_t)n, write);
}

/* r:read_into(off, n, buf, buf_off) -> true | nil, msg, errno: region to DMA buffer. */
static int r_read_into(lua_State *L) { return transfer_dmabuf(L, 0); }

/* r:write_from(off, n, buf, buf_off) -> true | nil, msg, errno: DMA buffer to region. */
static int r_write_from(lua_State *L) { return transfer_dmabuf(L, 1); }

/* r:map() -> true, number of mapped areas | nil, msg, errno. Maps only what the kernel
 * allows: the sparse areas when the region has them, else the whole region. Accesses
 * outside the mapped areas keep working through pread/pwrite. */
static int r_map(lua_State *L)
{
    lv_region *r = region_self(L);
    if (!r->dev)
        luaL_error(L, "region %d is closed", (int)r->index);
    if (r->dev->fd < 0)
        luaL_error(L, "region %d of %s: device is closed", (int)r->index, region_devname(r));
    if (r->err)
        return region_error(L, r, "map");
    if (r->areas) {
        lua_pushboolean(L, 1);
        lua_pushinteger(L, r->nareas);
        return 2;
    }
    if (!(r->flags & VFIO_REGION_INFO_FLAG_MMAP))
        return lv_syserrorf(L, EINVAL, "map", "region %u of %s (region does not support mmap)",
                            r->index, r->dev->name);
    uint32_t n = r->have_sparse ? r->nsparse : 1;
    struct vfio_map_area *areas = calloc(n ? n : 1, sizeof *areas);
    if (!areas)
        return lv_syserrorf(L, ENOMEM, "map", "region %u of %s", r->index, r->dev->name);
    int prot = ((r->flags & VFIO_REGION_INFO_FLAG_READ) ? PROT_READ : 0) |
               ((r->flags & VFIO_REGION_INFO_FLAG_WRITE) ? PROT_WRITE : 0);
    for (uint32_t i = 0; i < n; i++) {
        areas[i].off = r->have_sparse ? r->sparse[i].offset : 0;
        areas[i].size = r->have_sparse ? r->sparse[i].size : r->size;
        int e = areas[i].size ? vfio_map_area(r->dev->fd, r->offset, &areas[i], prot) : 0;
        if (e < 0) {
            unsigned long long at = r->offset + areas[i].off, sz = areas[i].size;
            for (uint32_t j = 0; j < i; j++)
                vfio_unmap_area(&areas[j]);
            free(areas);
            if (e == -ENXIO)
                return lv_syserrorf(L, ENXIO, "mmap",
                                    "region %u of %s (offset 0x%llx size 0x%llx: the file "
                                    "behind it ends before that)",
                                    r->index, r->dev->name, at, sz);
            return lv_syserrorf(L, -e, "mmap", "region %u of %s (offset 0x%llx size 0x%llx)",
                                r->index, r->dev->name, at, sz);
        }
    }
    r->areas = areas;
    r->nareas = n;
    r->nrd = (r->flags & VFIO_REGION_INFO_FLAG_READ) ? n : 0;
    r->nwr = (r->flags & VFIO_REGION_INFO_FLAG_WRITE) ? n : 0;
    lua_pushboolean(L, 1);
    lua_pushinteger(L, n);
    return 2;
}

static int r_unmap(lua_State *L)
{
    unmap_region(region_self(L));
    return 0;
}

/* r:mapped() -> list of {offset=, size=} currently mapped (empty when not mapped) */
static int r_mapped(lua_State *L)
{
    lv_region *r = region_self(L);
    lua_createtable(L, (int)r->nareas, 0);
    /* each area is read before the allocations that push it (GC steps, whose finalizers
     * may unmap the region: nareas is 0 then, and the loop ends) */
    for (uint32_t i = 0; i < r->nareas; i++) {
        lua_Integer off = (lua_Integer)r->areas[i].off, size = (lua_Integer)r->areas[i].size;
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, off);
        lua_setfield(L, -2, "offset");
        lua_pushinteger(L, size);
        lua_setfield(L, -2, "size");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int r_device(lua_State *L)
{
    region_self(L);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* r:closed() -> true once the region was closed (its device closing does not count:
 * then accesses say the device is closed). */
static int r_closed(lua_State *L)
{
    lua_pushboolean(L, region_self(L)->dev == NULL);
    return 1;
}

static int r_close(lua_State *L)
{
    lv_region *r = region_self(L);
    unmap_region(r);
    unlink_region(r);
    free(r->sparse);
    r->sparse = NULL;
    r->nsparse = 0;
    r->dev = NULL;
    return 0;
}

static int r_tostring(lua_State *L)
{
    lv_region *r = region_self(L);
    if (r->err)
        lua_pushfstring(L, "vfio.region (%d of %s, info failed)", (int)r->index,
                        region_devname(r));
    else
    {
        char sz[24];
        snprintf(sz, sizeof sz, "0x%llx", (unsigned long long)r->size);
        lua_pushfstring(L, "vfio.region (%d of %s, size %s%s)", (int)r->index,
                        region_devname(r), sz, r->nareas ? ", mapped" : "");
    }
    return 1;
}

void lv_pushregion(lua_State *L, int devidx, struct vfio_region_desc *d, int err)
{
    devidx = lua_absindex(L, devidx);
    lv_device *dev = luaL_checkudata(L, devidx, LV_DEVICE);
    lv_region *r = lua_newuserdatauv(L, sizeof *r, 1);
    memset(r, 0, sizeof *r);
    r->dev = dev;
    r->index = d->index;
    r->err = err;
    if (!err) {
        r->flags = d->flags;
        r->size = d->size;
        r->offset = d->offset;
        r->have_sparse = d->have_sparse;
        r->nsparse = d->nsparse;
        r->sparse = d->sparse;
        d->sparse = NULL;
    }
    lv_set_parent(L, -1, devidx, 1);
    r->next = dev->regions;
    if (dev->regions)
        dev->regions->pprev = &r->next;
    dev->regions = r;
    r->pprev = &dev->regions;

    /* Per-region tables: F holds the fields and a copy of the methods (so `r.size` and
     * `r:read32` are one lookup each); M, the region's metatable, has __index = F, the
     * metamethods and __metatable, and the class as its own metatable (region_self's
     * check). Neither is reachable from Lua: F is no value of any field and
     * getmetatable(r) returns the class's description. */
    lua_createtable(L, 0, 20);
    if (!err) {
        struct vfio_region_desc view = *d;
        view.sparse = r->sparse;
        lv_region_fields(L, &view);
    } else {
        lua_pushinteger(L, d->index);
        lua_setfield(L, -2, "index");
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "size");
        lua_pushfstring(L, "VFIO_DEVICE_GET_REGION_INFO region %d of %s: %s", (int)d->index,
                        dev->name, strerror(err));
        lua_setfield(L, -2, "error");
        lua_pushinteger(L, err);
        lua_setfield(L, -2, "errno");
    }
    lua_pushstring(L, dev->name);
    lua_setfield(L, -2, "device_name");
    int fields = lua_gettop(L);
    luaL_getmetatable(L, LV_REGION);
    int class = lua_gettop(L);
    lua_getfield(L, class, "__index");
    lv_copy_fields(L, -1, fields);
    lua_pop(L, 1);
    lua_createtable(L, 0, 6);
    /* The class keeps the finalizer under another key: a __gc there would make every
     * table whose metatable it is (each M) finalizable too. */
    static const char *const keys[][2] = {{"gc_", "__gc"}, {"__close", "__close"},
                                          {"__tostring", "__tostring"}, {"__name", "__name"},
                                          {"__metatable", "__metatable"}};
    for (int i = 0; i < 5; i++) {
        lua_getfield(L, class, keys[i][0]);
        lua_setfield(L, -2, keys[i][1]);
    }
    lua_pushvalue(L, fields);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, class);
    lua_setmetatable(L, -2);  /* M -> class */
    lua_setmetatable(L, -4);  /* userdata -> M */
    lua_pop(L, 2);            /* class, F */
}

static int to_u64_field(lua_State *L, int t, const char *k, uint64_t *out, int required)
{
    lua_getfield(L, t, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        if (required)
            luaL_error(L, "region info: field '%s' is required", k);
        return 0;
    }
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
        luaL_error(L, "region info: field '%s' must be a non-negative integer", k);
    *out = (uint64_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return 1;
}

/* core.region(device, {index=, offset=, size=, readable=, writable=, mappable=,
 * sparse={{offset=, size=}...}}) -> region described by the caller instead of
 * REGION_INFO: regions of adopted fds, and host tests against a memfd. */
static int l_region_new(lua_State *L)
{
    luaL_checkudata(L, 1, LV_DEVICE);
    luaL_checktype(L, 2, LUA_TTABLE);
    struct vfio_region_desc d;
    memset(&d, 0, sizeof d);
    uint64_t v = 0;
    to_u64_field(L, 2, "index", &v, 0);
    if (v > 0xffffffff)
        luaL_error(L, "region info: index out of range");
    d.index = (uint32_t)v;
    to_u64_field(L, 2, "offset", &d.offset, 1);
    to_u64_field(L, 2, "size", &d.size, 1);
    if (d.offset + d.size < d.offset || d.offset + d.size > (uint64_t)INT64_MAX)
        luaL_error(L, "region info: offset + size overflows");
    static const struct {
        const char *k;
        uint32_t bit;
    } fl[] = {{"readable", VFIO_REGION_INFO_FLAG_READ},
              {"writable", VFIO_REGION_INFO_FLAG_WRITE},
              {"mappable", VFIO_REGION_INFO_FLAG_MMAP}};
    for (int i = 0; i < 3; i++) {
        lua_getfield(L, 2, fl[i].k);
        if (lua_toboolean(L, -1))
            d.flags |= fl[i].bit;
        lua_pop(L, 1);
    }
    lua_getfield(L, 2, "sparse");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        int st = lua_gettop(L);
        lua_Integer n = (lua_Integer)lua_rawlen(L, st);
        if (n > 1024)
            luaL_error(L, "region info: too many sparse areas");
        /* Held in a userdata while validating, so an error cannot leak it. */
        struct vfio_sparse_area *tmp =
            lua_newuserdatauv(L, sizeof *tmp * (size_t)(n ? n : 1), 0);
        for (lua_Integer i = 0; i < n; i++) {
            lua_rawgeti(L, st, i + 1);
            luaL_checktype(L, -1, LUA_TTABLE);
            int at = lua_gettop(L);
            to_u64_field(L, at, "offset", &tmp[i].offset, 1);
            to_u64_field(L, at, "size", &tmp[i].size, 1);
            if (tmp[i].size == 0 || tmp[i].offset > d.size ||
                tmp[i].size > d.size - tmp[i].offset)
                luaL_error(L, "region info: sparse area %d lies outside the region", (int)i + 1);
            lua_pop(L, 1);
        }
        d.have_sparse = 1;
        d.nsparse = (uint32_t)n;
        d.sparse = malloc(sizeof *tmp * (size_t)(n ? n : 1));
        if (!d.sparse)
            luaL_error(L, "out of memory");
        memcpy(d.sparse, tmp, sizeof *tmp * (size_t)n);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    /* the device once the description is read (its metamethods may run Lua) */
    if (((lv_device *)lua_touserdata(L, 1))->fd < 0) {
        free(d.sparse);
        return luaL_argerror(L, 1, "device is closed");
    }
    lv_pushregion(L, 1, &d, 0);
    return 1;
}

/*** @module vfio.core */

/***
Describe a region by hand instead of REGION_INFO (regions of adopted fds; host tests on a
memfd). A region reaching past the end of an ordinary file is never mapped.
@function region
@tparam device dev the device
@tparam table info `{index=, offset=, size=, readable=, writable=, mappable=, sparse = {{offset=, size=}...}}`
@treturn region
*/

/***
A region of a device (`vfio.region`): BARs, ROM, config space, VGA. Fields from
REGION_INFO: `index`, `size`, `offset`, `flags`, `readable`, `writable`, `mappable`,
`sparse` (mmap-able areas), `type`/`subtype`, `msix_mappable`; or `error` and `errno`
when REGION_INFO failed. Accesses are checked against the size and flags and raise when
outside; mapped parts are plain volatile loads and stores, the rest pread/pwrite.
@type region
*/

/***
Read a 8-bit value at off (little-endian, as the device is).
@function region:read8
@tparam int off offset in the region
@treturn int the value, or `nil, message, errno`
*/

/***
Read a 16-bit value at off (little-endian, as the device is).
@function region:read16
@tparam int off offset in the region
@treturn int the value, or `nil, message, errno`
*/

/***
Read a 32-bit value at off (little-endian, as the device is).
@function region:read32
@tparam int off offset in the region
@treturn int the value, or `nil, message, errno`
*/

/***
Read a 64-bit value at off (little-endian, as the device is).
@function region:read64
@tparam int off offset in the region
@treturn int the value, or `nil, message, errno`
*/

/***
Write a 8-bit value at off; raises when v does not fit.
@function region:write8
@tparam int off offset in the region
@tparam int v the value
@treturn boolean true, or `nil, message, errno`
*/

/***
Write a 16-bit value at off; raises when v does not fit.
@function region:write16
@tparam int off offset in the region
@tparam int v the value
@treturn boolean true, or `nil, message, errno`
*/

/***
Write a 32-bit value at off; raises when v does not fit.
@function region:write32
@tparam int off offset in the region
@tparam int v the value
@treturn boolean true, or `nil, message, errno`
*/

/***
Write a 64-bit value at off; raises when v does not fit.
@function region:write64
@tparam int off offset in the region
@tparam int v the value
@treturn boolean true, or `nil, message, errno`
*/

/***
Read n bytes at off (mapped parts copied with 8-byte device-safe accesses, never vector
instructions; other parts through pread).
@function region:read
@tparam int off offset
@tparam int n bytes
@treturn string the bytes, or `nil, message, errno`
*/

/***
Write the bytes of s at off.
@function region:write
@tparam int off offset
@tparam string s the bytes
@treturn boolean true, or `nil, message, errno`
*/

/***
Copy n bytes of the region at off into a DMA buffer, without a Lua string.
@function region:read_into
@tparam int off region offset
@tparam int n bytes
@tparam dmabuf buf the buffer
@tparam[opt=0] int buf_off buffer offset
@treturn boolean true, or `nil, message, errno`
*/

/***
Copy n bytes of a DMA buffer into the region at off.
@function region:write_from
@tparam int off region offset
@tparam int n bytes
@tparam dmabuf buf the buffer
@tparam[opt=0] int buf_off buffer offset
@treturn boolean true, or `nil, message, errno`
*/

/***
mmap what the kernel allows: the sparse areas when the region has them, else the whole
region. Accesses outside the mapped areas keep working through pread/pwrite. A region over
an ordinary file shorter than itself is not mapped (ENXIO).
@function region:map
@treturn boolean true, or `nil, message, errno`
@treturn int the number of mapped areas
*/

/***
Unmap the region's mappings (accesses go through pread/pwrite).
@function region:unmap
*/

/***
The areas currently mapped.
@function region:mapped
@treturn table `{{offset=, size=}...}` (empty when not mapped)
*/

/***
The device the region belongs to.
@function region:device
@treturn device
*/

/***
Whether the region was closed (its device closing does not count: accesses then say the
device is closed).
@function region:closed
@treturn boolean
*/

/***
Unmap and close the region (idempotent).
@function region:close
*/

void lv_open_region(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"read8", r_read8},   {"read16", r_read16},   {"read32", r_read32},
        {"read64", r_read64}, {"write8", r_write8},   {"write16", r_write16},
        {"write32", r_write32}, {"write64", r_write64}, {"read", r_read},
        {"write", r_write},   {"read_into", r_read_into}, {"write_from", r_write_from},
        {"map", r_map},         {"unmap", r_unmap},
        {"mapped", r_mapped}, {"device", r_device},   {"closed", r_closed},   {"close", r_close},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"gc_", r_close}, {"__close", r_close}, {"__tostring", r_tostring}, {NULL, NULL}};
    luaL_newmetatable(L, LV_REGION);
    int mt = lua_gettop(L);
    lua_newtable(L);
    lua_pushvalue(L, mt);
    luaL_setfuncs(L, methods, 1);
    lua_setfield(L, mt, "__index");
    lua_pushvalue(L, mt);
    luaL_setfuncs(L, meta, 1);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_region_new);
    lua_setfield(L, -2, "region");
}
