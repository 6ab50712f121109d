-- bench/vs-qemu: examples/guest on the lab's edu, once under QEMU's vfio-pci (nested
-- KVM) and once under passthrough.lua, in the same lab run. Prints the guest-measured
-- TSC cycles per trapped config read, per BAR read and per MSI round trip, and ours as a
-- ratio to QEMU's (target: <= 1). Run: lab/run -- lua5.4 bench/vs-qemu.lua
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
local lab = require "support.lab"
local guest = require "support.guest"

local edu = assert(lab.device("edu"), "no edu device: run this inside lab/run")
local METRICS = { "cfg_read", "bar_read", "msi_roundtrip" }

local function run_ours()
   local f = io.open("passthrough.lua")
   if not f then return nil, "passthrough.lua is not in this tree yet" end
   f:close()
   local p = assert(io.popen(("lua5.4 passthrough.lua --device %s --guest %s 2>&1"):format(edu.bdf, guest.ELF)))
   local out = p:read("a")
   p:close()
   return out
end

local qout = guest.qemu_vfio(edu.bdf)
local q = guest.parse(qout)
assert(q.result == "PASS", "guest failed under QEMU:\n" .. qout)
local oout, why = run_ours()
local o = oout and guest.parse(oout)
if o and o.result ~= "PASS" then
   io.stderr:write("guest did not pass under passthrough.lua:\n", oout, "\n")
   o = nil
end
print(("%-15s %12s %12s %8s"):format("cycles per", "QEMU", "ours", "ratio"))
for _, m in ipairs(METRICS) do
   local qv, ov = q.bench[m], o and o.bench[m]
   print(("%-15s %12d %12s %8s"):format(m, qv, ov and tostring(ov) or "-",
                                        ov and ("%.2f"):format(ov / qv) or "-"))
end
if not o then print("ours: " .. (why or "no result")) end
