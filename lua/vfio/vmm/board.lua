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
--     or opened into one container, share it), at IOVA == guest-physical, each of its
--     ranges (below the hole, and from 4 GiB up) checked first against the container's
--     usable IOVA ranges, and the memory BARs go only inside those ranges too (64-bit
--     ones from above RAM's end), where the IOMMU can address them;
--   - each VFIO group joins the KVM VFIO device once;
--   - the run handler gives a Lua-handled exit (one no range covers, or one a device's C
--     range passed on: a Lua quirk window) to the device whose trap claims it; after it,
--     and after a stop exit (a function asking for attention), every device's events are
--     carried out, and the BAR layouts are derived again only after an event that can
--     change them (a BAR moved, decoding toggled).
-- A board with `plan = true` has no VM: it seats the devices and places their BARs as a
-- real one would, and board:plan() says what the run would make of them.
-- PCIe root ports (vfio.vmm.hotplug) sit on bus 0 from slot 0x10, their secondary buses
-- 1 to 16 inside the host bridge's ECAM window, with bridge windows from the one
-- allocator: `hotplug_slots` empty ones, and one for each device added with
-- `{port = true}` (seated behind it at boot, its BARs in the port's windows).
-- board:device_add(d) hot-adds a device into an empty port; board:device_del(d) asks
-- the guest for it back and releases it (interrupts, slots, ranges, DMA, KVM's group,
-- the device closed) once the guest has powered the slot off, or by surprise after a
-- timeout; the ports' events are carried out with the devices' (board:sync).
--
--   local b = board.new{mem_mib=, ram_below_4g=, backing=, hugetlbfs=, trace=fn, legacy_intx=,
--                       vm={cpus=}, halt_poll_us=, hotplug_slots=}
--   b:add_devices{d1, d2...}   b:add_device(d [, {slot=, fn=} or {port = true}])
--   b:remove_device(d)   b:device_add(d [, {on_release=}])   b:device_del(d [, {timeout=}])
--   b:boot(path, opts) (multiboot)   b:boot_linux(opts)   b:plan()   b:close()
-- @module vfio.vmm.board
local address_map = require "vfio.vmm.address_map"
local pcibus = require "vfio.pcibus"
local vmlib = require "vfio.vmm.vm"
local pcihost = require "vfio.vmm.pcihost"
local irq = require "vfio.vmm.irq"
local layout = require "vfio.vmm.layout"
local hotplug = require "vfio.vmm.hotplug"
local reclaim = require "vfio.vmm.reclaim"
local ram = require "vfio.vmm.ram"

local M = {}
local Board = {}
Board.__index = Board

M.ECAM_BASE = address_map.ECAM_START -- below the 32-bit BAR window, above guest RAM
M.ECAM_BUSES = address_map.ECAM_BUSES -- bus 0 and every root port's secondary bus
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

-- The largest guest RAM: from 0 to the hole, where the ECAM window begins, and the rest
-- from 4 GiB up to address_map.RAM_END_MAX (the host's memory, the memlock limit, huge
-- pages and the IOMMU's aperture are checked when met: vfio.vmm.ram).
M.MAX_MEM_MIB = address_map.RAM_SIZE_MAX >> 20

---
-- board.check_mem(mib) -> true, or nil, message: guest RAM of mib MiB fits this board's
-- address map (2 to MAX_MEM_MIB).
function M.check_mem(mib)
   if math.type(mib) ~= "integer" or mib < 2 or mib > M.MAX_MEM_MIB then
      return nil, ("guest RAM of %s MiB: it must be 2 to %d MiB (RAM past the hole at %#x continues"
         .. " at 4 GiB and ends by %d GiB, below the 64-bit BAR window)"):format(tostring(mib),
            M.MAX_MEM_MIB, address_map.HOLE_START, address_map.RAM_END_MAX >> 30)
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
-- board.new{mem_mib = 64, ram_below_4g = bytes (address_map.ram_ranges), backing =
--   "anonymous" | "memfd" | "hugetlbfs", hugetlbfs = a mount (vfio.vmm.ram), trace =
--   fn(line), legacy_intx = false, vm = opts for vfio.vmm.vm.create (cpus=), halt_poll_us =
--   n, windows = BAR windows (default layout.windows for this RAM), plan = true: no VM,
--   for board:plan(), hotplug_slots = n: empty PCIe root ports for board:device_add}
--   -> board, or nil, message, errno.
function M.new(opts)
   opts = opts or {}
   local mib = opts.mem_mib or (opts.vm and opts.vm.mem_mib) or 64
   local okm, why = M.check_mem(mib)
   if not okm then return nil, why end
   local b = setmetatable({
      trace = opts.trace, mem_mib = mib, devices = {}, by_devfn = {}, seats = {},
      dma = {}, groups = {}, next_slot = M.FIRST_SLOT, reserved = {}, ports = {},
      on_release = {}, names = {}, release_listeners = {},
      intx_lines = opts.legacy_intx and M.LEGACY_LINES or M.IOAPIC_LINES,
      ram_below_4g = opts.ram_below_4g,
      bars = layout.new { windows = opts.windows
                          or layout.windows(mib << 20, opts.ram_below_4g) },
      backing = opts.backing or (opts.vm and opts.vm.backing) or "anonymous",
   }, Board)
   -- One host bridge decode (vfio.core.pcihost, in C): installed as handled ranges, or
   -- in --trace mode reached through the Lua run handler, which logs what it decoded.
   b.host = pcihost.new { ecam_base = M.ECAM_BASE, ecam_buses = M.ECAM_BUSES }
   b.host:attach(0, 0, 0, pcihost.host_bridge())
   for _ = 1, opts.hotplug_slots or 0 do
      local p, perr = b:add_root_port()
      if not p then return nil, perr end
   end
   if opts.plan then return b end
   local vmopts = {}
   for k, v in pairs(opts.vm or {}) do vmopts[k] = v end
   vmopts.mem_mib = mib
   vmopts.backing = b.backing
   vmopts.ram_below_4g = b.ram_below_4g
   vmopts.hugetlbfs = opts.hugetlbfs or vmopts.hugetlbfs
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
-- Guest RAM mapped for DMA in `container`, once per container, after checking that it
-- lies inside the container's usable IOVA ranges (mapped at IOVA == guest-physical).
-- What the maps took is kept in board.dma_timing `{seconds =, bytes =}` (all maps so far;
-- VFIO pins every page, faulting in what was never touched: most of a big guest's setup).
function Board:map_dma(container)
   if not container or self.dma[container] then return true end
   if container.map_guest_ram then
      -- a vfio-user device's DMA space: the server maps guest RAM from its memfd
      local t0 = vmlib.now()
      local done, err, errno = container:map_guest_ram(self.machine)
      if not done then return nil, "DMA map of guest RAM: " .. tostring(err), errno end
      self.dma[container] = done
      self:log("guest RAM shared with the vfio-user server by its memfd in %.1f ms", (vmlib.now() - t0) * 1000)
      return true
   end
   local fits, why = ram.check_aperture(self.mem_mib << 20, ram.iova_ranges(container), self.ram_below_4g)
   if not fits then return nil, why end
   local done, t0, bytes = {}, vmlib.now(), 0
   for _, s in ipairs(self.vm:memory()) do
      if s.ram then
         local ok, err, errno = container:map_dma(self.vm, s.gpa, { gpa = s.gpa, size = s.size,
                                                                    read = true, write = true })
         if not ok then
            for _, d in ipairs(done) do pcall(container.unmap_dma, container, d.gpa, d.size) end
            if errno == 12 then   -- ENOMEM: the map's message names the memlock limit
               err = ("%s (all of guest RAM is pinned, %d MiB in %d range(s): the limit must "
                  .. "cover %d KiB for it)"):format(tostring(err), self.mem_mib,
                     #address_map.ram_ranges(self.mem_mib << 20, self.ram_below_4g), self.mem_mib * 1024)
            end
            return nil, "DMA map of guest RAM: " .. tostring(err), errno
         end
         done[#done + 1] = s
         bytes = bytes + s.size
      end
   end
   self.dma[container] = done
   local dt = vmlib.now() - t0
   local t = self.dma_timing or { seconds = 0, bytes = 0 }
   t.seconds, t.bytes = t.seconds + dt, t.bytes + bytes
   self.dma_timing = t
   self:log("guest RAM mapped for DMA: %d MiB in %.1f ms", bytes >> 20, dt * 1000)
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
   if at.port then
      local p = at.port
      if p == true then
         local err
         p, err = self:add_root_port { windows = hotplug.windows_for(d:bars()) }
         if not p then return nil, err end
      end
      return self:seat_behind(d, p, true)
   end
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
   -- memory BARs only where the device's IOMMU can address them (peer-to-peer DMA)
   local okr, iova = pcall(ram.iova_ranges, d:dma_container())
   if okr and iova then self.bars:restrict(iova) end
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
   if seat.port then return self:remove_behind(d, seat) end
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
   return seat and { slot = seat.slot, fn = seat.fn, intx_line = seat.intx_line,
                     bus = seat.bus or 0, port = seat.port and seat.port.index }
end

---------------------------------------------------------------------------------------
-- PCIe root ports and native hot-plug (vfio.vmm.hotplug)

---
-- board:add_root_port([{windows = {mem=, pref=, io=} (bytes)}]) -> port, or nil, message:
-- an empty root port on the next free slot from 0x10, its secondary bus the next number,
-- its bridge windows reserved from the board's allocator (sizes: hotplug.WINDOWS; an
-- I/O window only while the board's I/O window has room), attached to the host bridge.
function Board:add_root_port(opts)
   opts = opts or {}
   local slot = hotplug.FIRST_SLOT
   local function used(s)
      for f = 0, 7 do if self.by_devfn[s << 3 | f] then return true end end
      return self.reserved[s]
   end
   while slot <= 31 and used(slot) do slot = slot + 1 end
   if slot > 31 then return nil, "bus 0 has no free slot for a root port" end
   -- a guest that configures through ECAM reaches only the buses its window holds
   local secondary = #self.ports + 1
   if secondary >= M.ECAM_BUSES then
      return nil, ("root port at 00:%02x.0: bus %d is past the ECAM window (buses 0-%d)")
         :format(slot, secondary, M.ECAM_BUSES - 1)
   end
   local sizes = opts.windows or hotplug.WINDOWS
   local windows = {}
   for _, w in ipairs { { "mem", "mmio32" }, { "pref", "mmio64" }, { "io", "io" } } do
      local name, win = w[1], w[2]
      local size = sizes[name]
      if size and size > 0 then
         local addr, err = self.bars:reserve(win, size)
         if addr then
            windows[win] = { base = addr, limit = addr + size - 1 }
         elseif name ~= "io" then
            return nil, ("root port at 00:%02x.0: its %s window: %s"):format(slot, name, err)
         end
      end
   end
   local p = hotplug.port { index = #self.ports, slot = slot, secondary = secondary,
                            windows = windows, intx_line = self:intx_line(slot, 1) }
   self.host:attach(0, slot, 0, p.rootport)
   self.reserved[slot] = true
   self.ports[#self.ports + 1] = p
   return p
end

---
-- board:seat_behind(d, port, at_boot) -> d, or nil, message, errno (add_device with
-- {port =}, device_add). A device behind port p: device 0 of the port's secondary bus, its INTx
-- pins reaching bus 0 through the port's slot (the swizzle over a bridge keeps device 0's
-- pins); at boot its BARs are placed in the port's windows and programmed as firmware
-- would, and it is present from power-on; hot, the guest assigns its BARs itself once
-- pciehp scans.
function Board:seat_behind(d, p, at_boot)
   if p.device then return nil, ("root port 00:%02x.0 is occupied"):format(p.slot) end
   local pin = d:intx_pin()
   local seat = { bus = p.secondary, slot = 0, fn = 0, port = p,
                  intx_line = pin ~= 0 and self:intx_line(p.slot, pin) or nil }
   local ok, err, errno = d:seat(seat)
   if not ok then return nil, err, errno end
   self.devices[#self.devices + 1] = d
   self.seats[d] = seat
   if at_boot then
      local bars, dropped = p:placeable(d:bars())
      seat.bars, err = p.alloc:place(bars)
      if not seat.bars then
         self:remove_device(d)
         return nil, err
      end
      ok, err, errno = d:program_bars(seat.bars)
      if ok and dropped then   -- an I/O BAR the port cannot forward: no I/O decoding
         local cf = d:config_function()
         cf:cfg_write(4, 2, cf:cfg_read(4, 2) & ~1)
      end
   end
   if ok and self.vm then
      self:add_group(d:kvm_file())
      ok, err, errno = self:map_dma(d:dma_container())
      if ok then ok, err, errno = d:connect(self.vm, self.router) end
   end
   if ok then ok, err = p:insert(d, d:config_function(), at_boot) end
   if not ok then
      self:remove_device(d)
      return nil, err, errno
   end
   return d
end

---
-- board:remove_behind(d, seat): remove_device for a device behind a port: out of the VM,
-- its BARs back to the port's windows, the port empty (presence and link lost).
function Board:remove_behind(d, seat)
   pcall(d.disconnect, d)
   if seat.bars then seat.port.alloc:free(seat.bars) end
   if seat.port.device == d then seat.port:take_out() end
   self.seats[d] = nil
   for i, x in ipairs(self.devices) do
      if x == d then table.remove(self.devices, i) break end
   end
end

---
-- board:device_add(d [, {port = index, name =, on_release = fn(d, surprise)}]) -> port, or nil,
-- message, errno: hot-add a device (vfio.vmm.assigned) into an empty root port (the one
-- asked for, else the first): connected to the VM, present in the slot, the attention
-- button pressed; the guest's pciehp powers the slot on, assigns its BARs and binds its
-- driver. on_release runs after the board released it (board:device_del, or the guest
-- powering the slot off): the caller closes what it opened the device from.
function Board:device_add(d, opts)
   opts = opts or {}
   local port
   for _, p in ipairs(self.ports) do
      if not p.device and (opts.port == nil or opts.port == p.index) then port = p break end
   end
   if not port then
      return nil, opts.port and ("root port %s is not an empty hot-plug slot"):format(opts.port)
         or "no empty hot-plug slot (board.new{hotplug_slots = n}, --hotplug-slots N)"
   end
   local ok, err, errno = self:seat_behind(d, port, false)
   if not ok then return nil, err, errno end
   self.on_release[d] = opts.on_release
   self.names[d] = opts.name
   self:attend_ports()
   return port
end

---
-- board:find_device(name) -> the device on the board hot-added under that name
-- (device_add's `name`) or passed through from that host function (its d:host_bdf(), as
-- vfio.pcibus.parse_bdf writes it), or nil: what a device_del request names.
function Board:find_device(name)
   for _, d in ipairs(self.devices) do
      if self.names[d] == name then return d end
   end
   local want = pcibus.parse_bdf(name)
   for _, d in ipairs(self.devices) do
      if want and d:host_bdf() == want then return d end
   end
end

---
-- board:device_del(d [, {timeout = seconds}]) -> true, or nil, message: ask the guest to
-- give a device behind a root port back (the attention button). The board releases it
-- when the guest has powered the slot off, or removes it by surprise after `timeout`
-- (hotplug.REMOVE_TIMEOUT) seconds of the run.
function Board:device_del(d, opts)
   local seat = self.seats[d]
   if not seat or not seat.port then return nil, "that device is not behind a root port" end
   local timeout = opts and opts.timeout or hotplug.REMOVE_TIMEOUT
   local ok, err = seat.port:request_removal(vmlib.now() + timeout)
   if not ok then return nil, err end
   self:attend_ports()
   return true
end

---
-- board:release(d, surprise): take a device out completely so the host can use it again:
-- out of the machine, its DMA mappings and KVM's knowledge of its group dropped when no
-- other device shares them, the assigned device closed, then the caller's on_release.
function Board:release(d, surprise)
   local container, group = d:dma_container(), d:kvm_file()
   local seat = self.seats[d]
   self:log("release the device behind root port 00:%02x.0%s",
            seat and seat.port and seat.port.slot or 0,
            surprise and " (surprise removal: the guest did not power the slot off in time)" or "")
   self:remove_device(d)
   local shared_c, shared_g = false, false
   for _, x in ipairs(self.devices) do
      shared_c = shared_c or (container ~= nil and x:dma_container() == container)
      shared_g = shared_g or (group ~= nil and x:kvm_file() == group)
   end
   if container and not shared_c and self.dma[container] then
      for _, s in ipairs(self.dma[container]) do
         pcall(container.unmap_dma, container, s.gpa, s.size)
      end
      self.dma[container] = nil
   end
   if group and not shared_g and self.groups[group] ~= nil then
      if self.groups[group] then pcall(self.vm.vfio_group_del, self.vm, group:fileno()) end
      self.groups[group] = nil
   end
   local host, where = d:host_bdf(), seat and { slot = seat.slot, fn = seat.fn, port = seat.port and seat.port.index }
   pcall(d.close, d)
   local cb = self.on_release[d]
   self.on_release[d], self.names[d] = nil, nil
   if cb then cb(d, surprise) end
   for _, fn in ipairs(self.release_listeners) do fn(d, { host = host, seat = where, surprise = surprise }) end
end

---
-- board:on_released(fn): fn(d, {host =, seat = {slot =, fn =, port =}, surprise =}) after every
-- release (board:release), whoever added the device (a --device behind a port at boot, or a
-- device_add): how a control socket learns that a device has left the guest and the host has it back.
function Board:on_released(fn)
   assert(type(fn) == "function", "board:on_released: a function")
   self.release_listeners[#self.release_listeners + 1] = fn
end

---
-- Carry out what the root ports ask for: their slot interrupts (MSI through KVM, or the
-- INTx line), and the release of a device the guest powered off or did not give back in
-- time. Called with the devices' events (board:sync) and between run slices.
function Board:attend_ports()
   if #self.ports == 0 then return end
   local now = vmlib.now()
   for _ = 1, 4 do   -- a release raises events of its own (presence and link lost)
      local any = false
      for _, p in ipairs(self.ports) do
         for _, a in ipairs(p:actions(now)) do
            any = true
            if a[1] == "msi" then
               if self.vm then
                  local ok, err = self.vm:signal_msi(a[2], a[3])
                  if ok == nil then self:log("root port %d: MSI: %s", p.index, tostring(err)) end
               end
            elseif a[1] == "intx" then
               if self.vm then self.vm:irq_line(p.intx_line, a[2]) end
            elseif a[1] == "release" then
               self:release(a[2], a.surprise)
            end
         end
      end
      if not any then return end
   end
end

---
-- What the host said about the devices since the last call (VFIO's request and error
-- interrupts, vfio.vmm.reclaim decides): a device in a hot-plug slot the host wants back
-- is asked of the guest (board:device_del; its VFIO device is closed with its release, so
-- the host's unbind completes), one with no slot stays and `note(text)` says so once per
-- burst of requests. Returns the text to stop the run with when a device reported an
-- uncorrectable error, else nil. Called between run slices.
function Board:attend_host(note)
   note = note or function(text) io.stderr:write(text, "\n") end
   local list, devs = {}, {}
   for _, d in ipairs(self.devices) do
      local n = d.host_notices and d:host_notices() or {}
      if n.request or n.error then
         local seat = self.seats[d]
         list[#list + 1] = { name = d:host_bdf() or "?", request = n.request, error = n.error,
                             slot = seat ~= nil and seat.port ~= nil }
         devs[#list] = d
      end
   end
   if #list == 0 then return nil end
   self.host_watch = self.host_watch or reclaim.new { remove_timeout = hotplug.REMOVE_TIMEOUT }
   local stop
   for _, a in ipairs(self.host_watch:decide(list, vmlib.now())) do
      local d = devs[a[2]]
      if a[1] == "stop" then
         stop = stop or a[3]
      elseif a[1] == "note" then
         note(a[3])
      elseif a[1] == "unplug" then
         if a.note then note(a.note) end
         d:give_back()
         local ok, err = self:device_del(d)
         if not ok then note(("%s: %s"):format(list[a[2]].name, tostring(err))) end
      end
   end
   return stop
end

---
-- The plan: what the run would make of every device (its guest address, the host bridge,
-- RAM, BARs with their mapped and trapped parts, interrupts, quirks), as text.
function Board:plan()
   local out = {}
   for _, p in ipairs(self.ports) do out[#out + 1] = p:describe() end
   for _, d in ipairs(self.devices) do
      local seat, desc = self.seats[d], d:describe()
      local behind = seat.port and (" (behind root port 00:%02x.0)"):format(seat.port.slot) or ""
      out[#out + 1] = ("device %s -> guest %02x:%02x.%d%s"):format(desc.id, seat.bus or 0,
         seat.slot, seat.fn, behind)
      out[#out + 1] = ("host bridge 00:00.0, config: CF8/CFC and ECAM at %#x (buses 0-%d)")
         :format(M.ECAM_BASE, M.ECAM_BUSES - 1)
      local ranges = {}
      for i, r in ipairs(address_map.ram_ranges(self.mem_mib << 20, self.ram_below_4g)) do
         ranges[i] = ("0x%x..0x%x"):format(r.start, r.start + r.size - 1)
      end
      out[#out + 1] = ("guest RAM %d MiB (%s) at %s, mapped for device DMA at IOVA == GPA")
         :format(self.mem_mib, self.backing, table.concat(ranges, " and "))
      for _, l in ipairs(desc.lines) do out[#out + 1] = l end
   end
   return #out > 0 and table.concat(out, "\n") .. "\n" or ""
end

---
-- Bring every device's vectors in line with its trap, and after an event that can change
-- a BAR layout (a BAR moved, decoding toggled) every device's slots and ranges: a piece
-- that could not be placed (over another device's BAR) is tried again then.
function Board:sync()
   self:attend_ports()
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
   -- a root port's slot: its own INTA and the pins of the device behind it (swizzled
   -- to the port's slot: Linux looks a device behind a bridge up there)
   for _, p in ipairs(self.ports) do
      for pin = 1, 4 do
         seen[p.slot << 3 | pin] = true
         out[#out + 1] = { slot = p.slot, pin = pin, ioapic_pin = self:intx_line(p.slot, pin) }
      end
   end
   for _, d in ipairs(self.devices) do
      local pin, seat = d:intx_pin(), self.seats[d]
      if pin ~= 0 and not seat.port and not seen[seat.slot << 3 | pin] then
         seen[seat.slot << 3 | pin] = true
         out[#out + 1] = { slot = seat.slot, pin = pin, ioapic_pin = seat.intx_line }
      end
   end
   return out
end

---
-- board:boot_linux{kernel=, image= (its bytes, if read already), initrd=, append=, decompress=,
--   on_note=fn(text) (boot notes and the host's requests), timeout=,
--   should_stop=fn, slice=, on_slice=fn, wake=fn() -> fds} -> result
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
      on_slice = function(m)
         me:attend_ports()   -- a removal's deadline
         -- the host's requests and error reports: their eventfds end a slice (wake below)
         local stop = me:attend_host(opts.on_note)
         if stop then return false, stop end
         if opts.on_slice then return opts.on_slice(m) end
      end,
      -- a slice ends at once when the control socket speaks or the host asks for a
      -- device back (its request or error interrupt): attend_host answers then
      wake = function()
         local fds = opts.wake and opts.wake() or {}
         for _, d in ipairs(me.devices) do
            for _, efd in ipairs(d.host_notice_fds and d:host_notice_fds() or {}) do
               -- a run takes 64 wake fds: past them, the slice's end still polls
               if #fds < 64 then fds[#fds + 1] = efd end
            end
         end
         return fds
      end,
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
