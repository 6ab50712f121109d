/* iommufd (/dev/iommu) and the VFIO device cdev: plain C, no Lua, 0 or -errno like the
 * rest of csrc/vfio (vfio_impl.h). The ABI definitions are in vfio_uapi_iommufd.h. */
#ifndef LUAVFIO_VFIO_IOMMUFD_H
#define LUAVFIO_VFIO_IOMMUFD_H

#include <stdint.h>

#include "vfio_impl.h"

/* Flags of vfio_ioas_map (the kernel's IOMMU_IOAS_MAP_READABLE/WRITEABLE). */
#define VFIO_IOAS_READ (1u << 2)
#define VFIO_IOAS_WRITE (1u << 1)

/* open(path) of /dev/iommu (or a VFIO device cdev: the same open, O_RDWR | O_CLOEXEC). */
int vfio_iommufd_open(const char *path);
/* IOMMU_IOAS_ALLOC: a new, empty I/O address space; its id in *id. */
int vfio_ioas_alloc(int iommufd, uint32_t *id);
/* IOMMU_DESTROY of any object id (EBUSY while devices are attached to it). */
int vfio_iommufd_destroy(int iommufd, uint32_t id);
/* IOMMU_IOAS_MAP at a fixed iova of [vaddr, vaddr + size) with VFIO_IOAS_READ/WRITE. */
int vfio_ioas_map(int iommufd, uint32_t ioas, uint64_t vaddr, uint64_t iova, uint64_t size,
                  uint32_t flags);
/* IOMMU_IOAS_UNMAP of [iova, iova + size) (size UINT64_MAX from 0: everything); bytes
 * unmapped in *unmapped. */
int vfio_ioas_unmap(int iommufd, uint32_t ioas, uint64_t iova, uint64_t size,
                    uint64_t *unmapped);
/* IOMMU_IOAS_IOVA_RANGES: the usable IOVA ranges (malloc'ed *out, *count entries, the
 * buffer grown to what the kernel reports) and the alignment a mapping needs. */
int vfio_ioas_iova_ranges(int iommufd, uint32_t ioas, struct vfio_iova_span **out,
                          uint32_t *count, uint64_t *alignment);

/* On a device cdev fd: VFIO_DEVICE_BIND_IOMMUFD (the devid in *devid), and
 * VFIO_DEVICE_ATTACH_IOMMUFD_PT / DETACH to and from an IOAS (or page table). */
int vfio_device_bind_iommufd(int devfd, int iommufd, uint32_t *devid);
int vfio_device_attach_pt(int devfd, uint32_t pt_id, uint32_t *attached);
int vfio_device_detach_pt(int devfd);

#endif
