-- Interrupt masking, as PCI defines it and Linux relies on: a masked MSI-X vector (its own
-- mask or the function mask) or a masked MSI vector never reaches the guest; what it
-- fires meanwhile shows in the PBA (or MSI's pending bits); the pending message is
-- delivered once when the vector is unmasked. The trap core and the interrupt mode are
-- checked on recorded devices; the delivery path uses the host's /dev/kvm (irqfds on
-- MSI routes of a VM with an in-kernel irqchip) and says so when it is absent.
local fixture = require "support.fixture"
local assigned = require "vfio.vmm.assigned"
local irq = require "vfio.vmm.irq"
local record = require "vfio.record"
local core = require "vfio.core"
local kvmhost = require "support.kvm"

local function only(list, typ)
   local out = {}
   for _, e in ipairs(list) do if e.type == typ then out[#out + 1] = e end end
   return out
end

-- A VM with an in-kernel irqchip, or nil when the host cannot make one.
local function kvm_vm()
   local vm, kvm = kvmhost.vm()
   if not vm or not vm:add_ram(0, 0x10000) or not vm:create_irqchip() then return nil end
   return vm, kvm
end

describe("vfio.vmm.irq.mode masking", function()
   local function read(masked)
      return function(i) return { addr = 0xfee00000, data = 0x40 + i, masked = masked[i] } end
   end

   it("starts MSI-X vectors masked as the table and the function mask say", function()
      local mode = irq.mode()
      local acts = mode:event({ type = "msix_enable", enabled = true, count = 3, fmask = false },
                              read { [1] = true })
      local entries = acts[1][3]
      assert.are.same({ false, true, false },
                      { entries[1].masked, entries[2].masked, entries[3].masked })
      mode:off()
      acts = mode:event({ type = "msix_enable", enabled = true, count = 2, fmask = true }, read {})
      assert.are.same({ true, true }, { acts[1][3][1].masked, acts[1][3][2].masked })
   end)

   it("follows vector and function masks, emitting only changes of the effective mask", function()
      local mode = irq.mode()
      mode:event({ type = "msix_enable", enabled = true, count = 2, fmask = false }, read {})
      local function masks(acts)
         local out = {}
         for _, a in ipairs(acts) do if a[1] == "mask" then out[#out + 1] = { a[2], a[3] } end end
         return out
      end
      local ev = { type = "msix_mask", vector = 1, masked = true, addr = 0xfee00000, data = 0x41 }
      assert.are.same({ { 2, true } }, masks(mode:event(ev)))
      assert.are.same({}, masks(mode:event(ev)))                      -- already masked
      -- the function mask masks vector 1 too; vector 2 stays masked by its own bit
      assert.are.same({ { 1, true } }, masks(mode:event { type = "msix_fmask", masked = true }))
      ev.masked = false
      assert.are.same({}, masks(mode:event(ev)))                      -- fmask still holds it
      assert.are.same({ { 1, false }, { 2, false } },
                      masks(mode:event { type = "msix_fmask", masked = false }))
      assert.are.same({}, masks(mode:event { type = "msix_mask", vector = 7, masked = true }))
   end)

   it("takes MSI's mask bits at enable and follows them", function()
      local mode = irq.mode()
      local acts = mode:event { type = "msi_enable", enabled = true, count = 2, addr = 0xfee00000,
                                data = 0x40, mask = 2 }
      assert.are.same({ false, true }, { acts[1][3][1].masked, acts[1][3][2].masked })
      assert.are.same({ { "mask", 2, false } },
                      mode:event { type = "msi_mask", vector = 1, masked = false })
      assert.are.same({}, mode:event { type = "msix_mask", vector = 0, masked = true })
   end)
end)

describe("trap pending sources #kvm", function()
   it("shows a masked MSI-X vector's eventfd count in the PBA, without consuming it", function()
      local vm, kvm = kvm_vm()
      if not vm then pending(kvmhost.REASON) return end
      local t = fixture.trap("nvme")
      local m = t:msix()
      local q = assert(vm:irqfd(30))
      assert(q:detach())
      assert.is_true(t:set_source("msix", 64, q))
      assert.are.equal(0, t:bar_read(m.pba_bar, m.pba_off + 8, 8))
      assert(q:trigger())                                  -- the device fires while masked
      assert.are.equal(1, t:bar_read(m.pba_bar, m.pba_off + 8, 8))
      assert.are.equal(1, t:bar_read(m.pba_bar, m.pba_off + 8, 1))
      assert.are.equal(0, t:bar_read(m.pba_bar, m.pba_off, 8))   -- other vectors: clear
      assert.are.equal(1, q:take())                        -- the read did not consume it
      assert.are.equal(0, t:bar_read(m.pba_bar, m.pba_off + 8, 8))
      assert(q:trigger())
      q:close()                                            -- a closed source is not pending
      assert.are.equal(0, t:bar_read(m.pba_bar, m.pba_off + 8, 8))
      assert.has_error(function() t:set_source("msix", 0, q) end)
      assert.has_error(function() t:set_source("msix", 0, core.eventfd()) end) -- not an irqfd
      assert.is_nil(t:set_source("msix", 65, nil))         -- no such vector
      vm:close(); kvm:close()
   end)

   it("shows a masked MSI vector's eventfd count in the pending bits", function()
      local vm, kvm = kvm_vm()
      if not vm then pending(kvmhost.REASON) return end
      -- edu with the per-vector-mask bit set: a modified recording (no lab device has it)
      local fx = fixture.load("edu")
      local flags = fixture.cfg(fx, 0x42, 2) | 0x100
      local t = fixture.trap(record.patch(fx, 0x42, string.char(flags & 0xff, flags >> 8)))
      local q = assert(vm:irqfd(31))
      assert(q:detach())
      assert.is_true(t:set_source("msi", 0, q))
      assert.are.equal(0, t:cfg_read(0x54, 4))
      assert(q:trigger())
      assert.are.equal(1, t:cfg_read(0x54, 4))
      assert.are.equal(1, t:cfg_read(0x54, 1))
      assert.is_true(t:set_source("msi", 0, nil))
      assert.are.equal(0, t:cfg_read(0x54, 4))
      vm:close(); kvm:close()
   end)
end)

describe("assigned device MSI-X masking over a real irqchip #kvm", function()
   -- The trap is the recorded e1000e (5 MSI-X vectors, table in BAR3); the VM, its GSI
   -- routes and irqfds are real (host /dev/kvm); the device side is a fake that logs the
   -- eventfds VFIO would be given, and the test fires them as the device would.
   local function setup()
      local vm, kvm = kvm_vm()
      if not vm then return nil end
      local m = assert(assigned.new("spec/fixtures/e1000e.lua"))
      -- BARs placed as a board places them (its allocator, then programmed)
      assert(m:program_bars(assert(require("vfio.vmm.layout").new():place(m:bars()))))
      local given = {}
      m.dev = {
         set_irqs = function(_, index, action, _, count)
            given[#given + 1] = ("%d %s %d"):format(index, action, count)
            return true
         end,
         irq_info = function() return nil end,
      }
      assert(m:wire_irqs(irq.new(vm)))
      local function sync()
         for _, e in ipairs(m.trap:events()) do assert(m:event(e)) end
      end
      return m, sync, vm, kvm
   end

   it("keeps a masked vector from the guest, sets its PBA bit, delivers it on unmask", function()
      local m, sync, vm, kvm = setup()
      if not m then pending(kvmhost.REASON) return end
      local t, x = m.trap, m.trap:msix()
      local tb, pba = x.table_off, x.pba_off
      for v = 0, 1 do                                       -- program vectors 0 and 1
         t:bar_write(3, tb + 16 * v, 8, 0xfee00000)
         t:bar_write(3, tb + 16 * v + 8, 4, 0x30 + v)
      end
      t:bar_write(3, tb + 12, 4, 0)                         -- unmask vector 0 only
      t:cfg_write(x.off + 2, 2, 0x8000)                     -- enable MSI-X
      sync()
      local v0, v1 = m.irqs.vectors[1], m.irqs.vectors[2]
      assert.is_false(v0:masked())
      assert.is_true(v1:masked())                           -- masked in the table at enable
      -- vector 1 fires while masked: pending in the PBA, the guest gets nothing
      assert(v1.irqfd:trigger())
      assert.are.equal(2, t:bar_read(3, pba, 8))
      -- vector 0 fires unmasked: KVM takes it at once, nothing is pending
      assert(v0.irqfd:trigger())
      assert.are.equal(0, v0.irqfd:take())
      -- unmask vector 1: the pending message goes to the guest (KVM consumes it)
      t:bar_write(3, tb + 16 + 12, 4, 0)
      sync()
      assert.is_false(v1:masked())
      assert.are.equal(0, t:bar_read(3, pba, 8))
      assert.are.equal(0, v1.irqfd:take())
      -- the function mask keeps every vector from the guest
      t:cfg_write(x.off + 2, 2, 0xc000)
      sync()
      assert.is_true(v0:masked()); assert.is_true(v1:masked())
      assert(v0.irqfd:trigger())
      assert.are.equal(1, t:bar_read(3, pba, 8))
      t:cfg_write(x.off + 2, 2, 0x8000)
      sync()
      assert.is_false(v0:masked())
      assert.are.equal(0, t:bar_read(3, pba, 8))
      assert.are.equal(0, v0.irqfd:take())
      -- disabling MSI-X drops the vectors and the trap's sources
      t:bar_write(3, tb + 12, 4, 1)
      sync()
      assert.is_true(v0:masked())
      t:cfg_write(x.off + 2, 2, 0)
      sync()
      assert.is_nil(m.irqs.vectors)
      assert.are.equal(0, #only(m.trap:events(), "msix_mask"))
      vm:close(); kvm:close()
   end)
end)
