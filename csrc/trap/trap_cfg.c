/* Config space virtualization: permission tables per register and per capability,
 * the shadow read/write paths, capability chain walking and re-chaining. */
#include "trap.h"

#include <errno.h>
#include <string.h>

/* One rule: `len` bytes at `off` (relative to the header or capability start). The
 * 32-bit masks are little-endian images of the register's bytes. */
struct perm {
    uint16_t off;
    uint8_t len;
    uint8_t owner;
    uint8_t zero;          /* shadow starts as 0 instead of the device's value */
    uint32_t emul, wmask, dwmask, w1c;
};

#define ALL 0xffffffffu

/* Type 0 header. Everything is emulated except COMMAND (emulated and forwarded, so the
 * device decodes what the guest enabled) and STATUS (device bits, error bits W1C). */
static const struct perm header_perms[] = {
    {0x00, 2, OWN_NONE, 0, ALL, 0, 0, 0},            /* vendor */
    {0x02, 2, OWN_NONE, 0, ALL, 0, 0, 0},            /* device */
    /* IO, MEMORY, MASTER, PARITY, SERR, INTX_DISABLE; starts 0 as after reset */
    {0x04, 2, OWN_COMMAND, 1, 0x0547, 0x0547, 0x0547, 0},
    {0x06, 2, OWN_NONE, 0, 0x0010, 0, 0xf900, 0xf900}, /* STATUS: CAP_LIST emulated */
    {0x08, 4, OWN_NONE, 0, ALL, 0, 0, 0},            /* revision, class */
    {0x0c, 1, OWN_NONE, 0, ALL, ALL, 0, 0},          /* cache line size */
    {0x0d, 1, OWN_NONE, 0, ALL, ALL, 0, 0},          /* latency timer */
    {0x0e, 1, OWN_NONE, 0, ALL, 0, 0, 0},            /* header type */
    {0x0f, 1, OWN_NONE, 0, ALL, 0, 0, 0},            /* BIST: never started by a guest */
    {0x10, 4, OWN_BAR, 1, ALL, 0, 0, 0},             /* BARs: masks set by trap_bar_setup */
    {0x14, 4, OWN_BAR, 1, ALL, 0, 0, 0},
    {0x18, 4, OWN_BAR, 1, ALL, 0, 0, 0},
    {0x1c, 4, OWN_BAR, 1, ALL, 0, 0, 0},
    {0x20, 4, OWN_BAR, 1, ALL, 0, 0, 0},
    {0x24, 4, OWN_BAR, 1, ALL, 0, 0, 0},
    {0x28, 4, OWN_NONE, 0, ALL, 0, 0, 0},            /* CardBus CIS */
    {0x2c, 4, OWN_NONE, 0, ALL, 0, 0, 0},            /* subsystem IDs */
    {0x30, 4, OWN_ROM, 1, ALL, 0, 0, 0},             /* ROM BAR */
    {0x34, 4, OWN_NONE, 0, ALL, 0, 0, 0},            /* cap pointer + reserved */
    {0x38, 4, OWN_NONE, 1, ALL, 0, 0, 0},            /* reserved */
    {0x3c, 1, OWN_NONE, 1, ALL, ALL, 0, 0},          /* INTERRUPT_LINE: guest scratch */
    {0x3d, 1, OWN_NONE, 0, ALL, 0, 0, 0},            /* INTERRUPT_PIN: from irq info */
    {0x3e, 2, OWN_NONE, 0, ALL, 0, 0, 0},            /* MIN_GNT, MAX_LAT */
};

/* Capabilities: bytes default to read-only passthrough; the header (ID and next, or
 * the extended header dword) is always emulated. Rules below add the writable bits. */
static const struct perm pm_perms[] = {
    {2, 2, OWN_NONE, 0, ALL, 0, 0, 0},               /* PMC */
    /* power state emulated (a guest must not put the device in D3 under us) */
    {4, 2, OWN_NONE, 0, 0x0003, 0x0003, 0x8100, 0x8000},
};
static const struct perm vpd_perms[] = {
    {2, 2, OWN_NONE, 0, 0, 0, 0xffff, 0},
    {4, 4, OWN_NONE, 0, 0, 0, ALL, 0},
};
/* PCI Express: the control registers follow vfio-pci's policy bit for bit
 * (init_pci_cap_exp_perm), so the boundary holds here whatever the backend is. */
static const struct perm exp_perms[] = {
    {0x02, 2, OWN_NONE, 0, ALL, 0, 0, 0},            /* flags: quirks may fix version */
    /* DevCtl: initiate-FLR (15), Max_Payload_Size (7:5) and Max_Read_Request_Size
     * (14:12) live in the shadow (hook_devctl acts on FLR and MRRS); the error
     * reporting enables, relaxed ordering, extended tag, aux power and no-snoop go to
     * the device; Phantom Functions (9) is read-only: it would confuse the IOMMU. */
    {0x08, 2, OWN_PCIE_DEVCTL, 0, 0xf0e0, 0xf0e0, 0x0d1f, 0},
    {0x0a, 2, OWN_NONE, 0, 0, 0, 0x000f, 0x000f},    /* DevSta error bits W1C */
    {0x10, 2, OWN_NONE, 0, 0, 0, 0, 0},              /* LnkCtl: read-only (link-wide) */
    {0x12, 2, OWN_NONE, 0, 0, 0, 0xc000, 0xc000},    /* LnkSta bandwidth bits W1C */
    /* DevCtl2: all but ARI Forwarding Enable (5), which the host set at probe time */
    {0x28, 2, OWN_NONE, 0, 0, 0, 0xffdf, 0},
    {0x30, 2, OWN_NONE, 0, 0, 0, 0, 0},              /* LnkCtl2: read-only (link-wide) */
};
static const struct perm af_perms[] = {
    {4, 1, OWN_AF_CTRL, 1, 0x01, 0x01, 0, 0},        /* AF control: FLR initiate */
};
static const struct perm aer_perms[] = {
    {0x04, 4, OWN_NONE, 0, 0, 0, ALL, ALL},          /* uncorrectable status */
    {0x08, 4, OWN_NONE, 0, 0, 0, ALL, 0},            /* uncorrectable mask */
    {0x0c, 4, OWN_NONE, 0, 0, 0, ALL, 0},            /* severity */
    {0x10, 4, OWN_NONE, 0, 0, 0, ALL, ALL},          /* correctable status */
    {0x14, 4, OWN_NONE, 0, 0, 0, ALL, 0},            /* correctable mask */
    {0x18, 4, OWN_NONE, 0, 0, 0, 0x0140, 0},         /* ECRC enables */
};
static const struct perm pwr_perms[] = {
    {4, 1, OWN_NONE, 0, 0, 0, 0xff, 0},              /* data select */
};

struct cap_rule {
    uint16_t id;
    uint16_t len;                                    /* fixed length, or 0: use len_fn */
    uint16_t (*len_fn)(const struct trap_fn *fn, uint16_t off);
    const struct perm *perms;
    unsigned nperms;
    int (*setup)(struct trap_fn *fn, uint16_t off);  /* < 0: hide the capability */
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }

static uint16_t msi_len(const struct trap_fn *fn, uint16_t off)
{
    uint16_t flags = rd16(fn->dev_init + off + 2);
    return (uint16_t)(10 + ((flags & 0x80) ? 4 : 0) + ((flags & 0x100) ? 10 : 0));
}
static uint16_t vndr_len(const struct trap_fn *fn, uint16_t off)
{
    return fn->dev_init[off + 2];
}
static uint16_t exp_len(const struct trap_fn *fn, uint16_t off)
{
    /* version 1 endpoints stop after the link registers; v2 adds the *2 registers */
    return (fn->dev_init[off + 2] & 0xf) >= 2 ? 60 : 20;
}
static int exp_setup(struct trap_fn *fn, uint16_t off)
{
    fn->pcie_off = off;
    /* MPS and MRRS start as the device's; initiate-FLR always reads 0 */
    fn->shadow[off + 9] &= 0x7f;
    fn->pcie_mrrs = (uint8_t)((fn->shadow[off + 9] >> 4) & 7);
    return 0;
}
static int af_setup(struct trap_fn *fn, uint16_t off)
{
    fn->af_off = off;
    return 0;
}

#define RULE(id, len, lenfn, perms, setup) {id, len, lenfn, perms, sizeof perms / sizeof *perms, setup}
#define RULE0(id, len, lenfn, setup) {id, len, lenfn, NULL, 0, setup}

/* Standard capabilities the guest may see; any other ID is hidden (as the kernel does
 * for IDs whose length it does not know). */
static const struct cap_rule std_rules[] = {
    RULE(0x01, 8, NULL, pm_perms, NULL),             /* power management */
    RULE(0x03, 8, NULL, vpd_perms, NULL),            /* VPD */
    RULE0(0x05, 0, msi_len, trap_msi_setup),         /* MSI */
    RULE0(0x09, 0, vndr_len, NULL),                  /* vendor specific */
    RULE0(0x0d, 8, NULL, NULL),                      /* subsystem IDs (bridges) */
    RULE(0x10, 0, exp_len, exp_perms, exp_setup),    /* PCI Express */
    RULE0(0x11, 12, NULL, trap_msix_setup),          /* MSI-X */
    RULE(0x13, 6, NULL, af_perms, af_setup),         /* advanced features */
};

static const struct cap_rule ext_rules[] = {
    RULE(0x0001, 0x2c, NULL, aer_perms, NULL),       /* AER (endpoint part) */
    RULE0(0x0003, 12, NULL, NULL),                   /* device serial number */
    RULE(0x0004, 16, NULL, pwr_perms, NULL),         /* power budgeting */
    RULE0(0x000e, 8, NULL, NULL),                    /* ARI */
    RULE0(0x000f, 8, NULL, NULL),                    /* ATS (read-only: no ATS enable) */
    RULE0(0x0018, 8, NULL, NULL),                    /* LTR */
    RULE0(0x0019, 12, NULL, NULL),                   /* secondary PCIe */
    RULE0(0x001b, 8, NULL, NULL),                    /* PASID */
    RULE0(0x001e, 16, NULL, NULL),                   /* L1 PM substates */
    RULE0(0x001f, 12, NULL, NULL),                   /* PTM */
};

static const struct cap_rule *find_rule(const struct cap_rule *rules, unsigned n, uint16_t id)
{
    for (unsigned i = 0; i < n; i++)
        if (rules[i].id == id)
            return &rules[i];
    return NULL;
}

void trap_apply_perm(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t emul,
                     uint32_t wmask, uint32_t dwmask, uint32_t w1c, uint8_t owner)
{
    for (uint32_t i = 0; i < len && i < 4 && off + i < TRAP_CFG_MAX; i++) {
        uint32_t b = off + i, sh = 8 * i;
        fn->emul[b] = (uint8_t)(emul >> sh);
        fn->wmask[b] = (uint8_t)(wmask >> sh);
        fn->dwmask[b] = (uint8_t)(dwmask >> sh);
        fn->w1c[b] = (uint8_t)(w1c >> sh);
        fn->owner[b] = owner;
    }
}

static void apply_table(struct trap_fn *fn, uint32_t base, uint32_t limit,
                        const struct perm *t, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (t[i].off + t[i].len > limit)
            continue;
        uint32_t off = base + t[i].off;
        trap_apply_perm(fn, off, t[i].len, t[i].emul, t[i].wmask, t[i].dwmask, t[i].w1c,
                        t[i].owner);
        if (t[i].zero)
            for (uint32_t k = 0; k < t[i].len; k++)
                fn->shadow[off + k] &= (uint8_t)~(t[i].emul >> (8 * k));
    }
}

uint32_t trap_shadow_get(const struct trap_fn *fn, uint32_t off, uint32_t len)
{
    uint32_t v = 0;
    for (uint32_t i = 0; i < len && off + i < TRAP_CFG_MAX; i++)
        v |= (uint32_t)fn->shadow[off + i] << (8 * i);
    return v;
}

void trap_shadow_set(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t val)
{
    for (uint32_t i = 0; i < len && off + i < TRAP_CFG_MAX; i++)
        fn->shadow[off + i] = (uint8_t)(val >> (8 * i));
}

/* Hidden bytes read as zero and ignore writes. */
static void hide_bytes(struct trap_fn *fn, uint32_t off, uint32_t len)
{
    for (uint32_t i = off; i < off + len && i < TRAP_CFG_MAX; i++) {
        fn->shadow[i] = 0;
        fn->emul[i] = 0xff;
        fn->wmask[i] = fn->dwmask[i] = fn->w1c[i] = 0;
        fn->owner[i] = OWN_NONE;
    }
}

static int add_cap_entry(struct trap_fn *fn, uint16_t off, uint16_t len, uint16_t id, bool ext,
                         bool hidden, bool added)
{
    if (fn->ncaps >= TRAP_CAPS_MAX)
        return -ENOSPC;
    struct trap_cap *c = &fn->caps[fn->ncaps++];
    c->off = off, c->len = len, c->id = id, c->ext = ext, c->hidden = hidden, c->added = added;
    return 0;
}

/* Lay a capability's rules over its bytes; hides it when it is malformed (too long,
 * overlapping an earlier one) or unknown. `claimed` marks bytes already in a cap. */
static void claim_cap(struct trap_fn *fn, uint8_t *claimed, uint16_t off, uint16_t id, bool ext)
{
    const struct cap_rule *r = ext ? find_rule(ext_rules, sizeof ext_rules / sizeof *ext_rules, id)
                                   : find_rule(std_rules, sizeof std_rules / sizeof *std_rules, id);
    uint32_t hdr = ext ? 4 : 2;
    uint32_t limit = ext ? fn->dev_cfg_size : TRAP_CFG_STD;
    uint32_t len = r ? (r->len ? r->len : r->len_fn(fn, off)) : hdr;
    bool hidden = !r;
    if (len < hdr || off + len > limit) {
        len = hdr;
        hidden = true;
    }
    for (uint32_t i = off; i < off + len; i++)
        if (claimed[i]) {
            fn->cap_guard_hits++;
            /* overlapping another capability: keep the earlier one intact */
            add_cap_entry(fn, off, 0, id, ext, true, false);
            return;
        }
    memset(claimed + off, 1, len);
    if (!hidden) {
        for (uint32_t i = off + hdr; i < off + len; i++) {
            fn->emul[i] = fn->wmask[i] = fn->dwmask[i] = fn->w1c[i] = 0;
            fn->owner[i] = OWN_NONE;
        }
        trap_apply_perm(fn, off, hdr, ALL, 0, 0, 0, OWN_NONE);
        if (r->perms)
            apply_table(fn, off, len, r->perms, r->nperms);
        if (r->setup && r->setup(fn, off) < 0)
            hidden = true;
    }
    if (hidden)
        hide_bytes(fn, off, len);
    else
        trap_apply_perm(fn, off, hdr, ALL, 0, 0, 0, OWN_NONE);
    add_cap_entry(fn, off, (uint16_t)len, id, ext, hidden, false);
}

static void walk_std(struct trap_fn *fn, uint8_t *claimed)
{
    if (!(fn->dev_init[0x06] & 0x10))
        return;
    uint8_t seen[TRAP_CFG_STD / 4] = {0};
    unsigned ptr = fn->dev_init[0x34] & 0xfc;
    while (ptr) {
        if (ptr < 0x40 || seen[ptr / 4] || fn->ncaps >= TRAP_CAPS_MAX) {
            fn->cap_guard_hits++;     /* into the header, a loop, or too many */
            break;
        }
        seen[ptr / 4] = 1;
        unsigned next = fn->dev_init[ptr + 1] & 0xfc;
        claim_cap(fn, claimed, (uint16_t)ptr, fn->dev_init[ptr], false);
        ptr = next;
    }
}

static void walk_ext(struct trap_fn *fn, uint8_t *claimed)
{
    if (fn->dev_cfg_size < TRAP_CFG_MAX || !fn->pcie_off)
        return;
    static const unsigned nslots = TRAP_CFG_MAX / 4;
    uint8_t seen[TRAP_CFG_MAX / 4] = {0};
    unsigned ptr = TRAP_CFG_STD;
    (void)nslots;
    for (;;) {
        uint32_t hdr = rd32(fn->dev_init + ptr);
        if (hdr == 0 || hdr == ALL)
            break;
        if (seen[ptr / 4] || fn->ncaps >= TRAP_CAPS_MAX) {
            fn->cap_guard_hits++;
            break;
        }
        seen[ptr / 4] = 1;
        unsigned next = (hdr >> 20) & 0xffc;
        claim_cap(fn, claimed, (uint16_t)ptr, (uint16_t)(hdr & 0xffff), true);
        if (!next)
            break;
        if (next < TRAP_CFG_STD) {
            fn->cap_guard_hits++;
            break;
        }
        ptr = next;
    }
}

static bool cap_visible(const struct trap_fn *fn, uint16_t id, bool ext)
{
    for (unsigned i = 0; i < fn->ncaps; i++)
        if (fn->caps[i].id == id && fn->caps[i].ext == ext && !fn->caps[i].hidden)
            return true;
    return false;
}

/* Next pointers, the cap pointer, STATUS.CAP_LIST and the extended chain at 0x100 are
 * recomputed from the list of visible capabilities (in discovery order, added last). */
void trap_rechain(struct trap_fn *fn)
{
    int prev = -1;
    fn->shadow[0x34] = 0;
    for (unsigned i = 0; i < fn->ncaps; i++) {
        struct trap_cap *c = &fn->caps[i];
        if (c->ext || c->hidden)
            continue;
        if (prev < 0)
            fn->shadow[0x34] = (uint8_t)c->off;
        else
            fn->shadow[fn->caps[prev].off + 1] = (uint8_t)c->off;
        fn->shadow[c->off + 1] = 0;
        prev = (int)i;
    }
    if (fn->shadow[0x34])
        fn->shadow[0x06] |= 0x10;
    else
        fn->shadow[0x06] &= (uint8_t)~0x10;

    bool pcie = fn->pcie_allowed && fn->dev_cfg_size == TRAP_CFG_MAX && cap_visible(fn, 0x10, false);
    fn->cfg_size = pcie ? TRAP_CFG_MAX : TRAP_CFG_STD;
    if (!pcie)
        return;
    /* The extended chain must start at 0x100: a null header (ID 0) there points on
     * when the capability at 0x100 is hidden or absent. */
    bool at100 = false;
    for (unsigned i = 0; i < fn->ncaps; i++)
        if (fn->caps[i].ext && !fn->caps[i].hidden && fn->caps[i].off == TRAP_CFG_STD)
            at100 = true;
    uint32_t prevoff = 0;
    if (!at100) {
        trap_apply_perm(fn, TRAP_CFG_STD, 4, ALL, 0, 0, 0, OWN_NONE);
        trap_shadow_set(fn, TRAP_CFG_STD, 4, 0);
        prevoff = TRAP_CFG_STD;
    }
    for (unsigned i = 0; i < fn->ncaps; i++) {
        struct trap_cap *c = &fn->caps[i];
        if (!c->ext || c->hidden)
            continue;
        if (prevoff) {
            uint32_t h = trap_shadow_get(fn, prevoff, 4);
            trap_shadow_set(fn, prevoff, 4, (h & 0x000fffff) | (uint32_t)c->off << 20);
        }
        uint32_t h = trap_shadow_get(fn, c->off, 4);
        trap_shadow_set(fn, c->off, 4, h & 0x000fffff);
        prevoff = c->off;
    }
}

int trap_cfg_setup(struct trap_fn *fn)
{
    uint8_t claimed[TRAP_CFG_MAX];
    memcpy(fn->shadow, fn->dev_init, TRAP_CFG_MAX);
    apply_table(fn, 0, 64, header_perms, sizeof header_perms / sizeof *header_perms);
    fn->shadow[0x0e] &= 0x7f;   /* one function per virtual slot */
    /* The pin comes from what VFIO can deliver, not from the device's register. */
    uint8_t pin = fn->dev_init[0x3d];
    fn->shadow[0x3d] = fn->irqs[LV_IRQ_INTX].count ? (pin >= 1 && pin <= 4 ? pin : 1) : 0;
    int rc = trap_bar_setup(fn);
    if (rc < 0)
        return rc;
    memset(claimed, 0, sizeof claimed);
    memset(claimed, 1, 0x40);
    walk_std(fn, claimed);
    walk_ext(fn, claimed);
    trap_rechain(fn);
    return 0;
}

static bool valid_len(uint32_t len)
{
    return len == 1 || len == 2 || len == 4;
}

static const uint32_t ones[5] = {0, 0xff, 0xffff, 0, ALL};

int trap_cfg_read(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t *val)
{
    if (!valid_len(len))
        return -EINVAL;
    if (fn->closed) {
        *val = ones[len];   /* a closed function reads like an absent one */
        return 0;
    }
    if (off >= fn->cfg_size || len > fn->cfg_size - off) {
        *val = ones[len];     /* nothing decodes there */
        return 0;
    }
    trap_msi_sync_pending(fn, off, len);
    uint32_t s = 0, em = 0;
    for (uint32_t i = 0; i < len; i++) {
        s |= (uint32_t)fn->shadow[off + i] << (8 * i);
        em |= (uint32_t)fn->emul[off + i] << (8 * i);
    }
    uint32_t d = 0;
    if (em != ones[len]) {
        uint8_t b[4] = {0};
        int rc = fn->be->ops->cfg_read(fn->be->ctx, off, b, len);
        if (rc < 0) {
            *val = ones[len];
            return rc;
        }
        d = rd32(b);
    }
    *val = ((s & em) | (d & ~em)) & ones[len];
    return 0;
}

typedef void (*hook_fn)(struct trap_fn *fn);
static void hook_devctl(struct trap_fn *fn);
static void hook_af(struct trap_fn *fn);
/* COMMAND first: BAR mappings depend on the decode bits. */
static const hook_fn hooks[OWN_KINDS] = {
    [OWN_COMMAND] = trap_hook_command,
    [OWN_BAR] = trap_hook_bars,
    [OWN_ROM] = trap_hook_bars,
    [OWN_MSI] = trap_hook_msi,
    [OWN_MSIX] = trap_hook_msix,
    [OWN_PCIE_DEVCTL] = hook_devctl,
    [OWN_AF_CTRL] = hook_af,
};

static void flr_event(struct trap_fn *fn)
{
    struct trap_event ev = {.type = TRAP_EV_FLR};
    trap_event(fn, &ev);
}

/* The device's MRRS becomes `mrrs` raised to the device's own MPS, as vfio-pci does
 * through pcie_set_readrq: a guest without the host's view of the hierarchy may ask for
 * a safe but slow size, and full-size TLPs stay possible. Sizes above 4096 bytes
 * (reserved encodings) are refused there and never reach the device here either. */
static void set_device_mrrs(struct trap_fn *fn, uint8_t mrrs)
{
    uint32_t off = fn->pcie_off + 8u;
    uint8_t b[2];
    if (fn->be->ops->cfg_read(fn->be->ctx, off, b, 2) < 0)
        return;
    uint16_t dc = rd16(b);
    uint8_t mps = (uint8_t)((dc >> 5) & 7);
    uint8_t want = mrrs > mps ? mrrs : mps;
    if (want > 5 || ((dc >> 12) & 7) == want)
        return;
    dc = (uint16_t)((dc & ~0x7000u) | (uint32_t)want << 12);
    b[0] = (uint8_t)dc, b[1] = (uint8_t)(dc >> 8);
    fn->be->ops->cfg_write(fn->be->ctx, off, b, 2);
}

/* DevCtl's shadowed bits. Initiate-FLR self-clears and, as in vfio-pci, asks for a reset
 * (an event: the VM resets the device) only when DevCap offers FLR; the DevCap the guest
 * sees, so a quirk hiding FLR also stops it. A changed MRRS reaches the device as
 * set_device_mrrs says. MPS stays in the shadow: a right value needs the whole
 * hierarchy, which only the host sees. */
static void hook_devctl(struct trap_fn *fn)
{
    if (!fn->pcie_off)
        return;
    uint8_t *hi = &fn->shadow[fn->pcie_off + 9];
    if (*hi & 0x80) {
        *hi &= 0x7f;
        uint32_t devcap = 0;
        if (trap_cfg_read(fn, fn->pcie_off + 4u, 4, &devcap) == 0 && (devcap & 0x10000000))
            flr_event(fn);
    }
    uint8_t mrrs = (uint8_t)((*hi >> 4) & 7);
    if (mrrs != fn->pcie_mrrs) {
        fn->pcie_mrrs = mrrs;
        set_device_mrrs(fn, mrrs);
    }
}

static void hook_af(struct trap_fn *fn)
{
    if (fn->af_off && (fn->shadow[fn->af_off + 4] & 0x01)) {
        fn->shadow[fn->af_off + 4] &= 0xfe;
        flr_event(fn);
    }
}

int trap_cfg_write(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t val)
{
    if (!valid_len(len))
        return -EINVAL;
    if (fn->closed)
        return 0;           /* dropped: nothing reaches the device after close */
    if (off >= fn->cfg_size || len > fn->cfg_size - off)
        return 0;
    unsigned kinds = 0;
    bool to_dev = false, direct = true;
    uint32_t dm = 0, wc = 0;
    for (uint32_t i = 0; i < len; i++) {
        uint32_t b = off + i;
        uint8_t v = (uint8_t)(val >> (8 * i));
        fn->shadow[b] = (uint8_t)((fn->shadow[b] & ~fn->wmask[b]) | (v & fn->wmask[b]));
        kinds |= 1u << fn->owner[b];
        dm |= (uint32_t)fn->dwmask[b] << (8 * i);
        wc |= (uint32_t)fn->w1c[b] << (8 * i);
    }
    to_dev = dm != 0;
    direct = dm == ones[len] && wc == 0;
    int rc = 0;
    if (to_dev) {
        uint32_t out = val;
        if (!direct) {
            /* keep the device's own value in bits the guest may not write, and never
             * write back a 1 into a write-1-to-clear bit the guest did not clear */
            uint8_t b[4] = {0};
            rc = fn->be->ops->cfg_read(fn->be->ctx, off, b, len);
            out = (rd32(b) & ~dm & ~wc) | (val & dm);
        }
        if (rc == 0) {
            uint8_t b[4] = {(uint8_t)out, (uint8_t)(out >> 8), (uint8_t)(out >> 16),
                            (uint8_t)(out >> 24)};
            rc = fn->be->ops->cfg_write(fn->be->ctx, off, b, len);
        }
    }
    for (unsigned k = 1; k < OWN_KINDS; k++)
        if ((kinds & (1u << k)) && hooks[k])
            hooks[k](fn);
    return rc < 0 ? rc : 0;
}

static struct trap_cap *find_cap(struct trap_fn *fn, uint16_t id, bool ext)
{
    for (unsigned i = 0; i < fn->ncaps; i++)
        if (fn->caps[i].id == id && fn->caps[i].ext == ext && !fn->caps[i].hidden)
            return &fn->caps[i];
    return NULL;
}

int trap_hide_cap(struct trap_fn *fn, uint16_t id, bool ext)
{
    struct trap_cap *c = find_cap(fn, id, ext);
    if (!c)
        return -ENOENT;
    c->hidden = true;
    hide_bytes(fn, c->off, c->len);
    if (!ext && id == 0x05)
        fn->msi.off = 0;
    if (!ext && id == 0x11)
        fn->msix.off = 0;
    if (!ext && id == 0x10)
        fn->pcie_off = 0;
    if (!ext && id == 0x13)
        fn->af_off = 0;
    trap_rechain(fn);
    return 0;
}

int trap_add_cap(struct trap_fn *fn, uint16_t off, const uint8_t *bytes, const uint8_t *wmask,
                 uint16_t len, bool ext)
{
    uint32_t lo = ext ? TRAP_CFG_STD : 0x40, hi = ext ? fn->dev_cfg_size : TRAP_CFG_STD;
    uint32_t hdr = ext ? 4 : 2;
    if ((off & 3) || off < lo || len < hdr || (uint32_t)off + len > hi)
        return -EINVAL;
    if (ext && fn->cfg_size != TRAP_CFG_MAX)
        return -ENOTSUP;
    for (unsigned i = 0; i < fn->ncaps; i++) {
        struct trap_cap *c = &fn->caps[i];
        if (!c->hidden && c->ext == ext && off < c->off + c->len && c->off < off + len)
            return -EBUSY;
    }
    int rc = add_cap_entry(fn, off, len, ext ? rd16(bytes) : bytes[0], ext, false, true);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < len; i++) {
        fn->shadow[off + i] = bytes[i];
        fn->emul[off + i] = 0xff;
        fn->wmask[off + i] = i < hdr ? 0 : (wmask ? wmask[i] : 0);
        fn->dwmask[off + i] = fn->w1c[off + i] = 0;
        fn->owner[off + i] = OWN_NONE;
    }
    trap_rechain(fn);
    return 0;
}

int trap_set_config(struct trap_fn *fn, uint32_t off, uint32_t len, const uint8_t *bytes,
                    const uint8_t *wmask)
{
    if (off >= fn->dev_cfg_size || len > fn->dev_cfg_size - off)
        return -EINVAL;
    for (uint32_t i = 0; i < len; i++) {
        fn->shadow[off + i] = bytes[i];
        fn->emul[off + i] = 0xff;
        fn->wmask[off + i] = wmask ? wmask[i] : 0;
        fn->dwmask[off + i] = fn->w1c[off + i] = 0;
    }
    return 0;
}

int trap_set_perm(struct trap_fn *fn, uint32_t off, uint32_t len, uint32_t emul, uint32_t wmask,
                  uint32_t dwmask)
{
    if (!valid_len(len) || off >= fn->dev_cfg_size || len > fn->dev_cfg_size - off)
        return -EINVAL;
    /* the header's emulated registers (IDs, BARs, cap pointer) stay emulated */
    if (off < 0x40)
        return -EPERM;
    for (uint32_t i = 0; i < len; i++) {
        fn->emul[off + i] = (uint8_t)(emul >> (8 * i));
        fn->wmask[off + i] = (uint8_t)(wmask >> (8 * i));
        fn->dwmask[off + i] = (uint8_t)(dwmask >> (8 * i));
        fn->w1c[off + i] = 0;
    }
    return 0;
}
