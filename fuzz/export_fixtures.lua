-- Convert the lab recordings (spec/fixtures/*.lua) into the fuzzer's binary form:
--   "LVFX" u32 cfglen, cfg; u32 nregions {u32 idx, u64 size, u32 flags, u32 n, data};
--   u32 nirqs {u32 idx, u32 count, u32 flags}          (little-endian)
-- Usage: lua5.4 fuzz/export_fixtures.lua OUTDIR   (from the project root)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local record = require "vfio.record"
local out = assert(arg[1], "usage: export_fixtures.lua OUTDIR")
local names = { "edu", "e1000e", "nvme", "virtio-net-pci", "qemu-xhci", "pci-testdev" }
for _, name in ipairs(names) do
   local fx = assert(record.load(name))
   local p = { "LVFX", string.pack("<I4", #fx.config), fx.config }
   local regs = {}
   for i = 0, 8 do if fx.regions[i] then regs[#regs + 1] = i end end
   p[#p + 1] = string.pack("<I4", #regs)
   for _, i in ipairs(regs) do
      local r = fx.regions[i]
      local data = r.data and r.data[1] and r.data[1].bytes or ""
      p[#p + 1] = string.pack("<I4I8I4I4", i, r.size, r.flags, #data) .. data
   end
   local irqs = {}
   for i = 0, 4 do if fx.irqs[i] then irqs[#irqs + 1] = i end end
   p[#p + 1] = string.pack("<I4", #irqs)
   for _, i in ipairs(irqs) do
      p[#p + 1] = string.pack("<I4I4I4", i, fx.irqs[i].count, fx.irqs[i].flags)
   end
   local f = assert(io.open(out .. "/" .. name .. ".fx", "wb"))
   f:write(table.concat(p))
   f:close()
end
