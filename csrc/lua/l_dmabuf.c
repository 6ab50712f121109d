/* vfio.dmabuf: page-aligned anonymous memory for device DMA (csrc/vfio/vfio_dma.c), or
 * with {shared = true} a sealed memfd mapped shared, whose fd a vfio-user device's
 * dma_map hands to the server (another process cannot reach anonymous memory). */
#include "l_objects.h"
#include "l_kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The memory and, for a shared buffer, its memfd. The server keeps its own mapping of
 * the memfd: freeing ours cannot make it reach this process's memory. */
static void dmabuf_free(lv_dmabuf *b)
{
    vfio_dma_free(b->ptr, b->rounded);
    b->ptr = NULL;
    if (b->fd >= 0) {
        close(b->fd);
        b->fd = -1;
    }
}

/* A sealed memfd of `rounded` bytes mapped shared, or NULL with errno set. */
static void *shared_alloc(size_t rounded, int *fdp)
{
    int fd = memfd_create("luavfio-dmabuf", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return NULL;
    if (ftruncate(fd, (off_t)rounded) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    void *p = mmap(NULL, rounded, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    *fdp = fd;
    return p;
}

lv_dmabuf *lv_checkdmabuf(lua_State *L, int idx)
{
    lv_dmabuf *b = luaL_checkudata(L, idx, LV_DMABUF);
    if (!b->ptr || b->orphaned)
        luaL_argerror(L, idx, "DMA buffer is closed");
    return b;
}

/* core.dmabuf(size [, {shared = false}]) -> buffer of size rounded up to whole pages,
 * zeroed; shared: in a sealed memfd (buf:fileno()) */
static int l_dmabuf_new(lua_State *L)
{
    lua_Integer size = luaL_checkinteger(L, 1);
    if (size <= 0)
        luaL_argerror(L, 1, "size must be positive");
    int shared = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "shared");
        shared = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lv_dmabuf *b = lv_newobject(L, sizeof *b, LV_DMABUF, 0);
    b->fd = -1;
    size_t rounded;
    void *p = vfio_dma_alloc((size_t)size, &rounded);
    if (p && shared) {
        vfio_dma_free(p, rounded);   /* only its rounding was wanted */
        p = shared_alloc(rounded, &b->fd);
    }
    if (!p)
        return lv_syserrorf(L, errno, shared ? "memfd" : "mmap", "DMA buffer of %lld bytes",
                            (long long)size);
    b->ptr = p;
    b->size = (size_t)size;
    b->rounded = rounded;
    return 1;
}

/* core.dmabuf_map(fd, offset, size [, {write = false}]) -> buffer | nil, message, errno:
 * a shared mapping of [offset, offset + size) of a regular file (a memfd a vfio-user client
 * lends for DMA), page-aligned, inside the file. Read-only unless write. The mapping is
 * a DMA buffer like any other (read/write from Lua, map_dma into a container or an ioas);
 * a file shrunk later by its owner would fault on access: check its seals first
 * (core.fd_seals). */
static int l_dmabuf_map(lua_State *L)
{
    lua_Integer off = luaL_checkinteger(L, 2);
    lua_Integer size = luaL_checkinteger(L, 3);
    int write = 0;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_getfield(L, 4, "write");
        write = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    int fd = lv_checkfd(L, 1);   /* may call fileno(): after the other arguments */
    size_t pg = vfio_page_size();
    if (size <= 0 || off < 0 || (uint64_t)off % pg || (uint64_t)size % pg ||
        off > INT64_MAX - size)
        return lv_syserrorf(L, EINVAL, "map", "fd %d: 0x%llx bytes at offset 0x%llx (want "
                            "whole pages)", fd, (unsigned long long)size,
                            (unsigned long long)off);
    lv_dmabuf *b = lv_newobject(L, sizeof *b, LV_DMABUF, 0);   /* before the mmap: no leak */
    b->fd = -1;   /* the lender's fd stays the lender's: never closed with the buffer */
    struct stat st;
    if (fstat(fd, &st) < 0)
        return lv_syserrorf(L, errno, "fstat", "fd %d", fd);
    if (!S_ISREG(st.st_mode))
        return lv_syserrorf(L, EINVAL, "map", "fd %d: not a regular file (a memfd or a file "
                            "in tmpfs or hugetlbfs)", fd);
    if (st.st_size < off + size)
        return lv_syserrorf(L, EINVAL, "map", "fd %d: 0x%llx bytes at offset 0x%llx pass the "
                            "end of the file (0x%llx bytes)", fd, (unsigned long long)size,
                            (unsigned long long)off, (unsigned long long)st.st_size);
    void *p = mmap(NULL, (size_t)size, PROT_READ | (write ? PROT_WRITE : 0), MAP_SHARED, fd,
                   (off_t)off);
    if (p == MAP_FAILED)
        return lv_syserrorf(L, errno, "mmap", "fd %d (0x%llx bytes at offset 0x%llx)", fd,
                            (unsigned long long)size, (unsigned long long)off);
    b->ptr = p;
    b->size = b->rounded = (size_t)size;
    b->readonly = !write;
    return 1;
}

/* core.fd_seals(fd) -> {shrink=, grow=, write=, seal=} | nil, message, errno (EINVAL: a
 * file that takes no seals) */
static int l_fd_seals(lua_State *L)
{
    int fd = lv_checkfd(L, 1);
    int s = fcntl(fd, F_GET_SEALS);
    if (s < 0)
        return lv_syserrorf(L, errno, "F_GET_SEALS", "fd %d", fd);
    lua_createtable(L, 0, 4);
    lua_pushboolean(L, s & F_SEAL_SHRINK);
    lua_setfield(L, -2, "shrink");
    lua_pushboolean(L, s & F_SEAL_GROW);
    lua_setfield(L, -2, "grow");
    lua_pushboolean(L, s & F_SEAL_WRITE);
    lua_setfield(L, -2, "write");
    lua_pushboolean(L, s & F_SEAL_SEAL);
    lua_setfield(L, -2, "seal");
    return 1;
}

static void check_range(lua_State *L, lv_dmabuf *b, lua_Integer off, size_t n)
{
    if (off < 0 || (uint64_t)off > b->rounded || b->rounded - (size_t)off < n)
        luaL_error(L, "DMA buffer: access of %I bytes at offset %I is outside the buffer "
                      "(size %I)",
                   (lua_Integer)n, off, (lua_Integer)b->rounded);
}

/* A write through Lua to a read-only shared mapping would fault: refuse it first. */
static lv_dmabuf *check_writable(lua_State *L, int idx)
{
    lv_dmabuf *b = lv_checkdmabuf(L, idx);
    if (b->readonly)
        luaL_argerror(L, idx, "DMA buffer is a read-only mapping");
    return b;
}

static int b_read(lua_State *L)
{
    lv_dmabuf *b = lv_checkdmabuf(L, 1);
    lua_Integer off = luaL_checkinteger(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    if (n < 0)
        luaL_argerror(L, 3, "negative length");
    check_range(L, b, off, (size_t)n);
    lua_pushlstring(L, (const char *)b->ptr + off, (size_t)n);
    return 1;
}

static int b_write(lua_State *L)
{
    luaL_checkudata(L, 1, LV_DMABUF);
    lua_Integer off = luaL_checkinteger(L, 2);
    size_t n;
    const char *s = luaL_checklstring(L, 3, &n);   /* a number converts: a GC step */
    lv_dmabuf *b = check_writable(L, 1);
    check_range(L, b, off, n);
    memcpy(b->ptr + off, s, n);
    return 0;
}

/* b:fill(byte [, off [, n]]) */
static int b_fill(lua_State *L)
{
    lv_dmabuf *b = check_writable(L, 1);
    int byte = (int)lv_checkrange(L, 2, 0, 255);
    lua_Integer off = luaL_optinteger(L, 3, 0);
    lua_Integer n = luaL_optinteger(L, 4, (lua_Integer)b->rounded - off);
    if (n < 0)
        luaL_argerror(L, 4, "negative length");
    check_range(L, b, off, (size_t)n);
    memset(b->ptr + off, byte, (size_t)n);
    return 0;
}

/* b:copy(dst_off, src, src_off, n): memcpy between DMA buffers (src may be b). */
static int b_copy(lua_State *L)
{
    lv_dmabuf *b = check_writable(L, 1);
    lua_Integer doff = luaL_checkinteger(L, 2);
    lv_dmabuf *s = lv_checkdmabuf(L, 3);
    lua_Integer soff = luaL_checkinteger(L, 4);
    lua_Integer n = luaL_checkinteger(L, 5);
    if (n < 0)
        luaL_argerror(L, 5, "negative length");
    check_range(L, b, doff, (size_t)n);
    check_range(L, s, soff, (size_t)n);
    memmove(b->ptr + doff, s->ptr + soff, (size_t)n);
    return 0;
}

#define DEF_RW(bits)                                                                   \
    static int b_read##bits(lua_State *L)                                              \
    {                                                                                  \
        lv_dmabuf *b = lv_checkdmabuf(L, 1);                                           \
        lua_Integer off = luaL_checkinteger(L, 2);                                     \
        uint##bits##_t v;                                                              \
        check_range(L, b, off, sizeof v);                                              \
        memcpy(&v, b->ptr + off, sizeof v);                                            \
        lua_pushinteger(L, (lua_Integer)v);                                            \
        return 1;                                                                      \
    }                                                                                  \
    static int b_write##bits(lua_State *L)                                             \
    {                                                                                  \
        lv_dmabuf *b = check_writable(L, 1);                                           \
        lua_Integer off = luaL_checkinteger(L, 2);                                     \
        lua_Integer val = luaL_checkinteger(L, 3);                                     \
        uint##bits##_t v = (uint##bits##_t)val;                                        \
        if (bits < 64 && (val < -((lua_Integer)1 << (bits - 1)) ||                     \
                          val > (lua_Integer)((UINT64_C(1) << (bits % 64)) - 1)))      \
            luaL_argerror(L, 3, "value does not fit");                                 \
        check_range(L, b, off, sizeof v);                                              \
        memcpy(b->ptr + off, &v, sizeof v);                                            \
        return 0;                                                                      \
    }
DEF_RW(8)
DEF_RW(16)
DEF_RW(32)
DEF_RW(64)

static int b_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lv_checkdmabuf(L, 1)->rounded);
    return 1;
}

/* buf:fileno() -> the memfd of a shared buffer, or nil when it has none */
static int b_fileno(lua_State *L)
{
    lv_dmabuf *b = lv_checkdmabuf(L, 1);
    if (b->fd < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, b->fd);
    return 1;
}

static int b_closed(lua_State *L)
{
    lv_dmabuf *b = luaL_checkudata(L, 1, LV_DMABUF);
    lua_pushboolean(L, b->ptr == NULL || b->orphaned);
    return 1;
}

void lv_dmabuf_release(lv_dmabuf *b)
{
    if (b->ptr && b->orphaned && b->pins == 0 && b->dma == 0)
        dmabuf_free(b);
}

/* Lifetime rule: memory is freed only when nothing uses it: no VM slot (vm:unmap,
 * vm:close release it) and no IOMMU mapping (container or ioas unmap_dma, unmap_all,
 * close). Not even a type1 container's pinning makes an early free safe: an iommufd IOAS
 * pins pages only while a device is attached, and takes whatever the address holds then.
 * close() refuses while either uses the buffer, saying which. */
static int b_close(lua_State *L)
{
    lv_dmabuf *b = luaL_checkudata(L, 1, LV_DMABUF);
    if (b->orphaned)
        return 0;
    if (b->pins > 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "close vfio.dmabuf: mapped into a VM by %d memory slot(s); "
                        "vm:unmap them first", b->pins);
        lua_pushinteger(L, EBUSY);
        return 3;
    }
    if (b->dma > 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "close vfio.dmabuf: mapped for device DMA by %d IOMMU mapping(s) "
                        "(the latest: %s); unmap_dma it there first, or close that "
                        "container or ioas", b->dma, b->mapper);
        lua_pushinteger(L, EBUSY);
        return 3;
    }
    dmabuf_free(b);
    return 0;
}

/* __gc and __close: a buffer still in use is closed for Lua at once, and its memory
 * freed when the last VM slot or IOMMU mapping using it goes (they keep the userdata
 * referenced, so this struct lives until then). */
static int b_gc(lua_State *L)
{
    lv_dmabuf *b = luaL_checkudata(L, 1, LV_DMABUF);
    if (!b->ptr)
        return 0;
    if (b->pins > 0 || b->dma > 0) {
        b->orphaned = 1;
        return 0;
    }
    dmabuf_free(b);
    return 0;
}

static int b_tostring(lua_State *L)
{
    lv_dmabuf *b = luaL_checkudata(L, 1, LV_DMABUF);
    if (!b->ptr || b->orphaned)
        lua_pushliteral(L, "vfio.dmabuf (closed)");
    else   /* no host address: none reaches Lua */
        lua_pushfstring(L, "vfio.dmabuf (%I bytes)", (lua_Integer)b->rounded);
    return 1;
}

/*** @module vfio.core */

/***
Page-aligned, zeroed anonymous memory for device DMA (and guest RAM), its size rounded up
to whole pages. It is freed only when no VM slot and no IOMMU mapping uses it. With
`shared` it is a sealed memfd mapped shared (`fileno()`), which a vfio-user device's
`dma_map` hands to its server.
@function dmabuf
@tparam int size bytes
@tparam[opt] table opts `{shared = false}`
@treturn dmabuf the buffer, or `nil, message, errno`
*/

/***
A shared mapping of a regular file (a memfd a vfio-user client lends for DMA) as a DMA
buffer: `[offset, offset + size)`, both whole pages, inside the file; read-only unless
`opts.write` (writes from Lua to a read-only one raise). It is read, written and mapped
for device DMA like any DMA buffer. A file its owner shrinks later would fault on access:
check `fd_seals` first.
@function dmabuf_map
@param fd the file: an fd number or an object with `fileno()`
@tparam int offset bytes into the file
@tparam int size bytes
@tparam[opt] table opts `{write = true}`
@treturn dmabuf the buffer, or `nil, message, errno` (EINVAL: not a regular file,
unaligned, past the file's end)
*/

/***
The seals of a memfd (F_GET_SEALS): `{shrink=, grow=, write=, seal=}`.
@function fd_seals
@param fd an fd number or an object with `fileno()`
@treturn table the seals, or `nil, message, errno` (EINVAL: a file that takes none)
*/

/***
A DMA buffer (`vfio.dmabuf`). Offsets are checked against the size and raise when outside.
@type dmabuf
*/

/***
The memfd of a shared buffer (`dmabuf(size, {shared = true})`), nil for anonymous memory.
@function dmabuf:fileno
@treturn ?int the fd
*/

/***
Read n bytes at off.
@function dmabuf:read
@tparam int off offset
@tparam int n bytes
@treturn string
*/

/***
Write the bytes of s at off.
@function dmabuf:write
@tparam int off offset
@tparam string s the bytes
*/

/***
Fill n bytes from off with a byte.
@function dmabuf:fill
@tparam int byte 0 to 255
@tparam[opt=0] int off offset
@tparam[opt] int n bytes (default: to the end)
*/

/***
memmove between DMA buffers (src may be this one).
@function dmabuf:copy
@tparam int dst_off offset in this buffer
@tparam dmabuf src the source
@tparam int src_off offset in src
@tparam int n bytes
*/

/***
Read a 8-bit little-endian value at off.
@function dmabuf:read8
@tparam int off offset
@treturn int
*/

/***
Read a 16-bit little-endian value at off.
@function dmabuf:read16
@tparam int off offset
@treturn int
*/

/***
Read a 32-bit little-endian value at off.
@function dmabuf:read32
@tparam int off offset
@treturn int
*/

/***
Read a 64-bit little-endian value at off.
@function dmabuf:read64
@tparam int off offset
@treturn int
*/

/***
Write a 8-bit little-endian value at off; raises when v does not fit.
@function dmabuf:write8
@tparam int off offset
@tparam int v the value
*/

/***
Write a 16-bit little-endian value at off; raises when v does not fit.
@function dmabuf:write16
@tparam int off offset
@tparam int v the value
*/

/***
Write a 32-bit little-endian value at off; raises when v does not fit.
@function dmabuf:write32
@tparam int off offset
@tparam int v the value
*/

/***
Write a 64-bit little-endian value at off; raises when v does not fit.
@function dmabuf:write64
@tparam int off offset
@tparam int v the value
*/

/***
The size, rounded up to whole pages.
@function dmabuf:size
@treturn int bytes
*/

/***
Whether it is closed (for Lua; its memory may stay allocated while mapped).
@function dmabuf:closed
@treturn boolean
*/

/***
Free the buffer. Refused while a VM memory slot or an IOMMU mapping uses it.
@function dmabuf:close
@return nothing, or `nil, message, EBUSY` naming the slot or the latest mapping
*/

void lv_open_dmabuf(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"read", b_read},       {"write", b_write},     {"fill", b_fill},
        {"copy", b_copy},       {"read8", b_read8},     {"read16", b_read16},
        {"read32", b_read32},   {"read64", b_read64},   {"write8", b_write8},
        {"write16", b_write16}, {"write32", b_write32}, {"write64", b_write64},
        {"size", b_size},       {"closed", b_closed},     {"fileno", b_fileno},
        {"close", b_close},     {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", b_gc}, {"__close", b_gc}, {"__tostring", b_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_DMABUF, methods, meta);
    lua_pushcfunction(L, l_dmabuf_new);
    lua_setfield(L, -2, "dmabuf");
    lua_pushcfunction(L, l_dmabuf_map);
    lua_setfield(L, -2, "dmabuf_map");
    lua_pushcfunction(L, l_fd_seals);
    lua_setfield(L, -2, "fd_seals");
    lua_pushinteger(L, (lua_Integer)vfio_page_size());
    lua_setfield(L, -2, "PAGE_SIZE");
}
