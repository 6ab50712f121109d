/* Several vCPUs, one thread each. Every vCPU thread runs lv_kvm_vcpu_run, so the exits
 * C handles (device models, the host bridge, traps) are answered in that thread, one at a
 * time under the VM's io_lock. An exit C does not handle is posted to the caller's thread
 * (the one Lua state), which holds io_lock while it looks at it: Lua therefore sees one
 * exit at a time and no C access runs meanwhile, while vCPUs that need nothing keep
 * running guest code. The posting vCPU waits until its exit is answered. */
#include "smp.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { RUNNING, POSTED, ANSWERED };

static void *vcpu_thread(void *arg)
{
    struct lv_kvm_smp_cpu *p = arg;
    struct lv_kvm_smp *s = p->smp;
    /* Ctrl-C and friends go to the caller's thread, whose handlers know what to do */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        int stop = s->stop;
        pthread_mutex_unlock(&s->lock);
        if (stop)
            break;
        int e = s->run(p->cpu, 0, &p->exit);
        pthread_mutex_lock(&s->lock);
        if (s->stop) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        if (e < 0 || p->exit.kind != LV_KVM_EXIT_TIMEOUT) {
            /* a kick without stop is only a timeout: run on; anything else is posted */
            p->err = e;
            p->state = POSTED;
            pthread_cond_broadcast(&s->to_caller);
            while (p->state == POSTED && !s->stop)
                pthread_cond_wait(&p->answered, &s->lock);
        }
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_lock(&s->lock);
    p->done = 1;
    pthread_cond_broadcast(&s->to_caller);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int lv_kvm_smp_start(struct lv_kvm_smp *s, struct lv_kvm_vcpu **cpus, unsigned n)
{
    if (n == 0 || n > LV_KVM_SMP_MAX)
        return -EINVAL;
    int (*run)(struct lv_kvm_vcpu *, int64_t, struct lv_kvm_exit *) = s->run;
    int (*kick)(pthread_t) = s->kick;
    memset(s, 0, sizeof *s);
    s->run = run ? run : lv_kvm_vcpu_run;
    s->kick = kick ? kick : lv_kvm_kick;
    struct lv_kvm_vm *vm = cpus[0]->vm;
    for (unsigned i = 0; i < n; i++)
        if (cpus[i]->vm != vm || cpus[i]->fd < 0)
            return -EINVAL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->to_caller, NULL);
    s->vm = vm;
    s->n = n;
    pthread_mutex_lock(&s->lock);   /* the caller holds it except while it waits */
    vm->io_lock = &s->lock;
    for (unsigned i = 0; i < n; i++) {
        struct lv_kvm_smp_cpu *p = &s->cpu[i];
        p->smp = s;
        p->cpu = cpus[i];
        pthread_cond_init(&p->answered, NULL);
        int e = pthread_create(&p->thread, NULL, vcpu_thread, p);
        if (e) {
            s->n = i;
            pthread_mutex_unlock(&s->lock);
            lv_kvm_smp_stop(s);
            return -e;
        }
        p->started = 1;
    }
    return 0;
}

static void deadline_ts(int64_t deadline_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ns / 1000000000);
    ts->tv_nsec = (long)(deadline_ns % 1000000000);
}

int64_t lv_kvm_smp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int lv_kvm_smp_wait(struct lv_kvm_smp *s, int64_t deadline_ns)
{
    struct timespec ts;
    deadline_ts(deadline_ns, &ts);
    for (;;) {
        for (unsigned k = 0; k < s->n; k++) {
            /* round robin, so one busy vCPU cannot starve the others' exits */
            unsigned i = (s->next + k) % s->n;
            if (s->cpu[i].state == POSTED) {
                s->next = i + 1;
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

void lv_kvm_smp_answer(struct lv_kvm_smp *s, unsigned i)
{
    struct lv_kvm_smp_cpu *p = &s->cpu[i];
    p->state = ANSWERED;
    pthread_cond_signal(&p->answered);
}

void lv_kvm_smp_stop(struct lv_kvm_smp *s)
{
    /* the caller holds the lock (as after start or wait) */
    s->stop = 1;
    for (unsigned i = 0; i < s->n; i++)
        pthread_cond_signal(&s->cpu[i].answered);
    pthread_mutex_unlock(&s->lock);
    /* kick until every thread has left: a kick landing just before KVM_RUN is lost */
    for (;;) {
        unsigned left = 0;
        pthread_mutex_lock(&s->lock);
        for (unsigned i = 0; i < s->n; i++)
            if (s->cpu[i].started && !s->cpu[i].done)
                left++;
        pthread_mutex_unlock(&s->lock);
        if (!left)
            break;
        for (unsigned i = 0; i < s->n; i++)
            if (s->cpu[i].started && !s->cpu[i].done)
                s->kick(s->cpu[i].thread);
        struct timespec pause = {0, 2000000};
        nanosleep(&pause, NULL);
    }
    for (unsigned i = 0; i < s->n; i++) {
        if (s->cpu[i].started)
            pthread_join(s->cpu[i].thread, NULL);
        pthread_cond_destroy(&s->cpu[i].answered);
    }
    s->vm->io_lock = NULL;
    pthread_cond_destroy(&s->to_caller);
    pthread_mutex_destroy(&s->lock);
}
