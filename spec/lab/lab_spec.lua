-- The lab checks itself: every default device is bound to vfio-pci with its group node,
-- /dev/kvm exists, and what lab/run publishes matches sysfs.
local lab = require "support.lab"
local unistd = require "posix.unistd"
local stat = require "posix.sys.stat"
local libgen = require "posix.libgen"
local dirent = require "posix.dirent"

local function sysfs(bdf, attr)
   local f = assert(io.open(("/sys/bus/pci/devices/%s/%s"):format(bdf, attr)))
   local s = f:read("l"); f:close()
   return s
end

local function link_name(bdf, attr)
   local target = unistd.readlink(("/sys/bus/pci/devices/%s/%s"):format(bdf, attr))
   return target and libgen.basename(target)
end

local function default_models()
   local p = assert(io.popen("lab/run --list-defaults"))
   local models = {}
   for line in p:lines() do
      models[#models + 1] = line:gsub("^port:", ""):match("^[^,]+")
   end
   p:close()
   return models
end

describe("the lab", function()
   it("runs inside lab/run with a published device list", function()
      assert.is_true(lab.inside)
      assert.is_truthy(os.getenv("LUAVFIO_LAB_DEVICES"))
      assert.is_true(#lab.devices() > 0)
   end)

   it("binds every default device to vfio-pci and creates its group node", function()
      local models = default_models()
      assert.are.equal(6, #models)
      for _, model in ipairs(models) do
         local d = lab.need(model)
         assert.are.equal("vfio-pci", link_name(d.bdf, "driver"), model)
         local st = stat.stat("/dev/vfio/" .. d.group)
         assert.is_truthy(st, "/dev/vfio/" .. d.group)
         assert.is_true(stat.S_ISCHR(st.st_mode) ~= 0)
      end
   end)

   it("has /dev/vfio/vfio and /dev/kvm", function()
      for _, node in ipairs { "/dev/vfio/vfio", "/dev/kvm" } do
         local st = stat.stat(node)
         assert.is_truthy(st, node)
         assert.is_true(stat.S_ISCHR(st.st_mode) ~= 0, node)
      end
   end)

   it("publishes exactly the vfio-pci devices, with sysfs's ids, class and group", function()
      local published = {}
      for _, d in ipairs(lab.devices()) do
         published[d.bdf] = true
         assert.are.equal(d.vendor, tonumber(sysfs(d.bdf, "vendor")))
         assert.are.equal(d.device, tonumber(sysfs(d.bdf, "device")))
         assert.are.equal(d.class, tonumber(sysfs(d.bdf, "class")))
         assert.are.equal(tostring(d.group), link_name(d.bdf, "iommu_group"))
      end
      for _, bdf in ipairs(dirent.dir("/sys/bus/pci/devices")) do
         if bdf:match("^%x+:") then
            local bound = link_name(bdf, "driver") == "vfio-pci"
            assert.are.equal(bound, published[bdf] == true, bdf)
         end
      end
   end)

   it("names devices behind a root port by what they are", function()
      local net = lab.need("virtio-net-pci")
      assert.are.equal(0x1af4, net.vendor)
      assert.are.equal(0x1041, net.device)
      assert.is_falsy(net.bdf:match("^0000:00:"), "virtio-net sits behind its root port")
   end)
end)
