rockspec_format = "3.0"
package = "luavfio"
version = "scm-1"
source = {
   url = "git+file:///dev/null", -- built in place with `luarocks make`
}
description = {
   summary = "Linux VFIO device passthrough from Lua: containers, groups, devices, regions, IRQs, DMA, KVM and a PCI config trap core",
   license = "MIT",
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "RelWithDebInfo",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      LUA_CMOD = "$(LIBDIR)",
      LUA_LMOD = "$(LUADIR)",
   },
}
