/* A run's wake fds (wake.c): a thread polls a few fds while the vCPUs run and, the first
 * time one of them is readable (or hung up), calls `notify` once and leaves. A run that
 * has wake fds ends with a KVM_VMM_EXIT_WAKE exit then, so a caller (the VMM's control
 * socket) is heard while the guest runs even when the guest makes no exit that reaches
 * the caller: Linux idles in HLT, which the in-kernel LAPIC keeps inside KVM.
 *
 *   kvm_wake_start(w, fds, n, notify, arg)   the thread started (0 or -errno)
 *   kvm_wake_cancel(w)                       ask it to leave (never blocks)
 *   kvm_wake_join(w)                         wait until it has left
 * notify runs in the wake thread; kvm_wake_join after kvm_wake_cancel returns once it
 * has returned. Level-triggered: an fd readable when the run starts wakes it at once. */
#ifndef LUAVFIO_KVM_WAKE_H
#define LUAVFIO_KVM_WAKE_H

#include <pthread.h>
#include <stdatomic.h>

#define KVM_WAKE_MAX 64

struct kvm_wake {
    int fds[KVM_WAKE_MAX];
    unsigned n;
    int cancel_fd;                 /* an eventfd: readable once cancelled */
    pthread_t thread;
    int started;
    atomic_int fired;              /* notify was called */
    void (*notify)(struct kvm_wake *w);
    void *arg;                     /* the notify's */
};

/* n <= KVM_WAKE_MAX fds (-EINVAL beyond); the fds must stay open until kvm_wake_join. */
int kvm_wake_start(struct kvm_wake *w, const int *fds, unsigned n,
                   void (*notify)(struct kvm_wake *w), void *arg);
void kvm_wake_cancel(struct kvm_wake *w);
void kvm_wake_join(struct kvm_wake *w);

#endif
