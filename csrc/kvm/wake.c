/* The wake thread of a run (see wake.h). It blocks in poll() on the run's fds and its
 * own cancel eventfd, and calls notify once, the first time a run fd is ready: one wake
 * per run, so a level-triggered fd the caller has not drained yet cannot spin it. The
 * signals a VMM cares about stay with the caller's thread (blocked here, as in smp.c's
 * vCPU threads); the kick signal is blocked too: the wake thread is never in KVM_RUN. */
#include "wake.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void *wake_thread(void *arg)
{
    struct kvm_wake *w = arg;
    struct pollfd p[KVM_WAKE_MAX + 1];
    for (unsigned i = 0; i < w->n; i++)
        p[i] = (struct pollfd){.fd = w->fds[i], .events = POLLIN};
    p[w->n] = (struct pollfd){.fd = w->cancel_fd, .events = POLLIN};
    for (;;) {
        int r = poll(p, w->n + 1, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return NULL;   /* cannot poll: the run goes on without wakes */
        }
        if (p[w->n].revents)
            return NULL;   /* cancelled */
        for (unsigned i = 0; i < w->n; i++)
            /* readable, hung up, in error, or not an fd (POLLNVAL): the caller looks */
            if (p[i].revents) {
                atomic_store(&w->fired, 1);
                w->notify(w);
                return NULL;
            }
    }
}

int kvm_wake_start(struct kvm_wake *w, const int *fds, unsigned n,
                   void (*notify)(struct kvm_wake *w), void *arg)
{
    memset(w, 0, sizeof *w);
    w->cancel_fd = -1;
    if (n == 0 || n > KVM_WAKE_MAX || !notify)
        return -EINVAL;
    memcpy(w->fds, fds, n * sizeof *fds);
    w->n = n;
    w->notify = notify;
    w->arg = arg;
    w->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->cancel_fd < 0)
        return -errno;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);   /* the thread starts with every signal blocked */
    int e = pthread_create(&w->thread, NULL, wake_thread, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        close(w->cancel_fd);
        w->cancel_fd = -1;
        return -e;
    }
    w->started = 1;
    return 0;
}

void kvm_wake_cancel(struct kvm_wake *w)
{
    if (w->cancel_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(w->cancel_fd, &one, sizeof one);
        (void)r;   /* an eventfd counter far from its limit: cannot fail here */
    }
}

void kvm_wake_join(struct kvm_wake *w)
{
    if (w->started) {
        kvm_wake_cancel(w);
        pthread_join(w->thread, NULL);
        w->started = 0;
    }
    if (w->cancel_fd >= 0) {
        close(w->cancel_fd);
        w->cancel_fd = -1;
    }
}
