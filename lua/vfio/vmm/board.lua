-- The machine's board: one KVM VM (RAM, irqchip, vCPU), its PCI host bridge (CF8/CFC and
-- ECAM, decoded in C), the GSI router, and the devices passed through into it, each a
-- vfio.vmm.machine on its own slot of bus 0. What devices share lives here, once:
--   - guest RAM is mapped for DMA once per VFIO container (devices of one IOMMU group,
--     or opened into one container, share it), at IOVA == guest-physical;
--   - each VFIO group joins the KVM VFIO device once;
--   - BARs come from one allocator, so no two devices overlap (the board places them as
--     firmware would before a guest that does not, such as Linux booted directly);
--   - the run handler gives a Lua-handled exit to the device whose trap claims it, and a
--     stop exit (a function asking for attention) syncs every device.
--
--   local b = board.new{mem_mib=, trace=fn}
--   b:add(machine [, slot])   machine:start(b) is the same
--   b:boot(path, opts)        multiboot guest;   b:close()
local vmlib = require "vfio.vmm.vm"
local pcihost = require "vfio.vmm.pcihost"
local irq = require "vfio.vmm.irq"
local layout = require "vfio.vmm.layout"

local M = {}
local Board = {}
Board.__index = Board

M.ECAM_BASE = 0xb0000000 -- below the 32-bit BAR window, above guest RAM
M.FIRST_SLOT = 4         -- devices from 00:04.0 on; 00:00.0 is the host bridge

-- The board's INTx wiring, the usual PCI swizzle: pin P (1 = INTA) of slot S is line
-- (S + P - 1) % 4 of four, so neighbouring slots spread over them. The lines are IOAPIC
-- pins 16-19 (what an IOAPIC guest such as Linux, told by the MP table, uses), or with
-- legacy lines ISA IRQs 10, 11, 5, 9, reachable through the PIC too (the multiboot test
-- program drives the PIC).
M.IOAPIC_LINES = { 16, 17, 18, 19 }
M.LEGACY_LINES = { 10, 11, 5, 9 }
function M.intx_gsi(slot, pin, lines)
   return (lines or M.IOAPIC_LINES)[(slot + pin - 1) % 4 + 1]
end

local function fail(self, what, err, errno)
   self:close()
   return nil, what .. tostring(err), errno
end

-- board.new{mem_mib = 64, trace = fn(line), legacy_intx = false, vm = opts for
--   vfio.vmm.vm.create} -> board, or nil, message, errno.
function M.new(opts)
   opts = opts or {}
   local vmopts = {}
   for k, v in pairs(opts.vm or {}) do vmopts[k] = v end
   vmopts.mem_mib = opts.mem_mib or vmopts.mem_mib or 64
   local m, err, errno = vmlib.create(vmopts)
   if not m then return nil, err, errno end
   local b = setmetatable({
      machine = m, vm = m.vm, trace = opts.trace, devices = {}, by_slot = {},
      dma = {}, groups = {}, next_slot = M.FIRST_SLOT,
      intx_lines = opts.legacy_intx and M.LEGACY_LINES or M.IOAPIC_LINES,
      bars = layout.new(opts.windows and { windows = opts.windows } or nil),
   }, Board)
   b.router = irq.new(b.vm)
   -- One host bridge decode (vfio.core.pcihost, in C): installed as handled ranges, or
   -- in --trace mode reached through the Lua run handler, which logs what it decoded.
   b.host = pcihost.new { ecam_base = M.ECAM_BASE }
   b.host:attach(0, 0, 0, pcihost.host_bridge())
   if not b.trace then
      local ids
      ids, err, errno = pcihost.install(b.vm, b.host)
      if not ids then return fail(b, "PCI host bridge: ", err, errno) end
      b.host_ranges = ids
   end
   return b
end

function Board:log(fmt, ...)
   if self.trace then self.trace(fmt:format(...)) end
end

-- board:slot_for(machine [, slot]) -> a free slot of bus 0 (the one asked for if free).
function Board:slot_for(slot)
   if slot then
      if self.by_slot[slot] then return nil, ("slot %d is taken"):format(slot) end
      return slot
   end
   while self.by_slot[self.next_slot] do self.next_slot = self.next_slot + 1 end
   if self.next_slot > 31 then return nil, "bus 0 has no free slot" end
   return self.next_slot
end

-- Guest RAM mapped for DMA in `container`, once per container.
function Board:map_dma(container)
   if not container or self.dma[container] then return true end
   local done = {}
   for _, s in ipairs(self.vm:memory()) do
      if s.ram then
         local ok, err, errno = container:map_dma(self.vm, s.gpa, { gpa = s.gpa, size = s.size,
                                                                    read = true, write = true })
         if not ok then
            for _, d in ipairs(done) do pcall(container.unmap_dma, container, d.gpa, d.size) end
            return nil, "DMA map of guest RAM: " .. tostring(err), errno
         end
         done[#done + 1] = s
      end
   end
   self.dma[container] = done
   return true
end

-- The KVM VFIO device learns the group once (KVM's bookkeeping for non-coherent DMA): a
-- group, or a device opened through its cdev (the same attribute takes either file).
function Board:add_group(group)
   if not group or self.groups[group] ~= nil then return end
   local vm = self.vm
   self.groups[group] = false
   if vm:check_extension("device_ctrl") then
      if not self.vfio_device then self.vfio_device = vm:vfio_device() end
      if self.vfio_device and vm:vfio_group_add(group:fileno()) then self.groups[group] = true end
   end
end

-- The INTx line of pin `pin` at `slot` on this board.
function Board:intx_line(slot, pin) return M.intx_gsi(slot, pin, self.intx_lines) end

-- board:register(machine, slot): the machine's trap answers config at 00:slot.0.
function Board:register(m, slot)
   self.by_slot[slot] = m
   self.devices[#self.devices + 1] = m
   self.host:attach(0, slot, 0, m.trap)
end

-- board:add(machine [, slot]) -> machine, or nil, message, errno: machine:start(board).
function Board:add(m, slot)
   return m:start(self, slot)
end

-- Place every device's BARs that the guest has not placed yet, as firmware would, and
-- turn decoding on (memory, I/O, bus master). For a guest that assigns nothing itself.
function Board:place_bars()
   for _, m in ipairs(self.devices) do
      local ok, err, errno = m:place_bars(self.bars)
      if not ok then return nil, err, errno end
   end
   return true
end

-- Bring every device's slots, ranges and vectors in line with its trap.
function Board:sync()
   for _, m in ipairs(self.devices) do
      local ok, err, errno = m:sync()
      if not ok then return nil, err, errno end
   end
   return true
end

function Board:after_access()
   local ok, err = self:sync()
   if not ok then self:log("event handling failed: %s", tostring(err)) end
end

-- The run handler for exits C leaves to Lua: the host bridge in --trace mode, then the
-- device whose trap claims the access. should_stop() true ends the run.
function Board:handler(should_stop)
   local me = self
   local host = self.trace and self.host
   return function(x)
      if should_stop and should_stop() then return false end
      if host then
         local handled, v, _, bdf, off, size, value = host:access(x)
         if handled then
            local m = bdf and (bdf & 7) == 0 and (bdf >> 8) == 0 and me.by_slot[(bdf >> 3) & 31]
            if m then
               me:log("cfg  %s %03x/%d %s %0" .. (2 * size) .. "x (00:%02x.0)",
                      x.write and "write" or "read ", off, size, x.write and "<-" or "->", value,
                      (bdf >> 3) & 31)
            end
            me:after_access()
            return v
         end
      end
      if x.count and x.count > 1 then return nil end
      for _, m in ipairs(me.devices) do
         local hit, v = m:lua_access(x)
         if hit then
            me:after_access()
            return v
         end
      end
      return nil
   end
end

-- board:boot(path, {cmdline=, timeout=, should_stop=fn}) -> result (vfio.vmm.vm boot).
function Board:boot(path, opts)
   opts = opts or {}
   local me = self
   return self.machine:boot(path, {
      cmdline = opts.cmdline, timeout = opts.timeout,
      handler = self:handler(opts.should_stop),
      on_stop = function() me:after_access() end,
   })
end

function Board:output() return self.machine:output() end

-- board:boot_linux{kernel=, initrd=, append=, timeout=, should_stop=fn, slice=, on_slice=fn}
--   -> result
-- (vfio.vmm.boot_linux's run): the PC platform on this board's VM, the MP table naming
-- every device's INTx line, the kernel loaded, and the run with this board's handler.
function Board:boot_linux(opts)
   local boot_linux = require "vfio.vmm.boot_linux"
   local pci_irqs = {}
   for _, m in ipairs(self.devices) do
      local pin = m:intx_pin()
      if pin ~= 0 then pci_irqs[#pci_irqs + 1] = { slot = m.slot, pin = pin, ioapic_pin = m.intx_line } end
   end
   local me = self
   local info, err, errno = boot_linux.setup(self.machine, {
      kernel = opts.kernel, initrd = opts.initrd, append = opts.append, pcihost = self.host,
      pci_irqs = pci_irqs, stdout = opts.stdout ~= false })
   if not info then return nil, err, errno end
   return boot_linux.run(self.machine, {
      timeout = opts.timeout, should_stop = opts.should_stop, slice = opts.slice,
      on_slice = opts.on_slice,
      handler = self:handler(opts.should_stop),
      on_stop = function() me:after_access() end })
end

-- Teardown: the devices (interrupts, slots, ranges), then DMA mappings, the KVM VFIO
-- groups, the host bridge ranges, the VM. Idempotent; errors do not stop the rest.
function Board:close()
   if self.closed then return end
   self.closed = true
   for i = #self.devices, 1, -1 do pcall(self.devices[i].close, self.devices[i]) end
   if self.router then pcall(self.router.close, self.router) end
   for container, list in pairs(self.dma) do
      for _, s in ipairs(list) do pcall(container.unmap_dma, container, s.gpa, s.size) end
   end
   self.dma = {}
   for group, added in pairs(self.groups) do
      if added then pcall(self.vm.vfio_group_del, self.vm, group:fileno()) end
   end
   self.groups = {}
   for _, id in ipairs(self.host_ranges or {}) do pcall(self.vm.remove_range, self.vm, id) end
   self.host_ranges = nil
   if self.machine then self.machine:close() end
end
Board.__close = Board.close
Board.__gc = Board.close

return M
