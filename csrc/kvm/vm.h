/* The VM (vm.c): its fd, memory slots and guest RAM, the slots' DMA counts and the
 * guest-physical address map that keeps slots, handled MMIO ranges (iobus.h), the
 * irqchip's windows and KVM's system pages apart. Functions return 0 or -errno. */
#ifndef LUAVFIO_KVM_VM_H
#define LUAVFIO_KVM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Pages KVM takes at VM creation (KVM_SET_IDENTITY_MAP_ADDR: one page, KVM_SET_TSS_ADDR:
 * three), below the 4 GiB BIOS area; the address map keeps slots and ranges off them. */
#define KVM_VMM_IDENTITY_MAP_ADDR 0xfffbc000ull
#define KVM_VMM_TSS_ADDR 0xfffbd000ull
#define KVM_VMM_SYSTEM_PAGES_SIZE 0x4000ull

struct kvm_range; /* iobus.h */

struct kvm_slot {
    int used, owned, readonly;   /* owned: RAM mmap'd by us (anonymous, or a backing
                                    file's pages), unmapped on close */
    int fd_backed;               /* owned RAM shared from a file (ram.h), not anonymous */
    uint64_t gpa, size;
    void *host;
    int *pin;                    /* the owner's use count of host memory it lends: held while
                                    the slot exists, released when it goes (may be NULL) */
    /* Lifetime rule: RAM is unmapped from the process only when no IOMMU mapping uses it.
     * dma counts the IOMMU mappings (container or IOAS map_dma) of this owned RAM: while
     * it is > 0, kvm_unmap refuses (-EBUSY) and the VM's close deletes the KVM slot but
     * keeps the RAM (orphaned) until kvm_ram_dma_put releases the last mapping. */
    int dma;
    int orphaned;
};

#define KVM_VMM_MAX_SLOTS 64

struct kvm_vm {
    int fd;                      /* -1 once closed */
    int run_size;                /* KVM_GET_VCPU_MMAP_SIZE */
    int irqchip;
    int vfio_fd;                 /* KVM VFIO pseudo device, -1 if not created */
    struct kvm_slot slots[KVM_VMM_MAX_SLOTS];
    struct kvm_range *ranges;
    unsigned nranges, cap_ranges;
    int next_range_id;
    struct kvm_irq_routing_entry *routes;
    unsigned nroutes, cap_routes;
    struct kvm_cpuid2 *cpuid;    /* supported CPUID, given to every vCPU */
    /* While several vCPU threads run (smp.c): the lock every C-handled access takes, so
     * the device models, ranges and slots see one access at a time; NULL otherwise. */
    pthread_mutex_t *io_lock;
};

int kvm_vm_create(struct kvm_vm *vm, int kvm_fd);
/* Releases the handled ranges, closes the KVM VFIO device, deletes the slots (keeping
 * the RAM an IOMMU still maps), frees the routes and the CPUID table. */
void kvm_vm_close(struct kvm_vm *vm);

/* Map `size` bytes of fresh anonymous memory at guest-physical `gpa`; returns slot or
 * -errno. kvm_map_host maps caller-owned memory (e.g. a BAR mmap). Slots refuse
 * (-EEXIST) to overlap slots, MMIO ranges (unless the slot is read-only), the irqchip's
 * IOAPIC/LAPIC windows and KVM's TSS and identity-map pages. */
int kvm_add_ram(struct kvm_vm *vm, uint64_t gpa, uint64_t size);
/* The same over `size` bytes of a backing file (ram.h: a memfd or a hugetlbfs file) from
 * `offset`, mapped shared: what the guest writes is in the file, for whoever else maps
 * it. -EINVAL unless gpa, offset and size are multiples of the file's page size and
 * [offset, offset + size) lies inside the file. The mapping holds the file: closing the
 * fd later changes nothing. -ENOMEM from a hugetlb file: its pool is short of pages. */
int kvm_add_ram_fd(struct kvm_vm *vm, uint64_t gpa, uint64_t size, int fd, uint64_t offset);
int kvm_map_host(struct kvm_vm *vm, uint64_t gpa, uint64_t size, void *host,
                 int readonly, int *pin);
int kvm_unmap(struct kvm_vm *vm, int slot);  /* -EBUSY while its RAM is DMA-mapped */
/* Host pointer of guest RAM [gpa, gpa+len) if it lies within one owned RAM slot. */
void *kvm_ram_ptr(struct kvm_vm *vm, uint64_t gpa, uint64_t len);
/* The owned RAM slot holding [gpa, gpa+len), or -1. */
int kvm_ram_slot(struct kvm_vm *vm, uint64_t gpa, uint64_t len);
/* An IOMMU mapping of slot's RAM is made (get) or gone (put: the RAM of a slot the VM's
 * close orphaned is unmapped with its last mapping). */
void kvm_ram_dma_get(struct kvm_vm *vm, int slot);
void kvm_ram_dma_put(struct kvm_vm *vm, int slot);
/* The first slot whose RAM an IOMMU still maps (its count in *count), or -1. */
int kvm_ram_dma_busy(const struct kvm_vm *vm, int *count);

/* How long a halted vCPU of this VM polls for a wake-up before it sleeps
 * (KVM_CAP_HALT_POLL; the kernel's halt_poll_ns is the default). */
int kvm_set_halt_poll(struct kvm_vm *vm, uint64_t ns);

#endif
