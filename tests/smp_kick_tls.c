/* smp_kick_tls MODULE: the kick handler never allocates. MODULE is smp.c and the KVM core
 * (run.c holds the TLS) built as a shared object (libsmp_dl.so), dlopen'ed like
 * vfio/core.so is by Lua, so its TLS
 * is dynamic: the first access to it from a thread may allocate (glibc's
 * __tls_get_addr), which inside a signal handler can deadlock in malloc or corrupt it.
 *
 * vCPU threads of kvm_smp_start run a stand-in for kvm_vcpu_run (this program's
 * code: it never touches the module's TLS) until kvm_smp_stop kicks them with the real
 * kvm_kick. malloc and friends are wrapped: one called on a vCPU thread while it is in
 * the stand-in can only be the kick handler's. Prints "ok: ..." and exits 0, or "FAIL:"
 * and exits 1. */
#include "kvm/smp.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static __thread int in_stand_in;      /* this program's TLS: static, never allocated */
static atomic_int bad, stopping, entered;

void *malloc(size_t n)
{
    if (in_stand_in)
        atomic_store(&bad, 1);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    if (in_stand_in)
        atomic_store(&bad, 1);
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    if (in_stand_in)
        atomic_store(&bad, 1);
    return __libc_realloc(p, n);
}

void *memalign(size_t a, size_t n)
{
    if (in_stand_in)
        atomic_store(&bad, 1);
    return __libc_memalign(a, n);
}

static int stand_in(struct kvm_vcpu *c, int64_t timeout_ns, struct kvm_exit *out)
{
    (void)c, (void)timeout_ns;
    memset(out, 0, sizeof *out);
    out->kind = KVM_VMM_EXIT_TIMEOUT;
    in_stand_in = 1;
    atomic_fetch_add(&entered, 1);
    while (!atomic_load(&stopping)) {
        struct timespec t = {0, 1000000};
        nanosleep(&t, NULL);   /* a kick interrupts it: the handler runs here */
    }
    in_stand_in = 0;
    return 0;
}

static void *release_later(void *arg)
{
    (void)arg;
    struct timespec t = {0, 20000000};
    nanosleep(&t, NULL);
    atomic_store(&stopping, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: smp_kick_tls MODULE\n");
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("FAIL: dlopen: %s\n", dlerror());
        return 1;
    }
    int (*start)(struct kvm_smp *, struct kvm_vcpu **, unsigned) =
        (int (*)(struct kvm_smp *, struct kvm_vcpu **, unsigned))dlsym(h, "kvm_smp_start");
    int (*stop)(struct kvm_smp *) = (int (*)(struct kvm_smp *))dlsym(h, "kvm_smp_stop");
    int (*wait)(struct kvm_smp *, int64_t) =
        (int (*)(struct kvm_smp *, int64_t))dlsym(h, "kvm_smp_wait");
    int64_t (*now)(void) = (int64_t (*)(void))dlsym(h, "kvm_smp_now");
    if (!start || !stop || !wait || !now) {
        printf("FAIL: dlsym: %s\n", dlerror());
        return 1;
    }
    static struct kvm_vm vm = {.fd = 100};
    static struct kvm_vcpu cpus[4];
    struct kvm_vcpu *list[4];
    for (int i = 0; i < 4; i++) {
        cpus[i] = (struct kvm_vcpu){.fd = 200 + i, .id = i, .vm = &vm};
        list[i] = &cpus[i];
    }
    unsigned rounds = 20;
    for (unsigned r = 0; r < rounds && !atomic_load(&bad); r++) {
        static struct kvm_smp s;
        memset(&s, 0, sizeof s);
        s.run = stand_in;       /* the kick stays kvm_kick */
        atomic_store(&stopping, 0);
        atomic_store(&entered, 0);
        int e = start(&s, list, 4);
        if (e < 0) {
            printf("FAIL: kvm_smp_start: %s\n", strerror(-e));
            return 1;
        }
        /* as a run does: wait for exits (none come) while the threads enter the stand-in */
        while (atomic_load(&entered) < 4)
            wait(&s, now() + 5000000);
        /* stop kicks the threads in the stand-in; they return 20 ms later */
        pthread_t later;
        pthread_create(&later, NULL, release_later, NULL);
        stop(&s);
        pthread_join(later, NULL);
    }
    if (atomic_load(&bad)) {
        printf("FAIL: the kick handler allocated on a vCPU thread (first TLS access of a "
               "dlopen'ed module inside a signal handler)\n");
        return 1;
    }
    printf("ok: %u rounds of 4 vCPU threads kicked, no allocation in the kick handler\n",
           rounds);
    return 0;
}
