/* A PCI Express root port with a native hot-plug slot (rootport.h).
 *
 * The guest's side is Linux's portdrv and pciehp with no ACPI: portdrv binds by class
 * (0x060400) and the capability's port type (Root Port), and pciehp takes the slot when
 * Slot Capabilities says Hot-Plug Capable. With an attention button pciehp enables the
 * button and Data Link Layer State Changed events, not Presence Detect Changed, so
 * presence alone never interrupts: a hot-add is presence, then the button (pciehp powers
 * the slot on, the link comes up, it scans), and a hot-remove is the button (pciehp
 * unbinds the drivers and powers the slot off, which is when the VMM may release the
 * device). Every Slot Control write is a command that completes at once (Command
 * Completed), since pciehp waits for it before the next one. The slot's interrupt is an
 * edge: one MSI each time "HPIE, MSI on, bus master, and some enabled event pending"
 * becomes true, which is why pciehp re-reads Slot Status after clearing it. */
#include "rootport.h"
#include "base/le.h"

#include <errno.h>
#include <string.h>

/* Type-1 header */
#define CMD 0x04
#define CMD_BME 0x0004
#define CMD_INTX_DISABLE 0x0400
#define STATUS 0x06
#define STATUS_INTX 0x0008
#define STATUS_CAP_LIST 0x0010
#define PRIMARY 0x18
#define SECONDARY 0x19
#define SUBORDINATE 0x1a
#define IO_BASE 0x1c
#define IO_LIMIT 0x1d
#define MEM_BASE 0x20
#define MEM_LIMIT 0x22
#define PREF_BASE 0x24
#define PREF_LIMIT 0x26
#define PREF_BASE_UPPER 0x28
#define PREF_LIMIT_UPPER 0x2c
#define BRIDGE_CONTROL 0x3e
#define BRIDGE_CONTROL_SBR 0x0040

/* PCIe capability registers */
#define EXP KVM_ROOTPORT_PCIE_CAP
#define EXP_FLAGS (EXP + 0x02)
#define EXP_DEVCAP (EXP + 0x04)
#define EXP_DEVCTL (EXP + 0x08)
#define EXP_LNKCAP (EXP + 0x0c)
#define EXP_LNKCTL (EXP + 0x10)
#define EXP_LNKSTA (EXP + 0x12)
#define EXP_SLTCAP (EXP + 0x14)
#define EXP_SLTCTL (EXP + 0x18)
#define EXP_SLTSTA (EXP + 0x1a)
#define EXP_RTCTL (EXP + 0x1c)
#define EXP_LNKCAP2 (EXP + 0x2c)
#define EXP_LNKCTL2 (EXP + 0x30)

#define LNKCAP_DLLLARC 0x00100000u
#define LNKSTA_DLLLA 0x2000

#define SLTCAP_ABP 0x0001
#define SLTCAP_PCP 0x0002
#define SLTCAP_AIP 0x0008
#define SLTCAP_PIP 0x0010
#define SLTCAP_HPC 0x0040

#define SLTCTL_ABPE 0x0001
#define SLTCTL_PFDE 0x0002
#define SLTCTL_MRLSCE 0x0004
#define SLTCTL_PDCE 0x0008
#define SLTCTL_CCIE 0x0010
#define SLTCTL_HPIE 0x0020
#define SLTCTL_AIC_SHIFT 6
#define SLTCTL_PIC_SHIFT 8
#define SLTCTL_PCC 0x0400       /* 1: power off */
#define SLTCTL_DLLSCE 0x1000
#define SLTCTL_WRITABLE 0x17ff  /* no electromechanical interlock */
#define INDICATOR_ON 1
#define INDICATOR_OFF 3

#define SLTSTA_ABP 0x0001
#define SLTSTA_PFD 0x0002
#define SLTSTA_MRLSC 0x0004
#define SLTSTA_PDC 0x0008
#define SLTSTA_CC 0x0010
#define SLTSTA_PDS 0x0040
#define SLTSTA_DLLSC 0x0100
#define SLTSTA_EVENTS 0x011f

/* MSI capability: 64-bit, one vector, no per-vector mask */
#define MSI KVM_ROOTPORT_MSI_CAP
#define MSI_CTRL (MSI + 0x02)
#define MSI_CTRL_ENABLE 0x0001
#define MSI_CTRL_64BIT 0x0080
#define MSI_ADDR_LO (MSI + 0x04)
#define MSI_ADDR_HI (MSI + 0x08)
#define MSI_DATA (MSI + 0x0c)

static uint32_t get(const struct kvm_rootport *p, unsigned off, unsigned len)
{
    return (uint32_t)lv_le_get(p->cfg + off, len);
}

static void put(struct kvm_rootport *p, unsigned off, unsigned len, uint32_t v)
{
    lv_le_put(p->cfg + off, v, len);
}

/* A register with its guest-writable and write-1-to-clear bits. */
static void reg(struct kvm_rootport *p, unsigned off, unsigned len, uint32_t v, uint32_t wmask,
                uint32_t w1c)
{
    lv_le_put(p->cfg + off, v, len);
    lv_le_put(p->wmask + off, wmask, len);
    lv_le_put(p->w1c + off, w1c, len);
}

static void set_bits(struct kvm_rootport *p, unsigned off, uint16_t bits)
{
    put(p, off, 2, get(p, off, 2) | bits);
}

static void clear_bits(struct kvm_rootport *p, unsigned off, uint16_t bits)
{
    put(p, off, 2, get(p, off, 2) & ~(uint32_t)bits);
}

static bool link_up(const struct kvm_rootport *p)
{
    return get(p, EXP_LNKSTA, 2) & LNKSTA_DLLLA;
}

static bool powered(const struct kvm_rootport *p)
{
    return !(get(p, EXP_SLTCTL, 2) & SLTCTL_PCC);
}

/* The link follows presence and power; each change is a Data Link Layer State Changed
 * event. */
static void link_update(struct kvm_rootport *p)
{
    bool up = p->child.ops && powered(p);
    if (up == link_up(p))
        return;
    if (up)
        set_bits(p, EXP_LNKSTA, LNKSTA_DLLLA);
    else
        clear_bits(p, EXP_LNKSTA, LNKSTA_DLLLA);
    set_bits(p, EXP_SLTSTA, SLTSTA_DLLSC);
}

/* Recompute the slot's interrupt after any change to Slot Control or Status, the MSI
 * control, or the command register: an MSI on each rising edge, INTx as a level. */
static void irq_update(struct kvm_rootport *p)
{
    uint16_t ctl = (uint16_t)get(p, EXP_SLTCTL, 2), sta = (uint16_t)get(p, EXP_SLTSTA, 2);
    uint16_t cmd = (uint16_t)get(p, CMD, 2);
    uint16_t enabled = 0;
    if (ctl & SLTCTL_ABPE)
        enabled |= SLTSTA_ABP;
    if (ctl & SLTCTL_PFDE)
        enabled |= SLTSTA_PFD;
    if (ctl & SLTCTL_MRLSCE)
        enabled |= SLTSTA_MRLSC;
    if (ctl & SLTCTL_PDCE)
        enabled |= SLTSTA_PDC;
    if (ctl & SLTCTL_CCIE)
        enabled |= SLTSTA_CC;
    if (ctl & SLTCTL_DLLSCE)
        enabled |= SLTSTA_DLLSC;
    bool pending = (ctl & SLTCTL_HPIE) && (sta & enabled);
    bool msi_on = get(p, MSI_CTRL, 2) & MSI_CTRL_ENABLE;
    bool level = pending && msi_on && (cmd & CMD_BME);
    if (level && !p->level)
        p->pending |= KVM_ROOTPORT_EV_MSI;
    p->level = level;
    bool intx_status = pending && !msi_on;
    if (intx_status)
        set_bits(p, STATUS, STATUS_INTX);
    else
        clear_bits(p, STATUS, STATUS_INTX);
    bool intx = intx_status && !(cmd & CMD_INTX_DISABLE);
    if (intx != p->intx) {
        p->intx = intx;
        p->pending |= KVM_ROOTPORT_EV_INTX;
    }
}

/* A Slot Control write: a command, completed at once. Powering the slot off takes the
 * link down; with a device present the VMM is told to release it. */
static void slot_command(struct kvm_rootport *p, uint16_t old)
{
    uint16_t now = (uint16_t)get(p, EXP_SLTCTL, 2);
    set_bits(p, EXP_SLTSTA, SLTSTA_CC);
    if (!(old & SLTCTL_PCC) && (now & SLTCTL_PCC) && p->child.ops)
        p->pending |= KVM_ROOTPORT_EV_POWER_OFF;
    if ((old & SLTCTL_PCC) && !(now & SLTCTL_PCC))
        p->pending |= KVM_ROOTPORT_EV_POWER_ON;
    link_update(p);
}

static bool touches(uint32_t off, uint32_t len, unsigned reg_off, unsigned reg_len)
{
    return off < reg_off + reg_len && reg_off < off + len;
}

static int rp_read(void *opaque, uint32_t off, uint32_t len, uint32_t *val)
{
    struct kvm_rootport *p = opaque;
    /* extended space: no extended capability (a zero header at 0x100) */
    *val = off + len <= sizeof p->cfg ? get(p, off, len) : 0;
    return 0;
}

static int rp_write(void *opaque, uint32_t off, uint32_t len, uint32_t val)
{
    struct kvm_rootport *p = opaque;
    if (off + len > sizeof p->cfg || len > 4)
        return p->pending ? KVM_PCI_CFG_EVENT : 0;
    uint16_t old_sltctl = (uint16_t)get(p, EXP_SLTCTL, 2);
    uint16_t old_bctl = (uint16_t)get(p, BRIDGE_CONTROL, 2);
    for (uint32_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)(val >> (8 * i)), m = p->wmask[off + i];
        uint8_t v = (uint8_t)((p->cfg[off + i] & ~m) | (b & m));
        p->cfg[off + i] = (uint8_t)(v & ~(b & p->w1c[off + i]));
    }
    if (touches(off, len, EXP_SLTCTL, 2))
        slot_command(p, old_sltctl);
    if (!(old_bctl & BRIDGE_CONTROL_SBR) && (get(p, BRIDGE_CONTROL, 2) & BRIDGE_CONTROL_SBR))
        p->pending |= KVM_ROOTPORT_EV_BUS_RESET;
    irq_update(p);
    return p->pending ? KVM_PCI_CFG_EVENT : 0;
}

static int rp_route(void *opaque, unsigned bus, unsigned devfn,
                    const struct kvm_pci_cfg_ops **ops, void **fn)
{
    return kvm_rootport_route(opaque, bus, devfn, ops, fn);
}

const struct kvm_pci_cfg_ops kvm_rootport_cfg_ops = {
    .read = rp_read, .write = rp_write, .route = rp_route};

/* Base and limit of a window of `size` bytes at `base` in `granule`-byte units, the
 * limit naming the window's last granule; a closed window has its base (the register's
 * highest, `closed`) above its limit. */
static void window(uint64_t base, uint64_t size, uint64_t granule, uint64_t closed,
                   uint64_t *b, uint64_t *l)
{
    if (!size) {
        *b = closed;
        *l = 0;
        return;
    }
    *b = base / granule;
    *l = (base + size - 1) / granule;
}

void kvm_rootport_init(struct kvm_rootport *p, const struct kvm_rootport_setup *s)
{
    memset(p, 0, sizeof *p);
    uint64_t b, l;
    reg(p, 0x00, 2, s->vendor, 0, 0);
    reg(p, 0x02, 2, s->device, 0, 0);
    /* I/O, memory, bus master, parity and SERR responses, INTx disable */
    reg(p, CMD, 2, 0, 0x0547, 0);
    reg(p, STATUS, 2, STATUS_CAP_LIST, 0, 0);
    reg(p, 0x08, 4, 0x06040000u, 0, 0);         /* PCI-to-PCI bridge, revision 0 */
    reg(p, 0x0c, 1, 0, 0xff, 0);                /* cache line size */
    reg(p, 0x0e, 1, 0x01, 0, 0);                /* type 1, one function */
    reg(p, PRIMARY, 1, s->primary, 0xff, 0);
    reg(p, SECONDARY, 1, s->secondary, 0xff, 0);
    reg(p, SUBORDINATE, 1, s->subordinate, 0xff, 0);
    window(s->io_base, s->io_size, 0x1000, 0xf, &b, &l);   /* 16-bit I/O: the low nibble 0 */
    reg(p, IO_BASE, 1, (uint32_t)(b << 4) & 0xf0, 0xf0, 0);
    reg(p, IO_LIMIT, 1, (uint32_t)(l << 4) & 0xf0, 0xf0, 0);
    window(s->mem_base, s->mem_size, 1u << 20, 0xfff, &b, &l);
    reg(p, MEM_BASE, 2, (uint32_t)(b << 4) & 0xfff0, 0xfff0, 0);
    reg(p, MEM_LIMIT, 2, (uint32_t)(l << 4) & 0xfff0, 0xfff0, 0);
    window(s->pref_base, s->pref_size, 1u << 20, 0xfff, &b, &l);   /* 64-bit: the low nibble 1 */
    reg(p, PREF_BASE, 2, ((uint32_t)(b << 4) & 0xfff0) | 1, 0xfff0, 0);
    reg(p, PREF_LIMIT, 2, ((uint32_t)(l << 4) & 0xfff0) | 1, 0xfff0, 0);
    reg(p, PREF_BASE_UPPER, 4, (uint32_t)(b >> 12), 0xffffffffu, 0);
    reg(p, PREF_LIMIT_UPPER, 4, (uint32_t)(l >> 12), 0xffffffffu, 0);
    reg(p, 0x34, 1, EXP, 0, 0);                 /* capabilities */
    reg(p, 0x3c, 1, 0, 0xff, 0);                /* interrupt line */
    reg(p, 0x3d, 1, 1, 0, 0);                   /* INTA */
    /* parity, SERR, ISA, VGA, VGA 16-bit, master abort mode, secondary bus reset */
    reg(p, BRIDGE_CONTROL, 2, 0, 0x007f, 0);

    /* PCI Express, version 2, Root Port, slot implemented, interrupt message 0 */
    reg(p, EXP, 2, 0x10 | MSI << 8, 0, 0);
    reg(p, EXP_FLAGS, 2, 0x0002 | 0x4 << 4 | 0x0100, 0, 0);
    reg(p, EXP_DEVCAP, 4, 0x00008000u, 0, 0);   /* role-based errors, 128-byte payloads */
    reg(p, EXP_DEVCTL, 2, 0x2810, 0x7fff, 0);
    /* 2.5 GT/s x1, DLL Link Active reporting, the port number */
    reg(p, EXP_LNKCAP, 4, 0x1 | 0x1 << 4 | LNKCAP_DLLLARC | (uint32_t)s->port_number << 24,
        0, 0);
    /* ASPM control, RCB, link disable, common clock, extended synch, HW autonomous width
     * disable, bandwidth interrupt enables; Retrain Link reads 0 */
    reg(p, EXP_LNKCTL, 2, 0, 0x0edb, 0);
    reg(p, EXP_LNKSTA, 2, 0x1 | 0x1 << 4, 0, 0);     /* 2.5 GT/s x1 */
    reg(p, EXP_SLTCAP, 4,
        SLTCAP_ABP | SLTCAP_PCP | SLTCAP_AIP | SLTCAP_PIP | SLTCAP_HPC |
            (uint32_t)(s->slot_number & 0x1fff) << 19,
        0, 0);
    /* empty: powered off, both indicators off */
    reg(p, EXP_SLTCTL, 2,
        INDICATOR_OFF << SLTCTL_AIC_SHIFT | INDICATOR_OFF << SLTCTL_PIC_SHIFT | SLTCTL_PCC,
        SLTCTL_WRITABLE, 0);
    reg(p, EXP_SLTSTA, 2, 0, 0, SLTSTA_EVENTS);
    reg(p, EXP_RTCTL, 2, 0, 0x000f, 0);               /* system error and PME enables */
    reg(p, EXP_LNKCAP2, 4, 0x2, 0, 0);                /* 2.5 GT/s */
    reg(p, EXP_LNKCTL2, 2, 0x1, 0x000f, 0);           /* target speed */

    reg(p, MSI, 2, 0x05, 0, 0);                       /* the last capability */
    reg(p, MSI_CTRL, 2, MSI_CTRL_64BIT, MSI_CTRL_ENABLE, 0);
    reg(p, MSI_ADDR_LO, 4, 0, 0xfffffffcu, 0);
    reg(p, MSI_ADDR_HI, 4, 0, 0xffffffffu, 0);
    reg(p, MSI_DATA, 2, 0, 0xffff, 0);
}

int kvm_rootport_insert(struct kvm_rootport *p, const struct kvm_pci_cfg_ops *ops,
                        void *opaque, bool at_boot)
{
    if (!ops || !ops->read || !ops->write)
        return -EINVAL;
    if (p->child.ops)
        return -EBUSY;
    p->child.ops = ops;
    p->child.opaque = opaque;
    set_bits(p, EXP_SLTSTA, SLTSTA_PDS);
    if (at_boot) {
        /* as firmware leaves an occupied slot: powered, power indicator on */
        uint16_t ctl = (uint16_t)get(p, EXP_SLTCTL, 2);
        ctl &= (uint16_t)~(SLTCTL_PCC | 3 << SLTCTL_PIC_SHIFT);
        put(p, EXP_SLTCTL, 2, ctl | INDICATOR_ON << SLTCTL_PIC_SHIFT);
        set_bits(p, EXP_LNKSTA, LNKSTA_DLLLA);
        return 0;
    }
    set_bits(p, EXP_SLTSTA, SLTSTA_PDC);
    link_update(p);
    irq_update(p);
    return 0;
}

void kvm_rootport_press(struct kvm_rootport *p)
{
    set_bits(p, EXP_SLTSTA, SLTSTA_ABP);
    irq_update(p);
}

int kvm_rootport_remove(struct kvm_rootport *p)
{
    if (!p->child.ops)
        return -ENOENT;
    p->child.ops = NULL;
    p->child.opaque = NULL;
    clear_bits(p, EXP_SLTSTA, SLTSTA_PDS);
    set_bits(p, EXP_SLTSTA, SLTSTA_PDC);
    link_update(p);
    irq_update(p);
    return 0;
}

unsigned kvm_rootport_events(struct kvm_rootport *p)
{
    unsigned ev = p->pending;
    p->pending = 0;
    return ev;
}

bool kvm_rootport_msi(const struct kvm_rootport *p, uint64_t *addr, uint32_t *data)
{
    *addr = (uint64_t)get(p, MSI_ADDR_HI, 4) << 32 | get(p, MSI_ADDR_LO, 4);
    *data = get(p, MSI_DATA, 2);
    return get(p, MSI_CTRL, 2) & MSI_CTRL_ENABLE;
}

bool kvm_rootport_intx(const struct kvm_rootport *p)
{
    return p->intx;
}

void kvm_rootport_state(const struct kvm_rootport *p, struct kvm_rootport_state *st)
{
    uint16_t ctl = (uint16_t)get(p, EXP_SLTCTL, 2);
    st->present = get(p, EXP_SLTSTA, 2) & SLTSTA_PDS;
    st->powered = powered(p);
    st->link_up = link_up(p);
    st->power_indicator = (ctl >> SLTCTL_PIC_SHIFT) & 3;
    st->attention_indicator = (ctl >> SLTCTL_AIC_SHIFT) & 3;
    st->slot_control = ctl;
    st->slot_status = (uint16_t)get(p, EXP_SLTSTA, 2);
    st->link_status = (uint16_t)get(p, EXP_LNKSTA, 2);
}

int kvm_rootport_route(const struct kvm_rootport *p, unsigned bus, unsigned devfn,
                       const struct kvm_pci_cfg_ops **ops, void **opaque)
{
    unsigned sec = p->cfg[SECONDARY], sub = p->cfg[SUBORDINATE];
    /* bus 0 is the root bus: a secondary bus of 0 is a port not yet configured */
    if (!sec || bus < sec || bus > sub)
        return -ENOENT;
    *ops = NULL;
    *opaque = NULL;
    /* one device on a link; nothing answers while the link is down */
    if (bus == sec && devfn == 0 && p->child.ops && link_up(p)) {
        *ops = p->child.ops;
        *opaque = p->child.opaque;
    }
    return 0;
}
