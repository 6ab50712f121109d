-- PCIe native hot-plug on the board (vfio.vmm.board with vfio.vmm.hotplug's root ports):
-- empty ports for hotplug_slots and a port for a device seated behind one at boot, their
-- bridge windows from the board's allocator, the device's BARs inside them; device_add
-- and device_del driven to the end by a guest played here as Linux's pciehp plays it
-- (config accesses through the C host bridge), the release when the guest powers the
-- slot off and the surprise removal when it does not. Boards made with plan = true (no
-- VM: the MSIs are queued, not sent); the lab runs the same with a Linux guest.
local board = require "vfio.vmm.board"
local assigned = require "vfio.vmm.assigned"
local hotplug = require "vfio.vmm.hotplug"
local address_map = require "vfio.vmm.address_map"
local kvmhost = require "support.kvm"

local pciehp = require "support.pciehp"
local cfg, guest = pciehp.cfg, pciehp.guest

local function p_io(b) return b.ports[1].windows.io end

local function fixture(name) return assert(assigned.new("spec/fixtures/" .. name .. ".lua")) end

describe("root ports on the board", function()
   it("puts empty ports on bus 0 with bus numbers and windows from the allocator", function()
      local b = assert(board.new { plan = true, hotplug_slots = 2 })
      for i, slot in ipairs { 0x10, 0x11 } do
         assert.are.equal(0x06040000, cfg(b, 0, slot, 8, 4) & 0xffffff00)
         assert.are.equal(i << 16 | i << 8, cfg(b, 0, slot, 0x18, 4))
         local p = b.ports[i]
         local mem = p.windows.mmio32
         assert.is_true(mem.base >= address_map.MMIO32_START and mem.limit - mem.base + 1 == hotplug.WINDOWS.mem)
         assert.are.equal(mem.base >> 16, cfg(b, 0, slot, 0x20, 2))
         assert.are.equal(mem.limit >> 16 & 0xfff0, cfg(b, 0, slot, 0x22, 2))
         local pref = p.windows.mmio64
         assert.is_true(pref.base >= address_map.MMIO64_START)
         assert.are.equal(pref.base >> 32, cfg(b, 0, slot, 0x28, 4))
         assert.are.equal(0xffffffff, cfg(b, i, 0, 0, 4))   -- nothing behind it yet
      end
      assert.is_nil(p_io(b))                                    -- no I/O window when empty
      -- the windows of two ports do not overlap
      assert.is_true(b.ports[1].windows.mmio32.limit < b.ports[2].windows.mmio32.base)
      -- the MP table: each port's slot, all four pins
      local irqs = b:pci_irqs()
      assert.are.equal(8, #irqs)
      assert.are.same({ slot = 0x10, pin = 1, ioapic_pin = board.intx_gsi(0x10, 1) }, irqs[1])
      assert.matches("root port 00:10.0 %(slot 1, bus 1%): empty", b:plan())
      b:close()
   end)

   it("sizes a boot device's port to its BARs, bridge-wise", function()
      local MiB = 1 << 20
      assert.are.same({ mem = 32 * MiB, pref = 64 * MiB, io = 0x1000 }, hotplug.windows_for {
         [0] = { size = 16 * MiB }, [1] = { size = 8 * MiB, is64 = true },   -- not prefetchable: below 4 GiB
         [2] = { size = 0x20, io = true }, [4] = { size = 64 * MiB, is64 = true, prefetch = true },
         [5] = { size = 0, upper = true }, [6] = { size = 0x40000 } })
      assert.are.same(hotplug.WINDOWS, hotplug.windows_for {})
      assert.are.same({ "mmio32" }, hotplug.bridge_policy { size = 4096, prefetch = true })   -- 32-bit
   end)

   it("seats a device behind its own port at boot, its BARs in the port's windows", function()
      local b = assert(board.new { plan = true, hotplug_slots = 1 })
      local nvme, e1000e = fixture("nvme"), fixture("e1000e")
      assert(b:add_device(nvme))
      assert(b:add_device(e1000e, { port = true }))
      local where = b:where(e1000e)
      assert.are.same({ slot = 0, fn = 0, bus = 2, port = 1, intx_line = board.intx_gsi(0x11, e1000e:intx_pin()) },
                      where)
      assert.are.equal(4, b:where(nvme).slot)                 -- bus 0 devices unchanged
      local port = b.ports[2]
      assert.are.equal(e1000e.trap:cfg_read(0, 4), cfg(b, 2, 0, 0, 4))
      assert.are.equal(0xffffffff, cfg(b, 2, 1, 0, 4))
      for i, bar in pairs(e1000e.trap:bars()) do
         if bar.size > 0 and not bar.upper and i ~= 6 then
            local w = port.windows[bar.io and "io" or (bar.is64 and bar.prefetch) and "mmio64" or "mmio32"]
            assert.is_true(bar.addr >= w.base and bar.addr + bar.size - 1 <= w.limit, "BAR" .. i)
         end
      end
      assert.are.same({ present = true, powered = true, link_up = true }, (function()
         local st = port.rootport:state()
         return { present = st.present, powered = st.powered, link_up = st.link_up }
      end)())
      assert.matches("e1000e%.lua [^\n]*%-> guest 02:00%.0 %(behind root port 00:11%.0%)", b:plan())
      b:close()
   end)

   for _, via in ipairs { { "CF8/CFC", pciehp.cfg }, { "ECAM", pciehp.ecam } } do
      local how, conf = via[1], via[2]
      it("hot-adds into an empty port, and releases when the guest powers the slot off, config through "
         .. how, function()
         local b = assert(board.new { plan = true, hotplug_slots = 1 })
         local g = guest(b, 0x10, conf)
         g.probe()
         local released = {}
         for round = 1, 2 do
            local d = fixture("nvme")
            local p = assert(b:device_add(d, { on_release = function(x, surprise)
               released[#released + 1] = { x, surprise }
            end }))
            assert.are.equal("adding", p.state)
            assert.are.equal(0xffffffff, conf(b, 1, 0, 0, 4))      -- powered off: no link yet
            g.isr()                                                -- the button and presence
            g.power_on()
            assert.are.equal("on", p.state)
            assert.are.equal(d.trap:cfg_read(0, 4), conf(b, 1, 0, 0, 4))
            -- the guest assigns the BAR in the port's window and enables the device
            conf(b, 1, 0, 0x10, 4, p.windows.mmio32.base)
            conf(b, 1, 0, 0x14, 4, 0)
            conf(b, 1, 0, 0x04, 2, 0x0006)
            assert.are.equal(p.windows.mmio32.base, d.trap:bars()[0].addr)
            -- device_del: the button; pciehp unbinds, then powers the slot off
            assert(b:device_del(d))
            assert.are.equal("removing", p.state)
            g.isr()
            assert.are.equal(round - 1, #released)
            g.power_off()
            assert.are.equal(round, #released)
            assert.are.same({ d, nil }, released[round])
            assert.are.equal("empty", p.state)
            assert.is_nil(b:where(d))
            assert.is_true(d.closed)
            assert.are.equal(0xffffffff, conf(b, 1, 0, 0, 4))
            assert.is_false(p.rootport:state().present)
         end
         b:close()
      end)
   end

   it("reaches a device behind the last root port through ECAM: the board's highest bus", function()
      local ports = address_map.ECAM_BUSES - 1    -- every slot from hotplug.FIRST_SLOT
      local b = assert(board.new { plan = true, hotplug_slots = ports - 1 })
      local d = fixture("e1000e")
      assert(b:add_device(d, { port = true }))
      local bus = ports
      assert.are.equal(bus, b:where(d).bus)
      local slot = b.ports[ports].slot
      assert.are.equal(0x1f, slot)
      -- the port through ECAM on bus 0: its bus numbers route the last bus to it
      assert.are.equal(bus << 16 | bus << 8, pciehp.ecam(b, 0, slot, 0x18, 4))
      -- the device: the same config through ECAM as through CF8, the extended space only there
      assert.are.equal(d.trap:cfg_read(0, 4), pciehp.ecam(b, bus, 0, 0, 4))
      assert.are.equal(pciehp.cfg(b, bus, 0, 0, 4), pciehp.ecam(b, bus, 0, 0, 4))
      assert.are.equal(d.trap:cfg_read(8, 4), pciehp.ecam(b, bus, 0, 8, 4))
      assert.are.equal(d.trap:cfg_read(0x100, 4), pciehp.ecam(b, bus, 0, 0x100, 4))
      local _, v, _, bdf, off = b.host:access { space = "mmio", addr = pciehp.ecam_addr(bus, 0, 0, 0x100), size = 4 }
      assert.are.same({ d.trap:cfg_read(0x100, 4), bus << 8, 0x100 }, { v, bdf, off })
      -- a guest write through ECAM reaches it: the BAR moved inside the port's window
      local w = b.ports[ports].windows.mmio32
      local bar0 = d.trap:bars()[0]
      assert.is_true(bar0.addr >= w.base and bar0.addr <= w.limit)
      pciehp.ecam(b, bus, 0, 0x10, 4, w.limit + 1 - bar0.size)
      assert.are.equal(w.limit + 1 - bar0.size, d.trap:bars()[0].addr)
      -- nothing else on that bus, and the window ends with it: a bus past it is not the host's
      assert.are.equal(0xffffffff, pciehp.ecam(b, bus, 1, 0, 4))
      assert.are.equal(0xffffffff, pciehp.ecam(b, bus - 1, 0, 0x100, 4))  -- the port before is empty
      local handled = b.host:access { space = "mmio", addr = pciehp.ecam_addr(bus + 1, 0, 0, 0), size = 4 }
      assert.is_false(handled)
      assert.are.equal(address_map.ECAM_START + address_map.ECAM_SIZE, pciehp.ecam_addr(bus + 1, 0, 0, 0))
      b:close()
   end)

   it("removes by surprise a device the guest does not give back in time", function()
      local b = assert(board.new { plan = true, hotplug_slots = 2 })
      local g = guest(b, 0x11)
      g.probe()
      local d = fixture("e1000e")
      local surprised
      assert(b:device_add(d, { port = 1, on_release = function(_, s) surprised = s end }))
      g.isr()
      g.power_on()
      assert(b:device_del(d, { timeout = 0 }))
      assert.is_true(surprised)
      assert.is_nil(b:where(d))
      local st = b.ports[2].rootport:state()
      assert.is_false(st.present)
      assert.is_false(st.link_up)
      assert.are.equal(0x0108, st.slot_status & 0x0108)       -- presence and link changed
      b:close()
   end)

   it("gives a hot-added device's slots and ranges back in a VM once the slot is off #kvm", function()
      local b = board.new { mem_mib = 16, hotplug_slots = 1 }
      if not b then pending(kvmhost.REASON) return end
      local g = guest(b, 0x10)
      g.probe()                                                 -- its MSIs go to KVM now
      local d = fixture("nvme")
      local p = assert(b:device_add(d))
      g.isr()
      g.power_on()
      cfg(b, 1, 0, 0x10, 4, p.windows.mmio32.base)
      cfg(b, 1, 0, 0x14, 4, 0)
      cfg(b, 1, 0, 0x04, 2, 0x0006)
      assert(b:sync())                                          -- the config stop's work
      assert.is_not_nil(next(d.pieces))                         -- its BAR in the VM
      assert(b:device_del(d))
      g.isr()
      g.power_off()
      assert.is_true(d.closed)
      assert.is_nil(next(d.pieces))
      assert.is_nil(b:where(d))
      b:close()
   end)

   it("adds and deletes by name, as a device_add request names a device", function()
      local b = assert(board.new { plan = true, hotplug_slots = 1 })
      local g = guest(b, 0x10)
      g.probe()
      local gone = {}
      local p = assert(hotplug.add(b, "spec/fixtures/e1000e.lua", {
         on_release = function(name, surprise) gone[#gone + 1] = { name, surprise } end }))
      g.isr()
      g.power_on()
      assert.are.equal(0x10d38086, cfg(b, 1, 0, 0, 4))
      local ok, err = hotplug.del(b, "spec/fixtures/nvme.lua")
      assert.is_nil(ok)
      assert.matches("no device spec/fixtures/nvme%.lua on this board", err)
      assert(hotplug.del(b, "spec/fixtures/e1000e.lua"))
      g.isr()
      g.power_off()
      assert.are.same({ { "spec/fixtures/e1000e.lua", nil } }, gone)
      assert.are.equal("empty", p.state)
      -- a PCI address this host does not have: vfio.open's error, the port left empty
      local none, why, errno = hotplug.add(b, "0000:ff:1f.7")
      assert.is_nil(none)
      assert.matches("0000:ff:1f%.7", why)
      assert.are.equal(2, errno)
      assert.is_nil(p.device)
      b:close()
   end)

   it("refuses a hot-add with no empty port, and a removal of a device on bus 0", function()
      local b = assert(board.new { plan = true, hotplug_slots = 1 })
      assert(b:device_add(fixture("nvme")))
      local ok, err = b:device_add(fixture("e1000e"))
      assert.is_nil(ok)
      assert.matches("no empty hot%-plug slot", err)
      local d = fixture("edu")
      assert(b:add_device(d))
      ok, err = b:device_del(d)
      assert.is_nil(ok)
      assert.matches("not behind a root port", err)
      b:close()
   end)
end)
