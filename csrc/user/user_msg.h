/* vfio-user messages: one decoder for both directions (a server's requests and a
 * client's replies, and the server-to-client DMA requests), encoders for every request
 * and reply, and the range helpers a device uses to check what the decoder cannot know
 * (region sizes, IRQ counts, DMA windows). */
#ifndef LUAVFIO_USER_MSG_H
#define LUAVFIO_USER_MSG_H

#include "user_proto.h"

/* Decode the whole message `buf` (len bytes, the header's size) received with `nfds` fds,
 * under the receiver's limits. Every field is checked against the message size and the
 * limits: payload sizes exact for each command and direction, counts past the body or
 * past max_data_xfer_size (E2BIG), offsets and ranges that wrap, flags outside the spec,
 * capability chains that leave the payload or go backwards, sub-region fd indices past
 * the fds, fds where a message takes none or too many (EINVAL), a DMA_MAP fd that is no
 * regular file (a memfd is one) or is shorter than offset + size, a SET_IRQS eventfd that
 * is no eventfd, a request sent the wrong way for lim->role (EINVAL), an unknown command
 * (ENOSYS), a version JSON the capability reader refuses (EINVAL). Returns 0 or -errno;
 * m->hdr is filled whenever len >= 16, so an error reply can name the message. An error
 * reply decodes with has_payload false and nothing else read. Pointers in *m point into
 * buf; the fds stay the caller's. */
int user_decode(const struct user_limits *lim, const uint8_t *buf, uint32_t len,
                const int *fds, unsigned nfds, struct user_msg *m);

/* Entries of the arrays a decoded message points at (i below its count). */
void user_sparse_get(const struct user_region_info *ri, uint32_t i,
                     struct user_sparse_area *a);
void user_io_fd_sub_get(const struct user_io_fds *io, uint32_t i, struct user_io_fd_sub *s);
void user_write_one_get(const struct user_write_multi *wm, uint64_t i,
                        struct user_write_one *w);

/* Range checks for the caller, who knows its device. */
/* [offset, offset + count) lies inside a region of `size` bytes. */
bool user_range_in(uint64_t offset, uint64_t count, uint64_t size);
/* [start, start + count) of an IRQ index with `irqs` vectors. */
bool user_irq_range_ok(uint32_t start, uint32_t count, uint32_t irqs);
/* [a, a + alen) and [b, b + blen) share a byte (lengths of 0 share none). */
bool user_ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen);
/* An fd a DMA map may mmap: a regular file (memfd, tmpfs, hugetlbfs) at least
 * offset + size long. 0 or -EINVAL (-errno of fstat). */
int user_fd_check_mappable(int fd, uint64_t offset, uint64_t size);
/* An eventfd (its /proc/self/fd link reads "anon_inode:[eventfd]"). 0 or -EINVAL. */
int user_fd_check_eventfd(int fd);

/* ------------------------------------------------------------------ encoding */

/* A message under construction: user_out_begin writes the header, the put functions
 * append little-endian fields, user_out_end writes the size. An allocation failure is
 * latched in err and reported by user_out_end. */
struct user_out {
    uint8_t *buf;
    size_t len, cap;
    int err;
};
void user_out_init(struct user_out *o);
void user_out_free(struct user_out *o);
void user_out_begin(struct user_out *o, uint16_t id, uint16_t cmd, uint32_t flags,
                    uint32_t error);
void user_out_put(struct user_out *o, uint64_t v, unsigned n);
void user_out_bytes(struct user_out *o, const void *p, size_t n);
/* 0 with the message in buf[0..len), or -ENOMEM, or -EMSGSIZE past 4 GiB. */
int user_out_end(struct user_out *o);

/* Encoders: each writes one whole message into o (0 or -errno). `flags` is the header's
 * (USER_F_REQUEST, with USER_F_NO_REPLY for a posted one, or USER_F_REPLY); a reply's id
 * and command are its request's. Payloads are the spec's for the command and direction. */
int user_enc_error(struct user_out *o, const struct user_hdr *req, uint32_t err);
/* Header only: DEVICE_RESET both ways; the replies of DMA_MAP, SET_IRQS, RESET. */
int user_enc_empty(struct user_out *o, uint16_t id, uint16_t cmd, uint32_t flags);
/* VERSION both ways; json (may be NULL) is sent with its NUL. */
int user_enc_version(struct user_out *o, uint16_t id, uint32_t flags, uint16_t major,
                     uint16_t minor, const char *json);
int user_enc_dma_map(struct user_out *o, uint16_t id, uint32_t flags,
                     const struct user_dma_map *d);
/* DMA_UNMAP request, and its reply (the request's entry). */
int user_enc_dma_unmap(struct user_out *o, uint16_t id, uint32_t flags,
                       const struct user_dma_unmap *d);
/* DEVICE_GET_INFO both ways (a request's fields other than argsz are zero). */
int user_enc_device_info(struct user_out *o, uint16_t id, uint32_t flags,
                         const struct user_device_info *d);
int user_enc_region_info_req(struct user_out *o, uint16_t id, uint32_t argsz,
                             uint32_t index);
/* The reply to a request whose argsz was req_argsz: the region info and its capability
 * chain (sparse areas when nsparse or has_sparse, the type when ri->has_type). argsz
 * says the size the whole chain needs; when req_argsz is smaller, only the fixed part
 * goes (cap_offset 0), as the kernel does, and the client asks again. */
int user_enc_region_info_reply(struct user_out *o, const struct user_hdr *req,
                               uint32_t req_argsz, const struct user_region_info *ri,
                               const struct user_sparse_area *sparse, uint32_t nsparse);
int user_enc_io_fds_req(struct user_out *o, uint16_t id, uint32_t argsz, uint32_t index);
/* The sub-regions go when req_argsz holds them all, else count and argsz only. */
int user_enc_io_fds_reply(struct user_out *o, const struct user_hdr *req,
                          uint32_t req_argsz, uint32_t index,
                          const struct user_io_fd_sub *subs, uint32_t count);
/* DEVICE_GET_IRQ_INFO both ways. */
int user_enc_irq_info(struct user_out *o, uint16_t id, uint32_t flags,
                      const struct user_irq_info *d);
/* SET_IRQS: argsz is computed (20, plus count bytes of s->bools with DATA_BOOL). */
int user_enc_irq_set(struct user_out *o, uint16_t id, uint32_t flags,
                     const struct user_irq_set *s);
/* REGION_READ/WRITE both ways: data (count bytes) for a write request and a read reply,
 * NULL otherwise. */
int user_enc_region_rw(struct user_out *o, uint16_t id, uint16_t cmd, uint32_t flags,
                       uint64_t offset, uint32_t region, uint32_t count, const void *data);
/* DMA_READ/WRITE: address, an 8-byte count, data (the specification's layout, which QEMU
 * 11.1 reads and writes). A DMA_READ request and a DMA_WRITE reply carry no data. */
int user_enc_dma_rw(struct user_out *o, uint16_t id, uint16_t cmd, uint32_t flags,
                    uint64_t addr, uint64_t count, const void *data);
/* REGION_WRITE_MULTI request (n <= USER_WRITE_MULTI_MAX writes) and its reply (n only,
 * w NULL). */
int user_enc_write_multi(struct user_out *o, uint16_t id, uint32_t flags,
                         const struct user_write_one *w, uint64_t n);

#endif
