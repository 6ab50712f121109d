-- The 0.1 release of the rock in rockspecs/luavfio-scm-1.rockspec (keep the two alike:
-- spec/host/rockspec_spec.lua compares them). Built from the release archive, made in a
-- checkout with: git archive --prefix=luavfio-0.1/ -o luavfio-0.1.tar.gz v0.1
rockspec_format = "3.0"
package = "luavfio"
version = "0.1-1"
source = {
   url = "luavfio-0.1.tar.gz",
   dir = "luavfio-0.1",
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
