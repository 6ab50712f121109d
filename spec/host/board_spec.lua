-- Several devices on one board (vfio.vmm.board): each on its own slot of bus 0 with its
-- INTx line from the PCI swizzle, every BAR placed by one allocator (64-bit prefetchable
-- ones above 4 GiB), and the VM's address map taking all their slots and ranges, which it
-- would refuse if any two overlapped. The devices are lab recordings; the VM is the
-- host's /dev/kvm (the spec says so when it is absent; the lab runs the same with real
-- devices).
local board = require "vfio.vmm.board"
local machine = require "vfio.vmm.machine"

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

   it("puts several devices on their own slots with disjoint BARs in one VM", function()
      local b = board.new { mem_mib = 16 }
      if not b then pending("no usable /dev/kvm here: the lab boots the same board") return end
      local names = { "edu", "nvme", "e1000e", "virtio-net-pci", "qemu-xhci" }
      local ms = {}
      for i, n in ipairs(names) do
         ms[i] = assert(machine.new("spec/fixtures/" .. n .. ".lua", { mem_mib = 16 }))
         assert(b:add(ms[i]))
         assert.are.equal(3 + i, ms[i].slot)
      end
      assert(b:place_bars())
      -- config space through the C host bridge: each slot answers with its own ids
      for i, m in ipairs(ms) do
         local want = m.trap:cfg_read(0, 4)
         assert(b.host:access(pio(0xcf8, 4, true, cf8(0, m.slot, 0, 0))))
         local _, v = b.host:access(pio(0xcfc, 4, false))
         assert.are.equal(want, v, names[i])
         local pin = m:intx_pin()
         if pin ~= 0 then
            assert.are.equal(board.intx_gsi(m.slot, pin), m.trap:cfg_read(0x3c, 1))
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

   it("refuses a slot that is taken", function()
      local b = board.new { mem_mib = 16 }
      if not b then pending("no usable /dev/kvm here") return end
      local m1 = assert(machine.new("spec/fixtures/edu.lua"))
      local m2 = assert(machine.new("spec/fixtures/edu.lua"))
      assert(b:add(m1, 6))
      local ok, err = b:add(m2, 6)
      assert.is_nil(ok)
      assert.matches("slot 6 is taken", err)
      b:close()
   end)
end)
