-- vfio.bind refuses a device the host uses (issue 25 item 3), against a fake sysfs and
-- procfs: a mounted or swapped block device below it (a disk, a partition, a dm holder), a
-- network interface that is up, a mounted virtio-9p file system, the boot VGA device, a
-- bridge with devices below it. The
-- refusal says what uses it and names the other functions of the IOMMU group that must
-- follow; {force = true} binds anyway. Nothing is written to sysfs when it refuses.
local has_posix = pcall(require, "posix")
if not has_posix then
   describe("vfio.bind refusals", function()
      it("needs luaposix", function() pending("luaposix missing (lab/setup --host)") end)
   end)
   return
end
local vfio = require "vfio"
local fakehost = require "support.fakehost"
local readfile = require("support.files").readfile

local EBUSY = 16
local saved = { vfio.sysfs, vfio.procfs, vfio.devdir }
local host
after_each(function()
   vfio.sysfs, vfio.procfs, vfio.devdir = saved[1], saved[2], saved[3]
   if host then host:remove(); host = nil end
end)

-- A host with vfio-pci loaded and the function 0000:00:1f.2 (SATA, on ahci) in group 5.
local function setup()
   host = fakehost.new()
   host:driver("vfio-pci")
   host:pci("0000:00:1f.2", { class = 0x010601, driver = "ahci", group = 5 })
   vfio.sysfs, vfio.procfs, vfio.devdir = host.sys, host.proc, host.dev .. "/vfio"
   return host
end

local function untouched(bdf)
   assert.are.equal("(null)\n", readfile(host.paths[bdf] .. "/driver_override"))
   assert.are.equal("", readfile(host.sys .. "/bus/pci/drivers_probe"))
end

local function refused(bdf, pattern)
   local ok, err, errno = vfio.bind(bdf)
   assert.is_nil(ok)
   assert.are.equal(EBUSY, errno)
   assert.matches("^bind " .. bdf:gsub("%p", "%%%0") .. ": the host uses this device: ", err)
   assert.matches(pattern, err)
   assert.matches("bind it anyway with {force = true}", err, 1, true)
   untouched(bdf)
   return err
end

describe("vfio.bind refuses a device the host uses", function()
   it("a disk below it that is mounted (matched by MAJ:MIN)", function()
      setup()
      host:block("sda", "0000:00:1f.2", { dev = "8:0" })
      host:mount("/dev/root", "/", "8:0")
      refused("0000:00:1f.2", "block device sda is mounted on /")
   end)

   it("a partition below it that is mounted (matched by name in /proc/self/mounts)", function()
      setup()
      host:block("sda", "0000:00:1f.2", { dev = "8:0" })
      host:block("sda1", nil, { disk = "sda", dev = "8:1" })
      os.remove(host.proc .. "/self/mountinfo")
      host:write("proc/self/mounts", "/dev/sda1 /home ext4 rw 0 0\n")
      refused("0000:00:1f.2", "block device sda1 is mounted on /home")
   end)

   it("a partition used as swap", function()
      setup()
      host:block("sda", "0000:00:1f.2", { dev = "8:0" })
      host:block("sda2", nil, { disk = "sda", dev = "8:2" })
      host:swap("/dev/sda2")
      refused("0000:00:1f.2", "block device sda2 is used as swap")
   end)

   it("a partition held by a device-mapper device that is mounted", function()
      setup()
      host:block("dm-0", nil, { dev = "254:0" })
      host:block("sda", "0000:00:1f.2", { dev = "8:0" })
      host:block("sda3", nil, { disk = "sda", dev = "8:3", holders = { "dm-0" } })
      host:mount("/dev/mapper/vg-root", "/", "254:0")
      refused("0000:00:1f.2", "block device sda3 is held by dm%-0 %(mounted on /%)")
   end)

   it("a network interface below it that is up", function()
      setup()
      host:pci("0000:03:00.0", { driver = "e1000e", group = 9 })
      host:net("eth0", "0000:03:00.0", 0x1003, "up")
      refused("0000:03:00.0", "network interface eth0 is up %(operstate up%)")
   end)

   it("a virtio-9p function whose file system is mounted", function()
      setup()
      local dir = host:pci("0000:00:18.0", { class = 0x000200, driver = "virtio-pci", group = 3 })
      host:write(dir:sub(#host.root + 2) .. "/virtio0/mount_tag", "host\0")
      host:mount("host", "/", "0:30", "9p")
      refused("0000:00:18.0", "9p file system host is mounted on /")
   end)

   it("the boot VGA device", function()
      setup()
      host:pci("0000:00:02.0", { class = 0x030000, driver = "i915", group = 2, boot_vga = true })
      refused("0000:00:02.0", "it is the boot VGA device %(boot_vga = 1%)")
   end)

   it("a bridge with devices below it", function()
      setup()
      host:pci("0000:00:1c.0", { class = 0x060400, driver = "pcieport", group = 8 })
      host:pci("0000:01:00.0", { parent = "0000:00:1c.0", driver = "nvme", group = 8 })
      refused("0000:00:1c.0", "it is a PCI bridge with devices below it: 0000:01:00%.0")
   end)

   it("names the other functions of the group that must follow", function()
      setup()
      host:pci("0000:00:1f.3", { class = 0x040300, driver = "snd_hda_intel", group = 5 })
      host:block("sda", "0000:00:1f.2", { dev = "8:0" })
      host:mount("/dev/sda", "/", "8:0")
      local err = refused("0000:00:1f.2", "mounted on /")
      assert.matches("IOMMU group 5 also holds 0000:00:1f%.3 %(snd_hda_intel%), which must "
         .. "follow it to vfio%-pci %(bind it too%)", err)
   end)
end)

describe("vfio.bind binds what the host does not use", function()
   it("an interface that is down, a disk nobody mounted, boot_vga 0, a bridge alone", function()
      setup()
      host:pci("0000:03:00.0", { driver = "e1000e", group = 9, boot_vga = false })
      host:net("eth1", "0000:03:00.0", 0x1002, "down")
      host:block("sdb", "0000:00:1f.2", { dev = "8:16" })
      host:mount("/dev/sda1", "/", "8:1")
      host:pci("0000:00:1c.0", { class = 0x060400, driver = "pcieport", group = 8 })
      for _, bdf in ipairs { "0000:03:00.0", "0000:00:1f.2", "0000:00:1c.0" } do
         local ok, err, errno = vfio.bind(bdf)
         -- the fake kernel does not rebind: the last step says so, after the writes
         assert.is_nil(ok)
         assert.are.equal(19, errno)
         assert.matches("after probing", err)
         assert.are.equal("vfio-pci", readfile(host.paths[bdf] .. "/driver_override"))
      end
   end)

   it("binds a device the host uses with {force = true}", function()
      setup()
      host:pci("0000:00:02.0", { class = 0x030000, driver = "i915", group = 2, boot_vga = true })
      local ok, err = vfio.bind("0000:00:02.0", { force = true })
      assert.is_nil(ok)
      assert.matches("after probing", err)
      assert.are.equal("vfio-pci", readfile(host.paths["0000:00:02.0"] .. "/driver_override"))
      assert.has_error(function() vfio.bind("0000:00:02.0", true) end,
         "bad argument #2 to 'bind' (table expected, got boolean)")
   end)

   it("names the group's followers (the note a successful bind returns)", function()
      setup()
      host:pci("0000:00:1f.3", { class = 0x040300, driver = "snd_hda_intel", group = 5 })
      host:pci("0000:00:1f.4", { class = 0x0c0500, driver = "vfio-pci", group = 5 })
      local followers, n = vfio.host.group_followers("0000:00:1f.2")
      assert.are.equal(5, n)
      assert.are.same({ { bdf = "0000:00:1f.3", driver = "snd_hda_intel", uses = {} } }, followers)
      assert.are.equal("IOMMU group 5 also holds 0000:00:1f.3 (snd_hda_intel), which must "
         .. "follow it to vfio-pci (bind it too) before the group can be opened",
         vfio.host.followers_text(followers, n))
      assert.are.same({ true }, { vfio.bind("0000:00:1f.4") }) -- already there: no note
   end)
end)

describe("vfio.host.users on this machine", function()
   it("finds the PCI function below the root filesystem's disk mounted on /", function()
      local f = io.open("/proc/self/mountinfo")
      local majmin
      for line in f:lines() do
         local mm, target = line:match("^%S+ %S+ (%d+:%d+) %S+ (%S+)")
         if target == "/" then majmin = mm end
      end
      f:close()
      local real = majmin and require("posix.stdlib").realpath("/sys/dev/block/" .. majmin)
      local bdf
      for part in (real or ""):gmatch("[^/]+") do
         if part:match("^%x%x%x%x:%x%x:%x%x%.%x$") then bdf = part end
      end
      if not bdf then pending("/ is not on a PCI block device here") return end
      local uses = vfio.host.users(bdf, vfio.host.paths { sysfs = "/sys", procfs = "/proc" })
      local text = table.concat(uses, "; ")
      assert.matches("block device %S+ is mounted on /", text)
   end)
end)
