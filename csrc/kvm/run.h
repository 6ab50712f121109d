/* The run loop (run.c): KVM_RUN until an exit C does not handle, the decode of one exit
 * with the dispatch to the handled ranges (iobus.h), and the kick and timeout signal.
 * Functions return 0 or -errno. */
#ifndef LUAVFIO_KVM_RUN_H
#define LUAVFIO_KVM_RUN_H

#include "vcpu.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>

/* Run until an exit the C side does not handle. timeout_ns <= 0: no timeout. An exit
 * held by kvm_vcpu_hold comes first, without entering KVM_RUN; then a pending wake
 * (kvm_vcpu_wake) as a KVM_VMM_EXIT_WAKE exit, which takes it. */
int kvm_vcpu_run(struct kvm_vcpu *c, int64_t timeout_ns, struct kvm_exit *out);
/* One exit as KVM_RUN left it in `run`, decoded the way the run loop does: an IO or MMIO
 * exit whose address a handled range answers is dispatched to it (a read's data arriving
 * as all ones first) and KVM_VMM_DECODE_RESUME returned (the guest runs on); anything else
 * fills *out and returns KVM_VMM_DECODE_DONE: an access no range covers, or one its range
 * passed on (KVM_VMM_IO_PASS), as an IO or MMIO exit (a read answered all ones with
 * pending_read set); a range asking to stop as KVM_VMM_EXIT_STOP with the range's stop
 * reason in out->stop. IO data outside
 * c->run_size bytes, or an MMIO length past mmio.data, sets *err to -EPROTO (DONE).
 * The run loop's body, callable without KVM (fuzz/exit_fuzz.c drives it). */
enum { KVM_VMM_DECODE_DONE = 0, KVM_VMM_DECODE_RESUME = 1 };
int kvm_exit_decode(struct kvm_vcpu *c, struct kvm_run *run, struct kvm_exit *out,
                    int *err);
/* Ask the vCPU's kvm_vcpu_run, from another thread (a wake thread, wake.h), to end with
 * a KVM_VMM_EXIT_WAKE exit: at once if it is in its loop (its thread kicked out of
 * KVM_RUN), else at its next call. Race-free without a lock: the flag is set before the
 * loop is looked at, and the loop looks at the flag after it says it is in (both seq_cst),
 * so either the loop sees the flag or this sees the loop and kicks it. */
void kvm_vcpu_wake(struct kvm_vcpu *c);
/* Make the thread `t`, inside kvm_vcpu_run, leave it with a timeout exit soon (the
 * run loop's timer signal; a kick that lands outside KVM_RUN may be lost: repeat it).
 * -EBUSY when another handler owns the signal (kvm_kick_signal()). */
int kvm_kick(pthread_t t);
/* The kick and timeout signal, and its preparation in the calling process and thread:
 * the handler installed (-EBUSY if another one owns the signal) and the thread-local
 * state the handler touches allocated, so the handler never allocates (in a dlopen'ed
 * module the first access to a TLS variable may). A thread that can be kicked calls it
 * before it unblocks the signal. */
int kvm_kick_signal(void);
int kvm_kick_prepare(void);

#endif
