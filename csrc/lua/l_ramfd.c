/* vfio.ramfd: a file guest RAM can come from (csrc/kvm/ram.h): a memfd sealed against
 * shrinking and growing, which another process may map to share the guest's RAM (its
 * fileno() is the fd to pass), a memfd on huge pages, or a file in a hugetlbfs mount.
 * vm:add_ram(gpa, size, {fd = ramfd, offset =}) maps it into a VM. */
#include "l_kvm.h"
#include "kvm/ram.h"

#include <errno.h>
#include <lauxlib.h>
#include <string.h>
#include <unistd.h>

static const char *const kind_names[] = {[KVM_RAM_MEMFD] = "memfd",
                                         [KVM_RAM_MEMFD_HUGETLB] = "memfd-hugetlb",
                                         [KVM_RAM_HUGETLBFS] = "hugetlbfs"};

struct lv_ramfd_ud *lv_checkramfd(lua_State *L, int arg)
{
    struct lv_ramfd_ud *r = luaL_checkudata(L, arg, LV_RAMFD_T);
    if (r->fd < 0)
        luaL_argerror(L, arg, "the RAM file is closed");
    return r;
}

static uint64_t checksize(lua_State *L, int arg)
{
    lua_Integer n = luaL_checkinteger(L, arg);
    if (n <= 0)
        luaL_argerror(L, arg, "size must be positive");
    return (uint64_t)n;
}

/* Wrap a new backing fd (or push the error of making it). */
static int push_ramfd(lua_State *L, int fd, int kind, uint64_t size, const char *what)
{
    if (fd < 0)
        return lv_syserrorf(L, -fd, "create guest RAM in", "%s of %llu bytes", what,
                            (unsigned long long)size);
    int64_t pg = kvm_ram_page_size(fd);
    struct lv_ramfd_ud *r = lua_newuserdatauv(L, sizeof *r, 0);   /* may run a __gc */
    *r = (struct lv_ramfd_ud){.fd = fd, .kind = kind, .size = size,
                              .page_size = pg > 0 ? pg : 4096};
    luaL_setmetatable(L, LV_RAMFD_T);
    return 1;
}

/* core.ram_memfd(size [, {hugetlb = false}]) -> ramfd | nil, message, errno */
static int l_ram_memfd(lua_State *L)
{
    uint64_t size = checksize(L, 1);
    int huge = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "hugetlb");
        huge = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    int fd = kvm_ram_memfd(size, huge);
    return push_ramfd(L, fd, huge ? KVM_RAM_MEMFD_HUGETLB : KVM_RAM_MEMFD, size,
                      huge ? "a huge-page memfd" : "a memfd");
}

/* core.ram_hugetlbfs(dir, size) -> ramfd | nil, message, errno */
static int l_ram_hugetlbfs(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    uint64_t size = checksize(L, 2);
    int fd = kvm_ram_hugetlbfs(dir, size);
    if (fd == -ENOTTY) {
        lua_pushnil(L);
        lua_pushfstring(L, "create guest RAM in %s: not a hugetlbfs mount (mount -t hugetlbfs "
                        "none DIR, or leave the path out for the default huge page size)", dir);
        lua_pushinteger(L, ENOTTY);
        return 3;
    }
    lua_pushfstring(L, "a file in %s", dir);   /* the subject, kept on the stack */
    return push_ramfd(L, fd, KVM_RAM_HUGETLBFS, size, lua_tostring(L, -1));
}

static int r_fileno(lua_State *L)
{
    lua_pushinteger(L, lv_checkramfd(L, 1)->fd);
    return 1;
}

static int r_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lv_checkramfd(L, 1)->size);
    return 1;
}

static int r_page_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lv_checkramfd(L, 1)->page_size);
    return 1;
}

static int r_kind(lua_State *L)
{
    lua_pushstring(L, kind_names[lv_checkramfd(L, 1)->kind]);
    return 1;
}

/* r:sealed() -> true when the file can neither shrink nor grow nor take more seals (read
 * from the file, not remembered). */
static int r_sealed(lua_State *L)
{
    struct lv_ramfd_ud *r = lv_checkramfd(L, 1);
    uint64_t size;
    int sealed;
    int e = kvm_ram_fd_info(r->fd, &size, &sealed);
    if (e < 0)
        return lv_syserrorf(L, -e, "fstat", "guest RAM file %d", r->fd);
    lua_pushboolean(L, sealed);
    return 1;
}

static int r_closed(lua_State *L)
{
    lua_pushboolean(L, ((struct lv_ramfd_ud *)luaL_checkudata(L, 1, LV_RAMFD_T))->fd < 0);
    return 1;
}

static int r_close(lua_State *L)
{
    struct lv_ramfd_ud *r = luaL_checkudata(L, 1, LV_RAMFD_T);
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    return 0;
}

static int r_tostring(lua_State *L)
{
    struct lv_ramfd_ud *r = luaL_checkudata(L, 1, LV_RAMFD_T);
    if (r->fd < 0)
        lua_pushliteral(L, "vfio.ramfd (closed)");
    else
        lua_pushfstring(L, "vfio.ramfd (%s, %I bytes, fd %d)", kind_names[r->kind],
                        (lua_Integer)r->size, r->fd);
    return 1;
}

/*** @module vfio.core */

/***
A memfd for guest RAM (`vm:add_ram(gpa, size, {fd = r})`), close-on-exec, sized and sealed
against shrinking and growing (F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL), so a process it is
shared with cannot pull pages from under the guest. With `hugetlb` it is on the default huge
page size, whose pages are reserved when it is mapped (vm:add_ram fails with ENOMEM then,
when the pool is short: /proc/sys/vm/nr_hugepages).
@function ram_memfd
@tparam int size bytes (a multiple of the page size)
@tparam[opt] table opts `{hugetlb = false}`
@treturn ramfd the file, or `nil, message, errno`
*/

/***
A file for guest RAM in a hugetlbfs mount, created and unlinked at once, close-on-exec.
Such a file takes no seals. ENOTTY when `dir` is no hugetlbfs mount.
@function ram_hugetlbfs
@tparam string dir the mount
@tparam int size bytes (a multiple of its huge page size)
@treturn ramfd the file, or `nil, message, errno`
*/

/***
A file guest RAM comes from (`vfio.ramfd`): the VM's mapping holds the file, so closing it
takes nothing from a VM.
@type ramfd
*/

/***
The fd, to share the RAM with another process.
@function ramfd:fileno
@treturn int
*/

/***
The file's size in bytes.
@function ramfd:size
@treturn int
*/

/***
The page size behind it: the huge page size on hugetlbfs, else the system's.
@function ramfd:page_size
@treturn int
*/

/***
What it is: `"memfd"`, `"memfd-hugetlb"` or `"hugetlbfs"`.
@function ramfd:kind
@treturn string
*/

/***
Whether the file can neither shrink nor grow nor take another seal (read from the file).
@function ramfd:sealed
@treturn boolean or `nil, message, errno`
*/

/***
Whether it is closed.
@function ramfd:closed
@treturn boolean
*/

/***
Close the fd (idempotent); a VM's RAM mapped from it stays.
@function ramfd:close
*/

void lv_open_ramfd(lua_State *L)
{
    static const luaL_Reg methods[] = {{"fileno", r_fileno}, {"size", r_size},
                                       {"page_size", r_page_size}, {"kind", r_kind},
                                       {"sealed", r_sealed}, {"closed", r_closed},
                                       {"close", r_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", r_close}, {"__close", r_close}, {"__tostring", r_tostring}, {NULL, NULL}};
    lv_newclass(L, LV_RAMFD_T, methods, meta);
    lua_pushcfunction(L, l_ram_memfd);
    lua_setfield(L, -2, "ram_memfd");
    lua_pushcfunction(L, l_ram_hugetlbfs);
    lua_setfield(L, -2, "ram_hugetlbfs");
}
