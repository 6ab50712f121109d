-- The host check (issue 25 item 2): vfio.host.check against fake sysfs, procfs and /dev
-- trees, one finding at a time; on this machine (bin/vfio-poke --check); and the ENOMEM
-- of a DMA map, which names the memlock limit and the `ulimit -l` it needs.
local has_posix = pcall(require, "posix")
if not has_posix then
   describe("vfio.host.check", function()
      it("needs luaposix", function() pending("luaposix missing (lab/setup --host)") end)
   end)
   return
end
local vfio = require "vfio"
local check = vfio.host.check
local fakehost = require "support.fakehost"
local files = require "support.files"

local host
after_each(function()
   if host then host:remove(); host = nil end
end)

-- The findings of a check of the fake host, by check name.
local function run(opts)
   opts = opts or {}
   opts.root = host.root
   if opts.memlock == nil then opts.memlock = "unlimited" end
   local list = check(opts)
   local by = {}
   for _, f in ipairs(list) do
      assert.is_string(f.check)
      assert.is_string(f.found)
      assert.is_truthy(({ ok = true, warn = true, fail = true })[f.status], f.status)
      -- every finding that is not ok says how to fix it
      if f.status ~= "ok" then assert.is_string(f.fix, f.check .. " has no fix") end
      by[f.check] = f
   end
   return by, list
end

local function cmd(c)
   local err = os.tmpname()
   local p = assert(io.popen(("%s 2>%s"):format(c, err)))
   local out = p:read("a")
   local _, _, code = p:close()
   local stderr = files.readfile(err)
   os.remove(err)
   return code, out, stderr
end

describe("vfio.host.check: the IOMMU", function()
   it("fails without one, saying how to turn it on for Intel and AMD", function()
      host = fakehost.new()
      host:write("proc/cmdline", "root=/dev/sda1 intel_iommu=off quiet\n")
      host:write("sys/firmware/acpi/tables/APIC", "")
      local f = run().IOMMU
      assert.are.equal("fail", f.status)
      assert.matches("no IOMMU: .*/sys/class/iommu is empty", f.found)
      assert.matches("the kernel command line turns it off %(intel_iommu=off%)", f.found)
      assert.matches("no DMAR %(Intel%) or IVRS %(AMD%) table", f.found)
      assert.matches("the CPU is Intel %(GenuineIntel%)", f.found)
      assert.matches("VT%-d in the firmware", f.fix)
      assert.matches("intel_iommu=on", f.fix)
      assert.matches("amd_iommu=on", f.fix)
      assert.matches("without intel_iommu=off", f.fix)
   end)

   it("names the IOMMU it finds and the groups", function()
      host = fakehost.new():good()
      host:pci("0000:00:03.0", { driver = "e1000e", group = 3 })
      local f = run().IOMMU
      assert.are.equal("ok", f.status)
      assert.matches("^Intel VT%-d %(DMAR%): dmar0; 1 IOMMU groups", f.found)
      host:remove()
      host = fakehost.new()
      host:iommu("ivhd0")
      assert.matches("^AMD%-Vi: ivhd0", run().IOMMU.found)
   end)
end)

describe("vfio.host.check: interrupt remapping", function()
   it("is ok when the interrupt chips are remapped", function()
      host = fakehost.new():good()
      local f = run()["interrupt remapping"]
      assert.are.equal("ok", f.status)
      assert.matches("IR%- interrupt chips", f.found)
   end)

   it("fails without it, and warns when allow_unsafe_interrupts stands in", function()
      host = fakehost.new():good()
      host:write("proc/interrupts", " 24:  0  PCI-MSI 512000-edge  ahci\n")
      host:iommu("dmar0", 0xf0050a2) -- ecap bit 3 (IR) clear
      local f = run()["interrupt remapping"]
      assert.are.equal("fail", f.status)
      assert.matches("ecap IR bit clear", f.found)
      assert.matches("VFIO_SET_IOMMU refuses", f.found)
      assert.matches("allow_unsafe_interrupts=1", f.fix)
      host:write("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "Y\n")
      f = run()["interrupt remapping"]
      assert.are.equal("warn", f.status)
      assert.matches("drop allow_unsafe_interrupts", f.fix)
   end)

   it("is not reported without an IOMMU (the IOMMU finding covers it)", function()
      host = fakehost.new()
      assert.is_nil(run()["interrupt remapping"])
   end)
end)

describe("vfio.host.check: modules and nodes", function()
   it("fails without vfio-pci and /dev/vfio/vfio, warns without /dev/kvm", function()
      host = fakehost.new()
      local by = run()
      assert.are.equal("fail", by["vfio-pci"].status)
      assert.matches("modprobe vfio%-pci", by["vfio-pci"].fix)
      assert.are.equal("fail", by["/dev/vfio"].status)
      assert.matches("does not exist", by["/dev/vfio"].found)
      assert.are.equal("warn", by["/dev/kvm"].status)
      assert.matches("kvm_intel or kvm_amd", by["/dev/kvm"].fix)
   end)

   it("passes on a good host", function()
      host = fakehost.new():good()
      local by, list = run()
      for _, f in ipairs(list) do assert.are.equal("ok", f.status, f.check .. ": " .. f.found) end
      assert.matches("mode 666", by["/dev/vfio"].found)
      assert.matches("no function is bound to vfio%-pci", by.devices.found)
   end)

   it("fails on nodes this user cannot open, with the fix", function()
      host = fakehost.new():good()
      host:node("vfio/vfio", 384) -- 0600 root
      host:node("kvm", 432)       -- 0660 root:root
      host:pci("0000:00:03.0", { driver = "vfio-pci", group = 7 })
      host:node("vfio/7", 384)
      local script = host.root .. "/probe.lua"
      files.writefile(script, ([[
         package.path = %q
         local host = require "vfio.host"
         for _, f in ipairs(host.check { root = %q, memlock = "unlimited" }) do
            print(f.check .. "|" .. f.status .. "|" .. f.found .. "|" .. tostring(f.fix))
         end
      ]]):format(package.path, host.root))
      files.sh("chmod -R a+rX " .. host.root)
      local code, out, err = cmd("setpriv --reuid=65534 --regid=65534 --clear-groups lua5.4 "
         .. script)
      assert.are.equal(0, code, err)
      assert.matches("\n/dev/vfio|fail|[^|]*/dev/vfio/vfio %(mode %d+, uid 0, gid 0%): no read "
         .. "and write access for this user|run as root, or [^|]*SUBSYSTEM==\"vfio\"", "\n" .. out)
      assert.matches("\n/dev/kvm|warn|[^|]*no read and write access[^|]*|add your user to the "
         .. "kvm group", "\n" .. out)
      assert.matches("\ngroup 7 node|fail|[^|]*/dev/vfio/7 %(mode %d+, uid 0", "\n" .. out)
   end)

   it("warns without iommufd or device cdevs, and is ok with both", function()
      host = fakehost.new():good()
      assert.are.equal("ok", run().iommufd.status)
      os.remove(host.dev .. "/iommu")
      files.sh("rmdir " .. host.dev .. "/vfio/devices")
      local f = run().iommufd
      assert.are.equal("warn", f.status)
      assert.matches("/dev/iommu does not exist; .*/dev/vfio/devices does not exist", f.found)
      assert.matches("CONFIG_IOMMUFD", f.fix)
   end)
end)

describe("vfio.host.check: the memlock limit", function()
   it("fails when the limit is below the RAM a VM would pin, with the ulimit -l it needs", function()
      host = fakehost.new():good()
      local f = run { memlock = 8 << 20, mem = 1 << 30 }["memlock limit"]
      assert.are.equal("fail", f.status)
      assert.matches("^8 MiB %(RLIMIT_MEMLOCK%), less than the 1 GiB a VM would pin", f.found)
      assert.matches("ulimit %-l 1048576 %(KiB%)", f.fix)
      assert.matches("memlock 1048576' in /etc/security/limits.conf", f.fix)
      assert.matches("LimitMEMLOCK=1073741824", f.fix)
   end)

   it("warns against the default VM size, passes when it fits or does not apply", function()
      host = fakehost.new():good()
      local f = run { memlock = 8 << 20 }["memlock limit"]
      assert.are.equal("warn", f.status)
      assert.matches("less than 256 MiB", f.found)
      assert.are.equal("ok", run { memlock = 2 << 30, mem = 1 << 30 }["memlock limit"].status)
      assert.are.equal("ok", run { memlock = "unlimited" }["memlock limit"].status)
      host:write("proc/self/status", "Name:\tlua5.4\nCapEff:\t000001ffffffffff\n")
      f = run { memlock = 64 << 10, mem = 1 << 30 }["memlock limit"]
      assert.are.equal("ok", f.status)
      assert.matches("CAP_IPC_LOCK", f.found)
   end)

   it("reads the process's own limit with getrlimit", function()
      host = fakehost.new():good()
      local script = host.root .. "/limit.lua"
      files.writefile(script, ([[
         package.path = %q
         local host = require "vfio.host"
         for _, f in ipairs(host.check { root = %q, mem = 1 << 30 }) do
            if f.check == "memlock limit" then print(f.status .. "|" .. f.found) end
         end
      ]]):format(package.path, host.root))
      local code, out, err = cmd("prlimit --memlock=65536:65536 lua5.4 " .. script)
      assert.are.equal(0, code, err)
      assert.matches("^fail|64 KiB %(RLIMIT_MEMLOCK%)", out)
   end)
end)

describe("vfio.host.check: huge pages", function()
   it("reports the pools, and checks a VM's RAM against them when asked", function()
      host = fakehost.new():good()
      host:write("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "10\n")
      host:write("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "10\n")
      host:write("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
      local f = run()["huge pages"]
      assert.are.equal("ok", f.status)
      assert.matches("2 MiB pages: 10 reserved, 10 free; transparent huge pages madvise", f.found)
      f = run { hugepages = true, mem = 64 << 20 }["huge pages"]
      assert.are.equal("fail", f.status)
      assert.matches("needs 32 free 2 MiB pages", f.found)
      assert.matches("^echo 32 > .*/hugepages%-2048kB/nr_hugepages", f.fix)
      assert.matches("hugepages=32 on the kernel command line", f.fix)
      assert.are.equal("ok", run { hugepages = true, mem = 16 << 20 }["huge pages"].status)
   end)
end)

describe("vfio.host.check: devices and groups", function()
   it("checks the functions bound to vfio-pci by default: driver, viable group, no bridge", function()
      host = fakehost.new():good()
      host:pci("0000:00:03.0", { driver = "vfio-pci", group = 7 })
      host:node("vfio/7", 438)
      local by = run()
      assert.are.equal("ok", by["device 0000:00:03.0"].status)
      assert.are.equal("ok", by["group 7"].status)
      assert.matches("viable: 0000:00:03%.0 %(vfio%-pci%)", by["group 7"].found)
      assert.are.equal("ok", by["ACS 0000:00:03.0"].status)
      assert.matches("no bridge between the device and the root complex",
         by["ACS 0000:00:03.0"].found)
   end)

   it("fails a group that is not viable, naming the function and what to bind", function()
      host = fakehost.new():good()
      host:pci("0000:00:03.0", { driver = "vfio-pci", group = 7 })
      host:pci("0000:00:03.1", { class = 0x040300, driver = "snd_hda_intel", group = 7 })
      host:node("vfio/7", 438)
      local f = run { devices = { "0000:00:03.0" } }["group 7"]
      assert.are.equal("fail", f.status)
      assert.matches("not viable: 0000:00:03%.1 %(snd_hda_intel%) is bound to a host driver", f.found)
      assert.matches('bind every function of the group to vfio%-pci %(in vfio%-poke: '
         .. 'bind%("0000:00:03.1"%); or vfio.bind%)', f.fix)
   end)

   it("warns about a device on a host driver, fails one the host uses", function()
      host = fakehost.new():good()
      host:pci("0000:00:03.0", { driver = "e1000e", group = 7 })
      host:net("eth0", "0000:00:03.0", 0x1002, "down")
      local f = run { devices = { "0000:00:03.0" } }["device 0000:00:03.0"]
      assert.are.equal("warn", f.status)
      assert.matches("bound to the host driver e1000e", f.found)
      assert.matches('bind%("0000:00:03.0"%)', f.fix)
      host:net("eth0", "0000:00:03.0", 0x1003, "up")
      f = run { devices = { "0000:00:03.0" } }["device 0000:00:03.0"]
      assert.are.equal("fail", f.status)
      assert.matches("the host uses it: network interface eth0 is up", f.found)
      f = run { devices = { "0000:00:09.0" } }["device 0000:00:09.0"]
      assert.are.equal("fail", f.status)
      assert.matches("no such PCI function", f.found)
   end)

   it("fails a device without an IOMMU group when there is an IOMMU", function()
      host = fakehost.new():good()
      host:pci("0000:00:03.0", { driver = "vfio-pci" })
      local f = run { devices = { "0000:00:03.0" } }["group of 0000:00:03.0"]
      assert.are.equal("fail", f.status)
      assert.matches("no IOMMU group", f.found)
   end)

   it("reads ACS on the ports above the device, lspci's way", function()
      host = fakehost.new():good()
      local ALL = 0x1f
      host:pci("0000:00:1c.0", { class = 0x060400, driver = "pcieport", group = 8,
         config = fakehost.config { bridge = true, port = 4, acs = { ALL, 0x1d } } })
      host:pci("0000:01:00.0", { parent = "0000:00:1c.0", class = 0x060400, driver = "pcieport",
         group = 9, config = fakehost.config { bridge = true, port = 5 } })
      host:pci("0000:02:01.0", { parent = "0000:01:00.0", class = 0x060400, driver = "pcieport",
         group = 10, config = fakehost.config { bridge = true, port = 6, acs = { ALL, 0x1d } } })
      host:pci("0000:03:00.0", { parent = "0000:02:01.0", driver = "vfio-pci", group = 11 })
      local f = run { devices = { "0000:03:00.0" } }["ACS 0000:03:00.0"]
      assert.are.equal("ok", f.status, f.found)
      assert.matches("isolating: 0000:00:1c%.0 %(root port: SrcValid ReqRedir CmpltRedir "
         .. "UpstreamFwd on%), 0000:02:01%.0 %(downstream port", f.found)
      -- the downstream port without ACS, and ReqRedir off (and unsupported) on the root port
      host:write("sys/devices/pci0000:00/0000:00:1c.0/config",
         fakehost.config { bridge = true, port = 4, acs = { 0x1b, 0x19 } })
      host:write("sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:01.0/config",
         fakehost.config { bridge = true, port = 6 })
      f = run { devices = { "0000:03:00.0" } }["ACS 0000:03:00.0"]
      assert.are.equal("warn", f.status)
      assert.matches("not isolating: 0000:00:1c%.0 %(root port: ACS ReqRedir %(not supported%) "
         .. "off%), 0000:02:01%.0 %(downstream port without ACS%)", f.found)
      assert.matches("devices below such a port share its IOMMU group", f.found)
      assert.matches("behind a port with ACS", f.fix)
      -- a user other than root reads 64 bytes of config space
      host:write("sys/devices/pci0000:00/0000:00:1c.0/config",
         fakehost.config { bridge = true, port = 4, size = 64 })
      host:write("sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:01.0/config",
         fakehost.config { bridge = true, port = 6, acs = { ALL, 0x1d } })
      f = run { devices = { "0000:03:00.0" } }["ACS 0000:03:00.0"]
      assert.are.equal("warn", f.status)
      assert.matches("extended config space unreadable: 0000:00:1c%.0", f.found)
      assert.matches("run the check as root", f.fix)
   end)
end)

describe("vfio.host.format and vfio-poke --check", function()
   it("prints one line per finding with its fix below", function()
      local text, fails = vfio.host.format {
         { check = "IOMMU", status = "fail", found = "none", fix = "turn it on" },
         { check = "x", status = "ok", found = "fine" },
      }
      assert.are.equal("FAIL  IOMMU: none\n      fix: turn it on\nOK    x: fine\n", text)
      assert.are.equal(1, fails)
   end)

   it("parses sizes", function()
      assert.are.equal(512 << 20, vfio.host.parse_size("512M"))
      assert.are.equal(2 << 30, vfio.host.parse_size("2G"))
      assert.are.equal(2 << 30, vfio.host.parse_size("2GiB"))
      assert.are.equal(1024 << 20, vfio.host.parse_size("1024"))
      assert.is_nil(vfio.host.parse_size("two"))
   end)

   it("on this machine: says when there is no IOMMU, with the fix, and exits 1", function()
      local n = 0
      for name in io.popen("ls /sys/class/iommu 2>/dev/null"):lines() do n = n + #name end
      if n > 0 then pending("this machine has an IOMMU (the lab spec covers that case)") return end
      local code, out, err = cmd("bin/vfio-poke --check")
      assert.are.equal(1, code, err)
      assert.matches("^FAIL  IOMMU: no IOMMU: /sys/class/iommu is empty", out)
      local fix = out:match("\n      fix: ([^\n]*)")
      assert.matches("intel_iommu=on", fix)
      assert.matches("amd_iommu=on", fix)
      assert.matches("VT%-d", fix)
      assert.matches("\nOK    memlock limit: ", out)
   end)

   it("is a usage error with a bad option, address or size", function()
      for _, args in ipairs { "--check --bogus", "--check eth0", "--check --mem two",
                              "--check --mem" } do
         local code, out, err = cmd("bin/vfio-poke " .. args)
         assert.are.equal(64, code, args)
         assert.are.equal("", out)
         assert.matches("^vfio%-poke: ", err)
      end
   end)
end)

describe("a DMA map's ENOMEM", function()
   it("names the memlock limit and the ulimit -l the map needs", function()
      local core = require "vfio.core"
      local script = os.tmpname()
      files.writefile(script, ([[
         package.cpath = %q
         local core = require "vfio.core"
         print(select(2, core._dma_map_error(12, 256 << 20)))
      ]]):format(package.cpath))
      -- without CAP_IPC_LOCK (root keeps it unless the bounding set drops it)
      local drop = io.popen("id -u"):read("l") == "0"
         and "setpriv --bounding-set -ipc_lock --inh-caps -ipc_lock " or ""
      local code, out, err = cmd("prlimit --memlock=65536:65536 " .. drop .. "lua5.4 " .. script)
      os.remove(script)
      assert.are.equal(0, code, err)
      assert.matches("^VFIO_IOMMU_MAP_DMA %(spec%): Cannot allocate memory: VFIO pins mapped "
         .. "memory against the memlock limit %(RLIMIT_MEMLOCK%), 64 KiB, with %d+ KiB locked "
         .. "already: this map needs at least 2621%d%d KiB %(ulimit %-l 2621%d%d,", out)
      local _, msg, errno = core._dma_map_error(22, 4096)
      assert.are.equal("VFIO_IOMMU_MAP_DMA (spec): Invalid argument", msg)
      assert.are.equal(22, errno)
   end)
end)
