/* vfio-user framing (user_sock.h): one message at a time off a stream socket, with the
 * fds that came with it, under the receiver's limits; whole messages out. */
#include "user_sock.h"

#include "base/le.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void user_rx_set_limits(struct user_rx *rx, const struct user_limits *lim)
{
    rx->lim = *lim;
    if (rx->lim.max_msg_fds > USER_FDS_MAX)
        rx->lim.max_msg_fds = USER_FDS_MAX;
    if (rx->lim.max_data_xfer_size > USER_XFER_MAX)
        rx->lim.max_data_xfer_size = USER_XFER_MAX;
    rx->max_size = user_max_msg_size(&rx->lim);
}

void user_rx_init(struct user_rx *rx, const struct user_limits *lim)
{
    memset(rx, 0, sizeof *rx);
    user_rx_set_limits(rx, lim);
}

static void close_fds(struct user_rx *rx)
{
    for (unsigned i = 0; i < rx->nfds; i++)
        if (rx->fds[i] >= 0)
            close(rx->fds[i]);
    rx->nfds = 0;
}

/* The stream is lost: drop what came with the message and refuse from now on. */
static int fail(struct user_rx *rx, int err)
{
    close_fds(rx);
    rx->have = 0;
    rx->ready = false;
    rx->dead = err;
    return err;
}

/* Room for `need` bytes, grown by doubling so a peer that announces a large message
 * and sends little makes us hold little more than it sent. */
static int reserve(struct user_rx *rx, uint32_t need)
{
    if (rx->cap >= need)
        return 0;
    uint64_t ncap = rx->cap ? rx->cap : 4096;
    while (ncap < need)
        ncap *= 2;
    if (ncap > rx->max_size)
        ncap = rx->max_size;
    uint8_t *p = realloc(rx->buf, ncap);
    if (!p)
        return -ENOMEM;
    rx->buf = p;
    rx->cap = (uint32_t)ncap;
    return 0;
}

/* The fds of one recvmsg's control data; false when there were more than fit in rx. */
static bool take_fds(struct user_rx *rx, struct msghdr *m)
{
    bool fit = true;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (rx->nfds < USER_FDS_MAX)
                rx->fds[rx->nfds++] = fd;
            else {
                close(fd);
                fit = false;
            }
        }
    }
    return fit;
}

static int check_header(struct user_rx *rx)
{
    const uint8_t *p = rx->buf;
    rx->hdr.id = (uint16_t)lv_le_get(p, 2);
    rx->hdr.cmd = (uint16_t)lv_le_get(p + 2, 2);
    rx->hdr.size = (uint32_t)lv_le_get(p + 4, 4);
    rx->hdr.flags = (uint32_t)lv_le_get(p + 8, 4);
    rx->hdr.error = (uint32_t)lv_le_get(p + 12, 4);
    if (rx->hdr.size < USER_HDR_SIZE)
        return -EINVAL;
    unsigned type = rx->hdr.flags & USER_F_TYPE_MASK;
    if (type != USER_F_REQUEST && type != USER_F_REPLY)
        return -EINVAL;
    if (rx->hdr.size > rx->max_size)
        return -EMSGSIZE;
    return 0;
}

int user_recv(struct user_rx *rx, int sock)
{
    if (rx->dead)
        return rx->dead;
    if (rx->ready)
        return 1;
    for (;;) {
        uint32_t want = rx->have < USER_HDR_SIZE ? USER_HDR_SIZE : rx->hdr.size;
        if (rx->have == want) {
            rx->ready = true;
            return 1;
        }
        uint32_t target = want;
        if (target - rx->have > 65536 && target > 2 * (uint64_t)rx->have + 65536)
            target = 2 * rx->have + 65536;
        int r = reserve(rx, target);
        if (r < 0)
            return fail(rx, r);
        /* Room for one fd more than allowed: one too many shows as too many, more as
         * a truncation; the kernel closes what does not fit. */
        unsigned room = (rx->nfds < rx->lim.max_msg_fds ? rx->lim.max_msg_fds - rx->nfds : 0) + 1;
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * (USER_FDS_MAX + 1))];
        } ctl;
        struct iovec iov = {.iov_base = rx->buf + rx->have, .iov_len = target - rx->have};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                           .msg_controllen = CMSG_SPACE(sizeof(int) * room)};
        ssize_t n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return -EAGAIN;
            return fail(rx, -errno);
        }
        bool fit = m.msg_controllen ? take_fds(rx, &m) : true;
        if ((m.msg_flags & MSG_CTRUNC) || !fit || rx->nfds > rx->lim.max_msg_fds)
            return fail(rx, -E2BIG);
        if (n == 0) {
            if (rx->have == 0 && rx->nfds == 0) {
                rx->dead = -ECONNRESET;   /* a later call is a reset, not a second EOF */
                return 0;
            }
            return fail(rx, -ECONNRESET);
        }
        uint32_t before = rx->have;
        rx->have += (uint32_t)n;
        if (before < USER_HDR_SIZE && rx->have >= USER_HDR_SIZE) {
            r = check_header(rx);
            if (r < 0)
                return fail(rx, r);
        }
    }
}

void user_rx_next(struct user_rx *rx)
{
    close_fds(rx);
    rx->have = 0;
    rx->ready = false;
    if (rx->cap > (1u << 20)) {   /* one large transfer need not pin its buffer */
        free(rx->buf);
        rx->buf = NULL;
        rx->cap = 0;
    }
}

void user_rx_free(struct user_rx *rx)
{
    close_fds(rx);
    free(rx->buf);
    rx->buf = NULL;
    rx->cap = rx->have = 0;
    rx->ready = false;
}

int user_send_raw(int sock, const uint8_t *bytes, size_t len, const int *fds,
                  unsigned nfds)
{
    return user_send_timed(sock, bytes, len, fds, nfds, -1);
}

int user_send_timed(int sock, const uint8_t *bytes, size_t len, const int *fds,
                    unsigned nfds, int timeout_ms)
{
    if (nfds > USER_FDS_MAX || (nfds && len == 0))
        return -EINVAL;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * USER_FDS_MAX)];
    } ctl;
    size_t done = 0;
    bool fds_sent = nfds == 0;
    int64_t deadline = -1;   /* set at the first full socket buffer */
    while (done < len) {
        struct iovec iov = {.iov_base = (void *)(bytes + done), .iov_len = len - done};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
        if (!fds_sent) {
            memset(&ctl, 0, sizeof ctl);
            m.msg_control = ctl.buf;
            m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* a peer that stops reading cannot hold the sender for ever: the
                 * caller's timeout, or USER_SEND_TIMEOUT_MS, from the first full buffer */
                int64_t now = mono_ms();
                if (deadline < 0)
                    deadline = now + (timeout_ms >= 0 ? timeout_ms : USER_SEND_TIMEOUT_MS);
                if (now >= deadline)
                    return -ETIMEDOUT;
                struct pollfd p = {.fd = sock, .events = POLLOUT};
                int pr = poll(&p, 1, (int)(deadline - now));
                if (pr < 0 && errno != EINTR)
                    return -errno;
                if (pr == 0)
                    return -ETIMEDOUT;
                if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
                    return p.revents & POLLNVAL ? -EBADF : -EPIPE;
                continue;
            }
            return -errno;
        }
        fds_sent = true;
        done += (size_t)n;
    }
    return 0;
}

int user_send(int sock, const uint8_t *msg, size_t len, const int *fds, unsigned nfds)
{
    if (len < USER_HDR_SIZE || lv_le_get(msg + 4, 4) != len)
        return -EINVAL;
    return user_send_raw(sock, msg, len, fds, nfds);
}
