/* The guest-access seam between the trap core (trap/) and the KVM run loop (kvm/): a
 * trap's virtual function as a function of the C host bridge (struct kvm_pci_cfg_ops,
 * kvm/pcihost.h) and its BARs as handled ranges (struct kvm_io_ops, kvm/iobus.h), so a
 * guest's config and trapped BAR accesses are answered in C, on the vCPU thread. The
 * opaque pointer of both ops is the struct trap_fn (a binding may embed it first in its
 * own block). No Lua here: a window whose handler needs its caller's frame is left to
 * the caller. Functions return 0 or -errno. */
#ifndef LUAVFIO_WIRE_TRAP_KVM_H
#define LUAVFIO_WIRE_TRAP_KVM_H

#include "kvm/iobus.h"
#include "kvm/pcihost.h"
#include "trap/trap.h"

#include <stdint.h>

extern const struct kvm_pci_cfg_ops wire_trap_cfg_ops;
extern const struct kvm_io_ops wire_trap_io_ops;

/* The decision of wire_trap_io_ops for one guest access of `size` bytes at `addr` in
 * `space` (data little-endian, a read's bytes arriving as all ones): KVM_VMM_IO_DONE when
 * the trap answered it, or a trap that is closed or has no backend (reads stay all ones,
 * writes are dropped), or an access of a size no BAR takes; the stop with the BAR event
 * reason when it queued trap events the VM layer must act on. */
int wire_trap_access(struct trap_fn *fn, int space, uint64_t addr, uint8_t *data,
                     unsigned size, int is_write);

#endif
