/* vCPUs (vcpu.c): create and close, CPUID, LAPIC, MSRs, registers, and the exit a vCPU
 * holds for its next run. The run loop is run.h, the boot register presets boot.h.
 * Functions return 0 or -errno. */
#ifndef LUAVFIO_KVM_VCPU_H
#define LUAVFIO_KVM_VCPU_H

#include "vm.h"

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

/* What the run loop reports for an exit it did not handle. */
enum lv_kvm_exit_kind {
    LV_KVM_EXIT_IO, LV_KVM_EXIT_MMIO, LV_KVM_EXIT_HLT, LV_KVM_EXIT_SHUTDOWN,
    LV_KVM_EXIT_STOP, LV_KVM_EXIT_INTR, LV_KVM_EXIT_TIMEOUT, LV_KVM_EXIT_FAIL_ENTRY,
    LV_KVM_EXIT_INTERNAL_ERROR, LV_KVM_EXIT_SYSTEM_EVENT, LV_KVM_EXIT_OTHER
};

struct lv_kvm_exit {
    enum lv_kvm_exit_kind kind;
    uint32_t reason;             /* raw KVM_EXIT_* */
    int space;                   /* IO, MMIO, STOP: LV_KVM_PIO or LV_KVM_MMIO */
    uint64_t addr;
    unsigned size, count;        /* count > 1 only for string PIO */
    int is_write;
    uint8_t *data;               /* inside kvm_run; valid until the next run */
    uint64_t code;               /* FAIL_ENTRY reason, INTERNAL_ERROR suberror, event type */
};

struct lv_kvm_vcpu {
    int fd, id;
    struct kvm_run *run;
    size_t run_size;
    struct lv_kvm_vm *vm;
    int pending_read;            /* an IO/MMIO read was returned to the caller */
    /* An exit taken from KVM_RUN that no caller has seen (lv_kvm_vcpu_hold): the next
     * lv_kvm_vcpu_run returns it before the vCPU enters KVM_RUN again, since that entry
     * would complete it unseen (a write lost, a read answered with all ones). */
    int held, held_err, held_pending_read;
    struct lv_kvm_exit held_exit;
};

int lv_kvm_vcpu_create(struct lv_kvm_vcpu *c, struct lv_kvm_vm *vm, int id);
void lv_kvm_vcpu_close(struct lv_kvm_vcpu *c);
/* CPUID of the vCPU (KVM_SET_CPUID2), from the VM's supported list: the vCPU's APIC ID
 * (leaf 1 EBX[31:24], leaves 0xb/0x1f EDX), the hypervisor bit (leaf 1 ECX[31]), KVM's
 * signature leaf 0x40000000 and features 0x40000001, then `over` replacing or adding
 * leaves by function and index. Done at creation with no overrides; again only before the
 * first run (KVM refuses a changed table after it). */
int lv_kvm_vcpu_set_cpuid(struct lv_kvm_vcpu *c, const struct kvm_cpuid_entry2 *over,
                          unsigned nover);
/* The table set (KVM_GET_CPUID2), malloc'd for the caller to free. */
int lv_kvm_vcpu_get_cpuid(struct lv_kvm_vcpu *c, struct kvm_cpuid2 **out);
/* LAPIC LINT0 as ExtINT and LINT1 as NMI (KVM_GET_LAPIC/KVM_SET_LAPIC); needs the
 * irqchip. get_lapic_reg reads one register of the saved state (offset 0x350...). */
int lv_kvm_vcpu_set_lapic_lint(struct lv_kvm_vcpu *c);
int lv_kvm_vcpu_get_lapic_reg(struct lv_kvm_vcpu *c, unsigned off, uint32_t *val);
/* One MSR (KVM_SET_MSRS/KVM_GET_MSRS); -EINVAL when KVM refuses the index or value. */
int lv_kvm_vcpu_set_msr(struct lv_kvm_vcpu *c, uint32_t index, uint64_t value);
int lv_kvm_vcpu_get_msr(struct lv_kvm_vcpu *c, uint32_t index, uint64_t *value);
/* Register access (KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS): 0 or -errno. */
int lv_kvm_vcpu_get_regs(struct lv_kvm_vcpu *c, struct kvm_regs *r);
int lv_kvm_vcpu_set_regs(struct lv_kvm_vcpu *c, const struct kvm_regs *r);
int lv_kvm_vcpu_get_sregs(struct lv_kvm_vcpu *c, struct kvm_sregs *s);
/* Rule: an exit lv_kvm_vcpu_run returned (or its error) that no caller has seen must not
 * be dropped: whoever ends a run with one in hand holds it here (its data stays in
 * kvm_run, which only the next KVM_RUN changes), and the next run of the vCPU, by any
 * entry point, delivers it first. take_held copies it back to out with its error: 1 if
 * there was one, else 0. Closing the vCPU drops it. */
void lv_kvm_vcpu_hold(struct lv_kvm_vcpu *c, const struct lv_kvm_exit *x, int err);
int lv_kvm_vcpu_take_held(struct lv_kvm_vcpu *c, struct lv_kvm_exit *out, int *err);

#endif
