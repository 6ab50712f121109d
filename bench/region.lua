-- bench/region.lua: cost of region access, measured in one run and printed as ratios.
--   host:  lua5.4 bench/region.lua            (a 1 MiB shared-memory file mapping)
--   lab:   lab/run -- lua5.4 bench/region.lua (edu's BAR0 through VFIO)
-- Optional argument: iterations for the per-call loops (default 2e6 host, 2e5 lab).
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("LUAVFIO_BUILD") or "build") .. "/?.so;" .. package.cpath
local vfio = require "vfio"
local core = vfio.core

local MiB = 1 << 20
local lab = os.getenv("LUAVFIO_LAB") == "1"
local N = math.tointeger(tonumber(arg[1])) or (lab and 200000 or 2000000)

local dev, mapped, plain, where
if lab then
   local d = assert(require("support.lab").device("edu"), "no edu device in this lab run")
   dev = assert(vfio.open(d.bdf))
   mapped = dev:region(0)
   assert(mapped:map())
   plain = dev.handle:region(0) -- a second, unmapped view: every access is a pread
   where = "lab: edu BAR0 (" .. d.bdf .. ") under QEMU TCG"
else
   local path = "/dev/shm/luavfio-bench-" .. tostring(os.time())
   local f = assert(io.open(path, "wb"))
   assert(f:write(string.rep("\0", MiB)))
   f:close()
   dev = assert(core.device_file(path, "shm"))
   os.remove(path) -- the open fd keeps it
   local info = { offset = 0, size = MiB, readable = true, writable = true, mappable = true }
   mapped = core.region(dev, info)
   assert(mapped:map())
   plain = core.region(dev, info)
   where = "host: 1 MiB shared-memory mapping (tmpfs file)"
end

local clock = os.clock
local function best(f, reps)
   local b = math.huge
   for _ = 1, reps or 5 do
      local t0 = clock()
      f()
      local t = clock() - t0
      if t < b then b = t end
   end
   return b
end

local rawequal = rawequal
local read32 = mapped.read32
local t_floor = best(function() for _ = 1, N do rawequal(mapped, 0) end end)
-- The same empty C function reached through method syntax and one __index table, the
-- lookup `r:read32` pays too.
local obj = setmetatable({}, { __index = { nop = rawequal } })
local t_floorm = best(function() for _ = 1, N do obj:nop(0) end end)
local t_mfun = best(function() for _ = 1, N do read32(mapped, 0) end end)
local t_meth = best(function() for _ = 1, N do mapped:read32(0) end end)
local np = lab and N // 10 or N // 4
local t_pread = best(function() for _ = 1, np do plain:read32(0) end end)

local buf = core.dmabuf(MiB)
local src = core.dmabuf(MiB)
local reps = lab and 3 or 50
local bulk_n = lab and 1 or 20
local t_bulk = best(function() for _ = 1, bulk_n do mapped:read(0, MiB) end end, reps) / bulk_n
local t_into = best(function() for _ = 1, bulk_n do mapped:read_into(0, MiB, buf, 0) end end,
   reps) / bulk_n
local t_str = best(function() for _ = 1, bulk_n do buf:read(0, MiB) end end, reps) / bulk_n
local t_memcpy = best(function() for _ = 1, bulk_n do buf:copy(0, src, 0, MiB) end end,
   reps) / bulk_n

local function ns(t, n) return t / n * 1e9 end
print(("region access benchmark, %s, %d iterations"):format(where, N))
print(("  empty Lua->C call floor   %8.1f ns"):format(ns(t_floor, N)))
print(("  mapped read32 (local fn)  %8.1f ns   %.2fx floor"):format(ns(t_mfun, N),
   t_mfun / t_floor))
print(("  empty method call floor   %8.1f ns"):format(ns(t_floorm, N)))
print(("  mapped r:read32()         %8.1f ns   %.2fx method floor"):format(ns(t_meth, N),
   t_meth / t_floorm))
print(("  pread read32              %8.1f ns   %.2fx floor, %.1fx mapped"):format(
   ns(t_pread, np), ns(t_pread, np) / ns(t_floor, N), ns(t_pread, np) / ns(t_mfun, N)))
print(("  bulk read 1 MiB (mapping) %8.1f us   %.0f MB/s"):format(t_bulk * 1e6, MiB / t_bulk / 1e6))
print(("  read_into 1 MiB DMA buffer%8.1f us   %.0f MB/s"):format(t_into * 1e6,
   MiB / t_into / 1e6))
print(("  memcpy 1 MiB into string  %8.1f us   %.0f MB/s   mapping at %.0f%%"):format(
   t_str * 1e6, MiB / t_str / 1e6, t_str / t_bulk * 100))
print(("  raw memcpy 1 MiB          %8.1f us   %.0f MB/s   read_into at %.0f%%, read at %.0f%%")
   :format(t_memcpy * 1e6, MiB / t_memcpy / 1e6, t_memcpy / t_into * 100,
      t_memcpy / t_bulk * 100))
dev:close()
