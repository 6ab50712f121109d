/* Lua binding: vfio.core.kvm_open -> vfio.kvm, the KVM system (kvm:create_vm makes a
 * vfio.vm: l_vm.c), and the capability names both answer check_extension for. */
#include "l_kvm.h"
#include "kvm/pcihost.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KVM_T "vfio.kvm"

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

int lv_dupfd(lua_State *L, int arg)
{
    int fd = lv_checkfd(L, arg);
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return luaL_argerror(L, arg, lua_pushfstring(L, "fd %d: %s", fd, strerror(errno)));
    return d;
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
    /* LUAVFIO_NO_KVM hides the host's /dev/kvm (not another path), so a machine with KVM
     * can prove what the library and the specs do on one without it. */
    const char *hide = getenv("LUAVFIO_NO_KVM");
    if (hide && *hide && strcmp(hide, "0") != 0 && strcmp(path, "/dev/kvm") == 0)
        return lv_syserror(L, ENOENT, "open", "/dev/kvm (hidden by LUAVFIO_NO_KVM)");
    int fd = kvm_open(path);
    if (fd < 0)
        return lv_syserror(L, -fd, "open", path);
    k->fd = fd;
    strcpy(k->path, path);
    return 1;
}

static int l_kvm_api_version(lua_State *L)
{
    struct lv_kvm_ud *k = checkkvm(L, 1);
    int v = kvm_api_version(k->fd);
    if (v < 0)
        return lv_syserror(L, -v, "KVM_GET_API_VERSION", k->path);
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
    {"tsc_deadline_timer", KVM_CAP_TSC_DEADLINE_TIMER},
    {NULL, 0},
};

int lv_kvm_checkcap(lua_State *L, int arg)
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
    luaL_checkudata(L, 1, KVM_T);
    int cap = lv_kvm_checkcap(L, 2);
    struct lv_kvm_ud *k = checkkvm(L, 1);
    int v = kvm_check_extension(k->fd, cap);
    if (v < 0)
        return lv_syserrorf(L, -v, "KVM_CHECK_EXTENSION", "%s cap %d", k->path, cap);
    lua_pushinteger(L, v);
    return 1;
}

static int l_kvm_vcpu_mmap_size(lua_State *L)
{
    struct lv_kvm_ud *k = checkkvm(L, 1);
    int v = kvm_vcpu_mmap_size(k->fd);
    if (v < 0)
        return lv_syserror(L, -v, "KVM_GET_VCPU_MMAP_SIZE", k->path);
    lua_pushinteger(L, v);
    return 1;
}

static int l_kvm_create_vm(lua_State *L)
{
    luaL_checkudata(L, 1, KVM_T);
    struct lv_vm_ud *v = lv_newobject(L, sizeof *v, LV_VM_T, 2);
    v->vm.fd = -1;
    v->vm.vfio_fd = -1;
    struct lv_kvm_ud *k = checkkvm(L, 1);   /* after the allocation (a GC step) */
    int e = kvm_vm_create(&v->vm, k->fd);
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

/*** @module vfio.core */

/***
Open KVM. With `LUAVFIO_NO_KVM` set, fails with ENOENT as a host without KVM would.
@function kvm_open
@tparam[opt="/dev/kvm"] string path the node
@treturn kvm the handle, or `nil, message, errno`
*/

/***
The KVM system fd (`vfio.kvm`).
@type kvm
*/

/***
KVM_GET_API_VERSION.
@function kvm:api_version
@treturn int the version, or `nil, message, errno`
*/

/***
KVM_CHECK_EXTENSION; raises for an unknown capability name.
@function kvm:check_extension
@param cap a capability name this module knows, or a number
@treturn int the kernel's answer (0: absent), or `nil, message, errno`
*/

/***
KVM_GET_VCPU_MMAP_SIZE.
@function kvm:vcpu_mmap_size
@treturn int bytes, or `nil, message, errno`
*/

/***
KVM_CREATE_VM; the VM keeps this handle alive.
@function kvm:create_vm
@treturn vm the VM, or `nil, message, errno`
*/

/***
The fd's number.
@function kvm:fileno
@treturn int
*/

/***
Close the fd (idempotent).
@function kvm:close
*/

void lv_open_kvm(lua_State *L)
{
    static const luaL_Reg kvm_m[] = {
        {"api_version", l_kvm_api_version}, {"check_extension", l_kvm_check_extension},
        {"vcpu_mmap_size", l_kvm_vcpu_mmap_size}, {"create_vm", l_kvm_create_vm},
        {"fileno", l_kvm_fileno}, {"close", l_kvm_close}, {NULL, NULL}};
    static const luaL_Reg kvm_mt[] = {
        {"__gc", l_kvm_close}, {"__close", l_kvm_close}, {"__tostring", l_kvm_tostring},
        {NULL, NULL}};
    lv_newclass(L, KVM_T, kvm_m, kvm_mt);
    lua_pushcfunction(L, l_kvm_open);
    lua_setfield(L, -2, "kvm_open");
    lua_newtable(L);
    for (int i = 0; caps[i].name; i++) {
        lua_pushinteger(L, caps[i].cap);
        lua_setfield(L, -2, caps[i].name);
    }
    lua_setfield(L, -2, "KVM_CAP");
    /* The pages KVM takes at VM creation (kvm/vm.h) and the host bridge's ECAM limits
     * (kvm/pcihost.h), for the Lua address map to check. */
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)KVM_VMM_IDENTITY_MAP_ADDR);
    lua_setfield(L, -2, "identity_map");
    lua_pushinteger(L, (lua_Integer)KVM_VMM_TSS_ADDR);
    lua_setfield(L, -2, "tss");
    lua_pushinteger(L, (lua_Integer)KVM_VMM_SYSTEM_PAGES_SIZE);
    lua_setfield(L, -2, "system_pages_size");
    lua_pushinteger(L, (lua_Integer)KVM_PCIHOST_ECAM_BUS_SIZE);
    lua_setfield(L, -2, "ecam_bus_size");
    lua_pushinteger(L, (lua_Integer)KVM_PCIHOST_ECAM_MAX);
    lua_setfield(L, -2, "ecam_max");
    lua_setfield(L, -2, "kvm_layout");
}
