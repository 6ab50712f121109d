-- Guest address layout for BARs: windows for 32-bit MMIO, 64-bit MMIO and I/O ports,
-- each allocated in order with every BAR aligned to its size (PCI requires natural
-- alignment). The choice of window per BAR is a policy a caller can replace.
local layout = {}

-- Defaults fit a q35-like guest: 32-bit MMIO below the IOAPIC/LAPIC at 0xfec00000,
-- 64-bit MMIO above 512 GiB, ports above the legacy range.
layout.defaults = {
   mmio32 = { base = 0xc0000000, limit = 0xfebfffff },
   mmio64 = { base = 0x8000000000, limit = 0xffffffffff },
   io = { base = 0xc000, limit = 0xffff },
}

-- 64-bit BARs at least this large go above 4 GiB even when not prefetchable.
layout.large = 256 << 20

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

-- Reserve `size` bytes (a power of two) in window `name`; nil if it does not fit.
function Alloc:reserve(name, size)
   local w = self.windows[name]
   if not w then return nil, "no window " .. name end
   local a = align_up(w.next, size)
   if a < w.next or a + size - 1 > w.limit or a + size - 1 < a then
      return nil, ("window %s full (%#x bytes at %#x..%#x)"):format(name, size, w.next, w.limit)
   end
   w.next = a + size
   return a
end

-- alloc:place(bars) -> {[index] = {addr=, window=}} for the implemented BARs of one
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
            if addr then out[b.index] = { addr = addr, window = name }; break end
         end
      end
      if not addr then
         return nil, ("layout: BAR%d (%#x bytes): %s"):format(b.index, b.size, err or "no window")
      end
   end
   return out
end

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

return layout
