/* A recorded device: serves a config image and region contents captured in the lab by
 * vfio.record, so trap-core specs and the fuzzer run on the host without VFIO.
 * Region contents live in 4 KiB pages allocated on first write; unrecorded bytes read
 * as zero. Only the first LV_REPLAY_TRACK bytes of a region are kept (bigger BARs read
 * zero above that), which bounds memory whatever size a fixture declares. */
#include "backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096u
#define LV_REPLAY_TRACK (16u << 20)

struct chunk {
    unsigned idx;
    uint64_t off;
    size_t len;
    uint8_t *data;
};

struct replay_region {
    struct lv_region_info info;
    uint8_t **pages;
    size_t npages;
};

struct lv_replay {
    uint8_t config[4096];
    uint8_t config_rec[4096];
    uint32_t config_len;
    struct replay_region regions[LV_REGION_MAX];
    struct lv_irq_info irqs[LV_IRQ_MAX];
    struct chunk *chunks;
    size_t nchunks;
    struct lv_replay_stats stats;
};

static int r_cfg_read(void *ctx, uint32_t off, void *buf, uint32_t len)
{
    struct lv_replay *r = ctx;
    if (off > r->config_len || len > r->config_len - off)
        return -EINVAL;
    memcpy(buf, r->config + off, len);
    r->stats.cfg_reads++;
    return 0;
}

static int r_cfg_write(void *ctx, uint32_t off, const void *buf, uint32_t len)
{
    struct lv_replay *r = ctx;
    if (off > r->config_len || len > r->config_len - off)
        return -EINVAL;
    memcpy(r->config + off, buf, len);
    r->stats.cfg_writes++;
    r->stats.last_cfg_write_off = off;
    r->stats.last_cfg_write_len = len;
    return 0;
}

static int region_check(struct lv_replay *r, unsigned idx, uint64_t off, uint32_t len)
{
    if (idx >= LV_REGION_MAX)
        return -EINVAL;
    uint64_t size = r->regions[idx].info.size;
    if (off > size || len > size - off)
        return -EINVAL;
    return 0;
}

static uint8_t *page_get(struct replay_region *rg, uint64_t off, int create)
{
    uint64_t p = off / PAGE;
    if (p >= rg->npages)
        return NULL;
    if (!rg->pages[p] && create)
        rg->pages[p] = calloc(1, PAGE);
    return rg->pages[p];
}

static void mem_read(struct replay_region *rg, uint64_t off, uint8_t *buf, size_t len)
{
    while (len) {
        size_t in = PAGE - (size_t)(off % PAGE);
        size_t n = len < in ? len : in;
        uint8_t *pg = page_get(rg, off, 0);
        if (pg)
            memcpy(buf, pg + off % PAGE, n);
        else
            memset(buf, 0, n);
        buf += n, off += n, len -= n;
    }
}

static int mem_write(struct replay_region *rg, uint64_t off, const uint8_t *buf, size_t len)
{
    while (len) {
        size_t in = PAGE - (size_t)(off % PAGE);
        size_t n = len < in ? len : in;
        if (off / PAGE < rg->npages) {
            uint8_t *pg = page_get(rg, off, 1);
            if (!pg)
                return -ENOMEM;
            memcpy(pg + off % PAGE, buf, n);
        }
        buf += n, off += n, len -= n;
    }
    return 0;
}

static int r_region_read(void *ctx, unsigned idx, uint64_t off, void *buf, uint32_t len)
{
    struct lv_replay *r = ctx;
    int rc = region_check(r, idx, off, len);
    if (rc)
        return rc;
    if (idx == LV_REGION_CONFIG)
        return r_cfg_read(ctx, (uint32_t)off, buf, len);
    mem_read(&r->regions[idx], off, buf, len);
    r->stats.region_reads++;
    return 0;
}

static int r_region_write(void *ctx, unsigned idx, uint64_t off, const void *buf, uint32_t len)
{
    struct lv_replay *r = ctx;
    int rc = region_check(r, idx, off, len);
    if (rc)
        return rc;
    if (idx == LV_REGION_CONFIG)
        return r_cfg_write(ctx, (uint32_t)off, buf, len);
    if (!(r->regions[idx].info.flags & LV_REGION_WRITE))
        return -EPERM;
    r->stats.region_writes++;
    return mem_write(&r->regions[idx], off, buf, len);
}

static int r_region_info(void *ctx, unsigned idx, struct lv_region_info *ri)
{
    struct lv_replay *r = ctx;
    if (idx >= LV_REGION_MAX)
        return -EINVAL;
    *ri = r->regions[idx].info;
    return 0;
}

static int r_irq_info(void *ctx, unsigned idx, struct lv_irq_info *ii)
{
    struct lv_replay *r = ctx;
    if (idx >= LV_IRQ_MAX)
        return -EINVAL;
    *ii = r->irqs[idx];
    return 0;
}

static void free_pages(struct replay_region *rg)
{
    for (size_t i = 0; i < rg->npages; i++) {
        free(rg->pages[i]);
        rg->pages[i] = NULL;
    }
}

static void r_destroy(void *ctx)
{
    struct lv_replay *r = ctx;
    if (!r)
        return;
    for (unsigned i = 0; i < LV_REGION_MAX; i++) {
        free_pages(&r->regions[i]);
        free(r->regions[i].pages);
    }
    for (size_t i = 0; i < r->nchunks; i++)
        free(r->chunks[i].data);
    free(r->chunks);
    free(r);
}

static const struct lv_backend_ops replay_ops = {
    .kind = "replay",
    .cfg_read = r_cfg_read,
    .cfg_write = r_cfg_write,
    .region_read = r_region_read,
    .region_write = r_region_write,
    .region_info = r_region_info,
    .irq_info = r_irq_info,
    .destroy = r_destroy,
};

int lv_backend_replay_init(struct lv_backend *be, const uint8_t *config, size_t config_len)
{
    if (config_len != 256 && config_len != 4096)
        return -EINVAL;
    struct lv_replay *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    memcpy(r->config, config, config_len);
    memcpy(r->config_rec, config, config_len);
    r->config_len = (uint32_t)config_len;
    r->regions[LV_REGION_CONFIG].info.size = config_len;
    r->regions[LV_REGION_CONFIG].info.flags = LV_REGION_READ | LV_REGION_WRITE;
    be->ops = &replay_ops;
    be->ctx = r;
    return 0;
}

int lv_replay_set_region(struct lv_backend *be, unsigned idx, uint64_t size, uint32_t flags)
{
    if (be->ops != &replay_ops || idx >= LV_REGION_MAX || idx == LV_REGION_CONFIG)
        return -EINVAL;
    struct lv_replay *r = be->ctx;
    struct replay_region *rg = &r->regions[idx];
    free_pages(rg);
    free(rg->pages);
    rg->pages = NULL;
    rg->npages = 0;
    uint64_t tracked = size < LV_REPLAY_TRACK ? size : LV_REPLAY_TRACK;
    size_t np = (size_t)((tracked + PAGE - 1) / PAGE);
    if (np) {
        rg->pages = calloc(np, sizeof *rg->pages);
        if (!rg->pages)
            return -ENOMEM;
    }
    rg->npages = np;
    rg->info.size = size;
    rg->info.flags = flags;
    return 0;
}

int lv_replay_fill(struct lv_backend *be, unsigned idx, uint64_t off, const void *data, size_t len)
{
    if (be->ops != &replay_ops || idx >= LV_REGION_MAX || idx == LV_REGION_CONFIG)
        return -EINVAL;
    struct lv_replay *r = be->ctx;
    if (region_check(r, idx, off, (uint32_t)len) || len > UINT32_MAX)
        return -EINVAL;
    struct chunk *c = realloc(r->chunks, (r->nchunks + 1) * sizeof *c);
    if (!c)
        return -ENOMEM;
    r->chunks = c;
    c = &r->chunks[r->nchunks];
    c->data = malloc(len ? len : 1);
    if (!c->data)
        return -ENOMEM;
    memcpy(c->data, data, len);
    c->idx = idx, c->off = off, c->len = len;
    r->nchunks++;
    return mem_write(&r->regions[idx], off, data, len);
}

int lv_replay_set_irq(struct lv_backend *be, unsigned idx, uint32_t count, uint32_t flags)
{
    if (be->ops != &replay_ops || idx >= LV_IRQ_MAX)
        return -EINVAL;
    struct lv_replay *r = be->ctx;
    r->irqs[idx].count = count;
    r->irqs[idx].flags = flags;
    return 0;
}

const struct lv_replay_stats *lv_replay_stats(const struct lv_backend *be)
{
    if (be->ops != &replay_ops)
        return NULL;
    return &((struct lv_replay *)be->ctx)->stats;
}

void lv_replay_reset(struct lv_backend *be)
{
    if (be->ops != &replay_ops)
        return;
    struct lv_replay *r = be->ctx;
    memcpy(r->config, r->config_rec, r->config_len);
    for (unsigned i = 0; i < LV_REGION_MAX; i++)
        free_pages(&r->regions[i]);
    for (size_t i = 0; i < r->nchunks; i++)
        mem_write(&r->regions[r->chunks[i].idx], r->chunks[i].off, r->chunks[i].data,
                  r->chunks[i].len);
    memset(&r->stats, 0, sizeof r->stats);
}
