-- Several devices on one board (vfio.vmm.board, each a vfio.vmm.assigned device added
-- with board:add_device or board:add_devices): each on its own slot of bus 0 with its
-- INTx line from the PCI swizzle, every BAR placed by one allocator (64-bit prefetchable
-- ones above 4 GiB), and the VM's address map taking all their slots and ranges, which it
-- would refuse if any two overlapped. The devices are lab recordings; the VM is the
-- host's /dev/kvm (the spec says so when it is absent; the lab runs the same with real
-- devices).
local board = require "vfio.vmm.board"
local assigned = require "vfio.vmm.assigned"
local kvmhost = require "support.kvm"

local function cf8(bus, dev, fn, reg)
   return 0x80000000 | bus << 16 | dev << 11 | fn << 8 | reg
end
local function pio(port, size, write, value)
   return { reason = "io", space = "pio", port = port, size = size, count = 1, write = write, value = value }
end

describe("vfio.vmm.board", function()
   it("wires INTx by the PCI swizzle", function()
      assert.are.same({ 16, 17, 18, 19, 17 },
         { board.intx_gsi(4, 1), board.intx_gsi(4, 2), board.intx_gsi(5, 2), board.intx_gsi(6, 2),
           board.intx_gsi(8, 2) })
   end)

   it("puts several devices on their own slots with disjoint BARs in one VM #kvm", function()
      local b = board.new { mem_mib = 16 }
      if not b then pending(kvmhost.REASON) return end
      local names = { "edu", "nvme", "e1000e", "virtio-net-pci", "qemu-xhci" }
      local ms = {}
      for i, n in ipairs(names) do
         ms[i] = assert(assigned.new("spec/fixtures/" .. n .. ".lua"))
         assert(b:add_device(ms[i]))
         assert.are.equal(3 + i, b:where(ms[i]).slot)
      end
      -- config space through the C host bridge: each slot answers with its own ids
      for i, m in ipairs(ms) do
         local want, slot = m.trap:cfg_read(0, 4), b:where(m).slot
         assert(b.host:access(pio(0xcf8, 4, true, cf8(0, slot, 0, 0))))
         local _, v = b.host:access(pio(0xcfc, 4, false))
         assert.are.equal(want, v, names[i])
         local pin = m:intx_pin()
         if pin ~= 0 then
            assert.are.equal(board.intx_gsi(slot, pin), m.trap:cfg_read(0x3c, 1))
            assert.are.equal(board.intx_gsi(slot, pin), b:where(m).intx_line)
         end
         assert.are.equal(0x7, m.trap:cfg_read(4, 2) & 0x7)   -- decoding and bus master on
      end
      assert.are.same({ false }, { b.host:access(pio(0xcf8, 4, true, cf8(0, 9, 0, 0))) and false })
      local _, none = b.host:access(pio(0xcfc, 4, false))
      assert.are.equal(0xffffffff, none)                      -- an empty slot
      -- every BAR placed, naturally aligned, no two overlapping, 64-bit prefetchable
      -- ones above 4 GiB
      local spans = {}
      for i, m in ipairs(ms) do
         for idx, bar in pairs(m.trap:bars()) do
            if bar.size > 0 and not bar.upper and idx ~= 6 then
               assert.is_true(bar.addr ~= 0, names[i] .. " BAR" .. idx)
               assert.are.equal(0, bar.addr % bar.size)
               if bar.is64 and bar.prefetch then assert.is_true(bar.addr >= 1 << 32) end
               spans[#spans + 1] = { io = bar.io, lo = bar.addr, hi = bar.addr + bar.size - 1,
                                     what = names[i] .. " BAR" .. idx }
            end
         end
      end
      for i = 1, #spans do
         for j = i + 1, #spans do
            local a, c = spans[i], spans[j]
            assert.is_true(a.io ~= c.io or a.hi < c.lo or c.hi < a.lo, a.what .. " overlaps " .. c.what)
         end
      end
      -- each trap decodes its own placed addresses: nvme's MSI-X table at its new place
      -- (vector 0's control word: masked) and nothing of the other devices'
      local nvme = ms[2]
      local x = nvme.trap:msix()
      local base = nvme.trap:bars()[x.table_bar].addr
      assert.are.equal(1, (nvme.trap:mmio_read(base + x.table_off + 12, 4)))
      local _, hit = ms[1].trap:mmio_read(base + x.table_off + 12, 4)
      assert.is_falsy(hit)
      b:close()
      for _, m in ipairs(ms) do assert.is_true(m.closed) end
   end)

   it("refuses a slot that is taken #kvm", function()
      local b = board.new { mem_mib = 16 }
      if not b then pending(kvmhost.REASON) return end
      local m1 = assert(assigned.new("spec/fixtures/edu.lua"))
      local m2 = assert(assigned.new("spec/fixtures/edu.lua"))
      assert(b:add_device(m1, { slot = 6 }))
      local ok, err = b:add_device(m2, { slot = 6 })
      assert.is_nil(ok)
      assert.matches("slot 6 function 0 is taken", err)
      assert.is_nil(b:where(m2))
      b:close()
      m2:close()
   end)

   it("keeps the functions of one host slot together on one guest slot", function()
      local f = board.functions
      -- 10.0 and 10.1 share a slot with their own numbers; 03.0 gets the next one
      assert.are.same({
         { slot = 0, fn = 0, multifunction = true }, { slot = 1, fn = 0, multifunction = false },
         { slot = 0, fn = 1, multifunction = false } },
         f { "0000:00:10.0", "0000:00:03.0", "0000:00:10.1" })
      -- without function 0 they are renumbered from 0 in host order, so a guest finds them
      assert.are.same({ { slot = 0, fn = 1, multifunction = false }, { slot = 0, fn = 0, multifunction = true } },
         f { "0000:00:10.5", "0000:00:10.2" })
      -- the same slot number on another bus or domain is another device
      assert.are.same({ 0, 1, 2 }, (function()
         local r = f { "0000:00:10.0", "0000:01:10.0", "0001:00:10.0" }
         return { r[1].slot, r[2].slot, r[3].slot }
      end)())
      -- recordings (no address) each get their own slot
      assert.are.same({ { slot = 0, fn = 0, multifunction = false }, { slot = 1, fn = 0, multifunction = false } },
         f { false, false })
   end)

   it("places a multi-function device's functions behind one slot of the host bridge #kvm", function()
      local b = board.new { mem_mib = 16 }
      if not b then pending(kvmhost.REASON) return end
      local specs = { { "virtio-net-pci", "0000:00:10.0" }, { "nvme", "0000:00:03.0" },
                      { "edu", "0000:00:10.1" } }
      local ms = {}
      for i, sp in ipairs(specs) do
         ms[i] = assert(assigned.new("spec/fixtures/" .. sp[1] .. ".lua"))
         local bdf = sp[2]
         ms[i].host_bdf = function() return bdf end
      end
      assert(b:add_devices(ms))
      local function at(m) local w = b:where(m) return { w.slot, w.fn } end
      assert.are.same({ 4, 0 }, at(ms[1]))
      assert.are.same({ 5, 0 }, at(ms[2]))
      assert.are.same({ 4, 1 }, at(ms[3]))
      local function cfg(slot, fn, reg, size)
         assert(b.host:access(pio(0xcf8, 4, true, cf8(0, slot, fn, reg & ~3))))
         local _, v = b.host:access(pio(0xcfc + (reg & 3), size, false))
         return v
      end
      for _, m in ipairs(ms) do
         local w = b:where(m)
         assert.are.equal(m.trap:cfg_read(0, 4), cfg(w.slot, w.fn, 0, 4))
      end
      -- function 0 says the slot is multi-function (what makes a guest scan 1-7); the
      -- other device's slot does not
      assert.are.equal(0x80, cfg(4, 0, 0x0e, 1) & 0x80)
      assert.are.equal(0, cfg(5, 0, 0x0e, 1) & 0x80)
      assert.are.equal(0xffffffff, cfg(4, 2, 0, 4))            -- no third function
      -- one INTx routing per slot and pin: both functions of slot 4 use INTA's line
      local pin1, pin3 = ms[1]:intx_pin(), ms[3]:intx_pin()
      if pin1 == pin3 and pin1 ~= 0 then
         assert.are.equal(ms[1].trap:cfg_read(0x3c, 1), ms[3].trap:cfg_read(0x3c, 1))
      end
      b:close()
   end)
end)
