-- bench/trap.lua: cost of the trap core on a device recorded in the lab (replay backend),
-- from C (trap:bench loops) and from Lua (method calls), with a pread and a memcpy
-- floor measured in the same run. Prints ns per operation and ratios to the floors.
--   lua5.4 bench/trap.lua [fixture] [iterations]      (from the project root)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local core = require "vfio.core"
local record = require "vfio.record"

local name = arg[1] or "e1000e"
local n = tonumber(arg[2]) or 2000000
local t = assert(core.trap(assert(record.backend(name))))
local msix = t:msix()

-- Which offsets: vendor/device is fully emulated (shadow); STATUS is forwarded to the
-- device (the replay backend's memcpy, as the kernel backend would pread).
local SHADOW, FORWARD = 0x00, 0x06
local bar = 0
local bar_off = 0x8

local function lua_ns(f)
   local t0 = os.clock()
   for _ = 1, n do f() end
   return (os.clock() - t0) * 1e9 / n
end

local rows = {
   { "floor: memcpy 4 B (C)", t:bench("memcpy", n, 0, 0, 4) },
   { "floor: pread 4 B of a file (C)", t:bench("pread", n // 4, 0, 0, 4) },
   { "config read from shadow (C)", t:bench("cfg", n, SHADOW, 0, 4) },
   { "config read forwarded (C)", t:bench("cfg", n, FORWARD, 0, 2) },
   { "BAR dispatch to region (C)", t:bench("bar", n, bar, bar_off, 4) },
}
if msix then
   rows[#rows + 1] = { "BAR dispatch to MSI-X table (C)", t:bench("bar", n, msix.table_bar, msix.table_off, 4) }
end
rows[#rows + 1] = { "config read from shadow (Lua)", lua_ns(function() return t:cfg_read(SHADOW, 4) end) }
rows[#rows + 1] = { "config read forwarded (Lua)", lua_ns(function() return t:cfg_read(FORWARD, 2) end) }
rows[#rows + 1] = { "BAR dispatch to region (Lua)", lua_ns(function() return t:bar_read(bar, bar_off, 4) end) }

-- In the lab (LUAVFIO_LAB=1): the same trap over the kernel's VFIO edu device, BAR0
-- through its mmap and through pread, and a config read forwarded to VFIO.
if os.getenv("LUAVFIO_LAB") == "1" then
   local lab = require "support.lab"
   local passthrough = require "vfio.vmm.passthrough"
   local vfio = require "vfio"
   local d = lab.device("edu")
   if d then
      local ln = n // 10
      local dev = assert(vfio.open(d.bdf))
      local vm = assert(passthrough(dev, { layout = false }))
      local vp = assert(passthrough(dev, { layout = false, mmap = false }))
      rows[#rows + 1] = { "VFIO edu BAR0 read via mmap (C)", vm.trap:bench("bar", ln, 0, 0, 4) }
      rows[#rows + 1] = { "VFIO edu BAR0 read via pread (C)", vp.trap:bench("bar", ln, 0, 0, 4) }
      rows[#rows + 1] = { "VFIO config read forwarded (C)", vp.trap:bench("cfg", ln, FORWARD, 0, 2) }
      rows[#rows + 1] = { "VFIO config read from shadow (C)", vp.trap:bench("cfg", ln, SHADOW, 0, 4) }
      vm:close(); vp:close(); dev:close()
   end
end

local memcpy_ns, pread_ns = rows[1][2], rows[2][2]
print(("trap bench on %s recording, %d iterations"):format(name, n))
print(("%-36s %10s %12s %12s"):format("operation", "ns/op", "x memcpy", "x pread"))
for _, r in ipairs(rows) do
   print(("%-36s %10.1f %12.1f %12.2f"):format(r[1], r[2], r[2] / memcpy_ns, r[2] / pread_ns))
end
