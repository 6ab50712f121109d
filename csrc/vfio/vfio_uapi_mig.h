/* The VFIO migration uAPI (the v2 protocol) as luavfio uses it, whatever the system's
 * <linux/vfio.h> says. Debian 12's header (Linux 6.1) has FEATURE_MIGRATION and
 * FEATURE_MIG_DEVICE_STATE but not what Linux 6.2 added: the PRE_COPY states and flag,
 * FEATURE_MIG_DATA_SIZE and the data fd's MIG_GET_PRECOPY_INFO ioctl. Each definition
 * below applies only when the system header lacks it, so a newer header always wins; the
 * static assertions pin the layout either way (the kernel's ABI never changes). */
#ifndef LUAVFIO_VFIO_UAPI_MIG_H
#define LUAVFIO_VFIO_UAPI_MIG_H

#include <linux/types.h>
#include <linux/vfio.h>
#include <stddef.h>
#include <sys/ioctl.h>

/* VFIO_DEVICE_FEATURE_MIGRATION's flags: the states a device supports. */
#ifndef VFIO_MIGRATION_PRE_COPY
#define VFIO_MIGRATION_PRE_COPY (1 << 2)
#endif

/* The states of the migration state machine, by the numbers the kernel uses. Ours, so
 * the two PRE_COPY states exist on old headers too (the kernel's are enum members, which
 * no #ifdef can see); asserted equal to the kernel's below where the header has them. */
enum {
    VFIO_MIG_ERROR = 0,
    VFIO_MIG_STOP = 1,
    VFIO_MIG_RUNNING = 2,
    VFIO_MIG_STOP_COPY = 3,
    VFIO_MIG_RESUMING = 4,
    VFIO_MIG_RUNNING_P2P = 5,
    VFIO_MIG_PRE_COPY = 6,
    VFIO_MIG_PRE_COPY_P2P = 7,
    VFIO_MIG_NSTATES = 8,
};

/* GET: the length of the data STOP_COPY would produce now (an estimate). */
#ifndef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
#define VFIO_DEVICE_FEATURE_MIG_DATA_SIZE 9
struct vfio_device_feature_mig_data_size {
    __aligned_u64 stop_copy_length;
};
#endif

/* On a PRE_COPY data fd: how much initial and dirty data is ready to be read. */
#ifndef VFIO_MIG_GET_PRECOPY_INFO
#define LUAVFIO_OWN_PRECOPY_INFO 1
struct vfio_precopy_info {
    __u32 argsz;
    __u32 flags;
    __aligned_u64 initial_bytes;
    __aligned_u64 dirty_bytes;
};
#define VFIO_MIG_GET_PRECOPY_INFO _IO(VFIO_TYPE, VFIO_BASE + 21)
#endif

_Static_assert((int)VFIO_MIG_ERROR == (int)VFIO_DEVICE_STATE_ERROR, "mig state ERROR");
_Static_assert((int)VFIO_MIG_STOP == (int)VFIO_DEVICE_STATE_STOP, "mig state STOP");
_Static_assert((int)VFIO_MIG_RUNNING == (int)VFIO_DEVICE_STATE_RUNNING, "mig state RUNNING");
_Static_assert((int)VFIO_MIG_STOP_COPY == (int)VFIO_DEVICE_STATE_STOP_COPY, "mig state STOP_COPY");
_Static_assert((int)VFIO_MIG_RESUMING == (int)VFIO_DEVICE_STATE_RESUMING, "mig state RESUMING");
_Static_assert((int)VFIO_MIG_RUNNING_P2P == (int)VFIO_DEVICE_STATE_RUNNING_P2P, "mig state RUNNING_P2P");
#ifndef LUAVFIO_OWN_PRECOPY_INFO
/* A header with PRECOPY_INFO (Linux 6.2 and later) names the PRE_COPY states as well. */
_Static_assert((int)VFIO_MIG_PRE_COPY == (int)VFIO_DEVICE_STATE_PRE_COPY, "mig state PRE_COPY");
_Static_assert((int)VFIO_MIG_PRE_COPY_P2P == (int)VFIO_DEVICE_STATE_PRE_COPY_P2P, "mig state PRE_COPY_P2P");
#endif
_Static_assert(VFIO_MIGRATION_STOP_COPY == 1 && VFIO_MIGRATION_P2P == 2 &&
                   VFIO_MIGRATION_PRE_COPY == 4, "migration flags");
_Static_assert(VFIO_DEVICE_FEATURE_MIGRATION == 1, "FEATURE_MIGRATION");
_Static_assert(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE == 2, "FEATURE_MIG_DEVICE_STATE");
_Static_assert(VFIO_DEVICE_FEATURE_MIG_DATA_SIZE == 9, "FEATURE_MIG_DATA_SIZE");
_Static_assert(sizeof(struct vfio_device_feature_migration) == 8, "feature_migration size");
_Static_assert(sizeof(struct vfio_device_feature_mig_state) == 8, "mig_state size");
_Static_assert(offsetof(struct vfio_device_feature_mig_state, data_fd) == 4, "data_fd offset");
_Static_assert(sizeof(struct vfio_device_feature_mig_data_size) == 8, "mig_data_size size");
_Static_assert(sizeof(struct vfio_precopy_info) == 24, "precopy_info size");
_Static_assert(offsetof(struct vfio_precopy_info, initial_bytes) == 8, "initial_bytes offset");
_Static_assert(offsetof(struct vfio_precopy_info, dirty_bytes) == 16, "dirty_bytes offset");
_Static_assert(VFIO_MIG_GET_PRECOPY_INFO == 0x3b79, "MIG_GET_PRECOPY_INFO number");

#endif
