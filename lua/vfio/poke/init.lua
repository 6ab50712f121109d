-- Interactive device poking: a REPL in which a PCI device is as easy to explore as a table.
--
--   lua5.4 -i -l vfio.poke          or          bin/vfio-poke [BDF]
--
-- Readline editing and history (Debian's lua-readline), tab completion of globals, module
-- functions and methods through __index chains, and results printed readably: integers in
-- hex and decimal, tables pretty-printed, objects through __tostring.
-- Safe by default: printing, completing and decoding only read; nothing is written to a
-- device unless a write call is typed (a register called with a value, region:write*,
-- bind/unbind, irq setup).
local decode = require "vfio.decode"
local hexdump = require "vfio.hexdump"
local pci = require "vfio.pci"
local pcibus = require "vfio.pcibus"
local pciids = require "vfio.pciids"
local regs = require "vfio.regs"

local M = {}
local fmt = string.format

---------------------------------------------------------------- pretty printing

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
   repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function has_tostring(v)
   local mt = getmetatable(v)
   return type(mt) == "table" and rawget(mt, "__tostring") ~= nil
end

local function int_text(v)
   if v < 0 then return fmt("%d (0x%x)", v, v) end
   return fmt("0x%x (%d)", v, v)
end

local function string_text(s, indent)
   if s:find("[^\t\n\r\32-\126]") then
      -- Binary data (a region read, config bytes): a hexdump says more than escapes.
      if #s <= 16 then
         return fmt("<%d bytes: %s>", #s, (s:gsub(".", function(c) return fmt("%02x ", c:byte()) end)):sub(1, -2))
      end
      return fmt("<%d bytes>\n", #s) .. hexdump.format(s:sub(1, 4096), 0)
         .. (#s > 4096 and "\n..." or "")
   end
   if indent == 0 and s:find("\n") then return s end -- text (lspci output, dumps) as is
   return fmt("%q", s)
end

local function key_text(k)
   if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] then return k end
   if math.type(k) == "integer" then return "[" .. int_text(k):match("^(%S+)") .. "]" end
   return "[" .. M.pp(k, 1) .. "]"
end

local function sorted_keys(t)
   local keys = {}
   for k in next, t do keys[#keys + 1] = k end
   table.sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta == "number" end
      if ta == "number" or ta == "string" then return a < b end
      return tostring(a) < tostring(b)
   end)
   return keys
end

local MAX_DEPTH, MAX_ITEMS = 4, 64

local function table_text(t, indent, seen)
   if seen[t] then return "<cycle>" end
   if indent >= MAX_DEPTH then return "{...}" end
   seen[t] = true
   local keys = sorted_keys(t)
   if #keys == 0 then seen[t] = nil; return "{}" end
   local pad = string.rep("  ", indent + 1)
   local out = {}
   local n = #t
   local shown = 0
   for _, k in ipairs(keys) do
      shown = shown + 1
      if shown > MAX_ITEMS then
         out[#out + 1] = pad .. fmt("... (%d more)", #keys - MAX_ITEMS)
         break
      end
      local v = rawget(t, k)
      local vs = M.pp(v, indent + 1, seen)
      if math.type(k) == "integer" and k >= 1 and k <= n then
         out[#out + 1] = pad .. vs .. ","
      else
         out[#out + 1] = pad .. key_text(k) .. " = " .. vs .. ","
      end
   end
   seen[t] = nil
   return "{\n" .. table.concat(out, "\n") .. "\n" .. string.rep("  ", indent) .. "}"
end

-- Text for one value: integers as hex and decimal, strings quoted (text blocks as is,
-- binary as a hexdump), tables expanded, objects with __tostring through it.
function M.pp(v, indent, seen)
   indent = indent or 0
   local t = type(v)
   if t == "number" then
      if math.type(v) == "integer" then return int_text(v) end
      return fmt("%.14g", v)
   elseif t == "string" then
      return string_text(v, indent)
   elseif t == "table" then
      if has_tostring(v) then
         local ok, s = pcall(tostring, v)
         return ok and s or ("<__tostring failed: " .. tostring(s) .. ">")
      end
      return table_text(v, indent, seen or {})
   elseif t == "userdata" then
      local ok, s = pcall(tostring, v)
      return ok and s or "<userdata>"
   end
   return tostring(v)
end

-- Text shown as is by the REPL (dumps, decodes); tostring() gives the plain string.
local TextMT = { __name = "vfio.poke.text" }
TextMT.__index = { lines = function(t) return t.text:gmatch("[^\n]+") end }
TextMT.__tostring = function(t) return t.text end
TextMT.__concat = function(a, b) return tostring(a) .. tostring(b) end
TextMT.__len = function(t) return #t.text end
function M.text(s, ...)
   if s == nil then return nil, ... end
   return setmetatable({ text = s }, TextMT)
end

---------------------------------------------------------------- completion

-- Names an object offers after "." or ":", found without calling anything that could touch
-- a device: raw table keys, then the metatable chain's __index tables, and __complete
-- (objects whose __index is a function that reads registers list their names that way).
local function members(obj, out, depth)
   out = out or {}
   depth = depth or 0
   if depth > 8 then return out end
   if type(obj) == "table" then
      for k, v in next, obj do
         if type(k) == "string" and out[k] == nil then out[k] = v end
      end
   elseif type(obj) == "string" then
      for k, v in pairs(string) do if out[k] == nil then out[k] = v end end
      return out
   end
   local mt = getmetatable(obj)
   if type(mt) ~= "table" then return out end
   local complete = rawget(mt, "__complete")
   if type(complete) == "function" then
      local ok, names = pcall(complete, obj)
      if ok and type(names) == "table" then
         for _, k in ipairs(names) do if out[k] == nil then out[k] = true end end
      end
   end
   local idx = rawget(mt, "__index")
   if type(idx) == "table" and idx ~= obj then members(idx, out, depth + 1) end
   return out
end
M.members = members

-- Walk a.b.c without side effects: raw fields, then __index tables only.
local function safe_get(obj, key)
   local seen = 0
   while obj ~= nil and seen < 10 do
      if type(obj) == "table" then
         local v = rawget(obj, key)
         if v ~= nil then return v end
      end
      local mt = getmetatable(obj)
      if type(mt) ~= "table" then return nil end
      local idx = rawget(mt, "__index")
      if type(idx) ~= "table" then
         -- A function __index on a declared-safe object (no __complete) such as a device
         -- wrapper is called; one with __complete might read hardware, so it is not.
         if type(idx) == "function" and rawget(mt, "__complete") == nil then
            local ok, v = pcall(idx, obj, key)
            if ok then return v end
         end
         return nil
      end
      obj, seen = idx, seen + 1
   end
   return nil
end

-- Completions for the word at the end of `line` in environment env: full replacement words.
function M.complete(line, env)
   local word = line:match("[%w_%.:]*$") or ""
   local path, sep, partial = word:match("^(.-)([%.:])([%w_]*)$")
   local cands = {}
   if not path or path == "" then
      partial = word
      local names = {}
      members(env, names)
      members(_G, names)
      for k in pairs(KEYWORDS) do names[k] = true end
      for k in pairs(names) do
         if k:sub(1, #partial) == partial then cands[#cands + 1] = k end
      end
   else
      if path:find(":") or path:match("^%d") then return {} end
      local obj = env
      for part in path:gmatch("[^%.]+") do
         obj = safe_get(obj, part)
         if obj == nil then return {} end
      end
      local names = members(obj)
      for k, v in pairs(names) do
         if k:sub(1, #partial) == partial and not k:match("^_")
            and (sep == "." or type(v) == "function" or v == true) then
            cands[#cands + 1] = path .. sep .. k
         end
      end
   end
   table.sort(cands)
   local prefix = line:sub(1, #line - #word)
   for i, c in ipairs(cands) do cands[i] = prefix .. c end
   return cands
end

---------------------------------------------------------------- discovery (sysfs)

-- The sysfs root (vfio.pcibus reads the PCI bus under it).
M.sysfs = "/sys"

local function readfile(path)
   local f, err = io.open(path, "rb")
   if not f then return nil, err end
   local s = f:read("a")
   f:close()
   return s
end

-- Normalize "00:03.0" or "0000:00:03.0" to the full domain form (vfio.pcibus.parse_bdf:
-- the function is 0-7); raise on anything else.
function M.bdf(s)
   if type(s) ~= "string" then error("BDF must be a string such as 0000:00:03.0", 3) end
   local bdf, why = pcibus.parse_bdf(s)
   if not bdf then error(why, 3) end
   return bdf
end

local DevListMT = { __name = "vfio.poke.devices" }
DevListMT.__tostring = function(list)
   local out = { fmt("%-12s %-9s %-6s %-10s %-5s %s", "BDF", "ID", "CLASS", "DRIVER", "GROUP", "NAME") }
   for _, d in ipairs(list) do
      out[#out + 1] = fmt("%-12s %04x:%04x %06x %-10s %-5s %s", d.bdf, d.vendor, d.device, d.class,
         d.driver or "-", d.group or "-", d.name)
   end
   return table.concat(out, "\n")
end

-- Every PCI function the kernel knows (vfio.pcibus's list) with its pci.ids names: bdf,
-- ids, class, names, driver, IOMMU group (as text, the way sysfs names it).
function M.devices()
   local list = setmetatable({}, DevListMT)
   for _, f in ipairs(pcibus.devices(M.sysfs) or {}) do
      local v, d, c = f.vendor, f.device, f.class
      if v and d and c then
         list[#list + 1] = {
            bdf = f.bdf, vendor = v, device = d, class = c,
            name = pciids.device_label(v, d), class_name = pciids.class_label(c >> 8),
            driver = f.driver, group = f.group and tostring(f.group),
         }
      end
   end
   return list
end

-- Binding is vfio's (sysfs driver_override, unbind, reprobe); here for the REPL's sake.
function M.bind(bdf, opts) return M.vfio().bind(M.bdf(bdf), opts) end

--- The host check (vfio.host.check) as text: what VFIO needs, each finding with its fix.
-- @tparam[opt] table|string opts vfio.host.check's options, or one BDF
-- @treturn table text shown as is by the REPL
function M.check(opts)
   if type(opts) == "string" then opts = { devices = { M.bdf(opts) } } end
   local host = require "vfio.host"
   local o = { sysfs = M.sysfs ~= "/sys" and M.sysfs or nil }
   for k, v in pairs(opts or {}) do o[k] = v end
   local text = host.format(host.check(o))
   return M.text((text:gsub("\n$", "")))
end
function M.unbind(bdf, opts) return M.vfio().unbind(M.bdf(bdf), opts) end

-- lspci -vvv style decode of a function from sysfs (no VFIO needed).
function M.lspci(bdf)
   bdf = M.bdf(bdf)
   local dir = pcibus.devpath(M.sysfs, bdf)
   local bytes, err = readfile(dir .. "/config")
   if not bytes then return nil, "lspci " .. bdf .. ": " .. tostring(err) end
   local res = readfile(dir .. "/resource")
   local irq = tonumber(readfile(dir .. "/irq") or "")
   return decode.config(bytes, {
      slot = bdf:sub(6), resources = res and decode.parse_resource(res),
      irq = irq ~= 0 and irq or nil, iommu_group = pcibus.link_base(dir .. "/iommu_group"),
      driver = pcibus.driver(M.sysfs, bdf),
   })
end

---------------------------------------------------------------- device wrapper

local Dev = {}
local DevMT = { __name = "vfio.poke.device" }

local IRQ_INDEX = { intx = 0, msi = 1, msix = 2, err = 3, req = 4 }

-- Config space bytes as VFIO shows them (virtualized by vfio-pci).
function Dev:config_bytes()
   local c = self.config
   local n = c.size or 256
   return c:read(0, n)
end

function Dev:decode()
   local bytes, err = self:config_bytes()
   if not bytes then return nil, err end
   local sizes = {}
   for i = 0, 5 do
      local r = self:bar(i)
      sizes[i] = r and r.size or 0
   end
   local rom = self:bar(6)
   return decode.config(bytes, { bar_sizes = sizes, rom_size = rom and rom.size or 0,
      slot = pcibus.parse_bdf(self.bdf) and self.bdf:sub(6) or nil })
end

-- lspci -vvv style text of what VFIO shows.
function Dev:lspci()
   local info, err = self:decode()
   if not info then return nil, err end
   return M.text(info:text())
end

-- BAR i as a region object (cached).
function Dev:bar(i)
   self._bars = self._bars or {}
   local r = self._bars[i]
   if r == nil then
      local ok, reg = pcall(self.dev.region, self.dev, i)
      r = ok and reg and not reg.error and reg or false
      self._bars[i] = r
   end
   return r or nil
end

-- hexdump(what, off, len): what is a BAR number, "config", or a region.
function Dev:hexdump(what, off, len, opts)
   local src = what
   if what == "config" or what == nil then src = self.config
   elseif math.type(what) == "integer" then src = self:bar(what) end
   if not src then return nil, "no such region: " .. tostring(what) end
   return M.text(hexdump(src, off, len, opts))
end

-- Bind a register description (table or file name) to a BAR: returns the register bank.
function Dev:regs(desc, bar, base)
   if type(desc) == "string" then desc = dofile(desc) end
   local r = self:bar(bar or 0)
   if not r then return nil, "no BAR " .. tostring(bar or 0) end
   return regs.bind(desc, r, base)
end

-- Config space registers by name (header fields), e.g. d:cfg().command().
function Dev:cfg()
   if not self._cfg then
      local list = {}
      for _, r in ipairs(pci.header_registers(self.config:read8(0x0e) & 0x7f)) do
         list[#list + 1] = { r.name, r.offset, width = r.width,
            access = (r.name == "command" or r.name:match("^bar") or r.name == "rom_address"
               or r.name == "interrupt_line" or r.name == "cache_line_size"
               or r.name == "latency_timer") and "RW" or "RO" }
      end
      self._cfg = regs.bind({ name = "config", table.unpack(list) }, self.config)
   end
   return self._cfg
end

local Irq = {}
local IrqMT = { __name = "vfio.poke.irq", __index = Irq }

-- Route interrupt `kind` ("msi", "intx", "msix"; vector 0) to a new eventfd. MSI needs the
-- device to master the bus, so this also sets Bus Master in the command register: both are
-- writes, made because this call asks for interrupts.
function Dev:irq(kind, vector)
   kind = kind or "msi"
   local index = IRQ_INDEX[kind]
   if not index then error("irq kind must be intx, msi or msix", 2) end
   local vfio = M.vfio()
   local mk = vfio.eventfd or vfio.core.eventfd
   local efd, err = mk()
   if not efd then return nil, err end
   vector = vector or 0
   local ok, serr = self.dev:set_irqs(index, "trigger", vector, 1, efd)
   if not ok then efd:close(); return nil, serr end
   if kind ~= "intx" then
      local cmd = self.config:read16(4)
      if cmd & 4 == 0 then self.config:write16(4, cmd | 4) end
   end
   local irq = setmetatable({ efd = efd, dev = self, index = index, kind = kind, vector = vector }, IrqMT)
   self._irqs = self._irqs or {}
   self._irqs[#self._irqs + 1] = irq
   return irq
end

-- Wait up to timeout seconds (default 1) for the interrupt: returns the eventfd count.
-- INTx is masked by the kernel when it fires; it is unmasked again here.
function Irq:wait(timeout)
   local n, err, errno = self.efd:wait(math.floor((timeout or 1) * 1000))
   if not n then return nil, err, errno end
   if self.kind == "intx" then self.dev.dev:set_irqs(0, "unmask", 0, 1) end
   return n
end

-- Tear the interrupt index down entirely (count 0), so another kind can be enabled next:
-- vfio-pci allows one of INTx, MSI, MSI-X at a time.
function Irq:close()
   if self.closed then return true end
   self.closed = true
   if self.dev.dev.closed then return self.efd:close() end
   local ok, err, errno = self.dev.dev:set_irqs(self.index, "trigger", 0, 0)
   self.efd:close()
   return ok, err, errno
end

IrqMT.__tostring = function(i)
   return fmt("irq %s vector %d of %s -> %s", i.kind, i.vector, i.dev.bdf, tostring(i.efd))
end

local Dma = {}
local DmaMT = { __name = "vfio.poke.dma" }

-- A DMA buffer the device can reach: `size` bytes of our memory mapped at `iova` (default
-- 1 MiB, inside the 28 bits edu can address) in the device's IOMMU container.
function Dev:dma(size, iova)
   local vfio = M.vfio()
   local mk = vfio.dmabuf or vfio.core.dmabuf
   -- a vfio-user server maps the buffer by its memfd: a shared one
   local shared = self.dev.interface == "vfio-user" and { shared = true } or nil
   local buf, err, errno = mk(size or 4096, shared)
   if not buf then return nil, err, errno end
   iova = iova or 0x100000
   local ok, merr, merrno = self.dev.container:map_dma(buf, iova, { read = true, write = true })
   if not ok then buf:close(); return nil, merr, merrno end
   local d = setmetatable({ buf = buf, iova = iova, size = buf:size(), dev = self }, DmaMT)
   self._dmas = self._dmas or {}
   self._dmas[#self._dmas + 1] = d
   return d
end

function Dma:hexdump(off, len, opts)
   return M.text(hexdump(function(o, n) return self.buf:read(o, n) end, off or 0,
      len or math.min(self.size, 256), opts))
end

function Dma:close()
   if self.closed then return true end
   self.closed = true
   local ok, err, errno = true, nil, nil
   if not self.dev.dev.closed then
      ok, err, errno = self.dev.dev.container:unmap_dma(self.iova, self.size)
   end
   self.buf:close()
   return ok, err, errno
end

DmaMT.__index = function(d, k)
   local m = Dma[k]
   if m ~= nil then return m end
   local v = d.buf[k]
   if type(v) == "function" then
      return function(self, ...)
         if self == d then return v(d.buf, ...) end
         return v(self, ...)
      end
   end
   return v
end
DmaMT.__tostring = function(d)
   return fmt("dma buffer of %d bytes at iova 0x%x for %s", d.size, d.iova, d.dev.bdf)
end
DmaMT.__complete = function(d)
   local t = {}
   for k in pairs(Dma) do t[#t + 1] = k end
   for k in pairs(members(d.buf)) do t[#t + 1] = k end
   return t
end

function Dev:close()
   if self._dmas then for _, b in ipairs(self._dmas) do pcall(Dma.close, b) end end
   if self._irqs then for _, i in ipairs(self._irqs) do pcall(Irq.close, i) end end
   return self.dev:close()
end

DevMT.__index = function(d, k)
   local m = Dev[k]
   if m ~= nil then return m end
   -- Anything else is the VFIO device's: its methods are called on the device itself.
   local v = d.dev[k]
   if type(v) == "function" then
      return function(self, ...)
         if self == d then return v(d.dev, ...) end
         return v(self, ...)
      end
   end
   return v
end
DevMT.__tostring = function(d)
   return fmt("%s %04x:%04x %s (%s)", d.bdf, d.vendor, d.device, d.name, tostring(d.dev))
end
DevMT.__close = function(d) d:close() end
-- For completion: the wrapper's methods and the VFIO device's, without touching hardware.
DevMT.__complete = function(d)
   local t = {}
   for k in pairs(Dev) do t[#t + 1] = k end
   for k in pairs(members(d.dev)) do t[#t + 1] = k end
   return t
end

-- The vfio module, loaded on first use so the REPL starts where vfio.core is not built.
function M.vfio()
   local ok, vfio = pcall(require, "vfio")
   if not ok then error("vfio is not available: " .. tostring(vfio), 3) end
   return vfio
end

-- Open a function through VFIO and wrap it for exploring.
function M.open(bdf)
   -- a vfio-user server's device ("vfio-user:PATH") has no PCI address to parse
   local user = type(bdf) == "string" and bdf:sub(1, 10) == "vfio-user:"
   if not user then bdf = M.bdf(bdf) end
   local vfio = M.vfio()
   if not vfio.open then error("this vfio module has no open(bdf)", 2) end
   local dev, err, errno = vfio.open(bdf)
   if not dev then return nil, err, errno end
   local config = dev.config or dev:region(7)
   local v = config:read16(0)
   local d = setmetatable({ dev = dev, bdf = bdf, config = config, vendor = v,
      device = config:read16(2) }, DevMT)
   d.name = pciids.device_label(d.vendor, d.device)
   -- Listen to what the host says about it (M.host_notices, before each prompt); a device
   -- without these interrupts (an mdev, a conventional PCI function's error one) is fine.
   if dev.notifier then
      pcall(dev.notifier, dev, "request")
      pcall(dev.notifier, dev, "error")
   end
   M.opened[d] = true
   return d
end

--- The devices open() opened and not yet collected (weak keys).
M.opened = setmetatable({}, { __mode = "k" })

--- What the host said about the devices open() opened since the last call: one line
-- each, ready to print (the REPL prints them before its prompt).
-- @tparam[opt] table opened the device wrappers (default: every one open() made)
-- @treturn {string,...} the notices, by address
function M.host_notices(opened)
   local lines = {}
   for d in pairs(opened or M.opened) do
      local dev = d.dev
      if dev and not dev.closed and dev.notices then
         local n = dev:notices()
         if n.request then
            lines[#lines + 1] = fmt("poke: the host wants %s back (a driver unbind is waiting "
               .. "for it): close it (its :close()) to let it go", d.bdf)
         end
         if n.error then
            lines[#lines + 1] = fmt("poke: the host reports an uncorrectable error on %s (AER): "
               .. "what it does now is unknown; the host's kernel log says more", d.bdf)
         end
      end
   end
   table.sort(lines)
   return lines
end

---------------------------------------------------------------- the REPL

local HELP = [[
luavfio poke: explore PCI devices. Tab completes names and methods.
  ls()                      PCI functions: BDF, ids, class, driver, IOMMU group, name
  lspci(bdf)                lspci -vvv style decode from sysfs (no VFIO needed)
  bind(bdf) / unbind(bdf)   to / from vfio-pci (bind refuses a device the host uses)
  check() / check(bdf)      what VFIO needs from this host, each finding with its fix
  d = open(bdf)             open through VFIO; then:
    d:lspci()               decode of the config space VFIO shows
    d:hexdump(0, 0, 64)     hexdump of BAR 0 (or "config"), offset, length
    d:bar(0):read32(0)      raw region access (region methods complete with Tab)
    r = d:regs(desc, 0)     registers described by desc (see examples/edu_regs.lua)
    r.id()  r.x(v)  r.x:set(m)  r.x:clear(m)  r.x.field  r.x:wait(v, {timeout=1})
    i = d:irq("msi")        route MSI to an eventfd; i:wait(1) -> count
    b = d:dma(4096)         DMA buffer mapped at b.iova; b:read/b:write/b:hexdump
    d:cfg().command:set(4)  config header registers by name (here: Bus Master on)
    d:notices()             what the host said: {request = n} (it wants d back: the
                            prompt says so too; d:close() lets its unbind finish)
  hexdump(s), decode, regs, pci, pciids, vfio   modules
Printing and completing only read; writes happen only when you call a write.
Ctrl-C stops a running evaluation; Ctrl-U clears the line; Ctrl-D quits.]]

-- help() prints the commands; help(x) the API reference's entry for x (a name such as
-- "vfio.open" or "region:read32", a module, a function, an object), from `make doc`.
function M.help(x)
   if x == nil then
      print((HELP:gsub("see examples/", "see " .. (require("vfio.examples").dir() or "examples") .. "/")))
      print('help(x): the API reference for x, e.g. help(vfio.open), help("region:read32"), help(d)')
      return
   end
   local text, err = require("vfio.poke.apidoc").text(x)
   print(text or ("help: " .. err))
end

-- The environment a session evaluates in: helpers over _G.
function M.env(extra)
   local env = {
      ls = M.devices, devices = M.devices, lspci = M.lspci, bind = M.bind, unbind = M.unbind,
      check = M.check,
      open = M.open, hexdump = function(...) return M.text(hexdump(...)) end, decode = decode, regs = regs, pci = pci,
      pciids = pciids, help = M.help, pp = function(...) print(M.pp(...)) end,
   }
   local ok, vfio = pcall(require, "vfio")
   if ok then env.vfio = vfio end
   for k, v in pairs(extra or {}) do env[k] = v end
   return setmetatable(env, { __index = _G })
end

local Session = {}
Session.__index = Session

-- A session evaluates lines (possibly spanning several) and returns what to show.
function M.session(env, out)
   return setmetatable({ env = env or M.env(), out = out or io.write, pending = nil }, Session)
end

local function pack(...) return { n = select("#", ...), ... } end

--- The line a failed call's results (nil, message [, errno]) are shown as.
-- @tparam table r the packed results (r.n, r[1] nil, r[2] the message)
-- @treturn string "failed: MESSAGE (ENAME)", errno named symbolically
function M.failure_text(r)
   local msg = "failed: " .. tostring(r[2])
   if math.type(r[3]) == "integer" then msg = msg .. " (" .. pcibus.errname(r[3]) .. ")" end
   return msg
end

local function failed(r) return r.n >= 2 and r[1] == nil and type(r[2]) == "string" end

-- An assignment `targets = expressions` whose targets are names or dotted fields (with
-- `local` and attributes): its two halves, compiled, so the REPL sees what the right side
-- returned (a failed call's message would otherwise vanish into a nil variable). nil for
-- any other statement.
local TARGET = "[%a_][%w_%.]*%s*"
local function split_assignment(src, env)
   local from = 1
   while true do
      local i = src:find("=", from, true)
      if not i then return nil end
      from = i + 1
      local before, after = src:sub(i - 1, i - 1), src:sub(i + 1, i + 1)
      if not before:match("[=<>~]") and after ~= "=" then
         local lhs, rhs = src:sub(1, i - 1), src:sub(i + 1)
         local names = lhs:gsub("^%s*local%s+", ""):gsub("%s*<%a+>%s*", " ")
         for name in (names .. ","):gmatch("([^,]*),") do
            if not name:match("^%s*" .. TARGET .. "$") then return nil end
         end
         local value = load("return " .. rhs, "=poke", "t", env)
         local assign = load(lhs .. " = ...", "=poke", "t", env)
         if value and assign then return value, assign, names:match("[%a_][%w_%.]*") end
         return nil
      end
   end
end

local function short_trace(msg)
   if type(msg) == "string" and msg:match("interrupted$") then return msg end
   local tb = debug.traceback(msg, 2)
   -- Drop frames of the REPL itself: they say nothing about the user's code.
   local keep = {}
   for line in tb:gmatch("[^\n]+") do
      if line:find("vfio/poke/", 1, true) or line:find("[C]: in function 'xpcall'", 1, true) then
         break
      end
      keep[#keep + 1] = line
   end
   return table.concat(keep, "\n")
end

-- Feed one line. Returns "more" when the chunk is incomplete, "error" when it raised,
-- "failed" when its call (or the right side of its assignment) returned nil, message
-- [, errno] (the message is shown, errno by name), else "ok".
function Session:feed(line)
   if self.pending == nil and line:match("^%s*=") then line = "return " .. line:match("^%s*=(.*)") end
   local src = self.pending and (self.pending .. "\n" .. line) or line
   local fn, err = load("return " .. src, "=poke", "t", self.env)
   if not fn then
      fn, err = load(src, "=poke", "t", self.env)
   end
   if not fn then
      if err:match("<eof>$") then
         self.pending = src
         return "more"
      end
      self.pending = nil
      self.out(err .. "\n")
      return "error"
   end
   self.pending = nil
   -- An assignment runs as its right side, then the assignment of what it returned: a call
   -- that failed with nil, message, errno shows the message.
   local value, assign, targets = split_assignment(src, self.env)
   local assigned
   if value then
      fn = function()
         assigned = pack(value())
         assign(table.unpack(assigned, 1, assigned.n))
      end
   end
   local res
   if self.signal then
      -- Ctrl-C stops the evaluation (like lua.c's REPL); at the prompt it ends the session.
      -- luaposix runs signal handlers protected, so the handler arms a count hook that
      -- raises in the evaluated code itself.
      local sig = self.signal
      sig.signal(sig.SIGINT, function()
         debug.sethook(function() debug.sethook(); error("interrupted", 2) end, "", 1)
      end)
      res = pack(xpcall(fn, short_trace))
      sig.signal(sig.SIGINT, self.prompt_sigint or sig.SIG_DFL)
      debug.sethook()
   else
      res = pack(xpcall(fn, short_trace))
   end
   if not res[1] then
      self.out(tostring(res[2]) .. "\n")
      return "error"
   end
   if assigned then
      if failed(assigned) then
         self.out(M.failure_text(assigned) .. "; " .. targets .. " = nil\n")
         return "failed"
      end
      return "ok"
   end
   if res.n > 1 and failed({ n = res.n - 1, table.unpack(res, 2, res.n) }) then
      self.out(M.failure_text({ n = res.n - 1, table.unpack(res, 2, res.n) }) .. "\n")
      return "failed"
   elseif res.n > 1 then
      local parts = {}
      for i = 2, res.n do parts[#parts + 1] = M.pp(res[i]) end
      self.out(table.concat(parts, "\n") .. "\n")
      rawset(self.env, "_", res[2])
   end
   return "ok"
end

local function isatty()
   local ok = os.execute("test -t 0")
   return ok == true
end

--- What the REPL says once at start, on a terminal, when lua-readline is missing.
M.READLINE_NOTE = "vfio-poke: lua-readline is not installed: Tab completion, line editing "
   .. "and history are off (Debian: apt install lua-readline; LuaRocks: the readline rock)\n"

--- Run the interactive loop.
-- @tparam[opt] table opts env (the session's environment), histfile, banner (false: none),
-- and for specs: tty (whether stdin is a terminal; default: asked), readline (the readline
-- module, or false for none; default: require "readline" on a terminal), input (a
-- function(prompt) -> line or nil), out (where results go; default io.write), err (where
-- notes go; default io.stderr)
function M.repl(opts)
   opts = opts or {}
   local env = opts.env or M.env()
   local out = opts.out or io.write
   local s = M.session(env, out)
   local tty = opts.tty
   if tty == nil then tty = isatty() end
   local okp, sig = pcall(require, "posix.signal")
   if okp and tty and opts.tty == nil then
      s.signal = sig
      -- At the prompt readline handles Ctrl-C (the line is dropped); the process stays.
      s.prompt_sigint = function() end
      sig.signal(sig.SIGINT, s.prompt_sigint)
   end
   local RL = opts.readline or nil
   if opts.readline == nil and tty then
      local ok, rl = pcall(require, "readline")
      if ok then RL = rl end
   end
   if tty and not RL then (opts.err or io.stderr):write(M.READLINE_NOTE) end
   local histfile = opts.histfile or ((os.getenv("HOME") or ".") .. "/.luavfio_poke_history")
   local function readline(prompt)
      if opts.input then return opts.input(prompt) end
      if RL then return RL.readline(prompt) end
      if tty then io.write(prompt); io.flush() end
      return io.read("l")
   end
   if RL then
      RL.set_options { histfile = histfile, keeplines = 1000, completion = true }
      RL.set_readline_name("luavfio")
      RL.set_complete_function(function(text, from, to)
         RL.set_completion_append_character("")
         local ok, c = pcall(M.complete, text:sub(1, to), env)
         if not ok then return {} end
         -- readline replaces only the word being completed: hand back just that part.
         local keep = text:sub(1, from - 1)
         local t = {}
         for _, cand in ipairs(c) do
            if cand:sub(1, #keep) == keep then t[#t + 1] = cand:sub(#keep + 1) end
         end
         return t
      end)
   end
   if opts.banner ~= false and tty then
      out("luavfio poke — help() for commands, Tab completes, Ctrl-D quits\n")
   end
   while true do
      -- a request or error notice of an open device, between prompts (readline blocks)
      for _, note in ipairs(M.host_notices()) do out(note .. "\n") end
      local line = readline(s.pending and "....> " or "poke> ")
      if line == nil then break end
      s:feed(line)
      io.flush()
   end
   if RL then RL.save_history() end
   if tty then out("\n") end
end

-- `lua5.4 -i -l vfio.poke`: loaded by the interpreter's -l with -i and no script, take over
-- the interactive loop (lua.c's own loop has no completion or pretty printing) and exit.
local function started_by_lua_i()
   if type(arg) ~= "table" then return false end
   local interactive, loaded = false, false
   for i = 1, #arg do
      local a = arg[i]
      if a == "-i" then interactive = true end
      if a == "-lvfio.poke" or (a == "-l" and arg[i + 1] == "vfio.poke") then loaded = true end
   end
   -- A script name would be arg[0] other than the interpreter: then -i is lua.c's business.
   return interactive and loaded and (arg[0] == nil or arg[0]:match("lua[%d%.]*$") ~= nil)
end

if started_by_lua_i() then
   M.repl()
   os.exit(0)
end

return M
