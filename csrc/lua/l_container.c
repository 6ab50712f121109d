/* vfio.container: binding of csrc/vfio/vfio_container.c. */
#include "l_objects.h"
#include "l_kvm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/vfio.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    unsigned value;
} extensions[] = {
    {"type1", VFIO_TYPE1_IOMMU},
    {"spapr_tce", VFIO_SPAPR_TCE_IOMMU},
    {"type1v2", VFIO_TYPE1v2_IOMMU},
    {"dma_cc_iommu", VFIO_DMA_CC_IOMMU},
    {"eeh", VFIO_EEH},
    {"type1_nesting", VFIO_TYPE1_NESTING_IOMMU},
    {"spapr_tce_v2", VFIO_SPAPR_TCE_v2_IOMMU},
    {"noiommu", VFIO_NOIOMMU_IOMMU},
    {"unmap_all", VFIO_UNMAP_ALL},
    {"update_vaddr", VFIO_UPDATE_VADDR},
    {NULL, 0},
};

static unsigned check_ext(lua_State *L, int arg)
{
    if (lua_type(L, arg) == LUA_TSTRING) {
        const char *s = lua_tostring(L, arg);
        for (int i = 0; extensions[i].name; i++)
            if (strcmp(s, extensions[i].name) == 0)
                return extensions[i].value;
        luaL_argerror(L, arg, lua_pushfstring(L, "unknown extension '%s'", s));
    }
    return (unsigned)lv_checkrange(L, arg, 0, 0xffffffff);
}

static const char *ext_name(unsigned v)
{
    for (int i = 0; extensions[i].name; i++)
        if (extensions[i].value == v)
            return extensions[i].name;
    return NULL;
}

lv_container *lv_checkcontainer(lua_State *L, int idx)
{
    lv_container *c = luaL_checkudata(L, idx, LV_CONTAINER);
    if (c->fd < 0)
        luaL_argerror(L, idx, "container is closed");
    return c;
}

/* core.container([path]) -> container | nil, msg, errno */
static int l_container_open(lua_State *L)
{
    const char *path = luaL_optstring(L, 1, "/dev/vfio/vfio");
    int fd = vfio_container_open(path);
    if (fd < 0)
        return lv_syserror(L, -fd, "open container", path);
    lv_container *c = lv_newobject(L, sizeof *c, LV_CONTAINER, 1);
    c->fd = fd;
    c->iommu = 0;
    snprintf(c->path, sizeof c->path, "%s", path);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int c_api_version(lua_State *L)
{
    lv_container *c = lv_checkcontainer(L, 1);
    int r = vfio_container_api_version(c->fd);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_GET_API_VERSION", c->path);
    lua_pushinteger(L, r);
    return 1;
}

static int c_check_extension(lua_State *L)
{
    lv_container *c = lv_checkcontainer(L, 1);
    unsigned ext = check_ext(L, 2);
    int r = vfio_container_check_extension(c->fd, ext);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_CHECK_EXTENSION", c->path);
    lua_pushboolean(L, r > 0);
    return 1;
}

static void push_ext(lua_State *L, unsigned t)
{
    const char *n = ext_name(t);
    if (n)
        lua_pushstring(L, n);
    else
        lua_pushinteger(L, t);
}

/* c:set_iommu([type]) -> type chosen. Without a type, prefer type1v2 (unmap semantics
 * that do not split mappings) and fall back to type1. */
static int c_set_iommu(lua_State *L)
{
    lv_container *c = lv_checkcontainer(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        unsigned t = check_ext(L, 2);
        int r = vfio_container_set_iommu(c->fd, t);
        if (r < 0)
            return lv_syserrorf(L, -r, "VFIO_SET_IOMMU", "%s (type %u)", c->path, t);
        c->iommu = t;
        push_ext(L, t);
        return 1;
    }
    unsigned order[] = {VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_IOMMU};
    int last = ENODEV;
    for (int i = 0; i < 2; i++) {
        int ok = vfio_container_check_extension(c->fd, order[i]);
        if (ok < 0)
            return lv_syserror(L, -ok, "VFIO_CHECK_EXTENSION", c->path);
        if (ok == 0)
            continue;
        int r = vfio_container_set_iommu(c->fd, order[i]);
        if (r == 0) {
            c->iommu = order[i];
            push_ext(L, order[i]);
            return 1;
        }
        last = -r;
    }
    return lv_syserrorf(L, last, "VFIO_SET_IOMMU",
                        "%s (neither type1v2 nor type1 usable; is a group attached?)", c->path);
}

static void push_iommu_desc(lua_State *L, struct vfio_iommu_desc *dp)
{
    struct vfio_iommu_desc d = *dp;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, d.flags);
    lua_setfield(L, -2, "flags");
    if (d.have_pgsizes) {
        lua_pushinteger(L, (lua_Integer)d.pgsizes);
        lua_setfield(L, -2, "pgsizes");
        /* The smallest supported page size is what map_dma alignment must honour. */
        lua_pushinteger(L, d.pgsizes ? (lua_Integer)(d.pgsizes & -d.pgsizes) : 0);
        lua_setfield(L, -2, "min_pgsize");
    }
    lua_createtable(L, (int)d.nranges, 0);
    for (uint32_t i = 0; i < d.nranges; i++) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, (lua_Integer)d.ranges[i].start);
        lua_setfield(L, -2, "start");
        lua_pushinteger(L, (lua_Integer)d.ranges[i].end);
        lua_setfield(L, -2, "last");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "iova_ranges");
    if (d.have_dma_avail) {
        lua_pushinteger(L, d.dma_avail);
        lua_setfield(L, -2, "dma_avail");
    }
    if (d.have_migration) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, (lua_Integer)d.mig_pgsizes);
        lua_setfield(L, -2, "pgsizes");
        lua_pushinteger(L, (lua_Integer)d.mig_max_bitmap);
        lua_setfield(L, -2, "max_dirty_bitmap_size");
        lua_setfield(L, -2, "migration");
    }
    if (d.chain_error) {
        lua_pushstring(L, "malformed capability chain (ignored from the fault on)");
        lua_setfield(L, -2, "chain_error");
    }
}

static int c_iommu_info(lua_State *L)
{
    lv_container *c = lv_checkcontainer(L, 1);
    struct vfio_iommu_desc d;
    int r = vfio_container_iommu_info(c->fd, &d);
    if (r < 0)
        return lv_syserror(L, -r, "VFIO_IOMMU_GET_INFO", c->path);
    push_iommu_desc(L, &d);
    vfio_iommu_desc_free(&d);
    return 1;
}

/* core.parse_iommu_info(bytes) -> table: the IOMMU_GET_INFO parser on a raw buffer. */
static int l_parse_iommu_info(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    struct vfio_iommu_desc d;
    if (vfio_iommu_parse(s, n, &d) < 0)
        luaL_argerror(L, 1, "shorter than struct vfio_iommu_type1_info");
    push_iommu_desc(L, &d);
    vfio_iommu_desc_free(&d);
    return 1;
}

static uint32_t dma_flags(lua_State *L, int arg)
{
    unsigned a = lv_dma_access(L, arg);
    return ((a & LV_DMA_READ) ? VFIO_DMA_MAP_FLAG_READ : 0) |
           ((a & LV_DMA_WRITE) ? VFIO_DMA_MAP_FLAG_WRITE : 0);
}

unsigned lv_dma_access(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg))
        return LV_DMA_READ | LV_DMA_WRITE;
    luaL_checktype(L, arg, LUA_TTABLE);
    unsigned f = 0;
    lua_getfield(L, arg, "read");
    if (lua_toboolean(L, -1))
        f |= LV_DMA_READ;
    lua_getfield(L, arg, "write");
    if (lua_toboolean(L, -1))
        f |= LV_DMA_WRITE;
    lua_pop(L, 2);
    if (!f)
        luaL_argerror(L, arg, "at least one of read, write must be set");
    return f;
}

static uint64_t check_u64(lua_State *L, int arg)
{
    lua_Integer v = luaL_checkinteger(L, arg);
    return (uint64_t)v;
}

/* The memory a map_dma call names: a DMA buffer of ours, or guest RAM [gpa, gpa + size)
 * of a VM, which must lie in one RAM slot. No host address is taken from Lua: a script
 * cannot hand a device memory it was not given. */
void lv_dma_source(lua_State *L, int src, int opts, uint64_t *vaddr, uint64_t *size,
                   int *slot)
{
    lv_dmabuf *b = luaL_testudata(L, src, LV_DMABUF);
    *slot = -1;
    if (b) {
        b = lv_checkdmabuf(L, src);
        *vaddr = (uintptr_t)b->ptr;
        *size = b->rounded;
        return;
    }
    luaL_checkudata(L, src, LV_VM_T);
    luaL_checktype(L, opts, LUA_TTABLE);
    lua_getfield(L, opts, "gpa");
    uint64_t gpa = check_u64(L, -1);
    lua_getfield(L, opts, "size");
    *size = check_u64(L, -1);
    lua_pop(L, 2);
    struct lv_vm_ud *vm = lv_checkvm(L, src);   /* after the options' reads */
    if (*size == 0)
        luaL_argerror(L, opts, "size must be positive");
    void *host = kvm_ram_ptr(&vm->vm, gpa, *size);
    if (!host) {
        char msg[96];
        snprintf(msg, sizeof msg, "guest RAM 0x%llx+0x%llx is not inside one RAM slot",
                 (unsigned long long)gpa, (unsigned long long)*size);
        luaL_argerror(L, opts, msg);
    }
    *vaddr = (uintptr_t)host;
    *slot = kvm_ram_slot(&vm->vm, gpa, *size);
}

/* The entry {source, size, slot} on top is unmapped: release its source. Pops nothing. */
static void dma_release(lua_State *L)
{
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 3);
    int slot = (int)lua_tointeger(L, -1);
    lv_dmabuf *b = luaL_testudata(L, -2, LV_DMABUF);
    struct lv_vm_ud *vm = b ? NULL : luaL_testudata(L, -2, LV_VM_T);
    if (b) {
        if (b->dma > 0)
            b->dma--;
        lv_dmabuf_release(b);
    } else if (vm) {
        kvm_ram_dma_put(&vm->vm, slot);
    }
    lua_pop(L, 2);
}

/* Lifetime rule: memory is freed or unmapped from the process only when no IOMMU mapping
 * uses it. Every mapping a container or an ioas makes is recorded here with its source,
 * counted on the source (a DMA buffer's dma, a RAM slot's dma) until the kernel has
 * unmapped it: while counted, the buffer's close() and vm:unmap/vm:close of the RAM refuse
 * (EBUSY), and a collected buffer or VM keeps the memory until the count drops to zero.
 * The entry keeps the source's userdata referenced, so the count stays reachable. An
 * unmap the kernel did not confirm releases nothing: memory leaks rather than reaching a
 * device after reuse. */
void lv_dma_keep(lua_State *L, int self, int uv, uint64_t iova, int src, uint64_t size,
                 int slot, const char *mapper)
{
    src = lua_absindex(L, src);
    /* Counted first, with no call into Lua since the source was checked: the allocations
     * below are collector steps, whose __gc may close() the source or its mapper. */
    lv_dmabuf *b = luaL_testudata(L, src, LV_DMABUF);
    if (b) {
        b->dma++;
        snprintf(b->mapper, sizeof b->mapper, "%s at iova 0x%llx", mapper,
                 (unsigned long long)iova);
    } else
        kvm_ram_dma_get(&((struct lv_vm_ud *)luaL_checkudata(L, src, LV_VM_T))->vm, slot);
    if (lua_getiuservalue(L, self, uv) != LUA_TTABLE) {
        lua_pop(L, 1); /* the mapper closed meanwhile: the count stays, the memory leaks */
        return;
    }
    /* an entry left at this IOVA is a mapping the kernel no longer has (it just mapped
     * the IOVA again, and mappings never overlap): release it */
    if (lua_rawgeti(L, -1, (lua_Integer)iova) == LUA_TTABLE)
        dma_release(L);
    lua_pop(L, 1);
    lua_createtable(L, 3, 0);
    lua_pushvalue(L, src);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)size);
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, slot);
    lua_rawseti(L, -2, 3);
    lua_rawseti(L, -2, (lua_Integer)iova);
    lua_pop(L, 1);
}

int lv_dma_any(lua_State *L, int self, int uv)
{
    int any = 0;
    if (lua_getiuservalue(L, self, uv) == LUA_TTABLE) {
        lua_pushnil(L);
        if (lua_next(L, -2)) {
            any = 1;
            lua_pop(L, 2);
        }
    }
    lua_pop(L, 1);
    return any;
}

/* One recorded mapping, copied out of the record table (lv_dma_list). */
struct dma_row {
    uint64_t iova, size;
    int buffer;
};

static int dma_row_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct dma_row *)a)->iova, y = ((const struct dma_row *)b)->iova;
    return x < y ? -1 : x > y;
}

int lv_dma_list(lua_State *L, int self, int uv)
{
    self = lua_absindex(L, self);
    if (lua_getiuservalue(L, self, uv) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        return 1;
    }
    /* The record table stays on our stack. The rows are copied out first and pushed
     * after: an allocation is a collector step, whose finalizers may close the object and
     * clear entries meanwhile (a traversal allows that; fewer rows are then copied). */
    int rec = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, rec)) {
        n++;
        lua_pop(L, 1);
    }
    struct dma_row *rows = lua_newuserdatauv(L, (n ? n : 1) * sizeof *rows, 0);
    size_t k = 0;
    lua_pushnil(L);
    while (k < n && lua_next(L, rec)) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            rows[k].iova = (uint64_t)lua_tointeger(L, -2);
            lua_rawgeti(L, -1, 2);
            rows[k].size = (uint64_t)lua_tointeger(L, -1);
            lua_rawgeti(L, -2, 1);
            rows[k].buffer = luaL_testudata(L, -1, LV_DMABUF) != NULL;
            lua_pop(L, 2);
            k++;
        }
        lua_pop(L, 1);
    }
    qsort(rows, k, sizeof *rows, dma_row_cmp);
    /* the rows' userdata stays on the stack below the list (and a key, when k reached n) */
    lua_createtable(L, (int)k, 0);
    for (size_t i = 0; i < k; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)rows[i].iova);
        lua_setfield(L, -2, "iova");
        lua_pushinteger(L, (lua_Integer)rows[i].size);
        lua_setfield(L, -2, "size");
        lua_pushstring(L, rows[i].buffer ? "buffer" : "vm");
        lua_setfield(L, -2, "source");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* c:mappings() -> {{iova=, size=, source=}...}: what the container maps (lv_dma_list). */
static int c_mappings(lua_State *L)
{
    luaL_checkudata(L, 1, LV_CONTAINER);
    return lv_dma_list(L, 1, 1);
}

/* c:map_dma(buf, iova [, {read=, write=}]) maps a DMA buffer of ours at iova;
 * c:map_dma(vm, iova, {gpa =, size =, read=, write=}) maps guest RAM [gpa, gpa + size),
 * which must lie in one RAM slot of the VM (lv_dma_source). The source stays referenced,
 * and its memory allocated, while the IOMMU maps it (lv_dma_keep): type1 keeps mapped
 * pages pinned, but the rule is the library's, the same for an iommufd IOAS, which does
 * not. */
static int c_map_dma(lua_State *L)
{
    luaL_checkudata(L, 1, LV_CONTAINER);
    uint64_t vaddr, size, iova = check_u64(L, 3);
    uint32_t flags = dma_flags(L, 4);
    /* the source reads its options, then checks itself; the container comes last, after
     * every call that can run Lua */
    int slot;
    lv_dma_source(L, 2, 4, &vaddr, &size, &slot);
    lv_container *c = lv_checkcontainer(L, 1);
    if (iova + size < iova)
        luaL_argerror(L, 3, "iova + size overflows");
    int r = vfio_container_map_dma(c->fd, vaddr, iova, size, flags);
    if (r < 0 && c->iommu == VFIO_NOIOMMU_IOMMU)
        return lv_syserrorf(L, -r, "VFIO_IOMMU_MAP_DMA",
                            "%s: the container is in no-IOMMU mode: there is no IOMMU to map "
                            "DMA through, and a device DMAs to host-physical addresses",
                            c->path);
    if (r < 0) {
        lv_syserrorf(L, -r, "VFIO_IOMMU_MAP_DMA", "%s (iova 0x%llx size 0x%llx)", c->path,
                     (unsigned long long)iova, (unsigned long long)size);
        return lv_dma_map_error(L, -r, size);
    }
    /* Keep the source referenced, and unfreeable, while the IOMMU maps it. */
    char mapper[160];
    snprintf(mapper, sizeof mapper, "container %s", c->path);
    lv_dma_keep(L, 1, 1, iova, 2, size, slot, mapper);
    lua_pushboolean(L, 1);
    return 1;
}

void lv_dma_drop(lua_State *L, int self, int uv, uint64_t iova, uint64_t size, int all)
{
    if (lua_getiuservalue(L, self, uv) != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        uint64_t k = (uint64_t)lua_tointeger(L, -2);
        if (all || (k >= iova && k - iova < size)) {
            dma_release(L);
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -4); /* clearing an existing field during lua_next is allowed */
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* Unmap every mapping recorded for a closing container, so no memory stays mapped behind
 * a closed fd (groups may keep the container alive in the kernel), and release what the
 * kernel confirms unmapped. A container whose last group left has no IOMMU backend any
 * more, and with it went every mapping: its unmaps fail with EINVAL (ENOTTY on a file
 * that is no container at all), which vfio_container_has_iommu tells apart from a real
 * refusal. */
static void container_unmap_recorded(lua_State *L, lv_container *c)
{
    if (!lv_dma_any(L, 1, 1))
        return;
    uint64_t done = 0;
    int r = vfio_container_unmap_dma(c->fd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL, &done);
    int gone = r == -ENOTTY || (r == -EINVAL && !vfio_container_has_iommu(c->fd));
    if (r == 0 || gone) {
        lv_dma_drop(L, 1, 1, 0, 0, 1);
        return;
    }
    /* no unmap_all (before Linux 5.12): one recorded mapping at a time */
    lua_getiuservalue(L, 1, 1);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        uint64_t k = (uint64_t)lua_tointeger(L, -2);
        lua_rawgeti(L, -1, 2);
        uint64_t size = (uint64_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
        r = vfio_container_unmap_dma(c->fd, k, size, 0, &done);
        if ((r == 0 && done > 0) || r == -ENOTTY) {   /* EINVAL with no backend: above */
            dma_release(L);
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -4);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* c:unmap_dma(iova, size) -> bytes unmapped */
static int c_unmap_dma(lua_State *L)
{
    lv_container *c = lv_checkcontainer(L, 1);
    uint64_t iova = check_u64(L, 2), size = check_u64(L, 3), done = 0;
    if (size == 0)
        luaL_argerror(L, 3, "size must be positive");
    int r = vfio_container_unmap_dma(c->fd, iova, size, 0, &done);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_IOMMU_UNMAP_DMA",
                            "%s (iova 0x%llx size 0x%llx)", c->path,
                            (unsigned long long)iova, (unsigned long long)size);
    /* The kernel unmapped whole mappings, each one whose first IOVA the range covers
     * (type1v2 refuses to split one; type1 unmaps nothing when the range starts inside
     * one, and says 0). */
    if (done > 0)
        lv_dma_drop(L, 1, 1, iova, size, 0);
    lua_pushinteger(L, (lua_Integer)done);
    return 1;
}

/* c:unmap_all() -> bytes unmapped (needs the unmap_all extension) */
static int c_unmap_all(lua_State *L)
{
    lv_container *c = lv_checkcontainer(L, 1);
    uint64_t done = 0;
    int r = vfio_container_unmap_dma(c->fd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL, &done);
    if (r < 0)
        return lv_syserrorf(L, -r, "VFIO_IOMMU_UNMAP_DMA", "%s (all)", c->path);
    lv_dma_drop(L, 1, 1, 0, 0, 1);
    lua_pushinteger(L, (lua_Integer)done);
    return 1;
}

static int c_fileno(lua_State *L)
{
    lua_pushinteger(L, lv_checkcontainer(L, 1)->fd);
    return 1;
}

static int c_path(lua_State *L)
{
    lua_pushstring(L, lv_checkcontainer(L, 1)->path);
    return 1;
}

static int c_closed(lua_State *L)
{
    lv_container *c = luaL_checkudata(L, 1, LV_CONTAINER);
    lua_pushboolean(L, c->fd < 0);
    return 1;
}

static int c_close(lua_State *L)
{
    lv_container *c = luaL_checkudata(L, 1, LV_CONTAINER);
    if (c->fd >= 0) {
        container_unmap_recorded(L, c);
        close(c->fd);
        c->fd = -1;
        lua_pushnil(L);
        lua_setiuservalue(L, 1, 1);
    }
    return 0;
}

static int c_tostring(lua_State *L)
{
    lv_container *c = luaL_checkudata(L, 1, LV_CONTAINER);
    if (c->fd < 0)
        lua_pushfstring(L, "vfio.container (%s, closed)", c->path);
    else
        lua_pushfstring(L, "vfio.container (%s, fd %d)", c->path, c->fd);
    return 1;
}

/* core._dma_record(container|ioas, source, iova [, {gpa=, size=}]): records a mapping as
 * map_dma does, without the ioctl: the bookkeeping the host specs check where no IOMMU
 * exists. It can only make memory stay longer; it maps nothing. */
static int l_dma_record(lua_State *L)
{
    int uv = luaL_testudata(L, 1, LV_CONTAINER) ? 1 : 2;
    if (uv == 1)
        lv_checkcontainer(L, 1);
    else
        luaL_checkudata(L, 1, "vfio.ioas");
    uint64_t iova = check_u64(L, 3), vaddr, size;
    int slot;
    lv_dma_source(L, 2, 4, &vaddr, &size, &slot);
    if (lua_getiuservalue(L, 1, uv) != LUA_TTABLE)
        luaL_argerror(L, 1, "closed");
    lua_pop(L, 1);
    lv_dma_keep(L, 1, uv, iova, 2, size, slot, uv == 1 ? "container (recorded)" : "ioas (recorded)");
    return 0;
}

/* core._dma_uses(buffer) -> VM slots, IOMMU mappings, memory still allocated (bool): the
 * counts behind a DMA buffer's lifetime, for the specs. */
static int l_dma_uses(lua_State *L)
{
    lv_dmabuf *b = luaL_checkudata(L, 1, LV_DMABUF);
    lua_pushinteger(L, b->pins);
    lua_pushinteger(L, b->dma);
    lua_pushboolean(L, b->ptr != NULL);
    return 3;
}

/* core._dma_map_error(errno, size) -> nil, message, errno: the error a DMA map of `size`
 * bytes that failed with errno returns (ENOMEM names the memlock limit), for the specs on
 * hosts where no map can fail for real. */
static int l_dma_map_error(lua_State *L)
{
    int err = (int)luaL_checkinteger(L, 1);
    uint64_t size = check_u64(L, 2);
    lv_syserror(L, err, "VFIO_IOMMU_MAP_DMA", "(spec)");
    return lv_dma_map_error(L, err, size);
}

/*** @module vfio.core */

/***
Open a VFIO container (the type1 IOMMU's `/dev/vfio/vfio`).
@function container
@tparam[opt="/dev/vfio/vfio"] string path the node
@treturn container the container, or `nil, message, errno`
*/

/***
Run VFIO_IOMMU_GET_INFO's parser (the capability chain) on a raw buffer, for tools and specs.
@function parse_iommu_info
@tparam string bytes the ioctl's buffer
@treturn table as `container:iommu_info` returns it
*/

/***
Spec hook: record a mapping as `map_dma` does after its ioctl, without the ioctl (it maps
nothing; it can only keep memory longer), for hosts without an IOMMU.
@function _dma_record
@tparam container|ioas c where the mapping is recorded
@param source a `dmabuf`, or a `vm` with `{gpa=, size=}`
@tparam int iova the IOVA
@tparam[opt] table opts `{gpa=, size=}` for a VM
*/

/***
Spec hook: the counts behind a DMA buffer's lifetime.
@function _dma_uses
@tparam dmabuf buf the buffer
@treturn int VM memory slots that map it
@treturn int IOMMU mappings of it
@treturn boolean whether its memory is still allocated
*/

/***
Spec hook: the error a DMA map of `size` bytes that failed with `errno` returns, as
`map_dma` builds it (ENOMEM names the memlock limit and the `ulimit -l` the map needs), for
hosts where no map can fail for real.
@function _dma_map_error
@tparam int errno the errno the map failed with
@tparam int size the bytes the map asked for
@treturn nil
@treturn string the message
@treturn int errno
*/

/***
A VFIO container (`vfio.container`): the type1 IOMMU context groups attach to.
@type container
*/

/***
VFIO_GET_API_VERSION.
@function container:api_version
@treturn int the API version, or `nil, message, errno`
*/

/***
VFIO_CHECK_EXTENSION.
@function container:check_extension
@param ext a name (`"type1"`, `"type1v2"`, `"noiommu"`, `"unmap_all"`, `"update_vaddr"`...) or a number
@treturn boolean whether the kernel has it, or `nil, message, errno`
*/

/***
VFIO_SET_IOMMU (after a group is attached). Without a type, type1v2 is preferred and type1
the fallback.
@function container:set_iommu
@tparam[opt] string type the IOMMU type
@treturn string the type chosen, or `nil, message, errno`
*/

/***
VFIO_IOMMU_GET_INFO with its capability chain.
@function container:iommu_info
@treturn table `{pgsizes, min_pgsize, iova_ranges = {{start, last}}, dma_avail, migration}`, or `nil, message, errno`
*/

/***
VFIO_IOMMU_MAP_DMA of memory an object owns, never a raw address: a DMA buffer, or guest
RAM `[gpa, gpa + size)` inside one RAM slot of a VM. The source stays referenced, and its
memory allocated, until the mapping is unmapped. In no-IOMMU mode it fails (there is no
IOMMU to map through).
@function container:map_dma
@param source a `dmabuf` or a `vm`
@tparam int iova where the device sees it
@tparam[opt] table opts `{read=, write=}`; for a VM also `gpa=`, `size=` (required)
@treturn boolean true, or `nil, message, errno`
@usage c:map_dma(buf, 0x100000, {read = true, write = true})
*/

/***
VFIO_IOMMU_UNMAP_DMA of `[iova, iova + size)`, releasing the sources it mapped.
@function container:unmap_dma
@tparam int iova start
@tparam int size length
@treturn int bytes unmapped, or `nil, message, errno`
*/

/***
Unmap everything (needs the `unmap_all` extension).
@function container:unmap_all
@treturn int bytes unmapped, or `nil, message, errno`
*/

/***
The IOMMU mappings this container made and still records (map_dma's, until the kernel
confirms their unmap), by IOVA: what a VMM that must give everything back counts.
Read-only; a closed container has none.
@function container:mappings
@treturn table `{{iova, size, source = "buffer"|"vm"}...}`, sorted by IOVA
*/

/***
The container fd's number.
@function container:fileno
@treturn int
*/

/***
The node it was opened from.
@function container:path
@treturn string
*/

/***
Whether it is closed.
@function container:closed
@treturn boolean
*/

/***
Unmap what it mapped and close the fd (idempotent). A mapping whose unmap the kernel does
not confirm leaves its memory allocated.
@function container:close
*/

void lv_open_container(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"api_version", c_api_version}, {"check_extension", c_check_extension},
        {"set_iommu", c_set_iommu},     {"iommu_info", c_iommu_info},
        {"map_dma", c_map_dma},         {"unmap_dma", c_unmap_dma},
        {"unmap_all", c_unmap_all},     {"mappings", c_mappings},
        {"fileno", c_fileno},           {"path", c_path},
        {"closed", c_closed},           {"close", c_close},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", c_close}, {"__close", c_close}, {"__tostring", c_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_CONTAINER, methods, meta);
    lua_pushcfunction(L, l_container_open);
    lua_setfield(L, -2, "container");
    lua_pushcfunction(L, l_parse_iommu_info);
    lua_setfield(L, -2, "parse_iommu_info");
    lua_pushcfunction(L, l_dma_record);
    lua_setfield(L, -2, "_dma_record");
    lua_pushcfunction(L, l_dma_uses);
    lua_setfield(L, -2, "_dma_uses");
    lua_pushcfunction(L, l_dma_map_error);
    lua_setfield(L, -2, "_dma_map_error");
    lua_createtable(L, 0, 10);
    for (int i = 0; extensions[i].name; i++) {
        lua_pushinteger(L, extensions[i].value);
        lua_setfield(L, -2, extensions[i].name);
    }
    lua_setfield(L, -2, "EXTENSIONS");
    lua_pushinteger(L, VFIO_API_VERSION);
    lua_setfield(L, -2, "API_VERSION");
}
