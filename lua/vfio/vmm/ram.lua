---
-- Guest RAM: where it comes from (its backing), how it becomes a VM's memory slots (one
-- per range of vfio.vmm.address_map.ram_ranges: below the hole, and from 4 GiB up), and
-- every limit it can meet, explained where it is met:
--   - the host's memory (MemTotal): anonymous RAM is mapped with MAP_NORESERVE, so a
--     guest larger than the host would only fail when touched, or when DMA-mapped;
--   - huge pages: a hugetlb backing reserves its pages when mapped, and a short pool says
--     how many pages it needs, how many are free and how to reserve them;
--   - the memlock limit: VFIO pins DMA-mapped RAM against RLIMIT_MEMLOCK (the bindings'
--     map_dma error says the `ulimit -l` the map needs);
--   - the IOMMU's aperture: guest RAM is mapped at IOVA == guest-physical, so it must lie
--     inside the usable IOVA ranges the container or IOAS reports.
-- Backings: "anonymous" (private memory, transparent huge pages asked for: the default),
-- "memfd" (a sealed memfd another process can map: vm.ram_fd, for a vfio-user server to
-- share), "hugetlbfs" (the default huge page size through a huge-page memfd, or a file in
-- a hugetlbfs mount given by path).
-- @module vfio.vmm.ram
local address_map = require "vfio.vmm.address_map"
local core = require "vfio.core"

local M = {}

local MiB = 1 << 20
local ENOMEM = 12

--- The backings a VM's RAM may have (vfio.vmm.vm.create's `backing`).
M.BACKINGS = { "anonymous", "memfd", "hugetlbfs" }

---
-- /proc/meminfo as a table of numbers (the kB fields in KiB, the page counts as counts).
-- @tparam[opt] string text the file's text (default: read /proc/meminfo)
-- @treturn table `{MemTotal =, HugePages_Free =, Hugepagesize =, ...}` (empty when unreadable)
function M.meminfo(text)
   if not text then
      local f = io.open("/proc/meminfo")
      text = f and f:read("a") or ""
      if f then f:close() end
   end
   local t = {}
   for k, v in text:gmatch("([%w_()]+):%s*(%d+)") do t[k] = math.tointeger(tonumber(v)) end
   return t
end

---
-- Whether guest RAM of `size` bytes fits this host's memory.
-- @tparam integer size bytes
-- @tparam[opt] table info M.meminfo's table (default: this host's)
-- @return true, or nil and the message
function M.check_host(size, info)
   info = info or M.meminfo()
   local total = info.MemTotal
   if total and size > total * 1024 then
      return nil, ("guest RAM of %d MiB is more than this host's memory (MemTotal %d MiB): give "
         .. "--mem less"):format(size // MiB, total // 1024)
   end
   return true
end

---
-- What a huge-page backing of `size` bytes needs and what the pool has, as a sentence
-- to add to an ENOMEM.
-- @tparam integer size bytes
-- @tparam integer page_size the huge page size in bytes
-- @tparam[opt] table info M.meminfo's table (default: this host's)
-- @treturn string the explanation
function M.hugepages_hint(size, page_size, info)
   info = info or M.meminfo()
   local need = (size + page_size - 1) // page_size
   local free, total = info.HugePages_Free or 0, info.HugePages_Total or 0
   local default = info.Hugepagesize and info.Hugepagesize * 1024 == page_size
   local where = "/proc/sys/vm/nr_hugepages"
   if not default then   -- another size's pool is in sysfs, not in /proc/meminfo
      local dir = ("/sys/kernel/mm/hugepages/hugepages-%dkB/"):format(page_size // 1024)
      local function read(name)
         local f = io.open(dir .. name)
         local v = f and math.tointeger(tonumber(f:read("l") or ""))
         if f then f:close() end
         return v or 0
      end
      where, free, total = dir .. "nr_hugepages", read("free_hugepages"), read("nr_hugepages")
   end
   local have = (", %d free of %d"):format(free, total)
   return ("not enough huge pages: guest RAM of %d MiB needs %d pages of %d KiB%s; reserve them "
      .. "with echo %d > %s (as root; or hugepages=%d on the host's kernel command line), or "
      .. "leave --hugepages out"):format(size // MiB, need, page_size // 1024, have,
         total + math.max(need - free, 0), where, need)
end

---
-- The backing file of guest RAM of `size` bytes, or false for anonymous memory.
-- @tparam integer size bytes
-- @tparam[opt] table opts `{backing = "anonymous" | "memfd" | "hugetlbfs", hugetlbfs = a
-- hugetlbfs mount (with backing "hugetlbfs"; default: a huge-page memfd)}`
-- @return a vfio.core ramfd, or false; or nil, message, errno
function M.open(size, opts)
   opts = opts or {}
   local backing = opts.backing or "anonymous"
   if backing == "anonymous" then return false end
   local r, err, errno
   if backing == "memfd" then
      r, err, errno = core.ram_memfd(size)
   elseif backing == "hugetlbfs" then
      if opts.hugetlbfs then
         r, err, errno = core.ram_hugetlbfs(opts.hugetlbfs, size)
      else
         r, err, errno = core.ram_memfd(size, { hugetlb = true })
      end
      if not r and errno == ENOMEM then
         local info = M.meminfo()
         err = ("%s: %s"):format(err, M.hugepages_hint(size, (info.Hugepagesize or 2048) * 1024, info))
      elseif not r and errno == 22 then
         err = ("%s (guest RAM of a huge-page backing is a whole number of huge pages: --mem in "
            .. "multiples of %d KiB)"):format(err, M.meminfo().Hugepagesize or 2048)
      end
   else
      error(("RAM backing must be one of %s, got %s"):format(table.concat(M.BACKINGS, ", "),
         tostring(backing)), 2)
   end
   if not r then return nil, err, errno end
   return r
end

---
-- Guest RAM of `size` bytes as memory slots of `vm` (a vfio.core vm), one per range of
-- address_map.ram_ranges, from `ramfd` (consecutive offsets) or anonymous memory.
-- @param vm the vfio.core vm
-- @tparam integer size bytes
-- @param[opt] ramfd a vfio.core ramfd of at least `size` bytes, or false
-- @tparam[opt] integer below the most RAM below the hole (address_map.ram_ranges)
-- @treturn {table,...} the ranges, each with its `slot`; or nil, message, errno
function M.add(vm, size, ramfd, below)
   local ranges, offset = address_map.ram_ranges(size, below), 0
   for _, r in ipairs(ranges) do
      local slot, err, errno = vm:add_ram(r.start, r.size, ramfd and { fd = ramfd, offset = offset } or nil)
      if not slot then
         if errno == ENOMEM and ramfd and ramfd:page_size() > address_map.PAGE_SIZE then
            err = ("%s: %s"):format(err, M.hugepages_hint(size, ramfd:page_size()))
         end
         return nil, ("guest RAM at %#x (%d MiB): %s"):format(r.start, r.size // MiB, tostring(err)), errno
      end
      r.slot, offset = slot, offset + r.size
   end
   return ranges
end

local function covered(ranges, start, size)
   for _, u in ipairs(ranges) do
      if start >= u.start and start + size - 1 <= u.last then return true end
   end
   return false
end

---
-- Whether guest RAM of `size` bytes, mapped for DMA at IOVA == guest-physical, lies inside
-- an IOMMU's usable IOVA ranges (`container:iommu_info().iova_ranges` or
-- `ioas:iova_ranges()`: `{start =, last =}` each). An empty list says nothing (an IOMMU
-- that reports no ranges): true.
-- @tparam integer size bytes of guest RAM
-- @tparam {table,...} iova the usable IOVA ranges
-- @tparam[opt] integer below the most RAM below the hole (address_map.ram_ranges)
-- @return true, or nil and the message
function M.check_aperture(size, iova, below)
   if not iova or #iova == 0 then return true end
   local top = 0
   for _, u in ipairs(iova) do top = math.max(top, u.last) end
   for _, r in ipairs(address_map.ram_ranges(size, below)) do
      if r.size > 0 and not covered(iova, r.start, r.size) then
         local bits = 0
         while bits < 64 and (1 << bits) - 1 < top do bits = bits + 1 end
         return nil, ("IOMMU aperture too small: guest RAM at %#x..%#x (mapped for DMA at IOVA == "
            .. "guest-physical) is outside the IOMMU's usable IOVA ranges (they end at %#x, a %d-bit "
            .. "address width): give --mem less, so that RAM ends below %#x"):format(r.start,
               r.start + r.size - 1, top, bits, top + 1)
      end
   end
   return true
end

---
-- The usable IOVA ranges of a DMA container (a vfio container or an iommufd IOAS), or
-- nil when it does not say.
-- @param c the container or IOAS
-- @treturn {table,...} `{start =, last =}` each, or nil
function M.iova_ranges(c)
   if not c then return nil end
   if c.iova_ranges then
      local r = c:iova_ranges()
      return r
   end
   if c.iommu_info then
      local info = c:iommu_info()
      return info and info.iova_ranges
   end
   return nil
end

return M
