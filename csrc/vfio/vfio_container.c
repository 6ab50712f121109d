/* VFIO container: the IOMMU context that groups attach to and DMA is mapped in. */
#include "vfio_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int vfio_container_open(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int vfio_container_api_version(int fd)
{
    int r = ioctl(fd, VFIO_GET_API_VERSION);
    return r < 0 ? -errno : r;
}

int vfio_container_check_extension(int fd, unsigned ext)
{
    int r = ioctl(fd, VFIO_CHECK_EXTENSION, (unsigned long)ext);
    return r < 0 ? -errno : r;
}

int vfio_container_set_iommu(int fd, unsigned type)
{
    return ioctl(fd, VFIO_SET_IOMMU, (unsigned long)type) < 0 ? -errno : 0;
}

static int iommu_cap(const void *cap, size_t avail, uint16_t id, uint16_t version, void *ctx)
{
    struct vfio_iommu_desc *d = ctx;
    (void)version;
    if (id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
        struct vfio_iommu_type1_info_cap_iova_range c;
        if (avail < sizeof c)
            return 0;
        memcpy(&c, cap, sizeof c);
        uint32_t n = vfio_cap_entries(avail, sizeof c, sizeof(struct vfio_iova_range), c.nr_iovas);
        free(d->ranges);
        d->ranges = calloc(n ? n : 1, sizeof *d->ranges);
        if (!d->ranges) {
            d->nranges = 0;
            return 1;
        }
        const uint8_t *p = (const uint8_t *)cap + sizeof c;
        for (uint32_t i = 0; i < n; i++) {
            struct vfio_iova_range r;
            memcpy(&r, p + i * sizeof r, sizeof r);
            d->ranges[i].start = r.start;
            d->ranges[i].end = r.end;
        }
        d->nranges = n;
    } else if (id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
        struct vfio_iommu_type1_info_dma_avail c;
        if (avail < sizeof c)
            return 0;
        memcpy(&c, cap, sizeof c);
        d->have_dma_avail = 1;
        d->dma_avail = c.avail;
    } else if (id == VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION) {
        struct vfio_iommu_type1_info_cap_migration c;
        if (avail < sizeof c)
            return 0;
        memcpy(&c, cap, sizeof c);
        d->have_migration = 1;
        d->mig_pgsizes = c.pgsize_bitmap;
        d->mig_max_bitmap = c.max_dirty_bitmap_size;
    }
    return 0;
}

int vfio_iommu_parse(const void *buf, size_t bufsz, struct vfio_iommu_desc *out)
{
    struct vfio_iommu_type1_info info;
    memset(out, 0, sizeof *out);
    if (bufsz < sizeof info)
        return -EPROTO;
    memcpy(&info, buf, sizeof info);
    out->flags = info.flags;
    if (info.flags & VFIO_IOMMU_INFO_PGSIZES) {
        out->have_pgsizes = 1;
        out->pgsizes = info.iova_pgsizes;
    }
    if ((info.flags & VFIO_IOMMU_INFO_CAPS) && info.cap_offset) {
        int w = vfio_cap_walk(buf, bufsz, info.cap_offset, iommu_cap, out);
        if (w < 0)
            out->chain_error = w;
    }
    return 0;
}

int vfio_container_iommu_info(int fd, struct vfio_iommu_desc *out)
{
    void *buf;
    memset(out, 0, sizeof *out);
    int r = vfio_info_ioctl(fd, VFIO_IOMMU_GET_INFO, sizeof(struct vfio_iommu_type1_info),
                            &buf, NULL, NULL);
    if (r < 0)
        return r;
    r = vfio_iommu_parse(buf, (size_t)r, out);
    free(buf);
    return r;
}

void vfio_iommu_desc_free(struct vfio_iommu_desc *d)
{
    free(d->ranges);
    d->ranges = NULL;
    d->nranges = 0;
}

int vfio_container_map_dma(int fd, uint64_t vaddr, uint64_t iova, uint64_t size,
                           uint32_t flags)
{
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof m, .flags = flags, .vaddr = vaddr, .iova = iova, .size = size};
    return ioctl(fd, VFIO_IOMMU_MAP_DMA, &m) < 0 ? -errno : 0;
}

/* Whether the container still has an IOMMU backend. When its last group leaves, the kernel
 * releases the backend and every mapping with it (type1 unmaps and unpins all), and the
 * container answers every IOMMU ioctl with EINVAL: that is what this tells. */
int vfio_container_has_iommu(int fd)
{
    struct vfio_iommu_type1_info info = {.argsz = sizeof info};
    return ioctl(fd, VFIO_IOMMU_GET_INFO, &info) == 0 || errno != EINVAL;
}

int vfio_container_unmap_dma(int fd, uint64_t iova, uint64_t size, uint32_t flags,
                             uint64_t *unmapped)
{
    struct vfio_iommu_type1_dma_unmap u = {
        .argsz = sizeof u, .flags = flags, .iova = iova, .size = size};
    if (ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &u) < 0)
        return -errno;
    if (unmapped)
        *unmapped = u.size;
    return 0;
}
