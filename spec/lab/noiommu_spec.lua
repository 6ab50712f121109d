-- VFIO's unsafe no-IOMMU mode against the real kernel: the 6.12 lab kernel booted without
-- an IOMMU and with vfio.enable_unsafe_noiommu_mode=1 (spec/run's lab-noiommu tier). The
-- device is reached through /dev/vfio/noiommu-N; regions and interrupts work as with an
-- IOMMU; DMA cannot be mapped, and the refusal says why.
local vfio = require "vfio"
local lab = require "support.lab"

local noiommu = os.getenv("LUAVFIO_LAB_IOMMU") == "none"

local wait_until = lab.wait_until

describe("no-IOMMU mode #noiommu", function()
   local dev, bar, d
   before_each(function()
      if not noiommu then return end
      d = lab.need("edu")
      dev = assert(vfio.open(d.bdf))
      bar = dev:region(vfio.REGION.BAR0)
      dev.config:write16(4, dev.config:read16(4) | 0x6)
   end)
   after_each(function() if dev then dev:close() end dev = nil end)

   local function it_noiommu(name, fn)
      it(name, function()
         if not noiommu then
            pending("the lab has an IOMMU here: lab-noiommu boots the 6.12 kernel without one")
            return
         end
         fn()
      end)
   end

   it_noiommu("reaches the device through its noiommu group, with the noiommu IOMMU type", function()
      assert.matches("/dev/vfio/noiommu%-" .. d.group .. "$", dev.group:path())
      assert.are.equal("noiommu", dev.iommu_type)
      assert.are.equal(0x11e81234, dev.config:read32(0))
      -- the kernel taints itself for a no-IOMMU group in use (TAINT_USER, bit 6)
      local tainted = tonumber(io.open("/proc/sys/kernel/tainted"):read("l"))
      assert.are_not.equal(0, tainted & (1 << 6))
   end)

   it_noiommu("reads and writes BAR0 through pread and through the mapping", function()
      assert.are.equal(0x010000ed, bar:read32(0))
      assert(bar:write32(4, 0x12345678))
      assert.are.equal(0xedcba987, bar:read32(4))
      assert(bar:map())
      assert.are.equal(0x010000ed, bar:read32(0))
      bar:write32(0x08, 6)
      assert.is_true(wait_until(function() return bar:read32(0x20) & 1 == 0 end))
      assert.are.equal(720, bar:read32(0x08))
   end)

   it_noiommu("delivers MSI and INTx through eventfds", function()
      local e <close> = vfio.eventfd()
      assert(dev:enable_irq(vfio.IRQ.MSI, e))
      bar:write32(0x60, 0x5)
      assert.are.equal(1, e:wait(3000))
      bar:write32(0x64, 0x5)
      assert(dev:disable_irq(vfio.IRQ.MSI))
      local x <close> = vfio.eventfd()
      assert(dev:enable_irq(vfio.IRQ.INTX, x))
      bar:write32(0x60, 0x2)
      assert.are.equal(1, x:wait(3000))
      bar:write32(0x64, 0x2)
      assert(dev:set_irqs(vfio.IRQ.INTX, "unmask", 0, 1))
      assert(dev:disable_irq(vfio.IRQ.INTX))
   end)

   it_noiommu("refuses to map DMA, and says there is no IOMMU", function()
      local buf <close> = vfio.dmabuf(4096)
      local ok, err, errno = dev.container:map_dma(buf, 0x100000)
      assert.is_nil(ok)
      assert.is_number(errno)
      assert.matches("VFIO_IOMMU_MAP_DMA", err)
      assert.matches("no%-IOMMU mode: there is no IOMMU to map DMA through", err)
      -- the buffer is free to go: no mapping holds it
      buf:close()
      assert.is_true(buf:closed())
   end)

   it_noiommu("refuses passthrough.lua's DMA set-up with the same reason, and cleans up", function()
      dev:close(); dev = nil
      local p = io.popen("lua5.4 passthrough.lua --device " .. d.bdf .. " 2>&1")
      local out = p:read("a")
      local _, _, code = p:close()
      assert.are_not.equal(0, code, out)
      assert.matches("no%-IOMMU mode", out)
      -- nothing left open: the group can be opened again at once
      local again <close> = assert(vfio.open(d.bdf))
      assert.are.equal(0x11e81234, again.config:read32(0))
   end)
end)
