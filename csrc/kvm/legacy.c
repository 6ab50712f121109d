/* Ignored port ranges and the i8042 keyboard controller (see legacy.h). */
#include "legacy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int ignore_access(void *opaque, int space, uint64_t addr, uint8_t *data,
                         unsigned size, int is_write)
{
    if (!is_write)
        memset(data, (int)(uintptr_t)opaque, size);
    return KVM_VMM_IO_DONE;
}

static const struct kvm_io_ops ignore_ops = {.access = ignore_access};

int kvm_add_ignore(struct kvm_vm *vm, uint16_t base, uint16_t size, uint8_t value)
{
    /* the value rides in the opaque pointer: nothing to allocate or release */
    return kvm_add_range(vm, KVM_VMM_PIO, base, size, &ignore_ops, (void *)(uintptr_t)value);
}

/* ---- i8042 ---- */

#define I8042_DATA 0x60
#define I8042_CMD 0x64
#define ST_OBF 0x01
#define ST_SYS 0x04      /* system flag: self test passed */
#define ST_CMD 0x08      /* last write was a command */
#define CTR_KBD_OFF 0x10
#define CTR_AUX_OFF 0x20

struct i8042 {
    int refs;            /* two ranges share it */
    uint8_t ctr, out, status, pending; /* pending: the command a data byte completes */
};

static void put_out(struct i8042 *k, uint8_t b)
{
    k->out = b;
    k->status |= ST_OBF;
}

/* Returns a stop (KVM_VMM_STOP_RESET) for a reset pulse. */
static int command(struct i8042 *k, uint8_t cmd)
{
    k->status |= ST_CMD;
    k->pending = 0;
    switch (cmd) {
    case 0x20: put_out(k, k->ctr); break;          /* read command byte */
    case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4:
        k->pending = cmd;                          /* the next data byte belongs to it */
        break;
    case 0xa7: k->ctr |= CTR_AUX_OFF; break;
    case 0xa8: k->ctr &= (uint8_t)~CTR_AUX_OFF; break;
    case 0xa9: case 0xab: put_out(k, 0x00); break; /* port tests: no fault */
    case 0xaa: put_out(k, 0x55); k->status |= ST_SYS; break; /* self test passed */
    case 0xad: k->ctr |= CTR_KBD_OFF; break;
    case 0xae: k->ctr &= (uint8_t)~CTR_KBD_OFF; break;
    default:
        /* 0xf0-0xff pulse output lines low for 6 us; bit 0 is the CPU reset line */
        if ((cmd & 0xf0) == 0xf0 && !(cmd & 1))
            return KVM_VMM_IO_STOP(KVM_VMM_STOP_RESET);
        break;
    }
    return KVM_VMM_IO_DONE;
}

static void data_write(struct i8042 *k, uint8_t b)
{
    k->status &= (uint8_t)~ST_CMD;
    switch (k->pending) {
    case 0x60: k->ctr = b; break;
    case 0xd2: case 0xd3: put_out(k, b); break;    /* write (loop back) an output byte */
    default: break;  /* output port (0xd1), or bytes for a device that is not there */
    }
    k->pending = 0;
}

static int i8042_access(void *opaque, int space, uint64_t addr, uint8_t *data,
                        unsigned size, int is_write)
{
    struct i8042 *k = opaque;
    int rc = KVM_VMM_IO_DONE;
    /* only the low byte means anything on these 8-bit ports */
    if (addr == I8042_CMD) {
        if (is_write)
            rc = command(k, data[0]);
        else
            data[0] = k->status;
    } else if (addr == I8042_DATA) {
        if (is_write) {
            data_write(k, data[0]);
        } else {
            data[0] = k->out;
            k->status &= (uint8_t)~ST_OBF;
        }
    }
    return rc;
}

static void i8042_release(void *opaque)
{
    struct i8042 *k = opaque;
    if (--k->refs == 0)
        free(k);
}

static const struct kvm_io_ops i8042_ops = {.access = i8042_access,
                                            .release = i8042_release};

int kvm_add_i8042(struct kvm_vm *vm)
{
    struct i8042 *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    k->ctr = 0x01 | 0x04 | 0x40; /* kbd IRQ on, system flag, translation: as a BIOS leaves it */
    k->status = ST_SYS;
    int id = kvm_add_range(vm, KVM_VMM_PIO, I8042_CMD, 1, &i8042_ops, k);
    if (id < 0) {
        free(k);
        return id;
    }
    k->refs = 1;
    int id2 = kvm_add_range(vm, KVM_VMM_PIO, I8042_DATA, 1, &i8042_ops, k);
    if (id2 < 0) {
        kvm_remove_range(vm, id); /* releases (and frees) it */
        return id2;
    }
    k->refs = 2;
    return id;
}
