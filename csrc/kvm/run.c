/* The run loop: the kick and timeout signal, the decode of one exit and the loop around
 * KVM_RUN (see run.h). */
#include "run.h"
#include "internal.h"
#include "iobus.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Timeouts: a per-thread timer signal whose handler sets immediate_exit on the kvm_run
 * being executed, so a signal landing between two KVM_RUN calls is not lost. */
static __thread struct kvm_run *volatile tl_run;
static __thread volatile sig_atomic_t tl_fired;

static void timer_handler(int sig)
{
    (void)sig;
    tl_fired = 1;
    if (tl_run)
        tl_run->immediate_exit = 1;
}

static int timer_signal(void)
{
    return SIGRTMAX - 3;
}

int kvm_kick_signal(void)
{
    return timer_signal();
}

static int install_timer_handler(void);

static int arm_timer(timer_t *t, int64_t ns)
{
    int sig = timer_signal(), e = install_timer_handler();
    if (e < 0)
        return e;
    struct sigevent ev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = sig};
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &ev, t) < 0)
        return neg_errno();
    struct itimerspec its = {.it_value = {.tv_sec = ns / 1000000000,
                                          .tv_nsec = ns % 1000000000}};
    if (timer_settime(*t, 0, &its, NULL) < 0) {
        e = neg_errno();
        timer_delete(*t);
        return e;
    }
    return 0;
}

static int install_timer_handler(void)
{
    struct sigaction cur;
    int sig = timer_signal();
    if (sigaction(sig, NULL, &cur) < 0)
        return neg_errno();
    if (cur.sa_handler == timer_handler)
        return 0;
    if (cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN)
        return -EBUSY; /* someone else owns the signal */
    /* SA_RESTART: a kick that lands just after a run returned (a wake racing the run's
     * end) restarts the caller's interrupted read or write instead of failing it with
     * EINTR; KVM_RUN itself still ends on the signal (KVM answers -EINTR, which is never
     * restarted) */
    struct sigaction sa = {.sa_handler = timer_handler, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL) < 0 ? neg_errno() : 0;
}

int kvm_kick_prepare(void)
{
    tl_fired = 0;   /* the first access: TLS allocated here, not in the handler */
    tl_run = NULL;
    return install_timer_handler();
}

int kvm_kick(pthread_t t)
{
    int e = install_timer_handler();
    if (e < 0)
        return e;
    return -pthread_kill(t, timer_signal());
}

int kvm_exit_decode(struct kvm_vcpu *c, struct kvm_run *run, struct kvm_exit *out,
                    int *err)
{
    out->reason = run->exit_reason;
    out->stop = KVM_VMM_STOP_NONE;
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        unsigned size = run->io.size, count = run->io.count;
        uint64_t off = run->io.data_offset;
        /* Never trust offsets to stay inside the shared page. */
        if (size == 0 || size > 4 || count == 0 || off >= c->run_size ||
            (uint64_t)size * count > c->run_size - off) {
            *err = -EPROTO;
            return KVM_VMM_DECODE_DONE;
        }
        uint8_t *data = (uint8_t *)run + off;
        int is_write = run->io.direction == KVM_EXIT_IO_OUT, handled = 1;
        enum kvm_stop stop = KVM_VMM_STOP_NONE;
        unsigned made = 0;
        for (; made < count; made++) {
            int rc = kvm_dispatch(c->vm, KVM_VMM_PIO, run->io.port, data + made * size, size,
                                  is_write);
            if (rc < 0 || rc == KVM_VMM_IO_PASS) {
                handled = 0;   /* no range, or passed on: the caller's */
                break;
            }
            if (stop == KVM_VMM_STOP_NONE)
                stop = kvm_io_stop_reason(rc);
        }
        if (handled && stop == KVM_VMM_STOP_NONE)
            return KVM_VMM_DECODE_RESUME;
        if (!handled) {
            /* a string access whose first elements were answered here (one of them moved
             * what the port decodes to): the caller gets the rest, never those again */
            data += made * size;
            count -= made;
        }
        *out = (struct kvm_exit){
            .kind = handled ? KVM_VMM_EXIT_STOP : KVM_VMM_EXIT_IO, .reason = run->exit_reason,
            .space = KVM_VMM_PIO, .addr = run->io.port, .size = size, .count = count,
            .is_write = is_write, .data = data, .stop = handled ? stop : KVM_VMM_STOP_NONE};
        if (!handled && !is_write) {
            memset(data, 0xff, (size_t)size * count); /* nothing there: all ones */
            c->pending_read = 1;
        }
        return KVM_VMM_DECODE_DONE;
    }
    case KVM_EXIT_MMIO: {
        unsigned len = run->mmio.len;
        if (len == 0 || len > sizeof run->mmio.data) {
            *err = -EPROTO;
            return KVM_VMM_DECODE_DONE;
        }
        int is_write = run->mmio.is_write != 0;
        int rc = kvm_dispatch(c->vm, KVM_VMM_MMIO, run->mmio.phys_addr, run->mmio.data, len,
                              is_write);
        int pass = rc < 0 || rc == KVM_VMM_IO_PASS;   /* no range, or passed on */
        enum kvm_stop stop = pass ? KVM_VMM_STOP_NONE : kvm_io_stop_reason(rc);
        if (!pass && stop == KVM_VMM_STOP_NONE)
            return KVM_VMM_DECODE_RESUME;
        *out = (struct kvm_exit){
            .kind = pass ? KVM_VMM_EXIT_MMIO : KVM_VMM_EXIT_STOP, .reason = run->exit_reason,
            .space = KVM_VMM_MMIO, .addr = run->mmio.phys_addr, .size = len, .count = 1,
            .is_write = is_write, .data = run->mmio.data, .stop = stop};
        if (pass && !is_write) {
            memset(run->mmio.data, 0xff, len);
            c->pending_read = 1;
        }
        return KVM_VMM_DECODE_DONE;
    }
    case KVM_EXIT_HLT:
        out->kind = KVM_VMM_EXIT_HLT;
        return KVM_VMM_DECODE_DONE;
    case KVM_EXIT_SHUTDOWN:
        out->kind = KVM_VMM_EXIT_SHUTDOWN;
        return KVM_VMM_DECODE_DONE;
    case KVM_EXIT_FAIL_ENTRY:
        out->kind = KVM_VMM_EXIT_FAIL_ENTRY;
        out->code = run->fail_entry.hardware_entry_failure_reason;
        return KVM_VMM_DECODE_DONE;
    case KVM_EXIT_INTERNAL_ERROR:
        out->kind = KVM_VMM_EXIT_INTERNAL_ERROR;
        out->code = run->internal.suberror;
        return KVM_VMM_DECODE_DONE;
    case KVM_EXIT_SYSTEM_EVENT:
        out->kind = KVM_VMM_EXIT_SYSTEM_EVENT;
        out->code = run->system_event.type;
        return KVM_VMM_DECODE_DONE;
    case KVM_EXIT_INTR:
        out->kind = KVM_VMM_EXIT_INTR;
        return KVM_VMM_DECODE_DONE;
    default:
        out->kind = KVM_VMM_EXIT_OTHER;
        return KVM_VMM_DECODE_DONE;
    }
}

int kvm_vcpu_run(struct kvm_vcpu *c, int64_t timeout_ns, struct kvm_exit *out)
{
    struct kvm_run *run = c->run;
    timer_t timer;
    int timed = timeout_ns > 0, e = 0;
    if (kvm_vcpu_take_held(c, out, &e))
        return e;
    memset(out, 0, sizeof *out);
    c->pending_read = 0;
    tl_fired = 0;
    tl_run = run;
    c->runner = pthread_self();
    atomic_store(&c->in_run, 1);   /* before the first look at c->wake (kvm_vcpu_wake) */
    if (timed && (e = arm_timer(&timer, timeout_ns))) {
        atomic_store(&c->in_run, 0);
        tl_run = NULL;
        return e;
    }
    for (;;) {
        /* a wake first: its kick also looks like a timeout (tl_fired) */
        if (atomic_exchange(&c->wake, 0)) {
            out->kind = KVM_VMM_EXIT_WAKE;
            break;
        }
        if (tl_fired) {
            run->immediate_exit = 0;
            out->kind = KVM_VMM_EXIT_TIMEOUT;
            break;
        }
        if (ioctl(c->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                run->immediate_exit = 0;
                if (tl_fired)
                    continue; /* reported at the top of the loop */
                /* EAGAIN: an AP that was waiting for INIT/SIPI got them; KVM wants the
                 * call again to run it */
                if (errno == EAGAIN)
                    continue;
                out->kind = KVM_VMM_EXIT_INTR;
                break;
            }
            e = neg_errno();
            break;
        }
        if (kvm_exit_decode(c, run, out, &e) == KVM_VMM_DECODE_RESUME)
            continue;
        break;
    }
    if (timed)
        timer_delete(timer);
    atomic_store(&c->in_run, 0);
    tl_run = NULL;
    run->immediate_exit = 0;
    return e;
}

void kvm_vcpu_wake(struct kvm_vcpu *c)
{
    atomic_store(&c->wake, 1);
    /* A kick that lands after the loop's last look at the flag (it is returning) is a
     * stray timer signal: its handler only sets flags the next run resets. */
    if (atomic_load(&c->in_run))
        kvm_kick(c->runner);
}
