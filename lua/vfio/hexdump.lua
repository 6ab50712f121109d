---
-- hexdump of bytes, or of any range of something readable: a string, a config/BAR region
-- object with read(off, n), or a function(off, n) -> string. Reads only; never writes.
-- @module vfio.hexdump
local M = {}

local fmt = string.format

-- A region read in 32-bit loads, as register tools (devmem, lspci) read: a bulk read of
-- MMIO may use 8-byte loads (Linux 6.12's vfio-pci does for pread, and a mapped copy
-- does), which devices with 32-bit registers answer with all ones (QEMU's edu does below
-- 0x80). Unaligned edges fall back to the bulk read.
local function read_dwords(src, o, len)
   if o % 4 ~= 0 or len % 4 ~= 0 then return src:read(o, len) end
   local parts = {}
   for a = o, o + len - 4, 4 do
      local v, err, errno = src:read32(a)
      if not v then return nil, err, errno end
      parts[#parts + 1] = string.pack("<I4", v)
   end
   return table.concat(parts)
end

-- Fetch n bytes at off from src. Region reads are issued in chunks (default 4 KiB) so a large
-- dump of MMIO does not need one huge buffer, and a failing read reports where it failed.
-- opts.access: "dword" (32-bit loads; the default for regions that have read32) or "bulk".
local function fetch(src, off, n, chunk, access)
   local t = type(src)
   if t == "string" then
      return src:sub(off + 1, off + n)
   end
   local read
   if t == "function" then
      read = src
   elseif (t == "table" or t == "userdata") and src.read then
      if access ~= "bulk" and src.read32 then
         read = function(o, len) return read_dwords(src, o, len) end
      else
         read = function(o, len) return src:read(o, len) end
      end
   else
      error("hexdump: cannot read from a " .. t, 3)
   end
   local parts = {}
   local pos = 0
   while pos < n do
      local len = math.min(chunk, n - pos)
      local s, err = read(off + pos, len)
      if not s then
         return nil, err or fmt("read of %d bytes at 0x%x failed", len, off + pos)
      end
      parts[#parts + 1] = s
      if #s < len then break end
      pos = pos + len
   end
   return table.concat(parts)
end

---
-- Bytes -> lines "OFFSET  hh hh ... |ascii|". opts.width: bytes per line (16);
-- opts.group: 1, 2, 4 or 8 to show little-endian words of that size instead of bytes;
-- opts.base: the address printed for the first byte (defaults to off).
function M.format(bytes, base, opts)
   opts = opts or {}
   local width = opts.width or 16
   local group = opts.group or 1
   local out = {}
   local addr_digits = (base + #bytes) > 0xffffffff and 12 or 8
   for i = 1, #bytes, width do
      local line = bytes:sub(i, i + width - 1)
      local cells = {}
      for j = 1, #line, group do
         local w = line:sub(j, j + group - 1)
         if #w == group then
            cells[#cells + 1] = fmt("%0" .. (group * 2) .. "x", string.unpack("<I" .. group, w))
         else
            cells[#cells + 1] = (w:gsub(".", function(c) return fmt("%02x", c:byte()) end))
         end
         -- An extra space in the middle of the line, as hexdump -C does.
         if group == 1 and j == width // 2 and #line > j then cells[#cells] = cells[#cells] .. " " end
      end
      local hex = table.concat(cells, " ")
      local full = (width // group) * (group * 2 + 1) - 1 + (group == 1 and 1 or 0)
      local ascii = line:gsub("[^\32-\126]", ".")
      out[#out + 1] = fmt("%0" .. addr_digits .. "x  %-" .. full .. "s  |%s|", base + i - 1, hex, ascii)
   end
   return table.concat(out, "\n")
end

---
-- hexdump(src, off, len, opts) -> text. off defaults to 0; len to the whole string, or 256.
function M.dump(src, off, len, opts)
   off = off or 0
   if len == nil then
      if type(src) == "string" then len = #src - off
      elseif (type(src) == "table" or type(src) == "userdata") and tonumber(src.size) then
         len = math.min(src.size - off, 256)
      else len = 256 end
   end
   opts = opts or {}
   local bytes, err = fetch(src, off, len, opts.chunk or 4096, opts.access)
   if not bytes then return nil, err end
   return M.format(bytes, opts.base or off, opts)
end

return setmetatable(M, { __call = function(_, ...) return M.dump(...) end })
