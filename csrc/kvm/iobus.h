/* Handled PIO and MMIO ranges (iobus.c): an access the guest makes to a registered range
 * is answered by that range's ops inside the run loop (run.h) and the guest resumes at
 * once, unless the range ends the run (a stop, with its reason) or passes the access on
 * to the run's caller. Devices plug in through struct kvm_io_ops. Also ioeventfds and
 * the exit port. Functions return 0 (or a range id) or -errno. */
#ifndef LUAVFIO_KVM_IOBUS_H
#define LUAVFIO_KVM_IOBUS_H

#include "vcpu.h"
#include "vm.h"

#include <stdint.h>

enum { KVM_VMM_PIO = 0, KVM_VMM_MMIO = 1 };

/* The three answers of an access callback:
 *   KVM_VMM_IO_DONE        answered: the guest resumes;
 *   KVM_VMM_IO_STOP(why)   answered, but the run loop ends with a KVM_VMM_EXIT_STOP exit
 *                          whose stop is `why` (enum kvm_stop, not KVM_VMM_STOP_NONE);
 *   KVM_VMM_IO_PASS        not answered here: nothing was done (a read's data stays as it
 *                          came) and the run loop returns the exit to its caller
 *                          unanswered, as for an address no range covers (an IO or MMIO
 *                          exit, a read's data all ones and pending). A string PIO exit
 *                          goes back from the first element that passes on: the elements
 *                          before it were answered and are not in it (its data and count
 *                          are the rest's). */
enum { KVM_VMM_IO_DONE = 0, KVM_VMM_IO_PASS = 1, KVM_VMM_IO_STOP_FLAG = 0x100 };
#define KVM_VMM_IO_STOP(why) (KVM_VMM_IO_STOP_FLAG | (int)(why))
/* The stop reason of an access callback's answer; KVM_VMM_STOP_NONE when it is no stop. */
static inline enum kvm_stop kvm_io_stop_reason(int rc)
{
    int why = rc & 0xff;
    return rc >= 0 && (rc & KVM_VMM_IO_STOP_FLAG) && why > KVM_VMM_STOP_NONE &&
                   why < KVM_VMM_STOP_KINDS
               ? (enum kvm_stop)why
               : KVM_VMM_STOP_NONE;
}

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

/* An exit port: a write ends the run loop (KVM_VMM_EXIT_STOP, KVM_VMM_STOP_EXIT_PORT); a
 * read resumes. */
int kvm_add_exit_port(struct kvm_vm *vm, uint16_t port);

#endif
