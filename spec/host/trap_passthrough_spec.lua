-- vfio.vmm.passthrough on recorded lab devices: layout + quirks + trap in one object.
local fixture = require "support.fixture"
local passthrough = require "vfio.vmm.passthrough"
local layout = require "vfio.vmm.layout"

describe("vfio.vmm.passthrough", function()
   it("builds a function with placed BARs, matching quirks and decode enabled", function()
      local pt = assert(passthrough(fixture.load("edu"), { enable = true }))
      assert.are.same({ "edu-dma-guard" }, pt.quirks)
      local addr = pt.placement[0].addr
      local evs = pt:events()
      assert.is_true(#evs >= 2)
      local v, claimed = pt:mmio_read(addr, 4)
      assert.is_true(claimed)
      assert.are.equal(0x010000ed, v)
      pt:close()
   end)

   it("shares one allocator across the VM's functions", function()
      local alloc = layout.new()
      local a = assert(passthrough("nvme", { layout = alloc }))
      local b = assert(passthrough("qemu-xhci", { layout = alloc }))
      assert.are_not.equal(a.placement[0].addr, b.placement[0].addr)
      assert.is_true(b.placement[2] ~= nil)    -- the relocated MSI-X BAR got an address
   end)

   it("can leave quirks and layout out, and take a conventional PCI view", function()
      local pt = assert(passthrough("e1000e", { quirks = false, layout = false, pcie = false }))
      assert.are.same({}, pt.quirks)
      assert.is_nil(pt.placement)
      assert.are.equal(0, pt:bars()[0].addr)
      assert.are.equal(0xffffffff, pt:cfg_read(0x100, 4))
   end)

   it("reports a layout that does not fit instead of half-building", function()
      local small = layout.new { windows = { mmio32 = { base = 0xe0000000, limit = 0xe0000fff },
                                             mmio64 = { base = 1 << 40, limit = (1 << 40) + 0xfff },
                                             io = { base = 0x1000, limit = 0x10ff } } }
      local pt, err = passthrough("edu", { layout = small })
      assert.is_nil(pt)
      assert.matches("BAR0", err)
   end)
end)
