-- The KVM platform pieces a Linux guest needs (PIT, CPUID, LAPIC LINT, MSRs, the 32-bit
-- boot entry, KVM's reserved pages) and the legacy ports answered in C (ignored ranges,
-- the i8042), on the host's /dev/kvm. Pending where there is no usable KVM.
local core = require "vfio.core"
local kvmhost = require "support.kvm"
local asm = require "support.asm"

local function new_vm()
   local vm, kvm = kvmhost.vm()
   if not vm then return nil end
   assert(vm:add_ram(0, 0x100000))
   return vm, kvm
end

-- Run 16- or 32-bit code at 0x1000 until the exit port 0xf4; what it sends to 0xe9.
local function run(vm, code32, source, setup)
   local code = assert(asm.assemble((code32 and ".code32\n" or ".code16\n") .. source
                                    .. "\nout %al, $0xf4\n", 0x1000))
   vm:write(0x1000, code)
   local _, con = assert(vm:add_debugcon(0xe9))
   assert(vm:add_exit_port(0xf4))
   local cpu = assert(vm:vcpu(0))
   if setup then setup(cpu) elseif code32 then assert(cpu:setup_flat32(0x1000, 0, 0))
   else assert(cpu:setup_real(0, 0x1000)) end
   local exit = assert(cpu:run(nil, { timeout = 10 }))
   return exit, con:output(), cpu
end

local function leaf(list, fn, index)
   for _, l in ipairs(list) do
      if l["function"] == fn and (index == nil or l.index == index) then return l end
   end
end

describe("KVM platform for Linux #kvm", function()
   it("creates the PIT after the irqchip, not before", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      local ok, msg, errno = vm:create_pit2()
      assert.is_nil(ok)
      assert.are.equal(6, errno)                               -- ENXIO: no irqchip yet
      assert.matches("^KVM_CREATE_PIT2 vm: ", msg)
      assert(vm:create_irqchip())
      assert.is_true(vm:create_pit2())
      vm:close()
   end)

   it("gives each vCPU its APIC ID, the hypervisor bit and KVM's leaves, as the guest's CPUID sees them", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      assert(vm:create_irqchip())
      local sup = vm:supported_cpuid()
      assert.is_not_nil(leaf(sup, 0x40000000), "KVM_GET_SUPPORTED_CPUID lists KVM's signature leaf")
      local c1 = assert(vm:vcpu(1))
      local t = c1:cpuid()
      assert.are.equal(1, leaf(t, 1).ebx >> 24)
      assert.are.equal(1 << 31, leaf(t, 1).ecx & (1 << 31))
      -- the TSC-deadline timer, which the in-kernel LAPIC emulates when KVM says so
      -- (older kernels' KVM_GET_SUPPORTED_CPUID never lists it)
      if vm:check_extension("tsc_deadline_timer") > 0 then
         assert.are.equal(1 << 24, leaf(t, 1).ecx & (1 << 24))
      end
      local sig = leaf(t, 0x40000000)
      assert.are.equal(0x40000001, sig.eax)
      assert.are.equal("KVMKVMKVM\0\0\0", string.pack("<I4I4I4", sig.ebx, sig.ecx, sig.edx))
      assert.are.equal(leaf(sup, 0x40000001).eax, leaf(t, 0x40000001).eax)
      for _, l in ipairs(t) do
         if l["function"] == 0xb or l["function"] == 0x1f then assert.are.equal(1, l.edx) end
      end
      -- vCPU 0, seen from inside (the debug console keeps each write's low byte):
      -- cpuid(1).ebx >> 24, ecx >> 24, then 0x40000000's ebx and ecx
      local src = [[
         mov $1, %eax
         cpuid
         mov %ebx, %eax
         shr $24, %eax
         out %al, $0xe9
         mov %ecx, %eax
         shr $24, %eax
         out %al, $0xe9
         mov $0x40000000, %eax
         cpuid
         mov %ebx, %eax
         out %eax, $0xe9
         mov %ecx, %eax
         mov $0xe9, %dx
         out %al, %dx
      ]]
      local exit, out = run(vm, true, src, function(cpu)
         -- an override changes one register of a leaf and keeps the others KVM's
         assert(cpu:set_cpuid { { ["function"] = 0x40000001, eax = 0 } })
         local l = leaf(cpu:cpuid(), 0x40000001)
         assert.are.equal(0, l.eax)
         assert(cpu:setup_flat32(0x1000, 0, 0))
      end)
      assert.are.equal("stop", exit.reason)
      assert.are.equal(0, out:byte(1))                         -- APIC ID 0
      assert.are.equal(0x80, out:byte(2) & 0x80)               -- hypervisor
      assert.are.equal("KV", out:sub(3, 4))                    -- low bytes of ebx, ecx
      vm:close()
   end)

   it("programs LINT0 as ExtINT and LINT1 as NMI, unmasked", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      assert(vm:create_irqchip())
      local cpu = assert(vm:vcpu(1))                           -- an AP: KVM leaves both masked
      assert.are.equal(0x10000, cpu:lapic_reg(0x350) & 0x10000)
      assert.is_true(cpu:set_lapic_lint())
      assert.are.equal(0x700, cpu:lapic_reg(0x350))
      assert.are.equal(0x400, cpu:lapic_reg(0x360))
      assert.has_error(function() cpu:lapic_reg(0x351) end)
      vm:close()
   end)

   it("reads and sets MSRs, naming the MSR when KVM refuses", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      local cpu = assert(vm:vcpu(0))
      local misc = assert(cpu:get_msr(0x1a0))
      assert.is_true(cpu:set_msr(0x1a0, misc | 1))
      assert.are.equal(misc | 1, cpu:get_msr(0x1a0))
      local ok, msg = cpu:set_msr(0x12345678, 0)
      assert.is_nil(ok)
      assert.matches("^KVM_SET_MSRS vcpu 0 msr 0x12345678: ", msg)
      vm:close()
   end)

   it("enters 32-bit code with the Linux boot protocol's selectors, GDT and ESI", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      -- the guest reloads DS from the GDT (as Linux may) and reports ESI and CS
      vm:write(0x800, string.pack("<I8I8I8I8", 0, 0, 0x00cf9b000000ffff, 0x00cf93000000ffff))
      local src = [[
         mov $0x18, %ax
         mov %ax, %ds
         mov %esi, %eax
         shr $8, %eax
         out %al, $0xe9
         mov %cs, %ax
         out %al, $0xe9
         mov %ebp, %eax
         out %al, $0xe9
      ]]
      local exit, out = run(vm, true, src, function(cpu)
         assert(cpu:setup_boot32 { eip = 0x1000, esi = 0x7000, cs = 0x10, ds = 0x18,
                                   gdt_base = 0x800, gdt_limit = 31 })
      end)
      assert.are.equal("stop", exit.reason)
      assert.are.equal(string.char(0x70, 0x10, 0), out)       -- ESI >> 8, CS, EBP
      vm:close()
   end)

   it("enters 64-bit code through the caller's page tables with the 64-bit boot selectors", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      local linux = require "vfio.vmm.linux"
      -- identity tables at 0x9000 (PML4, PDPT, one directory of 2 MiB pages), a GDT with
      -- a long-mode code segment at 0x10
      vm:write(0x9000, string.pack("<I8", 0xa003) .. ("\0"):rep(4088) .. string.pack("<I8", 0xb003)
               .. ("\0"):rep(4088) .. string.pack("<I8", 0x83))
      vm:write(0x800, string.pack("<I8I8I8I8", 0, 0, 0x00af9b000000ffff, 0x00cf93000000ffff))
      local src = [[
         mov %rsi, %rax
         shr $8, %rax
         out %al, $0xe9
         mov %cs, %ax
         out %al, $0xe9
         movabs $0x4200000000, %rax
         shr $32, %rax
         out %al, $0xe9
         mov %cr4, %rax
         out %al, $0xe9
      ]]
      local code = assert(asm.assemble(".code64\n" .. src .. "\nout %al, $0xf4\n", 0x1000))
      vm:write(0x1000, code)
      local _, con = assert(vm:add_debugcon(0xe9))
      assert(vm:add_exit_port(0xf4))
      local cpu = assert(vm:vcpu(0))
      assert.has_error(function() cpu:setup_boot64 { rsi = 0, cr3 = 0x9000, gdt_base = 0, gdt_limit = 0 } end,
                       "setup_boot64: rip required")
      assert.has_error(function() cpu:setup_boot64 { rip = 0x1000, cr3 = 0x9010, gdt_base = 0, gdt_limit = 0 } end,
                       "setup_boot64: cr3 must be page aligned")
      assert(cpu:setup_boot64 { rip = 0x1000, rsi = 0x7000, cr3 = 0x9000, cs = linux.BOOT_CS, ds = linux.BOOT_DS,
                                gdt_base = 0x800, gdt_limit = 31 })
      local exit = assert(cpu:run(nil, { timeout = 10 }))
      assert.are.equal("stop", exit.reason)
      -- RSI >> 8, CS, a 64-bit immediate's high half, CR4 (PAE only)
      assert.are.equal(string.char(0x70, 0x10, 0x42, 0x20), con:output())
      vm:close()
   end)

   it("maps guest RAM at host addresses that agree with the guest's modulo 2 MiB, for huge pages", function()
      local vm, why = kvmhost.vm()
      if not vm then pending(why) return end
      local size = 6 << 20
      for i, gpa in ipairs { 0, 0x101000, 0x3ff000 } do
         assert(vm:add_ram(i * 0x10000000 + gpa, size))
      end
      -- each slot is one mapping of exactly its size; its start sits at the guest offset
      local found = {}
      for line in io.lines("/proc/self/maps") do
         local lo, hi = line:match("^(%x+)-(%x+) rw%-p 00000000 00:00 0")
         if lo and tonumber(hi, 16) - tonumber(lo, 16) == size then
            found[tonumber(lo, 16) % (2 << 20)] = true
         end
      end
      for _, off in ipairs { 0, 0x101000, 0x3ff000 % (2 << 20) } do
         assert.is_true(found[off], ("no %d MiB mapping at 0x%x modulo 2 MiB"):format(size >> 20, off))
      end
      vm:close()
   end)

   it("reads a file straight into guest RAM, bounded by the RAM and the file", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write(("0123456789"):rep(1000))
      f:close()
      f = assert(io.open(path, "rb"))
      f:seek("set", 5)
      assert.is_true(vm:load_file(0x2000, f, 10, 25))
      assert.are.equal(("0123456789"):rep(3):sub(1, 25), vm:read(0x2000, 25))
      assert.are.equal(5, f:seek())                              -- the file's position is left alone
      -- past the end of the file: an error with what was read, nothing raised
      local ok, msg, errno = vm:load_file(0x3000, f, 9990, 20)
      assert.is_nil(ok)
      assert.are.equal(5, errno)                                 -- EIO
      assert.matches("^read into guest RAM file offset 9990 %(10 of 20 bytes read%)", msg)
      -- outside RAM, negative numbers, a closed file: argument errors
      assert.has_error(function() vm:load_file(0x100000 - 10, f, 0, 20) end)
      assert.has_error(function() vm:load_file(0, f, -1, 20) end)
      assert.has_error(function() vm:load_file(0, f, 0, -1) end)
      f:close()
      assert.has_error(function() vm:load_file(0, f, 0, 1) end, "bad argument #2 to 'load_file' (file is closed)")
      assert.has_error(function() vm:load_file(0, "not a file", 0, 1) end)
      os.remove(path)
      vm:close()
   end)

   it("keeps slots and ranges off KVM's TSS and identity-map pages", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      for _, gpa in ipairs { 0xfffbc000, 0xfffbd000, 0xfffbf000 } do
         local _, _, errno = vm:add_ram(gpa, 0x1000)
         assert.are.equal(17, errno)
         _, _, errno = vm:add_range("mmio", gpa, 0x1000, core.pcihost())
         assert.are.equal(17, errno)
      end
      assert(vm:add_ram(0xfffc0000, 0x1000))                    -- right after them is free
      vm:close()
   end)
end)

describe("legacy ports answered in C #kvm", function()
   it("ignored ranges read their value in every byte and drop writes, without a Lua exit", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      assert(vm:add_ignore_ports(0x80, 16))
      assert(vm:add_ignore_ports(0x70, 2, 0))
      local src = [[
         mov $0x55, %al
         out %al, $0x80
         in $0x80, %al
         out %al, $0xe9
         in $0x71, %al
         out %al, $0xe9
         in $0x8e, %ax
         out %ax, $0xe9
      ]]
      local exit, out = run(vm, false, src)
      assert.are.equal("stop", exit.reason)          -- no "io" exit came first
      assert.are.equal("exit_port", exit.stop)
      assert.are.equal("\255\0\255", out)
      assert.has_error(function() vm:add_ignore_ports(0xfff0, 0x20) end)
      assert.has_error(function() vm:add_ignore_ports(0x80, 1, 256) end)
      local _, _, errno = vm:add_ignore_ports(0x85, 1)
      assert.are.equal(17, errno)
      vm:close()
   end)

   it("the i8042 answers the controller commands and ends the run on a reset pulse", function()
      local vm = new_vm()
      if not vm then pending(kvmhost.REASON) return end
      assert(vm:add_i8042())
      -- status; self test (0xaa -> 0x55); read CTR (0x20); write CTR (0x60) and read it
      -- back; loop a byte through 0xd2; then pulse reset
      local function cmd(c) return ("mov $0x%x, %%al\n out %%al, $0x64\n"):format(c) end
      local data = "in $0x60, %al\n out %al, $0xe9\n"
      local status = "in $0x64, %al\n out %al, $0xe9\n"
      local src = status .. cmd(0xaa) .. status .. data .. status .. cmd(0x20) .. data
         .. cmd(0x60) .. "mov $0x65, %al\n out %al, $0x60\n" .. cmd(0x20) .. data
         .. cmd(0xd2) .. "mov $0x3c, %al\n out %al, $0x60\n" .. data .. cmd(0xfe)
         .. "mov $0x21, %al\n out %al, $0xe9\n"
      local exit, out = run(vm, false, src)
      assert.are.equal("stop", exit.reason)
      assert.are.equal(0x64, exit.port)
      assert.are.equal("reset", exit.stop)           -- the i8042's reset pulse, told by C
      assert.are.equal(0xfe, exit.value)
      -- system flag; output full after the self test; 0x55; empty again; CTR as a BIOS
      -- leaves it; the written CTR; the looped byte; nothing after the reset
      assert.are.same({ 0x04, 0x0d, 0x55, 0x0c, 0x45, 0x65, 0x3c }, { out:byte(1, -1) })
      vm:close()
   end)
end)
