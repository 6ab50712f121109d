-- A second, independent PCI host bridge decoder in Lua: the spec oracle for the one the
-- VMM uses (vfio.core.pcihost, in C, csrc/kvm/pcihost.c). Configuration mechanism #1
-- (ports CF8/CFC-CFF) and ECAM (memory-mapped, 4 KiB per function) dispatched to
-- "function" objects attached at bus/device/function. A function is any object with
--     fn:cfg_read(offset, size) -> value       fn:cfg_write(offset, size, value)
-- (size 1, 2 or 4; offset aligned to size, below 256 through CF8 and below 4096
-- through ECAM). Absent functions read as all ones and ignore writes, as on hardware.
-- spec/host/pcihost_spec.lua runs the same accesses through both and compares them.
local M = {}
local Host = {}
Host.__index = Host

local CF8, CFC = 0xcf8, 0xcfc

local function key(bus, dev, fn) return bus << 8 | dev << 3 | fn end

local function ones(size) return (1 << (8 * size)) - 1 end

-- M.new{ecam_base = addr, ecam_buses = n} -> host. Without ecam_base only CF8/CFC.
function M.new(opts)
   opts = opts or {}
   local buses = opts.ecam_buses or 1
   if opts.ecam_base and (opts.ecam_base & 0xfffff ~= 0 or buses < 1 or buses > 256) then
      error("ecam_base must be 1 MiB aligned and ecam_buses in [1, 256]", 2)
   end
   return setmetatable({
      functions = {},
      address = 0, -- the CF8 latch
      ecam_base = opts.ecam_base,
      ecam_size = opts.ecam_base and buses << 20 or 0,
   }, Host)
end

-- host:attach(bus, dev, fn, function_object); one object per slot.
function Host:attach(bus, dev, fn, obj)
   if math.type(bus) ~= "integer" or bus < 0 or bus > 255 or math.type(dev) ~= "integer" or dev < 0
      or dev > 31 or math.type(fn) ~= "integer" or fn < 0 or fn > 7 then
      error(("bad PCI address %s:%s.%s"):format(bus, dev, fn), 2)
   end
   if type(obj) ~= "table" and type(obj) ~= "userdata" then error("function object expected", 2) end
   local k = key(bus, dev, fn)
   if self.functions[k] then error(("%02x:%02x.%d is already attached"):format(bus, dev, fn), 2) end
   self.functions[k] = obj
end

function Host:detach(bus, dev, fn)
   self.functions[key(bus, dev, fn)] = nil
end

function Host:lookup(bus, dev, fn)
   return self.functions[key(bus, dev, fn)]
end

-- One configuration access; accesses that are misaligned or cross the dword read as
-- all ones and are dropped, so a function only ever sees aligned 1/2/4-byte accesses.
function Host:config(bus, dev, fn, off, size, write, value)
   local f = self.functions[key(bus, dev, fn)]
   if not f or off % size ~= 0 or (size ~= 1 and size ~= 2 and size ~= 4) then
      if write then return nil, false end
      return ones(size)
   end
   if write then
      -- A true result asks the VM layer to look at the function (see host:access).
      return nil, f:cfg_write(off, size, value & ones(size)) == true
   end
   return f:cfg_read(off, size) & ones(size)
end

local function pio(self, x)
   local port, size = x.port, x.size
   if port == CF8 and size == 4 then
      if x.write then self.address = x.value & 0xffffffff return true, nil, false end
      return true, self.address
   end
   if port < CFC or port > CFC + 3 then return false end
   local a = self.address
   local off = (a & 0xfc) + (port - CFC)
   if a & 0x80000000 == 0 or (port - CFC) + size > 4 or (x.count and x.count > 1) then
      -- Disabled, crossing the data dword, or string I/O: nothing answers.
      if x.write then return true, nil, false end
      return true, ones(size)
   end
   local bus, dev, fn = (a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7
   return true, self:config(bus, dev, fn, off, size, x.write, x.value)
end

local function mmio(self, x)
   local base = self.ecam_base
   if not base or x.addr < base or x.addr >= base + self.ecam_size then return false end
   local off = x.addr - base
   local bus, dev, fn, reg = off >> 20, (off >> 15) & 0x1f, (off >> 12) & 7, off & 0xfff
   if x.size == 8 and reg % 8 == 0 then -- two dwords, low first
      if x.write then
         local _, ev1 = self:config(bus, dev, fn, reg, 4, true, x.value & 0xffffffff)
         local _, ev2 = self:config(bus, dev, fn, reg + 4, 4, true, (x.value >> 32) & 0xffffffff)
         return true, nil, ev1 or ev2
      end
      local lo = self:config(bus, dev, fn, reg, 4, false)
      local hi = self:config(bus, dev, fn, reg + 4, 4, false)
      return true, lo | hi << 32
   end
   return true, self:config(bus, dev, fn, reg, x.size, x.write, x.value)
end

-- host:access(exit) -> handled, read value (nil for writes), event: event is true when
-- a written function returned true from cfg_write (it wants the VM layer to look).
function Host:access(x)
   if x.space == "pio" then return pio(self, x) end
   if x.space == "mmio" then return mmio(self, x) end
   return false
end

-- host:handler([fallback [, on_event]]) -> a function for vcpu:run: answers
-- configuration accesses, calls on_event(exit) after a write that raised an event, and
-- passes everything else to fallback (whose result is returned as is).
function Host:handler(fallback, on_event)
   return function(x)
      local handled, v, ev = self:access(x)
      if handled then
         if ev and on_event then on_event(x) end
         return v
      end
      if fallback then return fallback(x) end
   end
end

return M
