/* The guest-access seam between the trap core (trap/) and the KVM run loop (kvm/): a
 * trap's virtual function as a function of the C host bridge (struct kvm_pci_cfg_ops,
 * kvm/pcihost.h) and its BARs as handled ranges (struct kvm_io_ops, kvm/iobus.h), so a
 * guest's config and trapped BAR accesses are answered in C, on the vCPU thread. The
 * opaque pointer of both ops is the struct trap_fn (a binding may embed it first in its
 * own block). No Lua here: a window whose handler needs its caller's frame is left to
 * the run's caller (KVM_VMM_IO_PASS). */
#ifndef LUAVFIO_WIRE_TRAP_KVM_H
#define LUAVFIO_WIRE_TRAP_KVM_H

#include "kvm/iobus.h"
#include "kvm/pcihost.h"
#include "trap/trap.h"

#include <stdint.h>

extern const struct kvm_pci_cfg_ops wire_trap_cfg_ops;
extern const struct kvm_io_ops wire_trap_io_ops;

/* The answer of wire_trap_io_ops to one guest access of `size` bytes at `addr` in
 * `space` (KVM_VMM_PIO or KVM_VMM_MMIO; data little-endian, a read's bytes arriving as
 * all ones), the trap core deciding with one decode (trap_addr_try):
 *   KVM_VMM_IO_PASS        a handler window takes it (the bindings' Lua quirk handlers):
 *                          nothing done, data untouched, the exit goes to the run's caller;
 *   KVM_VMM_IO_STOP(KVM_VMM_STOP_BAR)  answered, and the trap queued events the VM layer
 *                          must act on (an MSI-X vector masked, ...);
 *   KVM_VMM_IO_DONE        answered; also for a trap without a live backend and an access
 *                          of a size no BAR takes (reads stay all ones, writes dropped). */
int wire_trap_access(struct trap_fn *fn, int space, uint64_t addr, uint8_t *data,
                     unsigned size, int is_write);

#endif
