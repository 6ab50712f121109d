-- BAR emulation and dispatch on devices recorded in the lab.
local fixture = require "support.fixture"

local function ev_of(list, typ)
   local out = {}
   for _, e in ipairs(list) do if e.type == typ then out[#out + 1] = e end end
   return out
end

describe("trap BARs", function()
   it("answers sizing from the shadow and never writes the device", function()
      local t, be = fixture.trap("edu")
      t:cfg_write(0x10, 4, 0xffffffff)
      assert.are.equal(0xfff00000, t:cfg_read(0x10, 4))    -- 1 MiB, 32-bit memory
      assert.are.equal(0, be:stats().cfg_writes)
      assert.are.equal(fixture.cfg("edu", 0x10, 4), (function()
         local s = be:config_read(0x10, 4); return s:byte(1) | s:byte(2) << 8 | s:byte(3) << 16 | s:byte(4) << 24
      end)())
   end)

   it("sizes I/O BARs without taking bit 2 for a 64-bit type", function()
      local t = fixture.trap("e1000e")
      local bars = t:bars()
      assert.is_true(bars[2].io); assert.are.equal(0x20, bars[2].size)
      assert.are.equal(0x4000, bars[3].size)                -- BAR3 is a BAR, not an upper half
      assert.is_false(bars[3].upper)
      t:cfg_write(0x18, 4, 0xffffffff)
      assert.are.equal(0xffffffe1, t:cfg_read(0x18, 4))
      t:cfg_write(0x1c, 4, 0xffffffff)
      assert.are.equal(0xffffc000, t:cfg_read(0x1c, 4))
   end)

   it("treats a 64-bit pair as one BAR with an upper half", function()
      local t = fixture.trap("nvme")
      local bars = t:bars()
      assert.is_true(bars[0].is64); assert.is_true(bars[1].upper)
      t:cfg_write(0x10, 4, 0xffffffff); t:cfg_write(0x14, 4, 0xffffffff)
      assert.are.equal(0xffffc004, t:cfg_read(0x10, 4))
      assert.are.equal(0xffffffff, t:cfg_read(0x14, 4))
      t:cfg_write(0x10, 4, 0xfe000000); t:cfg_write(0x14, 4, 0x1)
      assert.are.equal(0x1fe000000, t:bars()[0].addr)
   end)

   it("keeps the prefetchable and 64-bit type bits of memory BARs", function()
      local t = fixture.trap("virtio-net-pci")
      assert.are.equal(0xc, t:cfg_read(0x20, 4))
      assert.is_true(t:bars()[4].prefetch)
      assert.are.equal(0, t:cfg_read(0x10, 4))              -- BAR0 not implemented
      t:cfg_write(0x10, 4, 0xffffffff)
      assert.are.equal(0, t:cfg_read(0x10, 4))
   end)

   it("emulates the ROM BAR with mask 0xfffff800 | enable and hides a missing ROM", function()
      local t = fixture.trap("e1000e")
      t:cfg_write(0x30, 4, 0xffffffff)
      assert.are.equal(0xfffc0001, t:cfg_read(0x30, 4))     -- 256 KiB ROM
      local t2 = fixture.trap("edu")
      t2:cfg_write(0x30, 4, 0xffffffff)
      assert.are.equal(0, t2:cfg_read(0x30, 4))
      assert.is_true(t:hide_rom())
      t:cfg_write(0x30, 4, 0xffffffff)
      assert.are.equal(0, t:cfg_read(0x30, 4))
   end)

   it("decodes guest addresses only while COMMAND enables them, with events", function()
      local t = fixture.trap("edu")
      t:cfg_write(0x10, 4, 0xfe000000)
      assert.are.same({}, t:events())                       -- not decoding yet
      local v, claimed = t:mmio_read(0xfe000000, 4)
      assert.is_false(claimed); assert.are.equal(0xffffffff, v)
      t:cfg_write(4, 2, 0x0002)
      local evs = t:events()
      assert.are.equal("decode", evs[1].type); assert.is_true(evs[1].memory)
      assert.are.equal("bar", evs[2].type); assert.are.equal(0, evs[2].bar)
      assert.are.equal(0xfe000000, evs[2].addr)
      v, claimed = t:mmio_read(0xfe000000, 4)
      assert.is_true(claimed)
      assert.are.equal(0x010000ed, v)                       -- edu's ID register, recorded
      -- moving the BAR while decoding
      t:cfg_write(0x10, 4, 0xfd000000)
      local mv = ev_of(t:events(), "bar")[1]
      assert.are.equal(0xfd000000, mv.addr); assert.are.equal(0xfe000000, mv.old)
      -- sizing while decoding unmaps (all-ones is not a valid address), restoring maps
      t:cfg_write(0x10, 4, 0xffffffff)
      assert.is_false(ev_of(t:events(), "bar")[1].mapped)
      t:cfg_write(0x10, 4, 0xfd000000)
      assert.is_true(ev_of(t:events(), "bar")[1].mapped)
      t:cfg_write(4, 2, 0)
      evs = t:events()
      assert.is_false(evs[1].memory); assert.is_false(ev_of(evs, "bar")[1].mapped)
   end)

   it("decodes I/O BARs with the I/O enable bit", function()
      local t = fixture.trap("pci-testdev")
      t:cfg_write(0x14, 4, 0xc000)
      t:cfg_write(4, 2, 0x0002)                             -- memory only: I/O stays off
      assert.is_false(select(2, t:io_read(0xc000, 1)))
      t:cfg_write(4, 2, 0x0003)
      local _, claimed = t:io_read(0xc000, 1)
      assert.is_true(claimed)
      assert.is_false(select(2, t:mmio_read(0xc000, 1)))    -- not in memory space
   end)

   it("dispatches BAR accesses to the device region, 1 to 8 bytes", function()
      local t, be = fixture.trap("edu")
      assert.are.equal(0x010000ed, t:bar_read(0, 0, 4))
      assert.are.equal(0xed, t:bar_read(0, 0, 1))
      assert.is_true(t:bar_write(0, 0x40000, 8, 0x1122334455667788))
      assert.are.equal(0x1122334455667788, t:bar_read(0, 0x40000, 8))
      assert.are.equal(0x1122334455667788, be:region_read(0, 0x40000, 8))
      local nilv, err = t:bar_read(0, 0x100000, 4)          -- past the BAR
      assert.is_nil(nilv); assert.matches("BAR read", err)
      assert.is_nil(t:bar_read(1, 0, 4))                    -- not implemented
      assert.has_error(function() t:bar_read(0, 0, 3) end)
   end)

   it("serves the ROM from region 6 and ignores ROM writes", function()
      local t = fixture.trap("e1000e")
      assert.are.equal(0xaa55, t:bar_read(6, 0, 2))         -- option ROM signature
      t:bar_write(6, 0, 2, 0)
      assert.are.equal(0xaa55, t:bar_read(6, 0, 2))
   end)

   it("grows a BAR: the part past the device region reads zero", function()
      local t, be = fixture.trap("pci-testdev")
      assert.is_true(t:set_bar_size(0, 0x2000))
      t:cfg_write(0x10, 4, 0xffffffff)
      assert.are.equal(0xffffe000, t:cfg_read(0x10, 4))
      local w = be:stats().region_writes
      t:bar_write(0, 0x1800, 4, 0x12345678)
      assert.are.equal(0, t:bar_read(0, 0x1800, 4))
      assert.are.equal(w, be:stats().region_writes)
      assert.is_nil(t:set_bar_size(0, 0x800))               -- never below the device's size
      assert.is_nil(t:set_bar_size(0, 0x3000))              -- not a power of two
   end)

   it("routes a quirk window to Lua handlers without reaching the device", function()
      local t, be = fixture.trap("edu")
      local seen = {}
      assert.is_true(t:add_window(0, 0x1000, 0x100, {
         read = function(off, size) seen[#seen + 1] = { "r", off, size }; return 0xabcd0000 | off end,
         write = function(off, size, v) seen[#seen + 1] = { "w", off, size, v } end,
      }))
      local r = be:stats().region_reads
      assert.are.equal(0xabcd0010, t:bar_read(0, 0x1010, 4))
      t:bar_write(0, 0x1020, 2, 0xbeef)
      assert.are.same({ { "r", 0x10, 4 }, { "w", 0x20, 2, 0xbeef } }, seen)
      assert.are.equal(r, be:stats().region_reads)
      assert.are.equal(0xffffffff, t:bar_read(0, 0x10fe, 4))   -- straddles the window edge
      assert.is_nil(t:add_window(0, 0x1080, 0x100, {}))         -- overlaps
      assert.is_nil(t:add_window(0, 0xfff00, 0x200, {}))        -- past the BAR
      t:add_window(0, 0x2000, 4, { read = function() error("boom") end })
      assert.has_error(function() t:bar_read(0, 0x2000, 4) end)
      t:add_window(0, 0x3000, 4, { read = function() return "x" end })
      local ok, err = pcall(t.bar_read, t, 0, 0x3000, 4)
      assert.is_false(ok); assert.matches("not an integer", err)
      assert.are.equal(0x010000ed, t:bar_read(0, 0, 4))      -- the trap still works
   end)

   it("mirrors config space into a BAR window through the trap", function()
      local t, be = fixture.trap("edu")
      assert.is_true(t:mirror_config(0, 0x2000, 0x100, 0))
      assert.are.equal(0x11e81234, t:bar_read(0, 0x2000, 4))
      t:bar_write(0, 0x2010, 4, 0xffffffff)                 -- sizes BAR0 via the mirror
      assert.are.equal(0xfff00000, t:cfg_read(0x10, 4))
      assert.are.equal(0, be:stats().cfg_writes)
      assert.are.equal(t:cfg_read(0, 4) | t:cfg_read(4, 4) << 32, t:bar_read(0, 0x2000, 8))
   end)
end)
