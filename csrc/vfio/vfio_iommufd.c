/* iommufd: the IOMMU context of /dev/iommu, its I/O address spaces, and the VFIO device
 * cdev's binding to them. */
#include "vfio_iommufd.h"
#include "vfio_uapi_iommufd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

_Static_assert(VFIO_IOAS_READ == IOMMU_IOAS_MAP_READABLE, "read flag");
_Static_assert(VFIO_IOAS_WRITE == IOMMU_IOAS_MAP_WRITEABLE, "write flag");

static int xioctl(int fd, unsigned long req, void *arg)
{
    int r;
    do
        r = ioctl(fd, req, arg);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int vfio_iommufd_open(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int vfio_ioas_alloc(int iommufd, uint32_t *id)
{
    struct iommu_ioas_alloc a = {.size = sizeof a};
    int r = xioctl(iommufd, IOMMU_IOAS_ALLOC, &a);
    if (r < 0)
        return r;
    *id = a.out_ioas_id;
    return 0;
}

int vfio_iommufd_destroy(int iommufd, uint32_t id)
{
    struct iommu_destroy d = {.size = sizeof d, .id = id};
    int r = xioctl(iommufd, IOMMU_DESTROY, &d);
    return r < 0 ? r : 0;
}

int vfio_ioas_map(int iommufd, uint32_t ioas, uint64_t vaddr, uint64_t iova, uint64_t size,
                  uint32_t flags)
{
    if (flags & ~(uint32_t)(VFIO_IOAS_READ | VFIO_IOAS_WRITE))
        return -EINVAL;
    struct iommu_ioas_map m = {
        .size = sizeof m,
        .flags = flags | IOMMU_IOAS_MAP_FIXED_IOVA,
        .ioas_id = ioas,
        .user_va = vaddr,
        .length = size,
        .iova = iova,
    };
    int r = xioctl(iommufd, IOMMU_IOAS_MAP, &m);
    return r < 0 ? r : 0;
}

int vfio_ioas_unmap(int iommufd, uint32_t ioas, uint64_t iova, uint64_t size,
                    uint64_t *unmapped)
{
    struct iommu_ioas_unmap u = {.size = sizeof u, .ioas_id = ioas, .iova = iova,
                                 .length = size};
    int r = xioctl(iommufd, IOMMU_IOAS_UNMAP, &u);
    if (r < 0)
        return r;
    if (unmapped)
        *unmapped = u.length;
    return 0;
}

/* Bounds the range list the kernel may ask room for. */
#define IOVA_RANGES_MAX 4096

int vfio_ioas_iova_ranges(int iommufd, uint32_t ioas, struct vfio_iova_span **out,
                          uint32_t *count, uint64_t *alignment)
{
    uint32_t room = 4;
    *out = NULL;
    *count = 0;
    for (int tries = 0; tries < 4; tries++) {
        struct iommu_iova_range *buf = calloc(room, sizeof *buf);
        if (!buf)
            return -ENOMEM;
        struct iommu_ioas_iova_ranges q = {
            .size = sizeof q,
            .ioas_id = ioas,
            .num_iovas = room,
            .allowed_iovas = (uintptr_t)buf,
        };
        int r = xioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &q);
        if (r == -EMSGSIZE && q.num_iovas > room && q.num_iovas <= IOVA_RANGES_MAX) {
            /* the kernel says how many there are: retry with room for them */
            room = q.num_iovas;
            free(buf);
            continue;
        }
        if (r < 0) {
            free(buf);
            return r;
        }
        uint32_t n = q.num_iovas < room ? q.num_iovas : room;
        struct vfio_iova_span *s = calloc(n ? n : 1, sizeof *s);
        if (!s) {
            free(buf);
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < n; i++) {
            s[i].start = buf[i].start;
            s[i].end = buf[i].last;
        }
        free(buf);
        *out = s;
        *count = n;
        if (alignment)
            *alignment = q.out_iova_alignment;
        return 0;
    }
    return -EMSGSIZE;
}

int vfio_device_bind_iommufd(int devfd, int iommufd, uint32_t *devid)
{
    struct vfio_device_bind_iommufd b = {.argsz = sizeof b, .iommufd = iommufd};
    int r = xioctl(devfd, VFIO_DEVICE_BIND_IOMMUFD, &b);
    if (r < 0)
        return r;
    if (devid)
        *devid = b.out_devid;
    return 0;
}

int vfio_device_attach_pt(int devfd, uint32_t pt_id, uint32_t *attached)
{
    struct vfio_device_attach_iommufd_pt a = {.argsz = sizeof a, .pt_id = pt_id};
    int r = xioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &a);
    if (r < 0)
        return r;
    if (attached)
        *attached = a.pt_id;
    return 0;
}

int vfio_device_detach_pt(int devfd)
{
    struct vfio_device_detach_iommufd_pt d = {.argsz = sizeof d};
    int r = xioctl(devfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &d);
    return r < 0 ? r : 0;
}
