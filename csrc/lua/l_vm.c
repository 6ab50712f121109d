/* vfio.vm: a KVM VM (made by kvm:create_vm, l_kvm.c): memory slots, guest RAM access,
 * the irqchip and GSI routes, the KVM VFIO device and the ranges answered in C. The
 * objects a VM creates and the devices it adds have files of their own (l_vcpu.c,
 * l_irqfd.c, l_ioeventfd.c, l_debugcon.c, l_uart.c, l_legacy.c), which define their vm
 * methods (l_kvm.h); the method table at the end of this file lists every vm method. */
#include "l_kvm.h"
#include "l_objects.h"
#include "l_trap.h"
#include "kvm/ram.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int push_result(lua_State *L, int e, const char *op, const char *subject)
{
    if (e < 0)
        return lv_syserror(L, -e, op, subject);
    lua_pushboolean(L, 1);
    return 1;
}

struct lv_vm_ud *lv_checkvm(lua_State *L, int arg)
{
    struct lv_vm_ud *v = luaL_checkudata(L, arg, LV_VM_T);
    if (v->vm.fd < 0 || v->close_pending)
        luaL_error(L, "attempt to use a closed vm");
    return v;
}

static uint64_t checku64(lua_State *L, int arg)
{
    return (uint64_t)luaL_checkinteger(L, arg);
}

static int slot_result(lua_State *L, int r, const char *op, uint64_t gpa, uint64_t size)
{
    if (r < 0)
        return lv_syserrorf(L, -r, op, "gpa 0x%llx size 0x%llx", (unsigned long long)gpa,
                            (unsigned long long)size);
    lua_pushinteger(L, r);
    return 1;
}

/* vm:add_ram(gpa, size [, {fd = ramfd, offset = 0}]) -> slot: fresh anonymous memory, or
 * `size` bytes of a vfio.ramfd from `offset` mapped shared (l_ramfd.c). */
static int l_vm_add_ram(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    uint64_t gpa = checku64(L, 2), size = checku64(L, 3), offset = 0;
    int has_fd = 0;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        if (lua_getfield(L, 4, "offset") != LUA_TNIL)
            offset = checku64(L, -1);
        has_fd = lua_getfield(L, 4, "fd") != LUA_TNIL;
        if (has_fd)
            luaL_checkudata(L, -1, LV_RAMFD_T);   /* left on the stack at index 6 */
    }
    /* after the options (they may run Lua) */
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    if (!has_fd)
        return slot_result(L, kvm_add_ram(&v->vm, gpa, size), "add guest RAM", gpa, size);
    struct lv_ramfd_ud *r = lv_checkramfd(L, 6);
    int slot = kvm_add_ram_fd(&v->vm, gpa, size, r->fd, offset);
    if (slot == -EINVAL)
        return lv_syserrorf(L, EINVAL, "add guest RAM",
                            "gpa 0x%llx size 0x%llx from offset 0x%llx of a %s of 0x%llx bytes "
                            "(gpa, offset and size must be multiples of its page size 0x%llx, "
                            "and the range inside it)",
                            (unsigned long long)gpa, (unsigned long long)size,
                            (unsigned long long)offset, r->kind == KVM_RAM_MEMFD ? "memfd" :
                            r->kind == KVM_RAM_MEMFD_HUGETLB ? "huge-page memfd" : "hugetlbfs file",
                            (unsigned long long)r->size, (unsigned long long)r->page_size);
    return slot_result(L, slot, "add guest RAM", gpa, size);
}

/* vm:map(gpa, size, source [, {offset = 0, region =, readonly = false}]) -> slot: host
 * memory a source object owns becomes guest memory at gpa: a vfio.dmabuf (offset into
 * it), or the mapping of BAR `region` of a vfio.backend (offset into the region; the
 * backend maps each BAR once and the VM borrows it). No address is taken from Lua: the
 * memory is found from the object, bounds-checked, and pinned (the source's close()
 * refuses while the slot exists; the VM also keeps it referenced). */
static int l_vm_map(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    uint64_t gpa = checku64(L, 2), size = checku64(L, 3);
    uint64_t offset = 0;
    int ro = 0, region = -1;
    if (!lua_isnoneornil(L, 5)) {
        luaL_checktype(L, 5, LUA_TTABLE);
        if (lua_getfield(L, 5, "offset") != LUA_TNIL)
            offset = checku64(L, -1);
        if (lua_getfield(L, 5, "region") != LUA_TNIL)
            region = (int)lv_checkrange(L, -1, 0, 8);
        ro = lua_getfield(L, 5, "readonly") != LUA_TNIL && lua_toboolean(L, -1);
        lua_pop(L, 3);
    }
    struct lv_vm_ud *v = lv_checkvm(L, 1);   /* after the options (they may run Lua) */
    uint8_t *host = NULL;
    int *pin = NULL;
    lv_dmabuf *buf = luaL_testudata(L, 4, LV_DMABUF);
    struct lv_backend_ud *be = buf ? NULL : luaL_testudata(L, 4, LV_BACKEND_T);
    if (buf) {
        if (!buf->ptr || buf->orphaned)
            return luaL_argerror(L, 4, "the DMA buffer is closed");
        if (offset > buf->rounded || size > buf->rounded - offset)
            return luaL_argerror(L, 3, lua_pushfstring(L, "offset + size past the DMA buffer's %I bytes",
                                                       (lua_Integer)buf->rounded));
        host = buf->ptr + offset;
        pin = &buf->pins;
    } else if (be) {
        if (be->close_pending)   /* closing once a trap's access ends */
            return luaL_argerror(L, 4, "the backend is closed");
        if (region < 0)
            return luaL_argerror(L, 5, "a backend source needs {region = BAR index}");
        void *addr;
        uint64_t moff, mlen;
        int e = lv_backend_mapping(&be->be, (unsigned)region, &addr, &moff, &mlen);
        if (e < 0)
            return lv_syserrorf(L, -e, "map", "%s region %d (no mapping of it)", be->be.name, region);
        if (offset < moff || offset - moff > mlen || size > mlen - (offset - moff))
            return luaL_argerror(L, 3, "offset + size past the region's mapping");
        host = (uint8_t *)addr + (offset - moff);
        pin = &be->pins;
    } else {
        return luaL_typeerror(L, 4, "vfio.dmabuf or vfio.backend");
    }
    int r = kvm_map_host(&v->vm, gpa, size, host, ro, pin);
    if (r < 0)
        return slot_result(L, r, "KVM_SET_USER_MEMORY_REGION", gpa, size);
    lua_getiuservalue(L, 1, 2);
    lua_pushvalue(L, 4);
    lua_rawseti(L, -2, r);
    lua_pop(L, 1);
    lua_pushinteger(L, r);
    return 1;
}

static int l_vm_unmap(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int slot = (int)lv_checkrange(L, 2, 0, KVM_VMM_MAX_SLOTS - 1);
    int e = kvm_unmap(&v->vm, slot);
    if (e == -EBUSY)
        return lv_syserrorf(L, EBUSY, "unmap",
                            "memory slot %d: its guest RAM is mapped for device DMA by %d IOMMU "
                            "mapping(s) (container or ioas map_dma); unmap_dma it there first",
                            slot, v->vm.slots[slot].dma);
    if (e < 0)
        return lv_syserrorf(L, -e, "unmap", "memory slot %d", slot);
    lua_getiuservalue(L, 1, 2);
    lua_pushnil(L);
    lua_rawseti(L, -2, slot);
    lua_pushboolean(L, 1);
    return 1;
}

static void *checkram(lua_State *L, struct lv_vm_ud *v, uint64_t gpa, uint64_t len)
{
    void *p = kvm_ram_ptr(&v->vm, gpa, len);
    if (!p) {
        char s[80];   /* lua_pushfstring has no %x */
        snprintf(s, sizeof s, "guest RAM 0x%llx+0x%llx is not inside one RAM slot",
                 (unsigned long long)gpa, (unsigned long long)len);
        luaL_error(L, "%s", s);
    }
    return p;
}

static int l_vm_write(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    uint64_t gpa = checku64(L, 2);
    size_t len;
    const char *s = luaL_checklstring(L, 3, &len);   /* a number converts: a GC step */
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    memcpy(checkram(L, v, gpa, len), s, len);
    return 0;
}

/* vm:load_file(gpa, file, offset, len) -> true, or nil, message, errno: `len` bytes of
 * an open Lua file from `offset` read straight into guest RAM (a kernel's segments:
 * tens of MB that need not pass through a Lua string). The file's position is left
 * alone (pread). The end of the file before len bytes is an error (errno EIO). */
static int l_vm_load_file(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint64_t gpa = checku64(L, 2);
    luaL_Stream *fh = luaL_checkudata(L, 3, LUA_FILEHANDLE);
    if (!fh->closef)
        return luaL_argerror(L, 3, "file is closed");
    lua_Integer off = luaL_checkinteger(L, 4);
    lua_Integer len = luaL_checkinteger(L, 5);
    if (off < 0 || len < 0)
        return luaL_argerror(L, off < 0 ? 4 : 5, "negative");
    char *dst = checkram(L, v, gpa, (uint64_t)len);
    int fd = fileno(fh->f);
    size_t done = 0;
    while (done < (size_t)len) {
        ssize_t n = pread(fd, dst + done, (size_t)len - done, (off_t)(off + (lua_Integer)done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return lv_syserrorf(L, n < 0 ? errno : EIO, "read into guest RAM",
                                "file offset %lld (%zu of %lld bytes read)", (long long)off,
                                done, (long long)len);
        done += (size_t)n;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vm_read(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint64_t gpa = checku64(L, 2);
    lua_Integer len = lv_checkrange(L, 3, 0, 1 << 30);
    lua_pushlstring(L, checkram(L, v, gpa, (uint64_t)len), (size_t)len);
    return 1;
}

/* vm:fill(gpa, len [, byte]): zero (or fill) guest RAM, e.g. an ELF segment's bss. */
static int l_vm_fill(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint64_t gpa = checku64(L, 2);
    lua_Integer len = luaL_checkinteger(L, 3);
    int byte = (int)lv_checkrange(L, 4, 0, 255);
    if (len < 0)
        return luaL_argerror(L, 3, "negative length");
    memset(checkram(L, v, gpa, (uint64_t)len), byte, (size_t)len);
    return 0;
}

/* vm:memory() -> list of {slot, gpa, size, ram, readonly, shared (RAM from a ramfd), dma
 * (the IOMMU mappings of its RAM)}. No host address: Lua never sees one
 * (container:map_dma(vm, iova, {gpa=, size=}) finds guest RAM itself). */
static int l_vm_memory(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    lua_newtable(L);
    int n = 0;
    for (int i = 0; i < KVM_VMM_MAX_SLOTS; i++) {
        /* a copy, read before the allocations that push it (GC steps, whose finalizers
         * may close the VM: its slots are unused then, and the rest are skipped) */
        struct kvm_slot copy = v->vm.slots[i], *s = &copy;
        if (!s->used)
            continue;
        lua_createtable(L, 0, 7);
        lua_pushinteger(L, i);
        lua_setfield(L, -2, "slot");
        lua_pushinteger(L, (lua_Integer)s->gpa);
        lua_setfield(L, -2, "gpa");
        lua_pushinteger(L, (lua_Integer)s->size);
        lua_setfield(L, -2, "size");
        lua_pushboolean(L, s->owned);
        lua_setfield(L, -2, "ram");
        lua_pushboolean(L, s->readonly);
        lua_setfield(L, -2, "readonly");
        lua_pushboolean(L, s->fd_backed);
        lua_setfield(L, -2, "shared");
        lua_pushinteger(L, s->dma);
        lua_setfield(L, -2, "dma");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* vm:ranges() -> list of {id, space = "pio"|"mmio", base, size}: the handled ranges (a
 * device's trapped BAR pieces, the host bridge, the platform devices), in no particular
 * order. Read-only. */
static int l_vm_ranges(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    lua_createtable(L, (int)v->vm.nranges, 0);
    for (unsigned i = 0; i < v->vm.nranges; i++) {
        /* a copy, read before the allocations (a finalizer may close the VM: nranges is
         * 0 then, and the loop ends) */
        struct kvm_range r = v->vm.ranges[i];
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, r.id);
        lua_setfield(L, -2, "id");
        lua_pushstring(L, r.space == KVM_VMM_PIO ? "pio" : "mmio");
        lua_setfield(L, -2, "space");
        lua_pushinteger(L, (lua_Integer)r.base);
        lua_setfield(L, -2, "base");
        lua_pushinteger(L, (lua_Integer)r.size);
        lua_setfield(L, -2, "size");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_vm_create_irqchip(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    return push_result(L, kvm_create_irqchip(&v->vm), "KVM_CREATE_IRQCHIP", "vm");
}

/* vm:create_pit2(): the in-kernel PIT (after the irqchip), with KVM answering port 0x61 */
static int l_vm_create_pit2(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    return push_result(L, kvm_create_pit2(&v->vm), "KVM_CREATE_PIT2", "vm");
}

/* vm:set_halt_poll(ns) -> true | nil, msg, errno: a halted vCPU spins that long for its
 * wake-up (an interrupt due soon, such as an I/O completion) before it sleeps. */
static int l_vm_set_halt_poll(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint64_t ns = (uint64_t)lv_checkrange(L, 2, 0, 1000000000);
    return push_result(L, kvm_set_halt_poll(&v->vm, ns), "KVM_ENABLE_CAP HALT_POLL", "vm");
}

/* vm:supported_cpuid() -> list of {function, index, flags, eax, ebx, ecx, edx}: what
 * KVM_GET_SUPPORTED_CPUID gave, the base of every vCPU's table */
static int l_vm_supported_cpuid(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    /* pushed from a copy: the tables pushed are allocations, GC steps whose finalizers
     * may close the VM and free its table */
    unsigned n = v->vm.cpuid ? v->vm.cpuid->nent : 0;
    size_t size = sizeof(struct kvm_cpuid2) + n * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *copy = lua_newuserdatauv(L, size, 0);
    v = lv_checkvm(L, 1);   /* again, after that allocation */
    if (!v->vm.cpuid || v->vm.cpuid->nent != n)
        return luaL_error(L, "supported_cpuid: the VM changed");
    memcpy(copy, v->vm.cpuid, size);
    lv_push_cpuid(L, copy);
    return 1;
}

static int l_vm_set_msi_route(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint32_t gsi = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    uint64_t addr = checku64(L, 3);
    uint32_t data = (uint32_t)lv_checkrange(L, 4, 0, UINT32_MAX);
    int e = kvm_set_msi_route(&v->vm, gsi, addr, data);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_SET_GSI_ROUTING", "MSI gsi %u", gsi);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vm_remove_route(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint32_t gsi = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    int e = kvm_remove_route(&v->vm, gsi);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_SET_GSI_ROUTING", "remove gsi %u", gsi);
    lua_pushboolean(L, 1);
    return 1;
}

/* vm:routes() -> list of {gsi, type="irqchip"|"msi", chip, pin | addr, data}. */
static int l_vm_routes(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    lua_createtable(L, (int)v->vm.nroutes, 0);
    for (unsigned i = 0; i < v->vm.nroutes; i++) {
        /* a copy, read before the allocations that push it (GC steps, whose finalizers
         * may close the VM: nroutes is 0 then, and the loop ends) */
        struct kvm_irq_routing_entry copy = v->vm.routes[i], *e = &copy;
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, e->gsi);
        lua_setfield(L, -2, "gsi");
        if (e->type == KVM_IRQ_ROUTING_MSI) {
            lua_pushliteral(L, "msi");
            lua_setfield(L, -2, "type");
            lua_pushinteger(L, (lua_Integer)(((uint64_t)e->u.msi.address_hi << 32) |
                                             e->u.msi.address_lo));
            lua_setfield(L, -2, "addr");
            lua_pushinteger(L, e->u.msi.data);
            lua_setfield(L, -2, "data");
        } else {
            lua_pushliteral(L, "irqchip");
            lua_setfield(L, -2, "type");
            static const char *const chips[] = {"pic_master", "pic_slave", "ioapic"};
            lua_pushstring(L, e->u.irqchip.irqchip < 3 ? chips[e->u.irqchip.irqchip] : "?");
            lua_setfield(L, -2, "chip");
            lua_pushinteger(L, e->u.irqchip.pin);
            lua_setfield(L, -2, "pin");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_vm_irq_line(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint32_t gsi = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    int e = kvm_irq_line(&v->vm, gsi, lua_toboolean(L, 3));
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_IRQ_LINE", "gsi %u", gsi);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vm_signal_msi(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint64_t addr = checku64(L, 2);
    uint32_t data = (uint32_t)lv_checkrange(L, 3, 0, UINT32_MAX);
    int r = kvm_signal_msi(&v->vm, addr, data);
    if (r < 0)
        return lv_syserrorf(L, -r, "KVM_SIGNAL_MSI", "addr 0x%llx data 0x%x",
                            (unsigned long long)addr, data);
    lua_pushboolean(L, r > 0); /* false: the guest blocked it (e.g. LAPIC disabled) */
    return 1;
}

static int group_fd_op(lua_State *L, int add)
{
    luaL_checkudata(L, 1, LV_VM_T);
    int gfd = lv_checkfd(L, 2);   /* may call the object's fileno() */
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int e = kvm_vfio_group(&v->vm, gfd, add);
    if (e < 0)
        return lv_syserrorf(L, -e, add ? "KVM_DEV_VFIO_GROUP_ADD" : "KVM_DEV_VFIO_GROUP_DEL",
                            "group fd %d", gfd);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vm_vfio_device(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int e = kvm_vfio_group(&v->vm, -1, 1);
    if (e < 0)
        return lv_syserror(L, -e, "KVM_CREATE_DEVICE", "KVM_DEV_TYPE_VFIO");
    lua_pushinteger(L, v->vm.vfio_fd);
    return 1;
}

static int l_vm_vfio_group_add(lua_State *L) { return group_fd_op(L, 1); }
static int l_vm_vfio_group_del(lua_State *L) { return group_fd_op(L, 0); }

static int range_result(lua_State *L, int r, const char *what, unsigned port)
{
    if (r < 0)
        return lv_syserrorf(L, -r, what, "port 0x%x", port);
    lua_pushinteger(L, r);
    return 1;
}

static int checkspace(lua_State *L, int arg)
{
    static const char *const names[] = {"pio", "mmio", NULL};
    return luaL_checkoption(L, arg, NULL, names) == 0 ? KVM_VMM_PIO : KVM_VMM_MMIO;
}

int lv_vm_add_range_obj(lua_State *L, struct lv_vm_ud *v, int space, uint64_t base,
                        uint64_t size, int obj)
{
    obj = lua_absindex(L, obj);
    /* The caller may have run Lua (option tables, allocations) since it checked the VM:
     * check it again, so no range is ever added to a closed VM. */
    if (lv_checkvm(L, 1) != v)
        return luaL_argerror(L, 1, "not the VM checked before");
    const struct kvm_io_ops *ops = lv_testcap(L, obj, LV_CAP_KVM_IO);
    if (!ops)
        return luaL_argerror(L, obj, "an object with a C access handler (vfio.trap, vfio.pcihost, vfio.debugcon)");
    int id = kvm_add_range(&v->vm, space, base, size, ops, lua_touserdata(L, obj));
    if (id < 0)
        return lv_syserrorf(L, -id, "add handled range", "%s 0x%llx size 0x%llx",
                            space == KVM_VMM_PIO ? "port" : "gpa", (unsigned long long)base,
                            (unsigned long long)size);
    lua_getiuservalue(L, 1, 2);
    lua_pushvalue(L, obj);
    lua_rawseti(L, -2, -id);
    lua_pop(L, 1);
    lua_pushinteger(L, id);
    return 1;
}

/* vm:add_range("pio"|"mmio", base, size, obj) -> id: accesses there are handled in C by
 * obj (one whose class registered LV_CAP_KVM_IO) and never reach Lua. */
static int l_vm_add_range(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    int space = checkspace(L, 2);   /* a number converts to a string: a GC step */
    uint64_t base = checku64(L, 3), size = checku64(L, 4);
    luaL_checkany(L, 5);
    return lv_vm_add_range_obj(L, lv_checkvm(L, 1), space, base, size, 5);
}

static int l_vm_add_exit_port(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    unsigned port = (unsigned)lv_checkrange(L, 2, 0, 0xffff);
    return range_result(L, kvm_add_exit_port(&v->vm, (uint16_t)port), "add exit port",
                        port);
}

static int l_vm_remove_range(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int id = (int)luaL_checkinteger(L, 2);
    int e = kvm_remove_range(&v->vm, id);
    if (e < 0)
        return lv_syserrorf(L, -e, "remove handled range", "%d", id);
    lua_getiuservalue(L, 1, 2);
    lua_pushnil(L);
    lua_rawseti(L, -2, -id);
    lua_pushboolean(L, 1);
    return 1;
}

/* vm:check_extension(cap): VM-scoped capabilities (e.g. device_ctrl) answer here. */
static int l_vm_check_extension(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    int cap = lv_kvm_checkcap(L, 2);
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int r = kvm_check_extension(v->vm.fd, cap);
    if (r < 0)
        return lv_syserrorf(L, -r, "KVM_CHECK_EXTENSION", "vm cap %d", cap);
    lua_pushinteger(L, r);
    return 1;
}

static int l_vm_fileno(lua_State *L)
{
    struct lv_vm_ud *v = luaL_checkudata(L, 1, LV_VM_T);
    lua_pushinteger(L, v->vm.fd);
    return 1;
}

void lv_vm_close_now(struct lv_vm_ud *v)
{
    v->close_pending = 0;
    kvm_vm_close(&v->vm);
}

/* vm:close() -> nothing | nil, message, EBUSY: refused while an IOMMU maps guest RAM
 * (memory is freed only when no IOMMU mapping uses it). __gc and __close close anyway
 * and leave such RAM allocated until its last mapping goes (kvm_ram_dma_put). */
static int l_vm_close(lua_State *L)
{
    struct lv_vm_ud *v = luaL_checkudata(L, 1, LV_VM_T);
    int n = 0, busy = v->vm.fd >= 0 ? kvm_ram_dma_busy(&v->vm, &n) : -1;
    if (busy >= 0)
        return lv_syserrorf(L, EBUSY, "close",
                            "vfio.vm: guest RAM in memory slot %d is mapped for device DMA by %d IOMMU "
                            "mapping(s) (container or ioas map_dma); unmap_dma it there first",
                            busy, n);
    if (v->running)
        v->close_pending = 1;   /* inside a run handler: the run ends, then the VM closes */
    else
        lv_vm_close_now(v);
    return 0;
}

static int l_vm_gc(lua_State *L)
{
    struct lv_vm_ud *v = luaL_checkudata(L, 1, LV_VM_T);
    if (v->running)
        v->close_pending = 1;   /* inside a run handler: the run ends, then the VM closes */
    else
        lv_vm_close_now(v);
    return 0;
}

static int l_vm_tostring(lua_State *L)
{
    struct lv_vm_ud *v = luaL_checkudata(L, 1, LV_VM_T);
    if (v->vm.fd < 0)
        lua_pushliteral(L, "vfio.vm (closed)");
    else
        lua_pushfstring(L, "vfio.vm (fd %d)", v->vm.fd);
    return 1;
}

/*** @module vfio.core */

/***
A KVM VM (`vfio.vm`): guest memory slots, one guest-physical address map that refuses
overlaps (EEXIST; the IOAPIC and LAPIC windows included), GSI routes, ranges handled in C,
vCPUs, and KVM's VFIO device.
@type vm
*/

/***
Map guest RAM at gpa: fresh anonymous memory (transparent huge pages asked for), or with
`fd` the bytes of a `ramfd` from `offset`, mapped shared (what the guest writes is in the
file). The mapping holds the file. ENOMEM from a huge-page file: its pool is short of pages.
@function vm:add_ram
@tparam int gpa guest-physical address
@tparam int size bytes
@tparam[opt] table opts `{fd = ramfd, offset = 0}`
@treturn int the memory slot, or `nil, message, errno`
*/

/***
Map memory a source object owns into the guest: a `dmabuf` (offset into it) or BAR
`region` of a `backend` (its own mapping, borrowed). The source is bounds-checked, kept
referenced and pinned (its `close()` refuses) until `unmap` or `close`. No address is
taken from Lua.
@function vm:map
@tparam int gpa guest-physical address
@tparam int size bytes
@param source a `dmabuf` or a `backend`
@tparam[opt] table opts `{offset = 0, region =, readonly = false}`
@treturn int the memory slot, or `nil, message, errno`
*/

/***
Remove a memory slot. Refused (EBUSY) for guest RAM an IOMMU maps (`map_dma(vm, ...)`).
@function vm:unmap
@tparam int slot the slot
@treturn boolean true, or `nil, message, errno`
*/

/***
Copy s into guest RAM at gpa (raises outside RAM).
@function vm:write
@tparam int gpa guest-physical address
@tparam string s the bytes
*/

/***
Read len bytes of guest RAM at gpa (at most 1 GiB; raises outside RAM).
@function vm:read
@tparam int gpa guest-physical address
@tparam int len bytes
@treturn string
*/

/***
Zero (or fill with a byte) guest RAM, e.g. an ELF segment's bss.
@function vm:fill
@tparam int gpa guest-physical address
@tparam int len bytes
@tparam[opt=0] int byte the byte
*/

/***
Read len bytes of an open Lua file from offset straight into guest RAM (pread: the file's
position is left alone). The file ending first is an error (EIO).
@function vm:load_file
@tparam int gpa guest-physical address
@tparam file f an io file
@tparam int offset file offset
@tparam int len bytes
@treturn boolean true, or `nil, message, errno`
*/

/***
The memory slots (no host address).
@function vm:memory
@treturn table `{{slot, gpa, size, ram, readonly, shared, dma}...}` (shared: RAM from a
`ramfd`; dma: how many IOMMU mappings, of any container or ioas, hold its RAM)
*/

/***
The handled ranges (answered in C: a device's trapped BAR pieces, the host bridge, the
platform devices), in no particular order. Read-only: what a VMM that must give a removed
device's ranges back counts.
@function vm:ranges
@treturn table `{{id, space = "pio"|"mmio", base, size}...}`
*/

/***
KVM_CREATE_IRQCHIP (PIC, IOAPIC, LAPICs).
@function vm:create_irqchip
@treturn boolean true, or `nil, message, errno`
*/

/***
The in-kernel PIT (after the irqchip), KVM answering port 0x61.
@function vm:create_pit2
@treturn boolean true, or `nil, message, errno`
*/

/***
How long a halted vCPU spins for its wake-up before it sleeps.
@function vm:set_halt_poll
@tparam int ns nanoseconds (at most 1 s)
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_GET_SUPPORTED_CPUID, the base of every vCPU's table.
@function vm:supported_cpuid
@treturn table `{{function, index, flags, eax, ebx, ecx, edx}...}`
*/

/***
Route GSI gsi to an MSI message (KVM_SET_GSI_ROUTING).
@function vm:set_msi_route
@tparam int gsi 0 to 4095
@tparam int addr the MSI address
@tparam int data the MSI data
@treturn boolean true, or `nil, message, errno`
*/

/***
Remove GSI gsi's route.
@function vm:remove_route
@tparam int gsi the GSI
@treturn boolean true, or `nil, message, errno`
*/

/***
The GSI routes.
@function vm:routes
@treturn table `{{gsi, type = "irqchip"|"msi", chip, pin | addr, data}...}`
*/

/***
KVM_IRQ_LINE: set an irqchip line's level.
@function vm:irq_line
@tparam int gsi the line
@param level the level (truthy: high)
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_SIGNAL_MSI: inject one MSI.
@function vm:signal_msi
@tparam int addr the MSI address
@tparam int data the MSI data
@treturn boolean true when delivered, false when the guest blocked it (LAPIC disabled), or `nil, message, errno`
*/

/***
Create KVM's VFIO device (KVM_DEV_TYPE_VFIO), once.
@function vm:vfio_device
@treturn int its fd, or `nil, message, errno`
*/

/***
KVM_DEV_VFIO_GROUP_ADD: tell KVM about a VFIO group (or, on 6.6+, a device cdev).
@function vm:vfio_group_add
@param g a group, a device, or an fd
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_DEV_VFIO_GROUP_DEL.
@function vm:vfio_group_del
@param g a group, a device, or an fd
@treturn boolean true, or `nil, message, errno`
*/

/***
Handle accesses to a range in C by an object whose class has a C access handler (a
`trap`, a `pcihost`, a `debugcon`): they never reach Lua. The VM keeps obj referenced.
@function vm:add_range
@tparam string space `"pio"` or `"mmio"`
@tparam int base start
@tparam int size length
@param obj the handler object
@treturn int the range id, or `nil, message, errno` (EEXIST for an overlap)
*/

/***
KVM_CHECK_EXTENSION on the VM (VM-scoped capabilities).
@function vm:check_extension
@param cap a capability name or number
@treturn int the answer, or `nil, message, errno`
*/

/***
A port whose guest writes end `vcpu:run` (reads complete).
@function vm:add_exit_port
@tparam int port the port
@treturn int the range id, or `nil, message, errno`
*/

/***
Remove a range `add_range` (or the `add_*` devices) made.
@function vm:remove_range
@tparam int id the range id
@treturn boolean true, or `nil, message, errno`
*/

/***
KVM_CREATE_VCPU; the vCPU keeps the VM alive.
@function vm:vcpu
@tparam int id 0 to 1023
@treturn vcpu the vCPU, or `nil, message, errno`
*/

/***
The VM fd's number.
@function vm:fileno
@treturn int
*/

/***
Close the VM. Refused (EBUSY) while an IOMMU maps its RAM; from inside a run handler it
takes effect when the run returns. `__gc`/`__close` close anyway, leaving such RAM
allocated until its last mapping goes.
@function vm:close
@return nothing, or `nil, message, EBUSY`
*/

/***
A 16550 UART answered in C. The guest's writes to THR go to the sinks chosen here; the
last 4 KiB are always kept (`uart:tail`).
(Registered by l_uart.c.)
@function vm:add_uart
@tparam table opts `{port = 0x3f8, irq = 4, stdout = false, capture = bytes (0: none)}`
@return the range id and the `uart`, or `nil, message, errno`
*/

/***
KVM_IRQFD: an eventfd whose signal injects GSI gsi. Without `fd` an eventfd is created and
owned; with one, the irqfd keeps its own duplicate. `resample = true` (or an fd) adds the
resample eventfd for level-triggered INTx (VFIO's unmask eventfd).
(Registered by l_irqfd.c.)
@function vm:irqfd
@tparam int gsi the GSI
@tparam[opt] table opts `{fd=, resample = true|fd}`
@treturn irqfd the irqfd, or `nil, message, errno`
*/

/***
KVM_IOEVENTFD: guest writes to an address signal an eventfd without an exit.
(Registered by l_ioeventfd.c.)
@function vm:ioeventfd
@tparam table opts `{addr=, len = 4, pio = false, datamatch=, fd=}`
@treturn ioeventfd the ioeventfd, or `nil, message, errno`
*/

/***
Answer a debug port in C; the first one is the VM's default (`vm:debug_output`).
(Registered by l_debugcon.c.)
@function vm:add_debugcon
@tparam int port the port
@tparam[opt] debugcon d the buffer (a new one by default)
@return the range id and the `debugcon`, or `nil, message, errno`
*/

/***
What the guest wrote to the default debug console.
(Registered by l_debugcon.c.)
@function vm:debug_output
@tparam[opt] boolean clear empty it after
@treturn string the bytes (`""` without one)
@treturn int bytes dropped
*/

/***
Legacy PC ports answered in C: reads give value in every byte, writes are dropped.
(Registered by l_legacy.c.)
@function vm:add_ignore_ports
@tparam int base first port
@tparam int size ports
@tparam[opt=0xff] int value the byte reads give
@treturn int the range id, or `nil, message, errno`
*/

/***
The i8042 controller at ports 0x60/0x64: a reset pulse (0xfe to 0x64) ends `vcpu:run`
with a `"stop"` exit (the guest's reboot).
(Registered by l_legacy.c.)
@function vm:add_i8042
@treturn int the range id, or `nil, message, errno`
*/

/***
Run several vCPUs, each in a thread of its own. What C handles is answered there under
one lock; handler(exit) sees the io/mmio exits C left, one at a time, with no C access
running meanwhile. Any other exit, a handler returning false, or the timeout ends the run:
every thread is kicked out of KVM_RUN and joined before this returns. A read left pending
by the exit returned is answered with `complete` on its vCPU.
(Registered by l_vcpu.c.)
@function vm:run_vcpus
@tparam {vcpu,...} vcpus the vCPUs
@tparam[opt] function handler the exit handler
@tparam[opt] table opts `{timeout = seconds, deadline = seconds, wake = {fd...}}` (as
for `vcpu:run`: the earlier of now + timeout and the CLOCK_MONOTONIC time `deadline`; a
`"wake"` exit once a wake fd is readable, the vCPUs' threads stopped and their exits
held for the next run)
@treturn table the exit, with `vcpu` = the id of the vCPU it came from; or `nil, message, errno` when the threads cannot start
*/

void lv_open_vm(lua_State *L)
{
    static const luaL_Reg vm_m[] = {
        {"add_ram", l_vm_add_ram}, {"map", l_vm_map}, {"unmap", l_vm_unmap},
        {"write", l_vm_write}, {"read", l_vm_read}, {"fill", l_vm_fill},
        {"load_file", l_vm_load_file},
        {"memory", l_vm_memory}, {"ranges", l_vm_ranges}, {"create_irqchip", l_vm_create_irqchip},
        {"create_pit2", l_vm_create_pit2}, {"set_halt_poll", l_vm_set_halt_poll}, {"supported_cpuid", l_vm_supported_cpuid},
        {"set_msi_route", l_vm_set_msi_route}, {"remove_route", l_vm_remove_route},
        {"routes", l_vm_routes}, {"irq_line", l_vm_irq_line}, {"signal_msi", l_vm_signal_msi},
        {"vfio_device", l_vm_vfio_device}, {"vfio_group_add", l_vm_vfio_group_add},
        {"vfio_group_del", l_vm_vfio_group_del}, {"add_range", l_vm_add_range},
        {"check_extension", l_vm_check_extension}, {"add_exit_port", l_vm_add_exit_port},
        {"remove_range", l_vm_remove_range}, {"vcpu", lv_vm_vcpu}, {"fileno", l_vm_fileno},
        {"close", l_vm_close},
        /* defined in the files of what they make or add (l_kvm.h) */
        {"run_vcpus", lv_vm_run_vcpus}, {"irqfd", lv_vm_irqfd}, {"ioeventfd", lv_vm_ioeventfd},
        {"add_debugcon", lv_vm_add_debugcon}, {"debug_output", lv_vm_debug_output},
        {"add_uart", lv_vm_add_uart}, {"add_ignore_ports", lv_vm_add_ignore_ports},
        {"add_i8042", lv_vm_add_i8042}, {NULL, NULL}};
    static const luaL_Reg vm_mt[] = {
        {"__gc", l_vm_gc}, {"__close", l_vm_gc}, {"__tostring", l_vm_tostring},
        {NULL, NULL}};
    lv_newclass(L, LV_VM_T, vm_m, vm_mt);
}
