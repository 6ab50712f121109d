---
-- luavfio: Linux VFIO device passthrough from Lua. The C half is vfio.core; this module
-- adds the policy users want: open a device by its PCI address, share containers and
-- groups, explain the errors people actually hit, and bind devices to vfio-pci.
-- @module vfio
local core = require "vfio.core"
local pcibus = require "vfio.pcibus"
local mdev = require "vfio.mdev"
local migration = require "vfio.migration"
local host = require "vfio.host"
local device_methods = require "vfio.device_methods"

local vfio = {
   core = core,
   _VERSION = core._VERSION,
   REGION = core.REGION,
   IRQ = core.IRQ,
   FEATURE = core.FEATURE,
   PAGE_SIZE = core.PAGE_SIZE,
   --- vfio.core.eventfd: a non-blocking eventfd object.
   -- @function eventfd
   eventfd = core.eventfd,
   --- vfio.core.dmabuf: page-aligned, zeroed memory to map for device DMA.
   -- @function dmabuf
   dmabuf = core.dmabuf,
   --- vfio.core.container: a VFIO container.
   -- @function container
   container = core.container,
   --- vfio.core.group: a VFIO group by number or path.
   -- @function group
   group = core.group,
   mdev = mdev,            -- mediated devices: parents, types, create, remove
   migration = migration,  -- the migration state machine, save and load
   host = host,            -- what the host uses a device for; the host check
   -- Where sysfs, procfs (mounts, swaps), the VFIO group nodes (and devdir/devices/, the
   -- device cdevs), iommufd's node and KVM's live; specs point these at fake trees.
   sysfs = "/sys",
   procfs = "/proc",
   devdir = "/dev/vfio",
   iommudev = "/dev/iommu",
   kvmdev = "/dev/kvm",
}

local ENOENT, EACCES, EPERM, ENODEV, EBUSY, EINVAL = 2, 13, 1, 19, 16, 22

-- sysfs work (the device list, drivers, groups, readlink, raw writes) needs luaposix,
-- which pcibus loads on first use.
local px = pcibus.posix
local basename = pcibus.basename

local BDF = pcibus.BDF

-- "0000:00:03.0", "00:03.0" or a sysfs path of the device -> canonical BDF; an mdev's
-- UUID (or its sysfs path) -> the UUID in lower case. Raises on anything else: a
-- malformed address is a programming error, not a system failure.
local function resolve(x, level)
   if type(x) ~= "string" then
      error(("bad argument #1 (PCI address or sysfs path expected, got %s)"):format(type(x)),
         level or 3)
   end
   local s = x:lower()
   local bdf = pcibus.parse_bdf(s)
   if bdf then return bdf end
   if mdev.is_uuid(s) then return s end
   if x:sub(1, 1) == "/" then
      local real = px().realpath(x) or x
      local b = basename(real)
      if b and (b:lower():match(BDF) or mdev.is_uuid(b)) then return b:lower() end
   end
   error(("bad argument #1 ('%s' is neither a PCI address like 0000:00:03.0, an mdev UUID "
      .. "nor a device's sysfs path)"):format(x), level or 3)
end

local function devpath(bdf) return pcibus.devpath(vfio.sysfs, bdf) end

local function exists(path) return px().stat(path) ~= nil end

local link_base = pcibus.link_base
local function driver_of(bdf) return pcibus.driver(vfio.sysfs, bdf) end
local function group_of(bdf) return pcibus.group(vfio.sysfs, bdf) end

-- vfio-pci and its variant drivers (mlx5_vfio_pci...) all hand the device to VFIO.
local function is_vfio_driver(d) return d ~= nil and d:find("vfio", 1, true) ~= nil end

-- A write to sysfs is one write(2): the kernel acts on it and reports errors there.
local write_sysfs = pcibus.write

local fail = require("vfio.errors").fail

-- Devices of an IOMMU group held by a host driver: why the group is not viable.
local function group_blockers(n)
   local dir = ("%s/kernel/iommu_groups/%d/devices"):format(vfio.sysfs, n)
   local list = {}
   local ok, iter = pcall(px().dir, dir)
   if not ok or type(iter) ~= "table" then return list end
   for _, name in ipairs(iter) do
      if name ~= "." and name ~= ".." then
         local drv = link_base(dir .. "/" .. name .. "/driver")
         -- Bridges stay with pcieport; the kernel accepts that driver in a group.
         if drv and not is_vfio_driver(drv) and drv ~= "pcieport" and drv ~= "pci-stub" then
            list[#list + 1] = ("%s (%s)"):format(name, drv)
         end
      end
   end
   table.sort(list)
   return list
end
--- For vfio.open's messages and specs: the devices of IOMMU group n held by a host
-- driver, as sorted `"BDF (driver)"` strings (why the group is not viable).
-- @function _group_blockers
vfio._group_blockers = group_blockers

---------------------------------------------------------------------------------------
-- The iommufd interface (Linux 6.6+): the device's own cdev, /dev/vfio/devices/vfioN,
-- bound to one iommufd (/dev/iommu) per process and attached to one shared I/O address
-- space, the IOAS, which plays the container's part (dev.container). Shared like
-- containers are: weak caches, released when the last device closes. A cdev can be bound
-- only once, so devices opened twice share one handle.

local iommu = setmetatable({}, { __mode = "v" })  -- .fd (the iommufd), .ioas
local ioas_users = setmetatable({}, { __mode = "k" })
local cdevs = setmetatable({}, { __mode = "v" })  -- bdf -> handle
local cdev_users = setmetatable({}, { __mode = "k" })
local cdev_info = {}                               -- bdf -> {group =, devid =, path =}

-- The interface opts (or LUAVFIO_IOMMUFD) ask for: false (group), true or "auto".
local function interface_choice(opts)
   if opts ~= nil and type(opts) ~= "table" then
      error(("bad argument #2 to 'open' (table expected, got %s)"):format(type(opts)), 3)
   end
   local v = opts and opts.iommufd
   if v == nil then
      local e = os.getenv("LUAVFIO_IOMMUFD")
      if e == nil or e == "" or e == "0" then return false end
      return e == "auto" and "auto" or true
   end
   if v ~= true and v ~= false and v ~= "auto" then
      error(("bad argument #2 to 'open' (iommufd must be true, false or \"auto\", got %s)")
         :format(tostring(v)), 3)
   end
   return v
end

-- The name of the device's cdev (vfioN) from its sysfs vfio-dev directory, or nil.
local function cdev_name(bdf)
   local ok, list = pcall(px().dir, devpath(bdf) .. "/vfio-dev")
   if not ok or type(list) ~= "table" then return nil end
   table.sort(list)
   for _, name in ipairs(list) do
      if name:match("^vfio%d+$") then return name end
   end
   return nil
end

local function no_iommufd(bdf, errno)
   return fail(errno, "open %s: the kernel has no iommufd (CONFIG_IOMMUFD): %s does not "
      .. "exist; use the group interface (iommufd = false) or a kernel with IOMMUFD (6.2 or "
      .. "later; device cdevs need 6.6)", bdf, vfio.iommudev)
end

-- The IOAS and its iommufd go with the last device using them.
local function release_ioas()
   local a = iommu.ioas
   if a and (ioas_users[a] or 0) <= 0 then
      local fd = iommu.fd
      iommu.ioas, iommu.fd = nil, nil
      a:close()
      if fd then fd:close() end
   end
end

local function release_cdev(bdf, h)
   cdev_users[h] = (cdev_users[h] or 1) - 1
   if cdev_users[h] > 0 then return end
   if cdevs[bdf] == h then cdevs[bdf], cdev_info[bdf] = nil, nil end
   h:close() -- the kernel detaches and unbinds it
   local a = iommu.ioas
   if a then ioas_users[a] = (ioas_users[a] or 1) - 1 end
   release_ioas()
end

-- The process's iommufd and IOAS, opened on first use.
local function shared_ioas(bdf)
   local a = iommu.ioas
   if a and not a:closed() then return a end
   local fd, err, errno = core.iommufd(vfio.iommudev)
   if not fd then
      if errno == ENOENT then return no_iommufd(bdf, errno) end
      if errno == EACCES or errno == EPERM then
         return fail(errno, "open %s: no permission on %s: run as root or give your user "
            .. "access to it (chown, or a udev rule for the iommu node)", bdf, vfio.iommudev)
      end
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   a, err, errno = fd:ioas()
   if not a then
      fd:close()
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   iommu.fd, iommu.ioas = fd, a
   ioas_users[a] = 0
   return a
end

-- Open bdf (in IOMMU group n) through its cdev, bound to the process's iommufd and
-- attached to its IOAS: handle, info ({group, devid, path}) or nil, message, errno; with
-- `auto`, nothing when the group interface should be used instead (no iommufd, no cdev).
local function open_cdev(bdf, n, auto)
   local h = cdevs[bdf]
   if h and not h:closed() then
      cdev_users[h] = cdev_users[h] + 1
      return h, cdev_info[bdf]
   end
   local name = cdev_name(bdf)
   if auto and (not name or not exists(vfio.iommudev)) then return nil end
   if not exists(vfio.iommudev) then return no_iommufd(bdf, ENODEV) end
   if not name then
      return fail(ENODEV, "open %s: the device has no VFIO cdev (%s/vfio-dev/vfioN is "
         .. "missing): a kernel without CONFIG_VFIO_DEVICE_CDEV, or the device is not bound "
         .. "to vfio-pci; use the group interface (iommufd = false)", bdf, devpath(bdf))
   end
   local path = ("%s/devices/%s"):format(vfio.devdir, name)
   local err, errno
   h, err, errno = core.cdev(path, bdf)
   if not h then
      if errno == EACCES or errno == EPERM then
         return fail(errno, "open %s: no permission on %s: run as root or give your user "
            .. "access to it (chown, or a udev rule for vfio devices)", bdf, path)
      elseif errno == ENOENT then
         return fail(errno, "open %s: %s does not exist: %s/vfio-dev names it, but there is "
            .. "no node (is devtmpfs mounted on /dev?)", bdf, path, devpath(bdf))
      end
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   local a
   a, err, errno = shared_ioas(bdf)
   if not a then
      h:close()
      return nil, err, errno
   end
   local devid
   devid, err, errno = iommu.fd:bind(h)
   if not devid then
      h:close()
      release_ioas()
      if (errno == EBUSY or errno == EPERM) and #group_blockers(n) > 0 then
         -- the IOMMU refuses a DMA owner while a member of the group has a host driver
         return fail(EBUSY, "open %s: IOMMU group %d is not viable: other devices in the "
            .. "group are bound to host drivers: %s; bind them to vfio-pci (vfio.bind) or "
            .. "unbind them", bdf, n, table.concat(group_blockers(n), ", "))
      elseif errno == EBUSY then
         return fail(errno, "open %s: VFIO_DEVICE_BIND_IOMMUFD: the device's IOMMU group is "
            .. "open through %s/%d by another process or this one: a device is used through "
            .. "one interface at a time", bdf, vfio.devdir, n)
      elseif errno == EPERM then
         return fail(errno, "open %s: VFIO_DEVICE_BIND_IOMMUFD: another device of IOMMU "
            .. "group %d is bound to another iommufd (another process?): a group has one "
            .. "owner at a time", bdf, n)
      elseif errno == EINVAL then
         return fail(errno, "open %s: VFIO_DEVICE_BIND_IOMMUFD: %s is already bound, by "
            .. "another process or another cdev object of this one (a cdev is bound once)",
            bdf, path)
      end
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   ioas_users[a] = ioas_users[a] + 1
   cdev_users[h] = 1
   local ok
   ok, err, errno = a:attach(h)
   if not ok then
      release_cdev(bdf, h)
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   local info = { group = n, devid = devid, path = path }
   cdevs[bdf], cdev_info[bdf] = h, info
   return h, info
end

-- Is a device of IOMMU group n open here through its cdev? (Its group node is then busy.)
local function group_used_by_cdev(n)
   for bdf, h in pairs(cdevs) do
      if not h:closed() and cdev_info[bdf] and cdev_info[bdf].group == n then return bdf end
   end
   return nil
end

-- Per-process sharing: one group object per group number, one container for all groups
-- that can join it. Weak, so closing the last device releases them.
local groups = setmetatable({}, { __mode = "v" })
local containers = setmetatable({}, { __mode = "v" })
local iommu_type = setmetatable({}, { __mode = "k" })
-- Open devices per group and attached groups per container, so the last close releases
-- the group and container fds at once instead of at some later garbage collection.
local group_users = setmetatable({}, { __mode = "k" })
local container_users = setmetatable({}, { __mode = "k" })

local function release(g, c)
   if g and (group_users[g] or 0) == 0 and not g:closed() then
      for n, cached in pairs(groups) do
         if cached == g then groups[n] = nil end
      end
      local attached = g:container()
      g:close()
      if attached then
         container_users[attached] = (container_users[attached] or 1) - 1
         c = attached
      end
   end
   if c and (container_users[c] or 0) <= 0 and not c:closed() then
      for k, cached in pairs(containers) do
         if cached == c then containers[k] = nil end
      end
      c:close()
   end
end

local function open_group(bdf, n)
   local g = groups[n]
   if g and not g:closed() then return g end
   local path = ("%s/%d"):format(vfio.devdir, n)
   -- vfio's no-IOMMU mode (enable_unsafe_noiommu_mode) names the node noiommu-N.
   local unsafe = ("%s/noiommu-%d"):format(vfio.devdir, n)
   if not px().stat(path) and px().stat(unsafe) then path = unsafe end
   local err, errno
   g, err, errno = core.group(path)
   if not g then
      if errno == EACCES or errno == EPERM then
         return fail(errno, "open %s: no permission on %s: run as root or give your user "
            .. "access to it (chown, or a udev rule for the vfio group)", bdf, path)
      elseif errno == EBUSY then
         local user = group_used_by_cdev(n)
         if user then
            return fail(errno, "open %s: %s is busy: this process uses %s of IOMMU group %d "
               .. "through its cdev (iommufd): a device is used through one interface at a "
               .. "time", bdf, path, user, n)
         end
         return fail(errno, "open %s: %s is busy: another process (a VM?) or another part "
            .. "of this one holds the group open", bdf, path)
      elseif errno == ENOENT then
         return fail(errno, "open %s: %s does not exist: is the vfio-pci module loaded and "
            .. "the device bound to it (vfio.bind)?", bdf, path)
      end
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   local st
   st, err, errno = g:status()
   if not st then
      g:close()
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   if not st.viable then
      g:close()
      local who = group_blockers(n)
      if #who > 0 then
         return fail(EBUSY, "open %s: IOMMU group %d is not viable: other devices in the "
            .. "group are bound to host drivers: %s; bind them to vfio-pci (vfio.bind) or "
            .. "unbind them", bdf, n, table.concat(who, ", "))
      end
      return fail(EBUSY, "open %s: IOMMU group %d is not viable: every device of %s/kernel/"
         .. "iommu_groups/%d/devices must be bound to vfio-pci or to no driver", bdf, n,
         vfio.sysfs, n)
   end
   groups[n] = g
   return g
end

-- Attach a group to the shared container, or to a new one when it cannot join (a group
-- behind a different IOMMU). The IOMMU type is set once the first group is in.
local function new_container(bdf)
   local c, err, errno = core.container(vfio.devdir .. "/vfio")
   if not c then
      if errno == EACCES or errno == EPERM then
         return fail(errno, "open %s: no permission on %s/vfio: run as root", bdf, vfio.devdir)
      end
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   local v = c:api_version()
   if v ~= core.API_VERSION then
      c:close()
      return fail(EINVAL, "open %s: VFIO API version %s, expected %d", bdf, tostring(v),
         core.API_VERSION)
   end
   return c
end

local function attach(bdf, g)
   local c = g:container()
   if c then return c end
   -- No-IOMMU groups get the noiommu "IOMMU" and cannot share a container with
   -- translated groups: they use their own shared container, under key 2.
   local slot, kind = 1, nil
   if g:path():match("/noiommu%-%d+$") then slot, kind = 2, "noiommu" end
   local shared = containers[slot]
   if shared and not shared:closed() and g:set_container(shared) then
      container_users[shared] = (container_users[shared] or 0) + 1
      return shared
   end
   local err, errno
   c, err, errno = new_container(bdf)
   if not c then return nil, err, errno end
   local ok, t
   ok, err, errno = g:set_container(c)
   if not ok then
      c:close()
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   t, err, errno = c:set_iommu(kind)
   if not t then
      g:unset_container()
      c:close()
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   iommu_type[c] = t
   container_users[c] = 1
   if not shared or shared:closed() then containers[slot] = c end
   return c
end

---------------------------------------------------------------------------------------
-- PciDevice: the friendly object returned by vfio.open, a PCI function opened through
-- VFIO with its group and container (vfio.pci_device; its .handle is vfio.core's
-- vfio.device, the VFIO device fd alone).

local PciDevice = { __name = "vfio.pci_device" }
PciDevice.__index = PciDevice

local checkdev = device_methods.checker(PciDevice, "vfio.pci_device")

--- A device vfio.open returns (`vfio.pci_device`): regions, interrupts, resets, migration.
-- Fields: `bdf`, `name`, `uuid`, `mdev`, `handle` (the vfio.core device), `interface`,
-- `group`, `container`, `config`, `info`.
-- @type PciDevice

---
-- dev:region(i): the region object (cached), for 0 <= i < num_regions. A region whose
-- info failed carries .error; the device stays usable.
-- @function PciDevice:region

--- Every region of the device, index 0 to num_regions - 1 (region i at list[i + 1]).
-- @treturn {vfio.region,...} the cached region objects, as `dev:region(i)` returns them
-- @function PciDevice:regions

--- VFIO_DEVICE_GET_IRQ_INFO of interrupt index i (a `vfio.IRQ` value).
-- Raises when i is not a non-negative integer.
-- @tparam int i the IRQ index
-- @treturn table `{count, eventfd, maskable, automasked, noresize, flags}`, or `nil, message, errno`
-- @function PciDevice:irq_info

---------------------------------------------------------------------------------------
-- Host notices: the two interrupts VFIO raises about the device itself, not from it.
--   request  the host wants the device back (a driver unbind, a hot unplug): the kernel
--            blocks the unbind until every fd of the device is closed, and sends the
--            request again every 10 s while it waits;
--   error    the host's AER driver saw an uncorrectable error on the device (a PCI
--            Express function only).
-- The kernel keeps one eventfd per kind per device, not per fd, so every holder of one
-- device in this process shares one registration; each holder counts what it has seen,
-- so all of them learn of a notice, whoever reads the eventfd first.

local NOTICE = {
   request = { index = core.IRQ.REQ, irq = "VFIO_PCI_REQ_IRQ_INDEX",
               none = "the kernel's VFIO driver for it cannot ask for it back (an unbind then "
                  .. "waits, silently, until the device is closed)" },
   error = { index = core.IRQ.ERR, irq = "VFIO_PCI_ERR_IRQ_INDEX",
             none = "it is no PCI Express function, so the host's AER driver reports no "
                .. "errors for it" },
}
local EOPNOTSUPP = 95
-- device key (its PCI address or mdev UUID) -> { users =, [kind] = { efd =, count = } }
local notifiers = {}

local function notice_kind(kind, fname)
   if NOTICE[kind] == nil then
      error(("bad argument #1 to '%s' (\"request\" or \"error\" expected, got %s)"):format(
         fname, tostring(kind)), 3)
   end
   return NOTICE[kind]
end

--- The eventfd VFIO signals when the host wants the device back (`"request"`) or its AER
-- driver reports an uncorrectable error on it (`"error"`), registered with
-- VFIO_DEVICE_SET_IRQS on first use and shared by every holder of the device in this
-- process (poll its `fileno()`; read it, or call `notices`, to see what came). It stays
-- registered until the last holder closes the device.
-- @tparam string kind `"request"` or `"error"`
-- @treturn vfio.eventfd the eventfd, or `nil, message, errno` (EOPNOTSUPP when the device
-- has no such interrupt)
function PciDevice:notifier(kind)
   checkdev(self)
   local n = notice_kind(kind, "notifier")
   local key = self.name
   local entry = notifiers[key]
   if not rawget(self, "_notices") then
      entry = entry or { users = 0 }
      notifiers[key] = entry
      entry.users = entry.users + 1
      self._notices = { key = key, seen = {} }
   end
   local slot = entry[kind]
   if slot then
      self._notices.seen[kind] = self._notices.seen[kind] or slot.count
      return slot.efd
   end
   local function none()
      return fail(EOPNOTSUPP, "%s interrupt of %s: the device has none (%s: count 0): %s",
         kind, self.name, n.irq, n.none)
   end
   if n.index >= (self.num_irqs or 0) then return none() end
   local info, err, errno = self.handle:irq_info(n.index)
   -- kernels before 6.x refuse the error index of a conventional PCI function (EINVAL)
   if not info and errno == EINVAL then return none() end
   if not info then return nil, ("%s interrupt of %s: %s"):format(kind, self.name, err), errno end
   if info.count < 1 then return none() end
   local efd
   efd, err, errno = core.eventfd()
   if not efd then return nil, ("%s interrupt of %s: %s"):format(kind, self.name, err), errno end
   local ok
   ok, err, errno = self.handle:set_irqs(n.index, "trigger", 0, 1, efd)
   if not ok then
      efd:close()
      return nil, ("%s interrupt of %s: %s"):format(kind, self.name, err), errno
   end
   entry[kind] = { efd = efd, count = 0 }
   self._notices.seen[kind] = 0
   return efd
end

--- `dev:notifier("request")`: the eventfd VFIO signals when the host wants the device
-- back. Close the device (every holder) to let the host's unbind complete.
-- @treturn vfio.eventfd the eventfd, or `nil, message, errno`
function PciDevice:request_eventfd() return self:notifier("request") end

--- `dev:notifier("error")`: the eventfd VFIO signals when the host's AER driver reports
-- an uncorrectable error on the device.
-- @treturn vfio.eventfd the eventfd, or `nil, message, errno`
function PciDevice:error_eventfd() return self:notifier("error") end

--- What the host said about the device since this holder last asked, without waiting:
-- `{request = n, error = n}` with only the kinds that came (an empty table: nothing),
-- for the kinds registered with `notifier`. n counts signals, which the kernel may
-- merge: a request repeated every 10 s adds one each time.
-- @treturn table the counts by kind
function PciDevice:notices()
   checkdev(self)
   local out = {}
   local mine = rawget(self, "_notices")
   local entry = mine and notifiers[mine.key]
   if not entry then return out end
   for kind in pairs(NOTICE) do
      local slot = entry[kind]
      if slot and mine.seen[kind] then
         local n = slot.efd:read()   -- nil, EAGAIN: nothing pending
         if n then slot.count = slot.count + n end
         if slot.count > mine.seen[kind] then
            out[kind] = slot.count - mine.seen[kind]
            mine.seen[kind] = slot.count
         end
      end
   end
   return out
end

-- On close: the last holder's eventfds go once its device fd has (the kernel dropped
-- its references to them with the fd).
local function release_notices(self)
   local mine = rawget(self, "_notices")
   if not mine then return end
   self._notices = nil
   local entry = notifiers[mine.key]
   if not entry then return end
   entry.users = entry.users - 1
   if entry.users > 0 then return end
   notifiers[mine.key] = nil
   for kind in pairs(NOTICE) do
      if entry[kind] then entry[kind].efd:close() end
   end
end

--- VFIO_DEVICE_SET_IRQS, as the vfio.core device's `set_irqs`.
-- @usage dev:set_irqs(index, action, start, count [, data])
-- @function PciDevice:set_irqs

---
-- dev:enable_irq(index, eventfds): route `#eventfds` vectors from 0 to the eventfds.
-- @function PciDevice:enable_irq

---
-- dev:disable_irq(index): tear down every vector of the index.
-- @function PciDevice:disable_irq

--- VFIO_DEVICE_RESET. On failure the message says when the device reports no reset
-- method (no FLR, PM or bus reset).
-- @treturn boolean true, or `nil, message, errno`
-- @function PciDevice:reset

--- VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: the devices a bus reset would affect.
-- @treturn table `{flags, devices = {{bdf, group, segment, bus, devfn}}}` (through iommufd
-- `devids`, `owned` and each device's `devid`), or `nil, message, errno`
function PciDevice:hot_reset_info() return checkdev(self).handle:hot_reset_info() end

---
-- dev:hot_reset([groups]): a bus reset. Without a list, use the groups this process has
-- open for every device the reset affects.
function PciDevice:hot_reset(list)
   checkdev(self)
   if list == nil and self.interface == "iommufd" then
      -- Through a cdev the iommufd proves ownership: every affected device must be bound
      -- to it (or share an IOMMU group with one that is); the call takes no groups.
      local info, err, errno = self.handle:hot_reset_info()
      if not info then return nil, err, errno end
      if not info.owned then
         local who = {}
         for _, d in ipairs(info.devices) do
            if d.devid == -1 then who[#who + 1] = d.bdf end
         end
         return fail(EPERM, "hot reset %s: it also resets %s, which this process has not "
            .. "opened through its iommufd", self.bdf,
            #who > 0 and table.concat(who, ", ") or "devices")
      end
      list = {}
   elseif list == nil then
      local info, err, errno = self.handle:hot_reset_info()
      if not info then return nil, err, errno end
      list = {}
      local seen = {}
      for _, d in ipairs(info.devices) do
         if not seen[d.group] then
            seen[d.group] = true
            local g = groups[d.group]
            if not g or g:closed() then
               return fail(EPERM, "hot reset %s: it also resets %s in IOMMU group %d, which "
                  .. "this process has not opened", self.name, d.bdf, d.group)
            end
            list[#list + 1] = g
         end
      end
   end
   return self.handle:hot_reset(list)
end

--- Whether the device supports a VFIO_DEVICE_FEATURE, as the vfio.core device's.
-- @usage dev:probe_feature(n [, "get"|"set"|"getset"]) -> true | false, why, errno
function PciDevice:probe_feature(...) return checkdev(self).handle:probe_feature(...) end

-- Migration: the kernel's calls one to one (vfio.migration walks the state machine and
-- saves or loads whole states). A data file keeps the vfio.core device alive itself, and
-- this device through the weak-keyed table.
local migfile_owner = setmetatable({}, { __mode = "k" })
--- VFIO_DEVICE_FEATURE_MIGRATION: the device's migration capabilities.
-- @treturn table `{stop_copy, p2p, pre_copy, flags}`, or `nil, message, errno` (ENOTTY
-- for a device without a migration driver)
function PciDevice:migration() return checkdev(self).handle:migration() end
--- The device's migration state: `"running"`, `"stop"`, `"stop_copy"`, `"resuming"`,
-- `"running_p2p"`, `"pre_copy"`, `"pre_copy_p2p"` or `"error"` (an integer for a newer
-- state), or `nil, message, errno`.
function PciDevice:mig_state() return checkdev(self).handle:mig_state() end
--- VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: the bytes STOP_COPY would give, or `nil, message, errno`.
function PciDevice:mig_data_size() return checkdev(self).handle:mig_data_size() end
--- Move the device to a migration state (a name, or a number of `vfio.core.MIG_STATE`).
-- The data file keeps this device alive.
-- @treturn vfio.migfile|boolean a `vfio.migfile` when the arc opens a data fd, else true;
-- `nil, message, errno` when the kernel refuses
function PciDevice:set_mig_state(state)
   local r, err, errno = checkdev(self).handle:set_mig_state(state)
   if r and r ~= true then migfile_owner[r] = self end
   return r, err, errno
end
--- The device fd's number (used only during a call that receives it).
-- @function PciDevice:fileno

---
-- Idempotent. Regions are unmapped; the group and container go when nothing else uses
-- them (they are shared through weak caches).
-- @function PciDevice:close

-- Regions, interrupts, reset, fileno, close and __tostring are vfio.device_methods',
-- shared with the vfio-user device (vfio.user_client).
device_methods.install(PciDevice, {
   check = checkdev,
   new_region = function(dev, i) return dev.handle:region(i) end,
   no_reset = "the device reports no reset method: no FLR, PM or bus reset",
   release = function(self) -- after the regions: the fd, the notices, the group
      if self.interface == "iommufd" then
         release_cdev(self.bdf, self.handle)
         return release_notices(self)
      end
      self.handle:close()
      release_notices(self)
      local g = self.group
      group_users[g] = (group_users[g] or 1) - 1
      release(g, self.container)
   end,
})

-- A pci_device over a cdev handle open_cdev returned.
local function cdev_device(bdf, h, ci)
   local info, err, errno = h:info()
   if not info then
      release_cdev(bdf, h)
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   local a = iommu.ioas
   local dev = setmetatable({
      bdf = bdf, name = bdf, handle = h, interface = "iommufd", iommufd = iommu.fd, ioas = a,
      container = a, devid = ci.devid, cdev = ci.path, iommu_group = ci.group, info = info,
      num_regions = info.num_regions, num_irqs = info.num_irqs, _regions = {},
      iommu_type = "iommufd",
   }, PciDevice)
   if info.pci and info.num_regions > core.REGION.CONFIG then
      dev.config = dev:region(core.REGION.CONFIG)
   end
   return dev
end

--- Functions of the module.
-- @section functions

---
-- vfio.open(bdf_or_sysfs_path [, {iommufd = true | false | "auto"}])
--   -> device | nil, message, errno
-- Through the group and container by default; through the device's cdev, iommufd and a
-- shared IOAS with iommufd = true (or LUAVFIO_IOMMUFD=1 in the environment; opts win);
-- "auto" takes the cdev when the kernel has iommufd and the device a cdev. A mediated
-- device (by UUID) is opened through its group. "vfio-user:PATH" opens the device a
-- vfio-user server serves on the socket PATH (vfio.user_client; opts `{timeout_ms =
-- 5000, mmap = true}`), with the same API.
function vfio.open(x, opts)
   -- a device another process serves over vfio-user (vfio.user_client): same API
   if type(x) == "string" and x:sub(1, 10) == "vfio-user:" then
      return require("vfio.user_client").open(x:sub(11), opts)
   end
   local bdf = resolve(x)
   local how = interface_choice(opts)
   -- A mediated device (vfio.mdev): its group from its own iommu_group link, its device
   -- fd by its UUID; it has no PCI address and no vfio-pci to check.
   local m, err, errno
   if mdev.is_uuid(bdf) then
      m, err, errno = mdev.lookup(vfio.sysfs, bdf, "open")
      if not m then return nil, err, errno end
   end
   local dp = devpath(bdf)
   if not m and not exists(dp) then
      return fail(ENOENT, "open %s: no such PCI device (%s does not exist)", bdf, dp)
   end
   local n = m and m.group or group_of(bdf)
   if not n then
      return fail(ENODEV, "open %s: no IOMMU group (%s/iommu_group is missing): enable the "
         .. "IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)", bdf, dp)
   end
   local drv = m and m.driver or driver_of(bdf)
   if not m and not is_vfio_driver(drv) then
      return fail(ENODEV, "open %s: device is %s, not to vfio-pci: call vfio.bind(\"%s\") "
         .. "first", bdf, drv and ("bound to " .. drv) or "not bound to any driver", bdf)
   end
   local g
   if how and not m then
      local h, ci
      h, ci, errno = open_cdev(bdf, n, how == "auto")
      if h then return cdev_device(bdf, h, ci) end
      if ci then return nil, ci, errno end
      -- "auto" and no iommufd or no cdev: the group interface
   end
   g, err, errno = open_group(bdf, n)
   if not g then return nil, err, errno end
   local c
   c, err, errno = attach(bdf, g)
   if not c then
      release(g)
      return nil, err, errno
   end
   local h
   h, err, errno = g:device(bdf)
   if not h then
      release(g, c)
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   local info
   info, err, errno = h:info()
   if not info then
      h:close()
      release(g, c)
      return nil, ("open %s: %s"):format(bdf, err), errno
   end
   group_users[g] = (group_users[g] or 0) + 1
   local dev = setmetatable({
      bdf = not m and bdf or nil, name = bdf, uuid = m and bdf or nil, mdev = m,
      handle = h, interface = "group", group = g, container = c, info = info,
      num_regions = info.num_regions, num_irqs = info.num_irqs, _regions = {},
      iommu_type = iommu_type[c],
   }, PciDevice)
   if info.pci and info.num_regions > core.REGION.CONFIG then
      dev.config = dev:region(core.REGION.CONFIG)
   end
   return dev
end

---------------------------------------------------------------------------------------
-- sysfs: listing and binding.
-- @section sysfs

---
-- vfio.devices() -> list of {bdf, vendor, device, id, class, driver, group}, by address,
-- then the mediated devices, {mdev = true, uuid, name, parent, type, driver, group, path}
-- by UUID (an entry with .mdev has no .bdf: open it by its .uuid).
function vfio.devices()
   local list, err, errno = pcibus.devices(vfio.sysfs)
   if not list then return nil, err, errno end
   for _, d in ipairs(mdev.list(vfio.sysfs)) do list[#list + 1] = d end
   return list
end

--- Hand a device to vfio-pci (driver_override, unbind, reprobe).
-- Refuses (EBUSY) a device the host uses: a block device below it mounted, swap or held
-- by dm/md, a network interface below it up, the boot VGA device, a bridge with devices
-- below it (vfio.host.users); the message says what uses it and names the other functions
-- of the IOMMU group that must follow it.
-- @tparam string x the device: "0000:00:03.0", "00:03.0" or its sysfs path
-- @tparam[opt] table opts force = true binds a device the host uses all the same
-- @treturn[1] boolean true
-- @treturn[1] ?string when other functions of its IOMMU group are still on host drivers:
-- which, and that they must follow it to vfio-pci before the group can be opened
-- @treturn[2] nil
-- @treturn[2] string what failed, and the fix
-- @treturn[2] integer errno
function vfio.bind(x, opts)
   local bdf = resolve(x)
   if opts ~= nil and type(opts) ~= "table" then
      error(("bad argument #2 to 'bind' (table expected, got %s)"):format(type(opts)), 2)
   end
   local dp = devpath(bdf)
   if not exists(dp) then
      return fail(ENOENT, "bind %s: no such PCI device (%s does not exist)", bdf, dp)
   end
   local drv = driver_of(bdf)
   if drv == "vfio-pci" then return true end
   local P = host.paths { sysfs = vfio.sysfs, procfs = vfio.procfs, devdir = vfio.devdir,
                          iommudev = vfio.iommudev, kvmdev = vfio.kvmdev }
   local followers, n = host.group_followers(bdf, P)
   local follow = host.followers_text(followers, n)
   if not (opts and opts.force) then
      local uses = host.users(bdf, P)
      if #uses > 0 then
         return fail(EBUSY, "bind %s: the host uses this device: %s; stop using it first, or "
            .. "bind it anyway with {force = true}%s", bdf, table.concat(uses, "; "),
            follow ~= "" and ("; " .. follow) or "")
      end
   end
   if not exists(vfio.sysfs .. "/bus/pci/drivers/vfio-pci") then
      return fail(ENODEV, "bind %s: the vfio-pci driver is not loaded (modprobe vfio-pci)",
         bdf)
   end
   local ok, err, errno = write_sysfs(dp .. "/driver_override", "vfio-pci")
   if not ok then return nil, "bind " .. bdf .. ": " .. err, errno end
   if drv then
      ok, err, errno = write_sysfs(dp .. "/driver/unbind", bdf)
      if not ok then return nil, "bind " .. bdf .. ": " .. err, errno end
   end
   ok, err, errno = write_sysfs(vfio.sysfs .. "/bus/pci/drivers_probe", bdf)
   if not ok then return nil, "bind " .. bdf .. ": " .. err, errno end
   drv = driver_of(bdf)
   if drv ~= "vfio-pci" then
      return fail(ENODEV, "bind %s: the device is %s after probing (see dmesg)", bdf,
         drv and ("bound to " .. drv) or "unbound")
   end
   if follow ~= "" then return true, ("bind %s: %s"):format(bdf, follow) end
   return true
end

---
-- vfio.unbind(bdf [, {probe = false}]): take the device from vfio-pci, clear the
-- override and (unless probe = false) let the host driver claim it again.
function vfio.unbind(x, opts)
   local bdf = resolve(x)
   local dp = devpath(bdf)
   if not exists(dp) then
      return fail(ENOENT, "unbind %s: no such PCI device (%s does not exist)", bdf, dp)
   end
   local ok, err, errno
   if driver_of(bdf) then
      ok, err, errno = write_sysfs(dp .. "/driver/unbind", bdf)
      if not ok then return nil, "unbind " .. bdf .. ": " .. err, errno end
   end
   ok, err, errno = write_sysfs(dp .. "/driver_override", "\n")
   if not ok then return nil, "unbind " .. bdf .. ": " .. err, errno end
   if not (opts and opts.probe == false) then
      ok, err, errno = write_sysfs(vfio.sysfs .. "/bus/pci/drivers_probe", bdf)
      if not ok then return nil, "unbind " .. bdf .. ": " .. err, errno end
   end
   return true
end

---
-- The recorder that captures a device into a fixture for the replay backend, loaded on
-- first use. The virtual function over a device (trap core + layout + quirks) is the VMM
-- layer's: require "vfio.vmm.passthrough" (the library does not reach up into it).
function vfio.record(dev, path, opts) return require("vfio.record").record(dev, path, opts) end

--- The symbolic name of an errno number, for messages: 2 -> "ENOENT".
-- @function errname
-- @tparam integer errno the number a failed call returned third
-- @treturn string its name, or "errno N" for a number without one
vfio.errname = pcibus.errname

--- A device's PCI address in full form, from what vfio.open takes (for tools).
-- @function resolve
-- @tparam string x "0000:00:03.0", "00:03.0" or the device's sysfs path
-- @treturn string "0000:00:03.0"; raises on anything else
vfio.resolve = function(x) return resolve(x, 3) end
--- The driver a device is bound to (a PCI address or sysfs path), or nil.
-- @function driver_of
vfio.driver_of = function(x) return driver_of(resolve(x, 3)) end
--- The IOMMU group number of a device (a PCI address or sysfs path), or nil.
-- @function group_of
vfio.group_of = function(x) return group_of(resolve(x, 3)) end

return vfio
