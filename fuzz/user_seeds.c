/* user_seeds DIR-SERVER DIR-CLIENT: the vfio-user targets' seed corpora, one valid
 * message of every kind each direction takes, as direct inputs (fuzz/user_fuzz.h): a
 * setup byte (direct path, 4 fds allowed, 1 MiB transfers; QEMU's DMA layout where the
 * message uses it), the fds from the pool, then the message. fuzz/run writes them. */
#include "user/user_msg.h"
#include "user/user_version.h"

#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct user_out o;
static unsigned seq;

/* pool indices (user_fuzz.h): 0 a 64 KiB memfd, 2 and 6 eventfds, 4 a socket */
static void seed(const char *dir, unsigned setup, const unsigned *fds, unsigned nf)
{
    if (user_out_end(&o) < 0)
        abort();
    char path[512];
    snprintf(path, sizeof path, "%s/seed-%02u", dir, seq++);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputc((int)setup, f);
    fputc((int)nf, f);
    for (unsigned i = 0; i < nf; i++)
        fputc((int)fds[i], f);
    fwrite(o.buf, 1, o.len, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    const char *srv = argv[1], *cli = argv[2];
    const unsigned S = (2u << 2) | (3u << 4);   /* setup: 4 fds, 1 MiB */
    const unsigned memfd[1] = {0}, efds[3] = {2, 6, 2}, sock[1] = {4};
    user_out_init(&o);
    struct user_caps c;
    user_caps_default(&c);
    c.present = USER_CAP_MAX_MSG_FDS | USER_CAP_MAX_XFER | USER_CAP_PGSIZES |
                USER_CAP_MAX_DMA_MAPS | USER_CAP_MIGRATION | USER_CAP_WRITE_MULTIPLE;
    c.max_msg_fds = 16, c.mig_max_bitmap_size = 256u << 20, c.write_multiple = true;
    char json[512];
    user_caps_format(json, sizeof json, &c);
    uint8_t data[16] = "0123456789abcdef", bools[4] = {1, 0, 1, 0};
    struct user_hdr req = {.id = 1};

    /* what a client sends a server, and the replies a server takes */
    user_enc_version(&o, 0, USER_F_REQUEST, 0, 0, json), seed(srv, S, NULL, 0);
    struct user_dma_map dm = {.flags = 3, .offset = 0x1000, .addr = 0x100000, .size = 0x4000};
    user_enc_dma_map(&o, 1, USER_F_REQUEST, &dm), seed(srv, S, memfd, 1);
    dm.offset = 0;
    user_enc_dma_map(&o, 2, USER_F_REQUEST, &dm), seed(srv, S, NULL, 0);
    struct user_dma_unmap du = {.addr = 0x100000, .size = 0x4000};
    user_enc_dma_unmap(&o, 3, USER_F_REQUEST, &du), seed(srv, S, NULL, 0);
    du = (struct user_dma_unmap){.flags = USER_DMA_UNMAP_ALL};
    user_enc_dma_unmap(&o, 4, USER_F_REQUEST, &du), seed(srv, S, NULL, 0);
    struct user_device_info di = {.argsz = 16};
    user_enc_device_info(&o, 5, USER_F_REQUEST, &di), seed(srv, S, NULL, 0);
    user_enc_region_info_req(&o, 6, 32, 0), seed(srv, S, NULL, 0);
    user_enc_io_fds_req(&o, 7, 256, 2), seed(srv, S, NULL, 0);
    struct user_irq_info ii = {.index = VFIO_PCI_MSIX_IRQ_INDEX};
    user_enc_irq_info(&o, 8, USER_F_REQUEST, &ii), seed(srv, S, NULL, 0);
    struct user_irq_set is = {.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                              .index = 2, .start = 0, .count = 3};
    user_enc_irq_set(&o, 9, USER_F_REQUEST, &is), seed(srv, S, efds, 3);
    is = (struct user_irq_set){.flags = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_UNMASK,
                               .index = 0, .count = 4, .bools = bools};
    user_enc_irq_set(&o, 10, USER_F_REQUEST, &is), seed(srv, S, NULL, 0);
    is = (struct user_irq_set){.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER};
    user_enc_irq_set(&o, 11, USER_F_REQUEST, &is), seed(srv, S, NULL, 0);
    user_enc_region_rw(&o, 12, USER_REGION_READ, USER_F_REQUEST, 0x10, 0, 4, NULL), seed(srv, S, NULL, 0);
    user_enc_region_rw(&o, 13, USER_REGION_WRITE, USER_F_REQUEST | USER_F_NO_REPLY, 0x14, 0, 4,
                       data), seed(srv, S, NULL, 0);
    user_enc_empty(&o, 14, USER_DEVICE_RESET, USER_F_REQUEST), seed(srv, S, NULL, 0);
    struct user_write_one w[2] = {{.offset = 0, .count = 4, .data = {1, 2, 3, 4}},
                                  {.offset = 8, .region = 2, .count = 8}};
    user_enc_write_multi(&o, 15, USER_F_REQUEST | USER_F_NO_REPLY, w, 2), seed(srv, S, NULL, 0);
    user_enc_dma_rw(&o, 17, USER_DMA_READ, USER_F_REPLY, 0x100000, 16, data), seed(srv, S, NULL, 0);
    user_enc_empty(&o, 18, USER_DMA_WRITE, USER_F_REPLY), seed(srv, S, NULL, 0);
    req.cmd = USER_DMA_READ;
    user_enc_error(&o, &req, 14), seed(srv, S, NULL, 0);

    /* what a server sends a client: replies and DMA requests */
    seq = 0;
    c.present |= USER_CAP_TWIN_SOCKET, c.twin_supported = true, c.twin_fd_index = 0;
    user_caps_format(json, sizeof json, &c);
    user_enc_version(&o, 0, USER_F_REPLY, 0, 0, json), seed(cli, S, sock, 1);
    user_enc_empty(&o, 1, USER_DMA_MAP, USER_F_REPLY), seed(cli, S, NULL, 0);
    du = (struct user_dma_unmap){.addr = 0x100000, .size = 0x4000};
    user_enc_dma_unmap(&o, 3, USER_F_REPLY, &du), seed(cli, S, NULL, 0);
    di = (struct user_device_info){.flags = 3, .num_regions = 9, .num_irqs = 5};
    user_enc_device_info(&o, 5, USER_F_REPLY, &di), seed(cli, S, NULL, 0);
    struct user_region_info ri = {.flags = 7, .size = 0x4000, .offset = 0,
                                  .has_type = true, .cap_type = 1, .cap_subtype = 2};
    struct user_sparse_area a[2] = {{0, 0x1000}, {0x2000, 0x2000}};
    req.id = 6, req.cmd = USER_DEVICE_GET_REGION_INFO;
    user_enc_region_info_reply(&o, &req, 4096, &ri, a, 2), seed(cli, S, memfd, 1);
    user_enc_region_info_reply(&o, &req, 32, &ri, a, 2), seed(cli, S, NULL, 0);
    struct user_io_fd_sub sub = {.offset = 0x1000, .size = 4, .data = 1};
    req.id = 7, req.cmd = USER_DEVICE_GET_REGION_IO_FDS;
    user_enc_io_fds_reply(&o, &req, 256, 2, &sub, 1), seed(cli, S, efds, 1);
    ii = (struct user_irq_info){.flags = 9, .index = 2, .count = 8};
    user_enc_irq_info(&o, 8, USER_F_REPLY, &ii), seed(cli, S, NULL, 0);
    user_enc_empty(&o, 9, USER_DEVICE_SET_IRQS, USER_F_REPLY), seed(cli, S, NULL, 0);
    user_enc_region_rw(&o, 12, USER_REGION_READ, USER_F_REPLY, 0x10, 0, 4, data), seed(cli, S, NULL, 0);
    user_enc_region_rw(&o, 13, USER_REGION_WRITE, USER_F_REPLY, 0x14, 0, 4, NULL), seed(cli, S, NULL, 0);
    user_enc_empty(&o, 14, USER_DEVICE_RESET, USER_F_REPLY), seed(cli, S, NULL, 0);
    user_enc_write_multi(&o, 15, USER_F_REPLY, NULL, 2), seed(cli, S, NULL, 0);
    user_enc_dma_rw(&o, 16, USER_DMA_READ, USER_F_REQUEST, 0x100000, 16, NULL), seed(cli, S, NULL, 0);
    user_enc_dma_rw(&o, 17, USER_DMA_WRITE, USER_F_REQUEST, 0x100000, 16, data), seed(cli, S, NULL, 0);
    req.id = 19, req.cmd = USER_REGION_READ;
    user_enc_error(&o, &req, 22), seed(cli, S, NULL, 0);
    user_out_free(&o);
    return 0;
}
