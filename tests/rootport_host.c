/* rootport_host: the PCIe root port model (csrc/kvm/rootport.c) behind the C host bridge,
 * without KVM and without Lua, driven as Linux's portdrv and pciehp drive a port with no
 * ACPI (every access through configuration mechanism #1 or ECAM):
 *   - the header and capabilities portdrv and pciehp read: the bridge class, the
 *     capability chain (PCIe v2 Root Port with a slot, then MSI), Slot Capabilities
 *     (attention button, power controller, indicators, hot-plug capable, the slot
 *     number), DLL Link Active reporting, the windows firmware left, the write masks;
 *   - the bus numbers route config accesses: secondary:00.0 reaches the function behind
 *     the port while its link is up, other devices and buses below read all ones, and
 *     follow the guest's reprogramming of the bus numbers; through ECAM (the board's
 *     window: buses 0 to 16) as through CF8, up to the window's last bus, a bus past it
 *     not the host bridge's, and a window said to be past 256 buses never aliasing bus 0;
 *   - pciehp's probe (clear events, power an empty slot off, enable notifications with
 *     MSI), Command Completed after every Slot Control write, RW1C status bits;
 *   - a hot-add (presence, then the attention button; the guest powers the slot on and
 *     the link comes up), a removal the guest agrees to (button, power off: the VMM is
 *     told to release the device), a surprise removal, and a second hot-add;
 *   - the slot interrupt as an edge: one MSI per rising edge of "an enabled event
 *     pending", none while a status bit is still set, INTx as a level when MSI is off;
 *   - secondary bus reset, the errors of insert and remove.
 * Prints "ok: ..." on stderr and exits 0, else "FAIL: ..." and 1. */
#include "base/le.h"
#include "kvm/pcihost.h"
#include "kvm/rootport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECAM_BASE 0xb0000000ull
#define PORT_DEV 0x1c
#define EXP KVM_ROOTPORT_PCIE_CAP
#define SLTCTL (EXP + 0x18)
#define SLTSTA (EXP + 0x1a)
#define LNKSTA (EXP + 0x12)
#define MSI KVM_ROOTPORT_MSI_CAP

/* pci_regs.h's bits, as pciehp names them */
#define ABPE 0x0001
#define PDCE 0x0008
#define CCIE 0x0010
#define HPIE 0x0020
#define PIC_MASK 0x0300
#define PIC_ON 0x0100
#define PIC_BLINK 0x0200
#define PIC_OFF 0x0300
#define PCC 0x0400
#define DLLSCE 0x1000
#define ST_ABP 0x0001
#define ST_PDC 0x0008
#define ST_CC 0x0010
#define ST_PDS 0x0040
#define ST_DLLSC 0x0100
#define ST_EVENTS 0x011f
#define DLLLA 0x2000

static int failures;

static void check(int ok, const char *what, int line)
{
    if (!ok) {
        fprintf(stderr, "FAIL: line %d: %s\n", line, what);
        failures++;
    }
}
#define CHECK(c) check((c), #c, __LINE__)

#define ECAM_BUSES 17u   /* the board's: bus 0 and the 16 root ports' secondary buses */
static struct kvm_pcihost host = {.ecam_base = ECAM_BASE,
                                  .ecam_size = ECAM_BUSES * KVM_PCIHOST_ECAM_BUS_SIZE};
static int last_event;   /* the last write's answer: 2 when a function asked for attention */

/* Mechanism #1: the address latch, then the data port's lanes. */
static uint32_t rd(unsigned bus, unsigned dev, unsigned fn, unsigned off, unsigned len)
{
    uint8_t d[4];
    lv_le_put(d, 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (off & 0xfc), 4);
    kvm_pcihost_access(&host, KVM_VMM_PIO, 0xcf8, d, 4, 1);
    memset(d, 0, sizeof d);
    kvm_pcihost_access(&host, KVM_VMM_PIO, 0xcfc + (off & 3), d, len, 0);
    return (uint32_t)lv_le_get(d, len);
}

static void wr(unsigned bus, unsigned dev, unsigned fn, unsigned off, unsigned len, uint32_t v)
{
    uint8_t d[4];
    lv_le_put(d, 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (off & 0xfc), 4);
    kvm_pcihost_access(&host, KVM_VMM_PIO, 0xcf8, d, 4, 1);
    lv_le_put(d, v, 4);
    last_event = kvm_pcihost_access(&host, KVM_VMM_PIO, 0xcfc + (off & 3), d, len, 1);
}

/* ECAM: the extended space, and every bus of the window */
static uint64_t ecam_addr(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    return ECAM_BASE + ((uint64_t)bus << 20 | dev << 15 | fn << 12 | off);
}

static uint32_t ecam_rd(unsigned bus, unsigned dev, unsigned fn, unsigned off, unsigned len)
{
    uint8_t d[4] = {0};
    kvm_pcihost_access(&host, KVM_VMM_MMIO, ecam_addr(bus, dev, fn, off), d, len, 0);
    return (uint32_t)lv_le_get(d, len);
}

static void ecam_wr(unsigned bus, unsigned dev, unsigned fn, unsigned off, unsigned len, uint32_t v)
{
    uint8_t d[4];
    lv_le_put(d, v, 4);
    last_event = kvm_pcihost_access(&host, KVM_VMM_MMIO, ecam_addr(bus, dev, fn, off), d, len, 1);
}

#define PRD(off, len) rd(0, PORT_DEV, 0, (off), (len))
#define PWR(off, len, v) wr(0, PORT_DEV, 0, (off), (len), (v))

/* pciehp's pcie_write_cmd: read Slot Control, change the masked bits, write it; the
 * command completes (CC) at once. */
static void write_cmd(uint16_t cmd, uint16_t mask)
{
    uint16_t ctl = (uint16_t)PRD(SLTCTL, 2);
    PWR(SLTCTL, 2, (ctl & ~mask) | (cmd & mask));
}

/* pciehp's ISR: read the event bits, write them back to clear them, again until none. */
static uint16_t isr(void)
{
    uint16_t all = 0, st;
    while ((st = (uint16_t)PRD(SLTSTA, 2) & ST_EVENTS)) {
        all |= st;
        PWR(SLTSTA, 2, st);
    }
    return all;
}

static int find_cap(unsigned id)
{
    unsigned pos = PRD(0x34, 1), guard = 0;
    while (pos && guard++ < 48) {
        if (PRD(pos, 1) == id)
            return (int)pos;
        pos = PRD(pos + 1, 1);
    }
    return -1;
}

int main(void)
{
    struct kvm_rootport port;
    struct kvm_rootport_setup setup = {
        .vendor = 0x1b36, .device = 0x000c, .port_number = 3, .slot_number = 7,
        .primary = 0, .secondary = 2, .subordinate = 2,
        .io_base = 0x2000, .io_size = 0x1000,
        .mem_base = 0xc0200000u, .mem_size = 2u << 20,
        .pref_base = 0x8000000000ull, .pref_size = 0};
    kvm_rootport_init(&port, &setup);
    CHECK(kvm_pcihost_attach(&host, 0, PORT_DEV, 0, &kvm_rootport_cfg_ops, &port) == 0);

    /* the child: an emulated function with an ID and a writable scratch dword */
    struct kvm_cfgspace child = {.size = 4096};
    lv_le_put(child.bytes, 0x5845144d, 4);      /* 144d:5845 */
    memset(child.wmask + 0x40, 0xff, 4);
    lv_le_put(child.bytes + 0x100, 0x00010001, 4);    /* an extended capability header */
    struct kvm_cfgspace other = {.size = 256};  /* a function on bus 0 */
    lv_le_put(other.bytes, 0x11118086, 4);
    CHECK(kvm_pcihost_attach(&host, 0, 3, 0, &kvm_cfgspace_ops, &other) == 0);

    /* ---- what portdrv and pciehp read ---- */
    CHECK(PRD(0, 4) == 0x000c1b36);
    CHECK(PRD(0x08, 4) >> 8 == 0x060400);
    CHECK((PRD(0x0e, 1) & 0x7f) == 1);
    CHECK(PRD(0x06, 2) & 0x0010);
    int exp = find_cap(0x10), msi = find_cap(0x05);
    CHECK(exp == EXP && msi == MSI);
    CHECK((PRD(EXP + 2, 2) & 0xf) == 2);                /* version 2 */
    CHECK((PRD(EXP + 2, 2) >> 4 & 0xf) == 4);           /* Root Port */
    CHECK(PRD(EXP + 2, 2) & 0x0100);                    /* slot implemented */
    CHECK((PRD(EXP + 2, 2) >> 9 & 0x1f) == 0);          /* interrupt message 0 */
    uint32_t sltcap = PRD(EXP + 0x14, 4);
    CHECK((sltcap & 0x7f) == 0x5b);                     /* ABP PCP AIP PIP HPC, no HPS MRL */
    CHECK(sltcap >> 19 == 7);
    CHECK(!(sltcap & 0x00040000));                      /* command completed supported */
    uint32_t lnkcap = PRD(EXP + 0x0c, 4);
    CHECK(lnkcap & 0x00100000);                         /* DLL Link Active reporting */
    CHECK(lnkcap >> 24 == 3);
    CHECK((PRD(LNKSTA, 2) & 0x3f0) == 0x10);            /* x1, whatever the link */
    CHECK(!(PRD(LNKSTA, 2) & DLLLA));                   /* empty: down */
    CHECK(PRD(MSI + 2, 2) == 0x0080);                   /* 64-bit, one vector, off */
    CHECK(PRD(0x3d, 1) == 1);
    CHECK(ecam_rd(0, PORT_DEV, 0, 0x100, 4) == 0);      /* no extended capability */
    CHECK(ecam_rd(0, PORT_DEV, 0, 0, 4) == 0x000c1b36);
    /* bus numbers and windows as firmware left them */
    CHECK(PRD(0x18, 4) == 0x00020200);
    CHECK(PRD(0x1c, 1) == 0x20 && PRD(0x1d, 1) == 0x20);
    CHECK(PRD(0x20, 2) == 0xc020 && PRD(0x22, 2) == 0xc030);
    CHECK(PRD(0x24, 2) > PRD(0x26, 2));                 /* prefetchable window closed */
    CHECK((PRD(0x24, 2) & 0xf) == 1 && (PRD(0x26, 2) & 0xf) == 1);   /* 64-bit */
    /* write masks: IDs and class read-only, windows' low nibbles fixed */
    PWR(0, 4, 0xffffffff);
    CHECK(PRD(0, 4) == 0x000c1b36);
    PWR(0x08, 4, 0);
    CHECK(PRD(0x08, 4) >> 8 == 0x060400);
    PWR(0x1c, 2, 0xffff);
    CHECK(PRD(0x1c, 2) == 0xf0f0);
    PWR(0x1c, 2, 0x2020);
    PWR(0x24, 4, 0xfff0fff0);
    CHECK(PRD(0x24, 4) == 0xfff1fff1);
    PWR(0x28, 4, 0x12345678);
    CHECK(PRD(0x28, 4) == 0x12345678);
    PWR(EXP + 0x14, 4, 0);
    CHECK(PRD(EXP + 0x14, 4) == sltcap);
    PWR(LNKSTA, 2, 0xffff);
    CHECK(!(PRD(LNKSTA, 2) & DLLLA));
    PWR(EXP + 0x10, 2, 0x0020);                         /* Retrain Link reads 0 */
    CHECK(!(PRD(EXP + 0x10, 2) & 0x0020));
    CHECK(kvm_rootport_events(&port) == 0);

    /* ---- routing: nothing behind an empty port ---- */
    CHECK(rd(2, 0, 0, 0, 4) == 0xffffffff);
    CHECK(rd(0, 3, 0, 0, 4) == 0x11118086);

    /* ---- pciehp's probe: clear events, power the empty slot off, notifications on ---- */
    PWR(SLTSTA, 2, ST_EVENTS);
    write_cmd(0, PDCE | ABPE | CCIE | HPIE | DLLSCE | 0x2 /* PFDE */);   /* disable */
    CHECK(PRD(SLTSTA, 2) & ST_CC);                      /* every write is a command */
    CHECK(kvm_rootport_events(&port) == 0);             /* no interrupt enabled */
    isr();
    write_cmd(PCC, PCC);                                /* already off: still completes */
    CHECK(PRD(SLTSTA, 2) & ST_CC);
    CHECK(kvm_rootport_events(&port) == 0);             /* nothing to release */
    isr();
    /* portdrv: MSI at 0xfee00000 data 0x4041, bus master */
    PWR(MSI + 4, 4, 0xfee00000);
    PWR(MSI + 8, 4, 0);
    PWR(MSI + 0xc, 2, 0x4041);
    PWR(MSI + 2, 2, 0x0001);
    PWR(0x04, 2, 0x0007);
    CHECK(kvm_rootport_events(&port) == 0);
    write_cmd(DLLSCE | ABPE | HPIE | CCIE, PDCE | ABPE | 0x2 | HPIE | CCIE | DLLSCE);
    CHECK(last_event == 2);                             /* CC with CCIE: the run stops */
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);
    uint64_t addr;
    uint32_t data;
    CHECK(kvm_rootport_msi(&port, &addr, &data) && addr == 0xfee00000 && data == 0x4041);
    CHECK(isr() == ST_CC);
    CHECK(kvm_rootport_events(&port) == 0);

    /* ---- hot-add: presence (no interrupt: PDCE is off), then the button ---- */
    CHECK(kvm_rootport_insert(&port, &kvm_cfgspace_ops, &child, false) == 0);
    CHECK(kvm_rootport_insert(&port, &kvm_cfgspace_ops, &child, false) == -EBUSY);
    CHECK(PRD(SLTSTA, 2) & ST_PDS);
    CHECK(!(PRD(LNKSTA, 2) & DLLLA));                   /* powered off: no link */
    CHECK(kvm_rootport_events(&port) == 0);
    CHECK(rd(2, 0, 0, 0, 4) == 0xffffffff);             /* no link, no config */
    kvm_rootport_press(&port);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);
    CHECK(isr() == (ST_ABP | ST_PDC));
    /* pciehp's board_added: power on, power indicator blinking, wait for the link */
    write_cmd(0, PCC);
    CHECK(last_event == 2);
    CHECK(kvm_rootport_events(&port) == (KVM_ROOTPORT_EV_POWER_ON | KVM_ROOTPORT_EV_MSI));
    CHECK(PRD(LNKSTA, 2) & DLLLA);
    CHECK(isr() == (ST_CC | ST_DLLSC));
    write_cmd(PIC_BLINK, PIC_MASK);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);
    CHECK(isr() == ST_CC);
    /* pci_bus_check_dev, then the scan: secondary:00.0 is the child, nothing else */
    CHECK(rd(2, 0, 0, 0, 4) == 0x5845144d);
    CHECK(ecam_rd(2, 0, 0, 0, 4) == 0x5845144d);
    CHECK(rd(2, 1, 0, 0, 4) == 0xffffffff);
    CHECK(rd(2, 0, 1, 0, 4) == 0xffffffff);
    CHECK(rd(3, 0, 0, 0, 4) == 0xffffffff);
    wr(2, 0, 0, 0x40, 4, 0xcafef00d);
    CHECK(rd(2, 0, 0, 0x40, 4) == 0xcafef00d);
    write_cmd(PIC_ON, PIC_MASK);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);
    isr();
    struct kvm_rootport_state st;
    kvm_rootport_state(&port, &st);
    CHECK(st.present && st.powered && st.link_up && st.power_indicator == 1);

    /* the guest moves the bus numbers: the child follows, through CF8 and ECAM */
    PWR(0x18, 4, 0x00050500);
    CHECK(rd(2, 0, 0, 0, 4) == 0xffffffff);
    CHECK(ecam_rd(2, 0, 0, 0, 4) == 0xffffffff);
    CHECK(rd(5, 0, 0, 0, 4) == 0x5845144d);
    CHECK(ecam_rd(5, 0, 0, 0, 4) == 0x5845144d);
    PWR(0x18, 4, 0x00060500);                           /* subordinate 6: bus 6 decoded, empty */
    CHECK(rd(6, 0, 0, 0, 4) == 0xffffffff);
    CHECK(ecam_rd(6, 0, 0, 0, 4) == 0xffffffff);
    /* the window's last bus (the board's last root port's): ECAM reaches the child there,
     * its extended space and its registers written */
    ecam_wr(0, PORT_DEV, 0, 0x18, 4, (ECAM_BUSES - 1) << 16 | (ECAM_BUSES - 1) << 8);
    CHECK(PRD(0x18, 4) == ((ECAM_BUSES - 1) << 16 | (ECAM_BUSES - 1) << 8));
    CHECK(ecam_rd(ECAM_BUSES - 1, 0, 0, 0, 4) == 0x5845144d);
    CHECK(ecam_rd(ECAM_BUSES - 1, 0, 0, 0, 2) == 0x144d);
    CHECK(ecam_rd(ECAM_BUSES - 1, 0, 0, 0x100, 4) == 0x00010001);
    ecam_wr(ECAM_BUSES - 1, 0, 0, 0x40, 4, 0x600dcafe);
    CHECK(host.last.hit && host.last.bdf == (ECAM_BUSES - 1) << 8 && host.last.off == 0x40);
    CHECK(rd(ECAM_BUSES - 1, 0, 0, 0x40, 4) == 0x600dcafe);
    ecam_wr(ECAM_BUSES - 1, 0, 0, 0x40, 4, 0xcafef00d);
    CHECK(ecam_rd(ECAM_BUSES - 1, 1, 0, 0, 4) == 0xffffffff);
    /* one past it: CF8 reaches the child, ECAM's window has ended (not the host's) */
    PWR(0x18, 4, ECAM_BUSES << 16 | ECAM_BUSES << 8);
    CHECK(rd(ECAM_BUSES, 0, 0, 0, 4) == 0x5845144d);
    {
        uint8_t d[4] = {0};
        CHECK(kvm_pcihost_access(&host, KVM_VMM_MMIO, ecam_addr(ECAM_BUSES, 0, 0, 0), d, 4, 0) == 0);
        /* a window larger than 256 buses: past bus 255 all ones, never bus 0 again */
        uint64_t size = host.ecam_size;
        host.ecam_size = 2 * KVM_PCIHOST_ECAM_MAX;
        CHECK(kvm_pcihost_access(&host, KVM_VMM_MMIO, ECAM_BASE + KVM_PCIHOST_ECAM_MAX + (3 << 15), d,
                                 4, 0) == 1);   /* where 00:03.0 would alias */
        CHECK(lv_le_get(d, 4) == 0xffffffff);
        CHECK(ecam_rd(0, 3, 0, 0, 4) == 0x11118086);   /* bus 0 is there */
        host.ecam_size = size;
    }
    PWR(0x18, 4, 0x00020200);
    CHECK(rd(2, 0, 0, 0, 4) == 0x5845144d);

    /* ---- the edge: a second event while one is still set sends nothing ---- */
    kvm_rootport_press(&port);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);
    write_cmd(PIC_BLINK, PIC_MASK);                     /* CC while ABP is still set */
    CHECK(kvm_rootport_events(&port) == 0);
    CHECK(isr() == (ST_ABP | ST_CC));
    /* clearing one leaves the other pending: still no edge; clearing both rearms */
    kvm_rootport_press(&port);
    write_cmd(PIC_BLINK, PIC_MASK);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);
    PWR(SLTSTA, 2, ST_ABP);
    CHECK(kvm_rootport_events(&port) == 0);
    PWR(SLTSTA, 2, ST_CC);
    kvm_rootport_press(&port);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);
    isr();

    /* ---- removal the guest agrees to: unbind, power off, indicator off ---- */
    write_cmd(PCC, PCC);
    CHECK(last_event == 2);
    CHECK(kvm_rootport_events(&port) == (KVM_ROOTPORT_EV_POWER_OFF | KVM_ROOTPORT_EV_MSI));
    CHECK(!(PRD(LNKSTA, 2) & DLLLA));
    CHECK(rd(2, 0, 0, 0, 4) == 0xffffffff);             /* powered off: unreachable */
    CHECK(isr() == (ST_CC | ST_DLLSC));
    CHECK(kvm_rootport_remove(&port) == 0);             /* the VMM released it */
    CHECK(kvm_rootport_remove(&port) == -ENOENT);
    CHECK(kvm_rootport_events(&port) == 0);             /* PDC only: not enabled */
    CHECK(!(PRD(SLTSTA, 2) & ST_PDS));
    write_cmd(PIC_OFF, PIC_MASK);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);   /* CC, PDC pending too */
    CHECK(isr() == (ST_CC | ST_PDC));

    /* ---- hot-add again, then a surprise removal ---- */
    CHECK(kvm_rootport_insert(&port, &kvm_cfgspace_ops, &child, false) == 0);
    kvm_rootport_press(&port);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);
    isr();
    write_cmd(PIC_BLINK, PCC | PIC_MASK);
    CHECK(kvm_rootport_events(&port) == (KVM_ROOTPORT_EV_POWER_ON | KVM_ROOTPORT_EV_MSI));
    isr();
    CHECK(rd(2, 0, 0, 0, 4) == 0x5845144d);
    CHECK(kvm_rootport_remove(&port) == 0);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);   /* link down */
    CHECK(isr() == (ST_PDC | ST_DLLSC));
    CHECK(rd(2, 0, 0, 0, 4) == 0xffffffff);
    write_cmd(PCC | PIC_OFF, PCC | PIC_MASK);           /* pciehp's remove_board */
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_MSI);   /* nothing to release */
    isr();

    /* ---- INTx when MSI is off: a level, and INTx disable ---- */
    PWR(MSI + 2, 2, 0);
    kvm_rootport_press(&port);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_INTX);
    CHECK(kvm_rootport_intx(&port));
    CHECK(PRD(0x06, 2) & 0x0008);                       /* interrupt status */
    PWR(0x04, 2, 0x0407);                               /* INTx disable */
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_INTX && !kvm_rootport_intx(&port));
    CHECK(PRD(0x06, 2) & 0x0008);
    PWR(0x04, 2, 0x0007);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_INTX && kvm_rootport_intx(&port));
    isr();
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_INTX && !kvm_rootport_intx(&port));
    CHECK(!(PRD(0x06, 2) & 0x0008));
    /* MSI turned on while an event is pending: the edge is the enable */
    kvm_rootport_press(&port);
    kvm_rootport_events(&port);
    PWR(MSI + 2, 2, 1);
    CHECK(kvm_rootport_events(&port) == (KVM_ROOTPORT_EV_MSI | KVM_ROOTPORT_EV_INTX));
    isr();
    /* bus master off: no MSI */
    PWR(0x04, 2, 0x0003);
    kvm_rootport_press(&port);
    CHECK(kvm_rootport_events(&port) == 0);
    isr();
    PWR(0x04, 2, 0x0007);

    /* ---- secondary bus reset ---- */
    PWR(0x3e, 2, 0x0040);
    CHECK(last_event == 2);
    CHECK(kvm_rootport_events(&port) == KVM_ROOTPORT_EV_BUS_RESET);
    PWR(0x3e, 2, 0x0040);                               /* held: no new event */
    CHECK(kvm_rootport_events(&port) == 0);
    PWR(0x3e, 2, 0);

    /* ---- a device there from power-on ---- */
    struct kvm_rootport cold;
    setup.secondary = setup.subordinate = 3;
    setup.slot_number = 8;
    kvm_rootport_init(&cold, &setup);
    CHECK(kvm_pcihost_attach(&host, 0, PORT_DEV + 1, 0, &kvm_rootport_cfg_ops, &cold) == 0);
    CHECK(kvm_rootport_insert(&cold, &kvm_cfgspace_ops, &child, true) == 0);
    CHECK(kvm_rootport_events(&cold) == 0);
    kvm_rootport_state(&cold, &st);
    CHECK(st.present && st.powered && st.link_up && st.power_indicator == 1 &&
          st.attention_indicator == 3 && st.slot_status == ST_PDS);
    CHECK(rd(3, 0, 0, 0, 4) == 0x5845144d);
    CHECK(rd(2, 0, 0, 0, 4) == 0xffffffff);             /* the first port stays empty */
    CHECK(kvm_rootport_insert(&cold, NULL, NULL, false) == -EINVAL);

    if (failures)
        return 1;
    fprintf(stderr, "ok: the root port routes config by its bus numbers and answers pciehp's "
                    "hot-add, removal and surprise removal\n");
    return 0;
}
