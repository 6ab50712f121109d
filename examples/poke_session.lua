-- A short poking session with QEMU's edu device, as a script (the same calls work typed
-- into bin/vfio-poke). Run in the lab:
--   lab/run -- lua5.4 examples/poke_session.lua [BDF]
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local poke = require "vfio.poke"

-- Find edu by its IDs unless a BDF is given.
local bdf = arg[1]
if not bdf then
   for _, d in ipairs(poke.devices()) do
      if d.vendor == 0x1234 and d.device == 0x11e8 then bdf = d.bdf end
   end
end
assert(bdf, "no edu device (1234:11e8) here")

local function show(label, ...)
   local t = { label }
   for i = 1, select("#", ...) do t[#t + 1] = poke.pp((select(i, ...))) end
   print(table.concat(t, " "))
end

local d = assert(poke.open(bdf))
print(d)
print(d:lspci())                               -- what VFIO shows of its config space
local edu = d:regs("examples/edu_regs.lua", 0)  -- BAR0 described
print(edu:dump())
show("id:", edu.id())
show("version:", edu.id.major, edu.id.minor)
edu.liveness(0x12345678)
show("liveness:", edu.liveness())               -- edu inverts what was written

edu.factorial(10)
assert(edu.status:wait({ computing = 0 }, { timeout = 2 }))
show("10! =", edu.factorial())

local irq = assert(d:irq("msi"))                 -- MSI -> eventfd (sets Bus Master)
edu.irq_raise(0x42)
show("interrupts:", irq:wait(2))
show("irq_status:", edu.irq_status())
edu.irq_ack(0x42)
show("irq_status after ack:", edu.irq_status())

-- DMA: our memory -> edu's buffer -> our memory (Bus Master is already on, from d:irq).
local buf = assert(d:dma(4096))
buf:write(0, "poked through the IOMMU")
local function dma(src, dst, to_ram)
   edu.dma_src(src); edu.dma_dst(dst); edu.dma_count(23)
   edu.dma_cmd(to_ram and 3 or 1)               -- start, direction
   assert(edu.dma_cmd:wait({ start = 0 }, { timeout = 5 }))
end
dma(buf.iova, 0x40000, false)
dma(0x40000, buf.iova + 64, true)
show("dma round trip:", buf:read(64, 23))
print(buf:hexdump(0, 96))

print(d:hexdump(0, 0, 32))                       -- BAR0 from offset 0
print(d:hexdump("config", 0, 64))
irq:close()
d:close()
