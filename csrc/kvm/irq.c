/* Interrupts: the in-kernel irqchip and PIT, GSI routes, irqfds, IRQ lines, MSIs and
 * the KVM VFIO device (see irq.h). */
#include "irq.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

static int commit_routes(struct kvm_vm *vm)
{
    struct kvm_irq_routing *r =
        calloc(1, sizeof *r + vm->nroutes * sizeof(struct kvm_irq_routing_entry));
    if (!r)
        return -ENOMEM;
    r->nr = vm->nroutes;
    memcpy(r->entries, vm->routes, vm->nroutes * sizeof(struct kvm_irq_routing_entry));
    int e = ioctl(vm->fd, KVM_SET_GSI_ROUTING, r) < 0 ? neg_errno() : 0;
    free(r);
    return e;
}

static int push_route(struct kvm_vm *vm, const struct kvm_irq_routing_entry *ent)
{
    if (vm->nroutes == vm->cap_routes) {
        unsigned cap = vm->cap_routes ? vm->cap_routes * 2 : 64;
        void *p = realloc(vm->routes, cap * sizeof *vm->routes);
        if (!p)
            return -ENOMEM;
        vm->routes = p;
        vm->cap_routes = cap;
    }
    vm->routes[vm->nroutes++] = *ent;
    return 0;
}

int kvm_create_irqchip(struct kvm_vm *vm)
{
    /* the irqchip claims the IOAPIC and LAPIC windows of the address map */
    if (kvm_slot_overlap(vm, IOAPIC_BASE, IOAPIC_SIZE, 0) ||
        kvm_mmio_range_overlap(vm, IOAPIC_BASE, IOAPIC_SIZE) ||
        kvm_slot_overlap(vm, LAPIC_BASE, LAPIC_SIZE, 0) ||
        kvm_mmio_range_overlap(vm, LAPIC_BASE, LAPIC_SIZE))
        return -EEXIST;
    if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return neg_errno();
    vm->irqchip = 1;
    /* KVM_SET_GSI_ROUTING replaces the whole table, so keep our own copy of the routes
     * the irqchip starts with: GSI 0-15 reach the PICs and the IOAPIC, 16-23 the IOAPIC. */
    vm->nroutes = 0;
    for (uint32_t gsi = 0; gsi < 24; gsi++) {
        struct kvm_irq_routing_entry ent = {.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP};
        int e;
        if (gsi < 16) {
            ent.u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
            ent.u.irqchip.pin = gsi % 8;
            if ((e = push_route(vm, &ent)))
                return e;
        }
        ent.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        ent.u.irqchip.pin = gsi;
        if ((e = push_route(vm, &ent)))
            return e;
    }
    return 0;
}

int kvm_create_pit2(struct kvm_vm *vm)
{
    /* The dummy speaker port makes KVM answer port 0x61 too, whose bit 5 (PIT channel 2
     * output) Linux polls to calibrate the TSC against the PIT. */
    struct kvm_pit_config cfg = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (!vm->irqchip)
        return -ENXIO; /* the PIT interrupts through the in-kernel PIC/IOAPIC */
    return ioctl(vm->fd, KVM_CREATE_PIT2, &cfg) < 0 ? neg_errno() : 0;
}

static void drop_routes(struct kvm_vm *vm, uint32_t gsi)
{
    unsigned j = 0;
    for (unsigned i = 0; i < vm->nroutes; i++)
        if (vm->routes[i].gsi != gsi)
            vm->routes[j++] = vm->routes[i];
    vm->nroutes = j;
}

int kvm_set_msi_route(struct kvm_vm *vm, uint32_t gsi, uint64_t addr, uint32_t data)
{
    struct kvm_irq_routing_entry *saved = NULL;
    unsigned nsaved = vm->nroutes;
    if (nsaved) {
        saved = malloc(nsaved * sizeof *saved);
        if (!saved)
            return -ENOMEM;
        memcpy(saved, vm->routes, nsaved * sizeof *saved);
    }
    drop_routes(vm, gsi);
    struct kvm_irq_routing_entry ent = {.gsi = gsi, .type = KVM_IRQ_ROUTING_MSI};
    ent.u.msi.address_lo = (uint32_t)addr;
    ent.u.msi.address_hi = (uint32_t)(addr >> 32);
    ent.u.msi.data = data;
    int e = push_route(vm, &ent);
    if (!e)
        e = commit_routes(vm);
    if (e && saved) { /* keep our copy equal to what the kernel has */
        memcpy(vm->routes, saved, nsaved * sizeof *saved);
        vm->nroutes = nsaved;
    }
    free(saved);
    return e;
}

int kvm_remove_route(struct kvm_vm *vm, uint32_t gsi)
{
    unsigned before = vm->nroutes;
    struct kvm_irq_routing_entry *saved = malloc((before ? before : 1) * sizeof *saved);
    if (!saved)
        return -ENOMEM;
    if (before)   /* no routes yet: vm->routes may be NULL */
        memcpy(saved, vm->routes, before * sizeof *saved);
    drop_routes(vm, gsi);
    int e = vm->nroutes == before ? -ENOENT : commit_routes(vm);
    if (e) {
        if (before)
            memcpy(vm->routes, saved, before * sizeof *saved);
        vm->nroutes = before;
    }
    free(saved);
    return e;
}

int kvm_assign_irqfd(struct kvm_vm *vm, uint32_t gsi, int fd, int resample_fd, int deassign)
{
    struct kvm_irqfd a = {.fd = (uint32_t)fd, .gsi = gsi};
    if (deassign)
        a.flags = KVM_IRQFD_FLAG_DEASSIGN;
    else if (resample_fd >= 0) {
        a.flags = KVM_IRQFD_FLAG_RESAMPLE;
        a.resamplefd = (uint32_t)resample_fd;
    }
    return ioctl(vm->fd, KVM_IRQFD, &a) < 0 ? neg_errno() : 0;
}

int kvm_irq_line(struct kvm_vm *vm, uint32_t gsi, int level)
{
    struct kvm_irq_level l = {.irq = gsi, .level = (uint32_t)level};
    return ioctl(vm->fd, KVM_IRQ_LINE, &l) < 0 ? neg_errno() : 0;
}

int kvm_signal_msi(struct kvm_vm *vm, uint64_t addr, uint32_t data)
{
    struct kvm_msi m = {.address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32),
                        .data = data};
    int r = ioctl(vm->fd, KVM_SIGNAL_MSI, &m);
    return r < 0 ? neg_errno() : r; /* > 0: delivered, 0: blocked by the guest */
}

int kvm_vfio_group(struct kvm_vm *vm, int group_fd, int add)
{
    if (vm->vfio_fd < 0) {
        struct kvm_create_device d = {.type = KVM_DEV_TYPE_VFIO};
        if (ioctl(vm->fd, KVM_CREATE_DEVICE, &d) < 0)
            return neg_errno();
        vm->vfio_fd = (int)d.fd;
        fcntl(vm->vfio_fd, F_SETFD, FD_CLOEXEC);
    }
    if (group_fd < 0)
        return 0; /* only create the device */
    int32_t gfd = group_fd;
    struct kvm_device_attr a = {
        .group = KVM_DEV_VFIO_GROUP,
        .attr = add ? KVM_DEV_VFIO_GROUP_ADD : KVM_DEV_VFIO_GROUP_DEL,
        .addr = (uint64_t)(uintptr_t)&gfd,
    };
    return ioctl(vm->vfio_fd, KVM_SET_DEVICE_ATTR, &a) < 0 ? neg_errno() : 0;
}
