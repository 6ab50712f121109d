-- KVM bindings against the lab's real (nested) KVM: memory, vCPU run loop with C-handled
-- ports, unhandled exits in Lua, irqchip + GSI routing + irqfd (edge and resample),
-- ioeventfd, the KVM VFIO device, and booting examples/guest with our loader.
local core = require "vfio.core"
local machine = require "vfio.vmm.vm"
local pcihost = require "vfio.vmm.pcihost"
local irq = require "vfio.vmm.irq"
local lab = require "support.lab"
local fcntl = require "posix.fcntl"
local unistd = require "posix.unistd"

local function bytes(t)
   local s = {}
   for _, b in ipairs(t) do s[#s + 1] = string.char(b) end
   return table.concat(s)
end

local function new_vm(ram, irqchip)
   local kvm = assert(core.kvm_open())
   local vm = assert(kvm:create_vm())
   assert(vm:add_ram(0, ram or 0x100000))
   if irqchip then assert(vm:create_irqchip()) end
   return kvm, vm
end

describe("KVM in the lab", function()
   it("reports API version 12 and the capabilities passthrough needs", function()
      local kvm <close> = assert(core.kvm_open())
      assert.are.equal(12, kvm:api_version())
      for _, cap in ipairs { "irqchip", "irq_routing", "irqfd", "irqfd_resample", "ioeventfd",
                             "signal_msi", "user_memory" } do
         assert.is_true(kvm:check_extension(cap) > 0, cap)
      end
      assert.is_true(kvm:vcpu_mmap_size() >= 4096)
      -- VM-scoped answers: enough memory slots for our table. Whether x86 advertises device_ctrl
      -- depends on the kernel (0 on Debian 12's 6.1, 1 on the 6.12 lab kernel);
      -- KVM_CREATE_DEVICE works on both: see the VFIO device spec below.
      local vm <close> = assert(kvm:create_vm())
      assert.is_true(vm:check_extension("nr_memslots") >= 64)
      local want = os.getenv("LUAVFIO_LAB_KERNEL"):match("^6%.1%.") and 0 or 1
      assert.are.equal(want, vm:check_extension("device_ctrl"))
   end)

   it("runs real-mode code: C-handled debug port, unhandled PIO and MMIO in Lua, hlt", function()
      local _, vm = new_vm(0x10000)
      assert(vm:add_debugcon(0xe9))
      local code = bytes {
         0xB0, 0x48, 0xE6, 0xE9,             -- mov al,'H'; out 0xe9,al      (C)
         0xB0, 0x69, 0xE6, 0xE9,             -- mov al,'i'; out 0xe9,al      (C)
         0xBE, 0x00, 0x11, 0xB9, 0x05, 0x00, -- mov si,0x1100; mov cx,5
         0xBA, 0xE9, 0x00, 0xF3, 0x6E,       -- mov dx,0xe9; rep outsb      (C, string PIO)
         0xB0, 0x77, 0xE6, 0x10,             -- mov al,0x77; out 0x10,al    (Lua)
         0xE4, 0x11, 0xE6, 0xE9,             -- in al,0x11 (Lua: 0x5a); out 0xe9,al
         0xB8, 0x00, 0x20, 0x8E, 0xD8,       -- mov ax,0x2000; mov ds,ax
         0xC6, 0x06, 0x34, 0x12, 0x66,       -- mov byte [0x1234],0x66 -> MMIO 0x21234
         0xA0, 0x34, 0x12,                   -- mov al,[0x1234]  (Lua: 0x42)
         0x31, 0xDB, 0x8E, 0xDB,             -- xor bx,bx; mov ds,bx
         0xE6, 0xE9,                         -- out 0xe9,al
         0xF4,                               -- hlt
      }
      vm:write(0x1000, code)
      vm:write(0x1100, "-str-")
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))

      local e = assert(cpu:run())
      assert.are.same({ reason = "io", kvm_reason = 2, space = "pio", port = 0x10, size = 1, count = 1,
                        write = true, value = 0x77, data = "\x77" }, e)
      e = assert(cpu:run())
      assert.are.equal("io", e.reason)
      assert.are.equal(0x11, e.port)
      assert.is_false(e.write)
      cpu:complete(0x5a)
      e = assert(cpu:run())
      assert.are.same({ reason = "mmio", kvm_reason = 6, space = "mmio", addr = 0x21234, size = 1,
                        count = 1, write = true, value = 0x66, data = "\x66" }, e)
      e = assert(cpu:run())
      assert.are.equal("mmio", e.reason)
      assert.are.equal(0x21234, e.addr)
      assert.is_false(e.write)
      assert.has_error(function() cpu:complete("too long") end)
      cpu:complete(0x42)
      e = assert(cpu:run())
      assert.are.equal("hlt", e.reason)
      assert.are.equal("Hi-str-ZB", (vm:debug_output()))
      local regs = cpu:get_regs()
      assert.are.equal(0x1000 + #code, regs.rip)
      assert.are.equal(0x42, regs.rax & 0xff)
      vm:close()
      assert.has_error(function() cpu:run() end, "attempt to use a vcpu of a closed vm")
   end)

   it("calls a Lua handler for unhandled exits and reads all ones when nobody answers", function()
      local _, vm = new_vm(0x10000)
      assert(vm:add_debugcon(0xe9))
      assert(vm:add_exit_port(0xf4))
      vm:write(0x1000, bytes {
         0xE4, 0x20 + 0x30, 0xE6, 0xE9,  -- in al,0x50 (handler: 0x41 'A'); out 0xe9
         0xE5, 0x52, 0x89, 0xC3,         -- in ax,0x52 (handler: nil -> 0xffff); mov bx,ax
         0xE6, 0x60,                     -- out 0x60,al (handler returns false: run ends)
         0xB0, 0x07, 0xE6, 0xF4,         -- mov al,7; out 0xf4,al (C exit port: stop)
         0xEB, 0xFE,
      })
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))
      local seen = {}
      local function handler(x)
         seen[#seen + 1] = ("%s %x %s"):format(x.reason, x.port, x.write and "w" or "r")
         if x.port == 0x50 then return 0x41 end
         if x.port == 0x60 then return false end
      end
      local e = assert(cpu:run(handler))
      assert.are.equal(0x60, e.port)
      assert.are.same({ "io 50 r", "io 52 r", "io 60 w" }, seen)
      assert.are.equal(0xffff, cpu:get_regs().rbx & 0xffff)
      e = assert(cpu:run(handler))
      assert.are.equal("stop", e.reason)
      assert.are.equal("exit_port", e.stop)
      assert.are.equal(0xf4, e.port)
      assert.are.equal(7, e.value)
      assert.are.equal("A", (vm:debug_output()))
      vm:close()
   end)

   it("plugs C handler objects into ranges and removes them", function()
      local _, vm = new_vm(0x10000)
      local id, main = assert(vm:add_debugcon(0xe9))
      local other = core.debugcon()
      local id2 = assert(vm:add_range("pio", 0x402, 2, other))
      assert.is_true(id2 > id)
      local dup, msg, errno = vm:add_range("pio", 0x403, 1, core.debugcon())
      assert.is_nil(dup)
      assert.are.equal("add handled range port 0x403 size 0x1: File exists", msg)
      assert.are.equal(17, errno)
      assert.has_error(function() vm:add_range("pio", 0x500, 1, {}) end)
      vm:write(0x1000, bytes {
         0xB0, 0x61, 0xE6, 0xE9, 0xB0, 0x62, 0xBA, 0x02, 0x04, 0xEE, -- 'a'->e9, 'b'->0x402
         0xB0, 0x63, 0x42, 0xEE, 0xE6, 0x10,                         -- 'c'->0x403; out 0x10
         0xB0, 0x64, 0x4A, 0xEE, 0xF4,                               -- 'd'->0x402; hlt
      })
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))
      local e = assert(cpu:run { timeout = 10 })
      assert.are.equal(0x10, e.port)
      assert.are.equal("a", (main:output()))
      assert.are.equal("bc", (other:output(true)))
      assert(vm:remove_range(id2))
      assert.is_nil(vm:remove_range(id2))
      e = assert(cpu:run { timeout = 10 })
      assert.are.equal("io", e.reason) -- 0x402 is Lua's again
      assert.are.equal(0x402, e.port)
      assert.are.equal(0x64, e.value)
      assert.are.equal("", (other:output()))
      vm:close()
   end)

   it("maps host memory into the guest, read-only writes exit as MMIO, unmap removes it", function()
      local _, vm = new_vm(0x10000)
      assert(vm:add_debugcon(0xe9))
      local ram = vm:memory()[1]
      assert.are.same({ 0, 0x10000, true, false }, { ram.gpa, ram.size, ram.ram, ram.readonly })
      -- A DMA buffer's second page at guest-physical 0x80000, read-only.
      local buf = core.dmabuf(0x2000)
      buf:write(0x1000, "Q")
      local slot = assert(vm:map(0x80000, 0x1000, buf, { offset = 0x1000, readonly = true }))
      assert.are.equal(2, #vm:memory())
      local bad, msg = vm:map(0x90000, 0x1000, buf, { offset = 1 })
      assert.is_nil(bad)
      assert.matches("^KVM_SET_USER_MEMORY_REGION gpa 0x90000 size 0x1000: Invalid argument", msg)
      -- in use by a slot: the buffer stays open
      local closed, why = buf:close()
      assert.is_nil(closed)
      assert.matches("mapped into a VM by 1 memory slot", why)
      vm:write(0x1000, bytes {
         0xB8, 0x00, 0x80, 0x8E, 0xD8,   -- mov ax,0x8000; mov ds,ax
         0xA0, 0x00, 0x00, 0xE6, 0xE9,   -- mov al,[0]; out 0xe9,al  ('Q' through the alias)
         0xC6, 0x06, 0x00, 0x00, 0x55,   -- mov byte [0],0x55: read-only -> MMIO write exit
         0xA0, 0x00, 0x00,               -- mov al,[0] (after unmap: MMIO read exit)
         0xE6, 0xE9, 0xF4,
      })
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))
      local e = assert(cpu:run { timeout = 10 })
      assert.are.same({ "mmio", 0x80000, true, 0x55 }, { e.reason, e.addr, e.write, e.value })
      assert.are.equal("Q", buf:read(0x1000, 1)) -- the write did not land
      assert(vm:unmap(slot))
      assert.is_nil(vm:unmap(slot))
      buf:close()                                 -- no slot uses it now
      assert.is_true(buf:closed())
      e = assert(cpu:run { timeout = 10 })
      assert.are.same({ "mmio", 0x80000, false }, { e.reason, e.addr, e.write })
      cpu:complete(0x21)
      e = assert(cpu:run { timeout = 10 })
      assert.are.equal("hlt", e.reason)
      assert.are.equal("Q!", (vm:debug_output()))
      assert.has_error(function() vm:read(0xffff, 2) end)
      assert.has_error(function() vm:write(0x80000, "x") end)
      vm:close()
   end)

   it("returns from run on a signal so Lua can act on it", function()
      local psignal = require "posix.signal"
      local got = 0
      psignal.signal(psignal.SIGUSR1, function() got = got + 1 end)
      local _, vm = new_vm(0x10000)
      vm:write(0x1000, bytes { 0xEB, 0xFE }) -- jmp $
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))
      os.execute(("(sleep 0.5; kill -USR1 %d) &"):format(unistd.getpid()))
      local e = assert(cpu:run { timeout = 20 })
      assert.are.equal("intr", e.reason)
      for _ = 1, 1000 do if got > 0 then break end end -- the Lua-level handler runs at a hook
      assert.are.equal(1, got)
      psignal.signal(psignal.SIGUSR1, psignal.SIG_DFL)
      vm:close()
   end)

   it("ends a run at the timeout and on a handler error keeps the vcpu usable", function()
      local _, vm = new_vm(0x10000)
      vm:write(0x1000, bytes { 0xE6, 0x10, 0xEB, 0xFE }) -- out 0x10,al; jmp $
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))
      local ok, err = pcall(cpu.run, cpu, function() error("handler failed") end)
      assert.is_false(ok)
      assert.matches("handler failed", err)
      local t0 = os.time()
      local e = assert(cpu:run { timeout = 0.3 })
      assert.are.equal("timeout", e.reason)
      assert.is_true(os.time() - t0 < 5)
      e = assert(cpu:run(nil, { timeout = 0.2 }))
      assert.are.equal("timeout", e.reason)
      assert.are.equal(0x1002, cpu:get_regs().rip)
      vm:close()
   end)

   it("signals an ioeventfd without an exit", function()
      local _, vm = new_vm(0x10000)
      assert(vm:add_exit_port(0xf4))
      local ev = assert(vm:ioeventfd { addr = 0x60, len = 1, pio = true })
      vm:write(0x1000, bytes { 0xE6, 0x60, 0xE6, 0x60, 0xE6, 0xF4, 0xEB, 0xFE })
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))
      local unhandled = 0
      local e = assert(cpu:run(function() unhandled = unhandled + 1 end, { timeout = 10 }))
      assert.are.equal("stop", e.reason)
      assert.are.equal(0, unhandled)
      assert.are.equal(2, ev:count())
      ev:close()
      ev:close()
      -- The same registration twice is refused, with the operation named.
      local a = assert(vm:ioeventfd { addr = 0x64, len = 1, pio = true })
      local b, msg = vm:ioeventfd { addr = 0x64, len = 1, pio = true, fd = a:fileno() }
      assert.is_nil(b)
      assert.matches("^KVM_IOEVENTFD port 0x64 len 1: ", msg)
      a:close()
      vm:close()
   end)

   it("keeps the irqchip's routes when MSI routes are added and removed", function()
      local _, vm = new_vm(0x10000, true)
      local routes = vm:routes()
      assert.are.equal(16 + 24, #routes) -- GSI 0-15 on both PICs' pins and the IOAPIC, 16-23 IOAPIC
      assert(vm:set_msi_route(24, 0xfee00000, 0x41))
      assert(vm:set_msi_route(25, 0xfee00000, 0x42))
      assert(vm:set_msi_route(24, 0xfee00000, 0x43)) -- replaces
      routes = vm:routes()
      assert.are.equal(42, #routes)
      local msi = {}
      for _, r in ipairs(routes) do if r.type == "msi" then msi[r.gsi] = r.data end end
      assert.are.same({ [24] = 0x43, [25] = 0x42 }, msi)
      local q = assert(vm:irqfd(24))
      assert.matches("^vfio.irqfd %(gsi 24, fd %d+%)$", tostring(q))
      assert(q:trigger())
      local dup, msg, errno = vm:irqfd(24, { fd = q:fileno() })
      assert.is_nil(dup)
      assert.matches("^KVM_IRQFD gsi 24: ", msg)
      assert.are.equal(16, errno) -- EBUSY
      q:close()
      q:close()
      assert(vm:remove_route(25))
      local ok, rmsg = vm:remove_route(999)
      assert.is_nil(ok)
      assert.are.equal("KVM_SET_GSI_ROUTING remove gsi 999: No such file or directory", rmsg)
      assert.are.equal(41, #vm:routes())
      -- With no vCPU nothing can take an MSI: KVM says -1 (EPERM); with one it answers
      -- whether the (still software-disabled) LAPIC accepted it.
      local none, nmsg = vm:signal_msi(0xfee00000, 0x30)
      assert.is_nil(none)
      assert.matches("^KVM_SIGNAL_MSI addr 0xfee00000 data 0x30: ", nmsg)
      local cpu = assert(vm:vcpu(0))
      assert.is_false(vm:signal_msi(0xfee00000, 0x30))
      cpu:close()
      vm:close()
   end)

   -- Real-mode guest: program the PIC for vectors 0x20-0x2f with only `line` unmasked,
   -- `out 0x10` to say it is ready, then hlt; the handler prints 'I', EOIs and writes
   -- the exit port.
   local function irq_guest(vm, line)
      local mask = 0xff & ~(1 << line)
      vm:write(0x1000, bytes {
         0xFA,
         0xB0, 0x11, 0xE6, 0x20, 0xB0, 0x20, 0xE6, 0x21, -- ICW1, ICW2 (base 0x20)
         0xB0, 0x04, 0xE6, 0x21, 0xB0, 0x01, 0xE6, 0x21, -- ICW3, ICW4
         0xB0, mask, 0xE6, 0x21, 0xB0, 0xFF, 0xE6, 0xA1,
         0xFB, 0xE6, 0x10,                               -- sti; out 0x10 (ready)
         0xF4, 0xEB, 0xFD,                               -- hlt; jmp hlt
      })
      vm:write(0x800, bytes { 0xB0, 0x49, 0xE6, 0xE9, 0xB0, 0x20, 0xE6, 0x20, 0xE6, 0xF4, 0xCF })
      vm:write((0x20 + line) * 4, string.pack("<I2I2", 0x800, 0))
   end

   local function run_irq(vm, cpu, fire)
      local e = assert(cpu:run { timeout = 10 })
      assert.are.equal("io", e.reason)
      assert.are.equal(0x10, e.port)
      fire()
      e = assert(cpu:run { timeout = 10 })
      assert.are.equal("stop", e.reason, "no interrupt arrived")
      assert.are.equal("I", (vm:debug_output()))
   end

   it("delivers an edge interrupt through irqfd to the in-kernel PIC", function()
      local _, vm = new_vm(0x100000, true)
      assert(vm:add_debugcon(0xe9))
      assert(vm:add_exit_port(0xf4))
      irq_guest(vm, 3)
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))
      local q = assert(vm:irqfd(3))
      run_irq(vm, cpu, function() assert(q:trigger()) end)
      q:close()
      vm:close()
   end)

   it("delivers a level interrupt through a resample irqfd and reports the EOI", function()
      local _, vm = new_vm(0x100000, true)
      assert(vm:add_debugcon(0xe9))
      assert(vm:add_exit_port(0xf4))
      irq_guest(vm, 5)
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, 0x1000))
      local q = assert(vm:irqfd(5, { resample = true }))
      assert.is_true(q:resample_fileno() >= 0)
      assert.are.equal(0, q:resampled())
      run_irq(vm, cpu, function() assert(q:trigger()) end)
      assert.are.equal(1, q:resampled(1000))
      q:close()
      vm:close()
   end)

   it("creates the KVM VFIO device and adds and deletes a real VFIO group", function()
      local _, vm = new_vm(0x10000, true)
      local dfd = assert(vm:vfio_device())
      assert.is_true(dfd >= 0)
      assert.are.equal(dfd, vm:vfio_device()) -- created once
      local ok, msg = vm:vfio_group_add(vm:fileno()) -- not a group
      assert.is_nil(ok)
      assert.matches("^KVM_DEV_VFIO_GROUP_ADD group fd %d+: ", msg)
      local edu = assert(lab.device("edu"), "lab has no edu")
      local gfd = assert(fcntl.open("/dev/vfio/" .. edu.group, fcntl.O_RDWR))
      assert(vm:vfio_group_add(gfd))
      assert(vm:vfio_group_del(gfd))
      local again, dmsg = vm:vfio_group_del(gfd)
      assert.is_nil(again)
      assert.matches("^KVM_DEV_VFIO_GROUP_DEL group fd %d+: ", dmsg)
      unistd.close(gfd)
      vm:close()
   end)
end)

describe("examples/guest in a KVM VM with our loader", function()
   it("boots, scans an empty PCI bus and reports 'device not found'", function()
      local m <close> = assert(machine.create { mem_mib = 32 })
      local cf8 = 0
      local r = assert(m:boot("build/guest/guest.elf", {
         cmdline = "dev=1234:11e8",
         timeout = 60,
         handler = function(x)
            if x.space == "pio" and (x.port == 0xcf8 or x.port >= 0xcfc and x.port <= 0xcff) then
               cf8 = cf8 + 1
            end
         end,
      }))
      assert.are.equal("nodev", r.result, r.output)
      assert.are.equal(2, r.code)
      assert.matches("luavfio guest: multiboot ok\n", r.output)
      assert.matches("memory 32 MiB\n", r.output)
      assert.matches("cmdline dev=1234:11e8\n", r.output)
      assert.matches("device 1234:11e8 not found\nRESULT NODEV\n$", r.output)
      assert.is_true(cf8 >= 64, "guest scanned bus 0 through CF8/CFC") -- 32 slots x (addr + data)
   end)

   it("finds a function behind the host bridge reached from a Lua run handler", function()
      local m <close> = assert(machine.create { mem_mib = 16 })
      local host = pcihost.new()
      assert(host:attach(0, 0, 0, pcihost.host_bridge()))
      local unhandled = {}
      local r = assert(m:boot("build/guest/guest.elf", {
         cmdline = "dev=1b36:0008",
         timeout = 60,
         handler = pcihost.handler(host, function(x) unhandled[#unhandled + 1] = x end),
      }))
      assert.are.equal("pass", r.result, r.output)
      assert.matches("FOUND 00:00%.0 1b36:0008\nBENCH cfg_read %d+\nRESULT PASS\n$", r.output)
      assert.are.same({}, unhandled)
   end)

   for _, via in ipairs { "cf8", "ecam" } do
      it("finds a function behind the C host bridge (" .. via .. ") without any exit reaching Lua", function()
         local m <close> = assert(machine.create { mem_mib = 16 })
         local host = pcihost.new { ecam_base = 0xe0000000 }
         assert(host:attach(0, 0, 0, pcihost.host_bridge()))
         assert(host:attach(0, 5, 0, pcihost.config_space { vendor = 0x1234, device = 0x5678, class = 0xff0000 }))
         local ids = assert(pcihost.install(m.vm, host))
         assert.are.equal(2, #ids)
         local lua_exits = 0
         local r = assert(m:boot("build/guest/guest.elf", {
            cmdline = "dev=1234:5678" .. (via == "ecam" and " ecam=e0000000" or ""), timeout = 60,
            handler = function() lua_exits = lua_exits + 1 end,
         }))
         assert.are.equal("pass", r.result, r.output)
         if via == "ecam" then assert.matches("config via ECAM at 0xe0000000\n", r.output) end
         assert.matches("FOUND 00:05%.0 1234:5678\nBENCH cfg_read %d+\nRESULT PASS\n$", r.output)
         assert.are.equal(0, lua_exits)
      end)
   end

   it("returns to Lua when a function asks for attention, then resumes the guest", function()
      local m <close> = assert(machine.create { mem_mib = 16 })
      local host = pcihost.new()
      local fn = pcihost.config_space { vendor = 0x1234, device = 0x5678 }
      fn:notify(0x04, 2) -- the command register: decoding changes
      assert(host:attach(0, 5, 0, fn))
      assert(pcihost.install(m.vm, host))
      local commands = {}
      local r = assert(m:boot("build/guest/guest.elf", {
         cmdline = "dev=1234:5678", timeout = 60,
         on_stop = function(x)
            assert.are.same({ "pio", 0xcfc, 2 }, { x.space, x.port, x.size })
            commands[#commands + 1] = x.value
         end,
      }))
      assert.are.equal("pass", r.result, r.output)
      -- read_bars turns decoding off for sizing, then on with bus mastering.
      assert.are.same({ 0x0000, 0x0007 }, commands)
      assert.are.equal(0x0006, fn:cfg_read(4, 2)) -- only memory + bus master are writable
   end)

   it("takes MSI and INTx wired by vfio.vmm.irq (GSI route + irqfd, resample on EOI)", function()
      local m <close> = assert(machine.create { mem_mib = 16 })
      local router <close> = irq.new(m.vm)
      local msi = assert(router:msi(0xfee00000, 0x41))
      assert.are.equal(24, msi.gsi)
      assert(msi:update(0xfee00000, 0x40)) -- the guest's vector
      local spare = assert(router:msi(0xfee00000, 0x50))
      assert.are.equal(25, spare.gsi)
      spare:close()
      local line = assert(router:intx(5))
      local gsis = {}
      for _, v in ipairs(router:vectors()) do gsis[#gsis + 1] = v.kind .. v.gsi end
      assert.are.same({ "intx5", "msi24" }, gsis)
      local syncs = {}
      local r = assert(m:boot("build/guest/guest.elf", {
         cmdline = "irqtest=5",
         timeout = 60,
         handler = function(x)
            if x.space == "pio" and x.port == 0x510 and x.write then
               syncs[#syncs + 1] = x.value
               assert((x.value == 1 and msi or line).irqfd:trigger())
               return
            end
            return false
         end,
      }))
      assert.are.equal("pass", r.result, r.output)
      assert.matches("TEST msi_route PASS count 1\n", r.output)
      assert.matches("TEST intx_route PASS line 5 count 1\n", r.output)
      assert.are.same({ 1, 2 }, syncs)
      assert.are.equal(1, line.irqfd:resampled(1000))
      router:close()
      assert.are.equal(40, #m.vm:routes())
      assert.are.same({}, router:vectors())
   end)

   it("refuses a file that is not bootable, naming it", function()
      local m <close> = assert(machine.create { mem_mib = 8 })
      local ok, err = m:boot("/bin/true")
      assert.is_nil(ok)
      assert.matches("^/bin/true: not bootable: not a multiboot image", err)
   end)
end)
