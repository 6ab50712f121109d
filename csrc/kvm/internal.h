/* Shared by this folder's KVM files only (kvm.c, vm.c, irq.c, iobus.c, vcpu.c, boot.c,
 * run.c); the bindings and the device files never include it. */
#ifndef LUAVFIO_KVM_INTERNAL_H
#define LUAVFIO_KVM_INTERNAL_H

#include "vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>

static inline int neg_errno(void) { return errno ? -errno : -EIO; }

/* The in-kernel irqchip's windows in the guest-physical address map (vm.c). */
#define IOAPIC_BASE 0xfec00000ull
#define IOAPIC_SIZE 0x1000ull
#define LAPIC_BASE 0xfee00000ull
#define LAPIC_SIZE 0x100000ull

/* A CPUID table from `req` on `fd` (KVM_GET_SUPPORTED_CPUID on /dev/kvm, KVM_GET_CPUID2
 * on a vCPU), the buffer grown until it fits; malloc'd for the caller (kvm.c). */
int kvm_read_cpuid(int fd, unsigned long req, struct kvm_cpuid2 **out);

/* The address map's checks (vm.c): does [gpa, gpa + size) overlap the irqchip's windows
 * or KVM's TSS and identity-map pages; a slot (a writable one, with writable_only); a
 * handled MMIO range? */
int kvm_reserved_overlap(const struct kvm_vm *vm, uint64_t gpa, uint64_t size);
int kvm_slot_overlap(const struct kvm_vm *vm, uint64_t gpa, uint64_t size,
                     int writable_only);
int kvm_mmio_range_overlap(const struct kvm_vm *vm, uint64_t gpa, uint64_t size);

/* Dispatch one decoded access to a handled range under the VM's io_lock (iobus.c, for
 * run.c); returns the range's answer, or -1 if none handles it. */
int kvm_dispatch(struct kvm_vm *vm, int space, uint64_t addr, uint8_t *data,
                 unsigned size, int is_write);

#endif
