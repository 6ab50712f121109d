-- bench/hotplug.lua: PCIe native hot-plug of the lab's nvme, timed under passthrough.lua
-- (--hotplug-slots, device_add/device_del on its control socket) and under QEMU (lab/oracle
-- --hotplug-ports, vfio-pci device_add/device_del on its QMP monitor), in one lab run.
-- Both VMMs boot the same Linux guest (spec/support/hotplug_guest.sh, the hot-plug spec's:
-- Linux's own pciehp drives the slot) with one empty slot, and both stay up; each round
-- hot-adds the nvme to ours, then to QEMU's (alternating which goes first), and takes it
-- out again before the other gets it. Per round and VMM:
--   add:      device_add sent -> the guest's console says the nvme driver is bound ("hp:
--             added 1 N ... nvme"): the VMM's work (opening the device, mapping guest RAM
--             for its DMA), pciehp's (presence, power, link up, its waits) and the probe;
--   reply:    device_add sent -> its reply (the VMM's own part of `add`);
--   event:    device_del sent -> the VMM says the device left (device_removed /
--             DEVICE_DELETED): the attention button, pciehp's 5 s blink, the driver's
--             remove, the slot powered off, the VMM tearing the device down;
--   released: device_del sent -> the host can open the device again (vfio.open succeeds:
--             the VMM closed the device, its group and container).
-- Printed: medians and min-max per VMM, ratios ours/QEMU of the medians (target <= 1).
-- The guest notices a device, then its driver, by polling sysfs every 0.2 s, and the host
-- reads the consoles every 0.05 s: `add` carries up to ~0.45 s of polling, alike for both.
--   lab/run --smp 2 --timeout 1800 -- lua5.4 bench/hotplug.lua [ROUNDS]     (default 5)
-- (two CPUs: the guest not being measured idles on its own; one works too, slower)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("LUAVFIO_BUILD") or "build") .. "/?.so;" .. package.cpath
local vfio = require "vfio"
local lab = require "support.lab"
local linux = require "support.linux_guest"
local child = require "support.child"
local jsonlines = require "support.jsonlines"
local hpguest = require "support.hotplug_guest"
local json = require "dkjson"

assert(lab.inside, "run me in the lab: lab/run -- lua5.4 bench/hotplug.lua [ROUNDS]")
local rounds = math.tointeger(tonumber(arg[1])) or 5
local why = hpguest.no_pciehp()
if why then
   io.stderr:write("bench/hotplug.lua: ", why, "\n")
   os.exit(1)
end
collectgarbage(); collectgarbage()
local nvme = lab.need("nvme").bdf
-- the guest waits for one slot and ends after `rounds` removals; both VMMs give it the
-- same RAM, which each maps for DMA when the nvme comes
local GUEST_ARGS = ("hp-slots=1 hp-cycles=%d"):format(rounds)
local MEM = "256"
local TIMEOUT = tostring(300 + rounds * 120)
local POLL = 0.05

local img = linux.initramfs("--run spec/support/hotplug_guest.sh")
local vms = {}

local function stop_all()
   for _, v in ipairs(vms) do
      if v.conn then v.conn.close() end
      if v.vm then v.vm.stop() end
   end
end

-- The first time (polled every POLL s) `text` appears in vm's console, or an error.
local function wait_text(v, text, seconds, what)
   local deadline = child.now() + seconds
   while child.now() < deadline do
      if v.vm.output():find(text, 1, true) then return child.now() end
      if v.vm.status() then break end
      child.sleep(POLL)
   end
   error(("%s: %s: no \"%s\" in %d s (%s)\n%s"):format(v.name, what, text, seconds,
      v.vm.status() and ("exited " .. v.vm.status()) or "running", v.vm.output():sub(-4000)), 0)
end

-- The VMMs, each driving its own guest: start(), add() -> when its reply came, del(),
-- left(event) -> whether that event says the device left the machine.
local QEMU = { name = "QEMU" }
function QEMU.start()
   local vm = child.spawn("lab/oracle", function(dir)
      return { "--linux", "--initrd", img, "--mem", MEM, "--append", GUEST_ARGS, "--hotplug-ports", "1",
               "--qmp", dir .. "/qmp.sock", "--timeout", TIMEOUT } end)
   vm.name = "lab/oracle"
   QEMU.vm = vm
   QEMU.conn = jsonlines.connect(vm.dir .. "/qmp.sock", { alive = function() return not vm.status() end })
   local hello = QEMU.conn.line(30)
   assert(hello and hello.QMP, "no QMP greeting")
   local v = QEMU.conn.request { execute = "qmp_capabilities" }
   assert(not v.error, v.error and v.error.desc)
end
-- QMP, retried while QEMU says the guest is busy with the slot (its power indicator blinking)
local function qmp(cmd, args)
   local v
   for _ = 1, 40 do
      v = QEMU.conn.request { execute = cmd, arguments = args }
      if not (v.error and tostring(v.error.desc):match("busy")) then break end
      child.sleep(0.25)
   end
   assert(not v.error, ("%s %s: %s"):format(cmd, json.encode(args), v.error and v.error.desc))
end
function QEMU.add()
   qmp("device_add", { driver = "vfio-pci", host = nvme, bus = "hp1", id = "nvme" })
   return child.now()
end
function QEMU.del() qmp("device_del", { id = "nvme" }) end
function QEMU.left(e) return e.event == "DEVICE_DELETED" and e.data and e.data.device == "nvme" end

local OURS = { name = "passthrough.lua" }
function OURS.start()
   local vm = child.spawn("lua5.4", function(dir)
      return { "passthrough.lua", "--kernel", linux.kernel(), "--initrd", img, "--mem", MEM,
               "--append", "quiet " .. GUEST_ARGS, "--hotplug-slots", "1",
               "--control", dir .. "/ctl.sock", "--timeout", TIMEOUT } end)
   vm.name = "passthrough.lua"
   OURS.vm = vm
   OURS.conn = jsonlines.connect(vm.dir .. "/ctl.sock", { alive = function() return not vm.status() end })
end
function OURS.add()
   local v = OURS.conn.request { cmd = "device_add", device = nvme, slot = 1 }
   local t = child.now()
   assert(v.ok, v.error)
   -- its event, taken now so events do not pile up
   OURS.conn.event(function(e) return e.event == "device_added" and e.host == nvme end, 10)
   return t
end
function OURS.del()
   local v = OURS.conn.request { cmd = "device_del", device = nvme }
   assert(v.ok, v.error)
end
function OURS.left(e) return e.event == "device_removed" and e.host == nvme end

local samples = { [QEMU] = {}, [OURS] = {} }

-- One round on one VMM: the nvme in (timed to the driver bound), checked by the guest,
-- out (timed to the VMM's event and to the host opening it again).
local function round(v, n)
   local s = {}
   local t0 = child.now()
   s.reply = v.add() - t0
   s.add = wait_text(v, ("hp: added 1 %d "):format(n), 120, "round " .. n .. " add") - t0
   assert(v.vm.output():find(("hp: added 1 %d %%S+ 1b36:0010 nvme"):format(n)),
      v.name .. ": the nvme driver did not bind\n" .. v.vm.output():sub(-4000))
   -- the guest reads the disk before it reports the device checked: not while it goes
   wait_text(v, ("hp: checked 1 %d"):format(n), 120, "round " .. n .. " checks")
   t0 = child.now()
   v.del()
   local deadline = t0 + 120
   while not (s.event and s.released) do
      if not s.event then
         if v.conn.event(v.left, POLL) then s.event = child.now() - t0 end
      else
         child.sleep(POLL)
      end
      if not s.released then
         local d = vfio.open(nvme)
         if d then
            s.released = child.now() - t0
            d:close()
         end
      end
      if child.now() > deadline then
         error(("%s: round %d: device_del: event %s, released %s after 120 s\n%s"):format(v.name, n,
            tostring(s.event), tostring(s.released), v.vm.output():sub(-4000)), 0)
      end
   end
   -- the guest's own view of it gone, before the next add to this guest
   wait_text(v, ("hp: removed 1 %d "):format(n), 60, "round " .. n .. " removal")
   local list = samples[v]
   list[#list + 1] = s
end

local function run()
   vms[1] = QEMU
   QEMU.start()
   vms[2] = OURS
   OURS.start()
   for _, v in ipairs { QEMU, OURS } do wait_text(v, "hp: ready", 300, "its hot-plug slot") end
   for n = 1, rounds do
      io.stderr:write(("round %d of %d\n"):format(n, rounds))
      local order = n % 2 == 1 and { OURS, QEMU } or { QEMU, OURS }
      for _, v in ipairs(order) do round(v, n) end
   end
   for _, v in ipairs { QEMU, OURS } do
      wait_text(v, "hp: done", 120, "the guest's end")
      child.wait_for(v.vm, v.name .. "'s exit", function() return v.vm.status() end, 120)
   end
end

local ok, err = xpcall(run, debug.traceback)
stop_all()
if not ok then
   io.stderr:write("bench/hotplug.lua: ", tostring(err), "\n")
   os.exit(1)
end

local function stats(v, k)
   local list = {}
   for i, s in ipairs(samples[v]) do list[i] = s[k] end
   table.sort(list)
   return list[(#list + 1) // 2], list[1], list[#list]
end

if os.getenv("LUAVFIO_LAB_KERNEL") then print("lab kernel " .. os.getenv("LUAVFIO_LAB_KERNEL")) end
print(("nvme %s hot-added into one empty PCIe slot and removed, %d round(s) per VMM interleaved, "
   .. "guests of %s MiB under nested KVM; seconds, median (min-max)"):format(nvme, rounds, MEM))
print(("  %-36s %20s %20s %9s"):format("", "QEMU", "passthrough.lua", "ours/QEMU"))
for _, row in ipairs {
   { "device_add -> nvme driver bound", "add" }, { "device_add -> its reply", "reply" },
   { "device_del -> removed event", "event" }, { "device_del -> host can open it", "released" },
} do
   local cells, med = {}, {}
   for _, v in ipairs { QEMU, OURS } do
      local m, lo, hi = stats(v, row[2])
      med[v] = m
      cells[#cells + 1] = ("%.2f (%.2f-%.2f)"):format(m, lo, hi)
   end
   print(("  %-36s %20s %20s %9s"):format(row[1], cells[1], cells[2],
      med[QEMU] > 0 and ("%.2f"):format(med[OURS] / med[QEMU]) or "-"))
end
print("removed event: passthrough.lua's device_removed, QEMU's DEVICE_DELETED; host can open it: "
   .. "vfio.open of the nvme succeeds again (polled every " .. POLL .. " s)")
