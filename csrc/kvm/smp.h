/* Several vCPUs, a thread each (smp.c): the caller's thread sees the exits C does not
 * handle, one at a time, while it holds the VM's io_lock.
 *
 *   kvm_smp_start(s, cpus, n)         threads started; the caller now holds the lock
 *                                     (-EBUSY: another handler owns the kick signal)
 *   i = kvm_smp_wait(s, deadline)     vCPU i posted an exit (s->cpu[i].exit, .err),
 *                                     -ETIMEDOUT, or -EINTR: a wake fd is readable (the
 *                                     caller ends the run); the lock is released while
 *                                     waiting
 *   kvm_smp_answer(s, i)              vCPU i runs on (a read's data filled in first)
 *   kvm_smp_stop(s)                   every thread kicked out of KVM_RUN and joined
 * An exit the caller got from wait is the caller's; any other exit a thread took from
 * KVM_RUN before the stop is held on its vCPU for the next run (kvm_vcpu_hold).
 * The vCPUs and their VM must stay open until kvm_smp_stop returns. */
#ifndef LUAVFIO_KVM_SMP_H
#define LUAVFIO_KVM_SMP_H

#include "run.h"
#include "vcpu.h"
#include "wake.h"

#include <pthread.h>

#define KVM_SMP_MAX 64

struct kvm_smp;

struct kvm_smp_cpu {
    struct kvm_smp *smp;
    struct kvm_vcpu *cpu;
    pthread_t thread;
    pthread_cond_t answered;
    int started, done, state, err;
    struct kvm_exit exit;
};

struct kvm_smp {
    pthread_mutex_t lock;         /* the VM's io_lock while running */
    pthread_cond_t to_caller;
    struct kvm_vm *vm;
    unsigned n, next;
    int stop;
    struct kvm_smp_cpu cpu[KVM_SMP_MAX];
    /* Stand-ins for kvm_vcpu_run and kvm_kick, so the hand-off can be driven
     * without KVM (tests/smp_harness.c); NULL: the real ones. Set before
     * kvm_smp_start, which keeps them. */
    int (*run)(struct kvm_vcpu *c, int64_t timeout_ns, struct kvm_exit *out);
    int (*kick)(pthread_t t);
    /* The run's wake fds (wake.h), set before kvm_smp_start, which keeps them: the
     * caller's wait returns -EINTR once one is readable. n_wake 0: none. */
    int wake_fds[KVM_WAKE_MAX];
    unsigned n_wake;
    struct kvm_wake wake;
    int woken;                    /* under lock: a wake fd fired */
};

int kvm_smp_start(struct kvm_smp *s, struct kvm_vcpu **cpus, unsigned n);
/* deadline on CLOCK_MONOTONIC in ns (kvm_smp_now), <= 0: none */
int kvm_smp_wait(struct kvm_smp *s, int64_t deadline_ns);
void kvm_smp_answer(struct kvm_smp *s, unsigned i);
/* 0, or the kick's error when the signal was taken over during the run (the threads
 * are still joined: each leaves at its vCPU's next exit) */
int kvm_smp_stop(struct kvm_smp *s);
/* now on CLOCK_MONOTONIC, in ns: the clock of every deadline here */
int64_t kvm_smp_now(void);
/* The deadline `seconds` from now for kvm_smp_wait: 0 (none) for 0, a negative or a
 * NaN; saturated, never overflowing, for a huge one. */
int64_t kvm_smp_deadline(double seconds);

#endif
