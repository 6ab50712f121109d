/* vfio.device: binding of csrc/vfio/vfio_device.c and the SET_IRQS part of csrc/vfio/vfio_irq.c. */
#include "l_objects.h"
#include "vfio/vfio_uapi_iommufd.h"

#include <errno.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

lv_device *lv_checkdevice(lua_State *L, int idx)
{
    lv_device *d = luaL_checkudata(L, idx, LV_DEVICE);
    if (d->fd < 0)
        luaL_argerror(L, idx, "device is closed");
    return d;
}

lv_device *lv_pushdevice(lua_State *L, int fd, const char *name, int parent)
{
    parent = parent ? lua_absindex(L, parent) : 0;
    lv_device *d = lv_newobject(L, sizeof *d, LV_DEVICE, 1);
    d->fd = fd;
    snprintf(d->name, sizeof d->name, "%s", name);
    if (parent)
        lv_set_parent(L, -1, parent, 1);
    return d;
}

/* core.device_adopt(fd, name) -> device owning a duplicate of fd. For device fds received
 * from elsewhere (a privileged helper over a unix socket) and for regions backed by
 * ordinary files (memfd) on hosts without VFIO. */
static int l_device_adopt(lua_State *L)
{
    int fd = (int)lv_checkrange(L, 1, 0, 0x7fffffff);
    const char *name = luaL_checkstring(L, 2);
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (nfd < 0)
        return lv_syserrorf(L, errno, "adopt", "fd %d as %s", fd, name);
    lv_pushdevice(L, nfd, name, 0);
    return 1;
}

/* core.device_file(path [, name]) -> device on a file opened read-write: a VFIO device
 * cdev, or any file whose regions are described with core.region (host tests). */
static int l_device_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *name = luaL_optstring(L, 2, path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return lv_syserror(L, errno, "open", path);
    struct stat st;
    lv_device *d = lv_pushdevice(L, fd, name, 0);
    d->is_memory = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    return 1;
}

static int d_info(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    struct vfio_dev_desc info;
    int r = vfio_device_info(d->fd, &info);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_DEVICE_GET_INFO", d->name);
    lv_push_device_info(L, info.flags, info.num_regions, info.num_irqs);
    return 1;
}

void lv_region_fields(lua_State *L, const struct vfio_region_desc *d)
{
    lv_region_base_fields(L, d->index, d->flags, d->size, d->offset);
    lv_setbool(L, "msix_mappable", d->msix_mappable);
    if (d->have_type) {
        lv_setint(L, "type", d->type);
        lv_setint(L, "subtype", d->subtype);
    }
    if (d->have_sparse) {
        lua_createtable(L, (int)d->nsparse, 0);
        for (uint32_t i = 0; i < d->nsparse; i++) {
            lua_createtable(L, 0, 2);
            lv_setint(L, "offset", (lua_Integer)d->sparse[i].offset);
            lv_setint(L, "size", (lua_Integer)d->sparse[i].size);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, "sparse");
    }
    if (d->chain_error) {
        lua_pushstring(L, "malformed capability chain (ignored from the fault on)");
        lua_setfield(L, -2, "chain_error");
    }
}

static uint32_t check_index(lua_State *L, int arg)
{
    return (uint32_t)lv_checkrange(L, arg, 0, 0xffffffff);
}

/* d:region_info(i) -> table | nil, msg, errno */
/* core.parse_region_info(bytes) -> table: the REGION_INFO parser on a raw buffer, for
 * tools that record ioctl results and for testing malformed capability chains. */
static int l_parse_region_info(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    struct vfio_region_desc rd;
    if (vfio_region_parse(s, n, &rd) < 0)
        luaL_argerror(L, 1, "shorter than struct vfio_region_info");
    lua_newtable(L);
    lv_region_fields(L, &rd);
    vfio_region_desc_free(&rd);
    return 1;
}

static int d_region_info(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    uint32_t idx = check_index(L, 2);
    struct vfio_region_desc rd;
    int r = vfio_device_region_info(d->fd, idx, &rd);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_DEVICE_GET_REGION_INFO", "region %u of %s", idx,
                            d->name);
    lua_newtable(L);
    lv_region_fields(L, &rd);
    vfio_region_desc_free(&rd);
    return 1;
}

/* d:region(i) -> region. A region whose info fails is still returned, with .error and
 * .errno set, so one bad index (VGA on most devices) never fails the whole device. */
static int d_region(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    uint32_t idx = check_index(L, 2);
    struct vfio_region_desc rd;
    int r = vfio_device_region_info(d->fd, idx, &rd);
    lv_pushregion(L, 1, &rd, r < 0 ? -r : 0);
    return 1;
}

static int d_irq_info(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    uint32_t idx = check_index(L, 2);
    struct vfio_irq_desc ii;
    int r = vfio_device_irq_info(d->fd, idx, &ii);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_DEVICE_GET_IRQ_INFO", "irq %u of %s", idx, d->name);
    lv_push_irq_info(L, ii.index, ii.count, ii.flags);
    return 1;
}

/* The kernel caps vectors far below this; it only bounds our allocation. -1 de-assigns. */
static const struct lv_irq_data_rules irq_rules = {
    .max_count = 65536,
    .min_fd = -1,
    .bad_number = "eventfd must be an eventfd object, an fd or -1",
    .bad_value = "eventfd must be an eventfd object, an fd or -1",
};

/* d:set_irqs(index, action, start, count [, data])
 * action: "mask" | "unmask" | "trigger". data: nil (DATA_NONE), a boolean or a list of
 * booleans (DATA_BOOL), an eventfd/fd/-1 or a list of them (DATA_EVENTFD; -1 de-assigns).
 * A list must hold exactly `count` entries. */
static int d_set_irqs(lua_State *L)
{
    luaL_checkudata(L, 1, LV_DEVICE);
    struct lv_irq_set s;
    lv_check_set_irqs(L, &irq_rules, &s);
    lv_device *d = lv_checkdevice(L, 1);   /* after the data's reads and allocation */
    int r = vfio_device_set_irqs(d->fd, s.index, s.action, s.type, s.start, s.count, s.data);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_DEVICE_SET_IRQS",
                            "irq %u of %s (%s start %u count %u)", s.index, d->name,
                            lua_tostring(L, 3), s.start, s.count);
    lua_pushboolean(L, 1);
    return 1;
}

static int d_reset(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    int r = vfio_device_reset(d->fd);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_DEVICE_RESET", d->name);
    lua_pushboolean(L, 1);
    return 1;
}

static int d_hot_reset_info(lua_State *L)
{
    lv_device *d = lv_checkdevice(L, 1);
    struct vfio_dependent *deps;
    uint32_t n, flags;
    int r = vfio_device_hot_reset_info(d->fd, &deps, &n, &flags);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", d->name);
    /* A device opened through its cdev gets devids (its iommufd's) instead of group ids:
     * 0 for a device owned through an owned group, -1 for one this iommufd does not own. */
    int by_devid = (flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID) != 0;
    lua_createtable(L, 0, 4);
    lv_setint(L, "flags", flags);
    if (by_devid) {
        lv_setbool(L, "devids", 1);
        lv_setbool(L, "owned", flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED);
    }
    lua_createtable(L, (int)n, 0);
    for (uint32_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 5);
        if (!by_devid)
            lv_setint(L, "group", deps[i].group_id);
        else if (deps[i].group_id == (uint32_t)VFIO_PCI_DEVID_NOT_OWNED)
            lv_setint(L, "devid", -1);
        else
            lv_setint(L, "devid", deps[i].group_id);
        lv_setint(L, "segment", deps[i].segment);
        lv_setint(L, "bus", deps[i].bus);
        lv_setint(L, "devfn", deps[i].devfn);
        char bdf[16];
        snprintf(bdf, sizeof bdf, "%04x:%02x:%02x.%u", deps[i].segment, deps[i].bus,
                 (unsigned)(deps[i].devfn >> 3), (unsigned)(deps[i].devfn & 7));
        lua_pushstring(L, bdf);
        lua_setfield(L, -2, "bdf");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "devices");
    free(deps);
    return 1;
}

/* d:hot_reset(groups) where groups lists group objects or group fds: every group the
 * hot-reset info names must be present, proving ownership of all affected devices. A
 * device opened through its cdev passes {} (its iommufd proves ownership). */
static int d_hot_reset(lua_State *L)
{
    luaL_checkudata(L, 1, LV_DEVICE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    if (n > 4096)
        luaL_argerror(L, 2, "too many groups");
    int32_t *fds = lua_newuserdatauv(L, sizeof(int32_t) * (size_t)(n ? n : 1), 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (lua_type(L, -1) == LUA_TNUMBER)
            fds[i] = (int32_t)lv_checkrange(L, -1, 0, 0x7fffffff);
        else
            fds[i] = lv_checkgroup(L, lua_gettop(L))->fd;
        lua_pop(L, 1);
    }
    lv_device *d = lv_checkdevice(L, 1);   /* after the list's allocation */
    int r = vfio_device_hot_reset(d->fd, fds, (uint32_t)n);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_DEVICE_PCI_HOT_RESET", d->name);
    lua_pushboolean(L, 1);
    return 1;
}

/* d:probe_feature(feature [, "get"|"set"|"getset"]) -> true | false, msg, errno.
 * false means the kernel or device lacks the feature (ENOTTY, EINVAL, EOPNOTSUPP);
 * other failures return nil, msg, errno. */
static int d_probe_feature(lua_State *L)
{
    luaL_checkudata(L, 1, LV_DEVICE);
    uint32_t feature = (uint32_t)lv_checkrange(L, 2, 0, VFIO_DEVICE_FEATURE_MASK);
    static const char *const ops[] = {"none", "get", "set", "getset", NULL};
    static const uint32_t bits[] = {0, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_SET,
                                    VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET};
    uint32_t op = bits[luaL_checkoption(L, 3, "none", ops)];   /* may convert: a GC step */
    lv_device *d = lv_checkdevice(L, 1);
    int r = vfio_device_feature(d->fd, feature | op | VFIO_DEVICE_FEATURE_PROBE, NULL, 0);
    if (r == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lv_syserrorf(L, -r, "VFIO_DEVICE_FEATURE", "probe %u on %s", feature, d->name);
    if (r == -ENOTTY || r == -EINVAL || r == -EOPNOTSUPP) {
        lua_pushboolean(L, 0);
        lua_replace(L, -4);
    }
    return 3;
}

static int d_fileno(lua_State *L)
{
    lua_pushinteger(L, lv_checkdevice(L, 1)->fd);
    return 1;
}

static int d_name(lua_State *L)
{
    lua_pushstring(L, ((lv_device *)luaL_checkudata(L, 1, LV_DEVICE))->name);
    return 1;
}

/* The group it was opened from (nil for an adopted fd or a cdev, whose user value is its
 * iommufd or ioas). */
static int d_group(lua_State *L)
{
    luaL_checkudata(L, 1, LV_DEVICE);
    lua_getiuservalue(L, 1, 1);
    if (!luaL_testudata(L, -1, LV_GROUP)) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    return 1;
}

static int d_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_device *)luaL_checkudata(L, 1, LV_DEVICE))->fd < 0);
    return 1;
}

static int d_close(lua_State *L)
{
    lv_device *d = luaL_checkudata(L, 1, LV_DEVICE);
    if (d->fd >= 0) {
        /* Mappings pin the device file: drop them so closing really releases it. */
        lv_device_unmap_regions(d);
        close(d->fd);
        d->fd = -1;
        /* Let the group (and through it the container) go once unused. */
        lua_pushnil(L);
        lua_setiuservalue(L, 1, 1);
    }
    return 0;
}

static int d_tostring(lua_State *L)
{
    lv_device *d = luaL_checkudata(L, 1, LV_DEVICE);
    if (d->fd < 0)
        lua_pushfstring(L, "vfio.device (%s, closed)", d->name);
    else
        lua_pushfstring(L, "vfio.device (%s, fd %d)", d->name, d->fd);
    return 1;
}

/*** @module vfio.core */

/***
Wrap a device fd obtained elsewhere (a privileged helper over a unix socket; a memfd for
regions described by hand): the device owns a duplicate of fd.
@function device_adopt
@tparam int fd the fd
@tparam string name names the device in messages
@treturn device the device, or `nil, message, errno`
*/

/***
A device on a file opened read-write: a VFIO device cdev, or any file whose regions are
described with `region` (host tests).
@function device_file
@tparam string path the file
@tparam[opt=path] string name names the device in messages
@treturn device the device, or `nil, message, errno`
*/

/***
Run VFIO_DEVICE_GET_REGION_INFO's parser (the capability chain) on a raw buffer.
@function parse_region_info
@tparam string bytes the ioctl's buffer
@treturn table as `device:region_info` returns it
*/

/***
A VFIO device fd (`vfio.device`), from `group:device`, `cdev`, `device_adopt` or `device_file`.
@type device
*/

/***
VFIO_DEVICE_GET_INFO.
@function device:info
@treturn table `{flags, num_regions, num_irqs, pci, reset, ...}`, or `nil, message, errno`
*/

/***
VFIO_DEVICE_GET_REGION_INFO of region i with its capabilities.
@function device:region_info
@tparam int i the region index
@treturn table `{index, size, offset, flags, read, write, mmap, sparse, type, subtype, msix_mappable...}`, or `nil, message, errno`
*/

/***
The region object of index i. A region whose info fails is still returned, with `error`
and `errno` set (the VGA region on most devices), and its accesses return that error.
@function device:region
@tparam int i the region index
@treturn region
*/

/***
VFIO_DEVICE_GET_IRQ_INFO of index i.
@function device:irq_info
@tparam int i the IRQ index
@treturn table `{count, eventfd, maskable, automasked, noresize, flags}`, or `nil, message, errno`
*/

/***
VFIO_DEVICE_SET_IRQS. data: nil (DATA_NONE), a boolean or a list of booleans (DATA_BOOL),
an eventfd, fd or -1 (de-assign), or a list of them (DATA_EVENTFD); a list holds exactly
`count` entries.
@function device:set_irqs
@tparam int index the IRQ index
@tparam string action `"mask"`, `"unmask"` or `"trigger"`
@tparam int start first vector
@tparam int count vectors
@param[opt] data see above
@treturn boolean true, or `nil, message, errno`
*/

/***
VFIO_DEVICE_RESET.
@function device:reset
@treturn boolean true, or `nil, message, errno`
*/

/***
VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: the devices a bus reset affects.
`devids`, `owned`, and `devid` per device), or `nil, message, errno`
@function device:hot_reset_info
@treturn table `{flags, devices = {{bdf, group, segment, bus, devfn}}}` (through iommufd
*/

/***
VFIO_DEVICE_PCI_HOT_RESET. Every group the hot reset info names must be in the list,
proving ownership; a device opened through its cdev passes `{}` (its iommufd proves it).
@function device:hot_reset
@tparam {group|int,...} groups group objects or group fds
@treturn boolean true, or `nil, message, errno`
*/

/***
Probe a VFIO_DEVICE_FEATURE.
EINVAL, EOPNOTSUPP); other failures `nil, message, errno`
@function device:probe_feature
@tparam int feature the feature number (`FEATURE`)
@tparam[opt] string op `"get"`, `"set"` or `"getset"`
@return true; or `false, message, errno` when the kernel or device lacks it (ENOTTY,
*/

/***
The device fd's number.
@function device:fileno
@treturn int
*/

/***
The device's name (a PCI address, an mdev's UUID, or the name given).
@function device:name
@treturn string
*/

/***
The group it was opened from (nil for an adopted fd or a cdev).
@function device:group
@treturn group|nil
*/

/***
Whether it is closed.
@function device:closed
@treturn boolean
*/

/***
Close the device (idempotent); its regions' mappings go with it.
@function device:close
*/

/***
VFIO_DEVICE_FEATURE_MIGRATION: the device's migration capabilities.
(Registered by l_migration.c.)
@function device:migration
@treturn table `{flags, stop_copy, p2p, pre_copy}`, or `nil, message, errno` (ENOTTY without a migration driver)
*/

/***
VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE (get).
`"pre_copy"`, `"pre_copy_p2p"` or `"error"` (an integer for a newer state), or `nil, message, errno`
(Registered by l_migration.c.)
@function device:mig_state
@treturn string `"running"`, `"stop"`, `"stop_copy"`, `"resuming"`, `"running_p2p"`,
*/

/***
VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE (set). `"error"` raises: only a reset leaves it.
the kernel refuses (the message names both states)
(Registered by l_migration.c.)
@function device:set_mig_state
@param state a name as `mig_state` returns, or a number of `MIG_STATE`
@return a `migfile` when the arc opens a data fd, else true; `nil, message, errno` when
*/

/***
VFIO_DEVICE_FEATURE_MIG_DATA_SIZE (Linux 6.2): what STOP_COPY would give.
(Registered by l_migration.c.)
@function device:mig_data_size
@treturn int bytes, or `nil, message, errno`
*/

/* A table of named constants, as field `name` of the table on top. */
struct constant {
    const char *k;
    int v;
};

static void set_constants(lua_State *L, const char *name, const struct constant *c)
{
    int n = 0;
    while (c[n].k)
        n++;
    lua_createtable(L, 0, n);
    for (; c->k; c++)
        lv_setint(L, c->k, c->v);
    lua_setfield(L, -2, name);
}

void lv_open_device(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"info", d_info},
        {"region_info", d_region_info},
        {"region", d_region},
        {"irq_info", d_irq_info},
        {"set_irqs", d_set_irqs},
        {"reset", d_reset},
        {"hot_reset_info", d_hot_reset_info},
        {"hot_reset", d_hot_reset},
        {"probe_feature", d_probe_feature},
        {"fileno", d_fileno},
        {"name", d_name},
        {"group", d_group},
        {"closed", d_closed},
        {"close", d_close},
        /* migration (l_migration.c) */
        {"migration", lv_device_migration},
        {"mig_state", lv_device_mig_state},
        {"set_mig_state", lv_device_set_mig_state},
        {"mig_data_size", lv_device_mig_data_size},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", d_close}, {"__close", d_close}, {"__tostring", d_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_DEVICE, methods, meta);
    lua_pushcfunction(L, l_device_adopt);
    lua_setfield(L, -2, "device_adopt");
    lua_pushcfunction(L, l_parse_region_info);
    lua_setfield(L, -2, "parse_region_info");
    lua_pushcfunction(L, l_device_file);
    lua_setfield(L, -2, "device_file");

    static const struct constant regions[] = {
        {"BAR0", VFIO_PCI_BAR0_REGION_INDEX}, {"BAR1", VFIO_PCI_BAR1_REGION_INDEX},
        {"BAR2", VFIO_PCI_BAR2_REGION_INDEX}, {"BAR3", VFIO_PCI_BAR3_REGION_INDEX},
        {"BAR4", VFIO_PCI_BAR4_REGION_INDEX}, {"BAR5", VFIO_PCI_BAR5_REGION_INDEX},
        {"ROM", VFIO_PCI_ROM_REGION_INDEX},   {"CONFIG", VFIO_PCI_CONFIG_REGION_INDEX},
        {"VGA", VFIO_PCI_VGA_REGION_INDEX},   {"NUM", VFIO_PCI_NUM_REGIONS},
        {NULL, 0}};
    static const struct constant irqs[] = {
        {"INTX", VFIO_PCI_INTX_IRQ_INDEX}, {"MSI", VFIO_PCI_MSI_IRQ_INDEX},
        {"MSIX", VFIO_PCI_MSIX_IRQ_INDEX}, {"ERR", VFIO_PCI_ERR_IRQ_INDEX},
        {"REQ", VFIO_PCI_REQ_IRQ_INDEX},   {"NUM", VFIO_PCI_NUM_IRQS},
        {NULL, 0}};
    static const struct constant features[] = {
        {"PCI_VF_TOKEN", VFIO_DEVICE_FEATURE_PCI_VF_TOKEN},
        {"MIGRATION", VFIO_DEVICE_FEATURE_MIGRATION},
        {"MIG_DEVICE_STATE", VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE},
        {"LOW_POWER_ENTRY", VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY},
        {"LOW_POWER_ENTRY_WITH_WAKEUP", VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP},
        {"LOW_POWER_EXIT", VFIO_DEVICE_FEATURE_LOW_POWER_EXIT},
        {"DMA_LOGGING_START", VFIO_DEVICE_FEATURE_DMA_LOGGING_START},
        {"DMA_LOGGING_STOP", VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP},
        {NULL, 0}};
    set_constants(L, "REGION", regions);
    set_constants(L, "IRQ", irqs);
    set_constants(L, "FEATURE", features);
}
