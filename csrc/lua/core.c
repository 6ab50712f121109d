/* luaopen_vfio_core: the C half of luavfio. Each concern registers itself (modules.h). */
/***
The C module: one object type per VFIO, iommufd and KVM concept, the PCI trap core and the VMM's devices (`require "vfio.core"`; `require "vfio"` is the friendly layer).
- Errors: wrong arguments raise (bad types, out-of-range offsets or values, closed objects). System failures return `nil, message, errno`: the message names the operation, the device or path, and strerror (`VFIO_DEVICE_RESET 0000:00:02.0: Invalid argument`), and errno is the integer (`strerror` names it). Below, "or `nil, message, errno`" refers to this convention.
- Objects: every object has `close()` (idempotent), `__close` (to-be-closed variables), `__gc` and `__tostring`; a child keeps its parent alive (region -> device -> group -> container, or region -> device -> IOAS -> iommufd). `getmetatable(obj)` returns a description of the class, not the metatable: types cannot be forged. No host address reaches Lua; an fd number is used only during the call that receives it. Memory an IOMMU maps is freed only when no mapping uses it (a `close()` returns `nil, message, EBUSY` meanwhile). See the topic vfio-api.md for the whole picture.
- Fields: `_VERSION`, `API_VERSION`, `PAGE_SIZE`, and the constant tables `REGION`, `IRQ`, `FEATURE`, `EXTENSIONS` (`container:check_extension`'s names), `KVM_CAP` (`kvm:check_extension`'s), `MIGRATION` and `MIG_STATE`.
@module vfio.core
*/

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
