-- The iommufd interface on the real kernel (Linux 6.6+ with IOMMUFD and
-- VFIO_DEVICE_CDEV: lab/run --kernel 6.12): /dev/iommu, IOASes and their IOVA ranges, a
-- device cdev bound and attached, edu's DMA engine through the IOMMU, MSI, resets of the
-- virtio-net behind its root port, two devices in one IOAS, one interface at a time
-- (EBUSY), close ordering and no fd leaks. On a kernel without iommufd (the default 6.1
-- lab) every case is pending, with the reason.
local vfio = require "vfio"
local core = vfio.core
local lab = require "support.lab"
local stat = require "posix.sys.stat"
local dirent = require "posix.dirent"
local unistd = require "posix.unistd"

local EBUSY, EINVAL = 16, 22

-- Why this kernel cannot run these specs, or nil.
local function missing()
   if not stat.stat("/dev/iommu") then
      return "no /dev/iommu: this lab kernel has no iommufd (CONFIG_IOMMUFD); run it on "
         .. "Linux 6.6+ (lab/run --kernel 6.12)"
   end
   local edu = lab.need("edu")
   if not stat.stat("/sys/bus/pci/devices/" .. edu.bdf .. "/vfio-dev") then
      return "no VFIO device cdevs (CONFIG_VFIO_DEVICE_CDEV): " .. edu.bdf .. " has no vfio-dev"
   end
   return nil
end

-- it(), pending with the reason when the kernel lacks what these specs need.
local function kit(name, fn)
   it(name, function()
      local why = missing()
      if why then pending(why) return end
      fn()
   end)
end

local function cdev_path(bdf)
   for _, name in ipairs(dirent.dir("/sys/bus/pci/devices/" .. bdf .. "/vfio-dev")) do
      if name:match("^vfio%d+$") then return "/dev/vfio/devices/" .. name end
   end
   error("no cdev for " .. bdf)
end

-- The VFIO and iommufd files this process holds.
local function fd_targets()
   local list = {}
   for _, name in ipairs(dirent.dir("/proc/self/fd")) do
      if name:match("^%d+$") then
         local t = unistd.readlink("/proc/self/fd/" .. name)
         if t and (t:match("^/dev/vfio") or t:match("^/dev/iommu") or t:match("vfio%-device")) then
            list[#list + 1] = t
         end
      end
   end
   table.sort(list)
   return list
end

local fds = require("support.files").open_fds

local function open(name)
   local d = lab.need(name)
   local dev = assert(vfio.open(d.bdf, { iommufd = true }))
   return dev, d
end

-- edu's DMA engine: n bytes from RAM at iova into its buffer and back to iova + n.
local function edu_dma_roundtrip(dev, buf, iova, n)
   local bar = dev:region(vfio.REGION.BAR0)
   dev.config:write16(4, dev.config:read16(4) | 0x6)
   local pattern = {}
   for i = 1, n do pattern[i] = string.char((i * 13 + 5) % 256) end
   pattern = table.concat(pattern)
   buf:write(0, pattern)
   buf:fill(0, n, n)
   local function dma(src, dst, cmd)
      assert.is_true(lab.edu_dma(bar, src, dst, n, cmd))
   end
   dma(iova, 0x40000, 1)          -- RAM -> device buffer
   dma(0x40000, iova + n, 1 | 2)  -- device buffer -> RAM
   return buf:read(n, n) == pattern
end

describe("iommufd", function()
   before_each(function() collectgarbage(); collectgarbage() end)

   kit("opens /dev/iommu and allocates IOASes with usable IOVA ranges", function()
      local fd <close> = assert(core.iommufd())
      assert.are.equal("/dev/iommu", fd:path())
      local a <close> = assert(fd:ioas())
      local b <close> = assert(fd:ioas())
      assert.is_true(a:id() > 0)
      assert.are_not.equal(a:id(), b:id())
      assert.are.equal(fd, a:iommufd())
      local ranges, align = assert(a:iova_ranges())
      assert.is_true(#ranges >= 1)
      assert.are.equal(0, ranges[1].start)
      assert.is_true(align >= 1)
      -- nothing mapped: unmap_all succeeds with 0 bytes, unmap_dma answers 0 as well
      assert.are.equal(0, a:unmap_all())
      assert.are.equal(0, a:unmap_dma(0x100000, 0x1000))
      b:close(); b:close()
      assert.is_true(b:closed())
      assert.has_error(function() b:id() end)
      assert.matches("closed", tostring(b))
   end)

   kit("binds and attaches a device cdev, which then works like a group's device", function()
      local edu = lab.need("edu")
      local path = cdev_path(edu.bdf)
      local fd <close> = assert(core.iommufd())
      local a <close> = assert(fd:ioas())
      local h <close> = assert(core.cdev(path, edu.bdf))
      -- nothing but the bind is allowed before it
      local info, err, errno = h:info()
      assert.is_nil(info)
      assert.matches("^VFIO_DEVICE_GET_INFO " .. edu.bdf .. ": ", err)
      assert.are.equal(EINVAL, errno)
      -- an IOAS id is meaningful only in its own iommufd
      assert.has_error(function() a:attach(h) end,
         "bad argument #1 to 'attach' (device is not bound to this ioas's iommufd (iommufd:bind first))")
      local devid = assert(fd:bind(h))
      assert.is_true(devid > 0)
      local again
      again, err, errno = fd:bind(h)
      assert.is_nil(again)
      assert.matches("^VFIO_DEVICE_BIND_IOMMUFD " .. edu.bdf .. " %(/dev/iommu%): ", err)
      assert.are.equal(EINVAL, errno)
      local full = #assert(a:iova_ranges())
      assert(a:attach(h))
      -- the attached device narrows the ranges: x86's MSI window is never IOVA space
      local ranges = assert(a:iova_ranges())
      assert.is_true(#ranges >= full)
      for _, r in ipairs(ranges) do
         assert.is_false(r.start <= 0xfee00000 and 0xfee00000 <= r.last, "MSI window mappable")
      end
      info = assert(h:info())
      assert.are.equal(9, info.num_regions)
      assert.is_true(info.pci)
      assert.are.equal(0x010000ed, h:region(0):read32(0))
      assert.is_nil(h:group())
      assert(a:detach(h))
      assert.has_error(function() a:detach(h) end)
      assert(a:attach(h))
      local other <close> = assert(core.iommufd())
      local oa <close> = assert(other:ioas())
      assert.has_error(function() oa:attach(h) end)
   end)

   kit("opens a device through vfio.open with the same API", function()
      local dev <close>, d = open("edu")
      assert.are.equal("iommufd", dev.interface)
      assert.are.equal("iommufd", dev.iommu_type)
      assert.are.equal(dev.ioas, dev.container)
      assert.is_nil(dev.group)
      assert.are.equal(d.group, dev.iommu_group)
      assert.is_true(dev.devid > 0)
      assert.matches("^/dev/vfio/devices/vfio%d+$", dev.cdev)
      assert.are.equal(0x11e81234, dev.config:read32(0))
      assert.are.equal(9, dev.num_regions)
      local bar = dev:region(0)
      assert(bar:map())
      assert.are.equal(0x010000ed, bar:read32(0))
      assert(bar:write32(4, 0x12345678))
      assert.are.equal(0xedcba987, bar:read32(4))
   end)

   kit("maps an edu DMA buffer in the IOAS and runs edu's DMA engine through the IOMMU", function()
      local dev <close> = open("edu")
      local iova, n = 0x100000, 2048
      local buf = vfio.dmabuf(2 * n)
      assert(dev.container:map_dma(buf, iova, { read = true, write = true }))
      -- the IOAS keeps the mapped buffer alive: the device can still reach it
      local weak = setmetatable({ buf }, { __mode = "v" })
      buf = nil -- luacheck: ignore 311
      collectgarbage(); collectgarbage()
      assert.is_truthy(weak[1])
      buf = weak[1]
      assert.is_true(edu_dma_roundtrip(dev, buf, iova, n))
      -- mapping the same IOVA twice is refused, naming the call
      local ok, err, errno = dev.container:map_dma(vfio.dmabuf(4096), iova)
      assert.is_nil(ok)
      assert.matches("^IOMMU_IOAS_MAP /dev/iommu %(ioas %d+ iova 0x100000 size 0x1000%): ", err)
      assert.are.equal(17, errno) -- EEXIST
      assert.are.equal(buf:size(), dev.container:unmap_dma(iova, buf:size()))
      assert.are.equal(0, dev.container:unmap_dma(iova, buf:size()))
      -- unmapped, it is no longer kept
      buf = nil -- luacheck: ignore 311
      collectgarbage(); collectgarbage()
      assert.is_nil(weak[1])
      -- read-only for the device, and unmap_all
      local ro <close> = vfio.dmabuf(4096)
      assert(dev.container:map_dma(ro, 0x200000, { read = true }))
      assert(dev.container:map_dma(vfio.dmabuf(4096), 0x300000))
      assert.are.equal(0x2000, dev.container:unmap_all())
      assert.has_error(function() dev.container:map_dma(ro, 0x200000, {}) end)
      assert.has_error(function() dev.container:map_dma(0x1000, 0x200000) end)
   end)

   -- Issue 21, item 4: an IOAS pins a mapping's pages only while a device is attached, and
   -- at attach pins whatever the mapped user address holds then. Detach, close the buffer,
   -- let a new allocation land at its address, attach again: the device would reach memory
   -- never mapped for it. The close is refused instead, and nothing can land there.
   kit("refuses to free a buffer the IOAS maps while the device is detached (detach, close, reuse, attach)", function()
      local dev <close> = open("edu")
      local a, iova, n = dev.container, 0x100000, 1024
      local buf = vfio.dmabuf(4096)
      assert(a:map_dma(buf, iova, { read = true, write = true }))
      assert(a:detach(dev.handle))
      -- detached: no domain pins the pages now, and the close is still refused
      local ok, err, errno = buf:close()
      assert.is_nil(ok)
      assert.are.equal(EBUSY, errno)
      assert.are.equal(("close vfio.dmabuf: mapped for device DMA by 1 IOMMU mapping(s) (the latest: "
         .. "ioas %d of /dev/iommu at iova 0x100000); unmap_dma it there first, or close that "
         .. "container or ioas"):format(a:id()), err)
      assert.is_false(buf:closed())
      -- new allocations (the reuse) cannot take its address: it is still allocated
      local fresh = {}
      for i = 1, 16 do
         fresh[i] = vfio.dmabuf(4096)
         fresh[i]:fill(0xee)
      end
      assert(a:attach(dev.handle))
      -- edu's DMA engine reaches the mapped buffer, and none of the fresh ones
      assert.is_true(edu_dma_roundtrip(dev, buf, iova, n))
      for i = 1, 16 do assert.are.equal(("\238"):rep(4096), fresh[i]:read(0, 4096), i) end
      -- left to the collector while mapped, the buffer's memory still stays until the unmap
      local weak = setmetatable({ buf }, { __mode = "v" })
      buf = nil -- luacheck: ignore 311
      collectgarbage(); collectgarbage()
      assert.is_truthy(weak[1])
      buf = weak[1]
      -- unmapped, it closes
      assert.are.equal(4096, a:unmap_dma(iova, 4096))
      assert.is_nil((buf:close()))
      assert.is_true(buf:closed())
      for i = 1, 16 do fresh[i]:close() end
   end)

   kit("closing the IOAS unmaps what it maps and releases the buffers", function()
      local edu = lab.need("edu")
      local fd <close> = assert(core.iommufd())
      local a = assert(fd:ioas())
      local h <close> = assert(core.cdev(cdev_path(edu.bdf), edu.bdf))
      assert(fd:bind(h))
      assert(a:attach(h))
      local buf = vfio.dmabuf(4096)
      assert(a:map_dma(buf, 0x100000))
      assert.are.equal(EBUSY, select(3, buf:close()))
      assert(a:detach(h))
      a:close()
      assert.is_nil((buf:close()))
      assert.is_true(buf:closed())
   end)

   kit("refuses to unmap or close guest RAM the IOAS maps, even with the device detached", function()
      local kvm <close> = core.kvm_open()
      if not kvm then pending("no /dev/kvm in this lab") return end
      local vm = assert(kvm:create_vm())
      local slot = assert(vm:add_ram(0, 0x200000))
      local dev <close> = open("edu")
      local a, iova, n = dev.container, 0x100000, 1024
      assert(a:map_dma(vm, iova, { gpa = 0x100000, size = 0x10000, read = true, write = true }))
      assert(a:detach(dev.handle))
      local ok, err, errno = vm:unmap(slot)
      assert.is_nil(ok)
      assert.are.equal(EBUSY, errno)
      assert.matches("^unmap memory slot %d+: its guest RAM is mapped for device DMA by 1 IOMMU", err)
      ok, err, errno = vm:close()
      assert.is_nil(ok)
      assert.are.equal(EBUSY, errno)
      assert.matches("^close vfio.vm: guest RAM in memory slot %d+ is mapped for device DMA", err)
      assert(a:attach(dev.handle))
      -- edu's DMA engine reads and writes the guest's RAM through the IOAS
      local pattern = {}
      for i = 1, n do pattern[i] = string.char((i * 5 + 9) % 256) end
      pattern = table.concat(pattern)
      vm:write(0x100000, pattern)
      local bar = dev:region(vfio.REGION.BAR0)
      dev.config:write16(4, dev.config:read16(4) | 0x6)
      assert.is_true(lab.edu_dma(bar, iova, 0x40000, n, 1))
      assert.is_true(lab.edu_dma(bar, 0x40000, iova + n, n, 1 | 2))
      assert.are.equal(pattern, vm:read(0x100000 + n, n))
      assert.are.equal(0x10000, a:unmap_dma(iova, 0x10000))
      assert(vm:unmap(slot))
      assert.is_nil((vm:close()))
   end)

   kit("delivers edu's MSI through an eventfd", function()
      local dev <close> = open("edu")
      local bar = dev:region(0)
      dev.config:write16(4, dev.config:read16(4) | 0x6)
      local e <close> = vfio.eventfd()
      assert(dev:enable_irq(vfio.IRQ.MSI, e))
      bar:write32(0x60, 0x5)
      assert.are.equal(1, e:wait(3000))
      assert.are.equal(0x5, bar:read32(0x24))
      bar:write32(0x64, 0x5)
      assert(dev:disable_irq(vfio.IRQ.MSI))
   end)

   kit("resets the virtio-net behind its root port, and hot-resets it through the iommufd", function()
      local dev <close>, d = open("virtio-net-pci")
      assert(dev:reset())
      local info = assert(dev:hot_reset_info())
      assert.is_true(info.devids)
      assert.is_true(info.owned)
      local found = false
      for _, dep in ipairs(info.devices) do
         assert.is_nil(dep.group)
         if dep.bdf == d.bdf then
            found = true
            assert.are.equal(dev.devid, dep.devid)
         end
      end
      assert.is_true(found)
      -- a cdev proves ownership through its iommufd: the call takes no group fds
      local real = require("posix.stdlib").realpath("/sys/bus/pci/devices/" .. dev.bdf)
      local port = real:match("([^/]+)/[^/]+$")
      local f = assert(io.open("/sys/bus/pci/devices/" .. port .. "/max_link_speed"))
      local gts = tonumber(f:read("l"):match("^([%d.]+)"))
      f:close()
      local ok, err, errno = dev:hot_reset()
      if gts <= 5 then
         assert.is_true(ok, err)
      else
         assert.is_nil(ok)
         assert.are.equal(25, errno)
      end
      assert.are.equal(0x10411af4, dev.config:read32(0))
      assert(dev:reset())
   end)

   kit("shares one iommufd and one IOAS between devices", function()
      local a <close> = open("edu")
      local b = open("nvme")
      assert.are.equal(a.container, b.container)
      assert.are.equal(a.iommufd, b.iommufd)
      assert.are_not.equal(a.devid, b.devid)
      -- the same device twice: one cdev, bound once
      local c <close> = open("edu")
      assert.are.equal(a.handle, c.handle)
      assert.are.equal(a.devid, c.devid)
      c:close()
      assert.are.equal(0x010000ed, a:region(0):read32(0))
      local buf <close> = vfio.dmabuf(4096)
      assert(a.container:map_dma(buf, 0x100000))
      b:close()
      -- the IOAS outlives b with its mappings: edu's DMA still works
      assert.is_true(edu_dma_roundtrip(a, buf, 0x100000, 1024))
      assert(a.container:unmap_dma(0x100000, 4096))
   end)

   kit("uses a device through one interface at a time (EBUSY)", function()
      local edu = lab.need("edu")
      do
         -- the group node held open: bind refuses
         local g <close> = assert(core.group(edu.group))
         assert.is_false(g:closed())
         local dev, err, errno = vfio.open(edu.bdf, { iommufd = true })
         assert.is_nil(dev)
         assert.are.equal(("open %s: VFIO_DEVICE_BIND_IOMMUFD: the device's IOMMU group is "
            .. "open through /dev/vfio/%d by another process or this one: a device is used "
            .. "through one interface at a time"):format(edu.bdf, edu.group), err)
         assert.are.equal(EBUSY, errno)
      end
      assert.are.same({}, fd_targets())
      -- and the other way round: a bound cdev keeps the group node busy
      local dev <close> = open("edu")
      assert.are.equal("iommufd", dev.interface)
      local g, gerr, gerrno = core.group(edu.group)
      assert.is_nil(g)
      assert.matches("^open group /dev/vfio/" .. edu.group .. ": ", gerr)
      assert.are.equal(EBUSY, gerrno)
      local d2, err, errno = vfio.open(edu.bdf, { iommufd = false })
      assert.is_nil(d2)
      assert.are.equal(("open %s: /dev/vfio/%d is busy: this process uses %s of IOMMU group "
         .. "%d through its cdev (iommufd): a device is used through one interface at a time")
         :format(edu.bdf, edu.group, edu.bdf, edu.group), err)
      assert.are.equal(EBUSY, errno)
   end)

   kit("gives KVM's VFIO device the cdev file", function()
      local kvm <close> = core.kvm_open()
      if not kvm then pending("no /dev/kvm in this lab") return end
      local vm <close> = assert(kvm:create_vm())
      assert(vm:vfio_device())
      local dev <close> = open("edu")
      assert(vm:vfio_group_add(dev:fileno()))
      assert(vm:vfio_group_del(dev:fileno()))
   end)

   kit("closes in any order and leaks no file descriptors", function()
      local edu = lab.need("edu")
      -- raw objects, closed parent first: the kernel keeps what a child still needs
      do
         local fd = assert(core.iommufd())
         local a = assert(fd:ioas())
         local h = assert(core.cdev(cdev_path(edu.bdf), edu.bdf))
         assert(fd:bind(h))
         assert(a:attach(h))
         local buf = vfio.dmabuf(4096)
         assert(a:map_dma(buf, 0x100000))
         fd:close()
         assert.has_error(function() a:map_dma(buf, 0x200000) end,
            "calling 'map_dma' on bad self (the ioas's iommufd is closed)")
         a:close()
         assert.are.equal(0x010000ed, h:region(0):read32(0))
         h:close()
      end
      -- dropped without closing: the collector releases everything
      do
         local fd = assert(core.iommufd())
         local a = assert(fd:ioas())
         local h = assert(core.cdev(cdev_path(edu.bdf), edu.bdf))
         assert(fd:bind(h))
         assert(a:attach(h))
         fd, a = nil, nil -- luacheck: ignore 311
         collectgarbage(); collectgarbage()
         assert.are.equal(0x010000ed, h:region(0):read32(0)) -- h keeps them alive
         h = nil -- luacheck: ignore 311
      end
      collectgarbage(); collectgarbage()
      assert.are.same({}, fd_targets())
      -- many vfio.open cycles, half left to the collector
      local names = { "edu", "nvme", "e1000e", "qemu-xhci" }
      local warm = open("edu")
      warm:close()
      local before = fds()
      for i = 1, 24 do
         local dev = open(names[i % #names + 1])
         local bar = dev:region(0)
         if bar.mappable then assert(bar:map()) end
         local buf = vfio.dmabuf(4096)
         assert(dev.container:map_dma(buf, 0x100000 + i * 0x1000))
         if i % 2 == 0 then dev:close() else dev = nil; collectgarbage() end -- luacheck: ignore 311
      end
      collectgarbage(); collectgarbage()
      assert.are.equal(before, fds())
      assert.are.same({}, fd_targets())
   end)
end)
