-- A Linux guest's own drivers as the judge of bin/vfio-user-serve serving the lab's
-- devices: QEMU 11.1's vfio-user client (spec/support/qemu_vfio_user.lua's start_guest,
-- under KVM when the lab guest has /dev/kvm, TCG otherwise) boots the lab's kernel with
-- three vfio-user-pci functions, each from its own server:
--   00:04.0  a recording of the lab's nvme (vfio.record, made here), left without a
--            driver (luavfio.unbound=, spec/support/user_guest_init.sh)
--   00:05.0  the lab's nvme itself: the guest's nvme driver binds and reads the lab
--            disk's pattern, completions on MSI-X
--   00:06.0  the lab's e1000e: e1000e binds, its MSI-X vectors are allocated
-- and the same image under lab/oracle (Debian's QEMU with its own vfio-pci passing the
-- real nvme through at 00:04.0, unbound the same way) is the reference for the
-- recording: the guest's `lspci -vvv` of 00:04.0 is the same in both, once what depends
-- on where the guest's firmware put things is taken out (see comparable()).
local lab = require "support.lab"
local linux = require "support.linux_guest"
local qvu = require "support.qemu_vfio_user"
local us = require "support.user_server"
local child = require "support.child"
local stat = require "posix.sys.stat"

local UNBOUND = "0000:00:04.0"

-- The image both VMMs boot: the nvme and e1000e modules, lspci, the usual checks.
local function initrd()
   return linux.initramfs("--modules 'nvme e1000e' --init spec/support/user_guest_init.sh"
      .. " --file " .. linux.CHECKS .. ":/bin/guest_checks --bin /usr/bin/lspci")
end

-- The console's report: linux_guest.parse's, plus the PCI functions by address (two
-- nvme functions share an ID here) and each function's lspci -vvv text.
local function report(out)
   local r = linux.parse(out)
   r.by_bdf, r.lspci = {}, {}
   for line in out:gmatch("[^\r\n]+") do
      local bdf, id, class, drv = line:match("^pci (%S+) (%x+:%x+) (%S+) (%S+)$")
      if bdf then r.by_bdf[bdf] = { id = id, class = class, driver = drv } end
   end
   for bdf, text in out:gsub("\r", ""):gmatch("\nlspci%-begin (%S+)\n(.-)\nlspci%-end") do
      r.lspci[bdf] = text
   end
   return r
end

-- lspci -vvv text less what the guest's assignment decides, not the device or the VMM:
-- BAR and ROM addresses (each VMM's firmware packs the BARs of its own set of devices;
-- the sizes and flags stay), and the IRQ number INTx is routed to (ACPI's choice; the
-- pin stays). The driver lines are absent (no driver, no modules.alias in the image).
-- Everything else is config space as the VMM shows it: IDs, command and status,
-- capabilities and their registers.
local function comparable(text)
   local lines = {}
   for line in text:gmatch("[^\n]+") do
      line = line:gsub("(Memory at )%x+", "%1<addr>"):gsub("(I/O ports at )%x+", "%1<addr>")
         :gsub("(Expansion ROM at )%x+", "%1<addr>"):gsub("(routed to IRQ )%d+", "%1<n>")
      lines[#lines + 1] = line
   end
   return lines
end

local function diff(want, got)
   local out = {}
   for i = 1, math.max(#want, #got) do
      if want[i] ~= got[i] then
         out[#out + 1] = ("line %d:\n  vfio-pci:  %s\n  vfio-user: %s"):format(i, tostring(want[i]),
            tostring(got[i]))
      end
   end
   return table.concat(out, "\n")
end

local function count(t, pattern)
   local n = 0
   for name in pairs(t) do if name:match(pattern) then n = n + 1 end end
   return n
end

describe("a Linux guest of QEMU 11.1's vfio-user client, lab devices served by vfio-user-serve #nested", function()
   local root, why = qvu.available()
   if not root then
      -- lab/setup unpacks it: inside the lab its absence is a failure, not a skip
      it("has QEMU's vfio-user client in the cache", function() error(why) end)
      return
   end

   local out, r, image, record_path
   lazy_setup(function()
      assert(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()
      local nvme, e1000e = lab.need("nvme"), lab.need("e1000e")
      image = initrd()
      -- the recording first: the device is free again before its server opens it
      local placeholder = os.tmpname()
      os.remove(placeholder)
      record_path = placeholder .. ".lua"             -- a .lua recording, as vfio-user-serve expects
      do
         local vfio = require "vfio"
         local dev = assert(vfio.open(nvme.bdf))
         local ok, err = require("vfio.record").record(dev, record_path, { name = "nvme" })
         dev:close()
         assert(ok, err)
      end
      local servers = { us.start(record_path), us.start(nvme.bdf), us.start(e1000e.bdf) }
      local g
      local ok, err = pcall(function()
         local kvm = stat.stat("/dev/kvm") ~= nil
         g = assert(qvu.start_guest {
            kernel = linux.kernel(), initrd = image, accel = kvm and "kvm" or "tcg", memory = "256M",
            append = "luavfio.unbound=" .. UNBOUND,
            devices = { qvu.vfio_user_device(servers[1].socket, "04.0"),
                        qvu.vfio_user_device(servers[2].socket, "05.0"),
                        qvu.vfio_user_device(servers[3].socket, "06.0") },
         })
         child.wait_for(g, "the guest's power-off", function()
            return g.output():find("reboot: Power down") or g.status()
         end, kvm and 420 or 900)
      end)
      out = g and g.output():gsub("\r", "") or ""
      if g then g.stop() end
      local logs = {}
      for i, srv in ipairs(servers) do
         srv.stop()
         logs[#logs + 1] = ("server %d:\n%s"):format(i, srv.output():sub(-1500))
      end
      assert(ok, tostring(err) .. "\n" .. out:sub(-4000) .. "\n" .. table.concat(logs, "\n"))
      r = report(out)
   end)
   lazy_teardown(function()
      if record_path then os.remove(record_path) end
   end)

   it("boots to the end of its checks with the three functions where they were put", function()
      assert.is_true(r.init, "the guest never reached /init:\n" .. out)
      assert.are.equal(0, r.checks_exit, out)
      assert.matches("guest: " .. UNBOUND .. " left unbound", out, 1, true)
      assert.are.same({ id = "1b36:0010", class = "0x010802", driver = "none" }, r.by_bdf[UNBOUND], out)
   end)

   it("binds nvme to the served nvme, which reads the lab disk's pattern with MSI-X completions", function()
      assert.are.equal("nvme", (r.by_bdf["0000:00:05.0"] or {}).driver, out)
      for _, s in ipairs { 0, 1234, 16383 } do assert.are.equal("ok", r.reads[s], "sector " .. s .. ":\n" .. out) end
      assert.is_true(linux.irq_total(r, "^nvme0q%d+$") > 0, out)
      assert.matches("MSI%-X: Enable%+", r.lspci["0000:00:05.0"] or "", 1, false, out)
   end)

   it("binds e1000e to the served e1000e, its MSI-X vectors allocated", function()
      assert.are.equal("e1000e", (r.by_bdf["0000:00:06.0"] or {}).driver, out)
      assert.matches("MSI%-X: Enable%+", r.lspci["0000:00:06.0"] or "", 1, false, out)
      -- e1000e under MSI-X: rx, tx and the other-causes vector, each a handler
      assert.is_true(count(r.irqs, "^eth%d") + count(r.irqs, "^enp") >= 3, out)
   end)

   it("shows the guest the recording as QEMU's own vfio-pci shows it the real nvme (lspci -vvv)", function()
      local ours = assert(r.lspci[UNBOUND], "no lspci of " .. UNBOUND .. ":\n" .. out)
      local nvme = lab.need("nvme")
      local oracle_out, code = require("support.shell").run(("lab/oracle --linux --initrd %s --timeout 240"
         .. " --append luavfio.unbound=%s %s"):format(image, UNBOUND, nvme.bdf))
      assert.are.equal(0, code, oracle_out)
      local o = report(oracle_out)
      assert.are.equal("none", (o.by_bdf[UNBOUND] or {}).driver, oracle_out)
      local theirs = assert(o.lspci[UNBOUND], "no lspci in the oracle's guest:\n" .. oracle_out)
      local want, got = comparable(theirs), comparable(ours)
      assert.is_true(#want >= 8, theirs)                      -- a real -vvv listing, capabilities too
      assert.matches("Capabilities: ", theirs, 1, true)
      assert.are.equal("", diff(want, got), ("\nvfio-pci:\n%s\nvfio-user:\n%s"):format(theirs, ours))
   end)
end)

describe("examples/guest under QEMU 11.1's vfio-user client, the lab's edu served #nested", function()
   local guest = require "support.guest"
   if not qvu.available() then return end   -- the describe above reports it

   it("passes every edu test, one INTx for one raise (the unmask waits for the guest's posted ack)", function()
      assert(lab.inside, "run me with lab/run")
      assert(io.open(guest.ELF), guest.ELF .. " missing")
      local edu = lab.need("edu")
      local srv = us.start(edu.bdf)
      local kvm = stat.stat("/dev/kvm") ~= nil
      local g
      local ok, err = pcall(function()
         g = assert(qvu.start_guest { kernel = guest.ELF, debugcon = true, memory = "128M",
                                      accel = kvm and "kvm" or "tcg",
                                      devices = { qvu.vfio_user_device(srv.socket, "03.0") } })
         child.wait_for(g, "examples/guest to finish", function() return g.status() end, 180)
      end)
      local dbg = g and g.debug_output() or ""
      local log = g and g.output() or ""
      if g then g.stop() end
      srv.stop()
      local all = ("%s\nQEMU:\n%s\nserver:\n%s"):format(dbg, log:sub(-2000), srv.output():sub(-3000))
      assert(ok, tostring(err) .. "\n" .. all)
      local r = guest.parse(dbg)
      for _, t in ipairs(guest.EDU_TESTS) do assert.are.equal("PASS", r.tests[t], t .. ":\n" .. all) end
      assert.matches("TEST intx PASS line %d+ count 1 ", dbg, 1, false, all)
      assert.are.equal("PASS", r.result, all)
      -- edu has no reset the kernel can do: the server does not offer one, so QEMU asks none
      assert.not_matches("device_reset id %d+ refused", srv.output(), 1, false, all)
      assert.not_matches("reset reply error", log, 1, true, all)
   end)
end)
