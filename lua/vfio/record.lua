---
-- Recorded devices: vfio.record(dev, path) captures what the trap core needs from a real
-- VFIO device (config space as the kernel presents it, region and IRQ info, the first
-- bytes of each BAR and of the ROM) into a Lua data file; record.backend(path) replays
-- it as a vfio.core backend so trap specs and the fuzzer run without VFIO.
-- @module vfio.record
local core = require "vfio.core"

local record = {}

local REGION_CONFIG, REGION_ROM, NREGIONS, NIRQS = 7, 6, 9, 5
-- Bytes of each BAR captured by default: enough for ID/version registers, MSI-X tables
-- of small devices and ROM headers, without reading whole large BARs.
record.default_bytes = 4096

local function tohex(s)
   return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function fromhex(h)
   h = h:gsub("%s+", "")
   if #h % 2 ~= 0 or h:find("[^%x]") then error("fixture: bad hex string", 3) end
   return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

local function region_flags(r)
   if math.type(r.flags) == "integer" then return r.flags end
   return (r.readable and 1 or 0) | (r.writable and 2 or 0) | (r.mappable and 4 or 0)
end

-- Read a BAR window dword by dword (the width registers expect); a failing read ends
-- the capture of that region but not the recording.
local function capture_region(r, idx, n)
   local parts = {}
   local step = idx == REGION_ROM and 4 or 4
   for off = 0, n - 1, step do
      local s = r:read(off, step)
      if not s then break end
      parts[#parts + 1] = s
   end
   return table.concat(parts)
end

---
-- record.capture(dev [, opts]) -> table. opts.bytes = {[bar] = n} overrides how many
-- bytes of each region are captured (0 skips it).
function record.capture(dev, opts)
   opts = opts or {}
   local bytes = opts.bytes or {}
   local cfg = assert(dev.config, "record: device has no PCI config region")
   local csize = cfg.size >= 4096 and 4096 or 256
   local image, err, errno = cfg:read(0, csize)
   if not image then return nil, err, errno end
   local fx = {
      name = opts.name or dev.bdf, bdf = dev.bdf,
      vendor = (string.unpack("<I2", image, 1)),
      device = (string.unpack("<I2", image, 3)),
      class = (string.unpack("<I3", image, 10)),
      num_regions = dev.num_regions, num_irqs = dev.num_irqs,
      config = image, regions = {}, irqs = {},
   }
   for i = 0, math.min(dev.num_regions, NREGIONS) - 1 do
      if i ~= REGION_CONFIG then
         local r = dev:region(i)
         local e = { size = r.size or 0, flags = region_flags(r), offset = r.offset }
         local want = bytes[i] or record.default_bytes
         if e.size > 0 and (e.flags & 1) ~= 0 and want > 0 then
            local data = capture_region(r, i, math.min(e.size, want))
            if #data > 0 then e.data = { { off = 0, bytes = data } } end
         end
         fx.regions[i] = e
      end
   end
   for i = 0, math.min(dev.num_irqs, NIRQS) - 1 do
      local ii = dev:irq_info(i)
      if ii then fx.irqs[i] = { count = ii.count, flags = ii.flags } end
   end
   return fx
end

local function hexlines(s, indent)
   local h, out = tohex(s), {}
   for i = 1, #h, 64 do out[#out + 1] = indent .. h:sub(i, i + 63) end
   return table.concat(out, "\n")
end

---
-- Serialize a captured table as a Lua data file (hex for binary).
function record.serialize(fx, note)
   local o = {}
   local function w(...) for _, s in ipairs { ... } do o[#o + 1] = s end end
   w("-- ", note or "Recorded in the lab with vfio.record: do not edit by hand.", "\n")
   w("return {\n")
   for _, k in ipairs { "name", "bdf", "recorded", "kernel" } do
      if fx[k] then w(("  %s = %q,\n"):format(k, fx[k])) end
   end
   for _, k in ipairs { "vendor", "device", "class", "num_regions", "num_irqs" } do
      if fx[k] then w(("  %s = 0x%x,\n"):format(k, fx[k])) end
   end
   w("  config = [[\n", hexlines(fx.config, ""), "\n]],\n")
   w("  regions = {\n")
   for i = 0, NREGIONS - 1 do
      local r = fx.regions[i]
      if r then
         w(("    [%d] = { size = 0x%x, flags = 0x%x"):format(i, r.size, r.flags))
         if r.offset then w((", offset = 0x%x"):format(r.offset)) end
         if r.data then
            w(", data = {\n")
            for _, c in ipairs(r.data) do
               w(("      { off = 0x%x, bytes = [[\n"):format(c.off), hexlines(c.bytes, ""), "\n]] },\n")
            end
            w("    } },\n")
         else
            w(" },\n")
         end
      end
   end
   w("  },\n  irqs = {\n")
   for i = 0, NIRQS - 1 do
      local q = fx.irqs[i]
      if q then w(("    [%d] = { count = %d, flags = 0x%x },\n"):format(i, q.count, q.flags)) end
   end
   w("  },\n}\n")
   return table.concat(o)
end

---
-- vfio.record(dev, path [, opts]) -> fixture table | nil, message, errno
function record.record(dev, path, opts)
   local fx, err, errno = record.capture(dev, opts)
   if not fx then return nil, err, errno end
   local osr = io.open("/proc/sys/kernel/osrelease")
   if osr then fx.kernel = osr:read("l"); osr:close() end
   fx.recorded = os.date("!%Y-%m-%dT%H:%M:%SZ")
   local f
   f, err, errno = io.open(path, "w")
   if not f then return nil, "record " .. err, errno end
   f:write(record.serialize(fx))
   f:close()
   return fx
end

---
-- record.load(path or module name under spec/fixtures) -> table with binary strings.
function record.load(path)
   if not path:find("/", 1, true) and not path:find("%.lua$") then
      path = (record.fixture_dir or "spec/fixtures") .. "/" .. path .. ".lua"
   end
   local chunk, err = loadfile(path, "t", {})
   if not chunk then return nil, err end
   local fx = chunk()
   fx.config = fromhex(fx.config)
   for _, r in pairs(fx.regions or {}) do
      for _, c in ipairs(r.data or {}) do c.bytes = fromhex(c.bytes) end
   end
   return fx
end

---
-- A copy of a loaded fixture whose config bytes at `off` are replaced: used by specs
-- that substitute IDs (they must say so).
function record.patch(fx, off, bytes)
   local c = {}
   for k, v in pairs(fx) do c[k] = v end
   c.config = fx.config:sub(1, off) .. bytes .. fx.config:sub(off + #bytes + 1)
   return c
end

---
-- record.backend(path_or_fixture) -> vfio.backend replaying it
function record.backend(fx)
   if type(fx) == "string" then
      local err
      fx, err = record.load(fx)
      if not fx then return nil, err end
   end
   return core.replay(fx)
end

--- Bytes as lowercase hex digits.
-- @function tohex

--- Hex digits (whitespace ignored) as bytes; raises on an odd count or a non-hex digit.
-- @function fromhex
record.tohex, record.fromhex = tohex, fromhex
return record
