-- The default lab devices through the friendly API (vfio.open): edu's registers,
-- interrupts and DMA; e1000e's I/O BAR and ROM; nvme's 64-bit BAR and MSI-X; virtio-net's
-- resets behind its root port; qemu-xhci's MSI-X table mapping.
local vfio = require "vfio"
local lab = require "support.lab"

local wait_until = lab.wait_until

local function open(name)
   local d = lab.need(name)
   return assert(vfio.open(d.bdf)), d
end

describe("edu", function()
   local dev, bar
   before_each(function()
      dev = open("edu")
      bar = dev:region(vfio.REGION.BAR0)
      -- memory decoding and bus mastering: MSI messages and DMA are bus-master writes
      dev.config:write16(4, dev.config:read16(4) | 0x6)
   end)
   after_each(function() dev:close() end)

   it("reads the id register through pread and through the mapping", function()
      assert.are.equal(0x010000ed, bar:read32(0))
      assert(bar:map())
      assert.are.equal(0x010000ed, bar:read32(0))
      assert.are.same({ { offset = 0, size = 1 << 20 } }, bar:mapped())
      assert.are.equal(0x11e81234, dev.config:read32(0))
   end)

   it("inverts the liveness register, mapped and not", function()
      assert(bar:write32(4, 0x12345678))
      assert.are.equal(0xedcba987, bar:read32(4))
      assert(bar:map())
      assert(bar:write32(4, 0x0f0f0f0f))
      assert.are.equal(0xf0f0f0f0, bar:read32(4))
   end)

   it("computes a factorial", function()
      assert(bar:map())
      bar:write32(0x08, 10)
      assert.is_true(wait_until(function() return bar:read32(0x20) & 1 == 0 end))
      assert.are.equal(3628800, bar:read32(0x08))
   end)

   it("delivers MSI through an eventfd", function()
      local info = assert(dev:irq_info(vfio.IRQ.MSI))
      assert.are.equal(1, info.count)
      local e <close> = vfio.eventfd()
      assert(dev:enable_irq(vfio.IRQ.MSI, e))
      bar:write32(0x60, 0x5)
      assert.are.equal(1, e:wait(3000))
      assert.are.equal(0x5, bar:read32(0x24))
      bar:write32(0x64, 0x5)
      bar:write32(0x60, 0x1)
      assert.are.equal(1, e:wait(3000))
      bar:write32(0x64, 0x1)
      assert(dev:disable_irq(vfio.IRQ.MSI))
   end)

   it("delivers INTx through an eventfd, masked until unmasked", function()
      local info = assert(dev:irq_info(vfio.IRQ.INTX))
      assert.is_true(info.automasked)
      local e <close> = vfio.eventfd()
      assert(dev:enable_irq(vfio.IRQ.INTX, e))
      bar:write32(0x60, 0x2)
      assert.are.equal(1, e:wait(3000))
      bar:write32(0x64, 0x2) -- ack: the line drops
      -- automasked: a new interrupt is held back until we unmask
      bar:write32(0x60, 0x4)
      assert.is_nil((e:wait(200)))
      assert(dev:set_irqs(vfio.IRQ.INTX, "unmask", 0, 1))
      assert.are.equal(1, e:wait(3000))
      bar:write32(0x64, 0x4)
      assert(dev:set_irqs(vfio.IRQ.INTX, "unmask", 0, 1))
      assert(dev:disable_irq(vfio.IRQ.INTX))
   end)

   it("round-trips DMA through map_dma", function()
      -- edu masks DMA addresses to 28 bits: keep the IOVA low. QEMU 7.2's edu aborts on
      -- a transfer that ends exactly at the end of its 4 KiB buffer (an off-by-one in its
      -- range check), so move less than the whole buffer.
      local iova, n = 0x100000, 2048
      local buf <close> = vfio.dmabuf(2 * n) -- one page
      local pattern = {}
      for i = 1, n do pattern[i] = string.char((i * 7 + 3) % 256) end
      pattern = table.concat(pattern)
      buf:write(0, pattern)
      assert(dev.container:map_dma(buf, iova))
      assert(bar:map())
      local function dma(src, dst, cmd)
         assert.is_true(lab.edu_dma(bar, src, dst, n, cmd))
      end
      dma(iova, 0x40000, 1)          -- RAM -> device buffer (not visible through BAR0)
      dma(0x40000, iova + n, 1 | 2)  -- device buffer -> RAM
      assert.are.equal(pattern, buf:read(n, n))
      assert.are.equal(buf:size(), dev.container:unmap_dma(iova, buf:size()))
   end)

   -- Issue 21, item 4, through whichever interface this lab tier opens (a type1 container,
   -- or the IOAS with LUAVFIO_IOMMUFD=1, where the device is also detached meanwhile: an
   -- IOAS pins pages only while a device is attached).
   it("refuses to free a DMA buffer the IOMMU maps, and its DMA reaches only that buffer", function()
      local iova, n = 0x100000, 1024
      local buf = vfio.dmabuf(4096)
      assert(dev.container:map_dma(buf, iova))
      local iommufd = dev.interface == "iommufd"
      if iommufd then assert(dev.container:detach(dev.handle)) end
      local ok, err, errno = buf:close()
      assert.is_nil(ok)
      assert.are.equal(16, errno) -- EBUSY
      assert.matches("^close vfio.dmabuf: mapped for device DMA by 1 IOMMU mapping%(s%)", err)
      assert.is_false(buf:closed())
      local fresh = vfio.dmabuf(4096)
      fresh:fill(0xee)
      if iommufd then assert(dev.container:attach(dev.handle)) end
      local pattern = {}
      for i = 1, n do pattern[i] = string.char((i * 11 + 1) % 256) end
      pattern = table.concat(pattern)
      buf:write(0, pattern)
      assert(bar:map())
      assert.is_true(lab.edu_dma(bar, iova, 0x40000, n, 1))
      assert.is_true(lab.edu_dma(bar, 0x40000, iova + n, n, 1 | 2))
      assert.are.equal(pattern, buf:read(n, n))
      assert.are.equal(("\238"):rep(4096), fresh:read(0, 4096))
      assert.are.equal(4096, dev.container:unmap_dma(iova, 4096))
      assert.is_nil((buf:close()))
      assert.is_true(buf:closed())
      fresh:close()
   end)
end)

describe("e1000e", function()
   it("has an I/O BAR region with its flags", function()
      local dev <close> = open("e1000e")
      local io
      for i = vfio.REGION.BAR0, vfio.REGION.BAR5 do
         local r = dev:region(i)
         if r.size > 0 and dev.config:read32(0x10 + 4 * i) & 1 == 1 then io = r end
      end
      assert.is_truthy(io, "no I/O BAR found")
      assert.are.equal(32, io.size)
      assert.is_true(io.readable and io.writable)
      assert.is_false(io.mappable)
      local ok, err = io:map()
      assert.is_nil(ok)
      assert.matches("does not support mmap", err)
      -- I/O BAR access goes through pread/pwrite: IOADDR at 0 holds what we write
      assert(io:write32(0, 0x8)) -- select register STATUS (0x8)
      assert.are.equal(0x8, io:read32(0))
   end)

   it("has a read-only ROM region with a PCI ROM signature", function()
      local dev <close> = open("e1000e")
      local rom = dev:region(vfio.REGION.ROM)
      assert.is_true(rom.size > 0)
      assert.is_true(rom.readable)
      assert.is_false(rom.writable)
      assert.is_false(rom.mappable)
      assert.are.equal(0xaa55, rom:read16(0))
      assert.has_error(function() rom:write8(0, 0) end)
   end)
end)

describe("nvme", function()
   it("has a 64-bit BAR0 and many MSI-X vectors", function()
      local dev <close> = open("nvme")
      local bar0 = dev:region(0)
      assert.is_true(bar0.size >= 0x2000)
      assert.are.equal(0x4, dev.config:read32(0x10) & 0x6) -- type 10b: 64-bit
      assert.are.equal(0, dev:region(1).size)              -- the upper half of BAR0
      local msix = assert(dev:irq_info(vfio.IRQ.MSIX))
      assert.is_true(msix.count > 1)
      assert.is_true(msix.eventfd)
      -- the controller's CAP register reads the same mapped and not
      local cap = bar0:read64(0)
      assert(bar0:map())
      assert.are.equal(cap, bar0:read64(0))
   end)
end)

describe("virtio-net behind its root port", function()
   it("resets with VFIO_DEVICE_RESET and names its group in hot-reset info", function()
      local dev <close>, d = open("virtio-net-pci")
      assert.is_true(dev.info.reset)
      assert(dev:reset())
      local info = assert(dev:hot_reset_info())
      local found = false
      for _, dep in ipairs(info.devices) do
         if dep.bdf == d.bdf then
            found = true
            if dev.interface == "iommufd" then -- a cdev's info names devids
               assert.are.equal(dev.devid, dep.devid)
            else
               assert.are.equal(d.group, dep.group)
            end
         end
      end
      assert.is_true(found)
      assert.are.equal(0x10411af4, dev.config:read32(0))
   end)

   it("issues a hot reset with its group fd and validates the group list", function()
      local dev <close> = open("virtio-net-pci")
      local ok, err, errno
      if dev.interface == "group" then
         -- The kernel checks the group list before resetting: none, or one too many, is
         -- refused with EINVAL. (Through a cdev the iommufd proves ownership, with no list:
         -- spec/lab/iommufd_spec.lua.)
         ok, err, errno = dev.handle:hot_reset({})
         assert.is_nil(ok)
         assert.matches("^VFIO_DEVICE_PCI_HOT_RESET ", err)
         assert.are.equal(22, errno)
         ok, err, errno = dev.handle:hot_reset({ dev.group, dev.group })
         assert.is_nil(ok)
         assert.matches("^VFIO_DEVICE_PCI_HOT_RESET ", err)
         assert.are.equal(22, errno)
      end
      -- With its own group the secondary bus reset runs. After it, Linux waits for Data
      -- Link Layer Link Active on ports faster than 5 GT/s, which QEMU 7.2's
      -- pcie-root-port never reports for a cold-plugged device: the kernel then returns
      -- ENOTTY although the reset happened. lab/run's root ports run at 5 GT/s, where it
      -- must succeed; the other branch is for a port added at the default speed.
      local real = require("posix.stdlib").realpath("/sys/bus/pci/devices/" .. dev.bdf)
      local port = real:match("([^/]+)/[^/]+$")
      local f = assert(io.open("/sys/bus/pci/devices/" .. port .. "/max_link_speed"))
      local gts = tonumber(f:read("l"):match("^([%d.]+)"))
      f:close()
      ok, err, errno = dev:hot_reset()
      if gts <= 5 then
         assert.is_true(ok, err)
      else
         assert.is_nil(ok)
         assert.are.equal(25, errno)
         assert.matches("VFIO_DEVICE_PCI_HOT_RESET " .. dev.bdf, err)
      end
      -- the device is still there and usable after the reset
      assert.are.equal(0x10411af4, dev.config:read32(0))
      assert(dev:reset())
   end)
end)

describe("qemu-xhci", function()
   it("reports its MSI-X table mapping capability and map() honours it", function()
      local dev <close> = open("qemu-xhci")
      local bar0 = dev:region(0)
      assert.is_true(bar0.msix_mappable or bar0.sparse ~= nil)
      -- where the MSI-X table lives, from the config space capability list
      local ptr, tbl = dev.config:read8(0x34), nil
      while ptr ~= 0 do
         if dev.config:read8(ptr) == 0x11 then tbl = dev.config:read32(ptr + 4) end
         ptr = dev.config:read8(ptr + 1)
      end
      assert.is_truthy(tbl)
      assert.are.equal(0, tbl & 7) -- table in BAR0
      local toff = tbl & ~7
      local caplen = bar0:read8(0)
      local entry = bar0:read32(toff + 12) -- vector control of entry 0 (pread)
      assert(bar0:map())
      local areas = bar0:mapped()
      if bar0.sparse then
         assert.are.same(bar0.sparse, areas)
      else
         assert.are.same({ { offset = 0, size = bar0.size } }, areas)
      end
      assert.are.equal(caplen, bar0:read8(0))
      -- HCIVERSION 1.0 (QEMU's xHCI decodes capability registers as whole dwords only)
      assert.are.equal(0x0100, bar0:read32(0) >> 16)
      -- pread of the MSI-X table is blanked by vfio-pci (all ones); with the table
      -- mappable the mapping shows the real vector control: masked after reset.
      assert.are.equal(0xffffffff, entry)
      if bar0.msix_mappable then
         assert.are.equal(1, bar0:read32(toff + 12) & 1)
      else
         assert.are.equal(0xffffffff, bar0:read32(toff + 12))
      end
   end)
end)
