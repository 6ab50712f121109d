/* A debug console (debugcon.c), a handled range (struct kvm_io_ops) on a port: it
 * appends the low byte of every write to a buffer (capped: bytes beyond the cap are
 * counted, not stored; reads return 0xe9 like QEMU's); the guest's output never goes
 * through Lua. */
#ifndef LUAVFIO_KVM_DEBUGCON_H
#define LUAVFIO_KVM_DEBUGCON_H

#include "iobus.h"

#include <stddef.h>
#include <stdint.h>

struct kvm_debugcon {
    char *buf;
    size_t len, cap;
    uint64_t dropped;
    int closed;
};
extern const struct kvm_io_ops kvm_debugcon_ops; /* opaque: struct kvm_debugcon */
void kvm_debugcon_close(struct kvm_debugcon *d);

#endif
