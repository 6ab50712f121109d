-- An assigned device's interrupt wiring (vfio.vmm.assigned over vfio.vmm.irq's wiring,
-- the executor beside the router) follows the guest (INTx at start, MSI and MSI-X when the
-- guest enables them, back to INTx when it disables them, vectors reprogrammed in
-- place), driven here without KVM or VFIO: the device, the VM and the MSI-X table are
-- fakes that log what the wiring asks of them.
local assigned = require "vfio.vmm.assigned"
local irq = require "vfio.vmm.irq"

local function fds_text(fds)
   if type(fds) == "table" then return "{" .. table.concat(fds, ",") .. "}" end
   return tostring(fds)
end

-- A plan-only assigned device over the recorded edu (MSI, INTx pin A), seated as a
-- board seats it (slot 4, INTx line 10), with fakes wired in.
local function fake_device(opts)
   opts = opts or {}
   local log = {}
   local m = assert(assigned.new("spec/fixtures/edu.lua"))
   assert(m:seat { slot = 4, fn = 0, intx_line = 10 })
   local real = m.trap
   m.trap = {
      cfg_read = function(_, ...) return real:cfg_read(...) end,
      msix_entry = function(_, i) return 0xfee00000 | (i << 12), 0x50 + i end,
   }
   local vm = {
      set_msi_route = function(_, gsi, addr, data)
         log[#log + 1] = ("route %d %x %x"):format(gsi, addr, data)
         return true
      end,
      remove_route = function(_, gsi) log[#log + 1] = "unroute " .. gsi end,
      irqfd = function(_, gsi, o)
         log[#log + 1] = ("irqfd %d%s"):format(gsi, o.resample and " resample" or "")
         return {
            fileno = function() return 100 + gsi end,
            resample_fileno = function() return o.resample and 200 + gsi or nil end,
            close = function() log[#log + 1] = "irqfd close " .. gsi end,
         }
      end,
   }
   local router = irq.new(vm)
   m.dev = {
      set_irqs = function(_, index, action, start, count, fds)
         log[#log + 1] = ("set_irqs %d %s %d %d %s"):format(index, action, start, count,
            fds_text(fds))
         if opts.fail and opts.fail(index, action, count) then return nil, "boom", 5 end
         return true
      end,
      irq_info = function(_, i) return i == 0 and { count = 1 } or nil end,
      reset = function() log[#log + 1] = "reset" end,
   }
   m.start_irqs = function(self) return self:wire_irqs(router) end
   return m, log
end

local function take(log)
   local out = {}
   for i, l in ipairs(log) do out[i] = l; log[i] = nil end
   return out
end

describe("vfio.vmm.assigned interrupt wiring", function()
   it("starts with INTx, switches to MSI and back, and reprograms vectors in place", function()
      local m, log = fake_device()
      assert.is_true(m:start_irqs())
      assert.are.same({ "irqfd 10 resample", "set_irqs 0 trigger 0 1 110",
                        "set_irqs 0 unmask 0 1 210" }, take(log))
      assert.is_true(m:event { type = "msi_enable", enabled = true, count = 2,
                               addr = 0xfee00000, data = 0x41 })
      assert.are.same({ "set_irqs 0 trigger 0 0 nil",
                        "route 24 fee00000 40", "irqfd 24", "route 25 fee00000 41", "irqfd 25",
                        "set_irqs 1 trigger 0 2 {124,125}" }, take(log))
      assert.is_true(m:event { type = "msi_route", addr = 0xfee01000, data = 0x62 })
      assert.are.same({ "route 24 fee01000 62", "route 25 fee01000 63" }, take(log))
      assert.is_true(m:event { type = "msix_mask", vector = 0, addr = 1, data = 2 })
      assert.are.same({}, take(log))                       -- not in MSI-X mode: nothing
      assert.is_true(m:event { type = "msi_enable", enabled = false })
      assert.are.same({ "set_irqs 1 trigger 0 0 nil", "irqfd close 24", "unroute 24",
                        "irqfd close 25", "unroute 25",
                        "set_irqs 0 trigger 0 1 110", "set_irqs 0 unmask 0 1 210" }, take(log))
   end)

   it("takes MSI-X vectors from the table, updates one on a mask or route change", function()
      local m, log = fake_device()
      assert.is_true(m:start_irqs())
      take(log)
      assert.is_true(m:event { type = "msix_enable", enabled = true, count = 2 })
      assert.are.same({ "set_irqs 0 trigger 0 0 nil",
                        "route 24 fee00000 50", "irqfd 24", "route 25 fee01000 51", "irqfd 25",
                        "set_irqs 2 trigger 0 2 {124,125}" }, take(log))
      assert.is_true(m:event { type = "msix_route", vector = 1, addr = 0xfee02000, data = 0x70 })
      assert.are.same({ "route 25 fee02000 70" }, take(log))
      assert.is_true(m:event { type = "msix_mask", vector = 5, addr = 1, data = 2 })
      assert.are.same({}, take(log))                       -- no such vector
      assert.is_true(m:event { type = "msi_enable", enabled = false })
      assert.are.same({}, take(log))                       -- MSI was not on
      assert.is_true(m:event { type = "flr" })
      assert.are.same({ "reset" }, take(log))
      assert.is_true(m:event { type = "msix_enable", enabled = false })
      assert.are.same({ "set_irqs 2 trigger 0 0 nil", "irqfd close 24", "unroute 24",
                        "irqfd close 25", "unroute 25",
                        "set_irqs 0 trigger 0 1 110", "set_irqs 0 unmask 0 1 210" }, take(log))
   end)

   it("leaves the device without interrupts when VFIO refuses the vectors", function()
      local m, log = fake_device { fail = function(index, _, count) return index == 1 and count > 0 end }
      assert.is_true(m:start_irqs())
      take(log)
      local ok, err, errno = m:event { type = "msi_enable", enabled = true, count = 1,
                                       addr = 0xfee00000, data = 0x41 }
      assert.is_nil(ok)
      assert.are.same({ "boom", 5 }, { err, errno })
      assert.are.same({ "set_irqs 0 trigger 0 0 nil", "route 24 fee00000 41", "irqfd 24",
                        "set_irqs 1 trigger 0 1 {124}", "irqfd close 24", "unroute 24" },
                      take(log))
      -- nothing is on now: disabling MSI changes nothing, enabling MSI-X turns nothing off
      assert.is_true(m:event { type = "msi_enable", enabled = false })
      assert.are.same({}, take(log))
      assert.is_true(m:event { type = "msix_enable", enabled = true, count = 1 })
      assert.are.same({ "route 24 fee00000 50", "irqfd 24", "set_irqs 2 trigger 0 1 {124}" },
                      take(log))
   end)
end)

describe("vfio.vmm.irq.mode", function()
   it("turns trap events into actions and tracks the mode", function()
      local mode = irq.mode { intx = true }
      assert.are.same({ { "intx" } }, mode:start())
      local entries = { { addr = 0xfee00000, data = 0x40, masked = false },
                        { addr = 0xfee00000, data = 0x41, masked = false } }
      assert.are.same({ { "off", "intx" }, { "vectors", "msi", entries } },
         mode:event { type = "msi_enable", enabled = true, count = 2, addr = 0xfee00000, data = 0x41 })
      assert.are.same({ "msi", 2 }, { mode.kind, mode.n })
      assert.are.same({ { "update", 1, 1, 0x62 }, { "update", 2, 1, 0x63 } },
         mode:event { type = "msi_route", addr = 1, data = 0x62 })
      assert.are.same({ { "reset" } }, mode:event { type = "flr" })
      assert.are.same({ { "off", "msi" } }, mode:off())
      assert.are.same({}, mode:off())
   end)

   it("without INTx leaves the device with none between MSI and MSI-X", function()
      local mode = irq.mode()
      assert.are.same({}, mode:start())
      local read = function(i) return { addr = i, data = i } end
      assert.are.same({ { "vectors", "msix", { { addr = 0, data = 0, masked = false } } } },
         mode:event({ type = "msix_enable", enabled = true, count = 1 }, read))
      mode:failed()
      assert.are.equal("none", mode.kind)
      assert.are.same({}, mode:event { type = "msix_enable", enabled = false })
   end)
end)
