-- vfio.mdev and the mdev side of vfio.open/vfio.devices against a fake sysfs tree: an
-- mtty-like parent with two types (one with no instances left) and one mediated device
-- in IOMMU group 12. The kernel's side (create making a device appear) is the lab's
-- (spec/lab/mdev_spec.lua).
local vfio = require "vfio"
local mdev = require "vfio.mdev"
local has_posix = pcall(require, "posix")

local files = require "support.files"
local sh, writefile, readfile = files.sh, files.writefile, files.readfile

local U1 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
local U2 = "0e3b5d2c-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
-- A UUID inside a pattern: its dashes are magic.
local function q(s) return (s:gsub("%p", "%%%0")) end

local root
local function build()
   root = os.tmpname()
   os.remove(root)
   local S = root .. "/sys"
   local P = S .. "/devices/virtual/mtty/mtty"
   sh(("mkdir -p %s/class/mdev_bus %s/bus/mdev/devices %s/bus/mdev/drivers/mtty "
      .. "%s/bus/pci/devices %s/kernel/iommu_groups/12 %s/mdev_supported_types/mtty-1/devices "
      .. "%s/mdev_supported_types/mtty-2/devices %s/%s %s/dev/vfio"):format(S, S, S, S, S, P, P,
      P, U1, root))
   sh(("ln -s ../../devices/virtual/mtty/mtty %s/class/mdev_bus/mtty"):format(S))
   for id, t in pairs {
      ["mtty-1"] = { "Single port serial", "23" }, ["mtty-2"] = { "Dual port serial", "0" } } do
      local d = P .. "/mdev_supported_types/" .. id
      writefile(d .. "/name", t[1] .. "\n")
      writefile(d .. "/available_instances", t[2] .. "\n")
      writefile(d .. "/device_api", "vfio-pci\n")
      writefile(d .. "/create", "")
   end
   writefile(P .. "/mdev_supported_types/mtty-1/description", "one 16550 UART\n")
   local d = P .. "/" .. U1
   sh(("ln -s ../mdev_supported_types/mtty-1 %s/mdev_type"):format(d))
   sh(("ln -s ../../../../../kernel/iommu_groups/12 %s/iommu_group"):format(d))
   sh(("ln -s ../../../../../bus/mdev/drivers/mtty %s/driver"):format(d))
   writefile(d .. "/remove", "")
   sh(("ln -s ../../../devices/virtual/mtty/mtty/%s %s/bus/mdev/devices/%s"):format(U1, S, U1))
   mdev.sysfs = S
   vfio.sysfs = S
   vfio.devdir = root .. "/dev/vfio"
   return S, P
end

local saved = { vfio.sysfs, vfio.devdir, mdev.sysfs }
after_each(function()
   vfio.sysfs, vfio.devdir, mdev.sysfs = saved[1], saved[2], saved[3]
   if root then sh("rm -rf " .. root); root = nil end
end)

describe("vfio.mdev names", function()
   it("recognises UUIDs and makes random ones", function()
      assert.is_true(mdev.is_uuid(U1))
      assert.is_true(mdev.is_uuid(U1:upper()))
      for _, bad in ipairs { "", "83b8f4f2-509f-382f-3c1e-e6bfe0fa100", "0000:00:03.0",
         U1 .. "0", "83b8f4f2509f382f3c1ee6bfe0fa1001", 7 } do
         assert.is_false(mdev.is_uuid(bad), tostring(bad))
      end
      local a, b = assert(mdev.uuid()), assert(mdev.uuid())
      assert.is_true(mdev.is_uuid(a))
      assert.are_not.equal(a, b)
      assert.are.equal("4", a:sub(15, 15))       -- version 4
      assert.matches("[89ab]", a:sub(20, 20))     -- the RFC 4122 variant
   end)

   it("is what vfio.resolve returns for an mdev, from its UUID or its sysfs path", function()
      assert.are.equal(U1, vfio.resolve(U1:upper()))
      if not has_posix then return end
      local S = build()
      assert.are.equal(U1, vfio.resolve(S .. "/bus/mdev/devices/" .. U1))
      assert.are.equal(U1, vfio.resolve(S .. "/devices/virtual/mtty/mtty/" .. U1 .. "/"))
      assert.has_error(function() vfio.resolve("83b8f4f2-509f") end)
   end)
end)

describe("vfio.mdev on a fake sysfs", function()
   if not has_posix then
      it("needs luaposix", function() pending("luaposix missing (lab/setup --host)") end)
      return
   end

   it("lists parents and their types", function()
      local _, P = build()
      local parents = mdev.parents()
      assert.are.equal(1, #parents)
      assert.are.equal("mtty", parents[1].name)
      assert.are.equal(P, parents[1].path)
      assert.are.same({
         { id = "mtty-1", name = "Single port serial", available_instances = 23,
            device_api = "vfio-pci", description = "one 16550 UART" },
         { id = "mtty-2", name = "Dual port serial", available_instances = 0,
            device_api = "vfio-pci" },
      }, parents[1].types)
      assert.are.same(parents[1].types, mdev.types(P))
   end)

   it("says which parents exist when one does not", function()
      build()
      local t, err, errno = mdev.types("nosuch")
      assert.is_nil(t)
      assert.matches("^mdev types: no mediated device parent nosuch %(.*/class/mdev_bus/nosuch "
         .. "does not exist; parents: mtty%)$", err)
      assert.are.equal(19, errno)
      mdev.sysfs = root .. "/nothing"
      assert.are.same({}, mdev.parents())
      assert.are.same({}, mdev.devices())
   end)

   it("lists mediated devices, and vfio.devices lists them after the PCI functions", function()
      local _, P = build()
      local want = {
         mdev = true, uuid = U1, name = U1, path = P .. "/" .. U1, parent = "mtty",
         type = "mtty-1", driver = "mtty", group = 12,
      }
      assert.are.same({ want }, mdev.devices())
      assert.are.same(want, mdev.info(U1:upper()))
      assert.are.same({ want }, vfio.devices())
      local none, err, errno = mdev.info(U2)
      assert.is_nil(none)
      assert.matches("^mdev " .. q(U2) .. ": no such mediated device", err)
      assert.are.equal(2, errno)
   end)

   it("creates an mdev by writing its UUID to the type's create", function()
      local _, P = build()
      assert.are.equal(U2, mdev.create("mtty", "mtty-1", U2:upper()))
      assert.are.equal(U2, readfile(P .. "/mdev_supported_types/mtty-1/create"))
      local u = assert(mdev.create(P, "mtty-1"))      -- by path, with a UUID of its own
      assert.is_true(mdev.is_uuid(u))
      assert.are.equal(u, readfile(P .. "/mdev_supported_types/mtty-1/create"))
   end)

   it("explains the usual mistakes", function()
      build()
      local u, err, errno = mdev.create("mttx", "mtty-1")
      assert.is_nil(u)
      assert.matches("^create mdev: no mediated device parent mttx %(.*; parents: mtty%)$", err)
      assert.are.equal(19, errno)
      u, err, errno = mdev.create("mtty", "mtty-3")
      assert.is_nil(u)
      assert.are.equal("create mdev: parent mtty has no type mtty-3 (types: mtty-1, mtty-2)",
         err)
      assert.are.equal(2, errno)
      u, err, errno = mdev.create("mtty", "../mtty-1")
      assert.is_nil(u)
      assert.matches("has no type", err)
      assert.are.equal(2, errno)
      u, err, errno = mdev.create("mtty", "mtty-2", U2)
      assert.is_nil(u)
      assert.matches("^create mdev " .. q(U2) .. " %(mtty%-2 of mtty%): no instances available "
         .. "%(.*/mtty%-2/available_instances is 0%)", err)
      assert.are.equal(28, errno)
      u, err, errno = mdev.create("mtty", "mtty-1", U1)
      assert.is_nil(u)
      assert.matches("^create mdev " .. q(U1) .. " %(mtty%-1 of mtty%): the UUID is in use", err)
      assert.are.equal(17, errno)
   end)

   it("raises on arguments that are not names", function()
      build()
      assert.has_error(function() mdev.create() end)
      assert.has_error(function() mdev.create("mtty") end)
      assert.has_error(function() mdev.create("mtty", "") end)
      assert.has_error(function() mdev.create("mtty", "mtty-1", "not-a-uuid") end)
      assert.has_error(function() mdev.remove("not-a-uuid") end)
      assert.has_error(function() mdev.remove(nil) end)
      assert.has_error(function() mdev.info(3) end)
      assert.has_error(function() mdev.types({}) end)
   end)

   it("writes no create outside a type of a parent under the sysfs root", function()
      local S, P = build()
      -- create files a climbing name would reach: the parent's own, and one outside sysfs
      writefile(P .. "/create", "")
      local E = root .. "/evil"
      sh(("mkdir -p %s/mdev_supported_types/t"):format(E))
      writefile(E .. "/mdev_supported_types/t/create", "")
      for _, typ in ipairs { "..", "." } do
         local u, err, errno = mdev.create("mtty", typ, U2)
         assert.is_nil(u, typ)
         assert.matches("has no type", err)
         assert.are.equal(2, errno)
      end
      assert.are.equal("", readfile(P .. "/create"))
      for _, parent in ipairs { "../../../evil", "mtty/../../../../evil", "..", ".", E,
         S .. "/../evil" } do
         assert.has_error(function() mdev.create(parent, "t", U2) end, nil, parent)
         assert.has_error(function() mdev.types(parent) end, nil, parent)
      end
      assert.are.equal("", readfile(E .. "/mdev_supported_types/t/create"))
      assert.are.equal("", readfile(P .. "/mdev_supported_types/mtty-1/create"))
      -- a path under the root is still a parent, and one that is not there says so
      assert.are.equal(U2, mdev.create(S .. "/class/mdev_bus/mtty", "mtty-1", U2))
      local u, err, errno = mdev.create(S .. "/devices/nosuch", "mtty-1", U2)
      assert.is_nil(u)
      assert.matches("no mediated device parent", err)
      assert.are.equal(19, errno)
   end)

   it("says when the caller may not write create or remove", function()
      local S, P = build()
      local script = root .. "/probe.lua"
      writefile(script, ([[
         package.path = %q
         package.cpath = %q
         local mdev = require "vfio.mdev"
         mdev.sysfs = %q
         local u, err, errno = mdev.create("mtty", "mtty-1", %q)
         local ok, err2, errno2 = mdev.remove(%q)
         io.write(tostring(errno), "\n", err, "\n", tostring(errno2), "\n", err2, "\n")
      ]]):format(package.path, package.cpath, S, U2, U1))
      sh("chmod -R a+rX " .. root .. " && chmod 644 " .. P .. "/mdev_supported_types/mtty-1/create "
         .. P .. "/" .. U1 .. "/remove")
      local p = assert(io.popen("cd " .. os.getenv("PWD") .. " && setpriv --reuid=65534 "
         .. "--regid=65534 --clear-groups lua5.4 " .. script .. " 2>&1"))
      local out = p:read("a")
      p:close()
      assert.matches("^13\ncreate mdev " .. q(U2) .. " %(mtty%-1 of mtty%): no permission to "
         .. "write .*/mtty%-1/create: run as root\n13\nremove mdev " .. q(U1) .. ": no "
         .. "permission to write .*/remove: run as root\n$", out)
   end)

   it("removes an mdev by writing 1 to its remove, and says when there is none", function()
      local S, P = build()
      assert.is_true(mdev.remove(U1:upper()))
      assert.are.equal("1", readfile(P .. "/" .. U1 .. "/remove"))
      local ok, err, errno = mdev.remove(U2)
      assert.is_nil(ok)
      assert.are.equal(("remove mdev %s: no such mediated device (%s/bus/mdev/devices/%s does "
         .. "not exist)"):format(U2, S, U2), err)
      assert.are.equal(2, errno)
   end)
end)

describe("vfio.open on an mdev", function()
   if not has_posix then
      it("needs luaposix", function() pending("luaposix missing (lab/setup --host)") end)
      return
   end

   it("says when there is no such mdev", function()
      build()
      local d, err, errno = vfio.open(U2)
      assert.is_nil(d)
      assert.matches("^open " .. q(U2) .. ": no such mediated device %(.*/bus/mdev/devices/" .. q(U2)
         .. " does not exist%): create it with vfio.mdev.create", err)
      assert.are.equal(2, errno)
   end)

   it("takes the group from the mdev's iommu_group link", function()
      local S = build()
      -- a plain file is no group: the status ioctl fails, naming the node it used
      writefile(root .. "/dev/vfio/12", "")
      for _, name in ipairs { U1, U1:upper(), S .. "/bus/mdev/devices/" .. U1 } do
         local d, err, errno = vfio.open(name)
         assert.is_nil(d)
         assert.matches("^open " .. q(U1) .. ": VFIO_GROUP_GET_STATUS .*/dev/vfio/12: ", err)
         assert.are.equal(25, errno)
      end
   end)

   it("says when the mdev has no group or no driver", function()
      local S, P = build()
      os.remove(P .. "/" .. U1 .. "/iommu_group")
      local d, err, errno = vfio.open(U1)
      assert.is_nil(d)
      assert.matches("^open " .. q(U1) .. ": the mediated device has no IOMMU group %(.*"
         .. "/iommu_group is missing%)", err)
      assert.are.equal(19, errno)
      os.remove(P .. "/" .. U1 .. "/driver")
      d, err, errno = vfio.open(S .. "/bus/mdev/devices/" .. U1)
      assert.is_nil(d)
      assert.matches("^open " .. q(U1) .. ": the mediated device is bound to no driver", err)
      assert.are.equal(19, errno)
   end)
end)
