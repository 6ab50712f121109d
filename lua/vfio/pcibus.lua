---
-- The PCI bus as sysfs shows it: the functions with their IDs, class, driver and IOMMU
-- group. One owner for vfio (open, bind) and the REPL's ls(). Every function takes the
-- sysfs root ("/sys", or a fake tree in specs). Needs luaposix, loaded on first use.
-- Also the one parser of PCI addresses (parse_bdf) for the library, the VMM, the REPL and
-- the commands.
-- @module vfio.pcibus
local M = {}

-- A PCI address as sysfs names it: "0000:00:03.0" (domain, bus, device, function 0-7).
M.BDF = "^%x%x%x%x:%x%x:%x%x%.[0-7]$"

---
-- Parse a PCI address as a user writes it: "0000:00:03.0", or "00:03.0" in domain 0, in
-- any case. A function number is 0 to 7.
-- @tparam string s the address
-- @treturn[1] string the address as sysfs names it ("0000:00:03.0", lower case)
-- @treturn[1] table its parts: `{domain =, bus =, device =, func =}` (integers)
-- @treturn[2] nil when s is not a PCI address
-- @treturn[2] string why, naming s and the two forms
function M.parse_bdf(s)
   local t = type(s) == "string" and s:lower()
   if t and t:match("^%x%x:%x%x%.[0-7]$") then t = "0000:" .. t end
   if not t or not t:match(M.BDF) then
      return nil, ("not a PCI address (want 0000:00:03.0 or 00:03.0): %s"):format(tostring(s))
   end
   local d, b, dev, f = t:match("^(%x+):(%x+):(%x+)%.(%x)$")
   return t, { domain = tonumber(d, 16), bus = tonumber(b, 16), device = tonumber(dev, 16),
               func = tonumber(f, 16) }
end

---
-- strerror from vfio.core (C's own table), loaded on first use.
function M.strerror(errno) return require("vfio.core").strerror(errno) end

-- errno numbers -> symbolic names, from luaposix's posix.errno (with a fallback for the
-- common ones when luaposix is missing); aliases resolve to the name strerror(3) pages use.
local errnames
local ERRNO_FALLBACK = {
   [1] = "EPERM", [2] = "ENOENT", [3] = "ESRCH", [4] = "EINTR", [5] = "EIO", [6] = "ENXIO",
   [7] = "E2BIG", [9] = "EBADF", [11] = "EAGAIN", [12] = "ENOMEM", [13] = "EACCES",
   [14] = "EFAULT", [16] = "EBUSY", [17] = "EEXIST", [19] = "ENODEV", [20] = "ENOTDIR",
   [21] = "EISDIR", [22] = "EINVAL", [24] = "EMFILE", [25] = "ENOTTY", [28] = "ENOSPC",
   [34] = "ERANGE", [38] = "ENOSYS", [95] = "EOPNOTSUPP", [110] = "ETIMEDOUT",
}
local ERRNO_PREFERRED = { EAGAIN = true, EOPNOTSUPP = true, EDEADLK = true }

--- The symbolic name of an errno number.
-- @tparam integer errno the number (2)
-- @treturn string its name ("ENOENT"), or "errno N" when the number has none here
function M.errname(errno)
   if math.type(errno) ~= "integer" then return tostring(errno) end
   if not errnames then
      errnames = {}
      for k, v in pairs(ERRNO_FALLBACK) do errnames[k] = v end
      local ok, e = pcall(require, "posix.errno")
      if ok and type(e) == "table" then
         local names = {}
         for k in pairs(e) do
            if type(k) == "string" and k:match("^E%u+$") then names[#names + 1] = k end
         end
         table.sort(names)
         for _, k in ipairs(names) do
            local v = e[k]
            if math.type(v) == "integer" and (errnames[v] == nil or ERRNO_PREFERRED[k]) then
               errnames[v] = k
            end
         end
         for k, v in pairs(ERRNO_FALLBACK) do errnames[k] = v end
      end
   end
   return errnames[errno] or ("errno " .. errno)
end

local posix
---
-- luaposix's functions this module and vfio use; raises when luaposix is missing.
function M.posix()
   if not posix then
      local ok, unistd = pcall(require, "posix.unistd")
      if not ok then
         error("vfio: luaposix for Lua 5.4 is required for sysfs access (lab/setup --host)", 3)
      end
      local fcntl = require "posix.fcntl"
      posix = {
         readlink = unistd.readlink,
         write = unistd.write,
         close = unistd.close,
         open = fcntl.open,
         O_WRONLY = fcntl.O_WRONLY,
         O_TRUNC = fcntl.O_TRUNC,
         dir = require("posix.dirent").dir,
         realpath = require("posix.stdlib").realpath,
         stat = require("posix.sys.stat").stat,
      }
   end
   return posix
end

--- The last component of a path (trailing slashes ignored), or nil for nil.
function M.basename(p) return p and p:match("([^/]+)/*$") end

--- The sysfs directory of a PCI device under root: `root/bus/pci/devices/BDF`.
function M.devpath(root, bdf) return root .. "/bus/pci/devices/" .. bdf end

---
-- The last component of a symlink's target (a driver's or a group's name), or nil.
function M.link_base(path)
   local l = M.posix().readlink(path)
   return l and M.basename(l)
end

--- The driver a PCI device under root is bound to, or nil.
function M.driver(root, bdf) return M.link_base(M.devpath(root, bdf) .. "/driver") end

--- The IOMMU group number of a PCI device under root, or nil.
function M.group(root, bdf)
   local g = M.link_base(M.devpath(root, bdf) .. "/iommu_group")
   return g and tonumber(g)
end

---
-- An attribute's text without the trailing newline, or nil.
function M.read(path)
   local f = io.open(path)
   if not f then return nil end
   local s = f:read("a")
   f:close()
   return s and s:gsub("%s+$", "")
end

---
-- A write to sysfs is one write(2): the kernel acts on it and reports errors there.
-- Returns true, or nil, "open|write PATH: strerror", errno.
function M.write(path, s)
   local p = M.posix()
   -- O_TRUNC is a no-op on sysfs attributes and keeps plain files (fake trees) exact.
   local fd, _, errno = p.open(path, p.O_WRONLY | p.O_TRUNC)
   if not fd then return nil, ("open %s: %s"):format(path, M.strerror(errno)), errno end
   local n
   n, _, errno = p.write(fd, s)
   p.close(fd)
   if not n then return nil, ("write %s: %s"):format(path, M.strerror(errno)), errno end
   return true
end

local function hexnum(s) return s and tonumber(s:match("0x(%x+)") or s, 16) end

---
-- M.devices(root) -> list of {bdf, vendor, device, id, class, driver, group}, by address,
-- or nil, message, errno.
function M.devices(root)
   local dir = root .. "/bus/pci/devices"
   local ok, names = pcall(M.posix().dir, dir)
   if not ok or type(names) ~= "table" then
      return nil, ("list %s: %s"):format(dir, tostring(names)), 2
   end
   local list = {}
   for _, bdf in ipairs(names) do
      if bdf:match(M.BDF) then
         local p = dir .. "/" .. bdf
         local v, d = hexnum(M.read(p .. "/vendor")), hexnum(M.read(p .. "/device"))
         list[#list + 1] = {
            bdf = bdf, vendor = v, device = d,
            id = v and d and ("%04x:%04x"):format(v, d),
            class = hexnum(M.read(p .. "/class")),
            driver = M.driver(root, bdf), group = M.group(root, bdf),
         }
      end
   end
   table.sort(list, function(a, b) return a.bdf < b.bdf end)
   return list
end

return M
