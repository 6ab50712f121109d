/* vfio.user_connection and vfio.fd: a thin binding over the vfio-user protocol layer
 * (csrc/user), so a server or a client can be written in Lua on top. A connection owns
 * its socket (a duplicate of the fd it was made from) and speaks whole messages:
 * recv() decodes one into a table, request()/reply()/error() encode and send one. The
 * decoding, every check of what the peer sent and the framing limits are the C layer's;
 * this file only turns tables into structs and back.
 *
 * Received fds become vfio.fd objects owned by the message table: the caller closes each
 * when done (or keeps it, e.g. an eventfd to signal), and one left unclosed closes when
 * it is collected. While recv() builds its table (Lua allocations, which may run any
 * __gc) the connection is busy: a close() then shuts the socket and leaves the buffer
 * for the call to free. */
#include "lv.h"
#include "l_kvm.h"
#include "user/user_msg.h"
#include "user/user_sock.h"
#include "user/user_version.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LV_USER_CONN "vfio.user_connection"
#define LV_FD "vfio.fd"

typedef struct {
    int fd;                   /* the socket, -1 once closed */
    int busy;                 /* recv() is building a table from rx */
    int close_pending;        /* closed while busy: free rx when the call ends */
    struct user_rx rx;        /* what this end accepts, and the message being read */
    struct user_limits peer;  /* what the peer accepts: held to by what is sent */
    uint16_t next_id;
} lv_user_conn;

typedef struct {
    int fd;
} lv_fd;

/* ------------------------------------------------------------------ vfio.fd */

static int fd_close(lua_State *L)
{
    lv_fd *f = luaL_checkudata(L, 1, LV_FD);
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    return 0;
}

static lv_fd *checkfdobj(lua_State *L, int idx)
{
    lv_fd *f = luaL_checkudata(L, idx, LV_FD);
    if (f->fd < 0)
        luaL_argerror(L, idx, "fd is closed");
    return f;
}

static int fd_fileno(lua_State *L)
{
    lua_pushinteger(L, checkfdobj(L, 1)->fd);
    return 1;
}

static int fd_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_fd *)luaL_checkudata(L, 1, LV_FD))->fd < 0);
    return 1;
}

/* What the fd is: "eventfd", "file" (a regular file: a memfd too), "socket", "pipe",
 * "device" (a character device) or "other". */
static const char *fd_kind_of(int fd)
{
    struct stat st;
    if (user_fd_check_eventfd(fd) == 0)
        return "eventfd";
    if (fstat(fd, &st) < 0)
        return "other";
    if (S_ISREG(st.st_mode))
        return "file";
    if (S_ISSOCK(st.st_mode))
        return "socket";
    if (S_ISFIFO(st.st_mode))
        return "pipe";
    if (S_ISCHR(st.st_mode))
        return "device";
    return "other";
}

static int fd_kind(lua_State *L)
{
    lua_pushstring(L, fd_kind_of(checkfdobj(L, 1)->fd));
    return 1;
}

static int fd_tostring(lua_State *L)
{
    lv_fd *f = luaL_checkudata(L, 1, LV_FD);
    if (f->fd < 0)
        lua_pushliteral(L, "vfio.fd (closed)");
    else
        lua_pushfstring(L, "vfio.fd (fd %d, %s)", f->fd, fd_kind_of(f->fd));
    return 1;
}

/* ------------------------------------------------------------------ connection */

static lv_user_conn *checkconn(lua_State *L, int idx)
{
    lv_user_conn *c = luaL_checkudata(L, idx, LV_USER_CONN);
    if (c->fd < 0)
        luaL_argerror(L, idx, "vfio-user connection is closed");
    return c;
}

static void conn_release(lv_user_conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->busy)
        c->close_pending = 1;
    else
        user_rx_free(&c->rx);
}

static int conn_close(lua_State *L)
{
    conn_release(luaL_checkudata(L, 1, LV_USER_CONN));
    return 0;
}

static int conn_gc(lua_State *L)
{
    lv_user_conn *c = luaL_checkudata(L, 1, LV_USER_CONN);
    c->busy = 0;   /* collected: no call is using it */
    conn_release(c);
    return 0;
}

static int conn_tostring(lua_State *L)
{
    lv_user_conn *c = luaL_checkudata(L, 1, LV_USER_CONN);
    if (c->fd < 0)
        lua_pushliteral(L, "vfio.user_connection (closed)");
    else
        lua_pushfstring(L, "vfio.user_connection (fd %d)", c->fd);
    return 1;
}

static int conn_fd(lua_State *L)
{
    lua_pushinteger(L, checkconn(L, 1)->fd);
    return 1;
}

static int conn_closed(lua_State *L)
{
    lua_pushboolean(L, ((lv_user_conn *)luaL_checkudata(L, 1, LV_USER_CONN))->fd < 0);
    return 1;
}

/* An optional integer field of the table at t in [lo, hi]; raises otherwise. */
static lua_Integer field_int(lua_State *L, int t, const char *name, lua_Integer dflt,
                             lua_Integer lo, lua_Integer hi)
{
    lua_getfield(L, t, name);
    lua_Integer v = dflt;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < lo || v > hi)
            luaL_error(L, "field '%s' must be an integer in [%I, %I]", name, lo, hi);
    }
    lua_pop(L, 1);
    return v;
}

/* A 64-bit field: any integer (one past 2^63 is negative in Lua). */
static uint64_t field_u64(lua_State *L, int t, const char *name, uint64_t dflt)
{
    return (uint64_t)field_int(L, t, name, (lua_Integer)dflt, LUA_MININTEGER, LUA_MAXINTEGER);
}

static uint32_t field_u32(lua_State *L, int t, const char *name, uint32_t dflt)
{
    return (uint32_t)field_int(L, t, name, dflt, 0, UINT32_MAX);
}

static bool field_bool(lua_State *L, int t, const char *name)
{
    lua_getfield(L, t, name);
    bool b = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return b;
}

/* Limits from an option table at t into lim and peer (absent fields keep theirs). */
static void read_limits(lua_State *L, int t, struct user_limits *lim, struct user_limits *peer)
{
    if (lua_isnoneornil(L, t))
        return;
    luaL_checktype(L, t, LUA_TTABLE);
    lim->max_data_xfer_size = (uint32_t)field_int(L, t, "max_data_xfer_size",
                                                  lim->max_data_xfer_size, 0, USER_XFER_MAX);
    lim->max_msg_fds = (uint32_t)field_int(L, t, "max_msg_fds", lim->max_msg_fds, 0, USER_FDS_MAX);
    peer->max_data_xfer_size = (uint32_t)field_int(L, t, "peer_max_data_xfer_size",
                                                   peer->max_data_xfer_size, 0, USER_XFER_MAX);
    peer->max_msg_fds = (uint32_t)field_int(L, t, "peer_max_msg_fds", peer->max_msg_fds, 0,
                                            USER_FDS_MAX);
    lua_getfield(L, t, "role");
    if (!lua_isnil(L, -1)) {
        static const char *const roles[] = {"any", "server", "client", NULL};
        lim->role = (enum user_role)luaL_checkoption(L, -1, NULL, roles);
    }
    lua_pop(L, 1);
}

static lv_user_conn *newconn(lua_State *L, int fd, const struct user_limits *lim,
                             const struct user_limits *peer)
{
    lv_user_conn *c = lv_newobject(L, sizeof *c, LV_USER_CONN, 0);
    c->fd = fd;
    user_rx_init(&c->rx, lim);
    c->peer = *peer;
    return c;
}

static void default_limits(struct user_limits *lim, struct user_limits *peer)
{
    user_limits_default(lim);
    user_limits_default(peer);
}

/* core.user_connection(fd, [opts]) -> connection */
static int l_user_connection(lua_State *L)
{
    struct user_limits lim, peer;
    default_limits(&lim, &peer);
    read_limits(L, 2, &lim, &peer);
    lv_user_conn *c = newconn(L, -1, &lim, &peer);   /* before the duplicate: no leak */
    c->fd = lv_dupfd(L, 1);
    return 1;
}

/* core.user_socketpair([opts]) -> connection, connection | nil, msg, errno */
static int l_user_socketpair(lua_State *L)
{
    struct user_limits lim, peer;
    default_limits(&lim, &peer);
    read_limits(L, 1, &lim, &peer);
    lv_user_conn *a = newconn(L, -1, &lim, &peer);
    lv_user_conn *b = newconn(L, -1, &lim, &peer);
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        return lv_syserror(L, errno, "socketpair", "vfio-user");
    a->fd = sp[0];
    b->fd = sp[1];
    return 2;
}

/* conn:set_limits(opts): what this end accepts from now on (max_data_xfer_size,
 * max_msg_fds, role) and what the peer accepts (peer_max_data_xfer_size,
 * peer_max_msg_fds), e.g. after the version handshake. */
static int conn_set_limits(lua_State *L)
{
    lv_user_conn *c = luaL_checkudata(L, 1, LV_USER_CONN);
    struct user_limits lim = c->rx.lim, peer = c->peer;
    read_limits(L, 2, &lim, &peer);
    c = checkconn(L, 1);
    if (c->rx.have || c->busy)
        return luaL_error(L, "set_limits: a message is being received");
    user_rx_set_limits(&c->rx, &lim);
    c->peer = peer;
    return 0;
}

/* ---------------------------------------------------------------- decoded -> table */

static void set_int(lua_State *L, const char *k, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, bool v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

static void set_data(lua_State *L, const uint8_t *p, size_t n)
{
    lua_pushlstring(L, (const char *)p, n);
    lua_setfield(L, -2, "data");
}

static void push_caps(lua_State *L, const struct user_caps *c)
{
    lua_createtable(L, 0, 8);
    if (c->present & USER_CAP_MAX_MSG_FDS)
        set_int(L, "max_msg_fds", c->max_msg_fds);
    if (c->present & USER_CAP_MAX_XFER)
        set_int(L, "max_data_xfer_size", c->max_data_xfer_size);
    if (c->present & USER_CAP_MAX_DMA_MAPS)
        set_int(L, "max_dma_maps", c->max_dma_maps);
    if (c->present & USER_CAP_PGSIZES)
        set_int(L, "pgsizes", c->pgsizes);
    if (c->present & USER_CAP_WRITE_MULTIPLE)
        set_bool(L, "write_multiple", c->write_multiple);
    if (c->present & USER_CAP_MIGRATION) {
        lua_createtable(L, 0, 2);
        set_int(L, "pgsize", c->mig_pgsize);
        set_int(L, "max_bitmap_size", c->mig_max_bitmap_size);
        lua_setfield(L, -2, "migration");
    }
    if (c->present & USER_CAP_TWIN_SOCKET) {
        lua_createtable(L, 0, 2);
        set_bool(L, "supported", c->twin_supported);
        if (c->twin_fd_index >= 0)
            set_int(L, "fd_index", (uint64_t)c->twin_fd_index);
        lua_setfield(L, -2, "twin_socket");
    }
}

static void push_fields(lua_State *L, const struct user_msg *m)
{
    const uint8_t cmd = (uint8_t)m->hdr.cmd;
    switch (cmd) {
    case USER_VERSION:
        set_int(L, "major", m->u.version.major);
        set_int(L, "minor", m->u.version.minor);
        if (m->u.version.json) {
            lua_pushlstring(L, m->u.version.json, m->u.version.json_len);
            lua_setfield(L, -2, "json");
        }
        push_caps(L, &m->u.version.caps);
        lua_setfield(L, -2, "caps");
        break;
    case USER_DMA_MAP: {
        const struct user_dma_map *d = &m->u.dma_map;
        set_int(L, "argsz", d->argsz), set_int(L, "flags", d->flags);
        set_int(L, "offset", d->offset), set_int(L, "address", d->addr);
        set_int(L, "size", d->size);
        set_bool(L, "read", d->flags & USER_DMA_MAP_READ);
        set_bool(L, "write", d->flags & USER_DMA_MAP_WRITE);
        break;
    }
    case USER_DMA_UNMAP: {
        const struct user_dma_unmap *d = &m->u.dma_unmap;
        set_int(L, "argsz", d->argsz), set_int(L, "flags", d->flags);
        set_int(L, "address", d->addr), set_int(L, "size", d->size);
        set_bool(L, "all", d->flags & USER_DMA_UNMAP_ALL);
        break;
    }
    case USER_DEVICE_GET_INFO: {
        const struct user_device_info *d = &m->u.device_info;
        set_int(L, "argsz", d->argsz), set_int(L, "flags", d->flags);
        set_int(L, "num_regions", d->num_regions), set_int(L, "num_irqs", d->num_irqs);
        break;
    }
    case USER_DEVICE_GET_REGION_INFO: {
        const struct user_region_info *r = &m->u.region_info;
        set_int(L, "argsz", r->argsz), set_int(L, "flags", r->flags);
        set_int(L, "index", r->index), set_int(L, "cap_offset", r->cap_offset);
        set_int(L, "size", r->size), set_int(L, "offset", r->offset);
        if (user_is_reply(&m->hdr)) {
            set_bool(L, "complete", r->complete);
            if (r->has_sparse) {
                lua_createtable(L, (int)r->nsparse, 0);
                for (uint32_t i = 0; i < r->nsparse; i++) {
                    struct user_sparse_area a;
                    user_sparse_get(r, i, &a);
                    lua_createtable(L, 0, 2);
                    set_int(L, "offset", a.offset), set_int(L, "size", a.size);
                    lua_rawseti(L, -2, (lua_Integer)i + 1);
                }
                lua_setfield(L, -2, "sparse");
            }
            if (r->has_type) {
                lua_createtable(L, 0, 2);
                set_int(L, "type", r->cap_type), set_int(L, "subtype", r->cap_subtype);
                lua_setfield(L, -2, "cap_type");
            }
        }
        break;
    }
    case USER_DEVICE_GET_REGION_IO_FDS: {
        const struct user_io_fds *io = &m->u.io_fds;
        set_int(L, "argsz", io->argsz), set_int(L, "flags", io->flags);
        set_int(L, "index", io->index), set_int(L, "count", io->count);
        if (user_is_reply(&m->hdr)) {
            set_bool(L, "complete", io->complete);
            lua_createtable(L, io->complete ? (int)io->count : 0, 0);
            for (uint32_t i = 0; io->complete && i < io->count; i++) {
                struct user_io_fd_sub s;
                user_io_fd_sub_get(io, i, &s);
                lua_createtable(L, 0, 6);
                set_int(L, "offset", s.offset), set_int(L, "size", s.size);
                set_int(L, "fd_index", s.fd_index), set_int(L, "type", s.type);
                set_int(L, "flags", s.flags), set_int(L, "data", s.data);
                lua_rawseti(L, -2, (lua_Integer)i + 1);
            }
            lua_setfield(L, -2, "subregions");
        }
        break;
    }
    case USER_DEVICE_GET_IRQ_INFO: {
        const struct user_irq_info *d = &m->u.irq_info;
        set_int(L, "argsz", d->argsz), set_int(L, "flags", d->flags);
        set_int(L, "index", d->index), set_int(L, "count", d->count);
        break;
    }
    case USER_DEVICE_SET_IRQS: {
        const struct user_irq_set *s = &m->u.irq_set;
        set_int(L, "argsz", s->argsz), set_int(L, "flags", s->flags);
        set_int(L, "index", s->index), set_int(L, "start", s->start);
        set_int(L, "count", s->count);
        if (s->bools) {
            lua_createtable(L, (int)s->count, 0);
            for (uint32_t i = 0; i < s->count; i++) {
                lua_pushboolean(L, s->bools[i]);
                lua_rawseti(L, -2, (lua_Integer)i + 1);
            }
            lua_setfield(L, -2, "bools");
        }
        break;
    }
    case USER_REGION_READ:
    case USER_REGION_WRITE: {
        const struct user_region_rw *rw = &m->u.region_rw;
        set_int(L, "offset", rw->offset), set_int(L, "region", rw->region);
        set_int(L, "count", rw->count);
        if (rw->data)
            set_data(L, rw->data, rw->count);
        break;
    }
    case USER_DMA_READ:
    case USER_DMA_WRITE: {
        const struct user_dma_rw *rw = &m->u.dma_rw;
        set_int(L, "address", rw->addr), set_int(L, "count", rw->count);
        if (rw->data)
            set_data(L, rw->data, (size_t)rw->count);
        break;
    }
    case USER_REGION_WRITE_MULTI: {
        const struct user_write_multi *wm = &m->u.write_multi;
        set_int(L, "count", wm->wr_cnt);
        if (!user_is_reply(&m->hdr)) {
            lua_createtable(L, (int)wm->wr_cnt, 0);
            for (uint64_t i = 0; i < wm->wr_cnt; i++) {
                struct user_write_one w;
                user_write_one_get(wm, i, &w);
                lua_createtable(L, 0, 4);
                set_int(L, "offset", w.offset), set_int(L, "region", w.region);
                set_int(L, "count", w.count);
                set_data(L, w.data, w.count);
                lua_rawseti(L, -2, (lua_Integer)i + 1);
            }
            lua_setfield(L, -2, "writes");
        }
        break;
    }
    }
}

/* {id=, command=, reply=} of a header: what conn:error() needs to answer it. */
static void push_hdr(lua_State *L, const struct user_hdr *h)
{
    lua_createtable(L, 0, 8);
    set_int(L, "id", h->id);
    const char *name = user_cmd_name(h->cmd);
    if (name)
        lua_pushstring(L, name);
    else
        lua_pushinteger(L, h->cmd);
    lua_setfield(L, -2, "command");
    set_int(L, "cmd", h->cmd);
    set_bool(L, "reply", user_is_reply(h));
    set_bool(L, "no_reply", h->flags & USER_F_NO_REPLY);
    if (user_is_reply(h) && (h->flags & USER_F_ERROR))
        set_int(L, "error", h->error);
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* conn:recv([timeout_ms]) -> message | nil, msg, errno [, header] */
static int conn_recv(lua_State *L)
{
    lv_user_conn *c = luaL_checkudata(L, 1, LV_USER_CONN);
    int timeout = lv_opt_timeout_ms(L, 2, -1);
    c = checkconn(L, 1);
    if (c->busy) {   /* a previous call ended by an error while building its table */
        c->busy = 0;
        user_rx_next(&c->rx);
    }
    int64_t deadline = timeout > 0 ? now_ms() + timeout : 0;
    int r;
    for (;;) {
        r = user_recv(&c->rx, c->fd);
        if (r != -EAGAIN)
            break;
        int left = timeout < 0 ? -1 : timeout == 0 ? 0 : (int)(deadline - now_ms());
        if (timeout >= 0 && left <= 0)
            return lv_syserrorf(L, timeout == 0 ? EAGAIN : ETIMEDOUT, "recv",
                                "vfio-user connection fd %d", c->fd);
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, left) < 0 && errno != EINTR)
            return lv_syserrorf(L, errno, "poll", "vfio-user connection fd %d", c->fd);
    }
    if (r == 0)
        return lv_syserrorf(L, EPIPE, "recv", "vfio-user connection fd %d (closed by the peer)",
                            c->fd);
    if (r < 0) {
        int n = lv_syserrorf(L, -r, "recv", "vfio-user connection fd %d", c->fd);
        if (r == -EMSGSIZE) {   /* the header is known: the caller may answer it */
            push_hdr(L, &c->rx.hdr);
            n++;
        }
        return n;
    }
    struct user_msg m;
    int d = user_decode(&c->rx.lim, c->rx.buf, c->rx.hdr.size, c->rx.fds, c->rx.nfds, &m);
    if (d < 0) {
        struct user_hdr h = m.hdr;
        user_rx_next(&c->rx);   /* closes its fds */
        int n = lv_syserrorf(L, -d, "decode", "vfio-user %s %s id %u",
                             user_cmd_name(h.cmd) ? user_cmd_name(h.cmd) : "message",
                             user_is_reply(&h) ? "reply" : "request", h.id);
        push_hdr(L, &h);
        return n + 1;
    }
    /* Building the table allocates, which may run any __gc: rx stays while busy. */
    c->busy = 1;
    push_hdr(L, &m.hdr);
    if (m.has_payload)
        push_fields(L, &m);
    lua_createtable(L, (int)c->rx.nfds, 0);
    for (unsigned i = 0; i < c->rx.nfds; i++) {
        lv_fd *f = lv_newobject(L, sizeof *f, LV_FD, 0);
        f->fd = -1;
        f->fd = c->rx.fds[i];
        c->rx.fds[i] = -1;
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "fds");
    c->busy = 0;
    user_rx_next(&c->rx);
    if (c->close_pending) {
        c->close_pending = 0;
        user_rx_free(&c->rx);
    }
    return 1;
}

/* ---------------------------------------------------------------- table -> message */

/* A list of fds (integers or objects with fileno()) at idx: how many, at most max. */
static unsigned read_fds(lua_State *L, int idx, int *fds, unsigned max)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = luaL_len(L, idx);
    if (n < 0 || n > (lua_Integer)max)
        luaL_argerror(L, idx, lua_pushfstring(L, "at most %d fds", (int)max));
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        fds[i - 1] = lv_checkfd(L, lua_gettop(L));
        lua_pop(L, 1);
    }
    return (unsigned)n;
}

/* A string field (left on the stack so its bytes stay), NULL when absent. */
static const uint8_t *field_data(lua_State *L, int t, const char *name, size_t *len)
{
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        *len = 0;
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "field '%s' must be a string", name);
    return (const uint8_t *)lua_tolstring(L, -1, len);
}

static int enc_version(lua_State *L, int t, struct user_out *o, uint16_t id, uint32_t fl)
{
    struct user_caps caps;
    user_caps_default(&caps);
    char json[1024];
    const char *js = NULL;
    lua_getfield(L, t, "caps");
    if (!lua_isnil(L, -1)) {
        int ct = lua_gettop(L);
        luaL_checktype(L, ct, LUA_TTABLE);
        static const struct {
            const char *name;
            unsigned bit;
            size_t off;
        } nums[] = {
            {"max_msg_fds", USER_CAP_MAX_MSG_FDS, offsetof(struct user_caps, max_msg_fds)},
            {"max_data_xfer_size", USER_CAP_MAX_XFER, offsetof(struct user_caps, max_data_xfer_size)},
            {"max_dma_maps", USER_CAP_MAX_DMA_MAPS, offsetof(struct user_caps, max_dma_maps)},
            {"pgsizes", USER_CAP_PGSIZES, offsetof(struct user_caps, pgsizes)},
        };
        for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
            lua_getfield(L, ct, nums[i].name);
            bool present = !lua_isnil(L, -1);
            lua_pop(L, 1);
            if (present) {
                caps.present |= nums[i].bit;
                *(uint64_t *)((char *)&caps + nums[i].off) =
                    (uint64_t)field_int(L, ct, nums[i].name, 0, 0, LUA_MAXINTEGER);
            }
        }
        lua_getfield(L, ct, "write_multiple");
        if (!lua_isnil(L, -1)) {
            caps.present |= USER_CAP_WRITE_MULTIPLE;
            caps.write_multiple = lua_toboolean(L, -1);
        }
        lua_pop(L, 1);
        lua_getfield(L, ct, "migration");
        if (!lua_isnil(L, -1)) {
            int mt = lua_gettop(L);
            luaL_checktype(L, mt, LUA_TTABLE);
            caps.present |= USER_CAP_MIGRATION;
            caps.mig_pgsize = (uint64_t)field_int(L, mt, "pgsize", 4096, 0, LUA_MAXINTEGER);
            caps.mig_max_bitmap_size =
                (uint64_t)field_int(L, mt, "max_bitmap_size", 256 << 20, 0, LUA_MAXINTEGER);
        }
        lua_pop(L, 1);
        lua_getfield(L, ct, "twin_socket");
        if (!lua_isnil(L, -1)) {
            int tt = lua_gettop(L);
            luaL_checktype(L, tt, LUA_TTABLE);
            caps.present |= USER_CAP_TWIN_SOCKET;
            caps.twin_supported = field_bool(L, tt, "supported");
            caps.twin_fd_index = field_int(L, tt, "fd_index", -1, -1, USER_FDS_MAX);
        }
        lua_pop(L, 1);
        if (user_caps_format(json, sizeof json, &caps) < 0)
            return luaL_error(L, "version capabilities too long");
        js = json;
    }
    lua_pop(L, 1);
    return user_enc_version(o, id, fl, (uint16_t)field_int(L, t, "major", 0, 0, UINT16_MAX),
                            (uint16_t)field_int(L, t, "minor", 0, 0, UINT16_MAX), js);
}

/* Encode the message `cmd` from the fields table at t (nil: no fields). For a reply,
 * req holds the request's header and req_argsz its argsz (what a region info or io fds
 * reply may fill). */
static int encode(lua_State *L, int t, struct user_out *o, unsigned cmd, uint16_t id,
                  uint32_t fl, const struct user_hdr *req, uint32_t req_argsz)
{
    bool reply = (fl & USER_F_TYPE_MASK) == USER_F_REPLY;
    int top = lua_gettop(L);
    if (lua_isnoneornil(L, t)) {
        lua_newtable(L);
        t = lua_gettop(L);
    } else {
        luaL_checktype(L, t, LUA_TTABLE);
    }
    size_t len;
    const uint8_t *data;
    int r;
    switch (cmd) {
    case USER_VERSION:
        r = enc_version(L, t, o, id, fl);
        break;
    case USER_DMA_MAP: {
        if (reply) {
            r = user_enc_empty(o, id, cmd, fl);
            break;
        }
        struct user_dma_map d = {.offset = field_u64(L, t, "offset", 0),
                                 .addr = field_u64(L, t, "address", 0),
                                 .size = field_u64(L, t, "size", 0)};
        d.flags = field_u32(L, t, "flags", (field_bool(L, t, "read") ? USER_DMA_MAP_READ : 0) |
                                               (field_bool(L, t, "write") ? USER_DMA_MAP_WRITE : 0));
        r = user_enc_dma_map(o, id, fl, &d);
        break;
    }
    case USER_DMA_UNMAP: {
        struct user_dma_unmap d = {.argsz = field_u32(L, t, "argsz", USER_DMA_UNMAP_SIZE),
                                   .addr = field_u64(L, t, "address", 0),
                                   .size = field_u64(L, t, "size", 0)};
        d.flags = field_u32(L, t, "flags", field_bool(L, t, "all") ? USER_DMA_UNMAP_ALL : 0);
        r = user_enc_dma_unmap(o, id, fl, &d);
        break;
    }
    case USER_DEVICE_GET_INFO: {
        struct user_device_info d = {.argsz = field_u32(L, t, "argsz", USER_DEVICE_INFO_SIZE),
                                     .flags = field_u32(L, t, "flags", 0),
                                     .num_regions = field_u32(L, t, "num_regions", 0),
                                     .num_irqs = field_u32(L, t, "num_irqs", 0)};
        r = user_enc_device_info(o, id, fl, &d);
        break;
    }
    case USER_DEVICE_GET_REGION_INFO: {
        if (!reply) {
            r = user_enc_region_info_req(o, id, field_u32(L, t, "argsz", 4096),
                                         field_u32(L, t, "index", 0));
            break;
        }
        struct user_region_info ri = {.flags = field_u32(L, t, "flags", 0),
                                      .index = field_u32(L, t, "index", 0),
                                      .size = field_u64(L, t, "size", 0),
                                      .offset = field_u64(L, t, "offset", 0)};
        lua_getfield(L, t, "cap_type");
        if (!lua_isnil(L, -1)) {
            int ct = lua_gettop(L);
            luaL_checktype(L, ct, LUA_TTABLE);
            ri.has_type = true;
            ri.cap_type = field_u32(L, ct, "type", 0);
            ri.cap_subtype = field_u32(L, ct, "subtype", 0);
        }
        lua_pop(L, 1);
        struct user_sparse_area areas[256];
        uint32_t n = 0;
        lua_getfield(L, t, "sparse");
        if (!lua_isnil(L, -1)) {
            int st = lua_gettop(L);
            luaL_checktype(L, st, LUA_TTABLE);
            ri.has_sparse = true;
            lua_Integer k = luaL_len(L, st);
            if (k < 0 || k > 256)
                return luaL_error(L, "at most 256 sparse areas");
            for (lua_Integer i = 1; i <= k; i++) {
                lua_geti(L, st, i);
                luaL_checktype(L, -1, LUA_TTABLE);
                areas[n].offset = field_u64(L, lua_gettop(L), "offset", 0);
                areas[n].size = field_u64(L, lua_gettop(L), "size", 0);
                n++;
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
        r = user_enc_region_info_reply(o, req, req_argsz, &ri, areas, n);
        break;
    }
    case USER_DEVICE_GET_REGION_IO_FDS: {
        if (!reply) {
            r = user_enc_io_fds_req(o, id, field_u32(L, t, "argsz", 4096),
                                    field_u32(L, t, "index", 0));
            break;
        }
        struct user_io_fd_sub subs[64];
        uint32_t n = 0;
        lua_getfield(L, t, "subregions");
        if (!lua_isnil(L, -1)) {
            int st = lua_gettop(L);
            luaL_checktype(L, st, LUA_TTABLE);
            lua_Integer k = luaL_len(L, st);
            if (k < 0 || k > 64)
                return luaL_error(L, "at most 64 sub-regions");
            for (lua_Integer i = 1; i <= k; i++) {
                lua_geti(L, st, i);
                int e = lua_gettop(L);
                luaL_checktype(L, e, LUA_TTABLE);
                subs[n] = (struct user_io_fd_sub){
                    .offset = field_u64(L, e, "offset", 0), .size = field_u64(L, e, "size", 0),
                    .fd_index = field_u32(L, e, "fd_index", 0), .type = field_u32(L, e, "type", 0),
                    .flags = field_u32(L, e, "flags", 0), .data = field_u64(L, e, "data", 0)};
                n++;
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
        r = user_enc_io_fds_reply(o, req, req_argsz, field_u32(L, t, "index", 0), subs, n);
        break;
    }
    case USER_DEVICE_GET_IRQ_INFO: {
        struct user_irq_info d = {.argsz = field_u32(L, t, "argsz", USER_IRQ_INFO_SIZE),
                                  .flags = field_u32(L, t, "flags", 0),
                                  .index = field_u32(L, t, "index", 0),
                                  .count = field_u32(L, t, "count", 0)};
        r = user_enc_irq_info(o, id, fl, &d);
        break;
    }
    case USER_DEVICE_SET_IRQS: {
        if (reply) {
            r = user_enc_empty(o, id, cmd, fl);
            break;
        }
        struct user_irq_set s = {.flags = field_u32(L, t, "flags", 0),
                                 .index = field_u32(L, t, "index", 0),
                                 .start = field_u32(L, t, "start", 0),
                                 .count = field_u32(L, t, "count", 0)};
        uint8_t bools[4096];
        lua_getfield(L, t, "bools");
        if (!lua_isnil(L, -1)) {
            int bt = lua_gettop(L);
            luaL_checktype(L, bt, LUA_TTABLE);
            lua_Integer k = luaL_len(L, bt);
            if (k < 0 || k > (lua_Integer)sizeof bools)
                return luaL_error(L, "at most %d bools", (int)sizeof bools);
            for (lua_Integer i = 1; i <= k; i++) {
                lua_geti(L, bt, i);
                bools[i - 1] = (uint8_t)lua_toboolean(L, -1);
                lua_pop(L, 1);
            }
            s.bools = bools;
            if ((uint64_t)k != s.count)
                return luaL_error(L, "set_irqs: %d bools for a count of %d", (int)k, (int)s.count);
        }
        lua_pop(L, 1);
        r = user_enc_irq_set(o, id, fl, &s);
        break;
    }
    case USER_REGION_READ:
    case USER_REGION_WRITE:
        data = field_data(L, t, "data", &len);
        if (data && len > UINT32_MAX)
            return luaL_error(L, "data too long");
        r = user_enc_region_rw(o, id, (uint16_t)cmd, fl, field_u64(L, t, "offset", 0),
                               field_u32(L, t, "region", 0),
                               data ? (uint32_t)len : field_u32(L, t, "count", 0), data);
        break;
    case USER_DMA_READ:
    case USER_DMA_WRITE:
        data = field_data(L, t, "data", &len);
        r = user_enc_dma_rw(o, id, (uint16_t)cmd, fl, field_u64(L, t, "address", 0),
                            data ? (uint64_t)len : field_u64(L, t, "count", 0), data);
        break;
    case USER_DEVICE_RESET:
        r = user_enc_empty(o, id, cmd, fl);
        break;
    case USER_REGION_WRITE_MULTI: {
        struct user_write_one w[USER_WRITE_MULTI_MAX];
        uint64_t n = 0;
        if (!reply) {
            lua_getfield(L, t, "writes");
            int wt = lua_gettop(L);
            luaL_checktype(L, wt, LUA_TTABLE);
            lua_Integer k = luaL_len(L, wt);
            if (k < 0 || k > USER_WRITE_MULTI_MAX)
                return luaL_error(L, "at most %d writes", USER_WRITE_MULTI_MAX);
            for (lua_Integer i = 1; i <= k; i++) {
                lua_geti(L, wt, i);
                int e = lua_gettop(L);
                luaL_checktype(L, e, LUA_TTABLE);
                memset(&w[n], 0, sizeof w[n]);
                w[n].offset = field_u64(L, e, "offset", 0);
                w[n].region = field_u32(L, e, "region", 0);
                data = field_data(L, e, "data", &len);
                if (!data || len == 0 || len > 8)
                    return luaL_error(L, "a write's data must be 1 to 8 bytes");
                memcpy(w[n].data, data, len);
                w[n].count = (uint32_t)len;
                n++;
                lua_settop(L, e - 1);
            }
        } else {
            n = field_u64(L, t, "count", 0);
        }
        r = user_enc_write_multi(o, id, fl, reply ? NULL : w, n);
        break;
    }
    default:
        return luaL_error(L, "unknown vfio-user command %d", (int)cmd);
    }
    lua_settop(L, top);
    return r;
}

static unsigned check_command(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, idx);
        if (n <= 0 || n >= USER_CMD_LIMIT || !user_cmd_name((unsigned)n))
            luaL_argerror(L, idx, "unknown vfio-user command");
        return (unsigned)n;
    }
    const char *name = luaL_checkstring(L, idx);
    unsigned cmd = user_cmd_by_name(name);
    if (!cmd)
        luaL_argerror(L, idx, lua_pushfstring(L, "unknown vfio-user command '%s'", name));
    return cmd;
}

/* Send what o holds with fds, checking the peer's limits: true | nil, msg, errno. */
static int send_out(lua_State *L, lv_user_conn *c, struct user_out *o, int r, const int *fds,
                    unsigned nfds, const char *what)
{
    if (r == 0 && nfds > c->peer.max_msg_fds)
        r = -E2BIG;   /* more fds than the peer said it takes */
    if (r == 0 && o->len > user_max_msg_size(&c->peer))
        r = -EMSGSIZE;
    if (r == 0)
        r = user_send(c->fd, o->buf, o->len, fds, nfds);
    int fd = c->fd;
    user_out_free(o);
    if (r < 0)
        return lv_syserrorf(L, -r, what, "vfio-user connection fd %d", fd);
    return 0;
}

/* conn:request(command, [fields], [fds]) -> id | nil, msg, errno */
static int conn_request(lua_State *L)
{
    lv_user_conn *c = luaL_checkudata(L, 1, LV_USER_CONN);
    unsigned cmd = check_command(L, 2);
    int fds[USER_FDS_MAX];
    unsigned nfds = read_fds(L, 4, fds, USER_FDS_MAX);
    uint32_t fl = USER_F_REQUEST;
    if (lua_istable(L, 3) && field_bool(L, 3, "no_reply"))
        fl |= USER_F_NO_REPLY;
    struct user_out o;
    user_out_init(&o);
    uint16_t id = c->next_id;
    /* encode() reads every field before it allocates o's buffer: a raise leaks nothing */
    int r = encode(L, 3, &o, cmd, id, fl, NULL, 0);
    c = checkconn(L, 1);
    if (send_out(L, c, &o, r, fds, nfds, "request"))
        return 3;
    c->next_id++;
    lua_pushinteger(L, id);
    return 1;
}

/* The request a reply answers: its header from the message table at idx. */
static void read_request(lua_State *L, int idx, struct user_hdr *h)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    memset(h, 0, sizeof *h);
    h->id = (uint16_t)field_int(L, idx, "id", -1, 0, UINT16_MAX);
    /* a number may name a command this end does not know: its error reply names it */
    h->cmd = (uint16_t)field_int(L, idx, "cmd", 0, 0, UINT16_MAX);
    lua_getfield(L, idx, "command");
    if (lua_type(L, -1) == LUA_TNUMBER)
        h->cmd = (uint16_t)field_int(L, idx, "command", 0, 0, UINT16_MAX);
    else if (!lua_isnil(L, -1) || !h->cmd)
        h->cmd = (uint16_t)check_command(L, lua_gettop(L));
    lua_pop(L, 1);
}

/* conn:reply(request, [fields], [fds]) -> true | nil, msg, errno */
static int conn_reply(lua_State *L)
{
    lv_user_conn *c = luaL_checkudata(L, 1, LV_USER_CONN);
    struct user_hdr req;
    read_request(L, 2, &req);
    int fds[USER_FDS_MAX];
    unsigned nfds = read_fds(L, 4, fds, USER_FDS_MAX);
    struct user_out o;
    user_out_init(&o);
    /* a region info or io fds reply is cut to the request's argsz, as the kernel does */
    uint32_t req_argsz = field_u32(L, 2, "argsz", UINT32_MAX);
    int r = encode(L, 3, &o, req.cmd, req.id, USER_F_REPLY, &req, req_argsz);
    c = checkconn(L, 1);
    if (send_out(L, c, &o, r, fds, nfds, "reply"))
        return 3;
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:error(request, errno) -> true | nil, msg, errno */
static int conn_error(lua_State *L)
{
    lv_user_conn *c = luaL_checkudata(L, 1, LV_USER_CONN);
    struct user_hdr req;
    read_request(L, 2, &req);
    uint32_t err = (uint32_t)lv_checkrange(L, 3, 0, INT32_MAX);
    struct user_out o;
    user_out_init(&o);
    c = checkconn(L, 1);
    int r = user_enc_error(&o, &req, err);
    if (send_out(L, c, &o, r, NULL, 0, "error reply"))
        return 3;
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:send_raw(bytes, [fds]) -> true | nil, msg, errno: bytes as they are, for specs
 * and scripted hostile peers. */
static int conn_send_raw(lua_State *L)
{
    luaL_checkudata(L, 1, LV_USER_CONN);
    size_t len;
    const char *b = luaL_checklstring(L, 2, &len);
    int fds[USER_FDS_MAX];
    unsigned nfds = read_fds(L, 3, fds, USER_FDS_MAX);
    if (nfds && len == 0)
        luaL_argerror(L, 2, "fds need at least one byte to travel with");
    lv_user_conn *c = checkconn(L, 1);
    int r = user_send_raw(c->fd, (const uint8_t *)b, len, fds, nfds);
    if (r < 0)
        return lv_syserrorf(L, -r, "send", "vfio-user connection fd %d", c->fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:shutdown(): stop sending (the peer reads end of file), keep receiving. */
static int conn_shutdown(lua_State *L)
{
    lv_user_conn *c = checkconn(L, 1);
    if (shutdown(c->fd, SHUT_WR) < 0)
        return lv_syserrorf(L, errno, "shutdown", "vfio-user connection fd %d", c->fd);
    lua_pushboolean(L, 1);
    return 1;
}

/*** @module vfio.core */

/***
A connected pair of vfio-user connections (a UNIX stream socketpair), for specs and for
a server and a client in one process.
@function user_socketpair
@tparam[opt] table opts as for `user_connection`
@treturn user_connection one end
@treturn user_connection the other end, or `nil, message, errno`
*/

/***
A vfio-user connection over a connected UNIX stream socket. The connection keeps its own
duplicate of the fd. Options: `max_data_xfer_size` (default 1 MiB) and `max_msg_fds`
(default 1): what this end accepts, refused past them; `peer_max_data_xfer_size`,
`peer_max_msg_fds`: what the peer accepts (the same defaults), held to by what is sent;
`role` ("server", "client" or "any", the default): a server refuses DMA_READ/WRITE
requests and replies to anything else, a client the reverse.
@function user_connection
@param fd the socket: an fd number or an object with `fileno()`
@tparam[opt] table opts
@treturn user_connection
*/

/***
A vfio-user connection (`vfio.user_connection`): whole messages over its socket. Commands
are named as in the specification without the prefix: "version", "dma_map", "dma_unmap",
"device_get_info", "device_get_region_info", "device_get_region_io_fds",
"device_get_irq_info", "device_set_irqs", "region_read", "region_write", "dma_read",
"dma_write", "device_reset", "region_write_multi".
@type user_connection
*/

/***
Receive and decode one message. A message is a table: `id`, `command` (the name), `cmd`
(the number), `reply`, `no_reply`, `error` (an error reply's errno), the command's fields
(`address`, `size`, `offset`, `index`, `count`, `flags`, `argsz`...: the specification's
names, `address` for its address; `caps` for a version's capabilities, `sparse` and
`cap_type` for a region's capabilities, `subregions`, `bools`, `writes`), `data` (a
string) where the message carries data, and `fds`, a list of `vfio.fd` objects the
caller owns (close them, or keep them; one left open closes when collected). Every check
of the C layer has been made (sizes, limits, ranges that wrap, fd kinds: a DMA map's fd is
a regular file long enough, SET_IRQS fds are eventfds); region and IRQ indices and
ranges are the caller's to check against its device.
@function user_connection:recv
@tparam[opt] int ms how long to wait (none or negative: forever; 0: not at all)
@treturn table the message, or `nil, message, errno` (EAGAIN or ETIMEDOUT when none came
whole; EPIPE when the peer closed the connection, ECONNRESET when it closed in the middle
of a message; EINVAL, E2BIG, EMSGSIZE, ENOSYS for a message refused, with a fourth value
`{id=, command=}` an error reply can answer; after EPIPE, ECONNRESET, E2BIG, EMSGSIZE or
a framing EINVAL the connection is unusable: close it)
*/

/***
Send a request.
@function user_connection:request
@param command the command's name or number
@tparam[opt] table fields the payload's fields, as `recv` returns them (`no_reply = true`
posts it)
@tparam[opt] {fd,...} fds fds to pass (integers or objects with `fileno()`)
@treturn int the message id, or `nil, message, errno`
*/

/***
Send the reply to a request.
@function user_connection:reply
@tparam table request the request (its `id` and `command`; a region info's or io fds'
`argsz` cuts the reply as the kernel does)
@tparam[opt] table fields the reply's fields
@tparam[opt] {fd,...} fds fds to pass
@treturn boolean true, or `nil, message, errno`
*/

/***
Send an error reply to a request.
@function user_connection:error
@tparam table request the request (`id`, `command`)
@tparam int errno the error number
@treturn boolean true, or `nil, message, errno`
*/

/***
Send bytes as they are, with fds: for specs and scripted hostile peers.
@function user_connection:send_raw
@tparam string bytes
@tparam[opt] {fd,...} fds
@treturn boolean true, or `nil, message, errno`
*/

/***
Change the limits (the options of `user_connection`), between two messages.
@function user_connection:set_limits
@tparam table opts
*/

/***
Stop sending: the peer reads the end of the stream; receiving goes on.
@function user_connection:shutdown
@treturn boolean true, or `nil, message, errno`
*/

/***
The socket's fd number, for poll.
@function user_connection:fd
@treturn int
*/

/***
The socket's fd number (as `fd`, for what takes an object with `fileno()`).
@function user_connection:fileno
@treturn int
*/

/***
Whether it is closed.
@function user_connection:closed
@treturn boolean
*/

/***
Close the connection (idempotent); fds received and not taken are closed.
@function user_connection:close
*/

/***
An fd received from a vfio-user peer (`vfio.fd`), owned by this object.
@type fd
*/

/***
The fd's number.
@function fd:fileno
@treturn int
*/

/***
What the fd is: "eventfd", "file" (a regular file or a memfd), "socket", "pipe", "device"
or "other".
@function fd:kind
@treturn string
*/

/***
Whether it is closed.
@function fd:closed
@treturn boolean
*/

/***
Close the fd (idempotent).
@function fd:close
*/

void lv_open_user(lua_State *L)
{
    static const luaL_Reg conn_methods[] = {
        {"recv", conn_recv},     {"request", conn_request},     {"reply", conn_reply},
        {"error", conn_error},   {"send_raw", conn_send_raw},   {"set_limits", conn_set_limits},
        {"shutdown", conn_shutdown}, {"fd", conn_fd},           {"fileno", conn_fd},
        {"closed", conn_closed}, {"close", conn_close},         {NULL, NULL}};
    static const luaL_Reg conn_meta[] = {{"__gc", conn_gc},
                                         {"__close", conn_close},
                                         {"__tostring", conn_tostring},
                                         {NULL, NULL}};
    lv_newclass(L, LV_USER_CONN, conn_methods, conn_meta);
    static const luaL_Reg fd_methods[] = {{"fileno", fd_fileno}, {"kind", fd_kind},
                                          {"closed", fd_closed}, {"close", fd_close},
                                          {NULL, NULL}};
    static const luaL_Reg fd_meta[] = {
        {"__gc", fd_close}, {"__close", fd_close}, {"__tostring", fd_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_FD, fd_methods, fd_meta);
    static const luaL_Reg fns[] = {{"user_connection", l_user_connection},
                                   {"user_socketpair", l_user_socketpair},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
