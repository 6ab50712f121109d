-- The Linux boot driver (vfio.vmm.boot_linux on a vfio.vmm.vm) end to end on the
-- host's /dev/kvm, with stand-in bzImages: a valid setup header in front of 32-bit code
-- that prints the command line boot_params points at, then ends as a kernel would
-- (reboot through the i8042, a panic, "poweroff -f" without ACPI, a triple fault). The
-- real kernel's boot is not a spec: this host's KVM is far too slow to decompress it.
local asm = require "support.asm"
local vmm = require "vfio.vmm.vm"

-- A bzImage: one setup sector after the boot sector, then the protected-mode code.
local function bzimage(code)
   local s = ("\0"):rep(1024)
   local function put(off, fmt, ...)
      local b = string.pack("<" .. fmt, ...)
      s = s:sub(1, off) .. b .. s:sub(off + #b + 1)
   end
   put(0x1f1, "B", 1)                                -- setup_sects
   put(0x1fe, "I2", 0xaa55)
   put(0x200, "BB", 0xeb, 0x66)                      -- jump over the header: it ends at 0x268
   put(0x202, "c4I2", "HdrS", 0x20f)
   put(0x211, "B", 0x01)                             -- LOADED_HIGH
   put(0x214, "I4", 0x100000)                        -- code32_start
   put(0x22c, "I4", 0x7fffffff)                      -- initrd_addr_max
   put(0x230, "I4", 0x200000)                        -- kernel_alignment
   put(0x238, "I4", 2047)                            -- cmdline_size
   put(0x258, "I8", 0x1000000)                       -- pref_address
   put(0x260, "I4", 0x100000)                        -- init_size
   return s .. code
end

-- 32-bit code: print the command line (ESI = boot_params, cmd_line_ptr at 0x228) on the
-- UART, a newline, then `tail` (more code).
local function kernel(tail)
   local code = assert(asm.assemble(".code32\n" .. [[
         mov 0x228(%esi), %ebx
         mov $0x3f8, %dx
      1: movb (%ebx), %al
         test %al, %al
         jz 2f
         out %al, %dx
         inc %ebx
         jmp 1b
      2: mov $0x0a, %al
         out %al, %dx
   ]] .. tail, 0x1000000))
   return bzimage(code)
end

local function print_string(s)
   local t = {}
   for i = 1, #s do t[#t + 1] = ("mov $0x%x, %%al\n out %%al, %%dx\n"):format(s:byte(i)) end
   return table.concat(t)
end

local RESET = "mov $0xfe, %al\n out %al, $0x64\n hlt\n"

local function boot(image, opts)
   local m, err = vmm.create { mem_mib = 64 }
   if not m then return nil, err end
   opts = opts or {}
   opts.image, opts.stdout, opts.timeout = image, false, opts.timeout or 10
   local r = assert(require("vfio.vmm.boot_linux").boot(m, opts))
   return r, m
end

describe("vfio.vmm.boot_linux.boot on stand-in kernels #kvm", function()
   it("enters the kernel with boot_params in ESI and the machine's command line, and sees a reboot", function()
      local r, m = boot(kernel(print_string("bye\n") .. RESET), { append = "root=/dev/ram0" })
      if not r then pending(m) return end
      assert.are.equal("reboot", r.result)
      assert.are.equal(0, r.status)
      assert.are.equal(0x64, r.exit.port)
      assert.are.equal("reset", r.exit.stop)
      assert.are.equal(require("vfio.vmm.boot_linux").CMDLINE .. " root=/dev/ram0\nbye\n", r.output)
      assert.are.equal(r.output, r.tail)
      -- the machine's pieces are in place: the MP table where Linux scans for it
      assert.are.equal("_MP_", m.vm:read(0xf0000, 4))
      m:close()
   end)

   it("tells a panic from a reboot by the console text", function()
      local r, m = boot(kernel(print_string("Kernel panic - not syncing: VFS: Unable to mount root fs\n") .. RESET))
      if not r then pending(m) return end
      assert.are.equal("panic", r.result)
      assert.are.equal(1, r.status)
      assert.matches("Unable to mount root fs", r.tail)
      m:close()
   end)

   it("reads poweroff -f without ACPI (Power down, then init's death) as a power-off", function()
      local r, m = boot(kernel(print_string("reboot: Power down\nKernel panic - not syncing: Attempted to kill init!"
                                            .. " exitcode=0x00000000\n") .. RESET))
      if not r then pending(m) return end
      assert.are.equal("poweroff", r.result)
      assert.are.equal(0, r.status)
      m:close()
   end)

   it("reads a halt after poweroff -f (6.1's words and later kernels') as a power-off", function()
      for _, text in ipairs { "reboot: System halted\n", "reboot: Power off not available: System halted instead\n" } do
         local r, m = boot(kernel(print_string(text) .. "cli\n 3: hlt\n jmp 3b\n"), { slice = 0.2 })
         if not r then pending(m) return end
         assert.are.equal("poweroff", r.result, text)
         assert.are.equal(0, r.status)
         m:close()
      end
   end)

   it("finds a panic that spins (panic=0) by the console, and reports a triple fault", function()
      local r, m = boot(kernel(print_string("Kernel panic - not syncing: spin\n") .. "3: jmp 3b\n"),
                        { cmdline = "panic=0", slice = 0.2 })
      if not r then pending(m) return end
      assert.are.equal("panic", r.result)
      assert.are.equal("timeout", r.exit.reason)
      m:close()
      -- a zero IDT limit and an exception: the CPU shuts down
      r, m = boot(kernel("lidt idt0\n ud2\n idt0: .word 0\n .long 0\n"))
      assert.are.equal("triple fault", r.result)
      assert.are.equal(1, r.status)
      m:close()
   end)

   it("answers ports nothing handles with all ones, counting them, and times out a silent guest", function()
      local r, m = boot(kernel("mov $0x1f7, %dx\n in %dx, %al\n mov $0x3f8, %dx\n out %al, %dx\n 3: jmp 3b\n"),
                        { timeout = 1, slice = 0.3 })
      if not r then pending(m) return end
      assert.are.equal("timeout", r.result)
      -- where it was: spinning in the kernel's code, loaded from 1 MiB on
      local rip = tonumber(assert(r.where):match("^vcpu0 rip (0x%x+)$"))
      assert.is_true(rip >= 0x100000 and rip < 0x1000000, r.where)
      assert.are.equal(1, r.ports[0x1f7])
      assert.are.equal("\255", r.output:sub(-1))
      m:close()
   end)

   it("refuses what it cannot boot, with the loader's reasons", function()
      local m, err = vmm.create { mem_mib = 64 }
      if not m then pending(err) return end
      local r, msg = require("vfio.vmm.boot_linux").boot(m, { image = ("\0"):rep(4096) })
      assert.is_nil(r)
      assert.are.equal("not a bzImage (no HdrS magic)", msg)
      r, msg = require("vfio.vmm.boot_linux").boot(m, { kernel = "/nonexistent/bzImage" })
      assert.is_nil(r)
      assert.matches("^kernel: /nonexistent/bzImage", msg)
      m:close()
   end)
end)

describe("vfio.vmm.boot_linux: unclaimed exits", function()
   local boot_linux = require "vfio.vmm.boot_linux"

   it("counts them by address with a bound: a guest walking absent MMIO grows nothing", function()
      local c = boot_linux.unclaimed_counter()
      collectgarbage(); collectgarbage()
      local before = collectgarbage("count")
      -- a guest reading every dword of 4 GiB of absent MMIO, then every port
      for addr = 0, 400000 * 4 - 1, 4 do c:count { space = "mmio", addr = 0xc0000000 + addr } end
      for port = 0, 0xffff do c:count { space = "pio", port = port } end
      c:count { space = "pio", port = 0x1f7 }
      collectgarbage(); collectgarbage()
      local grown = collectgarbage("count") - before
      local n = 0
      for _ in pairs(c.mmio) do n = n + 1 end
      assert.are.equal(boot_linux.MAX_UNCLAIMED, n)
      n = 0
      for _ in pairs(c.ports) do n = n + 1 end
      assert.are.equal(boot_linux.MAX_UNCLAIMED, n)
      assert.are.equal(400000 - boot_linux.MAX_UNCLAIMED, c.more.mmio)
      assert.are.equal(0x10000 - boot_linux.MAX_UNCLAIMED, c.more.pio)
      assert.are.equal(1, c.mmio[0xc0000000])
      assert.are.equal(2, c.ports[0x1f7])              -- a tracked address still counts
      assert.is_true(grown < 256, ("the counter grew the heap by %.0f KiB"):format(grown))
   end)
end)
