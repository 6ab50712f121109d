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
    lua_pushliteral(L, "luavfio 0.1");
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
