/* libFuzzer target: what a guest reaches in C when it leaves KVM_RUN. The run loop's
 * exit decode and dispatch (kvm_exit_decode, the body of kvm_vcpu_run) over a VM
 * set up without KVM as boot_linux.lua sets one up: the UART at 0x3f8 (IRQ 4, its
 * KVM_IRQ_LINE answered by this program's ioctl stand-in), the i8042, the ignored legacy
 * ranges, a debug console at 0xe9, an exit port at 0xf4 and the PCI host bridge (CF8-CFF
 * and an ECAM window over buses 0 to 16, the board's: address_map.lua's ECAM_BUSES) with
 * an emulated host bridge function at 00:00.0,
 * a PCIe root port with a hot-plug slot at 00:1c.0 (csrc/kvm/rootport.c: bus 1 behind
 * it, empty or holding the function below or another) and, in three inputs of four, a
 * passed-through function at 00:04.0 or behind the port: a trap over a recorded lab device
 * (fuzz/fixture.h, the replay backend) wired in as the VMM wires it, through the seam
 * (csrc/wire): its config space as a host bridge function (wire_trap_cfg_ops) and its
 * decoding BARs as handled ranges (wire_trap_io_ops) laid out as lua/vfio/vmm/layout.lua
 * lays them out (a range over every page the MSI-X table, the PBA or a quirk window
 * touches and over what lies past the device's region; over the whole BAR when it cannot
 * be mapped), derived again when the VM layer takes a BAR move or a decode change.
 * Each input is
 *   - for the function: the recording (or one whose header the input patches: BAR
 *     types, two I/O BARs, ...), quirks as a policy applies them (quirk windows:
 *     handler windows, which the seam passes on, and config mirrors; the MSI-X table
 *     moved to a new BAR; a BAR grown), --no-mmap, and where the BARs go (the address
 *     map's windows as the VMM's allocator places them, or anywhere the input says: over
 *     each other, the UART, ECAM, the irqchip), the ROM and decoding switched on or not;
 *   - a sequence of fake exits written into a fake kvm_run of one of three sizes (the
 *     struct alone, one page, three pages as x86 KVM maps it): an exit reason from the
 *     real set or any value; for IO the direction, size, port, count and data_offset,
 *     hostile ones (past the page, overflowing size * count) included; for MMIO the
 *     address, length, direction and data; addresses aimed at the function's ranges, its
 *     BARs' MSI-X table, PBA, windows and edges (stale ranges after a move included);
 *   - the guest writing the function's COMMAND, BAR, ROM, MSI and MSI-X control registers
 *     through ECAM; the VM layer taking the function's events (after a stop, or not yet)
 *     and deriving the layout again, and setting a masked vector's pending bit; the
 *     function closed under a live guest;
 *   - bytes fed to the UART's receive queue (a flood past its cap too), its capture and
 *     tail read back, its range released and added again, the UART closed;
 *   - the guest writing the root port's Slot Control (pciehp's commands: enables,
 *     indicators, power), Slot Status, MSI, COMMAND, bus numbers, Bridge Control or any
 *     register; the VMM inserting a function behind it (hot or from power-on), pressing
 *     the attention button, removing the function, taking the port's events (releasing
 *     the function when the guest powered the slot off).
 * Invariants checked beyond ASan/UBSan: IO data outside the page and MMIO lengths past
 * mmio.data are refused with -EPROTO, and nothing else is; an unhandled read answers all
 * ones (with pending_read) and an unhandled access goes back to the caller with its
 * decoded address, size, count and direction; a handled one never does, except as
 * KVM_VMM_EXIT_STOP, which the exit port's writes and the i8042's reset pulse always
 * give and nothing but them, the host bridge's config writes and the function's BAR
 * accesses ever does, each with its stop reason; ignored ports read their value, the
 * debug console 0xe9, absent PCI functions all ones; the other exit reasons map to their
 * kinds with their codes; the UART's capture, tail and receive queue stay within their
 * caps and agree, and the IRQ line KVM was last told is the one the UART believes,
 * lowered when its range goes. Through the seam: an access to the function's ranges
 * goes back to the caller unanswered exactly when a handler window holds it whole (this
 * program's own model of the trap's decode: the first decoding BAR of its space, the
 * MSI-X table and PBA first, no ROM), with its address, size, count and direction, a
 * read all ones and pending, a write's bytes as written, nothing made (no device access,
 * no config or MSI-X table change, no event, no handler run), and the caller's own
 * access then runs the handler once; a string access whose first elements, answered in
 * C, made the port decode to a handler window goes back from there, never with those
 * elements; an access answered in C never runs a handler, reads what the trap core
 * reads (trap_addr_access; all ones for sizes no BAR takes) and stops with
 * KVM_VMM_STOP_BAR only when the function holds events and always when it queued some;
 * a config write to the function likewise stops with KVM_VMM_STOP_CONFIG; a config read
 * reads the trap core's value; a closed function reads all ones, never passes, never
 * stops and reaches nothing. The root port: its read-only registers never change; it
 * reads its registers (zero past 256 bytes) and a config write to it stops exactly when
 * it holds events; presence follows what the VMM put behind it, the link presence and
 * power; the function behind it answers at secondary:00.0 only while the link is up and
 * the bus numbers decode it (this program's own model of the routing), through ECAM
 * (its bus from the address) as through CF8, the trap with the trap core's config and
 * the other function with its own bytes, everything else on those buses all ones; an MSI is queued on each rise of "HPIE, an enabled event
 * pending, MSI and bus master on", INTx is that level's when MSI is off, and an MSI
 * event comes only with MSI enabled. */
#include "base/le.h"
#include "fixture.h"
#include "input.h"
#include "kvm/debugcon.h"
#include "kvm/kvm.h"
#include "kvm/legacy.h"
#include "kvm/pcihost.h"
#include "kvm/rootport.h"
#include "kvm/uart.h"
#include "wire/trap_kvm.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>

#define FAKE_VM_FD 1000
#define UART_BASE 0x3f8
#define UART_IRQ 4
#define UART_CAPTURE 256
#define ECAM_BASE 0xb0000000ull
#define ECAM_BUSES 17u            /* the board's: bus 0 and 16 root ports' secondary buses */
#define ECAM_SIZE ((uint64_t)ECAM_BUSES << 20)
#define EXIT_PORT 0xf4
#define DEBUGCON_PORT 0xe9
#define TRAP_DEV 4
#define PORT_DEV 0x1c             /* the PCIe root port, 00:1c.0 */
#define PORT_BDF (PORT_DEV << 3)
#define PORT_SEC 0x19             /* its secondary and subordinate bus numbers */
#define PORT_SUB 0x1a
#define EXP KVM_ROOTPORT_PCIE_CAP
#define SLTCTL (EXP + 0x18)
#define SLTSTA (EXP + 0x1a)
#define LNKSTA (EXP + 0x12)
#define MAX_FX 16
/* address_map.lua's BAR windows */
#define MMIO32_START 0xc0000000ull
#define MMIO64_START (512ull << 30)
#define IO_START 0xc000u
#define LARGE (256ull << 20)   /* layout.lua: a 64-bit BAR this large goes above 4 GiB */
#define PAGE 4096u
#define MAX_PIECES 64

#define CHECK(c)                                                                       \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "exit_fuzz: %s:%d: %s\n", __FILE__, __LINE__, #c);         \
            abort();                                                                   \
        }                                                                              \
    } while (0)

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
/* the root port as set up (port0), and a function that is not the trap to put behind it */
static struct kvm_rootport rport, rport0;
static struct kvm_cfgspace leaf;
static const void *port_child;   /* what this program put behind the port (&fn, &leaf) */
static int behind_port;          /* the trap sits behind the port this input */
static unsigned msi_taken;       /* the port's MSIs the VM layer took */
static struct lv_backend backends[MAX_FX];
static unsigned nfx;
static struct trap_fn fn;
static struct lv_backend *fn_be;   /* the function's backend this input */
static int trap_on;
static int i8042_touched;
static int last_stop;       /* the last exit was a stop: the VM layer acts on it */   /* its state changed this input: set it up again */
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
    /* the root port as the board leaves an empty one: bus 1 behind it, windows open */
    struct kvm_rootport_setup rs = {
        .vendor = 0x1b36, .device = 0x000c, .port_number = 1, .slot_number = 1,
        .secondary = 1, .subordinate = 1, .io_base = 0x1000, .io_size = 0x1000,
        .mem_base = 0xc0000000u, .mem_size = 2u << 20,
        .pref_base = MMIO64_START, .pref_size = 2u << 20};
    kvm_rootport_init(&rport0, &rs);
    rport = rport0;
    must(kvm_pcihost_attach(&host, 0, PORT_DEV, 0, &kvm_rootport_cfg_ops, &rport), "the root port");
    leaf.size = 4096;
    memcpy(leaf.bytes, "\x4d\x14\x08\xa8", 4);
    memset(leaf.wmask + 0x40, 0xff, 0x40);
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

/* ---- the passed-through function: its layout, as the VM layer derives it ---- */

static struct piece {
    int space, id;
    uint64_t base, size;
} pieces[MAX_PIECES];      /* the function's handled ranges, registered with the seam's ops */
static unsigned npieces;
static int no_mmap;        /* no BAR mapped: every BAR one range (--no-mmap) */
static int in_seam;        /* kvm_exit_decode runs */
static unsigned handler_calls;

/* A handler window's handler (a Lua quirk window's, in the VMM): only the run's caller
 * may run it, with trap_addr_access, never the seam. */
static int window_handler(struct trap_fn *f, void *ctx, int id, bool write, uint64_t off,
                          uint32_t len, uint64_t *val)
{
    (void)f, (void)ctx, (void)len;
    CHECK(!in_seam);
    handler_calls++;
    if (!write)
        *val = off * 0x0101010101010101ull + (uint64_t)id;
    return 0;
}

static void layout_clear(void)
{
    for (unsigned i = 0; i < npieces; i++)
        CHECK(kvm_remove_range(&vm, pieces[i].id) == 0);
    npieces = 0;
}

struct span {
    uint64_t lo, hi;
};

/* [off, off+len) of a BAR of `size` bytes, widened to whole pages and cut at its end. */
static void add_span(struct span *s, unsigned *n, uint64_t off, uint64_t len, uint64_t size)
{
    if (off >= size || !len)
        return;
    uint64_t hi = len > size - off ? size : off + len;
    hi = (hi + PAGE - 1) & ~(uint64_t)(PAGE - 1);
    s[(*n)++] = (struct span){off & ~(uint64_t)(PAGE - 1), hi > size ? size : hi};
}

/* layout.lua's bar_pieces and apply over the decoding BARs: a range over every page the
 * MSI-X table, the PBA or a quirk window (a handler window too: the seam passes its
 * accesses on) touches, and over what lies past the device's region; over the whole BAR
 * when it cannot be mapped (I/O, the ROM, a region without mmap, --no-mmap). A range the
 * address map refuses (over another range or the irqchip) is left out, as the VM layer
 * logs and leaves it. */
static void layout_derive(void)
{
    layout_clear();
    for (unsigned i = 0; i < TRAP_NBARS; i++) {
        const struct trap_bar *b = &fn.bars[i];
        if (!b->size || b->upper || b->mapped == TRAP_UNMAPPED)
            continue;
        int can_map = !no_mmap && i < 6 && (fn.regions[i].flags & LV_REGION_MMAP) && !b->io &&
                      b->size >= PAGE;
        struct span s[TRAP_WINDOWS_MAX + 3];
        unsigned n = 0;
        if (!can_map) {
            add_span(s, &n, 0, b->size, b->size);
        } else {
            uint64_t phys = b->phys_size < b->size ? b->phys_size : b->size;
            add_span(s, &n, phys, b->size - phys, b->size);
            if (fn.msix.off && fn.msix.table_bar == i)
                add_span(s, &n, fn.msix.table_off, (uint64_t)fn.msix.n * 16, b->size);
            if (fn.msix.off && fn.msix.pba_bar == i)
                add_span(s, &n, fn.msix.pba_off, ((uint64_t)fn.msix.n + 63) / 64 * 8, b->size);
            for (unsigned k = 0; k < fn.nwindows; k++)
                if (fn.windows[k].bar == i)
                    add_span(s, &n, fn.windows[k].off, fn.windows[k].len, b->size);
        }
        for (unsigned a = 1; a < n; a++)   /* by start */
            for (unsigned c = a; c > 0 && s[c].lo < s[c - 1].lo; c--) {
                struct span t = s[c];
                s[c] = s[c - 1], s[c - 1] = t;
            }
        for (unsigned a = 0; a < n;) {
            uint64_t lo = s[a].lo, hi = s[a].hi;
            for (a++; a < n && s[a].lo <= hi; a++)
                hi = s[a].hi > hi ? s[a].hi : hi;
            int space = b->io ? KVM_VMM_PIO : KVM_VMM_MMIO;
            int id = kvm_add_range(&vm, space, b->mapped + lo, hi - lo, &wire_trap_io_ops, &fn);
            CHECK(id > 0 || id == -EEXIST);
            if (id > 0 && npieces < MAX_PIECES)
                pieces[npieces++] = (struct piece){space, id, b->mapped + lo, hi - lo};
            else if (id > 0)
                CHECK(kvm_remove_range(&vm, id) == 0);
        }
    }
}

/* The VM layer acting on a stop: it takes the function's events and derives the layout
 * again only after one that can change it (a BAR moved, decoding switched). */
static void attend(void)
{
    struct trap_event ev;
    int relayout = 0;
    while (trap_on && trap_event_pop(&fn, &ev))
        relayout |= ev.type == TRAP_EV_BAR_MAP || ev.type == TRAP_EV_DECODE;
    if (relayout)
        layout_derive();
    /* the root port's: an MSI only when the guest enabled it; a power off releases */
    unsigned pe = kvm_rootport_events(&rport);
    uint64_t addr;
    uint32_t data;
    if (pe & KVM_ROOTPORT_EV_MSI)
        CHECK(kvm_rootport_msi(&rport, &addr, &data));
    if (pe & KVM_ROOTPORT_EV_MSI)
        msi_taken++;
    if ((pe & KVM_ROOTPORT_EV_POWER_OFF) && port_child) {
        CHECK(kvm_rootport_remove(&rport) == 0);
        port_child = NULL;
        CHECK(!(rport.cfg[SLTSTA] & 0x40));   /* presence gone */
    }
}

/* Where the trap answers config: 00:04.0, or the port's secondary bus, device 0. */
static unsigned fn_bdf(void)
{
    return behind_port ? (unsigned)rport.cfg[PORT_SEC] << 8 : TRAP_DEV << 3;
}

/* This program's own model of the port's routing: the function behind it answers at
 * secondary:00.0 while it is there and the slot is powered (the link up). */
static const void *behind(unsigned bdf)
{
    uint16_t ctl = (uint16_t)lv_le_get(rport.cfg + SLTCTL, 2);
    unsigned sec = rport.cfg[PORT_SEC], sub = rport.cfg[PORT_SUB];
    if (!port_child || (ctl & 0x0400) || !sec || sec > sub || bdf != sec << 8)
        return NULL;
    return port_child;
}

static int reachable(unsigned bdf)
{
    if (!trap_on)
        return 0;
    if (!behind_port)
        return bdf == TRAP_DEV << 3;
    return behind(bdf) == &fn;
}

/* The port's slot interrupt condition, from its registers (this program's own reading of
 * the PCIe rules): HPIE, and an event whose enable is set. */
static int slot_pending(void)
{
    uint16_t ctl = (uint16_t)lv_le_get(rport.cfg + SLTCTL, 2);
    uint16_t sta = (uint16_t)lv_le_get(rport.cfg + SLTSTA, 2);
    uint16_t en = (uint16_t)((ctl & 0x1f) | (ctl & 0x1000 ? 0x100 : 0));
    return (ctl & 0x20) && (sta & en);
}

static int msi_cond(void)
{
    return slot_pending() && (rport.cfg[KVM_ROOTPORT_MSI_CAP + 2] & 1) && (rport.cfg[4] & 4);
}

/* The port's invariants after a step: read-only registers as set up, presence and link
 * as this program put functions behind it and the guest powered the slot, an MSI queued
 * on each rise of the interrupt condition (unless the VM layer took it since), INTx the
 * condition's level when MSI is off. */
static void port_check(int cond0, unsigned taken0)
{
    static const struct {
        uint16_t off, len;
    } ro[] = {{0x00, 4}, {0x08, 4}, {0x0e, 1}, {0x34, 1}, {0x3d, 1}, {EXP, 8},
              {EXP + 0x0c, 4}, {EXP + 0x14, 4}, {KVM_ROOTPORT_MSI_CAP, 2}};
    for (unsigned i = 0; i < sizeof ro / sizeof ro[0]; i++)
        CHECK(!memcmp(rport.cfg + ro[i].off, rport0.cfg + ro[i].off, ro[i].len));
    uint16_t ctl = (uint16_t)lv_le_get(rport.cfg + SLTCTL, 2);
    CHECK(!!(rport.cfg[SLTSTA] & 0x40) == (port_child != NULL));
    CHECK(!!(rport.cfg[LNKSTA + 1] & 0x20) == (port_child && !(ctl & 0x0400)));
    if (msi_cond() && !cond0)
        CHECK((rport.pending & KVM_ROOTPORT_EV_MSI) || msi_taken != taken0);
    CHECK(kvm_rootport_intx(&rport) == (slot_pending() && !(rport.cfg[KVM_ROOTPORT_MSI_CAP + 2] & 1) &&
                                        !(rport.cfg[5] & 0x04)));
}

static void mmio_do(struct kvm_run *run, uint64_t addr, uint32_t len, uint8_t is_w, uint64_t d);

/* The guest writes one of the port's registers through ECAM: Slot Control (pciehp's
 * commands: enables, indicators, power), Slot Status (RW1C), MSI, COMMAND, the bus
 * numbers, Bridge Control, or anything. */
static void port_cfg_exit(struct in *in, struct kvm_run *run)
{
    uint8_t c = (uint8_t)take(in, 1);
    uint32_t reg, len = 2;
    uint64_t v;
    switch (c % 8) {
    case 0: reg = SLTCTL, v = take(in, 2) & 0x17ff; break;
    case 1: reg = SLTSTA, v = take(in, 2); break;
    case 2:
        reg = KVM_ROOTPORT_MSI_CAP + (c & 8 ? 2u : c & 16 ? 4u : 12u);
        len = c & 8 ? 2 : 4, v = take(in, 4);
        break;
    case 3: reg = 0x04, v = take(in, 2) & 0x0547; break;
    case 4: {   /* bus numbers: mostly a secondary bus ECAM reaches (its last one too) */
        uint8_t sec = (uint8_t)(c & 8 ? take(in, 1) : 1 + take(in, 1) % (ECAM_BUSES - 1));
        uint8_t sub = (uint8_t)(c & 16 ? take(in, 1) : sec);
        reg = 0x18, len = 4, v = (uint32_t)sub << 16 | (uint32_t)sec << 8;
        break;
    }
    case 5: reg = 0x3e, v = take(in, 2) & 0x7f; break;
    case 6: reg = SLTCTL, len = 4, v = take(in, 4); break;
    default:
        len = 1u << (c >> 3 & 3) % 3;
        reg = (uint32_t)take(in, 2) % 4096 & ~(len - 1), v = take(in, 4);
        break;
    }
    mmio_do(run, ECAM_BASE + ((uint64_t)PORT_BDF << 12) + reg, len, 1, v);
}

/* The VMM's side of the slot: a function arrives (the trap when it belongs behind the
 * port, else another), the attention button, a removal, the events taken. */
static void port_vmm(struct in *in)
{
    uint8_t c = (uint8_t)take(in, 1);
    switch (c % 4) {
    case 0: {
        const void *child = trap_on && behind_port ? (const void *)&fn : (const void *)&leaf;
        int rc = child == &fn ? kvm_rootport_insert(&rport, &wire_trap_cfg_ops, &fn, c & 8)
                              : kvm_rootport_insert(&rport, &kvm_cfgspace_ops, &leaf, c & 8);
        CHECK(rc == (port_child ? -EBUSY : 0));
        if (!port_child)
            port_child = child;
        break;
    }
    case 1: kvm_rootport_press(&rport); break;
    case 2:
        CHECK(kvm_rootport_remove(&rport) == (port_child ? 0 : -ENOENT));
        port_child = NULL;
        break;
    default: attend(); break;
    }
}

/* Firmware's BAR programming (layout.program) through the seam's config ops: addresses
 * from the address map's windows, largest first and naturally aligned, as the VMM's
 * allocator gives them, or (how & 1) anywhere the input says. */
static void place_bars(struct in *in, uint8_t how)
{
    uint64_t next32 = MMIO32_START, next64 = MMIO64_START, nextio = IO_START, prev = 0;
    unsigned order[TRAP_NBARS], n = 0;
    for (unsigned i = 0; i < TRAP_NBARS; i++)
        if (fn.bars[i].size && !fn.bars[i].upper)
            order[n++] = i;
    for (unsigned a = 1; a < n; a++)
        for (unsigned c = a; c > 0 && fn.bars[order[c]].size > fn.bars[order[c - 1]].size; c--) {
            unsigned t = order[c];
            order[c] = order[c - 1], order[c - 1] = t;
        }
    for (unsigned k = 0; k < n; k++) {
        unsigned i = order[k];
        const struct trap_bar *b = &fn.bars[i];
        uint64_t *next = b->io ? &nextio
                         : b->is64 && (b->prefetch || b->size >= LARGE) ? &next64
                                                                          : &next32;
        uint64_t a = (*next + b->size - 1) & ~(b->size - 1);
        *next = a + b->size;
        if (how & 1) {
            uint8_t c = (uint8_t)take(in, 1);
            switch (c % 6) {
            case 0: a = take(in, 8); break;
            case 1: a = prev; break;                                    /* over another BAR */
            case 2: a = b->io ? ports[c % NPORTS] : ECAM_BASE; break;   /* over a device */
            case 3: a = b->io ? take(in, 2) : 0xfec00000ull; break;      /* the IOAPIC */
            default: break;
            }
        }
        prev = a;
        uint32_t off = i == 6 ? 0x30 : 0x10 + 4 * i, lo = 0;
        wire_trap_cfg_ops.read(&fn, off, 4, &lo);
        if (i == 6) {
            wire_trap_cfg_ops.write(&fn, off, 4, ((uint32_t)a & 0xfffff800u) | !!(how & 2));
        } else {
            uint32_t keep = b->io ? 0x3 : 0xf;
            wire_trap_cfg_ops.write(&fn, off, 4, ((uint32_t)a & ~keep) | (lo & keep));
            if (b->is64)
                wire_trap_cfg_ops.write(&fn, off + 4, 4, (uint32_t)(a >> 32));
        }
    }
    /* decoding: memory and I/O (and bus master) mostly, or the input's choice */
    uint16_t cmd = how & 4 ? (uint16_t)(how >> 3 & 7) : 0x7;
    wire_trap_cfg_ops.write(&fn, 0x04, 2, cmd);
}

/* A trap over a recorded function at 00:04.0, set up as the VMM sets one up. */
static void trap_setup(struct in *in, unsigned mode)
{
    uint8_t pick = (uint8_t)take(in, 1);
    fn_be = &backends[(pick & 0x0f) % nfx];
    lv_replay_reset(fn_be);
    if (pick & 0x80) {
        /* a device unlike the recording in its header (BAR types: two I/O BARs, ...) */
        for (unsigned k = 0; k <= (pick >> 4 & 3); k++) {
            uint8_t off = (uint8_t)(take(in, 1) % 0x40), v = (uint8_t)take(in, 1);
            fn_be->ops->cfg_write(fn_be->ctx, off, &v, 1);
        }
    }
    behind_port = (mode & 0x10) != 0;
    if (trap_init(&fn, fn_be, mode & 0x20) != 0 ||
        (behind_port ? kvm_rootport_insert(&rport, &wire_trap_cfg_ops, &fn, pick & 0x40)
                     : kvm_pcihost_attach(&host, 0, TRAP_DEV, 0, &wire_trap_cfg_ops, &fn)) != 0) {
        trap_free(&fn);
        behind_port = 0;
        return;
    }
    if (behind_port)
        port_child = &fn;
    trap_on = 1;
    uint8_t q = (uint8_t)take(in, 1);
    no_mmap = q & 1;
    if ((q & 0x0e) == 0x0e && fn.msix.off) {
        /* the MSI-X table and PBA moved to a BAR of their own (a policy's relocation) */
        unsigned bar = (unsigned)take(in, 1) % 6;
        uint64_t size = 1ull << (12 + take(in, 1) % 4);
        uint8_t c = (uint8_t)take(in, 1);
        if (trap_set_bar_size(&fn, bar, size) == 0)
            trap_msix_relocate(&fn, bar, c & 1 ? 0 : take(in, 2) & ~7ull,
                               c & 1 ? size / 2 : take(in, 2) & ~7ull);
    }
    if ((q & 0x30) == 0x30)   /* a BAR grown past the device's region */
        trap_set_bar_size(&fn, (unsigned)take(in, 1) % 6, 1ull << (4 + take(in, 1) % 24));
    /* quirk windows: handler windows (Lua's) and config mirrors */
    unsigned nw = (unsigned)(q >> 6) + (unsigned)(take(in, 1) % 3);
    for (unsigned k = 0; k < nw; k++) {
        uint8_t c = (uint8_t)take(in, 1);
        struct trap_window w = {.bar = (uint8_t)(c % 6), .handler = window_handler, .id = (int)k};
        const struct trap_bar *b = &fn.bars[w.bar];
        w.len = c & 0x40 ? 1ull << take(in, 1) % 10 : 1 + take(in, 1) % 0x40;
        uint64_t at = 0;
        switch (c >> 3 & 3) {
        case 0:   /* beside the MSI-X table or PBA */
            if (fn.msix.off)
                at = c & 0x80 ? fn.msix.table_off + (uint64_t)fn.msix.n * 16 : fn.msix.pba_off + 8;
            break;
        case 1: at = b->size ? take(in, 3) % b->size : 0; break;
        case 2: at = b->size > w.len ? b->size - w.len : 0; break;
        default: at = take(in, 2); break;
        }
        w.off = at & ~(uint64_t)(take(in, 1) & 7);
        if ((take(in, 1) & 3) == 0) {
            w.kind = WIN_MIRROR;
            w.cfg_off = (uint32_t)take(in, 1) % 2 ? 0 : (uint32_t)take(in, 2) % TRAP_CFG_MAX;
        }
        trap_add_window(&fn, &w);
    }
    place_bars(in, (uint8_t)take(in, 1));
    attend();
}

static void trap_teardown(void)
{
    layout_clear();
    if (!behind_port)
        kvm_pcihost_detach(&host, 0, TRAP_DEV, 0);
    trap_free(&fn);
    trap_on = 0;
    behind_port = 0;
}

/* An address of the function's: in or at the edges of one of its ranges, or of one of its
 * BARs where the guest programmed it (decoding or not): its MSI-X table, PBA, windows,
 * end or anywhere. */
static uint64_t trap_pick(struct in *in, int io)
{
    uint8_t b = (uint8_t)take(in, 1);
    if ((b & 1) && npieces) {
        unsigned k = (unsigned)take(in, 1) % npieces;
        uint64_t base = pieces[k].base, size = pieces[k].size;
        switch (b >> 1 & 3) {
        case 0: return base + take(in, 2) % size;
        case 1: return base - 4 + take(in, 1) % 8;
        case 2: return base + size - 4 + take(in, 1) % 8;
        default: return base + take(in, 4) % size;
        }
    }
    unsigned i = (unsigned)take(in, 1) % TRAP_NBARS, j;
    for (j = 0; j < TRAP_NBARS; j++, i = (i + 1) % TRAP_NBARS)
        if (fn.bars[i].size && !fn.bars[i].upper && fn.bars[i].io == io)
            break;
    if (j == TRAP_NBARS)
        return take(in, io ? 2 : 8);
    const struct trap_bar *bar = &fn.bars[i];
    uint64_t at = 0, span = bar->size;
    switch (b >> 1 & 7) {
    case 0:
        if (fn.msix.off && fn.msix.table_bar == i)
            at = fn.msix.table_off, span = (uint64_t)fn.msix.n * 16;
        break;
    case 1:
        if (fn.msix.off && fn.msix.pba_bar == i)
            at = fn.msix.pba_off, span = ((uint64_t)fn.msix.n + 63) / 64 * 8;
        break;
    case 2:
    case 3:
        if (fn.nwindows) {
            const struct trap_window *w = &fn.windows[take(in, 1) % fn.nwindows];
            if (w->bar == i)
                at = w->off, span = w->len;
        }
        break;
    case 4: at = bar->size - 8, span = 8; break;
    default: break;
    }
    return bar->addr + at + take(in, 3) % (span + 8) - 4;
}

/* ---- the function's answers, checked ---- */

/* What a passed access must leave as it was. */
static struct {
    struct lv_replay_stats st;
    unsigned ev_count, handler_calls;
    uint64_t ev_lost;
    uint8_t shadow[TRAP_CFG_MAX];
    uint8_t table[16 * TRAP_MSIX_MAX];
    size_t table_len;
} before;

static void trap_snapshot(void)
{
    before.st = *lv_replay_stats(fn_be);
    before.ev_count = fn.ev_count;
    before.ev_lost = fn.ev_lost;
    before.handler_calls = handler_calls;
    memcpy(before.shadow, fn.shadow, sizeof fn.shadow);
    before.table_len = fn.msix.table ? (size_t)fn.msix.n * 16 : 0;
    if (before.table_len)
        memcpy(before.table, fn.msix.table, before.table_len);
}

static int device_untouched(void)
{
    const struct lv_replay_stats *st = lv_replay_stats(fn_be);
    return st->cfg_reads == before.st.cfg_reads && st->cfg_writes == before.st.cfg_writes &&
           st->region_reads == before.st.region_reads &&
           st->region_writes == before.st.region_writes;
}

static int nothing_made(void)
{
    return device_untouched() && fn.ev_count == before.ev_count && fn.ev_lost == before.ev_lost &&
           handler_calls == before.handler_calls &&
           !memcmp(before.shadow, fn.shadow, sizeof fn.shadow) &&
           (fn.msix.table ? (size_t)fn.msix.n * 16 : 0) == before.table_len &&
           (!before.table_len || !memcmp(before.table, fn.msix.table, before.table_len));
}

/* This program's own model of the seam's answer: a handler window takes an access when
 * the first decoding BAR of its space holding it whole is no ROM, the MSI-X table and PBA
 * (which come first) do not take it and the first window it touches holds it whole. */
static int model_passes(int io, uint64_t addr, unsigned size)
{
    if (fn.closed || !(size == 1 || size == 2 || size == 4 || size == 8))
        return 0;
    for (unsigned i = 0; i < TRAP_NBARS; i++) {
        const struct trap_bar *b = &fn.bars[i];
        if (!b->size || b->upper || b->mapped == TRAP_UNMAPPED || b->io != io ||
            addr < b->mapped || addr - b->mapped >= b->size || size > b->size - (addr - b->mapped))
            continue;
        uint64_t off = addr - b->mapped;
        if (i == 6)
            return 0;
        if (fn.msix.off) {
            uint64_t tl = (uint64_t)fn.msix.n * 16, pl = ((uint64_t)fn.msix.n + 63) / 64 * 8;
            if ((fn.msix.table_bar == i && off < fn.msix.table_off + tl &&
                 off + size > fn.msix.table_off) ||
                (fn.msix.pba_bar == i && off < fn.msix.pba_off + pl && off + size > fn.msix.pba_off))
                return 0;
        }
        for (unsigned k = 0; k < fn.nwindows; k++) {
            const struct trap_window *w = &fn.windows[k];
            if (w->bar == i && off < w->off + w->len && off + size > w->off)
                return w->kind == WIN_HANDLER && off >= w->off && off + size <= w->off + w->len;
        }
        return 0;
    }
    return 0;
}

static int in_piece(int space, uint64_t addr)
{
    for (unsigned i = 0; i < npieces; i++)
        if (pieces[i].space == space && addr >= pieces[i].base &&
            addr - pieces[i].base < pieces[i].size)
            return 1;
    return 0;
}

/* An exit that reached one of the function's ranges: `pass` is the model's answer from
 * before it, `wbytes` a copy of a write's first `wn` bytes. */
static void trap_exit_check(int io, uint64_t addr, unsigned size, unsigned count, int is_write,
                            uint8_t *data, const uint8_t *wbytes, size_t wn, int rc,
                            const struct kvm_exit *x, int pass)
{
    int space = io ? KVM_VMM_PIO : KVM_VMM_MMIO;
    int passed = rc == KVM_VMM_DECODE_DONE &&
                 x->kind == (io ? KVM_VMM_EXIT_IO : KVM_VMM_EXIT_MMIO);
    if (is_write)
        CHECK(!memcmp(data, wbytes, wn));   /* a write's bytes stay as the guest wrote them */
    if (passed && pass) {   /* passed whole, as nothing of it was made */
        CHECK(x->count == count && x->data == data && nothing_made());
    } else if (passed) {
        /* a string access whose first elements were answered in C until one of them made
         * the port decode to a handler window: the rest goes back, never those again */
        CHECK(io && x->count < count && model_passes(io, addr, size));
        CHECK(x->data == data + (size_t)(count - x->count) * size);
        CHECK(handler_calls == before.handler_calls);
    } else {
        CHECK(!pass);   /* a handler window's access is never made in C */
    }
    if (passed) {
        CHECK(x->space == space && x->addr == addr && x->size == size &&
              x->is_write == is_write && x->stop == KVM_VMM_STOP_NONE);
        count = x->count, data = x->data;
        if (!is_write)
            CHECK(cpu.pending_read && all(data, (size_t)size * count, 0xff));
        /* the caller makes it through the trap: the window's handler runs, once each */
        for (unsigned i = 0; i < count && i < 4; i++) {
            uint64_t v = is_write ? lv_le_get(data + (size_t)i * size, size) : 0;
            unsigned calls = handler_calls;
            CHECK(trap_addr_access(&fn, io, addr, size, is_write, &v) == 0 &&
                  handler_calls == calls + 1);
        }
        return;
    }
    CHECK(handler_calls == before.handler_calls);
    /* a stop: answered, with events for the VM layer; events it queued always stop */
    if (rc == KVM_VMM_DECODE_DONE)
        CHECK(x->kind == KVM_VMM_EXIT_STOP && x->stop == KVM_VMM_STOP_BAR && x->space == space &&
              x->addr == addr && x->size == size && fn.ev_count > 0);
    else
        CHECK(rc == KVM_VMM_DECODE_RESUME && fn.ev_count <= before.ev_count);
    if (fn.closed) {
        CHECK(device_untouched() && rc == KVM_VMM_DECODE_RESUME);
        if (!is_write)
            CHECK(all(data, (size_t)size * count, 0xff));
        return;
    }
    if (is_write || count != 1)
        return;
    if (!(size == 1 || size == 2 || size == 4 || size == 8)) {
        CHECK(all(data, size, 0xff));
        return;
    }
    /* what the trap core reads there (the replay backend's reads have no side effects) */
    uint64_t v = 0;
    if (trap_addr_access(&fn, io, addr, size, false, &v) >= 0) {
        uint8_t want[8];
        lv_le_put(want, v, size);
        CHECK(!memcmp(data, want, size));
    } else {
        CHECK(all(data, size, 0xff));
    }
}

/* One IO exit. */
static void io_exit(struct in *in, struct kvm_run *run, size_t run_size)
{
    uint8_t b = (uint8_t)take(in, 1);
    uint8_t dir = b < 0xf0 ? (b & 1) : (uint8_t)take(in, 1);
    b = (uint8_t)take(in, 1);
    uint8_t size = b % 8 < 6 ? (uint8_t)(1u << (b % 3)) : (uint8_t)take(in, 1);
    b = (uint8_t)take(in, 1);
    uint16_t port = trap_on && b >= 0xc0       ? (uint16_t)trap_pick(in, 1)
                    : b % (NPORTS + 1) == NPORTS ? (uint16_t)take(in, 2)
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
    int trap_range = !bad && in_piece(KVM_VMM_PIO, port), pass = 0;
    uint8_t wbytes[64];
    size_t wn = 0;
    if (trap_range) {
        trap_snapshot();
        pass = model_passes(1, port, size);
        wn = bytes < sizeof wbytes ? (size_t)bytes : sizeof wbytes;
        memcpy(wbytes, data, wn);
    }
    uint32_t cf8 = host.addr;
    unsigned ev0 = trap_on ? fn.ev_count : 0;
    struct kvm_exit x;
    memset(&x, 0x5a, sizeof x);
    int err = 0;
    cpu.pending_read = 0;
    in_seam = 1;
    int rc = kvm_exit_decode(&cpu, run, &x, &err);
    in_seam = 0;
    if (bad) {
        CHECK(rc == KVM_VMM_DECODE_DONE && err == -EPROTO && x.reason == KVM_EXIT_IO);
        return;
    }
    CHECK(err == 0);
    if (overlaps)
        return;
    CHECK(rc == KVM_VMM_DECODE_RESUME || x.reason == KVM_EXIT_IO);
    if (trap_range) {
        trap_exit_check(1, port, size, count, is_write, data, wbytes, wn, rc, &x, pass);
        if (rc == KVM_VMM_DECODE_DONE && x.kind == KVM_VMM_EXIT_STOP)
            last_stop = 1;
        return;
    }
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
        last_stop = 1;
    } else {
        CHECK(rc == KVM_VMM_DECODE_RESUME);
        CHECK(!is_write || port != EXIT_PORT);
        CHECK(!is_write || port != 0x64 || !stop_byte);
    }
    /* a config write to the function through CF8/CFC: a stop only when it holds events,
     * always when the write queued some; to the root port, a stop exactly when the port
     * holds events (one element: a string's later ones may go elsewhere) */
    if (port >= 0xcfc && port <= 0xcff && is_write && count == 1 && port - 0xcfc + size <= 4 &&
        (cf8 & 0x80ffff00u) == (0x80000000u | PORT_BDF << 8))
        CHECK((rc == KVM_VMM_DECODE_DONE) == (rport.pending != 0));
    if (port >= 0xcfc && port <= 0xcff && is_write && trap_on && !fn.closed &&
        (cf8 & 0x80ffff00u) == (0x80000000u | fn_bdf() << 8) && reachable(fn_bdf()) &&
        port - 0xcfc + size <= 4) {
        int stopped = rc == KVM_VMM_DECODE_DONE;
        CHECK(!stopped || fn.ev_count > 0);
        CHECK(stopped || fn.ev_count <= ev0);
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

/* One MMIO exit, checked. */
static void mmio_do(struct kvm_run *run, uint64_t addr, uint32_t len, uint8_t is_w, uint64_t d)
{
    run->exit_reason = KVM_EXIT_MMIO;
    run->mmio.phys_addr = addr;
    run->mmio.len = len;
    run->mmio.is_write = is_w;
    memcpy(run->mmio.data, &d, 8);
    int is_write = is_w != 0;
    int trap_range = len && len <= 8 && in_piece(KVM_VMM_MMIO, addr), pass = 0;
    if (trap_range) {
        trap_snapshot();
        pass = model_passes(0, addr, len);
    }
    unsigned ev0 = trap_on ? fn.ev_count : 0;
    struct kvm_exit x;
    memset(&x, 0x5a, sizeof x);
    int err = 0;
    cpu.pending_read = 0;
    in_seam = 1;
    int rc = kvm_exit_decode(&cpu, run, &x, &err);
    in_seam = 0;
    CHECK(x.reason == KVM_EXIT_MMIO);
    if (len == 0 || len > 8) {
        CHECK(rc == KVM_VMM_DECODE_DONE && err == -EPROTO);
        return;
    }
    CHECK(err == 0);
    if (trap_range) {
        uint8_t wbytes[8];
        memcpy(wbytes, &d, 8);
        trap_exit_check(0, addr, len, 1, is_write, run->mmio.data, wbytes, len, rc, &x, pass);
        if (rc == KVM_VMM_DECODE_DONE && x.kind == KVM_VMM_EXIT_STOP)
            last_stop = 1;
        return;
    }
    int ecam = addr >= ECAM_BASE && addr - ECAM_BASE < ECAM_SIZE;
    if (!ecam) {
        CHECK(rc == KVM_VMM_DECODE_DONE && x.kind == KVM_VMM_EXIT_MMIO && x.space == KVM_VMM_MMIO);
        CHECK(x.addr == addr && x.size == len && x.count == 1 && x.is_write == is_write);
        CHECK(x.data == run->mmio.data);
        if (!is_write)
            CHECK(cpu.pending_read && all(run->mmio.data, len, 0xff));
        return;
    }
    if (rc == KVM_VMM_DECODE_DONE) {
        CHECK(x.kind == KVM_VMM_EXIT_STOP && is_write && x.addr == addr &&
              x.stop == KVM_VMM_STOP_CONFIG);   /* an event */
        last_stop = 1;
    } else {
        CHECK(rc == KVM_VMM_DECODE_RESUME);
    }
    /* a function that is not there, or an access no function takes: all ones */
    uint64_t off = addr - ECAM_BASE;
    unsigned bdf = (unsigned)(off >> 12), reg = (unsigned)(off & 0xfff);
    int present = bdf == 0 || bdf == PORT_BDF || reachable(bdf) || behind(bdf) == &leaf;
    int shape_ok = ((len == 1 || len == 2 || len == 4) && reg % len == 0) ||
                   (len == 8 && reg % 8 == 0);
    if (!is_write && (!present || !shape_ok))
        CHECK(all(run->mmio.data, len, 0xff));
    if (!is_write && bdf == 0 && shape_ok && reg >= 256)
        CHECK(all(run->mmio.data, len, 0xff));   /* past the bridge's 256 bytes */
    if (bdf == PORT_BDF && shape_ok) {
        if (is_write) {
            /* a stop exactly when the port holds events for the VM layer */
            CHECK((rc == KVM_VMM_DECODE_DONE) == (rport.pending != 0));
            return;
        }
        for (unsigned k = 0; k < len; k++)   /* its registers; no extended capability */
            CHECK(run->mmio.data[k] == (reg + k < 256 ? rport.cfg[reg + k] : 0));
        return;
    }
    if (!is_write && shape_ok && behind(bdf) == &leaf) {
        /* the other function behind the port, on a bus past 0: its bytes, 4 KiB of them */
        CHECK(!memcmp(run->mmio.data, leaf.bytes + reg, len));
        return;
    }
    if (bdf != fn_bdf() || !reachable(bdf) || !shape_ok)
        return;
    if (is_write) {
        /* the function's config written: a stop only when it holds events, always when
         * the write queued some */
        int stopped = rc == KVM_VMM_DECODE_DONE;
        CHECK(!stopped || fn.ev_count > 0);
        CHECK(stopped || fn.ev_count <= ev0);
        return;
    }
    for (unsigned k = 0; k < len; k += 4) {   /* the trap core's config, through the seam */
        unsigned n = len < 4 ? len : 4;
        uint32_t v = 0;
        uint8_t want[4];
        CHECK(trap_cfg_read(&fn, reg + k, n, &v) == 0);
        lv_le_put(want, v, n);
        CHECK(!memcmp(run->mmio.data + k, want, n));
    }
}

/* One MMIO exit from the input: ECAM, the function's ranges and BARs, anywhere. */
static void mmio_exit(struct in *in, struct kvm_run *run)
{
    uint8_t b = (uint8_t)take(in, 1);
    uint64_t addr;
    if (trap_on && b >= 0x80) {
        addr = trap_pick(in, 0);
    } else {
        switch (b % 8) {
        case 0: case 1: case 2: {   /* the host bridge's function, the trap's, the port's,
                                       the port's secondary bus (device 0 or any) */
            unsigned sec = (unsigned)rport.cfg[PORT_SEC] << 8 | (b & 64 ? (unsigned)take(in, 1) : 0);
            addr = ECAM_BASE + ((uint64_t)(b & 8 ? fn_bdf() : b & 16 ? PORT_BDF : b & 32 ? sec : 0) << 12) +
                   take(in, 2) % 4096;
            break;
        }
        case 3: addr = ECAM_BASE + take(in, 3) % ECAM_SIZE; break;
        case 4: addr = ECAM_BASE + ECAM_SIZE - 8 + take(in, 1) % 16; break;   /* its end */
        case 5: addr = ECAM_BASE - 8 + take(in, 1) % 16; break;               /* its start */
        default: addr = take(in, 8);
        }
    }
    b = (uint8_t)take(in, 1);
    uint32_t len = b % 8 < 6 ? 1u << (b % 4) : b % 8 == 6 ? (uint32_t)(b >> 3) % 10
                                                          : (uint32_t)take(in, 4);
    b = (uint8_t)take(in, 1);
    uint8_t is_w = b < 0xf0 ? (b & 1) : (uint8_t)take(in, 1);
    mmio_do(run, addr, len, is_w, take(in, 8));
}

/* The guest writes one of the function's registers with side effects through ECAM:
 * COMMAND, a BAR (a move, sizing, a stale or clashing address), the ROM BAR, MSI's or
 * MSI-X's message control. */
static void cfg_exit(struct in *in, struct kvm_run *run)
{
    uint8_t c = (uint8_t)take(in, 1);
    uint32_t reg, len = 4;
    uint64_t v;
    switch (c % 8) {
    case 0: reg = 0x04, len = 2, v = take(in, 2); break;
    case 1: case 2: case 3: {
        reg = 0x10 + 4 * (uint32_t)(take(in, 1) % 6);
        uint8_t k = (uint8_t)take(in, 1);
        v = k % 4 == 0 ? 0xffffffffu                                         /* sizing */
            : k % 4 == 1 ? MMIO32_START + (take(in, 2) << 12)                /* a move */
            : k % 4 == 2 ? IO_START + (take(in, 1) << 4)
                         : take(in, 4);
        break;
    }
    case 4: reg = 0x30, v = (MMIO32_START + (take(in, 2) << 12)) | (take(in, 1) & 1); break;
    case 5: reg = fn.msix.off + 2u, len = 2, v = take(in, 2) & 0xc000; break;
    case 6: reg = fn.msi.off + 2u, len = 2, v = take(in, 2) & 0x71; break;
    default: reg = (uint32_t)take(in, 1) & 0xfc, v = take(in, 4); break;
    }
    mmio_do(run, ECAM_BASE + ((uint64_t)fn_bdf() << 12) + (reg & 0xfff), len, 1, v);
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
    /* a passed-through function behind the host bridge and in the address map, in three
     * inputs of four (mode bit 0x20: on a PCIe bus); mode bit 0x40: a VM layer that
     * takes the function's events only when the input says, not after every stop */
    if (mode & 0x0c)
        trap_setup(&in, mode);
    int lazy = mode & 0x40;
    /* at least one step: the empty input too reaches the code under test (libFuzzer
     * gives up on a target whose first input covers nothing) */
    for (unsigned steps = 0; steps == 0 || (in.n && steps < 256); steps++) {
        unsigned op = (unsigned)take(&in, 1) % 22;
        last_stop = 0;
        int cond0 = msi_cond();
        unsigned taken0 = msi_taken;
        if (op < 7) {
            io_exit(&in, run, cpu.run_size);
        } else if (op < 11 || (op >= 16 && op <= 19 && !trap_on)) {
            mmio_exit(&in, run);
        } else if (op == 16 || op == 17) {   /* the guest reprograms the function */
            cfg_exit(&in, run);
        } else if (op == 18) {   /* the VM layer: a masked vector's pending bit, its events */
            uint8_t b = (uint8_t)take(&in, 1);
            if (trap_on && (b & 1))
                trap_msix_set_pending(&fn, b >> 2, b & 2);
            attend();
        } else if (op == 19) {               /* the function closes under a live guest */
            if ((take(&in, 1) & 7) == 0)
                trap_free(&fn);
            else
                mmio_exit(&in, run);
        } else if (op == 20) {   /* the guest drives the root port */
            port_cfg_exit(&in, run);
        } else if (op == 21) {   /* the VMM drives its slot */
            port_vmm(&in);
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
        port_check(cond0, taken0);
        if (last_stop && !lazy)
            attend();
    }
    /* back to the machine as set up, cheaply */
    if (trap_on)
        trap_teardown();
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
    rport = rport0;
    port_child = NULL;
    host.addr = 0;
    return 0;
}
