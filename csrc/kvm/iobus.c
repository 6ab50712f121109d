/* The handled PIO and MMIO ranges, their dispatch, ioeventfds and the exit port (see
 * iobus.h). */
#include "iobus.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

int kvm_add_range(struct kvm_vm *vm, int space, uint64_t base, uint64_t size,
                  const struct kvm_io_ops *ops, void *opaque)
{
    if (size == 0 || base + size < base || !ops || !ops->access ||
        (space != KVM_VMM_PIO && space != KVM_VMM_MMIO) ||
        (space == KVM_VMM_PIO && base + size > 0x10000))
        return -EINVAL;
    for (unsigned i = 0; i < vm->nranges; i++) {
        struct kvm_range *r = &vm->ranges[i];
        if (r->space == space && base < r->base + r->size && r->base < base + size)
            return -EEXIST;
    }
    if (space == KVM_VMM_MMIO) {
        /* over a writable slot, RAM would answer first: the range could never be hit */
        if (kvm_reserved_overlap(vm, base, size) || kvm_slot_overlap(vm, base, size, 1))
            return -EEXIST;
    }
    if (vm->nranges == vm->cap_ranges) {
        unsigned cap = vm->cap_ranges ? vm->cap_ranges * 2 : 16;
        void *p = realloc(vm->ranges, cap * sizeof *vm->ranges);
        if (!p)
            return -ENOMEM;
        vm->ranges = p;
        vm->cap_ranges = cap;
    }
    int id = vm->next_range_id++;
    vm->ranges[vm->nranges++] = (struct kvm_range){
        .id = id, .space = space, .base = base, .size = size, .ops = ops, .opaque = opaque};
    return id;
}

int kvm_remove_range(struct kvm_vm *vm, int id)
{
    for (unsigned i = 0; i < vm->nranges; i++) {
        if (vm->ranges[i].id != id)
            continue;
        struct kvm_range r = vm->ranges[i];
        vm->ranges[i] = vm->ranges[--vm->nranges];
        if (r.ops->release)
            r.ops->release(r.opaque);
        return 0;
    }
    return -ENOENT;
}

static struct kvm_range *find_range(struct kvm_vm *vm, int space, uint64_t addr)
{
    for (unsigned i = 0; i < vm->nranges; i++) {
        struct kvm_range *r = &vm->ranges[i];
        if (r->space == space && addr >= r->base && addr - r->base < r->size)
            return r;
    }
    return NULL;
}

/* Dispatch one decoded access to a handled range: its answer (iobus.h), or -1 if no range
 * covers it. */
int kvm_dispatch(struct kvm_vm *vm, int space, uint64_t addr, uint8_t *data,
                 unsigned size, int is_write)
{
    if (vm->io_lock)
        pthread_mutex_lock(vm->io_lock);
    struct kvm_range *r = find_range(vm, space, addr);
    int rc = -1;
    if (r) {
        if (!is_write)
            memset(data, 0xff, size);
        rc = r->ops->access(r->opaque, space, addr, data, size, is_write);
    }
    if (vm->io_lock)
        pthread_mutex_unlock(vm->io_lock);
    return rc;
}

static int exitport_access(void *opaque, int space, uint64_t addr, uint8_t *data,
                           unsigned size, int is_write)
{
    return is_write ? KVM_VMM_IO_STOP(KVM_VMM_STOP_EXIT_PORT) : KVM_VMM_IO_DONE;
}

static const struct kvm_io_ops exitport_ops = {.access = exitport_access};

int kvm_add_exit_port(struct kvm_vm *vm, uint16_t port)
{
    return kvm_add_range(vm, KVM_VMM_PIO, port, 1, &exitport_ops, NULL);
}

int kvm_assign_ioeventfd(struct kvm_vm *vm, int space, uint64_t addr, unsigned len, int fd,
                         int has_datamatch, uint64_t datamatch, int deassign)
{
    struct kvm_ioeventfd a = {.datamatch = datamatch, .addr = addr, .len = len, .fd = fd};
    if (space == KVM_VMM_PIO)
        a.flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (has_datamatch)
        a.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    if (deassign)
        a.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
    return ioctl(vm->fd, KVM_IOEVENTFD, &a) < 0 ? neg_errno() : 0;
}
