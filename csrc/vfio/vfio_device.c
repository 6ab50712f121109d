/* VFIO device: info, regions, IRQ info, resets and feature probing. */
#include "vfio_impl.h"

#include <errno.h>
#include <linux/vfio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

int vfio_device_info(int fd, struct vfio_dev_desc *out)
{
    struct vfio_device_info info = {.argsz = sizeof info};
    if (ioctl(fd, VFIO_DEVICE_GET_INFO, &info) < 0)
        return -errno;
    out->flags = info.flags;
    out->num_regions = info.num_regions;
    out->num_irqs = info.num_irqs;
    return 0;
}

static void region_init(void *buf, void *ctx)
{
    struct vfio_region_info *ri = buf;
    ri->index = *(uint32_t *)ctx;
}

static int region_cap(const void *cap, size_t avail, uint16_t id, uint16_t version, void *ctx)
{
    struct vfio_region_desc *d = ctx;
    (void)version;
    if (id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
        struct vfio_region_info_cap_sparse_mmap c;
        if (avail < sizeof c)
            return 0;
        memcpy(&c, cap, sizeof c);
        uint32_t n = vfio_cap_entries(avail, sizeof c, sizeof(struct vfio_region_sparse_mmap_area),
                                      c.nr_areas);
        free(d->sparse);
        d->sparse = calloc(n ? n : 1, sizeof *d->sparse);
        if (!d->sparse) {
            d->nsparse = 0;
            return 1;
        }
        const uint8_t *p = (const uint8_t *)cap + sizeof c;
        uint32_t k = 0;
        for (uint32_t i = 0; i < n; i++) {
            struct vfio_region_sparse_mmap_area a;
            memcpy(&a, p + i * sizeof a, sizeof a);
            /* Drop empty areas and areas that do not fit in the region: mapping them
             * could only fail or expose memory beyond the region. */
            if (a.size == 0 || a.offset > d->size || a.size > d->size - a.offset)
                continue;
            d->sparse[k].offset = a.offset;
            d->sparse[k].size = a.size;
            k++;
        }
        d->have_sparse = 1;
        d->nsparse = k;
    } else if (id == VFIO_REGION_INFO_CAP_TYPE) {
        struct vfio_region_info_cap_type c;
        if (avail < sizeof c)
            return 0;
        memcpy(&c, cap, sizeof c);
        d->have_type = 1;
        d->type = c.type;
        d->subtype = c.subtype;
    } else if (id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
        d->msix_mappable = 1;
    }
    return 0;
}

int vfio_region_parse(const void *buf, size_t bufsz, struct vfio_region_desc *out)
{
    struct vfio_region_info ri;
    memset(out, 0, sizeof *out);
    if (bufsz < sizeof ri)
        return -EPROTO;
    memcpy(&ri, buf, sizeof ri);
    out->index = ri.index;
    out->flags = ri.flags;
    out->size = ri.size;
    out->offset = ri.offset;
    if ((ri.flags & VFIO_REGION_INFO_FLAG_CAPS) && ri.cap_offset) {
        int w = vfio_cap_walk(buf, bufsz, ri.cap_offset, region_cap, out);
        if (w < 0)
            out->chain_error = w;
    }
    return 0;
}

int vfio_device_region_info(int fd, uint32_t index, struct vfio_region_desc *out)
{
    void *buf;
    memset(out, 0, sizeof *out);
    out->index = index;
    int r = vfio_info_ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, sizeof(struct vfio_region_info),
                            &buf, region_init, &index);
    if (r < 0)
        return r;
    r = vfio_region_parse(buf, (size_t)r, out);
    free(buf);
    return r;
}

void vfio_region_desc_free(struct vfio_region_desc *d)
{
    free(d->sparse);
    d->sparse = NULL;
    d->nsparse = 0;
}

int vfio_device_irq_info(int fd, uint32_t index, struct vfio_irq_desc *out)
{
    struct vfio_irq_info ii = {.argsz = sizeof ii, .index = index};
    if (ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, &ii) < 0)
        return -errno;
    out->index = ii.index;
    out->flags = ii.flags;
    out->count = ii.count;
    return 0;
}

int vfio_device_reset(int fd)
{
    return ioctl(fd, VFIO_DEVICE_RESET) < 0 ? -errno : 0;
}

/* Bounds the dependent-device list the kernel may ask room for. */
#define HOT_RESET_MAX 4096

int vfio_device_hot_reset_info(int fd, struct vfio_dependent **out, uint32_t *count,
                               uint32_t *flags)
{
    uint32_t cap = 8;
    *out = NULL;
    *count = 0;
    for (int tries = 0; tries < 4; tries++) {
        size_t sz = sizeof(struct vfio_pci_hot_reset_info) +
                    (size_t)cap * sizeof(struct vfio_pci_dependent_device);
        struct vfio_pci_hot_reset_info *h = calloc(1, sz);
        if (!h)
            return -ENOMEM;
        h->argsz = (uint32_t)sz;
        if (ioctl(fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, h) < 0) {
            int e = errno;
            uint32_t need = h->count;
            free(h);
            /* ENOSPC reports the count needed: retry once with room for it. */
            if (e == ENOSPC && need > cap && need <= HOT_RESET_MAX) {
                cap = need;
                continue;
            }
            return -e;
        }
        uint32_t n = h->count < cap ? h->count : cap;
        struct vfio_dependent *d = calloc(n ? n : 1, sizeof *d);
        if (!d) {
            free(h);
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < n; i++) {
            d[i].group_id = h->devices[i].group_id;
            d[i].segment = h->devices[i].segment;
            d[i].bus = h->devices[i].bus;
            d[i].devfn = h->devices[i].devfn;
        }
        *flags = h->flags;
        *out = d;
        *count = n;
        free(h);
        return 0;
    }
    return -ENOSPC;
}

int vfio_device_hot_reset(int fd, const int32_t *group_fds, uint32_t count)
{
    size_t sz = sizeof(struct vfio_pci_hot_reset) + (size_t)count * sizeof(int32_t);
    struct vfio_pci_hot_reset *h = calloc(1, sz);
    if (!h)
        return -ENOMEM;
    h->argsz = (uint32_t)sz;
    h->count = count;
    if (count)
        memcpy(h->group_fds, group_fds, count * sizeof(int32_t));
    int r = ioctl(fd, VFIO_DEVICE_PCI_HOT_RESET, h) < 0 ? -errno : 0;
    free(h);
    return r;
}

int vfio_device_feature(int fd, uint32_t flags, void *data, size_t datasz)
{
    size_t sz = sizeof(struct vfio_device_feature) + datasz;
    struct vfio_device_feature *f = calloc(1, sz);
    if (!f)
        return -ENOMEM;
    f->argsz = (uint32_t)sz;
    f->flags = flags;
    if (datasz)
        memcpy(f->data, data, datasz);
    int r = ioctl(fd, VFIO_DEVICE_FEATURE, f);
    int e = r < 0 ? -errno : 0;
    if (!e && datasz)
        memcpy(data, f->data, datasz);
    free(f);
    return e;
}
