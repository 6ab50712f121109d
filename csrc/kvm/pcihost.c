/* PCI host bridge decoding (CF8/CFC, ECAM) and an emulated configuration space. */
#include "pcihost.h"
#include "base/le.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#define BDF(b, d, f) ((uint16_t)((b) << 8 | (d) << 3 | (f)))

int kvm_pcihost_attach(struct kvm_pcihost *h, unsigned bus, unsigned dev, unsigned fn,
                       const struct kvm_pci_cfg_ops *ops, void *opaque)
{
    if (bus > 255 || dev > 31 || fn > 7 || !ops || !ops->read || !ops->write)
        return -EINVAL;
    uint16_t bdf = BDF(bus, dev, fn);
    for (unsigned i = 0; i < h->nfn; i++)
        if (h->fn[i].bdf == bdf)
            return -EEXIST;
    if (h->nfn == KVM_PCIHOST_MAX_FN)
        return -ENOSPC;
    h->fn[h->nfn].bdf = bdf;
    h->fn[h->nfn].ops = ops;
    h->fn[h->nfn].opaque = opaque;
    h->nfn++;
    return 0;
}

int kvm_pcihost_detach(struct kvm_pcihost *h, unsigned bus, unsigned dev, unsigned fn)
{
    uint16_t bdf = BDF(bus & 0xff, dev & 0x1f, fn & 7);
    for (unsigned i = 0; i < h->nfn; i++)
        if (h->fn[i].bdf == bdf) {
            h->fn[i] = h->fn[--h->nfn];
            return 0;
        }
    return -ENOENT;
}

/* The function that answers bdf: one attached there, else one a bridge on bus 0 routes
 * the access to (through its secondary and subordinate bus numbers); false if none. */
static bool find(const struct kvm_pcihost *h, uint16_t bdf, const struct kvm_pci_cfg_ops **ops,
                 void **opaque)
{
    for (unsigned i = 0; i < h->nfn; i++)
        if (h->fn[i].bdf == bdf) {
            *ops = h->fn[i].ops;
            *opaque = h->fn[i].opaque;
            return true;
        }
    if (bdf >> 8 == 0)
        return false;
    for (unsigned i = 0; i < h->nfn; i++)
        if (h->fn[i].bdf >> 8 == 0 && h->fn[i].ops->route &&
            h->fn[i].ops->route(h->fn[i].opaque, bdf >> 8, bdf & 0xff, ops, opaque) == 0)
            return *ops != NULL;
    return false;
}

/* A configuration access of 1/2/4 bytes that does not cross its own alignment; anything
 * else, or an absent function, reads all ones and is dropped. */
static int config(struct kvm_pcihost *h, uint16_t bdf, uint32_t off, uint8_t *data,
                  unsigned size, int is_write)
{
    const struct kvm_pci_cfg_ops *ops;
    void *opaque;
    if (find(h, bdf, &ops, &opaque) && (size == 1 || size == 2 || size == 4) &&
        off % size == 0 && off < 4096) {
        h->last.hit = 1;
        h->last.bdf = bdf;
        h->last.off = off;
        h->last.size = size;
        h->last.write = is_write;
        if (is_write) {
            h->last.value = (uint32_t)lv_le_get(data, size);
            return ops->write(opaque, off, size, h->last.value) == KVM_PCI_CFG_EVENT;
        }
        uint32_t v;
        if (ops->read(opaque, off, size, &v) < 0)
            v = 0xffffffff;
        h->last.value = v & (uint32_t)((1ull << (8 * size)) - 1);
        lv_le_put(data, v, size);
        return 0;
    }
    if (!is_write)
        memset(data, 0xff, size);
    return 0;
}

int kvm_pcihost_access(struct kvm_pcihost *h, int space, uint64_t addr, uint8_t *data,
                       unsigned size, int is_write)
{
    h->last.hit = 0;
    if (space == KVM_VMM_PIO) {
        if (addr == 0xcf8 && size == 4) {
            if (is_write)
                h->addr = (uint32_t)lv_le_get(data, 4);
            else
                lv_le_put(data, h->addr, 4);
            return 1;
        }
        if (addr < 0xcfc || addr > 0xcff)
            return 0;
        unsigned lane = (unsigned)(addr - 0xcfc);
        if (!(h->addr & 0x80000000u) || lane + size > 4) {
            if (!is_write)
                memset(data, 0xff, size);
            return 1;
        }
        return 1 + config(h, (uint16_t)((h->addr >> 8) & 0xffff), (h->addr & 0xfc) + lane,
                          data, size, is_write);
    }
    if (!h->ecam_size || addr < h->ecam_base || addr - h->ecam_base >= h->ecam_size)
        return 0;
    /* bus (bits 27:20), device and function (19:12), register (11:0); a bus other than 0
     * is routed as a CF8 access to it is (find). A window said to be larger than 256 buses
     * does not alias bus 0 past them: that part reads all ones. */
    uint64_t off = addr - h->ecam_base;
    if (off >= KVM_PCIHOST_ECAM_MAX) {
        if (!is_write)
            memset(data, 0xff, size);
        return 1;
    }
    unsigned bus = (unsigned)(off >> 20), devfn = (unsigned)(off >> 12 & 0xff);
    uint16_t bdf = (uint16_t)(bus << 8 | devfn);
    uint32_t reg = (uint32_t)(off & 0xfff);
    if (size == 8 && reg % 8 == 0) { /* two dwords, low first */
        int ev = config(h, bdf, reg, data, 4, is_write);
        ev |= config(h, bdf, reg + 4, data + 4, 4, is_write);
        return 1 + ev;
    }
    return 1 + config(h, bdf, reg, data, size, is_write);
}

static int host_io(void *opaque, int space, uint64_t addr, uint8_t *data, unsigned size,
                   int is_write)
{
    int r = kvm_pcihost_access(opaque, space, addr, data, size, is_write);
    /* Inside our ranges but not ours (e.g. a byte write to CF9): absent. */
    if (r == 0 && !is_write)
        memset(data, 0xff, size);
    return r == 2 ? KVM_VMM_IO_STOP(KVM_VMM_STOP_CONFIG) : KVM_VMM_IO_DONE;
}

const struct kvm_io_ops kvm_pcihost_io_ops = {.access = host_io};

static int cfg_read(void *opaque, uint32_t off, uint32_t len, uint32_t *val)
{
    struct kvm_cfgspace *c = opaque;
    if (off + len > c->size) {
        *val = 0xffffffffu;
        return 0;
    }
    *val = (uint32_t)lv_le_get(c->bytes + off, len);
    return 0;
}

static int cfg_write(void *opaque, uint32_t off, uint32_t len, uint32_t val)
{
    struct kvm_cfgspace *c = opaque;
    int ev = 0;
    if (off + len > c->size)
        return 0;
    for (uint32_t i = 0; i < len; i++) {
        uint8_t m = c->wmask[off + i], b = (uint8_t)(val >> (8 * i));
        c->bytes[off + i] = (uint8_t)((c->bytes[off + i] & ~m) | (b & m));
        ev |= c->notify[off + i] != 0;
    }
    return ev ? KVM_PCI_CFG_EVENT : 0;
}

const struct kvm_pci_cfg_ops kvm_cfgspace_ops = {.read = cfg_read, .write = cfg_write};
