-- The 0.1 release of the rock in rockspecs/luavfio-scm-1.rockspec (keep the two alike:
-- spec/host/rockspec_spec.lua compares them). Its source is the archive `make dist`
-- makes from the checkout (git archive of the tree, dist/luavfio-0.1.tar.gz); the URL is
-- relative to the checkout's top, so from there, offline:
--   make dist && luarocks --lua-version=5.4 install rockspecs/luavfio-0.1-1.rockspec
-- `make dist` also packs dist/luavfio-0.1-1.src.rock (this rockspec with the archive),
-- which installs from anywhere: luarocks --lua-version=5.4 install luavfio-0.1-1.src.rock
rockspec_format = "3.0"
package = "luavfio"
version = "0.1-1"
source = {
   url = "dist/luavfio-0.1.tar.gz",
   dir = "luavfio-0.1",
}
description = {
   summary = "Linux VFIO device passthrough from Lua: containers, groups, devices, regions, IRQs, DMA, KVM and a PCI config trap core",
   detailed = [[
The C module vfio.core binds the kernel's VFIO and KVM interfaces and a PCI config trap
core; the Lua library opens devices by PCI address, decodes config space and describes
registers; the VMM passes devices through to a KVM guest (the vfio-passthrough command)
and vfio-poke is an interactive REPL for exploring devices; vfio-user-serve serves a
device, a recording or a Lua device model to a vfio-user client. The examples are installed
under the rock's doc/examples (luarocks doc luavfio).]],
   license = "MIT",
   labels = { "vfio", "kvm", "pci", "passthrough" },
}
dependencies = {
   "lua >= 5.4, < 5.5",
   -- sysfs (vfio.open, bind, the device list) and signals in the commands
   "luaposix >= 35.0",
   -- the commands' options, --help and --completion
   "argparse >= 0.7",
   -- the VMM's control socket (JSON lines) and vfio-poke --attach
   "dkjson >= 2.5",
}
-- `luarocks test` (in a checkout, offline): builds in place and runs the host specs with
-- Debian's busted, leaving out those that need KVM (#kvm: spec/run runs them where KVM
-- is) and the rock's own install spec (#rock: it runs `luarocks test` itself). Arguments
-- after `--` replace the spec list: luarocks test ROCKSPEC -- spec/host/decode_spec.lua
test = {
   type = "command",
   command = "make build >/dev/null && lua5.4 /usr/bin/busted -o plainTerminal --run=host --exclude-tags=kvm,rock",
}
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "RelWithDebInfo",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      LUA_CMOD = "$(LIBDIR)",
      LUA_LMOD = "$(LUADIR)",
      -- the rock's doc/: the examples go to doc/examples
      LUAVFIO_DOCDIR = "$(PREFIX)/doc",
   },
}
