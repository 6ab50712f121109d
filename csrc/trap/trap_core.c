/* Creation of a virtual PCI function over a backend, and its event queue.
 * Events are stored in a fixed ring so a guest access never allocates; when the VM
 * layer does not drain it, the newest events are dropped and counted in ev_lost. */
#include "trap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int trap_init(struct trap_fn *fn, struct lv_backend *be, bool pcie_allowed)
{
    int rc;
    memset(fn, 0, sizeof *fn);
    fn->be = be;
    fn->pcie_allowed = pcie_allowed;
    for (unsigned i = 0; i < LV_REGION_MAX; i++)
        if ((rc = be->ops->region_info(be->ctx, i, &fn->regions[i])) < 0)
            return rc;
    for (unsigned i = 0; i < LV_IRQ_MAX; i++)
        if ((rc = be->ops->irq_info(be->ctx, i, &fn->irqs[i])) < 0)
            return rc;
    uint64_t cs = fn->regions[LV_REGION_CONFIG].size;
    if (cs < TRAP_CFG_STD)
        return -ENODEV;
    fn->dev_cfg_size = cs >= TRAP_CFG_MAX ? TRAP_CFG_MAX : TRAP_CFG_STD;
    if ((rc = be->ops->cfg_read(be->ctx, 0, fn->dev_init, fn->dev_cfg_size)) < 0)
        return rc;
    /* Only type 0 headers (endpoints) are passed through; bridges have other BARs. */
    if ((fn->dev_init[0x0e] & 0x7f) != 0)
        return -ENOTSUP;
    return trap_cfg_setup(fn);
}

void trap_free(struct trap_fn *fn)
{
    fn->closed = true;
    fn->ev_count = 0;   /* nothing queued before close reaches the VM layer */
    free(fn->msix.table);
    fn->msix.table = NULL;
    free(fn->msix.src);
    fn->msix.src = NULL;
    fn->msix.off = 0;
}

void trap_event(struct trap_fn *fn, const struct trap_event *ev)
{
    if (fn->ev_count == TRAP_EVQ) {
        fn->ev_lost++;
        return;
    }
    fn->evq[(fn->ev_head + fn->ev_count) % TRAP_EVQ] = *ev;
    fn->ev_count++;
}

bool trap_event_pop(struct trap_fn *fn, struct trap_event *ev)
{
    if (!fn->ev_count)
        return false;
    *ev = fn->evq[fn->ev_head];
    fn->ev_head = (fn->ev_head + 1) % TRAP_EVQ;
    fn->ev_count--;
    return true;
}

static const char *const ev_names[TRAP_EV_KINDS] = {
    [TRAP_EV_BAR_MAP] = "bar",
    [TRAP_EV_DECODE] = "decode",
    [TRAP_EV_MSI_ENABLE] = "msi_enable",
    [TRAP_EV_MSI_ROUTE] = "msi_route",
    [TRAP_EV_MSI_MASK] = "msi_mask",
    [TRAP_EV_MSIX_ENABLE] = "msix_enable",
    [TRAP_EV_MSIX_FMASK] = "msix_fmask",
    [TRAP_EV_MSIX_MASK] = "msix_mask",
    [TRAP_EV_MSIX_ROUTE] = "msix_route",
    [TRAP_EV_FLR] = "flr",
};

const char *trap_event_name(unsigned type)
{
    return type < TRAP_EV_KINDS && ev_names[type] ? ev_names[type] : "?";
}
