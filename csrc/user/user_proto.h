/* vfio-user on the wire: the message header, the command numbers and the payloads, as
 * QEMU's docs/interop/vfio-user.rst specifies them, and the decoded forms user_msg.c
 * produces. Everything on the wire is little-endian (base/le.h): the specification says
 * "the host's endianness", which is little-endian on every host this runs on, and a
 * fixed order keeps a big-endian host's bytes right too.
 *
 * Offsets and sizes below are payload offsets, after the 16-byte header. */
#ifndef LUAVFIO_USER_PROTO_H
#define LUAVFIO_USER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The header: id (2), command (2), size of the whole message (4), flags (4), error (4). */
#define USER_HDR_SIZE 16u

enum user_cmd {
    USER_VERSION = 1,
    USER_DMA_MAP = 2,
    USER_DMA_UNMAP = 3,
    USER_DEVICE_GET_INFO = 4,
    USER_DEVICE_GET_REGION_INFO = 5,
    USER_DEVICE_GET_REGION_IO_FDS = 6,
    USER_DEVICE_GET_IRQ_INFO = 7,
    USER_DEVICE_SET_IRQS = 8,
    USER_REGION_READ = 9,
    USER_REGION_WRITE = 10,
    USER_DMA_READ = 11,
    USER_DMA_WRITE = 12,
    USER_DEVICE_RESET = 13,
    /* 14 was the dirty-page command of early drafts: unknown here */
    USER_REGION_WRITE_MULTI = 15,
    USER_CMD_LIMIT = 16 /* every command number this layer knows is below it */
};

/* Header flags: bits 0-3 the type, bit 4 no-reply (requests), bit 5 error (replies). */
#define USER_F_TYPE_MASK 0xfu
#define USER_F_REQUEST 0x0u
#define USER_F_REPLY 0x1u
#define USER_F_NO_REPLY 0x10u
#define USER_F_ERROR 0x20u

struct user_hdr {
    uint16_t id;
    uint16_t cmd;
    uint32_t size;  /* the whole message, header included */
    uint32_t flags;
    uint32_t error; /* an errno, in an error reply */
};

static inline bool user_is_reply(const struct user_hdr *h)
{
    return (h->flags & USER_F_TYPE_MASK) == USER_F_REPLY;
}

/* The command's name ("dma_map", "device_get_region_info"...), NULL when unknown, and
 * the number of a name (0 when unknown). */
const char *user_cmd_name(unsigned cmd);
unsigned user_cmd_by_name(const char *name);
/* Whether the client sends the command's requests (all but DMA_READ/WRITE). */
bool user_cmd_from_client(unsigned cmd);

/* Payload sizes of the fixed parts. */
#define USER_VERSION_SIZE 4u          /* major, minor; JSON (NUL-terminated) follows */
#define USER_DMA_MAP_SIZE 32u         /* argsz, flags, offset, address, size */
#define USER_DMA_UNMAP_SIZE 24u       /* argsz, flags, address, size */
#define USER_DEVICE_INFO_SIZE 16u     /* argsz, flags, num_regions, num_irqs */
#define USER_REGION_INFO_SIZE 32u     /* argsz, flags, index, cap_offset, size, offset */
#define USER_IO_FDS_SIZE 16u          /* argsz, flags, index, count; sub-regions follow */
#define USER_IO_FD_SUB_SIZE 40u       /* offset, size, fd_index, type, flags, pad, data */
#define USER_IRQ_INFO_SIZE 16u        /* argsz, flags, index, count */
#define USER_IRQ_SET_SIZE 20u         /* argsz, flags, index, start, count; bools follow */
#define USER_REGION_RW_SIZE 16u       /* offset, region, count; data follows */
#define USER_DMA_RW_SIZE 16u          /* address, count (8 bytes); data follows */
#define USER_DMA_WRITE_REPLY_SIZE 12u /* address, count (4 bytes) */
#define USER_WRITE_MULTI_SIZE 8u      /* wr_cnt; wr_cnt writes follow */
#define USER_WRITE_ONE_SIZE 24u       /* offset, region, count (<= 8), data[8] */
#define USER_WRITE_MULTI_MAX 200u     /* writes in one message (QEMU's and the spec's) */

/* Region capability chain: header id (2), version (2), next (4), relative to the start of
 * the region info payload. */
#define USER_CAP_HDR_SIZE 8u
#define USER_REGION_CAP_SPARSE_MMAP 1u /* nr_areas (4), reserved (4), {offset, size}... */
#define USER_REGION_CAP_TYPE 2u        /* type (4), subtype (4) */
#define USER_SPARSE_AREA_SIZE 16u

/* Sub-region types of DEVICE_GET_REGION_IO_FDS. */
#define USER_IO_FD_TYPE_IOEVENTFD 0u
#define USER_IO_FD_TYPE_IOREGIONFD 1u

/* DMA_UNMAP's "everything" flag (VFIO_DMA_UNMAP_FLAG_ALL): address and size are 0. */
#define USER_DMA_UNMAP_ALL (1u << 1)
#define USER_DMA_MAP_READ (1u << 0)
#define USER_DMA_MAP_WRITE (1u << 1)

/* Capability defaults when the peer's version JSON leaves them out (the spec's). */
#define USER_DEFAULT_MAX_MSG_FDS 1u
#define USER_DEFAULT_MAX_XFER (1u << 20)
#define USER_DEFAULT_MAX_DMA_MAPS 65535u
#define USER_DEFAULT_PGSIZES 4096u

/* Hard limits of this implementation, whatever a peer negotiates. */
#define USER_FDS_MAX 64u                 /* fds in one message */
#define USER_XFER_MAX (64u << 20)        /* max_data_xfer_size */
#define USER_CTRL_MAX 65536u             /* the largest message that carries no bulk data */
#define USER_DATA_OVERHEAD 48u           /* header and fixed payload of a data message */

/* What one end accepts from its peer (its own advertised capabilities). */
enum user_role { USER_ROLE_ANY = 0, USER_ROLE_SERVER, USER_ROLE_CLIENT };
struct user_limits {
    uint32_t max_data_xfer_size; /* count of a data message */
    uint32_t max_msg_fds;        /* fds in one message (<= USER_FDS_MAX) */
    enum user_role role;         /* the receiving end: server refuses server->client
                                    requests and client refuses the others */
};

/* The defaults above, role ANY. */
void user_limits_default(struct user_limits *lim);
/* The largest whole message those limits accept: max_data_xfer_size plus the overhead
 * of a data message, and never below USER_CTRL_MAX. */
uint32_t user_max_msg_size(const struct user_limits *lim);

/* ------------------------------------------------------------------ decoded payloads */

/* The version JSON's capabilities (user_version.h reads and writes them); `present`
 * says which the sender named, the others hold the spec's defaults. */
#define USER_CAP_MAX_MSG_FDS (1u << 0)
#define USER_CAP_MAX_XFER (1u << 1)
#define USER_CAP_MAX_DMA_MAPS (1u << 2)
#define USER_CAP_PGSIZES (1u << 3)
#define USER_CAP_MIGRATION (1u << 4)
#define USER_CAP_WRITE_MULTIPLE (1u << 5)
#define USER_CAP_TWIN_SOCKET (1u << 6)
#define USER_VERSION_JSON_MAX 4096u /* bytes of JSON, NUL excluded */
struct user_caps {
    unsigned present;
    uint64_t max_msg_fds, max_data_xfer_size, max_dma_maps, pgsizes;
    uint64_t mig_pgsize, mig_max_bitmap_size; /* migration {pgsize, max_bitmap_size} */
    bool write_multiple;
    bool twin_supported;                      /* twin_socket {supported, fd_index} */
    int64_t twin_fd_index;                    /* -1 when absent */
};

struct user_version {
    uint16_t major, minor;
    const char *json; /* NUL-terminated within the message; NULL when absent */
    uint32_t json_len;
    struct user_caps caps; /* parsed from json (the defaults when absent) */
};

struct user_dma_map {
    uint32_t argsz, flags;
    uint64_t offset, addr, size;
};

struct user_dma_unmap {
    uint32_t argsz, flags;
    uint64_t addr, size;
};

struct user_device_info {
    uint32_t argsz, flags, num_regions, num_irqs;
};

struct user_sparse_area {
    uint64_t offset, size;
};

struct user_region_info {
    uint32_t argsz, flags, index, cap_offset;
    uint64_t size, offset;
    /* decoded capabilities (replies only, when the whole argsz arrived) */
    bool complete;            /* argsz bytes arrived: false means retry with that argsz */
    bool has_sparse;
    uint32_t nsparse;         /* areas, read with user_sparse_get */
    const uint8_t *sparse;    /* in the message buffer */
    bool has_type;
    uint32_t cap_type, cap_subtype;
};

struct user_io_fd_sub {
    uint64_t offset, size;
    uint32_t fd_index, type, flags;
    uint64_t data; /* datamatch (ioeventfd) or user_data (ioregionfd) */
};

struct user_io_fds {
    uint32_t argsz, flags, index, count;
    bool complete;            /* every sub-region arrived */
    const uint8_t *subs;      /* count entries of USER_IO_FD_SUB_SIZE, user_io_fd_sub_get */
};

struct user_irq_info {
    uint32_t argsz, flags, index, count;
};

struct user_irq_set {
    uint32_t argsz, flags, index, start, count;
    const uint8_t *bools; /* VFIO_IRQ_SET_DATA_BOOL: count bytes */
};

struct user_region_rw {
    uint64_t offset;
    uint32_t region, count;
    const uint8_t *data; /* count bytes where the message carries data, else NULL */
};

struct user_dma_rw {
    uint64_t addr, count;
    const uint8_t *data; /* count bytes where the message carries data, else NULL */
};

struct user_write_one {
    uint64_t offset;
    uint32_t region, count;
    uint8_t data[8];
};

struct user_write_multi {
    uint64_t wr_cnt;
    const uint8_t *wrs; /* wr_cnt entries (requests), user_write_one_get */
};

/* One decoded message. Pointers point into the message buffer it was decoded from;
 * fds stay owned by whoever received them (user_sock.h). */
struct user_msg {
    struct user_hdr hdr;
    const uint8_t *body;  /* payload, hdr.size - USER_HDR_SIZE bytes */
    uint32_t body_len;
    const int *fds;
    unsigned nfds;
    bool has_payload;     /* false for an error reply or a reply with no payload */
    union {
        struct user_version version;
        struct user_dma_map dma_map;
        struct user_dma_unmap dma_unmap;
        struct user_device_info device_info;
        struct user_region_info region_info;
        struct user_io_fds io_fds;
        struct user_irq_info irq_info;
        struct user_irq_set irq_set;
        struct user_region_rw region_rw;
        struct user_dma_rw dma_rw;
        struct user_write_multi write_multi;
    } u;
};

#endif
