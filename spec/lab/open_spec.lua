-- vfio.open and friends against the real kernel: resolving addresses, sharing containers
-- and groups, lifetimes, no fd leaks, binding and the errors users meet.
local vfio = require "vfio"
local lab = require "support.lab"
local dirent = require "posix.dirent"

local fds = require("support.files").open_fds

local function fd_targets()
   local unistd = require "posix.unistd"
   local list = {}
   for _, name in ipairs(dirent.dir("/proc/self/fd")) do
      if name:match("^%d+$") then
         local t = unistd.readlink("/proc/self/fd/" .. name)
         if t and (t:match("^/dev/vfio") or t:match("vfio%-device")) then list[#list + 1] = t end
      end
   end
   table.sort(list)
   return list
end

describe("vfio.open", function()
   before_each(function() collectgarbage() end)

   it("opens by full address, short address and sysfs path", function()
      local d = lab.need("edu")
      for _, how in ipairs { d.bdf, d.bdf:sub(6), "/sys/bus/pci/devices/" .. d.bdf } do
         local dev <close> = assert(vfio.open(how))
         assert.are.equal(d.bdf, dev.bdf)
         assert.are.equal(0x11e81234, dev.config:read32(0))
      end
   end)

   it("exposes regions, irq info, constants and the container", function()
      local dev <close> = assert(vfio.open(lab.need("edu").bdf))
      assert.are.equal(9, dev.num_regions)
      local bar = dev:region(vfio.REGION.BAR0)
      assert.are.equal(bar, dev:region(0)) -- cached
      assert.are.equal(1 << 20, bar.size)
      assert.is_number(bar.offset)
      assert.is_true(bar.readable and bar.writable and bar.mappable)
      assert.is_truthy(dev:region(vfio.REGION.VGA).error)
      assert.are.equal(9, #dev:regions())
      do
         local r <close> = dev:region(0)
         assert.is_false(r:closed())
      end
      assert.are.equal(0x010000ed, dev:region(0):read32(0)) -- a fresh one replaces it
      assert.are.equal(1, dev:irq_info(vfio.IRQ.MSI).count)
      if dev.interface == "iommufd" then -- LUAVFIO_IOMMUFD=1: the IOAS is the container
         assert.are.equal("iommufd", dev.iommu_type)
         assert.is_truthy(dev.container:iova_ranges())
      else
         assert.are.equal("group", dev.interface)
         assert.are.equal("type1v2", dev.iommu_type)
         assert.is_truthy(dev.container:iommu_info())
      end
      assert.has_error(function() dev:region(9) end)
      assert.has_error(function() dev:region(-1) end)
      assert.has_error(function() dev:irq_info("x") end)
   end)

   it("shares one container between devices and one group per group number", function()
      local a <close> = assert(vfio.open(lab.need("edu").bdf))
      local b <close> = assert(vfio.open(lab.need("nvme").bdf))
      local c <close> = assert(vfio.open(lab.need("edu").bdf))
      assert.are.equal(a.container, b.container)
      if a.interface == "iommufd" then -- one IOAS; one cdev per device, bound once
         assert.are.equal(a.handle, c.handle)
         assert.are_not.equal(a.handle, b.handle)
         assert.are.equal(a.iommufd, b.iommufd)
         return
      end
      assert.are.equal(a.group, c.group)
      assert.are_not.equal(a.group, b.group)
      assert.is_true(a.group:status().container_set)
   end)

   it("keeps its group and container alive while the device lives", function()
      local dev = assert(vfio.open(lab.need("edu").bdf))
      -- through iommufd the parents are the iommufd and the IOAS (dev.ioas, the container)
      local k1 = dev.interface == "iommufd" and "iommufd" or "group"
      local weak = setmetatable({ dev[k1], dev.container }, { __mode = "v" })
      dev[k1], dev.container, dev.ioas = nil, nil, nil -- drop the Lua references; the C handle keeps them
      collectgarbage(); collectgarbage()
      assert.is_truthy(weak[1])
      assert.is_truthy(weak[2])
      assert.are.equal(0x010000ed, dev:region(0):read32(0))
      dev[k1], dev.container = weak[1], weak[2]
      if k1 == "iommufd" then dev.ioas = weak[2] end
      dev:close()
   end)

   it("closes idempotently, through close, __close and __gc", function()
      local dev = assert(vfio.open(lab.need("edu").bdf))
      local bar = dev:region(0)
      assert(bar:map())
      dev:close()
      dev:close()
      assert.has_error(function() dev:region(0) end)
      assert.has_error(function() bar:read32(0) end) -- unmapped with the device
      assert.matches("closed", tostring(dev))
      do
         local d2 <close> = assert(vfio.open(lab.need("edu").bdf))
         assert.are.equal(lab.need("edu").bdf, d2.bdf)
      end
      assert.are.same({}, fd_targets())
      local d3 = assert(vfio.open(lab.need("edu").bdf))
      assert.are.equal(lab.need("edu").bdf, d3.bdf)
      -- Dropping the only reference is the point: the collection must release every fd.
      d3 = nil -- luacheck: ignore 311
      collectgarbage(); collectgarbage()
      assert.are.same({}, fd_targets())
   end)

   it("leaks no file descriptors over many open/close cycles", function()
      local names = { "edu", "nvme", "e1000e", "qemu-xhci" }
      local warm = assert(vfio.open(lab.need("edu").bdf))
      warm:close()
      local before = fds()
      for i = 1, 40 do
         local dev = assert(vfio.open(lab.need(names[i % #names + 1]).bdf))
         local bar = dev:region(0)
         if bar.mappable then assert(bar:map()) end
         local e = vfio.eventfd()
         e:close()
         -- every other device is left to the collector instead of closed
         if i % 2 == 0 then dev:close() else dev = nil; collectgarbage() end -- luacheck: ignore 311
      end
      collectgarbage()
      assert.are.equal(before, fds())
      assert.are.same({}, fd_targets())
   end)

   it("says what to do when the device is not bound to vfio-pci", function()
      local d = lab.need("pci-testdev")
      assert(vfio.unbind(d.bdf, { probe = false }))
      finally(function() assert(vfio.bind(d.bdf)) end)
      assert.is_nil(vfio.driver_of(d.bdf))
      local dev, err, errno = vfio.open(d.bdf)
      assert.is_nil(dev)
      assert.matches("open " .. d.bdf .. ": device is not bound to any driver, not to "
         .. "vfio%-pci: call vfio.bind%(\"" .. d.bdf .. "\"%) first", err)
      assert.are.equal(19, errno)
      assert(vfio.bind(d.bdf))
      assert.are.equal("vfio-pci", vfio.driver_of(d.bdf))
      assert(vfio.bind(d.bdf)) -- already bound: nothing to do
      local dev2 <close> = assert(vfio.open(d.bdf))
      assert.are.equal(0x00051b36, dev2.config:read32(0))
   end)

   it("reports a missing device and a busy group with errno", function()
      local dev, err, errno = vfio.open("0000:ff:1f.7")
      assert.is_nil(dev)
      assert.matches("no such PCI device", err)
      assert.are.equal(2, errno)
      -- A group fd is exclusive to one opener: the raw API sees EBUSY while vfio has it.
      local d = lab.need("edu")
      local held <close> = assert(vfio.open(d.bdf))
      local g, gerr, gerrno = vfio.core.group(d.group)
      assert.is_nil(g)
      assert.matches("open group /dev/vfio/" .. d.group, gerr)
      assert.are.equal(16, gerrno)
      held:close()
      -- and the other way round: vfio.open explains a group held through the raw API
      local raw <close> = assert(vfio.core.group(d.group))
      local dev2, berr, berrno = vfio.open(d.bdf)
      assert.is_nil(dev2)
      if held.interface == "iommufd" then -- the cdev's bind meets the open group
         assert.are.equal(("open %s: VFIO_DEVICE_BIND_IOMMUFD: the device's IOMMU group is "
            .. "open through /dev/vfio/%d by another process or this one: a device is used "
            .. "through one interface at a time"):format(d.bdf, d.group), berr)
      else
         assert.are.equal(("open %s: /dev/vfio/%d is busy: another process (a VM?) or "
            .. "another part of this one holds the group open"):format(d.bdf, d.group), berr)
      end
      assert.are.equal(16, berrno)
      raw:close()
      assert.has_error(function() vfio.open("not-a-device") end)
      assert.has_error(function() vfio.open(42) end)
   end)

   it("says what to do without permission on the group node", function()
      local d = lab.need("edu")
      local cmd = ("setpriv --reuid=65534 --regid=65534 --clear-groups lua5.4 -e %q 2>&1")
         :format(([[package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
            package.cpath = "build/?.so;" .. package.cpath
            local d, err, errno = require("vfio").open(%q)
            io.write(tostring(errno), " ", err)]]):format(d.bdf))
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      p:close()
      local probe <close> = assert(vfio.open(d.bdf)) -- the interface this run uses
      if probe.interface == "iommufd" then
         assert.are.equal(("13 open %s: no permission on %s: run as root or give your user "
            .. "access to it (chown, or a udev rule for vfio devices)"):format(d.bdf,
               probe.cdev), out)
         return
      end
      assert.are.equal(("13 open %s: no permission on /dev/vfio/%d: run as root or give "
         .. "your user access to it (chown, or a udev rule for the vfio group)"):format(
            d.bdf, d.group), out)
   end)

   it("lists PCI devices with ids, class, driver and group", function()
      local list = assert(vfio.devices())
      local by = {}
      for _, d in ipairs(list) do by[d.bdf] = d end
      for _, d in ipairs(lab.devices()) do
         local e = by[d.bdf]
         assert.is_truthy(e, d.bdf)
         assert.are.equal(d.id, e.id)
         assert.are.equal(d.class, e.class)
         assert.are.equal(d.group, e.group)
         assert.are.equal("vfio-pci", e.driver)
      end
   end)

   it("routes an interrupt with enable_irq and works with luaposix poll", function()
      local poll = require "posix.poll"
      local dev <close> = assert(vfio.open(lab.need("edu").bdf))
      dev.config:write16(4, dev.config:read16(4) | 0x6)
      local bar = dev:region(0)
      local e <close> = vfio.eventfd()
      assert(dev:enable_irq(vfio.IRQ.MSI, { e }))
      bar:write32(0x60, 1)
      local fds_ = { [e:fileno()] = { events = { IN = true } } }
      assert.are.equal(1, poll.poll(fds_, 3000))
      assert.is_true(fds_[e:fileno()].revents.IN)
      assert.are.equal(1, e:read())
      bar:write32(0x64, 1)
      assert(dev:disable_irq(vfio.IRQ.MSI))
   end)
end)
