/* Several vCPUs, one thread each. Every vCPU thread runs kvm_vcpu_run, so the exits
 * C handles (device models, the host bridge, traps) are answered in that thread, one at a
 * time under the VM's io_lock. An exit C does not handle is posted to the caller's thread
 * (the one Lua state), which holds io_lock while it looks at it: Lua therefore sees one
 * exit at a time and no C access runs meanwhile, while vCPUs that need nothing keep
 * running guest code. The posting vCPU waits until its exit is answered.
 *
 * No exit is lost when a run ends (its timeout, a halt, a stop, a handler returning
 * false): an exit a thread took from KVM_RUN that the caller has not taken (posted, or
 * still in the thread's hands when the stop came) is held on its vCPU
 * (kvm_vcpu_hold), and the vCPU's next run, threaded or not, delivers it first. An
 * exit the caller took is the caller's: it was handed to Lua or returned.
 *
 * Wakes: with wake fds (the VMM's control socket) a wake thread (wake.c) polls them; the
 * first time one is readable it takes the lock, marks the run woken and wakes the caller,
 * whose wait returns -EINTR before any posted exit (a busy guest cannot starve it); the
 * caller then ends the run as for any other reason, so posted exits are held as above.
 * The stop cancels the wake thread and joins it after it lets the lock go (the thread may
 * be waiting for the lock), before the lock is destroyed.
 *
 * Kicks: the stop kicks every thread out of KVM_RUN with kvm_kick's signal. Threads
 * start with it blocked and unblock it only after kvm_kick_prepare, so its handler
 * never makes a thread's first TLS access; kvm_smp_start refuses (-EBUSY) when
 * another handler owns the signal, since its threads could not be stopped. */
#include "smp.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { RUNNING, POSTED, TAKEN, ANSWERED };

/* Whether an exit that no caller took is worth holding: everything but the kick's
 * timeout and a stray signal's interruption, which carry nothing of the guest. */
static int worth_holding(const struct kvm_exit *x, int e)
{
    return e < 0 || (x->kind != KVM_VMM_EXIT_TIMEOUT && x->kind != KVM_VMM_EXIT_INTR);
}

static void *vcpu_thread(void *arg)
{
    struct kvm_smp_cpu *p = arg;
    struct kvm_smp *s = p->smp;
    /* Ctrl-C and friends go to the caller's thread, whose handlers know what to do; the
     * kick signal (blocked by the creator) is let in once its TLS is touched */
    kvm_kick_prepare();
    sigset_t block, kick;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    sigemptyset(&kick);
    sigaddset(&kick, kvm_kick_signal());
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        int stop = s->stop;
        pthread_mutex_unlock(&s->lock);
        if (stop)
            break;
        int e;
        /* an exit held from the last run first (kvm_vcpu_run would give it too; a
         * stand-in for it need not know) */
        if (!kvm_vcpu_take_held(p->cpu, &p->exit, &e))
            e = s->run(p->cpu, 0, &p->exit);
        pthread_mutex_lock(&s->lock);
        if (e < 0 || p->exit.kind != KVM_VMM_EXIT_TIMEOUT) {
            /* a kick without stop is only a timeout: run on; anything else is posted */
            if (!s->stop) {
                p->err = e;
                p->state = POSTED;
                pthread_cond_broadcast(&s->to_caller);
                while (p->state != ANSWERED && !s->stop)
                    pthread_cond_wait(&p->answered, &s->lock);
            }
            int taken = p->state == TAKEN || p->state == ANSWERED;
            p->state = RUNNING;
            if (!taken) {
                /* the run ended before the caller took it: the next run's */
                if (worth_holding(&p->exit, e))
                    kvm_vcpu_hold(p->cpu, &p->exit, e);
                pthread_mutex_unlock(&s->lock);
                break;
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_lock(&s->lock);
    p->done = 1;
    pthread_cond_broadcast(&s->to_caller);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void smp_woken(struct kvm_wake *w)
{
    struct kvm_smp *s = w->arg;
    pthread_mutex_lock(&s->lock);
    s->woken = 1;
    pthread_cond_broadcast(&s->to_caller);
    pthread_mutex_unlock(&s->lock);
}

int kvm_smp_start(struct kvm_smp *s, struct kvm_vcpu **cpus, unsigned n)
{
    if (n == 0 || n > KVM_SMP_MAX || s->n_wake > KVM_WAKE_MAX)
        return -EINVAL;
    int (*run)(struct kvm_vcpu *, int64_t, struct kvm_exit *) = s->run;
    int (*kick)(pthread_t) = s->kick;
    int wake_fds[KVM_WAKE_MAX];
    unsigned n_wake = s->n_wake;
    memcpy(wake_fds, s->wake_fds, n_wake * sizeof *wake_fds);
    memset(s, 0, sizeof *s);
    s->run = run ? run : kvm_vcpu_run;
    s->kick = kick ? kick : kvm_kick;
    memcpy(s->wake_fds, wake_fds, n_wake * sizeof *wake_fds);
    s->n_wake = n_wake;
    s->wake.cancel_fd = -1;   /* no wake thread yet (kvm_wake_join does nothing) */
    struct kvm_vm *vm = cpus[0]->vm;
    for (unsigned i = 0; i < n; i++)
        if (cpus[i]->vm != vm || cpus[i]->fd < 0)
            return -EINVAL;
    int e = kvm_kick_prepare();   /* threads that cannot be kicked cannot be stopped */
    if (e < 0)
        return e;
    pthread_mutex_init(&s->lock, NULL);
    /* the caller's waits (its deadline, the stop's short wait) are on CLOCK_MONOTONIC:
     * a change of the wall clock neither ends a run early nor stretches it */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->to_caller, &ca);
    pthread_condattr_destroy(&ca);
    s->vm = vm;
    s->n = n;
    /* the threads start with the kick signal blocked (they unblock it when ready) */
    sigset_t ksig, old;
    sigemptyset(&ksig);
    sigaddset(&ksig, kvm_kick_signal());
    pthread_sigmask(SIG_BLOCK, &ksig, &old);
    pthread_mutex_lock(&s->lock);   /* the caller holds it except while it waits */
    vm->io_lock = &s->lock;
    for (unsigned i = 0; i < n; i++) {
        struct kvm_smp_cpu *p = &s->cpu[i];
        p->smp = s;
        p->cpu = cpus[i];
        pthread_cond_init(&p->answered, NULL);
        e = pthread_create(&p->thread, NULL, vcpu_thread, p);
        if (e) {
            s->n = i + 1;   /* this one's cond is made; its thread is not (started 0) */
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            kvm_smp_stop(s);   /* takes the lock as held, like after a wait */
            return -e;
        }
        p->started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (s->n_wake) {
        e = kvm_wake_start(&s->wake, s->wake_fds, s->n_wake, smp_woken, s);
        if (e < 0) {
            kvm_smp_stop(s);
            return e;
        }
    }
    return 0;
}

static void deadline_ts(int64_t deadline_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ns / 1000000000);
    ts->tv_nsec = (long)(deadline_ns % 1000000000);
}

int64_t kvm_smp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t kvm_smp_deadline(double seconds)
{
    if (!(seconds > 0))
        return 0;
    int64_t now = kvm_smp_now();
    /* saturate: a huge timeout is a far deadline, never an overflow (nor at once) */
    if (seconds >= (double)(INT64_MAX - now) / 1e9)
        return INT64_MAX;
    int64_t ns = (int64_t)(seconds * 1e9);
    return now + (ns > 0 ? ns : 1);
}

int kvm_smp_wait(struct kvm_smp *s, int64_t deadline_ns)
{
    struct timespec ts;
    deadline_ts(deadline_ns, &ts);
    for (;;) {
        if (s->woken)
            return -EINTR;   /* before any exit: the run ends, posted exits are held */
        for (unsigned k = 0; k < s->n; k++) {
            /* round robin, so one busy vCPU cannot starve the others' exits */
            unsigned i = (s->next + k) % s->n;
            if (s->cpu[i].state == POSTED) {
                s->next = i + 1;
                s->cpu[i].state = TAKEN;   /* the caller's now: never held */
                return (int)i;
            }
        }
        if (deadline_ns <= 0) {
            pthread_cond_wait(&s->to_caller, &s->lock);
        } else if (pthread_cond_timedwait(&s->to_caller, &s->lock, &ts) == ETIMEDOUT) {
            return -ETIMEDOUT;
        }
    }
}

void kvm_smp_answer(struct kvm_smp *s, unsigned i)
{
    struct kvm_smp_cpu *p = &s->cpu[i];
    p->state = ANSWERED;
    pthread_cond_signal(&p->answered);
}

int kvm_smp_stop(struct kvm_smp *s)
{
    /* the caller holds the lock (as after start or wait) */
    int err = 0;
    s->stop = 1;
    kvm_wake_cancel(&s->wake);   /* never blocks; joined below, once the lock is free */
    for (unsigned i = 0; i < s->n; i++)
        pthread_cond_signal(&s->cpu[i].answered);
    /* kick until every thread has left: a kick landing just before KVM_RUN is lost */
    for (;;) {
        unsigned left = 0;
        for (unsigned i = 0; i < s->n; i++)
            if (s->cpu[i].started && !s->cpu[i].done)
                left++;
        if (!left)
            break;
        if (!err) {
            for (unsigned i = 0; i < s->n; i++)
                if (s->cpu[i].started && !s->cpu[i].done) {
                    int e = s->kick(s->cpu[i].thread);
                    if (e < 0 && !err)
                        err = e;
                }
        }
        if (err) {
            /* the signal was taken from us during the run (start checked it): no kick
             * works any more, so each thread leaves at its vCPU's next exit, which
             * immediate_exit makes the next entry's; wait for that without spinning */
            for (unsigned i = 0; i < s->n; i++)
                if (s->cpu[i].started && !s->cpu[i].done && s->cpu[i].cpu->run)
                    s->cpu[i].cpu->run->immediate_exit = 1;
            pthread_cond_wait(&s->to_caller, &s->lock);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);   /* to_caller's clock */
        until.tv_nsec += 2000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->to_caller, &s->lock, &until);
    }
    pthread_mutex_unlock(&s->lock);
    kvm_wake_join(&s->wake);   /* it may have waited for the lock to say it woke */
    for (unsigned i = 0; i < s->n; i++) {
        if (s->cpu[i].started)
            pthread_join(s->cpu[i].thread, NULL);
        pthread_cond_destroy(&s->cpu[i].answered);
    }
    s->vm->io_lock = NULL;
    pthread_cond_destroy(&s->to_caller);
    pthread_mutex_destroy(&s->lock);
    return err;
}
