-- bench/ram.lua: what mapping guest RAM for DMA costs at boot, per GiB, for each backing
-- (vfio.vmm.ram): VFIO pins every page of guest RAM when the board maps it (type1 or an
-- iommufd IOAS), faulting in what was never touched, so this is a cost a guest pays once
-- per GiB before it starts. Printed as ms per GiB and as ratios to anonymous RAM.
--   lab only: lab/run -- lua5.4 bench/ram.lua [MiB]   (default 256: the lab has 1.5 GiB)
-- Each case: a VM with the RAM (below the hole, and above 4 GiB past 128 MiB, as
-- --mem N,below-4g=128M lays it out), the lab's edu opened, its container or IOAS mapping
-- every RAM range at IOVA == guest-physical (board.map_dma's work), timed, then unmapped.
-- Huge pages are measured when the lab can reserve them (it tries, and gives them back).
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("LUAVFIO_BUILD") or "build") .. "/?.so;" .. package.cpath
local vfio = require "vfio"
local vmlib = require "vfio.vmm.vm"

assert(os.getenv("LUAVFIO_LAB") == "1", "bench/ram.lua runs in the lab: lab/run -- lua5.4 bench/ram.lua")
local MIB = math.tointeger(tonumber(arg[1])) or 256
local BELOW = 128 << 20
local ROUNDS = 3

local edu = assert(require("support.lab").device("edu"), "no edu device in this lab run")

-- One map of all guest RAM into dev's container: seconds, or nil and why.
local function map_once(backing)
   local m, err = vmlib.create { mem_mib = MIB, ram_below_4g = BELOW, backing = backing }
   if not m then return nil, err end
   local dev = assert(vfio.open(edu.bdf))
   local c = dev.container
   local t0 = vmlib.now()
   local done, ok, merr = {}, true, nil
   for _, r in ipairs(m.ram_ranges) do
      ok, merr = c:map_dma(m.vm, r.start, { gpa = r.start, size = r.size, read = true, write = true })
      if not ok then break end
      done[#done + 1] = r
   end
   local dt = vmlib.now() - t0
   for _, r in ipairs(done) do c:unmap_dma(r.start, r.size) end
   dev:close()
   m:close()
   if not ok then return nil, merr end
   return dt
end

local function best(backing)
   local b
   for _ = 1, ROUNDS do
      local t, why = map_once(backing)
      if not t then return nil, why end
      b = math.min(b or t, t)
   end
   return b
end

-- Huge pages for one run of the hugetlbfs case: the pool's size before, or nil.
local function reserve_hugepages()
   local f = io.open("/proc/meminfo")
   local info = f and f:read("a") or ""
   if f then f:close() end
   local kib = tonumber(info:match("Hugepagesize:%s*(%d+)") or "")
   local total = tonumber(info:match("HugePages_Total:%s*(%d+)") or "")
   if not kib or not total then return nil end
   local w = io.open("/proc/sys/vm/nr_hugepages", "w")
   if not w then return nil end
   w:write(tostring(total + (MIB * 1024) // kib), "\n")
   w:close()
   return total
end

local function restore_hugepages(total)
   local w = io.open("/proc/sys/vm/nr_hugepages", "w")
   if w then w:write(tostring(total), "\n") w:close() end
end

io.write(("bench/ram.lua: %d MiB of guest RAM (%d below 4 GiB), mapped for DMA through %s's %s, "
   .. "best of %d\n"):format(MIB, BELOW >> 20, edu.bdf, os.getenv("LUAVFIO_IOMMUFD") == "1" and "IOAS"
   or "container", ROUNDS))
local per_gib = MIB / 1024
local results = {}
for _, backing in ipairs { "anonymous", "memfd", "hugetlbfs" } do
   local before = backing == "hugetlbfs" and reserve_hugepages()
   local t, why = best(backing)
   if before then restore_hugepages(before) end
   results[backing] = t
   if t then
      local ratio = results.anonymous and backing ~= "anonymous"
         and ("   (%.2fx anonymous)"):format(t / results.anonymous) or ""
      io.write(("  %-10s %8.1f ms per GiB%s\n"):format(backing, t * 1000 / per_gib, ratio))
   else
      io.write(("  %-10s not measured: %s\n"):format(backing, tostring(why)))
   end
end
