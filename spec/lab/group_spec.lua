-- Several devices in one IOMMU group: a group is viable only when every member is on
-- vfio-pci (or no driver), vfio.open names the member that blocks it, and once it is
-- viable several devices come from the one group and container. Needs two functions of
-- one slot, which the default lab lacks:
--   LUAVFIO_LAB_ARGS='--device virtio-net-pci,addr=0x10.0,multifunction=on,disable-legacy=on
--                     --device edu,addr=0x10.1' spec/run lab
local vfio = require "vfio"
local lab = require "support.lab"

local LAB_ARGS = "--device virtio-net-pci,addr=0x10.0,multifunction=on,disable-legacy=on "
   .. "--device edu,addr=0x10.1"

-- An edu outside the published set that shares its group with a function on a host
-- driver: the pair the LAB_ARGS above create.
local function find_pair()
   local published = {}
   for _, d in ipairs(lab.devices()) do published[d.bdf] = true end
   local by_group = {}
   for _, d in ipairs(assert(vfio.devices())) do
      if d.group then
         by_group[d.group] = by_group[d.group] or {}
         table.insert(by_group[d.group], d)
      end
   end
   for _, members in pairs(by_group) do
      if #members == 2 then
         local edu, other
         for _, d in ipairs(members) do
            if d.id == "1234:11e8" and not published[d.bdf] then edu = d else other = d end
         end
         if edu and other and other.driver and other.driver ~= "vfio-pci" then
            return edu, other
         end
      end
   end
end

-- The pair, or a pending spec that says what the lab lacks; afterwards both functions are
-- left as the lab made them: edu on no driver, the other on its own host driver.
local function take_pair()
   local edu, other = find_pair()
   if not edu then
      pending("needs LUAVFIO_LAB_ARGS='" .. LAB_ARGS .. "'")
      return
   end
   local host_driver = other.driver
   finally(function()
      collectgarbage()
      assert(vfio.unbind(edu.bdf))
      assert(vfio.unbind(other.bdf))
      assert.are.equal(host_driver, vfio.driver_of(other.bdf))
   end)
   return edu, other, host_driver
end

describe("a group with two devices", function()
   it("is refused while a member has a host driver, then serves both devices", function()
      local edu, other, host_driver = take_pair()
      if not edu then return end
      assert(vfio.bind(edu.bdf))
      local dev, err, errno = vfio.open(edu.bdf)
      assert.is_nil(dev)
      assert.are.equal(("open %s: IOMMU group %d is not viable: other devices in the group "
         .. "are bound to host drivers: %s (%s); bind them to vfio-pci (vfio.bind) or unbind "
         .. "them"):format(edu.bdf, edu.group, other.bdf, host_driver), err)
      assert.are.equal(16, errno)

      assert(vfio.bind(other.bdf))
      local a <close> = assert(vfio.open(edu.bdf))
      local b <close> = assert(vfio.open(other.bdf))
      assert.are.equal(a.container, b.container)
      if a.interface == "iommufd" then -- no group object: each device has its cdev
         assert.are.equal(edu.group, a.iommu_group)
         assert.are.equal(edu.group, b.iommu_group)
      else
         assert.are.equal(a.group, b.group)
         assert.are.equal(edu.group, a.group:number())
      end
      assert.are.equal(0x010000ed, a:region(0):read32(0))
      assert.are.equal(0x1af4, b.config:read16(0))
      a:close()
      -- the group stays open for the device still using it
      if b.group then assert.is_false(b.group:closed()) end
      assert.are.equal(0x1af4, b.config:read16(0))
   end)

   it("passes both functions into one guest slot, where the guest finds function 1", function()
      local edu, other = take_pair()
      if not edu then return end
      assert(vfio.bind(edu.bdf))
      assert(vfio.bind(other.bdf))
      local guest = require "support.guest"
      -- edu (host function 1) first: the functions keep their host numbers all the same,
      -- and the guest test program scans function 1 only because function 0 (virtio-net)
      -- says the slot is multi-function
      local out, code = guest.ours(edu.bdf, "--device " .. other.bdf)
      assert.are.equal(0, code, out)
      assert.matches("FOUND 00:04%.1 1234:11e8", out)
      local r = guest.parse(out)
      for _, name in ipairs(guest.EDU_TESTS) do
         assert.are.equal("PASS", r.tests[name], name .. " in:\n" .. out)
      end
      local plan = io.popen(("lua5.4 passthrough.lua --plan --device %s --device %s 2>&1")
         :format(other.bdf, edu.bdf)):read("a")
      assert.matches("%-> guest 00:04%.0", plan)
      assert.matches("%-> guest 00:04%.1", plan)
   end)
end)
