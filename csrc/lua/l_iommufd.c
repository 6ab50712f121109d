/* vfio.iommufd and vfio.ioas: binding of csrc/vfio/vfio_iommufd.c, and core.cdev, a VFIO
 * device opened through its cdev (/dev/vfio/devices/vfioN), which is a vfio.device.
 *
 * Lifetimes: an ioas keeps its iommufd alive (user value 1); a device bound to an iommufd
 * keeps it alive, and once attached keeps the ioas alive instead (the device's user value
 * 1, which the ioas keeps the iommufd through). Mapped DMA sources stay referenced by the
 * ioas (user value 2, by IOVA) until unmapped, as a container's do, and cannot be freed
 * meanwhile (lv_dma_keep): an IOAS pins a mapping's pages only while a device is attached,
 * and pins whatever the user address holds at attach time, so memory freed while the IOAS
 * maps it would let the device reach whatever is allocated there next. */
#include "l_objects.h"
#include "vfio/vfio_iommufd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LV_IOMMUFD "vfio.iommufd"
#define LV_IOAS "vfio.ioas"

typedef struct {
    int fd;
    char path[128];
} lv_iommufd;

/* uv1: the iommufd; uv2: table iova -> mapped source. `ictx` stays valid while uv1 holds
 * the iommufd, that is until close. */
typedef struct {
    lv_iommufd *ictx;
    uint32_t id;
    int closed;
} lv_ioas;

static lv_iommufd *check_iommufd(lua_State *L, int idx)
{
    lv_iommufd *i = luaL_checkudata(L, idx, LV_IOMMUFD);
    if (i->fd < 0)
        luaL_argerror(L, idx, "iommufd is closed");
    return i;
}

static lv_ioas *check_ioas(lua_State *L, int idx)
{
    lv_ioas *a = luaL_checkudata(L, idx, LV_IOAS);
    if (a->closed)
        luaL_argerror(L, idx, "ioas is closed");
    if (a->ictx->fd < 0)
        luaL_argerror(L, idx, "the ioas's iommufd is closed");
    return a;
}

static uint64_t check_u64(lua_State *L, int arg)
{
    return (uint64_t)luaL_checkinteger(L, arg);
}

/* ---- vfio.iommufd ------------------------------------------------------------------ */

/* core.iommufd([path]) -> iommufd | nil, msg, errno */
static int l_iommufd_open(lua_State *L)
{
    size_t len;
    const char *path = luaL_optlstring(L, 1, "/dev/iommu", &len);
    if (len >= sizeof(((lv_iommufd *)0)->path))
        luaL_argerror(L, 1, "path too long");
    int fd = vfio_iommufd_open(path);
    if (fd < 0)
        return lv_syserror(L, -fd, "open iommufd", path);
    lv_iommufd *i = lv_newobject(L, sizeof *i, LV_IOMMUFD, 0);
    i->fd = fd;
    snprintf(i->path, sizeof i->path, "%s", path);
    return 1;
}

/* i:ioas() -> a new, empty I/O address space (vfio.ioas) | nil, msg, errno */
static int i_ioas(lua_State *L)
{
    luaL_checkudata(L, 1, LV_IOMMUFD);
    /* the objects first (allocations are GC steps), the iommufd checked after them */
    lv_ioas *a = lv_newobject(L, sizeof *a, LV_IOAS, 2);
    a->closed = 1;   /* until the IOAS exists */
    lua_newtable(L);
    lua_setiuservalue(L, -2, 2);
    lv_iommufd *i = check_iommufd(L, 1);
    uint32_t id;
    int r = vfio_ioas_alloc(i->fd, &id);
    if (r < 0)
        return lv_syserror(L, -r, "IOMMU_IOAS_ALLOC", i->path);
    a->ictx = i;
    a->id = id;
    a->closed = 0;
    lv_set_parent(L, -1, 1, 1);
    return 1;
}

/* i:bind(device) -> devid | nil, msg, errno. The device (a cdev, core.cdev) is then usable
 * and keeps this iommufd alive. */
static int i_bind(lua_State *L)
{
    lv_iommufd *i = check_iommufd(L, 1);
    lv_device *d = lv_checkdevice(L, 2);
    uint32_t devid;
    int r = vfio_device_bind_iommufd(d->fd, i->fd, &devid);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_DEVICE_BIND_IOMMUFD", "%s (%s)", d->name, i->path);
    lv_set_parent(L, 2, 1, 1);
    lua_pushinteger(L, devid);
    return 1;
}

static int i_fileno(lua_State *L)
{
    lua_pushinteger(L, check_iommufd(L, 1)->fd);
    return 1;
}

static int i_path(lua_State *L)
{
    lua_pushstring(L, ((lv_iommufd *)luaL_checkudata(L, 1, LV_IOMMUFD))->path);
    return 1;
}

static int i_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_iommufd *)luaL_checkudata(L, 1, LV_IOMMUFD))->fd < 0);
    return 1;
}

/* Closing the fd ends this process's handle; the kernel keeps the context while devices
 * bound to it are open. */
static int i_close(lua_State *L)
{
    lv_iommufd *i = luaL_checkudata(L, 1, LV_IOMMUFD);
    if (i->fd >= 0) {
        close(i->fd);
        i->fd = -1;
    }
    return 0;
}

static int i_tostring(lua_State *L)
{
    lv_iommufd *i = luaL_checkudata(L, 1, LV_IOMMUFD);
    if (i->fd < 0)
        lua_pushfstring(L, "vfio.iommufd (%s, closed)", i->path);
    else
        lua_pushfstring(L, "vfio.iommufd (%s, fd %d)", i->path, i->fd);
    return 1;
}

/* ---- vfio.ioas --------------------------------------------------------------------- */

/* a:map_dma(buf, iova [, {read=, write=}]) or a:map_dma(vm, iova, {gpa=, size=, read=,
 * write=}): vfio.container's map_dma, at a fixed IOVA of this address space. */
static int a_map_dma(lua_State *L)
{
    luaL_checkudata(L, 1, LV_IOAS);
    uint64_t vaddr, size, iova = check_u64(L, 3);
    unsigned acc = lv_dma_access(L, 4);
    /* the source reads its options, then checks itself; the ioas (and its iommufd) come
     * last, after every call that can run Lua */
    int slot;
    lv_dma_source(L, 2, 4, &vaddr, &size, &slot);
    lv_ioas *a = check_ioas(L, 1);
    if (iova + size < iova)
        luaL_argerror(L, 3, "iova + size overflows");
    uint32_t flags = ((acc & LV_DMA_READ) ? VFIO_IOAS_READ : 0) |
                     ((acc & LV_DMA_WRITE) ? VFIO_IOAS_WRITE : 0);
    int r = vfio_ioas_map(a->ictx->fd, a->id, vaddr, iova, size, flags);
    if (r < 0) {
        lv_syserrorf(L, -r, "IOMMU_IOAS_MAP", "%s (ioas %u iova 0x%llx size 0x%llx)",
                     a->ictx->path, a->id, (unsigned long long)iova, (unsigned long long)size);
        return lv_dma_map_error(L, -r, size);
    }
    char mapper[160];
    snprintf(mapper, sizeof mapper, "ioas %u of %s", a->id, a->ictx->path);
    lv_dma_keep(L, 1, 2, iova, 2, size, slot, mapper);
    lua_pushboolean(L, 1);
    return 1;
}

/* a:unmap_dma(iova, size) -> bytes unmapped (0 when nothing was mapped there, as a
 * container answers; the kernel's iommufd says ENOENT). */
static int a_unmap_dma(lua_State *L)
{
    lv_ioas *a = check_ioas(L, 1);
    uint64_t iova = check_u64(L, 2), size = check_u64(L, 3), done = 0;
    if (size == 0)
        luaL_argerror(L, 3, "size must be positive");
    if (iova + size < iova)
        luaL_argerror(L, 3, "iova + size overflows");
    int r = vfio_ioas_unmap(a->ictx->fd, a->id, iova, size, &done);
    if (r == -ENOENT) {
        r = 0;
        done = 0;
    }
    if (r < 0)
        return lv_syserrorf(L, -r, "IOMMU_IOAS_UNMAP", "%s (ioas %u iova 0x%llx size 0x%llx)",
                            a->ictx->path, a->id, (unsigned long long)iova,
                            (unsigned long long)size);
    /* IOMMU_IOAS_UNMAP unmaps whole areas, each inside the range, or fails */
    if (done > 0)
        lv_dma_drop(L, 1, 2, iova, size, 0);
    lua_pushinteger(L, (lua_Integer)done);
    return 1;
}

/* a:unmap_all() -> bytes unmapped */
static int a_unmap_all(lua_State *L)
{
    lv_ioas *a = check_ioas(L, 1);
    uint64_t done = 0;
    int r = vfio_ioas_unmap(a->ictx->fd, a->id, 0, UINT64_MAX, &done);
    if (r < 0)
        return lv_syserrorf(L, -r, "IOMMU_IOAS_UNMAP", "%s (ioas %u, all)", a->ictx->path,
                            a->id);
    lv_dma_drop(L, 1, 2, 0, 0, 1);
    lua_pushinteger(L, (lua_Integer)done);
    return 1;
}

/* a:iova_ranges() -> {{start=, last=}...}, alignment: where mappings may go now (the
 * devices attached narrow it) and the alignment of a mapping's start and end. */
static int a_iova_ranges(lua_State *L)
{
    lv_ioas *a = check_ioas(L, 1);
    struct vfio_iova_span *s;
    uint32_t n;
    uint64_t align = 0;
    int r = vfio_ioas_iova_ranges(a->ictx->fd, a->id, &s, &n, &align);
    if (r < 0)
        return lv_syserrorf(L, -r, "IOMMU_IOAS_IOVA_RANGES", "%s (ioas %u)", a->ictx->path,
                            a->id);
    lua_createtable(L, (int)n, 0);
    for (uint32_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, (lua_Integer)s[i].start);
        lua_setfield(L, -2, "start");
        lua_pushinteger(L, (lua_Integer)s[i].end);
        lua_setfield(L, -2, "last");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(s);
    lua_pushinteger(L, (lua_Integer)align);
    return 2;
}

/* Is the device at `d` bound to this ioas's iommufd (its user value is that iommufd or an
 * ioas of it)? Pushes nothing. */
static int bound_here(lua_State *L, int a, int d)
{
    int ok = 0;
    lua_getiuservalue(L, a, 1); /* our iommufd */
    lua_getiuservalue(L, d, 1);
    if (lua_rawequal(L, -1, -2) || lua_rawequal(L, -1, a)) {
        ok = 1;
    } else if (luaL_testudata(L, -1, LV_IOAS)) {
        lua_getiuservalue(L, -1, 1);
        ok = lua_rawequal(L, -1, -3);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return ok;
}

/* a:attach(device) -> true | nil, msg, errno. The device must be bound to this ioas's
 * iommufd (iommufd:bind): an IOAS id means something only inside its own iommufd. The
 * device then keeps this ioas alive. */
static int a_attach(lua_State *L)
{
    lv_ioas *a = check_ioas(L, 1);
    lv_device *d = lv_checkdevice(L, 2);
    if (!bound_here(L, 1, 2))
        luaL_argerror(L, 2, "device is not bound to this ioas's iommufd (iommufd:bind first)");
    uint32_t pt;
    int r = vfio_device_attach_pt(d->fd, a->id, &pt);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "%s (ioas %u)", d->name,
                            a->id);
    lv_set_parent(L, 2, 1, 1);
    lua_pushboolean(L, 1);
    return 1;
}

/* a:detach(device) -> true | nil, msg, errno: the device blocks DMA until attached again;
 * it keeps the iommufd alive, no longer this ioas. */
static int a_detach(lua_State *L)
{
    lv_ioas *a = check_ioas(L, 1);
    lv_device *d = lv_checkdevice(L, 2);
    lua_getiuservalue(L, 2, 1);
    int here = lua_rawequal(L, -1, 1);
    lua_pop(L, 1);
    if (!here)
        luaL_argerror(L, 2, "device is not attached to this ioas");
    int r = vfio_device_detach_pt(d->fd);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_DEVICE_DETACH_IOMMUFD_PT", "%s (ioas %u)", d->name,
                            a->id);
    lua_getiuservalue(L, 1, 1);
    lua_setiuservalue(L, 2, 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int a_id(lua_State *L)
{
    lua_pushinteger(L, check_ioas(L, 1)->id);
    return 1;
}

static int a_iommufd(lua_State *L)
{
    check_ioas(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* ioas:mappings() -> {{iova=, size=, source=}...}: what the IOAS maps (lv_dma_list). */
static int a_mappings(lua_State *L)
{
    luaL_checkudata(L, 1, LV_IOAS);
    return lv_dma_list(L, 1, 2);
}

static int a_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_ioas *)luaL_checkudata(L, 1, LV_IOAS))->closed);
    return 1;
}

/* Unmaps everything, destroys the IOAS (the kernel refuses while devices are attached:
 * it then goes with the iommufd) and drops the mapped sources and the iommufd. Sources
 * are released only when the unmap succeeded: with the iommufd closed first the IOAS may
 * live on in the kernel (a bound device holds it), and its memory stays allocated. */
static int a_close(lua_State *L)
{
    lv_ioas *a = luaL_checkudata(L, 1, LV_IOAS);
    if (!a->closed) {
        a->closed = 1;
        if (a->ictx && a->ictx->fd >= 0) {
            int r = vfio_ioas_unmap(a->ictx->fd, a->id, 0, UINT64_MAX, NULL);
            if (r == 0 || r == -ENOENT)
                lv_dma_drop(L, 1, 2, 0, 0, 1);
            vfio_iommufd_destroy(a->ictx->fd, a->id);
        }
        a->ictx = NULL;
        lua_pushnil(L);
        lua_setiuservalue(L, 1, 2);
        lua_pushnil(L);
        lua_setiuservalue(L, 1, 1);
    }
    return 0;
}

static int a_tostring(lua_State *L)
{
    lv_ioas *a = luaL_checkudata(L, 1, LV_IOAS);
    if (a->closed)
        lua_pushfstring(L, "vfio.ioas (%d, closed)", (int)a->id);
    else
        lua_pushfstring(L, "vfio.ioas (%d in %s)", (int)a->id, a->ictx->path);
    return 1;
}

/* ---- core.cdev --------------------------------------------------------------------- */

/* core.cdev(path [, name]) -> vfio.device | nil, msg, errno: a VFIO device cdev, usable
 * once bound (iommufd:bind) and, for DMA, attached (ioas:attach). `name` (the PCI address,
 * by default the path) names the device in error messages. */
static int l_cdev(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *name = luaL_optlstring(L, 2, path, &len);
    if (len == 0 || len >= sizeof(((lv_device *)0)->name))
        luaL_argerror(L, 2, "device name empty or too long");
    int fd = vfio_iommufd_open(path);
    if (fd < 0)
        return lv_syserror(L, -fd, "open cdev", path);
    struct stat st;
    int e = fstat(fd, &st) < 0 ? errno : S_ISCHR(st.st_mode) ? 0 : ENOTTY;
    if (e) {
        close(fd);
        return lv_syserror(L, e, "open cdev", path);
    }
    lv_pushdevice(L, fd, name, 0);
    return 1;
}

/*** @module vfio.core */

/***
Open an iommufd.
@function iommufd
@tparam[opt="/dev/iommu"] string path the node
@treturn iommufd the iommufd, or `nil, message, errno`
*/

/***
Open a VFIO device cdev (`/dev/vfio/devices/vfioN`) as a `device`, usable once bound
(`iommufd:bind`) and, for DMA, attached (`ioas:attach`).
@function cdev
@tparam string path the cdev
@tparam[opt=path] string name names the device in messages (the PCI address)
@treturn device the device, or `nil, message, errno`
*/

/***
An iommufd context (`vfio.iommufd`).
@type iommufd
*/

/***
IOMMU_IOAS_ALLOC: a new, empty I/O address space, which keeps this iommufd alive.
@function iommufd:ioas
@treturn ioas the IOAS, or `nil, message, errno`
*/

/***
VFIO_DEVICE_BIND_IOMMUFD: bind a cdev device, which then keeps this iommufd alive.
@function iommufd:bind
@tparam device dev the device (from `cdev`)
@treturn int the devid, or `nil, message, errno`
*/

/***
The iommufd's fd number.
@function iommufd:fileno
@treturn int
*/

/***
The node it was opened from.
@function iommufd:path
@treturn string
*/

/***
Whether it is closed.
@function iommufd:closed
@treturn boolean
*/

/***
Close this handle (idempotent); the kernel keeps the context while bound devices are open.
@function iommufd:close
*/

/***
An I/O address space of an iommufd (`vfio.ioas`): plays the container's part.
@type ioas
*/

/***
IOMMU_IOAS_MAP at a fixed IOVA: the same sources and options as `container:map_dma`; the
source is kept alive until unmapped.
@function ioas:map_dma
@param source a `dmabuf` or a `vm`
@tparam int iova the IOVA
@tparam[opt] table opts `{read=, write=}`; for a VM `gpa=`, `size=`
@treturn boolean true, or `nil, message, errno`
*/

/***
IOMMU_IOAS_UNMAP of `[iova, iova + size)`.
@function ioas:unmap_dma
@tparam int iova start
@tparam int size length
@treturn int bytes unmapped (0 when nothing was mapped there), or `nil, message, errno`
*/

/***
Unmap everything.
@function ioas:unmap_all
@treturn int bytes unmapped, or `nil, message, errno`
*/

/***
IOMMU_IOAS_IOVA_RANGES: where mappings may go now (attached devices narrow it).
@function ioas:iova_ranges
@treturn table `{{start=, last=}...}`, or `nil, message, errno`
@treturn int the alignment of a mapping's start and end
*/

/***
VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach a device bound to this IOAS's iommufd (checked); the
device then keeps the IOAS alive.
@function ioas:attach
@tparam device dev the device
@treturn boolean true, or `nil, message, errno`
*/

/***
VFIO_DEVICE_DETACH_IOMMUFD_PT: the device blocks DMA until attached again.
@function ioas:detach
@tparam device dev the device
@treturn boolean true, or `nil, message, errno`
*/

/***
The IOAS id inside its iommufd.
@function ioas:id
@treturn int
*/

/***
The iommufd it belongs to.
@function ioas:iommufd
@treturn iommufd
*/

/***
The mappings this IOAS made and still records (map_dma's, until the kernel confirms their
unmap), by IOVA, as `container:mappings`. Read-only; a closed IOAS has none.
@function ioas:mappings
@treturn table `{{iova, size, source = "buffer"|"vm"}...}`, sorted by IOVA
*/

/***
Whether it is closed.
@function ioas:closed
@treturn boolean
*/

/***
Unmap everything, destroy the IOAS (the kernel keeps it while devices are attached) and
release the mapped sources whose unmap succeeded (idempotent).
@function ioas:close
*/

void lv_open_iommufd(lua_State *L)
{
    static const luaL_Reg imethods[] = {
        {"ioas", i_ioas},     {"bind", i_bind},     {"fileno", i_fileno},
        {"path", i_path},     {"closed", i_closed}, {"close", i_close},
        {NULL, NULL}};
    static const luaL_Reg imeta[] = {
        {"__gc", i_close}, {"__close", i_close}, {"__tostring", i_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_IOMMUFD, imethods, imeta);
    static const luaL_Reg amethods[] = {
        {"map_dma", a_map_dma},       {"unmap_dma", a_unmap_dma},
        {"unmap_all", a_unmap_all},   {"iova_ranges", a_iova_ranges},
        {"attach", a_attach},         {"detach", a_detach},
        {"id", a_id},                 {"iommufd", a_iommufd},
        {"mappings", a_mappings},     {"closed", a_closed},
        {"close", a_close},           {NULL, NULL}};
    static const luaL_Reg ameta[] = {
        {"__gc", a_close}, {"__close", a_close}, {"__tostring", a_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_IOAS, amethods, ameta);
    lua_pushcfunction(L, l_iommufd_open);
    lua_setfield(L, -2, "iommufd");
    lua_pushcfunction(L, l_cdev);
    lua_setfield(L, -2, "cdev");
}
