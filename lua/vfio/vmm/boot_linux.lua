---
-- Booting an x86-64 Linux bzImage with no firmware: the PC platform a kernel needs on
-- top of a vfio.vmm.vm, the boot protocol load (vfio.vmm.linux), and the run until the
-- guest reboots, powers off, panics or hangs. A board (vfio.vmm.board:boot_linux) calls
-- setup with its host bridge and INTx routing, then run; M.boot does both on a bare VM.
--
-- The machine: RAM from 0, the in-kernel PIC/IOAPIC/LAPIC and PIT, a 16550A on
-- 0x3f8/IRQ 4 (ttyS0, answered in C, streamed live and/or captured), an i8042 whose
-- reset is the reboot, a PCI host bridge (config mechanism #1), and the legacy ports
-- Linux probes answered in C: vfio.vmm.platform assembles them (its pc, called by
-- setup). No ACPI: an MP table (vfio.vmm.mptable) describes the CPUs, the IOAPIC and
-- the interrupt routing.
--
-- Why no ACPI, and how the VMM tells the endings apart: without ACPI Linux cannot power
-- off (no PM1 control port), but it can reset through the keyboard controller, so the
-- kernel line asks for reboot=k and panic=-1: a reboot and a panic both end with a write
-- of 0xfe to port 0x64 at once, and the console text tells them apart ("Kernel panic -
-- not syncing" in its tail). `poweroff -f` without a power-off method prints
-- "reboot: Power down" and then panics ("Attempted to kill init", exit code 0): the
-- VMM reads that as a power-off. A minimal ACPI (RSDP/XSDT/FADT, a DSDT with \_S5)
-- would give a real power-off port, but ACPI on also makes Linux look for its CPUs,
-- interrupts and PCI roots in ACPI first: more tables to get right for one port.
-- @module vfio.vmm.boot_linux
local address_map = require "vfio.vmm.address_map"
local linux = require "vfio.vmm.linux"
local vmlinux = require "vfio.vmm.vmlinux"
local mptable = require "vfio.vmm.mptable"
local platform = require "vfio.vmm.platform"
local vmlib = require "vfio.vmm.vm"

local M = {}

M.MSR_IA32_MISC_ENABLE = 0x1a0
M.MSR_IA32_TSC = 0x10
M.MISC_ENABLE_FAST_STRING = 0x1

-- What the machine needs on the kernel line, and why:
--   console=ttyS0        the only console is the UART. No earlyprintk by default: it
--                        prints every early line whatever the log level, and each byte is
--                        an exit (about 100 us under nested KVM): seconds of boot. Add
--                        earlyprintk=ttyS0 with --append to see a boot that dies early.
--   reboot=k             reset through the i8042 (the VMM's reboot signal)
--   panic=-1             reboot at once on a panic, so the VMM sees it without polling
--   acpi=off             there are no ACPI tables; the MP table is the source
--   pci=conf1,noearly    config mechanism #1 through the host bridge (without ACPI there
--                        is no MCFG, so ECAM cannot be discovered anyway), and no early
--                        type 1 scans: they look for chipset quirks and an AMD GART
--                        aperture this board does not have, by reading every function of
--                        all 256 buses twice (131072 exits, 1.7 s of a nested boot)
--   8250.nr_uarts=1      the one UART there is: no probing of ttyS1-3
--   i8042.noaux i8042.nomux i8042.dumbkbd
--                        the i8042 is a reset line with a controller in front, no mouse,
--                        no multiplexer, no keyboard to talk to: probing them is 0.3 s
--                        of timeouts
--   no_timer_check       the PIT's route (IOAPIC pin 0, the MP table's) is fixed by the
--                        board: no waiting for ticks to test it
M.CMDLINE = "console=ttyS0 reboot=k panic=-1 acpi=off pci=conf1,noearly 8250.nr_uarts=1 "
   .. "i8042.noaux i8042.nomux i8042.dumbkbd no_timer_check"

M.PANIC = "Kernel panic - not syncing"
M.POWER_DOWN = "reboot: Power down"
-- `poweroff -f` with no power-off method (acpi=off) becomes a halt: the kernel prints
-- this and stops every CPU in hlt with interrupts off, which the in-kernel LAPIC keeps
-- inside KVM: no exit ever comes, so the console is the only sign.
-- 6.1 prints "reboot: System halted"; later kernels "reboot: Power off not available:
-- System halted instead". A Lua pattern matching both.
M.HALTED = "reboot: [^\n]-System halted"

local function read_file(path, what)
   local f, err = io.open(path, "rb")
   if not f then return nil, ("%s: %s"):format(what, err) end
   local s = f:read("a")
   f:close()
   return s
end

-- How the kernel is entered (opts.decompress):
--   "host"   the bzImage's payload is decompressed on the host (once: vfio.vmm.vmlinux
--            caches it) and the vmlinux is entered at its 64-bit entry
--   "guest"  the kernel's own decompressor runs in the guest (the 32-bit entry)
--   "auto"   (the default) host, unless the host lacks the payload's decompression tool,
--            the image predates protocol 2.08 or the cache cannot be written: then guest,
--            with m.boot_note saying why
-- A vmlinux (an ELF) is always entered at its 64-bit entry.
local function load_kernel(m, image, opts, cmdline, initrd, known)
   local vm = m.vm
   local how = opts.decompress or "auto"
   if how ~= "auto" and how ~= "host" and how ~= "guest" then
      error(("decompress must be auto, host or guest, not %s"):format(tostring(how)), 3)
   end
   local largs = { ram_size = m.ram_size, ram_below_4g = m.ram_below_4g, cmdline = cmdline, initrd = initrd }
   -- a vmlinux's segments go below the hole
   local low = address_map.low_ram_end(m.ram_size, m.ram_below_4g)
   local vml, err
   if vmlinux.is_elf(image) then
      vml, err = vmlinux.from_string(image, low, opts.kernel)
      if not vml then return nil, err end
   elseif how ~= "guest" then
      local hdr, herr = linux.parse(image)
      if not hdr then return nil, herr end
      local d, derr, reason = vmlinux.decompress(image, { path = opts.kernel, known = known,
                                                          cache_dir = opts.cache_dir })
      if d then
         m.vmlinux = d
         if d.note then m.boot_note = ("the kernel cache is not used: %s"):format(d.note) end
         vml, err = vmlinux.open(d.path, low, d.file)
         if not vml then return nil, err end
         largs.image = image
      elseif how == "host" or reason == "corrupt" or reason == "signal" then
         return nil, derr
      else
         m.boot_note = ("the guest decompresses the kernel: %s"):format(derr)
      end
   end
   if not vml then return linux.load(vm, image, largs) end
   local info, lerr = linux.load_vmlinux(vm, vml, largs)
   vml.close()
   return info, lerr
end

---
-- setup(m, opts) -> info (linux.load's) or nil, message, errno. m is a vfio.vmm.vm made
-- with its irqchip. opts: kernel (path) and/or image (its bytes), decompress (above), cache_dir
-- (vfio.vmm.vmlinux's), initrd (path) or
-- initrd_data, append (added after the machine's line), cmdline (replaces it all),
-- stdout (stream the console, default true), capture (bytes kept, default 1 MiB),
-- pcihost (the caller's host bridge, already holding its functions; else one with
-- only the bridge), pci_irqs (MP table PCI entries). The CPUs are m.vcpus (vfio.vmm.vm
-- create's cpus): the MP table lists them all.
function M.setup(m, opts)
   opts = opts or {}
   local vm, cpu = m.vm, m.vcpu
   local cpus = m.vcpus or { cpu }
   local image, initrd = opts.image, opts.initrd_data or ""
   local err, kernel_known
   if not image then
      -- read with the index key of the bytes read (vfio.vmm.vmlinux's cache)
      local known
      image, known = vmlinux.read_image(assert(opts.kernel, "kernel or image required"))
      if not image then return nil, ("kernel: %s"):format(known) end
      kernel_known = known
   end
   if opts.initrd then
      initrd, err = read_file(opts.initrd, "initrd")
      if not initrd then return nil, err end
   end
   local cmdline = opts.cmdline or (M.CMDLINE .. (opts.append and opts.append ~= "" and " " .. opts.append or ""))
   local info, lerr = load_kernel(m, image, opts, cmdline, initrd, kernel_known)
   if not info then return nil, lerr end

   -- the PC platform (vfio.vmm.platform): PIT, UART, i8042, legacy ports, host bridge
   local ok, e, errno = platform.pc(m, { stdout = opts.stdout, capture = opts.capture, pcihost = opts.pcihost })
   if not ok then return nil, e, errno end

   local leaf1
   for _, l in ipairs(vm:supported_cpuid()) do
      if l["function"] == 1 then leaf1 = l end
   end
   local mp = mptable.build { cpus = #cpus, pci = opts.pci_irqs,
                              cpu_signature = leaf1 and leaf1.eax, cpu_features = leaf1 and leaf1.edx }
   vm:write(mptable.ADDR, mp)

   -- every CPU: LINT0 ExtINT, LINT1 NMI; the APs then wait in KVM for the BSP's
   -- INIT/SIPI (the in-kernel LAPIC starts them)
   for _, c in ipairs(cpus) do
      ok, e, errno = c:set_lapic_lint()
      if not ok then return nil, e, errno end
      -- Linux turns rep movs/stos "fast strings" off on Intel when the BIOS left this bit
      -- clear (a BIOS sets it); KVM accepts it on AMD too, where it changes nothing.
      local misc = c:get_msr(M.MSR_IA32_MISC_ENABLE)
      if misc then c:set_msr(M.MSR_IA32_MISC_ENABLE, misc | M.MISC_ENABLE_FAST_STRING) end
      -- the TSC counts from the moment the machine starts, as after a reset (QEMU zeroes
      -- it at machine reset too), not from vCPU creation before the devices were set up
      c:set_msr(M.MSR_IA32_TSC, 0)
   end
   if info.long_mode then
      ok, e, errno = cpu:setup_boot64 { rip = info.entry, rsi = info.boot_params, cr3 = info.cr3,
                                        cs = linux.BOOT_CS, ds = linux.BOOT_DS,
                                        gdt_base = info.gdt_base, gdt_limit = info.gdt_limit }
   else
      ok, e, errno = cpu:setup_boot32 { eip = info.entry, esi = info.boot_params,
                                        cs = linux.BOOT_CS, ds = linux.BOOT_DS,
                                        gdt_base = info.gdt_base, gdt_limit = info.gdt_limit }
   end
   if not ok then return nil, e, errno end
   m.linux = info
   return info
end

-- The verdict from how the run ended and what the console said last.
local function verdict(exit, tail)
   if exit.reason == "stopped" then return "stopped", 1 end   -- the VMM's word: exit.why
   local panic = tail:find(M.PANIC, 1, true)
   local power = tail:find(M.POWER_DOWN, 1, true) or tail:find(M.HALTED)
   if power and (not panic or power < panic) then return "poweroff", 0 end
   if panic then return "panic", 1 end
   if exit.reason == "stop" and exit.stop == "reset" then return "reboot", 0 end
   if exit.reason == "system_event" then
      if exit.code == 1 then return "poweroff", 0 end -- KVM_SYSTEM_EVENT_SHUTDOWN
      if exit.code == 2 then return "reboot", 0 end   -- KVM_SYSTEM_EVENT_RESET
   end
   if exit.reason == "shutdown" then return "triple fault", 1 end
   return exit.reason, 1
end

-- Unclaimed exits, counted by address with a bound: a guest walking absent MMIO (or every
-- port) must not grow the VMM's heap with it. At most M.MAX_UNCLAIMED distinct addresses
-- per space are tracked (ports[port] = n, mmio[addr] = n); exits at further addresses only
-- add to more.pio / more.mmio. counter:count(x) takes an exit ({space=, port= | addr=}).
M.MAX_UNCLAIMED = 1024

--- A counter of unclaimed exits with at most limit (default `MAX_UNCLAIMED`) distinct
-- addresses per space (see the comment above).
function M.unclaimed_counter(limit)
   limit = limit or M.MAX_UNCLAIMED
   local c = { ports = {}, mmio = {}, more = { pio = 0, mmio = 0 } }
   local distinct = { pio = 0, mmio = 0 }
   function c.count(_, x)
      local space = x.space == "pio" and "pio" or "mmio"
      local t, key = space == "pio" and c.ports or c.mmio, space == "pio" and x.port or x.addr
      local n = t[key]
      if n then
         t[key] = n + 1
      elseif distinct[space] < limit then
         distinct[space] = distinct[space] + 1
         t[key] = 1
      else
         c.more[space] = c.more[space] + 1
      end
   end
   return c
end

---
-- run(m, {timeout = 60 (false: no limit), slice = 0.5, trace = f, handler = f, on_stop = f, should_stop = f,
--        on_slice = f(m) called between slices (false ends the run: "interrupted";
--        false, why ends it "stopped", with why),
--        wake = f() -> fds: a slice also ends, and on_slice runs, as soon as one of these
--        is readable (the control socket: vcpu:run's opts.wake)}) ->
--   {result = "reboot"|"poweroff"|"panic"|"triple fault"|"timeout"|"stopped"|..., status = 0|1,
--    why = why the VMM stopped it ("stopped"),
--    exit = last exit, tail = last console text, output = captured console, ports = {},
--    where = "vcpu0 rip 0x..., ..." after a timeout,
--    mmio = {}, unclaimed_more = {pio =, mmio =}}
-- Exits nothing in C answers reach Lua here: reads get all ones, writes are dropped, and
-- each port or MMIO address is counted (M.unclaimed_counter: bounded), so a probe of
-- something absent costs only time.
function M.run(m, opts)
   opts = opts or {}
   local slice = opts.slice or 0.5
   -- one deadline for the whole run, on the monotonic clock (vfio.vmm.vm.now), passed
   -- down to every slice's run call, which ends at the earlier of the slice and it
   -- (timeout false: none, the run ends only with the guest or should_stop)
   local deadline = opts.timeout ~= false and vmlib.deadline(opts.timeout or 60) or nil
   local unclaimed = M.unclaimed_counter()
   local first = opts.handler
   local function handler(x)
      -- the board's handler first: Lua quirk windows of passed-through devices, and the
      -- host bridge in --trace mode (nil: not theirs)
      if first then
         local v = first(x)
         if v ~= nil then return v end
      end
      unclaimed:count(x)
      if opts.trace then opts.trace(x) end
      return nil -- a read keeps the all-ones the run loop put there
   end
   local exit, err, errno
   repeat
      if deadline and vmlib.now() >= deadline then exit = { reason = "timeout" } break end
      -- one vCPU runs on this thread; several run a thread each (vm:run_vcpus), and
      -- their exits that need Lua reach this handler one at a time
      local ropts = { timeout = slice, deadline = deadline, wake = opts.wake and opts.wake() }
      if m.vcpus and #m.vcpus > 1 then
         exit, err, errno = m.vm:run_vcpus(m.vcpus, handler, ropts)
      else
         exit, err, errno = m.vcpu:run(handler, ropts)
      end
      if not exit then return nil, err, errno end
      if opts.should_stop and opts.should_stop() then exit = { reason = "interrupted" } break end
      if opts.on_slice then
         local go, why = opts.on_slice(m)
         if go == false then exit = { reason = why and "stopped" or "interrupted", why = why } break end
      end
      -- a panic with panic=0 (the user's choice) spins forever: the console tells
      local tail = m.uart:tail()
      if exit.reason == "timeout" and not tail:find(M.PANIC, 1, true)
         and not tail:find(M.HALTED) then exit = nil end
      -- a wake fd ended the slice early: on_slice has seen to it; the guest runs on
      if exit and exit.reason == "wake" then exit = nil end
      -- stops for other reasons (a function asking for attention) resume the guest
      if exit and exit.reason == "stop" and exit.stop ~= "reset" then
         if opts.on_stop then opts.on_stop(exit) end
         exit = nil
      end
   until exit
   local tail = m.uart:tail()
   local result, status = verdict(exit, tail)
   -- where a guest that ran out of time was: each vCPU's instruction pointer, so a stalled
   -- boot says where it stalled (a kernel address to look up in System.map)
   local where
   if exit.reason == "timeout" then
      local each = {}
      for i, c in ipairs(m.vcpus or { m.vcpu }) do
         local regs, rerr = c:get_regs()
         each[i] = regs and ("vcpu%d rip %#x"):format(i - 1, regs.rip)
            or ("vcpu%d rip unknown (%s)"):format(i - 1, tostring(rerr))
      end
      where = table.concat(each, ", ")
   end
   return { result = result, status = status, exit = exit, tail = tail, where = where, why = exit.why,
            output = (m.uart:output()), ports = unclaimed.ports, mmio = unclaimed.mmio,
            unclaimed_more = unclaimed.more }
end

---
-- boot(m, opts) -> {result=, status=, exit=, tail=, output=, ports=}: setup, then run
-- until reboot, power-off, panic, triple fault or opts.timeout (60 s), on a bare
-- vfio.vmm.vm (no devices; a board boots through board:boot_linux).
function M.boot(m, opts)
   local info, err, errno = M.setup(m, opts)
   if not info then return nil, err, errno end
   return M.run(m, opts)
end

return M
