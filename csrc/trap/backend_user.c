/* A vfio-user device as a trap-core backend: config space and BARs go to the server as
 * REGION_READ/WRITE over the client's connection (user/user_client.h), synchronously and
 * under its timeout; accesses inside an area the server gave an fd for are loads and
 * stores through the client's mapping. Like the VFIO backend it borrows its device: it
 * holds a pointer to the client its owner keeps (whose socket is -1 once closed), so
 * after the device closes every access fails (EBADF) and reaches nothing. A dead server
 * fails every access with the errno that ended the connection; the trap core answers the
 * guest's reads with all ones. */
#include "backend.h"
#include "user/user_client.h"

#include <errno.h>
#include <stdlib.h>

struct user_be {
    struct user_client *client;   /* borrowed */
};

static int u_region_read(void *ctx, unsigned idx, uint64_t off, void *buf, uint32_t len)
{
    struct user_be *u = ctx;
    if (idx >= LV_REGION_MAX)
        return -EINVAL;
    return user_client_region_read(u->client, idx, off, buf, len);
}

static int u_region_write(void *ctx, unsigned idx, uint64_t off, const void *buf, uint32_t len)
{
    struct user_be *u = ctx;
    if (idx >= LV_REGION_MAX)
        return -EINVAL;
    return user_client_region_write(u->client, idx, off, buf, len);
}

static int u_cfg_read(void *ctx, uint32_t off, void *buf, uint32_t len)
{
    return u_region_read(ctx, LV_REGION_CONFIG, off, buf, len);
}

static int u_cfg_write(void *ctx, uint32_t off, const void *buf, uint32_t len)
{
    return u_region_write(ctx, LV_REGION_CONFIG, off, buf, len);
}

static int u_region_info(void *ctx, unsigned idx, struct lv_region_info *ri)
{
    struct user_be *u = ctx;
    if (idx >= LV_REGION_MAX)
        return -EINVAL;
    const struct user_client *c = u->client;
    if (idx >= c->num_regions || c->regions[idx].info_errno) {
        ri->size = 0;
        ri->flags = 0;
        return 0;
    }
    ri->size = c->regions[idx].size;
    ri->flags = c->regions[idx].flags & (LV_REGION_READ | LV_REGION_WRITE | LV_REGION_MMAP);
    return 0;
}

static int u_irq_info(void *ctx, unsigned idx, struct lv_irq_info *ii)
{
    struct user_be *u = ctx;
    if (idx >= LV_IRQ_MAX)
        return -EINVAL;
    const struct user_client *c = u->client;
    if (idx >= c->num_irqs || c->irq_errno[idx]) {
        ii->count = ii->flags = 0;
        return 0;
    }
    ii->count = c->irqs[idx].count;
    ii->flags = c->irqs[idx].flags;
    return 0;
}

/* The one mapping a VM memory slot may borrow: the region's largest mapped area. */
static int u_mapping(void *ctx, unsigned idx, void **addr, uint64_t *off, uint64_t *len)
{
    struct user_be *u = ctx;
    const struct user_client *c = u->client;
    if (idx >= LV_REGION_MAX || idx >= USER_CLIENT_REGIONS || c->sock < 0)
        return -ENOENT;
    const struct user_client_region *rg = &c->regions[idx];
    const struct user_client_area *best = NULL;
    for (uint32_t i = 0; i < rg->nareas; i++)
        if (rg->areas[i].map && (!best || rg->areas[i].size > best->size))
            best = &rg->areas[i];
    if (!best)
        return rg->mmap_errno ? -rg->mmap_errno : -ENOENT;
    *addr = best->map;
    *off = best->offset;
    *len = best->size;
    return 0;
}

static void u_destroy(void *ctx)
{
    struct user_be *u = ctx;
    if (u)
        user_client_unborrow(u->client);
    free(ctx);
}

static const struct lv_backend_ops user_ops = {
    .kind = "vfio-user",
    .cfg_read = u_cfg_read,
    .cfg_write = u_cfg_write,
    .region_read = u_region_read,
    .region_write = u_region_write,
    .region_info = u_region_info,
    .irq_info = u_irq_info,
    .mapping = u_mapping,
    .destroy = u_destroy,
};

int lv_backend_user_init(struct lv_backend *be, struct user_client *client)
{
    if (client->sock < 0)
        return -EBADF;
    struct user_be *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->client = client;
    user_client_borrow(client);
    be->ops = &user_ops;
    be->ctx = u;
    return 0;
}
