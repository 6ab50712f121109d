/* vfio.mmap: a shared mapping of a device region whose address can back a KVM memory slot
 * (vm:map), made with core.mmap(fd, offset, size [, writable]). */
#include "lv.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#define MMAP_T "vfio.mmap"

struct l_mmap {
    void *p;
    size_t len;
};

/* core.mmap(fd, offset, size [, writable]) -> vfio.mmap | nil, message, errno */
static int l_mmap_new(lua_State *L)
{
    int fd = (int)lv_checkrange(L, 1, 0, 0x7fffffff);
    lua_Integer off = lv_checkrange(L, 2, 0, INT64_MAX);
    lua_Integer len = lv_checkrange(L, 3, 1, (lua_Integer)1 << 40);
    int prot = PROT_READ | (lua_isnoneornil(L, 4) || lua_toboolean(L, 4) ? PROT_WRITE : 0);
    struct l_mmap *m = lv_newobject(L, sizeof *m, MMAP_T, 0);
    void *p = mmap(NULL, (size_t)len, prot, MAP_SHARED, fd, (off_t)off);
    if (p == MAP_FAILED)
        return lv_syserrorf(L, errno, "mmap", "fd %d offset 0x%llx size 0x%llx", fd,
                            (unsigned long long)off, (unsigned long long)len);
    m->p = p;
    m->len = (size_t)len;
    return 1;
}

static struct l_mmap *checkmmap(lua_State *L)
{
    struct l_mmap *m = luaL_checkudata(L, 1, MMAP_T);
    if (!m->p)
        luaL_error(L, "vfio.mmap is closed");
    return m;
}

static int l_mmap_address(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)(uintptr_t)checkmmap(L)->p);
    return 1;
}

static int l_mmap_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)checkmmap(L)->len);
    return 1;
}

/* Only after the KVM slot using it is gone (vm:map keeps this object alive until then). */
static int l_mmap_close(lua_State *L)
{
    struct l_mmap *m = luaL_checkudata(L, 1, MMAP_T);
    if (m->p)
        munmap(m->p, m->len);
    m->p = NULL;
    return 0;
}

static int l_mmap_tostring(lua_State *L)
{
    struct l_mmap *m = luaL_checkudata(L, 1, MMAP_T);
    if (m->p)
        lua_pushfstring(L, "vfio.mmap (%p, %I bytes)", m->p, (lua_Integer)m->len);
    else
        lua_pushliteral(L, "vfio.mmap (closed)");
    return 1;
}

void lv_open_mmap(lua_State *L)
{
    static const luaL_Reg methods[] = {{"address", l_mmap_address}, {"size", l_mmap_size},
                                       {"close", l_mmap_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", l_mmap_close}, {"__close", l_mmap_close},
                                    {"__tostring", l_mmap_tostring}, {NULL, NULL}};
    lv_newclass(L, MMAP_T, methods, meta);
    lua_pushcfunction(L, l_mmap_new);
    lua_setfield(L, -2, "mmap");
}
