/* The vfio-user client (user_client.h): a synchronous request-reply loop over one
 * connection, the handshake and info queries QEMU's client makes, and the region
 * mappings of the fds a server hands over. */
#include "user_client.h"
#include "user_msg.h"
#include "user_version.h"

#include "base/le.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void note(struct user_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
}

/* The connection is lost: every later call fails with err at once. The socket stays
 * open (the owner closes it) but is shut down, so a server still writing sees EPIPE. */
static int kill_conn(struct user_client *c, int err, const char *fmt, ...)
{
    if (!c->dead) {
        c->dead = err;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why, sizeof c->why, fmt, ap);
        va_end(ap);
        if (c->sock >= 0)
            shutdown(c->sock, SHUT_RDWR);
    }
    return c->dead;
}

uint16_t user_client_id(struct user_client *c)
{
    return c->next_id++;
}

void user_client_done(struct user_client *c)
{
    if (c->rx.ready)
        user_rx_next(&c->rx);
}

/* A request the server sent us between our request and its reply: this client gives
 * the server fds for all the memory it maps, so DMA_READ/WRITE are refused (EINVAL, as a
 * server refuses what it does not take); anything else was already refused by the
 * decoder, answered the same way when it can be. */
static void refuse_request(struct user_client *c, const struct user_hdr *h)
{
    if (h->flags & USER_F_NO_REPLY)
        return;
    struct user_out o;
    user_out_init(&o);
    if (user_enc_error(&o, h, EINVAL) == 0)
        user_send_timed(c->sock, o.buf, o.len, NULL, 0, c->timeout_ms);
    user_out_free(&o);
}

/* Wait for the reply to request (id, cmd) until the deadline. */
static int wait_reply(struct user_client *c, uint16_t id, uint16_t cmd, struct user_msg *m)
{
    const char *name = user_cmd_name(cmd);
    int64_t deadline = now_ms() + c->timeout_ms;
    for (;;) {
        int r = user_recv(&c->rx, c->sock);
        if (r == 1) {
            const struct user_hdr *h = &c->rx.hdr;
            int d = user_decode(&c->rx.lim, c->rx.buf, h->size, c->rx.fds, c->rx.nfds, m);
            if (!user_is_reply(h)) {
                /* a server's request: refused, and the wait goes on (the deadline holds
                 * against a server that floods them) */
                refuse_request(c, h);
                user_rx_next(&c->rx);
                continue;
            }
            if (h->id != id || h->cmd != cmd) {
                uint16_t hid = h->id, hcmd = h->cmd;
                user_rx_next(&c->rx);
                return kill_conn(c, -EPROTO, "the server answered request %u (%s) with a "
                                 "reply to id %u, command %u: the stream is out of step",
                                 id, name, hid, hcmd);
            }
            if (h->flags & USER_F_ERROR) {
                uint32_t e = h->error;
                user_rx_next(&c->rx);
                c->stats.error_replies++;
                if (e == 0 || e > 4095) {
                    note(c, "%s: the server's error reply carries errno %u (taken as EIO)",
                         name, e);
                    return -EIO;
                }
                note(c, "%s: the server said: %s", name, strerror((int)e));
                return -(int)e;
            }
            if (d < 0) {
                user_rx_next(&c->rx);
                return kill_conn(c, d, "the server's reply to %s is malformed (%s)", name,
                                 strerror(-d));
            }
            return 0;
        }
        if (r == 0)
            return kill_conn(c, -ECONNRESET, "the server closed the connection (waiting for "
                             "the reply to %s)", name);
        if (r != -EAGAIN)
            return kill_conn(c, r, "receiving the reply to %s: %s", name, strerror(-r));
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return kill_conn(c, -ETIMEDOUT, "the server did not answer %s within %d ms",
                             name, c->timeout_ms);
        struct pollfd p = {.fd = c->sock, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno != EINTR)
            return kill_conn(c, -errno, "poll: %s", strerror(errno));
    }
}

int user_client_call(struct user_client *c, struct user_out *o, const int *fds,
                     unsigned nfds, struct user_msg *reply)
{
    int r = user_client_dead(c);
    if (r < 0)
        return r;
    user_client_done(c);
    if (o->len < USER_HDR_SIZE)
        return -EINVAL;
    if (nfds > c->send.max_msg_fds)
        return -E2BIG;
    if (o->len > user_max_msg_size(&c->send))
        return -EMSGSIZE;
    uint16_t id = (uint16_t)lv_le_get(o->buf, 2), cmd = (uint16_t)lv_le_get(o->buf + 2, 2);
    c->stats.requests++;
    r = user_send_timed(c->sock, o->buf, o->len, fds, nfds, c->timeout_ms);
    if (r < 0)
        return kill_conn(c, r, "sending %s: %s", user_cmd_name(cmd), strerror(-r));
    return wait_reply(c, id, cmd, reply);
}

/* user_client_call of what o's encoder made (enc: its result, which is returned when it
 * failed); o is freed either way. */
static int encoded_call(struct user_client *c, struct user_out *o, int enc, const int *fds,
                        unsigned nfds, struct user_msg *reply)
{
    int r = enc;
    if (r == 0)
        r = user_client_call(c, o, fds, nfds, reply);
    user_out_free(o);
    return r;
}

/* ------------------------------------------------------------------ handshake, info */

static int version(struct user_client *c)
{
    struct user_caps mine;
    user_caps_default(&mine);
    mine.present = USER_CAP_MAX_MSG_FDS | USER_CAP_MAX_XFER | USER_CAP_PGSIZES |
                   USER_CAP_MAX_DMA_MAPS;
    mine.max_msg_fds = USER_CLIENT_MAX_FDS;
    mine.max_data_xfer_size = USER_DEFAULT_MAX_XFER;
    char json[512];
    if (user_caps_format(json, sizeof json, &mine) < 0)
        return -ENOSPC;
    struct user_out o;
    user_out_init(&o);
    int r = user_enc_version(&o, user_client_id(c), USER_F_REQUEST, 0, 0, json);
    struct user_msg m;
    r = encoded_call(c, &o, r, NULL, 0, &m);
    if (r < 0)
        return r;   /* why: the server's error reply, or what ended the connection */
    if (m.u.version.major != 0) {
        uint16_t major = m.u.version.major;
        user_client_done(c);
        return kill_conn(c, -EPROTONOSUPPORT, "the server speaks vfio-user %u.x, this "
                         "client 0.x", major);
    }
    c->server = m.u.version.caps;
    user_client_done(c);
    user_caps_send_limits(&c->server, &c->send);
    return 0;
}

static int device_info(struct user_client *c)
{
    struct user_out o;
    user_out_init(&o);
    struct user_device_info d = {.argsz = USER_DEVICE_INFO_SIZE};
    int r = user_enc_device_info(&o, user_client_id(c), USER_F_REQUEST, &d);
    struct user_msg m;
    r = encoded_call(c, &o, r, NULL, 0, &m);
    if (r < 0)
        return r;
    c->dev_flags = m.u.device_info.flags;
    c->num_regions = m.u.device_info.num_regions;
    c->num_irqs = m.u.device_info.num_irqs;
    user_client_done(c);
    return 0;
}

/* A region fd this client may map without risking a fault. */
static int fd_mappable(int fd, uint64_t end, enum user_map_policy map)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISCHR(st.st_mode))   /* a device: its mmap refuses what it does not back */
        return map == USER_MAP_DEVICES ? 0 : -EPERM;
    if (!S_ISREG(st.st_mode))
        return -ENODEV;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return -EPERM;   /* the server could shrink it under a mapping: SIGBUS */
    if (st.st_size < 0 || (uint64_t)st.st_size < end)
        return -EINVAL;
    return 0;
}

static void map_region(struct user_client_region *rg, enum user_map_policy map)
{
    if (rg->fd < 0 || !rg->nareas)
        return;
    uint64_t end = 0;
    for (uint32_t i = 0; i < rg->nareas; i++) {
        const struct user_client_area *a = &rg->areas[i];
        uint64_t e = rg->offset + a->offset + a->size;
        if (e < rg->offset || (a->offset | rg->offset) % 4096 || a->size % 4096 ||
            a->size > SIZE_MAX) {
            rg->mmap_errno = EINVAL;   /* wraps or not page aligned */
            return;
        }
        if (e > end)
            end = e;
    }
    int r = fd_mappable(rg->fd, end, map);
    if (r < 0) {
        rg->mmap_errno = -r;
        return;
    }
    int prot = ((rg->flags & VFIO_REGION_INFO_FLAG_READ) ? PROT_READ : 0) |
               ((rg->flags & VFIO_REGION_INFO_FLAG_WRITE) ? PROT_WRITE : 0);
    for (uint32_t i = 0; i < rg->nareas; i++) {
        struct user_client_area *a = &rg->areas[i];
        if (!a->size)
            continue;
        void *p = mmap(NULL, (size_t)a->size, prot, MAP_SHARED, rg->fd,
                       (off_t)(rg->offset + a->offset));
        if (p == MAP_FAILED) {
            rg->mmap_errno = errno;
            continue;
        }
        a->map = p;
    }
}

static int region_info(struct user_client *c, unsigned idx)
{
    struct user_client_region *rg = &c->regions[idx];
    uint32_t argsz = USER_REGION_INFO_SIZE;
    for (int tries = 0; tries < 2; tries++) {
        struct user_out o;
        user_out_init(&o);
        int r = user_enc_region_info_req(&o, user_client_id(c), argsz, idx);
        struct user_msg m;
        r = encoded_call(c, &o, r, NULL, 0, &m);
        if (r < 0) {
            if (c->dead)
                return r;
            rg->info_errno = -r;   /* one region refused: the device goes on (VGA) */
            return 0;
        }
        const struct user_region_info *ri = &m.u.region_info;
        if (ri->index != idx) {
            uint32_t got = ri->index;
            user_client_done(c);
            return kill_conn(c, -EPROTO, "GET_REGION_INFO %u: the server described region "
                             "%u", idx, got);
        }
        if (!ri->complete) {
            uint32_t want = ri->argsz;
            user_client_done(c);
            /* the capability chain did not fit: ask once more with its size, as QEMU
             * does; a server that still sends less is broken */
            if (tries || want > USER_CTRL_MAX - USER_HDR_SIZE)
                return kill_conn(c, -EPROTO, "GET_REGION_INFO %u: the server wants argsz "
                                 "%u and then sent less", idx, want);
            argsz = want;
            continue;
        }
        rg->size = ri->size;
        rg->offset = ri->offset;
        rg->flags = ri->flags;
        rg->has_type = ri->has_type;
        rg->cap_type = ri->cap_type;
        rg->cap_subtype = ri->cap_subtype;
        rg->has_sparse = ri->has_sparse;
        if (ri->has_sparse) {
            if (ri->nsparse > USER_CLIENT_AREAS) {
                rg->mmap_errno = E2BIG;
            } else {
                for (uint32_t i = 0; i < ri->nsparse; i++) {
                    struct user_sparse_area a;
                    user_sparse_get(ri, i, &a);
                    rg->areas[i].offset = a.offset;
                    rg->areas[i].size = a.size;
                }
                rg->nareas = ri->nsparse;
            }
        } else if (ri->flags & VFIO_REGION_INFO_FLAG_MMAP) {
            rg->areas[0].offset = 0;
            rg->areas[0].size = ri->size;
            rg->nareas = 1;
        }
        if (m.nfds == 1) {
            rg->fd = c->rx.fds[0];
            c->rx.fds[0] = -1;   /* taken: user_rx_next leaves it open */
        }
        user_client_done(c);
        if (idx != VFIO_PCI_CONFIG_REGION_INDEX && c->map != USER_MAP_NONE)
            map_region(rg, c->map);
        return 0;
    }
    return -EPROTO;
}

static int irq_info(struct user_client *c, unsigned idx)
{
    struct user_out o;
    user_out_init(&o);
    struct user_irq_info q = {.argsz = USER_IRQ_INFO_SIZE, .index = idx};
    int r = user_enc_irq_info(&o, user_client_id(c), USER_F_REQUEST, &q);
    struct user_msg m;
    r = encoded_call(c, &o, r, NULL, 0, &m);
    if (r < 0) {
        if (c->dead)
            return r;
        c->irq_errno[idx] = -r;
        return 0;
    }
    if (m.u.irq_info.index != idx) {
        uint32_t got = m.u.irq_info.index;
        user_client_done(c);
        return kill_conn(c, -EPROTO, "GET_IRQ_INFO %u: the server described index %u", idx,
                         got);
    }
    c->irqs[idx] = m.u.irq_info;
    user_client_done(c);
    return 0;
}

int user_client_open(struct user_client *c, int sock, int timeout_ms,
                     enum user_map_policy map)
{
    memset(c, 0, sizeof *c);
    c->sock = sock;
    c->map = map;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : USER_CLIENT_TIMEOUT_MS;
    for (unsigned i = 0; i < USER_CLIENT_REGIONS; i++)
        c->regions[i].fd = -1;
    struct user_limits lim;
    user_limits_default(&lim);
    lim.role = USER_ROLE_CLIENT;
    lim.max_msg_fds = USER_CLIENT_MAX_FDS;
    user_rx_init(&c->rx, &lim);
    user_limits_default(&c->send);   /* until the server says: the spec's defaults */
    int fl = fcntl(sock, F_GETFL);
    if (fl < 0 || fcntl(sock, F_SETFL, fl | O_NONBLOCK) < 0) {
        note(c, "the socket: %s", strerror(errno));
        return -errno;
    }
    int r = version(c);
    if (r == 0)
        r = device_info(c);
    for (unsigned i = 0; r == 0 && i < c->num_regions && i < USER_CLIENT_REGIONS; i++)
        r = region_info(c, i);
    for (unsigned i = 0; r == 0 && i < c->num_irqs && i < USER_CLIENT_IRQS; i++)
        r = irq_info(c, i);
    return r;
}

static void unmap_all(struct user_client *c)
{
    for (unsigned i = 0; i < USER_CLIENT_REGIONS; i++) {
        struct user_client_region *rg = &c->regions[i];
        for (uint32_t k = 0; k < rg->nareas && k < USER_CLIENT_AREAS; k++) {
            if (rg->areas[k].map)
                munmap(rg->areas[k].map, (size_t)rg->areas[k].size);
            rg->areas[k].map = NULL;
        }
        rg->nareas = 0;
    }
}

void user_client_borrow(struct user_client *c)
{
    c->borrowers++;
}

void user_client_unborrow(struct user_client *c)
{
    if (c->borrowers && --c->borrowers == 0 && c->sock < 0)
        unmap_all(c);
}

void user_client_close(struct user_client *c)
{
    if (!c->borrowers)
        unmap_all(c);
    for (unsigned i = 0; i < USER_CLIENT_REGIONS; i++) {
        struct user_client_region *rg = &c->regions[i];
        if (rg->fd >= 0)
            close(rg->fd);
        rg->fd = -1;
    }
    user_rx_free(&c->rx);
    if (c->sock >= 0)
        close(c->sock);
    c->sock = -1;
}

/* ------------------------------------------------------------------ regions */

void *user_client_mapped(struct user_client *c, unsigned idx, uint64_t off, uint64_t len)
{
    if (idx >= USER_CLIENT_REGIONS || c->sock < 0)
        return NULL;
    struct user_client_region *rg = &c->regions[idx];
    for (uint32_t i = 0; i < rg->nareas; i++) {
        struct user_client_area *a = &rg->areas[i];
        if (a->map && off >= a->offset && off - a->offset <= a->size &&
            len <= a->size - (off - a->offset))
            return (uint8_t *)a->map + (off - a->offset);
    }
    return NULL;
}

/* Device memory wants one access of the guest's width. */
static void mmio_copy(volatile void *dst, const volatile void *src, uint32_t len, bool load)
{
    switch (len) {
    case 1: *(volatile uint8_t *)dst = *(const volatile uint8_t *)src; break;
    case 2: { uint16_t v = *(const volatile uint16_t *)src; *(volatile uint16_t *)dst = v; break; }
    case 4: { uint32_t v = *(const volatile uint32_t *)src; *(volatile uint32_t *)dst = v; break; }
    case 8: { uint64_t v = *(const volatile uint64_t *)src; *(volatile uint64_t *)dst = v; break; }
    default: memcpy((void *)dst, (const void *)src, len);
    }
    (void)load;
}

static int check_region(struct user_client *c, unsigned idx, uint64_t off, uint32_t len,
                        uint32_t need)
{
    int r = user_client_dead(c);
    if (r < 0)
        return r;
    if (idx >= USER_CLIENT_REGIONS || idx >= c->num_regions)
        return -EINVAL;
    const struct user_client_region *rg = &c->regions[idx];
    if (rg->info_errno)
        return -rg->info_errno;
    if (!(rg->flags & need))
        return -EACCES;
    if (!user_range_in(off, len, rg->size))
        return -EINVAL;
    return 0;
}

static uint32_t chunk(const struct user_client *c, uint32_t left)
{
    uint32_t max = c->send.max_data_xfer_size;
    if (!max || max > USER_XFER_MAX)
        max = USER_DEFAULT_MAX_XFER;
    return left < max ? left : max;
}

/* REGION_READ of len bytes at off into buf, or REGION_WRITE of them from buf (which a
 * write only reads). */
static int region_rw(struct user_client *c, bool write, unsigned idx, uint64_t off,
                     uint8_t *buf, uint32_t len)
{
    int r = check_region(c, idx, off, len,
                         write ? VFIO_REGION_INFO_FLAG_WRITE : VFIO_REGION_INFO_FLAG_READ);
    if (r < 0)
        return r;
    if (len && (len <= 8 && off % len == 0)) {
        void *p = user_client_mapped(c, idx, off, len);
        if (p) {
            if (write)
                mmio_copy(p, buf, len, false);
            else
                mmio_copy(buf, p, len, true);
            return 0;
        }
    }
    while (len) {
        uint32_t n = chunk(c, len);
        struct user_out o;
        user_out_init(&o);
        r = user_enc_region_rw(&o, user_client_id(c),
                               write ? USER_REGION_WRITE : USER_REGION_READ, USER_F_REQUEST,
                               off, idx, n, write ? buf : NULL);
        struct user_msg m;
        r = encoded_call(c, &o, r, NULL, 0, &m);
        if (write)
            c->stats.region_writes++;
        else
            c->stats.region_reads++;
        if (r < 0)
            return r;
        const struct user_region_rw *rw = &m.u.region_rw;
        bool ok = rw->region == idx && rw->offset == off && rw->count == n &&
                  (write || rw->data);
        if (ok && !write)
            memcpy(buf, rw->data, n);
        user_client_done(c);   /* rw's fields stay: only its data is the receive buffer's */
        if (!ok && write)
            return kill_conn(c, -EPROTO, "REGION_WRITE: the server's reply names another "
                             "access than region %u +%#llx, %u bytes", idx,
                             (unsigned long long)off, n);
        if (!ok)
            return kill_conn(c, -EPROTO, "REGION_READ: the server answered region %u "
                             "+%#llx for %u bytes with region %u +%#llx, %u bytes", idx,
                             (unsigned long long)off, n, rw->region,
                             (unsigned long long)rw->offset, rw->count);
        buf += n, off += n, len -= n;
    }
    return 0;
}

int user_client_region_read(struct user_client *c, unsigned idx, uint64_t off, void *buf,
                            uint32_t len)
{
    return region_rw(c, false, idx, off, buf, len);
}

int user_client_region_write(struct user_client *c, unsigned idx, uint64_t off,
                             const void *buf, uint32_t len)
{
    return region_rw(c, true, idx, off, (uint8_t *)buf, len);
}

/* ------------------------------------------------------------------ irqs, dma, reset */

static int simple_call(struct user_client *c, struct user_out *o, int enc, const int *fds,
                       unsigned nfds)
{
    struct user_msg m;
    int r = encoded_call(c, o, enc, fds, nfds, &m);
    if (r == 0)
        user_client_done(c);
    return r;
}

int user_client_set_irqs(struct user_client *c, uint32_t index, uint32_t flags,
                         uint32_t start, uint32_t count, const int *fds,
                         const uint8_t *bools)
{
    int r = user_client_dead(c);
    if (r < 0)
        return r;
    bool eventfds = (flags & VFIO_IRQ_SET_DATA_EVENTFD) != 0;
    uint32_t step = eventfds ? c->send.max_msg_fds : (count ? count : 1);
    if (eventfds && count && !step)
        return -E2BIG;   /* the server takes no fds at all */
    uint32_t done = 0;
    do {
        uint32_t n = count - done < step ? count - done : step;
        struct user_irq_set s = {.flags = flags, .index = index, .start = start + done,
                                 .count = n, .bools = bools ? bools + done : NULL};
        struct user_out o;
        user_out_init(&o);
        r = simple_call(c, &o, user_enc_irq_set(&o, user_client_id(c), USER_F_REQUEST, &s),
                        eventfds ? fds + done : NULL, eventfds ? n : 0);
        if (r < 0)
            return r;
        done += n;
    } while (done < count);
    return 0;
}

int user_client_dma_map(struct user_client *c, int fd, uint64_t offset, uint64_t iova,
                        uint64_t size, uint32_t prot)
{
    int r = user_client_dead(c);
    if (r < 0)
        return r;
    struct user_dma_map d = {.argsz = USER_DMA_MAP_SIZE, .flags = prot, .offset = offset,
                             .addr = iova, .size = size};
    struct user_out o;
    user_out_init(&o);
    return simple_call(c, &o, user_enc_dma_map(&o, user_client_id(c), USER_F_REQUEST, &d),
                       fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0);
}

int user_client_dma_unmap(struct user_client *c, uint64_t iova, uint64_t size, bool all)
{
    int r = user_client_dead(c);
    if (r < 0)
        return r;
    struct user_dma_unmap d = {.argsz = USER_DMA_UNMAP_SIZE,
                               .flags = all ? USER_DMA_UNMAP_ALL : 0,
                               .addr = all ? 0 : iova, .size = all ? 0 : size};
    struct user_out o;
    user_out_init(&o);
    return simple_call(c, &o, user_enc_dma_unmap(&o, user_client_id(c), USER_F_REQUEST, &d),
                       NULL, 0);
}

int user_client_reset(struct user_client *c)
{
    int r = user_client_dead(c);
    if (r < 0)
        return r;
    struct user_out o;
    user_out_init(&o);
    return simple_call(c, &o, user_enc_empty(&o, user_client_id(c), USER_DEVICE_RESET,
                                             USER_F_REQUEST),
                       NULL, 0);
}
