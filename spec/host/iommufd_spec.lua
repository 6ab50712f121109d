-- The iommufd interface on a host without it: the ABI header luavfio carries (struct
-- layouts and ioctl numbers, and that newer system headers take its place), vfio.iommufd
-- and core.cdev on files that are no iommufd or cdev (errors name the operation, the
-- device and strerror; wrong arguments raise), and vfio.open's choice of interface and
-- its errors against a fake sysfs tree.
local core = require "vfio.core"
local vfio = require "vfio"
local has_posix = pcall(require, "posix")

local ENOENT, ENODEV, ENOTTY, EACCES = 2, 19, 25, 13

local files = require "support.files"
local sh, writefile = files.sh, files.writefile

local function run(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local ok = p:close()
   return ok, out
end

local function tmpdir()
   local d = os.tmpname()
   os.remove(d)
   sh("mkdir -p " .. d)
   return d
end

describe("the iommufd ABI header (csrc/vfio/vfio_uapi_iommufd.h)", function()
   local dir
   before_each(function() dir = tmpdir() end)
   after_each(function() sh("rm -rf " .. dir) end)

   -- What the kernel's ABI fixes: sizes, the offsets of the fields luavfio fills or reads,
   -- and the ioctl numbers.
   local probe = [[
#include <stdio.h>
#include <stddef.h>
#include "vfio/vfio_uapi_iommufd.h"
#define P(x) printf("%s=%lu\n", #x, (unsigned long)(x))
int main(void)
{
    P(sizeof(struct iommu_destroy)); P(sizeof(struct iommu_ioas_alloc));
    P(sizeof(struct iommu_iova_range)); P(sizeof(struct iommu_ioas_iova_ranges));
    P(sizeof(struct iommu_ioas_map)); P(sizeof(struct iommu_ioas_unmap));
    P(sizeof(struct vfio_device_bind_iommufd));
    P(sizeof(struct vfio_device_attach_iommufd_pt));
    P(sizeof(struct vfio_device_detach_iommufd_pt));
    P(offsetof(struct iommu_ioas_map, iova)); P(offsetof(struct iommu_ioas_unmap, length));
    P(offsetof(struct vfio_device_bind_iommufd, out_devid));
    P(IOMMU_DESTROY); P(IOMMU_IOAS_ALLOC); P(IOMMU_IOAS_IOVA_RANGES); P(IOMMU_IOAS_MAP);
    P(IOMMU_IOAS_UNMAP); P(VFIO_DEVICE_BIND_IOMMUFD); P(VFIO_DEVICE_ATTACH_IOMMUFD_PT);
    P(VFIO_DEVICE_DETACH_IOMMUFD_PT); P(VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
    P(VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED);
    P(IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE);
    return 0;
}
]]
   local want = {
      ["sizeof(struct iommu_destroy)"] = 8, ["sizeof(struct iommu_ioas_alloc)"] = 12,
      ["sizeof(struct iommu_iova_range)"] = 16, ["sizeof(struct iommu_ioas_iova_ranges)"] = 32,
      ["sizeof(struct iommu_ioas_map)"] = 40, ["sizeof(struct iommu_ioas_unmap)"] = 24,
      ["sizeof(struct vfio_device_bind_iommufd)"] = 16,
      ["sizeof(struct vfio_device_attach_iommufd_pt)"] = 12,
      ["sizeof(struct vfio_device_detach_iommufd_pt)"] = 8,
      ["offsetof(struct iommu_ioas_map, iova)"] = 32,
      ["offsetof(struct iommu_ioas_unmap, length)"] = 16,
      ["offsetof(struct vfio_device_bind_iommufd, out_devid)"] = 12,
      IOMMU_DESTROY = 0x3b80, IOMMU_IOAS_ALLOC = 0x3b81, IOMMU_IOAS_IOVA_RANGES = 0x3b84,
      IOMMU_IOAS_MAP = 0x3b85, IOMMU_IOAS_UNMAP = 0x3b86, VFIO_DEVICE_BIND_IOMMUFD = 0x3b76,
      VFIO_DEVICE_ATTACH_IOMMUFD_PT = 0x3b77, VFIO_DEVICE_DETACH_IOMMUFD_PT = 0x3b78,
      VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1, VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 2,
      ["IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE"] = 7,
   }

   local function build_and_run(extra)
      writefile(dir .. "/probe.c", probe)
      local ok, out = run(("cc -std=c11 -Wall -Werror %s -I csrc -o %s/probe %s/probe.c && %s/probe")
         :format(extra or "", dir, dir, dir))
      assert(ok, out)
      local got = {}
      for k, v in out:gmatch("([^\n]+)=(%d+)\n") do got[k] = tonumber(v) end
      return got
   end

   it("has the kernel's struct layouts and ioctl numbers", function()
      assert.are.same(want, build_and_run())
   end)

   it("steps aside for system headers that have iommufd and the cdev ioctls", function()
      -- A stand-in for a newer linux/iommufd.h: its definitions win, ours are not seen
      -- (a second definition of a struct would not compile).
      sh("mkdir -p " .. dir .. "/inc/linux")
      local f = assert(io.open("csrc/vfio/vfio_uapi_iommufd.h"))
      local ours = f:read("a")
      f:close()
      local abi = assert(ours:match("\n(#define IOMMUFD_TYPE.-)\n#endif /%* IOMMU_IOAS_ALLOC %*/"))
      writefile(dir .. "/inc/linux/iommufd.h", "#include <linux/types.h>\n#include <sys/ioctl.h>\n"
         .. "#define LUAVFIO_SYSTEM_IOMMUFD 1\n" .. abi .. "\n")
      local got = build_and_run("-I " .. dir .. "/inc")
      assert.are.same(want, got)
      -- and the guard is the one the header says it is
      writefile(dir .. "/check.c", '#include "vfio/vfio_uapi_iommufd.h"\n'
         .. "#ifndef LUAVFIO_SYSTEM_IOMMUFD\n#error system header not used\n#endif\n")
      local ok, out = run(("cc -std=c11 -fsyntax-only -I %s/inc -I csrc %s/check.c"):format(dir, dir))
      assert(ok, out)
   end)
end)

describe("vfio.core iommufd and cdev", function()
   it("report open failures with the path and errno", function()
      local i, err, errno = core.iommufd("/nonexistent/iommu")
      assert.is_nil(i)
      assert.are.equal("open iommufd /nonexistent/iommu: No such file or directory", err)
      assert.are.equal(ENOENT, errno)
      local d
      d, err, errno = core.cdev("/nonexistent/vfio0", "0000:00:03.0")
      assert.is_nil(d)
      assert.are.equal("open cdev /nonexistent/vfio0: No such file or directory", err)
      assert.are.equal(ENOENT, errno)
      -- a regular file is no cdev
      local path = os.tmpname()
      d, err, errno = core.cdev(path)
      os.remove(path)
      assert.is_nil(d)
      assert.are.equal(("open cdev %s: Inappropriate ioctl for device"):format(path), err)
      assert.are.equal(ENOTTY, errno)
   end)

   it("name the operation, the device and the iommufd in ioctl failures", function()
      local i <close> = assert(core.iommufd("/dev/null"))
      local a, err, errno = i:ioas()
      assert.is_nil(a)
      assert.are.equal("IOMMU_IOAS_ALLOC /dev/null: Inappropriate ioctl for device", err)
      assert.are.equal(ENOTTY, errno)
      local d <close> = assert(core.cdev("/dev/null", "0000:00:03.0"))
      local id
      id, err, errno = i:bind(d)
      assert.is_nil(id)
      assert.are.equal("VFIO_DEVICE_BIND_IOMMUFD 0000:00:03.0 (/dev/null): Inappropriate "
         .. "ioctl for device", err)
      assert.are.equal(ENOTTY, errno)
      -- a cdev is a vfio.device: every device method works on it, naming the device
      local v
      v, err = d:info()
      assert.is_nil(v)
      assert.are.equal("VFIO_DEVICE_GET_INFO 0000:00:03.0: Inappropriate ioctl for device", err)
      v, err = d:hot_reset({})
      assert.is_nil(v)
      assert.matches("^VFIO_DEVICE_PCI_HOT_RESET 0000:00:03.0: ", err)
      assert.is_nil(d:group())
      assert.are.equal("vfio.device", getmetatable(d).__name)
   end)

   it("validate arguments", function()
      assert.has_error(function() core.iommufd(("x"):rep(200)) end)
      assert.has_error(function() core.iommufd({}) end)
      assert.has_error(function() core.cdev() end)
      assert.has_error(function() core.cdev("/dev/null", "") end)
      assert.has_error(function() core.cdev("/dev/null", ("x"):rep(200)) end)
      local i <close> = assert(core.iommufd("/dev/null"))
      assert.has_error(function() i:bind() end)
      assert.has_error(function() i:bind(3) end)               -- an fd is no device
      assert.has_error(function() i:bind(i) end)
      local d = assert(core.cdev("/dev/null"))
      d:close()
      assert.has_error(function() i:bind(d) end, "bad argument #1 to 'bind' (device is closed)")
      assert.has_error(function() i.ioas(io.stdout) end)
   end)

   it("close idempotently and refuse use after close", function()
      local i = assert(core.iommufd("/dev/null"))
      assert.is_number(i:fileno())
      assert.are.equal("/dev/null", i:path())
      assert.matches("^vfio.iommufd %(/dev/null, fd %d+%)$", tostring(i))
      assert.is_false(i:closed())
      i:close()
      i:close()
      assert.is_true(i:closed())
      assert.are.equal("vfio.iommufd (/dev/null, closed)", tostring(i))
      assert.has_error(function() i:ioas() end, "calling 'ioas' on bad self (iommufd is closed)")
      assert.has_error(function() i:fileno() end)
      do
         local j <close> = assert(core.iommufd("/dev/null"))
         i = j
      end
      assert.is_true(i:closed())
   end)

   it("have protected classes named vfio.iommufd and vfio.ioas", function()
      local i <close> = assert(core.iommufd("/dev/null"))
      local desc = getmetatable(i)
      assert.are.equal("vfio.iommufd", desc.__name)
      for _, m in ipairs { "ioas", "bind", "fileno", "path", "closed", "close" } do
         assert.is_function(desc.__index[m], m)
      end
      local reg = debug.getregistry()["vfio.ioas"]
      assert.are.equal("vfio.ioas", reg.__name)
      for _, m in ipairs { "map_dma", "unmap_dma", "unmap_all", "iova_ranges", "attach",
                           "detach", "id", "iommufd", "closed", "close" } do
         assert.is_function(reg.__index[m], m)
      end
   end)
end)

describe("vfio.open through iommufd", function()
   if not has_posix then
      it("needs luaposix", function() pending("luaposix missing (lab/setup --host)") end)
      return
   end
   local stdlib = require "posix.stdlib"

   local fds = files.open_fds

   -- A fake /sys with 0000:00:03.0 in IOMMU group 7 on vfio-pci, /dev/vfio with no group
   -- node, and on request the device's vfio-dev/vfio0, its node and /dev/iommu.
   local root
   local saved = { vfio.sysfs, vfio.devdir, vfio.iommudev }
   local saved_env = os.getenv("LUAVFIO_IOMMUFD")
   local function build(opts)
      opts = opts or {}
      root = tmpdir()
      local S = root .. "/sys"
      local d = S .. "/devices/pci0000:00/0000:00:03.0"
      sh(("mkdir -p %s %s/bus/pci/devices %s/bus/pci/drivers/vfio-pci %s/kernel/iommu_groups/7 "
         .. "%s/dev/vfio/devices"):format(d, S, S, S, root))
      sh(("ln -s ../../../devices/pci0000:00/0000:00:03.0 %s/bus/pci/devices/0000:00:03.0"):format(S))
      sh(("ln -s ../../../kernel/iommu_groups/7 %s/iommu_group"):format(d))
      sh(("ln -s ../../../bus/pci/drivers/vfio-pci %s/driver"):format(d))
      if opts.cdev then sh(("mkdir -p %s/vfio-dev/vfio0"):format(d)) end
      if opts.node then
         if opts.node == "null" then
            sh(("ln -s /dev/null %s/dev/vfio/devices/vfio0"):format(root))
         else
            writefile(root .. "/dev/vfio/devices/vfio0", "")
            sh("chmod 600 " .. root .. "/dev/vfio/devices/vfio0")
         end
      end
      if opts.iommu then sh(("ln -s /dev/null %s/dev/iommu"):format(root)) end
      vfio.sysfs, vfio.devdir, vfio.iommudev = S, root .. "/dev/vfio", root .. "/dev/iommu"
   end
   after_each(function()
      vfio.sysfs, vfio.devdir, vfio.iommudev = saved[1], saved[2], saved[3]
      if saved_env then stdlib.setenv("LUAVFIO_IOMMUFD", saved_env)
      else stdlib.setenv("LUAVFIO_IOMMUFD", nil) end
      if root then sh("rm -rf " .. root); root = nil end
   end)

   it("validates its options", function()
      build()
      assert.has_error(function() vfio.open("0000:00:03.0", 3) end,
         "bad argument #2 to 'open' (table expected, got number)")
      assert.has_error(function() vfio.open("0000:00:03.0", { iommufd = "yes" }) end,
         'bad argument #2 to \'open\' (iommufd must be true, false or "auto", got yes)')
   end)

   it("says when the kernel has no iommufd", function()
      build { cdev = true }
      local d, err, errno = vfio.open("0000:00:03.0", { iommufd = true })
      assert.is_nil(d)
      assert.are.equal(("open 0000:00:03.0: the kernel has no iommufd (CONFIG_IOMMUFD): "
         .. "%s/dev/iommu does not exist; use the group interface (iommufd = false) or a "
         .. "kernel with IOMMUFD (6.2 or later; device cdevs need 6.6)"):format(root), err)
      assert.are.equal(ENODEV, errno)
   end)

   it("says when the device has no cdev", function()
      build { iommu = true }
      local d, err, errno = vfio.open("0000:00:03.0", { iommufd = true })
      assert.is_nil(d)
      assert.matches("^open 0000:00:03.0: the device has no VFIO cdev %(.*/0000:00:03.0/"
         .. "vfio%-dev/vfioN is missing%): a kernel without CONFIG_VFIO_DEVICE_CDEV, or the "
         .. "device is not bound to vfio%-pci", err)
      assert.are.equal(ENODEV, errno)
   end)

   it("says when sysfs names a cdev whose node is missing", function()
      build { iommu = true, cdev = true }
      local d, err, errno = vfio.open("0000:00:03.0", { iommufd = true })
      assert.is_nil(d)
      assert.are.equal(("open 0000:00:03.0: %s/dev/vfio/devices/vfio0 does not exist: "
         .. "%s/sys/bus/pci/devices/0000:00:03.0/vfio-dev names it, but there is no node (is "
         .. "devtmpfs mounted on /dev?)"):format(root, root), err)
      assert.are.equal(ENOENT, errno)
   end)

   it("says what to do without permission on the cdev", function()
      build { iommu = true, cdev = true, node = "file" }
      local script = root .. "/probe.lua"
      writefile(script, ([[
         package.path = %q
         package.cpath = %q
         local vfio = require "vfio"
         vfio.sysfs, vfio.devdir, vfio.iommudev = %q, %q, %q
         local d, err, errno = vfio.open("0000:00:03.0", { iommufd = true })
         io.write(tostring(errno), "\n", err)
      ]]):format(package.path, package.cpath, vfio.sysfs, vfio.devdir, vfio.iommudev))
      sh("chmod -R a+rX " .. root .. " && chmod 600 " .. root .. "/dev/vfio/devices/vfio0")
      local _, out = run("cd " .. os.getenv("PWD") .. " && setpriv --reuid=65534 "
         .. "--regid=65534 --clear-groups lua5.4 " .. script)
      assert.are.equal(("%d\nopen 0000:00:03.0: no permission on %s/dev/vfio/devices/vfio0: "
         .. "run as root or give your user access to it (chown, or a udev rule for vfio "
         .. "devices)"):format(EACCES, root), out)
   end)

   it("names the failing iommufd call, and leaks no fd on the way out", function()
      build { iommu = true, cdev = true, node = "null" }
      collectgarbage(); collectgarbage()
      local before = fds()
      for _ = 1, 3 do
         local d, err, errno = vfio.open("0000:00:03.0", { iommufd = true })
         assert.is_nil(d)
         assert.are.equal(("open 0000:00:03.0: IOMMU_IOAS_ALLOC %s/dev/iommu: Inappropriate "
            .. "ioctl for device"):format(root), err)
         assert.are.equal(ENOTTY, errno)
      end
      assert.are.equal(before, fds())
   end)

   it("takes the interface from LUAVFIO_IOMMUFD unless the options say", function()
      build { cdev = true }
      local _, err = vfio.open("0000:00:03.0")
      assert.matches("/dev/vfio/7 does not exist", err)             -- the group by default
      stdlib.setenv("LUAVFIO_IOMMUFD", "1")
      _, err = vfio.open("0000:00:03.0")
      assert.matches("the kernel has no iommufd", err)
      _, err = vfio.open("0000:00:03.0", { iommufd = false })       -- the options win
      assert.matches("/dev/vfio/7 does not exist", err)
      stdlib.setenv("LUAVFIO_IOMMUFD", "0")
      _, err = vfio.open("0000:00:03.0")
      assert.matches("/dev/vfio/7 does not exist", err)
      _, err = vfio.open("0000:00:03.0", { iommufd = true })
      assert.matches("the kernel has no iommufd", err)
   end)

   it("picks the cdev with \"auto\" only when iommufd and the cdev are there", function()
      build { cdev = true }                                        -- no /dev/iommu
      local _, err = vfio.open("0000:00:03.0", { iommufd = "auto" })
      assert.matches("/dev/vfio/7 does not exist", err)
      sh("rm -rf " .. root); root = nil
      build { iommu = true }                                       -- no cdev
      _, err = vfio.open("0000:00:03.0", { iommufd = "auto" })
      assert.matches("/dev/vfio/7 does not exist", err)
      sh("rm -rf " .. root); root = nil
      build { iommu = true, cdev = true, node = "null" }
      stdlib.setenv("LUAVFIO_IOMMUFD", "auto")
      _, err = vfio.open("0000:00:03.0")
      assert.matches("IOMMU_IOAS_ALLOC", err)
   end)
end)
