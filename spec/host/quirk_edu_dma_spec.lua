-- The edu DMA guard (lua/vfio/vmm/quirks/edu_dma_guard.lua) follows edu's own access
-- rules (QEMU hw/misc/edu.c), so the registers it checks are the ones edu will use.
local fixture = require "support.fixture"
local quirks = require "vfio.vmm.quirks"
local guard = require "vfio.vmm.quirks.edu_dma_guard"

-- A trap over the edu recording with the guard applied; the recording keeps writes, so
-- 0x98 reads back RUN after a start until the spec clears it as edu would when done.
local function guarded()
   local t, be = fixture.trap("edu")
   local _, states = quirks.apply_matching(t)
   return t, be, states["edu-dma-guard"].state
end

local function started(be) return be:region_read(0, 0x98, 4) & 1 == 1 end

describe("edu DMA guard: edu's access rules", function()
   it("ignores 1- and 2-byte writes, as edu does: they cannot move the checked address", function()
      -- edu's dst is 0x50000, outside the buffer; a narrow write that would make it
      -- 0x40000 in a byte-merged copy never reaches edu, so the start stays refused
      for _, w in ipairs({ { 0x8a, 2, 0x0004 }, { 0x8a, 1, 0x04 }, { 0x88, 2, 0 } }) do
         local t, be, st = guarded()
         t:bar_write(0, 0x88, 8, 0x50000)
         t:bar_write(0, 0x90, 8, 0x100)
         local writes = be:stats().region_writes
         t:bar_write(0, w[1], w[2], w[3])
         assert.are.equal(writes, be:stats().region_writes)
         assert.are.equal(0x50000, be:region_read(0, 0x88, 4))
         t:bar_write(0, 0x98, 4, 1)
         assert.is_false(started(be))
         assert.are.equal(1, st.rejected)
      end
   end)

   it("takes a 4-byte write at a register as the whole register, upper half cleared", function()
      local t, be, st = guarded()
      t:bar_write(0, 0x88, 8, 0x100040000)                  -- above 4 GiB: refused
      t:bar_write(0, 0x88, 4, 0x40000)                      -- edu: dst = 0x40000
      t:bar_write(0, 0x90, 4, 0x100)
      t:bar_write(0, 0x98, 4, 1)
      assert.is_true(started(be))
      assert.is_nil(st.rejected)
   end)

   it("ignores 4-byte writes at the upper halves and unaligned 8-byte writes, as edu does", function()
      for _, w in ipairs({ { 0x8c, 4, 0 }, { 0x84, 8, 0 } }) do
         local t, be, st = guarded()
         t:bar_write(0, 0x88, 8, 0x100040000)
         t:bar_write(0, 0x90, 4, 0x100)
         local writes = be:stats().region_writes
         t:bar_write(0, w[1], w[2], w[3])                   -- would make a copy 0x40000
         assert.are.equal(writes, be:stats().region_writes)
         t:bar_write(0, 0x98, 4, 1)
         assert.is_false(started(be))
         assert.are.equal(1, st.rejected)
      end
   end)

   it("ignores every write while a DMA runs, as edu does, and cmd writes without RUN", function()
      local t, be, st = guarded()
      -- RAM -> device: dst is checked; src (the RAM side) is outside the buffer
      t:bar_write(0, 0x80, 8, 0x50000)
      t:bar_write(0, 0x88, 8, 0x40000)
      t:bar_write(0, 0x90, 8, 0x100)
      t:bar_write(0, 0x98, 8, 1)
      assert.is_true(started(be))
      local writes = be:stats().region_writes
      t:bar_write(0, 0x80, 8, 0x40000)                      -- edu ignores it: still 0x50000
      t:bar_write(0, 0x98, 4, 3)                            -- a second start: ignored too
      assert.are.equal(writes, be:stats().region_writes)
      t:device_write(0, 0x98, 4, 0)                         -- edu finished: RUN clear
      t:bar_write(0, 0x98, 4, 2)                            -- no RUN: edu ignores it
      assert.are.equal(writes + 1, be:stats().region_writes)
      -- device -> RAM now checks src, which edu still has at 0x50000
      t:bar_write(0, 0x98, 4, 3)
      assert.is_false(started(be))
      assert.are.equal(1, st.rejected)
      assert.are.equal(0x50000, be:region_read(0, 0x80, 4))
   end)

   it("refuses what edu_check_range refuses: empty, wrapping and overrunning ranges", function()
      local cases = {
         { 0x40000, 0, false }, { 0x41000, 0, false }, { 0x40000, -1, false },
         { 0x40001, -1, false }, { 0x40fff, 2, false }, { 0x3ffff, 1, false },
         { 0x41000, 1, false }, { -0x1000, 0x1000, false }, { 0x40000, 0x1001, false },
         { 0x40000, 0x1000, true }, { 0x40fff, 1, true }, { 0x40800, 0x800, true },
      }
      for _, c in ipairs(cases) do
         for _, to_ram in ipairs({ false, true }) do
            local t, be, st = guarded()
            t:bar_write(0, to_ram and 0x80 or 0x88, 8, c[1])
            t:bar_write(0, 0x90, 8, c[2])
            t:bar_write(0, 0x98, 4, to_ram and 3 or 1)
            local what = ("addr %#x count %#x %s"):format(c[1], c[2], to_ram and "to RAM" or "from RAM")
            assert.are.equal(c[3], started(be), what)
            assert.are.equal(not c[3] and 1 or nil, st.rejected, what)
         end
      end
   end)
end)

-- edu's DMA registers as hw/misc/edu.c has them, written independently of the guard:
-- QEMU's memory core passes edu only 4- and 8-byte aligned accesses; src, dst and
-- count take the whole value while no DMA runs; cmd starts one when RUN is written.
-- `split` models pwrite through Linux 6.1's vfio-pci, which writes 8 bytes as two 4.
local function edu_model(split)
   local m = { r = { [0x80] = 0, [0x88] = 0, [0x90] = 0, [0x98] = 0 }, runs = {} }
   local function within(a, s, e) return not math.ult(a, s) and math.ult(a, e) end
   function m.check_range(addr, cnt)                        -- edu_check_range's test
      local end1, end2 = addr + cnt, 0x40000 + 0x1000
      return within(addr, 0x40000, end2) and math.ult(addr, end1) and not math.ult(end2, end1)
   end
   local function mmio_write(addr, size, v)
      if (size ~= 4 and size ~= 8) or addr % size ~= 0 then return end
      if size == 4 then v = v & 0xffffffff end
      local running = m.r[0x98] & 1 ~= 0
      if addr == 0x80 or addr == 0x88 or addr == 0x90 then
         if not running then m.r[addr] = v end
      elseif addr == 0x98 and v & 1 ~= 0 and not running then
         m.r[0x98] = v
         local side = v & 2 ~= 0 and 0x80 or 0x88
         m.runs[#m.runs + 1] = { side = side, addr = m.r[side], cnt = m.r[0x90],
                                 ok = m.check_range(m.r[side], m.r[0x90]) }
      end
   end
   m.trap = {
      device_write = function(_, bar, off, size, v)
         assert(bar == 0)
         if split and size == 8 then
            mmio_write(off, 4, v & 0xffffffff); mmio_write(off + 4, 4, v >> 32)
         else
            mmio_write(off, size, v)
         end
         return true
      end,
      device_read = function(_, bar, off, size)
         assert(bar == 0 and size == 4 and off == 0x98)
         return m.r[0x98] & 0xffffffff
      end,
   }
   function m.finish() m.r[0x98] = m.r[0x98] & ~1 end      -- edu's DMA timer ran
   return m
end

describe("edu DMA guard against a model of edu", function()
   local VALUES = { 0, 1, 2, 3, 4, 5, 0x100, 0x800, 0xfff, 0x1000, 0x1001, 0x40000, 0x40800,
                    0x40f00, 0x40fff, 0x41000, 0x50000, 0xffffffff, -1, -0x1000, 1 << 32,
                    (1 << 32) | 0x40000, 0x0004, 0x0005, 0x00040000 }

   for _, split in ipairs({ false, true }) do
      it(("never starts a DMA edu would run outside its buffer, nor on other values than it checked%s")
         :format(split and " (8-byte writes split as Linux 6.1's vfio-pci does)" or ""), function()
         math.randomseed(13)
         local write = guard.windows[1].write
         local edu = edu_model(split)
         local q = { trap = edu.trap, state = {}, quirk = guard }
         local approvals, refusals = 0, 0
         for _ = 1, 50000 do
            if math.random(8) == 1 then edu.finish() end
            local size = ({ 1, 2, 4, 8 })[math.random(4)]
            local off = math.random(4) <= 3 and 8 * math.random(0, 3) or math.random(0, 0x1f)
            if off + size > 0x20 then off = 0x20 - size end
            local v = VALUES[math.random(#VALUES)]
            if math.random(4) == 1 then v = v ~ (math.random(0, 0xffff) << (8 * math.random(0, 6))) end
            if size < 8 then v = v & ((1 << (8 * size)) - 1) end
            local reg = edu.r
            -- what edu would do with this write if it came straight from the guest
            local is_start = (size == 4 or size == 8) and off == 0x18 and v & 1 ~= 0
                             and reg[0x98] & 1 == 0
            local side = v & 2 ~= 0 and 0x80 or 0x88
            local edu_would_run = is_start and edu.check_range(reg[side], reg[0x90])
            local n = #edu.runs
            write(q, off, size, v)
            local ran = #edu.runs > n
            if ran then
               local run = edu.runs[#edu.runs]
               local copy = q.state.regs
               assert.is_true(run.ok, ("edu ran %#x+%#x"):format(run.addr, run.cnt))
               assert.are.equal(run.addr, copy[run.side - 0x80])
               assert.are.equal(run.cnt, copy[0x10])
               approvals = approvals + 1
            elseif is_start then
               refusals = refusals + 1
            end
            -- the guard refuses only what edu would run outside its buffer (where 8-byte
            -- writes are split it may refuse more, values edu cut to 32 bits)
            if not split then assert.are.equal(edu_would_run, ran) end
            if ran then assert.is_true(edu_would_run) end
         end
         assert.is_true(approvals > 50 and refusals > 500, ("%d started, %d refused"):format(approvals, refusals))
      end)
   end
end)
