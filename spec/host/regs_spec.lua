local regs = require "vfio.regs"

-- A register file in a table, logging every access, standing in for a VFIO region.
local function fake(mem)
   local log = {}
   local t = { mem = mem or {}, log = log }
   for _, bits in ipairs { 8, 16, 32, 64 } do
      t["read" .. bits] = function(self, off)
         log[#log + 1] = { "r", bits, off }
         return self.mem[off] or 0
      end
      t["write" .. bits] = function(self, off, v)
         log[#log + 1] = { "w", bits, off, v }
         self.mem[off] = v
         return true
      end
   end
   return t
end

local edu_desc = dofile("examples/edu_regs.lua")

describe("regs.describe", function()
   it("rejects bad descriptions with the entry named", function()
      assert.has_error(function() regs.describe { { "a", 3 } } end) -- unaligned
      assert.has_error(function() regs.describe { { "a", 0, width = 3 } } end)
      assert.has_error(function() regs.describe { { "a", 0, access = "XX" } } end)
      assert.has_error(function() regs.describe { { "a", 0 }, { "a", 4 } } end)
      assert.has_error(function() regs.describe { { "a", 0 }, { "b", 2, width = 2 } } end) -- overlap
      assert.has_error(function() regs.describe { { "a", 0, fields = { x = 32 } } } end)
      assert.has_error(function() regs.describe { { "a", 0, count = 0 } } end)
      assert.has_error(function() regs.describe { { "1a", 0 } } end)
   end)

   it("accepts the shipped edu description", function()
      local d = regs.describe(edu_desc)
      assert.are.equal("edu", d.name)
      assert.is_truthy(d.byname.id and d.byname.status and d.byname.dma_cmd)
   end)
end)

describe("register objects", function()
   local dev, edu
   before_each(function()
      dev = fake()
      edu = regs.bind(edu_desc, dev)
   end)

   it("read when called, write when called with a value, at the right width and offset", function()
      dev.mem[0x04] = 0x1234
      assert.are.equal(0x1234, edu.liveness())
      assert.is_true(edu.liveness(0x55))
      assert.are.same({ "w", 32, 0x04, 0x55 }, dev.log[#dev.log])
      local b = regs.bind({ { "wide", 0x10, width = 8 }, { "narrow", 0x18, width = 1 } }, dev)
      b.wide(0x40000)
      assert.are.same({ "w", 64, 0x10, 0x40000 }, dev.log[#dev.log])
      b.narrow(0xff)
      assert.are.same({ "w", 8, 0x18, 0xff }, dev.log[#dev.log])
      assert.has_error(function() b.narrow(0x100) end)
   end)

   it("refuses writes to RO and reads of WO registers", function()
      assert.has_error(function() edu.id(1) end)
      local v, err = edu.irq_raise()
      assert.is_nil(v)
      assert.matches("write%-only", err)
      assert.is_true(edu.irq_raise(0x10))
   end)

   it("rejects values wider than the register", function()
      assert.has_error(function() edu.liveness(1 << 32) end)
      assert.has_error(function() edu.liveness(1.5) end)
   end)

   it("reads and writes bit fields by name, keeping other bits", function()
      dev.mem[0x20] = 0x1
      assert.are.equal(1, edu.status.computing)
      assert.are.equal(0, edu.status.raise_irq)
      edu.status.raise_irq = 1
      assert.are.equal(0x81, dev.mem[0x20])
      dev.mem[0] = 0x010000ed
      assert.are.same({ magic = 0xed, minor = 0, major = 1 }, edu.id:fields())
      assert.has_error(function() edu.status.raise_irq = 2 end)
      assert.has_error(function() edu.status.nosuch = 1 end)
   end)

   it("sets and clears bits by read-modify-write", function()
      dev.mem[0x20] = 0x1
      edu.status:set(0x80)
      assert.are.equal(0x81, dev.mem[0x20])
      edu.status:clear(0x1)
      assert.are.equal(0x80, dev.mem[0x20])
   end)

   it("W1C registers: clear writes only the mask, set is refused", function()
      local d = fake({ [0] = 0xff })
      local b = regs.bind({ { "isr", 0, access = "W1C", fields = { a = 0, b = 1 } } }, d)
      b.isr:clear(0x2)
      assert.are.same({ "w", 32, 0, 0x2 }, d.log[#d.log])
      b.isr.a = 1
      assert.are.same({ "w", 32, 0, 0x1 }, d.log[#d.log])
      assert.has_error(function() b.isr:set(1) end)
   end)

   it("RC registers are read only when called: dump and tostring leave them alone", function()
      local d = fake({ [0] = 7, [4] = 9 })
      local b = regs.bind({ { "plain", 0, access = "RO" }, { "counter", 4, access = "RC" } }, d)
      local text = b:dump()
      assert.matches("counter @0x4 RC 32%-bit %(read clears", text)
      tostring(b.counter)
      for _, e in ipairs(d.log) do assert.are_not.equal(4, e[3]) end
      assert.are.equal(9, b.counter())
   end)

   it("arrays index elements from 0 with a stride and check bounds", function()
      local b = regs.bind({ { "ring", 0x100, count = 16, stride = 8 } }, dev)
      b.ring[2](0xabcd)
      assert.are.equal(0xabcd, dev.mem[0x110])
      assert.are.equal(16, #b.ring)
      assert.has_error(function() return b.ring[16] end)
      assert.matches("ring%[3%] @0x118 RW 32%-bit", tostring(b.ring[3]))
   end)

   it("waits for a value, a field table or a predicate, and times out", function()
      local n = 0
      dev.read32 = function()
         n = n + 1
         return n >= 3 and 0 or 1 -- "computing" for two polls
      end
      assert.are.equal(0, edu.status:wait(0, { mask = 1, timeout = 1 }))
      n = 0
      assert.are.equal(0, edu.status:wait({ computing = 0 }, 1))
      local t0 = regs.clock()
      local v, err, last = edu.status:wait(function(x) return x == 42 end, { timeout = 0.05 })
      assert.is_nil(v)
      assert.matches("timeout", err)
      assert.are.equal(0, last)
      assert.is_true(regs.clock() - t0 >= 0.05)
   end)

   it("passes I/O errors through as nil, message", function()
      local d = { read32 = function() return nil, "pread BAR0: Input/output error", 5 end,
         write32 = function() return nil, "pwrite BAR0: Input/output error", 5 end }
      local b = regs.bind({ { "x", 0 } }, d)
      local v, err, errno = b.x()
      assert.is_nil(v); assert.matches("Input/output", err); assert.are.equal(5, errno)
      assert.is_nil((b.x(1)))
      assert.is_nil((b.x:set(1)))
   end)

   it("works on targets that only have read(off, n) and write(off, bytes)", function()
      local store = { [0] = string.rep("\0", 16) }
      local t = {
         read = function(_, off, n) return store[0]:sub(off + 1, off + n) end,
         write = function(_, off, s)
            store[0] = store[0]:sub(1, off) .. s .. store[0]:sub(off + #s + 1)
            return true
         end,
      }
      local b = regs.bind({ { "a", 0, width = 2 }, { "b", 8, width = 8 } }, t)
      b.a(0xbeef)
      b.b(-2)
      assert.are.equal(0xbeef, b.a())
      assert.are.equal(-2, b.b())
      assert.are.equal("\xef\xbe", store[0]:sub(1, 2))
   end)

   it("prints registers with hex, decimal and fields", function()
      dev.mem[0x20] = 0x80
      assert.are.equal("status @0x20 RW 32-bit: status = 0x00000080 (128) {computing=0 raise_irq=1}",
         tostring(edu.status))
   end)
end)
