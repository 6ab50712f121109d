/* Lua binding: vfio.core.kvm_open -> vfio.kvm -> vfio.vm (+ vfio.irqfd, vfio.ioeventfd). */
#include "l_kvm.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define KVM_T "vfio.kvm"
#define IRQFD_T "vfio.irqfd"
#define IOEVENTFD_T "vfio.ioeventfd"
#define DEBUGCON_T "vfio.debugcon"

struct lv_kvm_ud {
    int fd;
    char path[64];
};

/* ---- helpers ---- */

int lv_checkfd(lua_State *L, int arg)
{
    if (lua_isinteger(L, arg))
        return (int)lv_checkrange(L, arg, 0, INT32_MAX);
    if (luaL_getmetafield(L, arg, "__index") != LUA_TNIL) {
        lua_pop(L, 1);
        lua_getfield(L, arg, "fileno");
        if (lua_isfunction(L, -1)) {
            lua_pushvalue(L, arg);
            lua_call(L, 1, 1);
            if (lua_isinteger(L, -1)) {
                lua_Integer fd = lua_tointeger(L, -1);
                lua_pop(L, 1);
                if (fd >= 0 && fd <= INT32_MAX)
                    return (int)fd;
                return luaL_argerror(L, arg, "fileno() returned a negative fd (closed?)");
            }
        }
        lua_pop(L, 1);
    }
    return luaL_typeerror(L, arg, "fd (integer or object with fileno())");
}

static int push_result(lua_State *L, int e, const char *op, const char *subject)
{
    if (e < 0)
        return lv_syserror(L, -e, op, subject);
    lua_pushboolean(L, 1);
    return 1;
}

/* Nonblocking read of an eventfd's counter: 0 if nothing was signalled. */
static int read_count(lua_State *L, int fd, const char *what)
{
    uint64_t v = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 0);
    if (r < 0)
        return lv_syserror(L, errno, "poll", what);
    if (r > 0 && read(fd, &v, sizeof v) != (ssize_t)sizeof v) {
        if (errno != EAGAIN)
            return lv_syserror(L, errno, "read", what);
        v = 0;
    }
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

/* Wait up to `ms` for an eventfd to become readable; then read it. */
static int wait_count(lua_State *L, int fd, int ms, const char *what)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return lv_syserror(L, errno, "poll", what);
    return read_count(L, fd, what);
}

/* ---- vfio.kvm ---- */

static struct lv_kvm_ud *checkkvm(lua_State *L, int arg)
{
    struct lv_kvm_ud *k = luaL_checkudata(L, arg, KVM_T);
    if (k->fd < 0)
        luaL_error(L, "attempt to use a closed kvm");
    return k;
}

static int l_kvm_open(lua_State *L)
{
    const char *path = luaL_optstring(L, 1, "/dev/kvm");
    if (strlen(path) >= sizeof ((struct lv_kvm_ud *)0)->path)
        return luaL_argerror(L, 1, "path too long");
    struct lv_kvm_ud *k = lv_newobject(L, sizeof *k, KVM_T, 0);
    k->fd = -1;
    int fd = lv_kvm_open(path);
    if (fd < 0)
        return lv_syserror(L, -fd, "open", path);
    k->fd = fd;
    strcpy(k->path, path);
    return 1;
}

static int l_kvm_api_version(lua_State *L)
{
    struct lv_kvm_ud *k = checkkvm(L, 1);
    int v = ioctl(k->fd, KVM_GET_API_VERSION, 0);
    if (v < 0)
        return lv_syserror(L, errno, "KVM_GET_API_VERSION", k->path);
    lua_pushinteger(L, v);
    return 1;
}

static const struct {
    const char *name;
    int cap;
} caps[] = {
    {"irqchip", KVM_CAP_IRQCHIP},
    {"irq_routing", KVM_CAP_IRQ_ROUTING},
    {"irqfd", KVM_CAP_IRQFD},
    {"irqfd_resample", KVM_CAP_IRQFD_RESAMPLE},
    {"ioeventfd", KVM_CAP_IOEVENTFD},
    {"signal_msi", KVM_CAP_SIGNAL_MSI},
    {"device_ctrl", KVM_CAP_DEVICE_CTRL},
    {"user_memory", KVM_CAP_USER_MEMORY},
    {"readonly_mem", KVM_CAP_READONLY_MEM},
    {"nr_memslots", KVM_CAP_NR_MEMSLOTS},
    {"nr_vcpus", KVM_CAP_NR_VCPUS},
    {"max_vcpus", KVM_CAP_MAX_VCPUS},
    {"immediate_exit", KVM_CAP_IMMEDIATE_EXIT},
    {"ext_cpuid", KVM_CAP_EXT_CPUID},
    {"set_identity_map_addr", KVM_CAP_SET_IDENTITY_MAP_ADDR},
    {NULL, 0},
};

static int checkcap(lua_State *L, int arg)
{
    if (lua_type(L, arg) == LUA_TNUMBER)
        return (int)lv_checkrange(L, arg, 0, INT32_MAX);
    const char *name = luaL_checkstring(L, arg);
    for (int i = 0; caps[i].name; i++)
        if (strcmp(caps[i].name, name) == 0)
            return caps[i].cap;
    return luaL_argerror(L, arg, lua_pushfstring(L, "unknown KVM capability '%s'", name));
}

static int l_kvm_check_extension(lua_State *L)
{
    struct lv_kvm_ud *k = checkkvm(L, 1);
    int cap = checkcap(L, 2);
    int v = ioctl(k->fd, KVM_CHECK_EXTENSION, cap);
    if (v < 0)
        return lv_syserrorf(L, errno, "KVM_CHECK_EXTENSION", "%s cap %d", k->path, cap);
    lua_pushinteger(L, v);
    return 1;
}

static int l_kvm_vcpu_mmap_size(lua_State *L)
{
    struct lv_kvm_ud *k = checkkvm(L, 1);
    int v = ioctl(k->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (v < 0)
        return lv_syserror(L, errno, "KVM_GET_VCPU_MMAP_SIZE", k->path);
    lua_pushinteger(L, v);
    return 1;
}

static int l_kvm_create_vm(lua_State *L)
{
    struct lv_kvm_ud *k = checkkvm(L, 1);
    struct lv_vm_ud *v = lv_newobject(L, sizeof *v, LV_VM_T, 2);
    v->vm.fd = -1;
    v->vm.vfio_fd = -1;
    int e = lv_kvm_vm_create(&v->vm, k->fd);
    if (e < 0)
        return lv_syserror(L, -e, "KVM_CREATE_VM", k->path);
    lv_set_parent(L, -1, 1, 1);
    lua_newtable(L); /* objects backing host mappings, by slot */
    lua_setiuservalue(L, -2, 2);
    return 1;
}

static int l_kvm_fileno(lua_State *L)
{
    struct lv_kvm_ud *k = luaL_checkudata(L, 1, KVM_T);
    lua_pushinteger(L, k->fd);
    return 1;
}

static int l_kvm_close(lua_State *L)
{
    struct lv_kvm_ud *k = luaL_checkudata(L, 1, KVM_T);
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    return 0;
}

static int l_kvm_tostring(lua_State *L)
{
    struct lv_kvm_ud *k = luaL_checkudata(L, 1, KVM_T);
    if (k->fd < 0)
        lua_pushliteral(L, "vfio.kvm (closed)");
    else
        lua_pushfstring(L, "vfio.kvm (%s, fd %d)", k->path, k->fd);
    return 1;
}

/* ---- vfio.vm ---- */

struct lv_vm_ud *lv_checkvm(lua_State *L, int arg)
{
    struct lv_vm_ud *v = luaL_checkudata(L, arg, LV_VM_T);
    if (v->vm.fd < 0)
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

static int l_vm_add_ram(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint64_t gpa = checku64(L, 2), size = checku64(L, 3);
    return slot_result(L, lv_kvm_add_ram(&v->vm, gpa, size), "add guest RAM", gpa, size);
}

/* vm:map(gpa, size, host_address [, readonly [, owner]]): owner (e.g. a region mmap
 * object) is kept alive until the slot is unmapped. */
static int l_vm_map(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint64_t gpa = checku64(L, 2), size = checku64(L, 3);
    uintptr_t host = (uintptr_t)luaL_checkinteger(L, 4);
    int ro = lua_toboolean(L, 5);
    int r = lv_kvm_map_host(&v->vm, gpa, size, (void *)host, ro);
    if (r < 0)
        return slot_result(L, r, "KVM_SET_USER_MEMORY_REGION", gpa, size);
    lua_getiuservalue(L, 1, 2);
    lua_pushvalue(L, 6);
    lua_rawseti(L, -2, r);
    lua_pop(L, 1);
    lua_pushinteger(L, r);
    return 1;
}

static int l_vm_unmap(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int slot = (int)lv_checkrange(L, 2, 0, LV_KVM_MAX_SLOTS - 1);
    int e = lv_kvm_unmap(&v->vm, slot);
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
    void *p = lv_kvm_ram_ptr(&v->vm, gpa, len);
    if (!p)
        luaL_error(L, "guest RAM 0x%I+0x%I is not inside one RAM slot", (lua_Integer)gpa,
                   (lua_Integer)len);
    return p;
}

static int l_vm_write(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint64_t gpa = checku64(L, 2);
    size_t len;
    const char *s = luaL_checklstring(L, 3, &len);
    memcpy(checkram(L, v, gpa, len), s, len);
    return 0;
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

/* vm:memory() -> list of {slot, gpa, size, host, ram, readonly}: host addresses let the
 * VFIO side map guest RAM for DMA at IOVA == guest-physical. */
static int l_vm_memory(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    lua_newtable(L);
    int n = 0;
    for (int i = 0; i < LV_KVM_MAX_SLOTS; i++) {
        struct lv_kvm_slot *s = &v->vm.slots[i];
        if (!s->used)
            continue;
        lua_createtable(L, 0, 6);
        lua_pushinteger(L, i);
        lua_setfield(L, -2, "slot");
        lua_pushinteger(L, (lua_Integer)s->gpa);
        lua_setfield(L, -2, "gpa");
        lua_pushinteger(L, (lua_Integer)s->size);
        lua_setfield(L, -2, "size");
        lua_pushinteger(L, (lua_Integer)(uintptr_t)s->host);
        lua_setfield(L, -2, "host");
        lua_pushboolean(L, s->owned);
        lua_setfield(L, -2, "ram");
        lua_pushboolean(L, s->readonly);
        lua_setfield(L, -2, "readonly");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int l_vm_create_irqchip(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    return push_result(L, lv_kvm_create_irqchip(&v->vm), "KVM_CREATE_IRQCHIP", "vm");
}

static int l_vm_set_msi_route(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint32_t gsi = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    uint64_t addr = checku64(L, 3);
    uint32_t data = (uint32_t)lv_checkrange(L, 4, 0, UINT32_MAX);
    int e = lv_kvm_set_msi_route(&v->vm, gsi, addr, data);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_SET_GSI_ROUTING", "MSI gsi %u", gsi);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vm_remove_route(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint32_t gsi = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    int e = lv_kvm_remove_route(&v->vm, gsi);
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
        struct kvm_irq_routing_entry *e = &v->vm.routes[i];
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
    int e = lv_kvm_irq_line(&v->vm, gsi, lua_toboolean(L, 3));
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
    int r = lv_kvm_signal_msi(&v->vm, addr, data);
    if (r < 0)
        return lv_syserrorf(L, -r, "KVM_SIGNAL_MSI", "addr 0x%llx data 0x%x",
                            (unsigned long long)addr, data);
    lua_pushboolean(L, r > 0); /* false: the guest blocked it (e.g. LAPIC disabled) */
    return 1;
}

static int group_fd_op(lua_State *L, int add)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int gfd = lv_checkfd(L, 2);
    int e = lv_kvm_vfio_group(&v->vm, gfd, add);
    if (e < 0)
        return lv_syserrorf(L, -e, add ? "KVM_DEV_VFIO_GROUP_ADD" : "KVM_DEV_VFIO_GROUP_DEL",
                            "group fd %d", gfd);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vm_vfio_device(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int e = lv_kvm_vfio_group(&v->vm, -1, 1);
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

/* ---- vfio.debugcon: a C-side buffer for a guest's debug port output ---- */

static int l_debugcon_new(lua_State *L)
{
    lv_newobject(L, sizeof(struct lv_kvm_debugcon), DEBUGCON_T, 0);
    return 1;
}

/* debugcon:output([clear]) -> bytes written so far, bytes dropped (beyond the cap) */
static int l_debugcon_output(lua_State *L)
{
    struct lv_kvm_debugcon *d = luaL_checkudata(L, 1, DEBUGCON_T);
    lua_pushlstring(L, d->buf ? d->buf : "", d->len);
    lua_pushinteger(L, (lua_Integer)d->dropped);
    if (lua_toboolean(L, 2))
        d->len = 0, d->dropped = 0;
    return 2;
}

static int l_debugcon_close(lua_State *L)
{
    lv_kvm_debugcon_close(luaL_checkudata(L, 1, DEBUGCON_T));
    return 0;
}

static int l_debugcon_tostring(lua_State *L)
{
    struct lv_kvm_debugcon *d = luaL_checkudata(L, 1, DEBUGCON_T);
    if (d->closed)
        lua_pushliteral(L, "vfio.debugcon (closed)");
    else
        lua_pushfstring(L, "vfio.debugcon (%d bytes)", (int)d->len);
    return 1;
}

static int checkspace(lua_State *L, int arg)
{
    static const char *const names[] = {"pio", "mmio", NULL};
    return luaL_checkoption(L, arg, NULL, names) == 0 ? LV_KVM_PIO : LV_KVM_MMIO;
}

/* Register obj's C handler for [base, base+size) and anchor obj under key -id. */
static int add_range_obj(lua_State *L, struct lv_vm_ud *v, int space, uint64_t base,
                         uint64_t size, int obj)
{
    obj = lua_absindex(L, obj);
    if (lua_type(L, obj) != LUA_TUSERDATA ||
        luaL_getmetafield(L, obj, LV_KVM_IO_FIELD) != LUA_TLIGHTUSERDATA)
        return luaL_argerror(L, obj, "object with a C access handler (" LV_KVM_IO_FIELD ")");
    const struct lv_kvm_io_ops *ops = lua_touserdata(L, -1);
    lua_pop(L, 1);
    int id = lv_kvm_add_range(&v->vm, space, base, size, ops, lua_touserdata(L, obj));
    if (id < 0)
        return lv_syserrorf(L, -id, "add handled range", "%s 0x%llx size 0x%llx",
                            space == LV_KVM_PIO ? "port" : "gpa", (unsigned long long)base,
                            (unsigned long long)size);
    lua_getiuservalue(L, 1, 2);
    lua_pushvalue(L, obj);
    lua_rawseti(L, -2, -id);
    lua_pop(L, 1);
    lua_pushinteger(L, id);
    return 1;
}

/* vm:add_range("pio"|"mmio", base, size, obj) -> id: accesses there are handled in C by
 * obj (see LV_KVM_IO_FIELD in kvm.h) and never reach Lua. */
static int l_vm_add_range(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int space = checkspace(L, 2);
    uint64_t base = checku64(L, 3), size = checku64(L, 4);
    luaL_checkany(L, 5);
    return add_range_obj(L, v, space, base, size, 5);
}

/* vm:add_debugcon(port [, debugcon]) -> id, debugcon. The first one is the VM's default,
 * read by vm:debug_output(). */
static int l_vm_add_debugcon(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    unsigned port = (unsigned)lv_checkrange(L, 2, 0, 0xffff);
    if (lua_isnoneornil(L, 3))
        l_debugcon_new(L);
    else
        luaL_checkudata(L, 3, DEBUGCON_T), lua_pushvalue(L, 3);
    int con = lua_gettop(L);
    if (add_range_obj(L, v, LV_KVM_PIO, port, 1, con) != 1)
        return 3;
    lua_getiuservalue(L, 1, 2);
    if (lua_getfield(L, -1, "debugcon") == LUA_TNIL) {
        lua_pushvalue(L, con);
        lua_setfield(L, -3, "debugcon");
    }
    lua_pop(L, 2);
    lua_pushvalue(L, con);
    return 2;
}

static int l_vm_add_exit_port(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    unsigned port = (unsigned)lv_checkrange(L, 2, 0, 0xffff);
    return range_result(L, lv_kvm_add_exit_port(&v->vm, (uint16_t)port), "add exit port",
                        port);
}

static int l_vm_remove_range(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int id = (int)luaL_checkinteger(L, 2);
    int e = lv_kvm_remove_range(&v->vm, id);
    if (e < 0)
        return lv_syserrorf(L, -e, "remove handled range", "%d", id);
    lua_getiuservalue(L, 1, 2);
    lua_pushnil(L);
    lua_rawseti(L, -2, -id);
    lua_pushboolean(L, 1);
    return 1;
}

/* vm:debug_output([clear]) -> what the guest wrote to the default debug console, dropped */
static int l_vm_debug_output(lua_State *L)
{
    luaL_checkudata(L, 1, LV_VM_T);
    lua_settop(L, 2);
    lua_getiuservalue(L, 1, 2);
    if (lua_getfield(L, -1, "debugcon") == LUA_TNIL) {
        lua_pushliteral(L, "");
        lua_pushinteger(L, 0);
        return 2;
    }
    lua_replace(L, 1);
    lua_settop(L, 2);
    return l_debugcon_output(L);
}

/* vm:check_extension(cap): VM-scoped capabilities (e.g. device_ctrl) answer here. */
static int l_vm_check_extension(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    int cap = checkcap(L, 2);
    int r = ioctl(v->vm.fd, KVM_CHECK_EXTENSION, cap);
    if (r < 0)
        return lv_syserrorf(L, errno, "KVM_CHECK_EXTENSION", "vm cap %d", cap);
    lua_pushinteger(L, r);
    return 1;
}

static int l_vm_fileno(lua_State *L)
{
    struct lv_vm_ud *v = luaL_checkudata(L, 1, LV_VM_T);
    lua_pushinteger(L, v->vm.fd);
    return 1;
}

static int l_vm_close(lua_State *L)
{
    struct lv_vm_ud *v = luaL_checkudata(L, 1, LV_VM_T);
    lv_kvm_vm_close(&v->vm);
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

/* ---- vfio.irqfd: an eventfd wired to a GSI (and its resample eventfd) ---- */

struct irqfd_ud {
    int fd, resample_fd, own_fd, own_resample, assigned;
    uint32_t gsi;
};

static struct irqfd_ud *checkirqfd(lua_State *L, int arg)
{
    struct irqfd_ud *q = luaL_checkudata(L, arg, IRQFD_T);
    if (q->fd < 0)
        luaL_error(L, "attempt to use a closed irqfd");
    return q;
}

static int new_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

/* vm:irqfd(gsi [, {fd=, resample=true|fd}]) -> irqfd. Without fd an eventfd is created
 * (and owned); resample=true creates the resample eventfd for level-triggered INTx. */
static int l_vm_irqfd(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    uint32_t gsi = (uint32_t)lv_checkrange(L, 2, 0, 4095);
    int fd = -1, rfd = -1, want_resample = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "fd") != LUA_TNIL)
            fd = lv_checkfd(L, lua_gettop(L));
        lua_pop(L, 1);
        int t = lua_getfield(L, 3, "resample");
        if (t == LUA_TBOOLEAN)
            want_resample = lua_toboolean(L, -1);
        else if (t != LUA_TNIL)
            rfd = lv_checkfd(L, lua_gettop(L)), want_resample = 1;
        lua_pop(L, 1);
    }
    struct irqfd_ud *q = lv_newobject(L, sizeof *q, IRQFD_T, 1);
    q->fd = q->resample_fd = -1;
    q->gsi = gsi;
    if (fd < 0) {
        if ((fd = new_eventfd()) < 0)
            return lv_syserrorf(L, errno, "eventfd", "irqfd gsi %u", gsi);
        q->own_fd = 1;
    }
    q->fd = fd;
    if (want_resample && rfd < 0) {
        if ((rfd = new_eventfd()) < 0)
            return lv_syserrorf(L, errno, "eventfd", "resample gsi %u", gsi);
        q->own_resample = 1;
    }
    q->resample_fd = rfd;
    int e = lv_kvm_irqfd(&v->vm, gsi, fd, rfd, 0);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_IRQFD", "gsi %u%s", gsi, rfd >= 0 ? " resample" : "");
    q->assigned = 1;
    lv_set_parent(L, -1, 1, 1);
    return 1;
}

static void irqfd_release(lua_State *L, struct irqfd_ud *q, int idx)
{
    if (q->assigned) {
        lua_getiuservalue(L, idx, 1);
        struct lv_vm_ud *v = luaL_testudata(L, -1, LV_VM_T);
        if (v && v->vm.fd >= 0)
            lv_kvm_irqfd(&v->vm, q->gsi, q->fd, -1, 1);
        lua_pop(L, 1);
        q->assigned = 0;
    }
    if (q->own_fd && q->fd >= 0)
        close(q->fd);
    if (q->own_resample && q->resample_fd >= 0)
        close(q->resample_fd);
    q->fd = q->resample_fd = -1;
}

static int l_irqfd_close(lua_State *L)
{
    struct irqfd_ud *q = luaL_checkudata(L, 1, IRQFD_T);
    irqfd_release(L, q, 1);
    return 0;
}

static int l_irqfd_fileno(lua_State *L)
{
    lua_pushinteger(L, checkirqfd(L, 1)->fd);
    return 1;
}

static int l_irqfd_resample_fileno(lua_State *L)
{
    struct irqfd_ud *q = checkirqfd(L, 1);
    if (q->resample_fd < 0)
        return 0;
    lua_pushinteger(L, q->resample_fd);
    return 1;
}

static int l_irqfd_gsi(lua_State *L)
{
    lua_pushinteger(L, checkirqfd(L, 1)->gsi);
    return 1;
}

/* irqfd:trigger([n]): what a device's interrupt does to the eventfd. */
static int l_irqfd_trigger(lua_State *L)
{
    struct irqfd_ud *q = checkirqfd(L, 1);
    uint64_t n = lua_isnoneornil(L, 2) ? 1 : (uint64_t)lv_checkrange(L, 2, 1, INT32_MAX);
    if (write(q->fd, &n, sizeof n) != (ssize_t)sizeof n)
        return lv_syserrorf(L, errno, "write", "irqfd gsi %u", q->gsi);
    lua_pushboolean(L, 1);
    return 1;
}

/* irqfd:resampled([timeout_ms]) -> how many times the guest EOI'd the level interrupt. */
static int l_irqfd_resampled(lua_State *L)
{
    struct irqfd_ud *q = checkirqfd(L, 1);
    int ms = (int)luaL_optinteger(L, 2, 0);
    if (q->resample_fd < 0)
        return luaL_error(L, "irqfd gsi %u has no resample fd", q->gsi);
    return wait_count(L, q->resample_fd, ms, "resample eventfd");
}

static int l_irqfd_tostring(lua_State *L)
{
    struct irqfd_ud *q = luaL_checkudata(L, 1, IRQFD_T);
    if (q->fd < 0)
        lua_pushliteral(L, "vfio.irqfd (closed)");
    else
        lua_pushfstring(L, "vfio.irqfd (gsi %d, fd %d%s)", (int)q->gsi, q->fd,
                        q->resample_fd >= 0 ? ", resample" : "");
    return 1;
}

/* ---- vfio.ioeventfd: a guest write that signals an eventfd without exiting ---- */

struct ioeventfd_ud {
    int fd, own_fd, assigned, space, has_dm;
    unsigned len;
    uint64_t addr, datamatch;
};

/* vm:ioeventfd{addr=, len=, pio=bool, datamatch=?, fd=?} -> ioeventfd */
static int l_vm_ioeventfd(lua_State *L)
{
    struct lv_vm_ud *v = lv_checkvm(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    struct ioeventfd_ud q0 = {.fd = -1};
    lua_getfield(L, 2, "addr");
    q0.addr = (uint64_t)luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "len");
    q0.len = (unsigned)luaL_optinteger(L, -1, 4);
    lua_getfield(L, 2, "pio");
    q0.space = lua_toboolean(L, -1) ? LV_KVM_PIO : LV_KVM_MMIO;
    lua_getfield(L, 2, "datamatch");
    if (!lua_isnil(L, -1))
        q0.has_dm = 1, q0.datamatch = (uint64_t)luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "fd");
    int ufd = lua_isnil(L, -1) ? -1 : lv_checkfd(L, lua_gettop(L));
    lua_pop(L, 5);
    if (q0.len != 0 && q0.len != 1 && q0.len != 2 && q0.len != 4 && q0.len != 8)
        return luaL_argerror(L, 2, "len must be 0, 1, 2, 4 or 8");
    struct ioeventfd_ud *q = lv_newobject(L, sizeof *q, IOEVENTFD_T, 1);
    *q = q0;
    if (ufd < 0) {
        if ((ufd = new_eventfd()) < 0)
            return lv_syserror(L, errno, "eventfd", "ioeventfd");
        q->own_fd = 1;
    }
    q->fd = ufd;
    int e = lv_kvm_ioeventfd(&v->vm, q->space, q->addr, q->len, q->fd, q->has_dm,
                             q->datamatch, 0);
    if (e < 0)
        return lv_syserrorf(L, -e, "KVM_IOEVENTFD", "%s 0x%llx len %u",
                            q->space == LV_KVM_PIO ? "port" : "gpa",
                            (unsigned long long)q->addr, q->len);
    q->assigned = 1;
    lv_set_parent(L, -1, 1, 1);
    return 1;
}

static struct ioeventfd_ud *checkioev(lua_State *L, int arg)
{
    struct ioeventfd_ud *q = luaL_checkudata(L, arg, IOEVENTFD_T);
    if (q->fd < 0)
        luaL_error(L, "attempt to use a closed ioeventfd");
    return q;
}

static int l_ioev_close(lua_State *L)
{
    struct ioeventfd_ud *q = luaL_checkudata(L, 1, IOEVENTFD_T);
    if (q->assigned) {
        lua_getiuservalue(L, 1, 1);
        struct lv_vm_ud *v = luaL_testudata(L, -1, LV_VM_T);
        if (v && v->vm.fd >= 0)
            lv_kvm_ioeventfd(&v->vm, q->space, q->addr, q->len, q->fd, q->has_dm,
                             q->datamatch, 1);
        q->assigned = 0;
    }
    if (q->own_fd && q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    return 0;
}

static int l_ioev_fileno(lua_State *L)
{
    lua_pushinteger(L, checkioev(L, 1)->fd);
    return 1;
}

/* ioeventfd:count([timeout_ms]) -> number of guest writes since the last call */
static int l_ioev_count(lua_State *L)
{
    struct ioeventfd_ud *q = checkioev(L, 1);
    return wait_count(L, q->fd, (int)luaL_optinteger(L, 2, 0), "ioeventfd");
}

static int l_ioev_tostring(lua_State *L)
{
    struct ioeventfd_ud *q = luaL_checkudata(L, 1, IOEVENTFD_T);
    if (q->fd < 0)
        lua_pushliteral(L, "vfio.ioeventfd (closed)");
    else
        lua_pushfstring(L, "vfio.ioeventfd (%s 0x%I, fd %d)",
                        q->space == LV_KVM_PIO ? "port" : "gpa", (lua_Integer)q->addr, q->fd);
    return 1;
}

void lv_open_kvm(lua_State *L)
{
    static const luaL_Reg kvm_m[] = {
        {"api_version", l_kvm_api_version}, {"check_extension", l_kvm_check_extension},
        {"vcpu_mmap_size", l_kvm_vcpu_mmap_size}, {"create_vm", l_kvm_create_vm},
        {"fileno", l_kvm_fileno}, {"close", l_kvm_close}, {NULL, NULL}};
    static const luaL_Reg kvm_mt[] = {
        {"__gc", l_kvm_close}, {"__close", l_kvm_close}, {"__tostring", l_kvm_tostring},
        {NULL, NULL}};
    static const luaL_Reg vm_m[] = {
        {"add_ram", l_vm_add_ram}, {"map", l_vm_map}, {"unmap", l_vm_unmap},
        {"write", l_vm_write}, {"read", l_vm_read}, {"fill", l_vm_fill},
        {"memory", l_vm_memory}, {"create_irqchip", l_vm_create_irqchip},
        {"set_msi_route", l_vm_set_msi_route}, {"remove_route", l_vm_remove_route},
        {"routes", l_vm_routes}, {"irq_line", l_vm_irq_line}, {"signal_msi", l_vm_signal_msi},
        {"irqfd", l_vm_irqfd}, {"ioeventfd", l_vm_ioeventfd},
        {"vfio_device", l_vm_vfio_device}, {"vfio_group_add", l_vm_vfio_group_add},
        {"vfio_group_del", l_vm_vfio_group_del}, {"add_debugcon", l_vm_add_debugcon},
        {"add_range", l_vm_add_range}, {"check_extension", l_vm_check_extension},
        {"add_exit_port", l_vm_add_exit_port}, {"remove_range", l_vm_remove_range},
        {"debug_output", l_vm_debug_output}, {"vcpu", lv_vm_vcpu}, {"fileno", l_vm_fileno},
        {"close", l_vm_close}, {NULL, NULL}};
    static const luaL_Reg vm_mt[] = {
        {"__gc", l_vm_close}, {"__close", l_vm_close}, {"__tostring", l_vm_tostring},
        {NULL, NULL}};
    static const luaL_Reg irqfd_m[] = {
        {"fileno", l_irqfd_fileno}, {"resample_fileno", l_irqfd_resample_fileno},
        {"gsi", l_irqfd_gsi}, {"trigger", l_irqfd_trigger}, {"resampled", l_irqfd_resampled},
        {"close", l_irqfd_close}, {NULL, NULL}};
    static const luaL_Reg irqfd_mt[] = {
        {"__gc", l_irqfd_close}, {"__close", l_irqfd_close}, {"__tostring", l_irqfd_tostring},
        {NULL, NULL}};
    static const luaL_Reg ioev_m[] = {
        {"fileno", l_ioev_fileno}, {"count", l_ioev_count}, {"close", l_ioev_close},
        {NULL, NULL}};
    static const luaL_Reg ioev_mt[] = {
        {"__gc", l_ioev_close}, {"__close", l_ioev_close}, {"__tostring", l_ioev_tostring},
        {NULL, NULL}};
    lv_newclass(L, KVM_T, kvm_m, kvm_mt);
    lv_newclass(L, LV_VM_T, vm_m, vm_mt);
    lv_newclass(L, IRQFD_T, irqfd_m, irqfd_mt);
    lv_newclass(L, IOEVENTFD_T, ioev_m, ioev_mt);
    static const luaL_Reg con_m[] = {
        {"output", l_debugcon_output}, {"close", l_debugcon_close}, {NULL, NULL}};
    static const luaL_Reg con_mt[] = {
        {"__gc", l_debugcon_close}, {"__close", l_debugcon_close},
        {"__tostring", l_debugcon_tostring}, {NULL, NULL}};
    lv_newclass(L, DEBUGCON_T, con_m, con_mt);
    luaL_getmetatable(L, DEBUGCON_T);
    lua_pushlightuserdata(L, (void *)&lv_kvm_debugcon_ops);
    lua_setfield(L, -2, LV_KVM_IO_FIELD);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_debugcon_new);
    lua_setfield(L, -2, "debugcon");
    lua_pushcfunction(L, l_kvm_open);
    lua_setfield(L, -2, "kvm_open");
    lua_newtable(L);
    for (int i = 0; caps[i].name; i++) {
        lua_pushinteger(L, caps[i].cap);
        lua_setfield(L, -2, caps[i].name);
    }
    lua_setfield(L, -2, "KVM_CAP");
}
