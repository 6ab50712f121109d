-- passthrough.lua in the lab: a KVM guest (examples/guest) drives a real device through
-- our VMM; the guest's own report is what is checked.
local lab = require "support.lab"
local guest = require "support.guest"

local function sh(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local _, _, code = p:close()
   return out, code
end

local function sysfs(bdf, file)
   local f = assert(io.open("/sys/bus/pci/devices/" .. bdf .. "/" .. file, "rb"))
   local s = f:read("a")
   f:close()
   return s
end

-- The device's own view from sysfs: IDs, class, BAR sizes and kinds, capability chains.
local function device_view(bdf)
   local cfg = sysfs(bdf, "config")
   local function rd(off, n) return (string.unpack("<I" .. n, cfg, off + 1)) end
   local v = { id = ("%04x:%04x"):format(rd(0, 2), rd(2, 2)), class = ("%06x"):format(rd(8, 4) >> 8),
               bars = {}, caps = {}, ecaps = {} }
   local i = 0
   for line in sysfs(bdf, "resource"):gmatch("[^\n]+") do
      local s, e, fl = line:match("(0x%x+) (0x%x+) (0x%x+)")
      s, e, fl = tonumber(s), tonumber(e), tonumber(fl)
      if i < 6 and e > 0 then
         local kind = (fl & 0x100) ~= 0 and "io" or (fl & 0x100000) ~= 0 and "mem64" or "mem32"
         v.bars[i] = { kind = kind, size = e - s + 1 }
      end
      i = i + 1
   end
   local off, n = rd(0x34, 1) & 0xfc, 0
   while off ~= 0 and n < 48 do
      v.caps[#v.caps + 1] = ("%02x@%02x"):format(rd(off, 1), off)
      off, n = rd(off + 1, 1) & 0xfc, n + 1
   end
   off, n = 0x100, 0
   while #cfg >= 4096 and off >= 0x100 and n < 64 do
      local h = rd(off, 4)
      if h == 0 or h == 0xffffffff then break end
      v.ecaps[#v.ecaps + 1] = ("%04x@%03x"):format(h & 0xffff, off)
      off, n = (h >> 20) & 0xffc, n + 1
   end
   return v
end

-- What the guest printed: ID, BAR and CAP/ECAP lines.
local function guest_view(out)
   local v = { bars = {}, caps = {}, ecaps = {} }
   v.id, v.class = out:match("\nID (%x+:%x+) class (%x+)")
   for i, kind, size in out:gmatch("\nBAR(%d) (%S+) 0x%x+ size 0x(%x+)") do
      v.bars[tonumber(i)] = { kind = kind, size = tonumber(size, 16) }
   end
   for id, off in out:gmatch("\nCAP (%x+) (%x+)") do v.caps[#v.caps + 1] = id .. "@" .. off end
   for id, off in out:gmatch("\nECAP (%x+) (%x+)") do v.ecaps[#v.ecaps + 1] = id .. "@" .. off end
   return v
end

describe("passthrough.lua in the lab", function()
   local edu = lab.device("edu")

   it("runs examples/guest on edu: id, liveness, factorial, MSI, INTx and DMA pass", function()
      local out, code = guest.ours(edu.bdf)
      local r = guest.parse(out)
      assert.are.equal("00:04.0 1234:11e8", r.found, out)
      for _, name in ipairs(guest.EDU_TESTS) do
         assert.are.equal("PASS", r.tests[name], name .. " in:\n" .. out)
      end
      for _, b in ipairs { "cfg_read", "bar_read", "msi_roundtrip" } do
         assert.is_true(r.bench[b] > 0, b)
      end
      assert.are.equal("PASS", r.result)
      assert.are.equal(0, code)
      assert.matches("guest pass %(exit code 0%)", out)
   end)

   it("gives the same result with every trapped access going through Lua (--trace)", function()
      local out, code = guest.ours(edu.bdf, "--trace")
      local r = guest.parse(out)
      for _, name in ipairs(guest.EDU_TESTS) do
         assert.are.equal("PASS", r.tests[name], name)
      end
      assert.are.equal(0, code)
      -- config accesses, BAR accesses (the edu id at BAR0+0) and events are logged
      assert.matches("trace: cfg  read  000/4 %-> 11e81234", out)
      assert.matches("trace: mmio read  0xc0000000/4 %-> 0x10000ed", out)
      assert.matches("trace: event msi_enable", out)
   end)

   it("passes the same edu tests with every BAR access trapped in C (--no-mmap)", function()
      local out, code = guest.ours(edu.bdf, "--no-mmap")
      local r = guest.parse(out)
      for _, name in ipairs(guest.EDU_TESTS) do
         assert.are.equal("PASS", r.tests[name], name .. " in:\n" .. out)
      end
      assert.are.equal(0, code)
   end)

   for _, name in ipairs { "e1000e", "nvme" } do
      it("shows the guest " .. name .. "'s IDs, BARs and capabilities as the device has them", function()
         local d = assert(lab.device(name), "lab has no " .. name)
         local want = device_view(d.bdf)
         local out, code = guest.ours(d.bdf, ("--cmdline 'dev=%s ecam=b0000000 caps'"):format(
            want.id))
         assert.are.equal(0, code, out)
         local got = guest_view(out)
         assert.are.equal(want.id, got.id)
         assert.are.equal(want.class, got.class)
         assert.are.same(want.bars, got.bars)
         assert.is_true(#want.caps > 0)
         assert.are.same(want.caps, got.caps)
         assert.are.same(want.ecaps, got.ecaps)
      end)
   end

   it("passes several devices into one VM, each on its own slot, edu's tests still passing", function()
      local e1000e = assert(lab.device("e1000e"), "lab has no e1000e")
      local out, code = guest.ours(edu.bdf, "--device nvme --device e1000e")
      local r = guest.parse(out)
      for _, name in ipairs(guest.EDU_TESTS) do
         assert.are.equal("PASS", r.tests[name], name .. " in:\n" .. out)
      end
      assert.are.equal(0, code, out)
      -- the third device, at 00:06.0, as the guest sees it among the others
      local want = device_view(e1000e.bdf)
      out, code = guest.ours(edu.bdf, ("--device nvme --device e1000e --cmdline 'dev=%s ecam=b0000000 caps'")
         :format(want.id))
      assert.are.equal(0, code, out)
      assert.matches("FOUND 00:06.0 8086:10d3", out)
      local got = guest_view(out)
      assert.are.equal(want.id, got.id)
      assert.are.same(want.bars, got.bars)
      assert.are.same(want.caps, got.caps)
   end)

   it("--plan prints the layout without starting a VM", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --device " .. edu.bdf)
      assert.are.equal(0, code, out)
      assert.matches("device " .. edu.bdf:gsub("%p", "%%%0") .. " 1234:11e8 class 00ff00 %-> guest 00:04%.0", out)
      assert.matches("BAR0 mem32%s+size 0x100000 at 0xc0000000", out)
      assert.matches("%+0x80%.%.%+0x9f trapped %(Lua handler%)", out)
      assert.matches("%+0x1000%.%.%+0xfffff mapped %(KVM memory slot%)", out)
      assert.matches("capabilities MSI@0x40", out)
      assert.matches("irq INTx pin A %-> line 10", out)
      assert.matches("irq MSI 1 vector", out)
      assert.matches("quirks edu%-dma%-guard", out)
      assert.is_nil(out:find("luavfio guest", 1, true))
   end)

   it("--quirk none leaves edu's BAR fully mapped", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --quirk none --device " .. edu.bdf)
      assert.are.equal(0, code, out)
      assert.matches("%+0%.%.%+0xfffff mapped", out)
      assert.matches("quirks none", out)
   end)

   it("explains a device that is not bound to vfio-pci", function()
      local out, code = sh("lua5.4 passthrough.lua --device 0000:00:00.0")
      assert.are.equal(125, code, out)
      assert.matches("not to vfio%-pci", out)
      out, code = sh("lua5.4 passthrough.lua --device 0000:00:1f.6")
      assert.are.equal(125, code, out)
      assert.matches("no such PCI device", out)
   end)

   it("refuses a guest file that is not bootable, before touching the device", function()
      local out, code = sh("lua5.4 passthrough.lua --device " .. edu.bdf .. " --guest passthrough.lua")
      assert.are.equal(125, code, out)
      assert.matches("passthrough%.lua is not bootable: ", out)
      -- a guest file that does not exist is a usage error (64), reported before the device
      out, code = sh("lua5.4 passthrough.lua --device " .. edu.bdf .. " --guest build/no-such.elf")
      assert.are.equal(64, code, out)
      assert.matches("%-%-guest build/no%-such%.elf: No such file or directory", out)
   end)

   it("tears the VM down on SIGINT, and the device is usable again afterwards", function()
      -- irqtest waits for interrupts nobody sends: the guest is still running at the signal
      local out, code = sh(("timeout --preserve-status -s INT 3 lua5.4 passthrough.lua --device %s "
         .. "--cmdline irqtest=5"):format(edu.bdf))
      assert.are.equal(130, code, out)
      assert.matches("interrupted by signal 2; VM torn down", out)
      local again, code2 = guest.ours(edu.bdf)
      assert.are.equal(0, code2, again)
   end)
end)
