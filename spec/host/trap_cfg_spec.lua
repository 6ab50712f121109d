-- The trap core's config space on devices recorded in the lab.
local fixture = require "support.fixture"

describe("trap config space", function()
   it("serves IDs, class and header from the shadow without touching the device", function()
      for _, name in ipairs(fixture.names) do
         local fx = fixture.load(name)
         local t, be = fixture.trap(fx)
         local before = be:stats().cfg_reads
         assert.are.equal(fx.vendor | fx.device << 16, t:cfg_read(0, 4))
         assert.are.equal(fx.class, t:cfg_read(8, 4) >> 8)
         assert.are.equal(fixture.cfg(fx, 0x2c, 4), t:cfg_read(0x2c, 4))
         assert.are.equal(before, be:stats().cfg_reads)
      end
   end)

   it("reads non-emulated bits from the device: (shadow & emul) | (dev & ~emul)", function()
      local t, be = fixture.trap("e1000e")
      local before = be:stats().cfg_reads
      local status = t:cfg_read(6, 2)
      assert.are.equal(before + 1, be:stats().cfg_reads)
      -- CAP_LIST comes from the shadow (e1000e has caps), the rest is the device's
      local dev = be:config_read(6, 2)
      local devst = dev:byte(1) | dev:byte(2) << 8
      assert.are.equal((devst & ~0x10) | 0x10, status)
   end)

   it("tracks COMMAND in the shadow and forwards it to the device", function()
      local t, be = fixture.trap("edu")
      assert.are.equal(0, t:cfg_read(4, 2) & 0x547)   -- starts as after reset
      assert.is_true(t:cfg_write(4, 2, 0x0406))
      assert.are.equal(0x0406, t:cfg_read(4, 2) & 0x547)
      local d = be:config_read(4, 2)
      assert.are.equal(0x0406, (d:byte(1) | d:byte(2) << 8) & 0x547)
   end)

   it("makes INTERRUPT_LINE a guest scratch register and derives the pin from irq info", function()
      local t, be = fixture.trap("edu")
      t:cfg_write(0x3c, 1, 0x0b)
      assert.are.equal(0x0b, t:cfg_read(0x3c, 1))
      assert.are.equal(0, be:stats().cfg_writes)
      assert.are.equal(1, t:cfg_read(0x3d, 1))          -- edu: INTx count 1
      local fx = fixture.load("pci-testdev")
      assert.are.equal(0, fx.irqs[0].count)
      local t2 = fixture.trap(fx)
      assert.are.equal(0, t2:cfg_read(0x3d, 1))         -- no INTx through VFIO: no pin
   end)

   it("answers any 1/2/4-byte access at any offset consistently with dword reads", function()
      for _, name in ipairs(fixture.names) do
         local t = fixture.trap(name)
         local size = t:info().cfg_size
         local img = {}
         for off = 0, size - 4, 4 do
            local v = t:cfg_read(off, 4)
            for k = 0, 3 do img[off + k] = (v >> (8 * k)) & 0xff end
         end
         for off = 0, size - 1 do
            assert.are.equal(img[off], t:cfg_read(off, 1))
            if off + 2 <= size then
               assert.are.equal(img[off] | img[off + 1] << 8, t:cfg_read(off, 2), name .. " @" .. off)
            end
         end
      end
   end)

   it("floats high outside config space and rejects other access sizes", function()
      local t = fixture.trap("edu")
      assert.are.equal(256, t:info().cfg_size)
      assert.are.equal(0xffffffff, t:cfg_read(0x100, 4))
      assert.are.equal(0xffff, t:cfg_read(0xff, 2))       -- straddles the end
      assert.are.equal(0xff, t:cfg_read(-1, 1))
      assert.are.equal(0xffffffff, t:cfg_read(1 << 40, 4))
      assert.is_true(t:cfg_write(0x1000, 4, 0))
      assert.has_error(function() t:cfg_read(0, 3) end)
      assert.has_error(function() t:cfg_write(0, 8, 0) end)
   end)

   it("clears the multi-function bit of the header type", function()
      for _, name in ipairs(fixture.names) do
         local t = fixture.trap(name)
         assert.are.equal(fixture.cfg(name, 0x0e, 1) & 0x7f, t:cfg_read(0x0e, 1))
      end
   end)
end)

describe("trap capability chains", function()
   it("presents the recorded standard chains in order", function()
      local t = fixture.trap("virtio-net-pci")
      assert.are.same({ 0x11, 0x09, 0x09, 0x09, 0x09, 0x09, 0x01, 0x10 }, fixture.walk(t))
      assert.are.same({ 0x05 }, fixture.walk(fixture.trap("edu")))
      assert.are.same({}, fixture.walk(fixture.trap("pci-testdev")))
      assert.are.equal(0, fixture.trap("pci-testdev"):cfg_read(6, 2) & 0x10)
   end)

   it("presents extended capabilities only for a PCIe guest view", function()
      local t = fixture.trap("e1000e")
      assert.are.equal(4096, t:info().cfg_size)
      assert.are.same({ 0x0001, 0x0003 }, fixture.walk_ext(t))
      local c = fixture.trap("e1000e", { pcie = false })
      assert.are.equal(256, c:info().cfg_size)
      assert.are.equal(0xffffffff, c:cfg_read(0x100, 4))
      for _, id in ipairs(fixture.walk(c)) do assert.are_not.equal(0x10, id) end
   end)

   it("hides a capability: the chain skips it and its bytes read zero", function()
      local t = fixture.trap("e1000e")
      local before = fixture.walk(t)
      assert.is_true(t:hide_cap(0x05))
      local after = fixture.walk(t)
      assert.are.equal(#before - 1, #after)
      for _, id in ipairs(after) do assert.are_not.equal(0x05, id) end
      assert.are.equal(0, t:cfg_read(0xd0, 4))
      assert.is_nil(t:msi())
      local nilv, err = t:hide_cap(0x05)
      assert.is_nil(nilv); assert.matches("hide capability", err)
   end)

   it("clears STATUS.CAP_LIST when every capability is hidden", function()
      local t = fixture.trap("edu")
      t:hide_cap(0x05)
      assert.are.equal(0, t:cfg_read(0x34, 1))
      assert.are.equal(0, t:cfg_read(6, 2) & 0x10)
   end)

   it("keeps the extended chain starting at 0x100 when the first one is hidden", function()
      local t = fixture.trap("e1000e")
      assert.is_true(t:hide_cap(0x0001, true))
      local h = t:cfg_read(0x100, 4)
      assert.are.equal(0, h & 0xffff)
      assert.are.equal(0x140, (h >> 20) & 0xffc)
      assert.are.same({ 0, 0x0003 }, fixture.walk_ext(t))
   end)

   it("adds a capability in free space at the end of the chain and refuses overlaps", function()
      local t = fixture.trap("edu")
      -- a vendor-specific capability: ID 9, next, length 8, payload
      local cap = string.char(0x09, 0, 8, 0xaa, 0xbb, 0xcc, 0xdd, 0xee)
      assert.is_true(t:add_cap(0x60, cap))
      assert.are.same({ 0x05, 0x09 }, fixture.walk(t))
      assert.are.equal(0xddccbbaa, t:cfg_read(0x63, 4))
      t:cfg_write(0x64, 4, 0)   -- read-only unless a mask is given
      assert.are.equal(0xddccbbaa, t:cfg_read(0x63, 4))
      assert.is_nil(t:add_cap(0x44, cap))    -- inside MSI
      assert.is_nil(t:add_cap(0x30, cap))    -- header
      assert.is_nil(t:add_cap(0xfc, cap))    -- runs off the end
      assert.is_nil(t:add_cap(0x100, string.char(0x0b, 0, 1, 0), nil, true))  -- no ext space
   end)

   it("cuts malformed chains (a corrupted copy of the edu recording, not a device)", function()
      local record = require "vfio.record"
      local fx = fixture.load("edu")
      -- MSI's next pointer aimed back at itself: a loop
      local loop = record.patch(fx, 0x41, string.char(0x40))
      local t = fixture.trap(loop)
      assert.are.same({ 0x05 }, fixture.walk(t))
      assert.are.equal(1, t:info().guard_hits)
      -- pointer into the header
      local hdr = record.patch(fx, 0x41, string.char(0x10))
      assert.are.same({ 0x05 }, fixture.walk(fixture.trap(hdr)))
      -- a capability whose length runs past 256 bytes is hidden
      local tail = record.patch(record.patch(fx, 0x34, string.char(0xfc)), 0xfc, string.char(0x05, 0))
      local t3 = fixture.trap(tail)
      assert.are.same({}, fixture.walk(t3))
   end)
end)
