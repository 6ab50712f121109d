/* vCPUs (vcpu.c): create and close, CPUID, LAPIC, MSRs, registers, and the exit a vCPU
 * holds for its next run. The run loop is run.h, the boot register presets boot.h.
 * Functions return 0 or -errno. */
#ifndef LUAVFIO_KVM_VCPU_H
#define LUAVFIO_KVM_VCPU_H

#include "vm.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* What the run loop reports for an exit it did not handle. */
enum kvm_exit_kind {
    KVM_VMM_EXIT_IO, KVM_VMM_EXIT_MMIO, KVM_VMM_EXIT_HLT, KVM_VMM_EXIT_SHUTDOWN,
    KVM_VMM_EXIT_STOP, KVM_VMM_EXIT_INTR, KVM_VMM_EXIT_TIMEOUT, KVM_VMM_EXIT_FAIL_ENTRY,
    KVM_VMM_EXIT_INTERNAL_ERROR, KVM_VMM_EXIT_SYSTEM_EVENT, KVM_VMM_EXIT_OTHER,
    KVM_VMM_EXIT_WAKE   /* one of the run's wake fds is readable (wake.h); nothing of the guest */
};

/* Why a handled range ended the run loop (a STOP exit's stop; iobus.h's access answers). */
enum kvm_stop {
    KVM_VMM_STOP_NONE,       /* not a STOP exit */
    KVM_VMM_STOP_EXIT_PORT,  /* the guest wrote the exit port: it is done */
    KVM_VMM_STOP_RESET,      /* the guest pulsed the CPU reset line (the i8042's) */
    KVM_VMM_STOP_CONFIG,     /* a config write asked for the VM layer's attention */
    KVM_VMM_STOP_BAR,        /* a BAR access queued events the VM layer must act on */
    KVM_VMM_STOP_KINDS
};

struct kvm_exit {
    enum kvm_exit_kind kind;
    uint32_t reason;             /* raw KVM_EXIT_* */
    int space;                   /* IO, MMIO, STOP: KVM_VMM_PIO or KVM_VMM_MMIO */
    uint64_t addr;
    unsigned size, count;        /* count > 1 only for string PIO */
    int is_write;
    uint8_t *data;               /* inside kvm_run; valid until the next run */
    uint64_t code;               /* FAIL_ENTRY reason, INTERNAL_ERROR suberror, event type */
    enum kvm_stop stop;          /* STOP: why; else KVM_VMM_STOP_NONE */
};

struct kvm_vcpu {
    int fd, id;
    struct kvm_run *run;
    size_t run_size;
    struct kvm_vm *vm;
    int pending_read;            /* an IO/MMIO read was returned to the caller */
    /* An exit taken from KVM_RUN that no caller has seen (kvm_vcpu_hold): the next
     * kvm_vcpu_run returns it before the vCPU enters KVM_RUN again, since that entry
     * would complete it unseen (a write lost, a read answered with all ones). */
    int held, held_err, held_pending_read;
    struct kvm_exit held_exit;
    /* A wake asked for by another thread (kvm_vcpu_wake): kvm_vcpu_run ends with a
     * KVM_VMM_EXIT_WAKE exit at its next look, before or instead of entering KVM_RUN.
     * in_run says the run loop is between its look and its return (runner: its thread),
     * so a wake kicks only a thread that is in the loop, never a caller's Lua code. */
    atomic_int wake, in_run;
    pthread_t runner;
};

int kvm_vcpu_create(struct kvm_vcpu *c, struct kvm_vm *vm, int id);
void kvm_vcpu_close(struct kvm_vcpu *c);
/* CPUID of the vCPU (KVM_SET_CPUID2), from the VM's supported list: the vCPU's APIC ID
 * (leaf 1 EBX[31:24], leaves 0xb/0x1f EDX), the hypervisor bit (leaf 1 ECX[31]), KVM's
 * signature leaf 0x40000000 and features 0x40000001, then `over` replacing or adding
 * leaves by function and index. Done at creation with no overrides; again only before the
 * first run (KVM refuses a changed table after it). */
int kvm_vcpu_set_cpuid(struct kvm_vcpu *c, const struct kvm_cpuid_entry2 *over,
                       unsigned nover);
/* The table set (KVM_GET_CPUID2), malloc'd for the caller to free. */
int kvm_vcpu_get_cpuid(struct kvm_vcpu *c, struct kvm_cpuid2 **out);
/* LAPIC LINT0 as ExtINT and LINT1 as NMI (KVM_GET_LAPIC/KVM_SET_LAPIC); needs the
 * irqchip. get_lapic_reg reads one register of the saved state (offset 0x350...). */
int kvm_vcpu_set_lapic_lint(struct kvm_vcpu *c);
int kvm_vcpu_get_lapic_reg(struct kvm_vcpu *c, unsigned off, uint32_t *val);
/* One MSR (KVM_SET_MSRS/KVM_GET_MSRS); -EINVAL when KVM refuses the index or value. */
int kvm_vcpu_set_msr(struct kvm_vcpu *c, uint32_t index, uint64_t value);
int kvm_vcpu_get_msr(struct kvm_vcpu *c, uint32_t index, uint64_t *value);
/* Register access (KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS): 0 or -errno. */
int kvm_vcpu_get_regs(struct kvm_vcpu *c, struct kvm_regs *r);
int kvm_vcpu_set_regs(struct kvm_vcpu *c, const struct kvm_regs *r);
int kvm_vcpu_get_sregs(struct kvm_vcpu *c, struct kvm_sregs *s);
/* Rule: an exit kvm_vcpu_run returned (or its error) that no caller has seen must not
 * be dropped: whoever ends a run with one in hand holds it here (its data stays in
 * kvm_run, which only the next KVM_RUN changes), and the next run of the vCPU, by any
 * entry point, delivers it first. take_held copies it back to out with its error: 1 if
 * there was one, else 0. Closing the vCPU drops it. */
void kvm_vcpu_hold(struct kvm_vcpu *c, const struct kvm_exit *x, int err);
int kvm_vcpu_take_held(struct kvm_vcpu *c, struct kvm_exit *out, int *err);

#endif
