-- bench/user_server.lua: what a round trip through luavfio's vfio-user server costs, seen
-- from QEMU 11.1's client under qtest (the spec is the CPU). The same accesses go to the
-- 16550A model served by bin/vfio-user-serve (03.0) and to QEMU's own emulated edu (04.0,
-- no server): config reads QEMU forwards (the subsystem ID), an I/O port read of the
-- model (LSR) against an MMIO read of edu (its ID register), and a posted I/O write.
-- Prints microseconds per access and the server's ratio to the emulated device.
--   lua5.4 bench/user_server.lua [iterations]      (from the project root)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local qvu = require "support.qemu_vfio_user"
local us = require "support.user_server"
local child = require "support.child"

local n = tonumber(arg[1]) or 2000
assert(qvu.available())
local srv = us.start("examples/vfio-user/serial_16550a.lua")
local s = assert(qvu.start { socket = srv.socket, devices = { "edu,addr=04.0" } })
local io0 = s:assign_bars("03.0")[0].addr
local edu0 = s:assign_bars("04.0")[0].addr

local function us_per(f)
   local t0 = child.now()
   for _ = 1, n do f() end
   return (child.now() - t0) * 1e6 / n
end

local rows = {
   { "config read 0x2c", us_per(function() s:cfg_read("03.0", 0x2c, 4) end),
     us_per(function() s:cfg_read("04.0", 0x2c, 4) end) },
   { "BAR read (model I/O LSR; edu MMIO ID)", us_per(function() s:inb(io0 + 5) end),
     us_per(function() s:readl(edu0) end) },
   { "BAR write (model SCR; edu liveness)", us_per(function() s:outb(io0 + 7, 0x5a) end),
     us_per(function() s:writel(edu0 + 4, 1) end) },
}
s:close()
srv.stop()
print(("%-40s %12s %12s %8s"):format("(microseconds per access, " .. n .. " each)", "server", "emulated", "ratio"))
for _, r in ipairs(rows) do
   print(("%-40s %12.1f %12.1f %8.2f"):format(r[1], r[2], r[3], r[2] / r[3]))
end
