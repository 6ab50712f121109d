-- The development rock. Built in place from a checkout (the source URL is not fetched):
--   luarocks --lua-version=5.4 make rockspecs/luavfio-scm-1.rockspec
-- The source is this git repository. Its URL below is a placeholder for the checkout's
-- path: `make dist` writes dist/luavfio-scm-1.rockspec with the checkout's own
-- git+file:// URL, which `luarocks install dist/luavfio-scm-1.rockspec` clones (HEAD).
-- rockspecs/luavfio-VERSION-1.rockspec is the same rock for a release (keep the two
-- alike: spec/host/rockspec_spec.lua compares them).
rockspec_format = "3.0"
package = "luavfio"
version = "scm-1"
source = {
   url = "git+file://LUAVFIO_CHECKOUT",
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
