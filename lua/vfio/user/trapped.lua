---
-- Served devices over the trap core (vfio.core's trap): what a vfio-user server serves
-- for a recorded device and for a kernel VFIO device. The client sees the function as
-- the trap core presents it to a guest: config space virtualised (with the quirks the
-- trap was given), BARs read and written through the trap (MSI-X table and PBA, quirk
-- windows, then the device), so nothing reaches the device that a guest of
-- vfio-passthrough could not do.
--
--   trapped.recording(fx_or_path [, trap])   a recording (vfio.record); without a
--                                            trap, one over its replay without quirks
--   trapped.kernel(dev, [trap] [, opts])     a vfio.open device; without a trap, one
--                                            over core.vfio_backend without quirks
--
-- (vfio-user-serve builds the trap with vfio.vmm.passthrough, quirks included; this
-- layer may not require the VMM.)
--
-- Interrupts: a recording has the recorded IRQ info and never fires. A kernel device's
-- SET_IRQS goes to VFIO_DEVICE_SET_IRQS with the client's eventfds themselves
-- (`native_eventfds`: the kernel signals them); the INTx unmask eventfd is the
-- server's, which unmasks through `set_irqs` once the client's earlier writes are served.
-- DMA: a recording does none (maps are kept as bookkeeping). A kernel device maps the
-- client's memory (the server's `range.buffer`, an mmap of the client's fd) into its
-- container or IOAS at the client's IOVA; a map without an fd cannot be served by
-- messages (the device DMAs by itself) and is refused (EINVAL), unless opts.fdless_dma
-- is "ignore" (accepted and not mapped: the device's DMA there faults in the IOMMU).
-- @module vfio.user.trapped
local core = require "vfio.core"
local record = require "vfio.record"

local M = {}

local EINVAL, EEXIST, ENOENT, E2BIG = 22, 17, 2, 7
local NUM_REGIONS, CONFIG, ROM = 9, 7, 6
local MAX_ACCESS = 1 << 20
local READ, WRITE = 1, 2

local function fail(errno, f, ...) return nil, f:format(...), errno end
local function is_int(v) return math.type(v) == "integer" end

local Trapped = {}
Trapped.__index = Trapped
Trapped.__name = "vfio.user.trapped"

local function new(trap, o)
   return setmetatable({
      trap = trap, name = o.name or "device", num_irqs = o.num_irqs or 5, irq_table = o.irqs,
      dev = o.dev, dma = o.dma, quirks = o.quirks or {}, opts = o.opts or {},
      native_eventfds = o.dev ~= nil, maps = {}, triggers = {},
      counters = { refused = 0, dma_maps = 0 },
   }, Trapped)
end

---
-- A recording served through the trap core.
-- @param fx a fixture table (vfio.record.load) or its path or name
-- @param[opt] trap a trap over its replay (vfio.vmm.passthrough's, with quirks)
-- @tparam[opt] table opts `quirks` (names, for the record)
-- @return a served device, or `nil, message, errno`
function M.recording(fx, trap, opts)
   opts = opts or {}
   if type(fx) == "string" then
      local err
      fx, err = record.load(fx)
      if not fx then return nil, err, EINVAL end
   end
   if not trap then
      local be, err, errno = core.replay(fx)
      if not be then return nil, err, errno end
      trap, err, errno = core.trap(be, { pcie = #fx.config > 256 })
      if not trap then return nil, err, errno end
   end
   trap:events()
   return new(trap, { name = fx.name or "recording", num_irqs = fx.num_irqs, irqs = fx.irqs or {},
                      quirks = opts.quirks })
end

---
-- A kernel VFIO device served through the trap core.
-- @param dev a device from vfio.open (its `handle`, `container` and `irq_info` are used)
-- @param[opt] trap a trap over it (vfio.vmm.passthrough's, with quirks)
-- @tparam[opt] table opts `quirks` (names), `fdless_dma` ("refuse", the default, or
-- "ignore"), `trust_client` (offer the client mmap fds for the BARs: see region_info)
-- @return a served device, or `nil, message, errno`
function M.kernel(dev, trap, opts)
   opts = opts or {}
   if not trap then
      local be, err, errno = core.vfio_backend(dev.handle, { name = dev.bdf })
      if not be then return nil, err, errno end
      trap, err, errno = core.trap(be)
      if not trap then return nil, err, errno end
   end
   trap:events()
   return new(trap, { name = dev.bdf, num_irqs = math.min(dev.num_irqs or 5, 5), dev = dev,
                      dma = dev.container, quirks = opts.quirks, opts = opts })
end

--- A served device over a trap (vfio.user.trapped); the methods are the served-device
-- interface (lua/vfio/user/README.md).
-- @type Trapped

--- DEVICE_GET_INFO.
-- @treturn table `{flags, num_regions, num_irqs}`
function Trapped:info()
   -- RESET only when the kernel can reset the device (QEMU's edu cannot: VFIO_DEVICE_RESET
   -- is EINVAL there, and a client seeing the flag would try); a recording resets nothing
   local flags = 3
   if self.dev then flags = 2 | ((self.dev.info or {}).reset and 1 or 0) end
   return { flags = flags, num_regions = NUM_REGIONS, num_irqs = self.num_irqs, name = self.name }
end

local function region_size(self, index)
   if index == CONFIG then return self.trap:info().cfg_size end
   if index > ROM then return 0 end
   local b = self.trap:bars()[index]
   return b and b.size or 0
end

local function check_region(self, index)
   if not is_int(index) or index < 0 or index >= NUM_REGIONS then
      self.counters.refused = self.counters.refused + 1
      return fail(EINVAL, "%s: region %s out of range (0..%d)", self.name, tostring(index), NUM_REGIONS - 1)
   end
   return true
end

local PAGE = 4096

-- [lo, hi) minus the holes (sorted or not), as a list of {offset, size}.
local function subtract(lo, hi, holes)
   table.sort(holes, function(a, b) return a[1] < b[1] end)
   local out, at = {}, lo
   for _, h in ipairs(holes) do
      if h[2] > at and h[1] < hi then
         if h[1] > at then out[#out + 1] = { offset = at, size = h[1] - at } end
         at = math.max(at, h[2])
      end
   end
   if at < hi then out[#out + 1] = { offset = at, size = hi - at } end
   return out
end

-- What of BAR `index` a trusted client may map (the kernel device's mmap-able areas of
-- it, inside the BAR as the trap presents it), less every page the trap core must see:
-- the MSI-X table and PBA, and the quirks' windows. nil when none.
local function mmap_areas(self, index)
   if index > 5 then return nil end
   local ok, r = pcall(self.dev.region, self.dev, index)
   if not ok or not r or not r.mappable or (r.size or 0) == 0 then return nil end
   local size = math.min(region_size(self, index), r.size)
   local holes = {}
   local function hole(off, len)
      holes[#holes + 1] = { off // PAGE * PAGE, (off + len + PAGE - 1) // PAGE * PAGE }
   end
   local x = self.trap:msix()
   if x then
      if x.table_bar == index then hole(x.table_off, 16 * x.n) end
      if x.pba_bar == index then hole(x.pba_off, 8 * ((x.n + 63) // 64)) end
   end
   for _, w in ipairs(self.trap:windows()) do
      if w.bar == index then hole(w.off, w.len) end
   end
   local areas = {}
   for _, a in ipairs(r.sparse or { { offset = 0, size = r.size } }) do
      for _, piece in ipairs(subtract(a.offset, math.min(a.offset + a.size, size), holes)) do
         areas[#areas + 1] = piece
      end
   end
   if #areas == 0 then return nil end
   return { fd = self.dev, offset = r.offset, sparse = areas }
end

--- GET_REGION_INFO: `{size, flags}` (READ, WRITE). With `opts.trust_client`, a kernel
-- device's mmap-able BARs also say `mmap = {fd, offset, sparse}`: the device file, the
-- region's offset in it and the areas the client may map (the server hands them out only
-- when it trusts the client too).
-- @tparam int index the region
-- @treturn table or `nil, message, errno`
function Trapped:region_info(index)
   local ok, err, errno = check_region(self, index)
   if not ok then return nil, err, errno end
   local size = region_size(self, index)
   local flags = size == 0 and 0 or index == ROM and READ or READ | WRITE
   local mmap = self.dev and self.opts.trust_client and size > 0 and mmap_areas(self, index) or nil
   return { size = size, flags = flags, mmap = mmap }
end

local function check_access(self, index, off, n, write)
   local ok, err, errno = check_region(self, index)
   if not ok then return nil, err, errno end
   local size = region_size(self, index)
   if not is_int(off) or not is_int(n) or n <= 0 or off < 0 or off >= size or n > size - off then
      self.counters.refused = self.counters.refused + 1
      return fail(EINVAL, "%s: %s bytes at 0x%x outside region %d (0x%x bytes)", self.name, tostring(n),
                  is_int(off) and off or -1, index, size)
   end
   if n > MAX_ACCESS then return fail(E2BIG, "%s: an access of %d bytes", self.name, n) end
   if write and index == ROM then return fail(EINVAL, "%s: the ROM is read-only", self.name) end
   return true
end

-- The widest naturally aligned access at off that fits in left bytes (max bytes wide).
local function width(off, left, max)
   local w = max
   while w > 1 and (off % w ~= 0 or w > left) do w = w // 2 end
   return w
end

local function pack(v, w)
   return w == 8 and string.pack("<i8", v) or string.pack("<I" .. w, v & ((1 << (8 * w)) - 1))
end

local function read_one(self, index, off, w)
   if index == CONFIG then return self.trap:cfg_read(off, w) end
   if index == ROM then return self.trap:device_read(ROM, off, w) end
   return self.trap:bar_read(index, off, w)
end

local function write_one(self, index, off, w, v)
   if index == CONFIG then
      local ok, err, errno = self.trap:cfg_write(off, w, v)
      self.trap:events()   -- the client's own MSI/BAR bookkeeping: nothing to carry out here
      return ok, err, errno
   end
   return self.trap:bar_write(index, off, w, v)
end

--- REGION_READ through the trap: config space with the trap's view, BARs as a guest reads them.
-- @return the bytes, or `nil, message, errno`
function Trapped:region_read(index, off, n)
   local ok, err, errno = check_access(self, index, off, n)
   if not ok then return nil, err, errno end
   -- The ROM has no trapped register and no read side effect: a kernel device's is read
   -- in one pread, not a dword at a time through the trap (QEMU reads a 256 KiB ROM in
   -- one REGION_READ and gives up after its message timeout: seen with e1000e's).
   if index == ROM and self.dev then
      local okr, r = pcall(self.dev.region, self.dev, ROM)
      if okr and r then
         local okd, data, rerr, rerrno = pcall(r.read, r, off, n)
         if okd and data then return data end
         if okd then return nil, rerr, rerrno end
      end
   end
   local max = (index == CONFIG or index == ROM) and 4 or 8
   local out, at = {}, off
   while at < off + n do
      local w = width(at, off + n - at, max)
      local v
      v, err, errno = read_one(self, index, at, w)
      if not v then return nil, err, errno end
      out[#out + 1] = pack(v, w)
      at = at + w
   end
   return table.concat(out)
end

--- REGION_WRITE through the trap.
-- @return true, or `nil, message, errno`
function Trapped:region_write(index, off, bytes)
   if type(bytes) ~= "string" then error("region_write: bytes must be a string", 2) end
   local ok, err, errno = check_access(self, index, off, #bytes, true)
   if not ok then return nil, err, errno end
   local max = index == CONFIG and 4 or 8
   local at = 0
   while at < #bytes do
      local w = width(off + at, #bytes - at, max)
      local v = w == 8 and string.unpack("<i8", bytes, at + 1) or string.unpack("<I" .. w, bytes, at + 1)
      ok, err, errno = write_one(self, index, off + at, w, v)
      if not ok then return nil, err, errno end
      at = at + w
   end
   return true
end

--- GET_IRQ_INFO: the device's or the recording's `{count, flags}`.
-- @return table, or `nil, message, errno`
function Trapped:irq_info(index)
   if not is_int(index) or index < 0 or index >= self.num_irqs then
      return fail(EINVAL, "%s: interrupt index %s out of range (0..%d)", self.name, tostring(index), self.num_irqs - 1)
   end
   if self.dev then
      local ii, err, errno = self.dev:irq_info(index)
      if not ii then return nil, err, errno end
      return { count = ii.count, flags = ii.flags }
   end
   local r = self.irq_table[index] or {}
   return { count = r.count or 0, flags = r.flags or 0 }
end

--- SET_IRQS: to the kernel (the client's eventfds as they are) or, for a recording,
-- checked and kept (a recording never fires).
-- @return true, or `nil, message, errno`
function Trapped:set_irqs(index, start, count, action, data)
   local ii, err, errno = self:irq_info(index)
   if not ii then return nil, err, errno end
   if not (action == "trigger" and data == nil and count == 0) then
      if not is_int(start) or not is_int(count) or count <= 0 or start < 0 or start >= ii.count
         or count > ii.count - start then
         return fail(EINVAL, "%s: SET_IRQS %d vectors %s..+%s outside 0..%d", self.name, index,
                     tostring(start), tostring(count), ii.count - 1)
      end
   end
   if not self.dev then
      self.triggers[index] = data
      return true
   end
   local arg
   if data and data.bool then
      arg = {}
      for i = 1, count do arg[i] = data[i] and true or false end
   elseif data then
      arg = {}
      for i = 1, count do arg[i] = data[i] and data[i]:fileno() or -1 end
   end
   return self.dev:set_irqs(index, action, start, count, arg)
end

local function overlaps(a, asize, b, bsize)
   return not (math.ult(a + asize - 1, b) or math.ult(b + bsize - 1, a))
end

--- DMA_MAP: into the kernel device's IOMMU (range.buffer, the client's memory); a
-- recording keeps it as bookkeeping.
-- @return true, or `nil, message, errno`
function Trapped:dma_map(range)
   for _, m in ipairs(self.maps) do
      if overlaps(range.iova, range.size, m.iova, m.size) then
         return fail(EEXIST, "%s: DMA_MAP 0x%x+0x%x overlaps 0x%x+0x%x", self.name, range.iova,
                     range.size, m.iova, m.size)
      end
   end
   local entry = { iova = range.iova, size = range.size }
   if self.dev then
      if not range.buffer then
         if self.opts.fdless_dma == "ignore" then
            entry.unmapped = true
         else
            return fail(EINVAL, "%s: DMA_MAP 0x%x+0x%x without an fd: a kernel device DMAs by itself "
               .. "and cannot be served by messages; give the VMM shared memory (QEMU: "
               .. "-object memory-backend-memfd,share=on)", self.name, range.iova, range.size)
         end
      else
         local ok, err, errno = self.dma:map_dma(range.buffer, range.iova,
            { read = range.readable, write = range.writable })
         if not ok then return nil, err, errno end
      end
   end
   self.maps[#self.maps + 1] = entry
   self.counters.dma_maps = self.counters.dma_maps + 1
   return true
end

--- DMA_UNMAP: every map inside `{iova, size}`, or `{all = true}`.
-- @return the bytes unmapped, or `nil, message, errno`
function Trapped:dma_unmap(range)
   local bytes, found = 0, false
   for i = #self.maps, 1, -1 do
      local m = self.maps[i]
      local inside = range.all or (not math.ult(m.iova, range.iova)
         and not math.ult(range.iova + range.size - 1, m.iova + m.size - 1))
      if not inside and not range.all and overlaps(range.iova, range.size, m.iova, m.size) then
         return fail(EINVAL, "%s: DMA_UNMAP 0x%x+0x%x cuts 0x%x+0x%x", self.name, range.iova, range.size,
                     m.iova, m.size)
      end
      if inside then
         if self.dev and not m.unmapped then
            local ok, err, errno = self.dma:unmap_dma(m.iova, m.size)
            if not ok then return nil, err, errno end
         end
         table.remove(self.maps, i)
         bytes, found = bytes + m.size, true
      end
   end
   if not found and not range.all then
      return fail(ENOENT, "%s: DMA_UNMAP: nothing mapped at 0x%x+0x%x", self.name, range.iova, range.size)
   end
   return bytes
end

--- DEVICE_RESET: the kernel's VFIO_DEVICE_RESET (a recording: nothing to do).
-- @return true, or `nil, message, errno`
function Trapped:reset()
   if self.dev then return self.dev:reset() end
   return true
end

--- Close the trap (and the kernel device).
function Trapped:close()
   if self.trap then self.trap:close() self.trap = nil end
   if self.dev then self.dev:close() self.dev = nil end
end

function Trapped:__tostring() return ("vfio.user.trapped (%s)"):format(self.name) end

M.Trapped = Trapped
return M
