/* x86 boot register presets (see boot.h). */
#include "boot.h"
#include "internal.h"

#include <sys/ioctl.h>

static void seg(struct kvm_segment *s, uint16_t sel, uint64_t base, uint32_t limit,
                uint8_t type, int code_or_data, int db, int g)
{
    *s = (struct kvm_segment){.base = base, .limit = limit, .selector = sel, .type = type,
                              .present = 1, .dpl = 0, .db = (uint8_t)db, .s = (uint8_t)code_or_data,
                              .l = 0, .g = (uint8_t)g};
}

int kvm_vcpu_setup_real(struct kvm_vcpu *c, uint16_t cs, uint16_t ip)
{
    struct kvm_sregs s;
    if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
        return neg_errno();
    seg(&s.cs, cs, (uint64_t)cs << 4, 0xffff, 0xb, 1, 0, 0);
    seg(&s.ds, 0, 0, 0xffff, 0x3, 1, 0, 0);
    s.es = s.fs = s.gs = s.ss = s.ds;
    s.cr0 &= ~(uint64_t)0x80000001; /* PE and PG off */
    s.efer = 0;
    if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
        return neg_errno();
    struct kvm_regs r = {.rip = ip, .rflags = 0x2};
    return ioctl(c->fd, KVM_SET_REGS, &r) < 0 ? neg_errno() : 0;
}

int kvm_vcpu_setup_boot32(struct kvm_vcpu *c, const struct kvm_boot32 *b)
{
    struct kvm_sregs s;
    if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
        return neg_errno();
    /* Flat 4 GiB code and data segments, paging off, interrupts off. The hidden parts
     * are what counts; the selectors and the GDT matter to a guest that reloads a
     * segment before loading a GDT of its own. */
    seg(&s.cs, b->cs ? b->cs : 0x08, 0, 0xffffffff, 0xb, 1, 1, 1);
    seg(&s.ds, b->ds ? b->ds : 0x10, 0, 0xffffffff, 0x3, 1, 1, 1);
    s.es = s.fs = s.gs = s.ss = s.ds;
    if (b->gdt_limit) {
        s.gdt.base = b->gdt_base;
        s.gdt.limit = b->gdt_limit;
    }
    s.cr0 = (s.cr0 | 0x1) & ~(uint64_t)0x80000000;
    s.cr4 = 0;
    s.efer = 0;
    if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
        return neg_errno();
    struct kvm_regs r = {.rip = b->eip, .rax = b->eax, .rbx = b->ebx, .rsi = b->esi,
                         .rflags = 0x2};
    return ioctl(c->fd, KVM_SET_REGS, &r) < 0 ? neg_errno() : 0;
}

int kvm_vcpu_setup_boot64(struct kvm_vcpu *c, const struct kvm_boot64 *b)
{
    struct kvm_sregs s;
    if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
        return neg_errno();
    seg(&s.cs, b->cs, 0, 0xffffffff, 0xb, 1, 0, 1);
    s.cs.l = 1; /* 64-bit code: L set, D clear */
    seg(&s.ds, b->ds, 0, 0xffffffff, 0x3, 1, 1, 1);
    s.es = s.fs = s.gs = s.ss = s.ds;
    s.gdt.base = b->gdt_base;
    s.gdt.limit = b->gdt_limit;
    s.cr3 = b->cr3;
    s.cr4 = 0x20;                                /* PAE */
    s.cr0 = (s.cr0 | 0x80000011) & ~0x60000000ULL; /* PG, ET, PE; caches on (CD, NW off) */
    s.efer = 0x500;                              /* LME and LMA */
    if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
        return neg_errno();
    struct kvm_regs r = {.rip = b->rip, .rsi = b->rsi, .rflags = 0x2};
    return ioctl(c->fd, KVM_SET_REGS, &r) < 0 ? neg_errno() : 0;
}

int kvm_vcpu_setup_flat32(struct kvm_vcpu *c, uint32_t eip, uint32_t eax, uint32_t ebx)
{
    /* multiboot: the guest loads its own GDT before reloading segments */
    struct kvm_boot32 b = {.eip = eip, .eax = eax, .ebx = ebx};
    return kvm_vcpu_setup_boot32(c, &b);
}
