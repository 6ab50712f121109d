---
-- A small KVM VM: RAM from 0 and past the hole from 4 GiB (vfio.vmm.ram), the platform every
-- guest has (vfio.vmm.platform's base: the in-kernel irqchip, a debug console and an exit
-- port, handled in C; made before the vCPUs, as KVM requires of the irqchip), and one or
-- several vCPUs; it boots a multiboot guest (vfio.vmm.multiboot). A Linux kernel boots on it through
-- vfio.vmm.boot_linux (which this module does not know); passthrough wiring (PCI host
-- bridge, BARs, interrupts) builds on top of it in the board (vfio.vmm.board), which
-- creates it.
-- @module vfio.vmm.vm
local core = require "vfio.core"
local address_map = require "vfio.vmm.address_map"
local multiboot = require "vfio.vmm.multiboot"
local platform = require "vfio.vmm.platform"
local ram = require "vfio.vmm.ram"
local ptime = require "posix.time"

local M = {}
local VM = {}
VM.__index = VM

-- The largest guest RAM: below the hole and from 4 GiB up, ending at RAM_END_MAX
-- (vfio.vmm.address_map); the host, huge pages and the IOMMU set their own limits.
M.RAM_LIMIT = address_map.RAM_SIZE_MAX

---
-- vm.now() -> seconds on CLOCK_MONOTONIC: the clock of a run's deadline, the one
-- vcpu:run and vm:run_vcpus take as opts.deadline (a wall clock would jump with a clock
-- change, and os.time counts whole seconds).
function M.now()
   local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
   return t.tv_sec + t.tv_nsec * 1e-9
end

---
-- vm.deadline(timeout) -> the CLOCK_MONOTONIC time (vm.now) `timeout` seconds from now:
-- a run's one deadline, computed once and passed down to every run call.
function M.deadline(timeout)
   return M.now() + timeout
end

local fail = require("vfio.errors").fail

---
-- M.create{mem_mib = 64, ram_below_4g = bytes (address_map.ram_ranges' below: the most RAM
--          below the hole), backing = "anonymous" | "memfd" | "hugetlbfs", hugetlbfs = a
--          mount, kvm = "/dev/kvm", irqchip = true, debug_port = 0xe9, exit_port = 0xf4, cpus = 1}
-- -> vm, or nil, message, errno. RAM of mem_mib MiB is one slot below the hole and, past
-- it, one from 4 GiB up (vfio.vmm.ram, which explains what can fail). vm.vcpus lists the
-- vCPUs (ids 0..cpus-1); vm.vcpu is vCPU 0, the boot processor; vm.ram_ranges the RAM's
-- ranges with their slots; vm.ram_fd the RAM's backing file (a vfio.core ramfd: its
-- fileno() shares the RAM with another process), or nil for anonymous RAM.
function M.create(opts)
   opts = opts or {}
   local mib = opts.mem_mib or 64
   if math.type(mib) ~= "integer" or mib < 2 or mib > M.RAM_LIMIT >> 20 then
      error(("mem_mib must be an integer in [2, %d]"):format(M.RAM_LIMIT >> 20), 2)
   end
   local size = mib << 20
   address_map.ram_ranges(size, opts.ram_below_4g)   -- raises on a bad ram_below_4g
   local fits, why = ram.check_host(size)
   if not fits then return nil, why end
   local path = opts.kvm or "/dev/kvm"
   local kvm, msg, errno = core.kvm_open(path)
   if not kvm then
      if errno == 2 then msg = msg .. " (no KVM here: load kvm-intel or kvm-amd, or run in the lab)" end
      return fail(errno, "KVM unavailable: %s", tostring(msg))
   end
   local api, amsg, aerr = kvm:api_version()
   if api ~= 12 then
      kvm:close()
      if not api then return fail(aerr, "KVM unavailable: %s", tostring(amsg)) end
      return nil, ("KVM unavailable: %s has API version %d, expected 12"):format(path, api)
   end
   local vm, vmsg, verr = kvm:create_vm()
   if not vm then kvm:close(); return nil, vmsg, verr end
   local m = setmetatable({ kvm = kvm, vm = vm, ram_size = size, ram_below_4g = opts.ram_below_4g }, VM)
   local ok, err, e = ram.open(size, opts)
   if ok ~= nil then
      m.ram_fd = ok or nil
      ok, err, e = ram.add(vm, size, m.ram_fd, m.ram_below_4g)
      m.ram_ranges = ok
   end
   -- the irqchip before the first vCPU (KVM refuses it after)
   if ok then ok, err, e = platform.base(vm, opts) end
   m.vcpus = {}
   for id = 0, (opts.cpus or 1) - 1 do
      if not ok then break end
      local c
      c, err, e = vm:vcpu(id)
      m.vcpus[id + 1], ok = c, c
   end
   m.vcpu = m.vcpus[1]
   if not ok then m:close(); return nil, err, e end
   return m
end

--- A small KVM VM (vfio.vmm.vm.create), with one or several vCPUs.
-- @type VM

---
-- vm:load_multiboot(image, cmdline) -> entry, or nil, message. `image` is the file's
-- bytes; the vCPU is left at the multiboot entry state.
function VM:load_multiboot(image, cmdline)
   local entry, info = multiboot.load(self.vm, image, { ram_size = self.ram_size,
                                                        ram_below_4g = self.ram_below_4g, cmdline = cmdline })
   if not entry then return nil, "not bootable: " .. info end
   local ok, err, e = self.vcpu:setup_flat32(entry, multiboot.BOOT_MAGIC, info)
   if not ok then return nil, err, e end
   return entry
end

---
-- vm:load_file(path, cmdline): load_multiboot on a file, with the path in errors.
function VM:load_file(path, cmdline)
   local f, err, e = io.open(path, "rb")
   if not f then return nil, err, e end
   local image = f:read("a")
   f:close()
   local entry, msg, errno = self:load_multiboot(image, cmdline)
   if not entry then return nil, path .. ": " .. msg, errno end
   return entry
end

---
-- vm:run([handler], [{timeout = s, deadline = vm.now() time}]) -> exit table (see
-- vcpu:run): runs vCPU 0, the
-- boot processor (vfio.vmm.boot_linux runs several with the vfio.vm run_vcpus).
function VM:run(handler, opts)
   return self.vcpu:run(handler, opts)
end

---
-- vm:output() -> what the guest wrote to the debug console so far.
function VM:output()
   return (self.vm:debug_output())
end

-- Result codes the guest writes to the exit port (examples/guest).
M.RESULT = { [0] = "pass", [1] = "fail", [2] = "nodev", [3] = "exception" }

---
-- vm:boot(path, {cmdline=, timeout = 60 (false: no limit), handler=, on_stop=})
--   -> {result=, code=, output=, exit=}
-- Runs until the guest writes the exit port or something else ends the run. A "stop"
-- for any other reason (exit.stop "config" or "bar": a function asking for attention;
-- "reset") calls on_stop(exit) and the guest resumes.
function VM:boot(path, opts)
   opts = opts or {}
   local entry, err, e = self:load_file(path, opts.cmdline)
   if not entry then return nil, err, e end
   -- one deadline for the whole run, on the monotonic clock, passed down to vcpu:run
   -- (timeout false: none; the guest's exit port, or a signal, ends the run)
   local deadline = opts.timeout ~= false and M.deadline(opts.timeout or 60) or nil
   local exit, rerr, rerrno
   repeat
      if deadline and M.now() >= deadline then exit = { reason = "timeout" } break end
      exit, rerr, rerrno = self:run(opts.handler, { deadline = deadline })
      if not exit then return nil, rerr, rerrno end
      local other_stop = exit.reason == "stop" and exit.stop ~= "exit_port"
      if other_stop and opts.on_stop then opts.on_stop(exit) end
   until not other_stop
   local r = { exit = exit, output = self:output() }
   if exit.reason == "stop" and exit.stop == "exit_port" then
      r.code = exit.value & 0xff
      r.result = M.RESULT[r.code] or "unknown"
   else
      r.result = exit.reason
   end
   return r
end

---
-- Teardown: vCPUs first, then the VM (and its RAM), then /dev/kvm. Idempotent.
function VM:close()
   for _, c in ipairs(self.vcpus or {}) do c:close() end
   if self.vcpu then self.vcpu:close() end
   if self.vm then self.vm:close() end
   if self.ram_fd then self.ram_fd:close() end
   if self.kvm then self.kvm:close() end
end
VM.__close = VM.close
VM.__gc = VM.close

return M
