/* Interrupts (irq.c): the in-kernel irqchip and PIT, the GSI routing table (kept in the
 * VM, since KVM_SET_GSI_ROUTING replaces the whole table), irqfds, IRQ lines, MSIs and
 * the KVM VFIO device. Functions return 0 or -errno. */
#ifndef LUAVFIO_KVM_IRQ_H
#define LUAVFIO_KVM_IRQ_H

#include "vm.h"

#include <stdint.h>

/* The irqchip claims its IOAPIC and LAPIC windows in the address map (-EEXIST when a
 * slot or MMIO range is there). */
int kvm_create_irqchip(struct kvm_vm *vm);
/* The in-kernel i8254 PIT (ports 0x40-0x43, and 0x61), after the irqchip. */
int kvm_create_pit2(struct kvm_vm *vm);
int kvm_set_msi_route(struct kvm_vm *vm, uint32_t gsi, uint64_t addr, uint32_t data);
int kvm_remove_route(struct kvm_vm *vm, uint32_t gsi);
int kvm_assign_irqfd(struct kvm_vm *vm, uint32_t gsi, int fd, int resample_fd, int deassign);
int kvm_irq_line(struct kvm_vm *vm, uint32_t gsi, int level);
/* > 0: delivered, 0: blocked by the guest, or -errno. */
int kvm_signal_msi(struct kvm_vm *vm, uint64_t addr, uint32_t data);
/* The KVM VFIO device (created at the first call), and a group added to it or deleted
 * from it; group_fd < 0: only create the device. */
int kvm_vfio_group(struct kvm_vm *vm, int group_fd, int add);

#endif
