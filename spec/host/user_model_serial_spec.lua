-- examples/vfio-user/serial_16550a.lua through the served-device interface: what
-- 8250_pci and 8250_port do to it (the board guess, autoconfig's probes, the THRE test at
-- startup) finds one 16550A port, and bytes, line status, interrupt priorities and the
-- INTx line behave as the chip's.
local decode = require "vfio.decode"
local served = require "support.served_model"

local EXAMPLE = "examples/vfio-user/serial_16550a.lua"
local CONFIG, INTX = 7, 0

-- Register offsets and bits as Linux's serial_reg.h names them.
local RX, TX, IER, IIR, FCR, LCR, MCR, LSR, MSR, SCR, DLL, DLM = 0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 0, 1
local EFR = 2
local IER_ALL = 0x0f
local IIR_NO_INT, IIR_FIFO_BITS = 0x01, 0xc0
local LCR_CONF_MODE_A, LCR_CONF_MODE_B, LCR_WLEN8 = 0x80, 0xbf, 0x03
local MCR_LOOP, MCR_OUT2, MCR_RTS = 0x10, 0x08, 0x02
local MSR_STATUS_BITS, MSR_DCD, MSR_CTS = 0xf0, 0x80, 0x10
local LSR_DR, LSR_OE, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x20, 0x40

local function open(opts) return served.open(EXAMPLE, 0, opts) end

-- 8250_port.c's size_fifo(): bytes written in loopback that the receiver keeps.
local function size_fifo(p)
   local old_lcr = p.i(LCR)
   p.o(LCR, 0)
   local old_fcr = p.i(FCR)                -- reads IIR, written back as FCR, as Linux does
   local old_mcr = p.i(MCR)
   p.o(FCR, 0x01 | 0x02 | 0x04)
   p.o(MCR, MCR_LOOP)
   p.o(LCR, LCR_CONF_MODE_A)
   local old_dl = p.i(DLL) | p.i(DLM) << 8
   p.o(DLL, 1) p.o(DLM, 0)
   p.o(LCR, LCR_WLEN8)
   for count = 0, 255 do p.o(TX, count) end
   local count = 0
   while p.i(LSR) & LSR_DR ~= 0 and count < 256 do
      p.i(RX)
      count = count + 1
   end
   p.o(FCR, old_fcr)
   p.o(MCR, old_mcr)
   p.o(LCR, LCR_CONF_MODE_A)
   p.o(DLL, old_dl & 0xff) p.o(DLM, old_dl >> 8)
   p.o(LCR, old_lcr)
   return count
end

-- 8250_port.c's autoconfig() with autoconfig_16550a() (the 16550A variants probed, as
-- with CONFIG_SERIAL_8250_16550A_VARIANTS): the port type it settles on.
local function autoconfig(p, skip_test)
   local scratch = p.i(IER)
   p.o(IER, 0)
   local scratch2 = p.i(IER) & IER_ALL
   p.o(IER, IER_ALL)
   local scratch3 = p.i(IER) & IER_ALL
   p.o(IER, scratch)
   if scratch2 ~= 0 or scratch3 ~= IER_ALL then return "IER test failed" end
   local save_mcr, save_lcr = p.i(MCR), p.i(LCR)
   if not skip_test then
      p.o(MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS)
      local status1 = p.i(MSR) & MSR_STATUS_BITS
      p.o(MCR, save_mcr)
      if status1 ~= MSR_DCD | MSR_CTS then return "LOOP test failed" end
   end
   p.o(LCR, LCR_CONF_MODE_B)
   p.o(EFR, 0)
   p.o(LCR, 0)
   p.o(FCR, 0x01)
   local kind = ({ [0] = "8250", [0x80] = "16550", [0xc0] = "16550A" })[p.i(IIR) & IIR_FIFO_BITS] or "unknown"
   if kind == "16550A" then
      -- EFR behind DLAB (ST16C650V1)
      p.o(LCR, LCR_CONF_MODE_A)
      if p.i(EFR) == 0 then return "16650 or later (EFRv1)" end
      -- EFR behind 0xbf (ST16C650V2, TI16C752)
      p.o(LCR, LCR_CONF_MODE_B)
      if p.i(EFR) == 0 then return "EFRv2" end
      -- National Semiconductor SuperIO: MCR's loop bit seen through bank 2's EXCR1
      p.o(LCR, 0)
      local status1 = p.i(MCR)
      p.o(LCR, 0xe0)
      local status2 = p.i(0x02)
      if (status2 ~ status1) & MCR_LOOP == 0 then
         p.o(LCR, 0)
         p.o(MCR, status1 ~ MCR_LOOP)
         p.o(LCR, 0xe0)
         status2 = p.i(0x02)
         p.o(LCR, 0)
         p.o(MCR, status1)
         if (status2 ~ status1) & MCR_LOOP ~= 0 then return "NS16550A" end
      end
      -- TI16750: 64-byte FIFO bit with DLAB only
      p.o(LCR, 0)
      p.o(FCR, 0x01 | 0x20)
      local s1 = p.i(IIR) & 0xe0
      p.o(FCR, 0x01)
      p.o(LCR, LCR_CONF_MODE_A)
      p.o(FCR, 0x01 | 0x20)
      local s2 = p.i(IIR) & 0xe0
      p.o(FCR, 0x01)
      p.o(LCR, 0)
      if s1 == 0xc0 and s2 == 0xe0 then return "16750" end
      -- XScale: IER's UUE bit (6) writable
      local iersave = p.i(IER)
      p.o(IER, iersave & ~0x40)
      if p.i(IER) & 0x40 == 0 then
         p.o(IER, iersave | 0x40)
         if p.i(IER) & 0x40 ~= 0 then return "XScale" end
      end
      p.o(IER, iersave)
      if size_fifo(p) == 64 then return "U6_16550A" end
   end
   p.o(LCR, save_lcr)
   -- the reset that follows: MCR back, FIFOs cleared, RX read, IER cleared
   p.o(MCR, save_mcr)
   p.o(FCR, 0x01) p.o(FCR, 0x07) p.o(FCR, 0)
   p.i(RX)
   p.o(IER, 0)
   return kind
end

local counter = served.counter

describe("examples/vfio-user/serial_16550a.lua", function()
   it("is a 16550-compatible serial controller with one 8-byte I/O BAR0 and INTA", function()
      local dev = open()
      assert(dev:region_write(CONFIG, 0x10, string.pack("<I4", 0xc000)))
      local info = decode.config(assert(dev:region_read(CONFIG, 0, 256)), { bar_sizes = { [0] = 8 } })
      assert.are.same({ 0x1b36, 0x0002, 0x070002, 1 }, { info.vendor, info.device, info.class, info.revision })
      assert.are.equal(1, info.interrupt_pin)
      assert.are.equal(1, #info.bars)
      assert.are.same({ 0, true, 8, 0xc000 }, { info.bars[1].index, info.bars[1].io, info.bars[1].size,
                                                info.bars[1].address })
      assert.are.equal(0, #info.caps, "INTx only: 8250_pci uses legacy interrupts for this ID")
   end)

   it("is taken by 8250_pci's board guess as one port in BAR0", function()
      -- serial_pci_is_class_communication + serial_pci_guess_board, on what the server reports
      local dev = open()
      local class = string.unpack("<I3", dev:region_read(CONFIG, 0x09, 3))
      assert.are.equal(0x0700, class >> 8, "PCI_CLASS_COMMUNICATION_SERIAL")
      assert.is_true(class & 0xff <= 6, "prog-if <= 6")
      local io, mem, first = 0, 0, nil
      for bar = 0, 5 do
         local r = assert(dev:region_info(bar))
         local flags = string.unpack("<I4", dev:region_read(CONFIG, 0x10 + 4 * bar, 4))
         if r.size > 0 and flags & 1 == 1 then
            io = io + 1
            first = first or bar
         elseif r.size > 0 then
            mem = mem + 1
         end
      end
      assert.is_true(mem <= 1 and io == 1)
      assert.are.equal(0, first)
      assert.are.equal(1, dev:region_info(first).size // 8, "num_ports = len / 8")
   end)

   it("passes 8250_port's autoconfig as a 16550A with a 16-byte FIFO", function()
      local _, p = open()
      assert.are.equal("16550A", autoconfig(p, true))
      assert.are.equal("16550A", autoconfig(p, false), "the loopback test passes too")
      assert.are.equal(16, size_fifo(p))
   end)

   it("reasserts THRE as serial8250_do_startup tests (no UART_BUG_THRE)", function()
      local _, p = open()
      p.o(IER, 0x02)
      local iir1 = p.i(IIR)
      p.o(IER, 0)
      p.o(IER, 0x02)
      local iir = p.i(IIR)
      p.o(IER, 0)
      assert.are.equal(0x02, iir1 & 0x0f)
      assert.are.equal(0x02, iir & 0x0f)
      assert.are.equal(IIR_NO_INT, p.i(IIR) & 0x0f, "reading IIR cleared it")
   end)

   it("loops a byte from THR back to RBR with MCR's loop bit, with LSR following", function()
      local dev, p = open()
      p.o(MCR, MCR_LOOP)
      assert.are.equal(LSR_THRE | LSR_TEMT, p.i(LSR))
      p.o(TX, 0x41)
      assert.are.equal(LSR_DR | LSR_THRE | LSR_TEMT, p.i(LSR))
      assert.are.equal(0x41, p.i(RX))
      assert.are.equal(LSR_THRE | LSR_TEMT, p.i(LSR))
      assert.are.equal("", dev:transmitted(), "in loopback nothing reaches the line")
      -- MSR in loopback follows MCR's outputs
      p.o(MCR, MCR_LOOP | 0x0f)
      assert.are.equal(0xf0, p.i(MSR) & 0xf0)
      -- without the FIFO one byte is kept and the next overruns
      p.o(TX, 1) p.o(TX, 2)
      assert.are.equal(LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT, p.i(LSR))
      assert.are.equal(LSR_DR | LSR_THRE | LSR_TEMT, p.i(LSR), "reading LSR cleared the overrun")
      assert.are.equal(1, p.i(RX))
   end)

   it("sends bytes to the line and receives the peer's, and echoes with opts.echo", function()
      local dev, p = open()
      p.o(FCR, 0x01)
      for c in ("hello"):gmatch(".") do p.o(TX, c:byte()) end
      assert.are.equal("hello", dev:transmitted())
      dev:receive(string.rep("x", 20) .. "yz")
      local got = {}
      while p.i(LSR) & LSR_DR ~= 0 do got[#got + 1] = string.char(p.i(RX)) end
      assert.are.equal(string.rep("x", 20) .. "yz", table.concat(got), "the line waits for FIFO room")
      local echo, q = open { echo = true }
      for c in ("ping"):gmatch(".") do q.o(TX, c:byte()) end
      got = {}
      while q.i(LSR) & LSR_DR ~= 0 do got[#got + 1] = string.char(q.i(RX)) end
      assert.are.equal("ping", table.concat(got))
      assert.are.equal("ping", echo:transmitted())
   end)

   it("keeps the divisor latch apart from RBR/THR and IER", function()
      local dev, p = open()
      p.o(IER, 0x05)
      p.o(LCR, 0x80 | LCR_WLEN8)
      p.o(DLL, 0x01) p.o(DLM, 0x02)
      assert.are.same({ 0x01, 0x02 }, { p.i(DLL), p.i(DLM) })
      p.o(LCR, LCR_WLEN8)
      assert.are.equal(0x05, p.i(IER))
      assert.are.equal("", dev:transmitted())
      p.o(SCR, 0x5a)
      assert.are.equal(0x5a, p.i(SCR))
      assert.are.equal(0, p.i(IER) & 0xf0, "IER bits 4-7 are zero")
   end)

   it("reports interrupts by priority: line status, data, THR empty, modem status", function()
      local dev, p = open()
      p.o(FCR, 0x01 | 0xc0)                       -- FIFO, trigger level 14
      p.o(MCR, MCR_LOOP)
      p.i(MSR)
      p.o(IER, 0x0f)
      for i = 1, 17 do p.o(TX, i) end            -- 16 kept, one overrun
      assert.are.equal(0x06, p.i(IIR) & 0x0f, "receiver line status")
      p.i(LSR)
      assert.are.equal(0x04, p.i(IIR) & 0x0f, "data at the trigger level")
      for _ = 1, 10 do p.i(RX) end
      assert.are.equal(0x0c, p.i(IIR) & 0x0f, "below the trigger level: character timeout")
      for _ = 1, 6 do p.i(RX) end
      assert.are.equal(0x02, p.i(IIR) & 0x0f, "THR empty")
      assert.are.equal(0x01, p.i(IIR) & 0x0f, "read once, gone")
      p.o(MCR, MCR_LOOP | 0x02)                   -- RTS -> CTS in loopback: a delta
      assert.are.equal(0x00, p.i(IIR) & 0x0f, "modem status")
      assert.are.equal(0x11, p.i(MSR) & 0x11, "CTS and its delta")
      assert.are.equal(IIR_NO_INT | 0xc0, p.i(IIR))
      assert.truthy(dev)
   end)

   it("raises INTx while a cause is pending and lowers it when served", function()
      local dev, p = open()
      local t = counter()
      assert(dev:set_irqs(INTX, 0, 1, "trigger", { t }))
      p.o(IER, 0x01)
      dev:receive("a")
      assert.are.equal(1, t.n)
      assert.are.equal(0x08, string.unpack("<I2", dev:region_read(CONFIG, 0x06, 2)) & 0x08)
      p.i(RX)
      assert.are.equal(0, string.unpack("<I2", dev:region_read(CONFIG, 0x06, 2)) & 0x08, "deasserted")
      assert(dev:set_irqs(INTX, 0, 1, "unmask"))
      dev:receive("b")
      assert.are.equal(2, t.n)
      dev:receive("c")
      assert.are.equal(2, t.n, "still asserted: one edge")
   end)

   it("returns to the chip's reset values on reset, the line kept", function()
      local dev, p = open()
      p.o(IER, 0x0f) p.o(LCR, 0x1b) p.o(MCR, 0x0f) p.o(SCR, 0x77)
      p.o(FCR, 0)
      dev:receive("qr")                           -- q in the receiver, r still on the line
      assert(dev:reset())
      assert(dev:region_write(CONFIG, 0x04, string.pack("<I2", 0x0001)))
      assert.are.same({ 0, 0, 0, 0 }, { p.i(IER), p.i(LCR), p.i(MCR), p.i(SCR) })
      assert.are.equal(IIR_NO_INT, p.i(IIR))
      assert.are.equal(string.byte("r"), p.i(RX), "the receiver was cleared, the line kept its byte")
      assert.are.equal(LSR_THRE | LSR_TEMT, p.i(LSR))
   end)
end)
