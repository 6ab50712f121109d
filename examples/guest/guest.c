/* luavfio guest test program: a freestanding multiboot kernel that finds a PCI device
 * through CF8/CFC and, for QEMU's edu device, exercises MMIO, MSI, INTx and DMA.
 *
 * Output goes to the debug console port 0xe9, one fact per line:
 *   FOUND bb:dd.f vvvv:dddd         BAR<n> <io|mem32|mem64> <addr> size <size>
 *   TEST <name> PASS|FAIL <detail>  BENCH <name> <TSC cycles per operation>
 *   RESULT PASS|FAIL|NODEV
 * and the result is written to the exit port 0xf4 (QEMU's isa-debug-exit; a VMM traps
 * it): 0 pass, 1 fail, 2 device not found, 3 unexpected exception.
 * Command line (multiboot): "dev=VVVV:DDDD" selects another device to look for;
 * "ecam=XXXXXXXX" (8 hex digits) uses ECAM at that address instead of CF8/CFC;
 * "caps" prints the function's ID and capability lists (ID, CAP, ECAP lines);
 * "irqtest=N" tests a VMM's interrupt wiring instead: with the LAPIC and PIC set up it
 * writes 1 to SYNC_PORT, expects MSI vector 0x40 (fixed, APIC 0), writes 2, expects PIC
 * line N, and reports TEST msi_route / TEST intx_route.
 * BENCH lines: cfg_read for any device; for edu bar_read (ID), bar_write (liveness),
 * msi_roundtrip; for another device with an I/O BAR0 of 8+ ports, bar_read and bar_write
 * of its port 7 (a 16550's scratch register). */
#include <stddef.h>
#include <stdint.h>

#define DEBUG_PORT 0xe9
#define EXIT_PORT 0xf4
#define SYNC_PORT 0x510
#define EXIT_PASS 0
#define EXIT_FAIL 1
#define EXIT_NODEV 2
#define EXIT_EXCEPTION 3

#define MSI_VECTOR 0x40
#define PIC_BASE 0x20 /* PIC IRQ n arrives on vector 0x20 + n */
#define LAPIC_BASE 0xfee00000u
#define BAR_WINDOW 0xc0000000u /* where unassigned memory BARs are placed */

/* ---- freestanding basics ---- */

void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t mmio_rd(uint32_t a) { return *(volatile uint32_t *)(uintptr_t)a; }
static inline void mmio_wr(uint32_t a, uint32_t v) { *(volatile uint32_t *)(uintptr_t)a = v; }
static inline uint64_t rdtsc(void) { uint32_t lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((uint64_t)hi << 32) | lo; }
static inline void pause(void) { __asm__ volatile("pause"); }

static void putc_(char c) { outb(DEBUG_PORT, (uint8_t)c); }
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void puthexn(uint32_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--)
        putc_("0123456789abcdef"[(v >> (4 * i)) & 0xf]);
}
static void puthex(uint32_t v, int digits)
{
    puts_("0x");
    puthexn(v, digits);
}
static void putdec(uint32_t v)
{
    char b[11];
    int n = 0;
    do
        b[n++] = (char)('0' + v % 10), v /= 10;
    while (v);
    while (n)
        putc_(b[--n]);
}

static void finish(int code)
{
    puts_(code == EXIT_PASS ? "RESULT PASS\n" : code == EXIT_NODEV ? "RESULT NODEV\n"
                                                                   : "RESULT FAIL\n");
    outb(EXIT_PORT, (uint8_t)code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

static int failures;

static void test(const char *name, int ok)
{
    puts_("TEST ");
    puts_(name);
    puts_(ok ? " PASS" : " FAIL");
    if (!ok)
        failures++;
}

/* Spin until *flag != 0 or about `mcycles` million TSC cycles pass. */
static int wait_flag(volatile uint32_t *flag, uint32_t mcycles)
{
    uint64_t end = rdtsc() + (uint64_t)mcycles * 1000000u;
    while (!*flag)
        if (rdtsc() > end)
            return 0;
        else
            pause();
    return 1;
}

/* ---- PCI configuration through CF8/CFC ---- */

static uint32_t cfg_addr(int bus, int dev, int fn, int off)
{
    return 0x80000000u | (uint32_t)bus << 16 | (uint32_t)dev << 11 | (uint32_t)fn << 8 |
           (uint32_t)(off & 0xfc);
}
/* With "ecam=HEX" on the command line, configuration goes through ECAM (memory) at
 * that base instead of CF8/CFC; paging is off, so the address is used as is. */
static uint32_t ecam_base;

static volatile void *ecam(int b, int d, int f, int off)
{
    return (volatile void *)(uintptr_t)(ecam_base + ((uint32_t)b << 20 | (uint32_t)d << 15 |
                                                     (uint32_t)f << 12 | (uint32_t)off));
}
static uint32_t cfg_rd32(int b, int d, int f, int off)
{
    if (ecam_base)
        return *(volatile uint32_t *)ecam(b, d, f, off);
    outl(0xcf8, cfg_addr(b, d, f, off));
    return inl(0xcfc);
}
static uint16_t cfg_rd16(int b, int d, int f, int off)
{
    if (ecam_base)
        return *(volatile uint16_t *)ecam(b, d, f, off);
    outl(0xcf8, cfg_addr(b, d, f, off));
    return inw(0xcfc + (off & 2));
}
static uint8_t cfg_rd8(int b, int d, int f, int off)
{
    if (ecam_base)
        return *(volatile uint8_t *)ecam(b, d, f, off);
    outl(0xcf8, cfg_addr(b, d, f, off));
    return inb(0xcfc + (off & 3));
}
static void cfg_wr32(int b, int d, int f, int off, uint32_t v)
{
    if (ecam_base) {
        *(volatile uint32_t *)ecam(b, d, f, off) = v;
        return;
    }
    outl(0xcf8, cfg_addr(b, d, f, off));
    outl(0xcfc, v);
}
static void cfg_wr16(int b, int d, int f, int off, uint16_t v)
{
    if (ecam_base) {
        *(volatile uint16_t *)ecam(b, d, f, off) = v;
        return;
    }
    outl(0xcf8, cfg_addr(b, d, f, off));
    outw(0xcfc + (off & 2), v);
}

struct pcidev {
    int bus, dev, fn;
    uint32_t bar[6], bar_size[6];
    int bar_io[6];
};

static uint16_t want_vendor = 0x1234, want_device = 0x11e8;

/* Depth-first over bus 0 and the secondary buses of bridges; bounded so a bridge that
 * claims a bus twice cannot loop forever. */
static int find_on_bus(int bus, struct pcidev *out, int depth)
{
    if (depth > 8)
        return 0;
    for (int dev = 0; dev < 32; dev++) {
        for (int fn = 0; fn < 8; fn++) {
            uint32_t id = cfg_rd32(bus, dev, fn, 0);
            if ((id & 0xffff) == 0xffff) {
                if (fn == 0)
                    break;
                continue;
            }
            if ((id & 0xffff) == want_vendor && (id >> 16) == want_device) {
                out->bus = bus, out->dev = dev, out->fn = fn;
                return 1;
            }
            uint8_t hdr = cfg_rd8(bus, dev, fn, 0x0e);
            if ((hdr & 0x7f) == 1) {
                int sec = cfg_rd8(bus, dev, fn, 0x19);
                if (sec > bus && find_on_bus(sec, out, depth + 1))
                    return 1;
            }
            if (fn == 0 && !(hdr & 0x80))
                break;
        }
    }
    return 0;
}

static uint32_t next_bar_addr = BAR_WINDOW;

/* Size every BAR (decoding off while all-ones is written), assign unassigned memory
 * BARs from BAR_WINDOW, then enable memory, I/O and bus mastering. */
static void read_bars(struct pcidev *p)
{
    int b = p->bus, d = p->dev, f = p->fn;
    uint16_t cmd = cfg_rd16(b, d, f, 4);
    cfg_wr16(b, d, f, 4, cmd & ~3);
    for (int i = 0; i < 6; i++) {
        int off = 0x10 + 4 * i;
        uint32_t orig = cfg_rd32(b, d, f, off);
        cfg_wr32(b, d, f, off, 0xffffffffu);
        uint32_t mask = cfg_rd32(b, d, f, off);
        cfg_wr32(b, d, f, off, orig);
        p->bar_io[i] = orig & 1;
        uint32_t size = p->bar_io[i] ? ~(mask & ~3u) + 1 : ~(mask & ~15u) + 1;
        if (mask == 0 || mask == 0xffffffffu)
            size = 0;
        p->bar_size[i] = size;
        p->bar[i] = p->bar_io[i] ? orig & ~3u : orig & ~15u;
        int is64 = !p->bar_io[i] && ((orig >> 1) & 3) == 2;
        if (size && !p->bar_io[i] && p->bar[i] == 0) {
            uint32_t a = (next_bar_addr + size - 1) & ~(size - 1);
            next_bar_addr = a + size;
            cfg_wr32(b, d, f, off, a | (orig & 15));
            if (is64)
                cfg_wr32(b, d, f, off + 4, 0);
            p->bar[i] = a;
        }
        if (size) {
            puts_("BAR");
            putdec((uint32_t)i);
            puts_(p->bar_io[i] ? " io " : is64 ? " mem64 " : " mem32 ");
            puthex(p->bar[i], 8);
            puts_(" size ");
            puthex(size, 8);
            puts_("\n");
        }
        if (is64) {
            i++; /* the upper half belongs to this BAR */
            p->bar_size[i] = 0;
        }
    }
    cfg_wr16(b, d, f, 4, (cmd | 7) & ~(1u << 10)); /* IO, MEM, bus master; INTx allowed */
}

static int find_cap(struct pcidev *p, uint8_t id)
{
    if (!(cfg_rd16(p->bus, p->dev, p->fn, 6) & 0x10))
        return 0;
    int off = cfg_rd8(p->bus, p->dev, p->fn, 0x34) & 0xfc;
    for (int n = 0; off && n < 48; n++) { /* bounded: a looping list must not hang us */
        if (cfg_rd8(p->bus, p->dev, p->fn, off) == id)
            return off;
        off = cfg_rd8(p->bus, p->dev, p->fn, off + 1) & 0xfc;
    }
    return 0;
}

/* With "caps": the function's identity and capability lists as this guest sees them:
 *   ID vvvv:dddd class cccccc rev rr    CAP <id> <offset>    ECAP <id> <offset>
 * (extended capabilities only through ECAM). Bounded walks: a looping list ends. */
static void print_caps(struct pcidev *p)
{
    int b = p->bus, d = p->dev, f = p->fn;
    uint32_t id = cfg_rd32(b, d, f, 0), cls = cfg_rd32(b, d, f, 8);
    puts_("ID ");
    puthexn(id & 0xffff, 4);
    puts_(":");
    puthexn(id >> 16, 4);
    puts_(" class ");
    puthexn(cls >> 8, 6);
    puts_(" rev ");
    puthexn(cls & 0xff, 2);
    puts_("\n");
    if (cfg_rd16(b, d, f, 6) & 0x10) {
        int off = cfg_rd8(b, d, f, 0x34) & 0xfc;
        for (int n = 0; off && n < 48; n++) {
            puts_("CAP ");
            puthexn(cfg_rd8(b, d, f, off), 2);
            puts_(" ");
            puthexn((uint32_t)off, 2);
            puts_("\n");
            off = cfg_rd8(b, d, f, off + 1) & 0xfc;
        }
    }
    if (!ecam_base)
        return;
    int off = 0x100;
    for (int n = 0; off >= 0x100 && n < 64; n++) {
        uint32_t h = cfg_rd32(b, d, f, off);
        if (h == 0 || h == 0xffffffffu)
            break;
        puts_("ECAP ");
        puthexn(h & 0xffff, 4);
        puts_(" ");
        puthexn((uint32_t)off, 3);
        puts_("\n");
        off = (int)(h >> 20) & 0xffc;
    }
}

/* ---- interrupts: IDT, local APIC, 8259 PICs ---- */

struct idt_entry {
    uint16_t off_lo, sel;
    uint8_t zero, type;
    uint16_t off_hi;
} __attribute__((packed));

static struct idt_entry idt[256];
extern char isr_table[];

static volatile uint32_t msi_count, intx_count, irq_status_seen, spurious;
static uint32_t edu_bar;
static int pic_line = -1;

static void lapic_wr(uint32_t reg, uint32_t v) { mmio_wr(LAPIC_BASE + reg, v); }

static void pic_eoi(int line)
{
    if (line >= 8)
        outb(0xa0, 0x20);
    outb(0x20, 0x20);
}

/* Called from isr_common with the vector number. */
void isr_dispatch(uint32_t vec)
{
    if (vec < 32) {
        puts_("EXCEPTION ");
        putdec(vec);
        puts_("\n");
        finish(EXIT_EXCEPTION);
    }
    if (vec == MSI_VECTOR) {
        if (edu_bar) {
            uint32_t st = mmio_rd(edu_bar + 0x24);
            irq_status_seen = st;
            mmio_wr(edu_bar + 0x64, st);
        }
        msi_count++;
        lapic_wr(0xb0, 0);
    } else if (pic_line >= 0 && vec == (uint32_t)(PIC_BASE + pic_line)) {
        if (edu_bar) {
            uint32_t st = mmio_rd(edu_bar + 0x24);
            irq_status_seen = st;
            mmio_wr(edu_bar + 0x64, st); /* deasserts the level before the EOI */
        }
        intx_count++;
        pic_eoi(pic_line);
    } else if (vec >= PIC_BASE && vec < PIC_BASE + 16) {
        spurious++;
        pic_eoi((int)vec - PIC_BASE);
    } else if (vec != 0xff) {
        spurious++;
        lapic_wr(0xb0, 0);
    }
}

static void setup_interrupts(void)
{
    for (int i = 0; i < 256; i++) {
        uint32_t a = (uint32_t)(uintptr_t)(isr_table + 16 * i);
        idt[i] = (struct idt_entry){(uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16)};
    }
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) d = {sizeof idt - 1, (uint32_t)(uintptr_t)idt};
    __asm__ volatile("lidt %0" ::"m"(d));

    /* PICs: ICW1-4, vectors 0x20-0x2f, everything masked until INTx is tested. */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, PIC_BASE); outb(0xa1, PIC_BASE + 8);
    outb(0x21, 4); outb(0xa1, 2);
    outb(0x21, 1); outb(0xa1, 1);
    outb(0x21, 0xff); outb(0xa1, 0xff);

    /* Local APIC on (spurious vector 0xff), TPR 0, LINT0 as ExtINT so the PIC reaches the
     * CPU ("virtual wire"), LINT1 NMI, timer masked. */
    lapic_wr(0xf0, 0x1ff);
    lapic_wr(0x80, 0);
    lapic_wr(0x350, 0x700);
    lapic_wr(0x360, 0x400);
    lapic_wr(0x320, 1u << 16);
    __asm__ volatile("sti");
}

/* ---- edu ---- */

#define EDU_ID 0x00
#define EDU_LIVE 0x04
#define EDU_FACT 0x08
#define EDU_STATUS 0x20
#define EDU_RAISE 0x60
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_BUF 0x40000

static uint8_t dma_out[256] __attribute__((aligned(64)));
static uint8_t dma_in[256] __attribute__((aligned(64)));

static int poll_clear(uint32_t reg, uint32_t bit, uint32_t mcycles)
{
    uint64_t end = rdtsc() + (uint64_t)mcycles * 1000000u;
    while (mmio_rd(edu_bar + reg) & bit)
        if (rdtsc() > end)
            return 0;
    return 1;
}

static void edu_dma(uint32_t src, uint32_t dst, uint32_t n, uint32_t dir)
{
    mmio_wr(edu_bar + EDU_DMA_SRC, src);
    mmio_wr(edu_bar + EDU_DMA_SRC + 4, 0);
    mmio_wr(edu_bar + EDU_DMA_DST, dst);
    mmio_wr(edu_bar + EDU_DMA_DST + 4, 0);
    mmio_wr(edu_bar + EDU_DMA_CNT, n);
    mmio_wr(edu_bar + EDU_DMA_CNT + 4, 0);
    mmio_wr(edu_bar + EDU_DMA_CMD, 1 | dir);
}

/* Cycles per configuration read of the found function (any device). */
static void bench_cfg(struct pcidev *p)
{
    enum { N = 256 };
    uint64_t t0 = rdtsc();
    for (int i = 0; i < N; i++)
        (void)cfg_rd32(p->bus, p->dev, p->fn, 0);
    uint64_t t1 = rdtsc();
    puts_("BENCH cfg_read ");
    putdec((uint32_t)((t1 - t0) >> 8));
    puts_("\n");
}

static void bench(struct pcidev *p, int msi_cap)
{
    enum { N = 256 };
    (void)p;
    uint64_t t1 = rdtsc();
    for (int i = 0; i < N; i++)
        (void)mmio_rd(edu_bar + EDU_ID);
    uint64_t t2 = rdtsc();
    puts_("BENCH bar_read ");
    putdec((uint32_t)((t2 - t1) >> 8));
    puts_("\n");
    uint64_t tw = rdtsc();
    for (int i = 0; i < N; i++)
        mmio_wr(edu_bar + EDU_LIVE, (uint32_t)i);
    uint64_t tw2 = rdtsc();
    puts_("BENCH bar_write ");
    putdec((uint32_t)((tw2 - tw) >> 8));
    puts_("\n");
    if (!msi_cap)
        return;
    uint32_t start = msi_count, ok = 1;
    uint64_t t3 = rdtsc();
    for (uint32_t i = 0; i < N && ok; i++) {
        mmio_wr(edu_bar + EDU_RAISE, 0x100);
        uint64_t end = rdtsc() + 2000000000ull;
        while (msi_count != start + i + 1)
            if (rdtsc() > end) {
                ok = 0;
                break;
            }
    }
    uint64_t t4 = rdtsc();
    if (ok) {
        puts_("BENCH msi_roundtrip ");
        putdec((uint32_t)((t4 - t3) >> 8));
        puts_("\n");
    }
}

static void unmask_pic(int line);

/* Any other device with an I/O BAR0 of 8 ports or more (a 16550's, say): cycles per
 * byte read and write of its 8th port (a 16550's scratch register, harmless to touch),
 * so a served model and an emulated device of the same kind can be compared. */
static void bench_io_bar(struct pcidev *p)
{
    enum { N = 256 };
    if (!p->bar_io[0] || p->bar_size[0] < 8 || !p->bar[0])
        return;
    uint16_t port = (uint16_t)(p->bar[0] + 7);
    uint64_t t0 = rdtsc();
    for (int i = 0; i < N; i++)
        (void)inb(port);
    uint64_t t1 = rdtsc();
    for (int i = 0; i < N; i++)
        outb(port, (uint8_t)i);
    uint64_t t2 = rdtsc();
    puts_("BENCH bar_read ");
    putdec((uint32_t)((t1 - t0) >> 8));
    puts_("\nBENCH bar_write ");
    putdec((uint32_t)((t2 - t1) >> 8));
    puts_("\n");
}

static void test_edu(struct pcidev *p)
{
    if (p->bar_io[0] || p->bar_size[0] < 0x1000) {
        test("bar0", 0);
        puts_(" BAR0 is not a memory BAR\n");
        return;
    }
    edu_bar = p->bar[0];

    uint32_t id = mmio_rd(edu_bar + EDU_ID);
    test("id", (id & 0xffff) == 0x00ed);
    puts_(" ");
    puthex(id, 8);
    puts_("\n");

    mmio_wr(edu_bar + EDU_LIVE, 0x12345678);
    uint32_t live = mmio_rd(edu_bar + EDU_LIVE);
    test("liveness", live == ~0x12345678u);
    puts_(" ");
    puthex(live, 8);
    puts_("\n");

    mmio_wr(edu_bar + EDU_STATUS, 0); /* no interrupt after the factorial */
    mmio_wr(edu_bar + EDU_FACT, 10);
    int done = poll_clear(EDU_STATUS, 1, 20000);
    uint32_t fact = mmio_rd(edu_bar + EDU_FACT);
    test("factorial", done && fact == 3628800);
    puts_(" 10!=");
    putdec(fact);
    puts_("\n");

    setup_interrupts();

    int msi = find_cap(p, 0x05);
    if (msi) {
        int b = p->bus, d = p->dev, f = p->fn;
        uint16_t ctl = cfg_rd16(b, d, f, msi + 2);
        int data_off = (ctl & 0x80) ? msi + 12 : msi + 8;
        cfg_wr32(b, d, f, msi + 4, LAPIC_BASE); /* destination APIC 0 */
        if (ctl & 0x80)
            cfg_wr32(b, d, f, msi + 8, 0);
        cfg_wr16(b, d, f, data_off, MSI_VECTOR); /* fixed, edge */
        cfg_wr16(b, d, f, msi + 2, (ctl & ~0x70) | 1); /* one vector, enabled */
        irq_status_seen = 0;
        mmio_wr(edu_bar + EDU_RAISE, 0x5a);
        int got = wait_flag(&msi_count, 20000);
        test("msi", got && msi_count == 1 && irq_status_seen == 0x5a);
        puts_(" count ");
        putdec(msi_count);
        puts_(" status ");
        puthex(irq_status_seen, 8);
        puts_("\n");
    } else {
        test("msi", 0);
        puts_(" no MSI capability\n");
    }

    bench(p, msi);

    if (msi) { /* back to INTx: disable MSI */
        uint16_t ctl = cfg_rd16(p->bus, p->dev, p->fn, msi + 2);
        cfg_wr16(p->bus, p->dev, p->fn, msi + 2, ctl & ~1);
    }
    uint8_t line = cfg_rd8(p->bus, p->dev, p->fn, 0x3c);
    uint8_t pin = cfg_rd8(p->bus, p->dev, p->fn, 0x3d);
    if (pin && line < 16 && line != 2) {
        pic_line = line;
        unmask_pic(line);
        irq_status_seen = 0;
        mmio_wr(edu_bar + EDU_RAISE, 0xa5);
        int got = wait_flag(&intx_count, 20000);
        test("intx", got && irq_status_seen == 0xa5);
        puts_(" line ");
        putdec(line);
        puts_(" count ");
        putdec(intx_count);
        puts_(" status ");
        puthex(irq_status_seen, 8);
        puts_("\n");
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    } else {
        test("intx", 0);
        puts_(" no usable interrupt line ");
        putdec(line);
        puts_(" pin ");
        putdec(pin);
        puts_("\n");
    }

    /* DMA round trip: guest RAM -> device buffer -> other guest RAM; paging is off so
     * the buffers' addresses are guest-physical, which the VMM maps at IOVA == GPA. */
    for (int i = 0; i < 256; i++)
        dma_out[i] = (uint8_t)(i * 7 + 3), dma_in[i] = 0;
    edu_dma((uint32_t)(uintptr_t)dma_out, EDU_BUF, sizeof dma_out, 0);
    int ok1 = poll_clear(EDU_DMA_CMD, 1, 20000);
    edu_dma(EDU_BUF, (uint32_t)(uintptr_t)dma_in, sizeof dma_in, 2);
    int ok2 = poll_clear(EDU_DMA_CMD, 1, 20000);
    int same = 1;
    for (int i = 0; i < 256; i++)
        if (dma_in[i] != dma_out[i])
            same = 0;
    test("dma", ok1 && ok2 && same);
    puts_(" 256 bytes at ");
    puthex((uint32_t)(uintptr_t)dma_out, 8);
    puts_(same ? " match" : " differ");
    puts_("\n");
    test("spurious", spurious == 0);
    puts_(" ");
    putdec(spurious);
    puts_("\n");
}

/* ---- entry ---- */

static int hexval(const char *s, int n, uint16_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        v = v << 4 | (uint32_t)d;
    }
    *out = (uint16_t)v;
    return 1;
}

static int irqtest_line = -1;

static void unmask_pic(int line)
{
    if (line >= 8)
        outb(0xa1, (uint8_t)~(1u << (line - 8))), outb(0x21, 0xfb); /* + cascade */
    else
        outb(0x21, (uint8_t)~(1u << line));
}

/* The VMM injects the interrupts itself (irqfd) when it sees our sync writes. */
static void irqtest(int line)
{
    setup_interrupts();
    pic_line = line;
    unmask_pic(line);
    outb(SYNC_PORT, 1);
    int got = wait_flag(&msi_count, 20000);
    test("msi_route", got && msi_count == 1);
    puts_(" count ");
    putdec(msi_count);
    puts_("\n");
    outb(SYNC_PORT, 2);
    got = wait_flag(&intx_count, 20000);
    test("intx_route", got && intx_count == 1);
    puts_(" line ");
    putdec((uint32_t)line);
    puts_(" count ");
    putdec(intx_count);
    puts_("\n");
    test("spurious", spurious == 0);
    puts_(" ");
    putdec(spurious);
    puts_("\n");
    finish(failures ? EXIT_FAIL : EXIT_PASS);
}

static int show_caps;

static void parse_cmdline(const char *s)
{
    for (int i = 0; s[i] && i < 4096; i++) {
        if ((i == 0 || s[i - 1] == ' ') && s[i] == 'c' && s[i + 1] == 'a' && s[i + 2] == 'p' &&
            s[i + 3] == 's' && (s[i + 4] == 0 || s[i + 4] == ' '))
            show_caps = 1;
        if (s[i] == 'e' && s[i + 1] == 'c' && s[i + 2] == 'a' && s[i + 3] == 'm' &&
            s[i + 4] == '=') {
            uint16_t hi, lo;
            if (hexval(s + i + 5, 4, &hi) && hexval(s + i + 9, 4, &lo) &&
                ((uint32_t)hi << 16 | lo) % (1u << 20) == 0)
                ecam_base = (uint32_t)hi << 16 | lo; /* exactly 8 hex digits, 1 MiB aligned */
        }
        if (s[i] == 'i' && s[i + 1] == 'r' && s[i + 2] == 'q' && s[i + 3] == 't' &&
            s[i + 4] == 'e' && s[i + 5] == 's' && s[i + 6] == 't' && s[i + 7] == '=' &&
            s[i + 8] >= '0' && s[i + 8] <= '9') {
            int n = s[i + 8] - '0';
            if (s[i + 9] >= '0' && s[i + 9] <= '9')
                n = n * 10 + s[i + 9] - '0';
            if (n < 16 && n != 2)
                irqtest_line = n;
        }
        if (s[i] == 'd' && s[i + 1] == 'e' && s[i + 2] == 'v' && s[i + 3] == '=') {
            const char *v = s + i + 4;
            uint16_t vid, did;
            int n = 0;
            while (n < 9 && v[n])
                n++;
            if (n >= 9 && v[4] == ':' && hexval(v, 4, &vid) && hexval(v + 5, 4, &did))
                want_vendor = vid, want_device = did;
        }
    }
}

void guest_main(uint32_t magic, uint32_t mbi)
{
    puts_("luavfio guest: multiboot ");
    puts_(magic == 0x2BADB002 ? "ok" : "BAD MAGIC");
    puts_("\n");
    if (magic == 0x2BADB002 && mbi) {
        uint32_t flags = *(volatile uint32_t *)(uintptr_t)mbi;
        if (flags & 1) {
            puts_("memory ");
            putdec(*(volatile uint32_t *)(uintptr_t)(mbi + 8) / 1024 + 1);
            puts_(" MiB\n");
        }
        if (flags & 4) {
            const char *cmd = (const char *)(uintptr_t)*(volatile uint32_t *)(uintptr_t)(mbi + 16);
            if (cmd) {
                puts_("cmdline ");
                puts_(cmd);
                puts_("\n");
                parse_cmdline(cmd);
                if (ecam_base) {
                    puts_("config via ECAM at ");
                    puthex(ecam_base, 8);
                    puts_("\n");
                }
            }
        }
    }
    if (irqtest_line >= 0)
        irqtest(irqtest_line);
    struct pcidev p = {0};
    if (!find_on_bus(0, &p, 0)) {
        puts_("device ");
        puthexn(want_vendor, 4);
        puts_(":");
        puthexn(want_device, 4);
        puts_(" not found\n");
        finish(EXIT_NODEV);
    }
    puts_("FOUND ");
    puthexn((uint32_t)p.bus, 2);
    puts_(":");
    puthexn((uint32_t)p.dev, 2);
    puts_(".");
    putdec((uint32_t)p.fn);
    puts_(" ");
    puthexn(want_vendor, 4);
    puts_(":");
    puthexn(want_device, 4);
    puts_("\n");
    read_bars(&p);
    if (show_caps)
        print_caps(&p);
    bench_cfg(&p);
    if (want_vendor == 0x1234 && want_device == 0x11e8)
        test_edu(&p);
    else
        bench_io_bar(&p);
    finish(failures ? EXIT_FAIL : EXIT_PASS);
}
