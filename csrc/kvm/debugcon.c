/* The debug console (see debugcon.h). */
#include "debugcon.h"

#include <stdlib.h>
#include <string.h>

#define DEBUGCON_CAP (1u << 20) /* a chatty guest must not exhaust host memory */

static int debugcon_access(void *opaque, int space, uint64_t addr, uint8_t *data,
                           unsigned size, int is_write)
{
    struct kvm_debugcon *d = opaque;
    if (!is_write) {
        /* QEMU's debugcon reads back 0xe9 so guests can probe for it. */
        memset(data, 0, size);
        data[0] = 0xe9;
        return KVM_VMM_IO_DONE;
    }
    if (d->closed) {
        d->dropped++;
        return KVM_VMM_IO_DONE;
    }
    if (d->len == d->cap && d->cap < DEBUGCON_CAP) {
        size_t cap = d->cap ? d->cap * 2 : 4096;
        char *p = realloc(d->buf, cap);
        if (p)
            d->buf = p, d->cap = cap;
    }
    if (d->len < d->cap)
        d->buf[d->len++] = (char)data[0]; /* the low byte, as on an 8-bit port */
    else
        d->dropped++;
    return KVM_VMM_IO_DONE;
}

const struct kvm_io_ops kvm_debugcon_ops = {.access = debugcon_access};

void kvm_debugcon_close(struct kvm_debugcon *d)
{
    free(d->buf);
    d->buf = NULL;
    d->len = d->cap = 0;
    d->closed = 1;
}
