---
-- One VFIO device assigned to a guest: the trap core's virtual function over it
-- (vfio.vmm.passthrough: trap, quirks), what its BARs become in the VM (vfio.vmm.layout:
-- memory slots of the mmap-able pages, handled ranges for the trapped ones: MSI-X table
-- and PBA, quirk windows) and its interrupts (a vfio.vmm.irq wiring: INTx with a resample
-- eventfd, MSI/MSI-X vectors on GSI routes, as the guest switches them).
--
-- A device enters a machine only through a board (vfio.vmm.board), which owns the VM,
-- the host bridge, the GSI router and the BAR allocator; what the board asks of it is
-- this small interface, and neither reads the other's fields:
--   d:host_bdf(), d:intx_pin(), d:bars(), d:config_function(), d:kvm_file(),
--   d:dma_container()                                what the board needs to know
--   d:seat{slot=, fn=, intx_line=, multifunction=}   where the board put it
--   d:program_bars(placed)                           the addresses the board chose
--   d:connect(vm, router) / d:disconnect()           in and out of a running VM
--   d:sync(force), d:take_events(), d:apply_layout(), d:lua_access(x)   while it runs
--   d:describe() -> {id=, lines=}                    for the board's plan
--   d:status() -> {irq=, quirks=}                    for the control socket's info
--   d:host_notices(), d:give_back()                  the host wants it back, or saw an
--                                                    error on it (VFIO's request and
--                                                    error interrupts)
--
-- Guest-driven changes (a BAR moved, decoding toggled, MSI enabled or reprogrammed) come
-- from the trap core as events: the interrupt mode (vfio.vmm.irq) turns them into
-- actions its wiring carries out, and the BAR layout (vfio.vmm.layout) recomputes what
-- must be mapped and trapped from the trap's state, so slots, ranges and vectors always
-- follow what the guest programmed.
-- @module vfio.vmm.assigned
local passthrough = require "vfio.vmm.passthrough"
local irq = require "vfio.vmm.irq"
local pci = require "vfio.pci"
local pcibus = require "vfio.pcibus"
local layout = require "vfio.vmm.layout"

local M = {}
local AssignedDevice = {}
AssignedDevice.__index = AssignedDevice

local function hex(v) return ("%#x"):format(v) end

---
-- M.new(dev, opts) -> an assigned device (on no board yet), or nil, message, errno
-- (vfio.vmm.passthrough.new's).
--   dev      a vfio.open device (or a recorded fixture / backend: a plan only)
--   opts     quirks = list of quirk tables (nil: the built-in ones), trace = fn(line),
--            no_mmap = true: trap every BAR access (no memory slots for BARs; QEMU's
--            x-no-mmap)
-- Its BARs stay unassigned until a board places them (board:add_device).
function M.new(dev, opts)
   opts = opts or {}
   local pt, err, errno = passthrough.new(dev, { quirks = opts.quirks, layout = false })
   if not pt then return nil, err, errno end
   local d = setmetatable({
      dev = dev, pt = pt, trap = pt.trap, opts = opts, trace = opts.trace,
      pieces = {}, maps = {}, stats = { events = 0, lua = 0 },
   }, AssignedDevice)
   -- quirk windows whose reads are the device's own: their pages can be mapped read-only
   d.read_through = {}
   local applied = {}
   for _, n in ipairs(pt.quirks or {}) do applied[n] = true end
   for _, q in ipairs(opts.quirks or require("vfio.vmm.quirks").load_builtin()) do
      for _, w in ipairs(applied[q.name] and q.windows or {}) do
         if w.reads == "device" then
            d.read_through[("%d:%d:%d"):format(w.bar, w.off, w.len)] = true
         end
      end
   end
   d.trap:events() -- programming done by us, not the guest: the VM starts from the state
   return d
end

--- One VFIO device assigned to a guest (vfio.vmm.assigned.new).
-- @type AssignedDevice

--- Format a line to the device's trace function, when it has one.
function AssignedDevice:log(fmt, ...)
   if self.trace then self.trace(fmt:format(...)) end
end

--- The device's interrupt pin as the trap shows it (config 0x3d; 0: none).
function AssignedDevice:intx_pin()
   local pin = self.trap:cfg_read(0x3d, 1)
   return pin or 0
end

---
-- The host PCI address of the device ("0000:00:10.1"), or nil for a recording.
function AssignedDevice:host_bdf()
   local d = self.dev
   local b = type(d) == "table" and rawget(d, "bdf") or nil
   return (pcibus.parse_bdf(b))
end

--- The BARs as the trap shows them (trap:bars() form), for the board's allocator.
function AssignedDevice:bars() return self.trap:bars() end

--- What answers the device's configuration space on the host bridge (its trap).
function AssignedDevice:config_function() return self.trap end

---
-- The file KVM's VFIO device takes for it: the group's, or the device's own (a cdev,
-- 6.6+); nil for a recording.
function AssignedDevice:kvm_file()
   local d = self.dev
   if type(d) ~= "table" then return nil end
   return d.interface == "iommufd" and d.handle or d.group
end

--- The VFIO container its DMA goes through (guest RAM is mapped there), or nil.
function AssignedDevice:dma_container()
   return type(self.dev) == "table" and self.dev.container or nil
end

---
-- Where the board put it: d:seat{slot=, fn=, intx_line=, multifunction=}. The guest
-- reads the INTx line in its config space (as firmware would write it); function 0 of
-- a shared slot says it is multi-function.
-- @return true, or nil, message
function AssignedDevice:seat(at)
   self.slot, self.fn, self.intx_line = at.slot, at.fn or 0, at.intx_line
   if self:intx_pin() ~= 0 and at.intx_line then self.trap:cfg_write(0x3c, 1, at.intx_line) end
   if at.multifunction then
      local hdr = self.trap:cfg_read(0x0e, 1)
      local ok, err = self.trap:set_config(0x0e, string.char(hdr | 0x80))
      if not ok then return nil, err end
   end
   self.trap:events()
   return true
end

---
-- Program the addresses the board chose (`placed`: its allocator's place() result), as
-- firmware does, and enable decoding and bus mastering. In a VM the layout follows
-- (d:sync).
function AssignedDevice:program_bars(placed)
   layout.program(self.trap, placed)
   local cmd = self.trap:cfg_read(4, 2)
   self.trap:cfg_write(4, 2, cmd | 0x7)   -- I/O, memory, bus master
   for i, p in pairs(placed) do
      self:log("bar  %02x.%d BAR%d at %#x (%s)", self.slot or 0, self.fn or 0, i, p.addr, p.window)
   end
   if not self.vm then self.trap:events() return true end   -- a plan: no VM to follow it
   return self:sync(true)
end

---
-- VFIO region flags of region i: from the device, or from a recorded fixture (plan).
function AssignedDevice:region_flags(i)
   local d = self.dev
   if type(d) == "table" and d.region and d.num_regions then
      return i < d.num_regions and d:region(i).flags or nil
   end
   if not self.fixture then
      local record = require "vfio.record"
      self.fixture = type(d) == "table" and d or (type(d) == "string" and record.load(d)) or {}
   end
   local r = self.fixture.regions and self.fixture.regions[i]
   return r and r.flags
end

---
-- Desired pieces of every decoding BAR, from the trap's state (vfio.vmm.layout).
function AssignedDevice:layout()
   return layout.bar_pieces(self.trap, function(i) return self:region_flags(i) end,
      { no_mmap = self.opts.no_mmap, read_through = self.read_through, trace = self.trace ~= nil })
end

---
-- What the device is and becomes in the VM, for the board's plan: {id = "name vvvv:dddd
-- class cccccc", lines = {BARs with their mapped and trapped parts, capabilities,
-- interrupts, quirks}}.
function AssignedDevice:describe()
   local out = {}
   local function p(fmt, ...) out[#out + 1] = fmt:format(...) end
   local t = self.trap
   local id = t:cfg_read(0, 4)
   local name = ("%s %04x:%04x class %06x"):format(self.dev.bdf or tostring(self.dev),
     id & 0xffff, id >> 16, t:cfg_read(8, 4) >> 8)
   for i = 0, 6 do
      local e = self:layout()[i]
      if e then
         local b = e.bar
         local kind = i == 6 and "rom" or b.io and "io" or (b.is64 and "mem64" or "mem32")
         local why = e.mappable and "" or self.opts.no_mmap and " (mmap off)" or " (not mmap-able)"
         p("BAR%d %s %s size %s at %s%s", i, kind, b.prefetch and "prefetch" or "", hex(b.size),
           hex(b.addr), why)
         if #e.pieces == 0 and self.trace then
            p("  +0..+%s traced (every access reaches Lua)", hex(b.size - 1))
         end
         for _, piece in ipairs(e.pieces) do
            local what = piece.kind == "map" and "mapped (KVM memory slot)"
               or piece.kind == "romap" and "mapped read-only (reads direct, writes trapped)"
               or "trapped (C dispatch)"
            p("  +%s..+%s %s", hex(piece.off), hex(piece.off + piece.len - 1), what)
            -- the Lua quirk windows inside a trapped piece: its C range passes them on
            for _, w in ipairs(piece.kind == "trap" and e.lua_windows or {}) do
               if w.off >= piece.off and w.off < piece.off + piece.len then
                  p("    +%s..+%s trapped (Lua handler)", hex(w.off), hex(w.off + w.len - 1))
               end
            end
         end
      end
   end
   local caps = {}
   for _, c in ipairs(t:caps()) do
      if not c.hidden then
         caps[#caps + 1] = ("%s%s@%s"):format(c.ext and "ext:" or "",
            c.ext and hex(c.id) or (pci.cap_short[c.id] or hex(c.id)), hex(c.off))
      end
   end
   p("capabilities %s", #caps > 0 and table.concat(caps, " ") or "none")
   local pin = self:intx_pin()
   if pin ~= 0 then
      p("irq INTx pin %s -> line %d (GSI %d), irqfd + resample eventfd (VFIO unmask)",
        string.char(64 + pin), self.intx_line or 0, self.intx_line or 0)
   else
      p("irq INTx none")
   end
   local msi, msix = t:msi(), t:msix()
   if msi then
      p("irq MSI %d vector(s) -> GSI routes from %d with irqfds, when the guest enables it",
        msi.vectors, irq.IRQCHIP_GSIS)
   end
   if msix then
      p("irq MSI-X %d vector(s), table BAR%d+%s, PBA BAR%d+%s -> GSI routes with irqfds", msix.n,
        msix.table_bar, hex(msix.table_off), msix.pba_bar, hex(msix.pba_off))
   end
   p("quirks %s", #self.pt.quirks > 0 and table.concat(self.pt.quirks, ", ") or "none")
   return { id = name, lines = out }
end

---
-- What the device is doing now, for the control socket's info: {irq = {mode = "none" |
-- "intx" | "msi" | "msix", vectors = n, gsis = {GSI of each vector...}, intx_line =},
-- quirks = {names}}. The mode is the guest's current choice (vfio.vmm.irq's mode).
function AssignedDevice:status()
   local w = self.irqs
   local mode = w and w.mode and w.mode.kind or "none"
   local gsis = {}
   for i, v in ipairs(w and w.vectors or {}) do gsis[i] = v.gsi end
   local quirks = {}
   for i, q in ipairs(self.pt and self.pt.quirks or {}) do quirks[i] = q end
   return { irq = { mode = mode, vectors = w and w.mode and w.mode.n or 0, gsis = gsis,
                    intx_line = self.intx_line }, quirks = quirks }
end

---
-- Into a running VM: its interrupts wired on the board's GSI router (INTx, if it has
-- it, until the guest enables MSI) and its BARs made slots and ranges of `vm` (a
-- vfio.vm). Returns true or nil, message, errno (what this call did undone).
function AssignedDevice:connect(vm, router)
   self.vm = vm
   self:watch_host()
   local ok, err, errno = self:wire_irqs(router)
   if ok then ok, err, errno = self:sync(true) end
   if not ok then self:disconnect() return nil, err, errno end
   return true
end

---
-- Listen to what the host says about the device: VFIO's request interrupt (the host
-- wants it back) and error interrupt (AER), registered once (vfio.open's `notifier`); a
-- device without one is watched for the other, a recording for neither. Read them
-- with d:host_notices().
function AssignedDevice:watch_host()
   local dev = self.dev
   if self.watching or type(dev) ~= "table" or not dev.notifier then return end
   self.watching = true
   self.notice_fds = {}
   for _, kind in ipairs { "request", "error" } do
      local efd, err = dev:notifier(kind)
      if efd then
         self.notice_fds[#self.notice_fds + 1] = efd
      else
         self:log("host %s notices: %s", kind, tostring(err))
      end
   end
end

---
-- The eventfds of the host's notices (watch_host), for a run to wake on: a run ends its
-- slice as soon as the host asks, and host_notices() reads them.
function AssignedDevice:host_notice_fds()
   local dev = self.dev
   if type(dev) ~= "table" or dev.closed then return {} end
   return self.notice_fds or {}
end

---
-- What the host said about the device since the last call: `{request = n, error = n}`
-- with only the kinds that came (vfio.open's `notices`); empty for a recording.
function AssignedDevice:host_notices()
   local dev = self.dev
   if type(dev) ~= "table" or not dev.notices or dev.closed then return {} end
   return dev:notices()
end

---
-- The host wants the device back: when it is closed (the board's release), close the
-- VFIO device it was opened from too, whoever opened it, so the host's unbind, which
-- waits for every fd of the device, can complete.
function AssignedDevice:give_back()
   self.giving_back = true
end

---
-- Its interrupts on `router` (a vfio.vmm.irq router), started as before the guest
-- enables MSI: a vfio.vmm.irq wiring, kept as d.irqs.
function AssignedDevice:wire_irqs(router)
   local me = self
   self.irqs = irq.wiring(router, { device = self.dev, trap = self.trap, intx_line = self.intx_line,
                                    log = function(...) me:log(...) end })
   return self.irqs:start()
end

local function msix_entry(trap, i)
   local addr, data, masked = trap:msix_entry(i)
   return { addr = addr or 0, data = data or 0, masked = masked or false }
end

---
-- One trap event; interrupt state follows the guest (vfio.vmm.irq's mode decides, the
-- wiring carries it out).
function AssignedDevice:event(e)
   self.stats.events = self.stats.events + 1
   self:log("event %s", e.type)
   if not self.irqs then return true end
   local trap = self.trap
   return self.irqs:event(e, function(i) return msix_entry(trap, i) end)
end

-- Trap events after which the BAR layout may differ: a BAR moved, decoding toggled.
local LAYOUT_EVENTS = { bar = true, decode = true }

---
-- Drain the trap's events, carrying out what they ask of the interrupts.
-- @return true, changed (an event that can change the BAR layout came), or nil, message,
-- errno
function AssignedDevice:take_events()
   local changed = false
   for _, e in ipairs(self.trap:events() or {}) do
      local ok, err, errno = self:event(e)
      if not ok then return nil, err, errno end
      if LAYOUT_EVENTS[e.type] then changed = true end
   end
   return true, changed
end

---
-- Drain the trap's events; then, after one that can change the BAR layout (or with
-- `force`), make slots and ranges match the BARs.
function AssignedDevice:sync(force)
   local ok, changed, errno = self:take_events()
   if not ok then return nil, changed, errno end
   if changed or force then return self:apply_layout() end
   return true
end

---
-- The host mapping of a BAR: the one the trap's backend made, so each BAR is mapped
-- once per device (the slots borrow it, and keep the backend alive while they exist).
function AssignedDevice:region_map(bar)
   local mp = self.maps[bar]
   if mp == nil then
      local off, len = self.pt.backend:mapping(bar)
      if off then
         mp = { offset = off, size = len }
      else
         self:log("mmap BAR%d failed (%s): trapping it", bar, len)
      end
      self.maps[bar] = mp or false
   end
   return mp or nil
end

--- Make one piece of the BAR layout real: a memory slot of the BAR's mapping, or a
-- trapped range (the trap answers in C; a Lua quirk window's accesses it passes on, and
-- they reach the run handler).
-- @return a handle for `remove_piece`, or `nil, message`
function AssignedDevice:add_piece(p)
   local vm = self.vm
   if p.kind == "map" or p.kind == "romap" then
      local mp = self:region_map(p.bar)
      if mp and (p.off < mp.offset or p.off + p.len > mp.offset + mp.size) then mp = nil end
      if not mp then
         -- no mapping: a plain piece becomes trapped; a read-only one is covered by
         -- the trap pieces over the same bytes
         if p.kind == "romap" then return {} end
         p = setmetatable({ kind = "trap" }, { __index = p })
      else
         local slot, err = vm:map(p.gpa, p.len, self.pt.backend,
                                  { region = p.bar, offset = p.off, readonly = p.kind == "romap" })
         if not slot then return nil, err end
         self:log("map  BAR%d +%#x %#x bytes at %#x (slot %d)", p.bar, p.off, p.len, p.gpa, slot)
         return { slot = slot }
      end
   end
   local id, err = vm:add_range(p.io and "pio" or "mmio", p.gpa, p.len, self.trap)
   if not id then return nil, err end
   return { range = id }
end

--- Undo `add_piece`: unmap its slot or remove its range.
function AssignedDevice:remove_piece(h)
   if h.slot then self.vm:unmap(h.slot) end
   if h.range then self.vm:remove_range(h.range) end
end

---
-- Make slots and ranges match the BARs as the guest has them now.
function AssignedDevice:apply_layout()
   local me = self
   layout.apply(self.pieces, self:layout(), function(p) return me:add_piece(p) end,
      function(h) me:remove_piece(h) end,
      -- e.g. the guest put a BAR over RAM: it stays unreachable, as on a real bus where
      -- the address decodes elsewhere first
      function(p, err) me:log("BAR%d at %#x not placed: %s", p.bar, p.gpa, tostring(err)) end)
   return true
end

---
-- An exit the C side left to Lua, if this device's trap claims it (a Lua quirk window;
-- any BAR access in --trace mode) -> true, value; else false.
function AssignedDevice:lua_access(x)
   local t = self.trap
   local io = x.space == "pio"
   local addr = io and x.port or x.addr
   local v, hit, _
   if x.write then
      _, hit = (io and t.io_write or t.mmio_write)(t, addr, x.size, x.value)
   else
      v, hit = (io and t.io_read or t.mmio_read)(t, addr, x.size)
   end
   if not hit then return false end
   self.stats.lua = self.stats.lua + 1
   self:log("%s %s %#x/%d %s %#x", io and "pio " or "mmio", x.write and "write" or "read ",
            addr, x.size, x.write and "<-" or "->", x.write and x.value or v or 0)
   return true, v
end

---
-- Out of the VM, reverse of connect: its interrupts off, its vectors and INTx line
-- closed (their GSIs free), its BAR slots and ranges removed. The device stays usable:
-- a board can connect it again. Idempotent; errors on the way do not stop the rest.
function AssignedDevice:disconnect()
   if self.irqs then self.irqs:close() end
   self.irqs = nil
   if self.vm then
      for k, h in pairs(self.pieces) do pcall(self.remove_piece, self, h); self.pieces[k] = nil end
   end
   self.vm = nil
end

---
-- Teardown: disconnect, then the trap and its backend (which holds the BAR mappings the
-- slots borrowed). A board that still lists it answers its config space with all ones.
-- Idempotent.
function AssignedDevice:close()
   if self.closed then return end
   self.closed = true
   self:disconnect()
   self.maps = {}
   if self.pt then self.pt:close() end
   -- after the trap and its backend, which hold the BAR mappings (they pin the file)
   if self.giving_back and type(self.dev) == "table" and self.dev.close then
      self.dev:close()
   end
end
AssignedDevice.__close = AssignedDevice.close
AssignedDevice.__gc = AssignedDevice.close

return M
