/* KVM system/VM/vCPU logic and the C run loop (see kvm.h). */
#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DEBUGCON_CAP (1u << 20) /* a chatty guest must not exhaust host memory */

static int neg_errno(void) { return errno ? -errno : -EIO; }

int lv_kvm_open(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    return fd < 0 ? neg_errno() : fd;
}

int lv_kvm_api_version(int kvm_fd)
{
    int v = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
    return v < 0 ? neg_errno() : v;
}

int lv_kvm_check_extension(int fd, int cap)
{
    int v = ioctl(fd, KVM_CHECK_EXTENSION, cap);
    return v < 0 ? neg_errno() : v;
}

int lv_kvm_vcpu_mmap_size(int kvm_fd)
{
    int v = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    return v < 0 ? neg_errno() : v;
}

/* A CPUID table from `req` on `fd` (KVM_GET_SUPPORTED_CPUID on /dev/kvm, KVM_GET_CPUID2
 * on a vCPU), the buffer grown until it fits; malloc'd for the caller. */
static int read_cpuid(int fd, unsigned long req, struct kvm_cpuid2 **out)
{
    for (unsigned n = 64; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof *c + n * sizeof c->entries[0]);
        if (!c)
            return -ENOMEM;
        c->nent = n;
        if (ioctl(fd, req, c) == 0) {
            *out = c;
            return 0;
        }
        int e = neg_errno();
        free(c);
        if (e != -E2BIG)
            return e;
    }
    return -E2BIG;
}

static int load_cpuid(struct lv_kvm_vm *vm, int kvm_fd)
{
    return read_cpuid(kvm_fd, KVM_GET_SUPPORTED_CPUID, &vm->cpuid);
}

int lv_kvm_vm_create(struct lv_kvm_vm *vm, int kvm_fd)
{
    memset(vm, 0, sizeof *vm);
    vm->fd = -1;
    vm->vfio_fd = -1;
    vm->next_range_id = 1;
    int size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (size < 0)
        return neg_errno();
    if ((size_t)size < sizeof(struct kvm_run))
        return -EINVAL;
    vm->run_size = size;
    int e = load_cpuid(vm, kvm_fd);
    if (e)
        return e;
    int fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (fd < 0) {
        e = neg_errno();
        free(vm->cpuid);
        vm->cpuid = NULL;
        return e;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    /* Intel VMX needs these pages reserved for real mode; harmless elsewhere. They sit
     * just below the 4 GiB BIOS area, away from RAM and the PCI windows we use, and the
     * address map refuses slots and ranges over them (kvm.h). */
    if (ioctl(fd, KVM_SET_TSS_ADDR, (unsigned long)LV_KVM_TSS_ADDR) < 0 ||
        (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0 &&
         ioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &(uint64_t){LV_KVM_IDENTITY_MAP_ADDR}) < 0)) {
        e = neg_errno();
        close(fd);
        free(vm->cpuid);
        vm->cpuid = NULL;
        return e;
    }
    vm->fd = fd;
    return 0;
}

static int drop_slot(struct lv_kvm_vm *vm, int i);

void lv_kvm_vm_close(struct lv_kvm_vm *vm)
{
    if (vm->fd < 0)
        return;
    for (unsigned i = 0; i < vm->nranges; i++)
        if (vm->ranges[i].ops->release)
            vm->ranges[i].ops->release(vm->ranges[i].opaque);
    free(vm->ranges);
    vm->ranges = NULL;
    vm->nranges = vm->cap_ranges = 0;
    if (vm->vfio_fd >= 0)
        close(vm->vfio_fd);
    vm->vfio_fd = -1;
    /* Delete every memory slot while the VM fd is open: an open vCPU fd keeps KVM's VM
     * object, and with it the slots, alive; a slot left behind would let a vCPU reach host
     * memory unmapped here (and whatever is mapped there next). A slot KVM would not
     * delete keeps its memory mapped: leaked, never handed back to the allocator. */
    for (int i = 0; i < LV_KVM_MAX_SLOTS; i++)
        if (vm->slots[i].used)
            drop_slot(vm, i);
    close(vm->fd);
    vm->fd = -1;
    free(vm->routes);
    vm->routes = NULL;
    vm->nroutes = vm->cap_routes = 0;
    free(vm->cpuid);
    vm->cpuid = NULL;
}

/* ---- memory slots ---- */

static int set_slot(struct lv_kvm_vm *vm, int slot, uint64_t gpa, uint64_t size, void *host,
                    int readonly)
{
    struct kvm_userspace_memory_region r = {
        .slot = (uint32_t)slot,
        .flags = readonly ? KVM_MEM_READONLY : 0,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)host,
    };
    return ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? neg_errno() : 0;
}

/* Delete slot `i` from KVM, then unmap our RAM behind it and release its owner's pin.
 * On failure the slot stays as it was. */
static int drop_slot(struct lv_kvm_vm *vm, int i)
{
    struct lv_kvm_slot *s = &vm->slots[i];
    int e = set_slot(vm, i, s->gpa, 0, s->host, 0); /* size 0 deletes the slot */
    if (e)
        return e;
    if (s->owned && s->dma > 0)
        s->orphaned = 1; /* an IOMMU still maps it: unmapped with its last mapping */
    else if (s->owned)
        munmap(s->host, s->size);
    if (s->pin)
        (*s->pin)--;
    s->pin = NULL;
    s->used = 0;
    return 0;
}

static int free_slot(struct lv_kvm_vm *vm)
{
    for (int i = 0; i < LV_KVM_MAX_SLOTS; i++)
        if (!vm->slots[i].used && !vm->slots[i].orphaned)
            return i;
    return -ENOSPC;
}

/* ---- the guest-physical address map ----
 * One map for everything that claims guest-physical addresses: RAM and host-memory slots,
 * handled MMIO ranges, and the in-kernel irqchip's IOAPIC and LAPIC windows. A new claim
 * that overlaps an old one is refused with -EEXIST, whoever asks (the VM layer's layout,
 * or a BAR the guest moved), except that an MMIO range may lie over a read-only slot:
 * KVM turns the guest's writes there into MMIO exits, which is what such a range is for. */
#define IOAPIC_BASE 0xfec00000ull
#define IOAPIC_SIZE 0x1000ull
#define LAPIC_BASE 0xfee00000ull
#define LAPIC_SIZE 0x100000ull

static int overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* The irqchip's windows, and the pages KVM took at VM creation for the real-mode TSS
 * and identity page table (guest memory there would be overwritten by KVM). */
static int reserved_overlap(const struct lv_kvm_vm *vm, uint64_t gpa, uint64_t size)
{
    return overlaps(gpa, size, LV_KVM_IDENTITY_MAP_ADDR, LV_KVM_SYSTEM_PAGES_SIZE) ||
           (vm->irqchip && (overlaps(gpa, size, IOAPIC_BASE, IOAPIC_SIZE) ||
                            overlaps(gpa, size, LAPIC_BASE, LAPIC_SIZE)));
}

/* Does a slot (a writable one, with writable_only) overlap [gpa, gpa + size)? */
static int slot_overlap(const struct lv_kvm_vm *vm, uint64_t gpa, uint64_t size, int writable_only)
{
    for (int i = 0; i < LV_KVM_MAX_SLOTS; i++) {
        const struct lv_kvm_slot *s = &vm->slots[i];
        if (s->used && !(writable_only && s->readonly) && overlaps(gpa, size, s->gpa, s->size))
            return 1;
    }
    return 0;
}

static int mmio_range_overlap(const struct lv_kvm_vm *vm, uint64_t gpa, uint64_t size)
{
    for (unsigned i = 0; i < vm->nranges; i++)
        if (vm->ranges[i].space == LV_KVM_MMIO &&
            overlaps(gpa, size, vm->ranges[i].base, vm->ranges[i].size))
            return 1;
    return 0;
}

/* May a slot (readonly or not) claim [gpa, gpa + size)? */
static int slot_claim_ok(const struct lv_kvm_vm *vm, uint64_t gpa, uint64_t size, int readonly)
{
    if (reserved_overlap(vm, gpa, size) || slot_overlap(vm, gpa, size, 0) ||
        (!readonly && mmio_range_overlap(vm, gpa, size)))
        return -EEXIST;
    return 0;
}

static int page_ok(uint64_t gpa, uint64_t size)
{
    long pg = sysconf(_SC_PAGESIZE);
    return size > 0 && gpa % (uint64_t)pg == 0 && size % (uint64_t)pg == 0 &&
           gpa + size > gpa;
}

/* Guest RAM whose host address agrees with its guest address modulo 2 MiB, with
 * transparent huge pages asked for: only then can KVM map it with 2 MiB pages, and a
 * guest's first touch of each 2 MiB costs one EPT fault instead of 512 (under nested
 * KVM each fault is an exit to the outer hypervisor). Exactly `size` bytes stay mapped. */
#define RAM_ALIGN ((size_t)2 << 20)
static void *map_ram(uint64_t gpa, size_t size)
{
    if (size > SIZE_MAX - RAM_ALIGN)
        return MAP_FAILED;
    char *raw = mmap(NULL, size + RAM_ALIGN, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return MAP_FAILED;
    size_t want = (size_t)(gpa % RAM_ALIGN);
    size_t head = (want - (uintptr_t)raw % RAM_ALIGN + RAM_ALIGN) % RAM_ALIGN;
    char *p = raw + head;
    if (head)
        munmap(raw, head);
    if (RAM_ALIGN - head)
        munmap(p + size, RAM_ALIGN - head);
    (void)madvise(p, size, MADV_HUGEPAGE); /* advice: where THP is off it changes nothing */
    return p;
}

int lv_kvm_add_ram(struct lv_kvm_vm *vm, uint64_t gpa, uint64_t size)
{
    if (!page_ok(gpa, size) || size > SIZE_MAX)
        return -EINVAL;
    int e = slot_claim_ok(vm, gpa, size, 0);
    if (e)
        return e;
    int slot = free_slot(vm);
    if (slot < 0)
        return slot;
    void *p = map_ram(gpa, (size_t)size);
    if (p == MAP_FAILED)
        return neg_errno();
    e = set_slot(vm, slot, gpa, size, p, 0);
    if (e) {
        munmap(p, (size_t)size);
        return e;
    }
    vm->slots[slot] = (struct lv_kvm_slot){.used = 1, .owned = 1, .gpa = gpa, .size = size,
                                           .host = p};
    return slot;
}

int lv_kvm_map_host(struct lv_kvm_vm *vm, uint64_t gpa, uint64_t size, void *host,
                    int readonly, int *pin)
{
    if (!page_ok(gpa, size) || (uintptr_t)host % (uintptr_t)sysconf(_SC_PAGESIZE))
        return -EINVAL;
    int e = slot_claim_ok(vm, gpa, size, readonly);
    if (e)
        return e;
    int slot = free_slot(vm);
    if (slot < 0)
        return slot;
    e = set_slot(vm, slot, gpa, size, host, readonly);
    if (e)
        return e;
    vm->slots[slot] = (struct lv_kvm_slot){.used = 1, .readonly = readonly, .gpa = gpa,
                                           .size = size, .host = host, .pin = pin};
    if (pin)
        (*pin)++;
    return slot;
}

int lv_kvm_unmap(struct lv_kvm_vm *vm, int slot)
{
    if (slot < 0 || slot >= LV_KVM_MAX_SLOTS || !vm->slots[slot].used)
        return -ENOENT;
    if (vm->slots[slot].dma > 0)
        return -EBUSY;
    return drop_slot(vm, slot);
}

int lv_kvm_ram_slot(struct lv_kvm_vm *vm, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < LV_KVM_MAX_SLOTS; i++) {
        struct lv_kvm_slot *s = &vm->slots[i];
        if (s->used && s->owned && gpa >= s->gpa && gpa - s->gpa <= s->size &&
            len <= s->size - (gpa - s->gpa))
            return i;
    }
    return -1;
}

void lv_kvm_ram_dma_get(struct lv_kvm_vm *vm, int slot)
{
    if (slot >= 0 && slot < LV_KVM_MAX_SLOTS)
        vm->slots[slot].dma++;
}

void lv_kvm_ram_dma_put(struct lv_kvm_vm *vm, int slot)
{
    if (slot < 0 || slot >= LV_KVM_MAX_SLOTS)
        return;
    struct lv_kvm_slot *s = &vm->slots[slot];
    if (s->dma > 0)
        s->dma--;
    if (s->dma == 0 && s->orphaned) {
        munmap(s->host, s->size);
        *s = (struct lv_kvm_slot){0};
    }
}

int lv_kvm_ram_dma_busy(const struct lv_kvm_vm *vm, int *count)
{
    for (int i = 0; i < LV_KVM_MAX_SLOTS; i++)
        if (vm->slots[i].used && vm->slots[i].dma > 0) {
            if (count)
                *count = vm->slots[i].dma;
            return i;
        }
    return -1;
}

void *lv_kvm_ram_ptr(struct lv_kvm_vm *vm, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < LV_KVM_MAX_SLOTS; i++) {
        struct lv_kvm_slot *s = &vm->slots[i];
        if (s->used && s->owned && gpa >= s->gpa && gpa - s->gpa <= s->size &&
            len <= s->size - (gpa - s->gpa))
            return (char *)s->host + (gpa - s->gpa);
    }
    return NULL;
}

/* ---- interrupts ---- */

static int commit_routes(struct lv_kvm_vm *vm)
{
    struct kvm_irq_routing *r =
        calloc(1, sizeof *r + vm->nroutes * sizeof(struct kvm_irq_routing_entry));
    if (!r)
        return -ENOMEM;
    r->nr = vm->nroutes;
    memcpy(r->entries, vm->routes, vm->nroutes * sizeof(struct kvm_irq_routing_entry));
    int e = ioctl(vm->fd, KVM_SET_GSI_ROUTING, r) < 0 ? neg_errno() : 0;
    free(r);
    return e;
}

static int push_route(struct lv_kvm_vm *vm, const struct kvm_irq_routing_entry *ent)
{
    if (vm->nroutes == vm->cap_routes) {
        unsigned cap = vm->cap_routes ? vm->cap_routes * 2 : 64;
        void *p = realloc(vm->routes, cap * sizeof *vm->routes);
        if (!p)
            return -ENOMEM;
        vm->routes = p;
        vm->cap_routes = cap;
    }
    vm->routes[vm->nroutes++] = *ent;
    return 0;
}

int lv_kvm_create_irqchip(struct lv_kvm_vm *vm)
{
    /* the irqchip claims the IOAPIC and LAPIC windows of the address map */
    if (slot_overlap(vm, IOAPIC_BASE, IOAPIC_SIZE, 0) || mmio_range_overlap(vm, IOAPIC_BASE, IOAPIC_SIZE) ||
        slot_overlap(vm, LAPIC_BASE, LAPIC_SIZE, 0) || mmio_range_overlap(vm, LAPIC_BASE, LAPIC_SIZE))
        return -EEXIST;
    if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return neg_errno();
    vm->irqchip = 1;
    /* KVM_SET_GSI_ROUTING replaces the whole table, so keep our own copy of the routes
     * the irqchip starts with: GSI 0-15 reach the PICs and the IOAPIC, 16-23 the IOAPIC. */
    vm->nroutes = 0;
    for (uint32_t gsi = 0; gsi < 24; gsi++) {
        struct kvm_irq_routing_entry ent = {.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP};
        int e;
        if (gsi < 16) {
            ent.u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
            ent.u.irqchip.pin = gsi % 8;
            if ((e = push_route(vm, &ent)))
                return e;
        }
        ent.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        ent.u.irqchip.pin = gsi;
        if ((e = push_route(vm, &ent)))
            return e;
    }
    return 0;
}

int lv_kvm_create_pit2(struct lv_kvm_vm *vm)
{
    /* The dummy speaker port makes KVM answer port 0x61 too, whose bit 5 (PIT channel 2
     * output) Linux polls to calibrate the TSC against the PIT. */
    struct kvm_pit_config cfg = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (!vm->irqchip)
        return -ENXIO; /* the PIT interrupts through the in-kernel PIC/IOAPIC */
    return ioctl(vm->fd, KVM_CREATE_PIT2, &cfg) < 0 ? neg_errno() : 0;
}

int lv_kvm_set_halt_poll(struct lv_kvm_vm *vm, uint64_t ns)
{
    struct kvm_enable_cap cap = {.cap = KVM_CAP_HALT_POLL, .args = {ns}};
    return ioctl(vm->fd, KVM_ENABLE_CAP, &cap) < 0 ? neg_errno() : 0;
}

static void drop_routes(struct lv_kvm_vm *vm, uint32_t gsi)
{
    unsigned j = 0;
    for (unsigned i = 0; i < vm->nroutes; i++)
        if (vm->routes[i].gsi != gsi)
            vm->routes[j++] = vm->routes[i];
    vm->nroutes = j;
}

int lv_kvm_set_msi_route(struct lv_kvm_vm *vm, uint32_t gsi, uint64_t addr, uint32_t data)
{
    struct kvm_irq_routing_entry *saved = NULL;
    unsigned nsaved = vm->nroutes;
    if (nsaved) {
        saved = malloc(nsaved * sizeof *saved);
        if (!saved)
            return -ENOMEM;
        memcpy(saved, vm->routes, nsaved * sizeof *saved);
    }
    drop_routes(vm, gsi);
    struct kvm_irq_routing_entry ent = {.gsi = gsi, .type = KVM_IRQ_ROUTING_MSI};
    ent.u.msi.address_lo = (uint32_t)addr;
    ent.u.msi.address_hi = (uint32_t)(addr >> 32);
    ent.u.msi.data = data;
    int e = push_route(vm, &ent);
    if (!e)
        e = commit_routes(vm);
    if (e && saved) { /* keep our copy equal to what the kernel has */
        memcpy(vm->routes, saved, nsaved * sizeof *saved);
        vm->nroutes = nsaved;
    }
    free(saved);
    return e;
}

int lv_kvm_remove_route(struct lv_kvm_vm *vm, uint32_t gsi)
{
    unsigned before = vm->nroutes;
    struct kvm_irq_routing_entry *saved = malloc((before ? before : 1) * sizeof *saved);
    if (!saved)
        return -ENOMEM;
    if (before)   /* no routes yet: vm->routes may be NULL */
        memcpy(saved, vm->routes, before * sizeof *saved);
    drop_routes(vm, gsi);
    int e = vm->nroutes == before ? -ENOENT : commit_routes(vm);
    if (e) {
        if (before)
            memcpy(vm->routes, saved, before * sizeof *saved);
        vm->nroutes = before;
    }
    free(saved);
    return e;
}

int lv_kvm_irqfd(struct lv_kvm_vm *vm, uint32_t gsi, int fd, int resample_fd, int deassign)
{
    struct kvm_irqfd a = {.fd = (uint32_t)fd, .gsi = gsi};
    if (deassign)
        a.flags = KVM_IRQFD_FLAG_DEASSIGN;
    else if (resample_fd >= 0) {
        a.flags = KVM_IRQFD_FLAG_RESAMPLE;
        a.resamplefd = (uint32_t)resample_fd;
    }
    return ioctl(vm->fd, KVM_IRQFD, &a) < 0 ? neg_errno() : 0;
}

int lv_kvm_ioeventfd(struct lv_kvm_vm *vm, int space, uint64_t addr, unsigned len, int fd,
                     int has_datamatch, uint64_t datamatch, int deassign)
{
    struct kvm_ioeventfd a = {.datamatch = datamatch, .addr = addr, .len = len, .fd = fd};
    if (space == LV_KVM_PIO)
        a.flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (has_datamatch)
        a.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    if (deassign)
        a.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
    return ioctl(vm->fd, KVM_IOEVENTFD, &a) < 0 ? neg_errno() : 0;
}

int lv_kvm_irq_line(struct lv_kvm_vm *vm, uint32_t gsi, int level)
{
    struct kvm_irq_level l = {.irq = gsi, .level = (uint32_t)level};
    return ioctl(vm->fd, KVM_IRQ_LINE, &l) < 0 ? neg_errno() : 0;
}

int lv_kvm_signal_msi(struct lv_kvm_vm *vm, uint64_t addr, uint32_t data)
{
    struct kvm_msi m = {.address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32),
                        .data = data};
    int r = ioctl(vm->fd, KVM_SIGNAL_MSI, &m);
    return r < 0 ? neg_errno() : r; /* > 0: delivered, 0: blocked by the guest */
}

int lv_kvm_vfio_group(struct lv_kvm_vm *vm, int group_fd, int add)
{
    if (vm->vfio_fd < 0) {
        struct kvm_create_device d = {.type = KVM_DEV_TYPE_VFIO};
        if (ioctl(vm->fd, KVM_CREATE_DEVICE, &d) < 0)
            return neg_errno();
        vm->vfio_fd = (int)d.fd;
        fcntl(vm->vfio_fd, F_SETFD, FD_CLOEXEC);
    }
    if (group_fd < 0)
        return 0; /* only create the device */
    int32_t gfd = group_fd;
    struct kvm_device_attr a = {
        .group = KVM_DEV_VFIO_GROUP,
        .attr = add ? KVM_DEV_VFIO_GROUP_ADD : KVM_DEV_VFIO_GROUP_DEL,
        .addr = (uint64_t)(uintptr_t)&gfd,
    };
    return ioctl(vm->vfio_fd, KVM_SET_DEVICE_ATTR, &a) < 0 ? neg_errno() : 0;
}

/* ---- handled ranges ---- */

int lv_kvm_add_range(struct lv_kvm_vm *vm, int space, uint64_t base, uint64_t size,
                     const struct lv_kvm_io_ops *ops, void *opaque)
{
    if (size == 0 || base + size < base || !ops || !ops->access ||
        (space != LV_KVM_PIO && space != LV_KVM_MMIO) ||
        (space == LV_KVM_PIO && base + size > 0x10000))
        return -EINVAL;
    for (unsigned i = 0; i < vm->nranges; i++) {
        struct lv_kvm_range *r = &vm->ranges[i];
        if (r->space == space && base < r->base + r->size && r->base < base + size)
            return -EEXIST;
    }
    if (space == LV_KVM_MMIO) {
        /* over a writable slot, RAM would answer first: the range could never be hit */
        if (reserved_overlap(vm, base, size) || slot_overlap(vm, base, size, 1))
            return -EEXIST;
    }
    if (vm->nranges == vm->cap_ranges) {
        unsigned cap = vm->cap_ranges ? vm->cap_ranges * 2 : 16;
        void *p = realloc(vm->ranges, cap * sizeof *vm->ranges);
        if (!p)
            return -ENOMEM;
        vm->ranges = p;
        vm->cap_ranges = cap;
    }
    int id = vm->next_range_id++;
    vm->ranges[vm->nranges++] = (struct lv_kvm_range){
        .id = id, .space = space, .base = base, .size = size, .ops = ops, .opaque = opaque};
    return id;
}

int lv_kvm_remove_range(struct lv_kvm_vm *vm, int id)
{
    for (unsigned i = 0; i < vm->nranges; i++) {
        if (vm->ranges[i].id != id)
            continue;
        struct lv_kvm_range r = vm->ranges[i];
        vm->ranges[i] = vm->ranges[--vm->nranges];
        if (r.ops->release)
            r.ops->release(r.opaque);
        return 0;
    }
    return -ENOENT;
}

static struct lv_kvm_range *find_range(struct lv_kvm_vm *vm, int space, uint64_t addr)
{
    for (unsigned i = 0; i < vm->nranges; i++) {
        struct lv_kvm_range *r = &vm->ranges[i];
        if (r->space == space && addr >= r->base && addr - r->base < r->size)
            return r;
    }
    return NULL;
}

static int debugcon_access(void *opaque, int space, uint64_t addr, uint8_t *data,
                           unsigned size, int is_write)
{
    struct lv_kvm_debugcon *d = opaque;
    if (!is_write) {
        /* QEMU's debugcon reads back 0xe9 so guests can probe for it. */
        memset(data, 0, size);
        data[0] = 0xe9;
        return LV_KVM_IO_DONE;
    }
    if (d->closed) {
        d->dropped++;
        return LV_KVM_IO_DONE;
    }
    if (d->len == d->cap && d->cap < DEBUGCON_CAP) {
        size_t cap = d->cap ? d->cap * 2 : 4096;
        char *p = realloc(d->buf, cap);
        if (p)
            d->buf = p, d->cap = cap;
    }
    if (d->len < d->cap)
        d->buf[d->len++] = (char)data[0]; /* the low byte, as on an 8-bit port */
    else
        d->dropped++;
    return LV_KVM_IO_DONE;
}

const struct lv_kvm_io_ops lv_kvm_debugcon_ops = {.access = debugcon_access};

void lv_kvm_debugcon_close(struct lv_kvm_debugcon *d)
{
    free(d->buf);
    d->buf = NULL;
    d->len = d->cap = 0;
    d->closed = 1;
}

static int exitport_access(void *opaque, int space, uint64_t addr, uint8_t *data,
                           unsigned size, int is_write)
{
    return is_write ? LV_KVM_IO_STOP : LV_KVM_IO_DONE;
}

static const struct lv_kvm_io_ops exitport_ops = {.access = exitport_access};

int lv_kvm_add_exit_port(struct lv_kvm_vm *vm, uint16_t port)
{
    return lv_kvm_add_range(vm, LV_KVM_PIO, port, 1, &exitport_ops, NULL);
}

/* ---- vCPUs ---- */

int lv_kvm_vcpu_create(struct lv_kvm_vcpu *c, struct lv_kvm_vm *vm, int id)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    int fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (fd < 0)
        return neg_errno();
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    void *run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED) {
        int e = neg_errno();
        close(fd);
        return e;
    }
    c->fd = fd;
    c->id = id;
    c->vm = vm;
    int e = lv_kvm_vcpu_set_cpuid(c, NULL, 0);
    if (e) {
        munmap(run, (size_t)vm->run_size);
        close(fd);
        c->fd = -1;
        return e;
    }
    c->run = run;
    c->run_size = (size_t)vm->run_size;
    return 0;
}

static struct kvm_cpuid_entry2 *find_leaf(struct kvm_cpuid2 *t, uint32_t fn, uint32_t index)
{
    for (uint32_t i = 0; i < t->nent; i++) {
        struct kvm_cpuid_entry2 *e = &t->entries[i];
        if (e->function == fn &&
            (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index))
            return e;
    }
    return NULL;
}

static struct kvm_cpuid_entry2 *add_leaf(struct kvm_cpuid2 *t, uint32_t fn, uint32_t index)
{
    struct kvm_cpuid_entry2 *e = find_leaf(t, fn, index);
    if (!e) {
        e = &t->entries[t->nent++];
        *e = (struct kvm_cpuid_entry2){.function = fn, .index = index};
    }
    return e;
}

int lv_kvm_vcpu_set_cpuid(struct lv_kvm_vcpu *c, const struct kvm_cpuid_entry2 *over,
                          unsigned nover)
{
    const struct kvm_cpuid2 *sup = c->vm->cpuid;
    if (!sup)
        return 0;
    unsigned cap = sup->nent + nover + 2; /* room for the two KVM leaves */
    struct kvm_cpuid2 *t = calloc(1, sizeof *t + cap * sizeof t->entries[0]);
    if (!t)
        return -ENOMEM;
    t->nent = sup->nent;
    memcpy(t->entries, sup->entries, sup->nent * sizeof t->entries[0]);
    uint32_t id = (uint32_t)c->id;
    /* The in-kernel LAPIC emulates the TSC-deadline timer, which KVM_GET_SUPPORTED_CPUID
     * never lists (it depends on the irqchip). With it Linux skips calibrating the LAPIC
     * timer against the PIT, a check that a loaded or nested host fails ("APIC timer
     * disabled due to verification failure"), leaving the guest on the PIT. */
    int deadline = c->vm->irqchip && ioctl(c->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    for (uint32_t i = 0; i < t->nent; i++) {
        struct kvm_cpuid_entry2 *e = &t->entries[i];
        if (e->function == 1) {
            /* the initial APIC ID is the vCPU's, and the guest learns it is a guest */
            e->ebx = (e->ebx & 0x00ffffffu) | (id << 24);
            e->ecx |= 1u << 31;
            if (deadline)
                e->ecx |= 1u << 24;
        } else if (e->function == 0xb || e->function == 0x1f) {
            e->edx = id; /* x2APIC ID, every subleaf */
        }
    }
    /* KVM's paravirtual leaves: normally in the supported list already; a kernel that
     * leaves them out still gets the signature, with no features claimed. */
    struct kvm_cpuid_entry2 *sig = add_leaf(t, 0x40000000, 0);
    sig->eax = 0x40000001;
    memcpy(&sig->ebx, "KVMK", 4);
    memcpy(&sig->ecx, "VMKV", 4);
    memcpy(&sig->edx, "M\0\0\0", 4);
    add_leaf(t, 0x40000001, 0);
    for (unsigned i = 0; i < nover; i++) {
        struct kvm_cpuid_entry2 *e = add_leaf(t, over[i].function, over[i].index);
        uint32_t flags = e->flags;
        *e = over[i];
        e->flags = flags | over[i].flags;
    }
    int r = ioctl(c->fd, KVM_SET_CPUID2, t) < 0 ? neg_errno() : 0;
    free(t);
    return r;
}

int lv_kvm_vcpu_get_cpuid(struct lv_kvm_vcpu *c, struct kvm_cpuid2 **out)
{
    return read_cpuid(c->fd, KVM_GET_CPUID2, out);
}

int lv_kvm_vcpu_set_lapic_lint(struct lv_kvm_vcpu *c)
{
    struct kvm_lapic_state st;
    if (ioctl(c->fd, KVM_GET_LAPIC, &st) < 0)
        return neg_errno();
    /* LINT0 takes the PIC's output (ExtINT), LINT1 the NMI: the virtual wire a BIOS
     * programs, which MP-table guests expect (unmasked, edge, delivery mode in 10:8) */
    uint32_t lvt0, lvt1;
    memcpy(&lvt0, st.regs + 0x350, 4);
    memcpy(&lvt1, st.regs + 0x360, 4);
    lvt0 = (lvt0 & ~0x1f7ffu) | (7u << 8);
    lvt1 = (lvt1 & ~0x1f7ffu) | (4u << 8);
    memcpy(st.regs + 0x350, &lvt0, 4);
    memcpy(st.regs + 0x360, &lvt1, 4);
    return ioctl(c->fd, KVM_SET_LAPIC, &st) < 0 ? neg_errno() : 0;
}

int lv_kvm_vcpu_get_lapic_reg(struct lv_kvm_vcpu *c, unsigned off, uint32_t *val)
{
    struct kvm_lapic_state st;
    if (off > sizeof st.regs - 4 || off % 4)
        return -EINVAL;
    if (ioctl(c->fd, KVM_GET_LAPIC, &st) < 0)
        return neg_errno();
    memcpy(val, st.regs + off, 4);
    return 0;
}

int lv_kvm_vcpu_set_msr(struct lv_kvm_vcpu *c, uint32_t index, uint64_t value)
{
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
    } m = {.h.nmsrs = 1, .e = {.index = index, .data = value}};
    int r = ioctl(c->fd, KVM_SET_MSRS, &m);
    return r < 0 ? neg_errno() : r == 1 ? 0 : -EINVAL; /* 0 set: KVM refused the value */
}

int lv_kvm_vcpu_get_msr(struct lv_kvm_vcpu *c, uint32_t index, uint64_t *value)
{
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
    } m = {.h.nmsrs = 1, .e = {.index = index}};
    int r = ioctl(c->fd, KVM_GET_MSRS, &m);
    if (r < 0)
        return neg_errno();
    if (r != 1)
        return -EINVAL;
    *value = m.e.data;
    return 0;
}

void lv_kvm_vcpu_close(struct lv_kvm_vcpu *c)
{
    if (c->fd < 0)
        return;
    munmap(c->run, c->run_size);
    close(c->fd);
    c->fd = -1;
    c->run = NULL;
    c->held = 0;
}

void lv_kvm_vcpu_hold(struct lv_kvm_vcpu *c, const struct lv_kvm_exit *x, int err)
{
    c->held = 1;
    c->held_err = err;
    c->held_pending_read = c->pending_read;
    c->pending_read = 0;   /* nobody may complete it before it is delivered */
    c->held_exit = *x;
}

int lv_kvm_vcpu_take_held(struct lv_kvm_vcpu *c, struct lv_kvm_exit *out, int *err)
{
    if (!c->held)
        return 0;
    *out = c->held_exit;
    *err = c->held_err;
    c->pending_read = c->held_pending_read;
    c->held = 0;
    return 1;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint64_t base, uint32_t limit,
                uint8_t type, int code_or_data, int db, int g)
{
    *s = (struct kvm_segment){.base = base, .limit = limit, .selector = sel, .type = type,
                              .present = 1, .dpl = 0, .db = (uint8_t)db, .s = (uint8_t)code_or_data,
                              .l = 0, .g = (uint8_t)g};
}

int lv_kvm_vcpu_get_regs(struct lv_kvm_vcpu *c, struct kvm_regs *r)
{
    return ioctl(c->fd, KVM_GET_REGS, r) < 0 ? neg_errno() : 0;
}

int lv_kvm_vcpu_set_regs(struct lv_kvm_vcpu *c, const struct kvm_regs *r)
{
    return ioctl(c->fd, KVM_SET_REGS, r) < 0 ? neg_errno() : 0;
}

int lv_kvm_vcpu_get_sregs(struct lv_kvm_vcpu *c, struct kvm_sregs *s)
{
    return ioctl(c->fd, KVM_GET_SREGS, s) < 0 ? neg_errno() : 0;
}

int lv_kvm_vcpu_setup_real(struct lv_kvm_vcpu *c, uint16_t cs, uint16_t ip)
{
    struct kvm_sregs s;
    if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
        return neg_errno();
    seg(&s.cs, cs, (uint64_t)cs << 4, 0xffff, 0xb, 1, 0, 0);
    seg(&s.ds, 0, 0, 0xffff, 0x3, 1, 0, 0);
    s.es = s.fs = s.gs = s.ss = s.ds;
    s.cr0 &= ~(uint64_t)0x80000001; /* PE and PG off */
    s.efer = 0;
    if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
        return neg_errno();
    struct kvm_regs r = {.rip = ip, .rflags = 0x2};
    return ioctl(c->fd, KVM_SET_REGS, &r) < 0 ? neg_errno() : 0;
}

int lv_kvm_vcpu_setup_boot32(struct lv_kvm_vcpu *c, const struct lv_kvm_boot32 *b)
{
    struct kvm_sregs s;
    if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
        return neg_errno();
    /* Flat 4 GiB code and data segments, paging off, interrupts off. The hidden parts
     * are what counts; the selectors and the GDT matter to a guest that reloads a
     * segment before loading a GDT of its own. */
    seg(&s.cs, b->cs ? b->cs : 0x08, 0, 0xffffffff, 0xb, 1, 1, 1);
    seg(&s.ds, b->ds ? b->ds : 0x10, 0, 0xffffffff, 0x3, 1, 1, 1);
    s.es = s.fs = s.gs = s.ss = s.ds;
    if (b->gdt_limit) {
        s.gdt.base = b->gdt_base;
        s.gdt.limit = b->gdt_limit;
    }
    s.cr0 = (s.cr0 | 0x1) & ~(uint64_t)0x80000000;
    s.cr4 = 0;
    s.efer = 0;
    if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
        return neg_errno();
    struct kvm_regs r = {.rip = b->eip, .rax = b->eax, .rbx = b->ebx, .rsi = b->esi,
                         .rflags = 0x2};
    return ioctl(c->fd, KVM_SET_REGS, &r) < 0 ? neg_errno() : 0;
}

int lv_kvm_vcpu_setup_boot64(struct lv_kvm_vcpu *c, const struct lv_kvm_boot64 *b)
{
    struct kvm_sregs s;
    if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
        return neg_errno();
    seg(&s.cs, b->cs, 0, 0xffffffff, 0xb, 1, 0, 1);
    s.cs.l = 1; /* 64-bit code: L set, D clear */
    seg(&s.ds, b->ds, 0, 0xffffffff, 0x3, 1, 1, 1);
    s.es = s.fs = s.gs = s.ss = s.ds;
    s.gdt.base = b->gdt_base;
    s.gdt.limit = b->gdt_limit;
    s.cr3 = b->cr3;
    s.cr4 = 0x20;                                /* PAE */
    s.cr0 = (s.cr0 | 0x80000011) & ~0x60000000ULL; /* PG, ET, PE; caches on (CD, NW off) */
    s.efer = 0x500;                              /* LME and LMA */
    if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
        return neg_errno();
    struct kvm_regs r = {.rip = b->rip, .rsi = b->rsi, .rflags = 0x2};
    return ioctl(c->fd, KVM_SET_REGS, &r) < 0 ? neg_errno() : 0;
}

int lv_kvm_vcpu_setup_flat32(struct lv_kvm_vcpu *c, uint32_t eip, uint32_t eax, uint32_t ebx)
{
    /* multiboot: the guest loads its own GDT before reloading segments */
    struct lv_kvm_boot32 b = {.eip = eip, .eax = eax, .ebx = ebx};
    return lv_kvm_vcpu_setup_boot32(c, &b);
}

/* Timeouts: a per-thread timer signal whose handler sets immediate_exit on the kvm_run
 * being executed, so a signal landing between two KVM_RUN calls is not lost. */
static __thread struct kvm_run *volatile tl_run;
static __thread volatile sig_atomic_t tl_fired;

static void timer_handler(int sig)
{
    (void)sig;
    tl_fired = 1;
    if (tl_run)
        tl_run->immediate_exit = 1;
}

static int timer_signal(void)
{
    return SIGRTMAX - 3;
}

int lv_kvm_kick_signal(void)
{
    return timer_signal();
}

static int install_timer_handler(void);

static int arm_timer(timer_t *t, int64_t ns)
{
    int sig = timer_signal(), e = install_timer_handler();
    if (e < 0)
        return e;
    struct sigevent ev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = sig};
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &ev, t) < 0)
        return neg_errno();
    struct itimerspec its = {.it_value = {.tv_sec = ns / 1000000000,
                                          .tv_nsec = ns % 1000000000}};
    if (timer_settime(*t, 0, &its, NULL) < 0) {
        e = neg_errno();
        timer_delete(*t);
        return e;
    }
    return 0;
}

static int install_timer_handler(void)
{
    struct sigaction cur;
    int sig = timer_signal();
    if (sigaction(sig, NULL, &cur) < 0)
        return neg_errno();
    if (cur.sa_handler == timer_handler)
        return 0;
    if (cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN)
        return -EBUSY; /* someone else owns the signal */
    struct sigaction sa = {.sa_handler = timer_handler};
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL) < 0 ? neg_errno() : 0;
}

int lv_kvm_kick_prepare(void)
{
    tl_fired = 0;   /* the first access: TLS allocated here, not in the handler */
    tl_run = NULL;
    return install_timer_handler();
}

int lv_kvm_kick(pthread_t t)
{
    int e = install_timer_handler();
    if (e < 0)
        return e;
    return -pthread_kill(t, timer_signal());
}

/* Dispatch one decoded access to a handled range; returns -1 if none handles it. */
static int dispatch(struct lv_kvm_vm *vm, int space, uint64_t addr, uint8_t *data,
                    unsigned size, int is_write)
{
    if (vm->io_lock)
        pthread_mutex_lock(vm->io_lock);
    struct lv_kvm_range *r = find_range(vm, space, addr);
    int rc = -1;
    if (r) {
        if (!is_write)
            memset(data, 0xff, size);
        rc = r->ops->access(r->opaque, space, addr, data, size, is_write);
    }
    if (vm->io_lock)
        pthread_mutex_unlock(vm->io_lock);
    return rc;
}

int lv_kvm_exit_decode(struct lv_kvm_vcpu *c, struct kvm_run *run, struct lv_kvm_exit *out,
                       int *err)
{
    out->reason = run->exit_reason;
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        unsigned size = run->io.size, count = run->io.count;
        uint64_t off = run->io.data_offset;
        /* Never trust offsets to stay inside the shared page. */
        if (size == 0 || size > 4 || count == 0 || off >= c->run_size ||
            (uint64_t)size * count > c->run_size - off) {
            *err = -EPROTO;
            return LV_KVM_DECODE_DONE;
        }
        uint8_t *data = (uint8_t *)run + off;
        int is_write = run->io.direction == KVM_EXIT_IO_OUT, stop = 0, handled = 1;
        for (unsigned i = 0; i < count && handled; i++) {
            int rc = dispatch(c->vm, LV_KVM_PIO, run->io.port, data + i * size, size,
                              is_write);
            if (rc < 0)
                handled = 0;
            else if (rc == LV_KVM_IO_STOP)
                stop = 1;
        }
        if (handled && !stop)
            return LV_KVM_DECODE_RESUME;
        *out = (struct lv_kvm_exit){
            .kind = handled ? LV_KVM_EXIT_STOP : LV_KVM_EXIT_IO, .reason = run->exit_reason,
            .space = LV_KVM_PIO, .addr = run->io.port, .size = size, .count = count,
            .is_write = is_write, .data = data};
        if (!handled && !is_write) {
            memset(data, 0xff, (size_t)size * count); /* nothing there: all ones */
            c->pending_read = 1;
        }
        return LV_KVM_DECODE_DONE;
    }
    case KVM_EXIT_MMIO: {
        unsigned len = run->mmio.len;
        if (len == 0 || len > sizeof run->mmio.data) {
            *err = -EPROTO;
            return LV_KVM_DECODE_DONE;
        }
        int is_write = run->mmio.is_write != 0;
        int rc = dispatch(c->vm, LV_KVM_MMIO, run->mmio.phys_addr, run->mmio.data, len,
                          is_write);
        if (rc == LV_KVM_IO_DONE)
            return LV_KVM_DECODE_RESUME;
        *out = (struct lv_kvm_exit){
            .kind = rc < 0 ? LV_KVM_EXIT_MMIO : LV_KVM_EXIT_STOP, .reason = run->exit_reason,
            .space = LV_KVM_MMIO, .addr = run->mmio.phys_addr, .size = len, .count = 1,
            .is_write = is_write, .data = run->mmio.data};
        if (rc < 0 && !is_write) {
            memset(run->mmio.data, 0xff, len);
            c->pending_read = 1;
        }
        return LV_KVM_DECODE_DONE;
    }
    case KVM_EXIT_HLT:
        out->kind = LV_KVM_EXIT_HLT;
        return LV_KVM_DECODE_DONE;
    case KVM_EXIT_SHUTDOWN:
        out->kind = LV_KVM_EXIT_SHUTDOWN;
        return LV_KVM_DECODE_DONE;
    case KVM_EXIT_FAIL_ENTRY:
        out->kind = LV_KVM_EXIT_FAIL_ENTRY;
        out->code = run->fail_entry.hardware_entry_failure_reason;
        return LV_KVM_DECODE_DONE;
    case KVM_EXIT_INTERNAL_ERROR:
        out->kind = LV_KVM_EXIT_INTERNAL_ERROR;
        out->code = run->internal.suberror;
        return LV_KVM_DECODE_DONE;
    case KVM_EXIT_SYSTEM_EVENT:
        out->kind = LV_KVM_EXIT_SYSTEM_EVENT;
        out->code = run->system_event.type;
        return LV_KVM_DECODE_DONE;
    case KVM_EXIT_INTR:
        out->kind = LV_KVM_EXIT_INTR;
        return LV_KVM_DECODE_DONE;
    default:
        out->kind = LV_KVM_EXIT_OTHER;
        return LV_KVM_DECODE_DONE;
    }
}

int lv_kvm_vcpu_run(struct lv_kvm_vcpu *c, int64_t timeout_ns, struct lv_kvm_exit *out)
{
    struct kvm_run *run = c->run;
    timer_t timer;
    int timed = timeout_ns > 0, e = 0;
    if (lv_kvm_vcpu_take_held(c, out, &e))
        return e;
    memset(out, 0, sizeof *out);
    c->pending_read = 0;
    tl_fired = 0;
    tl_run = run;
    if (timed && (e = arm_timer(&timer, timeout_ns))) {
        tl_run = NULL;
        return e;
    }
    for (;;) {
        if (tl_fired) {
            run->immediate_exit = 0;
            out->kind = LV_KVM_EXIT_TIMEOUT;
            break;
        }
        if (ioctl(c->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                run->immediate_exit = 0;
                if (tl_fired)
                    continue; /* reported at the top of the loop */
                /* EAGAIN: an AP that was waiting for INIT/SIPI got them; KVM wants the
                 * call again to run it */
                if (errno == EAGAIN)
                    continue;
                out->kind = LV_KVM_EXIT_INTR;
                break;
            }
            e = neg_errno();
            break;
        }
        if (lv_kvm_exit_decode(c, run, out, &e) == LV_KVM_DECODE_RESUME)
            continue;
        break;
    }
    if (timed)
        timer_delete(timer);
    tl_run = NULL;
    run->immediate_exit = 0;
    return e;
}
