-- The 16550A UART (csrc/kvm/uart.c), driven by small real-mode guests on the host's
-- /dev/kvm: what the guest reads back goes out on a debug console (port 0xe9), so the
-- spec sees the registers as the guest does. Pending where there is no usable KVM.
local kvmhost = require "support.kvm"
local asm = require "support.asm"

local ORG = 0x1000

-- A VM with RAM, the irqchip, a debug console at 0xe9, an exit port at 0xf4 and a UART;
-- runs `source` (16-bit) until the exit port or the timeout.
local function guest(source, uart_opts, before_run)
   local vm, kvm = kvmhost.vm()
   if not vm then return nil, kvm end
   local code, err = asm.assemble(".code16\n" .. source .. "\nout %al, $0xf4\n", ORG)
   if not code then return nil, err end
   assert(vm:add_ram(0, 0x100000))
   assert(vm:create_irqchip())
   local _, con = assert(vm:add_debugcon(0xe9))
   assert(vm:add_exit_port(0xf4))
   local _, uart = assert(vm:add_uart(uart_opts or { capture = 4096 }))
   vm:write(ORG, code)
   local cpu = assert(vm:vcpu(0))
   assert(cpu:setup_real(0, ORG))
   assert(cpu:set_lapic_lint())
   if before_run then before_run(vm, uart, cpu) end
   local exit = assert(cpu:run(nil, { timeout = 10 }))
   local out = con:output()
   return { vm = vm, uart = uart, cpu = cpu, exit = exit, out = out, kvm = kvm }
end

-- in al from UART register r (port 0x3f8 + r), then out to the debug console
local function rd(r) return ("mov $0x%x, %%dx\n in %%dx, %%al\n out %%al, $0xe9\n"):format(0x3f8 + r) end
local function wr(r, v) return ("mov $0x%x, %%dx\n mov $0x%x, %%al\n out %%al, %%dx\n"):format(0x3f8 + r, v) end

local function skip_if_none(g, err)
   if not g then pending(err) return true end
   assert.are.equal("stop", g.exit.reason, "the guest did not reach the exit port")
   assert.are.equal(0xf4, g.exit.port)
   assert.are.equal("exit_port", g.exit.stop)
   return false
end

describe("vfio.uart: a 16550A driven by a guest #kvm", function()
   it("captures what the guest writes to THR, with LSR always ready to send", function()
      local g, err = guest(wr(0, 0x48) .. wr(0, 0x69) .. rd(5) .. rd(2) .. rd(3))
      if skip_if_none(g, err) then return end
      assert.are.equal("Hi", (g.uart:output()))
      assert.are.equal("Hi", (g.uart:tail()))
      assert.are.same({ 0x60, 0x01, 0x03 }, { g.out:byte(1, -1) }) -- THRE|TEMT; no interrupt; 8N1
      assert.matches("^vfio.uart %(port 0x3f8, irq 4, 2 bytes sent%)$", tostring(g.uart))
      local out, dropped = g.uart:output(true)
      assert.are.equal("Hi", out)
      assert.are.equal(0, dropped)
      assert.are.equal("", (g.uart:output()))
      assert.are.equal("Hi", (g.uart:tail()))    -- the tail survives clearing
      g.vm:close()
   end)

   it("caps the capture buffer and counts the rest, keeping the last 4 KiB in the tail", function()
      local src = "mov $0x3f8, %dx\n mov $5000, %cx\n1: mov %cl, %al\n out %al, %dx\n loop 1b\n"
      local g, err = guest(src, { capture = 100 })
      if skip_if_none(g, err) then return end
      local out, dropped = g.uart:output()
      assert.are.equal(100, #out)
      assert.are.equal(4900, dropped)
      local tail, sent = g.uart:tail()
      assert.are.equal(5000, sent)
      assert.are.equal(4096, #tail)
      assert.are.equal(string.char(1), tail:sub(-1))   -- the last byte sent: cx = 1
      g.vm:close()
   end)

   it("reports FIFOs and THR-empty in IIR, and acknowledges THRI by the IIR read", function()
      local g, err = guest(wr(2, 0x07) .. rd(2) .. wr(1, 0x02) .. rd(2) .. rd(2) .. wr(0, 0x41) .. rd(2)
                           .. wr(1, 0x00) .. rd(2) .. rd(1))
      if skip_if_none(g, err) then return end
      -- FIFO on, none pending; THRI raised by enabling it; acknowledged; raised again by
      -- the next byte sent; gone with IER cleared; IER reads back
      assert.are.same({ 0xc1, 0xc2, 0xc1, 0xc2, 0xc1, 0x00 }, { g.out:byte(1, -1) })
      g.vm:close()
   end)

   it("has the divisor latch behind DLAB and a scratch register", function()
      local g, err = guest(wr(3, 0x83) .. wr(0, 0x01) .. wr(1, 0x02) .. rd(0) .. rd(1) .. wr(3, 0x03)
                           .. rd(1) .. wr(7, 0x5a) .. rd(7))
      if skip_if_none(g, err) then return end
      assert.are.same({ 0x01, 0x02, 0x00, 0x5a }, { g.out:byte(1, -1) })
      assert.are.equal("", (g.uart:output()))          -- a DLL write is no character
      g.vm:close()
   end)

   it("loops back in MCR loopback mode, with the modem lines wired to MCR", function()
      -- Linux's 8250 probe: LOOP | RTS | OUT2, expects MSR & 0xf0 == 0x90
      local g, err = guest(wr(4, 0x1a) .. rd(6) .. rd(6) .. wr(0, 0x5a) .. rd(5) .. rd(0) .. rd(5)
                           .. wr(4, 0x00) .. rd(6))
      if skip_if_none(g, err) then return end
      local b = { g.out:byte(1, -1) }
      assert.are.equal(0x90, b[1] & 0xf0)
      assert.are.equal(0x02, b[1] & 0x0f)                -- delta DSR: DTR is low in the loop
      assert.are.equal(0x90, b[2])                       -- deltas cleared by the read
      assert.are.same({ 0x61, 0x5a, 0x60 }, { b[3], b[4], b[5] }) -- DR, the byte, DR gone
      assert.are.equal(0xb0, b[6] & 0xf0)                -- back to a connected terminal
      assert.are.equal("", (g.uart:output()))          -- nothing went out on the line
      g.vm:close()
   end)

   it("gives the guest what feed() queued, through LSR.DR and RBR", function()
      local g, err = guest(rd(5) .. rd(0) .. rd(0) .. rd(0) .. rd(5) .. rd(0), nil, function(_, uart)
         assert.are.equal(3, uart:feed("abc"))
      end)
      if skip_if_none(g, err) then return end
      assert.are.same({ 0x61, 0x61, 0x62, 0x63, 0x60, 0x00 }, { g.out:byte(1, -1) })
      assert.are.equal(4096, g.uart:feed(("x"):rep(5000)))   -- the queue is bounded
      g.vm:close()
   end)

   it("contains accesses of any size and at any port of its range", function()
      -- 16-bit read at LSR: LSR | MSR << 8; 32-bit write at SCR spills past the range;
      -- 32-bit read at MSR: MSR, SCR, then two bytes beyond the UART
      local src = "mov $0x3fd, %dx\n in %dx, %ax\n out %al, $0xe9\n mov %ah, %al\n out %al, $0xe9\n"
         .. "mov $0x3ff, %dx\n mov $0x11223344, %eax\n out %eax, %dx\n"
         .. "mov $0x3fe, %dx\n in %dx, %eax\n out %al, $0xe9\n shr $8, %eax\n out %al, $0xe9\n"
         .. "shr $8, %eax\n out %al, $0xe9\n shr $8, %eax\n out %al, $0xe9\n"
         .. "mov $0x3f8, %dx\n mov $0x4241, %ax\n out %ax, %dx\n"
      local g, err = guest(src)
      if skip_if_none(g, err) then return end
      assert.are.same({ 0x60, 0xb0, 0xb0, 0x44, 0xff, 0xff }, { g.out:byte(1, -1) })
      -- a 16-bit write to THR is THR then IER, as the ISA bus splits it
      assert.are.equal("A", (g.uart:output()))
      g.vm:close()
   end)

   it("raises IRQ 4 through the PIC to the vCPU for THR empty and for data ready", function()
      -- PIC master at vectors 8-15 with only IRQ 4 unmasked; the handler (vector 12)
      -- prints 'I' and the IIR, then EOIs. Two interrupts: THRI on enabling it, then
      -- data ready after a loopback byte (THRI off by then).
      local src = [[
         cli
         xor %ax, %ax
         mov %ax, %ds
         movw $handler, 0x30
         movw $0, 0x32
         mov $0x11, %al
         out %al, $0x20
         mov $0x08, %al
         out %al, $0x21
         mov $0x04, %al
         out %al, $0x21
         mov $0x01, %al
         out %al, $0x21
         mov $0xef, %al
         out %al, $0x21
         sti
         mov $0x3f9, %dx
         mov $0x02, %al
         out %al, %dx
         mov $100, %cx
      1: loop 1b
         mov $0x3fc, %dx
         mov $0x10, %al
         out %al, %dx
         mov $0x3f9, %dx
         mov $0x01, %al
         out %al, %dx
         mov $0x3f8, %dx
         mov $0x7a, %al
         out %al, %dx
         mov $100, %cx
      2: loop 2b
         mov $0x44, %al
         out %al, $0xe9
         jmp done
      handler:
         push %ax
         push %dx
         mov $0x49, %al
         out %al, $0xe9
         mov $0x3fa, %dx
         in %dx, %al
         out %al, $0xe9
         and $0x0f, %al
         cmp $0x04, %al
         jne 3f
         mov $0x3f8, %dx
         in %dx, %al
         out %al, $0xe9
      3: mov $0x20, %al
         out %al, $0x20
         pop %dx
         pop %ax
         iret
      done:
      ]]
      local g, err = guest(src)
      if skip_if_none(g, err) then return end
      assert.are.equal("I\2I\4zD", g.out)
      g.vm:close()
   end)

   it("closes idempotently, and a closed UART reads all ones", function()
      local g, err = guest(rd(5), nil, function(_, uart) uart:close(); uart:close() end)
      if skip_if_none(g, err) then return end
      assert.are.equal("\255", g.out)
      assert.are.equal("vfio.uart (closed)", tostring(g.uart))
      assert.has_error(function() g.uart:feed("x") end, "attempt to use a closed uart")
      g.vm:close()
   end)

   it("checks its arguments", function()
      local vm, why = kvmhost.vm()
      if not vm then pending(why) return end
      assert.has_error(function() vm:add_uart { port = 0xfffc } end)
      assert.has_error(function() vm:add_uart { irq = 24 } end)
      assert.has_error(function() vm:add_uart { capture = -1 } end)
      assert(vm:add_uart {})
      local _, msg, errno = vm:add_uart {}               -- the same ports again
      assert.are.equal(17, errno)
      assert.matches("^add handled range port 0x3f8 size 0x8: File exists", msg)
      vm:close()
   end)
end)

describe("the UART model without KVM (tests/uart_host)", function()
   local prog = (os.getenv("LUAVFIO_BUILD") or "build") .. "/tests/uart_host"
   local function run(mode)
      local p = assert(io.popen(("%s %s 2>&1"):format(prog, mode)))
      local out = p:read("a")
      local ok, how, code = p:close()
      assert.is_true(ok, ("uart_host %s ended by %s %s: %s"):format(mode, how, code, out))
      return out
   end

   it("streams to a stdout with no reader left without dying of SIGPIPE", function()
      assert.matches("^ok: 4 bytes to a pipe with no reader: Broken pipe, streaming stopped",
                     run("pipe"))
   end)

   it("lowers the IRQ line it holds high when its range is released", function()
      assert.matches("^ok: IRQ 4 raised, then lowered by the release", run("release"))
   end)
end)

describe("vfio.uart at the edges of the VMM #kvm", function()
   it("lowers the IRQ line it holds high when its range goes, so the guest's IRQ is not stuck", function()
      local vm, kvm = kvmhost.vm { ram = 0x100000 }
      if not vm then pending(kvm) return end
      assert(vm:create_irqchip())
      assert(vm:add_debugcon(0xe9))
      assert(vm:add_exit_port(0xf4))
      local id = assert(vm:add_uart { capture = 64 })
      -- the PIC with every IRQ masked and IRQ 4 level-triggered (ELCR), so its IRR bit
      -- follows the line; THR-empty enabled (the line goes high); IRR read before and
      -- after Lua removes the UART's range
      local irr = "mov $0x0a, %al\n out %al, $0x20\n in $0x20, %al\n out %al, $0xe9\n"
      local code = assert(asm.assemble(".code16\n cli\n" .. [[
         mov $0x11, %al
         out %al, $0x20
         mov $0x08, %al
         out %al, $0x21
         mov $0x04, %al
         out %al, $0x21
         mov $0x01, %al
         out %al, $0x21
         mov $0xff, %al
         out %al, $0x21
         mov $0x4d0, %dx
         mov $0x10, %al
         out %al, %dx
         mov $0x3f9, %dx
         mov $0x02, %al
         out %al, %dx
      ]] .. irr .. "out %al, $0x10\n" .. irr .. "out %al, $0xf4\n", ORG))
      vm:write(ORG, code)
      local cpu = assert(vm:vcpu(0))
      assert(cpu:setup_real(0, ORG))
      local e = assert(cpu:run(function(x)
         if x.port == 0x10 then assert(vm:remove_range(id)) end
      end, { timeout = 10 }))
      assert.are.equal("stop", e.reason)
      local out = vm:debug_output()
      assert.are.equal(2, #out)
      assert.are.equal(0x10, out:byte(1) & 0x10, "the UART's line was not high")
      assert.are.equal(0, out:byte(2) & 0x10, "IRQ 4 stayed high after the UART went")
      vm:close(); kvm:close()
   end)

   it("streams to a stdout with no reader left without dying of SIGPIPE, and says so", function()
      local vm, kvm = kvmhost.vm()
      if not vm then pending(kvm) return end
      vm:close(); kvm:close()
      local script, errf = os.tmpname(), os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(([[
package.cpath = %q .. "/?.so;" .. package.cpath
local core = require "vfio.core"
os.execute("sleep 0.5")   -- the reader (:) has gone by now
local kvm = assert(core.kvm_open())
local vm = assert(kvm:create_vm())
assert(vm:add_ram(0, 0x10000))
assert(vm:add_exit_port(0xf4))
local _, u = assert(vm:add_uart { stdout = true, capture = 64 })
-- mov $0x3f8, %%dx; 4 times mov $0x41, %%al; out %%al, %%dx; then out %%al, $0xf4
vm:write(0x1000, "\xBA\xF8\x03" .. ("\xB0\x41\xEE"):rep(4) .. "\xE6\xF4")
local cpu = assert(vm:vcpu(0))
assert(cpu:setup_real(0, 0x1000))
local e = assert(cpu:run(nil, { timeout = 10 }))
local msg, errno = u:stdout_error()
io.stderr:write(("reason=%%s captured=%%s errno=%%s msg=%%s\n"):format(e.reason, (u:output()), errno, msg))
]]):format(os.getenv("LUAVFIO_BUILD") or "build"))
      f:close()
      local ok, how, code = os.execute(("bash -c 'set -o pipefail; lua5.4 %s 2>%s | :'"):format(script, errf))
      local err = io.open(errf):read("a")
      os.remove(script); os.remove(errf)
      assert.is_true(ok, ("the VMM ended by %s %s: %s"):format(how, code, err))
      assert.matches("reason=stop captured=AAAA errno=32 "
                     .. "msg=uart write to stdout: Broken pipe %(streaming stopped%)", err)
   end)
end)
