/* vCPUs: create and close, CPUID, LAPIC, MSRs, registers and the held exit (see vcpu.h). */
#include "vcpu.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

int kvm_vcpu_create(struct kvm_vcpu *c, struct kvm_vm *vm, int id)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    int fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (fd < 0)
        return neg_errno();
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    void *run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED) {
        int e = neg_errno();
        close(fd);
        return e;
    }
    c->fd = fd;
    c->id = id;
    c->vm = vm;
    int e = kvm_vcpu_set_cpuid(c, NULL, 0);
    if (e) {
        munmap(run, (size_t)vm->run_size);
        close(fd);
        c->fd = -1;
        return e;
    }
    c->run = run;
    c->run_size = (size_t)vm->run_size;
    return 0;
}

static struct kvm_cpuid_entry2 *find_leaf(struct kvm_cpuid2 *t, uint32_t fn, uint32_t index)
{
    for (uint32_t i = 0; i < t->nent; i++) {
        struct kvm_cpuid_entry2 *e = &t->entries[i];
        if (e->function == fn &&
            (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index))
            return e;
    }
    return NULL;
}

static struct kvm_cpuid_entry2 *add_leaf(struct kvm_cpuid2 *t, uint32_t fn, uint32_t index)
{
    struct kvm_cpuid_entry2 *e = find_leaf(t, fn, index);
    if (!e) {
        e = &t->entries[t->nent++];
        *e = (struct kvm_cpuid_entry2){.function = fn, .index = index};
    }
    return e;
}

int kvm_vcpu_set_cpuid(struct kvm_vcpu *c, const struct kvm_cpuid_entry2 *over,
                       unsigned nover)
{
    const struct kvm_cpuid2 *sup = c->vm->cpuid;
    if (!sup)
        return 0;
    unsigned cap = sup->nent + nover + 2; /* room for the two KVM leaves */
    struct kvm_cpuid2 *t = calloc(1, sizeof *t + cap * sizeof t->entries[0]);
    if (!t)
        return -ENOMEM;
    t->nent = sup->nent;
    memcpy(t->entries, sup->entries, sup->nent * sizeof t->entries[0]);
    uint32_t id = (uint32_t)c->id;
    /* The in-kernel LAPIC emulates the TSC-deadline timer, which KVM_GET_SUPPORTED_CPUID
     * never lists (it depends on the irqchip). With it Linux skips calibrating the LAPIC
     * timer against the PIT, a check that a loaded or nested host fails ("APIC timer
     * disabled due to verification failure"), leaving the guest on the PIT. */
    int deadline = c->vm->irqchip && ioctl(c->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    for (uint32_t i = 0; i < t->nent; i++) {
        struct kvm_cpuid_entry2 *e = &t->entries[i];
        if (e->function == 1) {
            /* the initial APIC ID is the vCPU's, and the guest learns it is a guest */
            e->ebx = (e->ebx & 0x00ffffffu) | (id << 24);
            e->ecx |= 1u << 31;
            if (deadline)
                e->ecx |= 1u << 24;
        } else if (e->function == 0xb || e->function == 0x1f) {
            e->edx = id; /* x2APIC ID, every subleaf */
        }
    }
    /* KVM's paravirtual leaves: normally in the supported list already; a kernel that
     * leaves them out still gets the signature, with no features claimed. */
    struct kvm_cpuid_entry2 *sig = add_leaf(t, 0x40000000, 0);
    sig->eax = 0x40000001;
    memcpy(&sig->ebx, "KVMK", 4);
    memcpy(&sig->ecx, "VMKV", 4);
    memcpy(&sig->edx, "M\0\0\0", 4);
    add_leaf(t, 0x40000001, 0);
    for (unsigned i = 0; i < nover; i++) {
        struct kvm_cpuid_entry2 *e = add_leaf(t, over[i].function, over[i].index);
        uint32_t flags = e->flags;
        *e = over[i];
        e->flags = flags | over[i].flags;
    }
    int r = ioctl(c->fd, KVM_SET_CPUID2, t) < 0 ? neg_errno() : 0;
    free(t);
    return r;
}

int kvm_vcpu_get_cpuid(struct kvm_vcpu *c, struct kvm_cpuid2 **out)
{
    return kvm_read_cpuid(c->fd, KVM_GET_CPUID2, out);
}

int kvm_vcpu_set_lapic_lint(struct kvm_vcpu *c)
{
    struct kvm_lapic_state st;
    if (ioctl(c->fd, KVM_GET_LAPIC, &st) < 0)
        return neg_errno();
    /* LINT0 takes the PIC's output (ExtINT), LINT1 the NMI: the virtual wire a BIOS
     * programs, which MP-table guests expect (unmasked, edge, delivery mode in 10:8) */
    uint32_t lvt0, lvt1;
    memcpy(&lvt0, st.regs + 0x350, 4);
    memcpy(&lvt1, st.regs + 0x360, 4);
    lvt0 = (lvt0 & ~0x1f7ffu) | (7u << 8);
    lvt1 = (lvt1 & ~0x1f7ffu) | (4u << 8);
    memcpy(st.regs + 0x350, &lvt0, 4);
    memcpy(st.regs + 0x360, &lvt1, 4);
    return ioctl(c->fd, KVM_SET_LAPIC, &st) < 0 ? neg_errno() : 0;
}

int kvm_vcpu_get_lapic_reg(struct kvm_vcpu *c, unsigned off, uint32_t *val)
{
    struct kvm_lapic_state st;
    if (off > sizeof st.regs - 4 || off % 4)
        return -EINVAL;
    if (ioctl(c->fd, KVM_GET_LAPIC, &st) < 0)
        return neg_errno();
    memcpy(val, st.regs + off, 4);
    return 0;
}

int kvm_vcpu_set_msr(struct kvm_vcpu *c, uint32_t index, uint64_t value)
{
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
    } m = {.h.nmsrs = 1, .e = {.index = index, .data = value}};
    int r = ioctl(c->fd, KVM_SET_MSRS, &m);
    return r < 0 ? neg_errno() : r == 1 ? 0 : -EINVAL; /* 0 set: KVM refused the value */
}

int kvm_vcpu_get_msr(struct kvm_vcpu *c, uint32_t index, uint64_t *value)
{
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
    } m = {.h.nmsrs = 1, .e = {.index = index}};
    int r = ioctl(c->fd, KVM_GET_MSRS, &m);
    if (r < 0)
        return neg_errno();
    if (r != 1)
        return -EINVAL;
    *value = m.e.data;
    return 0;
}

void kvm_vcpu_close(struct kvm_vcpu *c)
{
    if (c->fd < 0)
        return;
    munmap(c->run, c->run_size);
    close(c->fd);
    c->fd = -1;
    c->run = NULL;
    c->held = 0;
}

void kvm_vcpu_hold(struct kvm_vcpu *c, const struct kvm_exit *x, int err)
{
    c->held = 1;
    c->held_err = err;
    c->held_pending_read = c->pending_read;
    c->pending_read = 0;   /* nobody may complete it before it is delivered */
    c->held_exit = *x;
}

int kvm_vcpu_take_held(struct kvm_vcpu *c, struct kvm_exit *out, int *err)
{
    if (!c->held)
        return 0;
    *out = c->held_exit;
    *err = c->held_err;
    c->pending_read = c->held_pending_read;
    c->held = 0;
    return 1;
}

int kvm_vcpu_get_regs(struct kvm_vcpu *c, struct kvm_regs *r)
{
    return ioctl(c->fd, KVM_GET_REGS, r) < 0 ? neg_errno() : 0;
}

int kvm_vcpu_set_regs(struct kvm_vcpu *c, const struct kvm_regs *r)
{
    return ioctl(c->fd, KVM_SET_REGS, r) < 0 ? neg_errno() : 0;
}

int kvm_vcpu_get_sregs(struct kvm_vcpu *c, struct kvm_sregs *s)
{
    return ioctl(c->fd, KVM_GET_SREGS, s) < 0 ? neg_errno() : 0;
}
