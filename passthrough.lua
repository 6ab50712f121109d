#!/usr/bin/env lua5.4
-- passthrough.lua: the passthrough command run from a checkout, with the in-tree modules,
-- build/vfio/core.so and build/guest/guest.elf (the installed command is bin/passthrough;
-- both run vfio.vmm.cli, where the options are described):
--
--   lua5.4 passthrough.lua --device BDF [--guest FILE] [--mem MIB] [--quirk NAME]...
--                          [--cmdline ARGS] [--timeout S] [--no-mmap] [--trace] [--plan]
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/lua/?.lua;" .. here .. "/lua/?/init.lua;" .. package.path
package.cpath = here .. "/build/?.so;" .. package.cpath

require("vfio.vmm.cli").main(arg, { prog = "passthrough.lua", usage = "lua5.4 passthrough.lua",
                                    guest = here .. "/build/guest/guest.elf" })
