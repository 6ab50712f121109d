-- Bad input on the control socket leaves nothing behind (issue 23, item 6). A Linux guest
-- (the lab's kernel, spec/support/hotplug_guest.sh, which reports what its pciehp sees and
-- stays up) boots under passthrough.lua with edu passed through at 00:04.0 and one empty
-- hot-plug slot. Through the control socket the spec takes a census of the VMM's
-- resources, runs one bad request after another, and after each checks the error's text
-- and that the census is what it was:
--   - device_add of a function that does not exist (00:1f.7), of one that is not bound to
--     vfio-pci (the host bridge), of the boot device, into a slot that does not exist;
--     device_del of an unknown id and of the boot device (no hot-plug slot);
--   - two clients racing to device_add the lab's nvme (both send before either reads):
--     one wins, the other is told it is already in the VM;
--   - the machine full (nvme in the only slot): device_add of e1000e, of nvme again, of
--     the boot device;
--   - device_del of nvme twice while the guest is still removing it, and device_add into
--     its slot meanwhile (by number and not);
--   - after the guest's pciehp has powered the slot off: device_del once more, and the
--     census back at the baseline; then a clean add/remove cycle back to it too.
-- The census is an `eval` inside the VMM, run between two runs of the guest (commands
-- never run while a vCPU does, so no run's wake thread or its cancel eventfd is counted):
--   fds       every open fd by kind (readlink of /proc/self/fd: /dev/vfio/N groups and the
--             container, anon_inode:[vfio-device], anon_inode:[eventfd] (irqfds, VFIO's
--             request/error notices), anon_inode:kvm-*, sockets, pipes, files), counted
--             after a full collection; vfio_fds, the VFIO, KVM and eventfd kinds counted
--             before any collection: those must be closed at once, not by the collector
--   vfio_maps the VMM's mappings of VFIO device regions (/proc/self/maps)
--   locked    VmLck and VmPin (/proc/self/status): what the IOMMU pinned of guest RAM
--   slots     KVM memory slots (vm:memory(): RAM with its IOMMU mapping count, BAR maps)
--   ranges    handled MMIO/PIO ranges (vm:ranges(): trapped BAR pieces, host bridge...)
--   routes    KVM GSI routes (vm:routes())
--   irqfds    the GSI router's live vectors and INTx lines (each one irqfd) and GSIs taken
--   dma       every container's or IOAS's recorded DMA mappings (c:mappings()), and the
--             board's DMA and KVM-VFIO group bookkeeping
--   board     devices (host and guest address), seats, functions on bus 0, the root
--             port's state and device, release callbacks and names
--   control   devices device_add opened, removals under way, clients connected
--
-- #nested: Linux nested under KVM with pciehp (spec/run's lab-nested tier, the Debian 6.1
-- guest kernel: CONFIG_HOTPLUG_PCI_PCIE=y). Run it alone:
--   lab/run -- lua5.4 /usr/bin/busted -o plainTerminal --run=lab --tags=nested \
--     spec/lab/control_leaks_spec.lua
local lab = require "support.lab"
local linux = require "support.linux_guest"
local child = require "support.child"
local jsonlines = require "support.jsonlines"
local json = require "dkjson"
local unistd = require "posix.unistd"

-- The census, run inside the VMM by `eval` (its environment: board, vm, control and the
-- VMM's globals); it returns its findings as one JSON string.
local CENSUS = [==[
local json = require "dkjson"
local dirent = require "posix.dirent"
local unistd = require "posix.unistd"
local function sorted(t) table.sort(t) return t end
local function count(t) local n = 0 for _ in pairs(t or {}) do n = n + 1 end return n end
-- every open fd by kind: socket and pipe inodes and anonymous names left out
local function fds(only)
   local kinds = {}
   for _, name in ipairs(dirent.dir("/proc/self/fd")) do
      local target = name:match("^%d+$") and unistd.readlink("/proc/self/fd/" .. name)
      if target then   -- nil: the fd dirent.dir listed the directory through, closed since
         local kind = target:match("^(socket):") or target:match("^(pipe):") or target
         if not only or kind:find("vfio", 1, true) or kind:find("kvm", 1, true)
            or kind:find("eventfd", 1, true) or kind:find("iommu", 1, true) then
            kinds[kind] = (kinds[kind] or 0) + 1
         end
      end
   end
   return kinds
end
local out = { vfio_fds = fds(true) }
collectgarbage("collect")
collectgarbage("collect")
out.fds = fds(false)
local maps = {}
local f = assert(io.open("/proc/self/maps"))
for line in f:lines() do
   local path = line:match("^%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(.+)$")
   if path and (path:find("vfio-device", 1, true) or path:find("/dev/vfio/", 1, true)) then
      maps[path] = (maps[path] or 0) + 1
   end
end
f:close()
out.vfio_maps = maps
f = assert(io.open("/proc/self/status"))
local status = f:read("a")
f:close()
out.locked = { VmLck = status:match("VmLck:%s*(%d+)"), VmPin = status:match("VmPin:%s*(%d+)") }
local slots = {}
for _, s in ipairs(vm:memory()) do
   slots[#slots + 1] = ("%s %#x+%#x dma %s"):format(s.ram and "ram" or s.readonly and "ro" or "map",
      s.gpa, s.size, tostring(s.dma))
end
out.slots = sorted(slots)
local ranges = {}
for _, r in ipairs(vm:ranges()) do ranges[#ranges + 1] = ("%s %#x+%#x"):format(r.space, r.base, r.size) end
out.ranges = sorted(ranges)
local routes = {}
for _, r in ipairs(vm:routes()) do routes[#routes + 1] = ("%d %s"):format(r.gsi, r.type) end
out.routes = sorted(routes)
local irqfds = {}
for _, v in ipairs(board.router:vectors()) do
   irqfds[#irqfds + 1] = ("%d %s %s"):format(v.gsi, v.kind, v.irqfd and "open" or "closed")
end
out.irqfds = irqfds
out.gsis_taken = count(board.router.used)
-- the containers (or IOASes) the board mapped guest RAM in, and every device's
local containers = {}
for c in pairs(board.dma) do containers[c] = true end
for _, d in ipairs(board.devices) do
   local c = d:dma_container()
   if c then containers[c] = true end
end
local dma = {}
for c in pairs(containers) do
   local list = {}
   for _, m in ipairs(c:mappings()) do list[#list + 1] = ("%#x+%#x %s"):format(m.iova, m.size, m.source) end
   dma[tostring(c)] = list
end
out.dma = dma
out.board_dma = count(board.dma)
local groups = 0
for _, added in pairs(board.groups) do if added then groups = groups + 1 end end
out.kvm_vfio_groups = groups
local devices = {}
for _, d in ipairs(board.devices) do
   local at = board:where(d)
   devices[#devices + 1] = ("%s at %02x:%02x.%d"):format(tostring(d:host_bdf()), at.bus, at.slot, at.fn)
end
local ports = {}
for _, p in ipairs(board.ports) do
   ports[#ports + 1] = ("%d %s %s"):format(p.index, p.state, p.device and tostring(p.device:host_bdf()) or "-")
end
out.board = { devices = sorted(devices), seats = count(board.seats), functions = count(board.by_devfn),
              ports = ports, on_release = count(board.on_release), names = count(board.names) }
out.control = { opened = count(control.opened), removing = count(control.removing),
                clients = #control.server.clients }
return json.encode(out)
]==]

-- A Lua pattern matching s literally.
local function lit(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

local function deep_equal(a, b)
   if type(a) ~= "table" or type(b) ~= "table" then return a == b end
   for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
   for k in pairs(b) do if a[k] == nil then return false end end
   return true
end

-- Why the guest kernel cannot do this, or nil: its pciehp is not built (its config beside
-- the image says so; a kernel without a config file is tried).
local function no_pciehp()
   local dir, ver = linux.kernel():match("^(.*)/vmlinuz%-(.*)$")
   local f = dir and io.open(dir .. "/config-" .. ver)
   if not f then return nil end
   local config = f:read("a")
   f:close()
   if not config:find("\nCONFIG_HOTPLUG_PCI_PCIE=y", 1, true) then
      return ("the guest kernel %s has no pciehp (CONFIG_HOTPLUG_PCI_PCIE unset)"):format(ver)
   end
end

describe("the control socket's bad inputs leave nothing behind #nested", function()
   local vm, conn, conn2
   after_each(function()
      if conn2 then conn2.close() conn2 = nil end
      if conn then conn.close() conn = nil end
      if vm then vm.stop() vm = nil end
   end)

   it("every bad device_add and device_del is a clear error and leaves the VMM's fds, slots, "
      .. "ranges, DMA mappings and irqfds as they were", function()
      assert.is_true(lab.inside, "run me with lab/run")
      local why = no_pciehp()
      if why then pending(why) return end
      collectgarbage(); collectgarbage()   -- devices other specs left to the GC closed
      local edu, nvme, e1000e = lab.need("edu").bdf, lab.need("nvme").bdf, lab.need("e1000e").bdf
      local img = linux.initramfs("--run spec/support/hotplug_guest.sh")
      -- hp-cycles: more than this spec makes, so the guest stays up until `quit`
      vm = child.spawn("lua5.4", function(dir)
         return { "passthrough.lua", "--kernel", linux.kernel(), "--initrd", img,
                  "--append", "quiet hp-slots=1 hp-cycles=99", "--device", edu,
                  "--hotplug-slots", "1", "--control", dir .. "/ctl.sock", "--timeout", "900" } end)
      vm.name = "passthrough.lua"
      local path = vm.dir .. "/ctl.sock"
      local function alive() return not vm.status() end
      conn = jsonlines.connect(path, { alive = alive })

      local function tail() return "\n" .. vm.output():sub(-4000) end
      -- the guest's console says `line` (a Lua pattern) within `seconds`
      local function guest_says(pattern, what, seconds)
         child.wait_for(vm, what, function()
            for l in vm.output():gmatch("[^\r\n]+") do if l:match(pattern) then return true end end
         end, seconds)
      end
      local function census()
         local v = conn.request({ cmd = "eval", code = CENSUS }, 120)
         assert.is_true(v.ok, "census: " .. tostring(v.error))
         return assert(json.decode(v.result.values[1]))
      end
      -- The census, once two taken a second apart agree (what the guest still does after a
      -- step, binding a driver or enabling its vectors, has settled).
      local function settled(what)
         local last = census()
         for _ = 1, 30 do
            child.sleep(1)
            local now = census()
            if deep_equal(now, last) then return now end
            last = now
         end
         error(what .. ": the VMM's resources never settled:\n" .. json.encode(last, { indent = true }))
      end
      -- The census equals `want` (retried a while: a client's close or a release is seen at
      -- the VMM's next service round), else the difference is shown.
      local function unchanged(want, what)
         local got
         for _ = 1, 20 do
            got = census()
            if deep_equal(got, want) then return end
            child.sleep(0.5)
         end
         assert.are.same(want, got, what .. ": the VMM's resources are not what they were")
      end
      local function request(t)
         local v = conn.request(t, 60)
         assert.is_table(v, "no reply")
         return v
      end
      -- a request that must fail with a message matching `pattern` (anchored), leaving
      -- the census as `want`
      local function refused(t, pattern, want, what)
         local v = request(t)
         assert.is_false(v.ok, what .. ": accepted\n" .. json.encode(v))
         assert.matches("^" .. pattern .. "$", v.error, what)
         unchanged(want, what)
      end

      -- the baseline: edu at 00:04.0, the slot empty, the guest's pciehp watching it
      guest_says("^hp: ready 1$", "the guest's hot-plug slot", 300)
      local info = request { cmd = "info" }
      assert.is_true(info.ok, info.error)
      assert.are.same({ true, 1, edu, "00:04.0" }, { info.result.hotplug, #info.result.devices,
         info.result.devices[1].host, info.result.devices[1].guest })
      local base = settled("the baseline")
      -- what the census sees, so a census that counts nothing cannot pass
      assert.are.same({ edu .. " at 00:04.0" }, base.board.devices)
      assert.are.same({ "0 empty -" }, base.board.ports)
      assert.is_true((base.fds["anon_inode:kvm-vm"] or 0) == 1, json.encode(base.fds))
      local device_fds = 0
      for kind, n in pairs(base.vfio_fds) do
         if kind:find("vfio-device", 1, true) or kind:match("^/dev/vfio/devices/") then device_fds = device_fds + n end
      end
      assert.is_true(device_fds >= 1, "edu's VFIO device fd: " .. json.encode(base.vfio_fds))
      assert.is_true(#base.slots >= 1 and #base.ranges >= 1, json.encode(base))
      local ram_dma = 0
      for _, s in ipairs(base.slots) do
         if s:match("^ram ") then ram_dma = ram_dma + tonumber(s:match("dma (%d+)$")) end
      end
      assert.is_true(ram_dma >= 1, "guest RAM is not mapped for DMA: " .. json.encode(base.slots))
      assert.are.same({ opened = 0, removing = 0, clients = 1 }, base.control)

      -- bad input on the machine with its slot empty
      refused({ cmd = "device_add", device = "0000:00:1f.7" },
         lit("device_add: cannot open 0000:00:1f.7: open 0000:00:1f.7: no such PCI device "
            .. "(/sys/bus/pci/devices/0000:00:1f.7 does not exist) (ENOENT)"), base, "device_add of 00:1f.7")
      refused({ cmd = "device_add", device = "0000:00:00.0" },
         lit("device_add: cannot open 0000:00:00.0: open 0000:00:00.0: ") .. ".*" .. lit("(ENODEV)"),
         base, "device_add of the host bridge (not vfio-pci's)")
      refused({ cmd = "device_add", device = edu },
         lit(("device_add: %s is already in the VM (guest 00:04.0)"):format(edu)), base,
         "device_add of the boot device")
      refused({ cmd = "device_add", device = nvme, slot = 2 },
         lit(("device_add: %s: root port 1 is not an empty hot-plug slot"):format(nvme)), base,
         "device_add into slot 2 of 1 (the device opened, then closed)")
      refused({ cmd = "device_del", device = "0000:00:1f.7" },
         lit("device_del: no device 0000:00:1f.7 in the VM (info lists them)"), base, "device_del of an unknown id")
      refused({ cmd = "device_del", device = edu },
         lit(("device_del: %s: that device is not behind a root port"):format(edu)), base,
         "device_del of the boot device")

      -- two clients race to add nvme: both requests are sent before either reply is read
      conn2 = jsonlines.connect(path, { alive = alive })
      local line = json.encode { id = "race", cmd = "device_add", device = nvme, slot = 1 } .. "\n"
      assert.are.equal(#line, unistd.write(conn.fd, line))
      assert.are.equal(#line, unistd.write(conn2.fd, line))
      local r1, r2 = conn.line(60), conn2.line(60)
      assert.is_table(r1, "no reply to the first client" .. tail())
      assert.is_table(r2, "no reply to the second client" .. tail())
      assert.are.same({ "race", "race" }, { r1.id, r2.id })
      assert.are_not.equal(r1.ok, r2.ok, "one add wins, one is refused: " .. json.encode { r1, r2 })
      local won, lost = r1.ok and r1 or r2, r1.ok and r2 or r1
      assert.are.same({ nvme, "01:00.0", 0 }, { won.result.host, won.result.guest, won.result.port })
      assert.matches("^" .. lit(("device_add: %s is already in the VM (guest 01:00.0)"):format(nvme)) .. "$",
         lost.error)
      for _, c in ipairs { conn, conn2 } do
         assert.is_table(c.event(function(e) return e.event == "device_added" and e.host == nvme end, 10),
            "a client heard no device_added")
      end
      conn2.close()
      conn2 = nil
      guest_says("^hp: checked 1 1$", "the guest's nvme in slot 1 (its driver, the lab disk's sectors)", 120)
      local full = settled("nvme in the slot")
      assert.are.same({ opened = 1, removing = 0, clients = 1 }, full.control)
      assert.are.same({ "0 on " .. nvme }, full.board.ports)
      assert.is_true(#full.irqfds > #base.irqfds, "nvme's vectors: " .. json.encode(full.irqfds))

      -- the machine is full
      refused({ cmd = "device_add", device = e1000e },
         lit(("device_add: %s: no empty hot-plug slot (board.new{hotplug_slots = n}, --hotplug-slots N)")
            :format(e1000e)), full, "device_add into a full machine (the device opened, then closed)")
      refused({ cmd = "device_add", device = nvme },
         lit(("device_add: %s is already in the VM (guest 01:00.0)"):format(nvme)), full, "device_add of nvme again")
      refused({ cmd = "device_add", device = edu },
         lit(("device_add: %s is already in the VM (guest 00:04.0)"):format(edu)), full,
         "device_add of the boot device into a full machine")

      -- device_del, and while the guest removes the device (pciehp waits 5 s after the
      -- button before it acts), a second device_del and adds into its slot
      local del = request { cmd = "device_del", device = nvme }
      assert.is_true(del.ok, del.error)
      assert.are.same({ nvme, "01:00.0", true }, { del.result.host, del.result.guest, del.result.removing })
      local while_removing = {
         { { cmd = "device_del", device = nvme },
           lit(("device_del: %s is already being removed: the guest has not given it back yet "
              .. "(event device_removed when it has)"):format(nvme)) },
         { { cmd = "device_add", device = e1000e, slot = 1 },
           lit(("device_add: %s: root port 0 is not an empty hot-plug slot"):format(e1000e)) },
         { { cmd = "device_add", device = e1000e },
           lit(("device_add: %s: no empty hot-plug slot (board.new{hotplug_slots = n}, --hotplug-slots N)")
              :format(e1000e)) },
         { { cmd = "device_add", device = nvme, slot = 1 },
           lit(("device_add: %s is already in the VM (guest 01:00.0)"):format(nvme)) },
      }
      for _, case in ipairs(while_removing) do
         local v = request(case[1])
         assert.is_false(v.ok, json.encode(case[1]) .. " while removing: accepted")
         assert.matches("^" .. case[2] .. "$", v.error)
      end
      local mid = census()
      assert.are.same({ "0 removing " .. nvme }, mid.board.ports, "the removal was over too soon for this spec")
      assert.are.same({ opened = 1, removing = 1, clients = 1 }, mid.control)
      local gone = conn.event(function(e) return e.event == "device_removed" and e.host == nvme end, 60)
      assert.is_table(gone, "no device_removed for nvme" .. tail())
      assert.is_false(gone.surprise, "nvme was removed by surprise: the guest did not power its slot off")
      guest_says("^hp: removed 1 1 ", "the guest's removal of nvme", 60)
      refused({ cmd = "device_del", device = nvme },
         lit(("device_del: no device %s in the VM (info lists them)"):format(nvme)), base,
         "device_del after the removal (and everything given back)")
      unchanged(base, "after the bad inputs and the removal")

      -- a clean cycle, the guest's pciehp doing the removal, ends where it began
      local add = request { cmd = "device_add", device = nvme }
      assert.is_true(add.ok, add.error)
      guest_says("^hp: checked 1 2$", "the guest's nvme in slot 1 again", 120)
      settled("nvme in the slot again")
      del = request { cmd = "device_del", device = nvme }
      assert.is_true(del.ok, del.error)
      gone = conn.event(function(e) return e.event == "device_removed" and e.host == nvme end, 60)
      assert.is_table(gone, "no device_removed for nvme's second removal" .. tail())
      assert.is_false(gone.surprise)
      guest_says("^hp: removed 1 2 ", "the guest's second removal of nvme", 60)
      unchanged(base, "after a clean add/remove cycle")

      -- quit: the VMM ends well, and the host has every device back (none held open)
      local q = request { cmd = "quit" }
      assert.is_true(q.ok, q.error)
      local stopped = conn.event("guest_stopped", 60)
      assert.are.same({ "quit", 0 }, { stopped and stopped.result, stopped and stopped.status }, tail())
      child.wait_for(vm, "the VMM's exit", function() return vm.status() end, 60)
      assert.are.equal(0, vm.status(), tail())
      local vfio = require "vfio"
      for _, bdf in ipairs { edu, nvme, e1000e } do
         local d = assert(vfio.open(bdf))
         d:close()
      end
   end)
end)
