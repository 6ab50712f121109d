/* The userdata structs of vfio.core, shared by the binding files. */
#ifndef LUAVFIO_L_OBJECTS_H
#define LUAVFIO_L_OBJECTS_H

#include "lv.h"
#include "vfio/vfio_impl.h"

#define LV_CONTAINER "vfio.container"
#define LV_GROUP "vfio.group"
#define LV_DEVICE "vfio.device"
#define LV_REGION "vfio.region"
#define LV_EVENTFD "vfio.eventfd"
#define LV_DMABUF "vfio.dmabuf"

/* uv1: table iova -> DMA buffer, so mapped buffers outlive their Lua references. */
typedef struct {
    int fd;
    unsigned iommu; /* the VFIO_SET_IOMMU type, 0 until set */
    char path[128];
} lv_container;

/* uv1: the container it is attached to. */
typedef struct {
    int fd;
    int number; /* -1 when opened by a path without a number */
    char path[128];
} lv_group;

struct lv_region;

/* uv1: the group; for a cdev the iommufd it is bound to or the ioas it is attached to;
 * nothing for adopted fds. */
typedef struct lv_device {
    int fd;
    int is_memory;            /* a regular file, not a device: its mappings are ordinary
                                 memory, so bulk copies may use memcpy's widths */
    char name[128];
    struct lv_region *regions; /* live regions, unmapped when the device closes */
} lv_device;

/* uv1: the device. */
typedef struct lv_region {
    lv_device *dev;
    struct lv_region *next, **pprev;
    uint64_t size, offset;
    uint32_t index, flags;
    int err;                  /* errno of a failed REGION_INFO, else 0 */
    uint32_t nareas;          /* mapped areas; 0 when not mapped */
    uint32_t nrd, nwr;        /* areas usable for loads / stores (0 unless allowed) */
    struct vfio_map_area *areas;
    int have_sparse;
    uint32_t nsparse;
    struct vfio_sparse_area *sparse;
} lv_region;

typedef struct {
    int fd;
} lv_eventfd;

/* Lifetime rule: memory is freed only when no VM slot and no IOMMU mapping uses it. */
typedef struct {
    uint8_t *ptr;
    size_t size, rounded;
    int pins;                 /* VM memory slots using it: close() refuses while > 0 */
    int dma;                  /* IOMMU mappings of it (container or ioas map_dma): close()
                                 refuses while > 0 */
    int orphaned;             /* collected (or to-be-closed) while still used: freed when
                                 the last use goes, unusable from Lua meanwhile */
    char mapper[112];         /* the latest IOMMU mapping of it, for close()'s message */
    int readonly;             /* a shared mapping of another's file without PROT_WRITE
                                 (core.dmabuf_map): writes from Lua raise */
    int fd;                   /* the memfd of a shared buffer, -1 for anonymous memory */
} lv_dmabuf;

/* Free an orphaned DMA buffer whose last use is gone (l_dmabuf.c). */
void lv_dmabuf_release(lv_dmabuf *b);

/* Check arguments, raising when closed. */
lv_container *lv_checkcontainer(lua_State *L, int idx);
lv_group *lv_checkgroup(lua_State *L, int idx);
lv_device *lv_checkdevice(lua_State *L, int idx);
lv_eventfd *lv_checkeventfd(lua_State *L, int idx);
lv_dmabuf *lv_checkdmabuf(lua_State *L, int idx);

/* DMA mappings (l_container.c, shared by vfio.container and vfio.ioas). The access table
 * {read=, write=} at `arg` (nil: both) -> LV_DMA_READ | LV_DMA_WRITE, raising when it
 * allows neither. */
#define LV_DMA_READ 1u
#define LV_DMA_WRITE 2u
unsigned lv_dma_access(lua_State *L, int arg);
/* The memory a map_dma source at `src` lends: a DMA buffer, or a VM with {gpa=, size=} in
 * the table at `opts` (guest RAM inside one RAM slot: its index in *slot, else -1). Raises
 * on anything else. */
void lv_dma_source(lua_State *L, int src, int opts, uint64_t *vaddr, uint64_t *size,
                   int *slot);
/* The IOMMU mappings of a container or an ioas, in the table that is user value `uv` of
 * the object at `self`: iova -> {source, size, slot}. keep records a mapping just made (by
 * `mapper`: "container PATH", "ioas N of PATH") and
 * counts it on its source (lv_dmabuf.dma, the RAM slot's dma), which then refuses to be
 * closed or unmapped; drop forgets the mappings whose first IOVA lies in [iova, iova +
 * size) (or all of them) once the kernel has unmapped them, releasing their sources. */
void lv_dma_keep(lua_State *L, int self, int uv, uint64_t iova, int src, uint64_t size,
                 int slot, const char *mapper);
void lv_dma_drop(lua_State *L, int self, int uv, uint64_t iova, uint64_t size, int all);
/* Is anything recorded as mapped in that table? */
int lv_dma_any(lua_State *L, int self, int uv);
/* Push the mappings recorded in that table as a list {{iova=, size=, source = "buffer" |
 * "vm"}...} sorted by IOVA (an empty list once the object is closed): read-only, what a
 * container's or an ioas's `mappings()` returns. */
int lv_dma_list(lua_State *L, int self, int uv);

/* The counter of an eventfd that is no vfio.eventfd object (an irqfd's resample fd, an
 * ioeventfd): wait up to ms (0: not at all, < 0: forever) until it is readable, then push
 * what it holds, 0 when nothing was signalled; or nil, message, errno naming `what`. */
int lv_push_eventfd_count(lua_State *L, int fd, int ms, const char *what);

/* Push a new device object owning fd; the value at `parent` (0: none) is kept alive. */
lv_device *lv_pushdevice(lua_State *L, int fd, const char *name, int parent);
/* Push a region object for `d` (device at stack index devidx). Takes ownership of
 * d->sparse. `err` is the errno of a failed REGION_INFO (0 if d is valid). */
void lv_pushregion(lua_State *L, int devidx, struct vfio_region_desc *d, int err);
/* Unmap every region of a device (the device is closing). */
void lv_device_unmap_regions(lv_device *dev);
/* Fill the table on top with the fields describing a region. */
void lv_region_fields(lua_State *L, const struct vfio_region_desc *d);

/* What vfio.device and vfio.user_device share (lv_device_common.c). The info() table
 * {flags, num_regions, num_irqs, reset, pci, platform, caps}, pushed: */
void lv_push_device_info(lua_State *L, uint32_t flags, uint32_t num_regions,
                         uint32_t num_irqs);
/* The fields every region_info() table has (index, flags, size, offset, readable,
 * writable, mappable, caps), set in the table on top: */
void lv_region_base_fields(lua_State *L, uint32_t index, uint32_t flags, uint64_t size,
                           uint64_t offset);
/* The irq_info() table {index, count, flags, eventfd, maskable, automasked, noresize},
 * pushed: */
void lv_push_irq_info(lua_State *L, uint32_t index, uint32_t count, uint32_t flags);
/* What a device's set_irqs takes in its data beyond booleans and eventfd objects. */
struct lv_irq_data_rules {
    uint32_t max_count;     /* the most vectors one call sets (bounds the data's buffer) */
    int min_fd;             /* -1 where -1 de-assigns a vector (the kernel's), else 0 */
    const char *bad_number; /* the argument error for a number that is no such fd */
    const char *bad_value;  /* for data that is neither a number nor an eventfd object */
};
/* set_irqs(index, action, start, count [, data]), read from arguments 2 to 6 (the
 * object at 1 is the caller's to check, after this): data nil (DATA_NONE), a boolean or
 * a list of them (DATA_BOOL), an eventfd or fd or a list of them (DATA_EVENTFD); a list
 * holds exactly count entries. Raises on bad arguments. */
struct lv_irq_set {
    uint32_t index, action, start, count;
    uint32_t type; /* VFIO_IRQ_SET_DATA_NONE, _BOOL or _EVENTFD */
    void *data;    /* NULL, or count uint8_t (BOOL) or int32_t (EVENTFD) in a userdata
                    * this leaves on the stack */
};
void lv_check_set_irqs(lua_State *L, const struct lv_irq_data_rules *rules,
                       struct lv_irq_set *s);

/* The device's migration methods (l_migration.c), listed in l_device.c's method table. */
int lv_device_migration(lua_State *L);
int lv_device_mig_state(lua_State *L);
int lv_device_set_mig_state(lua_State *L);
int lv_device_mig_data_size(lua_State *L);

#endif
