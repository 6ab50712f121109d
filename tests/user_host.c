/* user_host: the vfio-user protocol layer (csrc/user) over a socketpair, without Lua.
 *
 *   - every message kind, request and reply, encodes, crosses the socket with its fds
 *     (SCM_RIGHTS) and decodes to the fields it was made from: VERSION with its JSON
 *     capabilities (and a twin socket fd), DMA_MAP with a memfd and without an fd,
 *     DMA_UNMAP (and "all"), DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (sparse mmap and
 *     type capabilities, an fd, and a reply cut short by a small argsz),
 *     DEVICE_GET_REGION_IO_FDS, DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS (eventfds, bools,
 *     none), REGION_READ/WRITE (and a posted write), DMA_READ/WRITE in the spec's layout
 *     and QEMU's, DEVICE_RESET, REGION_WRITE_MULTI, an error reply; a message arriving
 *     in pieces on a non-blocking read;
 *   - every hostile case is refused with its errno and leaves no fd behind (the entries
 *     of /proc/self/fd counted before and after): framing (a size below the header, a
 *     bad type, a size past the limits, more fds than max_msg_fds, control data the
 *     kernel truncated, a peer gone mid-message with fds in flight, a clean close), and
 *     decoding (counts past the body or the transfer limit, offsets that wrap, bad
 *     flags, capability chains that loop or leave the payload, sparse areas outside the
 *     region, sub-region fd indices past the fds, fds where none belong, a DMA_MAP fd
 *     that is no file or too short, a SET_IRQS fd that is no eventfd, the wrong
 *     direction, an unknown command, version JSON of the wrong types, too deep, too
 *     long, duplicated or trailing).
 * Prints "ok: ..." on stderr and exits 0, else "FAIL: ..." lines and 1. */
#include "user/user_msg.h"
#include "user/user_sock.h"
#include "user/user_version.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static int failures, checks;

static void check(int ok, const char *what, int line)
{
    checks++;
    if (!ok) {
        fprintf(stderr, "FAIL: line %d: %s\n", line, what);
        failures++;
    }
}
#define CHECK(c) check((c), #c, __LINE__)
#define CHECK_EQ(a, b)                                                                   \
    do {                                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);                              \
        checks++;                                                                        \
        if (a_ != b_) {                                                                  \
            fprintf(stderr, "FAIL: line %d: %s == %lld, expected %s == %lld\n", __LINE__, \
                    #a, a_, #b, b_);                                                     \
            failures++;                                                                  \
        }                                                                                \
    } while (0)

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int sp[2] = {-1, -1};
static struct user_rx rx;
static struct user_out o;
static struct user_limits lim;

static void reconnect(void)
{
    if (sp[0] >= 0) {
        close(sp[0]);
        close(sp[1]);
    }
    user_rx_free(&rx);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        perror("socketpair");
        exit(1);
    }
    user_rx_init(&rx, &lim);
}

static int memfd(size_t size)
{
    int fd = memfd_create("user_host", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror("memfd");
        exit(1);
    }
    return fd;
}

/* Send o's message with fds, receive and decode it (the receiver keeps its fds in rx
 * until the next call): the decode's result, or user_recv's when that fails. */
static struct user_msg m;
static int xfer(const int *fds, unsigned n)
{
    user_rx_next(&rx);
    if (user_out_end(&o) < 0 || user_send(sp[0], o.buf, o.len, fds, n) < 0)
        return -9999;
    int r = user_recv(&rx, sp[1]);
    if (r != 1)
        return r == 0 ? -9998 : r;
    return user_decode(&rx.lim, rx.buf, rx.hdr.size, rx.fds, rx.nfds, &m);
}

/* Raw bytes at the receiver, then decode (the header's size is patched to len unless
 * keep_size). */
static int raw(const uint8_t *b, size_t len, const int *fds, unsigned n)
{
    user_rx_next(&rx);
    if (user_send_raw(sp[0], b, len, fds, n) < 0)
        return -9999;
    int r = user_recv(&rx, sp[1]);
    if (r != 1)
        return r == 0 ? -9998 : r;
    return user_decode(&rx.lim, rx.buf, rx.hdr.size, rx.fds, rx.nfds, &m);
}

static void roundtrips(void)
{
    struct user_hdr req = {.id = 7, .cmd = 0};

    /* VERSION with QEMU's capabilities, request and reply with a twin socket */
    struct user_caps c;
    user_caps_default(&c);
    c.present = USER_CAP_MAX_MSG_FDS | USER_CAP_MAX_XFER | USER_CAP_PGSIZES |
                USER_CAP_MAX_DMA_MAPS | USER_CAP_MIGRATION | USER_CAP_WRITE_MULTIPLE;
    c.max_msg_fds = 16, c.max_data_xfer_size = 1 << 20, c.mig_max_bitmap_size = 256 << 20;
    c.write_multiple = true;
    char json[512];
    CHECK(user_caps_format(json, sizeof json, &c) > 0);
    CHECK(user_enc_version(&o, 1, USER_F_REQUEST, 0, 0, json) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.hdr.cmd, USER_VERSION);
    CHECK_EQ(m.hdr.id, 1);
    CHECK_EQ(m.u.version.caps.max_msg_fds, 16);
    CHECK_EQ(m.u.version.caps.max_data_xfer_size, 1 << 20);
    CHECK_EQ(m.u.version.caps.mig_max_bitmap_size, 256 << 20);
    CHECK_EQ(m.u.version.caps.mig_pgsize, 4096);
    CHECK(m.u.version.caps.write_multiple);
    CHECK_EQ(m.u.version.caps.present, c.present);
    CHECK(strcmp(m.u.version.json, json) == 0);
    c.present = USER_CAP_TWIN_SOCKET | USER_CAP_MAX_MSG_FDS;
    c.twin_supported = true, c.twin_fd_index = 0;
    CHECK(user_caps_format(json, sizeof json, &c) > 0);
    int twin[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, twin) == 0);
    CHECK(user_enc_version(&o, 1, USER_F_REPLY, 0, 0, json) == 0);
    CHECK_EQ(xfer(&twin[1], 1), 0);
    CHECK(m.u.version.caps.twin_supported);
    CHECK_EQ(m.u.version.caps.twin_fd_index, 0);
    CHECK_EQ(m.nfds, 1);
    close(twin[0]), close(twin[1]);
    CHECK(user_enc_version(&o, 2, USER_F_REQUEST, 0, 0, NULL) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.u.version.json == NULL);
    CHECK_EQ(m.u.version.caps.max_msg_fds, 1);   /* the spec's default */

    /* DMA_MAP with a memfd (as QEMU sends guest RAM) and without an fd */
    int mfd = memfd(0x10000);
    struct user_dma_map dm = {.flags = 3, .offset = 0x1000, .addr = 0xfee00000, .size = 0x8000};
    CHECK(user_enc_dma_map(&o, 3, USER_F_REQUEST, &dm) == 0);
    CHECK_EQ(xfer(&mfd, 1), 0);
    CHECK_EQ(m.u.dma_map.argsz, 32);
    CHECK_EQ(m.u.dma_map.flags, 3);
    CHECK_EQ(m.u.dma_map.offset, 0x1000);
    CHECK_EQ(m.u.dma_map.addr, 0xfee00000);
    CHECK_EQ(m.u.dma_map.size, 0x8000);
    CHECK_EQ(m.nfds, 1);
    CHECK(m.fds[0] != mfd && m.fds[0] >= 0);
    dm.offset = 0;
    CHECK(user_enc_dma_map(&o, 4, USER_F_REQUEST, &dm) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.nfds, 0);
    req.cmd = USER_DMA_MAP;
    CHECK(user_enc_empty(&o, 4, USER_DMA_MAP, USER_F_REPLY) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(!m.has_payload);

    /* DMA_UNMAP and its reply (the entry), and unmap all */
    struct user_dma_unmap du = {.addr = 0xfee00000, .size = 0x8000};
    CHECK(user_enc_dma_unmap(&o, 5, USER_F_REQUEST, &du) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.dma_unmap.argsz, 24);
    CHECK_EQ(m.u.dma_unmap.addr, 0xfee00000);
    CHECK_EQ(m.u.dma_unmap.size, 0x8000);
    CHECK(user_enc_dma_unmap(&o, 5, USER_F_REPLY, &du) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.has_payload && m.u.dma_unmap.size == 0x8000);
    du = (struct user_dma_unmap){.flags = USER_DMA_UNMAP_ALL};
    CHECK(user_enc_dma_unmap(&o, 6, USER_F_REQUEST, &du) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.dma_unmap.flags, USER_DMA_UNMAP_ALL);

    /* DEVICE_GET_INFO */
    struct user_device_info di = {.argsz = 16};
    CHECK(user_enc_device_info(&o, 8, USER_F_REQUEST, &di) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.device_info.argsz, 16);
    di = (struct user_device_info){.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
                                   .num_regions = 9, .num_irqs = 5};
    CHECK(user_enc_device_info(&o, 8, USER_F_REPLY, &di) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.device_info.flags, VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    CHECK_EQ(m.u.device_info.num_regions, 9);
    CHECK_EQ(m.u.device_info.num_irqs, 5);

    /* DEVICE_GET_REGION_INFO: the request, a reply with both capabilities and an fd,
     * and the same reply to a request whose argsz holds only the fixed part */
    CHECK(user_enc_region_info_req(&o, 9, 32, 0) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.region_info.argsz, 32);
    CHECK_EQ(m.u.region_info.index, 0);
    struct user_region_info ri = {.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
                                           VFIO_REGION_INFO_FLAG_MMAP,
                                  .index = 0, .size = 0x4000, .offset = 0x10000,
                                  .has_type = true, .cap_type = 3, .cap_subtype = 4};
    struct user_sparse_area areas[2] = {{0x1000, 0x1000}, {0x3000, 0x1000}};
    req.id = 9, req.cmd = USER_DEVICE_GET_REGION_INFO;
    CHECK(user_enc_region_info_reply(&o, &req, 4096, &ri, areas, 2) == 0);
    CHECK_EQ(xfer(&mfd, 1), 0);
    CHECK(m.u.region_info.complete);
    CHECK(m.u.region_info.flags & VFIO_REGION_INFO_FLAG_CAPS);
    CHECK_EQ(m.u.region_info.argsz, 32 + 16 + 32 + 16);
    CHECK_EQ(m.u.region_info.size, 0x4000);
    CHECK_EQ(m.u.region_info.offset, 0x10000);
    CHECK(m.u.region_info.has_sparse);
    CHECK_EQ(m.u.region_info.nsparse, 2);
    struct user_sparse_area a;
    user_sparse_get(&m.u.region_info, 1, &a);
    CHECK(a.offset == 0x3000 && a.size == 0x1000);
    CHECK(m.u.region_info.has_type && m.u.region_info.cap_type == 3 &&
          m.u.region_info.cap_subtype == 4);
    CHECK_EQ(m.nfds, 1);
    CHECK(user_enc_region_info_reply(&o, &req, 32, &ri, areas, 2) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(!m.u.region_info.complete);
    CHECK_EQ(m.u.region_info.argsz, 96);
    CHECK(!m.u.region_info.has_sparse);

    /* DEVICE_GET_REGION_IO_FDS */
    CHECK(user_enc_io_fds_req(&o, 10, 256, 2) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.io_fds.index, 2);
    int efd = eventfd(0, EFD_CLOEXEC);
    struct user_io_fd_sub subs[2] = {{.offset = 0x100, .size = 4, .fd_index = 0, .data = 7},
                                     {.offset = 0x200, .size = 4, .fd_index = 0,
                                      .type = USER_IO_FD_TYPE_IOEVENTFD}};
    req.id = 10, req.cmd = USER_DEVICE_GET_REGION_IO_FDS;
    CHECK(user_enc_io_fds_reply(&o, &req, 256, 2, subs, 2) == 0);
    CHECK_EQ(xfer(&efd, 1), 0);
    CHECK(m.u.io_fds.complete);
    CHECK_EQ(m.u.io_fds.count, 2);
    struct user_io_fd_sub s;
    user_io_fd_sub_get(&m.u.io_fds, 0, &s);
    CHECK(s.offset == 0x100 && s.size == 4 && s.data == 7 && s.fd_index == 0);

    /* DEVICE_GET_IRQ_INFO */
    struct user_irq_info ii = {.index = VFIO_PCI_MSIX_IRQ_INDEX};
    CHECK(user_enc_irq_info(&o, 11, USER_F_REQUEST, &ii) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.irq_info.index, VFIO_PCI_MSIX_IRQ_INDEX);
    ii.flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, ii.count = 8;
    CHECK(user_enc_irq_info(&o, 11, USER_F_REPLY, &ii) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.irq_info.count, 8);
    CHECK_EQ(m.u.irq_info.flags, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE);

    /* DEVICE_SET_IRQS: eventfds (as QEMU sends them: no data, one fd a vector), bools,
     * none (disable all) */
    int efds[3] = {eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC)};
    struct user_irq_set is = {.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                              .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 1, .count = 3};
    CHECK(user_enc_irq_set(&o, 12, USER_F_REQUEST, &is) == 0);
    CHECK_EQ(xfer(efds, 3), 0);
    CHECK_EQ(m.u.irq_set.start, 1);
    CHECK_EQ(m.u.irq_set.count, 3);
    CHECK_EQ(m.nfds, 3);
    CHECK_EQ(xfer(NULL, 0), 0);   /* no fds: de-assign */
    uint8_t bools[4] = {1, 0, 1, 1};
    is = (struct user_irq_set){.flags = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK,
                               .index = 2, .start = 0, .count = 4, .bools = bools};
    CHECK(user_enc_irq_set(&o, 13, USER_F_REQUEST, &is) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.irq_set.argsz, 24);
    CHECK(m.u.irq_set.bools && memcmp(m.u.irq_set.bools, bools, 4) == 0);
    is = (struct user_irq_set){.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                               .index = 2};
    CHECK(user_enc_irq_set(&o, 14, USER_F_REQUEST, &is) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(user_enc_empty(&o, 14, USER_DEVICE_SET_IRQS, USER_F_REPLY) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);

    /* REGION_READ/WRITE both ways, and a posted write */
    uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(user_enc_region_rw(&o, 15, USER_REGION_READ, USER_F_REQUEST, 0x40, 1, 4, NULL) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.u.region_rw.offset == 0x40 && m.u.region_rw.region == 1 && m.u.region_rw.count == 4);
    CHECK(m.u.region_rw.data == NULL);
    CHECK(user_enc_region_rw(&o, 15, USER_REGION_READ, USER_F_REPLY, 0x40, 1, 4, data) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.u.region_rw.data && memcmp(m.u.region_rw.data, data, 4) == 0);
    CHECK(user_enc_region_rw(&o, 16, USER_REGION_WRITE, USER_F_REQUEST | USER_F_NO_REPLY,
                             0x44, 1, 8, data) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.hdr.flags & USER_F_NO_REPLY);
    CHECK(m.u.region_rw.count == 8 && memcmp(m.u.region_rw.data, data, 8) == 0);
    CHECK(user_enc_region_rw(&o, 16, USER_REGION_WRITE, USER_F_REPLY, 0x44, 1, 8, NULL) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.u.region_rw.data == NULL && m.u.region_rw.count == 8);

    /* DMA_READ/WRITE: address, an 8-byte count, data at 16 (as QEMU 11.1 sends them) */
    CHECK(user_enc_dma_rw(&o, 17, USER_DMA_READ, USER_F_REQUEST, 0x2000, 8, NULL) == 0);
    CHECK_EQ(o.len, 32);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.u.dma_rw.addr == 0x2000 && m.u.dma_rw.count == 8 && !m.u.dma_rw.data);
    CHECK(user_enc_dma_rw(&o, 17, USER_DMA_READ, USER_F_REPLY, 0x2000, 8, data) == 0);
    CHECK_EQ(o.len, 40);   /* 16 + 16 + 8 */
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.u.dma_rw.data && memcmp(m.u.dma_rw.data, data, 8) == 0);
    CHECK(user_enc_dma_rw(&o, 18, USER_DMA_WRITE, USER_F_REQUEST, 0x2000, 5, data) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.u.dma_rw.count == 5 && memcmp(m.u.dma_rw.data, data, 5) == 0);
    CHECK(user_enc_dma_rw(&o, 18, USER_DMA_WRITE, USER_F_REPLY, 0x2000, 5, NULL) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.u.dma_rw.count == 5);
    /* a 4-byte count with the data at payload offset 12: its first bytes become the count's
     * high half, far past the limit (as QEMU 11.1 refuses such a message: E2BIG) */
    user_out_begin(&o, 19, USER_DMA_READ, USER_F_REPLY, 0);
    user_out_put(&o, 0x3000, 8);
    user_out_put(&o, 4, 4);
    user_out_bytes(&o, "abcd", 4);
    user_out_put(&o, 0, 4);
    CHECK_EQ(xfer(NULL, 0), -E2BIG);
    user_out_begin(&o, 19, USER_DMA_WRITE, USER_F_REPLY, 0);   /* a header-only reply */
    CHECK_EQ(xfer(NULL, 0), 0);

    /* DEVICE_RESET, REGION_WRITE_MULTI, an error reply */
    CHECK(user_enc_empty(&o, 20, USER_DEVICE_RESET, USER_F_REQUEST) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.hdr.cmd, USER_DEVICE_RESET);
    struct user_write_one w[2] = {{.offset = 0x10, .region = 0, .count = 4, .data = {9, 9, 9, 9}},
                                  {.offset = 0x18, .region = 2, .count = 8}};
    CHECK(user_enc_write_multi(&o, 21, USER_F_REQUEST | USER_F_NO_REPLY, w, 2) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK_EQ(m.u.write_multi.wr_cnt, 2);
    struct user_write_one w1;
    user_write_one_get(&m.u.write_multi, 0, &w1);
    CHECK(w1.offset == 0x10 && w1.count == 4 && w1.data[3] == 9);
    req.id = 22, req.cmd = USER_REGION_READ;
    CHECK(user_enc_error(&o, &req, EINVAL) == 0);
    CHECK_EQ(xfer(NULL, 0), 0);
    CHECK(m.hdr.flags & USER_F_ERROR);
    CHECK_EQ(m.hdr.error, EINVAL);
    CHECK(!m.has_payload);

    /* a message in pieces on a non-blocking read */
    CHECK(user_enc_region_rw(&o, 23, USER_REGION_WRITE, USER_F_REQUEST, 0, 0, 8, data) == 0);
    user_rx_next(&rx);
    CHECK(user_send_raw(sp[0], o.buf, 10, NULL, 0) == 0);
    CHECK_EQ(user_recv(&rx, sp[1]), -EAGAIN);
    CHECK(user_send_raw(sp[0], o.buf + 10, 20, NULL, 0) == 0);
    CHECK_EQ(user_recv(&rx, sp[1]), -EAGAIN);
    CHECK(user_send_raw(sp[0], o.buf + 30, o.len - 30, NULL, 0) == 0);
    CHECK_EQ(user_recv(&rx, sp[1]), 1);
    CHECK_EQ(user_decode(&rx.lim, rx.buf, rx.hdr.size, rx.fds, rx.nfds, &m), 0);
    CHECK(memcmp(m.u.region_rw.data, data, 8) == 0);
    user_rx_next(&rx);

    close(mfd), close(efd);
    for (int i = 0; i < 3; i++)
        close(efds[i]);
}

/* --------------------------------------------------------------- hostile framing */

static void put_hdr(uint8_t *b, uint16_t id, uint16_t cmd, uint32_t size, uint32_t flags)
{
    memset(b, 0, 16);
    b[0] = (uint8_t)id, b[1] = (uint8_t)(id >> 8);
    b[2] = (uint8_t)cmd, b[3] = (uint8_t)(cmd >> 8);
    for (int i = 0; i < 4; i++)
        b[4 + i] = (uint8_t)(size >> (8 * i)), b[8 + i] = (uint8_t)(flags >> (8 * i));
}

static void hostile_framing(void)
{
    uint8_t b[64] = {0};
    int fds[USER_FDS_MAX + 8];
    for (unsigned i = 0; i < USER_FDS_MAX + 8; i++)
        fds[i] = eventfd(0, EFD_CLOEXEC);

    int before = open_fds();
    /* a size below the header */
    reconnect();
    put_hdr(b, 1, USER_DEVICE_RESET, 8, 0);
    CHECK_EQ(raw(b, 16, fds, 1), -EINVAL);
    CHECK_EQ(user_recv(&rx, sp[1]), -EINVAL);   /* the stream stays refused */
    /* a type that is neither request nor reply */
    reconnect();
    put_hdr(b, 1, USER_DEVICE_RESET, 16, 2);
    CHECK_EQ(raw(b, 16, fds, 1), -EINVAL);
    /* a size past the limits: the header stays for the error reply */
    reconnect();
    put_hdr(b, 77, USER_REGION_WRITE, user_max_msg_size(&lim) + 1, 0);
    CHECK_EQ(raw(b, 16, fds, 2), -EMSGSIZE);
    CHECK_EQ(rx.hdr.id, 77);
    /* more fds than max_msg_fds (4 here), one too many and many too many (truncated) */
    reconnect();
    put_hdr(b, 1, USER_DEVICE_RESET, 16, 0);
    CHECK_EQ(raw(b, 16, fds, 5), -E2BIG);
    reconnect();
    CHECK_EQ(raw(b, 16, fds, USER_FDS_MAX), -E2BIG);
    /* fds spread over the pieces of one message, past the limit in total */
    reconnect();
    put_hdr(b, 1, USER_REGION_WRITE, 16 + 16 + 4, 0);
    CHECK(user_send_raw(sp[0], b, 8, fds, 3) == 0);
    CHECK_EQ(user_recv(&rx, sp[1]), -EAGAIN);
    CHECK(user_send_raw(sp[0], b + 8, 8, fds, 3) == 0);
    CHECK_EQ(user_recv(&rx, sp[1]), -E2BIG);
    /* a peer gone mid-header and mid-body, with fds in flight */
    reconnect();
    CHECK(user_send_raw(sp[0], b, 10, fds, 3) == 0);
    close(sp[0]);
    sp[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK_EQ(user_recv(&rx, sp[1]), -ECONNRESET);
    reconnect();
    put_hdr(b, 1, USER_REGION_WRITE, 16 + 16 + 4, 0);
    CHECK(user_send_raw(sp[0], b, 20, fds, 2) == 0);
    CHECK_EQ(user_recv(&rx, sp[1]), -EAGAIN);
    close(sp[0]);
    sp[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK_EQ(user_recv(&rx, sp[1]), -ECONNRESET);
    /* a clean close between messages */
    reconnect();
    close(sp[0]);
    sp[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK_EQ(user_recv(&rx, sp[1]), 0);
    CHECK_EQ(user_recv(&rx, sp[1]), -ECONNRESET);
    reconnect();
    user_rx_free(&rx);
    CHECK_EQ(open_fds(), before);

    for (unsigned i = 0; i < USER_FDS_MAX + 8; i++)
        close(fds[i]);
}

/* --------------------------------------------------------------- hostile decoding */

/* A message of `cmd` and `flags` with the payload p (n bytes), sent with fds. */
static int msg(uint16_t cmd, uint32_t flags, const uint8_t *p, size_t n, const int *fds,
               unsigned nf)
{
    static uint8_t b[USER_VERSION_JSON_MAX + 128];
    if (n > sizeof b - 16)
        abort();
    put_hdr(b, 5, cmd, (uint32_t)(16 + n), flags);
    memcpy(b + 16, p, n);
    return raw(b, 16 + n, fds, nf);
}

static void le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void hostile_decoding(void)
{
    int mfd = memfd(0x2000), efd = eventfd(0, EFD_CLOEXEC), pfd[2];
    CHECK(pipe2(pfd, O_CLOEXEC) == 0);
    uint8_t p[512];
    reconnect();
    int before = open_fds();
    const uint32_t RQ = USER_F_REQUEST, RP = USER_F_REPLY;

    /* fds on messages that take none */
    memset(p, 0, sizeof p);
    CHECK_EQ(msg(USER_DEVICE_RESET, RQ, p, 0, &efd, 1), -EINVAL);
    le(p, 16, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_INFO, RQ, p, 16, &mfd, 1), -EINVAL);
    /* an unknown command, and 14 (an old draft's) */
    CHECK_EQ(msg(99, RQ, p, 0, NULL, 0), -ENOSYS);
    CHECK_EQ(msg(14, RQ, p, 0, NULL, 0), -ENOSYS);
    /* payload sizes */
    CHECK_EQ(msg(USER_DEVICE_RESET, RQ, p, 4, NULL, 0), -EINVAL);
    CHECK_EQ(msg(USER_DEVICE_GET_INFO, RQ, p, 12, NULL, 0), -EINVAL);
    CHECK_EQ(msg(USER_DEVICE_GET_INFO, RQ, p, 20, NULL, 0), -EINVAL);
    le(p, 8, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_INFO, RQ, p, 16, NULL, 0), -EINVAL);   /* argsz < 16 */

    /* DMA_MAP: size 0, a range that wraps, unknown flags, fds that are no file, too
     * short, or two */
    uint8_t dm[32] = {0};
    le(dm, 32, 4), le(dm + 4, 3, 4), le(dm + 8, 0, 8), le(dm + 16, 0x1000, 8), le(dm + 24, 0x1000, 8);
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, &mfd, 1), 0);
    le(dm + 24, 0, 8);
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, NULL, 0), -EINVAL);
    le(dm + 16, UINT64_MAX - 0xfff, 8), le(dm + 24, 0x2000, 8);
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, NULL, 0), -EINVAL);
    le(dm + 16, 0x1000, 8), le(dm + 24, 0x1000, 8), le(dm + 4, 0x4, 4);
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, NULL, 0), -EINVAL);
    le(dm + 4, 3, 4);
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, &efd, 1), -EINVAL);
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, &pfd[0], 1), -EINVAL);
    le(dm + 8, 0x1800, 8);   /* offset + size past the memfd's 0x2000 bytes */
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, &mfd, 1), -EINVAL);
    le(dm + 8, UINT64_MAX - 0x10, 8);
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, &mfd, 1), -EINVAL);
    le(dm + 8, 0, 8);
    int two[2] = {mfd, mfd};
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, two, 2), -EINVAL);
    le(dm, 40, 4);
    CHECK_EQ(msg(USER_DMA_MAP, RQ, dm, 32, NULL, 0), -EINVAL);   /* argsz */

    /* DMA_UNMAP: all with an address, a size 0 without all, unknown flags (dirty bitmap) */
    uint8_t du[24] = {0};
    le(du, 24, 4), le(du + 4, USER_DMA_UNMAP_ALL, 4), le(du + 8, 0x1000, 8);
    CHECK_EQ(msg(USER_DMA_UNMAP, RQ, du, 24, NULL, 0), -EINVAL);
    le(du + 4, 0, 4);
    CHECK_EQ(msg(USER_DMA_UNMAP, RQ, du, 24, NULL, 0), -EINVAL);
    le(du + 4, 1, 4), le(du + 16, 0x1000, 8);
    CHECK_EQ(msg(USER_DMA_UNMAP, RQ, du, 24, NULL, 0), -EINVAL);

    /* REGION_READ/WRITE: count past the transfer limit, data short or long, a wrap */
    uint8_t rw[64] = {0};
    le(rw + 12, lim.max_data_xfer_size + 1, 4);
    CHECK_EQ(msg(USER_REGION_READ, RQ, rw, 16, NULL, 0), -E2BIG);
    le(rw + 12, 8, 4);
    CHECK_EQ(msg(USER_REGION_WRITE, RQ, rw, 16 + 4, NULL, 0), -EINVAL);
    CHECK_EQ(msg(USER_REGION_WRITE, RQ, rw, 16 + 12, NULL, 0), -EINVAL);
    CHECK_EQ(msg(USER_REGION_WRITE, RQ, rw, 16 + 8, NULL, 0), 0);
    le(rw, UINT64_MAX - 3, 8);
    CHECK_EQ(msg(USER_REGION_WRITE, RQ, rw, 16 + 8, NULL, 0), -EINVAL);
    CHECK_EQ(msg(USER_REGION_READ, RP, rw, 16 + 4, NULL, 0), -EINVAL);
    /* DMA_READ/WRITE (to a client) past the limit, short, wrapping */
    user_rx_next(&rx);
    lim.role = USER_ROLE_CLIENT;
    user_rx_set_limits(&rx, &lim);
    uint8_t dr[32] = {0};
    le(dr + 8, (uint64_t)lim.max_data_xfer_size + 1, 8);
    CHECK_EQ(msg(USER_DMA_READ, RQ, dr, 16, NULL, 0), -E2BIG);
    le(dr + 8, 1ull << 40, 8);
    CHECK_EQ(msg(USER_DMA_WRITE, RQ, dr, 16, NULL, 0), -E2BIG);
    le(dr + 8, 8, 8);
    CHECK_EQ(msg(USER_DMA_WRITE, RQ, dr, 20, NULL, 0), -EINVAL);
    le(dr, UINT64_MAX, 8);
    CHECK_EQ(msg(USER_DMA_READ, RQ, dr, 16, NULL, 0), -EINVAL);
    /* the wrong direction: a client takes no client requests, a server no DMA_READ */
    CHECK_EQ(msg(USER_DEVICE_RESET, RQ, p, 0, NULL, 0), -EINVAL);
    user_rx_next(&rx);
    lim.role = USER_ROLE_SERVER;
    user_rx_set_limits(&rx, &lim);
    le(dr, 0, 8);
    CHECK_EQ(msg(USER_DMA_READ, RQ, dr, 16, NULL, 0), -EINVAL);
    CHECK_EQ(msg(USER_DEVICE_RESET, RP, p, 0, NULL, 0), -EINVAL);
    CHECK_EQ(msg(USER_DEVICE_RESET, RQ, p, 0, NULL, 0), 0);
    user_rx_next(&rx);
    lim.role = USER_ROLE_ANY;
    user_rx_set_limits(&rx, &lim);

    /* SET_IRQS: two data kinds, no action, bools short, an fd that is no eventfd, fewer
     * fds than vectors, start + count past 2^32 */
    uint8_t is[64] = {0};
    le(is, 20, 4), le(is + 4, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL |
                                  VFIO_IRQ_SET_ACTION_TRIGGER, 4);
    CHECK_EQ(msg(USER_DEVICE_SET_IRQS, RQ, is, 20, NULL, 0), -EINVAL);
    le(is + 4, VFIO_IRQ_SET_DATA_NONE, 4);
    CHECK_EQ(msg(USER_DEVICE_SET_IRQS, RQ, is, 20, NULL, 0), -EINVAL);
    le(is + 4, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK, 4), le(is + 16, 8, 4);
    le(is, 24, 4);
    CHECK_EQ(msg(USER_DEVICE_SET_IRQS, RQ, is, 24, NULL, 0), -EINVAL);
    le(is, 20, 4), le(is + 4, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 4);
    le(is + 16, 1, 4);
    CHECK_EQ(msg(USER_DEVICE_SET_IRQS, RQ, is, 20, &efd, 1), 0);
    CHECK_EQ(msg(USER_DEVICE_SET_IRQS, RQ, is, 20, &mfd, 1), -EINVAL);
    CHECK_EQ(msg(USER_DEVICE_SET_IRQS, RQ, is, 20, &pfd[1], 1), -EINVAL);
    le(is + 16, 2, 4);
    CHECK_EQ(msg(USER_DEVICE_SET_IRQS, RQ, is, 20, &efd, 1), -EINVAL);
    le(is + 12, 0xffffffff, 4);
    CHECK_EQ(msg(USER_DEVICE_SET_IRQS, RQ, is, 20, NULL, 0), -EINVAL);

    /* REGION_INFO replies: a chain that loops, goes backwards, leaves the payload;
     * sparse areas past the region or more than the payload holds; an fd without MMAP;
     * more payload than argsz */
    uint8_t ri[128] = {0};
    le(ri, 64, 4), le(ri + 4, VFIO_REGION_INFO_FLAG_CAPS, 4), le(ri + 12, 32, 4);
    le(ri + 16, 0x1000, 8);
    le(ri + 32, USER_REGION_CAP_SPARSE_MMAP, 2), le(ri + 34, 1, 2), le(ri + 36, 32, 4);
    le(ri + 40, 1, 4), le(ri + 48, 0, 8), le(ri + 56, 0x1000, 8);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, NULL, 0), -EINVAL);   /* loop */
    le(ri + 36, 0, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, NULL, 0), 0);
    le(ri + 56, 0x1001, 8);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, NULL, 0), -EINVAL);   /* past region */
    le(ri + 56, 0x1000, 8), le(ri + 40, 2, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, NULL, 0), -EINVAL);   /* 2 areas */
    le(ri + 40, 0x10000000, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, NULL, 0), -EINVAL);
    le(ri + 40, 1, 4), le(ri + 12, 60, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, NULL, 0), -EINVAL);   /* leaves */
    le(ri + 12, 8, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, NULL, 0), -EINVAL);   /* in fixed part */
    le(ri + 12, 32, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, &mfd, 1), -EINVAL);   /* no MMAP */
    le(ri, 48, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_INFO, RP, ri, 64, NULL, 0), -EINVAL);   /* argsz < len */

    /* IO_FDS reply: an fd index past the fds, an unknown type, count past the body */
    uint8_t io[128] = {0};
    le(io, 56, 4), le(io + 12, 1, 4), le(io + 16 + 16, 1, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_IO_FDS, RP, io, 56, &efd, 1), -EINVAL);
    le(io + 16 + 16, 0, 4), le(io + 16 + 20, 7, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_IO_FDS, RP, io, 56, &efd, 1), -EINVAL);
    le(io + 16 + 20, 0, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_IO_FDS, RP, io, 56, &efd, 1), 0);
    le(io + 12, 3, 4), le(io, 136, 4);
    CHECK_EQ(msg(USER_DEVICE_GET_REGION_IO_FDS, RP, io, 56, &efd, 1), -EINVAL);

    /* WRITE_MULTI: too many, a count above 8, zero */
    uint8_t wm[8 + 24] = {0};
    le(wm, 201, 8);
    CHECK_EQ(msg(USER_REGION_WRITE_MULTI, RQ, wm, 8, NULL, 0), -EINVAL);
    le(wm, 1, 8), le(wm + 8 + 12, 9, 4);
    CHECK_EQ(msg(USER_REGION_WRITE_MULTI, RQ, wm, 32, NULL, 0), -EINVAL);
    le(wm + 8 + 12, 4, 4);
    CHECK_EQ(msg(USER_REGION_WRITE_MULTI, RQ, wm, 32, NULL, 0), 0);

    /* error replies carry no fds */
    CHECK_EQ(msg(USER_REGION_READ, RP | USER_F_ERROR, p, 0, &efd, 1), -EINVAL);

    /* VERSION: no NUL, a NUL inside, and JSON the reader refuses or skips */
    uint8_t v[USER_VERSION_JSON_MAX + 64];
    memset(v, 0, sizeof v);
    memcpy(v + 4, "{}", 2);
    CHECK_EQ(msg(USER_VERSION, RQ, v, 6, NULL, 0), -EINVAL);
    v[6] = 0;
    memcpy(v + 4, "{}\0}", 4);
    CHECK_EQ(msg(USER_VERSION, RQ, v, 9, NULL, 0), -EINVAL);
    CHECK_EQ(msg(USER_VERSION, RQ, v, 7, NULL, 0), 0);
    CHECK_EQ(msg(USER_VERSION, RQ, v, 7, &efd, 1), -EINVAL);   /* fds on a request */
    static const struct {
        const char *json;
        int want;
    } js[] = {
        {"{\"capabilities\":{\"max_msg_fds\":\"16\"}}", -EINVAL},
        {"{\"capabilities\":{\"max_msg_fds\":-1}}", -EINVAL},
        {"{\"capabilities\":{\"max_msg_fds\":1.5}}", -EINVAL},
        {"{\"capabilities\":{\"max_msg_fds\":1e3}}", -EINVAL},
        {"{\"capabilities\":{\"max_msg_fds\":018}}", -EINVAL},
        {"{\"capabilities\":{\"max_data_xfer_size\":18446744073709551616}}", -EINVAL},
        {"{\"capabilities\":{\"max_msg_fds\":1,\"max_msg_fds\":2}}", -EINVAL},
        {"{\"capabilities\":[]}", -EINVAL},
        {"{\"capabilities\":{\"migration\":7}}", -EINVAL},
        {"{\"capabilities\":{\"write_multiple\":1}}", -EINVAL},
        {"{\"capabilities\":{\"twin_socket\":{\"supported\":\"yes\"}}}", -EINVAL},
        {"{\"capabilities\":{}} x", -EINVAL},
        {"{\"capabilities\":{},}", -EINVAL},
        {"[1]", -EINVAL},
        {"{\"a\":\"\\x\"}", -EINVAL},
        {"{\"a\":\"\\u12\"}", -EINVAL},
        {"{\"a\":[[[[[[[[[[1]]]]]]]]]]}", -EINVAL},
        {"{\"a\":[[[[[1]]]]],\"b\":{\"c\":null,\"d\":-0.5e-3,\"e\":\"\\u00e9\\n\"},"
         "\"capabilities\":{\"future\":{\"x\":[true,false]},\"max_msg_fds\":3}}", 0},
    };
    for (size_t i = 0; i < sizeof js / sizeof js[0]; i++) {
        size_t n = strlen(js[i].json);
        memcpy(v + 4, js[i].json, n + 1);
        int r = msg(USER_VERSION, RQ, v, 4 + n + 1, NULL, 0);
        if (r != js[i].want)
            fprintf(stderr, "FAIL: json %zu (%s): %d, expected %d\n", i, js[i].json, r,
                    js[i].want), failures++;
        checks++;
    }
    CHECK_EQ(m.u.version.caps.max_msg_fds, 3);   /* the last one, whose unknowns were skipped */
    memset(v + 4, ' ', USER_VERSION_JSON_MAX);
    memcpy(v + 4, "{}", 2);
    v[4 + USER_VERSION_JSON_MAX + 1] = 0;
    CHECK_EQ(msg(USER_VERSION, RQ, v, 4 + USER_VERSION_JSON_MAX + 2, NULL, 0), -EINVAL);
    v[4 + USER_VERSION_JSON_MAX] = 0;
    CHECK_EQ(msg(USER_VERSION, RQ, v, 4 + USER_VERSION_JSON_MAX + 1, NULL, 0), 0);
    /* a twin socket fd index past the fds */
    const char *tw = "{\"capabilities\":{\"twin_socket\":{\"supported\":true,\"fd_index\":1}}}";
    memcpy(v + 4, tw, strlen(tw) + 1);
    CHECK_EQ(msg(USER_VERSION, RP, v, 4 + strlen(tw) + 1, &efd, 1), -EINVAL);

    user_rx_next(&rx);
    CHECK_EQ(open_fds(), before);
    close(mfd), close(efd), close(pfd[0]), close(pfd[1]);
}

int main(void)
{
    user_limits_default(&lim);
    lim.max_msg_fds = 4;
    lim.max_data_xfer_size = 4096;
    user_out_init(&o);
    int before = open_fds();
    reconnect();
    roundtrips();
    hostile_framing();
    hostile_decoding();
    user_rx_free(&rx);
    user_out_free(&o);
    if (sp[0] >= 0)
        close(sp[0]), close(sp[1]);
    CHECK_EQ(open_fds(), before);
    if (failures) {
        fprintf(stderr, "FAIL: %d of %d checks\n", failures, checks);
        return 1;
    }
    fprintf(stderr, "ok: %d checks: every message kind round-trips with its fds, every "
                    "hostile case refused with its errno, no fd leaked\n", checks);
    return 0;
}
