-- The control socket on a running Linux guest (passthrough.lua --kernel --control PATH,
-- the lab's nvme passed through): info names the device where the guest sees it with the
-- interrupt mode its driver chose, pause stops the guest's vCPUs (its once-a-second ticks
-- on the console stop) and resume starts them, device_add/device_del say there is no
-- hot-plug slot, vfio-poke --attach evaluates Lua inside the VMM, quit ends the run with
-- status 0 and a guest_stopped event; a guest that powers off by itself tells every
-- client so. The guest is spec/support/control_guest.sh in the lab's initramfs; it idles
-- in sleep between ticks, so the socket is heard while it sits in an in-kernel HLT.
local lab = require "support.lab"
local linux = require "support.linux_guest"
local json = require "dkjson"
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local ppoll = require "posix.poll"
local stat = require "posix.sys.stat"
local child = require "support.child"

local now, sleep = child.now, child.sleep

-- passthrough.lua in a child process of ours (spec/support/child.lua: stdin /dev/null,
-- no console; its output in a log file); vmm.status() is nil while it runs, then its
-- exit status; vmm.path is its control socket.
local function start(args)
   local vmm = child.spawn("lua5.4", function(dir)
      local argv = { "passthrough.lua", "--control", dir .. "/ctl.sock", "--timeout", "300" }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      return argv
   end)
   vmm.name = "VMM"
   vmm.path = vmm.dir .. "/ctl.sock"
   return vmm
end

-- Wait until pred() is true; an error with the VMM's output when it is not in time.
local wait_for = child.wait_for

-- A client of the socket: request() returns the reply, events are kept in order.
local function connect(vmm)
   -- a fresh socket for each try: the VMM makes its socket before the guest boots
   local fd = wait_for(vmm, "the control socket", function()
      local s = assert(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))
      if socket.connect(s, { family = socket.AF_UNIX, path = vmm.path }) then return s end
      unistd.close(s)
   end, 60)
   local c = { fd = fd, buf = "", events = {}, n = 0 }
   -- the next line, or nil after `seconds`
   function c.line(seconds)
      local t = now() + seconds
      while true do
         local nl = c.buf:find("\n", 1, true)
         if nl then
            local l = c.buf:sub(1, nl - 1)
            c.buf = c.buf:sub(nl + 1)
            return assert(json.decode(l), l)
         end
         local left = t - now()
         if left <= 0 then return nil end
         local r = ppoll.rpoll(fd, math.floor(left * 1000))
         if r == 1 then
            local data = socket.recv(fd, 65536)
            if not data or data == "" then return nil end
            c.buf = c.buf .. data
         end
      end
   end
   function c.request(t)
      c.n = c.n + 1
      t.id = c.n
      local s = json.encode(t) .. "\n"
      assert(unistd.write(fd, s) == #s)
      while true do
         local v = c.line(60)
         assert(v, "no reply to " .. t.cmd)
         if v.event then c.events[#c.events + 1] = v elseif v.id == t.id then return v end
      end
   end
   -- the next event named name (seconds to wait)
   function c.event(name, seconds)
      for i, e in ipairs(c.events) do
         if e.event == name then return table.remove(c.events, i) end
      end
      local t = now() + seconds
      while now() < t do
         local v = c.line(t - now())
         if not v then return nil end
         if v.event == name then return v end
         if v.event then c.events[#c.events + 1] = v end
      end
   end
   function c.close() unistd.close(fd) end
   return c
end

local function ticks(out)
   local n = 0
   for k in out:gmatch("guest: tick (%d+)") do n = math.max(n, tonumber(k)) end
   return n
end

describe("the control socket on a running Linux guest #onekernel", function()
   local vmm
   after_each(function() if vmm then vmm.stop() vmm = nil end end)

   it("info, pause and resume, no hot-plug slot, eval through vfio-poke --attach, quit", function()
      assert.is_true(lab.inside, "run me with lab/run")
      local nvme = lab.need("nvme")
      local img = linux.initramfs("--run spec/support/control_guest.sh")
      vmm = start { "--kernel", linux.kernel(), "--initrd", img, "--append", "quiet",
                    "--device", nvme.bdf }
      wait_for(vmm, "the guest's first tick", function() return ticks(vmm.output()) >= 1 end, 240)
      local c = connect(vmm)

      -- info: the machine, the device where the guest sees it, the mode its driver chose
      local info = c.request { cmd = "info" }
      assert.is_true(info.ok, info.error)
      assert.are.equal(1, info.result.vcpus)
      assert.is_true(info.result.ram.mib >= 64)
      assert.are.equal("running", info.result.state)
      assert.are.equal(1, #info.result.devices)
      local d = info.result.devices[1]
      assert.are.same({ nvme.bdf, "00:04.0", 4 }, { d.host, d.guest, d.slot })
      assert.is_true(#d.bars >= 1)
      -- nvme's driver moves to MSI-X once it probes (asynchronously: ask until it has)
      wait_for(vmm, "nvme on MSI-X", function()
         local r = c.request { cmd = "info" }
         return r.result.devices[1].irq.mode == "msix" and r
      end, 60)

      -- pause: no vCPU runs, so no tick; resume: ticks again
      local p = c.request { cmd = "pause" }
      assert.is_true(p.ok, p.error)
      assert.is_table(c.event("paused", 10))
      sleep(0.5)
      local n1 = ticks(vmm.output())
      sleep(3)
      assert.are.equal(n1, ticks(vmm.output()), "the guest ticked while paused")
      assert.are.equal("paused", c.request { cmd = "info" }.result.state)
      assert.is_true(c.request { cmd = "resume" }.ok)
      assert.is_table(c.event("resumed", 10))
      wait_for(vmm, "a tick after resume", function() return ticks(vmm.output()) > n1 end, 30)

      -- no hot-plug slot on this board: both directions say so, nothing changes
      local edu = lab.need("edu")
      local add = c.request { cmd = "device_add", device = edu.bdf }
      assert.is_false(add.ok)
      assert.matches("no hot%-plug slot", add.error)
      local del = c.request { cmd = "device_del", device = nvme.bdf }
      assert.is_false(del.ok)
      assert.matches("no hot%-plug slot", del.error)
      local again = c.request { cmd = "device_add", device = nvme.bdf }
      assert.matches("already in the VM %(guest 00:04.0%)", again.error)
      assert.matches("unknown command", c.request { cmd = "reboot" }.error)

      -- the REPL inside the VMM: the board, and the config space as the guest sees it
      local p2 = io.popen(("printf '%%s\\n' '= #board.devices' 'lspci(\"00:04.0\")' "
         .. "| bin/vfio-poke --attach %s 2>&1"):format(vmm.path))
      local out = p2:read("a")
      local ok = p2:close()
      assert.is_true(ok, out)
      assert.matches("\n1\n", out)
      assert.matches("00:04.0 Non%-Volatile memory controller", out)
      assert.matches("MSI%-X: Enable%+", out)   -- the guest's driver enabled it

      -- quit: the reply, then the event, then status 0 and the socket gone
      local q = c.request { cmd = "quit" }
      assert.is_true(q.ok, q.error)
      local stopped = c.event("guest_stopped", 60)
      assert.are.same({ "quit", 0 }, { stopped and stopped.result, stopped and stopped.status })
      c.close()
      wait_for(vmm, "the VMM's exit", function() return vmm.status() end, 60)
      assert.are.equal(0, vmm.status(), vmm.output():sub(-2000))
      assert.matches("guest stopped by the control socket %(quit%)", vmm.output())
      assert.is_nil(stat.lstat(vmm.path))
   end)

   it("tells its clients when the guest powers off", function()
      assert.is_true(lab.inside, "run me with lab/run")
      local nvme = lab.need("nvme")
      local img = linux.initramfs("--run spec/support/control_guest.sh")
      vmm = start { "--kernel", linux.kernel(), "--initrd", img, "--append", "quiet stop-after=15",
                    "--device", nvme.bdf }
      local c1, c2 = connect(vmm), connect(vmm)
      local e1 = c1.event("guest_stopped", 280)
      local e2 = c2.event("guest_stopped", 30)
      assert.is_table(e1, vmm.output():sub(-3000))
      assert.are.same({ "poweroff", 0 }, { e1.result, e1.status })
      assert.are.same({ "poweroff", 0 }, { e2 and e2.result, e2 and e2.status })
      assert.matches("guest: done ticking", vmm.output())
      c1.close()
      c2.close()
      wait_for(vmm, "the VMM's exit", function() return vmm.status() end, 60)
      assert.are.equal(0, vmm.status(), vmm.output():sub(-2000))
   end)
end)
