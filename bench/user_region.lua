-- bench/user_region.lua: what a 4-byte read of a vfio-user device's region costs the
-- client, as ratios to a memory-backed region read (core.region over a tmpfs mapping),
-- in one run:
--   mem      core.region:read32 through a mapping (the kernel device's fast path)
--   mapped   a vfio-user region area the server gave a sealed memfd for (a load)
--   message  REGION_READ round trip to a server process answering from C-built replies
--            with no model (handle:read): the protocol's own cost
--   trap     the same round trip through the trap core in C (trap:bar_read), the
--            guest's path minus KVM's exit
-- The server is a child process running a bare loop over core.user_connection (no
-- device model), so the figure is the client, the socket and one Lua reply.
--   lua5.4 bench/user_region.lua [iterations]   (default 20000 round trips)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("LUAVFIO_BUILD") or "build") .. "/?.so;" .. package.cpath
local core = require "vfio.core"
local vfio = require "vfio"
local passthrough = require "vfio.vmm.passthrough"
local test_server = require "support.user_test_server"
local pwait = require "posix.sys.wait"
local psignal = require "posix.signal"

local N = math.tointeger(tonumber(arg[1])) or 20000
local MiB = 1 << 20

-- The bare server: a 4 KiB BAR0 (registers: zeros), config space with a BAR0 sized by
-- the trap's probe, and BAR2 backed by a sealed memfd it hands over.
local cfg = string.pack("<I2I2I2I2I4", 0x1b36, 0x11f1, 0, 0, 0xff000000) .. string.rep("\0", 256 - 12)
local bar2 = assert(core.ram_memfd(0x1000))
local path, pid = test_server.fork(function(ls)
   local conn = test_server.accept(ls)
   local zeros = string.rep("\0", 4096)
   local sizes = { [0] = 0x1000, [2] = 0x1000, [7] = 256 }
   while true do
      local m = conn:recv()
      if not m then break end
      local c = m.command
      if c == "version" then
         conn:reply(m, { major = 0, minor = 0, capabilities = { max_msg_fds = 8 } })
      elseif c == "device_get_info" then
         conn:reply(m, { argsz = 16, flags = 3, num_regions = 9, num_irqs = 5 })
      elseif c == "device_get_region_info" then
         local i = m.index
         conn:reply(m, { index = i, size = sizes[i] or 0, flags = i == 2 and 7 or 3, argsz = 32 },
                    i == 2 and { bar2 } or nil)
      elseif c == "device_get_irq_info" then
         conn:reply(m, { argsz = 16, index = m.index, count = 0, flags = 0 })
      elseif c == "region_read" then
         local data = m.region == 7 and cfg:sub(m.offset + 1, m.offset + m.count) or zeros:sub(1, m.count)
         conn:reply(m, { offset = m.offset, region = m.region, data = data })
      elseif c == "region_write" then
         conn:reply(m, { offset = m.offset, region = m.region, count = m.count })
      else
         conn:error(m, 38)
      end
   end
end, 1)

local dev = assert(vfio.open("vfio-user:" .. path))
local h = dev.handle
local shm = "/dev/shm/luavfio-bench-user-" .. tostring(os.time())
local f = assert(io.open(shm, "wb"))
f:write(string.rep("\0", MiB))
f:close()
local fdev = assert(core.device_file(shm, "shm"))
os.remove(shm)
local mem = core.region(fdev, { offset = 0, size = MiB, readable = true, writable = true, mappable = true })
assert(mem:map())
local mapped = dev:region(2)
assert(#mapped:mapped() == 1, "BAR2 should be mapped from the server's memfd")
local pt = assert(passthrough.new(dev, { layout = false }))
pt:cfg_write(4, 2, 2)

local clock = os.clock
local function best(fn, n)
   local b = math.huge
   for _ = 1, 5 do
      local t0 = clock()
      fn(n)
      local dt = (clock() - t0) / n
      if dt < b then b = dt end
   end
   return b
end
local M = N * 50
local t = {
   mem = best(function(n) for _ = 1, n do mem:read32(0) end end, M),
   mapped = best(function(n) for _ = 1, n do mapped:read32(0) end end, M // 10),
   message = best(function(n) for _ = 1, n do h:read(0, 0, 4) end end, N),
   trap = best(function(n) for _ = 1, n do pt:bar_read(0, 0, 4) end end, N),
}
-- os.clock is this process's CPU time: the server's share of a round trip is not in it,
-- so the wall-clock round trip is measured too
local wall = require("support.child").now
local w0 = wall()
for _ = 1, N do h:read(0, 0, 4) end
local wall_rt = (wall() - w0) / N

print(("vfio-user region read, %d round trips (best of 5, client CPU time per read):"):format(N))
for _, k in ipairs { "mem", "mapped", "message", "trap" } do
   print(("  %-8s %9.3f us   %8.1fx mem"):format(k, t[k] * 1e6, t[k] / t.mem))
end
print(("  REGION_READ round trip, wall clock (client + socket + server's Lua reply): %.1f us"):format(wall_rt * 1e6))
pt:close()
dev:close()
pwait.wait(pid)
psignal.kill(pid, psignal.SIGKILL)
