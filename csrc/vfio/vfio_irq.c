/* Interrupts: VFIO_DEVICE_SET_IRQS and the eventfds that carry them. */
#include "vfio_impl.h"

#include <errno.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

int vfio_device_set_irqs(int fd, uint32_t index, uint32_t action, uint32_t data_type,
                         uint32_t start, uint32_t count, const void *data)
{
    size_t dsz = 0;
    if (data_type == VFIO_IRQ_SET_DATA_BOOL)
        dsz = count;
    else if (data_type == VFIO_IRQ_SET_DATA_EVENTFD)
        dsz = (size_t)count * sizeof(int32_t);
    size_t sz = sizeof(struct vfio_irq_set) + dsz;
    struct vfio_irq_set *s = calloc(1, sz);
    if (!s)
        return -ENOMEM;
    s->argsz = (uint32_t)sz;
    s->flags = action | data_type;
    s->index = index;
    s->start = start;
    s->count = count;
    if (dsz)
        memcpy(s->data, data, dsz);
    int r = ioctl(fd, VFIO_DEVICE_SET_IRQS, s) < 0 ? -errno : 0;
    free(s);
    return r;
}

int vfio_eventfd_create(unsigned initval, int semaphore)
{
    int fd = eventfd(initval, EFD_CLOEXEC | EFD_NONBLOCK | (semaphore ? EFD_SEMAPHORE : 0));
    return fd < 0 ? -errno : fd;
}

int vfio_eventfd_read(int fd, uint64_t *count)
{
    for (;;) {
        ssize_t n = read(fd, count, sizeof *count);
        if (n == (ssize_t)sizeof *count)
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 ? -errno : -EIO;
    }
}

int vfio_eventfd_write(int fd, uint64_t value)
{
    for (;;) {
        ssize_t n = write(fd, &value, sizeof value);
        if (n == (ssize_t)sizeof value)
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 ? -errno : -EIO;
    }
}

int vfio_fd_wait(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (;;) {
        int r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue; /* a restarted wait may overshoot the timeout; acceptable here */
        if (r < 0)
            return -errno;
        if (r == 0)
            return 0;
        if (p.revents & (POLLERR | POLLNVAL))
            return -EBADF;
        return 1;
    }
}
