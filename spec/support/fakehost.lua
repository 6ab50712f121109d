-- A fake host under a temporary root: sys/ (PCI functions with their drivers, IOMMU
-- groups, config space; block devices and network interfaces below them; IOMMU units),
-- proc/ (mounts, swaps, cmdline, status...) and dev/ (VFIO, KVM and iommufd nodes), for
-- the specs of vfio.host and vfio.bind. Symlinks are absolute: realpath and readlink see
-- what they see in the real sysfs.
local files = require "support.files"
local sh, writefile = files.sh, files.writefile

local M = {}
M.__index = M

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function mkdir(p) sh("mkdir -p " .. q(p)) end
local function ln(target, link) sh(("ln -sfn %s %s"):format(q(target), q(link))) end

-- A new empty host: the directories every check reads exist, empty.
function M.new()
   local root = os.tmpname()
   os.remove(root)
   local self = setmetatable({ root = root, sys = root .. "/sys", proc = root .. "/proc",
                               dev = root .. "/dev", paths = {} }, M)
   for _, d in ipairs { "/sys/devices/pci0000:00", "/sys/bus/pci/devices",
                        "/sys/bus/pci/drivers", "/sys/kernel/iommu_groups",
                        "/sys/class/iommu", "/sys/class/block", "/sys/class/net",
                        "/sys/kernel/mm/hugepages", "/proc/self", "/dev" } do
      mkdir(root .. d)
   end
   writefile(self.sys .. "/bus/pci/drivers_probe", "")
   writefile(self.proc .. "/self/mountinfo", "")
   writefile(self.proc .. "/swaps", "Filename\tType\tSize\tUsed\tPriority\n")
   writefile(self.proc .. "/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
   writefile(self.proc .. "/self/status", "Name:\tlua5.4\nCapEff:\t0000000000000000\n")
   writefile(self.proc .. "/cpuinfo", "vendor_id\t: GenuineIntel\n")
   writefile(self.proc .. "/meminfo", "MemTotal:       16000000 kB\nHugepagesize:       2048 kB\n")
   writefile(self.proc .. "/interrupts", "")
   return self
end

function M:remove() sh("rm -rf " .. q(self.root)) end

function M:write(rel, s)
   local p = self.root .. "/" .. rel
   mkdir(p:match("^(.*)/[^/]+$"))
   writefile(p, s)
   return p
end

-- A driver directory (with unbind) under /sys/bus/pci/drivers.
function M:driver(name)
   local d = self.sys .. "/bus/pci/drivers/" .. name
   mkdir(d)
   writefile(d .. "/unbind", "")
   return d
end

-- A PCI function. o: class (default 0x020000), vendor, device, driver, group, parent (the
-- BDF of the bridge above it), config (bytes), boot_vga.
function M:pci(bdf, o)
   o = o or {}
   local dir = o.parent and (self.paths[o.parent] .. "/" .. bdf)
      or (self.sys .. "/devices/pci0000:00/" .. bdf)
   self.paths[bdf] = dir
   mkdir(dir)
   writefile(dir .. "/vendor", ("0x%04x\n"):format(o.vendor or 0x8086))
   writefile(dir .. "/device", ("0x%04x\n"):format(o.device or 0x10d3))
   writefile(dir .. "/class", ("0x%06x\n"):format(o.class or 0x020000))
   writefile(dir .. "/driver_override", "(null)\n")
   writefile(dir .. "/config", o.config or ("\0"):rep(64))
   if o.boot_vga ~= nil then writefile(dir .. "/boot_vga", o.boot_vga and "1\n" or "0\n") end
   ln(dir, self.sys .. "/bus/pci/devices/" .. bdf)
   if o.driver then ln(self:driver(o.driver), dir .. "/driver") end
   if o.group then
      local g = ("%s/kernel/iommu_groups/%d"):format(self.sys, o.group)
      mkdir(g .. "/devices")
      ln(dir, g .. "/devices/" .. bdf)
      ln(g, dir .. "/iommu_group")
   end
   return dir
end

-- A block device below PCI function bdf (a disk) or below disk `o.disk` (a partition),
-- with its dev (MAJ:MIN) and holders.
function M:block(name, bdf, o)
   o = o or {}
   local dir
   if o.disk then
      dir = self.blocks[o.disk] .. "/" .. name
   elseif bdf then
      dir = self.paths[bdf] .. "/host0/target0:0:0/0:0:0:0/block/" .. name
   else
      dir = self.sys .. "/devices/virtual/block/" .. name
   end
   self.blocks = self.blocks or {}
   self.blocks[name] = dir
   mkdir(dir .. "/holders")
   writefile(dir .. "/dev", (o.dev or "8:0") .. "\n")
   ln(dir, self.sys .. "/class/block/" .. name)
   for _, h in ipairs(o.holders or {}) do ln(self.blocks[h], dir .. "/holders/" .. h) end
   return dir
end

-- A network interface below bdf with its flags (0x1003: up) and operstate.
function M:net(name, bdf, flags, operstate)
   local dir = self.paths[bdf] .. "/net/" .. name
   mkdir(dir)
   writefile(dir .. "/flags", ("0x%x\n"):format(flags))
   writefile(dir .. "/operstate", (operstate or "up") .. "\n")
   ln(dir, self.sys .. "/class/net/" .. name)
end

-- A mountinfo line: source mounted on target, from the device MAJ:MIN (a file system of
-- type fstype, default ext4).
function M:mount(source, target, majmin, fstype)
   local f = assert(io.open(self.proc .. "/self/mountinfo", "a"))
   f:write(("%d 1 %s / %s rw,relatime - %s %s rw\n"):format(20 + math.random(1000),
      majmin or "0:0", target, fstype or "ext4", source))
   f:close()
end

function M:swap(path)
   local f = assert(io.open(self.proc .. "/swaps", "a"))
   f:write(path .. "\tpartition\t8388604\t0\t-2\n")
   f:close()
end

-- A device node (a plain file) with its mode.
function M:node(rel, mode)
   local p = self:write("dev/" .. rel, "")
   sh(("chmod %o %s"):format(mode or 384, q(p)))
   return p
end

-- An IOMMU unit in /sys/class/iommu (dmar0 with its ecap, or another name).
function M:iommu(name, ecap)
   mkdir(self.sys .. "/class/iommu/" .. name)
   if ecap then self:write("sys/class/iommu/" .. name .. "/intel-iommu/ecap", ("%x\n"):format(ecap)) end
end

-- The usual good host: an Intel IOMMU with interrupt remapping, vfio-pci, the nodes.
function M:good()
   self:iommu("dmar0", 0xf0050aa)
   self:write("proc/interrupts", " 24:  0  IR-PCI-MSI 512000-edge  ahci\n")
   self:driver("vfio-pci")
   self:node("vfio/vfio", 438)
   self:node("kvm", 438)
   self:node("iommu", 438)
   sh("mkdir -p " .. q(self.dev .. "/vfio/devices"))
   return self
end

-- Config space bytes: a header (type 1 for a bridge) whose capability list holds a PCI
-- Express capability of port type `port` (4 root, 6 downstream), and, when acs is given,
-- an ACS extended capability at 0x100 with {cap, ctl}. size: 64 or 4096 (default).
function M.config(o)
   o = o or {}
   local b = {}
   for i = 1, o.size or 4096 do b[i] = 0 end
   local function put16(off, v) b[off + 1] = v & 0xff; b[off + 2] = (v >> 8) & 0xff end
   local function put32(off, v) put16(off, v & 0xffff); put16(off + 2, (v >> 16) & 0xffff) end
   put16(0, 0x8086); put16(2, 0x1234)
   if #b >= 64 then
      b[0x0e + 1] = o.bridge and 1 or 0
      if o.port then
         b[0x06 + 1] = 0x10 -- capability list
         b[0x34 + 1] = 0x40
      end
   end
   if o.port and #b > 0x44 then
      b[0x40 + 1] = 0x10 -- PCI Express
      b[0x41 + 1] = 0
      put16(0x42, 0x2 | (o.port << 4))
   end
   if o.acs and #b >= 0x108 then
      put32(0x100, 0x000d | (1 << 16))
      put16(0x104, o.acs[1])
      put16(0x106, o.acs[2])
   end
   local out = {}
   for i = 1, #b do out[i] = string.char(b[i]) end
   return table.concat(out)
end

return M
