-- The friendly vfio module on a host without VFIO: address resolution, and the errors
-- users meet (no IOMMU, not bound to vfio-pci, missing or forbidden group node, group not
-- viable), plus listing and binding, all against a fake sysfs tree.
local vfio = require "vfio"
local has_posix = pcall(require, "posix")

local files = require "support.files"
local sh, writefile, readfile = files.sh, files.writefile, files.readfile

-- A fake /sys with one device (0000:00:03.0) in IOMMU group 7, which it shares with an
-- audio function bound to a host driver, and a /dev/vfio with the group node.
local root
local function build(opts)
   opts = opts or {}
   root = os.tmpname()
   os.remove(root)
   local S = root .. "/sys"
   sh(("mkdir -p %s/devices/pci0000:00/0000:00:03.0 %s/devices/pci0000:00/0000:00:03.1 "
      .. "%s/bus/pci/devices %s/bus/pci/drivers/e1000e %s/bus/pci/drivers/snd_hda_intel "
      .. "%s/kernel/iommu_groups/7/devices %s/dev/vfio"):format(S, S, S, S, S, S, root))
   if not opts.no_vfio_driver then sh("mkdir -p " .. S .. "/bus/pci/drivers/vfio-pci") end
   local d = S .. "/devices/pci0000:00/0000:00:03.0"
   writefile(d .. "/vendor", "0x8086\n")
   writefile(d .. "/device", "0x10d3\n")
   writefile(d .. "/class", "0x020000\n")
   writefile(d .. "/driver_override", "(null)\n")
   writefile(S .. "/bus/pci/drivers_probe", "")
   writefile(S .. "/bus/pci/drivers/e1000e/unbind", "")
   if not opts.no_vfio_driver then writefile(S .. "/bus/pci/drivers/vfio-pci/unbind", "") end
   local a = S .. "/devices/pci0000:00/0000:00:03.1"
   writefile(a .. "/vendor", "0x8086\n")
   writefile(a .. "/device", "0x293e\n")
   writefile(a .. "/class", "0x040300\n")
   sh(("ln -s ../../../bus/pci/drivers/snd_hda_intel %s/driver"):format(a))
   for _, bdf in ipairs { "0000:00:03.0", "0000:00:03.1" } do
      sh(("ln -s ../../../devices/pci0000:00/%s %s/bus/pci/devices/%s"):format(bdf, S, bdf))
      sh(("ln -s ../../../../devices/pci0000:00/%s %s/kernel/iommu_groups/7/devices/%s")
         :format(bdf, S, bdf))
      if not opts.no_iommu then
         sh(("ln -s ../../../kernel/iommu_groups/7 %s/devices/pci0000:00/%s/iommu_group")
            :format(S, bdf))
      end
   end
   if opts.driver then
      sh(("ln -s ../../../bus/pci/drivers/%s %s/driver"):format(opts.driver, d))
   end
   if opts.group_node then
      writefile(root .. "/dev/vfio/7", "")
      sh("chmod 600 " .. root .. "/dev/vfio/7")
   end
   vfio.sysfs = S
   vfio.devdir = root .. "/dev/vfio"
end

local saved_sysfs, saved_devdir = vfio.sysfs, vfio.devdir
after_each(function()
   vfio.sysfs, vfio.devdir = saved_sysfs, saved_devdir
   if root then sh("rm -rf " .. root); root = nil end
end)

describe("vfio address resolution", function()
   it("accepts full and short addresses and raises on anything else", function()
      assert.are.equal("0000:00:03.0", vfio.resolve("0000:00:03.0"))
      assert.are.equal("0000:00:03.0", vfio.resolve("00:03.0"))
      assert.are.equal("0000:af:1f.7", vfio.resolve("0000:AF:1F.7"))
      for _, bad in ipairs { "0000:00:03.8", "00:3.0", "eth0", "", "/tmp" } do
         assert.has_error(function() vfio.resolve(bad) end)
      end
      assert.has_error(function() vfio.open(3) end)
      assert.has_error(function() vfio.open(nil) end)
      assert.has_error(function() vfio.open("not-a-device") end)
   end)

   it("accepts a device's sysfs path", function()
      if not has_posix then pending("luaposix missing") return end
      build { driver = "vfio-pci" }
      assert.are.equal("0000:00:03.0",
         vfio.resolve(vfio.sysfs .. "/devices/pci0000:00/0000:00:03.0"))
      assert.are.equal("0000:00:03.0", vfio.resolve(vfio.sysfs .. "/bus/pci/devices/0000:00:03.0/"))
      assert.are.equal("vfio-pci", vfio.driver_of("00:03.0"))
      assert.are.equal(7, vfio.group_of("00:03.0"))
   end)
end)

describe("vfio.open errors", function()
   if not has_posix then
      it("needs luaposix", function() pending("luaposix missing (lab/setup --host)") end)
      return
   end

   it("reports a device that does not exist", function()
      build()
      local d, err, errno = vfio.open("0000:00:09.0")
      assert.is_nil(d)
      assert.matches("^open 0000:00:09.0: no such PCI device %(.*/bus/pci/devices/0000:00:09.0 "
         .. "does not exist%)$", err)
      assert.are.equal(2, errno)
   end)

   it("says when there is no IOMMU", function()
      build { no_iommu = true, driver = "vfio-pci" }
      local d, err, errno = vfio.open("0000:00:03.0")
      assert.is_nil(d)
      assert.matches("open 0000:00:03.0: no IOMMU group %(.*iommu_group is missing%): enable "
         .. "the IOMMU %(intel_iommu=on or amd_iommu=on", err)
      assert.are.equal(19, errno)
   end)

   it("says to bind the device to vfio-pci", function()
      build { driver = "e1000e" }
      local d, err, errno = vfio.open("0000:00:03.0")
      assert.is_nil(d)
      assert.are.equal('open 0000:00:03.0: device is bound to e1000e, not to vfio-pci: call '
         .. 'vfio.bind("0000:00:03.0") first', err)
      assert.are.equal(19, errno)
      build { }
      d, err = vfio.open("0000:00:03.0")
      assert.is_nil(d)
      assert.matches("device is not bound to any driver, not to vfio%-pci", err)
   end)

   it("says when the group node is missing", function()
      build { driver = "vfio-pci" }
      local d, err, errno = vfio.open("0000:00:03.0")
      assert.is_nil(d)
      assert.matches("open 0000:00:03.0: .*/dev/vfio/7 does not exist: is the vfio%-pci "
         .. "module loaded and the device bound to it %(vfio.bind%)%?", err)
      assert.are.equal(2, errno)
   end)

   it("says when the group node is not accessible", function()
      build { driver = "vfio-pci", group_node = true }
      -- root ignores file modes: ask as an unprivileged user in a child process
      local script = root .. "/probe.lua"
      writefile(script, ([[
         package.path = %q
         package.cpath = %q
         local vfio = require "vfio"
         vfio.sysfs, vfio.devdir = %q, %q
         local d, err, errno = vfio.open("0000:00:03.0")
         io.write(tostring(errno), "\n", err)
      ]]):format(package.path, package.cpath, vfio.sysfs, vfio.devdir))
      sh("chmod -R a+rX " .. root)
      local p = assert(io.popen("cd " .. os.getenv("PWD") .. " && setpriv --reuid=65534 "
         .. "--regid=65534 --clear-groups lua5.4 " .. script .. " 2>&1"))
      local out = p:read("a")
      p:close()
      assert.matches("^13\nopen 0000:00:03.0: no permission on .*/dev/vfio/7: run as root or "
         .. "give your user access to it", out)
   end)

   it("uses the no-IOMMU group node when that is the one present", function()
      build { driver = "vfio-pci" }
      writefile(root .. "/dev/vfio/noiommu-7", "")
      -- a plain file is no group: the status ioctl fails, naming the node it used
      local d, err, errno = vfio.open("0000:00:03.0")
      assert.is_nil(d)
      assert.matches("^open 0000:00:03.0: VFIO_GROUP_GET_STATUS .*/dev/vfio/noiommu%-7: ", err)
      assert.are.equal(25, errno)
   end)

   it("names the devices that make a group not viable", function()
      build { driver = "vfio-pci" }
      assert.are.same({ "0000:00:03.1 (snd_hda_intel)" }, vfio._group_blockers(7))
      assert.are.same({}, vfio._group_blockers(99))
   end)
end)

describe("vfio.devices, vfio.bind, vfio.unbind", function()
   if not has_posix then
      it("needs luaposix", function() pending("luaposix missing (lab/setup --host)") end)
      return
   end

   it("lists devices with ids, class, driver and group", function()
      build { driver = "e1000e" }
      assert.are.same({
         { bdf = "0000:00:03.0", vendor = 0x8086, device = 0x10d3, id = "8086:10d3",
            class = 0x020000, driver = "e1000e", group = 7 },
         { bdf = "0000:00:03.1", vendor = 0x8086, device = 0x293e, id = "8086:293e",
            class = 0x040300, driver = "snd_hda_intel", group = 7 },
      }, vfio.devices())
   end)

   it("reports a missing PCI bus directory", function()
      build()
      vfio.sysfs = root .. "/nonexistent"
      local list, err, errno = vfio.devices()
      assert.is_nil(list)
      assert.matches("^list .*/nonexistent/bus/pci/devices: ", err)
      assert.are.equal(2, errno)
   end)

   it("binds through driver_override, unbind and drivers_probe", function()
      build { driver = "e1000e" }
      local ok, err, errno = vfio.bind("00:03.0")
      -- the fake kernel does not rebind, so the final check reports it
      assert.is_nil(ok)
      assert.matches("bind 0000:00:03.0: the device is bound to e1000e after probing", err)
      assert.are.equal(19, errno)
      local d = vfio.sysfs .. "/devices/pci0000:00/0000:00:03.0"
      assert.are.equal("vfio-pci", readfile(d .. "/driver_override"))
      assert.are.equal("0000:00:03.0", readfile(vfio.sysfs .. "/bus/pci/drivers/e1000e/unbind"))
      assert.are.equal("0000:00:03.0", readfile(vfio.sysfs .. "/bus/pci/drivers_probe"))
   end)

   it("does nothing for a device already on vfio-pci, and needs the driver loaded", function()
      build { driver = "vfio-pci" }
      assert.is_true(vfio.bind("0000:00:03.0"))
      assert.are.equal("", readfile(vfio.sysfs .. "/bus/pci/drivers_probe"))
      build { driver = "e1000e", no_vfio_driver = true }
      local ok, err = vfio.bind("0000:00:03.0")
      assert.is_nil(ok)
      assert.matches("vfio%-pci driver is not loaded %(modprobe vfio%-pci%)", err)
      ok, err = vfio.bind("0000:00:09.0")
      assert.is_nil(ok)
      assert.matches("no such PCI device", err)
   end)

   it("unbinds, clears the override and reprobes unless told not to", function()
      build { driver = "vfio-pci" }
      assert.is_true(vfio.unbind("0000:00:03.0", { probe = false }))
      local d = vfio.sysfs .. "/devices/pci0000:00/0000:00:03.0"
      assert.are.equal("0000:00:03.0", readfile(vfio.sysfs .. "/bus/pci/drivers/vfio-pci/unbind"))
      assert.are.equal("\n", readfile(d .. "/driver_override"))
      assert.are.equal("", readfile(vfio.sysfs .. "/bus/pci/drivers_probe"))
      assert.is_true(vfio.unbind("0000:00:03.0"))
      assert.are.equal("0000:00:03.0", readfile(vfio.sysfs .. "/bus/pci/drivers_probe"))
   end)

   it("reports sysfs write failures with the path", function()
      build { driver = "e1000e" }
      os.remove(vfio.sysfs .. "/bus/pci/drivers/e1000e/unbind")
      sh("mkdir " .. vfio.sysfs .. "/bus/pci/drivers/e1000e/unbind")
      local ok, err, errno = vfio.bind("0000:00:03.0")
      assert.is_nil(ok)
      assert.matches("bind 0000:00:03.0: open .*/0000:00:03.0/driver/unbind: Is a directory", err)
      assert.are.equal(21, errno)
   end)
end)
