-- Quirks as data, on devices recorded in the lab.
local fixture = require "support.fixture"
local quirks = require "vfio.vmm.quirks"
local record = require "vfio.record"

-- A lab recording with only its vendor/device IDs replaced: the device stays the
-- recorded one, the IDs are those of the real-world part the quirk is for.
local function with_ids(name, vendor, device)
   return record.patch(fixture.load(name), 0, string.pack("<I2I2", vendor, device))
end

describe("quirk matching", function()
   it("matches by vendor, device list and class mask", function()
      local ids = { vendor = 0x8086, device = 0x1515, class = 0x020000 }
      assert.is_true(quirks.matches({ match = { vendor = 0x8086, device = { 0x10ed, 0x1515 } } }, ids))
      assert.is_false(quirks.matches({ match = { vendor = 0x8086, device = 0x10ed } }, ids))
      assert.is_true(quirks.matches({ match = { class = 0x020000, class_mask = 0xff0000 } }, ids))
      assert.is_false(quirks.matches({ match = { class = 0x010000, class_mask = 0xff0000 } }, ids))
   end)

   it("applies only the built-in quirks whose IDs match each lab device", function()
      local want = { edu = { "edu-dma-guard" }, e1000e = { "e1000e-io-window" },
                     ["qemu-xhci"] = { "xhci-msix-relocate" }, nvme = {},
                     ["virtio-net-pci"] = {}, ["pci-testdev"] = {} }
      for _, name in ipairs(fixture.names) do
         local t = fixture.trap(name)
         assert.are.same(want[name], (quirks.apply_matching(t)), name)
      end
   end)
end)

describe("real-world quirks (lab recordings with substituted IDs)", function()
   it("BCM57810: hides the option ROM (e1000e recording, IDs set to 14e4:168e)", function()
      local t = fixture.trap(with_ids("e1000e", 0x14e4, 0x168e))
      t:cfg_write(0x30, 4, 0xffffffff)
      assert.are.equal(0xfffc0001, t:cfg_read(0x30, 4))      -- ROM present before
      assert.are.same({ "bcm57810-rom-denylist" }, (quirks.apply_matching(t)))
      t:cfg_write(0x30, 4, 0xffffffff)
      assert.are.equal(0, t:cfg_read(0x30, 4))
      assert.are.equal(0, t:bars()[6].size)
      -- the unmodified recording keeps its ROM
      local u = fixture.trap("e1000e")
      quirks.apply_matching(u)
      assert.are.equal(0x40000, u:bars()[6].size)
   end)

   it("82599 VF: reports PCIe cap version 1 instead of 0 (nvme recording, IDs 8086:10ed)", function()
      -- nvme's recorded PCIe capability is version 2, so the quirk must leave it alone
      local t = fixture.trap(with_ids("nvme", 0x8086, 0x10ed))
      local before = t:cfg_read(0x82, 2)
      assert.are.equal(2, before & 0xf)
      assert.are.same({ "intel-82599-vf-pcie-version" }, (quirks.apply_matching(t)))
      assert.are.equal(before, t:cfg_read(0x82, 2))
      -- with the version nibble at 0 (the erratum) it becomes 1 and the rest is kept
      local t0 = fixture.trap(with_ids("nvme", 0x8086, 0x10ed))
      t0:set_config(0x82, string.pack("<I2", before & ~0xf))
      quirks.apply_matching(t0)
      assert.are.equal((before & ~0xf) | 1, t0:cfg_read(0x82, 2))
      assert.are.equal(4096, t0:info().cfg_size)            -- extended space stays
   end)
end)

describe("lab device quirks", function()
   it("edu DMA guard forwards in-range DMA and drops out-of-range commands", function()
      local t, be = fixture.trap("edu")
      local _, states = quirks.apply_matching(t)
      local q = states["edu-dma-guard"]
      -- RAM -> device buffer, in range: reaches the device
      t:bar_write(0, 0x80, 8, 0x100000)
      t:bar_write(0, 0x88, 8, 0x40000)
      t:bar_write(0, 0x90, 8, 0x100)
      t:bar_write(0, 0x98, 8, 1)
      assert.are.equal(1, be:region_read(0, 0x98, 8))
      assert.are.equal(0x40000, be:region_read(0, 0x88, 8))
      assert.is_nil(q.state.rejected)
      be:reset()
      local recorded = be:region_read(0, 0x98, 4)
      -- 0x100 bytes at 0x40f80 run past the 4 KiB buffer: the command never reaches edu
      t:bar_write(0, 0x88, 4, 0x40f80)
      t:bar_write(0, 0x8c, 4, 0)
      t:bar_write(0, 0x98, 4, 1)
      assert.are.equal(recorded, be:region_read(0, 0x98, 4))
      assert.are.equal(1, q.state.rejected)
      -- device -> RAM checks the source side (a 4-byte write at 0x80 sets all of src;
      -- one at the upper half 0x84 does nothing, in edu as in the guard)
      t:bar_write(0, 0x80, 4, 0x40800); t:bar_write(0, 0x84, 4, 0)
      t:bar_write(0, 0x90, 4, 0x1000)
      t:bar_write(0, 0x98, 4, 3)
      assert.are.equal(2, q.state.rejected)
      assert.are.equal(0x40800, t:bar_read(0, 0x80, 4))     -- reads come from the device
   end)

   it("e1000e I/O window reaches BAR0 registers through the trap's dispatch", function()
      local t, be = fixture.trap("e1000e")
      quirks.apply_matching(t)
      local rr = be:stats().region_reads
      t:bar_write(2, 0, 4, 0x8)                             -- IOADDR = STATUS register
      assert.are.equal(0x8, t:bar_read(2, 0, 4))
      assert.are.equal(be:region_read(0, 0x8, 4), t:bar_read(2, 4, 4))
      t:bar_write(2, 0, 4, 0x5400)                          -- receive address low
      t:bar_write(2, 4, 4, 0x12345678)
      assert.are.equal(0x12345678, be:region_read(0, 0x5400, 4))
      t:bar_write(2, 0, 4, 0xfffffff)                       -- clamped to the register BAR
      assert.are.equal(0x1fffc, t:bar_read(2, 0, 4))
      assert.is_true(be:stats().region_reads > rr)
   end)

   it("qemu-xhci MSI-X moves to an unused BAR and BAR0 becomes entirely direct", function()
      local t, be = fixture.trap("qemu-xhci")
      local m0 = t:msix()
      assert.are.equal(0, m0.table_bar)
      quirks.apply_matching(t)
      local m = t:msix()
      assert.are.equal(2, m.table_bar)                      -- BAR0/1 are the 64-bit pair
      assert.are.equal(0, m.table_off)
      assert.are.equal(0x1000, m.pba_off)
      assert.are.equal(0x2000, t:bars()[2].size)
      assert.are.equal(0x2, t:cfg_read(m.off + 4, 4))
      t:cfg_write(0x18, 4, 0xffffffff)
      assert.are.equal(0xffffe000, t:cfg_read(0x18, 4))     -- the new BAR sizes like one
      local w = be:stats().region_writes
      t:bar_write(0, m0.table_off, 4, 0)                     -- old table place: device
      assert.are.equal(w + 1, be:stats().region_writes)
      assert.are.equal(1, t:bar_read(2, 12, 4))             -- entry 0 masked, emulated
   end)

   it("applies quirk data: config override, hidden caps, mirror and Lua windows", function()
      local t, be = fixture.trap("e1000e")
      local calls = 0
      quirks.apply(t, {
         name = "spec",
         config = { { off = 0x2c, value = 0xbeef1af4, size = 4 } },
         hide_caps = { 0x05, { id = 0x0003, ext = true } },
         mirror = { { bar = 0, off = 0x18000, len = 0x100, cfg_off = 0 } },
         windows = { { bar = 1, off = 0, len = 0x10,
                       read = function(q, off) calls = calls + 1; q.state.last = off; return 7 end } },
      })
      assert.are.equal(0xbeef1af4, t:cfg_read(0x2c, 4))
      assert.are.equal(0xbeef1af4, t:bar_read(0, 0x1802c, 4))   -- mirror sees the override
      for _, id in ipairs(fixture.walk(t)) do assert.are_not.equal(0x05, id) end
      assert.are.same({ 0x0001 }, fixture.walk_ext(t))
      assert.are.equal(7, t:bar_read(1, 8, 4))
      assert.are.equal(1, calls)
      assert.are.equal(0, be:stats().cfg_writes)
      -- the VM layer learns which windows need Lua (the mirror is served in C)
      assert.are.same({ { bar = 1, off = 0, len = 0x10, lua = true },
                        { bar = 0, off = 0x18000, len = 0x100, lua = false } }, t:windows())
   end)
end)
