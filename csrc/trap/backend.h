/* The small interface between the PCI trap core and a device: config space, regions
 * (BARs, ROM) by index and offset, region and IRQ info. Three implementations: the kernel
 * VFIO device (backend_vfio.c), a vfio-user device (backend_user.c, over the client of
 * csrc/user) and a recorded device (backend_replay.c).
 *
 * Every operation returns 0 or a negative errno; the caller turns it into an error
 * that names the operation and the device. */
#ifndef LUAVFIO_BACKEND_H
#define LUAVFIO_BACKEND_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#define LV_REGION_MAX 9    /* BAR0-5, ROM (6), config (7), VGA (8) */
#define LV_REGION_ROM 6
#define LV_REGION_CONFIG 7
#define LV_IRQ_MAX 5       /* INTx, MSI, MSI-X, ERR, REQ */
#define LV_IRQ_INTX 0
#define LV_IRQ_MSI 1
#define LV_IRQ_MSIX 2

/* Same bit values as VFIO_REGION_INFO_FLAG_* so info can be copied through. */
#define LV_REGION_READ 1u
#define LV_REGION_WRITE 2u
#define LV_REGION_MMAP 4u

struct lv_region_info {
    uint64_t size;
    uint32_t flags;
};

struct lv_irq_info {
    uint32_t count;
    uint32_t flags;
};

struct lv_backend_ops {
    const char *kind;
    int (*cfg_read)(void *ctx, uint32_t off, void *buf, uint32_t len);
    int (*cfg_write)(void *ctx, uint32_t off, const void *buf, uint32_t len);
    int (*region_read)(void *ctx, unsigned idx, uint64_t off, void *buf, uint32_t len);
    int (*region_write)(void *ctx, unsigned idx, uint64_t off, const void *buf, uint32_t len);
    int (*region_info)(void *ctx, unsigned idx, struct lv_region_info *ri);
    int (*irq_info)(void *ctx, unsigned idx, struct lv_irq_info *ii);
    /* optional: the backend's own mapping of part of region idx (lv_backend_mapping) */
    int (*mapping)(void *ctx, unsigned idx, void **addr, uint64_t *off, uint64_t *len);
    void (*destroy)(void *ctx);
};

struct lv_backend {
    const struct lv_backend_ops *ops;
    void *ctx;
    char name[64];   /* for error messages: BDF or fixture name */
};

/* Kernel VFIO: regions are read with pread/pwrite at their offsets in the device fd, or
 * through a mapping when one is given. The fd is borrowed (the device object owns it). */
struct lv_vfio_region {
    uint64_t offset, size;
    uint32_t flags;
    void *map;           /* out: the backend's mmap of [map_offset, +map_len), or NULL */
    uint64_t map_offset, map_len;
    int want_mmap;       /* the backend maps the whole region itself when it is mappable,
                            and falls back to pread/pwrite if it can't */
    int mmap_errno;      /* out: why that mmap failed (0 if it worked or was not asked) */
    int owned;           /* internal: the backend unmaps it */
};
/* Which regions the backend reaches through a mapping (bit i = region i), and the
 * errno of failed mmap attempts by region. */
uint32_t lv_backend_vfio_mapped(const struct lv_backend *be, int *errnos);
/* The mapping of region idx: region offset *off is at *addr, for *len bytes. The VM layer
 * borrows it for memory slots, so a BAR is mapped once per device. Returns 0, or -errno:
 * why there is none (the failed mmap's errno; -ENOENT if none was made or asked). */
int lv_backend_vfio_mapping(const struct lv_backend *be, unsigned idx, void **addr,
                            uint64_t *off, uint64_t *len);
/* Any backend's mapping of region idx (lv_backend_vfio_mapping's contract): 0, or
 * -ENOENT for a backend that maps nothing. */
static inline int lv_backend_mapping(const struct lv_backend *be, unsigned idx, void **addr,
                                     uint64_t *off, uint64_t *len)
{
    if (!be->ops || !be->ops->mapping)
        return -ENOENT;
    return be->ops->mapping(be->ctx, idx, addr, off, len);
}
/* fdp: the device's fd as its owner keeps it (-1 once closed); the owner outlives the
 * backend. */
int lv_backend_vfio_init(struct lv_backend *be, const int *fdp,
                         const struct lv_vfio_region *regions, unsigned nregions,
                         const struct lv_irq_info *irqs, unsigned nirqs);

/* vfio-user: the client (user/user_client.h) its owner keeps open while the backend
 * lives; once the client is closed (socket -1) every access fails with EBADF. Region
 * accesses go to the server, or through the client's mappings of the areas it was given
 * fds for. */
struct user_client;
int lv_backend_user_init(struct lv_backend *be, struct user_client *client);

/* Recorded device: a config image, region sizes/flags with recorded contents, IRQ info.
 * Region contents are memory: writes are kept so a spec can read them back. */
struct lv_replay;
int lv_backend_replay_init(struct lv_backend *be, const uint8_t *config, size_t config_len);
int lv_replay_set_region(struct lv_backend *be, unsigned idx, uint64_t size, uint32_t flags);
int lv_replay_fill(struct lv_backend *be, unsigned idx, uint64_t off, const void *data, size_t len);
int lv_replay_set_irq(struct lv_backend *be, unsigned idx, uint32_t count, uint32_t flags);
/* Counters of accesses that reached the recorded device (config writes mostly), so specs
 * can prove that emulated registers never reach it. */
struct lv_replay_stats {
    uint64_t cfg_reads, cfg_writes, region_reads, region_writes;
    uint32_t last_cfg_write_off, last_cfg_write_len;
};
const struct lv_replay_stats *lv_replay_stats(const struct lv_backend *be);
/* Forget writes: back to the recorded state. */
void lv_replay_reset(struct lv_backend *be);

static inline void lv_backend_destroy(struct lv_backend *be)
{
    if (be->ops && be->ops->destroy)
        be->ops->destroy(be->ctx);
    be->ops = NULL;
    be->ctx = NULL;
}

#endif
