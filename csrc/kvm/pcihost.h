/* A PCI host bridge in C: configuration mechanism #1 (ports CF8-CFF) and ECAM, plugged
 * into the KVM run loop as a handled range (struct kvm_io_ops), so a guest's config
 * accesses never leave C. Functions attach with struct kvm_pci_cfg_ops and an opaque
 * pointer handed back to the ops. */
#ifndef LUAVFIO_PCIHOST_H
#define LUAVFIO_PCIHOST_H

#include "iobus.h"

#include <stdint.h>

/* A write may return KVM_PCI_CFG_EVENT: the function's state changed in a way the VM layer
 * must act on (a BAR moved, decoding or MSI toggled); the run loop then returns a stop
 * exit (KVM_VMM_STOP_CONFIG) to its caller after completing the access, and the caller
 * resumes the vCPU when done. */
#define KVM_PCI_CFG_EVENT 1

struct kvm_pci_cfg_ops {
    /* off is aligned to len (1, 2 or 4) and below 4096. Return 0 (or KVM_PCI_CFG_EVENT
     * from write) or -errno: a failed read returns all ones, a failed write is dropped. */
    int (*read)(void *opaque, uint32_t off, uint32_t len, uint32_t *val);
    int (*write)(void *opaque, uint32_t off, uint32_t len, uint32_t val);
    /* A bridge only (else NULL): the function that answers bus:devfn below it, in *ops
     * and *fn (*ops NULL: the bridge decodes that bus but nothing answers there), or
     * -ENOENT if the bus is not below it. The host asks the functions of bus 0 for a
     * function of another bus that was not attached directly. */
    int (*route)(void *opaque, unsigned bus, unsigned devfn,
                 const struct kvm_pci_cfg_ops **ops, void **fn);
};

#define KVM_PCIHOST_MAX_FN 64
#define KVM_PCIHOST_ECAM_BUS_SIZE (1ull << 20)  /* 32 devices x 8 functions x 4 KiB */
#define KVM_PCIHOST_ECAM_MAX (256 * KVM_PCIHOST_ECAM_BUS_SIZE)  /* buses 0 to 255 */

struct kvm_pcihost {
    uint32_t addr;              /* the CF8 latch */
    /* The function access the last kvm_pcihost_access reached, if any (hit): what the
     * decode made of it, for a tracing VMM. */
    struct {
        int hit, write;
        uint16_t bdf;
        uint32_t off, size, value;
    } last;
    /* The ECAM window (size 0: none): 1 MiB per bus from bus 0, at most
     * KVM_PCIHOST_ECAM_MAX. Buses past 0 reach the functions behind bridges (route). */
    uint64_t ecam_base, ecam_size;
    unsigned nfn;
    struct {
        uint16_t bdf;
        void *opaque;
        const struct kvm_pci_cfg_ops *ops;
    } fn[KVM_PCIHOST_MAX_FN];
};

/* The handled range ops; opaque is the struct kvm_pcihost. Ports CF8-CFF and the ECAM
 * window (if any) belong to the host; other addresses read all ones. */
extern const struct kvm_io_ops kvm_pcihost_io_ops;

int kvm_pcihost_attach(struct kvm_pcihost *h, unsigned bus, unsigned dev, unsigned fn,
                       const struct kvm_pci_cfg_ops *ops, void *opaque);
int kvm_pcihost_detach(struct kvm_pcihost *h, unsigned bus, unsigned dev, unsigned fn);
/* One guest access; returns 0 if it is not the host's, 1 if answered, 2 if answered and
 * a function asked for the VM layer's attention (KVM_PCI_CFG_EVENT). */
int kvm_pcihost_access(struct kvm_pcihost *h, int space, uint64_t addr, uint8_t *data,
                       unsigned size, int is_write);

/* An emulated configuration space: bytes plus a mask of guest-writable bits. */
struct kvm_cfgspace {
    uint32_t size;              /* 256 or 4096 */
    uint8_t bytes[4096];
    uint8_t wmask[4096];
    uint8_t notify[4096];       /* nonzero: a guest write here returns KVM_PCI_CFG_EVENT */
};
extern const struct kvm_pci_cfg_ops kvm_cfgspace_ops;

#endif
