-- The passthrough command: boot a Linux kernel or a multiboot guest in a KVM VM with VFIO
-- devices passed through. bin/vfio-passthrough (installed) and passthrough.lua (a
-- checkout) are thin wrappers that find the modules and the default guest, then call
-- cli.main; the options are defined once, in cli.parser (argparse), which parses them,
-- prints --help (HELP below) and writes the shell completion scripts.
local argparse = require "argparse"
local address_map = require "vfio.vmm.address_map"
local pcibus = require "vfio.pcibus"
local version = require "vfio.version"

local cli = {}

local EXIT = { pass = 0, fail = 1, nodev = 2, exception = 3, other = 4, usage = 64,
               setup = 125, interrupted = 130 }
cli.EXIT = EXIT

-- What --help prints after the synopsis (%s: the default guest).
local HELP = [[
Boot a Linux kernel (--kernel) or a multiboot guest in a KVM VM with VFIO devices passed
through. Options take their value as --opt VALUE or --opt=VALUE.

  --device BDF[,OPT...]  a device to pass through (0000:00:03.0, 00:03.0, inside the lab
                  a lab device name such as edu, or with --plan a recorded fixture file
                  spec/fixtures/NAME.lua); repeatable: each device gets its own slot
                  from 00:04.0 on, functions of one multi-function device share
                  one, and devices of one IOMMU group share a container. Options for
                  this device alone, after commas: no-mmap=on|off (as --no-mmap),
                  quirk=NAME (as --quirk, repeatable), e.g. 00:03.0,no-mmap=on,quirk=none;
                  port=on: behind a PCIe root port of its own (from 00:10.0), which
                  the guest's pciehp can power off (the device is then released); the
                  host taking it back (an unbind from vfio-pci) unplugs it from the
                  guest there, where a device with no slot stays until the run ends
  --kernel FILE   an x86-64 bzImage (or a vmlinux ELF), booted through the Linux boot
                  protocol with no firmware; its console (ttyS0) streams to stdout
  --decompress WHERE  host (the default): a bzImage's kernel is decompressed on the
                  host once, cached by its SHA-256 under $LUAVFIO_CACHE/vmlinux (else
                  $XDG_CACHE_HOME or ~/.cache/luavfio/vmlinux), and entered at its
                  64-bit entry, at its link address (no KASLR); guest: the kernel's
                  own decompressor runs in the guest, with KASLR. When the host lacks
                  the tool for the kernel's compression, the default falls back to
                  guest and says so; an explicit --decompress host fails instead
  --initrd FILE   the Linux guest's initramfs
  --append ARGS   added to the kernel command line after what the machine needs
  --cpus N        vCPUs of the Linux guest (default 1, at most 64): a thread each
  --halt-poll-us N  a halted vCPU polls N us for its wake-up before it sleeps (KVM's
                  halt polling; default the kernel's halt_poll_ns): lower I/O latency
                  for a CPU spent spinning
  --guest FILE    the multiboot guest, without --kernel (default %s)
  --mem SIZE[,below-4g=SIZE]  guest RAM: MiB, or with a suffix K, M, G, T (512M,
                  6G; default 64M, 256M with --kernel; 2M to %dM): up to %d MiB
                  below the hole under 4 GiB (or below-4g, at least 1M, as QEMU's
                  max-ram-below-4g), the rest from 4 GiB up (the e820 map says so);
                  the host's memory, the memlock limit (ulimit -l: VFIO pins
                  DMA-mapped RAM) and the IOMMU's aperture bound it further, each
                  failure saying which
  --mem-backing KIND  where guest RAM comes from: anonymous (the default: private
                  memory, transparent huge pages asked for), memfd (a sealed memfd,
                  shareable with another process) or hugetlbfs (as --hugepages)
  --hugepages [PATH]  guest RAM on huge pages: a huge-page memfd of the default size,
                  or a file in the hugetlbfs mount PATH; too few reserved pages is an
                  error that says how many to reserve
  --quirk NAME    apply only the named quirks (repeatable; "none" for none); by default
                  every built-in quirk matching the device
  --hotplug-slots N  N empty PCIe root ports with hot-plug slots (from 00:10.0) for
                  devices added while the guest runs; with --control, --device may be
                  left out (a guest that boots with empty slots)
  --cmdline ARGS  the guest's multiboot command line
  --timeout S     end the run after S seconds (S > 0; default: no limit, the guest
                  runs until it powers off, reboots, panics or the user stops it)
  --control PATH  with --kernel: a control socket at PATH (mode 0600, its owner and root
                  only) speaking JSON lines: info, pause, resume, quit, device_add,
                  device_del, eval, and events (doc/control.md); vfio-poke --attach PATH
                  is a REPL inside the running VMM
  --no-mmap       trap every BAR access in C, no BAR memory slots (QEMU's x-no-mmap)
  --trace         log every trapped access on stderr (config and BARs go through Lua)
  --plan          print the layout (BARs, mapped and trapped parts, interrupts, quirks)
                  without starting a VM
  --completion SHELL  print a completion script for bash, zsh or fish and exit
  --version       print the version and exit
  -h, --help      this text

The guest's debug console goes to stdout. Exit status: 0 pass, 1 fail, 2 device not
found, 3 guest exception (the guest's result), 4 the guest stopped some other way, 64
usage error (a bad option or value, a missing --kernel, --initrd or --guest file),
125 the VM could not be set up, 130 interrupted. With --kernel: 0 when the guest powers
off or reboots, 1 on a panic (its text on stderr), a triple fault, a timeout or an
uncorrectable error the host reports on a device (the run stops, naming it).
]]

-- What each option's value must be, for the errors that name it.
local WANTS = {
   ["--device"] = "a PCI address such as 0000:00:03.0",
   ["--kernel"] = "a bzImage or vmlinux file", ["--initrd"] = "an initramfs file",
   ["--guest"] = "a multiboot guest file", ["--append"] = "kernel command line arguments",
   ["--decompress"] = "host or guest", ["--cpus"] = "a whole number of vCPUs",
   ["--halt-poll-us"] = "a whole number of microseconds",
   ["--mem"] = "a size in MiB or with a suffix (512M, 6G)", ["--quirk"] = "a quirk name or none",
   ["--mem-backing"] = "anonymous, memfd or hugetlbfs", ["--hugepages"] = "a hugetlbfs mount",
   ["--cmdline"] = "the guest's command line", ["--timeout"] = "a number of seconds",
   ["--completion"] = "bash, zsh or fish", ["--control"] = "a socket path",
}

local function wanted(opt, got)
   return ("%s: expected %s, got '%s'"):format(opt, WANTS[opt], got)
end

local SIZE_SHIFT = { [""] = 20, k = 10, m = 20, g = 30, t = 40 }

--- Parse a guest RAM size into MiB.
-- A plain number is MiB; K, M, G and T suffixes (with an optional "iB" or "B", any case)
-- are binary multiples: "512M", "1G", "1.5GiB", "2048".
-- @tparam string s the size as the user wrote it
-- @treturn[1] integer the size in MiB
-- @treturn[2] nil when s is no size or not a whole number of MiB
-- @treturn[2] string why
function cli.parse_size(s)
   local num, suffix = tostring(s):match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
   local shift = suffix and SIZE_SHIFT[suffix:lower():gsub("i?b$", "")]
   if not num or not shift or (suffix ~= "" and suffix:lower():match("^[kmgt]?i?b?$") == nil) then
      return nil, "not a size"
   end
   local mib = tonumber(num) * (1 << shift) / (1 << 20)
   if mib ~= math.floor(mib) or mib >= math.maxinteger then
      return nil, "not a whole number of MiB"
   end
   return math.tointeger(mib)
end

local ON = { on = true, yes = true, ["true"] = true, ["1"] = true }
local OFF = { off = false, no = false, ["false"] = false, ["0"] = false }

--- Parse one --device value: the device and its own options.
-- "BDF[,no-mmap[=on|off]][,quirk=NAME]...[,port[=on|off]]": no-mmap and quirk apply to
-- this device only, over the command's --no-mmap and --quirk; port puts it behind a PCIe
-- root port of its own.
-- @tparam string s the value of --device
-- @treturn[1] table {name = the device as given, no_mmap = boolean or nil, quirks = list
-- of names or nil, port = true or nil}
-- @treturn[2] nil on an unknown or malformed device option
-- @treturn[2] string the message, naming --device and the option
function cli.parse_device(s)
   local name, rest = s:match("^([^,]*)(.*)$")
   if name == "" then return nil, wanted("--device", s) end
   local d = { name = name }
   for item in rest:gmatch(",([^,]*)") do
      local key, value = item:match("^([^=]*)=?(.*)$")
      if key == "no-mmap" then
         if value == "" and not item:find("=", 1, true) then value = "on" end
         local v = ON[value:lower()] or OFF[value:lower()]
         if v == nil then
            return nil, ("--device %s: no-mmap takes on or off, got '%s'"):format(s, value)
         end
         d.no_mmap = v
      elseif key == "port" then
         if value == "" and not item:find("=", 1, true) then value = "on" end
         local v = ON[value:lower()] or OFF[value:lower()]
         if v == nil then
            return nil, ("--device %s: port takes on or off, got '%s'"):format(s, value)
         end
         d.port = v or nil
      elseif key == "quirk" then
         if value == "" then return nil, ("--device %s: quirk= needs a quirk name or none"):format(s) end
         d.quirks = d.quirks or {}
         d.quirks[#d.quirks + 1] = value
      else
         return nil, ("--device %s: unknown device option '%s' (known: no-mmap=on|off, quirk=NAME, "
            .. "port=on|off)")
            :format(s, item)
      end
   end
   return d
end

local function converter(opt, fn)
   return function(v)
      local r = fn(v)
      if r == nil then return nil, wanted(opt, v) end
      return r
   end
end

local function whole(v) return math.tointeger(tonumber(v)) end

--- The passthrough command's options, defined once for parsing, --help and completion.
-- @tparam table how {prog = the command's name in messages, usage = how to run it,
-- guest = the default guest image}
-- @treturn table an argparse parser; parse with `:pparse(argv)`
function cli.parser(how)
   local synopsis = ("usage: %s --device BDF[,no-mmap=on][,quirk=NAME]... [--kernel BZIMAGE "
      .. "[--initrd FILE] [--append ARGS] [--decompress host|guest] [--cpus N]] [--guest FILE] "
      .. "[--mem SIZE] [--mem-backing KIND] [--hugepages [PATH]] [--quirk NAME]... [--cmdline ARGS] "
      .. "[--timeout S] [--control PATH] [--hotplug-slots N] [--no-mmap] [--trace] "
      .. "[--plan] [--version]"):format(how.usage)
   local p = argparse(how.prog, "Boot a guest in a KVM VM with VFIO devices passed through.")
      :add_help(false):usage(synopsis)
      :help(synopsis .. "\n\n" .. HELP:format(how.guest, address_map.RAM_SIZE_MAX >> 20,
                                                address_map.HOLE_START >> 20))
   p:flag("-h --help", "Print the help and exit.")
      :action(function() io.stdout:write(p:get_help()) os.exit(0) end)
   p:flag("--version", "Print the version and exit.")
      :action(function() io.stdout:write(version.line(how.prog), "\n") os.exit(0) end)
   p:option("--completion", "Print a completion script for SHELL and exit.")
      :argname("SHELL"):choices { "bash", "zsh", "fish" }
      :action(function(_, _, shell) io.stdout:write(p["get_" .. shell .. "_complete"](p)) os.exit(0) end)
   p:option("--device", "A device to pass through: BDF[,no-mmap=on|off][,quirk=NAME]...")
      :argname("BDF"):count("*"):target("devices")
      :convert(function(v)
         local d, why = cli.parse_device(v)
         if not d then return nil, why end
         return d
      end)
   p:option("--kernel", "An x86-64 bzImage or vmlinux to boot."):argname("FILE")
   p:option("--initrd", "The Linux guest's initramfs."):argname("FILE")
   p:option("--append", "Added to the kernel command line."):argname("ARGS")
   p:option("--decompress", "Where a bzImage is decompressed: host or guest.")
      :argname("WHERE"):convert(converter("--decompress", function(v)
         return (v == "host" or v == "guest") and v or nil end))
   p:option("--cpus", "vCPUs of the Linux guest."):argname("N")
      :convert(converter("--cpus", whole))
   p:option("--halt-poll-us", "KVM halt polling in microseconds."):argname("N")
      :target("halt_poll_us"):convert(converter("--halt-poll-us", whole))
   p:option("--guest", "The multiboot guest, without --kernel."):argname("FILE")
   p:option("--mem", "Guest RAM: MiB, or 512M, 6G; ,below-4g=SIZE puts less below 4 GiB.")
      :argname("SIZE"):convert(function(v)
         local size, below = v:match("^([^,]*),below%-4g=(.*)$")
         local mib = cli.parse_size(size or v)
         local below_mib = below and cli.parse_size(below)
         if not mib or (below and not below_mib) then return nil, wanted("--mem", v) end
         return { mib = mib, below_mib = below_mib }
      end)
   p:option("--mem-backing", "Where guest RAM comes from: anonymous, memfd or hugetlbfs.")
      :argname("KIND"):target("mem_backing"):choices { "anonymous", "memfd", "hugetlbfs" }
   p:option("--hugepages", "Guest RAM on huge pages (PATH: a hugetlbfs mount).")
      :argname("PATH"):args("?")
   p:option("--quirk", "Apply only the named quirks (none for none)."):argname("NAME")
      :count("*"):target("quirks")
   p:option("--hotplug-slots", "Empty PCIe root ports for hot-plug."):argname("N")
      :target("hotplug_slots"):convert(converter("--hotplug-slots", whole))
   p:option("--cmdline", "The multiboot guest's command line."):argname("ARGS")
   p:option("--timeout", "End the run after S seconds (default: no limit)."):argname("S")
      :convert(function(v)
         local n = tonumber(v)
         if n == 0 then
            return nil, "--timeout 0: a run limit must be more than 0 seconds; leave --timeout out "
               .. "for no limit"
         end
         if n and n > 0 and n < math.huge then return n end
         return nil, wanted("--timeout", v)
      end)
   p:option("--control", "A control socket at PATH (JSON lines; doc/control.md)."):argname("PATH")
   p:flag("--no-mmap", "Trap every BAR access, no BAR memory slots."):target("no_mmap")
   p:flag("--trace", "Log every trapped access on stderr.")
   p:flag("--plan", "Print the layout without starting a VM.")
   return p
end

-- argparse's own messages, reworded to name the option and what it wants.
local function reword(msg)
   local opt = msg:match("^option '(%-%-[%w-]+)' requires an argument$")
   if opt then return ("%s: expected %s, got nothing"):format(opt, WANTS[opt] or "a value") end
   opt = msg:match("^argument for option '(%-%-[%w-]+)' must be one of")
   if opt then return msg:gsub("^argument for option '(%-%-[%w-]+)' must be", "%1 must be") end
   local extra = msg:match("^too many arguments")
   if extra then return "unexpected argument (options start with --; see --help)" end
   return msg
end

--- Parse the command line into the run's options, checking everything that needs no device.
-- Defaults are filled in (no timeout: false, cpus 1, mem 64 or 256 MiB with --kernel,
-- mem_backing anonymous, or hugetlbfs with --hugepages), each
-- device's no_mmap and quirk names fall back to the command's, and the values are
-- checked against each other.
-- @tparam {string,...} argv the arguments (arg)
-- @tparam table how as for cli.parser
-- @treturn[1] table the options: devices = {{name=, no_mmap=, quirks=}...}, kernel,
-- initrd, append, decompress, cpus, halt_poll_us, guest, mem (MiB), mem_below_4g (MiB or
-- nil), mem_backing, hugetlbfs (a mount, or nil), quirks, cmdline, timeout (seconds, or
-- false: none), control, no_mmap, trace, plan, hotplug_slots
-- @treturn[2] nil on a usage error
-- @treturn[2] string the message (without the program's name)
function cli.parse(argv, how)
   local p = cli.parser(how)
   local args = {}
   for i = 1, #argv do args[i] = argv[i] end
   local ok, o = p:pparse(args)
   if not ok then return nil, reword(o) end
   -- no device at boot: only a board with hot-plug slots and a way to fill them (the
   -- control socket), or --plan to see those slots
   if #o.devices == 0 and not ((o.hotplug_slots or 0) > 0 and (o.control or o.plan)) then
      return nil, "--device is needed: which device to pass through (none at boot only with "
         .. "--hotplug-slots N and --control PATH, to add devices while the guest runs)"
   end
   o.guest_given = o.guest ~= nil
   o.guest = o.guest or how.guest
   o.cpus = o.cpus or 1
   o.timeout = o.timeout or false
   if o.hugepages then
      if o.mem_backing and o.mem_backing ~= "hugetlbfs" then
         return nil, ("--hugepages puts guest RAM on huge pages: it cannot go with --mem-backing %s")
            :format(o.mem_backing)
      end
      o.mem_backing, o.hugetlbfs = "hugetlbfs", o.hugepages[1]
   end
   -- a vfio-user server does its DMA in guest RAM it maps from a memfd
   local user_dev
   for _, d in ipairs(o.devices) do
      if (d.spec or d.name or ""):sub(1, 10) == "vfio-user:" then user_dev = d.spec or d.name end
   end
   if user_dev and o.mem_backing == "anonymous" then
      return nil, ("--device %s: its server does DMA in guest RAM it maps from a memfd, and "
         .. "--mem-backing anonymous gives it none: use --mem-backing memfd (the default with a "
         .. "vfio-user device) or hugetlbfs"):format(user_dev)
   end
   o.mem_backing = o.mem_backing or (user_dev and "memfd") or "anonymous"
   local mem = o.mem or { mib = o.kernel and 256 or 64 }
   o.mem, o.mem_below_4g = mem.mib, mem.below_mib
   if o.mem_below_4g and (o.mem_below_4g < 1 or o.mem_below_4g > address_map.HOLE_START >> 20) then
      return nil, ("--mem below-4g=%d MiB: it must be 1 to %d MiB (the hole begins at %#x)")
         :format(o.mem_below_4g, address_map.HOLE_START >> 20, address_map.HOLE_START)
   end
   if o.cpus < 1 then return nil, ("--cpus %d: at least 1"):format(o.cpus) end
   if o.cpus > 64 then return nil, ("--cpus %d: at most 64"):format(o.cpus) end
   if o.cpus > 1 and not o.kernel then return nil, "--cpus needs --kernel (the test program is one CPU)" end
   if o.halt_poll_us and o.halt_poll_us < 0 then
      return nil, wanted("--halt-poll-us", o.halt_poll_us)
   end
   if o.initrd and not o.kernel then return nil, "--initrd needs --kernel" end
   if o.hotplug_slots and (o.hotplug_slots < 0 or o.hotplug_slots > 16) then
      return nil, ("--hotplug-slots %d: 0 to 16 (root ports take slots 0x10 to 0x1f)")
         :format(o.hotplug_slots)
   end
   if o.control and not o.kernel then
      return nil, "--control needs --kernel (the multiboot test program runs without one)"
   end
   if o.control and o.plan then return nil, "--control goes with a run, not with --plan" end
   if o.control == "" then return nil, wanted("--control", "") end
   local board = require "vfio.vmm.board"
   local fits, why = board.check_mem(o.mem)
   if not fits then
      local given
      for i, a in ipairs(argv) do
         given = a:match("^%-%-mem=(.*)$") or (a == "--mem" and argv[i + 1]) or given
      end
      return nil, ("--mem %s: %s"):format(given or o.mem, why)
   end
   for _, d in ipairs(o.devices) do
      if d.no_mmap == nil then d.no_mmap = o.no_mmap or nil end
      d.quirks = d.quirks or (#o.quirks > 0 and o.quirks or nil)
   end
   return o
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

--- Resolve a --device name to what vfio.open takes, before anything is opened.
-- Addresses (0000:00:03.0, 00:03.0), mdev UUIDs and sysfs paths pass as they are; a
-- recorded fixture (NAME.lua) only with --plan; a lab device name (edu, nvme) through
-- LUAVFIO_LAB_DEVICES, which lab/run sets.
-- @tparam string name the device as given to --device
-- @tparam boolean plan whether --plan was given
-- @tparam[opt] string lab_devices the lab's device list (default $LUAVFIO_LAB_DEVICES)
-- @treturn[1] string what to open
-- @treturn[2] nil when the name cannot be a device
-- @treturn[2] string the usage error
function cli.resolve_device(name, plan, lab_devices)
   if name:match("%.lua$") then
      if plan then return name end
      return nil, ("--device %s: a recorded fixture only lays out with --plan"):format(name)
   end
   if pcibus.parse_bdf(name) or name:lower():match(UUID) or name:sub(1, 1) == "/" then
      return name
   end
   if name:sub(1, 10) == "vfio-user:" then
      if #name == 10 then
         return nil, "--device vfio-user:PATH: the path of the vfio-user server's socket is missing"
      end
      return name
   end
   if name:find(":", 1, true) then
      return nil, ("--device %s: not a PCI address (expected DDDD:BB:DD.F or BB:DD.F, such as "
         .. "0000:00:03.0; lspci -D lists them)"):format(name)
   end
   lab_devices = lab_devices or os.getenv("LUAVFIO_LAB_DEVICES")
   if not lab_devices then
      return nil, ("--device %s: names like %s only exist inside the lab (lab/run); outside it, "
         .. "give a PCI address such as 0000:00:03.0 (lspci -D lists them)"):format(name, name)
   end
   local names = {}
   local f = io.open(lab_devices)
   if f then
      for line in f:lines() do
         local bdf, n = line:match("^(%S+) %S+ %S+ %S+ (%S+)")
         if n == name then f:close() return bdf end
         names[#names + 1] = n
      end
      f:close()
   end
   return nil, ("--device %s: the lab has no device of that name (it has: %s)")
      :format(name, #names > 0 and table.concat(names, ", ") or "none")
end

-- Quirk selection by name (a quirk's name or its module name): nil keeps the default.
local function select_quirks(list)
   if not list then return true, nil end
   local quirks = require "vfio.vmm.quirks"
   local selected, all, names = {}, quirks.load_builtin(), {}
   for i, q in ipairs(all) do names[#names + 1] = q.name .. " (" .. quirks.builtin[i] .. ")" end
   for _, n in ipairs(list) do
      if n ~= "none" then
         local found
         for i, q in ipairs(all) do
            if q.name == n or quirks.builtin[i] == n then found = q end
         end
         if not found then
            return false, ("unknown quirk %s; known: none, %s"):format(n, table.concat(names, ", "))
         end
         selected[#selected + 1] = found
      end
   end
   return true, selected
end

-- An input file named on the command line: one that cannot be opened is a usage error.
local function open_input(opt, path)
   local f, err = io.open(path, "rb")
   if not f then return nil, ("%s %s"):format(opt, err) end
   return f
end

-- How the command ends: a message on stderr and the exit status.
local function die(how, code, fmt, ...)
   io.stderr:write(how.prog, ": ", fmt:format(...), "\n")
   os.exit(code)
end

local function usage_error(how, msg)
   io.stderr:write(how.prog, ": ", msg, " (see --help)\n", cli.parser(how):get_usage(), "\n")
   os.exit(EXIT.usage)
end

-- Everything that needs no device, checked before anything is opened: each device's
-- name and quirks, the guest files (one that cannot be opened is a usage error, one that
-- is not bootable cannot set up the VM, nor can a multiboot guest on a machine without
-- KVM, asked here too). Returns the kernel's bytes when a kernel will be booted.
local function check_inputs(o, how)
   for _, d in ipairs(o.devices) do
      local spec, why = cli.resolve_device(d.name, o.plan)
      if not spec then usage_error(how, why) end
      d.spec = spec
      local ok, list = select_quirks(d.quirks)
      if not ok then usage_error(how, list) end
      d.quirk_list = list
   end
   local files = { { "--kernel", o.kernel }, { "--initrd", o.initrd },
                   { "--guest", o.guest_given and o.guest or nil } }
   for _, f in ipairs(files) do
      if f[2] then
         local h, err = open_input(f[1], f[2])
         if not h then usage_error(how, err) end
         h:close()
      end
   end
   if o.plan then return nil end
   if o.kernel then
      local f = assert(open_input("--kernel", o.kernel))
      local image = f:read("a")   -- read once: the boot takes these bytes
      f:close()
      local hdr, why
      if require("vfio.vmm.vmlinux").is_elf(image) then
         hdr, why = require("vfio.vmm.vmlinux").from_string(image,
            address_map.low_ram_end(o.mem << 20, o.mem_below_4g and o.mem_below_4g << 20), o.kernel)
         if not hdr then die(how, EXIT.setup, "kernel %s", why) end
      else
         hdr, why = require("vfio.vmm.linux").parse(image)
         if not hdr then die(how, EXIT.setup, "kernel %s: %s", o.kernel, why) end
      end
      return image
   end
   local f, err = io.open(o.guest, "rb")
   if not f then die(how, EXIT.setup, "the default guest %s (make build makes it)", err) end
   local image = f:read("a")
   f:close()
   local ok, why = require("vfio.vmm.multiboot").parse(image)
   if not ok then die(how, EXIT.setup, "guest %s is not bootable: %s", o.guest, why) end
   local kvm, kvm_err = require("vfio.core").kvm_open()
   if not kvm then
      die(how, EXIT.setup, "%s: this machine has no KVM (load kvm-intel or kvm-amd, or run "
         .. "inside the lab: lab/run -- lua5.4 passthrough.lua ...)", kvm_err)
   end
   kvm:close()
   return nil
end

-- The devices opened (a recorded fixture only with --plan) and made assigned devices,
-- each with its own no-mmap and quirks (--device BDF,no-mmap=on,quirk=NAME). Returns
-- the assigned devices and a cleanup function for them and what they were opened from.
local function open_devices(o, how)
   local vfio = require "vfio"
   local assigned = require "vfio.vmm.assigned"
   local devs, list = {}, {}
   local function cleanup()
      for i = #list, 1, -1 do list[i]:close() end
      for i = #devs, 1, -1 do
         if type(devs[i]) == "table" and devs[i].close then devs[i]:close() end
      end
   end
   local function give_up(code, fmt, ...)
      cleanup()
      die(how, code, fmt, ...)
   end
   -- with --trace, each device's lines are tagged with its host address for the control
   -- socket's eval (trace(n, device)); the board's own lines carry no tag
   local function tracer(tag)
      return o.trace and function(line)
         io.stderr:write("trace: ", line, "\n")
         if o.on_trace then o.on_trace(line, tag) end
      end or nil
   end
   o.tracer = tracer
   local trace = tracer(nil)
   for _, d in ipairs(o.devices) do
      local spec = d.spec
      local dev, err, errno
      if o.plan and spec:match("%.lua$") then
         dev = spec -- a recorded fixture: layout only
      else
         local ok
         ok, dev, err, errno = pcall(vfio.open, spec)
         if not ok then
            give_up(EXIT.usage, "--device %s: %s", d.name,
               (tostring(dev):gsub("^bad argument #%d+ %((.*)%)$", "%1")))
         end
         if not dev then give_up(EXIT.setup, "%s (%s)", err, vfio.errname(errno)) end
      end
      devs[#devs + 1] = dev
      local a
      a, err = assigned.new(dev, { quirks = d.quirk_list, no_mmap = d.no_mmap,
                                   trace = tracer(pcibus.parse_bdf(spec) or spec) })
      if not a then give_up(EXIT.setup, "device %s: %s", d.name, tostring(err)) end
      list[#list + 1] = a
   end
   return list, cleanup, trace
end

-- The board the run would have, or has (plan: no VM): a Linux guest gets IOAPIC INTx
-- lines, which its MP table describes; the multiboot test program legacy ones it drives
-- through the PIC. Every device is added to it (slots, lines, BARs).
local function build_board(o, how, devices, cleanup, trace)
   local board, err = require("vfio.vmm.board").new {
      mem_mib = o.mem, ram_below_4g = o.mem_below_4g and o.mem_below_4g << 20,
      backing = o.mem_backing, hugetlbfs = o.hugetlbfs, trace = trace,
      vm = { cpus = o.cpus }, halt_poll_us = o.halt_poll_us, legacy_intx = not o.kernel, plan = o.plan,
      hotplug_slots = o.hotplug_slots }
   if not board then
      cleanup()
      die(how, EXIT.setup, "%s", tostring(err))
   end
   -- devices behind a root port of their own (port=on) apart from those on bus 0
   local on_bus0, behind = {}, {}
   for i, d in ipairs(devices) do
      if o.devices[i].port then behind[#behind + 1] = i else on_bus0[#on_bus0 + 1] = d end
   end
   local ok, aerr = board:add_devices(on_bus0)
   for _, i in ipairs(behind) do
      if not ok then break end
      ok, aerr = board:add_device(devices[i], { port = true })
   end
   if not ok then
      board:close()
      cleanup()
      for i, d in ipairs(devices) do
         if not board:where(d) and aerr then
            die(how, EXIT.setup, "device %s: %s", o.devices[i].name, tostring(aerr))
         end
      end
      die(how, EXIT.setup, "placing devices: %s", tostring(aerr))
   end
   -- LUAVFIO_TIMING=1: what mapping guest RAM for the devices' DMA took (bench/ram.lua)
   local t = board.dma_timing
   if t and (os.getenv("LUAVFIO_TIMING") or "") ~= "" and os.getenv("LUAVFIO_TIMING") ~= "0" then
      io.stderr:write(("%s: guest RAM mapped for DMA: %d MiB in %.3f s (%.1f ms per GiB)\n"):format(how.prog,
         t.bytes >> 20, t.seconds, t.bytes > 0 and t.seconds * 1000 / (t.bytes / (1 << 30)) or 0))
   end
   return board
end

--- Print what a run would build (--plan): the board asked for its plan.
-- @tparam table o the options (cli.parse), their devices checked
-- @tparam table how as for cli.main
function cli.plan(o, how)
   local devices, cleanup, trace = open_devices(o, how)
   local board = build_board(o, how, devices, cleanup, trace)
   io.write(board:plan())
   board:close()
   cleanup()
   os.exit(0)
end

-- device_add's opener for the control socket: a device opened as --device opens one,
-- with the command's --quirk and --no-mmap. Returns the assigned device, or nil,
-- message, errno; close_device closes both.
local function hotplug_opener(o)
   local opened = setmetatable({}, { __mode = "k" })
   local function open_device(bdf)
      local vfio = require "vfio"
      local ok, dev, err, errno = pcall(vfio.open, bdf)
      if not ok then return nil, tostring(dev) end
      if not dev then return nil, err, errno end
      local qok, list = select_quirks(#o.quirks > 0 and o.quirks or nil)
      if not qok then dev:close() return nil, list end
      local a, aerr, aerrno = require("vfio.vmm.assigned").new(dev, {
         quirks = list, no_mmap = o.no_mmap or nil, trace = o.tracer and o.tracer(bdf) })
      if not a then dev:close() return nil, aerr, aerrno end
      opened[a] = dev
      return a
   end
   local function close_device(a)
      a:close()
      if opened[a] then opened[a]:close() opened[a] = nil end
   end
   return open_device, close_device
end

-- The control socket (--control) over the board, or the command ends (status 125).
local function open_control(o, how, board, cleanup)
   local open_device, close_device = hotplug_opener(o)
   local ctl, err = require("vfio.vmm.control").open {
      path = o.control, board = board, open_device = open_device, close_device = close_device }
   if not ctl then
      board:close()
      cleanup()
      die(how, EXIT.setup, "%s", tostring(err))
   end
   o.on_trace = function(line, tag) ctl:log(line, tag) end
   io.stderr:write(how.prog, ": control socket ", o.control, "\r\n")
   return ctl
end

-- SIGINT/SIGTERM: KVM_RUN returns EINTR, the run loop ends, teardown follows. Returns a
-- function saying which signal came, if one did.
local function catch_signals()
   local interrupted
   local okp, signal = pcall(require, "posix.signal")
   if okp then
      local function on_signal(sig) interrupted = sig end
      signal.signal(signal.SIGINT, on_signal)
      signal.signal(signal.SIGTERM, on_signal)
   end
   return function() return interrupted end
end

--- Boot a Linux kernel (--kernel) on a board with the devices, and exit with its verdict.
-- @tparam table o the options (cli.parse), their devices checked
-- @tparam table how as for cli.main
-- @tparam string image the kernel's bytes (read once, when checked)
function cli.run_linux(o, how, image)
   local prog = how.prog
   local devices, cleanup, trace = open_devices(o, how)
   local board = build_board(o, how, devices, cleanup, trace)
   local interrupted = catch_signals()
   local ctl = o.control and open_control(o, how, board, cleanup)
   -- A terminal on stdin becomes the guest's serial console: raw, every key to the
   -- UART, Ctrl-A x ends the run (Ctrl-A Ctrl-A sends a Ctrl-A), as QEMU's -nographic.
   local console = require("vfio.vmm.console").open()
   if console then io.stderr:write(prog, ": the terminal is the guest's console; Ctrl-A x quits\r\n") end
   local ok, r, why = pcall(board.boot_linux, board, {
      kernel = o.kernel, image = image, initrd = o.initrd, append = o.append, timeout = o.timeout,
      -- an explicit "host" fails where the default falls back to the guest's decompressor
      decompress = o.decompress or "auto",
      on_note = function(text) io.stderr:write(prog, ": ", text, "\r\n") end,
      should_stop = interrupted,
      slice = console and 0.05 or nil,
      -- the control socket wakes a slice as soon as a client connects or sends; its
      -- commands run between slices, and while paused it waits there (pumping the console)
      wake = ctl and function() return ctl:fds() end or nil,
      on_slice = (console or ctl) and function(vm)
         if console and console:pump(vm.uart) == false then return false end
         if ctl then
            return ctl:between_runs(console and function() return console:pump(vm.uart) end,
                                    interrupted)
         end
         return true
      end or nil })
   if console then console:close() end
   io.stdout:flush()
   local quit = ctl and ctl.quit
   if ctl then
      -- the clients learn how the guest ended before the socket closes
      ctl:stopped(quit and { result = "quit", status = 0 } or (ok and r) or { result = "error", status = EXIT.setup })
      ctl:close()
   end
   board:close()
   if ctl then ctl:release() end
   cleanup()
   if quit and not interrupted() then
      io.stderr:write(prog, ": guest stopped by the control socket (quit); VM torn down\n")
      os.exit(0)
   end
   if interrupted() then die(how, EXIT.interrupted, "interrupted by signal %d; VM torn down", interrupted()) end
   if not ok then die(how, EXIT.setup, "%s", tostring(r)) end
   if not r then die(how, EXIT.setup, "%s", tostring(why)) end
   if r.result == "panic" then
      io.stderr:write(prog, ": the guest panicked:\n", (r.tail:match(".*(Kernel panic.-)$") or r.tail), "\n")
   end
   local ending = ""
   if r.why then                      -- the VMM stopped it (a device's error, vfio.vmm.reclaim)
      ending = ": " .. r.why
   elseif r.status ~= 0 and r.exit then   -- an ending that is no verdict of the guest's own
      local x = r.exit
      ending = (" (exit %s, KVM reason %s%s%s%s)"):format(tostring(x.reason), tostring(x.kvm_reason),
         x.vcpu and (", vcpu " .. x.vcpu) or "", x.code and (", code " .. x.code) or "",
         r.where and ("; " .. r.where) or "")
   end
   io.stderr:write(("%s: guest %s%s\n"):format(prog, r.result, ending))
   os.exit(r.status)
end

--- Boot the multiboot guest (--guest, the test program by default) on a board with the
-- devices, and exit with the result it wrote to the exit port.
-- @tparam table o the options (cli.parse), their devices checked
-- @tparam table how as for cli.main
function cli.run_multiboot(o, how)
   local devices, cleanup, trace = open_devices(o, how)
   local board = build_board(o, how, devices, cleanup, trace)
   local interrupted = catch_signals()
   local ok, r, why = pcall(board.boot, board, o.guest, { cmdline = o.cmdline, timeout = o.timeout,
                                                         should_stop = interrupted })
   local out = board:output()
   board:close()
   cleanup()
   io.write(out)
   io.stdout:flush()
   if interrupted() then die(how, EXIT.interrupted, "interrupted by signal %d; VM torn down", interrupted()) end
   if not ok then die(how, EXIT.setup, "%s", tostring(r)) end
   if not r then die(how, EXIT.setup, "%s", tostring(why)) end
   io.stderr:write(("%s: guest %s%s\n"):format(how.prog, r.result,
      r.code and (" (exit code " .. r.code .. ")") or ""))
   os.exit(EXIT[r.result] or EXIT.other)
end

--- Run the passthrough command and exit the process with its status: parse, check what
-- needs no device, then plan, boot Linux or boot the multiboot guest.
-- @tparam {string,...} argv the arguments (arg)
-- @tparam table how {prog = name in messages, usage = how to run it, guest = default guest
-- image}
function cli.main(argv, how)
   local o, perr = cli.parse(argv, how)
   if not o then usage_error(how, perr) end
   local image = check_inputs(o, how)
   if o.plan then return cli.plan(o, how) end
   if o.kernel then return cli.run_linux(o, how, image) end
   return cli.run_multiboot(o, how)
end

return cli
