/* libFuzzer target: the guest-facing path of a passed-through function on devices
 * recorded in the lab. Each input picks a recorded device and runs a sequence of guest
 * accesses mixed with the quirk operations a policy may apply, optionally on a recording
 * whose config bytes and region sizes and flags the input corrupts first:
 *   - config reads/writes at any offset and size, directly and through the PCI host
 *     bridge exactly as the run loop calls it (CF8/CFC-CFF port accesses of every size,
 *     ECAM accesses of 1 to 8 bytes anywhere in the window);
 *   - BAR and guest-address accesses of every size, over BARs the guest programs (so
 *     overlapping ones too), Lua-handled windows included;
 *   - masked vectors' pending sources (real eventfds, signalled, drained, closed) and
 *     the VM layer's pending bits, read back through the PBA and MSI's pending bits;
 *   - closing the function mid-sequence.
 * Invariants checked beyond ASan/UBSan: emulated header registers never reach the
 * device; a guest access the run loop keeps in C (trap_addr_try, which passes what a
 * handler window takes) never runs a Lua window handler, and one it passes is left
 * untouched and made by trap_addr_access; a closed function reads all ones and nothing it gets reaches the
 * device; no access size or offset makes the core touch memory outside its tables.
 * Fixtures: files made by fuzz/export_fixtures.lua in $TRAP_FUZZ_FIXTURES. */
#include "fixture.h"
#include "input.h"
#include "kvm/pcihost.h"

#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FX 16

static struct lv_backend backends[MAX_FX];
static unsigned nfx;
static struct trap_fn fn;
/* Pending sources as the VM layer lends them: eventfds it owns; -1 once "closed". */
static int srcfd[3] = {-1, -1, -1};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    nfx = load_fixtures(backends, MAX_FX, "trap_fuzz");
    return 0;
}


static const uint32_t cfg_sizes[4] = {1, 2, 4, 3};        /* 3: must be refused */
static const uint32_t bar_sizes[5] = {1, 2, 4, 8, 16};

/* Set while an access runs the way the run loop runs it in C: a Lua window handler has
 * no Lua frame to run on there. */
static bool in_c_dispatch;

/* A quirk handler in C: echoes the offset, so windows run without Lua. */
static int echo_window(struct trap_fn *f, void *ctx, int id, bool write, uint64_t off,
                       uint32_t len, uint64_t *val)
{
    (void)f, (void)ctx, (void)id, (void)len;
    if (in_c_dispatch)
        abort();   /* the decode that kept it in C and the dispatch disagreed */
    if (!write)
        *val = off;
    return 0;
}

/* The trap as a host bridge function, as the binding attaches it. */
static int hb_read(void *opaque, uint32_t off, uint32_t len, uint32_t *val)
{
    return trap_cfg_read(opaque, off, len, val);
}

static int hb_write(void *opaque, uint32_t off, uint32_t len, uint32_t val)
{
    return trap_cfg_write(opaque, off, len, val);
}

static const struct kvm_pci_cfg_ops hb_ops = {.read = hb_read, .write = hb_write};
#define ECAM_BASE 0xe0000000ull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    struct lv_backend *be = &backends[take(&in, 1) % nfx];
    unsigned mode = (unsigned)take(&in, 1);
    lv_replay_reset(be);
    for (unsigned k = 0; k < 3; k++) {
        if (srcfd[k] >= 0)
            close(srcfd[k]);
        srcfd[k] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
    /* mode bit 1: a buggy or hostile device: patch recorded config bytes first (broken
     * capability chains, MSI with per-vector masking, odd BAR types...) */
    if (mode & 2) {
        unsigned k = (unsigned)take(&in, 1) % 16;
        for (unsigned i = 0; i < k; i++) {
            uint32_t off = (uint32_t)take(&in, 2) % 4096;
            uint8_t b = (uint8_t)take(&in, 1);
            be->ops->cfg_write(be->ctx, off, &b, 1);   /* fails harmlessly past 256 B */
        }
    }
    /* mode bit 2: region sizes and flags as a broken device (or kernel) reports them;
     * put back after this input, so every input starts from the recording */
    struct lv_region_info orig[LV_REGION_MAX];
    unsigned mutated = 0;
    if (mode & 4) {
        unsigned k = (unsigned)take(&in, 1) % 4;
        for (unsigned i = 0; i < k; i++) {
            unsigned idx = (unsigned)take(&in, 1) % 9;
            if (idx == 7)
                continue;   /* config: its size is the recording's */
            if (!(mutated & 1u << idx) && be->ops->region_info(be->ctx, idx, &orig[idx]) == 0)
                mutated |= 1u << idx;
            lv_replay_set_region(be, idx, take(&in, 1) & 1 ? take(&in, 8) : 1ull << (take(&in, 1) % 40),
                                 (uint32_t)take(&in, 1));
        }
    }
    if (trap_init(&fn, be, mode & 1) < 0) {
        trap_free(&fn);
        goto restore;
    }
    static struct kvm_pcihost host;
    memset(&host, 0, sizeof host);
    host.ecam_base = ECAM_BASE;
    host.ecam_size = 1 << 20;
    kvm_pcihost_attach(&host, 0, 4, 0, &hb_ops, &fn);
    bool closed = false;
    uint8_t hdr0[64], hdr1[64];
    be->ops->cfg_read(be->ctx, 0, hdr0, 64);
    struct trap_event ev;
    for (unsigned steps = 0; in.n && steps < 256; steps++) {
        unsigned op = (unsigned)take(&in, 1) % 19;
        uint32_t v32;
        uint64_t v64;
        switch (op) {
        case 0: {
            uint32_t off = (uint32_t)take(&in, 2) % 4200, len = cfg_sizes[take(&in, 1) % 4];
            int rc = trap_cfg_read(&fn, off, len, &v32);
            if (len == 3 && rc != -22)
                abort();
            break;
        }
        case 1: {
            uint32_t off = (uint32_t)take(&in, 2) % 4200, len = cfg_sizes[take(&in, 1) % 4];
            trap_cfg_write(&fn, off, len, (uint32_t)take(&in, 4));
            break;
        }
        case 2:
        case 3: {
            unsigned bar = (unsigned)take(&in, 1) % 8;
            uint64_t off = take(&in, 1) & 1 ? take(&in, 8) : take(&in, 3);
            uint32_t len = bar_sizes[take(&in, 1) % 5];
            v64 = take(&in, 8);
            trap_bar_access(&fn, bar, off, len, op == 3, &v64);
            break;
        }
        case 4:
        case 5: {
            bool io = take(&in, 1) & 1;
            /* near a BAR the guest placed, or anywhere */
            unsigned near = (unsigned)take(&in, 1) % 7;
            uint64_t addr = fn.bars[near].mapped != TRAP_UNMAPPED && (take(&in, 1) & 1)
                                ? fn.bars[near].mapped + take(&in, 2) - 0x100
                                : take(&in, 8);
            uint32_t len = bar_sizes[take(&in, 1) % 4];
            v64 = take(&in, 8);
            uint64_t before = v64;
            in_c_dispatch = true;
            int rc = trap_addr_try(&fn, io, addr, len, op == 5, &v64);
            in_c_dispatch = false;
            if (rc == TRAP_PASS) {
                if (v64 != before)
                    abort();   /* a passed access was (partly) made */
                trap_addr_access(&fn, io, addr, len, op == 5, &v64);
            }
            break;
        }
        case 6: {
            uint16_t id = (uint16_t)take(&in, 1);
            trap_hide_cap(&fn, id, take(&in, 1) & 1);
            break;
        }
        case 7: {
            uint16_t off = (uint16_t)take(&in, 2) % 4200;
            uint8_t bytes[64], wm[64];
            uint16_t len = (uint16_t)(take(&in, 1) % 64);
            for (unsigned i = 0; i < len; i++)
                bytes[i] = (uint8_t)take(&in, 1), wm[i] = (uint8_t)take(&in, 1);
            trap_add_cap(&fn, off, bytes, wm, len, take(&in, 1) & 1);
            break;
        }
        case 8: {
            unsigned bar = (unsigned)take(&in, 1) % 8;
            trap_set_bar_size(&fn, bar, 1ull << (take(&in, 1) % 64));
            break;
        }
        case 9: {
            unsigned bar = (unsigned)take(&in, 1) % 8;
            uint64_t t = take(&in, 4), p = take(&in, 4);
            trap_msix_relocate(&fn, bar, t, p);
            break;
        }
        case 10: {
            struct trap_window w = {0};
            w.bar = (uint8_t)(take(&in, 1) % 8);
            w.off = take(&in, 3);
            w.len = take(&in, 2);
            w.kind = take(&in, 1) & 1 ? WIN_MIRROR : WIN_HANDLER;
            w.cfg_off = (uint32_t)take(&in, 2);
            w.handler = echo_window;
            trap_add_window(&fn, &w);
            break;
        }
        case 11:
            while (trap_event_pop(&fn, &ev))
                ;
            break;
        case 12: {
            uint32_t off = (uint32_t)take(&in, 2) % 4200;
            uint8_t bytes[16];
            uint32_t len = (uint32_t)(take(&in, 1) % 16);
            for (unsigned i = 0; i < len; i++)
                bytes[i] = (uint8_t)take(&in, 1);
            trap_set_config(&fn, off, len, bytes, NULL);
            break;
        }
        case 13: {
            uint32_t off = (uint32_t)take(&in, 2) % 4200;
            uint32_t m = (uint32_t)take(&in, 4);
            trap_set_perm(&fn, off, cfg_sizes[take(&in, 1) % 4], m, (uint32_t)take(&in, 4),
                          (uint32_t)take(&in, 4));
            break;
        }
        case 14:
        case 15: {
            /* an exit as the run loop hands it to the host bridge's handled ranges */
            uint8_t d[8];
            uint64_t v = take(&in, 8);
            for (unsigned i = 0; i < 8; i++)
                d[i] = (uint8_t)(v >> (8 * i));
            bool write = op == 15;
            unsigned sz = (unsigned)bar_sizes[take(&in, 1) % 4];
            int space;
            uint64_t addr;
            unsigned pick = (unsigned)take(&in, 1) % 4;
            if (pick == 0) {          /* program the CF8 latch for our slot or another */
                space = KVM_VMM_PIO, addr = 0xcf8, sz = 4, write = true;
                uint32_t a = 0x80000000u | (uint32_t)(take(&in, 1) & 1 ? 4 : take(&in, 1) % 32) << 11 |
                             (uint32_t)take(&in, 1);
                for (unsigned i = 0; i < 4; i++)
                    d[i] = (uint8_t)(a >> (8 * i));
            } else if (pick == 1) {   /* the data ports, any lane, any size */
                space = KVM_VMM_PIO, addr = 0xcf8 + take(&in, 1) % 8;
            } else {                  /* ECAM: our function's 4 KiB, or anywhere in it */
                space = KVM_VMM_MMIO;
                addr = ECAM_BASE + (pick == 2 ? (4u << 15) + take(&in, 2) % 4096 : take(&in, 3) % (1 << 20));
            }
            if (sz > 4 && space == KVM_VMM_PIO)
                sz = 4;
            kvm_pcihost_io_ops.access(&host, space, addr, d, sz, write);
            break;
        }
        case 17: {
            /* a vector masked (its source lent) or unmasked, or a VM-set pending bit */
            bool msix = take(&in, 1) & 1;
            unsigned vec = (unsigned)take(&in, 2) % (TRAP_MSIX_MAX + 8);
            unsigned k = (unsigned)take(&in, 1) % 5;
            if (k < 3)
                trap_set_source(&fn, msix, vec, &srcfd[k]);
            else if (k == 3)
                trap_set_source(&fn, msix, vec, NULL);
            else if (msix)
                trap_msix_set_pending(&fn, vec, take(&in, 1) & 1);
            else
                trap_msi_set_pending(&fn, vec, take(&in, 1) & 1);
            break;
        }
        case 18: {
            /* the device fires a masked vector, the VM drains it, or the source closes */
            unsigned k = (unsigned)take(&in, 1) % 3, what = (unsigned)take(&in, 1) % 3;
            uint64_t c = 1;
            if (srcfd[k] >= 0 && what == 0 && write(srcfd[k], &c, 8) != 8)
                abort();
            else if (srcfd[k] >= 0 && what == 1 && read(srcfd[k], &c, 8) < 0)
                c = 0;   /* EAGAIN: nothing was pending */
            else if (what == 2 && srcfd[k] >= 0)
                close(srcfd[k]), srcfd[k] = -1;
            break;
        }
        case 16:
            /* the function closes while the guest still reaches it */
            trap_free(&fn);
            closed = true;
            break;
        }
        if (closed) {
            /* a closed function reads all ones and forwards nothing */
            const struct lv_replay_stats *st = lv_replay_stats(be);
            uint64_t w = st->cfg_writes + st->region_writes, r = st->cfg_reads + st->region_reads;
            uint32_t x = 0;
            uint64_t y = 0;
            if (trap_cfg_read(&fn, 0, 4, &x) != 0 || x != 0xffffffff)
                abort();
            trap_cfg_write(&fn, 4, 2, 0x7);
            for (unsigned b = 0; b < 7; b++)
                if (fn.bars[b].size && !fn.bars[b].upper)
                    trap_bar_access(&fn, b, 0, 4, true, &y), trap_bar_access(&fn, b, 0, 4, false, &y);
            if (st->cfg_writes + st->region_writes != w || st->cfg_reads + st->region_reads != r)
                abort();
        }
        /* IDs, class, BARs, ROM, cap pointer, line/pin are emulated: a guest write there
         * must never reach the device (COMMAND/STATUS at 4..7 are forwarded by design) */
        be->ops->cfg_read(be->ctx, 0, hdr1, 64);
        if (memcmp(hdr0, hdr1, 4) || memcmp(hdr0 + 8, hdr1 + 8, 56))
            abort();
    }
    trap_free(&fn);
restore:
    for (unsigned idx = 0; idx < LV_REGION_MAX; idx++)
        if (mutated & 1u << idx)
            lv_replay_set_region(be, idx, orig[idx].size, orig[idx].flags);
    lv_replay_reset(be);
    return 0;
}
