/* vfio-user messages (user_msg.h): the one decoder both ends use and the encoders.
 *
 * The decoder trusts nothing but the buffer's length: the header's size must be it, and
 * every payload is read only after its size for the command and direction is checked,
 * so a field never reads past the message. What needs the device (region sizes, IRQ
 * counts, DMA windows) is the caller's, with the range helpers at the end. */
#include "user_msg.h"
#include "user_version.h"

#include "base/le.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ commands, limits */

static const char *const cmd_names[USER_CMD_LIMIT] = {
    [USER_VERSION] = "version",
    [USER_DMA_MAP] = "dma_map",
    [USER_DMA_UNMAP] = "dma_unmap",
    [USER_DEVICE_GET_INFO] = "device_get_info",
    [USER_DEVICE_GET_REGION_INFO] = "device_get_region_info",
    [USER_DEVICE_GET_REGION_IO_FDS] = "device_get_region_io_fds",
    [USER_DEVICE_GET_IRQ_INFO] = "device_get_irq_info",
    [USER_DEVICE_SET_IRQS] = "device_set_irqs",
    [USER_REGION_READ] = "region_read",
    [USER_REGION_WRITE] = "region_write",
    [USER_DMA_READ] = "dma_read",
    [USER_DMA_WRITE] = "dma_write",
    [USER_DEVICE_RESET] = "device_reset",
    [USER_REGION_WRITE_MULTI] = "region_write_multi",
};

const char *user_cmd_name(unsigned cmd)
{
    return cmd < USER_CMD_LIMIT ? cmd_names[cmd] : NULL;
}

unsigned user_cmd_by_name(const char *name)
{
    for (unsigned i = 1; i < USER_CMD_LIMIT; i++)
        if (cmd_names[i] && strcmp(cmd_names[i], name) == 0)
            return i;
    return 0;
}

bool user_cmd_from_client(unsigned cmd)
{
    return cmd != USER_DMA_READ && cmd != USER_DMA_WRITE;
}

void user_limits_default(struct user_limits *lim)
{
    memset(lim, 0, sizeof *lim);
    lim->max_data_xfer_size = USER_DEFAULT_MAX_XFER;
    lim->max_msg_fds = USER_DEFAULT_MAX_MSG_FDS;
    lim->role = USER_ROLE_ANY;
}

uint32_t user_max_msg_size(const struct user_limits *lim)
{
    uint64_t xfer = lim->max_data_xfer_size;
    if (xfer > USER_XFER_MAX)
        xfer = USER_XFER_MAX;
    uint64_t n = xfer + USER_DATA_OVERHEAD;
    return n < USER_CTRL_MAX ? USER_CTRL_MAX : (uint32_t)n;
}

/* ------------------------------------------------------------------ range helpers */

bool user_range_in(uint64_t offset, uint64_t count, uint64_t size)
{
    return offset <= size && count <= size - offset;
}

bool user_irq_range_ok(uint32_t start, uint32_t count, uint32_t irqs)
{
    return user_range_in(start, count, irqs);
}

bool user_ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    if (alen == 0 || blen == 0)
        return false;
    /* inclusive ends, so a range ending at 2^64 is fine */
    uint64_t aend = a + (alen - 1), bend = b + (blen - 1);
    return a <= bend && b <= aend;
}

/* [base, base + len) stays below 2^64 (a length of 0 is a caller's matter). */
static bool no_wrap(uint64_t base, uint64_t len)
{
    return len == 0 || base + (len - 1) >= base;
}

int user_fd_check_mappable(int fd, uint64_t offset, uint64_t size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || st.st_size < 0)
        return -EINVAL;
    if (!user_range_in(offset, size, (uint64_t)st.st_size))
        return -EINVAL;   /* mapping past its end would fault on access (SIGBUS) */
    return 0;
}

int user_fd_check_eventfd(int fd)
{
    char path[64], link[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0)
        return errno == ENOENT ? -EBADF : -errno;
    link[n] = 0;
    return strcmp(link, "anon_inode:[eventfd]") == 0 ? 0 : -EINVAL;
}

/* ------------------------------------------------------------------ decoding */

static uint64_t g(const uint8_t *p, unsigned off, unsigned n)
{
    return lv_le_get(p + off, n);
}

static int no_fds(const struct user_msg *m)
{
    return m->nfds ? -EINVAL : 0;
}

static int decode_version(struct user_msg *m, bool reply)
{
    struct user_version *v = &m->u.version;
    if (m->body_len < USER_VERSION_SIZE)
        return -EINVAL;
    v->major = (uint16_t)g(m->body, 0, 2);
    v->minor = (uint16_t)g(m->body, 2, 2);
    uint32_t n = m->body_len - USER_VERSION_SIZE;
    const char *json = (const char *)m->body + USER_VERSION_SIZE;
    if (n > 0) {
        if (json[n - 1] != 0 || memchr(json, 0, n - 1))
            return -EINVAL;   /* one NUL, at the end */
        if (n - 1 > 0) {
            v->json = json;
            v->json_len = n - 1;
        }
    }
    int r = v->json ? user_caps_parse(v->json, v->json_len, &v->caps)
                    : (user_caps_default(&v->caps), 0);
    if (r < 0)
        return r;
    m->has_payload = true;
    if (m->nfds == 0)
        return 0;
    /* Only a reply's twin socket comes with fds, and its index must name one. */
    if (!reply || !v->caps.twin_supported || v->caps.twin_fd_index < 0 ||
        (uint64_t)v->caps.twin_fd_index >= m->nfds)
        return -EINVAL;
    return 0;
}

static int decode_dma_map(const struct user_limits *lim, struct user_msg *m)
{
    struct user_dma_map *d = &m->u.dma_map;
    if (m->body_len != USER_DMA_MAP_SIZE)
        return -EINVAL;
    d->argsz = (uint32_t)g(m->body, 0, 4);
    d->flags = (uint32_t)g(m->body, 4, 4);
    d->offset = g(m->body, 8, 8);
    d->addr = g(m->body, 16, 8);
    d->size = g(m->body, 24, 8);
    m->has_payload = true;
    if (d->argsz != USER_DMA_MAP_SIZE || (d->flags & ~(USER_DMA_MAP_READ | USER_DMA_MAP_WRITE)))
        return -EINVAL;
    if (d->size == 0 || !no_wrap(d->addr, d->size))
        return -EINVAL;
    if (m->nfds > 1)
        return -EINVAL;
    if (m->nfds == 1) {
        if (!no_wrap(d->offset, d->size))
            return -EINVAL;
        int r = user_fd_check_mappable(m->fds[0], d->offset, d->size);
        if (r < 0)
            return r == -EBADF ? r : -EINVAL;
    }
    (void)lim;
    return 0;
}

static int decode_dma_unmap(struct user_msg *m, bool reply)
{
    struct user_dma_unmap *d = &m->u.dma_unmap;
    if (reply && m->body_len == 0)
        return no_fds(m);
    if (m->body_len != USER_DMA_UNMAP_SIZE)
        return -EINVAL;
    d->argsz = (uint32_t)g(m->body, 0, 4);
    d->flags = (uint32_t)g(m->body, 4, 4);
    d->addr = g(m->body, 8, 8);
    d->size = g(m->body, 16, 8);
    m->has_payload = true;
    if (d->argsz < USER_DMA_UNMAP_SIZE || (d->flags & ~USER_DMA_UNMAP_ALL))
        return -EINVAL;
    if (d->flags & USER_DMA_UNMAP_ALL) {
        if (d->addr || d->size)
            return -EINVAL;
    } else if (d->size == 0 || !no_wrap(d->addr, d->size)) {
        return -EINVAL;
    }
    return no_fds(m);
}

/* The four 32-bit words every *_INFO payload starts with. */
static void four(const uint8_t *b, uint32_t *w)
{
    for (int i = 0; i < 4; i++)
        w[i] = (uint32_t)g(b, 4 * i, 4);
}

static int decode_device_info(struct user_msg *m, bool reply)
{
    struct user_device_info *d = &m->u.device_info;
    if (reply ? m->body_len < USER_DEVICE_INFO_SIZE : m->body_len != USER_DEVICE_INFO_SIZE)
        return -EINVAL;
    uint32_t w[4];
    four(m->body, w);
    d->argsz = w[0], d->flags = w[1], d->num_regions = w[2], d->num_irqs = w[3];
    m->has_payload = true;
    if (d->argsz < USER_DEVICE_INFO_SIZE)
        return -EINVAL;
    return no_fds(m);
}

static int decode_irq_info(struct user_msg *m, bool reply)
{
    struct user_irq_info *d = &m->u.irq_info;
    if (reply ? m->body_len < USER_IRQ_INFO_SIZE : m->body_len != USER_IRQ_INFO_SIZE)
        return -EINVAL;
    uint32_t w[4];
    four(m->body, w);
    d->argsz = w[0], d->flags = w[1], d->index = w[2], d->count = w[3];
    m->has_payload = true;
    if (d->argsz < USER_IRQ_INFO_SIZE)
        return -EINVAL;
    return no_fds(m);
}

/* A reply's capability chain: each header inside the payload, each next offset past the
 * previous one (so it ends), known capabilities whole and once, sparse areas inside the
 * region without wrapping. */
static int decode_region_caps(struct user_region_info *ri, const uint8_t *b, uint32_t len)
{
    uint64_t off = ri->cap_offset, prev = 0;
    while (off) {
        if (off < USER_REGION_INFO_SIZE || off <= prev || off + USER_CAP_HDR_SIZE > len)
            return -EINVAL;
        unsigned id = (unsigned)g(b, (unsigned)off, 2);
        uint64_t next = g(b, (unsigned)off + 4, 4);
        uint64_t data = off + USER_CAP_HDR_SIZE;
        if (id == USER_REGION_CAP_SPARSE_MMAP) {
            if (ri->has_sparse || data + 8 > len)
                return -EINVAL;
            uint64_t n = g(b, (unsigned)data, 4);
            if (n > (len - data - 8) / USER_SPARSE_AREA_SIZE)
                return -EINVAL;
            ri->has_sparse = true;
            ri->nsparse = (uint32_t)n;
            ri->sparse = b + data + 8;
            for (uint32_t i = 0; i < ri->nsparse; i++) {
                struct user_sparse_area a;
                user_sparse_get(ri, i, &a);
                if (!user_range_in(a.offset, a.size, ri->size))
                    return -EINVAL;
            }
        } else if (id == USER_REGION_CAP_TYPE) {
            if (ri->has_type || data + 8 > len)
                return -EINVAL;
            ri->has_type = true;
            ri->cap_type = (uint32_t)g(b, (unsigned)data, 4);
            ri->cap_subtype = (uint32_t)g(b, (unsigned)data + 4, 4);
        }
        prev = off;
        off = next;
    }
    return 0;
}

static int decode_region_info(struct user_msg *m, bool reply)
{
    struct user_region_info *ri = &m->u.region_info;
    const uint8_t *b = m->body;
    if (reply ? m->body_len < USER_REGION_INFO_SIZE : m->body_len != USER_REGION_INFO_SIZE)
        return -EINVAL;
    uint32_t w[4];
    four(b, w);
    ri->argsz = w[0], ri->flags = w[1], ri->index = w[2], ri->cap_offset = w[3];
    ri->size = g(b, 16, 8);
    ri->offset = g(b, 24, 8);
    m->has_payload = true;
    if (ri->argsz < USER_REGION_INFO_SIZE)
        return -EINVAL;
    if (!reply)
        return no_fds(m);
    if (ri->argsz < m->body_len)
        return -EINVAL;   /* more payload than the reply says it has */
    ri->complete = ri->argsz == m->body_len;
    if (ri->complete && (ri->flags & VFIO_REGION_INFO_FLAG_CAPS)) {
        int r = decode_region_caps(ri, b, m->body_len);
        if (r < 0)
            return r;
    }
    if (m->nfds > 1 || (m->nfds && !(ri->flags & VFIO_REGION_INFO_FLAG_MMAP)))
        return -EINVAL;
    return 0;
}

static int decode_io_fds(struct user_msg *m, bool reply)
{
    struct user_io_fds *io = &m->u.io_fds;
    if (reply ? m->body_len < USER_IO_FDS_SIZE : m->body_len != USER_IO_FDS_SIZE)
        return -EINVAL;
    uint32_t w[4];
    four(m->body, w);
    io->argsz = w[0], io->flags = w[1], io->index = w[2], io->count = w[3];
    m->has_payload = true;
    if (io->argsz < USER_IO_FDS_SIZE || io->flags)
        return -EINVAL;
    if (!reply)
        return no_fds(m);
    uint64_t whole = USER_IO_FDS_SIZE + (uint64_t)io->count * USER_IO_FD_SUB_SIZE;
    if (io->argsz < m->body_len)
        return -EINVAL;
    if (m->body_len == USER_IO_FDS_SIZE && whole > m->body_len)
        return no_fds(m);   /* too small an argsz asked: count and argsz only */
    if (whole != m->body_len)
        return -EINVAL;
    io->complete = true;
    io->subs = m->body + USER_IO_FDS_SIZE;
    for (uint32_t i = 0; i < io->count; i++) {
        struct user_io_fd_sub s;
        user_io_fd_sub_get(io, i, &s);
        if (s.fd_index >= m->nfds || s.type > USER_IO_FD_TYPE_IOREGIONFD ||
            !no_wrap(s.offset, s.size))
            return -EINVAL;
    }
    return 0;
}

static int decode_irq_set(struct user_msg *m)
{
    struct user_irq_set *s = &m->u.irq_set;
    if (m->body_len < USER_IRQ_SET_SIZE)
        return -EINVAL;
    s->argsz = (uint32_t)g(m->body, 0, 4);
    s->flags = (uint32_t)g(m->body, 4, 4);
    s->index = (uint32_t)g(m->body, 8, 4);
    s->start = (uint32_t)g(m->body, 12, 4);
    s->count = (uint32_t)g(m->body, 16, 4);
    m->has_payload = true;
    uint32_t data = s->flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    uint32_t action = s->flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    if (s->argsz != m->body_len ||
        (s->flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)) ||
        !data || (data & (data - 1)) || !action || (action & (action - 1)))
        return -EINVAL;   /* one data kind and one action, nothing else */
    if (!no_wrap(s->start, s->count) || (uint64_t)s->start + s->count > UINT32_MAX + 1ull)
        return -EINVAL;
    switch (data) {
    case VFIO_IRQ_SET_DATA_NONE:
        if (m->body_len != USER_IRQ_SET_SIZE)
            return -EINVAL;
        return no_fds(m);
    case VFIO_IRQ_SET_DATA_BOOL:
        if ((uint64_t)m->body_len != USER_IRQ_SET_SIZE + (uint64_t)s->count)
            return -EINVAL;
        s->bools = m->body + USER_IRQ_SET_SIZE;
        return no_fds(m);
    default: /* eventfds in the control data: one a vector, or none to de-assign */
        if (m->body_len != USER_IRQ_SET_SIZE || (m->nfds && m->nfds != s->count))
            return -EINVAL;
        for (unsigned i = 0; i < m->nfds; i++) {
            int r = user_fd_check_eventfd(m->fds[i]);
            if (r < 0)
                return r == -EBADF ? r : -EINVAL;
        }
        return 0;
    }
}

/* REGION_READ/WRITE: data in a write request and in a read reply. */
static int decode_region_rw(const struct user_limits *lim, struct user_msg *m, bool reply)
{
    struct user_region_rw *rw = &m->u.region_rw;
    bool has_data = (m->hdr.cmd == USER_REGION_WRITE) != reply;
    if (reply && m->hdr.cmd == USER_REGION_WRITE && m->body_len == 0)
        return no_fds(m);
    if (m->body_len < USER_REGION_RW_SIZE)
        return -EINVAL;
    rw->offset = g(m->body, 0, 8);
    rw->region = (uint32_t)g(m->body, 8, 4);
    rw->count = (uint32_t)g(m->body, 12, 4);
    m->has_payload = true;
    if (rw->count > lim->max_data_xfer_size)
        return -E2BIG;
    uint64_t want = USER_REGION_RW_SIZE + (has_data ? (uint64_t)rw->count : 0);
    if (m->body_len != want || !no_wrap(rw->offset, rw->count))
        return -EINVAL;
    if (has_data)
        rw->data = m->body + USER_REGION_RW_SIZE;
    return no_fds(m);
}

/* DMA_READ/WRITE: data in a write request and in a read reply, after an 8-byte count. */
static int decode_dma_rw(const struct user_limits *lim, struct user_msg *m, bool reply)
{
    struct user_dma_rw *rw = &m->u.dma_rw;
    bool has_data = (m->hdr.cmd == USER_DMA_WRITE) != reply;
    if (reply && m->hdr.cmd == USER_DMA_WRITE) {
        /* QEMU answers with the header alone, the spec with address and a 4-byte count */
        if (m->body_len == 0)
            return no_fds(m);
        if (m->body_len != USER_DMA_WRITE_REPLY_SIZE && m->body_len != USER_DMA_RW_SIZE)
            return -EINVAL;
        rw->addr = g(m->body, 0, 8);
        rw->count = g(m->body, 8, m->body_len == USER_DMA_RW_SIZE ? 8 : 4);
        m->has_payload = true;
        if (rw->count > lim->max_data_xfer_size)
            return -E2BIG;   /* more than it may have been asked to write */
        return no_fds(m);
    }
    unsigned fixed = USER_DMA_RW_SIZE;
    if (m->body_len < fixed)
        return -EINVAL;
    rw->addr = g(m->body, 0, 8);
    rw->count = g(m->body, 8, 8);
    m->has_payload = true;
    if (rw->count > lim->max_data_xfer_size)
        return -E2BIG;
    uint64_t want = has_data ? fixed + rw->count : fixed;
    if (m->body_len != want || !no_wrap(rw->addr, rw->count))
        return -EINVAL;
    if (has_data)
        rw->data = m->body + fixed;
    return no_fds(m);
}

static int decode_write_multi(struct user_msg *m, bool reply)
{
    struct user_write_multi *wm = &m->u.write_multi;
    if (m->body_len < USER_WRITE_MULTI_SIZE)
        return -EINVAL;
    wm->wr_cnt = g(m->body, 0, 8);
    m->has_payload = true;
    if (reply)
        return m->body_len == USER_WRITE_MULTI_SIZE ? no_fds(m) : -EINVAL;
    if (wm->wr_cnt == 0 || wm->wr_cnt > USER_WRITE_MULTI_MAX)
        return -EINVAL;
    if (m->body_len != USER_WRITE_MULTI_SIZE + wm->wr_cnt * USER_WRITE_ONE_SIZE)
        return -EINVAL;
    wm->wrs = m->body + USER_WRITE_MULTI_SIZE;
    for (uint64_t i = 0; i < wm->wr_cnt; i++) {
        struct user_write_one w;
        user_write_one_get(wm, i, &w);
        if (w.count == 0 || w.count > 8 || !no_wrap(w.offset, w.count))
            return -EINVAL;
    }
    return no_fds(m);
}

static int header_only(struct user_msg *m)
{
    return m->body_len ? -EINVAL : no_fds(m);
}

int user_decode(const struct user_limits *lim, const uint8_t *buf, uint32_t len,
                const int *fds, unsigned nfds, struct user_msg *m)
{
    memset(m, 0, sizeof *m);
    if (len < USER_HDR_SIZE)
        return -EINVAL;
    m->hdr.id = (uint16_t)g(buf, 0, 2);
    m->hdr.cmd = (uint16_t)g(buf, 2, 2);
    m->hdr.size = (uint32_t)g(buf, 4, 4);
    m->hdr.flags = (uint32_t)g(buf, 8, 4);
    m->hdr.error = (uint32_t)g(buf, 12, 4);
    m->body = buf + USER_HDR_SIZE;
    m->body_len = len - USER_HDR_SIZE;
    m->fds = fds;
    m->nfds = nfds;
    if (m->hdr.size != len || nfds > USER_FDS_MAX)
        return -EINVAL;
    unsigned type = m->hdr.flags & USER_F_TYPE_MASK;
    if (type != USER_F_REQUEST && type != USER_F_REPLY)
        return -EINVAL;
    bool reply = type == USER_F_REPLY;
    unsigned cmd = m->hdr.cmd;
    if (!user_cmd_name(cmd))   /* an error reply may answer a command unknown here */
        return reply && (m->hdr.flags & USER_F_ERROR) ? no_fds(m) : -ENOSYS;
    if (lim->role != USER_ROLE_ANY) {
        /* a server takes the client's requests and the replies to its own */
        bool from_client = user_cmd_from_client(cmd) != reply;
        if (from_client != (lim->role == USER_ROLE_SERVER))
            return -EINVAL;
    }
    if (reply && (m->hdr.flags & USER_F_ERROR))
        return no_fds(m);   /* the error number is all; any payload is not read */
    switch (cmd) {
    case USER_VERSION:
        return decode_version(m, reply);
    case USER_DMA_MAP:
        return reply ? header_only(m) : decode_dma_map(lim, m);
    case USER_DMA_UNMAP:
        return decode_dma_unmap(m, reply);
    case USER_DEVICE_GET_INFO:
        return decode_device_info(m, reply);
    case USER_DEVICE_GET_REGION_INFO:
        return decode_region_info(m, reply);
    case USER_DEVICE_GET_REGION_IO_FDS:
        return decode_io_fds(m, reply);
    case USER_DEVICE_GET_IRQ_INFO:
        return decode_irq_info(m, reply);
    case USER_DEVICE_SET_IRQS:
        return reply ? header_only(m) : decode_irq_set(m);
    case USER_REGION_READ:
    case USER_REGION_WRITE:
        return decode_region_rw(lim, m, reply);
    case USER_DMA_READ:
    case USER_DMA_WRITE:
        return decode_dma_rw(lim, m, reply);
    case USER_DEVICE_RESET:
        return header_only(m);
    case USER_REGION_WRITE_MULTI:
        return decode_write_multi(m, reply);
    }
    return -ENOSYS;
}

void user_sparse_get(const struct user_region_info *ri, uint32_t i, struct user_sparse_area *a)
{
    const uint8_t *p = ri->sparse + (size_t)i * USER_SPARSE_AREA_SIZE;
    a->offset = lv_le_get(p, 8);
    a->size = lv_le_get(p + 8, 8);
}

void user_io_fd_sub_get(const struct user_io_fds *io, uint32_t i, struct user_io_fd_sub *s)
{
    const uint8_t *p = io->subs + (size_t)i * USER_IO_FD_SUB_SIZE;
    s->offset = lv_le_get(p, 8);
    s->size = lv_le_get(p + 8, 8);
    s->fd_index = (uint32_t)lv_le_get(p + 16, 4);
    s->type = (uint32_t)lv_le_get(p + 20, 4);
    s->flags = (uint32_t)lv_le_get(p + 24, 4);
    s->data = lv_le_get(p + 32, 8);
}

void user_write_one_get(const struct user_write_multi *wm, uint64_t i, struct user_write_one *w)
{
    const uint8_t *p = wm->wrs + (size_t)i * USER_WRITE_ONE_SIZE;
    w->offset = lv_le_get(p, 8);
    w->region = (uint32_t)lv_le_get(p + 8, 4);
    w->count = (uint32_t)lv_le_get(p + 12, 4);
    memcpy(w->data, p + 16, 8);
}

/* ------------------------------------------------------------------ encoding */

void user_out_init(struct user_out *o)
{
    memset(o, 0, sizeof *o);
}

void user_out_free(struct user_out *o)
{
    free(o->buf);
    memset(o, 0, sizeof *o);
}

static bool room(struct user_out *o, size_t n)
{
    if (o->err)
        return false;
    if (n > SIZE_MAX - o->len) {
        o->err = -EMSGSIZE;
        return false;
    }
    if (o->len + n <= o->cap)
        return true;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + n)
        cap *= 2;
    uint8_t *p = realloc(o->buf, cap);
    if (!p) {
        o->err = -ENOMEM;
        return false;
    }
    o->buf = p;
    o->cap = cap;
    return true;
}

void user_out_put(struct user_out *o, uint64_t v, unsigned n)
{
    if (room(o, n)) {
        lv_le_put(o->buf + o->len, v, n);
        o->len += n;
    }
}

void user_out_bytes(struct user_out *o, const void *p, size_t n)
{
    if (n && room(o, n)) {
        if (p)
            memcpy(o->buf + o->len, p, n);
        else
            memset(o->buf + o->len, 0, n);
        o->len += n;
    }
}

void user_out_begin(struct user_out *o, uint16_t id, uint16_t cmd, uint32_t flags,
                    uint32_t error)
{
    o->len = 0;
    o->err = 0;
    user_out_put(o, id, 2);
    user_out_put(o, cmd, 2);
    user_out_put(o, 0, 4);   /* the size, written by user_out_end */
    user_out_put(o, flags, 4);
    user_out_put(o, error, 4);
}

int user_out_end(struct user_out *o)
{
    if (o->err)
        return o->err;
    if (o->len > UINT32_MAX)
        return o->err = -EMSGSIZE;
    lv_le_put(o->buf + 4, o->len, 4);
    return 0;
}

int user_enc_error(struct user_out *o, const struct user_hdr *req, uint32_t err)
{
    user_out_begin(o, req->id, req->cmd, USER_F_REPLY | USER_F_ERROR, err);
    return user_out_end(o);
}

int user_enc_empty(struct user_out *o, uint16_t id, uint16_t cmd, uint32_t flags)
{
    user_out_begin(o, id, cmd, flags, 0);
    return user_out_end(o);
}

int user_enc_version(struct user_out *o, uint16_t id, uint32_t flags, uint16_t major,
                     uint16_t minor, const char *json)
{
    user_out_begin(o, id, USER_VERSION, flags, 0);
    user_out_put(o, major, 2);
    user_out_put(o, minor, 2);
    if (json)
        user_out_bytes(o, json, strlen(json) + 1);
    return user_out_end(o);
}

int user_enc_dma_map(struct user_out *o, uint16_t id, uint32_t flags,
                     const struct user_dma_map *d)
{
    user_out_begin(o, id, USER_DMA_MAP, flags, 0);
    user_out_put(o, USER_DMA_MAP_SIZE, 4);
    user_out_put(o, d->flags, 4);
    user_out_put(o, d->offset, 8);
    user_out_put(o, d->addr, 8);
    user_out_put(o, d->size, 8);
    return user_out_end(o);
}

int user_enc_dma_unmap(struct user_out *o, uint16_t id, uint32_t flags,
                       const struct user_dma_unmap *d)
{
    user_out_begin(o, id, USER_DMA_UNMAP, flags, 0);
    user_out_put(o, d->argsz ? d->argsz : USER_DMA_UNMAP_SIZE, 4);
    user_out_put(o, d->flags, 4);
    user_out_put(o, d->addr, 8);
    user_out_put(o, d->size, 8);
    return user_out_end(o);
}

static void put_four(struct user_out *o, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    user_out_put(o, a, 4);
    user_out_put(o, b, 4);
    user_out_put(o, c, 4);
    user_out_put(o, d, 4);
}

int user_enc_device_info(struct user_out *o, uint16_t id, uint32_t flags,
                         const struct user_device_info *d)
{
    user_out_begin(o, id, USER_DEVICE_GET_INFO, flags, 0);
    put_four(o, d->argsz ? d->argsz : USER_DEVICE_INFO_SIZE, d->flags, d->num_regions,
             d->num_irqs);
    return user_out_end(o);
}

int user_enc_region_info_req(struct user_out *o, uint16_t id, uint32_t argsz, uint32_t index)
{
    user_out_begin(o, id, USER_DEVICE_GET_REGION_INFO, USER_F_REQUEST, 0);
    put_four(o, argsz, 0, index, 0);
    user_out_put(o, 0, 8);
    user_out_put(o, 0, 8);
    return user_out_end(o);
}

int user_enc_region_info_reply(struct user_out *o, const struct user_hdr *req,
                               uint32_t req_argsz, const struct user_region_info *ri,
                               const struct user_sparse_area *sparse, uint32_t nsparse)
{
    bool has_sparse = ri->has_sparse || nsparse;
    uint64_t sparse_len = has_sparse ? USER_CAP_HDR_SIZE + 8 + (uint64_t)nsparse * USER_SPARSE_AREA_SIZE : 0;
    uint64_t type_len = ri->has_type ? USER_CAP_HDR_SIZE + 8 : 0;
    uint64_t need = USER_REGION_INFO_SIZE + sparse_len + type_len;
    if (need > USER_CTRL_MAX - USER_HDR_SIZE)
        return -EMSGSIZE;
    bool caps = sparse_len || type_len;
    bool whole = req_argsz >= need;
    uint32_t flags = ri->flags & ~(uint32_t)VFIO_REGION_INFO_FLAG_CAPS;
    if (caps)
        flags |= VFIO_REGION_INFO_FLAG_CAPS;
    user_out_begin(o, req->id, USER_DEVICE_GET_REGION_INFO, USER_F_REPLY, 0);
    /* cap_offset names where the chain starts even when argsz is too small for it (the
     * kernel says 0 then): QEMU's vfio-user client refuses a CAPS reply whose cap_offset
     * lies outside [sizeof info, argsz], and retries with the argsz we return. */
    put_four(o, (uint32_t)need, flags, ri->index, caps ? USER_REGION_INFO_SIZE : 0);
    user_out_put(o, ri->size, 8);
    user_out_put(o, ri->offset, 8);
    if (caps && whole) {
        uint64_t at = USER_REGION_INFO_SIZE;
        if (has_sparse) {
            at += sparse_len;
            user_out_put(o, USER_REGION_CAP_SPARSE_MMAP, 2);
            user_out_put(o, 1, 2);
            user_out_put(o, type_len ? at : 0, 4);
            user_out_put(o, nsparse, 4);
            user_out_put(o, 0, 4);
            for (uint32_t i = 0; i < nsparse; i++) {
                user_out_put(o, sparse[i].offset, 8);
                user_out_put(o, sparse[i].size, 8);
            }
        }
        if (type_len) {
            user_out_put(o, USER_REGION_CAP_TYPE, 2);
            user_out_put(o, 1, 2);
            user_out_put(o, 0, 4);
            user_out_put(o, ri->cap_type, 4);
            user_out_put(o, ri->cap_subtype, 4);
        }
    }
    return user_out_end(o);
}

int user_enc_io_fds_req(struct user_out *o, uint16_t id, uint32_t argsz, uint32_t index)
{
    user_out_begin(o, id, USER_DEVICE_GET_REGION_IO_FDS, USER_F_REQUEST, 0);
    put_four(o, argsz, 0, index, 0);
    return user_out_end(o);
}

int user_enc_io_fds_reply(struct user_out *o, const struct user_hdr *req,
                          uint32_t req_argsz, uint32_t index,
                          const struct user_io_fd_sub *subs, uint32_t count)
{
    uint64_t need = USER_IO_FDS_SIZE + (uint64_t)count * USER_IO_FD_SUB_SIZE;
    if (need > USER_CTRL_MAX - USER_HDR_SIZE)
        return -EMSGSIZE;
    user_out_begin(o, req->id, USER_DEVICE_GET_REGION_IO_FDS, USER_F_REPLY, 0);
    put_four(o, (uint32_t)need, 0, index, count);
    if (req_argsz >= need)
        for (uint32_t i = 0; i < count; i++) {
            user_out_put(o, subs[i].offset, 8);
            user_out_put(o, subs[i].size, 8);
            user_out_put(o, subs[i].fd_index, 4);
            user_out_put(o, subs[i].type, 4);
            user_out_put(o, subs[i].flags, 4);
            user_out_put(o, 0, 4);
            user_out_put(o, subs[i].data, 8);
        }
    return user_out_end(o);
}

int user_enc_irq_info(struct user_out *o, uint16_t id, uint32_t flags,
                      const struct user_irq_info *d)
{
    user_out_begin(o, id, USER_DEVICE_GET_IRQ_INFO, flags, 0);
    put_four(o, d->argsz ? d->argsz : USER_IRQ_INFO_SIZE, d->flags, d->index, d->count);
    return user_out_end(o);
}

int user_enc_irq_set(struct user_out *o, uint16_t id, uint32_t flags,
                     const struct user_irq_set *s)
{
    bool bools = (s->flags & VFIO_IRQ_SET_DATA_BOOL) != 0;
    if (bools && !s->bools && s->count)
        return -EINVAL;
    uint64_t argsz = USER_IRQ_SET_SIZE + (bools ? (uint64_t)s->count : 0);
    if (argsz > USER_CTRL_MAX - USER_HDR_SIZE)
        return -EMSGSIZE;
    user_out_begin(o, id, USER_DEVICE_SET_IRQS, flags, 0);
    user_out_put(o, argsz, 4);
    user_out_put(o, s->flags, 4);
    user_out_put(o, s->index, 4);
    user_out_put(o, s->start, 4);
    user_out_put(o, s->count, 4);
    if (bools)
        user_out_bytes(o, s->bools, s->count);
    return user_out_end(o);
}

int user_enc_region_rw(struct user_out *o, uint16_t id, uint16_t cmd, uint32_t flags,
                       uint64_t offset, uint32_t region, uint32_t count, const void *data)
{
    if (cmd != USER_REGION_READ && cmd != USER_REGION_WRITE)
        return -EINVAL;
    bool reply = (flags & USER_F_TYPE_MASK) == USER_F_REPLY;
    bool has_data = (cmd == USER_REGION_WRITE) != reply;
    if (has_data && count && !data)
        return -EINVAL;
    user_out_begin(o, id, cmd, flags, 0);
    user_out_put(o, offset, 8);
    user_out_put(o, region, 4);
    user_out_put(o, count, 4);
    if (has_data)
        user_out_bytes(o, data, count);
    return user_out_end(o);
}

int user_enc_dma_rw(struct user_out *o, uint16_t id, uint16_t cmd, uint32_t flags,
                    uint64_t addr, uint64_t count, const void *data)
{
    if (cmd != USER_DMA_READ && cmd != USER_DMA_WRITE)
        return -EINVAL;
    bool reply = (flags & USER_F_TYPE_MASK) == USER_F_REPLY;
    bool has_data = (cmd == USER_DMA_WRITE) != reply;
    if ((has_data && count && !data) || count > UINT32_MAX)
        return -EINVAL;
    user_out_begin(o, id, cmd, flags, 0);
    user_out_put(o, addr, 8);
    if (reply && cmd == USER_DMA_WRITE) {
        user_out_put(o, count, 4);
    } else {
        user_out_put(o, count, 8);
        if (has_data)
            user_out_bytes(o, data, count);
    }
    return user_out_end(o);
}

int user_enc_write_multi(struct user_out *o, uint16_t id, uint32_t flags,
                         const struct user_write_one *w, uint64_t n)
{
    bool reply = (flags & USER_F_TYPE_MASK) == USER_F_REPLY;
    if (!reply && (n > USER_WRITE_MULTI_MAX || (n && !w)))
        return -EINVAL;
    user_out_begin(o, id, USER_REGION_WRITE_MULTI, flags, 0);
    user_out_put(o, n, 8);
    if (!reply)
        for (uint64_t i = 0; i < n; i++) {
            user_out_put(o, w[i].offset, 8);
            user_out_put(o, w[i].region, 4);
            user_out_put(o, w[i].count, 4);
            user_out_bytes(o, w[i].data, 8);
        }
    return user_out_end(o);
}
