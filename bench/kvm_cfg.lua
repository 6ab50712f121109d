-- Guest-measured TSC cycles per PCI configuration read, examples/guest in our KVM VM:
-- the host bridge in Lua (every CF8/CFC access is a Lua exit) against the C host bridge
-- through CF8/CFC and through ECAM (answered inside the run loop). Ratios to the C/CF8
-- case, measured in this one run. Needs /dev/kvm: lab/run -- lua5.4 bench/kvm_cfg.lua
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local machine = require "vfio.vmm.vm"
local pcihost = require "vfio.vmm.pcihost"
local guest = require "support.guest"

local function fn() return pcihost.config_space { vendor = 0x1234, device = 0x5678 } end

local function run(kind)
   local m <close> = assert(machine.create { mem_mib = 16 })
   local opts = { cmdline = "dev=1234:5678", timeout = 120 }
   if kind == "lua" then
      local host = pcihost.new()
      host:attach(0, 5, 0, fn())
      opts.handler = host:handler()
   else
      local host = pcihost.new_c { ecam_base = 0xe0000000 }
      assert(host:attach(0, 5, 0, fn()))
      assert(pcihost.install(m.vm, host))
      if kind == "c-ecam" then opts.cmdline = opts.cmdline .. " ecam=e0000000" end
   end
   local r = assert(m:boot(guest.ELF, opts))
   assert(r.result == "pass", r.output)
   return assert(guest.parse(r.output).bench.cfg_read, "no BENCH cfg_read")
end

local c = run("c-cf8")
local results = { { "C host, CF8/CFC", c }, { "C host, ECAM", run("c-ecam") }, { "Lua host, CF8/CFC", run("lua") } }
if os.getenv("LUAVFIO_LAB_KERNEL") then print("lab kernel " .. os.getenv("LUAVFIO_LAB_KERNEL")) end
print(("%-20s %12s %8s"):format("config read via", "cycles", "vs C/CF8"))
for _, r in ipairs(results) do
   print(("%-20s %12d %8.2f"):format(r[1], r[2], r[2] / c))
end
