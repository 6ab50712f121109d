/* VFIO group: the unit of isolation; it attaches to a container and hands out devices. */
#include "vfio_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int vfio_group_open(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int vfio_group_status(int fd, uint32_t *flags)
{
    struct vfio_group_status st = {.argsz = sizeof st};
    if (ioctl(fd, VFIO_GROUP_GET_STATUS, &st) < 0)
        return -errno;
    *flags = st.flags;
    return 0;
}

int vfio_group_set_container(int fd, int container_fd)
{
    return ioctl(fd, VFIO_GROUP_SET_CONTAINER, &container_fd) < 0 ? -errno : 0;
}

int vfio_group_unset_container(int fd)
{
    return ioctl(fd, VFIO_GROUP_UNSET_CONTAINER) < 0 ? -errno : 0;
}

int vfio_group_device_fd(int fd, const char *name)
{
    int r = ioctl(fd, VFIO_GROUP_GET_DEVICE_FD, name);
    if (r < 0)
        return -errno;
    /* The kernel sets O_CLOEXEC on device fds; make sure regardless. */
    fcntl(r, F_SETFD, FD_CLOEXEC);
    return r;
}
