/* libFuzzer target: what a guest reaches in C when it leaves KVM_RUN. The run loop's
 * exit decode and dispatch (kvm_exit_decode, the body of kvm_vcpu_run) over a VM
 * set up without KVM as boot_linux.lua sets one up: the UART at 0x3f8 (IRQ 4, its
 * KVM_IRQ_LINE answered by this program's ioctl stand-in), the i8042, the ignored legacy
 * ranges, a debug console at 0xe9, an exit port at 0xf4 and the PCI host bridge (CF8-CFF
 * and an ECAM window) with an emulated host bridge function at 00:00.0 and, when the
 * input asks, a trap over a recorded lab device at 00:04.0 (fuzz/fixture.h).
 * Each input is a sequence of
 *   - fake exits written into a fake kvm_run of one of three sizes (the struct alone,
 *     one page, three pages as x86 KVM maps it): an exit reason from the real set or
 *     any value; for IO the direction, size, port, count and data_offset, hostile ones
 *     (past the page, overflowing size * count) included; for MMIO the address, length,
 *     direction and data;
 *   - bytes fed to the UART's receive queue (a flood past its cap too), its capture and
 *     tail read back, its range released and added again, the UART closed.
 * Invariants checked beyond ASan/UBSan: IO data outside the page and MMIO lengths past
 * mmio.data are refused with -EPROTO, and nothing else is; an unhandled read answers all
 * ones (with pending_read) and an unhandled access goes back to the caller with its
 * decoded address, size, count and direction; a handled one never does, except as
 * KVM_VMM_EXIT_STOP, which the exit port's writes and the i8042's reset pulse always
 * give and nothing but them and the host bridge's config writes ever does, each with its
 * stop reason; ignored
 * ports read their value, the debug console 0xe9, absent PCI functions all ones; the
 * other exit reasons map to their kinds with their codes; the UART's capture, tail and
 * receive queue stay within their caps and agree, and the IRQ line KVM was last told
 * is the one the UART believes, lowered when its range goes. */
#include "fixture.h"
#include "input.h"
#include "kvm/debugcon.h"
#include "kvm/kvm.h"
#include "kvm/legacy.h"
#include "kvm/pcihost.h"
#include "kvm/uart.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>

#define FAKE_VM_FD 1000
#define UART_BASE 0x3f8
#define UART_IRQ 4
#define UART_CAPTURE 256
#define ECAM_BASE 0xb0000000ull
#define ECAM_SIZE (1ull << 20)
#define EXIT_PORT 0xf4
#define DEBUGCON_PORT 0xe9
#define TRAP_DEV 4
#define MAX_FX 16

/* ---- KVM's stand-in: the KVM core's ioctl calls come here (-Wl,--wrap=ioctl) ---- */

static int irq_line[32];   /* the level KVM was last given, -1: never */

int __wrap_ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (fd == FAKE_VM_FD && req == KVM_IRQ_LINE) {
        const struct kvm_irq_level *l = arg;
        if (l->irq < 32)
            irq_line[l->irq] = (int)l->level;
        return 0;
    }
    abort();   /* the decode and the devices must ask KVM for nothing else */
}

/* ---- the machine, set up once ---- */

static struct kvm_vm vm = {.fd = FAKE_VM_FD, .irqchip = 1, .vfio_fd = -1,
                           .next_range_id = 1};
static struct kvm_uart uart, uart0;   /* uart0: as set up, copied back per input */
static int uart_id, i8042_id;
static struct kvm_debugcon dcon;
static struct kvm_pcihost host;
static struct kvm_cfgspace bridge;
static uint8_t bridge0[256];
static struct lv_backend backends[MAX_FX];
static unsigned nfx;
static struct trap_fn fn;
static int trap_on;
static int i8042_touched;   /* its state changed this input: set it up again */
static struct kvm_vcpu cpu;
static uint8_t *pages[3];
static size_t page_size[3];

static const struct {
    uint16_t base, size;
    uint8_t value;
} ignored[] = {   /* boot_linux.lua's M.IGNORED */
    {0x22, 2, 0xff}, {0x70, 2, 0x00}, {0x80, 16, 0xff}, {0x92, 1, 0xff}, {0x2e8, 8, 0xff},
    {0x2f8, 8, 0xff}, {0x3b0, 0x30, 0xff}, {0x3e8, 8, 0xff}, {0x3f0, 8, 0xff},
};
#define NIGNORED (sizeof ignored / sizeof ignored[0])

static void must(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "exit_fuzz: %s: %d\n", what, rc);
        exit(1);
    }
}

static void uart_setup(void)
{
    must(kvm_uart_init(&uart, UART_IRQ, 0, UART_CAPTURE), "kvm_uart_init");
    kvm_uart_attach(&uart, &vm, UART_BASE);
    uart_id = kvm_add_range(&vm, KVM_VMM_PIO, UART_BASE, KVM_UART_PORTS, &kvm_uart_ops, &uart);
    must(uart_id, "the UART's range");
    uart0 = uart;
}

static int hb_read(void *opaque, uint32_t off, uint32_t len, uint32_t *val)
{
    return trap_cfg_read(opaque, off, len, val);
}

static int hb_write(void *opaque, uint32_t off, uint32_t len, uint32_t val)
{
    return trap_cfg_write(opaque, off, len, val);
}

static const struct kvm_pci_cfg_ops trap_hb_ops = {.read = hb_read, .write = hb_write};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    nfx = load_fixtures(backends, MAX_FX, "exit_fuzz");
    for (unsigned i = 0; i < 32; i++)
        irq_line[i] = -1;
    uart_setup();
    i8042_id = kvm_add_i8042(&vm);
    must(i8042_id, "kvm_add_i8042");
    for (unsigned i = 0; i < NIGNORED; i++)
        must(kvm_add_ignore(&vm, ignored[i].base, ignored[i].size, ignored[i].value),
             "kvm_add_ignore");
    must(kvm_add_range(&vm, KVM_VMM_PIO, DEBUGCON_PORT, 1, &kvm_debugcon_ops, &dcon),
         "the debug console");
    must(kvm_add_exit_port(&vm, EXIT_PORT), "kvm_add_exit_port");
    /* the host bridge function (pcihost.host_bridge()): its command register and BAR 0
     * writable, a write to them an event for the VM layer (a stop exit) */
    bridge.size = 256;
    memcpy(bridge.bytes, "\x36\x1b\x08\x00", 4);
    bridge.bytes[0x0b] = 0x06;
    bridge.wmask[4] = bridge.wmask[5] = 0xff;
    memset(bridge.wmask + 0x10, 0xff, 4);
    bridge.notify[4] = bridge.notify[0x10] = 1;
    memcpy(bridge0, bridge.bytes, sizeof bridge0);
    host.ecam_base = ECAM_BASE;
    host.ecam_size = ECAM_SIZE;
    must(kvm_pcihost_attach(&host, 0, 0, 0, &kvm_cfgspace_ops, &bridge), "kvm_pcihost_attach");
    must(kvm_add_range(&vm, KVM_VMM_PIO, 0xcf8, 8, &kvm_pcihost_io_ops, &host), "CF8");
    must(kvm_add_range(&vm, KVM_VMM_MMIO, ECAM_BASE, ECAM_SIZE, &kvm_pcihost_io_ops, &host),
         "ECAM");
    /* the shared page: the struct alone, one page, three (x86 KVM's mmap size) */
    page_size[0] = sizeof(struct kvm_run);
    page_size[1] = 4096;
    page_size[2] = 3 * 4096;
    for (unsigned i = 0; i < 3; i++)
        if (!(pages[i] = calloc(1, page_size[i])))
            abort();
    cpu = (struct kvm_vcpu){.fd = -1, .vm = &vm};
    return 0;
}

/* ---- input ---- */


/* What this program knows of the port map (independently of the VM's ranges). */
static int ignored_value(uint64_t port)
{
    for (unsigned i = 0; i < NIGNORED; i++)
        if (port >= ignored[i].base && port < (uint64_t)ignored[i].base + ignored[i].size)
            return ignored[i].value;
    return -1;
}

static int pio_handled(uint64_t port)
{
    return (port >= UART_BASE && port < UART_BASE + KVM_UART_PORTS) || port == 0x60 ||
           port == 0x64 || port == DEBUGCON_PORT || port == EXIT_PORT ||
           (port >= 0xcf8 && port <= 0xcff) || ignored_value(port) >= 0;
}

static int all(const uint8_t *p, size_t n, uint8_t v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

#define CHECK(c)                                                                       \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "exit_fuzz: %s:%d: %s\n", __FILE__, __LINE__, #c);         \
            abort();                                                                   \
        }                                                                              \
    } while (0)

static const uint16_t ports[] = {UART_BASE, 0x60, 0x64, DEBUGCON_PORT, EXIT_PORT, 0xcf8, 0xcfc,
                                 0x22, 0x70, 0x80, 0x92, 0x2e8, 0x2f8, 0x3b0, 0x3e8, 0x3f0};
#define NPORTS (sizeof ports / sizeof ports[0])

static const uint32_t reasons[] = {
    KVM_EXIT_UNKNOWN, KVM_EXIT_EXCEPTION, KVM_EXIT_IO, KVM_EXIT_HYPERCALL, KVM_EXIT_DEBUG,
    KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_SHUTDOWN,
    KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTR, KVM_EXIT_SET_TPR, KVM_EXIT_TPR_ACCESS,
    KVM_EXIT_NMI, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_OSI, KVM_EXIT_PAPR_HCALL,
    KVM_EXIT_WATCHDOG, KVM_EXIT_EPR, KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_IOAPIC_EOI,
    KVM_EXIT_HYPERV, KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR, KVM_EXIT_DIRTY_RING_FULL,
    KVM_EXIT_X86_BUS_LOCK,
};
#define NREASONS (sizeof reasons / sizeof reasons[0])

/* One IO exit. */
static void io_exit(struct in *in, struct kvm_run *run, size_t run_size)
{
    uint8_t b = (uint8_t)take(in, 1);
    uint8_t dir = b < 0xf0 ? (b & 1) : (uint8_t)take(in, 1);
    b = (uint8_t)take(in, 1);
    uint8_t size = b % 8 < 6 ? (uint8_t)(1u << (b % 3)) : (uint8_t)take(in, 1);
    b = (uint8_t)take(in, 1);
    uint16_t port = b % (NPORTS + 1) == NPORTS
                        ? (uint16_t)take(in, 2)
                        : (uint16_t)(ports[b % (NPORTS + 1)] + (int)(take(in, 1) % 12) - 2);
    b = (uint8_t)take(in, 1);
    uint32_t count = b < 0xc0 ? 1 : b < 0xf8 ? (uint32_t)(b & 0x3f) + 1 : (uint32_t)take(in, 4);
    b = (uint8_t)take(in, 1);
    uint64_t off;
    switch (b % 8) {
    case 5: off = run_size - take(in, 1) % 64; break;             /* at the end */
    case 6: off = take(in, 2); break;
    case 7: off = take(in, 8); break;                             /* anything */
    default: off = run_size > 4096 ? 4096 : run_size - 256;       /* where KVM puts it */
    }
    uint64_t bytes = (uint64_t)size * count;
    int bad = size == 0 || size > 4 || count == 0 || off >= run_size || bytes > run_size - off;
    /* the data may lie over kvm_run's own fields (a hostile offset): then only what must
     * hold whatever it overwrites is checked */
    int overlaps = !bad && off < offsetof(struct kvm_run, io) + sizeof run->io;
    uint8_t *data = (uint8_t *)run + (bad ? 0 : off);
    int stop_byte = 0;
    if (!bad) {
        size_t n = bytes < 64 ? (size_t)bytes : 64;
        for (size_t i = 0; i < n; i++)
            data[i] = (uint8_t)take(in, 1);
        for (uint32_t i = 0; i < count; i++)
            if ((data[(size_t)i * size] & 0xf1) == 0xf0)
                stop_byte = 1;   /* an i8042 command pulsing the reset line */
    }
    if (port == 0x60 || port == 0x64)
        i8042_touched = 1;
    run->exit_reason = KVM_EXIT_IO;
    run->io.direction = dir;
    run->io.size = size;
    run->io.port = port;
    run->io.count = count;
    run->io.data_offset = off;
    int is_write = dir == KVM_EXIT_IO_OUT;
    struct kvm_exit x;
    memset(&x, 0x5a, sizeof x);
    int err = 0;
    cpu.pending_read = 0;
    int rc = kvm_exit_decode(&cpu, run, &x, &err);
    if (bad) {
        CHECK(rc == KVM_VMM_DECODE_DONE && err == -EPROTO && x.reason == KVM_EXIT_IO);
        return;
    }
    CHECK(err == 0);
    if (overlaps)
        return;
    CHECK(rc == KVM_VMM_DECODE_RESUME || x.reason == KVM_EXIT_IO);
    if (!pio_handled(port)) {
        CHECK(rc == KVM_VMM_DECODE_DONE && x.kind == KVM_VMM_EXIT_IO && x.space == KVM_VMM_PIO);
        CHECK(x.addr == port && x.size == size && x.count == count && x.data == data);
        CHECK(x.is_write == is_write);
        if (!is_write)
            CHECK(cpu.pending_read && all(data, (size_t)bytes, 0xff));
        return;
    }
    if (rc == KVM_VMM_DECODE_DONE) {
        /* a handled access comes back only as a stop */
        CHECK(x.kind == KVM_VMM_EXIT_STOP && x.space == KVM_VMM_PIO && x.addr == port);
        CHECK(x.stop == (port == EXIT_PORT ? KVM_VMM_STOP_EXIT_PORT
                         : port == 0x64     ? KVM_VMM_STOP_RESET
                                            : KVM_VMM_STOP_CONFIG));   /* C names the cause */
        CHECK(is_write && (port == EXIT_PORT || port == 0x64 || (port >= 0xcfc && port <= 0xcff)));
        CHECK(port != 0x64 || stop_byte);
    } else {
        CHECK(rc == KVM_VMM_DECODE_RESUME);
        CHECK(!is_write || port != EXIT_PORT);
        CHECK(!is_write || port != 0x64 || !stop_byte);
    }
    if (is_write)
        return;
    int v = ignored_value(port);
    if (v >= 0)
        CHECK(all(data, (size_t)bytes, (uint8_t)v));
    if (port == DEBUGCON_PORT)
        for (uint32_t i = 0; i < count; i++)
            CHECK(data[(size_t)i * size] == 0xe9 && all(data + (size_t)i * size + 1, size - 1u, 0));
    if (port >= UART_BASE && port < UART_BASE + KVM_UART_PORTS && uart.closed)
        CHECK(all(data, (size_t)bytes, 0xff));
}

/* One MMIO exit. */
static void mmio_exit(struct in *in, struct kvm_run *run)
{
    uint8_t b = (uint8_t)take(in, 1);
    uint64_t addr;
    switch (b % 8) {
    case 0: case 1: case 2:   /* the host bridge's function, or the trap's */
        addr = ECAM_BASE + (b & 8 ? (uint64_t)TRAP_DEV << 15 : 0) + take(in, 2) % 4096;
        break;
    case 3: addr = ECAM_BASE + take(in, 3) % ECAM_SIZE; break;
    case 4: addr = ECAM_BASE + ECAM_SIZE - 8 + take(in, 1) % 16; break;   /* its end */
    case 5: addr = ECAM_BASE - 8 + take(in, 1) % 16; break;               /* its start */
    default: addr = take(in, 8);
    }
    b = (uint8_t)take(in, 1);
    uint32_t len = b % 8 < 6 ? 1u << (b % 4) : (uint32_t)take(in, 4);
    b = (uint8_t)take(in, 1);
    uint8_t is_w = b < 0xf0 ? (b & 1) : (uint8_t)take(in, 1);
    uint64_t d = take(in, 8);
    run->exit_reason = KVM_EXIT_MMIO;
    run->mmio.phys_addr = addr;
    run->mmio.len = len;
    run->mmio.is_write = is_w;
    memcpy(run->mmio.data, &d, 8);
    struct kvm_exit x;
    memset(&x, 0x5a, sizeof x);
    int err = 0;
    cpu.pending_read = 0;
    int rc = kvm_exit_decode(&cpu, run, &x, &err);
    CHECK(x.reason == KVM_EXIT_MMIO);
    if (len == 0 || len > 8) {
        CHECK(rc == KVM_VMM_DECODE_DONE && err == -EPROTO);
        return;
    }
    CHECK(err == 0);
    int is_write = is_w != 0;
    int ecam = addr >= ECAM_BASE && addr - ECAM_BASE < ECAM_SIZE;
    if (!ecam) {
        CHECK(rc == KVM_VMM_DECODE_DONE && x.kind == KVM_VMM_EXIT_MMIO && x.space == KVM_VMM_MMIO);
        CHECK(x.addr == addr && x.size == len && x.count == 1 && x.is_write == is_write);
        CHECK(x.data == run->mmio.data);
        if (!is_write)
            CHECK(cpu.pending_read && all(run->mmio.data, len, 0xff));
        return;
    }
    if (rc == KVM_VMM_DECODE_DONE)
        CHECK(x.kind == KVM_VMM_EXIT_STOP && is_write && x.addr == addr &&
              x.stop == KVM_VMM_STOP_CONFIG);   /* an event */
    else
        CHECK(rc == KVM_VMM_DECODE_RESUME);
    /* a function that is not there, or an access no function takes: all ones */
    uint64_t off = addr - ECAM_BASE;
    unsigned bdf = (unsigned)(off >> 12), reg = (unsigned)(off & 0xfff);
    int present = bdf == 0 || (bdf == TRAP_DEV << 3 && trap_on);
    int shape_ok = ((len == 1 || len == 2 || len == 4) && reg % len == 0) ||
                   (len == 8 && reg % 8 == 0);
    if (!is_write && (!present || !shape_ok))
        CHECK(all(run->mmio.data, len, 0xff));
    if (!is_write && bdf == 0 && shape_ok && reg >= 256)
        CHECK(all(run->mmio.data, len, 0xff));   /* past the bridge's 256 bytes */
}

/* The other exit reasons: their kind and code. */
static void other_exit(struct in *in, struct kvm_run *run)
{
    uint8_t b = (uint8_t)take(in, 1);
    uint32_t reason = b < 0xe0 ? reasons[b % NREASONS] : (uint32_t)take(in, 4);
    if (reason == KVM_EXIT_IO || reason == KVM_EXIT_MMIO)
        reason = KVM_EXIT_HLT;
    uint64_t code = take(in, 8);
    run->exit_reason = reason;
    run->fail_entry.hardware_entry_failure_reason = code;
    struct kvm_exit x;
    memset(&x, 0, sizeof x);
    int err = 0;
    int rc = kvm_exit_decode(&cpu, run, &x, &err);
    CHECK(rc == KVM_VMM_DECODE_DONE && err == 0 && x.reason == reason);
    switch (reason) {
    case KVM_EXIT_HLT: CHECK(x.kind == KVM_VMM_EXIT_HLT); break;
    case KVM_EXIT_SHUTDOWN: CHECK(x.kind == KVM_VMM_EXIT_SHUTDOWN); break;
    case KVM_EXIT_INTR: CHECK(x.kind == KVM_VMM_EXIT_INTR); break;
    case KVM_EXIT_FAIL_ENTRY:
        CHECK(x.kind == KVM_VMM_EXIT_FAIL_ENTRY && x.code == code);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        CHECK(x.kind == KVM_VMM_EXIT_INTERNAL_ERROR && x.code == run->internal.suberror);
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        CHECK(x.kind == KVM_VMM_EXIT_SYSTEM_EVENT && x.code == run->system_event.type);
        break;
    default: CHECK(x.kind == KVM_VMM_EXIT_OTHER);
    }
}

static void uart_check(void)
{
    CHECK(uart.rx_len <= KVM_UART_RX_CAP && uart.rx_head < KVM_UART_RX_CAP);
    if (uart.closed)
        return;
    CHECK(uart.cap_len <= uart.cap_max && uart.sent == uart.cap_len + uart.dropped);
    if (uart.vm && uart.line >= 0)
        CHECK(irq_line[UART_IRQ] == uart.line);
}

static const uint8_t flood[KVM_UART_RX_CAP + 100];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    unsigned mode = (unsigned)take(&in, 1);
    cpu.run_size = page_size[mode % 3];
    struct kvm_run *run = (struct kvm_run *)pages[mode % 3];
    cpu.run = run;
    /* a passed-through function behind the host bridge (one input in 8 of random modes:
     * its setup costs more than the rest of an input, and trap_fuzz covers it in depth) */
    if ((mode & 0x1c) == 0x1c) {
        struct lv_backend *be = &backends[take(&in, 1) % nfx];
        lv_replay_reset(be);
        if (trap_init(&fn, be, mode & 0x20) == 0 &&
            kvm_pcihost_attach(&host, 0, TRAP_DEV, 0, &trap_hb_ops, &fn) == 0)
            trap_on = 1;
        else
            trap_free(&fn);
    }
    /* at least one step: the empty input too reaches the code under test (libFuzzer
     * gives up on a target whose first input covers nothing) */
    for (unsigned steps = 0; steps == 0 || (in.n && steps < 256); steps++) {
        unsigned op = (unsigned)take(&in, 1) % 16;
        if (op < 7) {
            io_exit(&in, run, cpu.run_size);
        } else if (op < 11) {
            mmio_exit(&in, run);
        } else if (op == 11) {
            other_exit(&in, run);
        } else if (op == 12) {   /* the console's input */
            uint8_t b = (uint8_t)take(&in, 1);
            size_t n = b == 0xff ? sizeof flood : b % 64 < in.n ? b % 64 : in.n;
            const uint8_t *p = b == 0xff ? flood : in.p;
            unsigned before = uart.rx_len;
            size_t got = kvm_uart_feed(&uart, p, n);
            if (b != 0xff)
                in.p += n, in.n -= n;
            CHECK(got <= n && (uart.closed ? got == 0 : uart.rx_len == before + got));
            CHECK(got == n || uart.closed || uart.rx_len == KVM_UART_RX_CAP);
        } else if (op == 13) {   /* the capture and tail, as a VMM shows them */
            static char tail[KVM_UART_TAIL];
            size_t n = kvm_uart_tail(&uart, tail);
            CHECK(n <= KVM_UART_TAIL && n == (uart.sent < KVM_UART_TAIL ? uart.sent : KVM_UART_TAIL));
            if (!uart.closed && !uart.dropped)
                CHECK(n == uart.cap_len && !memcmp(tail, uart.cap_buf, n));
        } else if (op == 14) {   /* the range goes (its IRQ line low) and comes back */
            int was = irq_line[UART_IRQ];
            CHECK(kvm_remove_range(&vm, uart_id) == 0);
            CHECK(uart.vm == NULL && uart.line == 0 && (was != 1 || irq_line[UART_IRQ] == 0));
            kvm_uart_attach(&uart, &vm, UART_BASE);
            uart_id = kvm_add_range(&vm, KVM_VMM_PIO, UART_BASE, KVM_UART_PORTS, &kvm_uart_ops, &uart);
            CHECK(uart_id > 0);
        } else if ((take(&in, 1) & 0xf) == 0) {   /* rarely: the UART closed */
            kvm_uart_close(&uart);
            CHECK(irq_line[UART_IRQ] != 1);
        }
        uart_check();
    }
    /* back to the machine as set up, cheaply */
    if (trap_on) {
        kvm_pcihost_detach(&host, 0, TRAP_DEV, 0);
        trap_free(&fn);
        trap_on = 0;
    }
    if (uart.closed) {
        must(kvm_remove_range(&vm, uart_id), "removing the closed UART");
        uart_setup();
    } else {
        uart = uart0;
    }
    irq_line[UART_IRQ] = -1;
    if (i8042_touched) {
        CHECK(kvm_remove_range(&vm, i8042_id) == 0 && kvm_remove_range(&vm, i8042_id + 1) == 0);
        i8042_id = kvm_add_i8042(&vm);
        CHECK(i8042_id > 0);
        i8042_touched = 0;
    }
    dcon.len = 0;
    dcon.dropped = 0;
    memcpy(bridge.bytes, bridge0, sizeof bridge0);
    host.addr = 0;
    return 0;
}
