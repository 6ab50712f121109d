---
-- Register descriptions and register objects.
--
-- A description lists a device's registers (name, offset, width in bytes, access mode,
-- optional array count/stride, optional bit fields). Bound to something that can read and
-- write (a VFIO region, the config region, or any table with read32/write32-style methods
-- or read(off, n)/write(off, bytes)), each register becomes an object:
--   r()            read          r(v)           write v
--   r:set(mask)    read-modify-write OR (W1C registers: error, writing 1 clears)
--   r:clear(mask)  read-modify-write AND NOT (W1C registers: writes mask, which clears it)
--   r.field        read a bit field          r.field = v    read-modify-write that field
--   r:wait(expect, {timeout=, mask=})        poll until the value matches
-- Access modes: RO (no writes), RW, WO (no reads), W1C (write 1 to clear), RC (read clears:
-- read only when called, never by dump or tostring). Nothing is written unless a write call
-- is made; dumps and printing only read registers whose reads have no side effects.
-- @module vfio.regs
local M = {}

local fmt = string.format

local ACCESS = { RO = true, RW = true, WO = true, W1C = true, RC = true }
local WIDTHS = { [1] = 8, [2] = 16, [4] = 32, [8] = 64 }

local function mask_of(bits)
   return bits >= 64 and -1 or (1 << bits) - 1
end

-- Clock and sleep for wait(): luasystem (a busted dependency, Debian's lua-system) when
-- present; otherwise a CPU-clock busy wait, which still bounds the timeout.
local clock, sleep
do
   local ok, system = pcall(require, "system")
   if ok and system.monotime and system.sleep then
      clock, sleep = system.monotime, system.sleep
   else
      clock = os.clock
      sleep = function() end
   end
end
--- The clock `wait` uses: luasystem's monotime (seconds), else os.clock.
-- @function clock

--- The sleep `wait` uses: luasystem's sleep (seconds), else nothing (a busy wait).
-- @function sleep
M.clock, M.sleep = clock, sleep

---------------------------------------------------------------- descriptions

local function parse_fields(spec, width, where)
   if spec == nil then return nil end
   local list = {}
   local function add(name, lo, hi, doc)
      if type(name) ~= "string" then error(where .. ": field names must be strings", 4) end
      hi = hi or lo
      if type(lo) ~= "number" or type(hi) ~= "number" or math.type(lo) ~= "integer"
         or math.type(hi) ~= "integer" or lo < 0 or hi < lo or hi >= width * 8 then
         error(fmt("%s: field %s has bad bits %s..%s for a %d-bit register", where, name,
            tostring(lo), tostring(hi), width * 8), 4)
      end
      list[#list + 1] = { name = name, lo = lo, hi = hi, doc = doc,
         mask = mask_of(hi - lo + 1) << lo }
   end
   for k, v in pairs(spec) do
      if type(k) == "string" then
         if type(v) == "number" then add(k, v, v)
         elseif type(v) == "table" then add(k, v[1], v[2], v.doc)
         else error(where .. ": field " .. k .. " must be a bit number or {lo, hi}", 3) end
      elseif type(v) == "table" then
         add(v[1] or v.name, v[2] or v.lo, v[3] or v.hi, v.doc)
      end
   end
   table.sort(list, function(a, b) return a.lo < b.lo end)
   local byname = {}
   for _, f in ipairs(list) do
      if byname[f.name] then error(where .. ": duplicate field " .. f.name, 3) end
      byname[f.name] = f
   end
   return { list = list, byname = byname }
end

---
-- describe{ name=, width=4 (default for entries), access="RW" (default), {entries...} }
-- Entry: { "name", offset, width=, access=, count=, stride=, fields=, doc= } or with
-- name=/offset= keys.
function M.describe(spec)
   if type(spec) ~= "table" then error("describe: expects a table", 2) end
   local d = { name = spec.name or "regs", doc = spec.doc, list = {}, byname = {} }
   local dwidth = spec.width or 4
   local daccess = spec.access or "RW"
   for i, e in ipairs(spec.registers or spec) do
      if type(e) ~= "table" then error(fmt("describe: entry %d is not a table", i), 2) end
      local r = {
         name = e.name or e[1], offset = e.offset or e[2], width = e.width or dwidth,
         access = (e.access or daccess):upper(), count = e.count, stride = e.stride, doc = e.doc,
      }
      local where = fmt("describe %s: entry %d (%s)", d.name, i, tostring(r.name))
      if type(r.name) ~= "string" or not r.name:match("^[%a_][%w_]*$") then
         error(where .. ": name must be an identifier", 2)
      end
      if math.type(r.offset) ~= "integer" or r.offset < 0 then
         error(where .. ": offset must be a non-negative integer", 2)
      end
      if not WIDTHS[r.width] then error(where .. ": width must be 1, 2, 4 or 8 bytes", 2) end
      if not ACCESS[r.access] then
         error(where .. ": access must be one of RO, RW, WO, W1C, RC", 2)
      end
      if r.offset % r.width ~= 0 then error(where .. ": offset not aligned to width", 2) end
      if r.count ~= nil then
         if math.type(r.count) ~= "integer" or r.count < 1 then
            error(where .. ": count must be a positive integer", 2)
         end
         r.stride = r.stride or r.width
         if r.stride < r.width then error(where .. ": stride smaller than width", 2) end
      end
      r.fields = parse_fields(e.fields, r.width, where)
      if d.byname[r.name] then error(where .. ": duplicate register name", 2) end
      d.byname[r.name] = r
      d.list[#d.list + 1] = r
   end
   table.sort(d.list, function(a, b) return a.offset < b.offset end)
   -- Overlapping registers are almost always a typo in an offset.
   for i = 2, #d.list do
      local p, r = d.list[i - 1], d.list[i]
      local pend = p.offset + (p.count and (p.count - 1) * p.stride or 0) + p.width
      if r.offset < pend then
         error(fmt("describe %s: %s (0x%x) overlaps %s", d.name, r.name, r.offset, p.name), 2)
      end
   end
   return d
end

---------------------------------------------------------------- I/O adapters

local function make_io(target)
   local t = type(target)
   if t ~= "table" and t ~= "userdata" then
      error("regs.bind: target must be a region-like object with read/write methods", 3)
   end
   local io = {}
   function io.read(off, width)
      local m = target["read" .. WIDTHS[width]]
      if m then return m(target, off) end
      local s, err, errno = target:read(off, width)
      if not s then return nil, err, errno end
      if #s < width then return nil, fmt("short read at 0x%x: %d of %d bytes", off, #s, width) end
      return (string.unpack("<i" .. width, s))
   end
   function io.write(off, width, v)
      local m = target["write" .. WIDTHS[width]]
      if m then return m(target, off, v) end
      local ok, err, errno = target:write(off, string.pack("<I" .. width, v & mask_of(WIDTHS[width])))
      if not ok then return nil, err, errno end
      return true
   end
   return io
end

---------------------------------------------------------------- register objects

local Reg = {}   -- methods
local RegMT = { __name = "vfio.reg" }

local function hexw(v, width)
   return fmt("0x%0" .. (width * 2) .. "x", v & mask_of(width * 8))
end

local function reg_read(r)
   local d = r._d
   if d.access == "WO" then
      return nil, fmt("%s is write-only (WO): reading it has no defined value", r._name)
   end
   local v, err, errno = r._io.read(r._off, d.width)
   if v == nil then return nil, err, errno end
   if d.width < 8 then v = v & mask_of(d.width * 8) end
   return v
end

local function reg_write(r, v)
   local d = r._d
   if d.access == "RO" or d.access == "RC" then
      error(fmt("%s is read-only (%s)", r._name, d.access), 3)
   end
   if math.type(v) ~= "integer" then
      error(fmt("%s: write needs an integer, got %s", r._name, type(v)), 3)
   end
   if d.width < 8 and (v > mask_of(d.width * 8) or v < -(1 << (d.width * 8 - 1))) then
      error(fmt("%s: value 0x%x does not fit in %d bits", r._name, v, d.width * 8), 3)
   end
   local ok, err, errno = r._io.write(r._off, d.width, v)
   if not ok then return nil, err, errno end
   return true
end

--- A register of a bank: call it to read (`r()`) or write (`r(v)`), index it for a field.
-- @type Reg

--- Read the register (masked to its width).
-- @treturn int the value, or `nil, message` for a write-only register, or the I/O's `nil, message, errno`
function Reg:read() return reg_read(self) end
--- Write an integer to the register. Raises for a read-only register or a value that
-- does not fit its width.
-- @treturn boolean true, or the I/O's `nil, message, errno`
function Reg:write(v) return reg_write(self, v) end

-- Read-modify-write needs a value to start from: WO registers have none.
local function rmw(r, f)
   local v, err, errno = reg_read(r)
   if v == nil then return nil, err, errno end
   return reg_write(r, f(v))
end

--- Set the bits of mask (read-modify-write). Raises for a write-1-to-clear register.
-- @treturn boolean true, or `nil, message, errno`
function Reg:set(mask)
   if self._d.access == "W1C" then
      error(self._name .. " is write-1-to-clear (W1C): bits cannot be set", 2)
   end
   return rmw(self, function(v) return v | mask end)
end

--- Clear the bits of mask (read-modify-write; a W1C register is written the mask).
-- @treturn boolean true, or `nil, message, errno`
function Reg:clear(mask)
   if self._d.access == "W1C" then return reg_write(self, mask) end
   return rmw(self, function(v) return v & ~mask end)
end

local function field(r, name)
   local fs = r._d.fields
   local f = fs and fs.byname[name]
   if not f then error(fmt("%s has no field %s", r._name, tostring(name)), 3) end
   return f
end

---
-- Value of a named bit field (reads the register).
function Reg:get(name)
   local f = field(self, name)
   local v, err, errno = reg_read(self)
   if v == nil then return nil, err, errno end
   return (v & f.mask) >> f.lo
end

---
-- Write one field, keeping the others (W1C: writes only that field's bits).
function Reg:put(name, value)
   local f = field(self, name)
   local width = f.hi - f.lo + 1
   if math.type(value) ~= "integer" or value < 0 or value > mask_of(width) then
      error(fmt("%s.%s: value %s does not fit in %d bit(s)", self._name, name, tostring(value), width), 2)
   end
   if self._d.access == "W1C" then return reg_write(self, value << f.lo) end
   return rmw(self, function(v) return (v & ~f.mask) | (value << f.lo) end)
end

---
-- All fields of a value (or of a fresh read) as a table name -> value.
function Reg:fields(v)
   if v == nil then
      local err, errno
      v, err, errno = reg_read(self)
      if v == nil then return nil, err, errno end
   end
   local t = {}
   for _, f in ipairs(self._d.fields and self._d.fields.list or {}) do
      t[f.name] = (v & f.mask) >> f.lo
   end
   return t
end

local function matcher(r, expect, mask)
   if type(expect) == "function" then return expect, "predicate" end
   if type(expect) == "table" then
      local parts = {}
      for k, want in pairs(expect) do
         local f = field(r, k)
         parts[#parts + 1] = { f, want }
      end
      return function(v)
         for _, p in ipairs(parts) do
            if (v & p[1].mask) >> p[1].lo ~= p[2] then return false end
         end
         return true
      end, "fields"
   end
   if math.type(expect) ~= "integer" then error("wait: expect an integer, a field table or a function", 3) end
   mask = mask or -1
   return function(v) return v & mask == expect & mask end,
      fmt("& 0x%x == 0x%x", mask & mask_of(r._d.width * 8), expect & mask)
end

---
-- Poll until the register matches. expect: integer (compared under opts.mask), a table of
-- field values, or a predicate. opts.timeout in seconds (1), opts.interval (0.001).
-- Returns the matching value, or nil, "timeout ...", last value.
function Reg:wait(expect, opts)
   if type(opts) == "number" then opts = { timeout = opts } end
   opts = opts or {}
   local ok, what = matcher(self, expect, opts.mask)
   local timeout, interval = opts.timeout or 1, opts.interval or 0.001
   local deadline = clock() + timeout
   local v, err, errno
   while true do
      v, err, errno = reg_read(self)
      if v == nil then return nil, err, errno end
      if ok(v) then return v end
      if clock() >= deadline then
         return nil, fmt("timeout after %gs waiting for %s %s (last %s)", timeout, self._name, what,
            hexw(v, self._d.width)), v
      end
      sleep(interval)
   end
end

---
-- A register's value as text: hex, decimal and fields.
function Reg:format(v)
   local d = self._d
   local s = fmt("%s = %s (%d)", self._name, hexw(v, d.width), v)
   if d.fields then
      local parts = {}
      for _, f in ipairs(d.fields.list) do
         parts[#parts + 1] = fmt("%s=%s", f.name, (f.hi > f.lo) and fmt("0x%x", (v & f.mask) >> f.lo)
            or tostring((v & f.mask) >> f.lo))
      end
      s = s .. " {" .. table.concat(parts, " ") .. "}"
   end
   return s
end

---
-- Side-effect-free description; reads only registers whose reads have no side effects.
function Reg:describe()
   local d = self._d
   local head = fmt("%s @0x%x %s %d-bit", self._name, self._off, d.access, d.width * 8)
   if d.access == "WO" then return head .. " (write-only)" end
   if d.access == "RC" then return head .. " (read clears: call it to read)" end
   local v, err = reg_read(self)
   if v == nil then return head .. " <" .. tostring(err) .. ">" end
   return head .. ": " .. self:format(v)
end

--- The register's description: `{name, offset, width, access, doc, fields = {{name, lo, hi, doc}}}`.
function Reg:info()
   local d = self._d
   local t = { name = self._name, offset = self._off, width = d.width, access = d.access, doc = d.doc }
   if d.fields then
      t.fields = {}
      for _, f in ipairs(d.fields.list) do
         t.fields[#t.fields + 1] = { name = f.name, lo = f.lo, hi = f.hi, doc = f.doc }
      end
   end
   return t
end

RegMT.__call = function(r, v)
   if v == nil then return reg_read(r) end
   return reg_write(r, v)
end
RegMT.__index = function(r, k)
   local m = Reg[k]
   if m ~= nil then return m end
   local fs = r._d.fields
   if fs and fs.byname[k] then return r:get(k) end
   return nil
end
RegMT.__newindex = function(r, k, v)
   local fs = r._d.fields
   if fs and fs.byname[k] then
      local ok, err = r:put(k, v)
      if not ok then error(err, 2) end
      return
   end
   error(fmt("%s has no field %s", r._name, tostring(k)), 2)
end
RegMT.__tostring = function(r) return r:describe() end
-- For the REPL's tab completion: methods plus field names.
RegMT.__complete = function(r)
   local t = {}
   for k in pairs(Reg) do t[#t + 1] = k end
   for _, f in ipairs(r._d.fields and r._d.fields.list or {}) do t[#t + 1] = f.name end
   return t
end

local function new_reg(io, d, off, name)
   return setmetatable({ _io = io, _d = d, _off = off, _name = name }, RegMT)
end

---------------------------------------------------------------- arrays

local Arr = {}
local ArrMT = { __name = "vfio.regarray" }

function Arr:dump()
   local out = {}
   for i = 0, self._d.count - 1 do out[#out + 1] = self[i]:describe() end
   return table.concat(out, "\n")
end

ArrMT.__index = function(a, k)
   if math.type(k) == "integer" then
      local d = a._d
      if k < 0 or k >= d.count then
         error(fmt("%s[%d]: index out of range 0..%d", d.name, k, d.count - 1), 2)
      end
      return new_reg(a._io, d, d.offset + k * d.stride, fmt("%s[%d]", d.name, k))
   end
   return Arr[k]
end
ArrMT.__len = function(a) return a._d.count end
ArrMT.__tostring = function(a)
   local d = a._d
   return fmt("%s @0x%x %s %d x %d-bit (stride %d)", d.name, d.offset, d.access, d.count,
      d.width * 8, d.stride)
end
ArrMT.__complete = function() local t = {} for k in pairs(Arr) do t[#t + 1] = k end return t end

---------------------------------------------------------------- banks

local Bank = {}
local BankMT = { __name = "vfio.regs", __index = Bank }

--- A bank of registers (what vfio.regs.bind returns): each register by name.
-- @type Bank

---
-- Text listing of every register; reads only the side-effect-free ones.
function Bank:dump()
   local out = {}
   for _, d in ipairs(self._desc.list) do
      local r = rawget(self, d.name)
      out[#out + 1] = d.count and tostring(r) or r:describe()
   end
   return table.concat(out, "\n")
end

--- The bank's register names, in description order.
function Bank:registers()
   local t = {}
   for _, d in ipairs(self._desc.list) do t[#t + 1] = d.name end
   return t
end

BankMT.__tostring = function(b)
   return fmt("%s: %d registers (dump() reads them)", b._desc.name, #b._desc.list)
end

--- Functions of the module.
-- @section functions

---
-- bind(description or spec table, target[, base offset]) -> bank of register objects.
function M.bind(desc, target, base)
   if desc.byname == nil then desc = M.describe(desc) end
   local io = make_io(target)
   base = base or 0
   local b = setmetatable({ _desc = desc, _target = target }, BankMT)
   for _, d in ipairs(desc.list) do
      if d.count then
         local shifted = setmetatable({}, { __index = d })
         shifted.offset = base + d.offset
         b[d.name] = setmetatable({ _io = io, _d = shifted }, ArrMT)
      else
         b[d.name] = new_reg(io, d, base + d.offset, d.name)
      end
   end
   return b
end

M.Reg, M.Bank = Reg, Bank
return M
