---
-- Mediated devices (mdev) as sysfs shows them: the parents (devices whose driver offers
-- virtual devices, listed in /sys/class/mdev_bus), their types
-- (PARENT/mdev_supported_types/TYPE), and the mdevs themselves (/sys/bus/mdev/devices/
-- UUID). create() writes a UUID to a type's `create`, remove() writes 1 to an mdev's
-- `remove`; both check first what they can, so the usual mistakes get a message that says
-- what is wrong. vfio.open opens an mdev by its UUID (or sysfs path) like a PCI function.
--
-- Every function uses M.sysfs ("/sys"; specs point it at a fake tree); the two that
-- vfio.open and vfio.devices use, M.list and M.lookup, take the root explicitly so they
-- follow vfio.sysfs. Needs luaposix, loaded on first use (through vfio.pcibus).
-- @module vfio.mdev
local pcibus = require "vfio.pcibus"

local M = { sysfs = "/sys" }

local ENOENT, ENODEV, EEXIST, ENOSPC, EACCES, EPERM, EUSERS, EBUSY =
   2, 19, 17, 28, 13, 1, 87, 16

local X4 = ("%x"):rep(4)
M.UUID = "^" .. X4 .. X4 .. "%-" .. X4 .. "%-" .. X4 .. "%-" .. X4 .. "%-" .. X4 .. X4 .. X4 .. "$"

local px = pcibus.posix
local basename, link_base, read = pcibus.basename, pcibus.link_base, pcibus.read

local fail = require("vfio.errors").fail
local function exists(path) return px().stat(path) ~= nil end

-- The entries of a directory, sorted, without . and ..; nil when it cannot be listed.
local function entries(dir)
   local ok, list = pcall(px().dir, dir)
   if not ok or type(list) ~= "table" then return nil end
   local out = {}
   for _, n in ipairs(list) do
      if n ~= "." and n ~= ".." then out[#out + 1] = n end
   end
   table.sort(out)
   return out
end

local function list_or_none(t) return (t and #t > 0) and table.concat(t, ", ") or "none" end

---
-- M.is_uuid(s): is s an mdev's name (a UUID, any case)?
function M.is_uuid(s) return type(s) == "string" and s:lower():match(M.UUID) ~= nil end

---
-- M.uuid() -> a random UUID (version 4, from /dev/urandom) | nil, message, errno
function M.uuid()
   local f, err, errno = io.open("/dev/urandom", "rb")
   if not f then return nil, "uuid: " .. err, errno end
   local b = f:read(16)
   f:close()
   if not b or #b < 16 then return fail(5, "uuid: short read from /dev/urandom") end
   local t = { b:byte(1, 16) }
   t[7] = (t[7] & 0x0f) | 0x40 -- version 4: random
   t[9] = (t[9] & 0x3f) | 0x80 -- the RFC 4122 variant
   return ("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x"):format(
      table.unpack(t))
end

local function bus_dir(root) return root .. "/bus/mdev/devices" end
local function class_dir(root) return root .. "/class/mdev_bus" end

-- A parent by name (its entry in /sys/class/mdev_bus: "mtty", "0000:00:02.0") or by its
-- sysfs path -> the directory to use. A name is one entry (no "/", not "." or ".."), and a
-- path must lie under the sysfs root, so no write lands outside a parent's types; either
-- mistake raises (argument n of fn). A path that does not exist is returned as it is, for
-- the caller to say so.
local function parent_path(root, parent, n, fn)
   local why
   if parent:sub(1, 1) ~= "/" then
      if not parent:find("/", 1, true) and parent ~= "." and parent ~= ".." then
         return class_dir(root) .. "/" .. parent
      end
      why = "a name is an entry of " .. class_dir(root)
   else
      local real = px().realpath(parent)
      if not real then return parent end
      local top = px().realpath(root) or root
      if real == top or real:sub(1, #top + 1) == top .. "/" then return real end
      why = "a path must lie under " .. root
   end
   error(("bad argument #%d to '%s' (mediated device parent expected: %s; got '%s')")
      :format(n, fn, why, parent), 3)
end

local function check_string(v, n, what, fn)
   if type(v) ~= "string" or v == "" then
      error(("bad argument #%d to '%s' (%s expected, got %s)"):format(n, fn, what,
         v == "" and "an empty string" or type(v)), 3)
   end
end

local function check_uuid(v, n, fn, what)
   if not M.is_uuid(v) then
      error(("bad argument #%d to '%s' (%s expected, got %s)"):format(n, fn,
         what or "mdev UUID", type(v) == "string" and ("'" .. v .. "'") or type(v)), 3)
   end
end

local function type_info(tdir, id)
   return {
      id = id,
      name = read(tdir .. "/name"),
      available_instances = tonumber(read(tdir .. "/available_instances") or ""),
      device_api = read(tdir .. "/device_api"),
      description = read(tdir .. "/description"),
   }
end

local function parent_names(root) return entries(class_dir(root)) or {} end

local function no_parent(op, root, parent, pdir)
   return fail(ENODEV, "%s: no mediated device parent %s (%s does not exist; parents: %s)",
      op, parent, pdir, list_or_none(parent_names(root)))
end

---
-- M.types(parent) -> list of {id, name, available_instances, device_api, description}, by id
-- (id is the directory name, "mtty-1"; name the driver's own, "Single port serial"),
-- or nil, message, errno.
function M.types(parent)
   check_string(parent, 1, "parent name or sysfs path", "types")
   local root = M.sysfs
   local pdir = parent_path(root, parent, 1, "types")
   if not exists(pdir) then return no_parent("mdev types", root, parent, pdir) end
   local ids = entries(pdir .. "/mdev_supported_types")
   if not ids then
      return fail(ENODEV, "mdev types: %s offers no mediated devices (%s/mdev_supported_types "
         .. "is missing)", parent, pdir)
   end
   local list = {}
   for _, id in ipairs(ids) do
      list[#list + 1] = type_info(pdir .. "/mdev_supported_types/" .. id, id)
   end
   return list
end

---
-- M.parents() -> list of {name, path, types}, by name; empty when there are none (no mdev
-- support, or no parent driver loaded).
function M.parents()
   local root = M.sysfs
   local list = {}
   for _, name in ipairs(parent_names(root)) do
      local link = class_dir(root) .. "/" .. name
      list[#list + 1] = {
         name = name, path = px().realpath(link) or link, types = M.types(name) or {},
      }
   end
   return list
end

-- The entry of one mdev: {mdev = true, uuid, name, parent, type, driver, group, path}.
local function entry(root, uuid)
   local link = bus_dir(root) .. "/" .. uuid
   local real = px().realpath(link) or link
   local g = link_base(link .. "/iommu_group")
   return {
      mdev = true, uuid = uuid, name = uuid, path = real,
      parent = basename(real:match("^(.*)/[^/]+/*$")),
      type = link_base(link .. "/mdev_type"),
      driver = link_base(link .. "/driver"),
      group = g and tonumber(g),
   }
end

---
-- M.list(root) -> the mdevs under sysfs root, by UUID (empty without an mdev bus).
function M.list(root)
   local list = {}
   for _, name in ipairs(entries(bus_dir(root)) or {}) do
      if name:lower():match(M.UUID) then list[#list + 1] = entry(root, name) end
   end
   return list
end

---
-- M.devices() -> M.list of M.sysfs.
function M.devices() return M.list(M.sysfs) end

---
-- M.lookup(root, uuid, op) -> the mdev's entry, with its IOMMU group, ready for VFIO;
-- or nil, "OP UUID: what is wrong", errno.
function M.lookup(root, uuid, op)
   uuid = uuid:lower()
   local link = bus_dir(root) .. "/" .. uuid
   if not exists(link) then
      return fail(ENOENT, "%s %s: no such mediated device (%s does not exist): create it "
         .. "with vfio.mdev.create(parent, type, uuid)", op, uuid, link)
   end
   local e = entry(root, uuid)
   if not e.driver then
      return fail(ENODEV, "%s %s: the mediated device is bound to no driver (its parent's "
         .. "driver provides one; see dmesg)", op, uuid)
   end
   if not e.group then
      return fail(ENODEV, "%s %s: the mediated device has no IOMMU group (%s/iommu_group is "
         .. "missing): its driver %s does not hand it to VFIO", op, uuid, link, e.driver)
   end
   return e
end

---
-- M.info(uuid) -> the entry of one mdev of M.sysfs | nil, message, errno
function M.info(uuid)
   check_uuid(uuid, 1, "info")
   local link = bus_dir(M.sysfs) .. "/" .. uuid:lower()
   if not exists(link) then
      return fail(ENOENT, "mdev %s: no such mediated device (%s does not exist)",
         uuid:lower(), link)
   end
   return entry(M.sysfs, uuid:lower())
end

---
-- M.create(parent, type [, uuid]) -> uuid | nil, message, errno. The UUID is generated when
-- not given. Checks, in order: the parent, the type, the UUID, the instances left; the
-- kernel's own refusal is explained the same way.
function M.create(parent, typ, uuid)
   check_string(parent, 1, "parent name or sysfs path", "create")
   check_string(typ, 2, "mdev type such as mtty-1", "create")
   if uuid ~= nil then
      check_uuid(uuid, 3, "create", "UUID like 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")
   end
   local root = M.sysfs
   local pdir = parent_path(root, parent, 1, "create")
   if not exists(pdir) then return no_parent("create mdev", root, parent, pdir) end
   local tdir = pdir .. "/mdev_supported_types/" .. typ
   if typ:find("/", 1, true) or typ == "." or typ == ".." or not exists(tdir) then
      return fail(ENOENT, "create mdev: parent %s has no type %s (types: %s)", parent, typ,
         list_or_none(entries(pdir .. "/mdev_supported_types")))
   end
   local err, errno
   if uuid then
      uuid = uuid:lower()
   else
      uuid, err, errno = M.uuid()
      if not uuid then return nil, "create mdev: " .. err, errno end
   end
   local what = ("create mdev %s (%s of %s)"):format(uuid, typ, parent)
   local in_use = ("%s: the UUID is in use (%s/%s exists): remove it first or pick another"):
      format(what, bus_dir(root), uuid)
   if exists(bus_dir(root) .. "/" .. uuid) then return nil, in_use, EEXIST end
   local avail = tonumber(read(tdir .. "/available_instances") or "")
   local none_left = ("%s: no instances available (%s/available_instances is 0): remove an "
      .. "mdev of the parent first"):format(what, tdir)
   if avail == 0 then return nil, none_left, ENOSPC end
   local ok
   ok, err, errno = pcibus.write(tdir .. "/create", uuid)
   if not ok then
      if errno == EACCES or errno == EPERM then
         return fail(errno, "%s: no permission to write %s/create: run as root", what, tdir)
      elseif errno == EEXIST then
         return nil, in_use, errno
      elseif errno == ENOSPC or errno == EUSERS then
         return nil, none_left, errno
      end
      return nil, what .. ": " .. err, errno
   end
   return uuid
end

---
-- M.remove(uuid) -> true | nil, message, errno. Close every VFIO handle on the mdev first:
-- the kernel's remove waits until the device is no longer open.
function M.remove(uuid)
   check_uuid(uuid, 1, "remove")
   uuid = uuid:lower()
   local dir = bus_dir(M.sysfs) .. "/" .. uuid
   if not exists(dir) then
      return fail(ENOENT, "remove mdev %s: no such mediated device (%s does not exist)", uuid,
         dir)
   end
   local ok, err, errno = pcibus.write(dir .. "/remove", "1")
   if not ok then
      if errno == EACCES or errno == EPERM then
         return fail(errno, "remove mdev %s: no permission to write %s/remove: run as root",
            uuid, dir)
      elseif errno == EBUSY then
         return fail(errno, "remove mdev %s: the device is busy (still open?)", uuid)
      end
      return nil, ("remove mdev %s: %s"):format(uuid, err), errno
   end
   return true
end

return M
