/* vfio.user_device: a vfio-user server's device through the client of csrc/user
 * (user_client.h), with the calls of vfio.device (info, region_info, irq_info, set_irqs,
 * reset) plus region reads and writes, DMA maps with fds, and what the connection knows
 * (the server's capabilities, why it ended). core.user_backend(device) is its trap-core
 * backend (trap/backend_user.c): the guest-facing path stays in C. The object owns the
 * client and its socket; a backend keeps it alive. No host address reaches Lua. */
#include "l_kvm.h"
#include "l_objects.h"
#include "l_trap.h"
#include "user/user_client.h"
#include "user/user_msg.h"

#include <errno.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LV_USER_DEVICE "vfio.user_device"

typedef struct {
    struct user_client c;     /* c.sock -1 once closed */
    char name[128];
} lv_user_dev;

static lv_user_dev *checkudev(lua_State *L, int i)
{
    lv_user_dev *d = luaL_checkudata(L, i, LV_USER_DEVICE);
    if (d->c.sock < 0)
        luaL_argerror(L, i, "vfio-user device is closed");
    return d;
}

/* nil, "<op> <name>: strerror[: why]", errno: the connection's own account when it died */
static int user_error(lua_State *L, lv_user_dev *d, int err, const char *op)
{
    if (d->c.dead || d->c.why[0])
        return lv_syserrorf(L, err, op, "%s (%s)", d->name, d->c.why);
    return lv_syserror(L, err, op, d->name);
}

/* A connected socket to the UNIX socket at path, or -errno. */
static int connect_path(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return -ENAMETOOLONG;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(s);
        return -e;
    }
    return s;
}

/* core.user_device(path_or_fd [, {timeout_ms = 5000, mmap = true, name =}]) -> device,
 * or nil, message, errno. A path is connected to; an fd (or an object with fileno()) is
 * duplicated. The handshake and every info query run now. mmap: true maps the sealed
 * memfds a server gives for regions, "devices" device fds too (a server trusted as much
 * as the VMM: see user_client.h), false nothing. */
static int l_user_device(lua_State *L)
{
    int timeout = USER_CLIENT_TIMEOUT_MS;
    enum user_map_policy map = USER_MAP_MEMFD;
    char name[128] = "";
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "timeout_ms") != LUA_TNIL)
            timeout = (int)lv_checkrange(L, -1, 1, 3600 * 1000);
        int t = lua_getfield(L, 2, "mmap");
        if (t == LUA_TSTRING && strcmp(lua_tostring(L, -1), "devices") == 0)
            map = USER_MAP_DEVICES;
        else if (t != LUA_TNIL && !lua_toboolean(L, -1))
            map = USER_MAP_NONE;
        if (lua_getfield(L, 2, "name") != LUA_TNIL)
            snprintf(name, sizeof name, "%s", luaL_checkstring(L, -1));
        lua_pop(L, 3);
    }
    int is_path = lua_type(L, 1) == LUA_TSTRING;
    if (is_path && !name[0])
        snprintf(name, sizeof name, "vfio-user:%s", lua_tostring(L, 1));
    lv_user_dev *d = lv_newobject(L, sizeof *d, LV_USER_DEVICE, 0);
    d->c.sock = -1;
    for (unsigned i = 0; i < USER_CLIENT_REGIONS; i++)
        d->c.regions[i].fd = -1;
    int sock;
    if (is_path) {
        sock = connect_path(lua_tostring(L, 1));
        if (sock < 0) {
            lua_pushnil(L);
            lua_pushfstring(L, "connect %s: %s", name, strerror(-sock));
            lua_pushinteger(L, -sock);
            return 3;
        }
    } else {
        sock = lv_dupfd(L, 1);   /* may run Lua: before anything is made of d */
        if (!name[0])
            snprintf(name, sizeof name, "vfio-user:fd %d", sock);
    }
    snprintf(d->name, sizeof d->name, "%s", name);
    int r = user_client_open(&d->c, sock, timeout, map);
    if (r < 0) {
        char why[sizeof d->c.why];
        snprintf(why, sizeof why, "%s", d->c.why);
        user_client_close(&d->c);
        lua_pushnil(L);
        lua_pushfstring(L, "open %s: %s%s%s", d->name, strerror(-r), why[0] ? ": " : "", why);
        lua_pushinteger(L, -r);
        return 3;
    }
    return 1;
}

static int u_info(lua_State *L)
{
    lv_user_dev *d = checkudev(L, 1);
    lv_push_device_info(L, d->c.dev_flags, d->c.num_regions, d->c.num_irqs);
    return 1;
}

static uint32_t check_index(lua_State *L, int arg)
{
    return (uint32_t)lv_checkrange(L, arg, 0, 0xffffffff);
}

/* d:region_info(i) -> {index, flags, size, offset, readable, writable, mappable, caps,
 * sparse = {{offset, size, mapped}}, type, subtype, mmap_errno} | nil, message, errno */
static int u_region_info(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    uint32_t idx = check_index(L, 2);
    lv_user_dev *d = checkudev(L, 1);
    if (idx >= d->c.num_regions || idx >= USER_CLIENT_REGIONS)
        return lv_syserrorf(L, EINVAL, "GET_REGION_INFO", "region %u of %s (the server "
                            "lists %u)", idx, d->name, d->c.num_regions);
    struct user_client_region rg = d->c.regions[idx];   /* a copy: the pushes are GC steps */
    if (rg.info_errno)
        return lv_syserrorf(L, rg.info_errno, "GET_REGION_INFO", "region %u of %s", idx,
                            d->name);
    lua_createtable(L, 0, 14);
    lv_region_base_fields(L, idx, rg.flags, rg.size, rg.offset);
    lv_setbool(L, "fd", rg.fd >= 0);
    if (rg.has_type) {
        lv_setint(L, "type", rg.cap_type);
        lv_setint(L, "subtype", rg.cap_subtype);
    }
    if (rg.has_sparse || rg.nareas) {
        lua_createtable(L, (int)rg.nareas, 0);
        for (uint32_t i = 0; i < rg.nareas; i++) {
            lua_createtable(L, 0, 3);
            lv_setint(L, "offset", (lua_Integer)rg.areas[i].offset);
            lv_setint(L, "size", (lua_Integer)rg.areas[i].size);
            lv_setbool(L, "mapped", rg.areas[i].map != NULL);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, rg.has_sparse ? "sparse" : "areas");
    }
    if (rg.mmap_errno)
        lv_setint(L, "mmap_errno", rg.mmap_errno);
    return 1;
}

static int u_irq_info(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    uint32_t idx = check_index(L, 2);
    lv_user_dev *d = checkudev(L, 1);
    if (idx >= d->c.num_irqs || idx >= USER_CLIENT_IRQS)
        return lv_syserrorf(L, EINVAL, "GET_IRQ_INFO", "irq %u of %s (the server lists %u)",
                            idx, d->name, d->c.num_irqs);
    if (d->c.irq_errno[idx])
        return lv_syserrorf(L, d->c.irq_errno[idx], "GET_IRQ_INFO", "irq %u of %s", idx,
                            d->name);
    struct user_irq_info q = d->c.irqs[idx];   /* a copy: the pushes are GC steps */
    lv_push_irq_info(L, idx, q.count, q.flags);
    return 1;
}

/* vfio-user sends eventfds as fds of the message: no -1 (the kernel's de-assign). */
static const struct lv_irq_data_rules irq_rules = {
    .max_count = 2048,
    .min_fd = 0,
    .bad_number = "vfio-user sends eventfds: an eventfd object or an fd (no -1: turn the "
                  "whole index off with count 0 instead)",
    .bad_value = "eventfd must be an eventfd object or an fd",
};

/* d:set_irqs(index, action, start, count [, data]): vfio.device's, over SET_IRQS. */
static int u_set_irqs(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    struct lv_irq_set s;
    lv_check_set_irqs(L, &irq_rules, &s);
    lv_user_dev *d = checkudev(L, 1);   /* after the data's reads and allocation */
    _Static_assert(sizeof(int) == sizeof(int32_t), "eventfds are int32_t in the data");
    int r = user_client_set_irqs(&d->c, s.index, s.action | s.type, s.start, s.count,
                                 s.type == VFIO_IRQ_SET_DATA_EVENTFD ? s.data : NULL,
                                 s.type == VFIO_IRQ_SET_DATA_BOOL ? s.data : NULL);
    if (r < 0)
        return user_error(L, d, -r, "SET_IRQS");
    lua_pushboolean(L, 1);
    return 1;
}

static int u_reset(lua_State *L)
{
    lv_user_dev *d = checkudev(L, 1);
    int r = user_client_reset(&d->c);
    if (r < 0)
        return user_error(L, d, -r, "DEVICE_RESET");
    lua_pushboolean(L, 1);
    return 1;
}

#define RW_MAX (16u << 20)

/* nil, "<op> region <idx> of <name> at <off>[: why the connection ended]", errno */
static int region_error(lua_State *L, lv_user_dev *d, int err, const char *op, uint32_t idx,
                        uint64_t off)
{
    return lv_syserrorf(L, err, op, "region %u of %s at %#llx%s%s", idx, d->name,
                        (unsigned long long)off, d->c.dead ? ": " : "",
                        d->c.dead ? d->c.why : "");
}

/* nil, "<op> [iova, +size) of <name>[: the connection's account]", errno */
static int dma_error(lua_State *L, lv_user_dev *d, int err, const char *op, uint64_t iova,
                     uint64_t size)
{
    return lv_syserrorf(L, err, op, "[%#llx, +%#llx) of %s%s%s", (unsigned long long)iova,
                        (unsigned long long)size, d->name, d->c.why[0] ? ": " : "",
                        d->c.why);
}

/* d:read(region, off, n) -> bytes | nil, message, errno */
static int u_read(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    uint32_t idx = (uint32_t)lv_checkrange(L, 2, 0, USER_CLIENT_REGIONS - 1);
    uint64_t off = (uint64_t)lv_checkrange(L, 3, 0, LUA_MAXINTEGER);
    uint32_t n = (uint32_t)lv_checkrange(L, 4, 1, RW_MAX);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, n);   /* an allocation: before the check */
    lv_user_dev *d = checkudev(L, 1);
    int r = user_client_region_read(&d->c, idx, off, p, n);
    if (r < 0)
        return region_error(L, d, -r, "REGION_READ", idx, off);
    luaL_pushresultsize(&b, n);
    return 1;
}

/* d:write(region, off, bytes) -> true | nil, message, errno */
static int u_write(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    uint32_t idx = (uint32_t)lv_checkrange(L, 2, 0, USER_CLIENT_REGIONS - 1);
    uint64_t off = (uint64_t)lv_checkrange(L, 3, 0, LUA_MAXINTEGER);
    size_t n;
    const char *s = luaL_checklstring(L, 4, &n);
    if (n == 0 || n > RW_MAX)
        luaL_argerror(L, 4, "1 byte to 16 MiB");
    lv_user_dev *d = checkudev(L, 1);
    int r = user_client_region_write(&d->c, idx, off, s, (uint32_t)n);
    if (r < 0)
        return region_error(L, d, -r, "REGION_WRITE", idx, off);
    lua_pushboolean(L, 1);
    return 1;
}

/* d:dma_map(fd, offset, iova, size [, {read = true, write = true}]) -> true | nil, msg,
 * errno: the server maps fd (a memfd: a shared dmabuf's or guest RAM's) at offset as
 * [iova, iova + size). fd nil: a map without fd (the server would have to use
 * DMA_READ/WRITE, which this client refuses). */
static int u_dma_map(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    int fd = lua_isnil(L, 2) ? -1 : lv_checkfd(L, 2);
    uint64_t offset = (uint64_t)lv_checkrange(L, 3, 0, LUA_MAXINTEGER);
    uint64_t iova = (uint64_t)luaL_checkinteger(L, 4);
    uint64_t size = (uint64_t)lv_checkrange(L, 5, 1, LUA_MAXINTEGER);
    uint32_t prot = USER_DMA_MAP_READ | USER_DMA_MAP_WRITE;
    if (!lua_isnoneornil(L, 6)) {
        luaL_checktype(L, 6, LUA_TTABLE);
        prot = 0;
        if (lua_getfield(L, 6, "read") == LUA_TNIL || lua_toboolean(L, -1))
            prot |= USER_DMA_MAP_READ;
        if (lua_getfield(L, 6, "write") == LUA_TNIL || lua_toboolean(L, -1))
            prot |= USER_DMA_MAP_WRITE;
        lua_pop(L, 2);
    }
    lv_user_dev *d = checkudev(L, 1);
    int r = user_client_dma_map(&d->c, fd, offset, iova, size, prot);
    if (r < 0)
        return dma_error(L, d, -r, "DMA_MAP", iova, size);
    lua_pushboolean(L, 1);
    return 1;
}

/* d:dma_unmap(iova, size) or d:dma_unmap("all") -> true | nil, msg, errno */
static int u_dma_unmap(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    int all = lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "all") == 0;
    uint64_t iova = all ? 0 : (uint64_t)luaL_checkinteger(L, 2);
    uint64_t size = all ? 0 : (uint64_t)lv_checkrange(L, 3, 1, LUA_MAXINTEGER);
    lv_user_dev *d = checkudev(L, 1);
    int r = user_client_dma_unmap(&d->c, iova, size, all);
    if (r < 0)
        return dma_error(L, d, -r, "DMA_UNMAP", iova, size);
    lua_pushboolean(L, 1);
    return 1;
}

/* d:server() -> the server's capabilities {max_msg_fds, max_data_xfer_size, pgsizes,
 * max_dma_maps, write_multiple} */
static int u_server(lua_State *L)
{
    lv_user_dev *d = checkudev(L, 1);
    struct user_caps s = d->c.server;
    lua_createtable(L, 0, 5);
    lv_setint(L, "max_msg_fds", (lua_Integer)s.max_msg_fds);
    lv_setint(L, "max_data_xfer_size", (lua_Integer)s.max_data_xfer_size);
    lv_setint(L, "pgsizes", (lua_Integer)s.pgsizes);
    lv_setint(L, "max_dma_maps", (lua_Integer)s.max_dma_maps);
    lv_setbool(L, "write_multiple", s.write_multiple);
    return 1;
}

/* d:status() -> {alive, errno, why, requests, region_reads, region_writes, error_replies,
 * timeout_ms}: what the connection has done, and why it ended. */
static int u_status(lua_State *L)
{
    lv_user_dev *d = luaL_checkudata(L, 1, LV_USER_DEVICE);
    struct user_client_stats st = d->c.stats;
    int dead = user_client_dead(&d->c);
    char why[sizeof d->c.why];
    snprintf(why, sizeof why, "%s", d->c.sock < 0 ? "closed" : d->c.why);
    int timeout = d->c.timeout_ms;
    lua_createtable(L, 0, 8);
    lv_setbool(L, "alive", dead == 0);
    if (dead)
        lv_setint(L, "errno", -dead);
    if (why[0]) {
        lua_pushstring(L, why);
        lua_setfield(L, -2, "why");
    }
    lv_setint(L, "requests", (lua_Integer)st.requests);
    lv_setint(L, "region_reads", (lua_Integer)st.region_reads);
    lv_setint(L, "region_writes", (lua_Integer)st.region_writes);
    lv_setint(L, "error_replies", (lua_Integer)st.error_replies);
    lv_setint(L, "timeout_ms", timeout);
    return 1;
}

/* d:set_timeout(ms): how long each request waits for its reply. */
static int u_set_timeout(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    int ms = (int)lv_checkrange(L, 2, 1, 3600 * 1000);
    checkudev(L, 1)->c.timeout_ms = ms;
    return 0;
}

static int u_fileno(lua_State *L)
{
    lua_pushinteger(L, checkudev(L, 1)->c.sock);
    return 1;
}

static int u_name(lua_State *L)
{
    lua_pushstring(L, ((lv_user_dev *)luaL_checkudata(L, 1, LV_USER_DEVICE))->name);
    return 1;
}

static int u_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_user_dev *)luaL_checkudata(L, 1, LV_USER_DEVICE))->c.sock < 0);
    return 1;
}

static int u_close(lua_State *L)
{
    lv_user_dev *d = luaL_checkudata(L, 1, LV_USER_DEVICE);
    if (d->c.sock >= 0)
        user_client_close(&d->c);
    return 0;
}

static int u_tostring(lua_State *L)
{
    lv_user_dev *d = luaL_checkudata(L, 1, LV_USER_DEVICE);
    if (d->c.sock < 0)
        lua_pushfstring(L, "vfio.user_device (%s, closed)", d->name);
    else if (d->c.dead)
        lua_pushfstring(L, "vfio.user_device (%s, connection lost)", d->name);
    else
        lua_pushfstring(L, "vfio.user_device (%s)", d->name);
    return 1;
}

/* core.user_backend(device [, {name =}]) -> backend: the device under a trap. */
static int l_user_backend(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_DEVICE);
    char name[sizeof ((struct lv_backend *)0)->name] = "";
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "name") != LUA_TNIL)
            snprintf(name, sizeof name, "%s", luaL_checkstring(L, -1));
        lua_pop(L, 1);
    }
    struct lv_backend_ud *b = lv_newobject(L, sizeof *b, LV_BACKEND_T, 1);
    lv_user_dev *d = checkudev(L, 1);   /* after the allocation, a GC step */
    snprintf(b->be.name, sizeof b->be.name, "%.*s", (int)sizeof b->be.name - 1,
             name[0] ? name : d->name);
    int rc = lv_backend_user_init(&b->be, &d->c);
    if (rc < 0)
        return lv_syserror(L, -rc, "create vfio-user backend", b->be.name);
    lv_set_parent(L, -1, 1, 1);
    return 1;
}

/*** @module vfio.core */

/***
Connect to a vfio-user server (a UNIX socket path, or a connected socket's fd) and run
the handshake and info queries QEMU's client runs. Requests wait at most `timeout_ms`
for their reply; a server that is gone, silent or sends what it should not ends the
connection, and every later call fails at once saying why.
@function user_device
@param path_or_fd the socket's path, or an fd (or an object with `fileno()`)
@tparam[opt] table opts `{timeout_ms = 5000, mmap = true | false | "devices", name =}`:
mmap maps the sealed memfds the server gives for regions, with "devices" its device fds
too (a mapping that faults if the server disables the device's memory under it)
@treturn user_device the device, or `nil, message, errno`
*/

/***
A trap-core backend over a vfio-user device (`vfio.backend` of kind "vfio-user"):
config and BAR accesses become REGION_READ/WRITE in C, or loads and stores in the areas
the server gave fds for. It keeps the device alive.
@function user_backend
@tparam user_device dev the device
@tparam[opt] table opts `{name =}`
@treturn backend
*/

/***
A device served over vfio-user (`vfio.user_device`), as `core.user_device` opens it.
@type user_device
*/

/***
The device info the server gave (DEVICE_GET_INFO).
@function user_device:info
@treturn table `{flags, num_regions, num_irqs, pci, reset, platform, caps}`
*/

/***
Region i as the server described it, with its sparse areas and whether each is mapped.
@function user_device:region_info
@tparam int i the region index
@treturn table `{index, flags, size, offset, readable, writable, mappable, fd, sparse, mmap_errno}`, or `nil, message, errno`
*/

/***
Interrupt index i as the server described it.
@function user_device:irq_info
@tparam int i the IRQ index
@treturn table `{index, count, flags, eventfd, maskable, automasked, noresize}`, or `nil, message, errno`
*/

/***
SET_IRQS, as `device:set_irqs` (eventfds go as fds, in chunks the server takes; -1 is
refused: turn an index off with count 0).
@function user_device:set_irqs
@tparam int index the IRQ index
@tparam string action `"mask"`, `"unmask"` or `"trigger"`
@tparam int start first vector
@tparam int count vectors
@param[opt] data nil, booleans, or eventfds
@treturn boolean true, or `nil, message, errno`
*/

/***
DEVICE_RESET.
@function user_device:reset
@treturn boolean true, or `nil, message, errno`
*/

/***
Read n bytes of a region (REGION_READ, or a load from a mapped area).
@function user_device:read
@tparam int region the region index
@tparam int off offset
@tparam int n bytes
@treturn string the bytes, or `nil, message, errno`
*/

/***
Write bytes to a region (REGION_WRITE, or a store to a mapped area).
@function user_device:write
@tparam int region the region index
@tparam int off offset
@tparam string bytes the data
@treturn boolean true, or `nil, message, errno`
*/

/***
DMA_MAP: the server maps `fd` at `offset` as [iova, iova + size).
@function user_device:dma_map
@param fd an fd or an object with `fileno()` (a shared dmabuf, a ramfd); nil for none
@tparam int offset in the fd
@tparam int iova the device address
@tparam int size bytes
@tparam[opt] table prot `{read = true, write = true}`
@treturn boolean true, or `nil, message, errno`
*/

/***
DMA_UNMAP of [iova, iova + size), or of everything with `"all"`.
@function user_device:dma_unmap
@param iova the address, or `"all"`
@tparam[opt] int size bytes
@treturn boolean true, or `nil, message, errno`
*/

/***
The server's capabilities from the version handshake.
@function user_device:server
@treturn table `{max_msg_fds, max_data_xfer_size, pgsizes, max_dma_maps, write_multiple}`
*/

/***
The connection's counters and state: `alive`, and once it ended `errno` and `why`.
@function user_device:status
@treturn table `{alive, errno, why, requests, region_reads, region_writes, error_replies, timeout_ms}`
*/

/***
How long each request waits for its reply.
@function user_device:set_timeout
@tparam int ms milliseconds
*/

/***
The socket's fd.
@function user_device:fileno
@treturn int
*/

/***
The device's name (`vfio-user:PATH`).
@function user_device:name
@treturn string
*/

/***
Whether it is closed.
@function user_device:closed
@treturn boolean
*/

/***
Close the connection (idempotent); mappings a VM still borrows stay until its backend goes.
@function user_device:close
*/

void lv_open_user_device(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"info", u_info},         {"region_info", u_region_info}, {"irq_info", u_irq_info},
        {"set_irqs", u_set_irqs}, {"reset", u_reset},             {"read", u_read},
        {"write", u_write},       {"dma_map", u_dma_map},         {"dma_unmap", u_dma_unmap},
        {"server", u_server},     {"status", u_status},           {"set_timeout", u_set_timeout},
        {"fileno", u_fileno},     {"name", u_name},               {"closed", u_closed},
        {"close", u_close},       {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", u_close}, {"__close", u_close}, {"__tostring", u_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_USER_DEVICE, methods, meta);
    static const luaL_Reg fns[] = {
        {"user_device", l_user_device}, {"user_backend", l_user_backend}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
