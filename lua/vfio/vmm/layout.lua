---
-- Guest address layout for BARs: windows for 32-bit MMIO, 64-bit MMIO and I/O ports,
-- each allocated in order with every BAR aligned to its size (PCI requires natural
-- alignment). The choice of window per BAR is a policy a caller can replace. Then what
-- each placed BAR becomes in a VM (mapped and C-trapped pieces) and the difference to
-- apply when the guest changes them. A Lua quirk window is no piece of its own: the C
-- range over its page asks the trap core, which passes an access to a Lua window on to
-- the run's caller (csrc/wire), so the window reaches Lua through the run handler.
-- @module vfio.vmm.layout
local address_map = require "vfio.vmm.address_map"

local layout = {}

local function window(start, size) return { base = start, limit = start + size - 1 } end

---
-- The BAR windows of a guest with `ram_size` bytes of RAM (vfio.vmm.address_map's windows,
-- a q35-like guest): 32-bit MMIO below the IOAPIC/LAPIC, 64-bit MMIO from the first GiB
-- boundary above RAM's end (address_map.mmio64_window), ports above the legacy range.
-- @tparam[opt=0] integer ram_size bytes of guest RAM
-- @tparam[opt] integer below the most RAM below the hole (address_map.ram_ranges)
-- @treturn table `{mmio32 =, mmio64 =, io =}`, each `{base =, limit =}`
function layout.windows(ram_size, below)
   return {
      mmio32 = window(address_map.MMIO32_START, address_map.MMIO32_SIZE),
      mmio64 = window(address_map.mmio64_window(ram_size or 0, below)),
      io = window(address_map.IO_PORT_START, address_map.IO_PORT_SIZE),
   }
end

-- The windows of a guest whose RAM all fits below the hole.
layout.defaults = layout.windows(0)

-- 64-bit BARs at least this large go above 4 GiB even when not prefetchable.
layout.large = 256 << 20

---
-- The default policy: I/O BARs in the I/O window; 64-bit BARs that are prefetchable
-- or large in the 64-bit window (they would crowd the 32-bit hole); everything else
-- (and the ROM) below 4 GiB. A policy returns a list of windows to try in order.
function layout.default_policy(bar)
   if bar.io then return { "io" } end
   if bar.is64 and (bar.prefetch or bar.size >= layout.large) then
      return { "mmio64", "mmio32" }
   end
   if bar.is64 then return { "mmio32", "mmio64" } end
   return { "mmio32" }
end

local Alloc = {}
Alloc.__index = Alloc

local function copy_windows(w)
   local out = {}
   for name, d in pairs(w) do
      assert(d.base and d.limit and d.limit >= d.base, "layout: window " .. name .. " needs base <= limit")
      out[name] = { base = d.base, limit = d.limit, next = d.base }
   end
   return out
end

---
-- layout.new{windows = {...}, policy = function(bar) -> {window names}} -> allocator.
-- One allocator serves all devices of a VM so their BARs never overlap.
function layout.new(opts)
   opts = opts or {}
   return setmetatable({
      windows = copy_windows(opts.windows or layout.defaults),
      policy = opts.policy or layout.default_policy,
   }, Alloc)
end

local function align_up(v, a) return (v + a - 1) & ~(a - 1) end

--- A guest BAR address allocator (vfio.vmm.layout.new).
-- @type Alloc

-- The first address at or above `a`, aligned to `size`, where `size` bytes lie inside one
-- of the window's usable ranges (all of it when it has none): nil when none is left.
local function usable_at(w, a, size)
   if not w.usable then return a end
   for _, u in ipairs(w.usable) do
      local x = math.max(a, align_up(u.start, size))
      if x >= a and x + size - 1 <= u.last and x + size - 1 >= x then return x end
   end
   return nil
end

-- Where two lists of {start =, last =} ranges meet, by start.
local function intersect(a, b)
   local out = {}
   for _, x in ipairs(a) do
      for _, y in ipairs(b) do
         local s, l = math.max(x.start, y.start), math.min(x.last, y.last)
         if s <= l then out[#out + 1] = { start = s, last = l } end
      end
   end
   table.sort(out, function(p, q) return p.start < q.start end)
   return out
end

---
-- alloc:restrict(ranges): memory BARs go only where an IOMMU can address them from now
-- on: inside `ranges` (`{start =, last =}` each, an IOMMU's usable IOVA ranges), and inside
-- every list given before (devices behind several containers). Guest RAM sits at IOVA ==
-- guest-physical, so a BAR inside the ranges is where a device's peer-to-peer DMA can
-- reach it. The I/O port window is no memory address and is left alone.
function Alloc:restrict(ranges)
   if not ranges or #ranges == 0 then return end
   for name, w in pairs(self.windows) do
      if name ~= "io" then w.usable = intersect(w.usable or { { start = w.base, last = w.limit } }, ranges) end
   end
end

---
-- Reserve `size` bytes (a power of two) in window `name`; nil if it does not fit. A range
-- given back (alloc:free) is reused first, when it fits aligned; else the window grows.
-- Inside a restricted window (alloc:restrict) only the usable ranges are handed out.
function Alloc:reserve(name, size)
   local w = self.windows[name]
   if not w then return nil, "no window " .. name end
   for i, f in ipairs(w.freed or {}) do
      local a = usable_at(w, align_up(f.addr, size), size)
      if a and a >= f.addr and a + size <= f.addr + f.size then
         table.remove(w.freed, i)
         -- what is left on either side stays free
         if a > f.addr then w.freed[#w.freed + 1] = { addr = f.addr, size = a - f.addr } end
         if a + size < f.addr + f.size then
            w.freed[#w.freed + 1] = { addr = a + size, size = f.addr + f.size - a - size }
         end
         return a
      end
   end
   local a = align_up(w.next, size)
   local inside = a >= w.next and usable_at(w, a, size)
   if not inside or inside + size - 1 > w.limit or inside + size - 1 < inside then
      local why = w.usable and (a >= w.next and a + size - 1 <= w.limit)
         and " inside the IOMMU's usable IOVA ranges" or ""
      return nil, ("window %s full (%#x bytes at %#x..%#x%s)"):format(name, size, w.next, w.limit, why)
   end
   a = inside
   w.next = a + size
   return a
end

---
-- alloc:free(placed): give back what alloc:place returned for one function (a device
-- leaving the machine), so later devices can use its ranges.
function Alloc:free(placed)
   for _, p in pairs(placed or {}) do
      local w = p.size and self.windows[p.window]
      if w then
         if p.addr + p.size == w.next then
            w.next = p.addr                          -- the top of the window: grow back
         else
            w.freed = w.freed or {}
            w.freed[#w.freed + 1] = { addr = p.addr, size = p.size }
         end
      end
   end
end

---
-- alloc:place(bars) -> {[index] = {addr=, window=, size=}} for the implemented BARs of one
-- function (trap:bars() form). Largest first, which packs naturally aligned BARs
-- without holes; a BAR whose windows are all full is an error naming it.
function Alloc:place(bars)
   local list = {}
   for i = 0, 6 do
      local b = bars[i]
      if b and b.size > 0 and not b.upper then list[#list + 1] = b end
   end
   table.sort(list, function(a, b)
      if a.size ~= b.size then return a.size > b.size end
      return a.index < b.index
   end)
   local out = {}
   for _, b in ipairs(list) do
      local tries = self.policy(b)
      local addr, err
      for _, name in ipairs(tries) do
         if name == "mmio64" and not b.is64 then
            err = "a 32-bit BAR cannot go above 4 GiB"
         else
            addr, err = self:reserve(name, b.size)
            if addr then out[b.index] = { addr = addr, window = name, size = b.size }; break end
         end
      end
      if not addr then
         return nil, ("layout: BAR%d (%#x bytes): %s"):format(b.index, b.size, err or "no window")
      end
   end
   return out
end

--- Functions of the module.
-- @section functions

---
-- Program the addresses into the function through its config space, as firmware
-- would (the trap sees ordinary guest writes).
function layout.program(trap, placed)
   for i, p in pairs(placed) do
      local off = i == 6 and 0x30 or 0x10 + 4 * i
      local lo = trap:cfg_read(off, 4)
      if i == 6 then
         trap:cfg_write(off, 4, (p.addr & 0xfffff800) | (lo & 1))
      else
         local b = trap:bars()[i]
         local keep = b.io and 0x3 or 0xf
         trap:cfg_write(off, 4, (p.addr & 0xffffffff & ~keep) | (lo & keep))
         if b.is64 then trap:cfg_write(off + 4, 4, p.addr >> 32) end
      end
   end
end

---------------------------------------------------------------------------------------
-- What each BAR becomes in the VM once placed: mapped pages and C-trapped spans, and the
-- difference to apply when the guest moves or toggles a BAR.

layout.PAGE = address_map.PAGE_SIZE

---
-- Split [0, size) of a BAR into pieces: "map" (mmap-able pages) and "trap" (a C handled
-- range). Pure: specs check it without a device.
--   bar = {size=, phys_size=, io=}, o = {mappable=bool, trapped={{off, len, ro=bool}...},
--   trace=bool}
-- Every page a trapped span touches is trapped whole; the spans are the MSI-X table and
-- PBA and every quirk window, a Lua one included (its C range passes its accesses on to
-- Lua). A trapped page whose only trapped spans are windows with ro (reads return the
-- device's value) also gets a "romap" piece: a read-only slot, so reads go straight to
-- the device and only writes exit (to the "trap" piece over the same page). With trace,
-- no piece at all: every access of the BAR is an exit no range covers, which reaches Lua.
function layout.split_bar(bar, o)
   local size, page = bar.size, layout.PAGE
   local phys = math.min(bar.phys_size or size, size)
   local pieces = {}
   if o.trace then return pieces end
   local function add(kind, off, len)
      local last = pieces[#pieces]
      if last and last.kind == kind and last.off + last.len == off then
         last.len = last.len + len
      else
         pieces[#pieces + 1] = { kind = kind, off = off, len = len }
      end
   end
   -- which pages must trap: those touching a trapped span, and anything past the
   -- device's region (it reads as zero, no mapping can give that)
   local npages = (size + page - 1) // page
   local can_map = o.mappable and not bar.io and size >= page
   for p = 0, npages - 1 do
      local lo, hi = p * page, math.min((p + 1) * page, size)
      local t = not can_map or hi > phys
      local ro = not t
      for _, s in ipairs(o.trapped or {}) do
         if s[1] < hi and s[1] + s[2] > lo then
            t = true
            if not s.ro then ro = false end
         end
      end
      if t and ro then
         pieces[#pieces + 1] = { kind = "romap", off = lo, len = hi - lo }
      end
      add(t and "trap" or "map", lo, hi - lo)
   end
   return pieces
end

-- The trapped byte spans of BAR i: MSI-X table and PBA, and quirk windows (mirrors in C,
-- handlers in Lua; a handler window's ro says its reads are the device's), and the Lua
-- windows alone (what a plan shows).
local function bar_spans(trap, i, read_through)
   local trapped, lua = {}, {}
   local x = trap:msix()
   if x then
      if x.table_bar == i then trapped[#trapped + 1] = { x.table_off, x.n * 16 } end
      if x.pba_bar == i then trapped[#trapped + 1] = { x.pba_off, ((x.n + 63) // 64) * 8 } end
   end
   for _, w in ipairs(trap:windows()) do
      if w.bar == i then
         local ro = w.lua and read_through[("%d:%d:%d"):format(i, w.off, w.len)] or nil
         trapped[#trapped + 1] = { w.off, w.len, ro = ro }
         if w.lua then lua[#lua + 1] = { off = w.off, len = w.len } end
      end
   end
   return trapped, lua
end

local REGION_MMAP = 4

---
-- layout.bar_pieces(trap, flags_of, {no_mmap=, read_through=, trace=}) -> {[bar] =
-- {bar=, pieces=, mappable=, lua_windows = {{off=, len=}...}}} for every implemented BAR
-- (lua_windows: its Lua quirk windows, inside its trap pieces), each piece with its bar, io,
-- gpa (from the address the guest programmed) and live (the BAR decodes). flags_of(i)
-- gives the VFIO region flags of region i (nil: unknown, not mappable).
function layout.bar_pieces(trap, flags_of, o)
   local list = {}
   local bars = trap:bars()
   for i = 0, 6 do
      local b = bars[i]
      if b and b.size > 0 and not b.upper then
         local flags = flags_of(i)
         local mappable = not o.no_mmap and flags and (flags & REGION_MMAP) ~= 0
            and i < 6 or false
         local trapped, lua = bar_spans(trap, i, o.read_through or {})
         local pieces = layout.split_bar(b, { mappable = mappable, trapped = trapped,
                                              trace = o.trace })
         for _, p in ipairs(pieces) do
            p.bar, p.io = i, b.io
            p.gpa = b.addr + p.off
            p.live = b.mapped
         end
         list[i] = { bar = b, pieces = pieces, mappable = mappable, lua_windows = lua }
      end
   end
   return list
end

local function piece_key(p)
   return ("%s %d %x %x %s"):format(p.kind, p.bar, p.gpa, p.len, p.io and "io" or "mem")
end

---
-- layout.apply(placed, bars, add, remove, on_fail): make `placed` (piece key -> what
-- add returned) match the pieces of the decoding BARs in `bars` (bar_pieces' result):
-- remove(handle) what is gone, add(piece) -> handle | nil, err what is new (on_fail(piece,
-- err) when it cannot be placed; it is tried again next time).
function layout.apply(placed, bars, add, remove, on_fail)
   local want = {}
   for _, e in pairs(bars) do
      if e.bar.mapped then
         for _, p in ipairs(e.pieces) do want[piece_key(p)] = p end
      end
   end
   for k, h in pairs(placed) do
      if not want[k] then
         remove(h)
         placed[k] = nil
      end
   end
   for k, p in pairs(want) do
      if not placed[k] then
         local h, err = add(p)
         if h then placed[k] = h else on_fail(p, err) end
      end
   end
end

return layout
