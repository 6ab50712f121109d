/* The PCI config trap core: a virtual PCI function over a device backend.
 *
 * Config space is a shadow image with three per-byte masks built from tables per
 * register and per capability (trap_cfg.c):
 *   emul   bits served from the shadow: read = (shadow & emul) | (device & ~emul)
 *   wmask  bits a guest write stores into the shadow
 *   dwmask bits a guest write forwards to the device (others keep the device's value,
 *          W1C bits write 0); an emulated bit without dwmask never reaches the device.
 * Registers with side effects have an owner kind; after a write the owner's hook
 * recomputes state from the shadow (BAR addresses, decode, MSI, MSI-X, FLR) and queues
 * events for the VM layer. BAR accesses are dispatched by (bar, offset, size) to the
 * MSI-X table/PBA, a quirk window or the device region, with no allocation. */
#ifndef LUAVFIO_TRAP_H
#define LUAVFIO_TRAP_H

#include "backend.h"

#include <stdbool.h>
#include <stdint.h>

#define TRAP_CFG_MAX 4096
#define TRAP_CFG_STD 256
#define TRAP_CAPS_MAX 96
#define TRAP_WINDOWS_MAX 16
#define TRAP_EVQ 256
#define TRAP_MSIX_MAX 2048
#define TRAP_NBARS 7            /* BAR0-5 and the ROM BAR (index 6) */
#define TRAP_UNMAPPED UINT64_MAX

enum trap_owner {
    OWN_NONE,
    OWN_COMMAND,
    OWN_BAR,
    OWN_ROM,
    OWN_MSI,
    OWN_MSIX,
    OWN_PCIE_DEVCTL,
    OWN_AF_CTRL,
    OWN_KINDS
};

enum trap_ev_type {
    TRAP_EV_BAR_MAP = 1,   /* bar, addr (TRAP_UNMAPPED when unmapped), old */
    TRAP_EV_DECODE,        /* flags: 1 memory enable, 2 I/O enable; data: COMMAND */
    TRAP_EV_MSI_ENABLE,    /* flags: 1 enabled; count: vectors; addr, data */
    TRAP_EV_MSI_ROUTE,     /* addr, data (while enabled) */
    TRAP_EV_MSI_MASK,      /* vector, flags: 1 masked */
    TRAP_EV_MSIX_ENABLE,   /* flags: 1 enabled, 2 function mask; count: table size */
    TRAP_EV_MSIX_FMASK,    /* flags: 1 function masked */
    TRAP_EV_MSIX_MASK,     /* vector, flags: 1 masked; addr, data of that entry */
    TRAP_EV_MSIX_ROUTE,    /* vector, addr, data */
    TRAP_EV_FLR,           /* the guest asked for a function level reset */
    TRAP_EV_KINDS
};

struct trap_event {
    uint8_t type;
    uint8_t bar;
    uint16_t flags;
    uint32_t vector;
    uint32_t data;
    uint32_t count;
    uint32_t mask;       /* MSI_ENABLE: the per-vector mask bits at that moment */
    uint64_t addr;
    uint64_t old;
};

struct trap_bar {
    uint64_t size;       /* size the guest sees (power of two), 0 = not implemented */
    uint64_t phys_size;  /* region size on the device; bytes above read as zero */
    uint32_t type;       /* low bits of the BAR (I/O: 0x1; memory: 0x0-0xf) */
    bool io, is64, prefetch, upper;
    uint64_t addr;       /* address programmed by the guest */
    uint64_t mapped;     /* addr while decoding and valid, else TRAP_UNMAPPED */
};

struct trap_cap {
    uint16_t off, len;
    uint16_t id;
    bool ext, hidden, added;
};

struct trap_fn;
/* A quirk handler for a BAR window; returns 0 or -errno. `off` is relative to the window. */
typedef int (*trap_window_handler)(struct trap_fn *fn, void *ctx, int id, bool write,
                                   uint64_t off, uint32_t len, uint64_t *val);

enum trap_window_kind { WIN_HANDLER, WIN_MIRROR };

struct trap_window {
    uint8_t bar, kind;
    uint64_t off, len;
    uint32_t cfg_off;     /* WIN_MIRROR: config offset the window starts at */
    trap_window_handler handler;  /* WIN_HANDLER: called for each access */
    void *ctx;
    int id;
};

struct trap_msix_entry {
    uint8_t b[16];
};

struct trap_fn {
    struct lv_backend *be;
    bool closed;             /* trap_free ran: reads all ones, writes dropped, nothing forwarded */
    uint32_t dev_cfg_size;   /* config region size on the device (256 or 4096) */
    uint32_t cfg_size;       /* what the guest sees: 4096 only with a visible PCIe cap */
    bool pcie_allowed;       /* VM says the guest sees a PCIe bus */
    uint8_t shadow[TRAP_CFG_MAX];
    uint8_t emul[TRAP_CFG_MAX];
    uint8_t wmask[TRAP_CFG_MAX];
    uint8_t dwmask[TRAP_CFG_MAX];
    uint8_t w1c[TRAP_CFG_MAX];
    uint8_t owner[TRAP_CFG_MAX];
    uint8_t dev_init[TRAP_CFG_MAX];   /* device config as read at creation */

    struct lv_region_info regions[LV_REGION_MAX];
    struct lv_irq_info irqs[LV_IRQ_MAX];
    struct trap_bar bars[TRAP_NBARS];
    uint16_t command;        /* last COMMAND the guest wrote (decode state) */

    uint16_t pcie_off;       /* PCI Express cap (FLR in DevCtl), 0 if none/hidden */
    uint8_t pcie_mrrs;       /* DevCtl MRRS the guest last wrote (a change reaches the device) */
    uint16_t af_off;         /* Advanced Features cap (FLR), 0 if none/hidden */

    struct trap_cap caps[TRAP_CAPS_MAX];
    unsigned ncaps;
    unsigned cap_guard_hits; /* malformed chain links that were cut */

    struct {
        uint16_t off;        /* 0 = no (visible) MSI cap */
        uint8_t mmc;         /* log2 of vectors supported (clamped to irq info) */
        bool is64, pvm, enabled;
        uint8_t mme;
        uint64_t addr;
        uint32_t data, mask;
        uint32_t pending;    /* pending bits set by the VM layer (trap_msi_set_pending) */
        const int *src[32];  /* a masked vector's interrupt source, see trap_set_source */
    } msi;

    struct {
        uint16_t off;        /* 0 = no (visible) MSI-X cap */
        uint16_t n;
        uint8_t table_bar, pba_bar;
        uint64_t table_off, pba_off;
        bool enabled, fmask;
        struct trap_msix_entry *table;
        uint64_t pending[TRAP_MSIX_MAX / 64];   /* set by the VM layer */
        const int **src;     /* n entries: a masked vector's interrupt source */
    } msix;

    struct trap_window windows[TRAP_WINDOWS_MAX];
    unsigned nwindows;

    struct trap_event evq[TRAP_EVQ];
    unsigned ev_head, ev_count;
    uint64_t ev_lost;
};

/* trap_core.c */
int trap_init(struct trap_fn *fn, struct lv_backend *be, bool pcie_allowed);
void trap_free(struct trap_fn *fn);
void trap_event(struct trap_fn *fn, const struct trap_event *ev);
bool trap_event_pop(struct trap_fn *fn, struct trap_event *ev);
const char *trap_event_name(unsigned type);

/* trap_cfg.c */
int trap_cfg_setup(struct trap_fn *fn);
int trap_cfg_read(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t *val);
int trap_cfg_write(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t val);
void trap_rechain(struct trap_fn *fn);
int trap_hide_cap(struct trap_fn *fn, uint16_t id, bool ext);
int trap_add_cap(struct trap_fn *fn, uint16_t off, const uint8_t *bytes, const uint8_t *wmask,
                 uint16_t len, bool ext);
int trap_set_config(struct trap_fn *fn, uint32_t off, uint32_t len, const uint8_t *bytes,
                    const uint8_t *wmask);
int trap_set_perm(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t emul, uint32_t wmask,
                  uint32_t dwmask);
void trap_apply_perm(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t emul,
                     uint32_t wmask, uint32_t dwmask, uint32_t w1c, uint8_t owner);
uint32_t trap_shadow_get(const struct trap_fn *fn, uint32_t off, uint32_t len);
void trap_shadow_set(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t val);

/* trap_bar.c */
int trap_bar_setup(struct trap_fn *fn);
void trap_hook_bars(struct trap_fn *fn);
void trap_hook_command(struct trap_fn *fn);
int trap_bar_access(struct trap_fn *fn, unsigned bar, uint64_t off, uint32_t len, bool write,
                    uint64_t *val);
int trap_addr_access(struct trap_fn *fn, bool io, uint64_t addr, uint32_t len, bool write,
                     uint64_t *val);
/* trap_addr_access for a caller that cannot run a window handler (the run loop's seam,
 * wire/): the same one decode and dispatch, except that an access a handler window
 * (WIN_HANDLER) would take is not made and TRAP_PASS returned, *val untouched: the
 * caller hands it to whoever installed the handler, who makes it with trap_addr_access.
 * A closed function never passes. */
#define TRAP_PASS 1
int trap_addr_try(struct trap_fn *fn, bool io, uint64_t addr, uint32_t len, bool write,
                  uint64_t *val);
/* The one address decode every caller shares: the BAR that claims a guest access of `len`
 * bytes at `addr` (the first enabled BAR of that space holding the whole access) and the
 * offset in it; -1 when none does. trap_addr_access and trap_addr_try dispatch with it,
 * once per access. */
int trap_decode(const struct trap_fn *fn, bool io, uint64_t addr, uint32_t len, uint64_t *off);
/* The window an access at [off, off+len) of `bar` is dispatched to, or NULL. */
const struct trap_window *trap_window_at(const struct trap_fn *fn, unsigned bar, uint64_t off,
                                         uint32_t len);
/* True if the MSI-X table or PBA takes an access at [off, off+len) of `bar`. */
bool trap_msix_claims(const struct trap_fn *fn, unsigned bar, uint64_t off, uint32_t len);
int trap_set_bar_size(struct trap_fn *fn, unsigned bar, uint64_t size);
int trap_hide_rom(struct trap_fn *fn);
int trap_add_window(struct trap_fn *fn, const struct trap_window *w);

/* trap_msi.c */
int trap_msi_setup(struct trap_fn *fn, uint16_t off);
int trap_msix_setup(struct trap_fn *fn, uint16_t off);
void trap_hook_msi(struct trap_fn *fn);
void trap_hook_msix(struct trap_fn *fn);
int trap_msix_relocate(struct trap_fn *fn, unsigned bar, uint64_t table_off, uint64_t pba_off);
/* Returns 1 if the access fell on the MSI-X table or PBA (then it is handled), else 0. */
int trap_msix_access(struct trap_fn *fn, unsigned bar, uint64_t off, uint32_t len, bool write,
                     uint64_t *val);
int trap_msix_set_pending(struct trap_fn *fn, unsigned vector, bool on);
int trap_msi_set_pending(struct trap_fn *fn, unsigned vector, bool on);
/* A masked vector's interrupt source: while the VM keeps a vector from the guest (masked
 * by the vector or function mask), the device still signals its eventfd. With the eventfd
 * registered here, the PBA (MSI-X) or the pending bits (MSI) read 1 for that vector while
 * the eventfd holds a count, as the device's own PBA would. `fd` points at the fd field of
 * the object that owns the eventfd (the binding keeps that object alive), so a closed
 * source (*fd < 0) reads as not pending; NULL removes it. */
int trap_set_source(struct trap_fn *fn, bool msix, unsigned vector, const int *fd);
/* Refresh the MSI pending bits in the shadow when a config read covers them. */
void trap_msi_sync_pending(struct trap_fn *fn, uint32_t off, uint32_t len);

#endif
