/* The kernel VFIO device as a trap-core backend: config space and BARs are read and
 * written with pread/pwrite at each region's offset in the device fd; accesses inside a
 * mapping (one the caller passed, or the backend's own mmap of a mappable BAR) are plain
 * loads/stores of the access size, so the device sees the same width the guest used. The
 * backend borrows the device: it holds a pointer to the fd its owner keeps (the owner
 * sets it to -1 when it closes, and must outlive the backend), never a copy of the
 * number, so after the device closes nothing is forwarded anywhere, mapped or not. Its
 * own mappings are unmapped when it is destroyed. */
#include "backend.h"
#include "vfio/vfio_impl.h" /* vfio_pread_all, vfio_pwrite_all */

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <unistd.h>

struct vfio_be {
    const int *fd;             /* the owner's fd field: -1 once the device is closed */
    struct lv_vfio_region regions[LV_REGION_MAX];
    struct lv_irq_info irqs[LV_IRQ_MAX];
};

/* Device memory wants one access of the guest's width, not a byte-wise memcpy. */
static void mmio_load(volatile void *p, void *buf, uint32_t len)
{
    switch (len) {
    case 1: { uint8_t v = *(volatile uint8_t *)p; memcpy(buf, &v, 1); break; }
    case 2: { uint16_t v = *(volatile uint16_t *)p; memcpy(buf, &v, 2); break; }
    case 4: { uint32_t v = *(volatile uint32_t *)p; memcpy(buf, &v, 4); break; }
    case 8: { uint64_t v = *(volatile uint64_t *)p; memcpy(buf, &v, 8); break; }
    default: memcpy(buf, (const void *)p, len);
    }
}

static void mmio_store(volatile void *p, const void *buf, uint32_t len)
{
    switch (len) {
    case 1: { uint8_t v; memcpy(&v, buf, 1); *(volatile uint8_t *)p = v; break; }
    case 2: { uint16_t v; memcpy(&v, buf, 2); *(volatile uint16_t *)p = v; break; }
    case 4: { uint32_t v; memcpy(&v, buf, 4); *(volatile uint32_t *)p = v; break; }
    case 8: { uint64_t v; memcpy(&v, buf, 8); *(volatile uint64_t *)p = v; break; }
    default: memcpy((void *)p, buf, len);
    }
}

static volatile uint8_t *mapped(struct vfio_be *v, unsigned idx, uint64_t off, uint32_t len)
{
    struct lv_vfio_region *r = &v->regions[idx];
    if (!r->map || off < r->map_offset || off - r->map_offset > r->map_len ||
        len > r->map_len - (off - r->map_offset) || (len > 1 && off % len))
        return NULL;
    return (volatile uint8_t *)r->map + (off - r->map_offset);
}

static int check(struct vfio_be *v, unsigned idx, uint64_t off, uint32_t len)
{
    if (*v->fd < 0)
        return -EBADF;
    if (idx >= LV_REGION_MAX)
        return -EINVAL;
    uint64_t size = v->regions[idx].size;
    if (off > size || len > size - off)
        return -EINVAL;
    return 0;
}

static int v_region_read(void *ctx, unsigned idx, uint64_t off, void *buf, uint32_t len)
{
    struct vfio_be *v = ctx;
    int rc = check(v, idx, off, len);
    if (rc)
        return rc;
    volatile uint8_t *p = mapped(v, idx, off, len);
    if (p) {
        mmio_load(p, buf, len);
        return 0;
    }
    return vfio_pread_all(*v->fd, buf, len, v->regions[idx].offset + off);
}

static int v_region_write(void *ctx, unsigned idx, uint64_t off, const void *buf, uint32_t len)
{
    struct vfio_be *v = ctx;
    int rc = check(v, idx, off, len);
    if (rc)
        return rc;
    volatile uint8_t *p = mapped(v, idx, off, len);
    if (p) {
        mmio_store(p, buf, len);
        return 0;
    }
    return vfio_pwrite_all(*v->fd, buf, len, v->regions[idx].offset + off);
}

static int v_cfg_read(void *ctx, uint32_t off, void *buf, uint32_t len)
{
    return v_region_read(ctx, LV_REGION_CONFIG, off, buf, len);
}

static int v_cfg_write(void *ctx, uint32_t off, const void *buf, uint32_t len)
{
    return v_region_write(ctx, LV_REGION_CONFIG, off, buf, len);
}

static int v_region_info(void *ctx, unsigned idx, struct lv_region_info *ri)
{
    struct vfio_be *v = ctx;
    if (idx >= LV_REGION_MAX)
        return -EINVAL;
    ri->size = v->regions[idx].size;
    ri->flags = v->regions[idx].flags;
    return 0;
}

static int v_irq_info(void *ctx, unsigned idx, struct lv_irq_info *ii)
{
    struct vfio_be *v = ctx;
    if (idx >= LV_IRQ_MAX)
        return -EINVAL;
    *ii = v->irqs[idx];
    return 0;
}

static void v_destroy(void *ctx)
{
    struct vfio_be *v = ctx;
    for (unsigned i = 0; v && i < LV_REGION_MAX; i++)
        if (v->regions[i].owned)
            munmap(v->regions[i].map, (size_t)v->regions[i].map_len);
    free(ctx);
}

static const struct lv_backend_ops vfio_ops;
int lv_backend_vfio_mapping(const struct lv_backend *be, unsigned idx, void **addr,
                            uint64_t *off, uint64_t *len);

static int v_mapping(void *ctx, unsigned idx, void **addr, uint64_t *off, uint64_t *len)
{
    struct lv_backend be = {.ops = &vfio_ops, .ctx = ctx};
    return lv_backend_vfio_mapping(&be, idx, addr, off, len);
}

uint32_t lv_backend_vfio_mapped(const struct lv_backend *be, int *errnos)
{
    if (be->ops != &vfio_ops)
        return 0;
    const struct vfio_be *v = be->ctx;
    uint32_t bits = 0;
    for (unsigned i = 0; i < LV_REGION_MAX; i++) {
        if (v->regions[i].map)
            bits |= 1u << i;
        if (errnos)
            errnos[i] = v->regions[i].mmap_errno;
    }
    return bits;
}

int lv_backend_vfio_mapping(const struct lv_backend *be, unsigned idx, void **addr,
                            uint64_t *off, uint64_t *len)
{
    if (be->ops != &vfio_ops || idx >= LV_REGION_MAX)
        return -ENOENT;
    const struct lv_vfio_region *r = &((const struct vfio_be *)be->ctx)->regions[idx];
    if (!r->map)
        return r->mmap_errno ? -r->mmap_errno : -ENOENT;
    *addr = r->map;
    *off = r->map_offset;
    *len = r->map_len;
    return 0;
}

static const struct lv_backend_ops vfio_ops = {
    .kind = "vfio",
    .cfg_read = v_cfg_read,
    .cfg_write = v_cfg_write,
    .region_read = v_region_read,
    .region_write = v_region_write,
    .region_info = v_region_info,
    .irq_info = v_irq_info,
    .mapping = v_mapping,
    .destroy = v_destroy,
};

int lv_backend_vfio_init(struct lv_backend *be, const int *fdp,
                         const struct lv_vfio_region *regions, unsigned nregions,
                         const struct lv_irq_info *irqs, unsigned nirqs)
{
    if (*fdp < 0)
        return -EBADF;
    int fd = *fdp;
    struct vfio_be *v = calloc(1, sizeof *v);
    if (!v)
        return -ENOMEM;
    v->fd = fdp;
    for (unsigned i = 0; i < nregions && i < LV_REGION_MAX; i++) {
        struct lv_vfio_region *r = &v->regions[i];
        *r = regions[i];
        r->map = NULL;   /* the backend's own mappings only: it can vouch for those */
        r->map_offset = r->map_len = 0;
        r->owned = 0;
        r->mmap_errno = 0;
        if (!r->want_mmap || !r->size || i == LV_REGION_CONFIG)
            continue;
        if (!(r->flags & LV_REGION_MMAP) || r->size > SIZE_MAX) {
            r->mmap_errno = EINVAL;
            continue;
        }
        int prot = ((r->flags & LV_REGION_READ) ? PROT_READ : 0) |
                   ((r->flags & LV_REGION_WRITE) ? PROT_WRITE : 0);
        /* a file shorter than the region described is read with pread (which fails
         * cleanly past its end), never mapped: a load past the end would be SIGBUS */
        int fits = vfio_mmap_fits(fd, r->offset, r->size);
        if (fits < 0) {
            r->mmap_errno = -fits;
            continue;
        }
        void *p = mmap(NULL, (size_t)r->size, prot, MAP_SHARED, fd, (off_t)r->offset);
        if (p == MAP_FAILED) {
            r->mmap_errno = errno;   /* pread/pwrite it is */
            continue;
        }
        r->map = p;
        r->map_offset = 0;
        r->map_len = r->size;
        r->owned = 1;
    }
    for (unsigned i = 0; i < nirqs && i < LV_IRQ_MAX; i++)
        v->irqs[i] = irqs[i];
    be->ops = &vfio_ops;
    be->ctx = v;
    return 0;
}
