/* A PCI Express root port with a native hot-plug slot, as a function of the C host bridge
 * (pcihost.h): a type-1 header whose bus numbers route config accesses to the function
 * behind it, bridge windows, a PCIe capability (version 2, Root Port, slot implemented)
 * whose slot has an attention button, a power controller, power and attention
 * indicators, presence detect, Data Link Layer Link Active reporting and Command
 * Completed, and an MSI capability for the slot's events.
 *
 * The model never acts on the VM: what needs the VMM (send the MSI, the guest powered an
 * occupied slot off so the device must be released, ...) is a pending event
 * (KVM_ROOTPORT_EV_*) the VMM takes with kvm_rootport_events; a guest config write that
 * leaves one returns KVM_PCI_CFG_EVENT, so the run loop stops with KVM_VMM_STOP_CONFIG.
 * The VMM's side of the slot is kvm_rootport_insert (a device arrives), _press (the
 * attention button: please power this slot off), _remove (the device leaves: after the
 * guest powered the slot off, or by surprise). No locking: the caller serializes the
 * guest's accesses and its own calls (the VM's io_lock). */
#ifndef LUAVFIO_ROOTPORT_H
#define LUAVFIO_ROOTPORT_H

#include "pcihost.h"

#include <stdbool.h>
#include <stdint.h>

/* What the VMM must do, a bit each; kvm_rootport_events takes them. */
#define KVM_ROOTPORT_EV_MSI 0x01        /* send the port's MSI now (kvm_rootport_msi) */
#define KVM_ROOTPORT_EV_INTX 0x02       /* the INTx level changed (kvm_rootport_intx) */
#define KVM_ROOTPORT_EV_POWER_OFF 0x04  /* the guest powered the occupied slot off: release
                                           the device, then kvm_rootport_remove */
#define KVM_ROOTPORT_EV_POWER_ON 0x08   /* the guest powered the slot on */
#define KVM_ROOTPORT_EV_BUS_RESET 0x10  /* the guest set Secondary Bus Reset */

/* Where the capabilities sit in the port's config space. */
#define KVM_ROOTPORT_PCIE_CAP 0x40
#define KVM_ROOTPORT_MSI_CAP 0x80

/* How the port looks when it is made: IDs, where it sits in the hierarchy and the bridge
 * windows firmware would have left: base and size in bytes, aligned to the window's
 * granule (4 KiB for I/O, 1 MiB for memory); a size of 0 leaves the window closed. */
struct kvm_rootport_setup {
    uint16_t vendor, device;
    uint8_t port_number;        /* Link Capabilities' Port Number */
    uint16_t slot_number;       /* Slot Capabilities' Physical Slot Number (13 bits) */
    uint8_t primary, secondary, subordinate;
    uint32_t io_base, io_size;                  /* 16-bit I/O */
    uint32_t mem_base, mem_size;                /* below 4 GiB */
    uint64_t pref_base, pref_size;              /* prefetchable, 64-bit */
};

struct kvm_rootport {
    uint8_t cfg[256];
    uint8_t wmask[256];         /* guest-writable bits */
    uint8_t w1c[256];           /* bits a guest write of 1 clears */
    struct {                    /* the function behind the port (device 0, function 0) */
        const struct kvm_pci_cfg_ops *ops;
        void *opaque;
    } child;
    unsigned pending;           /* KVM_ROOTPORT_EV_* not taken yet */
    bool level;                 /* an enabled slot event is pending (HPIE and ...) */
    bool intx;                  /* the INTx level the VMM was last told of */
};

/* What a VMM or a test asks of the slot (the registers decoded). */
struct kvm_rootport_state {
    bool present, powered, link_up;
    uint8_t power_indicator, attention_indicator;   /* 1 on, 2 blink, 3 off */
    uint16_t slot_control, slot_status, link_status;
};

extern const struct kvm_pci_cfg_ops kvm_rootport_cfg_ops;

void kvm_rootport_init(struct kvm_rootport *p, const struct kvm_rootport_setup *s);
/* Put a function behind the empty port. at_boot: it was there from power-on (the slot
 * powered, its power indicator on, the link up, no event); else a hot-add: presence
 * detected, and the link comes up when the guest powers the slot (at once if it is
 * powered). -EBUSY if occupied, -EINVAL without read and write. */
int kvm_rootport_insert(struct kvm_rootport *p, const struct kvm_pci_cfg_ops *ops,
                        void *opaque, bool at_boot);
/* The attention button: the guest's pciehp answers by powering the slot off. */
void kvm_rootport_press(struct kvm_rootport *p);
/* The function leaves the port (presence and link lost, as a surprise removal if the
 * guest had not powered the slot off). -ENOENT if the port was empty. */
int kvm_rootport_remove(struct kvm_rootport *p);
/* Take the pending events (KVM_ROOTPORT_EV_*), leaving none. */
unsigned kvm_rootport_events(struct kvm_rootport *p);
/* The MSI the port sends, if the guest enabled MSI: address and data; false if not. */
bool kvm_rootport_msi(const struct kvm_rootport *p, uint64_t *addr, uint32_t *data);
/* The INTx level (MSI off, INTx not disabled, a slot event enabled and pending). */
bool kvm_rootport_intx(const struct kvm_rootport *p);
void kvm_rootport_state(const struct kvm_rootport *p, struct kvm_rootport_state *st);
/* The function config accesses to bus:devfn reach through this port: the child for
 * secondary:00.0 while the link is up; NULL ops for any other bus the port decodes
 * (nothing answers there); -ENOENT when bus is outside [secondary, subordinate]. */
int kvm_rootport_route(const struct kvm_rootport *p, unsigned bus, unsigned devfn,
                       const struct kvm_pci_cfg_ops **ops, void **opaque);

#endif
