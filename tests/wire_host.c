/* wire_host: the guest-access seam (csrc/wire) without KVM and without Lua.
 *
 * A trap over a recorded function (one 4 KiB memory BAR at 0xc0000000 with a handler
 * window at +0x80..+0x9f, as a Lua quirk window is) behind wire_trap_io_ops, asked
 * directly and through the run loop's exit decode (kvm_exit_decode) on a fake vCPU:
 *   - an access the trap answers in C is answered (the device's bytes) and the guest
 *     resumes;
 *   - an access to the handler window is passed on (KVM_VMM_IO_PASS) untouched, the
 *     handler never runs, and the run loop hands the exit to its caller unanswered as
 *     for an address no range covers (an MMIO or IO exit, a read all ones and pending);
 *   - an access that straddles the window's edge, one of a size no BAR takes and one
 *     to a closed trap are answered in C (all ones), never passed;
 *   - a BAR access while the trap holds events stops with the BAR reason, a config
 *     write that queues events asks for attention (KVM_PCI_CFG_EVENT), and the run loop
 *     reports the stop with its reason;
 *   - a string access whose first element, answered in C through a config mirror, moves
 *     another BAR's handler window onto the port: the run loop hands back the elements
 *     from there on, never the one it answered (an invariant of fuzz/exit_fuzz.c).
 * Prints "ok: ..." on stderr and exits 0, else "FAIL: ..." and 1. */
#include "kvm/run.h"
#include "trap/backend.h"
#include "wire/trap_kvm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAR0 0xc0000000u
#define IOBAR 0x2000u
#define IOBAR2 0x3000u

static int failures, handler_calls;

static void check(int ok, const char *what, int line)
{
    if (!ok) {
        fprintf(stderr, "FAIL: line %d: %s\n", line, what);
        failures++;
    }
}
#define CHECK(c) check((c), #c, __LINE__)

static int handler(struct trap_fn *f, void *ctx, int id, bool write, uint64_t off,
                   uint32_t len, uint64_t *val)
{
    (void)f, (void)ctx, (void)id, (void)write, (void)off, (void)len, (void)val;
    handler_calls++;   /* never from the seam: it would need the caller's frame */
    return 0;
}

static int all(const uint8_t *p, size_t n, uint8_t v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

/* One access through the seam, data arriving as all ones as the dispatch gives it. */
static int access(struct trap_fn *fn, int space, uint64_t addr, uint8_t *data, unsigned size,
                  int is_write)
{
    if (!is_write)
        memset(data, 0xff, size);
    return wire_trap_io_ops.access(fn, space, addr, data, size, is_write);
}

static void drain(struct trap_fn *fn)
{
    struct trap_event ev;
    while (trap_event_pop(fn, &ev))
        ;
}

int main(void)
{
    uint8_t cfg[256] = {0};
    cfg[0] = 0x34, cfg[1] = 0x12, cfg[2] = 0xe8, cfg[3] = 0x11;   /* 1234:11e8 */
    cfg[0x14] = 0x01;                                             /* BAR1: I/O */
    cfg[0x18] = 0x01;                                             /* BAR2: I/O */
    static uint8_t region[0x1000];
    for (unsigned i = 0; i < sizeof region; i++)
        region[i] = (uint8_t)(i * 7 + 1);
    struct lv_backend be = {0};
    if (lv_backend_replay_init(&be, cfg, sizeof cfg) < 0 ||
        lv_replay_set_region(&be, 0, sizeof region, LV_REGION_READ | LV_REGION_WRITE) < 0 ||
        lv_replay_fill(&be, 0, 0, region, sizeof region) < 0 ||
        lv_replay_set_region(&be, 1, 0x20, LV_REGION_READ | LV_REGION_WRITE) < 0 ||
        lv_replay_set_region(&be, 2, 0x20, LV_REGION_READ | LV_REGION_WRITE) < 0) {
        fprintf(stderr, "FAIL: replay backend\n");
        return 1;
    }
    static struct trap_fn fn;
    if (trap_init(&fn, &be, false) < 0) {
        fprintf(stderr, "FAIL: trap_init\n");
        return 1;
    }
    struct trap_window w = {.bar = 0, .kind = WIN_HANDLER, .off = 0x80, .len = 0x20,
                            .handler = handler};
    CHECK(trap_add_window(&fn, &w) == 0);
    struct trap_window wio = {.bar = 1, .kind = WIN_HANDLER, .off = 0x10, .len = 0x4,
                              .handler = handler};
    CHECK(trap_add_window(&fn, &wio) == 0);
    /* a config mirror in BAR2 over BAR1's address register, as some devices have one */
    struct trap_window wmir = {.bar = 2, .kind = WIN_MIRROR, .off = 0x10, .len = 0x4,
                               .cfg_off = 0x14};
    CHECK(trap_add_window(&fn, &wmir) == 0);

    /* the guest places the BARs (nothing decodes yet: no event) and turns decoding on,
     * which asks for the VM layer's attention (events queued) */
    CHECK(wire_trap_cfg_ops.write(&fn, 0x10, 4, BAR0) == 0);
    CHECK(wire_trap_cfg_ops.write(&fn, 0x14, 4, IOBAR) == 0);
    CHECK(wire_trap_cfg_ops.write(&fn, 0x04, 2, 0x3) == KVM_PCI_CFG_EVENT);
    drain(&fn);
    uint32_t v32 = 0;
    CHECK(wire_trap_cfg_ops.read(&fn, 0x10, 4, &v32) == 0 && v32 == BAR0);

    uint8_t d[8];
    /* answered in C: the device's bytes, the guest resumes */
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x10, d, 4, 0) == KVM_VMM_IO_DONE);
    CHECK(memcmp(d, region + 0x10, 4) == 0);
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0xa0, d, 8, 0) == KVM_VMM_IO_DONE);
    CHECK(memcmp(d, region + 0xa0, 8) == 0);
    /* the handler window: passed on, untouched, no handler run */
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x80, d, 4, 0) == KVM_VMM_IO_PASS);
    CHECK(all(d, 4, 0xff));
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x9c, d, 4, 0) == KVM_VMM_IO_PASS);
    memset(d, 0x5a, sizeof d);
    uint64_t writes = lv_replay_stats(&be)->region_writes;
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x88, d, 4, 1) == KVM_VMM_IO_PASS);
    CHECK(all(d, 4, 0x5a) && lv_replay_stats(&be)->region_writes == writes);
    CHECK(access(&fn, KVM_VMM_PIO, IOBAR + 0x10, d, 2, 0) == KVM_VMM_IO_PASS);
    CHECK(access(&fn, KVM_VMM_PIO, IOBAR + 0x8, d, 2, 0) == KVM_VMM_IO_DONE);
    /* over the window's edge, a size no BAR takes, an address the trap does not decode:
     * answered in C, all ones for a read */
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x7e, d, 4, 0) == KVM_VMM_IO_DONE);
    CHECK(all(d, 4, 0xff));
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x80, d, 3, 0) == KVM_VMM_IO_DONE);
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x1000, d, 4, 0) == KVM_VMM_IO_DONE);
    CHECK(all(d, 4, 0xff));
    CHECK(handler_calls == 0);

    /* the run loop: a fake VM and vCPU, the trap's BAR as a handled range */
    static struct kvm_vm vm = {.fd = -1, .vfio_fd = -1, .next_range_id = 1};
    static union {
        struct kvm_run run;
        uint8_t page[4096];
    } page;
    struct kvm_vcpu cpu = {.fd = -1, .vm = &vm, .run = &page.run, .run_size = sizeof page};
    CHECK(kvm_add_range(&vm, KVM_VMM_MMIO, BAR0, 0x1000, &wire_trap_io_ops, &fn) > 0);
    CHECK(kvm_add_range(&vm, KVM_VMM_PIO, IOBAR, 0x20, &wire_trap_io_ops, &fn) > 0);
    struct kvm_run *run = &page.run;
    struct kvm_exit x;
    int err = 0;
    run->exit_reason = KVM_EXIT_MMIO;
    run->mmio.phys_addr = BAR0 + 0x10, run->mmio.len = 4, run->mmio.is_write = 0;
    CHECK(kvm_exit_decode(&cpu, run, &x, &err) == KVM_VMM_DECODE_RESUME && err == 0);
    CHECK(memcmp(run->mmio.data, region + 0x10, 4) == 0);
    cpu.pending_read = 0;
    run->mmio.phys_addr = BAR0 + 0x84;
    memset(run->mmio.data, 0, sizeof run->mmio.data);
    CHECK(kvm_exit_decode(&cpu, run, &x, &err) == KVM_VMM_DECODE_DONE && err == 0);
    CHECK(x.kind == KVM_VMM_EXIT_MMIO && x.addr == BAR0 + 0x84 && x.size == 4 && !x.is_write);
    CHECK(x.stop == KVM_VMM_STOP_NONE && cpu.pending_read && all(run->mmio.data, 4, 0xff));
    cpu.pending_read = 0;
    run->mmio.is_write = 1;
    CHECK(kvm_exit_decode(&cpu, run, &x, &err) == KVM_VMM_DECODE_DONE);
    CHECK(x.kind == KVM_VMM_EXIT_MMIO && x.is_write && !cpu.pending_read);
    /* a port of the I/O BAR's window: an IO exit, a string access handed over whole */
    run->exit_reason = KVM_EXIT_IO;
    run->io.direction = KVM_EXIT_IO_IN, run->io.size = 2, run->io.port = IOBAR + 0x10;
    run->io.count = 3, run->io.data_offset = 1024;
    CHECK(kvm_exit_decode(&cpu, run, &x, &err) == KVM_VMM_DECODE_DONE && err == 0);
    CHECK(x.kind == KVM_VMM_EXIT_IO && x.addr == IOBAR + 0x10 && x.count == 3);
    CHECK(cpu.pending_read && all(page.page + 1024, 6, 0xff));
    cpu.pending_read = 0;
    run->io.port = IOBAR + 0x8, run->io.count = 1;
    CHECK(kvm_exit_decode(&cpu, run, &x, &err) == KVM_VMM_DECODE_RESUME);
    CHECK(handler_calls == 0);

    /* events queued (the guest moves the BAR): a BAR access stops with the BAR reason */
    CHECK(wire_trap_cfg_ops.write(&fn, 0x04, 2, 0x2) == KVM_PCI_CFG_EVENT);   /* I/O off */
    int rc = access(&fn, KVM_VMM_MMIO, BAR0 + 0x10, d, 4, 0);
    CHECK(kvm_io_stop_reason(rc) == KVM_VMM_STOP_BAR);
    run->exit_reason = KVM_EXIT_MMIO;
    run->mmio.phys_addr = BAR0 + 0x10, run->mmio.is_write = 0;
    CHECK(kvm_exit_decode(&cpu, run, &x, &err) == KVM_VMM_DECODE_DONE);
    CHECK(x.kind == KVM_VMM_EXIT_STOP && x.stop == KVM_VMM_STOP_BAR && !cpu.pending_read);
    CHECK(memcmp(run->mmio.data, region + 0x10, 4) == 0);   /* answered all the same */
    drain(&fn);

    /* a string OUT to BAR2's mirror: its first element moves BAR1 to IOBAR2, so the port
     * now decodes to BAR1's handler window (BAR1 comes first): the second element passes,
     * and only it goes back to the caller, the first being answered already */
    CHECK(wire_trap_cfg_ops.write(&fn, 0x18, 4, IOBAR2) == 0);
    CHECK(wire_trap_cfg_ops.write(&fn, 0x04, 2, 0x3) == KVM_PCI_CFG_EVENT);   /* I/O on */
    drain(&fn);
    CHECK(kvm_add_range(&vm, KVM_VMM_PIO, IOBAR2, 0x20, &wire_trap_io_ops, &fn) > 0);
    run->exit_reason = KVM_EXIT_IO;
    run->io.direction = KVM_EXIT_IO_OUT, run->io.size = 4, run->io.port = IOBAR2 + 0x10;
    run->io.count = 2, run->io.data_offset = 2048;
    uint32_t moves[2] = {IOBAR2 | 1, 0x12345678};
    memcpy(page.page + 2048, moves, sizeof moves);
    cpu.pending_read = 0;
    CHECK(kvm_exit_decode(&cpu, run, &x, &err) == KVM_VMM_DECODE_DONE && err == 0);
    CHECK(wire_trap_cfg_ops.read(&fn, 0x14, 4, &v32) == 0 && v32 == (IOBAR2 | 1));
    CHECK(x.kind == KVM_VMM_EXIT_IO && x.addr == IOBAR2 + 0x10 && x.is_write);
    CHECK(x.count == 1 && x.size == 4 && x.data == page.page + 2048 + 4);
    CHECK(fn.ev_count > 0 && handler_calls == 0 && !cpu.pending_read);
    drain(&fn);
    CHECK(kvm_io_stop_reason(KVM_VMM_IO_DONE) == KVM_VMM_STOP_NONE);
    CHECK(kvm_io_stop_reason(KVM_VMM_IO_PASS) == KVM_VMM_STOP_NONE);
    CHECK(kvm_io_stop_reason(-1) == KVM_VMM_STOP_NONE);

    /* a closed trap answers all ones and never passes */
    trap_free(&fn);
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x80, d, 4, 0) == KVM_VMM_IO_DONE);
    CHECK(all(d, 4, 0xff));
    CHECK(access(&fn, KVM_VMM_MMIO, BAR0 + 0x10, d, 4, 0) == KVM_VMM_IO_DONE);
    CHECK(handler_calls == 0);
    lv_backend_destroy(&be);
    free(vm.ranges);

    if (failures)
        return 1;
    fprintf(stderr, "ok: the seam answers in C, passes handler windows on, stops with a reason\n");
    return 0;
}
