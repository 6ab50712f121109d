/* A trap in the KVM run loop and the C host bridge (see trap_kvm.h). */
#include "trap_kvm.h"
#include "base/le.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

/* A trap whose backend is closed (no ops) answers like an absent function. A closed
 * trap needs no test here: the trap core answers all ones, drops writes and has no
 * events left (trap_free). */
static struct trap_fn *live_fn(void *opaque)
{
    struct trap_fn *fn = opaque;
    return fn && fn->be && fn->be->ops ? fn : NULL;
}

static int cfg_read(void *opaque, uint32_t off, uint32_t len, uint32_t *val)
{
    struct trap_fn *fn = live_fn(opaque);
    if (!fn)
        return -ENODEV;
    return trap_cfg_read(fn, off, len, val);
}

static int cfg_write(void *opaque, uint32_t off, uint32_t len, uint32_t val)
{
    struct trap_fn *fn = live_fn(opaque);
    if (!fn)
        return -ENODEV;
    int rc = trap_cfg_write(fn, off, len, val);
    if (rc < 0)
        return rc;
    return fn->ev_count ? KVM_PCI_CFG_EVENT : 0;
}

const struct kvm_pci_cfg_ops wire_trap_cfg_ops = {.read = cfg_read, .write = cfg_write};

int wire_trap_access(struct trap_fn *fn, int space, uint64_t addr, uint8_t *data,
                     unsigned size, int is_write)
{
    fn = live_fn(fn);
    bool io = space == KVM_VMM_PIO;
    if (!fn || !(size == 1 || size == 2 || size == 4 || size == 8))
        return KVM_VMM_IO_DONE;   /* reads stay all ones, writes are dropped */
    uint64_t v = is_write ? lv_le_get(data, size) : 0;
    int rc = trap_addr_try(fn, io, addr, size, is_write, &v);
    if (rc == TRAP_PASS)
        return KVM_VMM_IO_PASS;   /* a handler window: the run's caller makes the access */
    if (!is_write && rc >= 0)
        lv_le_put(data, v, size);
    return fn->ev_count ? KVM_VMM_IO_STOP(KVM_VMM_STOP_BAR) : KVM_VMM_IO_DONE;
}

static int io_access(void *opaque, int space, uint64_t addr, uint8_t *data, unsigned size,
                     int is_write)
{
    return wire_trap_access(opaque, space, addr, data, size, is_write);
}

const struct kvm_io_ops wire_trap_io_ops = {.access = io_access, .release = NULL};
