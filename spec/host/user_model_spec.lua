-- vfio.user.model: a device described as data, served through the interface a vfio-user
-- server calls (no socket here): config space as lspci decodes it and as firmware sizes
-- it, the capability chain, MSI/MSI-X/INTx delivery to the server's triggers with masking
-- and pending bits, DMA through a table-backed memory, reset, and a hostile peer's
-- requests answered with errors, never raised.
local model = require "vfio.user.model"
local decode = require "vfio.decode"

local CONFIG, INTX, MSI, MSIX, ERR, REQ = 7, 0, 1, 2, 3, 4
local EPERM, ENOENT, EIO, EFAULT, EEXIST, EINVAL, ENOTTY = 1, 2, 5, 14, 17, 22, 25

-- A device with one of everything: registers of every access mode in BAR0, a 64-bit
-- prefetchable BAR2 holding the MSI-X table and PBA, an I/O BAR4, PM, MSI, MSI-X, PCIe.
local function description(over)
   local d = {
      name = "test device", vendor = 0x1234, device = 0x5678, subsystem_vendor = 0x1af4,
      subsystem = 0x1100, class = 0x088000, revision = 2, interrupt_pin = 1,
      bars = {
         { index = 0, kind = "mem32", size = 4096, registers = {
            { "ctrl", 0x00, access = "RW", reset = 0x11 },
            { "status", 0x04, access = "W1C", reset = 0xff },
            { "id", 0x08, access = "RO", reset = 0xcafe },
            { "doorbell", 0x0c, access = "WO" },
            { "events", 0x10, access = "RC" },
            { "counter", 0x14, read = function(dev, r)
                 dev.state.counter_reads = (dev.state.counter_reads or 0) + 1
                 return r.value + 1
              end,
              write = function(dev, _, value, old) dev.state.last_write = { value, old } end },
            { "wide", 0x18, width = 8 },
            { "table", 0x40, count = 4 },
            { "broken", 0x80, read = function() error("model bug") end },
         } },
         { index = 2, kind = "mem64", size = 0x10000, prefetchable = true },
         { index = 4, kind = "io", size = 32 },
      },
      capabilities = {
         { kind = "pm" },
         { kind = "msi", vectors = 4, is64 = true, maskable = true },
         { kind = "msix", table_size = 8, table_bar = 2, table_offset = 0, pba_offset = 0x800 },
         { kind = "express", flr = true },
      },
      reset = function(dev) dev.state.resets = (dev.state.resets or 0) + 1 end,
   }
   for k, v in pairs(over or {}) do d[k] = v end
   return d
end

local function new(over) return model.new(description(over)) end

local function cfg_read(dev, off, n)
   local s = assert(dev:region_read(CONFIG, off, n))
   return (string.unpack("<I" .. n, s))
end
local function cfg_write(dev, off, n, v) assert(dev:region_write(CONFIG, off, string.pack("<I" .. n, v))) end

-- A trigger standing for an eventfd: counts its signals.
local counter = require("support.served_model").counter

-- Guest memory for DMA: a table of bytes, read and written at offsets from a base.
local function fake_memory(size, base)
   local bytes = {}
   for i = 0, size - 1 do bytes[i] = (base + i) & 0xff end
   local m = { bytes = bytes }
   function m.read(_, off, n)
      local t = {}
      for i = 0, n - 1 do t[#t + 1] = string.char(bytes[off + i]) end
      return table.concat(t)
   end
   function m.write(_, off, s)
      for i = 1, #s do bytes[off + i - 1] = s:byte(i) end
      return true
   end
   return m
end

local function walk_caps(dev)
   local list, at, seen = {}, cfg_read(dev, 0x34, 1), {}
   while at ~= 0 do
      assert(not seen[at], "capability chain loops")
      seen[at] = true
      list[#list + 1] = { offset = at, id = cfg_read(dev, at, 1) }
      at = cfg_read(dev, at + 1, 1)
   end
   return list
end

describe("vfio.user.model", function()
   describe("the served-device interface", function()
      it("reports a PCI device with reset, 9 regions and 5 interrupt indices", function()
         local info = new():info()
         assert.are.equal(9, info.num_regions)
         assert.are.equal(5, info.num_irqs)
         assert.are.equal(model.DEVICE_FLAGS.PCI | model.DEVICE_FLAGS.RESET, info.flags)
         assert.are.equal(3, info.flags)
      end)

      it("describes each region: BARs by size, the upper half of a 64-bit BAR, ROM and VGA empty", function()
         local dev = new()
         local rw = model.REGION_FLAGS.READ | model.REGION_FLAGS.WRITE
         local want = { [0] = 4096, 0, 0x10000, 0, 32, 0, 0, 4096, 0 }
         for i = 0, 8 do
            local r = assert(dev:region_info(i))
            assert.are.equal(want[i], r.size, "region " .. i)
            assert.are.equal(want[i] > 0 and rw or 0, r.flags, "region " .. i)
            assert.is_false(r.mmap)
         end
         assert.are.equal(256, model.new(description { capabilities = { { kind = "msi" } } }):region_info(CONFIG).size)
      end)

      it("describes each interrupt index as vfio-pci does", function()
         local dev = new()
         local F = model.IRQ_FLAGS
         local intx = assert(dev:irq_info(INTX))
         assert.are.same({ 1, F.EVENTFD | F.MASKABLE | F.AUTOMASKED }, { intx.count, intx.flags })
         local msi = assert(dev:irq_info(MSI))
         assert.are.same({ 4, F.EVENTFD | F.NORESIZE | F.MASKABLE }, { msi.count, msi.flags })
         local msix = assert(dev:irq_info(MSIX))
         assert.are.same({ 8, F.EVENTFD | F.MASKABLE }, { msix.count, msix.flags })
         assert.are.equal(1, dev:irq_info(ERR).count)
         assert.are.equal(1, dev:irq_info(REQ).count)
         local plain = model.new(description { capabilities = {}, interrupt_pin = 0 })
         assert.are.equal(0, plain:irq_info(INTX).count)
         assert.are.equal(0, plain:irq_info(MSI).count)
         assert.are.equal(0, plain:irq_info(ERR).count, "ERR is PCIe's")
      end)
   end)

   describe("config space", function()
      it("decodes as lspci would, as the description says (BARs placed as firmware does)", function()
         local dev = new()
         cfg_write(dev, 0x10, 4, 0xfebf0000)
         cfg_write(dev, 0x18, 4, 0xe0000000)
         cfg_write(dev, 0x20, 4, 0xc000)
         local info = decode.config(assert(dev:region_read(CONFIG, 0, 4096)),
                                    { bar_sizes = { [0] = 4096, [2] = 0x10000, [4] = 32 } })
         assert.are.same({ 0x1234, 0x5678, 0x088000, 2 }, { info.vendor, info.device, info.class, info.revision })
         assert.are.same({ 0x1af4, 0x1100 }, { info.subsystem_vendor, info.subsystem_id })
         assert.are.equal(1, info.interrupt_pin)
         assert.are.equal(0, info.header_type)
         assert.are.equal(3, #info.bars)
         local b0, b2, b4 = info.bars[1], info.bars[2], info.bars[3]
         assert.are.same({ 0, true, 32, false, 4096 }, { b0.index, b0.mem, b0.bits, b0.prefetchable, b0.size })
         assert.are.same({ 2, true, 64, true, 0x10000 }, { b2.index, b2.mem, b2.bits, b2.prefetchable, b2.size })
         assert.are.same({ 4, true, 32 }, { b4.index, b4.io, b4.size })
         assert.is_true(info.status_bits.Cap)
         assert.are.same({ "pm", "msi", "msix", "express" },
                         { info.caps[1].key, info.caps[2].key, info.caps[3].key, info.caps[4].key })
         local msi = info.caps.msi.regs.Control
         assert.are.same({ false, 1, 4, true, true }, { msi.Enable, msi.Count, msi.Max, msi.Maskable, msi["64bit"] })
         local msix = info.caps.msix
         assert.are.same({ false, 8 }, { msix.regs.Control.Enable, msix.regs.Control.Count })
         assert.are.same({ bar = 2, offset = 0 }, msix.table)
         assert.are.same({ bar = 2, offset = 0x800 }, msix.pba)
         assert.are.equal("Endpoint", info.caps.express.type_name)
         assert.is_true(info.caps.express.regs.DevCap.FLReset)
         -- no extended capabilities: the header at 0x100 is zero
         assert.are.equal(0, cfg_read(dev, 0x100, 4))
         assert.matches("Capabilities: %[48%] MSI: Enable%- Count=1/4 Maskable%+ 64bit%+", info:text())
      end)

      it("chains the capabilities from 0x40 in the order given, and nothing else", function()
         local caps = walk_caps(new())
         assert.are.same({ { offset = 0x40, id = 0x01 }, { offset = 0x48, id = 0x05 },
                           { offset = 0x60, id = 0x11 }, { offset = 0x6c, id = 0x10 } }, caps)
         local none = model.new(description { capabilities = {} })
         assert.are.equal(0, cfg_read(none, 0x34, 1))
         assert.are.equal(0, cfg_read(none, 0x06, 2) & 0x10, "no capability list bit")
         local placed = model.new(description { capabilities = { { kind = "msi", offset = 0x80 } } })
         assert.are.same({ { offset = 0x80, id = 0x05 } }, walk_caps(placed))
      end)

      it("keeps read-only registers whatever is written, and ignores bytes nothing backs", function()
         local dev = new()
         local before = assert(dev:region_read(CONFIG, 0, 256))
         for _, off in ipairs { 0x00, 0x08, 0x0c, 0x28, 0x2c, 0x30, 0x34, 0x38, 0xc0, 0xfc } do
            cfg_write(dev, off, 4, 0xffffffff)
         end
         cfg_write(dev, 0x3c, 4, 0xffffffff)   -- line is scratch; pin, min_gnt, max_lat are not
         local after = assert(dev:region_read(CONFIG, 0, 256))
         for off = 0, 255 do
            local writable = off == 0x0c or off == 0x0d or off == 0x3c
            if not writable then
               assert.are.equal(before:byte(off + 1), after:byte(off + 1), ("byte 0x%02x"):format(off))
            end
         end
         assert.are.equal(0xff, cfg_read(dev, 0x3c, 1))
         assert.are.equal(0xff, cfg_read(dev, 0x0c, 1), "cache line size")
         assert.are.equal(0, cfg_read(dev, 0x0d, 1), "latency timer is read-only 0 on PCIe")
         assert.are.equal(0, cfg_read(dev, 0x30, 4), "no expansion ROM")
         -- reads of undefined space read 0, in conventional and extended space
         assert.are.equal(0, cfg_read(dev, 0xf0, 4))
         assert.are.equal(0, cfg_read(dev, 0xffc, 4))
      end)

      it("sizes BARs as firmware does: all ones reads back the size mask with the type bits", function()
         local dev = new()
         cfg_write(dev, 0x04, 2, 0)
         local sized = {}
         for i = 0, 5 do
            local off = 0x10 + 4 * i
            local orig = cfg_read(dev, off, 4)
            cfg_write(dev, off, 4, 0xffffffff)
            sized[i] = cfg_read(dev, off, 4)
            cfg_write(dev, off, 4, orig)
         end
         assert.are.equal(0xfffff000, sized[0], "4K 32-bit memory")
         assert.are.equal(0xffff0000 | 0x4 | 0x8, sized[2], "64K 64-bit prefetchable: type bits kept")
         assert.are.equal(0xffffffff, sized[3], "upper half of a 64-bit BAR")
         assert.are.equal(0xffffffe0 | 0x1, sized[4], "32 I/O ports")
         assert.are.equal(0, sized[1], "no BAR1")
         assert.are.equal(0, sized[5], "no BAR5")
         -- an address is kept to the BAR's alignment
         cfg_write(dev, 0x10, 4, 0xfebc1234)
         assert.are.equal(0xfebc1000, cfg_read(dev, 0x10, 4))
         cfg_write(dev, 0x18, 4, 0xe0000000)
         cfg_write(dev, 0x1c, 4, 0x1)
         assert.are.equal(0xe000000c, cfg_read(dev, 0x18, 4))
         assert.are.equal(0x1, cfg_read(dev, 0x1c, 4))
         cfg_write(dev, 0x20, 4, 0xc001)
         assert.are.equal(0xc001, cfg_read(dev, 0x20, 4))
         -- the ROM probe QEMU makes: nothing there
         cfg_write(dev, 0x30, 4, 0xfffff800)
         assert.are.equal(0, cfg_read(dev, 0x30, 4))
      end)

      it("lets the command register's implemented bits be written, and only those", function()
         local dev = new()
         cfg_write(dev, 0x04, 2, 0xffff)
         assert.are.equal(0x0547, cfg_read(dev, 0x04, 2))
         local io_only = model.new(description { bars = { { index = 0, kind = "io", size = 8 } },
                                              capabilities = {} })
         cfg_write(io_only, 0x04, 2, 0xffff)
         assert.are.equal(0x0545, cfg_read(io_only, 0x04, 2), "no memory BAR: Mem is hardwired 0")
      end)

      it("clears status error bits written with 1 (W1C) and keeps the rest", function()
         local dev = new()
         cfg_write(dev, 0x04, 2, 0x0006)
         assert.is_nil(dev:dma_read(0x1000, 4))        -- nothing mapped: a master abort
         assert.are.equal(0x2000 | 0x10, cfg_read(dev, 0x06, 2))
         cfg_write(dev, 0x06, 2, 0)
         assert.are.equal(0x2010, cfg_read(dev, 0x06, 2), "writing 0 clears nothing")
         cfg_write(dev, 0x06, 2, 0xffff)
         assert.are.equal(0x0010, cfg_read(dev, 0x06, 2), "capability list bit is read-only")
      end)

      it("answers reads of any size and alignment with the same bytes", function()
         local dev = new()
         local all = assert(dev:region_read(CONFIG, 0, 4096))
         for _, r in ipairs { { 0, 1 }, { 1, 3 }, { 0x2d, 3 }, { 0x3e, 5 }, { 0xff, 2 }, { 0x6c, 60 } } do
            assert.are.equal(all:sub(r[1] + 1, r[1] + r[2]), dev:region_read(CONFIG, r[1], r[2]))
         end
      end)

      it("keeps power states to D0 and D3hot, and stops BAR decoding in D3hot", function()
         local dev = new()
         cfg_write(dev, 0x04, 2, 0x0002)
         cfg_write(dev, 0x44, 2, 0x0001)                 -- D1: not supported
         assert.are.equal(0x0008, cfg_read(dev, 0x44, 2))
         cfg_write(dev, 0x44, 2, 0x0003)
         assert.are.equal(0x000b, cfg_read(dev, 0x44, 2))
         local ok, _, errno = dev:region_read(0, 0, 4)
         assert.is_nil(ok)
         assert.are.equal(EIO, errno)
         cfg_write(dev, 0x44, 2, 0)
         assert.is_truthy(dev:region_read(0, 0, 4))
      end)

      it("resets the function on an FLR written to PCIe device control", function()
         local dev = new()
         cfg_write(dev, 0x04, 2, 0x0002)
         assert(dev:region_write(0, 0, string.pack("<I4", 0x77)))
         local resets = dev.state.resets
         cfg_write(dev, 0x6c + 8, 2, 0x8000 | 0x2810)
         assert.are.equal(resets + 1, dev.state.resets)
         assert.are.equal(0, cfg_read(dev, 0x04, 2))
         assert.are.equal(0, cfg_read(dev, 0x6c + 8, 2) & 0x8000, "initiate FLR reads 0")
         assert.are.equal(0x11, dev:register(0, "ctrl").value)
      end)
   end)

   describe("BAR registers", function()
      local dev
      before_each(function()
         dev = new()
         cfg_write(dev, 0x04, 2, 0x0003)
      end)

      local function r32(off) return (string.unpack("<I4", assert(dev:region_read(0, off, 4)))) end
      local function w32(off, v) assert(dev:region_write(0, off, string.pack("<I4", v))) end

      it("follow their access modes: RW, W1C, RO, WO, RC", function()
         assert.are.equal(0x11, r32(0x00))
         w32(0x00, 0xabcd)
         assert.are.equal(0xabcd, r32(0x00))
         w32(0x04, 0x0f)
         assert.are.equal(0xf0, r32(0x04), "W1C: the ones written clear")
         w32(0x08, 0)
         assert.are.equal(0xcafe, r32(0x08), "RO: writes ignored")
         w32(0x0c, 0x55)
         assert.are.equal(0, r32(0x0c), "WO: reads 0")
         assert.are.equal(0x55, dev:register(0, "doorbell").value)
         dev:register(0, "events").value = 0x9
         assert.are.equal(0x9, r32(0x10))
         assert.are.equal(0, r32(0x10), "RC: a read clears")
      end)

      it("run the model's hooks once per access, partial and wide accesses included", function()
         dev:register(0, "counter").value = 41
         assert.are.equal(42, r32(0x14))
         assert.are.equal(1, dev.state.counter_reads)
         assert.are.equal("\42", dev:region_read(0, 0x14, 1))
         assert.are.equal(2, dev.state.counter_reads)
         w32(0x14, 7)
         assert.are.same({ 7, 41 }, dev.state.last_write)
         assert(dev:region_write(0, 0x15, "\1"))            -- one byte: merged into the value
         assert.are.same({ 0x107, 7 }, dev.state.last_write)
         -- an 8-byte read over two registers, a read across a gap, an 8-byte register
         dev:register(0, "ctrl").value = 0x11223344
         local q = assert(dev:region_read(0, 0, 8))
         assert.are.equal(0x000000ff11223344, string.unpack("<I8", q))
         assert.are.equal(string.rep("\0", 8), dev:region_read(0, 0x20, 8))
         assert(dev:region_write(0, 0x18, string.pack("<i8", -2)))
         assert.are.equal(-2, dev:register(0, "wide").value)
         assert.are.equal(string.pack("<i8", -2), dev:region_read(0, 0x18, 8))
      end)

      it("give arrays one slot per element", function()
         w32(0x48, 5)
         assert.are.equal(5, dev:register(0, "table", 2).value)
         assert.are.equal(0, dev:register(0, "table", 1).value)
         assert.has_error(function() dev:register(0, "table") end)
      end)

      it("read through a vfio.regs bank like a driver would", function()
         local b = dev:bank(0)
         b.ctrl(0x1234)
         assert.are.equal(0x1234, b.ctrl())
         assert.are.equal(0x1234, dev:register(0, "ctrl").value)
      end)

      it("answer EIO with the message when a hook fails, and keep serving", function()
         local ok, err, errno = dev:region_read(0, 0x80, 4)
         assert.is_nil(ok)
         assert.are.equal(EIO, errno)
         assert.matches("model error: .*model bug", err)
         assert.matches("model bug", dev.last_error)
         assert.are.equal(1, dev.counters.model_errors)
         assert.are.equal(0x11, r32(0x00))
      end)

      it("answer nothing while their decoding is off", function()
         cfg_write(dev, 0x04, 2, 0x0001)
         local ok, err, errno = dev:region_read(0, 0, 4)
         assert.is_nil(ok)
         assert.are.equal(EIO, errno)
         assert.matches("memory decoding is off", err)
         assert.is_truthy(dev:region_read(4, 0, 4), "I/O decoding is on")
         cfg_write(dev, 0x04, 2, 0x0002)
         assert.are.equal(EIO, select(3, dev:region_write(4, 0, "\0")))
      end)
   end)

   describe("interrupts", function()
      local dev, t
      before_each(function()
         dev = new()
         cfg_write(dev, 0x04, 2, 0x0006)
         t = {}
         for i = 0, 7 do t[i] = counter() end
      end)

      local function counts(n)
         local c = {}
         for i = 0, n - 1 do c[#c + 1] = t[i].n end
         return c
      end

      it("INTx: asserted until lowered, shown in status, automasked until unmasked", function()
         assert(dev:set_irqs(INTX, 0, 1, "trigger", { t[0] }))
         assert.are.same({ true, "intx" }, { dev:raise() })
         assert.are.equal(1, t[0].n)
         assert.are.equal(0x8, cfg_read(dev, 0x06, 2) & 0x8, "interrupt status")
         assert.is_false((dev:raise()), "still asserted: no second edge")
         dev:lower()
         assert.are.equal(0, cfg_read(dev, 0x06, 2) & 0x8)
         assert.are.same({ false, "INTx masked" }, { dev:raise() })
         assert.are.equal(1, t[0].n)
         assert(dev:set_irqs(INTX, 0, 1, "unmask"))
         assert.are.equal(2, t[0].n, "still asserted at unmask: signalled again")
         dev:lower()
         assert(dev:set_irqs(INTX, 0, 1, "unmask"))
         assert.are.equal(2, t[0].n, "not asserted at unmask: nothing")
      end)

      it("INTx: the command register's INTx disable holds the pin, not the status bit", function()
         assert(dev:set_irqs(INTX, 0, 1, "trigger", { t[0] }))
         cfg_write(dev, 0x04, 2, 0x0406)
         dev:raise()
         assert.are.equal(0, t[0].n)
         assert.are.equal(0x8, cfg_read(dev, 0x06, 2) & 0x8)
         cfg_write(dev, 0x04, 2, 0x0006)
         assert.are.equal(1, t[0].n, "enabled while asserted: the pin rises")
      end)

      it("MSI: the programmed vectors reach their triggers; extra vectors fold onto the last", function()
         cfg_write(dev, 0x4c, 4, 0xfee00000)
         cfg_write(dev, 0x50, 4, 0)
         cfg_write(dev, 0x54, 2, 0x4040)
         cfg_write(dev, 0x4a, 2, 0x0011)                 -- enable, 2 vectors (MME 1)
         assert(dev:set_irqs(MSI, 0, 2, "trigger", { t[0], t[1] }))
         assert.are.same({ true, "msi" }, { dev:raise(1) })
         dev:raise(3)
         assert.are.same({ 0, 2 }, counts(2))
         assert.are.equal(0, cfg_read(dev, 0x06, 2) & 0x8, "no INTx while MSI is on")
         cfg_write(dev, 0x4a, 2, 0x0071)                 -- MME 7 is more than the 4 it has
         assert.are.equal(0x0025 | 0x0180, cfg_read(dev, 0x4a, 2), "clamped to 4 vectors")
      end)

      it("MSI: a masked vector is pending and sent when unmasked", function()
         cfg_write(dev, 0x4a, 2, 0x0001)
         assert(dev:set_irqs(MSI, 0, 1, "trigger", { t[0] }))
         cfg_write(dev, 0x58, 4, 0x1)                    -- mask vector 0
         assert.are.same({ false, "pending" }, { dev:raise(0) })
         assert.are.equal(1, cfg_read(dev, 0x5c, 4), "pending bit")
         cfg_write(dev, 0x58, 4, 0x0)
         assert.are.equal(1, t[0].n)
         assert.are.equal(0, cfg_read(dev, 0x5c, 4))
         assert.are.equal(0xf, (function() cfg_write(dev, 0x58, 4, 0xffffffff) return cfg_read(dev, 0x58, 4) end)(),
                          "only 4 mask bits exist")
      end)

      it("MSI: SET_IRQS enables it as the host's setup would, for a client that never writes it", function()
         assert(dev:set_irqs(MSI, 0, 3, "trigger", { t[0], t[1], t[2] }))
         local ctrl = cfg_read(dev, 0x4a, 2)
         assert.are.equal(1, ctrl & 1)
         assert.are.equal(2, (ctrl >> 4) & 7, "4 vectors enabled for 3 triggers")
         dev:raise(2)
         assert.are.same({ 0, 0, 1 }, counts(3))
      end)

      it("MSI-X: each vector to its trigger; function mask and entry masks hold them in the PBA", function()
         cfg_write(dev, 0x62, 2, 0x8000)                 -- the client enables MSI-X
         assert(dev:set_irqs(MSIX, 0, 4, "trigger", { t[0], t[1], t[2], t[3] }))
         assert.are.same({ true, "msix" }, { dev:raise(2) })
         assert.are.same({ 0, 0, 1, 0 }, counts(4))
         cfg_write(dev, 0x62, 2, 0xc000)                 -- function mask
         assert.are.same({ false, "pending" }, { dev:raise(1) })
         assert.are.equal("\2", dev:region_read(2, 0x800, 1), "PBA bit 1")
         cfg_write(dev, 0x62, 2, 0x8000)
         assert.are.same({ 0, 1, 1, 0 }, counts(4))
         assert.are.equal("\0", dev:region_read(2, 0x800, 1))
         -- the entry's own mask, through the table in BAR2
         assert(dev:region_write(2, 3 * 16 + 12, string.pack("<I4", 0xffffffff)))
         assert.are.equal(1, string.unpack("<I4", dev:region_read(2, 3 * 16 + 12, 4)), "only the mask bit")
         dev:raise(3)
         assert.are.equal(0, t[3].n)
         assert(dev:region_write(2, 3 * 16 + 12, string.pack("<I4", 0)))
         assert.are.equal(1, t[3].n)
         -- SET_IRQS mask/unmask act on the same bit
         assert(dev:set_irqs(MSIX, 0, 1, "mask"))
         dev:raise(0)
         assert.are.equal(0, t[0].n)
         assert(dev:set_irqs(MSIX, 0, 1, "unmask"))
         assert.are.equal(1, t[0].n)
         -- writes to the PBA are ignored; the table's address and data are kept
         assert(dev:region_write(2, 0x800, string.pack("<I8", -1)))
         assert.are.equal(string.rep("\0", 8), dev:region_read(2, 0x800, 8))
         assert(dev:region_write(2, 16, string.pack("<I4I4I4", 0xfee01000, 0, 0x41)))
         local lo, hi, data = string.unpack("<I4I4I4", dev:region_read(2, 16, 12))
         assert.are.same({ 0xfee01000, 0, 0x41 }, { lo, hi, data })
      end)

      it("MSI-X: a vector raised before it has a trigger is delivered when it gets one", function()
         assert(dev:set_irqs(MSIX, 0, 1, "trigger", { t[0] }))  -- enables MSI-X, as the host does
         assert.are.equal(0x8000, cfg_read(dev, 0x62, 2) & 0xc000)
         assert.are.same({ false, "pending" }, { dev:raise(5) })
         assert(dev:set_irqs(MSIX, 5, 1, "trigger", { t[5] }))
         assert.are.equal(1, t[5].n)
         assert.has_error(function() dev:raise(8) end, "raise: vector 8 but the MSI-X table has 8 entries")
         -- fd -1 for a vector: it is masked again; all off: MSI-X disabled
         assert(dev:set_irqs(MSIX, 5, 1, "trigger", { false }))
         assert.are.same({ false, "pending" }, { dev:raise(5) })
         assert(dev:set_irqs(MSIX, 0, 0, "trigger"))
         assert.are.equal(0, cfg_read(dev, 0x62, 2) & 0x8000)
      end)

      it("fires a trigger from the host side with DATA_NONE and DATA_BOOL", function()
         assert(dev:set_irqs(INTX, 0, 1, "trigger", { t[0] }))
         assert(dev:set_irqs(INTX, 0, 1, "trigger"))
         assert(dev:set_irqs(INTX, 0, 1, "trigger", { bool = true, true }))
         assert(dev:set_irqs(INTX, 0, 1, "trigger", { bool = true, false }))
         assert.are.equal(2, t[0].n)
         assert(dev:set_irqs(ERR, 0, 1, "trigger", { t[1] }))
         assert.are.same({ true, "err" }, { dev:raise("err") })
         assert(dev:set_irqs(REQ, 0, 1, "trigger", { function() t[2].n = t[2].n + 1 end }))
         dev:raise("req")
         assert.are.same({ 2, 1, 1 }, counts(3))
      end)

      it("refuses what vfio-pci refuses, with its errno", function()
         local function errno(...) return select(3, dev:set_irqs(...)) end
         assert.are.equal(EINVAL, errno(7, 0, 1, "trigger"))
         assert.are.equal(EINVAL, errno(MSIX, 8, 1, "trigger"))
         assert.are.equal(EINVAL, errno(MSIX, 6, 3, "trigger"))
         assert.are.equal(EINVAL, errno(MSIX, math.maxinteger, 2, "trigger"))
         assert.are.equal(EINVAL, errno(MSIX, 0, -1, "trigger"))
         assert.are.equal(EINVAL, errno(INTX, 0, 1, "explode"))
         assert.are.equal(EINVAL, errno(INTX, 1, 1, "trigger"))
         assert.are.equal(ENOTTY, errno(ERR, 0, 1, "mask"))
         assert.are.equal(EINVAL, errno(INTX, 0, 1, "unmask", { t[0] }))
         local plain = model.new(description { capabilities = {} })
         assert.are.equal(EINVAL, select(3, plain:set_irqs(MSI, 0, 1, "trigger", { t[0] })))
         assert.has_error(function() dev:set_irqs(INTX, 0, 1, "trigger", { 42 }) end)
      end)
   end)

   describe("DMA", function()
      local dev, low, high
      before_each(function()
         dev = new()
         low, high = fake_memory(0x1000, 0), fake_memory(0x1000, 0x80)
         assert(dev:dma_map { iova = 0x10000, size = 0x1000, readable = true, writable = true, memory = low })
         assert(dev:dma_map { iova = 0x11000, size = 0x1000, readable = true, writable = false, memory = high })
      end)

      it("needs bus mastering", function()
         local ok, err, errno = dev:dma_read(0x10000, 4)
         assert.is_nil(ok)
         assert.are.equal(EPERM, errno)
         assert.matches("bus mastering is off", err)
         cfg_write(dev, 0x04, 2, 0x0004)
         assert.are.equal("\0\1\2\3", dev:dma_read(0x10000, 4))
      end)

      it("reads and writes through the server's memory, across adjacent ranges", function()
         cfg_write(dev, 0x04, 2, 0x0004)
         assert.are.equal("\xfe\xff\x80\x81", dev:dma_read(0x10ffe, 4))
         assert(dev:dma_write(0x10010, "hello"))
         assert.are.equal("hello", low:read(0x10, 5))
         assert.are.equal("", dev:dma_read(0x10000, 0))
      end)

      it("faults outside mapped memory and on read-only memory, as a master abort", function()
         cfg_write(dev, 0x04, 2, 0x0004)
         local ok, err, errno = dev:dma_write(0x11000, "x")
         assert.is_nil(ok)
         assert.are.equal(EFAULT, errno)
         assert.matches("read%-only", err)
         assert.are.equal(0x2000, cfg_read(dev, 0x06, 2) & 0x2000)
         assert.are.equal(EFAULT, select(3, dev:dma_read(0x11ffe, 4)))
         assert.are.equal(EFAULT, select(3, dev:dma_read(-8, 16)), "wraps")
      end)

      it("refuses overlapping maps and unmaps that cut a range or find nothing", function()
         local m = fake_memory(16, 0)
         assert.are.equal(EEXIST, select(3, dev:dma_map { iova = 0x10800, size = 0x1000, memory = m }))
         assert.are.equal(EINVAL, select(3, dev:dma_map { iova = -4096, size = 0x2000, memory = m }))
         assert.are.equal(EINVAL, select(3, dev:dma_map { iova = 0, size = 0, memory = m }))
         assert(dev:dma_map { iova = -4096, size = 4096, memory = m })    -- the last page of 2^64
         assert.are.equal(EINVAL, select(3, dev:dma_unmap { iova = 0x10000, size = 0x800 }))
         assert.are.equal(ENOENT, select(3, dev:dma_unmap { iova = 0x20000, size = 0x1000 }))
         assert.are.equal(0x2000, dev:dma_unmap { iova = 0x10000, size = 0x2000 })
         assert.are.equal(4096, dev:dma_unmap { all = true })
         assert.has_error(function() dev:dma_map { iova = 0, size = 1 } end)
      end)

      it("tells the model of maps and unmaps", function()
         local seen = {}
         local d = new { dma_map = function(_, r) seen[#seen + 1] = "map " .. r.iova end,
                         dma_unmap = function(_, r) seen[#seen + 1] = "unmap " .. r.iova end }
         assert(d:dma_map { iova = 4096, size = 4096, memory = fake_memory(1, 0) })
         assert(d:dma_unmap { iova = 0, size = 8192 })
         assert.are.same({ "map 4096", "unmap 4096" }, seen)
      end)
   end)

   it("reset restores config space and registers, calls the model, keeps the host's wiring", function()
      local dev = new()
      local fresh = assert(new():region_read(CONFIG, 0, 4096))
      local t = counter()
      cfg_write(dev, 0x04, 2, 0x0407)
      cfg_write(dev, 0x10, 4, 0xfebc0000)
      cfg_write(dev, 0x3c, 1, 11)
      assert(dev:set_irqs(MSIX, 0, 1, "trigger", { t }))
      assert(dev:region_write(0, 0, "\x99"))
      assert(dev:dma_map { iova = 0, size = 4096, readable = true, memory = fake_memory(4096, 0) })
      local resets = dev.state.resets
      assert(dev:reset())
      assert.are.equal(resets + 1, dev.state.resets)
      assert.are.equal(0x11, dev:register(0, "ctrl").value)
      local now = assert(dev:region_read(CONFIG, 0, 4096))
      -- as fresh, except MSI-X, which the host keeps enabled for the trigger it wired
      assert.are.equal(fresh:sub(1, 0x62), now:sub(1, 0x62))
      assert.are.equal(fresh:sub(0x65), now:sub(0x65))
      assert.are.equal(0x8000, cfg_read(dev, 0x62, 2) & 0x8000)
      dev:raise(0)
      assert.are.equal(1, t.n)
      cfg_write(dev, 0x04, 2, 0x0004)
      assert.is_truthy(dev:dma_read(0, 4), "DMA ranges kept")
   end)

   describe("a hostile peer", function()
      local dev
      before_each(function()
         dev = new()
         cfg_write(dev, 0x04, 2, 0x0003)
      end)

      -- Every answer is a value: pcall must succeed, errors come back as nil, message, errno.
      local function answer(f, ...)
         local r = table.pack(pcall(f, dev, ...))
         assert.is_true(r[1], tostring(r[2]))
         return r[2], r[3], r[4]
      end

      it("gets EINVAL for regions, offsets and sizes out of range, never a raise", function()
         local cases = {
            { 9, 0, 4 }, { -1, 0, 4 }, { "7", 0, 4 }, { nil, 0, 4 }, { 1.0, 0, 4 }, { math.maxinteger, 0, 1 },
            { CONFIG, 4096, 1 }, { CONFIG, 4093, 4 }, { CONFIG, -1, 2 }, { CONFIG, 0, 0 }, { CONFIG, 0, -4 },
            { CONFIG, 0, 4097 }, { CONFIG, math.maxinteger, 4 }, { CONFIG, 8, math.maxinteger },
            { CONFIG, math.mininteger, 8 }, { CONFIG, 0.5, 1 }, { CONFIG, 0, "4" }, { 0, 4096, 1 },
            { 0, 4095, 2 }, { 1, 0, 4 }, { 3, 0, 4 }, { 6, 0, 4 }, { 8, 0, 1 }, { 4, 30, 3 },
         }
         for _, c in ipairs(cases) do
            local ok, err, errno = answer(dev.region_read, c[1], c[2], c[3])
            assert.is_nil(ok, ("read %s %s %s"):format(tostring(c[1]), tostring(c[2]), tostring(c[3])))
            assert.are.equal(EINVAL, errno, err)
            assert.are.equal("string", type(err))
            -- a write's size is its data's: the same place with as many bytes (at least one)
            local n = math.type(c[3]) == "integer" and c[3] > 0 and c[3] < 8192 and c[3] or 1
            local legal = c[1] == CONFIG and math.type(c[2]) == "integer" and c[2] >= 0 and c[2] + n <= 4096
            if not legal then
               ok, _, errno = answer(dev.region_write, c[1], c[2], string.rep("\0", n))
               assert.is_nil(ok, ("write %s %s %d"):format(tostring(c[1]), tostring(c[2]), n))
               assert.are.equal(EINVAL, errno)
            end
         end
         assert.are.equal(EINVAL, select(3, answer(dev.region_write, CONFIG, 0, "")))
         assert.are.equal(EINVAL, select(3, answer(dev.region_write, CONFIG, 0, 42)))
         assert.are.equal(EINVAL, select(3, answer(dev.region_info, 9)))
         assert.are.equal(EINVAL, select(3, answer(dev.irq_info, 5)))
         assert.is_true(dev.counters.refused > #cases)
      end)

      it("answers odd but legal sizes: 3 bytes, the whole region", function()
         assert.are.equal(3, #answer(dev.region_read, CONFIG, 0x3d, 3))
         assert.are.equal(4096, #answer(dev.region_read, CONFIG, 0, 4096))
         assert.are.equal(3, #answer(dev.region_read, 0, 0x13, 3))
         assert.are.equal(0x80, #answer(dev.region_read, 0, 0, 0x80))
         assert.are.equal(0x10000, #answer(dev.region_read, 2, 0, 0x10000))
         local big = model.new(description { bars = { { index = 0, kind = "mem64", size = 1 << 40 } },
                                             capabilities = {} })
         cfg_write(big, 0x04, 2, 0x0002)
         assert.are.equal(1 << 20, #assert(big:region_read(0, (1 << 40) - (1 << 20), 1 << 20)))
         local ok, _, errno = big:region_read(0, 0, (1 << 20) + 1)
         assert.is_nil(ok)
         assert.are.equal(7, errno, "E2BIG: more than max_data_xfer_size")
         assert.is_true(answer(dev.region_write, 4, 29, "abc"))
      end)

      it("cannot change the identity or break the capability chain with random writes", function()
         local ids = dev:region_read(CONFIG, 0, 4)
         local chain = walk_caps(dev)
         local seed = 24
         local function rnd(n)                     -- a small LCG: the same bytes every run
            seed = (seed * 1103515245 + 12345) & 0x7fffffff
            return seed % n
         end
         for _ = 1, 3000 do
            local off, n = rnd(4200), rnd(9)
            local t = {}
            for i = 1, n do t[i] = string.char(rnd(256)) end
            answer(dev.region_write, CONFIG, off, table.concat(t))
            answer(dev.region_read, CONFIG, rnd(4200), rnd(9))
         end
         assert.are.equal(ids, dev:region_read(CONFIG, 0, 4))
         assert.are.same(chain, walk_caps(dev))
      end)
   end)

   describe("descriptions", function()
      local function bad(over, pattern)
         local ok, err = pcall(model.new, description(over))
         assert.is_false(ok)
         assert.matches(pattern, err)
      end

      it("are checked when the device is made", function()
         bad({ vendor = 0xffff }, "vendor")
         bad({ bars = { { index = 0, kind = "mem32", size = 3000 } } }, "power of two")
         bad({ bars = { { index = 5, kind = "mem64", size = 4096 } } }, "BAR5 cannot be 64%-bit")
         bad({ bars = { { index = 0, kind = "mem64", size = 4096 }, { index = 1, kind = "io", size = 8 } } },
             "BAR1")
         bad({ bars = { { index = 0, kind = "io", size = 512 } } }, "I/O BAR is 4 to 256")
         bad({ bars = { { index = 0, kind = "mem32", size = 16, registers = { { "a", 0 }, { "b", 2, width = 2 } } } } },
             "overlaps")
         bad({ bars = { { index = 0, kind = "mem32", size = 16, registers = { { "a", 16 } } } } }, "past the BAR's end")
         bad({ capabilities = { { kind = "msix", table_size = 4, table_bar = 4 } } }, "memory BAR")
         bad({ capabilities = { { kind = "msix", table_size = 4, table_bar = 0, table_offset = 0 } } },
             "overlaps") -- the table lands on BAR0's registers
         bad({ capabilities = { { kind = "msi", vectors = 3 } } }, "vectors")
         bad({ capabilities = { { kind = "msi" }, { kind = "msi" } } }, "twice")
         bad({ capabilities = { { kind = "pm", offset = 0xfc } } }, "does not fit")
         bad({ methods = { region_read = function() end } }, "hide")
      end)
   end)
end)
