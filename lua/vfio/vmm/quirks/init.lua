---
-- Device quirks as data. A quirk is a table:
--   name, description          for logs and specs
--   match = {vendor=, device=, class=, class_mask=, subvendor=, subdevice=}
--           (any field may be a list of accepted values; all given fields must match)
--   config = {{off=, bytes= | value=, size=, wmask=}}  emulated config overrides
--   cap_config = {{cap=, ext=, off=, size=, mask=, set=, only_if=}}  patch bits of a
--           capability found by ID (set applies where mask is 1; only_if: when the
--           masked bits currently equal it)
--   hide_caps = {id | {id=, ext=true}}
--   hide_rom = true
--   bar_size = {[bar] = size}
--   relocate_msix = {bar = "unused" | n}
--   windows = {{bar=, off=, len=, read=fn(q, off, size), write=fn(q, off, size, v)}}
--           q = {trap=, state={}, quirk=}; handlers run per access;
--           reads = "device" says reads return the device's own value (a VMM may
--           then let guest reads reach the BAR directly and trap only writes)
--   mirror = {{bar=, off=, len=, cfg_off=}}
-- Actions are applied in the order above so later ones see earlier results.
-- @module vfio.vmm.quirks
local quirks = {}

-- The shipped quirks, by module name under vfio.vmm.quirks.
quirks.builtin = {
   "bcm57810_rom", "intel_82599_vf_pcie", "edu_dma_guard", "e1000e_io_window",
   "xhci_msix_relocate",
}

--- The shipped quirk tables (`quirks.builtin`), loaded.
function quirks.load_builtin()
   local list = {}
   for _, n in ipairs(quirks.builtin) do list[#list + 1] = require("vfio.vmm.quirks." .. n) end
   return list
end

local function accepts(want, have)
   if want == nil then return true end
   if type(want) == "table" then
      for _, w in ipairs(want) do if w == have then return true end end
      return false
   end
   return want == have
end

---
-- ids = {vendor=, device=, class=, subvendor=, subdevice=}
function quirks.matches(q, ids)
   local m = q.match or {}
   if not (accepts(m.vendor, ids.vendor) and accepts(m.device, ids.device)
           and accepts(m.subvendor, ids.subvendor) and accepts(m.subdevice, ids.subdevice)) then
      return false
   end
   if m.class then
      local mask = m.class_mask or 0xffffff
      return (ids.class & mask) == (m.class & mask)
   end
   return true
end

---
-- The IDs a guest would match on, from the trap's (emulated) config space.
function quirks.ids(trap)
   return {
      vendor = trap:cfg_read(0, 2), device = trap:cfg_read(2, 2),
      class = trap:cfg_read(8, 4) >> 8,
      subvendor = trap:cfg_read(0x2c, 2), subdevice = trap:cfg_read(0x2e, 2),
   }
end

-- v as n little-endian bytes (string.pack's), cut to those bytes as the register is:
-- quirk values and masks are plain integers.
local function le(v, n)
   if n > 8 then return string.pack("<I8", v) .. ("\0"):rep(n - 8) end
   return string.pack("<I" .. n, v & ((1 << (8 * n)) - 1)) -- n == 8: the mask is all ones
end

local function find_cap(trap, id, ext)
   for _, c in ipairs(trap:caps()) do
      if c.id == id and (c.ext or false) == (ext or false) and not c.hidden then return c end
   end
end

local function check(ok, err, what, q)
   if not ok then error(("quirk %s: %s: %s"):format(q.name or "?", what, err or "failed"), 3) end
   return ok
end

-- Place the MSI-X table and PBA in a BAR of their own, or after the end of an
-- existing one (which doubles in size), as QEMU's x-msix-relocation does.
local function relocate_msix(trap, spec, q)
   local m = trap:msix()
   if not m then return end
   local tlen = m.n * 16
   local plen = (m.n + 63) // 64 * 8
   local pba_at = (tlen + 0xfff) & ~0xfff
   local need = pba_at + plen
   local size = 0x1000
   while size < need do size = size << 1 end
   local bars = trap:bars()
   local bar, base = spec.bar, 0
   if bar == "unused" then
      bar = nil
      for i = 0, 5 do
         if bars[i].size == 0 and not bars[i].upper then bar = i; break end
      end
      check(bar, "no unused BAR slot", "relocate MSI-X", q)
      check(trap:set_bar_size(bar, size), nil, "new BAR for MSI-X", q)
   else
      local b = check(bars[bar], "no such BAR", "relocate MSI-X", q)
      base = b.size
      local new = b.size * 2
      while new - base < need do new = new * 2 end
      check(trap:set_bar_size(bar, new), nil, "grow BAR for MSI-X", q)
   end
   check(trap:relocate_msix(bar, base, base + pba_at), nil, "relocate MSI-X", q)
end

---
-- quirks.apply(trap, q) -> state table shared by the quirk's handlers
function quirks.apply(trap, q)
   local st = { trap = trap, state = {}, quirk = q }
   for _, c in ipairs(q.config or {}) do
      local bytes = c.bytes or le(c.value, c.size or 4)
      check(trap:set_config(c.off, bytes, c.wmask and le(c.wmask, #bytes)), nil,
            ("override config %#x"):format(c.off), q)
   end
   for _, c in ipairs(q.cap_config or {}) do
      local cap = find_cap(trap, c.cap, c.ext)
      if cap then
         local off, size = cap.off + c.off, c.size or 2
         local cur = trap:cfg_read(off, size)
         if c.only_if == nil or (cur & c.mask) == c.only_if then
            local v = (cur & ~c.mask) | (c.set & c.mask)
            check(trap:set_config(off, le(v, size)), nil, ("patch cap %#x"):format(c.cap), q)
         end
      end
   end
   for _, h in ipairs(q.hide_caps or {}) do
      local id, ext = h, false
      if type(h) == "table" then id, ext = h.id, h.ext end
      if find_cap(trap, id, ext) then trap:hide_cap(id, ext) end
   end
   if q.hide_rom then trap:hide_rom() end
   for bar, size in pairs(q.bar_size or {}) do
      check(trap:set_bar_size(bar, size), nil, "resize BAR" .. bar, q)
   end
   if q.relocate_msix then relocate_msix(trap, q.relocate_msix, q) end
   for _, w in ipairs(q.windows or {}) do
      local h = {}
      if w.read then h.read = function(off, size) return w.read(st, off, size) end end
      if w.write then h.write = function(off, size, v) return w.write(st, off, size, v) end end
      check(trap:add_window(w.bar, w.off, w.len, h), nil,
            ("window BAR%d+%#x"):format(w.bar, w.off), q)
   end
   for _, m in ipairs(q.mirror or {}) do
      check(trap:mirror_config(m.bar, m.off, m.len, m.cfg_off or 0), nil,
            ("mirror BAR%d+%#x"):format(m.bar, m.off), q)
   end
   return st
end

---
-- quirks.apply_matching(trap [, list]) -> names applied, states by name
function quirks.apply_matching(trap, list)
   list = list or quirks.load_builtin()
   local ids = quirks.ids(trap)
   local names, states = {}, {}
   for _, q in ipairs(list) do
      if quirks.matches(q, ids) then
         states[q.name] = quirks.apply(trap, q)
         names[#names + 1] = q.name
      end
   end
   return names, states
end

return quirks
