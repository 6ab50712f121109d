#!/usr/bin/env lua5.4
-- passthrough.lua: the passthrough command run from a checkout, with the in-tree modules,
-- build/vfio/core.so and build/guest/guest.elf (installed, the same command is
-- bin/vfio-passthrough; both run vfio.vmm.cli, where the options are defined; --help
-- lists them):
--
--   lua5.4 passthrough.lua --device BDF[,no-mmap=on][,quirk=NAME]... [--kernel BZIMAGE ...]
--                          [--guest FILE] [--mem SIZE] [--quirk NAME]... [--plan] ...
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/lua/?.lua;" .. here .. "/lua/?/init.lua;" .. package.path
package.cpath = here .. "/build/?.so;" .. package.cpath

require("vfio.vmm.cli").main(arg, { prog = "passthrough.lua", usage = "lua5.4 passthrough.lua",
                                    guest = here .. "/build/guest/guest.elf" })
