/* VFIO device migration, the v2 protocol: what a device supports, its state machine
 * (one SET per request; the kernel walks combination arcs itself), the STOP_COPY size
 * estimate, and the data transfer fd: reads, writes and PRE_COPY's info ioctl. */
#include "vfio_impl.h"
#include "vfio_uapi_mig.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static const char *const state_names[VFIO_MIG_NSTATES] = {
    [VFIO_MIG_ERROR] = "error",         [VFIO_MIG_STOP] = "stop",
    [VFIO_MIG_RUNNING] = "running",     [VFIO_MIG_STOP_COPY] = "stop_copy",
    [VFIO_MIG_RESUMING] = "resuming",   [VFIO_MIG_RUNNING_P2P] = "running_p2p",
    [VFIO_MIG_PRE_COPY] = "pre_copy",   [VFIO_MIG_PRE_COPY_P2P] = "pre_copy_p2p",
};

const char *vfio_mig_state_name(uint32_t state)
{
    return state < VFIO_MIG_NSTATES ? state_names[state] : NULL;
}

int vfio_mig_state_number(const char *name)
{
    for (int i = 0; i < VFIO_MIG_NSTATES; i++)
        if (strcmp(name, state_names[i]) == 0)
            return i;
    return -EINVAL;
}

int vfio_mig_flags(int fd, uint64_t *flags)
{
    struct vfio_device_feature_migration m;
    memset(&m, 0, sizeof m);
    int r = vfio_device_feature(fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION,
                                &m, sizeof m);
    if (r < 0)
        return r;
    *flags = m.flags;
    return 0;
}

int vfio_mig_get_state(int fd, uint32_t *state)
{
    struct vfio_device_feature_mig_state m = {.device_state = 0, .data_fd = -1};
    int r = vfio_device_feature(
        fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &m, sizeof m);
    if (r < 0)
        return r;
    *state = m.device_state;
    return 0;
}

int vfio_mig_set_state(int fd, uint32_t state, int *data_fd)
{
    struct vfio_device_feature_mig_state m = {.device_state = state, .data_fd = -1};
    *data_fd = -1;
    int r = vfio_device_feature(
        fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &m, sizeof m);
    if (r < 0)
        return r;
    *data_fd = m.data_fd >= 0 ? m.data_fd : -1;
    return 0;
}

int vfio_mig_data_size(int fd, uint64_t *length)
{
    struct vfio_device_feature_mig_data_size d;
    memset(&d, 0, sizeof d);
    int r = vfio_device_feature(
        fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &d, sizeof d);
    if (r < 0)
        return r;
    *length = d.stop_copy_length;
    return 0;
}

int vfio_mig_precopy_info(int data_fd, uint64_t *initial_bytes, uint64_t *dirty_bytes,
                          uint32_t *flags)
{
    struct vfio_precopy_info info;
    memset(&info, 0, sizeof info);
    info.argsz = sizeof info;
    if (ioctl(data_fd, VFIO_MIG_GET_PRECOPY_INFO, &info) < 0)
        return -errno;
    *initial_bytes = info.initial_bytes;
    *dirty_bytes = info.dirty_bytes;
    *flags = info.flags;
    return 0;
}

int vfio_mig_read(int data_fd, void *buf, size_t n, size_t *got)
{
    uint8_t *p = buf;
    *got = 0;
    while (*got < n) {
        ssize_t r = read(data_fd, p + *got, n - *got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break; /* the end of the stream (for PRE_COPY: of what is ready now) */
        *got += (size_t)r;
    }
    return 0;
}

int vfio_mig_write(int data_fd, const void *buf, size_t n, size_t *done)
{
    const uint8_t *p = buf;
    *done = 0;
    while (*done < n) {
        ssize_t r = write(data_fd, p + *done, n - *done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO; /* a write that takes nothing would never finish */
        *done += (size_t)r;
    }
    return 0;
}
