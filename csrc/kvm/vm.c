/* The VM: create and close, memory slots and guest RAM, the slots' DMA counts, the
 * guest-physical address map (see vm.h). */
#include "vm.h"
#include "internal.h"
#include "iobus.h"
#include "ram.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int load_cpuid(struct kvm_vm *vm, int kvm_fd)
{
    return kvm_read_cpuid(kvm_fd, KVM_GET_SUPPORTED_CPUID, &vm->cpuid);
}

int kvm_vm_create(struct kvm_vm *vm, int kvm_fd)
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
     * address map refuses slots and ranges over them (vm.h). */
    if (ioctl(fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_VMM_TSS_ADDR) < 0 ||
        (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0 &&
         ioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &(uint64_t){KVM_VMM_IDENTITY_MAP_ADDR}) < 0)) {
        e = neg_errno();
        close(fd);
        free(vm->cpuid);
        vm->cpuid = NULL;
        return e;
    }
    vm->fd = fd;
    return 0;
}

static int drop_slot(struct kvm_vm *vm, int i);

void kvm_vm_close(struct kvm_vm *vm)
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
    for (int i = 0; i < KVM_VMM_MAX_SLOTS; i++)
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

static int set_slot(struct kvm_vm *vm, int slot, uint64_t gpa, uint64_t size, void *host,
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
static int drop_slot(struct kvm_vm *vm, int i)
{
    struct kvm_slot *s = &vm->slots[i];
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

static int free_slot(struct kvm_vm *vm)
{
    for (int i = 0; i < KVM_VMM_MAX_SLOTS; i++)
        if (!vm->slots[i].used && !vm->slots[i].orphaned)
            return i;
    return -ENOSPC;
}

/* ---- the guest-physical address map ----
 * One map for everything that claims guest-physical addresses: RAM and host-memory slots,
 * handled MMIO ranges, and the in-kernel irqchip's IOAPIC and LAPIC windows. A new claim
 * that overlaps an old one is refused with -EEXIST, whoever asks (the VM layer's layout,
 * or a BAR the guest moved), except that an MMIO range may lie over a read-only slot:
 * KVM turns the guest's writes there into MMIO exits, which is what such a range is for.
 * The windows' addresses are in internal.h; irq.c's irqchip and iobus.c's ranges check
 * their claims with the functions below. */
static int overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* The irqchip's windows, and the pages KVM took at VM creation for the real-mode TSS
 * and identity page table (guest memory there would be overwritten by KVM). */
int kvm_reserved_overlap(const struct kvm_vm *vm, uint64_t gpa, uint64_t size)
{
    return overlaps(gpa, size, KVM_VMM_IDENTITY_MAP_ADDR, KVM_VMM_SYSTEM_PAGES_SIZE) ||
           (vm->irqchip && (overlaps(gpa, size, IOAPIC_BASE, IOAPIC_SIZE) ||
                            overlaps(gpa, size, LAPIC_BASE, LAPIC_SIZE)));
}

/* Does a slot (a writable one, with writable_only) overlap [gpa, gpa + size)? */
int kvm_slot_overlap(const struct kvm_vm *vm, uint64_t gpa, uint64_t size, int writable_only)
{
    for (int i = 0; i < KVM_VMM_MAX_SLOTS; i++) {
        const struct kvm_slot *s = &vm->slots[i];
        if (s->used && !(writable_only && s->readonly) && overlaps(gpa, size, s->gpa, s->size))
            return 1;
    }
    return 0;
}

int kvm_mmio_range_overlap(const struct kvm_vm *vm, uint64_t gpa, uint64_t size)
{
    for (unsigned i = 0; i < vm->nranges; i++)
        if (vm->ranges[i].space == KVM_VMM_MMIO &&
            overlaps(gpa, size, vm->ranges[i].base, vm->ranges[i].size))
            return 1;
    return 0;
}

/* May a slot (readonly or not) claim [gpa, gpa + size)? */
static int slot_claim_ok(const struct kvm_vm *vm, uint64_t gpa, uint64_t size, int readonly)
{
    if (kvm_reserved_overlap(vm, gpa, size) || kvm_slot_overlap(vm, gpa, size, 0) ||
        (!readonly && kvm_mmio_range_overlap(vm, gpa, size)))
        return -EEXIST;
    return 0;
}

static int page_ok(uint64_t gpa, uint64_t size)
{
    long pg = sysconf(_SC_PAGESIZE);
    return size > 0 && gpa % (uint64_t)pg == 0 && size % (uint64_t)pg == 0 &&
           gpa + size > gpa;
}

/* Guest RAM whose host address agrees with its guest address modulo 2 MiB (or the
 * backing's huge page size, if larger), with transparent huge pages asked for: only then
 * can KVM map it with 2 MiB pages, and a guest's first touch of each 2 MiB costs one EPT
 * fault instead of 512 (under nested KVM each fault is an exit to the outer hypervisor).
 * fd < 0: private anonymous memory; else `fd` shared from `offset` (a memfd or a
 * hugetlbfs file: MAP_FIXED over the aligned part of an address range reserved first).
 * Exactly `size` bytes stay mapped. */
#define RAM_ALIGN ((size_t)2 << 20)
static void *map_ram(uint64_t gpa, size_t size, int fd, uint64_t offset, size_t align)
{
    if (align < RAM_ALIGN)
        align = RAM_ALIGN;
    if (size > SIZE_MAX - align)
        return MAP_FAILED;
    char *raw = mmap(NULL, size + align, fd < 0 ? PROT_READ | PROT_WRITE : PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return MAP_FAILED;
    size_t want = (size_t)(gpa % align);
    size_t head = (want - (uintptr_t)raw % align + align) % align;
    char *p = raw + head;
    if (head)
        munmap(raw, head);
    if (align - head)
        munmap(p + size, align - head);
    if (fd >= 0) {
        void *q = mmap(p, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                       (off_t)offset);
        if (q == MAP_FAILED) {
            int e = errno;
            munmap(p, size);
            errno = e;
            return MAP_FAILED;
        }
    }
    (void)madvise(p, size, MADV_HUGEPAGE); /* advice: where THP is off it changes nothing */
    return p;
}

static int add_ram(struct kvm_vm *vm, uint64_t gpa, uint64_t size, int fd, uint64_t offset,
                   size_t align)
{
    if (!page_ok(gpa, size) || size > SIZE_MAX)
        return -EINVAL;
    int e = slot_claim_ok(vm, gpa, size, 0);
    if (e)
        return e;
    int slot = free_slot(vm);
    if (slot < 0)
        return slot;
    void *p = map_ram(gpa, (size_t)size, fd, offset, align);
    if (p == MAP_FAILED)
        return neg_errno();
    e = set_slot(vm, slot, gpa, size, p, 0);
    if (e) {
        munmap(p, (size_t)size);
        return e;
    }
    vm->slots[slot] = (struct kvm_slot){.used = 1, .owned = 1, .gpa = gpa, .size = size,
                                        .host = p, .fd_backed = fd >= 0};
    return slot;
}

int kvm_add_ram(struct kvm_vm *vm, uint64_t gpa, uint64_t size)
{
    return add_ram(vm, gpa, size, -1, 0, RAM_ALIGN);
}

int kvm_add_ram_fd(struct kvm_vm *vm, uint64_t gpa, uint64_t size, int fd, uint64_t offset)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return neg_errno();
    int64_t pg = kvm_ram_page_size(fd);
    if (pg < 0)
        return (int)pg;
    /* Never map past the file's end: a touch there faults (SIGBUS here). The caller's
     * file is sealed against shrinking (ram.h), or is one only it holds. */
    if (!S_ISREG(st.st_mode) || st.st_size < 0 || offset > (uint64_t)st.st_size ||
        size > (uint64_t)st.st_size - offset || offset % (uint64_t)pg || size % (uint64_t)pg ||
        gpa % (uint64_t)pg)
        return -EINVAL;
    return add_ram(vm, gpa, size, fd, offset, (size_t)pg);
}

int kvm_map_host(struct kvm_vm *vm, uint64_t gpa, uint64_t size, void *host,
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
    vm->slots[slot] = (struct kvm_slot){.used = 1, .readonly = readonly, .gpa = gpa,
                                        .size = size, .host = host, .pin = pin};
    if (pin)
        (*pin)++;
    return slot;
}

int kvm_unmap(struct kvm_vm *vm, int slot)
{
    if (slot < 0 || slot >= KVM_VMM_MAX_SLOTS || !vm->slots[slot].used)
        return -ENOENT;
    if (vm->slots[slot].dma > 0)
        return -EBUSY;
    return drop_slot(vm, slot);
}

int kvm_ram_slot(struct kvm_vm *vm, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < KVM_VMM_MAX_SLOTS; i++) {
        struct kvm_slot *s = &vm->slots[i];
        if (s->used && s->owned && gpa >= s->gpa && gpa - s->gpa <= s->size &&
            len <= s->size - (gpa - s->gpa))
            return i;
    }
    return -1;
}

void kvm_ram_dma_get(struct kvm_vm *vm, int slot)
{
    if (slot >= 0 && slot < KVM_VMM_MAX_SLOTS)
        vm->slots[slot].dma++;
}

void kvm_ram_dma_put(struct kvm_vm *vm, int slot)
{
    if (slot < 0 || slot >= KVM_VMM_MAX_SLOTS)
        return;
    struct kvm_slot *s = &vm->slots[slot];
    if (s->dma > 0)
        s->dma--;
    if (s->dma == 0 && s->orphaned) {
        munmap(s->host, s->size);
        *s = (struct kvm_slot){0};
    }
}

int kvm_ram_dma_busy(const struct kvm_vm *vm, int *count)
{
    for (int i = 0; i < KVM_VMM_MAX_SLOTS; i++)
        if (vm->slots[i].used && vm->slots[i].dma > 0) {
            if (count)
                *count = vm->slots[i].dma;
            return i;
        }
    return -1;
}

void *kvm_ram_ptr(struct kvm_vm *vm, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < KVM_VMM_MAX_SLOTS; i++) {
        struct kvm_slot *s = &vm->slots[i];
        if (s->used && s->owned && gpa >= s->gpa && gpa - s->gpa <= s->size &&
            len <= s->size - (gpa - s->gpa))
            return (char *)s->host + (gpa - s->gpa);
    }
    return NULL;
}


int kvm_set_halt_poll(struct kvm_vm *vm, uint64_t ns)
{
    struct kvm_enable_cap cap = {.cap = KVM_CAP_HALT_POLL, .args = {ns}};
    return ioctl(vm->fd, KVM_ENABLE_CAP, &cap) < 0 ? neg_errno() : 0;
}
