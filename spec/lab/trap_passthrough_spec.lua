-- vfio.vmm.passthrough over the kernel's VFIO devices in the lab: guest-style accesses
-- through the trap core reach (or deliberately do not reach) the real devices.
local lab = require "support.lab"
local passthrough = require "vfio.vmm.passthrough"
local layout = require "vfio.vmm.layout"

local function open(name)
   local vfio = require "vfio"
   return assert(vfio.open(lab.need(name).bdf))
end

describe("vfio.vmm.passthrough on lab devices", function()
   assert.is_true(lab.inside, "run me with lab/run")
   local alloc = layout.new()

   it("edu: guest MMIO at the placed address reaches the device", function()
      local dev = open("edu")
      local pt = assert(passthrough(dev, { layout = alloc, enable = true }))
      local base = pt.placement[0].addr
      assert.is_true(pt.backend:mapped()[0])                     -- BAR0 through its mmap
      local id, claimed = pt:mmio_read(base, 4)
      assert.is_true(claimed)
      assert.are.equal(0x010000ed, id)
      pt:mmio_write(base + 4, 4, 0x12345678)
      assert.are.equal(0xedcba987, pt:mmio_read(base + 4, 4))   -- edu inverts
      pt:cfg_write(4, 2, 0)                                       -- decode off
      assert.is_false(select(2, pt:mmio_read(base, 4)))
      pt:close(); dev:close()
   end)

   it("edu: the pread/pwrite path (mmap=false) sees the same device", function()
      local dev = open("edu")
      local pt = assert(passthrough(dev, { layout = false, mmap = false }))
      assert.is_nil(pt.backend:mapped()[0])
      assert.are.equal(0x010000ed, pt:bar_read(0, 0, 4))
      pt:bar_write(0, 4, 4, 0x0f0f0f0f)
      assert.are.equal(0xf0f0f0f0, pt:bar_read(0, 4, 4))
      pt:close(); dev:close()
   end)

   it("edu: an out-of-range DMA command is dropped instead of aborting the VMM", function()
      local dev = open("edu")
      local pt = assert(passthrough(dev, { layout = alloc, enable = true }))
      local base = pt.placement[0].addr
      pt:mmio_write(base + 0x80, 8, 0x1000)
      pt:mmio_write(base + 0x88, 8, 0x40f80)                      -- past the 4 KiB buffer
      pt:mmio_write(base + 0x90, 8, 0x100)
      pt:mmio_write(base + 0x98, 8, 1)
      assert.are.equal(1, pt.quirk_states["edu-dma-guard"].state.rejected)
      -- the device (and the lab's QEMU) is still there
      assert.are.equal(0x010000ed, pt:mmio_read(base, 4))
      assert.are.equal(0, pt:mmio_read(base + 0x98, 4) & 1)
      pt:close(); dev:close()
   end)

   it("e1000e: the I/O window reads the same register as MMIO", function()
      local dev = open("e1000e")
      local pt = assert(passthrough(dev, { layout = alloc, enable = true }))
      local mmio, port = pt.placement[0].addr, pt.placement[2].addr
      pt:io_write(port, 4, 0x8)                                   -- IOADDR = STATUS
      local via_io = pt:io_read(port + 4, 4)
      assert.are.equal(pt:mmio_read(mmio + 0x8, 4), via_io)
      pt:close(); dev:close()
   end)

   it("qemu-xhci: MSI-X relocated, the register BAR direct", function()
      local dev = open("qemu-xhci")
      local pt = assert(passthrough(dev, { layout = alloc, enable = true }))
      assert.are.same({ "xhci-msix-relocate" }, pt.quirks)
      local m = pt.trap:msix()
      assert.are.equal(2, m.table_bar)
      local r0 = dev:region(0)
      assert.are.equal(r0:read32(0), pt:bar_read(0, 0, 4))        -- CAPLENGTH/HCIVERSION
      assert.are.equal(1, pt:bar_read(2, 12, 4))                  -- emulated entry, masked
      pt:close(); dev:close()
   end)

   it("nvme: MSI-X enable and vector programming become events", function()
      local dev = open("nvme")
      local pt = assert(passthrough(dev, { layout = alloc, enable = true }))
      pt:events()
      local m = pt.trap:msix()
      pt:cfg_write(m.off + 2, 2, 0x8000)
      local base = pt.placement[0].addr + m.table_off
      pt:mmio_write(base, 4, 0xfee00000)
      pt:mmio_write(base + 8, 4, 0x41)
      pt:mmio_write(base + 12, 4, 0)
      local types = {}
      for _, e in ipairs(pt:events()) do types[#types + 1] = e.type end
      assert.are.same({ "msix_enable", "msix_route", "msix_route", "msix_mask" }, types)
      pt:close(); dev:close()
   end)

   it("virtio-net: initiate-FLR is an event the VM layer turns into a device reset", function()
      local dev = open("virtio-net-pci")
      local pt = assert(passthrough(dev, { layout = false }))
      local pcie
      for _, c in ipairs(pt:caps()) do if c.id == 0x10 and not c.ext then pcie = c.off end end
      pt:cfg_write(pcie + 8, 2, pt:cfg_read(pcie + 8, 2) | 0x8000)
      local evs = pt:events()
      assert.are.equal("flr", evs[#evs].type)
      assert.is_true(dev:reset())
      pt:close(); dev:close()
   end)
end)
