-- MSI and MSI-X emulation on devices recorded in the lab.
local fixture = require "support.fixture"

local function only(list, typ)
   local out = {}
   for _, e in ipairs(list) do if e.type == typ then out[#out + 1] = e end end
   return out
end

describe("trap MSI", function()
   it("emulates edu's 64-bit MSI and turns enable and route changes into events", function()
      local t, be = fixture.trap("edu")
      local m = assert(t:msi())
      assert.are.equal(0x40, m.off); assert.is_true(m.is64); assert.are.equal(1, m.vectors)
      assert.are.equal(0x0080, t:cfg_read(0x42, 2))         -- 64-bit, 1 vector, disabled
      t:cfg_write(0x44, 4, 0xfee00000)
      t:cfg_write(0x48, 4, 0)
      t:cfg_write(0x4c, 2, 0x4041)
      assert.are.same({}, t:events())                       -- nothing while disabled
      t:cfg_write(0x42, 2, 0x0001)
      local e = t:events()[1]
      assert.are.same({ type = "msi_enable", enabled = true, count = 1, addr = 0xfee00000,
                        data = 0x4041, mask = 0 }, e)
      t:cfg_write(0x4c, 2, 0x4042)
      local r = t:events()[1]
      assert.are.equal("msi_route", r.type); assert.are.equal(0x4042, r.data)
      t:cfg_write(0x42, 2, 0)
      assert.is_false(t:events()[1].enabled)
      assert.are.equal(0, be:stats().cfg_writes)            -- the device's MSI never touched
   end)

   it("clamps the enabled vector count to what the device and VFIO offer", function()
      local t = fixture.trap("edu")
      t:cfg_write(0x42, 2, 0x0051)                          -- asks for 32 vectors
      assert.are.equal(0, (t:cfg_read(0x42, 2) >> 4) & 7)
      assert.are.equal(1, t:events()[1].count)
   end)

   it("keeps the address dword aligned and the extended data half zero", function()
      local t = fixture.trap("edu")
      t:cfg_write(0x44, 4, 0xfee00003)
      assert.are.equal(0xfee00000, t:cfg_read(0x44, 4))
      t:cfg_write(0x4c, 4, 0xffffffff)
      assert.are.equal(0xffff, t:cfg_read(0x4c, 4))
   end)
end)

describe("trap MSI-X", function()
   it("emulates the capability: table size from the device, enable and function mask", function()
      local t, be = fixture.trap("e1000e")
      local m = assert(t:msix())
      assert.are.equal(5, m.n); assert.are.equal(3, m.table_bar)
      assert.are.equal(4, t:cfg_read(m.off + 2, 2))         -- N-1, disabled, unmasked
      t:cfg_write(m.off + 2, 2, 0xc000)
      local e = t:events()[1]
      assert.are.same({ type = "msix_enable", enabled = true, fmask = true, count = 5 }, e)
      t:cfg_write(m.off + 2, 2, 0x8000)
      assert.are.same({ type = "msix_fmask", masked = false }, t:events()[1])
      assert.are.equal(0x8004, t:cfg_read(m.off + 2, 2))
      assert.are.equal(0, be:stats().cfg_writes)
   end)

   it("traps the table: vectors start masked, writes become route and mask events", function()
      local t, be = fixture.trap("e1000e")
      local m = t:msix()
      local base = m.table_off
      assert.are.equal(1, t:bar_read(3, base + 12, 4))      -- masked after reset
      local w = be:stats().region_writes
      t:bar_write(3, base + 16, 8, 0xfee01000)              -- vector 1 address (qword)
      t:bar_write(3, base + 24, 4, 0x31)                    -- data
      local evs = t:events()
      assert.are.equal(2, #only(evs, "msix_route"))
      assert.are.equal(1, only(evs, "msix_route")[2].vector)
      t:bar_write(3, base + 28, 4, 0)                       -- unmask vector 1
      local u = t:events()[1]
      assert.are.same({ type = "msix_mask", vector = 1, masked = false, addr = 0xfee01000,
                        data = 0x31 }, u)
      assert.are.equal(w, be:stats().region_writes)         -- the table is never the device's
      local a, d, masked = t:msix_entry(1)
      assert.are.equal(0xfee01000, a); assert.are.equal(0x31, d); assert.is_false(masked)
      t:bar_write(3, base + 28, 4, 0xfffffffe)              -- reserved control bits stay 0
      assert.are.equal(0, t:bar_read(3, base + 28, 4))
   end)

   it("serves the PBA from emulated pending bits and ignores PBA writes", function()
      local t = fixture.trap("nvme")
      local m = t:msix()
      assert.are.equal(65, m.n)
      assert.is_true(t:set_pending("msix", 64, true))
      assert.are.equal(1, t:bar_read(m.pba_bar, m.pba_off + 8, 8))
      t:bar_write(m.pba_bar, m.pba_off + 8, 8, 0)
      assert.are.equal(1, t:bar_read(m.pba_bar, m.pba_off + 8, 1))
      assert.is_nil(t:set_pending("msix", 65, true))
   end)

   it("leaves the rest of the MSI-X BAR direct", function()
      local t, be = fixture.trap("qemu-xhci")
      local m = t:msix()
      assert.are.equal(0, m.table_bar)
      local w = be:stats().region_writes
      t:bar_write(0, 0x40, 4, 0x1234)                       -- xHCI operational registers
      assert.are.equal(w + 1, be:stats().region_writes)
      assert.are.equal(be:region_read(0, 0, 4), t:bar_read(0, 0, 4))
   end)

   it("relocates the table and PBA into another place of a BAR", function()
      local t, be = fixture.trap("virtio-net-pci")
      local m = t:msix()
      assert.are.equal(1, m.table_bar)
      assert.is_true(t:set_bar_size(1, 0x2000))
      assert.is_true(t:relocate_msix(1, 0x1000, 0x1800))
      assert.are.equal(0x1001, t:cfg_read(m.off + 4, 4))
      assert.are.equal(0x1801, t:cfg_read(m.off + 8, 4))
      assert.are.equal(1, t:bar_read(1, 0x100c, 4))         -- emulated entry 0 control
      local w = be:stats().region_writes
      t:bar_write(1, 0x0, 4, 0)                             -- old place: the device's region
      assert.are.equal(w + 1, be:stats().region_writes)
      assert.is_nil(t:relocate_msix(1, 0x1ff8, 0x1800))     -- does not fit
      assert.is_nil(t:relocate_msix(1, 0x1000, 0x1010))     -- PBA overlaps the table
   end)

   it("ignores accesses straddling the table edge", function()
      local t = fixture.trap("e1000e")
      local m = t:msix()
      local last = m.table_off + m.n * 16
      assert.are.equal(0xffffffffffffffff, t:bar_read(3, last - 4, 8))
   end)

   it("delivers events to a registered callback instead of the queue", function()
      local t = fixture.trap("e1000e")
      local got = {}
      t:on_event(function(e) got[#got + 1] = e.type end)
      t:cfg_write(t:msix().off + 2, 2, 0x8000)
      assert.are.same({ "msix_enable" }, got)
      assert.are.same({}, t:events())
   end)
end)

describe("trap FLR", function()
   it("turns the PCIe DevCtl initiate-FLR bit into an event, never a device write", function()
      local t, be = fixture.trap("virtio-net-pci")
      local pcie = 0x40
      assert.are.equal(0x10, t:cfg_read(pcie, 1))
      local w = be:stats().cfg_writes
      t:cfg_write(pcie + 8, 2, 0x8000)
      assert.are.same({ { type = "flr" } }, t:events())
      assert.are.equal(0, t:cfg_read(pcie + 8, 2) & 0x8000)
      -- the device still got the other DevCtl bits (they are passthrough) but not FLR
      assert.are.equal(w + 1, be:stats().cfg_writes)
      local d = be:config_read(pcie + 8, 2)
      assert.are.equal(0, (d:byte(2) << 8) & 0x8000)
   end)
end)

describe("trap MSI per-vector masking", function()
   -- No lab device has a maskable MSI capability, so this uses the edu recording with
   -- only the per-vector-mask bit of its MSI flags set: a modified recording, not a device.
   local record = require "vfio.record"
   local function maskable_edu()
      local fx = fixture.load("edu")
      local flags = fixture.cfg(fx, 0x42, 2) | 0x100
      return fixture.trap(record.patch(fx, 0x42, string.char(flags & 0xff, flags >> 8)))
   end

   it("emulates mask and pending bits for the vectors offered only", function()
      local t, be = maskable_edu()
      local m = assert(t:msi())
      assert.is_true(m.maskable)
      assert.are.equal(0x18, t:caps()[1].len)               -- 64-bit + mask/pending
      t:cfg_write(0x50, 4, 0xffffffff)                      -- mask register (64-bit layout)
      assert.are.equal(0x1, t:cfg_read(0x50, 4))            -- one vector: one bit
      assert.are.same({ type = "msi_mask", vector = 0, masked = true, addr = 0, data = 0 },
                      t:events()[1])
      t:cfg_write(0x50, 4, 0)
      assert.is_false(t:events()[1].masked)
      assert.is_true(t:set_pending("msi", 0, true))
      assert.are.equal(1, t:cfg_read(0x54, 4))
      t:cfg_write(0x54, 4, 0)                               -- pending is read-only
      assert.are.equal(1, t:cfg_read(0x54, 4))
      assert.is_nil(t:set_pending("msi", 1, true))
      assert.are.equal(0, be:stats().cfg_writes)
   end)
end)
