/* Handled PIO and MMIO ranges (iobus.c): an access the guest makes to a registered range
 * is answered by that range's ops inside the run loop (run.h) and the guest resumes at
 * once. Devices plug in through struct kvm_io_ops. Also ioeventfds and the exit port.
 * Functions return 0 (or a range id) or -errno. */
#ifndef LUAVFIO_KVM_IOBUS_H
#define LUAVFIO_KVM_IOBUS_H

#include "vm.h"

#include <stdint.h>

enum { KVM_VMM_PIO = 0, KVM_VMM_MMIO = 1 };

/* Return values of the access callbacks. */
enum { KVM_VMM_IO_DONE = 0, /* resume the guest */
       KVM_VMM_IO_STOP = 1 /* handled, but end the run loop with KVM_VMM_EXIT_STOP */ };

/* Access callbacks of a handled range. `data` holds `size` bytes, little-endian as the
 * guest sees them; a read fills them (they arrive filled with 0xff). `addr` is absolute
 * (port number or guest-physical address). Called on the vCPU thread, inside run. */
struct kvm_io_ops {
    int (*access)(void *opaque, int space, uint64_t addr, uint8_t *data, unsigned size,
                  int is_write);
    /* Called once when the range is removed or the VM closes; may be NULL. */
    void (*release)(void *opaque);
};

struct kvm_range {
    int id, space;
    uint64_t base, size;
    const struct kvm_io_ops *ops;
    void *opaque;
};

/* Returns the range id (> 0) or -errno: -EEXIST if it overlaps a handled range of its
 * space, or (MMIO) a writable slot, the irqchip's IOAPIC/LAPIC windows or KVM's TSS and
 * identity-map pages (the address map, vm.h). */
int kvm_add_range(struct kvm_vm *vm, int space, uint64_t base, uint64_t size,
                  const struct kvm_io_ops *ops, void *opaque);
int kvm_remove_range(struct kvm_vm *vm, int id);

int kvm_assign_ioeventfd(struct kvm_vm *vm, int space, uint64_t addr, unsigned len, int fd,
                         int has_datamatch, uint64_t datamatch, int deassign);

/* An exit port: a write ends the run loop (KVM_VMM_EXIT_STOP); a read resumes. */
int kvm_add_exit_port(struct kvm_vm *vm, uint16_t port);

#endif
