-- The development rock, built in place: luarocks --lua-version=5.4 make
-- (rockspecs/luavfio-0.1-1.rockspec is the same rock for the 0.1 release).
rockspec_format = "3.0"
package = "luavfio"
version = "scm-1"
source = {
   url = "git+file:///dev/null", -- built in place with `luarocks make`
}
description = {
   summary = "Linux VFIO device passthrough from Lua: containers, groups, devices, regions, IRQs, DMA, KVM and a PCI config trap core",
   detailed = [[
The C module vfio.core binds the kernel's VFIO and KVM interfaces and a PCI config trap
core; the Lua library opens devices by PCI address, decodes config space and describes
registers; the VMM passes a device through to a KVM guest (the passthrough command) and
vfio-poke is an interactive REPL for exploring devices.]],
   license = "MIT",
   labels = { "vfio", "kvm", "pci", "passthrough" },
}
dependencies = {
   "lua >= 5.4, < 5.5",
   -- sysfs (vfio.open, bind, the device list) and signals in the commands
   "luaposix >= 35.0",
}
-- `luarocks test`: busted with .busted's default task, the host specs, against the
-- in-tree build (run `make` first).
test = {
   type = "busted",
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
