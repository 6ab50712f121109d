-- The passthrough command: boot a multiboot guest in a KVM VM with one VFIO device passed
-- through. bin/passthrough (installed) and passthrough.lua (a checkout) are thin wrappers
-- that find the modules and the default guest, then call cli.main; the options and exit
-- statuses are in HELP below (what --help prints).
local cli = {}

local EXIT = { pass = 0, fail = 1, nodev = 2, exception = 3, other = 4, usage = 64,
               setup = 125, interrupted = 130 }
cli.EXIT = EXIT

-- What --help prints after the synopsis (%s: the default guest).
local HELP = [[
Boot a Linux kernel (--kernel) or a multiboot guest in a KVM VM with VFIO devices passed
through.

  --device BDF    a device to pass through (0000:00:03.0, 00:03.0, a lab device name
                  such as edu, or with --plan a recorded fixture file
                  spec/fixtures/NAME.lua); repeatable: each device gets its own slot
                  from 00:04.0 on, functions of one multi-function device share
                  one, and devices of one IOMMU group share a container
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
  --cpus N        vCPUs of the Linux guest (default 1): a thread each
  --halt-poll-us N  a halted vCPU polls N us for its wake-up before it sleeps (KVM's
                  halt polling; default the kernel's halt_poll_ns): lower I/O latency
                  for a CPU spent spinning
  --guest FILE    the multiboot guest, without --kernel (default %s)
  --mem MIB       guest RAM (default 64; 256 with --kernel)
  --quirk NAME    apply only the named quirks (repeatable; "none" for none); by default
                  every built-in quirk matching the device
  --cmdline ARGS  the guest's multiboot command line
  --timeout S     end the run after S seconds (default 120)
  --no-mmap       trap every BAR access in C, no BAR memory slots (QEMU's x-no-mmap)
  --trace         log every trapped access on stderr (config and BARs go through Lua)
  --plan          print the layout (BARs, mapped and trapped parts, interrupts, quirks)
                  without starting a VM
  -h, --help      this text

The guest's debug console goes to stdout. Exit status: 0 pass, 1 fail, 2 device not
found, 3 guest exception (the guest's result), 4 the guest stopped some other way, 64
usage error, 125 the VM could not be set up, 130 interrupted. With --kernel: 0 when the
guest powers off or reboots, 1 on a panic (its text on stderr), a triple fault or a
timeout.
]]

-- cli.main(argv, {prog = name in messages, usage = how to run it, guest = default guest
-- image}): runs the command and exits the process with its status.
function cli.main(argv, how)
   local prog = how.prog
   local function die(code, fmt, ...)
      io.stderr:write(prog, ": ", fmt:format(...), "\n")
      os.exit(code)
   end

   local synopsis = ("usage: %s --device BDF... [--kernel BZIMAGE [--initrd FILE] [--append ARGS] "
      .. "[--decompress host|guest] [--cpus N]] [--guest FILE] [--mem MIB] [--quirk NAME]... "
      .. "[--cmdline ARGS] [--timeout S] [--no-mmap] [--trace] [--plan]"):format(how.usage)
   local function usage() die(EXIT.usage, "%s", synopsis) end

   local o = { guest = how.guest, quirks = {}, timeout = 120, devices = {}, cpus = 1 }
   do
      local i = 1
      local function value()
         i = i + 1
         if argv[i] == nil then usage() end
         return argv[i]
      end
      while i <= #argv do
         local a = argv[i]
         if a == "--device" then o.devices[#o.devices + 1] = value()
         elseif a == "--guest" then o.guest = value()
         elseif a == "--kernel" then o.kernel = value()
         elseif a == "--initrd" then o.initrd = value()
         elseif a == "--append" then o.append = value()
         elseif a == "--decompress" then
            o.decompress = value()
            if o.decompress ~= "host" and o.decompress ~= "guest" then
               die(EXIT.usage, "--decompress %s: host or guest", o.decompress)
            end
         elseif a == "--cpus" then o.cpus = math.tointeger(tonumber(value())) or usage()
         elseif a == "--halt-poll-us" then o.halt_poll_us = math.tointeger(tonumber(value())) or usage()
         elseif a == "--mem" then o.mem = math.tointeger(tonumber(value())) or usage()
         elseif a == "--quirk" then o.quirks[#o.quirks + 1] = value()
         elseif a == "--cmdline" then o.cmdline = value()
         elseif a == "--timeout" then o.timeout = tonumber(value()) or usage()
         elseif a == "--trace" then o.trace = true
         elseif a == "--plan" then o.plan = true
         elseif a == "--no-mmap" then o.no_mmap = true
         elseif a == "-h" or a == "--help" then
            io.stdout:write(synopsis, "\n\n", HELP:format(how.guest))
            os.exit(0)
         else die(EXIT.usage, "unknown argument %s (see --help)", a) end
         i = i + 1
      end
   end
   if #o.devices == 0 then usage() end
   o.mem = o.mem or (o.kernel and 256 or 64)
   if o.cpus < 1 then die(EXIT.usage, "--cpus must be at least 1") end
   if o.cpus > 64 then die(EXIT.usage, "--cpus %d: at most 64", o.cpus) end
   if o.cpus > 1 and not o.kernel then die(EXIT.usage, "--cpus needs --kernel (the test program is one CPU)") end

   local machine = require "vfio.vmm.machine"
   local quirks = require "vfio.vmm.quirks"
   local multiboot = require "vfio.vmm.multiboot"

   -- Quirk selection by name (a quirk's name or its module name).
   local quirk_list
   if #o.quirks > 0 then
      quirk_list = {}
      local all, names = quirks.load_builtin(), {}
      for i, q in ipairs(all) do names[#names + 1] = q.name .. " (" .. quirks.builtin[i] .. ")" end
      for _, n in ipairs(o.quirks) do
         if n ~= "none" then
            local found
            for i, q in ipairs(all) do
               if q.name == n or quirks.builtin[i] == n then found = q end
            end
            if not found then
               die(EXIT.usage, "unknown quirk %s; known: none, %s", n, table.concat(names, ", "))
            end
            quirk_list[#quirk_list + 1] = found
         end
      end
   end

   -- The guest files are checked before anything is opened.
   local kernel_image
   if o.kernel and not o.plan then
      local f, err = io.open(o.kernel, "rb")
      if not f then die(EXIT.setup, "kernel %s", err) end
      local image = f:read("a")
      f:close()
      kernel_image = image -- read once: the boot takes these bytes
      local hdr, why
      if require("vfio.vmm.vmlinux").is_elf(image) then
         hdr, why = require("vfio.vmm.vmlinux").from_string(image, o.mem << 20, o.kernel)
         if not hdr then die(EXIT.setup, "kernel %s", why) end
      else
         hdr, why = require("vfio.vmm.linux").parse(image)
         if not hdr then die(EXIT.setup, "kernel %s: %s", o.kernel, why) end
      end
      if o.initrd then
         local r, ierr = io.open(o.initrd, "rb")
         if not r then die(EXIT.setup, "initrd %s", ierr) end
         r:close()
      end
   elseif not o.plan then
      local f, err = io.open(o.guest, "rb")
      if not f then die(EXIT.setup, "guest %s", err) end
      local image = f:read("a")
      f:close()
      local ok, why = multiboot.parse(image)
      if not ok then die(EXIT.setup, "guest %s is not bootable: %s", o.guest, why) end
      local kvm, kvm_err = require("vfio.core").kvm_open()
      if not kvm then
         die(EXIT.setup, "%s: this machine has no KVM (load kvm-intel or kvm-amd, or run "
            .. "inside the lab: lab/run -- lua5.4 passthrough.lua ...)", kvm_err)
      end
      kvm:close()
   end

   -- Inside the lab a device may be named (edu, nvme...): LUAVFIO_LAB_DEVICES lists them.
   local function resolve(name)
      if not name:find(":", 1, true) and not name:match("%.lua$") and os.getenv("LUAVFIO_LAB_DEVICES") then
         for line in io.lines(os.getenv("LUAVFIO_LAB_DEVICES")) do
            local bdf, n = line:match("^(%S+) %S+ %S+ %S+ (%S+)")
            if n == name then return bdf end
         end
      end
      return name
   end

   local devs, machines, board = {}, {}, nil
   local function cleanup()
      for i = #machines, 1, -1 do machines[i]:close() end
      if board then board:close() end
      for i = #devs, 1, -1 do
         if type(devs[i]) == "table" and devs[i].close then devs[i]:close() end
      end
   end
   local function give_up(code, fmt, ...)
      cleanup()
      die(code, fmt, ...)
   end

   local vfio = require "vfio"
   local function log(line) io.stderr:write("trace: ", line, "\n") end
   for _, name in ipairs(o.devices) do
      local spec = resolve(name)
      local dev, err, errno
      if o.plan and spec:match("%.lua$") then
         dev = spec -- a recorded fixture: layout only
      else
         local ok
         ok, dev, err, errno = pcall(vfio.open, spec)
         if not ok then give_up(EXIT.usage, "%s", dev) end
         if not dev then give_up(EXIT.setup, "%s (%s)", err, vfio.errname(errno)) end
      end
      devs[#devs + 1] = dev
      local m
      m, err = machine.new(dev, { quirks = quirk_list, mem_mib = o.mem, no_mmap = o.no_mmap,
                                 trace = o.trace and log or nil })
      if not m then give_up(EXIT.setup, "device %s: %s", name, tostring(err)) end
      machines[#machines + 1] = m
   end

   if o.plan then
      -- several devices: the slots, INTx lines and BAR addresses a shared board gives them
      local alloc = #machines > 1 and require("vfio.vmm.layout").new()
      local bdfs = {}
      for i, m in ipairs(machines) do bdfs[i] = m:host_bdf() or false end
      local placed = require("vfio.vmm.board").functions(bdfs)
      for i, m in ipairs(machines) do
         m.slot, m.fn = machine.SLOT + placed[i].slot, placed[i].fn
         if alloc then
            local pin = m:intx_pin()
            local b = require "vfio.vmm.board"
            if pin ~= 0 then m.intx_line = b.intx_gsi(m.slot, pin, b.LEGACY_LINES) end
            local ok, err = m:place_bars(alloc)
            if not ok then give_up(EXIT.setup, "placing BARs: %s", tostring(err)) end
         end
         io.write(m:plan())
      end
      cleanup()
      os.exit(0)
   end

   -- One device alone keeps its own board (slot 4, INTx line 10, as the test program
   -- expects); several share one, each on the next slot. A Linux guest always gets a
   -- board with IOAPIC INTx lines, which its MP table describes.
   local m = machines[1]
   if o.kernel or #machines > 1 then
      local err
      board, err = require("vfio.vmm.board").new {
         mem_mib = o.mem, trace = o.trace and log or nil, vm = { cpus = o.cpus },
         legacy_intx = not o.kernel }
      if not board then give_up(EXIT.setup, "%s", tostring(err)) end
      local ok = true
      if o.halt_poll_us then ok, err = board.vm:set_halt_poll(o.halt_poll_us * 1000) end
      if not ok then give_up(EXIT.setup, "%s", tostring(err)) end
      -- functions of one host slot stay together on one guest slot
      ok, err = board:assign(machines)
      if not ok then give_up(EXIT.setup, "placing devices: %s", tostring(err)) end
      for i, mi in ipairs(machines) do
         ok, err = mi:start(board)
         if not ok then give_up(EXIT.setup, "device %s: %s", o.devices[i], tostring(err)) end
      end
      ok, err = board:place_bars()
      if not ok then give_up(EXIT.setup, "placing BARs: %s", tostring(err)) end
      m = board
   end

   -- SIGINT/SIGTERM: KVM_RUN returns EINTR, the run loop ends, teardown runs below.
   local interrupted
   local okp, signal = pcall(require, "posix.signal")
   if okp then
      local function on_signal(sig) interrupted = sig end
      signal.signal(signal.SIGINT, on_signal)
      signal.signal(signal.SIGTERM, on_signal)
   end

   if o.kernel then
      -- A terminal on stdin becomes the guest's serial console: raw, every key to the
      -- UART, Ctrl-A x ends the run (Ctrl-A Ctrl-A sends a Ctrl-A), as QEMU's -nographic.
      local console = require("vfio.vmm.console").open()
      if console then io.stderr:write(prog, ": the terminal is the guest's console; Ctrl-A x quits\r\n") end
      local ok, r, why = pcall(board.boot_linux, board, {
         kernel = o.kernel, image = kernel_image, initrd = o.initrd, append = o.append, timeout = o.timeout,
         -- an explicit "host" fails where the default falls back to the guest's decompressor
         decompress = o.decompress or "auto",
         on_note = function(text) io.stderr:write(prog, ": ", text, "\r\n") end,
         should_stop = function() return interrupted end,
         slice = console and 0.05 or nil,
         on_slice = console and function(vm) return console:pump(vm.uart) end or nil })
      if console then console:close() end
      io.stdout:flush()
      cleanup()
      if interrupted then die(EXIT.interrupted, "interrupted by signal %d; VM torn down", interrupted) end
      if not ok then die(EXIT.setup, "%s", tostring(r)) end
      if not r then die(EXIT.setup, "%s", tostring(why)) end
      if r.result == "panic" then
         io.stderr:write(prog, ": the guest panicked:\n", (r.tail:match(".*(Kernel panic.-)$") or r.tail), "\n")
      end
      local ending = ""
      if r.status ~= 0 and r.exit then   -- an ending that is no verdict of the guest's own
         local x = r.exit
         ending = (" (exit %s, KVM reason %s%s%s)"):format(tostring(x.reason), tostring(x.kvm_reason),
            x.vcpu and (", vcpu " .. x.vcpu) or "", x.code and (", code " .. x.code) or "")
      end
      io.stderr:write(("%s: guest %s%s\n"):format(prog, r.result, ending))
      os.exit(r.status)
   end

   local ok, r, why = pcall(m.boot, m, o.guest, { cmdline = o.cmdline, timeout = o.timeout,
                                                  should_stop = function() return interrupted end })
   local out = m.machine and m.machine:output() or ""
   cleanup()
   io.write(out)
   io.stdout:flush()
   if interrupted then die(EXIT.interrupted, "interrupted by signal %d; VM torn down", interrupted) end
   if not ok then die(EXIT.setup, "%s", tostring(r)) end
   if not r then die(EXIT.setup, "%s", tostring(why)) end
   io.stderr:write(("%s: guest %s%s\n"):format(prog, r.result,
      r.code and (" (exit code " .. r.code .. ")") or ""))
   os.exit(EXIT[r.result] or EXIT.other)
end

return cli
