---
-- A KVM machine with one VFIO device passed through: the trap core's virtual function on
-- a PCI host bridge (CF8/CFC and ECAM), its BARs as memory slots (mmap-able pages) and
-- handled ranges (trapped pages: MSI-X table/PBA, quirk windows), its interrupts as
-- irqfds (MSI/MSI-X vectors on GSI routes, INTx with a resample eventfd) and guest RAM
-- mapped for the device's DMA at IOVA == guest-physical address.
--
--   local m = machine.new(dev, {mem_mib=, quirks=, trace=fn, log=fn})  -- dev: vfio.open
--   m:plan() -> text   m:boot(guest_path, {cmdline=, timeout=}) -> result   m:close()
--
-- Alone, a machine builds its own board (vfio.vmm.board: the VM, host bridge and GSI
-- router); several machines share one with m:start(board [, slot]), each on its slot.
--
-- Guest-driven changes (a BAR moved, decoding toggled, MSI enabled or reprogrammed) come
-- from the trap core as events. The machine composes the parts that decide what to do
-- with them: the interrupt mode (vfio.vmm.irq) turns events into interrupt actions, and
-- the BAR layout (vfio.vmm.layout) recomputes what must be mapped and trapped from the
-- trap's state; the machine carries both out on the VM and the device, so slots, ranges
-- and vectors always follow what the guest programmed.
-- @module vfio.vmm.machine
local address_map = require "vfio.vmm.address_map"
local boardlib = require "vfio.vmm.board"
local passthrough = require "vfio.vmm.passthrough"
local irq = require "vfio.vmm.irq"
local pci = require "vfio.pci"
local pcibus = require "vfio.pcibus"
local layout = require "vfio.vmm.layout"

local M = {}
local Machine = {}
Machine.__index = Machine

M.ECAM_BASE = boardlib.ECAM_BASE
M.SLOT = boardlib.FIRST_SLOT -- a lone device's slot on bus 0 (00:04.0)
M.INTX_LINE = 10         -- a lone device's INTx line (PIC/IOAPIC pin); on a shared board
                         -- each slot gets its line by the PCI swizzle (board.intx_gsi)

local INTX, MSI, MSIX = 0, 1, 2

local function hex(v) return ("%#x"):format(v) end

-- M.new(dev, opts) -> machine (no VM yet), or nil, message, errno.
--   dev      a vfio.open device (or a recorded fixture / backend: plan only)
--   opts     quirks = list of quirk tables (nil: the built-in ones), trace = fn(line),
--            mem_mib = 64, intx_line = 10, no_mmap = true: trap every BAR access
--            (no memory slots for BARs; QEMU's x-no-mmap)
-- The largest guest RAM: it starts at 0 and must end below the hole, which begins with
-- the ECAM window (the VM's address map refuses overlaps as well, csrc/kvm/vm.c).
M.MAX_MEM_MIB = address_map.HOLE_START >> 20

--- A machine for dev (no VM yet): see the comment above MAX_MEM_MIB for dev and opts.
-- @return a machine, or `nil, message, errno` (guest RAM out of 2 to MAX_MEM_MIB MiB, or
-- vfio.vmm.passthrough.new's error)
function M.new(dev, opts)
   opts = opts or {}
   local mib = opts.mem_mib or 64
   if math.type(mib) ~= "integer" or mib < 2 or mib > M.MAX_MEM_MIB then
      return nil, ("guest RAM of %s MiB: it must be 2 to %d MiB (above, it would cover the ECAM"
         .. " window at %#x)"):format(tostring(mib), M.MAX_MEM_MIB, M.ECAM_BASE)
   end
   local pt, err, errno = passthrough.new(dev, { quirks = opts.quirks, enable = true })
   if not pt then return nil, err, errno end
   local m = setmetatable({
      dev = dev, pt = pt, trap = pt.trap, opts = opts, trace = opts.trace,
      mem_mib = opts.mem_mib or 64, intx_line = opts.intx_line or M.INTX_LINE,
      fixed_intx = opts.intx_line ~= nil,
      pieces = {}, maps = {}, stats = { events = 0, lua = 0 },
   }, Machine)
   -- quirk windows whose reads are the device's own: their pages can be mapped read-only
   m.read_through = {}
   local applied = {}
   for _, n in ipairs(pt.quirks or {}) do applied[n] = true end
   for _, q in ipairs(opts.quirks or require("vfio.vmm.quirks").load_builtin()) do
      for _, w in ipairs(applied[q.name] and q.windows or {}) do
         if w.reads == "device" then
            m.read_through[("%d:%d:%d"):format(w.bar, w.off, w.len)] = true
         end
      end
   end
   -- what firmware would do: the interrupt line the guest reads names our INTx pin
   if m:intx_pin() ~= 0 then m.trap:cfg_write(0x3c, 1, m.intx_line) end
   m.trap:events() -- programming done by us, not the guest: the VM starts from the state
   return m
end

--- One device passed through to a VM (vfio.vmm.machine.new), composing the rest.
-- @type Machine

--- The device's interrupt pin as the trap shows it (config 0x3d; 0: none).
function Machine:intx_pin()
   local pin = self.trap:cfg_read(0x3d, 1)
   return pin or 0
end

---
-- VFIO region flags of region i: from the device, or from a recorded fixture (plan).
function Machine:region_flags(i)
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
function Machine:layout()
   return layout.bar_pieces(self.trap, function(i) return self:region_flags(i) end,
      { no_mmap = self.opts.no_mmap, read_through = self.read_through, trace = self.trace ~= nil })
end

-- ---- plan ----

--- The plan: what the VM would be made of (device, bridge, RAM, BARs, interrupts), as text.
function Machine:plan()
   local out = {}
   local function p(fmt, ...) out[#out + 1] = fmt:format(...) end
   local t = self.trap
   local id = t:cfg_read(0, 4)
   p("device %s %04x:%04x class %06x -> guest 00:%02x.%d", self.dev.bdf or tostring(self.dev),
     id & 0xffff, id >> 16, t:cfg_read(8, 4) >> 8, self.slot or M.SLOT, self.fn or 0)
   p("host bridge 00:00.0, config: CF8/CFC and ECAM at %s", hex(M.ECAM_BASE))
   p("guest RAM %d MiB at 0x0, mapped for device DMA at IOVA == GPA", self.mem_mib)
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
        string.char(64 + pin), self.intx_line, self.intx_line)
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
   return table.concat(out, "\n") .. "\n"
end

-- ---- VM wiring ----

local function fail(self, ...)
   self:close()
   return nil, ...
end

--- Format a line to the machine's trace function, when it has one.
function Machine:log(fmt, ...)
   if self.trace then self.trace(fmt:format(...)) end
end

---
-- Put the device on a board (its own when none is given: RAM, irqchip, host bridge) at
-- `slot` (the next free one by default), with guest RAM mapped for its DMA, its group
-- known to KVM and its interrupts wired. Returns self or nil, message, errno (what this
-- call built torn down).
function Machine:start(board, slot, fn)
   if not board then
      local err, errno
      board, err, errno = boardlib.new { mem_mib = self.mem_mib, trace = self.trace }
      if not board then return fail(self, err, errno) end
      self.own_board = true
      slot = slot or M.SLOT
   end
   if not slot and self.assigned then slot, fn = self.assigned.slot, self.assigned.fn end
   local s, f = board:slot_for(slot, fn)
   if not s then return fail(self, f) end
   self.board, self.slot, self.fn = board, s, f
   self.machine, self.vm, self.router, self.host = board.machine, board.vm, board.router, board.host
   local pin = self:intx_pin()
   if pin ~= 0 and not self.own_board and not self.fixed_intx then
      self.intx_line = board:intx_line(s, pin)
      self.trap:cfg_write(0x3c, 1, self.intx_line)
   end
   -- KVM's VFIO device takes the group file, or the device's own file (a cdev, 6.6+).
   board:add_group(self.dev.interface == "iommufd" and self.dev.handle or self.dev.group)
   local ok, err, errno = board:map_dma(self.dev.container)
   if not ok then return fail(self, err, errno) end
   board:register(self, s, f)
   ok, err, errno = self:start_irqs()
   if not ok then return fail(self, err, errno) end
   ok, err, errno = self:sync(true)
   if not ok then return fail(self, err, errno) end
   return self
end

---
-- The host PCI address of the device ("0000:00:10.1"), or nil for a recording.
function Machine:host_bdf()
   local d = self.dev
   local b = type(d) == "table" and rawget(d, "bdf") or nil
   return (pcibus.parse_bdf(b))
end

---
-- Place every BAR with the board's allocator, as firmware does (the addresses the device
-- had on the host mean nothing in the guest), and enable decoding and bus mastering: for
-- a guest that assigns no BARs itself.
function Machine:place_bars(alloc)
   local placed, err = alloc:place(self.trap:bars())
   if not placed then return nil, err end
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
-- INTx is usable: the function has a pin and the device an INTx line.
function Machine:has_intx()
   if self:intx_pin() == 0 or not self.dev.set_irqs then return false end
   local info = self.dev:irq_info(INTX)
   return info ~= nil and (info.count or 0) >= 1
end

local INDEX = { intx = INTX, msi = MSI, msix = MSIX }

-- What the interrupt mode's actions (vfio.vmm.irq) do to the device and the VM.
local IRQ_ACTIONS = {}

-- Close vectors, after removing the trap's pending sources that name them.
local function drop_vectors(self, kind, vecs)
   for i in pairs(self.sources or {}) do self.trap:set_source(kind, i - 1, nil) end
   self.sources = nil
   for _, v in ipairs(vecs or {}) do v:close() end
end

function IRQ_ACTIONS.off(self, kind)
   self.dev:set_irqs(INDEX[kind], "trigger", 0, 0)
   drop_vectors(self, kind, self.vectors)
   self.vectors = nil
   return true
end

function IRQ_ACTIONS.intx(self)
   local line, err, errno = self.intx
   if not line then
      line, err, errno = self.router:intx(self.intx_line)
      if not line then return nil, "INTx irqfd: " .. tostring(err), errno end
      self.intx = line
   end
   local ok
   ok, err, errno = self.dev:set_irqs(INTX, "trigger", 0, 1, line.irqfd:fileno())
   if not ok then return nil, err, errno end
   ok, err, errno = self.dev:set_irqs(INTX, "unmask", 0, 1, line.irqfd:resample_fileno())
   if not ok then
      self.dev:set_irqs(INTX, "trigger", 0, 0)
      return nil, err, errno
   end
   return true
end

function IRQ_ACTIONS.vectors(self, kind, entries)
   local vecs, fds = {}, {}
   for i, e in ipairs(entries) do
      local v, err, errno = self.router:msi(e.addr, e.data)
      if not v then
         drop_vectors(self, kind, vecs)
         return nil, err, errno
      end
      vecs[i], fds[i] = v, v.irqfd:fileno()
      if e.masked then
         local ok, merr, merrno = IRQ_ACTIONS.mask(self, i, true, vecs, kind)
         if not ok then
            drop_vectors(self, kind, vecs)
            return nil, merr, merrno
         end
      end
   end
   local ok, err, errno = self.dev:set_irqs(INDEX[kind], "trigger", 0, #fds, fds)
   if not ok then
      drop_vectors(self, kind, vecs)
      return nil, err, errno
   end
   self.vectors = vecs
   self:log("irq  %s on, %d vector(s), GSI %d..", kind, #vecs, vecs[1] and vecs[1].gsi or -1)
   return true
end

function IRQ_ACTIONS.update(self, i, addr, data) return self.vectors[i]:update(addr, data) end

-- A masked vector is detached from the guest, and its eventfd becomes the trap's pending
-- source for it (the PBA, or MSI's pending bits, show what fired meanwhile).
function IRQ_ACTIONS.mask(self, i, masked, vecs, kind)
   local v = (vecs or self.vectors)[i]
   local ok, err, errno = v:mask(masked)
   if not ok then return nil, err, errno end
   self.trap:set_source(kind or self.irqmode.kind, i - 1, masked and v.irqfd or nil)
   self.sources = self.sources or {}
   self.sources[i] = masked or nil
   self:log("irq  vector %d %s", i, masked and "masked" or "unmasked")
   return true
end

function IRQ_ACTIONS.reset(self)
   if self.dev.reset then self.dev:reset() end
   return true
end

---
-- Carry out the interrupt mode's actions in order; the first failure ends them.
function Machine:irq_actions(actions)
   for _, a in ipairs(actions) do
      local ok, err, errno = IRQ_ACTIONS[a[1]](self, table.unpack(a, 2))
      if not ok then
         if a[1] == "intx" or a[1] == "vectors" then self.irqmode:failed() end
         return nil, err, errno
      end
   end
   return true
end

---
-- The device's interrupts as they are before the guest enables MSI: INTx, if it has it.
function Machine:start_irqs()
   self.irqmode = self.irqmode or irq.mode { intx = self:has_intx() }
   return self:irq_actions(self.irqmode:start())
end

local function msix_entry(trap, i)
   local addr, data, masked = trap:msix_entry(i)
   return { addr = addr or 0, data = data or 0, masked = masked or false }
end

---
-- One trap event; interrupt state follows the guest (vfio.vmm.irq's mode decides).
function Machine:event(e)
   self.stats.events = self.stats.events + 1
   self:log("event %s", e.type)
   local trap = self.trap
   self.irqmode = self.irqmode or irq.mode { intx = self:has_intx() }
   return self:irq_actions(self.irqmode:event(e, function(i) return msix_entry(trap, i) end))
end

-- Trap events after which the BAR layout may differ: a BAR moved, decoding toggled.
local LAYOUT_EVENTS = { bar = true, decode = true }

---
-- Drain the trap's events, carrying out what they ask of the interrupts.
-- @return true, changed (an event that can change the BAR layout came), or nil, message,
-- errno
function Machine:take_events()
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
function Machine:sync(force)
   local ok, changed, errno = self:take_events()
   if not ok then return nil, changed, errno end
   if changed or force then return self:apply_layout() end
   return true
end

---
-- The host mapping of a BAR: the one the trap's backend made, so each BAR is mapped
-- once per device (the slots borrow it, and keep the backend alive while they exist).
function Machine:region_map(bar)
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
function Machine:add_piece(p)
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
function Machine:remove_piece(h)
   if h.slot then self.vm:unmap(h.slot) end
   if h.range then self.vm:remove_range(h.range) end
end

---
-- Make slots and ranges match the BARs as the guest has them now.
function Machine:apply_layout()
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
function Machine:lua_access(x)
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
-- m:boot(path, {cmdline=, timeout=, should_stop=fn}) -> result table (see vfio.vmm.vm boot),
-- or nil, message. should_stop() true ends the run at the next exit that reaches Lua.
function Machine:boot(path, opts)
   opts = opts or {}
   if not self.vm then
      local ok, err, errno = self:start()
      if not ok then return nil, err, errno end
   end
   return self.board:boot(path, opts)
end

---
-- Teardown, reverse of start: device interrupts off, its vectors and irqfds, its BAR
-- slots and ranges, its own board if it made one (DMA mappings, the KVM VFIO group, the
-- VM), then the trap and its backend (which holds the BAR mappings the slots borrowed).
-- On a shared board the trap stays attached to the host bridge, closed: it answers all
-- ones. Idempotent; errors on the way do not stop the rest.
function Machine:close()
   if self.closed then return end
   self.closed = true
   if self.irqmode and self.dev.set_irqs then pcall(self.irq_actions, self, self.irqmode:off()) end
   if self.intx then pcall(self.intx.close, self.intx) end
   if self.vm then
      for k, h in pairs(self.pieces) do pcall(self.remove_piece, self, h); self.pieces[k] = nil end
   end
   if self.own_board and self.board then self.board:close() end
   self.maps = {}
   if self.pt then self.pt:close() end
end
Machine.__close = Machine.close
Machine.__gc = Machine.close

return M
