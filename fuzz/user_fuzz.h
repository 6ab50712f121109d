/* The vfio-user fuzz targets' shared body (user_server_fuzz.c, user_client_fuzz.c): what
 * a peer can send to one end of a connection, run through that end's framing and its one
 * decoder under its limits.
 *
 * An input is a small program (input.h): a byte of setup (path, a spare bit, the
 * fd limit), the transfer limit, then either
 *   - direct: one message decoded from the input's bytes (its header's size set to
 *     their length, or left as the input says), with up to 6 fds from a pool; or
 *   - socket: up to 8 writes into a socketpair, each of any length and with any fds of
 *     the pool (memfds long and empty, an eventfd, a pipe, a socket, /dev/null), the
 *     receiving end's user_recv called after each and every whole message decoded,
 *     the writer closing early when the input says.
 * Invariants beyond ASan/UBSan: after every input the process holds the same fds as
 * before (whatever the framing refused was closed); a message that decodes is touched
 * whole (data, sparse areas, sub-regions, writes) inside its buffer; re-encoded with the
 * encoder of its kind it decodes again, to the same command, id, type and data. */
#pragma once
#include "fds.h"
#include "input.h"
#include "user/user_msg.h"
#include "user/user_sock.h"
#include "user/user_version.h"
#include "base/le.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define POOL 7
static int pool[POOL];
static int fds_at_start = -1; /* fds open when the input began */
static struct user_out fz_out;

static void fz_init(void)
{
    int p[2], s[2];
    pool[0] = memfd_create("fz", MFD_CLOEXEC);
    if (pool[0] < 0 || ftruncate(pool[0], 0x10000) < 0)
        abort();
    pool[1] = memfd_create("fz0", MFD_CLOEXEC);
    pool[2] = eventfd(0, EFD_CLOEXEC);
    if (pipe2(p, O_CLOEXEC) < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) < 0)
        abort();
    pool[3] = p[0], pool[4] = s[0], pool[5] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pool[6] = eventfd(0, EFD_CLOEXEC);
    user_out_init(&fz_out);
}

static volatile uint8_t sink;

static void touch(const uint8_t *p, size_t n)
{
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= p[i];
    sink ^= x;
}

/* Touch what the decode says is there, and re-encode it with its kind's encoder. */
static int reencode(const struct user_msg *m)
{
    struct user_out *o = &fz_out;
    uint32_t fl = m->hdr.flags & (USER_F_TYPE_MASK | USER_F_NO_REPLY);
    bool reply = user_is_reply(&m->hdr);
    uint16_t id = m->hdr.id, cmd = m->hdr.cmd;
    if (reply && (m->hdr.flags & USER_F_ERROR))
        return user_enc_error(o, &m->hdr, m->hdr.error);
    if (!m->has_payload)
        return user_enc_empty(o, id, cmd, fl);
    switch (cmd) {
    case USER_VERSION: {
        const struct user_version *v = &m->u.version;
        if (v->json)
            touch((const uint8_t *)v->json, v->json_len + 1);
        return user_enc_version(o, id, fl, v->major, v->minor, v->json);
    }
    case USER_DMA_MAP:
        return user_enc_dma_map(o, id, fl, &m->u.dma_map);
    case USER_DMA_UNMAP:
        return user_enc_dma_unmap(o, id, fl, &m->u.dma_unmap);
    case USER_DEVICE_GET_INFO:
        return user_enc_device_info(o, id, fl, &m->u.device_info);
    case USER_DEVICE_GET_REGION_INFO: {
        const struct user_region_info *ri = &m->u.region_info;
        if (!reply)
            return user_enc_region_info_req(o, id, ri->argsz, ri->index);
        static struct user_sparse_area a[USER_CTRL_MAX / USER_SPARSE_AREA_SIZE];
        for (uint32_t i = 0; i < ri->nsparse; i++)
            user_sparse_get(ri, i, &a[i]);
        return user_enc_region_info_reply(o, &m->hdr, ri->complete ? UINT32_MAX : 0, ri, a,
                                          ri->nsparse);
    }
    case USER_DEVICE_GET_REGION_IO_FDS: {
        const struct user_io_fds *io = &m->u.io_fds;
        if (!reply)
            return user_enc_io_fds_req(o, id, io->argsz, io->index);
        static struct user_io_fd_sub s[USER_CTRL_MAX / USER_IO_FD_SUB_SIZE];
        if (io->complete)
            for (uint32_t i = 0; i < io->count; i++)
                user_io_fd_sub_get(io, i, &s[i]);
        return user_enc_io_fds_reply(o, &m->hdr, io->complete ? UINT32_MAX : 0, io->index,
                                     s, io->complete ? io->count : io->count);
    }
    case USER_DEVICE_GET_IRQ_INFO:
        return user_enc_irq_info(o, id, fl, &m->u.irq_info);
    case USER_DEVICE_SET_IRQS:
        if (m->u.irq_set.bools)
            touch(m->u.irq_set.bools, m->u.irq_set.count);
        return user_enc_irq_set(o, id, fl, &m->u.irq_set);
    case USER_REGION_READ:
    case USER_REGION_WRITE: {
        const struct user_region_rw *rw = &m->u.region_rw;
        if (rw->data)
            touch(rw->data, rw->count);
        return user_enc_region_rw(o, id, cmd, fl, rw->offset, rw->region, rw->count, rw->data);
    }
    case USER_DMA_READ:
    case USER_DMA_WRITE: {
        const struct user_dma_rw *rw = &m->u.dma_rw;
        if (rw->data)
            touch(rw->data, rw->count);
        return user_enc_dma_rw(o, id, cmd, fl, rw->addr, rw->count, rw->data);
    }
    case USER_REGION_WRITE_MULTI: {
        const struct user_write_multi *wm = &m->u.write_multi;
        static struct user_write_one w[USER_WRITE_MULTI_MAX];
        if (reply)
            return user_enc_write_multi(o, id, fl, NULL, wm->wr_cnt);
        for (uint64_t i = 0; i < wm->wr_cnt; i++)
            user_write_one_get(wm, i, &w[i]);
        return user_enc_write_multi(o, id, fl, w, wm->wr_cnt);
    }
    }
    abort();   /* a command that decodes has an encoder */
}

static void decoded(const struct user_limits *lim, const uint8_t *buf, uint32_t len,
                    const int *fds, unsigned nfds)
{
    struct user_msg m, m2;
    if (user_decode(lim, buf, len, fds, nfds, &m) < 0)
        return;
    if (m.body_len && (m.body < buf || m.body + m.body_len != buf + len))
        abort();
    int r = reencode(&m);
    if (r == -EMSGSIZE)
        return;   /* a reply too large to build again (chain data the encoder makes bigger) */
    if (r < 0) {
        fprintf(stderr, "user_fuzz: re-encoding command %u failed: %d\n", m.hdr.cmd, r);
        abort();
    }
    uint8_t *copy = malloc(fz_out.len);
    memcpy(copy, fz_out.buf, fz_out.len);
    r = user_decode(lim, copy, (uint32_t)fz_out.len, fds, nfds, &m2);
    bool same = r == 0 && m2.hdr.cmd == m.hdr.cmd && m2.hdr.id == m.hdr.id &&
                (m2.hdr.flags & USER_F_TYPE_MASK) == (m.hdr.flags & USER_F_TYPE_MASK);
    if (same && (m.hdr.cmd == USER_REGION_READ || m.hdr.cmd == USER_REGION_WRITE) &&
        m.u.region_rw.data)
        same = m2.u.region_rw.count == m.u.region_rw.count &&
               memcmp(m2.u.region_rw.data, m.u.region_rw.data, m.u.region_rw.count) == 0;
    if (same && (m.hdr.cmd == USER_DMA_READ || m.hdr.cmd == USER_DMA_WRITE) && m.u.dma_rw.data)
        same = m2.u.dma_rw.count == m.u.dma_rw.count &&
               memcmp(m2.u.dma_rw.data, m.u.dma_rw.data, m.u.dma_rw.count) == 0;
    if (same && m.hdr.cmd == USER_DEVICE_GET_REGION_INFO && user_is_reply(&m.hdr) &&
        m.has_payload)
        same = m2.u.region_info.nsparse == m.u.region_info.nsparse &&
               m2.u.region_info.size == m.u.region_info.size &&
               m2.u.region_info.has_type == m.u.region_info.has_type;
    free(copy);
    if (!same) {
        fprintf(stderr, "user_fuzz: command %u decodes (%d) otherwise once re-encoded\n",
                m.hdr.cmd, r);
        abort();
    }
}

static int fz_run(const uint8_t *data, size_t size, enum user_role role)
{
    if (fds_at_start < 0)
        fz_init();
    fds_at_start = fz_open_fds();   /* per input: libFuzzer opens files of its own */
    struct in in = {data, size};
    unsigned setup = (unsigned)take(&in, 1);
    static const uint32_t xfers[4] = {0, 8, 4096, 1u << 20};
    static const uint32_t maxfds[4] = {0, 1, 4, 16};
    struct user_limits lim;
    user_limits_default(&lim);
    lim.role = role;
    lim.max_msg_fds = maxfds[(setup >> 2) & 3];
    lim.max_data_xfer_size = xfers[(setup >> 4) & 3];
    int fds[USER_FDS_MAX];
    if (!(setup & 1)) {
        /* direct: the rest is one message */
        unsigned nf = (unsigned)take(&in, 1) % 7;
        for (unsigned i = 0; i < nf; i++)
            fds[i] = pool[take(&in, 1) % POOL];
        uint8_t *buf = malloc(in.n ? in.n : 1);
        memcpy(buf, in.p, in.n);
        if ((setup & 0x40) && in.n >= 8)
            lv_le_put(buf + 4, in.n, 4);
        decoded(&lim, buf, (uint32_t)in.n, fds, nf);
        free(buf);
        return 0;
    }
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        abort();
    struct user_rx rx;
    user_rx_init(&rx, &lim);
    unsigned writes = (unsigned)take(&in, 1) % 9;
    for (unsigned w = 0; w < writes && in.n; w++) {
        unsigned ctl = (unsigned)take(&in, 1);
        size_t len = (size_t)take(&in, 2);
        unsigned nf = ctl % 8;
        for (unsigned i = 0; i < nf; i++)
            fds[i] = pool[take(&in, 1) % POOL];
        if (len > in.n)
            len = in.n;
        if (len) {
            uint8_t *b = malloc(len);
            memcpy(b, in.p, len);
            if ((ctl & 0x40) && len >= 8)
                lv_le_put(b + 4, len, 4);   /* a header that claims this write */
            user_send_raw(sp[0], b, len, nf ? fds : NULL, len ? nf : 0);
            free(b);
            in.p += len, in.n -= len;
        }
        if (ctl & 0x80) {
            close(sp[0]);
            sp[0] = -1;
        }
        for (;;) {
            int r = user_recv(&rx, sp[1]);
            if (r != 1)
                break;
            decoded(&lim, rx.buf, rx.hdr.size, rx.fds, rx.nfds);
            user_rx_next(&rx);
        }
        if (sp[0] < 0)
            break;
    }
    user_rx_free(&rx);
    if (sp[0] >= 0)
        close(sp[0]);
    close(sp[1]);
    if (fz_open_fds() != fds_at_start) {
        fprintf(stderr, "user_fuzz: fds leaked: %d open, %d at start\n", fz_open_fds(),
                fds_at_start);
        abort();
    }
    return 0;
}
