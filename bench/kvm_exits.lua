-- Cost of a guest port write handled in C (a range in the run loop) against the same
-- write answered by a Lua handler and by returning to Lua from run(). Needs /dev/kvm (run
-- it in the lab: lab/run -- lua5.4 bench/kvm_exits.lua). Prints per-exit times and ratios
-- measured in this one run.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local core = require "vfio.core"

local N = tonumber(arg[1]) or 20000

-- Wall-clock time: os.clock counts this thread's CPU time, which misses time in the guest.
local ptime = require "posix.time"
local function clock()
   local ts = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
   return ts.tv_sec + ts.tv_nsec * 1e-9
end

-- Real mode: cx = N; loop { out dx, al }; hlt
local function guest(vm, port)
   vm:write(0x1000, string.char(0xB9, N & 0xff, N >> 8, 0xBA, port & 0xff, port >> 8,
                                0xEE, 0xE2, 0xFD, 0xF4))
end

local function measure(port, setup, run)
   local kvm = assert(core.kvm_open())
   local vm = assert(kvm:create_vm())
   assert(vm:add_ram(0, 0x10000))
   setup(vm)
   guest(vm, port)
   local cpu = assert(vm:vcpu(0))
   assert(cpu:setup_real(0, 0x1000))
   local t0 = clock()
   run(cpu)
   local t = clock() - t0
   vm:close(); kvm:close()
   return t
end

assert(N > 0 and N < 65536, "N in [1, 65535]")
local c = measure(0xe9, function(vm) assert(vm:add_debugcon(0xe9)) end, function(cpu)
   assert(cpu:run().reason == "hlt")
end)
local n = 0
local h = measure(0x80, function() end, function(cpu)
   assert(cpu:run(function() n = n + 1 end).reason == "hlt")
end)
assert(n == N)
local r = measure(0x80, function() end, function(cpu)
   repeat local e = cpu:run() until e.reason == "hlt"
end)
if os.getenv("LUAVFIO_LAB_KERNEL") then print("lab kernel " .. os.getenv("LUAVFIO_LAB_KERNEL")) end
print(("exits: %d per case"):format(N))
print(("C range:        %8.2f us/exit"):format(c / N * 1e6))
print(("Lua handler:    %8.2f us/exit  (%.2fx C)"):format(h / N * 1e6, h / c))
print(("run() per exit: %8.2f us/exit  (%.2fx C)"):format(r / N * 1e6, r / c))
