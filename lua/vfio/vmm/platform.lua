---
-- The platform devices of a machine, assembled in one place: what every guest has (the
-- in-kernel irqchip, the debug console and the exit port) and what a Linux guest adds
-- (the PC platform: the PIT, a 16550A UART, an i8042 whose reset is the reboot, the
-- legacy ports Linux probes, and a PCI host bridge when the caller has none). Every
-- device here is answered in C; this module only says which devices a guest gets, on
-- which ports, and in which order they are made.
--
-- Who calls it, and when, follows KVM's ordering rules:
--   - M.base is called by vfio.vmm.vm.create after guest RAM and before the vCPUs: the
--     irqchip must exist before the first vCPU (KVM_CREATE_IRQCHIP), and the debug console
--     and exit port are what the multiboot test program writes;
--   - M.pc is called by vfio.vmm.boot_linux's setup once the kernel is loaded, before
--     the MP table and the vCPUs' boot state: the PIT needs the irqchip made by M.base.
-- A board (vfio.vmm.board) reaches both through them: board.new creates the VM (M.base),
-- board:boot_linux sets up a Linux guest (M.pc, with the board's own host bridge). A
-- multiboot guest gets only M.base.
-- @module vfio.vmm.platform
local pcihost = require "vfio.vmm.pcihost"

local M = {}

-- Every guest: the debug console (bytes written to it are kept, vm:debug_output) and the
-- exit port (a write ends the run with exit.stop "exit_port").
M.DEBUG_PORT = 0xe9
M.EXIT_PORT = 0xf4

-- A Linux guest: the UART is ttyS0 (0x3f8, IRQ 4).
M.UART_PORT, M.UART_IRQ = 0x3f8, 4

-- Legacy ports answered in C: {base, size, read value}. 0xff is an empty ISA bus.
M.IGNORED = {
   { 0x22, 2, 0xff },    -- IMCR (the MP table says virtual wire, but probes happen)
   { 0x70, 2, 0x00 },    -- CMOS/RTC: 0 keeps "update in progress" clear, so no wait
   { 0x80, 16, 0xff },   -- POST code port (Linux's I/O delay) and the DMA page registers
   { 0x92, 1, 0xff },    -- system control port A
   { 0x2e8, 8, 0xff },   -- ttyS3
   { 0x2f8, 8, 0xff },   -- ttyS1
   { 0x3b0, 0x30, 0xff }, -- MDA and VGA registers
   { 0x3e8, 8, 0xff },   -- ttyS2
   { 0x3f0, 8, 0xff },   -- floppy controller
}

---
-- platform.base(vm, {irqchip = true, debug_port = 0xe9, exit_port = 0xf4}) -> true, or
-- nil, message, errno: what every guest has, on a vfio.vm (the KVM VM) that has its RAM
-- and no vCPU yet. In order: the in-kernel irqchip (PIC, IOAPIC, LAPIC; unless irqchip
-- is false), the debug console, the exit port.
function M.base(vm, opts)
   opts = opts or {}
   local ok, err, e = true, nil, nil
   if opts.irqchip ~= false then ok, err, e = vm:create_irqchip() end
   if ok then ok, err, e = vm:add_debugcon(opts.debug_port or M.DEBUG_PORT) end
   if ok then ok, err, e = vm:add_exit_port(opts.exit_port or M.EXIT_PORT) end
   if not ok then return nil, err, e end
   return true
end

---
-- platform.pc(m, {stdout = true, capture = 1 MiB, pcihost = host}) -> true, or nil,
-- message, errno: the PC platform a Linux guest needs, on m (a vfio.vmm.vm made with its
-- irqchip, see base). In order: the PIT, the UART (m.uart: streamed to stdout unless
-- stdout is false, its last `capture` bytes kept), the i8042, the legacy ports
-- (M.IGNORED), and the host bridge: the caller's (already installed, holding its
-- functions), else one with only the bridge, installed here (m.pcihost either way).
function M.pc(m, opts)
   opts = opts or {}
   local vm = m.vm
   local ok, e, errno = vm:create_pit2()
   if not ok then return nil, e, errno end
   local id, uart, uerr = vm:add_uart { port = M.UART_PORT, irq = M.UART_IRQ, stdout = opts.stdout ~= false,
                                        capture = opts.capture or (1 << 20) }
   if not id then return nil, uart, uerr end
   m.uart = uart
   ok, e, errno = vm:add_i8042()
   if not ok then return nil, e, errno end
   for _, r in ipairs(M.IGNORED) do
      ok, e, errno = vm:add_ignore_ports(r[1], r[2], r[3])
      if not ok then return nil, e, errno end
   end
   local host = opts.pcihost
   if not host then
      host = pcihost.new {}
      host:attach(0, 0, 0, pcihost.host_bridge())
      ok, e, errno = pcihost.install(vm, host)
      if not ok then return nil, e, errno end
   end
   m.pcihost = host
   return true
end

return M
