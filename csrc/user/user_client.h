/* A vfio-user client: one connection to a server, used synchronously. Every call sends
 * one request and waits for its reply (at most timeout_ms), so the trap backend
 * (trap/backend_user.c) and the Lua device (lua/l_user_device.c) share one ordered
 * stream. The handshake mirrors QEMU's client: VERSION with the same capabilities,
 * DEVICE_GET_INFO, GET_REGION_INFO for every region (asked again with the argsz the
 * capability chain needs), GET_IRQ_INFO for every index; all of it kept here.
 *
 * The server is not trusted: a reply is decoded by user_decode (role CLIENT) and must
 * answer the request just sent (same id and command). A reply that does not, a malformed
 * message, a server that is gone or silent past the timeout ends the connection: every
 * later call fails at once with that errno and `why` says what happened, so nothing
 * waits on a dead server twice. An error reply ends only its call (its errno; one
 * outside 1..4095 becomes EIO).
 *
 * Mappings: a region whose info carries an fd is mapped area by area (the sparse areas,
 * or the whole region), only when the fd can be mapped without risk of a fault: a
 * regular file (memfd) sealed against shrinking (F_SEAL_SHRINK) and long enough, since a
 * server that shrank it later would turn a guest access into SIGBUS. A character device
 * (a VFIO device fd a server hands over to a client it trusts) only when the caller asks
 * (USER_MAP_DEVICES): such a mapping faults when the server disables the device's memory
 * decoding under it, so the client must trust the server as much. Anything else is
 * reached by REGION_READ/WRITE, and mmap_errno says why. No Lua here. */
#ifndef LUAVFIO_USER_CLIENT_H
#define LUAVFIO_USER_CLIENT_H

#include "user_msg.h"
#include "user_sock.h"

#include <errno.h>

#define USER_CLIENT_REGIONS 9u      /* BAR0-5, ROM, config, VGA: the ones VFIO-PCI has */
#define USER_CLIENT_IRQS 5u         /* INTx, MSI, MSI-X, ERR, REQ */
#define USER_CLIENT_AREAS 16u       /* sparse areas kept (and mapped) per region */
#define USER_CLIENT_TIMEOUT_MS 5000 /* QEMU's x-msg-timeout default */
#define USER_CLIENT_MAX_FDS 16u     /* what this client advertises, as QEMU does */

struct user_client_area {
    uint64_t offset, size;  /* in the region */
    void *map;              /* the mapping of it, or NULL */
};

struct user_client_region {
    uint64_t size, offset;  /* offset: of the region in its fd */
    uint32_t flags;         /* VFIO_REGION_INFO_FLAG_* as the server said */
    int info_errno;         /* its GET_REGION_INFO failed: that errno (size 0 then) */
    int fd;                 /* the fd the server gave (-1: none) */
    bool has_sparse, has_type;
    uint32_t cap_type, cap_subtype;
    uint32_t nareas;        /* sparse areas (or one whole-region area when mappable
                               without a sparse capability) */
    struct user_client_area areas[USER_CLIENT_AREAS];
    int mmap_errno;         /* why the areas are not mapped (0: mapped or no fd) */
};

/* What user_client_open maps of the fds a server gives (see above). */
enum user_map_policy { USER_MAP_NONE = 0, USER_MAP_MEMFD = 1, USER_MAP_DEVICES = 2 };

struct user_client_stats {
    uint64_t requests, region_reads, region_writes, error_replies;
};

struct user_client {
    int sock;               /* owned; -1 once closed */
    int timeout_ms;
    int dead;               /* -errno that ended the connection, 0 while usable */
    char why[200];          /* what ended it, or the last failure */
    uint16_t next_id;
    struct user_rx rx;
    struct user_limits send;   /* what the server accepts */
    struct user_caps server;   /* its capabilities */
    uint32_t dev_flags, num_regions, num_irqs;
    struct user_client_region regions[USER_CLIENT_REGIONS];
    struct user_irq_info irqs[USER_CLIENT_IRQS];
    int irq_errno[USER_CLIENT_IRQS];
    struct user_client_stats stats;
    enum user_map_policy map;
    unsigned borrowers;        /* users of the mappings (trap backends): while any, a close
                                  leaves the areas mapped (a VM slot may point there) */
};

/* Take `sock` (a connected stream socket; the client owns it from now on, even on
 * failure) and run the handshake and the info queries. map: which of the fds the server
 * gives are mapped. 0, or -errno with c->why saying what failed; user_client_close frees
 * what was made either way. */
int user_client_open(struct user_client *c, int sock, int timeout_ms,
                     enum user_map_policy map);
/* Close the socket and the region fds, and unmap the areas unless borrowed (then the
 * last user_client_unborrow does). Idempotent. */
void user_client_close(struct user_client *c);
/* A user of the mappings (a trap backend, whose VM slots may borrow them) comes and
 * goes. */
void user_client_borrow(struct user_client *c);
void user_client_unborrow(struct user_client *c);
/* Whether calls can still reach the server (0), else the -errno that ended it. */
static inline int user_client_dead(const struct user_client *c)
{
    return c->sock < 0 ? -EBADF : c->dead;
}

/* One request and its reply. The encoded request is in o (user_enc_*, id from
 * user_client_id); fds go with it. On 0 the reply is decoded in *reply (its pointers and
 * fds live until user_client_done); a negative errno otherwise (an error reply's, or the
 * one that ended the connection). */
uint16_t user_client_id(struct user_client *c);
int user_client_call(struct user_client *c, struct user_out *o, const int *fds,
                     unsigned nfds, struct user_msg *reply);
void user_client_done(struct user_client *c);

/* REGION_READ/WRITE of len bytes at off (split at max_data_xfer_size); accesses inside a
 * mapped area are loads and stores of the access's width. 0 or -errno. */
int user_client_region_read(struct user_client *c, unsigned idx, uint64_t off, void *buf,
                            uint32_t len);
int user_client_region_write(struct user_client *c, unsigned idx, uint64_t off,
                             const void *buf, uint32_t len);
/* The mapped area of region idx holding [off, off + len), or NULL. */
void *user_client_mapped(struct user_client *c, unsigned idx, uint64_t off, uint64_t len);
/* SET_IRQS: flags are VFIO_IRQ_SET_DATA_* | VFIO_IRQ_SET_ACTION_*; with DATA_EVENTFD
 * `count` fds go in chunks of what the server takes (max_msg_fds), with DATA_BOOL
 * `count` bools. */
int user_client_set_irqs(struct user_client *c, uint32_t index, uint32_t flags,
                         uint32_t start, uint32_t count, const int *fds,
                         const uint8_t *bools);
/* DMA_MAP of [iova, iova + size) backed by fd at offset (fd -1: no fd, the server must
 * use DMA_READ/WRITE, which this client refuses). prot: USER_DMA_MAP_READ | _WRITE. */
int user_client_dma_map(struct user_client *c, int fd, uint64_t offset, uint64_t iova,
                        uint64_t size, uint32_t prot);
int user_client_dma_unmap(struct user_client *c, uint64_t iova, uint64_t size, bool all);
int user_client_reset(struct user_client *c);

#endif
