-- The host taking a device back, in the lab: VFIO's request interrupt when the device is
-- unbound from vfio-pci, the unbind waiting for every fd of the device, and the VMM's
-- answer (a device in a hot-plug slot leaves the running guest, so the unbind returns;
-- one with no slot stays with the guest until the run ends). The error interrupt's
-- registration is checked here; AER injection needs the lab VM's QEMU monitor, from
-- outside the lab: spec/host/lab_aer_spec.lua.
local lab = require "support.lab"
local vfio = require "vfio"
local reclaim = require "vfio.vmm.reclaim"
local hotplug = require "vfio.vmm.hotplug"
local unistd = require "posix.unistd"
local ppoll = require "posix.poll"

local function readfile(path)
   local f = io.open(path)
   if not f then return nil end
   local s = f:read("a")
   f:close()
   return s
end

-- Poll pred() once a second until it is true or `seconds` have passed.
local function wait_for(pred, seconds)
   for _ = 0, seconds do
      local v = pred()
      if v then return v end
      unistd.sleep(1)
   end
   return nil
end

-- Unbind bdf from vfio-pci in a background shell: the write blocks in the kernel until
-- every fd of the device is closed. `done` then holds "STATUS MILLISECONDS".
local function unbind_in_background(bdf, done)
   assert(os.execute(("(s=$(date +%%s%%N); echo %s > /sys/bus/pci/drivers/vfio-pci/unbind; "
      .. "r=$?; echo \"$r $(( ($(date +%%s%%N) - s) / 1000000 ))\" > %s.tmp; mv %s.tmp %s) "
      .. "</dev/null >/dev/null 2>&1 &"):format(bdf, done, done, done, done)))
end

-- Back to vfio-pci for the specs after this one: lab/init's driver_override still names it.
local function rebind(bdf)
   if vfio.driver_of(bdf) == "vfio-pci" then return end
   local f = io.open("/sys/bus/pci/drivers_probe", "w")
   if f then
      f:write(bdf)
      f:close()
   end
end

local function status_of(done)
   local s = readfile(done)
   return s and tonumber(s:match("^(%d+)")), s and tonumber(s:match("^%d+ (%d+)"))
end

describe("VFIO's request interrupt: the host wants a device back", function()
   it("reaches every holder; the unbind waits for their fds and completes once closed", function()
      assert.is_true(lab.inside, "run me with lab/run")
      -- a device another spec left to the collector would hold the unbind too
      collectgarbage(); collectgarbage()
      local bdf = lab.need("edu").bdf
      local done = os.tmpname()
      os.remove(done)
      local started = false
      local dev = assert(vfio.open(bdf))
      local other = assert(vfio.open(bdf))   -- a second holder of the same device
      finally(function()
         dev:close()
         other:close()
         if started then wait_for(function() return readfile(done) end, 30) end
         rebind(bdf)
         os.remove(done)
      end)
      local efd = assert(dev:request_eventfd())
      assert.are.equal(efd, other:request_eventfd(), "one registration per device")
      assert.are.equal(efd, dev:notifier("request"))
      assert.are.same({}, dev:notices())
      unbind_in_background(bdf, done)
      started = true
      -- the kernel asks at once, then every 10 s while the unbind waits
      assert.are.equal(1, ppoll.rpoll(efd:fileno(), 10000), "no request within 10 s of the unbind")
      assert.is_true((dev:notices().request or 0) >= 1)
      assert.is_true((other:notices().request or 0) >= 1, "the second holder did not learn of it")
      assert.are.same({}, dev:notices(), "a notice is reported once")
      unistd.sleep(2)
      assert.is_nil(readfile(done), "the unbind returned while the device was open")
      -- (its sysfs driver link is gone already: the kernel drops it before vfio-pci's
      -- remove, which is what waits for the fds)
      dev:close()
      unistd.sleep(1)
      assert.is_nil(readfile(done), "the unbind returned while a holder had it open")
      other:close()
      assert.is_truthy(wait_for(function() return readfile(done) end, 10),
         "the unbind did not return within 10 s of the last close")
      assert.are.equal(0, (status_of(done)))
      assert.is_nil(vfio.driver_of(bdf))
      rebind(bdf)
      assert.are.equal("vfio-pci", vfio.driver_of(bdf))
   end)

   it("has an error interrupt on a PCI Express function; says when a device has none", function()
      assert.is_true(lab.inside, "run me with lab/run")
      for _, name in ipairs { "edu", "virtio-net-pci", "e1000e" } do
         local bdf = lab.need(name).bdf
         local dev <close> = assert(vfio.open(bdf))
         local info = dev:irq_info(vfio.IRQ.ERR)
         local efd, err, errno = dev:error_eventfd()
         if info and info.count > 0 then
            assert.is_not_nil(efd, err)
            assert.are.same({}, dev:notices())
         else   -- a conventional PCI function (edu): count 0, or EINVAL before Linux 6.x
            assert.is_nil(efd)
            assert.are.equal(95, errno)
            assert.matches("^error interrupt of " .. bdf:gsub("%p", "%%%0")
               .. ": the device has none %(VFIO_PCI_ERR_IRQ_INDEX: count 0%)", err)
         end
         local ok, e = pcall(dev.notifier, dev, "bogus")
         assert.is_false(ok)
         assert.matches("bad argument #1 to 'notifier' %(\"request\" or \"error\" expected", e)
      end
      -- virtio-net behind its root port is a PCI Express endpoint: it has one
      local dev <close> = assert(vfio.open(lab.need("virtio-net-pci").bdf))
      assert.is_not_nil(dev:error_eventfd())
   end)
end)

describe("the REPL and the host's request", function()
   it("says before its next prompt that the host wants an opened device back", function()
      assert.is_true(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()
      local poke = require "vfio.poke"
      local bdf = lab.need("edu").bdf
      local done = os.tmpname()
      os.remove(done)
      local started = false
      local env = poke.env()
      finally(function()
         local d = rawget(env, "d")
         if d then pcall(d.close, d) end
         if started then wait_for(function() return readfile(done) end, 30) end
         rebind(bdf)
         os.remove(done)
      end)
      local lines = { ("d = open(%q)"):format(bdf), "x = 1", "d:close()" }
      local i, shown = 0, {}
      poke.repl { env = env, tty = false, readline = false, banner = false,
                  out = function(text) shown[#shown + 1] = text end,
                  input = function()
                     i = i + 1
                     if i == 2 then   -- the host asks while the user types
                        unbind_in_background(bdf, done)
                        started = true
                        unistd.sleep(1)
                     end
                     return lines[i]
                  end }
      local text = table.concat(shown)
      assert.matches("poke: the host wants " .. bdf:gsub("%p", "%%%0") .. " back %(a driver "
         .. "unbind is waiting for it%): close it", text)
      -- said before the third prompt, after the second line ran
      assert.are.equal(4, i)
      assert.is_truthy(wait_for(function() return readfile(done) end, 10),
         "the unbind did not return once the REPL closed the device")
      assert.are.equal(0, (status_of(done)))
   end)
end)

describe("the VMM giving a device back while a Linux guest runs #nested", function()
   it("unplugs the device in a hot-plug slot, keeps the one with none and runs on", function()
      assert.is_true(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()   -- the VMM opens them: nothing here may hold them
      local linux = require "support.linux_guest"
      local virtio, edu = lab.need("virtio-net-pci").bdf, lab.need("edu").bdf
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir))
      local out, err, rc = dir .. "/out", dir .. "/err", dir .. "/rc"
      local vdone, edone = dir .. "/virtio.done", dir .. "/edu.done"
      local started = false
      local initrd = linux.initramfs("--run spec/support/reclaim_guest.sh")
      finally(function()
         -- the VMM gone (its --timeout at the latest), every unbind returned, both back
         wait_for(function() return readfile(rc) end, 330)
         if started then
            wait_for(function() return readfile(vdone) and readfile(edone) end, 30)
         end
         rebind(virtio)
         rebind(edu)
         os.execute("rm -rf " .. dir)
      end)
      assert(os.execute(("(lua5.4 passthrough.lua --kernel %s --initrd %s --timeout 300 "
         .. "--device %s,port=on --device %s > %s 2> %s; echo $? > %s) </dev/null >/dev/null "
         .. "2>&1 &"):format(linux.kernel(), initrd, virtio, edu, out, err, rc)))
      assert.is_truthy(wait_for(function()
         return (readfile(out) or ""):find("guest: ready", 1, true) or readfile(rc)
      end, 280), "the guest never got ready")
      local text = readfile(out)
      assert.matches("guest: ready", text, "the VMM ended first:\n" .. text .. (readfile(err) or ""))
      assert.matches("guest: virtio %S+ driver virtio%-pci%s", text)   -- the console ends lines with \r\n
      unbind_in_background(virtio, vdone)
      unbind_in_background(edu, edone)
      started = true
      -- the guest's pciehp powers the slot off 5 s after the button; the VMM releases the
      -- device then, closing every fd of it, and the host's unbind returns
      assert.is_truthy(wait_for(function() return readfile(vdone) end, 60),
         "the unbind of the device in the slot did not return within 60 s:\n"
         .. (readfile(out) or "") .. (readfile(err) or ""))
      local status, ms = status_of(vdone)
      assert.are.equal(0, status)
      assert.is_true(ms < 60000, ms)
      -- the one with no slot stays with the guest: its unbind waits while the VMM runs
      assert.is_nil(readfile(rc), "the VMM ended with the device's release")
      assert.is_nil(readfile(edone), "the unbind of the device with no slot returned while "
         .. "the VMM ran")
      assert.is_truthy(wait_for(function() return readfile(rc) end, 200), "the VMM did not end")
      text = readfile(out)
      local stderr = readfile(err)
      assert.matches("guest: virtio removed after %d+ s", text)
      assert.matches("guest: alive after removal", text)
      assert.are.equal("0", readfile(rc):match("%d+"), text .. stderr)
      assert.matches("guest poweroff", stderr)
      assert.matches(reclaim.UNPLUG:format(virtio, hotplug.REMOVE_TIMEOUT):gsub("%p", "%%%0"), stderr)
      local no_slot = reclaim.NO_SLOT:format(edu, edu):gsub("%p", "%%%0")
      assert.matches(no_slot, stderr)
      local _, n = stderr:gsub(no_slot, "")
      assert.are.equal(1, n, "the no-slot notice is said once per burst:\n" .. stderr)
      -- the VMM gone, the device with no slot goes too
      assert.is_truthy(wait_for(function() return readfile(edone) end, 20),
         "the unbind of the device with no slot did not return after the VMM ended")
      assert.are.equal(0, (status_of(edone)))
   end)
end)
