-- PCIe native hot-plug judged by Linux's own pciehp. A Linux guest (the lab's kernel, an
-- initramfs running spec/support/hotplug_guest.sh) boots with two empty hot-plug slots and
-- no device. Round 1 hot-adds the lab's nvme into slot 1 and its e1000e into slot 2; the
-- guest waits for each and reports what it sees: pciehp saw the card ("Card present") and
-- powered the slot, the port's link is up, the driver bound, the nvme reads the lab disk's
-- pattern and the e1000e's interface comes up with its MAC, each with its interrupts.
-- Then both are removed (the attention button: pciehp unbinds the driver and powers the
-- slot off, and only then does the VMM let the device go): the driver unbound, the disk or
-- interface gone, the slot empty and off. Round 2 does it all again the other way round
-- (e1000e into slot 1, nvme into slot 2): each device works again, each slot takes another
-- device. The host side waits for the guest's console lines before each step.
--
-- The same guest, held to the same checks, runs under QEMU (lab/oracle --hotplug-ports:
-- pcie-root-ports on native PCIe hot-plug, q35's ACPI hot-plug for them turned off, and
-- device_add/device_del of vfio-pci on its QMP monitor), the reference, and under
-- passthrough.lua (--hotplug-slots: its root ports, no ACPI at all; device_add/device_del
-- on its control socket, whose events say when the guest gave a device back).
--
-- #nested: Linux nested under KVM; spec/run's lab-nested tier, the Debian 6.1 kernel's
-- guest (CONFIG_HOTPLUG_PCI_PCIE=y, pciehp built in; nvme and e1000e modules the
-- initramfs loads at boot, before any device is there).
local lab = require "support.lab"
local linux = require "support.linux_guest"
local child = require "support.child"
local jsonlines = require "support.jsonlines"
local hpguest = require "support.hotplug_guest"

local report, no_pciehp = hpguest.report, hpguest.no_pciehp

local IDS = { nvme = "1b36:0010", e1000e = "8086:10d3" }
-- Round r puts ROUNDS[r][slot] into hot-plug slot `slot` (the guest's /sys/bus/pci/slots
-- name, the VMM's device_add slot, QEMU's root port hp<slot>).
local ROUNDS = { { "nvme", "e1000e" }, { "e1000e", "nvme" } }
local GUEST_ARGS = "hp-slots=2 hp-cycles=4"
local SECTORS = { 0, 1234, 16383 }

-- The nth device of slot s, once `field` is set (for wait_for).
local function seen(out, s, n, field)
   local a = report(out).adds[tostring(s)]
   a = a and a[n]
   return a and a[field] and a
end

-- What the guest saw of round `round`'s devices (ROUNDS[round]), checked alike under both
-- VMMs; returns e1000e's MAC.
local function check_round(out, round)
   local r = report(out)
   local mac
   for slot, name in ipairs(ROUNDS[round]) do
      local s = tostring(slot)
      local a = r.adds[s] and r.adds[s][round]
      local what = ("round %d, %s in slot %s"):format(round, name, s)
      assert.is_table(a, what .. ": never seen by the guest\n" .. out)
      assert.are.same({ IDS[name], name }, { a.id, a.driver }, what .. ": the device and its driver\n" .. out)
      -- pciehp saw the card and powered the slot; the port's link is up (pciehp scans the
      -- bus only once it is: "No link" otherwise)
      assert.are.same({ "1", "1", "1" }, { a.adapter, a.power, a.link },
         what .. ": slot adapter, power and the port's Data Link Layer Link Active\n" .. out)
      assert.is_true((a.present or 0) >= round, what .. ": pciehp's \"Card present\"\n" .. out)
      if name == "nvme" then
         for _, sec in ipairs(SECTORS) do
            assert.are.equal("ok", a.reads[sec], what .. ": sector " .. sec .. " of the lab disk\n" .. out)
         end
      else
         assert.is_table(a.net, what .. ": no network interface\n" .. out)
         mac = a.net.mac
         -- the device's own address, read from its NVM through BAR0: not a random one the
         -- driver would make up for an unreadable NVM (rounds compare it), not multicast
         assert.matches("^%x%x:%x%x:%x%x:%x%x:%x%x:%x%x$", mac, what)
         assert.are_not.equal("00:00:00:00:00:00", mac, what)
         assert.are.equal(0, tonumber(mac:sub(1, 2), 16) & 1, what .. ": multicast MAC " .. mac)
      end
      -- nvme's completions, e1000e's link interrupt on open: MSI-X through the port's bus
      assert.is_true(a.irqs > 0, what .. ": no interrupt counted\n" .. out)
      local rm = a.removed
      assert.is_table(rm, what .. ": never removed\n" .. out)
      assert.are.same({ bound = "no", left = "no", adapter = "0", power = "0" }, rm,
         what .. ": after removal (driver bound, disk/interface left, slot adapter and power)\n" .. out)
   end
   return mac
end

-- Everything after the rounds: both slots found where expected, no kernel trouble, the end.
local function check_guest(out, ports)
   local r = report(out)
   for s, port in pairs(ports) do
      assert.is_table(r.slots[s], "hot-plug slot " .. s .. " not found by the guest\n" .. out)
      assert.are.equal(port, r.slots[s].port, "slot " .. s .. "'s root port")
   end
   assert.are.same({}, r.trouble, "kernel warnings or pciehp failures\n" .. out)
   assert.is_true(r.done, out)
   local mac1, mac2 = check_round(out, 1), check_round(out, 2)
   assert.are.equal(mac1, mac2, "e1000e's MAC differs between its two adds")
end

-- Wait for the guest's ready line; then its two slots must be there (a guest whose pciehp
-- found none would otherwise wait for devices that cannot come).
local function wait_ready(vm)
   child.wait_for(vm, "the guest's hot-plug slots", function() return report(vm.output()).ready end, 240)
   local r = report(vm.output())
   assert.is_true(r.slots["1"] ~= nil and r.slots["2"] ~= nil,
      "the guest's pciehp did not register slots 1 and 2\n" .. vm.output())
end

local function wait_round(vm, round, field)
   for slot, name in ipairs(ROUNDS[round]) do
      child.wait_for(vm, ("round %d: the guest's %s of %s in slot %d"):format(round,
         field == "checked" and "checks" or "removal", name, slot),
         function() return seen(vm.output(), slot, round, field) end, 120)
   end
end

describe("PCIe native hot-plug under the guest's pciehp #nested", function()
   local vm, conn
   after_each(function()
      if conn then conn.close() conn = nil end
      if vm then vm.stop() vm = nil end
   end)

   it("QEMU (lab/oracle --hotplug-ports, QMP device_add/device_del of vfio-pci): "
      .. "nvme and e1000e added, working, removed, added again", function()
      assert.is_true(lab.inside, "run me with lab/run")
      local why = no_pciehp()
      if why then pending(why) return end
      collectgarbage(); collectgarbage()   -- devices other specs left to the GC closed
      local devs = { nvme = lab.need("nvme"), e1000e = lab.need("e1000e") }
      local img = linux.initramfs("--run spec/support/hotplug_guest.sh")
      vm = child.spawn("lab/oracle", function(dir)
         return { "--linux", "--initrd", img, "--append", GUEST_ARGS, "--hotplug-ports", "2",
                  "--qmp", dir .. "/qmp.sock", "--timeout", "400" } end)
      vm.name = "lab/oracle"
      conn = jsonlines.connect(vm.dir .. "/qmp.sock", { alive = function() return not vm.status() end })
      local hello = conn.line(30)
      assert.is_table(hello and hello.QMP, "no QMP greeting")
      local v = conn.request { execute = "qmp_capabilities" }
      assert.is_nil(v.error, v.error and v.error.desc)
      wait_ready(vm)
      -- QMP, retried while QEMU says the guest is busy with the slot (its power indicator
      -- blinking)
      local function qmp(cmd, args)
         for _ = 1, 20 do
            v = conn.request { execute = cmd, arguments = args }
            if not (v.error and tostring(v.error.desc):match("busy")) then break end
            child.sleep(0.5)
         end
         assert.is_nil(v.error, ("%s %s: %s"):format(cmd, require("dkjson").encode(args),
            v.error and v.error.desc))
      end
      for round, plan in ipairs(ROUNDS) do
         for slot, name in ipairs(plan) do
            qmp("device_add", { driver = "vfio-pci", host = devs[name].bdf, bus = "hp" .. slot, id = name })
         end
         wait_round(vm, round, "checked")
         for _, name in ipairs(plan) do qmp("device_del", { id = name }) end
         -- QEMU lets the device go once the guest has powered the slot off
         for _, name in ipairs(plan) do
            local e = conn.event(function(x)
               return x.event == "DEVICE_DELETED" and x.data and x.data.device == name end, 60)
            assert.is_table(e, ("round %d: no DEVICE_DELETED for %s\n%s"):format(round, name, vm.output()))
         end
         wait_round(vm, round, "removed")
      end
      child.wait_for(vm, "the oracle's exit", function() return vm.status() end, 90)
      local out = vm.output()
      assert.are.equal(0, vm.status(), out)
      check_guest(out, { ["1"] = "0000:00:10.0", ["2"] = "0000:00:11.0" })
   end)

   it("passthrough.lua (--hotplug-slots, control socket device_add/device_del): "
      .. "nvme and e1000e added, working, removed, added again", function()
      assert.is_true(lab.inside, "run me with lab/run")
      local why = no_pciehp()
      if why then pending(why) return end
      collectgarbage(); collectgarbage()
      local devs = { nvme = lab.need("nvme"), e1000e = lab.need("e1000e") }
      local img = linux.initramfs("--run spec/support/hotplug_guest.sh")
      -- no device at boot: two empty root ports (00:10.0 and 00:11.0, buses 1 and 2)
      vm = child.spawn("lua5.4", function(dir)
         return { "passthrough.lua", "--kernel", linux.kernel(), "--initrd", img,
                  "--append", "quiet " .. GUEST_ARGS, "--hotplug-slots", "2",
                  "--control", dir .. "/ctl.sock", "--timeout", "400" } end)
      vm.name = "passthrough.lua"
      conn = jsonlines.connect(vm.dir .. "/ctl.sock", { alive = function() return not vm.status() end })
      local info = conn.request { cmd = "info" }
      assert.is_true(info.ok, info.error)
      assert.are.same({ true, 0 }, { info.result.hotplug, #info.result.devices })
      wait_ready(vm)
      for round, plan in ipairs(ROUNDS) do
         for slot, name in ipairs(plan) do
            local bdf = devs[name].bdf
            local v = conn.request { cmd = "device_add", device = bdf, slot = slot }
            assert.is_true(v.ok, v.error)
            -- behind port slot-1, on its secondary bus
            assert.are.same({ bdf, ("%02x:00.0"):format(slot), slot - 1 },
                            { v.result.host, v.result.guest, v.result.port })
            assert.is_table(conn.event(function(e) return e.event == "device_added" and e.host == bdf end, 10),
               "no device_added event for " .. bdf)
         end
         wait_round(vm, round, "checked")
         -- the VMM's side of the drivers' choice: nvme on MSI-X, e1000e on MSI-X or MSI
         local modes = {}
         for _, d in ipairs(conn.request({ cmd = "info" }).result.devices) do modes[d.host] = d.irq.mode end
         assert.are.equal("msix", modes[devs.nvme.bdf])
         assert.matches("^msix?$", tostring(modes[devs.e1000e.bdf]))
         for slot, name in ipairs(plan) do
            local v = conn.request { cmd = "device_del", device = devs[name].bdf }
            assert.is_true(v.ok, v.error)
            assert.are.same({ ("%02x:00.0"):format(slot), true }, { v.result.guest, v.result.removing })
         end
         -- device_removed once the guest has powered the slot off: no surprise removal
         for _, name in ipairs(plan) do
            local bdf = devs[name].bdf
            local e = conn.event(function(x) return x.event == "device_removed" and x.host == bdf end, 60)
            assert.is_table(e, ("round %d: no device_removed for %s\n%s"):format(round, bdf, vm.output():sub(-4000)))
            assert.is_false(e.surprise, name .. " was removed by surprise: the guest did not power its slot off")
         end
         wait_round(vm, round, "removed")
         assert.are.equal(0, #conn.request({ cmd = "info" }).result.devices)
      end
      local stopped = conn.event("guest_stopped", 90)
      assert.are.same({ "poweroff", 0 }, { stopped and stopped.result, stopped and stopped.status },
         vm.output():sub(-4000))
      child.wait_for(vm, "the VMM's exit", function() return vm.status() end, 60)
      local out = vm.output()
      assert.are.equal(0, vm.status(), out)
      assert.matches("passthrough%.lua: guest poweroff", out)
      check_guest(out, { ["1"] = "0000:00:10.0", ["2"] = "0000:00:11.0" })
      local r = report(out)
      assert.are.same({ "0000:01:00", "0000:02:00" }, { r.slots["1"].addr, r.slots["2"].addr })
      -- both devices are the host's again: nothing left bound or mapped
      local vfio = require "vfio"
      for _, name in ipairs { "nvme", "e1000e" } do
         local d = assert(vfio.open(devs[name].bdf))
         d:close()
      end
   end)
end)
