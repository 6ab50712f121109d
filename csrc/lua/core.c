/* luaopen_vfio_core: the C half of luavfio. Each concern registers itself (modules.h). */
#include "lv.h"
#include "modules.h"

#define LV_DECLARE(name) void lv_open_##name(lua_State *L);
LV_MODULES(LV_DECLARE)

LV_EXPORT int luaopen_vfio_core(lua_State *L)
{
    lua_newtable(L);
#define LV_CALL(name) lv_open_##name(L);
    LV_MODULES(LV_CALL)
    lv_protect_classes(L);
#ifndef LUAVFIO_VERSION
#error "LUAVFIO_VERSION comes from lua/vfio/version.lua through CMakeLists.txt"
#endif
    lua_pushliteral(L, LUAVFIO_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
