/* VFIO uAPI logic shared by the vfio.core bindings: plain C, no Lua.
 * Every function returns 0 (or a non-negative result) on success and -errno on failure,
 * so the binding layer can name the operation and the subject in its error message. */
#ifndef LUAVFIO_VFIO_IMPL_H
#define LUAVFIO_VFIO_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- capability chains (vfio_cap.c) ---------------------------------------------- */

/* Called for each capability header found in an INFO buffer; `avail` is how many bytes of
 * the capability lie inside the buffer (at least the 8-byte header). Return non-zero to
 * stop the walk. */
typedef int (*vfio_cap_fn)(const void *cap, size_t avail, uint16_t id, uint16_t version,
                           void *ctx);

/* Walk the chain starting at `first` (an offset from the start of `buf`). Guards against
 * offsets outside the buffer, misaligned or backwards links (loops) and overlong chains.
 * Returns the number of capabilities visited, or -EPROTO if the chain was malformed
 * (capabilities visited before the fault were still reported). */
int vfio_cap_walk(const void *buf, size_t bufsz, uint32_t first, vfio_cap_fn fn, void *ctx);

/* A capability with a fixed part of `fixed` bytes followed by `declared` entries of `elem`
 * bytes: how many entries lie inside the `avail` bytes present (avail >= fixed). The
 * declared count is trusted only as far as the buffer holds. */
uint32_t vfio_cap_entries(size_t avail, size_t fixed, size_t elem, uint32_t declared);

/* Issue an INFO ioctl whose struct starts with argsz and grows when the kernel reports a
 * larger argsz (capability chains). `*bufp` is malloc'ed (caller frees); `minsz` is the
 * fixed struct size, `init` fills the request fields after argsz (may be NULL).
 * Returns the size of the buffer (walk capabilities only within it) or -errno. */
int vfio_info_ioctl(int fd, unsigned long req, size_t minsz, void **bufp,
                    void (*init)(void *buf, void *ctx), void *ctx);

/* ---- container (vfio_container.c) ------------------------------------------------- */

struct vfio_iova_span {
    uint64_t start, end; /* inclusive end, as the kernel reports it */
};

struct vfio_iommu_desc {
    uint32_t flags;
    uint64_t pgsizes;
    int have_pgsizes;
    int have_dma_avail;
    uint32_t dma_avail;
    int have_migration;
    uint64_t mig_pgsizes, mig_max_bitmap;
    uint32_t nranges;
    struct vfio_iova_span *ranges; /* malloc'ed, nranges entries */
    int chain_error;               /* -EPROTO when the capability chain was malformed */
};

int vfio_container_open(const char *path);
int vfio_container_api_version(int fd);
int vfio_container_check_extension(int fd, unsigned ext);
int vfio_container_set_iommu(int fd, unsigned type);
int vfio_container_iommu_info(int fd, struct vfio_iommu_desc *out);
int vfio_container_has_iommu(int fd);
/* Parse a VFIO_IOMMU_GET_INFO result of bufsz bytes (bounded capability walk). */
int vfio_iommu_parse(const void *buf, size_t bufsz, struct vfio_iommu_desc *out);
void vfio_iommu_desc_free(struct vfio_iommu_desc *d);
int vfio_container_map_dma(int fd, uint64_t vaddr, uint64_t iova, uint64_t size,
                           uint32_t flags);
int vfio_container_unmap_dma(int fd, uint64_t iova, uint64_t size, uint32_t flags,
                             uint64_t *unmapped);

/* ---- group (vfio_group.c) --------------------------------------------------------- */

int vfio_group_open(const char *path);
int vfio_group_status(int fd, uint32_t *flags);
int vfio_group_set_container(int fd, int container_fd);
int vfio_group_unset_container(int fd);
int vfio_group_device_fd(int fd, const char *name);

/* ---- device (vfio_device.c) ------------------------------------------------------- */

struct vfio_dev_desc {
    uint32_t flags, num_regions, num_irqs;
};

struct vfio_sparse_area {
    uint64_t offset, size;
};

struct vfio_region_desc {
    uint32_t index, flags;
    uint64_t size, offset;
    int have_type;
    uint32_t type, subtype;
    int msix_mappable;
    int have_sparse;
    uint32_t nsparse;
    struct vfio_sparse_area *sparse; /* malloc'ed */
    int chain_error;
};

struct vfio_irq_desc {
    uint32_t index, flags, count;
};

struct vfio_dependent {
    uint32_t group_id;
    uint16_t segment;
    uint8_t bus, devfn;
};

int vfio_device_info(int fd, struct vfio_dev_desc *out);
int vfio_device_region_info(int fd, uint32_t index, struct vfio_region_desc *out);
/* Parse a VFIO_DEVICE_GET_REGION_INFO result of bufsz bytes (bounded capability walk). */
int vfio_region_parse(const void *buf, size_t bufsz, struct vfio_region_desc *out);
void vfio_region_desc_free(struct vfio_region_desc *d);
int vfio_device_irq_info(int fd, uint32_t index, struct vfio_irq_desc *out);
int vfio_device_reset(int fd);
/* On success *out is malloc'ed with *count entries and *flags holds the info flags. */
int vfio_device_hot_reset_info(int fd, struct vfio_dependent **out, uint32_t *count,
                               uint32_t *flags);
int vfio_device_hot_reset(int fd, const int32_t *group_fds, uint32_t count);
int vfio_device_feature(int fd, uint32_t flags, void *data, size_t datasz);

/* ---- migration (vfio_migration.c; the ABI in vfio_uapi_mig.h) ---------------------- */

/* The states by name: "error", "stop", "running", "stop_copy", "resuming", "running_p2p",
 * "pre_copy", "pre_copy_p2p"; NULL for a number outside the machine. */
const char *vfio_mig_state_name(uint32_t state);
/* The state's number, or -EINVAL for a name that is none. */
int vfio_mig_state_number(const char *name);
/* VFIO_DEVICE_FEATURE_MIGRATION (GET): the VFIO_MIGRATION_* flags the device supports. */
int vfio_mig_flags(int fd, uint64_t *flags);
/* VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: the current state (GET), or move to `state`
 * (SET). *data_fd is the new data transfer fd (close-on-exec, the caller owns it) or -1
 * when the arc opens none. */
int vfio_mig_get_state(int fd, uint32_t *state);
int vfio_mig_set_state(int fd, uint32_t state, int *data_fd);
/* VFIO_DEVICE_FEATURE_MIG_DATA_SIZE (GET): the length STOP_COPY would produce. */
int vfio_mig_data_size(int fd, uint64_t *length);
/* VFIO_MIG_GET_PRECOPY_INFO on a PRE_COPY data fd. */
int vfio_mig_precopy_info(int data_fd, uint64_t *initial_bytes, uint64_t *dirty_bytes,
                          uint32_t *flags);
/* Read up to n bytes, continuing short reads until n or the end of the stream and
 * retrying EINTR; *got says how many arrived (also on failure). 0 or -errno. */
int vfio_mig_read(int data_fd, void *buf, size_t n, size_t *got);
/* Write all n bytes, continuing short writes and retrying EINTR; *done as above. */
int vfio_mig_write(int data_fd, const void *buf, size_t n, size_t *done);

/* ---- interrupts (vfio_irq.c) ------------------------------------------------------ */

/* data_type is VFIO_IRQ_SET_DATA_{NONE,BOOL,EVENTFD}; `data` holds count bytes (BOOL) or
 * count int32 (EVENTFD, -1 de-assigns) and is ignored for NONE. */
int vfio_device_set_irqs(int fd, uint32_t index, uint32_t action, uint32_t data_type,
                         uint32_t start, uint32_t count, const void *data);
int vfio_eventfd_create(unsigned initval, int semaphore);
/* Returns 0 and the count, -EAGAIN when nothing is pending. */
int vfio_eventfd_read(int fd, uint64_t *count);
int vfio_eventfd_write(int fd, uint64_t value);
/* 1 when readable, 0 on timeout (timeout_ms < 0 waits forever). */
int vfio_fd_wait(int fd, int timeout_ms);

/* ---- regions (vfio_region.c) ------------------------------------------------------ */

struct vfio_map_area {
    uint64_t off, size; /* within the region */
    uint8_t *ptr;       /* mapping of [off, off + size) */
};

/* Exact-size positional I/O that retries EINTR and continues partial transfers;
 * returns 0 or -errno (-EIO when the file ended early). */
int vfio_pread_all(int fd, void *buf, size_t n, uint64_t off);
int vfio_pwrite_all(int fd, const void *buf, size_t n, uint64_t off);
/* Map [off, off+size) of the fd region starting at file offset `base`; -ENXIO when
 * vfio_mmap_fits refuses it. */
int vfio_map_area(int fd, uint64_t base, struct vfio_map_area *a, int prot);
/* 0 when [off, off + size) of fd may be mapped, -ENXIO when fd is a regular file (a
 * memfd, a file standing in for a device) that ends before off + size: a load past its
 * end would kill the process with SIGBUS, so such a mapping is never made. Device fds
 * (VFIO) are not files with a size and always pass. A file shrunk after the mapping
 * was made (truncated through another open file) is not covered: its owner must not
 * shrink a file it lent as a device. */
int vfio_mmap_fits(int fd, uint64_t off, uint64_t size);
void vfio_unmap_area(struct vfio_map_area *a);
/* Bulk copies out of / into a device mapping with device-safe access sizes. */
void vfio_copy_from_io(void *dst, const volatile uint8_t *src, size_t n);
void vfio_copy_to_io(volatile uint8_t *dst, const void *src, size_t n);

/* ---- DMA buffers (vfio_dma.c) ----------------------------------------------------- */

size_t vfio_page_size(void);
/* Page-aligned, zeroed anonymous memory rounded up to whole pages; returns NULL and sets
 * errno on failure. */
void *vfio_dma_alloc(size_t size, size_t *rounded);
void vfio_dma_free(void *p, size_t rounded);

#endif
