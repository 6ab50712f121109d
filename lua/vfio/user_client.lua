---
-- vfio-user devices for vfio.open("vfio-user:PATH"): a device another process serves over
-- a UNIX socket (`bin/vfio-user-serve`, QEMU's docs/interop/vfio-user.rst), with the API
-- of a kernel device (vfio.open's `vfio.pci_device`), so the REPL, vfio.decode,
-- vfio.record and the VMM use it unchanged.
--
-- The protocol and the guest-facing path are C: `core.user_device` (csrc/user's client,
-- synchronous, every reply under a timeout) is the handle, and the VMM's trap runs over
-- `core.user_backend(handle)` (csrc/trap/backend_user.c). This module is the library-side
-- object around the handle: regions (REGION_READ/WRITE, or loads and stores in the areas
-- the server gave fds for), interrupts (SET_IRQS with eventfds), DMA (DMA_MAP with the
-- memfd of a shared vfio.dmabuf, or of guest RAM), reset. It lives in the library layer,
-- beside vfio.open, because the library may not require vfio.user.*.
--
-- What a kernel device has and vfio-user has not (hot reset, migration through VFIO's
-- features, the host's request and error notices) answers `nil, message, errno`
-- (EOPNOTSUPP) saying so.
-- @module vfio.user_client
local core = require "vfio.core"
local errors = require "vfio.errors"
local device_methods = require "vfio.device_methods"

local fail = errors.fail
local M = {}
local ENOENT, ECONNREFUSED, EOPNOTSUPP, ENOTTY, EINVAL = 2, 111, 95, 25, 22

--- The prefix vfio.open recognises.
M.PREFIX = "vfio-user:"

---------------------------------------------------------------------------------------
-- Regions: the fields of a vfio.region, and its typed and bulk accesses over the handle.

local UserRegion = { __name = "vfio.user_region" }
UserRegion.__index = UserRegion

local function region_check(self, off, n, write)
   if self._closed then error(("region %d is closed"):format(self.index), 3) end
   if self._dev.closed then error(("region %d of %s: device is closed"):format(self.index, self.device_name), 3) end
   if self.error then return end
   if write and not self.writable or not write and not self.readable then
      error(("region %d of %s is not %s"):format(self.index, self.device_name,
         write and "writable" or "readable"), 3)
   end
   if math.type(off) ~= "integer" or off < 0 or off > self.size or self.size - off < n then
      error(("region %d of %s: access of %d bytes at offset %s is outside the region (size %d)")
         :format(self.index, self.device_name, n, tostring(off), self.size), 3)
   end
end

local function region_fail(self)
   return nil, self.error, self.errno
end

local function reader(width)
   local fmt = "<I" .. width
   return function(self, off)
      region_check(self, off, width, false)
      if self.error then return region_fail(self) end
      local s, err, errno = self._handle:read(self.index, off, width)
      if not s then return nil, err, errno end
      return (string.unpack(fmt, s))
   end
end

local function writer(width)
   return function(self, off, v)
      region_check(self, off, width, true)
      if self.error then return region_fail(self) end
      if math.type(v) ~= "integer" then
         error(("bad argument #2 to 'write%d' (integer expected, got %s)"):format(width * 8, type(v)), 2)
      end
      return self._handle:write(self.index, off, string.pack("<I" .. width, v & ((1 << (width * 8)) - 1)))
   end
end

--- Typed reads and writes, as vfio.region's (a system error: `nil, message, errno`).
-- @function UserRegion:read8
UserRegion.read8, UserRegion.read16, UserRegion.read32 = reader(1), reader(2), reader(4)
--- A 64-bit read.
-- @function UserRegion:read64
UserRegion.read64 = function(self, off)
   region_check(self, off, 8, false)
   if self.error then return region_fail(self) end
   local s, err, errno = self._handle:read(self.index, off, 8)
   if not s then return nil, err, errno end
   return (string.unpack("<i8", s))
end
--- Typed writes.
-- @function UserRegion:write8
UserRegion.write8, UserRegion.write16, UserRegion.write32 = writer(1), writer(2), writer(4)
--- A 64-bit write.
-- @function UserRegion:write64
UserRegion.write64 = function(self, off, v)
   region_check(self, off, 8, true)
   if self.error then return region_fail(self) end
   return self._handle:write(self.index, off, string.pack("<i8", v))
end

--- n bytes at off (one REGION_READ per max_data_xfer_size).
-- @treturn string the bytes, or `nil, message, errno`
function UserRegion:read(off, n)
   region_check(self, off, n, false)
   if self.error then return region_fail(self) end
   if n == 0 then return "" end
   return self._handle:read(self.index, off, n)
end

--- Write the bytes of s at off.
-- @treturn boolean true, or `nil, message, errno`
function UserRegion:write(off, s)
   region_check(self, off, #s, true)
   if self.error then return region_fail(self) end
   if #s == 0 then return true end
   return self._handle:write(self.index, off, s)
end

--- Region to DMA buffer: n bytes at off into buf at buf_off.
function UserRegion:read_into(off, n, buf, buf_off)
   local s, err, errno = self:read(off, n)
   if not s then return nil, err, errno end
   buf:write(buf_off or 0, s)
   return true
end

--- DMA buffer to region.
function UserRegion:write_from(off, n, buf, buf_off)
   return self:write(off, buf:read(buf_off or 0, n))
end

--- The areas the client mapped (from the fds the server gave), `{offset=, size=}` each.
function UserRegion:mapped()
   local out = {}
   for _, a in ipairs(self.sparse or self.areas or {}) do
      if a.mapped then out[#out + 1] = { offset = a.offset, size = a.size } end
   end
   return out
end

--- Mapping happens when the device opens (the areas the server gave fds for).
-- @return true and the number of mapped areas
function UserRegion:map() return true, #self:mapped() end
--- Nothing to unmap on a region: the device's close unmaps.
function UserRegion.unmap(_) return true end
--- The device's handle (a vfio.user_device).
function UserRegion:device() return self._handle end
--- Whether the region (or its device) is closed.
function UserRegion:closed() return self._closed or self._dev.closed end
--- Close the region (idempotent).
function UserRegion:close() self._closed = true end
UserRegion.__close = UserRegion.close

function UserRegion:__tostring()
   return ("vfio.user_region (%d of %s, %d bytes%s)"):format(self.index, self.device_name, self.size,
      self:closed() and ", closed" or "")
end

local function new_region(dev, i)
   local info, err, errno = dev.handle:region_info(i)
   local r = setmetatable({ index = i, device_name = dev.name, _dev = dev, _handle = dev.handle }, UserRegion)
   if not info then
      r.size, r.flags, r.error, r.errno = 0, 0, err, errno
      return r
   end
   for k, v in pairs(info) do r[k] = v end
   r.msix_mappable = false
   return r
end

---------------------------------------------------------------------------------------
-- DMA: the device's own address space (the server is its IOMMU), what board:map_dma
-- and a driver map into.

local UserDma = { __name = "vfio.user_dma" }
UserDma.__index = UserDma

local function range_key(iova, size) return ("%x:%x"):format(iova, size) end

--- Map a shared vfio.dmabuf (`core.dmabuf(n, {shared = true})`) at iova: DMA_MAP with its
-- memfd. opts `{read = true, write = true}`.
-- @return true, or `nil, message, errno`
function UserDma:map_dma(buf, iova, opts)
   opts = opts or {}
   local fd = type(buf) == "userdata" and buf.fileno and buf:fileno()
   if not fd then
      return fail(EINVAL, "DMA map of %s: vfio-user needs memory the server can map: a shared "
         .. "buffer (vfio.core.dmabuf(size, {shared = true})), or guest RAM on a memfd", self.dev.name)
   end
   local size = opts.size or buf:size()
   local ok, err, errno = self.dev.handle:dma_map(fd, opts.offset or 0, iova, size,
      { read = opts.read ~= false, write = opts.write ~= false })
   if not ok then return nil, err, errno end
   self.maps[range_key(iova, size)] = { iova = iova, size = size, source = buf }
   return true
end

--- Unmap [iova, iova + size).
function UserDma:unmap_dma(iova, size)
   local ok, err, errno = self.dev.handle:dma_unmap(iova, size)
   if ok then self.maps[range_key(iova, size)] = nil end
   return ok, err, errno
end

--- Guest RAM of a VM (vfio.vmm.vm: its `ram_fd` and `ram_ranges`) mapped at IOVA ==
-- guest-physical, each range with the memfd and its offset in it.
-- @return the ranges mapped `{{gpa=, size=}...}`, or `nil, message, errno`
function UserDma:map_guest_ram(machine)
   local ramfd = machine.ram_fd
   if not ramfd then
      return fail(EINVAL, "DMA map of guest RAM for %s: guest RAM is anonymous memory, which the "
         .. "server cannot map; use --mem-backing memfd (or hugetlbfs)", self.dev.name)
   end
   local done, offset = {}, 0
   for _, r in ipairs(machine.ram_ranges or {}) do
      local ok, err, errno = self.dev.handle:dma_map(ramfd, offset, r.start, r.size)
      if not ok then
         for _, d in ipairs(done) do self:unmap_dma(d.gpa, d.size) end
         return nil, err, errno
      end
      self.maps[range_key(r.start, r.size)] = { iova = r.start, size = r.size, source = ramfd }
      done[#done + 1] = { gpa = r.start, size = r.size }
      offset = offset + r.size
   end
   return done
end

--- No IOMMU aperture: the server takes any IOVA.
function UserDma.iova_ranges(_) return {} end

--- The ranges mapped, `{iova=, size=}` each.
function UserDma:mappings()
   local out = {}
   for _, m in pairs(self.maps) do out[#out + 1] = { iova = m.iova, size = m.size } end
   table.sort(out, function(a, b) return a.iova < b.iova end)
   return out
end

---------------------------------------------------------------------------------------

local UserDevice = { __name = "vfio.user_pci_device" }
UserDevice.__index = UserDevice

local checkdev = device_methods.checker(UserDevice, "vfio-user device")

--- A device vfio.open("vfio-user:PATH") returns: fields `name`, `path`, `handle` (the
-- vfio.core user_device), `interface` ("vfio-user"), `info`, `num_regions`, `num_irqs`,
-- `config` (region 7), `container` (its DMA space: map_dma, unmap_dma, map_guest_ram).
-- @type UserDevice

-- Regions, interrupts, reset, fileno, close and __tostring: a kernel device's
-- (vfio.device_methods).
device_methods.install(UserDevice, {
   check = checkdev,
   new_region = new_region,
   no_reset = "the server says the device has no reset",
   release = function(self) self.handle:close() end, -- the server sees its client go
})

--- The region object of index i (cached), for 0 <= i < num_regions.
-- @function UserDevice:region

--- Every region, index 0 to num_regions - 1 (region i at list[i + 1]).
-- @function UserDevice:regions

--- Region i as the server described it (`handle:region_info`).
function UserDevice:region_info(i) return checkdev(self).handle:region_info(i) end

--- Interrupt index i as the server described it.
-- @function UserDevice:irq_info

--- SET_IRQS, as a kernel device's `set_irqs(index, action, start, count [, data])`.
-- @function UserDevice:set_irqs

--- Route `#eventfds` vectors from 0 to the eventfds.
-- @function UserDevice:enable_irq

--- Every vector of the index off.
-- @function UserDevice:disable_irq

--- DEVICE_RESET.
-- @function UserDevice:reset

--- DMA_MAP of a shared dmabuf at iova (the device's `container:map_dma`).
function UserDevice:dma_map(buf, iova, opts) return checkdev(self).container:map_dma(buf, iova, opts) end
--- DMA_UNMAP.
function UserDevice:dma_unmap(iova, size) return checkdev(self).container:unmap_dma(iova, size) end

local function unsupported(self, what)
   return fail(EOPNOTSUPP, "%s of %s: a vfio-user device has none (the server owns the device; "
      .. "ask it there)", what, self.name)
end
--- No hot reset over vfio-user: `nil, message, EOPNOTSUPP`.
function UserDevice:hot_reset_info() return unsupported(checkdev(self), "hot reset") end
--- No hot reset over vfio-user.
function UserDevice:hot_reset() return unsupported(checkdev(self), "hot reset") end
--- No VFIO device features over vfio-user: `false, message, ENOTTY`.
function UserDevice:probe_feature(feature)
   checkdev(self)
   return false, ("VFIO_DEVICE_FEATURE probe %s on %s: vfio-user carries no device features")
      :format(tostring(feature), self.name), ENOTTY
end
--- No VFIO migration over vfio-user.
function UserDevice:migration() return unsupported(checkdev(self), "VFIO migration") end
--- No VFIO migration over vfio-user.
function UserDevice:mig_state() return unsupported(checkdev(self), "VFIO migration") end
--- No VFIO migration over vfio-user.
function UserDevice:set_mig_state() return unsupported(checkdev(self), "VFIO migration") end
--- No VFIO migration over vfio-user.
function UserDevice:mig_data_size() return unsupported(checkdev(self), "VFIO migration") end
--- No host notices (request, error) over vfio-user.
function UserDevice:notifier(kind) return unsupported(checkdev(self), tostring(kind) .. " interrupt") end
--- No host notices over vfio-user.
function UserDevice:request_eventfd() return self:notifier("request") end
--- No host notices over vfio-user.
function UserDevice:error_eventfd() return self:notifier("error") end
--- Nothing from the host: an empty table.
function UserDevice:notices() checkdev(self) return {} end
--- The socket's fd.
-- @function UserDevice:fileno

--- The connection's state and counters (`handle:status`).
function UserDevice:status() return self.handle:status() end

--- Idempotent: the connection closes (the server sees its client go).
-- @function UserDevice:close

--- Functions of the module.
-- @section functions

--- Whether x names a vfio-user device ("vfio-user:PATH").
function M.is_user(x) return type(x) == "string" and x:sub(1, #M.PREFIX) == M.PREFIX end

---
-- Open the device a vfio-user server serves at PATH (what vfio.open does with
-- "vfio-user:PATH").
-- @tparam string path the server's socket
-- @tparam[opt] table opts `{timeout_ms = 5000, mmap = true}`
-- @return a device, or `nil, message, errno`
function M.open(path, opts)
   opts = opts or {}
   if type(path) ~= "string" or path == "" then
      error("bad argument #1 to 'open' (vfio-user:PATH: the server's socket path expected)", 3)
   end
   local name = M.PREFIX .. path
   local h, err, errno = core.user_device(path, { timeout_ms = opts.timeout_ms, mmap = opts.mmap, name = name })
   if not h then
      if errno == ENOENT or errno == ECONNREFUSED then
         err = ("%s: is vfio-user-serve running? Start the server first (bin/vfio-user-serve "
            .. "DEVICE --socket %s) and give its socket's path"):format(err, path)
      end
      return nil, err, errno
   end
   local info = h:info()
   local dev = setmetatable({ name = name, path = path, handle = h, interface = "vfio-user", info = info,
                              num_regions = math.min(info.num_regions, 9), num_irqs = info.num_irqs,
                              _regions = {}, iommu_type = "vfio-user" }, UserDevice)
   dev.container = setmetatable({ dev = dev, maps = {} }, UserDma)
   if info.pci and dev.num_regions > core.REGION.CONFIG then dev.config = dev:region(core.REGION.CONFIG) end
   return dev
end

--- Whether x is a device this module opened.
function M.is_device(x) return getmetatable(x) == UserDevice end

return M
