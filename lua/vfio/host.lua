--- The host as VFIO sees it: what the host itself uses a PCI function for (vfio.bind
-- refuses those), and a check of everything device assignment needs, in the spirit of
-- libvirt's virt-host-validate: the IOMMU, interrupt remapping, IOMMU groups and ACS,
-- the device nodes, the memlock limit, huge pages, iommufd. Every finding says how to
-- fix it. All reads go through the roots of `host.paths` (sysfs, procfs, /dev), so specs
-- run against fake trees. Needs luaposix (through vfio.pcibus), not vfio.core.
-- @module vfio.host
local pcibus = require "vfio.pcibus"

local host = {}
local fmt = string.format
local px = pcibus.posix
local read = pcibus.read
local basename = pcibus.basename

-- ====================================================================================
-- Paths

--- Where the check reads: sysfs, procfs, the VFIO nodes, iommufd's and KVM's nodes.
-- @tparam[opt] table opts root (a prefix for /sys, /proc and /dev: a fake tree), or
-- sysfs, procfs, devdir, iommudev, kvmdev one by one; the defaults are the vfio module's
-- own roots (vfio.sysfs...) when it is loaded, else the real ones
-- @treturn table {sys =, proc =, vfio =, iommu =, kvm =}
function host.paths(opts)
   opts = opts or {}
   if opts.root then
      local r = opts.root
      return { sys = r .. "/sys", proc = r .. "/proc", vfio = r .. "/dev/vfio",
               iommu = r .. "/dev/iommu", kvm = r .. "/dev/kvm" }
   end
   local lib = package.loaded.vfio
   lib = type(lib) == "table" and lib or {}
   return {
      sys = opts.sysfs or lib.sysfs or "/sys",
      proc = opts.procfs or lib.procfs or "/proc",
      vfio = opts.devdir or lib.devdir or "/dev/vfio",
      iommu = opts.iommudev or lib.iommudev or "/dev/iommu",
      kvm = opts.kvmdev or lib.kvmdev or "/dev/kvm",
   }
end

-- Entries of a directory (no dot entries), sorted; {} when it cannot be read.
local function list(dir)
   local ok, names = pcall(px().dir, dir)
   if not ok or type(names) ~= "table" then return {} end
   local out = {}
   for _, n in ipairs(names) do
      if n ~= "." and n ~= ".." then out[#out + 1] = n end
   end
   table.sort(out)
   return out
end

local function exists(path) return px().stat(path) ~= nil end
local function realpath(path) return px().realpath(path) end

-- Is `path` (a symlink into /sys/devices) below the directory `top` (a realpath)?
local function below(path, top)
   local r = realpath(path)
   return r ~= nil and r:sub(1, #top + 1) == top .. "/"
end

local function hexnum(s) return s and tonumber(s:match("0x(%x+)") or s, 16) end

-- ====================================================================================
-- What the host uses a device for

-- Mount table: {source, majmin, target} from mountinfo (or mounts when it is missing).
local function unescape(s)
   return (s:gsub("\\(%d%d%d)", function(o) return string.char(tonumber(o, 8)) end))
end

local function mounts(P)
   local out = {}
   local f = io.open(P.proc .. "/self/mountinfo")
   if f then
      for line in f:lines() do
         local majmin, target, rest = line:match("^%S+ %S+ (%d+:%d+) %S+ (%S+) (.*)$")
         local fstype, source = (rest or ""):match("%- (%S+) (%S+)")
         if majmin then
            out[#out + 1] = { source = source and unescape(source), majmin = majmin,
                              target = unescape(target), fstype = fstype }
         end
      end
      f:close()
      return out
   end
   f = io.open(P.proc .. "/self/mounts")
   if not f then return out end
   for line in f:lines() do
      local source, target, fstype = line:match("^(%S+) (%S+) (%S+)")
      if source then
         out[#out + 1] = { source = unescape(source), target = unescape(target), fstype = fstype }
      end
   end
   f:close()
   return out
end

local function swaps(P)
   local out = {}
   local f = io.open(P.proc .. "/swaps")
   if not f then return out end
   for line in f:lines() do
      local name = line:match("^(/%S+)")
      if name then out[#out + 1] = unescape(name) end
   end
   f:close()
   return out
end

-- What uses block device `name` (mounted, swap, held by dm/md): a phrase, or nil.
local function block_use(P, name, ctx, depth)
   local majmin = read(P.sys .. "/class/block/" .. name .. "/dev")
   for _, m in ipairs(ctx.mounts) do
      if (majmin and m.majmin == majmin and majmin:sub(1, 2) ~= "0:")
         or (m.source and (m.source == "/dev/" .. name or basename(m.source) == name
                           and m.source:sub(1, 5) == "/dev/")) then
         return "mounted on " .. m.target
      end
   end
   for _, s in ipairs(ctx.swaps) do
      if s == "/dev/" .. name or basename(s) == name and s:sub(1, 5) == "/dev/" then
         return "used as swap"
      end
   end
   if depth < 4 then
      local h = list(P.sys .. "/class/block/" .. name .. "/holders")[1]
      if h then
         local why = block_use(P, h, ctx, depth + 1)
         return "held by " .. h .. (why and (" (" .. why .. ")") or "")
      end
   end
   return nil
end

--- What the host uses a PCI function for: the reasons vfio.bind refuses it.
-- A block device below it that is mounted, swap or held (dm, md), a network interface
-- below it that is up, a virtio-9p function whose file system is mounted, the boot VGA
-- device, a bridge with devices below it.
-- @tparam string bdf the function ("0000:00:02.0")
-- @tparam[opt] table opts the roots (see host.paths)
-- @treturn {string,...} one phrase per use ({} when the host uses none of it)
function host.users(bdf, opts)
   local P = opts and opts.sys and opts or host.paths(opts)
   local dp = pcibus.devpath(P.sys, bdf)
   local top = realpath(dp)
   local uses = {}
   if not top then return uses end
   local ctx = { mounts = mounts(P), swaps = swaps(P) }
   for _, name in ipairs(list(P.sys .. "/class/block")) do
      if below(P.sys .. "/class/block/" .. name, top) then
         local why = block_use(P, name, ctx, 0)
         if why then uses[#uses + 1] = fmt("block device %s is %s", name, why) end
      end
   end
   for _, name in ipairs(list(P.sys .. "/class/net")) do
      local path = P.sys .. "/class/net/" .. name
      if below(path, top) then
         local flags = hexnum(read(path .. "/flags"))
         if flags and flags & 1 ~= 0 then
            uses[#uses + 1] = fmt("network interface %s is up (operstate %s)", name,
               read(path .. "/operstate") or "?")
         end
      end
   end
   -- A virtio-9p function: its mount tag mounted as a 9p file system (a VM's root, often).
   for _, name in ipairs(list(dp)) do
      local tag = name:match("^virtio%d+$") and read(dp .. "/" .. name .. "/mount_tag")
      tag = tag and tag:gsub("\0+$", "")
      if tag then
         for _, m in ipairs(ctx.mounts) do
            if m.fstype == "9p" and m.source == tag then
               uses[#uses + 1] = fmt("9p file system %s is mounted on %s", tag, m.target)
               break
            end
         end
      end
   end
   if read(dp .. "/boot_vga") == "1" then
      uses[#uses + 1] = "it is the boot VGA device (boot_vga = 1): the host's console and "
         .. "framebuffer use it"
   end
   local class = hexnum(read(dp .. "/class"))
   if class and class >> 8 == 0x0604 then
      local kids = {}
      for _, n in ipairs(list(dp)) do
         if n:match(pcibus.BDF) then kids[#kids + 1] = n end
      end
      if #kids > 0 then
         uses[#uses + 1] = "it is a PCI bridge with devices below it: " .. table.concat(kids, ", ")
      end
   end
   return uses
end

-- vfio-pci and its variant drivers hand the device to VFIO; pci-stub and pcieport (on
-- bridges) leave a group viable.
local function is_vfio_driver(d) return d ~= nil and d:find("vfio", 1, true) ~= nil end
local function harmless_driver(d)
   return d == nil or is_vfio_driver(d) or d == "pci-stub" or d == "pcieport"
end

--- The functions of a device's IOMMU group, other than itself, that keep the group from
-- being viable: bound to a host driver (not vfio-pci, pci-stub or, on a bridge, pcieport).
-- @tparam string bdf the function
-- @tparam[opt] table opts the roots (see host.paths)
-- @treturn {table,...} {bdf =, driver =, uses = {phrases}} each, by address
-- @treturn[opt] integer the group's number (nil without an IOMMU group)
function host.group_followers(bdf, opts)
   local P = opts and opts.sys and opts or host.paths(opts)
   local n = pcibus.group(P.sys, bdf)
   local out = {}
   if not n then return out end
   for _, other in ipairs(list(("%s/kernel/iommu_groups/%d/devices"):format(P.sys, n))) do
      local drv = pcibus.driver(P.sys, other)
      if other ~= bdf and not harmless_driver(drv) then
         out[#out + 1] = { bdf = other, driver = drv, uses = host.users(other, P) }
      end
   end
   return out, n
end

--- Text naming the followers of host.group_followers, for messages.
-- @tparam {table,...} followers host.group_followers' list
-- @tparam integer n the group's number
-- @treturn string "IOMMU group N also holds ...", or "" for none
function host.followers_text(followers, n)
   if #followers == 0 then return "" end
   local names = {}
   for _, f in ipairs(followers) do
      names[#names + 1] = fmt("%s (%s%s)", f.bdf, f.driver,
         #f.uses > 0 and ("; the host uses it: " .. table.concat(f.uses, "; ")) or "")
   end
   return fmt("IOMMU group %d also holds %s, which must follow it to vfio-pci (bind %s "
      .. "too) before the group can be opened", n, table.concat(names, ", "),
      #followers == 1 and "it" or "them")
end

-- ====================================================================================
-- The check

local KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024

--- A size for people: "8 MiB", "1 GiB", "64 KiB".
-- @function size_text
-- @tparam integer n bytes
-- @treturn string the size in the largest binary unit that keeps it readable
local function size_text(n)
   if n >= GiB and n % GiB == 0 then return fmt("%d GiB", n // GiB) end
   if n >= MiB and n % MiB == 0 then return fmt("%d MiB", n // MiB) end
   if n >= MiB then return fmt("%.1f MiB", n / MiB) end
   return fmt("%d KiB", (n + KiB - 1) // KiB)
end
host.size_text = size_text

--- Parse a size: bytes with an optional binary suffix K, M, G or T ("256M", "1G");
-- a plain number is MiB, as the commands' --mem takes it.
-- @tparam string s the text
-- @treturn[1] integer bytes
-- @treturn[2] nil
-- @treturn[2] string why it is not a size
function host.parse_size(s)
   local num, suffix = tostring(s):match("^%s*(%d+)%s*([KkMmGgTt]?)[iI]?[bB]?%s*$")
   if not num then return nil, fmt("'%s' is not a size (like 512M, 2G or 1024 for MiB)", s) end
   local mult = ({ k = KiB, m = MiB, g = GiB, t = 1024 * GiB })[suffix:lower()] or MiB
   return math.tointeger(num) * mult
end

local GRUB = "(on Debian: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and "
   .. "reboot)"

local function cpu_vendor(P)
   local s = read(P.proc .. "/cpuinfo") or ""
   local v = s:match("vendor_id%s*:%s*(%S+)")
   if v == "GenuineIntel" then return "Intel", v end
   if v == "AuthenticAMD" or v == "HygonGenuine" then return "AMD", v end
   return nil, v
end

local function iommu_kind(name)
   if name:match("^dmar") then return "Intel VT-d (DMAR)" end
   if name:match("^ivhd") then return "AMD-Vi" end
   if name:match("virtio") then return "virtio-iommu" end
   if name:match("smmu") then return "Arm SMMU" end
   return name
end

local function check_iommu(P, add, st)
   local units = list(P.sys .. "/class/iommu")
   local groups = list(P.sys .. "/kernel/iommu_groups")
   local cmdline = read(P.proc .. "/cmdline") or ""
   st.cmdline = cmdline
   if #units > 0 then
      local kinds, seen = {}, {}
      for _, u in ipairs(units) do
         local k = iommu_kind(u)
         if not seen[k] then seen[k] = true; kinds[#kinds + 1] = k end
      end
      st.iommu = units
      local pt = cmdline:match("iommu=pt") or cmdline:match("iommu%.passthrough=1")
      add("IOMMU", "ok", fmt("%s: %s; %d IOMMU groups%s", table.concat(kinds, ", "),
         table.concat(units, " "), #groups, pt and "; host devices in passthrough mode "
         .. "(iommu=pt), which does not affect VFIO" or ""))
      return
   end
   local vendor, vendor_id = cpu_vendor(P)
   local found = { "no IOMMU: " .. P.sys .. "/class/iommu is empty" }
   local off = cmdline:match("intel_iommu=%S*off") or cmdline:match("amd_iommu=%S*off")
      or cmdline:match("iommu=off")
   if off then found[#found + 1] = "the kernel command line turns it off (" .. off .. ")" end
   local acpi = P.sys .. "/firmware/acpi/tables"
   if exists(acpi) and not exists(acpi .. "/DMAR") and not exists(acpi .. "/IVRS") then
      found[#found + 1] = "the firmware's ACPI tables have no DMAR (Intel) or IVRS (AMD) "
         .. "table: the machine, or the firmware setup, offers no IOMMU"
   end
   if #groups > 0 then
      found[#found + 1] = fmt("%d IOMMU groups exist without an IOMMU unit", #groups)
   end
   local noiommu = read(P.sys .. "/module/vfio/parameters/enable_unsafe_noiommu_mode")
   if noiommu == "Y" or noiommu == "1" then
      found[#found + 1] = "vfio's unsafe no-IOMMU mode is on (devices DMA to host-physical "
         .. "memory; for tests only)"
   end
   if vendor_id then found[#found + 1] = fmt("the CPU is %s (%s)", vendor or "other", vendor_id) end
   local fix
   if vendor == "AMD" then
      fix = "turn on the IOMMU (AMD-Vi, often called IOMMU or SVM/IOMMU) in the firmware "
         .. "(BIOS/UEFI) setup and boot with amd_iommu=on (Intel: VT-d and intel_iommu=on) "
   else
      fix = "turn on VT-d in the firmware (BIOS/UEFI) setup and boot with intel_iommu=on "
         .. "(AMD: the IOMMU/AMD-Vi setting and amd_iommu=on) "
   end
   fix = fix .. "on the kernel command line" .. (off and (", without " .. off) or "") .. " " .. GRUB
      .. "; in a VM, give it a virtual IOMMU (QEMU: -device intel-iommu,intremap=on with "
      .. "-M q35,kernel-irqchip=split)"
   add("IOMMU", "fail", table.concat(found, "; "), fix)
end

local function check_intremap(P, add, st)
   if not st.iommu then return end
   local irqs = read(P.proc .. "/interrupts") or ""
   if irqs:find("IR%-") then
      add("interrupt remapping", "ok", "on (IR- interrupt chips in " .. P.proc .. "/interrupts)")
      return
   end
   local unsafe = read(P.sys .. "/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")
   local cap
   for _, u in ipairs(st.iommu) do
      local ecap = hexnum(read(P.sys .. "/class/iommu/" .. u .. "/intel-iommu/ecap"))
      if ecap then cap = (cap == nil or cap) and (ecap & 0x8 ~= 0) end
   end
   local found = "off: no IR- interrupt chip in " .. P.proc .. "/interrupts"
   if cap == false then found = found .. "; the IOMMU has none (ecap IR bit clear)" end
   local fix = "turn interrupt remapping on: x2APIC/interrupt remapping in the firmware setup, "
      .. "and no intremap=off or nointremap on the kernel command line; in a VM, "
      .. "-device intel-iommu,intremap=on with -M q35,kernel-irqchip=split"
   if unsafe == "Y" or unsafe == "1" then
      add("interrupt remapping", "warn", found .. "; vfio_iommu_type1 allow_unsafe_interrupts=Y "
         .. "lets VFIO run without it, and a device can then raise interrupts it was not "
         .. "given", fix .. ", then drop allow_unsafe_interrupts")
   else
      add("interrupt remapping", "fail", found .. ": VFIO_SET_IOMMU refuses a container "
         .. "without it (EPERM)", fix .. "; as a last resort on a platform without it: "
         .. "options vfio_iommu_type1 allow_unsafe_interrupts=1 in /etc/modprobe.d (a device "
         .. "can then forge interrupts)")
   end
end

local function access(path)
   local ok = require("posix.unistd").access(path, "rw")
   return ok == 0
end

local function node_access(path)
   local s = px().stat(path)
   if not s then return nil end
   return access(path), fmt("%s (mode %o, uid %d, gid %d)", path, s.st_mode & 4095,
      s.st_uid, s.st_gid)
end

local function check_nodes(P, add)
   if exists(P.sys .. "/bus/pci/drivers/vfio-pci") then
      add("vfio-pci", "ok", "the vfio-pci driver is loaded")
   else
      add("vfio-pci", "fail", "the vfio-pci driver is not loaded (" .. P.sys
         .. "/bus/pci/drivers/vfio-pci is missing)", "modprobe vfio-pci (and add vfio-pci to "
         .. "/etc/modules to load it at boot)")
   end
   local ok, what = node_access(P.vfio .. "/vfio")
   if ok == nil then
      add("/dev/vfio", "fail", P.vfio .. "/vfio does not exist: VFIO is not loaded",
         "modprobe vfio-pci (it loads vfio)")
   elseif ok then
      add("/dev/vfio", "ok", what .. ": read and write allowed")
   else
      add("/dev/vfio", "fail", what .. ": no read and write access for this user",
         "run as root, or give your user the VFIO nodes: a udev rule such as "
         .. "SUBSYSTEM==\"vfio\", OWNER=\"USER\" in /etc/udev/rules.d/")
   end
   ok, what = node_access(P.kvm)
   if ok == nil then
      add("/dev/kvm", "warn", P.kvm .. " does not exist: VFIO works, but no VM can run "
         .. "(vfio-passthrough needs KVM)", "turn on VT-x or AMD-V in the firmware setup and "
         .. "modprobe kvm_intel or kvm_amd; in a VM, nested virtualization on the host")
   elseif ok then
      add("/dev/kvm", "ok", what .. ": read and write allowed")
   else
      add("/dev/kvm", "warn", what .. ": no read and write access for this user",
         "add your user to the kvm group (usermod -aG kvm USER, then log in again), or "
         .. "run as root")
   end
end

local function check_iommufd(P, add)
   local found, missing = {}, {}
   local ok, what = node_access(P.iommu)
   if ok == nil then
      missing[#missing + 1] = P.iommu .. " does not exist"
   else
      found[#found + 1] = what .. (ok and "" or ": no read and write access")
   end
   local cdevs = P.vfio .. "/devices"
   if exists(cdevs) then
      local n = #list(cdevs)
      found[#found + 1] = fmt("%s: %d device cdev%s", cdevs, n, n == 1 and "" or "s")
   else
      missing[#missing + 1] = cdevs .. " does not exist"
   end
   if #missing == 0 and ok then
      add("iommufd", "ok", table.concat(found, "; "))
      return
   end
   local all = {}
   for _, s in ipairs(found) do all[#all + 1] = s end
   for _, s in ipairs(missing) do all[#all + 1] = s end
   add("iommufd", "warn", table.concat(all, "; ") .. ": devices open through their "
      .. "groups only", "nothing, if the group interface (the default) serves; for iommufd: "
      .. "modprobe iommufd, on a kernel with CONFIG_IOMMUFD (6.2+) and "
      .. "CONFIG_VFIO_DEVICE_CDEV (6.6+) for device cdevs"
      .. (ok == false and "; give your user " .. P.iommu .. " (a udev rule), or run as root" or ""))
end

-- The memlock limit (soft), math.huge for none; CAP_IPC_LOCK in the effective set.
local function memlock(P, opts)
   local limit = opts.memlock
   if limit == nil then
      local r = require "posix.sys.resource"
      local l = r.getrlimit(r.RLIMIT_MEMLOCK or 8) -- 8 on Linux; luaposix 36 lacks the name
      limit = l and l.rlim_cur
      if limit == r.RLIM_INFINITY then limit = math.huge end
   elseif limit == "unlimited" then
      limit = math.huge
   end
   local status = read(P.proc .. "/self/status") or ""
   local capeff = tonumber(status:match("CapEff:%s*(%x+)") or "0", 16) or 0
   return limit, capeff & (1 << 14) ~= 0
end

local DEFAULT_PIN = 256 * MiB

local function check_memlock(P, add, opts)
   local limit, ipc_lock = memlock(P, opts)
   local need = opts.mem or DEFAULT_PIN
   local what = opts.mem and fmt("the %s a VM would pin (--mem)", size_text(need))
      or fmt("%s, a VM's RAM as vfio-passthrough --kernel pins it (--mem to say yours)",
         size_text(need))
   if ipc_lock then
      add("memlock limit", "ok", fmt("%s, but this process has CAP_IPC_LOCK (root): DMA "
         .. "mappings are not charged to it", limit == math.huge and "unlimited"
         or size_text(limit)))
   elseif limit == math.huge then
      add("memlock limit", "ok", "unlimited")
   elseif limit and limit >= need then
      add("memlock limit", "ok", fmt("%s, enough for %s", size_text(limit), what))
   else
      local kib = (need + KiB - 1) // KiB
      add("memlock limit", opts.mem and "fail" or "warn",
         fmt("%s (RLIMIT_MEMLOCK), less than %s: VFIO pins the memory it maps for DMA and "
            .. "the map fails with ENOMEM", size_text(limit or 0), what),
         fmt("ulimit -l %d (KiB) in the shell that runs it (raising the hard limit needs "
            .. "root), or '<user> - memlock %d' in /etc/security/limits.conf, or "
            .. "LimitMEMLOCK=%d in a systemd unit; or run as root (CAP_IPC_LOCK)",
            kib, kib, kib * KiB))
   end
end

local function check_hugepages(P, add, opts)
   local mi = read(P.proc .. "/meminfo") or ""
   local size = tonumber(mi:match("Hugepagesize:%s*(%d+) kB") or "")
   local pools = {}
   for _, d in ipairs(list(P.sys .. "/kernel/mm/hugepages")) do
      local kb = tonumber(d:match("^hugepages%-(%d+)kB$") or "")
      if kb then
         local dir = P.sys .. "/kernel/mm/hugepages/" .. d
         pools[#pools + 1] = { kb = kb, nr = tonumber(read(dir .. "/nr_hugepages") or "") or 0,
            free = tonumber(read(dir .. "/free_hugepages") or "") or 0, dir = dir }
      end
   end
   local parts = {}
   for _, p in ipairs(pools) do
      parts[#parts + 1] = fmt("%s pages: %d reserved, %d free", size_text(p.kb * KiB), p.nr, p.free)
   end
   local thp = read(P.sys .. "/kernel/mm/transparent_hugepage/enabled")
   if thp then parts[#parts + 1] = "transparent huge pages " .. (thp:match("%[(%w+)%]") or thp) end
   local found = #parts > 0 and table.concat(parts, "; ") or "no huge page pools in " .. P.sys
   if not opts.hugepages then
      add("huge pages", "ok", found .. " (not asked for: --hugepages checks a VM's RAM "
         .. "against them)")
      return
   end
   size = size and size * KiB or 2 * MiB
   local pool
   for _, p in ipairs(pools) do if p.kb * KiB == size then pool = p end end
   local need = math.ceil((opts.mem or DEFAULT_PIN) / size)
   if pool and pool.free >= need then
      add("huge pages", "ok", fmt("%s; %d free %s pages hold the VM's %s", found, pool.free,
         size_text(size), size_text(opts.mem or DEFAULT_PIN)))
   else
      local dir = pool and pool.dir
         or fmt("%s/kernel/mm/hugepages/hugepages-%dkB", P.sys, size // KiB)
      add("huge pages", "fail", fmt("%s; the VM's %s needs %d free %s pages", found,
         size_text(opts.mem or DEFAULT_PIN), need, size_text(size)),
         fmt("echo %d > %s/nr_hugepages (as root; early after boot, before memory "
            .. "fragments), or hugepages=%d on the kernel command line %s",
            (pool and pool.nr or 0) + need - (pool and pool.free or 0), dir,
            (pool and pool.nr or 0) + need - (pool and pool.free or 0), GRUB))
   end
end

-- ACS: the extended capability (ID 0x000d) in config space bytes: cap and ctl words, or
-- nil; false when the bytes stop before extended config space.
local ACS_NEEDED = { { "SrcValid", 0x01 }, { "ReqRedir", 0x04 }, { "CmpltRedir", 0x08 },
                     { "UpstreamFwd", 0x10 } }

local function word(b, o) return b:byte(o + 1) | (b:byte(o + 2) << 8) end
local function dword(b, o) return word(b, o) | (word(b, o + 2) << 16) end

local function acs_of(cfg)
   if #cfg < 0x108 then return false end
   local at, hops = 0x100, 0
   while at >= 0x100 and at + 8 <= #cfg and hops < 64 do
      local h = dword(cfg, at)
      if h == 0 or h == 0xffffffff then return nil end
      if h & 0xffff == 0x000d then return word(cfg, at + 4), word(cfg, at + 6) end
      at, hops = (h >> 20) & 0xffc, hops + 1
   end
   return nil
end

-- The PCIe port type (PCI Express capability, bits 7:4 of its flags), or nil for a
-- conventional function.
local function pcie_type(cfg)
   if #cfg < 0x40 or cfg:byte(7) & 0x10 == 0 then return nil end
   local at, hops = cfg:byte(0x35) & 0xfc, 0
   while at >= 0x40 and at + 4 <= #cfg and hops < 48 do
      if cfg:byte(at + 1) == 0x10 then return (word(cfg, at + 2) >> 4) & 0xf end
      at, hops = cfg:byte(at + 2) & 0xfc, hops + 1
   end
   return nil
end

local PORT = { [4] = "root port", [5] = "upstream port", [6] = "downstream port",
               [8] = "PCIe-to-PCI bridge" }

local function readbytes(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local s = f:read("a")
   f:close()
   return s
end

local function check_acs(P, add, bdf)
   local top = realpath(pcibus.devpath(P.sys, bdf))
   if not top then return end
   local path = {}
   for part in top:gmatch("[^/]+") do
      if part:match(pcibus.BDF) and part ~= bdf then path[#path + 1] = part end
   end
   local name = "ACS " .. bdf
   if #path == 0 then
      add(name, "ok", "no bridge between the device and the root complex: its isolation is "
         .. "its IOMMU group's")
      return
   end
   local good, bad, unread = {}, {}, {}
   for _, b in ipairs(path) do
      local cfg = readbytes(pcibus.devpath(P.sys, b) .. "/config") or ""
      local t = pcie_type(cfg)
      if #cfg <= 0x40 then
         unread[#unread + 1] = b -- others than root see the header only
      elseif t == nil then
         bad[#bad + 1] = b .. " (a conventional PCI bridge: the devices below it are not "
            .. "isolated from each other)"
      elseif t == 4 or t == 6 then
         local cap, ctl = acs_of(cfg)
         if cap == false then
            unread[#unread + 1] = b
         elseif cap == nil then
            bad[#bad + 1] = fmt("%s (%s without ACS)", b, PORT[t])
         else
            local off = {}
            for _, f in ipairs(ACS_NEEDED) do
               if ctl & f[2] == 0 then
                  off[#off + 1] = f[1] .. (cap & f[2] == 0 and " (not supported)" or "")
               end
            end
            if #off == 0 then
               good[#good + 1] = fmt("%s (%s: SrcValid ReqRedir CmpltRedir UpstreamFwd on)",
                  b, PORT[t])
            else
               bad[#bad + 1] = fmt("%s (%s: ACS %s off)", b, PORT[t], table.concat(off, ", "))
            end
         end
      end
   end
   local found = {}
   if #good > 0 then found[#found + 1] = "isolating: " .. table.concat(good, ", ") end
   if #bad > 0 then found[#found + 1] = "not isolating: " .. table.concat(bad, ", ") end
   if #unread > 0 then
      found[#found + 1] = "extended config space unreadable: " .. table.concat(unread, ", ")
   end
   if #bad > 0 then
      add(name, "warn", table.concat(found, "; ") .. ": devices below such a port share its "
         .. "IOMMU group", "move the card to a slot behind a port with ACS (usually one of "
         .. "the CPU's root ports), or pass the whole group through; the out-of-tree "
         .. "pcie_acs_override patch only hides the risk")
   elseif #unread > 0 then
      add(name, "warn", table.concat(found, "; "), "run the check as root: sysfs shows only "
         .. "the first 64 bytes of config space to other users")
   else
      add(name, "ok", table.concat(found, "; "))
   end
end

local function check_device(P, add, bdf, st)
   local dp = pcibus.devpath(P.sys, bdf)
   if not exists(dp) then
      add("device " .. bdf, "fail", fmt("no such PCI function (%s does not exist)", dp),
         "name a function from lspci -D (or ls() in vfio-poke)")
      return
   end
   local drv = pcibus.driver(P.sys, bdf)
   local uses = host.users(bdf, P)
   if is_vfio_driver(drv) then
      add("device " .. bdf, "ok", "bound to " .. drv)
   elseif #uses > 0 then
      add("device " .. bdf, "fail", fmt("%s, and the host uses it: %s",
         drv and ("bound to " .. drv) or "not bound", table.concat(uses, "; ")),
         "pass through a device the host does not need; or stop using it first (umount, "
         .. "swapoff, ip link set DEV down, another console) and then bind it")
   else
      add("device " .. bdf, "warn", drv and ("bound to the host driver " .. drv)
         or "bound to no driver", fmt("bind it to vfio-pci: vfio-poke, then bind(\"%s\"); "
         .. "or echo vfio-pci > %s/driver_override, unbind it and echo %s > %s/bus/pci/"
         .. "drivers_probe", bdf, dp, bdf, P.sys))
   end
   local n = pcibus.group(P.sys, bdf)
   if not n then
      if st.iommu then
         add("group of " .. bdf, "fail", "no IOMMU group (" .. dp .. "/iommu_group is missing)",
            "the IOMMU does not cover this device: see the IOMMU finding")
      end
      return
   end
   local members, blockers, binds = {}, {}, {}
   for _, other in ipairs(list(("%s/kernel/iommu_groups/%d/devices"):format(P.sys, n))) do
      local d = pcibus.driver(P.sys, other)
      members[#members + 1] = fmt("%s (%s)", other, d or "no driver")
      if not harmless_driver(d) then
         blockers[#blockers + 1] = fmt("%s (%s)", other, d)
         binds[#binds + 1] = fmt('bind("%s")', other)
      end
   end
   local gname = fmt("group %d", n)
   if not st.groups[n] then
      st.groups[n] = true
      if #blockers == 0 then
         add(gname, "ok", "viable: " .. table.concat(members, ", "))
      else
         add(gname, "fail", fmt("not viable: %s %s bound to a host driver (members: %s)",
            table.concat(blockers, ", "), #blockers == 1 and "is" or "are",
            table.concat(members, ", ")), "bind every function of the group to vfio-pci "
            .. "(in vfio-poke: " .. table.concat(binds, "; ") .. "; or vfio.bind), or unbind "
            .. "the ones you keep off the host (echo BDF > /sys/bus/pci/devices/BDF/driver/"
            .. "unbind); if the host needs one of them, the group cannot be passed through")
      end
      local node = ("%s/%d"):format(P.vfio, n)
      local ok, what = node_access(node)
      if ok == false then
         add(gname .. " node", "fail", what .. ": no read and write access for this user",
            "run as root, or chown the node to your user (a udev rule: SUBSYSTEM==\"vfio\", "
            .. "OWNER=\"USER\")")
      elseif ok == nil and is_vfio_driver(drv) then
         add(gname .. " node", "fail", node .. " does not exist though the device is bound to "
            .. drv, "is devtmpfs mounted on /dev? reload vfio-pci (modprobe -r vfio-pci; "
            .. "modprobe vfio-pci)")
      end
   end
   check_acs(P, add, bdf)
end

--- Check the host for VFIO device assignment, like libvirt's virt-host-validate.
-- @tparam[opt] table opts devices (a list of BDFs; default: the functions bound to
-- vfio-pci), mem (bytes a VM would pin; default 256 MiB), hugepages (true: the VM's RAM
-- must fit the free default-size huge pages), memlock (bytes or "unlimited": the limit,
-- for specs; default getrlimit), and the roots (root, or sysfs, procfs... see host.paths)
-- @treturn {table,...} findings in order: {check =, status = "ok"|"warn"|"fail",
-- found = what was found, fix = how to fix it (for warn and fail)}
function host.check(opts)
   opts = opts or {}
   local P = host.paths(opts)
   local findings = {}
   local function add(check, status, found, fix)
      findings[#findings + 1] = { check = check, status = status, found = found, fix = fix }
   end
   local st = { groups = {} }
   check_iommu(P, add, st)
   check_intremap(P, add, st)
   check_nodes(P, add)
   check_iommufd(P, add)
   check_memlock(P, add, opts)
   check_hugepages(P, add, opts)
   local devices = opts.devices
   if not devices or #devices == 0 then
      devices = {}
      for _, d in ipairs(pcibus.devices(P.sys) or {}) do
         if is_vfio_driver(d.driver) then devices[#devices + 1] = d.bdf end
      end
      if #devices == 0 then
         add("devices", "ok", "no function is bound to vfio-pci yet (name one to check it: "
            .. "vfio-poke --check BDF)")
      end
   end
   for _, bdf in ipairs(devices) do check_device(P, add, bdf, st) end
   return findings
end

--- The findings as text, one per line with its fix below.
-- @tparam {table,...} findings host.check's list
-- @treturn string the report
-- @treturn integer how many failed
function host.format(findings)
   local out, fails = {}, 0
   for _, f in ipairs(findings) do
      if f.status == "fail" then fails = fails + 1 end
      out[#out + 1] = fmt("%-4s  %s: %s", f.status:upper(), f.check, f.found)
      if f.fix then out[#out + 1] = "      fix: " .. f.fix end
   end
   return table.concat(out, "\n") .. "\n", fails
end

return host
