/* Capability chains of VFIO INFO ioctls, walked defensively: the offsets come from the
 * kernel, but a bad chain must never make us read outside the buffer or loop forever. */
#include "vfio_impl.h"

#include <errno.h>
#include <linux/vfio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

/* No real chain is anywhere near this long; it only bounds a corrupt one. */
#define CAP_MAX 64

int vfio_cap_walk(const void *buf, size_t bufsz, uint32_t first, vfio_cap_fn fn, void *ctx)
{
    const uint8_t *b = buf;
    uint32_t off = first;
    int n = 0;
    while (off != 0) {
        struct vfio_info_cap_header h;
        /* Links must move forward (kernel builds chains in order): this rules out loops.
         * The header must lie fully inside the buffer and be 4-byte aligned. */
        if (n >= CAP_MAX || (off & 3) || off < 8 || (size_t)off > bufsz ||
            bufsz - off < sizeof h)
            return -EPROTO;
        memcpy(&h, b + off, sizeof h);
        /* A capability ends where the next begins (or at the buffer's end); a bad link
         * still leaves this capability readable, so report it before stopping. */
        size_t end = bufsz;
        if (h.next > off && (size_t)h.next < end)
            end = h.next;
        n++;
        if (fn(b + off, end - off, h.id, h.version, ctx))
            break;
        if (h.next != 0 && h.next <= off)
            return -EPROTO;
        off = h.next;
    }
    return n;
}

/* Largest INFO buffer we accept: a region's sparse list or an IOVA range list never
 * needs more, and it bounds a kernel that keeps asking for more. */
#define INFO_MAX (1u << 20)

int vfio_info_ioctl(int fd, unsigned long req, size_t minsz, void **bufp,
                    void (*init)(void *buf, void *ctx), void *ctx)
{
    size_t sz = minsz;
    *bufp = NULL;
    for (int tries = 0; tries < 4; tries++) {
        uint8_t *buf = calloc(1, sz);
        if (!buf)
            return -ENOMEM;
        uint32_t argsz = (uint32_t)sz;
        memcpy(buf, &argsz, sizeof argsz);
        if (init)
            init(buf, ctx);
        if (ioctl(fd, req, buf) < 0) {
            int e = errno;
            free(buf);
            return -e;
        }
        memcpy(&argsz, buf, sizeof argsz);
        if (argsz <= sz || argsz > INFO_MAX) {
            /* Either everything fit, or the kernel asks for an absurd size: keep what
             * we have (the fixed part is valid; the chain is then ignored). */
            *bufp = buf;
            return (int)sz;
        }
        free(buf);
        sz = argsz;
    }
    return -EPROTO;
}

uint32_t vfio_cap_entries(size_t avail, size_t fixed, size_t elem, uint32_t declared)
{
    size_t fit = (avail - fixed) / elem;
    return declared < fit ? declared : (uint32_t)fit;
}
