/* vfio-user framing on a connected stream socket: whole messages with their fds
 * (SCM_RIGHTS), sent and received under the negotiated limits.
 *
 * Receiving never blocks (MSG_DONTWAIT): user_recv reads what the socket holds, keeps a
 * partial message in its user_rx between calls, and says when one is whole, so a run
 * loop can poll the socket and call it when it is readable. It reads exactly one
 * message's bytes at a time, never into the next, so the fds that arrive while a message
 * is read are that message's. Sending writes a whole message or fails: on a socket
 * someone made non-blocking it waits (poll) for room rather than leave half a message. */
#ifndef LUAVFIO_USER_SOCK_H
#define LUAVFIO_USER_SOCK_H

#include "user_proto.h"

struct user_rx {
    struct user_limits lim;
    uint32_t max_size;    /* user_max_msg_size(&lim) */
    uint8_t *buf;         /* the message; grows as its bytes arrive, up to max_size */
    uint32_t cap;
    uint32_t have;        /* bytes of the current message read so far */
    struct user_hdr hdr;  /* valid once have >= USER_HDR_SIZE */
    int fds[USER_FDS_MAX];
    unsigned nfds;        /* fds received with the current message, owned by rx */
    bool ready;           /* a whole message is in buf */
    int dead;             /* the -errno that ended the stream, 0 while it is usable */
};

/* Set up an empty receiver with those limits (max_msg_fds is capped at USER_FDS_MAX). */
void user_rx_init(struct user_rx *rx, const struct user_limits *lim);
/* Change the limits between messages (after the version handshake). */
void user_rx_set_limits(struct user_rx *rx, const struct user_limits *lim);
/* Receive from `sock` until one message is whole.
 *   1: rx->buf holds hdr.size bytes and rx->fds its fds (rx owns them);
 *   -EAGAIN: the socket has no more for now, call again when it is readable;
 *   0: the peer closed the connection between two messages;
 *   -ECONNRESET: it closed in the middle of one (everything received is dropped);
 *   -EINVAL: a header whose size is below 16 or whose type is neither request nor reply;
 *   -EMSGSIZE: a size past the limits (rx->hdr holds the header: an error reply can
 *   name its id);
 *   -E2BIG: more fds than max_msg_fds, or control data the kernel truncated (MSG_CTRUNC);
 *   another -errno of recvmsg.
 * Every error but -EAGAIN closes every fd received with the message and leaves the
 * stream unusable (the next message's start is unknown): close the connection. */
int user_recv(struct user_rx *rx, int sock);
/* Done with the message user_recv made whole: close the fds nobody took (an fd taken
 * is set to -1 in rx->fds), then wait for the next one. */
void user_rx_next(struct user_rx *rx);
/* Close every fd held and free the buffer. */
void user_rx_free(struct user_rx *rx);

/* Send the message `msg` (len bytes, its header's size must say len) with `nfds` fds
 * (at most USER_FDS_MAX). 0, or -errno (EPIPE/ECONNRESET when the peer has gone, EINVAL
 * for a message whose header disagrees with len). Never raises SIGPIPE. */
int user_send(int sock, const uint8_t *msg, size_t len, const int *fds, unsigned nfds);
/* How long a send on a non-blocking socket waits for a peer that does not read before
 * it gives up (-ETIMEDOUT): the message is then partly sent and the stream lost. */
#define USER_SEND_TIMEOUT_MS 10000
/* user_send without the header check: arbitrary bytes, for tests and hostile peers. */
int user_send_raw(int sock, const uint8_t *bytes, size_t len, const int *fds,
                  unsigned nfds);
/* user_send_raw that waits at most timeout_ms in all (-1: USER_SEND_TIMEOUT_MS) once a
 * non-blocking socket has no room: -ETIMEDOUT when the peer stops reading (the message
 * may be half sent: the stream is then lost). */
int user_send_timed(int sock, const uint8_t *bytes, size_t len, const int *fds,
                    unsigned nfds, int timeout_ms);

#endif
