---
-- The machine's board: one KVM VM (RAM, irqchip, vCPU), its PCI host bridge (CF8/CFC and
-- ECAM, decoded in C), the GSI router, and the devices passed through into it, each a
-- vfio.vmm.machine on its own slot of bus 0 (the functions of one multi-function device
-- share a slot, as on the host). What devices share lives here, once:
--   - guest RAM is mapped for DMA once per VFIO container (devices of one IOMMU group,
--     or opened into one container, share it), at IOVA == guest-physical;
--   - each VFIO group joins the KVM VFIO device once;
--   - BARs come from one allocator, so no two devices overlap (the board places them as
--     firmware would before a guest that does not, such as Linux booted directly);
--   - the run handler gives a Lua-handled exit (one no range covers, or one a device's C
--     range passed on: a Lua quirk window) to the device whose trap claims it; after it,
--     and after a stop exit (a function asking for attention), every device's events are
--     carried out, and the BAR layouts are derived again only after an event that can
--     change them (a BAR moved, decoding toggled).
--
--   local b = board.new{mem_mib=, trace=fn}
--   b:add(machine [, slot [, fn]])   machine:start(b) is the same
--   b:assign(machines)        slots and functions for a whole device list, before adding
--   b:boot(path, opts)        multiboot guest;   b:close()
-- @module vfio.vmm.board
local address_map = require "vfio.vmm.address_map"
local pcibus = require "vfio.pcibus"
local vmlib = require "vfio.vmm.vm"
local pcihost = require "vfio.vmm.pcihost"
local irq = require "vfio.vmm.irq"
local layout = require "vfio.vmm.layout"

local M = {}
local Board = {}
Board.__index = Board

M.ECAM_BASE = address_map.ECAM_START -- below the 32-bit BAR window, above guest RAM
M.FIRST_SLOT = 4         -- devices from 00:04.0 on; 00:00.0 is the host bridge

-- The board's INTx wiring, the usual PCI swizzle: pin P (1 = INTA) of slot S is line
-- (S + P - 1) % 4 of four, so neighbouring slots spread over them. The lines are IOAPIC
-- pins 16-19 (what an IOAPIC guest such as Linux, told by the MP table, uses), or with
-- legacy lines ISA IRQs 10, 11, 5, 9, reachable through the PIC too (the multiboot test
-- program drives the PIC).
M.IOAPIC_LINES = { 16, 17, 18, 19 }
M.LEGACY_LINES = { 10, 11, 5, 9 }
--- The GSI of INTx pin (1 = INTA) of the device in slot, by the PCI swizzle over lines
-- (default `IOAPIC_LINES`).
function M.intx_gsi(slot, pin, lines)
   return (lines or M.IOAPIC_LINES)[(slot + pin - 1) % 4 + 1]
end

local function fail(self, what, err, errno)
   self:close()
   return nil, what .. tostring(err), errno
end

---
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
      machine = m, vm = m.vm, trace = opts.trace, devices = {}, by_devfn = {},
      dma = {}, groups = {}, next_slot = M.FIRST_SLOT, reserved = {},
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

--- A board (vfio.vmm.board.new): one VM, host bridge, GSI router and BAR allocator
-- shared by several passed-through devices.
-- @type Board

--- Format a line to the board's trace function, when it has one.
function Board:log(fmt, ...)
   if self.trace then self.trace(fmt:format(...)) end
end

---
-- board:slot_for([slot [, fn]]) -> slot, fn: a free function of bus 0 (the one asked
-- for if free; else function 0 of the next free slot).
function Board:slot_for(slot, fn)
   if slot then
      fn = fn or 0
      if self.by_devfn[slot << 3 | fn] then
         return nil, ("slot %d function %d is taken"):format(slot, fn)
      end
      return slot, fn
   end
   local function used(s)
      for f = 0, 7 do if self.by_devfn[s << 3 | f] then return true end end
      return self.reserved[s]
   end
   while used(self.next_slot) do self.next_slot = self.next_slot + 1 end
   if self.next_slot > 31 then return nil, "bus 0 has no free slot" end
   return self.next_slot, 0
end

--- Functions of the module.
-- @section functions

---
-- board.functions(bdfs) -> { {slot = index, fn = n, multifunction = bool}, ... }: where each
-- device of a list goes. Devices that are functions of one host slot (same domain, bus and
-- device number) share a guest slot, keeping their host function numbers when function 0
-- is among them (else renumbered from 0 in host order: a guest scans a slot's other
-- functions only when function 0 is there and says it is multi-function). Slot indexes
-- count from 0 in the order the first function of each slot appears; a device with no
-- PCI address (a recording) is a slot of its own.
function M.functions(bdfs)
   local groups, by_key, out = {}, {}, {}
   for i = 1, #bdfs do
      local b = bdfs[i]
      local key, f = nil, 0
      local bdf, at = pcibus.parse_bdf(b)
      if bdf then key, f = bdf:sub(1, -3), at.func end
      local g = key and by_key[key]
      if not g then
         g = { index = #groups, members = {} }
         groups[#groups + 1] = g
         if key then by_key[key] = g end
      end
      g.members[#g.members + 1] = { i = i, hostfn = f }
   end
   for _, g in ipairs(groups) do
      local has0 = false
      for _, mbr in ipairs(g.members) do if mbr.hostfn == 0 then has0 = true end end
      local order = { table.unpack(g.members) }
      table.sort(order, function(a, b) return a.hostfn < b.hostfn end)
      for n, mbr in ipairs(order) do
         local fn = has0 and mbr.hostfn or n - 1
         out[mbr.i] = { slot = g.index, fn = fn, multifunction = #g.members > 1 and fn == 0 }
      end
   end
   return out
end

--- More methods of Board.
-- @type Board

---
-- board:assign(machines): give a list of machines their slots and functions (see
-- board.functions) before they are added, so a multi-function device keeps its functions
-- together. Function 0 of a shared slot says it is multi-function.
function Board:assign(machines)
   local bdfs = {}
   for i, m in ipairs(machines) do bdfs[i] = m:host_bdf() or false end
   local placed = M.functions(bdfs)
   local base, err = self:slot_for()
   if not base then return nil, err end
   for i, m in ipairs(machines) do
      local p = placed[i]
      local slot = base + p.slot
      if slot > 31 then return nil, "bus 0 has no free slot" end
      m.assigned = { slot = slot, fn = p.fn }
      self.reserved[slot] = true
      if p.multifunction then
         local hdr = m.trap:cfg_read(0x0e, 1)
         local ok, serr = m.trap:set_config(0x0e, string.char(hdr | 0x80))
         if not ok then return nil, serr end
      end
   end
   return true
end

---
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

---
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

---
-- The INTx line of pin `pin` at `slot` on this board.
function Board:intx_line(slot, pin) return M.intx_gsi(slot, pin, self.intx_lines) end

---
-- board:register(machine, slot, fn): the machine's trap answers config at 00:slot.fn.
function Board:register(m, slot, fn)
   fn = fn or 0
   self.by_devfn[slot << 3 | fn] = m
   self.devices[#self.devices + 1] = m
   self.host:attach(0, slot, fn, m.trap)
end

---
-- board:add(machine [, slot [, fn]]) -> machine, or nil, message, errno: machine:start.
function Board:add(m, slot, fn)
   return m:start(self, slot, fn)
end

---
-- Place every device's BARs that the guest has not placed yet, as firmware would, and
-- turn decoding on (memory, I/O, bus master). For a guest that assigns nothing itself.
function Board:place_bars()
   for _, m in ipairs(self.devices) do
      local ok, err, errno = m:place_bars(self.bars)
      if not ok then return nil, err, errno end
   end
   return true
end

---
-- Bring every device's vectors in line with its trap, and after an event that can change
-- a BAR layout (a BAR moved, decoding toggled) every device's slots and ranges: a piece
-- that could not be placed (over another device's BAR) is tried again then.
function Board:sync()
   local changed = false
   for _, m in ipairs(self.devices) do
      local ok, c, errno = m:take_events()
      if not ok then return nil, c, errno end
      changed = changed or c
   end
   if changed then
      for _, m in ipairs(self.devices) do m:apply_layout() end
   end
   return true
end

--- After an access a handler passed on: sync the devices, logging a failure.
function Board:after_access()
   local ok, err = self:sync()
   if not ok then self:log("event handling failed: %s", tostring(err)) end
end

---
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
            local m = bdf and (bdf >> 8) == 0 and me.by_devfn[bdf & 0xff]
            if m then
               me:log("cfg  %s %03x/%d %s %0" .. (2 * size) .. "x (00:%02x.%d)",
                      x.write and "write" or "read ", off, size, x.write and "<-" or "->", value,
                      (bdf >> 3) & 31, bdf & 7)
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

---
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

--- The guest's console output so far (its machine's `output`).
function Board:output() return self.machine:output() end

---
-- board:boot_linux{kernel=, image= (its bytes, if read already), initrd=, append=, decompress=,
--   on_note=fn(text), timeout=,
--   should_stop=fn, slice=, on_slice=fn} -> result
-- (vfio.vmm.boot_linux's run): the PC platform on this board's VM, the MP table naming
-- every device's INTx line, the kernel loaded, and the run with this board's handler.
function Board:boot_linux(opts)
   local boot_linux = require "vfio.vmm.boot_linux"
   local pci_irqs, seen = {}, {}
   for _, m in ipairs(self.devices) do
      local pin = m:intx_pin()
      -- functions of one slot share its pins: one routing entry per slot and pin
      if pin ~= 0 and not seen[m.slot << 3 | pin] then
         seen[m.slot << 3 | pin] = true
         pci_irqs[#pci_irqs + 1] = { slot = m.slot, pin = pin, ioapic_pin = m.intx_line }
      end
   end
   local me = self
   local info, err, errno = boot_linux.setup(self.machine, {
      kernel = opts.kernel, image = opts.image, initrd = opts.initrd, append = opts.append, pcihost = self.host,
      decompress = opts.decompress, pci_irqs = pci_irqs, stdout = opts.stdout ~= false })
   if not info then return nil, err, errno end
   if self.machine.boot_note and opts.on_note then opts.on_note(self.machine.boot_note) end
   return boot_linux.run(self.machine, {
      timeout = opts.timeout, should_stop = opts.should_stop, slice = opts.slice,
      on_slice = opts.on_slice,
      handler = self:handler(opts.should_stop),
      on_stop = function() me:after_access() end })
end

---
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
