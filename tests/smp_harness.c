/* smp_harness [SLICES] [SEED]: smp.c's hand-off driven without KVM (no Lua either).
 *
 * Fake vCPUs stand in for KVM_RUN (struct kvm_smp's run and kick): each "runs" for a
 * random while and leaves with a numbered exit (a PIO or MMIO write or read, now and then
 * a halt or a C stop), or with a timeout when kicked. The main thread plays vm:run_vcpus
 * (csrc/lua/l_vcpu.c) over many run slices, ending each the ways a run ends: its
 * timeout, a halt or stop exit, a handler returning false; between slices it sometimes
 * plays vcpu:run on one vCPU. It answers every read with data of its own.
 *
 * Checked, as KVM would see it: a vCPU is never run again while its last exit has not
 * reached the caller (KVM_RUN would complete it unseen: a write lost, a read of all
 * ones); the caller gets each vCPU's exits once each and in order; a read is completed
 * with the caller's data; every thread is joined when kvm_smp_stop returns; a run's
 * deadline (kvm_smp_deadline) saturates for a huge timeout instead of overflowing.
 * The lock smp.c hands around is checked too: never unlocked by a thread that does not
 * hold it (pthread_mutex_unlock and the cond waits are wrapped), also when a thread
 * cannot be created (pthread_create is wrapped to fail now and then).
 * Some slices have a wake fd (a pipe; struct kvm_smp's wake_fds): a byte is written
 * before the slice or by another thread during it, and the caller's wait must then
 * return -EINTR (never without a byte), with the vCPUs' exits held as for any other end.
 * Prints "ok: ..." and exits 0, or the first violation and exits 1.
 *
 * smp_harness signal: another handler owns the kick signal: kvm_smp_start must refuse
 * (-EBUSY) rather than start threads its stop could never kick (SIGALRM after 5 s). */
#include "kvm/smp.h"
#include "kvm/wake.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NCPU 4

struct fake {
    /* the fake vCPU's own thread (or the main thread between slices) */
    uint64_t produced;      /* number of the last exit it left with */
    int outstanding;        /* that exit is not completed yet (no run since) */
    int is_read;
    uint8_t data[8];        /* its kvm_run data area */
    unsigned seed;
    /* set by the caller's side */
    _Atomic uint64_t delivered; /* number of the last exit the caller got */
    atomic_int kicked;
};

static struct fake fakes[NCPU];
static struct kvm_smp smp;
static struct kvm_vm vm;
static struct kvm_vcpu cpus[NCPU];
static atomic_int failed;
static uint64_t n_exits, n_held_first, n_kicks;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    if (atomic_exchange(&failed, 1))
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

/* ---- the lock's owner, through wrappers of the pthread calls smp.c makes ---- */

static _Atomic(pthread_t) lock_owner;
static atomic_int fail_creates;   /* pthread_create fails while > 0 */
static uint64_t n_create_failures;

static int owns(pthread_mutex_t *m)
{
    return m != &smp.lock || pthread_equal(atomic_load(&lock_owner), pthread_self());
}

int pthread_mutex_lock(pthread_mutex_t *m)
{
    static int (*real)(pthread_mutex_t *);
    if (!real)
        real = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
    int e = real(m);
    if (!e && m == &smp.lock)
        atomic_store(&lock_owner, pthread_self());
    return e;
}

int pthread_mutex_unlock(pthread_mutex_t *m)
{
    static int (*real)(pthread_mutex_t *);
    if (!real)
        real = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_unlock");
    if (!owns(m))
        fail("smp.c unlocks its lock from a thread that does not hold it (twice?)");
    if (m == &smp.lock)
        atomic_store(&lock_owner, (pthread_t)0);
    return real(m);
}

int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    static int (*real)(pthread_cond_t *, pthread_mutex_t *);
    if (!real)
        real = (int (*)(pthread_cond_t *, pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_cond_wait");
    if (!owns(m))
        fail("smp.c waits on its lock without holding it");
    if (m == &smp.lock)
        atomic_store(&lock_owner, (pthread_t)0);
    int e = real(c, m);
    if (m == &smp.lock)
        atomic_store(&lock_owner, pthread_self());
    return e;
}

int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t)
{
    static int (*real)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
    if (!real)
        real = (int (*)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *))
            dlsym(RTLD_NEXT, "pthread_cond_timedwait");
    if (!owns(m))
        fail("smp.c waits on its lock without holding it");
    if (m == &smp.lock)
        atomic_store(&lock_owner, (pthread_t)0);
    int e = real(c, m, t);
    if (m == &smp.lock)
        atomic_store(&lock_owner, pthread_self());
    return e;
}

int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    if (!real)
        real = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))
            dlsym(RTLD_NEXT, "pthread_create");
    if (atomic_load(&fail_creates) > 0 && atomic_fetch_sub(&fail_creates, 1) == 1) {
        n_create_failures++;
        return EAGAIN;
    }
    return real(t, a, fn, arg);
}

static void answer_bytes(uint64_t seq, uint8_t *out)
{
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(seq * 7 + (uint64_t)i);
}

/* KVM_RUN's stand-in */
static int fake_run(struct kvm_vcpu *c, int64_t timeout_ns, struct kvm_exit *out)
{
    (void)timeout_ns;
    struct fake *f = &fakes[c->id];
    memset(out, 0, sizeof *out);
    c->pending_read = 0;
    atomic_store(&f->kicked, 0);   /* a kick outside the run is lost, as with KVM */
    if (f->outstanding) {
        /* entering KVM_RUN completes the last exit */
        uint64_t got = atomic_load(&f->delivered);
        if (got != f->produced)
            fail("vcpu %d: exit %" PRIu64 " lost: run again before it reached the caller "
                 "(caller has %" PRIu64 ")", c->id, f->produced, got);
        uint8_t want[4];
        answer_bytes(f->produced, want);
        if (f->is_read && memcmp(f->data, want, 4))
            fail("vcpu %d: read %" PRIu64 " completed with %02x%02x%02x%02x, not the "
                 "caller's data", c->id, f->produced, f->data[0], f->data[1], f->data[2],
                 f->data[3]);
        f->outstanding = 0;
    }
    for (;;) {
        if (atomic_exchange(&f->kicked, 0)) {
            out->kind = KVM_VMM_EXIT_TIMEOUT;
            return 0;
        }
        unsigned r = (unsigned)rand_r(&f->seed);
        if (r % 8 == 0) {
            f->produced++;
            f->outstanding = 1;
            unsigned k = (r >> 4) % 64;
            enum kvm_exit_kind kind = k == 0 ? KVM_VMM_EXIT_HLT :
                                         k == 1 ? KVM_VMM_EXIT_STOP :
                                         (k & 1) ? KVM_VMM_EXIT_IO : KVM_VMM_EXIT_MMIO;
            f->is_read = (kind == KVM_VMM_EXIT_IO || kind == KVM_VMM_EXIT_MMIO) && (k & 2);
            *out = (struct kvm_exit){.kind = kind, .space = kind == KVM_VMM_EXIT_MMIO,
                                     .addr = f->produced, .size = 4, .count = 1,
                                     .is_write = !f->is_read, .data = f->data};
            if (f->is_read) {
                memset(f->data, 0xff, sizeof f->data);
                c->pending_read = 1;
            }
            return 0;
        }
        if (r % 3 == 0)
            sched_yield();
    }
}

static int fake_kick(pthread_t t)
{
    n_kicks++;
    for (unsigned i = 0; i < smp.n; i++)
        if (smp.cpu[i].started && pthread_equal(smp.cpu[i].thread, t))
            atomic_store(&fakes[smp.cpu[i].cpu->id].kicked, 1);
    return 0;
}

/* The caller got exit x of vCPU id (vm:run_vcpus's handler, or the exit a run returns). */
static void deliver(int id, const struct kvm_exit *x)
{
    struct fake *f = &fakes[id];
    uint64_t want = atomic_load(&f->delivered) + 1;
    if (x->addr != want)
        fail("vcpu %d: the caller got exit %" PRIu64 ", expected %" PRIu64 " (%s)", id,
             (uint64_t)x->addr, want, x->addr < want ? "twice" : "one skipped");
    atomic_store(&f->delivered, x->addr);
    if (!x->is_write)
        answer_bytes(x->addr, x->data);   /* the handler's value, or vcpu:complete */
    n_exits++;
}

/* kvm_smp_wait's clock (kvm_smp_now's) */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The wake pipe of some slices, and the thread that writes it during one. */
static int wake_pipe[2] = {-1, -1};
static atomic_int wake_written;
static uint64_t n_wakes;

static void *wake_writer(void *arg)
{
    struct timespec ts = {0, (long)(uintptr_t)arg};
    nanosleep(&ts, NULL);
    atomic_store(&wake_written, 1);
    if (write(wake_pipe[1], "w", 1) != 1)
        fail("wake pipe write failed");
    return NULL;
}

/* One vm:run_vcpus; returns how it ended. */
static const char *slice(unsigned *seed)
{
    /* 1 to NCPU of the vCPUs, in a random order */
    struct kvm_vcpu *list[NCPU];
    for (unsigned i = 0; i < NCPU; i++)
        list[i] = &cpus[i];
    for (unsigned i = NCPU - 1; i > 0; i--) {
        unsigned j = (unsigned)rand_r(seed) % (i + 1);
        struct kvm_vcpu *t = list[i];
        list[i] = list[j], list[j] = t;
    }
    unsigned n = 1 + (unsigned)rand_r(seed) % NCPU;
    for (unsigned i = 0; i < n; i++)
        n_held_first += (uint64_t)list[i]->held;
    smp.run = fake_run;
    smp.kick = fake_kick;
    /* a wake fd in one slice of four: written now, or by a thread during the slice */
    int waking = rand_r(seed) % 4 == 0, writer = 0;
    pthread_t wt;
    smp.n_wake = waking;
    smp.wake_fds[0] = wake_pipe[0];
    atomic_store(&wake_written, 0);
    if (waking && rand_r(seed) % 2) {
        atomic_store(&wake_written, 1);
        if (write(wake_pipe[1], "w", 1) != 1)
            fail("wake pipe write failed");
    } else if (waking) {
        writer = pthread_create(&wt, NULL, wake_writer,
                                (void *)(uintptr_t)(rand_r(seed) % 1500000)) == 0;
    }
    if (n > 1 && rand_r(seed) % 32 == 0)
        atomic_store(&fail_creates, 1 + rand_r(seed) % (int)n);   /* that one fails */
    int e = kvm_smp_start(&smp, list, n);
    atomic_store(&fail_creates, 0);
    if (e == -EAGAIN) {
        if (writer)
            pthread_join(wt, NULL);
        char b[16];
        while (read(wake_pipe[0], b, sizeof b) > 0) {}
        return "create";    /* the threads made are joined; their exits held */
    }
    if (e < 0) {
        fail("kvm_smp_start: %s", strerror(-e));
        return "error";
    }
    int64_t deadline = now_ns() + 100000 + rand_r(seed) % 2000000;
    const char *how;
    for (;;) {
        int i = kvm_smp_wait(&smp, deadline);
        if (i == -ETIMEDOUT) {
            how = "timeout";
            break;
        }
        if (i == -EINTR) {
            if (!waking || !atomic_load(&wake_written))
                fail("kvm_smp_wait woke with no byte on a wake fd");
            n_wakes++;
            how = "wake";
            break;
        }
        struct kvm_smp_cpu *p = &smp.cpu[i];
        if (p->err < 0) {
            fail("vcpu %d: run error %d", p->cpu->id, p->err);
            how = "error";
            break;
        }
        deliver(p->cpu->id, &p->exit);
        if (p->exit.kind != KVM_VMM_EXIT_IO && p->exit.kind != KVM_VMM_EXIT_MMIO) {
            how = "exit";   /* hlt or stop: returned to Lua */
            break;
        }
        if (rand_r(seed) % 16 == 0) {
            how = "false";  /* the handler returned false */
            break;
        }
        p->cpu->pending_read = 0;
        kvm_smp_answer(&smp, (unsigned)i);
    }
    kvm_smp_stop(&smp);
    for (unsigned i = 0; i < n; i++)
        if (smp.cpu[i].started && !smp.cpu[i].done)
            fail("vcpu %d: its thread was not done when kvm_smp_stop returned", i);
    if (smp.wake.started || smp.wake.cancel_fd >= 0)
        fail("kvm_smp_stop left the wake thread or its eventfd behind");
    if (writer)
        pthread_join(wt, NULL);
    char b[16];
    while (read(wake_pipe[0], b, sizeof b) > 0) {}   /* the next slice starts unwoken */
    return how;
}

/* vcpu:run of one vCPU between two slices: its held exit first, else a run. */
static void single_run(unsigned *seed)
{
    struct kvm_vcpu *c = &cpus[(unsigned)rand_r(seed) % NCPU];
    struct kvm_exit x;
    int e;
    if (c->held)
        n_held_first++;
    if (!kvm_vcpu_take_held(c, &x, &e)) {
        atomic_store(&fakes[c->id].kicked, 0);
        e = fake_run(c, 0, &x);
    }
    if (e < 0)
        fail("vcpu %d: run error %d", c->id, e);
    else
        deliver(c->id, &x);
    c->pending_read = 0;
}

static void signal_owned(int sig) { (void)sig; }

/* Another handler owns the kick signal: start must refuse, and start no thread. */
static int signal_mode(void)
{
    struct sigaction sa = {.sa_handler = signal_owned};
    sigemptyset(&sa.sa_mask);
    sigaction(kvm_kick_signal(), &sa, NULL);
    alarm(5);   /* a stop that spins for ever ends here, by SIGALRM */
    struct kvm_vcpu *list[1] = {&cpus[0]};
    smp.run = fake_run;
    smp.kick = NULL;    /* the real kick */
    int e = kvm_smp_start(&smp, list, 1);
    if (e == 0) {
        kvm_smp_stop(&smp);
        fail("kvm_smp_start ran threads with another handler on the kick signal");
        return 1;
    }
    if (e != -EBUSY) {
        fail("kvm_smp_start: %s, expected EBUSY", strerror(-e));
        return 1;
    }
    printf("ok: start refused, the kick signal %d has another handler\n",
           kvm_kick_signal());
    return 0;
}

int main(int argc, char **argv)
{
    vm.fd = 100;   /* never used: the fake run never reaches KVM */
    for (int i = 0; i < NCPU; i++)
        cpus[i] = (struct kvm_vcpu){.fd = 200 + i, .id = i, .vm = &vm};
    if (argc > 1 && !strcmp(argv[1], "signal"))
        return signal_mode();
    /* deadlines: none for 0, negative or NaN; saturated, never wrapped, for huge ones */
    int64_t t0 = kvm_smp_now();
    if (kvm_smp_deadline(0) || kvm_smp_deadline(-1) || kvm_smp_deadline(0.0 / 0.0) ||
        kvm_smp_deadline(1e300) != INT64_MAX || kvm_smp_deadline(1.0 / 0.0) != INT64_MAX ||
        kvm_smp_deadline(9.3e9) != INT64_MAX || kvm_smp_deadline(1e-12) <= t0 ||
        kvm_smp_deadline(1.0) < t0 + 1000000000)
        fail("kvm_smp_deadline: a timeout of 0, -1, NaN, 1e300, inf, 9.3e9 s, 1 ps or 1 s "
             "gave a wrong deadline");
    if (pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        perror("pipe2");
        return 1;
    }
    unsigned slices = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : 2000;
    unsigned seed = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 1;
    for (int i = 0; i < NCPU; i++)
        fakes[i].seed = seed * 31 + (unsigned)i;
    unsigned ends[6] = {0}, singles = 0;
    for (unsigned k = 0; k < slices && !atomic_load(&failed); k++) {
        const char *how = slice(&seed);
        ends[how[0] == 't' ? 0 : how[0] == 'e' && how[1] == 'x' ? 1 : how[0] == 'f' ? 2 :
             how[0] == 'c' ? 3 : how[0] == 'w' ? 5 : 4]++;
        if (rand_r(&seed) % 8 == 0) {
            single_run(&seed);
            singles++;
        }
    }
    /* at the end, each vCPU's last exit was delivered or is held for the next run */
    for (int i = 0; i < NCPU && !atomic_load(&failed); i++) {
        uint64_t got = atomic_load(&fakes[i].delivered);
        if (got != fakes[i].produced &&
            !(cpus[i].held && cpus[i].held_exit.addr == fakes[i].produced &&
              got + 1 == fakes[i].produced))
            fail("vcpu %d: exit %" PRIu64 " neither delivered nor held (caller has %" PRIu64
                 ")", i, fakes[i].produced, got);
    }
    if (atomic_load(&failed))
        return 1;
    printf("ok: %u slices (%u timeouts, %u halts or stops, %u handlers returning false, "
           "%u thread-creation failures, %u wakes), %u single runs, %" PRIu64 " exits, %" PRIu64
           " delivered first on the next run, %" PRIu64 " kicks\n", slices, ends[0],
           ends[1], ends[2], ends[3], ends[5], singles, n_exits, n_held_first, n_kicks);
    return 0;
}
