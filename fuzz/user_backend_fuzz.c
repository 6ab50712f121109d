/* libFuzzer target: luavfio's vfio-user client (csrc/user/user_client.c) and the trap
 * backend over it (csrc/trap/backend_user.c) against whatever a server sends. The
 * decoder has its own targets (user_client_fuzz.c); this one covers what the client
 * does with decoded replies: the id and command checks, the handshake, the region info
 * retry and its sparse areas, the fds it keeps and maps (only sealed memfds), the
 * REGION_READ reply checks, and every call after the connection ended.
 *
 * An input is the server's whole side, queued before the client starts: chunks of
 * [length u16][fd mask u8][bytes], each written into the server's end of a socketpair
 * with the pool's fds the mask names (a sealed 64 KiB memfd, an unsealed one, an
 * eventfd, a pipe, /dev/null). The client then opens (timeout 1 ms: when the queue runs
 * out the connection ends) and, if it opened, the backend reads config space, reads and
 * writes every region, and the client sets IRQs, maps DMA and resets.
 * Invariants beyond ASan/UBSan: the process holds the same fds after every input (every
 * fd received was kept by the client and closed with it, or closed at once); nothing
 * hangs (each wait ends at its timeout). */
#include "fds.h"
#include "input.h"
#include "trap/backend.h"
#include "user/user_client.h"

#include <stdbool.h>
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

#define POOL 5
static int pool[POOL];

static void init_pool(void)
{
    int p[2];
    pool[0] = memfd_create("fz-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (pool[0] < 0 || ftruncate(pool[0], 0x10000) < 0 ||
        fcntl(pool[0], F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
        abort();
    pool[1] = memfd_create("fz-plain", MFD_CLOEXEC);
    if (pool[1] < 0 || ftruncate(pool[1], 0x10000) < 0)
        abort();
    pool[2] = eventfd(0, EFD_CLOEXEC);
    if (pipe2(p, O_CLOEXEC) < 0)
        abort();
    close(p[1]);
    pool[3] = p[0];
    pool[4] = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void drain(int s)
{
    char buf[4096];
    while (recv(s, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        init_pool();
        ready = true;
    }
    /* counted per input: libFuzzer opens fds of its own between inputs (its symbolizer) */
    int before = fz_open_fds();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct in in = {data, size};
    while (in.n) {
        size_t len = (size_t)take(&in, 2);
        unsigned mask = (unsigned)take(&in, 1);
        if (len > in.n)
            len = in.n;
        int fds[POOL];
        unsigned nfds = 0;
        for (unsigned i = 0; i < POOL; i++)
            if (mask & (1u << i))
                fds[nfds++] = pool[i];
        if (len)
            user_send_raw(sv[1], in.p, len, fds, nfds);
        in.p += len, in.n -= len;
    }
    struct user_client *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    int r = user_client_open(c, sv[0], 1, USER_MAP_DEVICES);
    if (r == 0) {
        struct lv_backend be;
        if (lv_backend_user_init(&be, c) == 0) {
            uint8_t buf[8];
            for (uint32_t off = 0; off < 64; off += 4)
                be.ops->cfg_read(be.ctx, off, buf, 4);
            for (unsigned i = 0; i < LV_REGION_MAX; i++) {
                struct lv_region_info ri;
                be.ops->region_info(be.ctx, i, &ri);
                uint64_t off = ri.size >= 8 ? ri.size - 8 : 0;
                be.ops->region_read(be.ctx, i, 0, buf, 4);
                be.ops->region_read(be.ctx, i, off, buf, 8);
                be.ops->region_write(be.ctx, i, 0, buf, 2);
                void *p;
                uint64_t mo, ml;
                if (lv_backend_mapping(&be, i, &p, &mo, &ml) == 0 && ml)
                    (void)((volatile uint8_t *)p)[ml - 1];   /* mapped for reads at least */
            }
            int efd = pool[2];
            user_client_set_irqs(c, 0, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
                                 1, &efd, NULL);
            user_client_dma_map(c, pool[0], 0, 0x100000, 0x1000, 3);
            user_client_dma_unmap(c, 0x100000, 0x1000, false);
            user_client_reset(c);
            drain(sv[1]);
            lv_backend_destroy(&be);
        }
    }
    user_client_close(c);
    free(c);
    close(sv[1]);
    if (fz_open_fds() != before)
        abort();   /* an fd leaked (or one of ours was closed) */
    return 0;
}

#ifdef FZ_SEED_MAIN
/* The seed: a well-behaved server's whole side of a session (fuzz/run writes it). */
#include "user/user_msg.h"
#include "user/user_version.h"

static void chunk(FILE *f, struct user_out *o, unsigned mask)
{
    uint8_t h[3] = {(uint8_t)o->len, (uint8_t)(o->len >> 8), (uint8_t)mask};
    fwrite(h, 1, 3, f);
    fwrite(o->buf, 1, o->len, f);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    FILE *f = fopen(argv[1], "wb");
    if (!f)
        return 1;
    struct user_out o;
    user_out_init(&o);
    uint16_t id = 0;
    user_enc_version(&o, id++, USER_F_REPLY, 0, 0, "{\"capabilities\":{\"max_msg_fds\":8}}");
    chunk(f, &o, 0);
    struct user_device_info di = {.argsz = 16, .flags = 3, .num_regions = 9, .num_irqs = 5};
    user_enc_device_info(&o, id++, USER_F_REPLY, &di);
    chunk(f, &o, 0);
    for (uint32_t i = 0; i < 9; i++) {
        struct user_hdr req = {.id = id++, .cmd = USER_DEVICE_GET_REGION_INFO};
        struct user_region_info ri = {.flags = 3, .index = i,
                                      .size = i == 7 ? 256 : i == 2 ? 0x2000 : i == 0 ? 0x1000 : 0};
        struct user_sparse_area a = {.offset = 0, .size = 0x1000};
        if (i == 2)
            ri.flags |= VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS;
        user_enc_region_info_reply(&o, &req, 4096, &ri, i == 2 ? &a : NULL, i == 2 ? 1 : 0);
        chunk(f, &o, i == 2 ? 1 : 0);
    }
    for (uint32_t i = 0; i < 5; i++) {
        struct user_irq_info q = {.argsz = 16, .index = i, .count = i < 3 ? 1 : 0, .flags = 1};
        user_enc_irq_info(&o, id++, USER_F_REPLY, &q);
        chunk(f, &o, 0);
    }
    for (uint32_t off = 0; off < 64; off += 4) {
        uint8_t v[4] = {0x36, 0x1b, 0xf0, 0x11};
        user_enc_region_rw(&o, id++, USER_REGION_READ, USER_F_REPLY, off, 7, 4, v);
        chunk(f, &o, 0);
    }
    fclose(f);
    user_out_free(&o);
    return 0;
}
#endif
