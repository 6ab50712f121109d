-- A tour of QEMU's edu device through luavfio: identity, registers, an MSI through an
-- eventfd, and a DMA round trip through the IOMMU. Run it where edu is bound to vfio-pci:
--   lab/run -- lua5.4 examples/edu_tour.lua          (make demo does this)
--   lua5.4 examples/edu_tour.lua 0000:00:02.0         (on a machine with an edu device)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local vfio = require "vfio"
local core = vfio.core

local function find_edu()
   for _, d in ipairs(vfio.devices()) do
      if d.vendor == 0x1234 and d.device == 0x11e8 then return d.bdf end
   end
end

local bdf = arg[1] or find_edu() or error("no edu device (1234:11e8) found")
local dev <close> = assert(vfio.open(bdf))
local bar = dev:region(0)
print(("%s: %s, BAR0 %d KiB, %d regions, %d IRQ indexes"):format(
   tostring(dev), ("%04x:%04x"):format(dev.config:read16(0), dev.config:read16(2)),
   bar.size // 1024, dev.num_regions, dev.num_irqs))

-- map() turns the region's reads and writes into plain loads and stores
assert(bar:map())
local regs = bar
local id = regs:read32(0x00)
print(("id register 0x%08x: edu version %d.%d"):format(id, id >> 24, (id >> 16) & 0xff))

regs:write32(0x04, 0x12345678)
print(("liveness: wrote 0x12345678, read back 0x%08x"):format(regs:read32(0x04)))

regs:write32(0x08, 10)
while regs:read32(0x20) & 1 ~= 0 do end
print(("factorial: 10! = %d"):format(regs:read32(0x08)))

-- An MSI is a memory write by the device, and so is DMA: both need bus mastering on.
dev.config:write16(0x04, dev.config:read16(0x04) | 0x4)

-- MSI: the kernel enables it on the device and signals the eventfd when edu raises it.
local irq <close> = core.eventfd()
assert(dev:enable_irq(core.IRQ.MSI, { irq }))
regs:write32(0x60, 0x42)
local count = assert(irq:wait(2000), "no MSI within 2 s")
print(("MSI: eventfd count %d, edu irq status 0x%x"):format(count, regs:read32(0x24)))
regs:write32(0x64, regs:read32(0x24))
assert(dev:disable_irq(core.IRQ.MSI))

-- DMA: RAM -> edu's buffer -> RAM, through an IOVA mapping of a page of ours.
local buf <close> = core.dmabuf(4096)
local iova = 0x100000         -- edu addresses 28 bits of DMA space
assert(dev.container:map_dma(buf, iova, { read = true, write = true }))
local msg = "hello from luavfio through the IOMMU"
buf:write(0, msg)
local function dma(src, dst, dir)
   regs:write64(0x80, src); regs:write64(0x88, dst); regs:write64(0x90, #msg)
   regs:write32(0x98, 1 | dir << 1)
   while regs:read32(0x98) & 1 ~= 0 do end
end
dma(iova, 0x40000, 0)          -- RAM -> device
dma(0x40000, iova + 2048, 1)   -- device -> RAM
print(("DMA round trip: %q"):format(buf:read(2048, #msg)))
assert(dev.container:unmap_dma(iova, 4096))
