---
-- The board: the composition root of a machine. It builds the VM (vfio.vmm.vm: RAM,
-- irqchip, vCPUs), the PCI host bridge (CF8/CFC and ECAM, decoded in C), the GSI router
-- (vfio.vmm.irq) and the BAR allocator (vfio.vmm.layout), and a device enters the machine
-- only by being added to it (board:add_device), each a vfio.vmm.assigned device on its
-- own slot of bus 0 (the functions of one multi-function device share a slot, as on the
-- host). One device is a board with one device. What devices share lives here, once:
--   - where each device sits (slot, function) and its INTx line, by the PCI swizzle over
--     the board's lines (IOAPIC pins for a Linux guest, legacy ISA IRQs for the
--     multiboot test program);
--   - BARs are placed by the one allocator, as firmware would before a guest that does
--     not (Linux booted directly), so no two devices overlap;
--   - guest RAM is mapped for DMA once per VFIO container (devices of one IOMMU group,
--     or opened into one container, share it), at IOVA == guest-physical;
--   - each VFIO group joins the KVM VFIO device once;
--   - the run handler gives a Lua-handled exit (one no range covers, or one a device's C
--     range passed on: a Lua quirk window) to the device whose trap claims it; after it,
--     and after a stop exit (a function asking for attention), every device's events are
--     carried out, and the BAR layouts are derived again only after an event that can
--     change them (a BAR moved, decoding toggled).
-- A board with `plan = true` has no VM: it seats the devices and places their BARs as a
-- real one would, and board:plan() says what the run would make of them.
--
--   local b = board.new{mem_mib=, trace=fn, legacy_intx=, vm={cpus=}, halt_poll_us=}
--   b:add_devices{d1, d2...}   b:add_device(d [, {slot=, fn=}])   b:remove_device(d)
--   b:boot(path, opts) (multiboot)   b:boot_linux(opts)   b:plan()   b:close()
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

-- The largest guest RAM: it starts at 0 and must end below the hole, which begins with
-- the ECAM window (the VM's address map refuses overlaps as well, csrc/kvm/vm.c).
M.MAX_MEM_MIB = address_map.HOLE_START >> 20

---
-- board.check_mem(mib) -> true, or nil, message: guest RAM of mib MiB fits this board
-- (2 to MAX_MEM_MIB).
function M.check_mem(mib)
   if math.type(mib) ~= "integer" or mib < 2 or mib > M.MAX_MEM_MIB then
      return nil, ("guest RAM of %s MiB: it must be 2 to %d MiB (above, it would cover the ECAM"
         .. " window at %#x)"):format(tostring(mib), M.MAX_MEM_MIB, M.ECAM_BASE)
   end
   return true
end

local fail = require("vfio.errors").fail

-- A failure while the board is being made: what was made is closed.
local function close_fail(self, what, err, errno)
   self:close()
   return fail(errno, "%s%s", what, tostring(err))
end

---
-- board.new{mem_mib = 64, trace = fn(line), legacy_intx = false, vm = opts for
--   vfio.vmm.vm.create (cpus=), halt_poll_us = n, windows = BAR windows, plan = true: no
--   VM, for board:plan()} -> board, or nil, message, errno.
function M.new(opts)
   opts = opts or {}
   local mib = opts.mem_mib or (opts.vm and opts.vm.mem_mib) or 64
   local okm, why = M.check_mem(mib)
   if not okm then return nil, why end
   local b = setmetatable({
      trace = opts.trace, mem_mib = mib, devices = {}, by_devfn = {}, seats = {},
      dma = {}, groups = {}, next_slot = M.FIRST_SLOT, reserved = {},
      intx_lines = opts.legacy_intx and M.LEGACY_LINES or M.IOAPIC_LINES,
      bars = layout.new(opts.windows and { windows = opts.windows } or nil),
   }, Board)
   -- One host bridge decode (vfio.core.pcihost, in C): installed as handled ranges, or
   -- in --trace mode reached through the Lua run handler, which logs what it decoded.
   b.host = pcihost.new { ecam_base = M.ECAM_BASE }
   b.host:attach(0, 0, 0, pcihost.host_bridge())
   if opts.plan then return b end
   local vmopts = {}
   for k, v in pairs(opts.vm or {}) do vmopts[k] = v end
   vmopts.mem_mib = mib
   local m, err, errno = vmlib.create(vmopts)
   if not m then return nil, err, errno end
   b.machine, b.vm = m, m.vm
   b.router = irq.new(b.vm)
   if opts.halt_poll_us then
      local ok
      ok, err, errno = b.vm:set_halt_poll(opts.halt_poll_us * 1000)
      if not ok then return close_fail(b, "", err, errno) end
   end
   if not b.trace then
      local ids
      ids, err, errno = pcihost.install(b.vm, b.host)
      if not ids then return close_fail(b, "PCI host bridge: ", err, errno) end
      b.host_ranges = ids
   end
   return b
end

--- A board (vfio.vmm.board.new): the VM, host bridge, GSI router and BAR allocator, and
-- the devices added to it.
-- @type Board

--- Format a line to the board's trace function, when it has one.
function Board:log(fmt, ...)
   if self.trace then self.trace(fmt:format(...)) end
end

-- Whether any function of bus 0's `slot` holds a device.
local function slot_occupied(self, slot)
   for f = 0, 7 do if self.by_devfn[slot << 3 | f] then return true end end
   return false
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
   while slot_occupied(self, self.next_slot) or self.reserved[self.next_slot] do
      self.next_slot = self.next_slot + 1
   end
   if self.next_slot > 31 then return nil, "bus 0 has no free slot" end
   return self.next_slot, 0
end

---
-- The INTx line of pin `pin` at `slot` on this board.
function Board:intx_line(slot, pin) return M.intx_gsi(slot, pin, self.intx_lines) end

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
-- board:add_device(d [, {slot=, fn=, multifunction=}]) -> d, or nil, message, errno: the
-- one way a device (vfio.vmm.assigned) enters the machine. It is seated on a free
-- function of bus 0 (the one asked for, else the next free slot) with its INTx line,
-- its config space attached to the host bridge, its BARs placed by the board's
-- allocator and programmed, and in a VM its group known to KVM, guest RAM mapped for its
-- DMA, its interrupts wired on the router and its BARs made slots and ranges. On failure what
-- this call did is undone (the device itself stays open: the caller's).
function Board:add_device(d, at)
   at = at or {}
   local s, f = self:slot_for(at.slot, at.fn)
   if not s then return nil, f end
   local pin = d:intx_pin()
   local seat = { slot = s, fn = f, intx_line = pin ~= 0 and self:intx_line(s, pin) or nil,
                  multifunction = at.multifunction }
   local ok, err, errno = d:seat(seat)
   if not ok then return nil, err, errno end
   self.by_devfn[s << 3 | f] = d
   self.devices[#self.devices + 1] = d
   self.seats[d] = seat
   self.host:attach(0, s, f, d:config_function())
   seat.bars, err = self.bars:place(d:bars())
   if not seat.bars then
      self:remove_device(d)
      return nil, err
   end
   ok, err, errno = d:program_bars(seat.bars)
   if ok and self.vm then
      self:add_group(d:kvm_file())
      ok, err, errno = self:map_dma(d:dma_container())
      if ok then ok, err, errno = d:connect(self.vm, self.router) end
   end
   if not ok then
      self:remove_device(d)
      return nil, err, errno
   end
   return d
end

---
-- board:add_devices(list) -> true, or nil, message, errno: add every device of a list,
-- keeping the functions of one host slot together on one guest slot (board.functions),
-- function 0 of a shared slot saying it is multi-function.
function Board:add_devices(list)
   local bdfs = {}
   for i, d in ipairs(list) do bdfs[i] = d:host_bdf() or false end
   local placed = M.functions(bdfs)
   local base, err = self:slot_for()
   if not base then return nil, err end
   for i in ipairs(list) do
      local slot = base + placed[i].slot
      if slot > 31 then return nil, "bus 0 has no free slot" end
      self.reserved[slot] = true
   end
   for i, d in ipairs(list) do
      local p = placed[i]
      local ok, aerr, errno = self:add_device(d, { slot = base + p.slot, fn = p.fn,
                                                  multifunction = p.multifunction })
      if not ok then return nil, aerr, errno end
   end
   return true
end

---
-- board:remove_device(d): the reverse of add_device: the device out of the VM (its
-- interrupts, GSIs, slots and ranges), its config space off the host bridge, its BAR
-- ranges and its slot free for another. The device stays open (the caller's). DMA
-- mappings and KVM's group stay while the board lives (another device may share them).
function Board:remove_device(d)
   local seat = self.seats[d]
   if not seat then return end
   pcall(d.disconnect, d)
   self.bars:free(seat.bars)
   pcall(self.host.detach, self.host, 0, seat.slot, seat.fn)
   self.by_devfn[seat.slot << 3 | seat.fn] = nil
   if not slot_occupied(self, seat.slot) then
      self.reserved[seat.slot] = nil
      if seat.slot < self.next_slot then self.next_slot = math.max(M.FIRST_SLOT, seat.slot) end
   end
   self.seats[d] = nil
   for i, x in ipairs(self.devices) do
      if x == d then table.remove(self.devices, i) break end
   end
end

---
-- Where the board put a device: {slot=, fn=, intx_line=} (nil when it is not on it).
function Board:where(d)
   local seat = self.seats[d]
   return seat and { slot = seat.slot, fn = seat.fn, intx_line = seat.intx_line }
end

---
-- The plan: what the run would make of every device (its guest address, the host bridge,
-- RAM, BARs with their mapped and trapped parts, interrupts, quirks), as text.
function Board:plan()
   local out = {}
   for _, d in ipairs(self.devices) do
      local seat, desc = self.seats[d], d:describe()
      out[#out + 1] = ("device %s -> guest 00:%02x.%d"):format(desc.id, seat.slot, seat.fn)
      out[#out + 1] = ("host bridge 00:00.0, config: CF8/CFC and ECAM at %#x"):format(M.ECAM_BASE)
      out[#out + 1] = ("guest RAM %d MiB at 0x0, mapped for device DMA at IOVA == GPA")
         :format(self.mem_mib)
      for _, l in ipairs(desc.lines) do out[#out + 1] = l end
   end
   return #out > 0 and table.concat(out, "\n") .. "\n" or ""
end

---
-- Bring every device's vectors in line with its trap, and after an event that can change
-- a BAR layout (a BAR moved, decoding toggled) every device's slots and ranges: a piece
-- that could not be placed (over another device's BAR) is tried again then.
function Board:sync()
   local changed = false
   for _, d in ipairs(self.devices) do
      local ok, c, errno = d:take_events()
      if not ok then return nil, c, errno end
      changed = changed or c
   end
   if changed then
      for _, d in ipairs(self.devices) do d:apply_layout() end
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
            local d = bdf and (bdf >> 8) == 0 and me.by_devfn[bdf & 0xff]
            if d then
               me:log("cfg  %s %03x/%d %s %0" .. (2 * size) .. "x (00:%02x.%d)",
                      x.write and "write" or "read ", off, size, x.write and "<-" or "->", value,
                      (bdf >> 3) & 31, bdf & 7)
            end
            me:after_access()
            return v
         end
      end
      if x.count and x.count > 1 then return nil end
      for _, d in ipairs(me.devices) do
         local hit, v = d:lua_access(x)
         if hit then
            me:after_access()
            return v
         end
      end
      return nil
   end
end

---
-- board:boot(path, {cmdline=, timeout=, should_stop=fn}) -> result (vfio.vmm.vm boot): a
-- multiboot guest.
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
function Board:output() return self.machine and self.machine:output() or "" end

---
-- The MP table's PCI interrupt entries ({slot=, pin=, ioapic_pin=}...): every device's
-- INTx line, one per slot and pin (functions of one slot share its pins).
function Board:pci_irqs()
   local out, seen = {}, {}
   for _, d in ipairs(self.devices) do
      local pin, seat = d:intx_pin(), self.seats[d]
      if pin ~= 0 and not seen[seat.slot << 3 | pin] then
         seen[seat.slot << 3 | pin] = true
         out[#out + 1] = { slot = seat.slot, pin = pin, ioapic_pin = seat.intx_line }
      end
   end
   return out
end

---
-- board:boot_linux{kernel=, image= (its bytes, if read already), initrd=, append=, decompress=,
--   on_note=fn(text), timeout=,
--   should_stop=fn, slice=, on_slice=fn} -> result
-- (vfio.vmm.boot_linux's run): the PC platform on this board's VM, the MP table naming
-- every device's INTx line, the kernel loaded, and the run with this board's handler.
function Board:boot_linux(opts)
   local boot_linux = require "vfio.vmm.boot_linux"
   local me = self
   local info, err, errno = boot_linux.setup(self.machine, {
      kernel = opts.kernel, image = opts.image, initrd = opts.initrd, append = opts.append, pcihost = self.host,
      decompress = opts.decompress, pci_irqs = self:pci_irqs(), stdout = opts.stdout ~= false })
   if not info then return nil, err, errno end
   if self.machine.boot_note and opts.on_note then opts.on_note(self.machine.boot_note) end
   return boot_linux.run(self.machine, {
      timeout = opts.timeout, should_stop = opts.should_stop, slice = opts.slice,
      on_slice = opts.on_slice,
      handler = self:handler(opts.should_stop),
      on_stop = function() me:after_access() end })
end

---
-- Teardown: the devices (out of the VM, then closed: interrupts, slots, ranges, traps),
-- then DMA mappings, the KVM VFIO groups, the host bridge ranges, the VM. Idempotent;
-- errors do not stop the rest.
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

return M
