/* Region I/O through the device fd: positional reads/writes and mmap of areas. */
#include "vfio_impl.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

int vfio_pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO;
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

int vfio_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO;
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

int vfio_map_area(int fd, uint64_t base, struct vfio_map_area *a, int prot)
{
    void *p = mmap(NULL, a->size, prot, MAP_SHARED, fd, (off_t)(base + a->off));
    if (p == MAP_FAILED)
        return -errno;
    a->ptr = p;
    return 0;
}

void vfio_unmap_area(struct vfio_map_area *a)
{
    if (a->ptr)
        munmap(a->ptr, a->size);
    a->ptr = NULL;
}
