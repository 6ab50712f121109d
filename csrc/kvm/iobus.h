/* Handled PIO and MMIO ranges (iobus.c): an access the guest makes to a registered range
 * is answered by that range's ops inside the run loop (run.h) and the guest resumes at
 * once. Devices plug in through struct lv_kvm_io_ops. Also ioeventfds and the exit port.
 * Functions return 0 (or a range id) or -errno. */
#ifndef LUAVFIO_KVM_IOBUS_H
#define LUAVFIO_KVM_IOBUS_H

#include "vm.h"

#include <stdint.h>

enum { LV_KVM_PIO = 0, LV_KVM_MMIO = 1 };

/* Return values of the access callbacks. */
enum { LV_KVM_IO_DONE = 0, /* resume the guest */
       LV_KVM_IO_STOP = 1  /* handled, but end the run loop with LV_KVM_EXIT_STOP */ };

/* Access callbacks of a handled range. `data` holds `size` bytes, little-endian as the
 * guest sees them; a read fills them (they arrive filled with 0xff). `addr` is absolute
 * (port number or guest-physical address). Called on the vCPU thread, inside run. */
struct lv_kvm_io_ops {
    int (*access)(void *opaque, int space, uint64_t addr, uint8_t *data, unsigned size,
                  int is_write);
    /* Called once when the range is removed or the VM closes; may be NULL. */
    void (*release)(void *opaque);
};

struct lv_kvm_range {
    int id, space;
    uint64_t base, size;
    const struct lv_kvm_io_ops *ops;
    void *opaque;
};

/* Returns the range id (> 0) or -errno: -EEXIST if it overlaps a handled range of its
 * space, or (MMIO) a writable slot, the irqchip's IOAPIC/LAPIC windows or KVM's TSS and
 * identity-map pages (the address map, vm.h). */
int lv_kvm_add_range(struct lv_kvm_vm *vm, int space, uint64_t base, uint64_t size,
                     const struct lv_kvm_io_ops *ops, void *opaque);
int lv_kvm_remove_range(struct lv_kvm_vm *vm, int id);

int lv_kvm_ioeventfd(struct lv_kvm_vm *vm, int space, uint64_t addr, unsigned len, int fd,
                     int has_datamatch, uint64_t datamatch, int deassign);

/* An exit port: a write ends the run loop (LV_KVM_EXIT_STOP); a read resumes. */
int lv_kvm_add_exit_port(struct lv_kvm_vm *vm, uint16_t port);

#endif
