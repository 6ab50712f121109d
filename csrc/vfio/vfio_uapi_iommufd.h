/* The iommufd and VFIO device-cdev ABI (Linux 6.2+ /dev/iommu, 6.6+ /dev/vfio/devices/).
 *
 * Distribution headers older than those kernels (Debian 12's are 6.1) lack them, so the
 * definitions luavfio uses are written out here from the ABI: ioctl numbers and struct
 * layouts are fixed by the kernel's stability rules. When the system headers have them,
 * theirs are used and the checks below hold for both. */
#ifndef LUAVFIO_VFIO_UAPI_IOMMUFD_H
#define LUAVFIO_VFIO_UAPI_IOMMUFD_H

#include <linux/types.h>
#include <linux/vfio.h>
#include <stddef.h>
#include <sys/ioctl.h>

#if defined(__has_include)
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif
#endif

/* ---- /dev/iommu: every command is _IO(';', 0x80 + n) on a struct led by its size ---- */
#ifndef IOMMU_IOAS_ALLOC

#define IOMMUFD_TYPE (';')

struct iommu_destroy {
    __u32 size;
    __u32 id; /* any object: an IOAS, a hardware page table... */
};
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)

struct iommu_ioas_alloc {
    __u32 size;
    __u32 flags; /* 0 */
    __u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)

struct iommu_iova_range {
    __aligned_u64 start;
    __aligned_u64 last; /* inclusive */
};

struct iommu_ioas_iova_ranges {
    __u32 size;
    __u32 ioas_id;
    __u32 num_iovas; /* in: room in allowed_iovas; out: how many there are */
    __u32 __reserved;
    __aligned_u64 allowed_iovas;      /* user pointer to struct iommu_iova_range[] */
    __aligned_u64 out_iova_alignment; /* a mapping's start and end must be multiples */
};
#define IOMMU_IOAS_IOVA_RANGES _IO(IOMMUFD_TYPE, 0x84)

enum {
    IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0,
    IOMMU_IOAS_MAP_WRITEABLE = 1 << 1,
    IOMMU_IOAS_MAP_READABLE = 1 << 2,
};

struct iommu_ioas_map {
    __u32 size;
    __u32 flags;
    __u32 ioas_id;
    __u32 __reserved;
    __aligned_u64 user_va;
    __aligned_u64 length;
    __aligned_u64 iova; /* in with FIXED_IOVA, else out */
};
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)

struct iommu_ioas_unmap {
    __u32 size;
    __u32 ioas_id;
    __aligned_u64 iova;
    __aligned_u64 length; /* in: the range; out: bytes unmapped */
};
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)

#endif /* IOMMU_IOAS_ALLOC */

/* ---- the VFIO device cdev (VFIO_TYPE ';', VFIO_BASE 100) ---------------------------- */
#ifndef VFIO_DEVICE_BIND_IOMMUFD

struct vfio_device_bind_iommufd {
    __u32 argsz;
    __u32 flags; /* 0 */
    __s32 iommufd;
    __u32 out_devid; /* the device's id in that iommufd */
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)

struct vfio_device_attach_iommufd_pt {
    __u32 argsz;
    __u32 flags; /* 0 */
    __u32 pt_id; /* in: an IOAS (or page table) id; out: the page table attached */
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)

struct vfio_device_detach_iommufd_pt {
    __u32 argsz;
    __u32 flags; /* 0 */
};
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)

#endif /* VFIO_DEVICE_BIND_IOMMUFD */

/* Hot reset through a cdev: the dependent devices carry devids (in the place of group
 * ids) and the call proves ownership through the iommufd, with no group fds. */
#ifndef VFIO_PCI_HOT_RESET_FLAG_DEV_ID
#define VFIO_PCI_HOT_RESET_FLAG_DEV_ID (1u << 0)
#define VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED (1u << 1)
#endif
#ifndef VFIO_PCI_DEVID_OWNED
#define VFIO_PCI_DEVID_OWNED 0             /* not bound here, but in an owned group */
#define VFIO_PCI_DEVID_NOT_OWNED 0xffffffffu /* outside what this iommufd owns */
#endif

/* The layouts, as the kernel reads them (x86-64 and every 64-bit ABI alike). */
_Static_assert(sizeof(struct iommu_destroy) == 8, "iommu_destroy");
_Static_assert(sizeof(struct iommu_ioas_alloc) == 12, "iommu_ioas_alloc");
_Static_assert(offsetof(struct iommu_ioas_alloc, out_ioas_id) == 8, "out_ioas_id");
_Static_assert(sizeof(struct iommu_iova_range) == 16, "iommu_iova_range");
_Static_assert(sizeof(struct iommu_ioas_iova_ranges) == 32, "iommu_ioas_iova_ranges");
_Static_assert(offsetof(struct iommu_ioas_iova_ranges, allowed_iovas) == 16, "allowed_iovas");
_Static_assert(offsetof(struct iommu_ioas_iova_ranges, out_iova_alignment) == 24,
               "out_iova_alignment");
_Static_assert(sizeof(struct iommu_ioas_map) == 40, "iommu_ioas_map");
_Static_assert(offsetof(struct iommu_ioas_map, user_va) == 16, "user_va");
_Static_assert(offsetof(struct iommu_ioas_map, iova) == 32, "map iova");
_Static_assert(sizeof(struct iommu_ioas_unmap) == 24, "iommu_ioas_unmap");
_Static_assert(offsetof(struct iommu_ioas_unmap, iova) == 8, "unmap iova");
_Static_assert(offsetof(struct iommu_ioas_unmap, length) == 16, "unmap length");
_Static_assert(sizeof(struct vfio_device_bind_iommufd) == 16, "vfio_device_bind_iommufd");
_Static_assert(offsetof(struct vfio_device_bind_iommufd, out_devid) == 12, "out_devid");
_Static_assert(sizeof(struct vfio_device_attach_iommufd_pt) == 12, "attach_iommufd_pt");
_Static_assert(sizeof(struct vfio_device_detach_iommufd_pt) == 8, "detach_iommufd_pt");
_Static_assert(IOMMU_IOAS_ALLOC == 0x3b81, "IOMMU_IOAS_ALLOC number");
_Static_assert(IOMMU_IOAS_MAP == 0x3b85, "IOMMU_IOAS_MAP number");
_Static_assert(VFIO_DEVICE_BIND_IOMMUFD == 0x3b76, "VFIO_DEVICE_BIND_IOMMUFD number");
_Static_assert(VFIO_DEVICE_ATTACH_IOMMUFD_PT == 0x3b77, "ATTACH_IOMMUFD_PT number");
_Static_assert(VFIO_DEVICE_DETACH_IOMMUFD_PT == 0x3b78, "DETACH_IOMMUFD_PT number");

#endif
