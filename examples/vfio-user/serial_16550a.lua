-- A one-port 16550A serial card, as a vfio-user device model (vfio.user.model).
--
-- Why this device: it is the classic register-level device with a state machine behind
-- eight I/O ports: registers that mean different things for reads and writes and under
-- the divisor latch (DLAB), reads with side effects (RBR pops the FIFO, IIR clears the
-- THRE interrupt, LSR and MSR clear their error and delta bits), a write-only register
-- (FCR), and a level interrupt (INTx) whose cause the driver reads back from IIR by
-- priority. It uses an I/O BAR, the legacy interrupt and no DMA.
--
-- Which driver binds: Linux's 8250_pci ("serial"), by class. The IDs are those of QEMU's
-- pci-serial (1b36:0002, subsystem 1af4:1100), whose register interface this model
-- follows: class 0x070002 (serial controller, 16550-compatible), one 8-byte I/O BAR0,
-- INTA. 8250_pci's table ends with a class match (PCI_CLASS_COMMUNICATION_SERIAL << 8,
-- mask 0xffff00 -> pbn_default); serial_pci_guess_board accepts prog-if <= 6 and, with
-- one I/O BAR and at most one memory BAR, takes that BAR with len / 8 = 1 port at
-- 115200 base baud. The port is registered with UPF_SKIP_TEST | UPF_BOOT_AUTOCONF and
-- legacy interrupts (this ID is not on 8250_pci's MSI list), and 8250_port's autoconfig
-- finds a 16550A: IER's low nibble read/write, bits 4-7 zero (no XScale UUE), IIR bits
-- 6-7 set once FCR enables the FIFOs, no EFR behind LCR 0xbf (offset 2 reads IIR), no
-- 64-byte FIFO bit (IIR bit 5 stays 0) and a 16-byte receive FIFO in loopback.
--
-- The line: transmitting is instant (THR is always empty again, so THRE and TEMT stay
-- set and the THRE interrupt comes back after every write); received bytes wait on the
-- line until the FIFO has room (a patient peer, as with hardware flow control), so
-- nothing is lost unless the guest loops back more than the FIFO holds (MCR loopback
-- overruns like the chip: the size_fifo probe counts 16). Modem inputs: CTS, DSR and DCD
-- asserted, RI off (a cable with a peer that is there).
--
-- Use: `local dev = loadfile("examples/vfio-user/serial_16550a.lua")(opts)` (or dofile,
-- with no options). opts.echo = true wires the line's output back to its input (a
-- loopback plug: what the guest writes it reads back; run `stty raw -echo` on the port
-- in the guest first, or the tty's own echo sends every byte round again).
-- The model's own methods: dev:receive(bytes) (the peer sends), dev:transmitted()
-- (bytes the guest sent since the last call), dev:set_echo(on), dev:set_modem{cts=,
-- dsr=, ri=, dcd=}.
local model = require "vfio.user.model"

local opts = ... or {}

-- Register bits (the 16550A datasheet's names, as Linux's serial_reg.h has them).
local IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
local IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI, IIR_TIMEOUT, IIR_FIFO =
   0x01, 0x00, 0x02, 0x04, 0x06, 0x0c, 0xc0
local FCR_ENABLE, FCR_CLEAR_RX = 0x01, 0x02
local LCR_DLAB = 0x80
local MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 0x01, 0x02, 0x04, 0x08, 0x10
local LSR_DR, LSR_OE, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x20, 0x40
local MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
local FIFO_SIZE = 16
local TRIGGER_LEVELS = { [0] = 1, 4, 8, 14 }

-- Modem status inputs: from the cable, or in loopback from MCR's own outputs.
local function modem_lines(st)
   if st.mcr & MCR_LOOP ~= 0 then
      local m = st.mcr
      return (m & MCR_RTS ~= 0 and MSR_CTS or 0) | (m & MCR_DTR ~= 0 and MSR_DSR or 0)
         | (m & MCR_OUT1 ~= 0 and MSR_RI or 0) | (m & MCR_OUT2 ~= 0 and MSR_DCD or 0)
   end
   return st.cable
end

-- New modem input lines: their changes become MSR's delta bits (RI on its trailing edge).
local function lines_changed(st, before)
   local now = modem_lines(st)
   local diff = before ~ now
   if diff & MSR_CTS ~= 0 then st.msr_delta = st.msr_delta | 0x01 end
   if diff & MSR_DSR ~= 0 then st.msr_delta = st.msr_delta | 0x02 end
   if before & MSR_RI ~= 0 and now & MSR_RI == 0 then st.msr_delta = st.msr_delta | 0x04 end
   if diff & MSR_DCD ~= 0 then st.msr_delta = st.msr_delta | 0x08 end
end

local function capacity(st) return st.fifo and FIFO_SIZE or 1 end

-- Bytes waiting on the line enter the receiver while it has room (not in loopback: the
-- receiver then hears only the transmitter).
local function refill(st)
   if st.mcr & MCR_LOOP ~= 0 then return end
   while #st.line > 0 and #st.rx < capacity(st) do
      st.rx[#st.rx + 1] = table.remove(st.line, 1)
   end
end

-- The interrupt the chip reports, by priority: line status, received data (or the
-- FIFO's timeout below the trigger level: this model has no clock, it times out at
-- once), THR empty, modem status.
local function interrupt_id(st)
   if st.ier & IER_RLSI ~= 0 and st.lsr_err ~= 0 then return IIR_RLSI end
   if st.ier & IER_RDI ~= 0 and #st.rx > 0 then
      if st.fifo and #st.rx < TRIGGER_LEVELS[st.trigger] then return IIR_TIMEOUT end
      return IIR_RDI
   end
   if st.ier & IER_THRI ~= 0 and st.thre then return IIR_THRI end
   if st.ier & IER_MSI ~= 0 and st.msr_delta ~= 0 then return IIR_MSI end
   return IIR_NO_INT
end

-- After every change: the interrupt line is "some enabled cause pending".
local function update(dev)
   dev:set_level(interrupt_id(dev.state) ~= IIR_NO_INT)
end

local function transmit(dev, byte)
   local st = dev.state
   if st.mcr & MCR_LOOP ~= 0 then
      if #st.rx < capacity(st) then st.rx[#st.rx + 1] = byte else st.lsr_err = st.lsr_err | LSR_OE end
   else
      st.sent[#st.sent + 1] = string.char(byte)
      if st.echo then st.line[#st.line + 1] = byte refill(st) end
   end
   st.thre = true      -- sent at once: THR is empty again
end

-- The chip's reset values; the line, its peer and the cable are outside the card and
-- keep theirs.
local function reset(dev)
   local old = dev.state
   local echo = old.echo
   if echo == nil then echo = opts.echo and true or false end
   dev.state = {
      rx = {}, line = old.line or {}, sent = old.sent or {},
      ier = 0, lcr = 0, mcr = 0, dll = 0x0c, dlm = 0, fifo = false, trigger = 0,
      lsr_err = 0, msr_delta = 0, thre = false,
      cable = old.cable or (MSR_CTS | MSR_DSR | MSR_DCD), echo = echo,
   }
   refill(dev.state)
end

local dev = model.new {
   name = "16550A serial card",
   vendor = 0x1b36, device = 0x0002, subsystem_vendor = 0x1af4, subsystem = 0x1100,
   class = 0x070002, revision = 1, interrupt_pin = 1,
   bars = { {
      index = 0, kind = "io", size = 8,
      registers = {
         { "RBR_THR", 0, width = 1, doc = "receive buffer (read), transmit holding (write); DLL with DLAB",
           read = function(d)
              local st = d.state
              if st.lcr & LCR_DLAB ~= 0 then return st.dll end
              local b = table.remove(st.rx, 1) or 0
              refill(st)
              update(d)
              return b
           end,
           write = function(d, _, v)
              local st = d.state
              if st.lcr & LCR_DLAB ~= 0 then st.dll = v return end
              transmit(d, v)
              update(d)
           end },
         { "IER", 1, width = 1, doc = "interrupt enables (bits 0-3); DLM with DLAB",
           read = function(d)
              local st = d.state
              return st.lcr & LCR_DLAB ~= 0 and st.dlm or st.ier
           end,
           write = function(d, _, v)
              local st = d.state
              if st.lcr & LCR_DLAB ~= 0 then st.dlm = v return end
              -- enabling the THRE interrupt with THR empty raises it again, as the chip does
              if st.ier & IER_THRI == 0 and v & IER_THRI ~= 0 then st.thre = true end
              st.ier = v & 0x0f
              update(d)
           end },
         { "IIR_FCR", 2, width = 1, doc = "interrupt identification (read), FIFO control (write)",
           read = function(d)
              local st = d.state
              local id = interrupt_id(st)
              if id == IIR_THRI then st.thre = false end    -- reading the cause clears it
              update(d)
              return id | (st.fifo and IIR_FIFO or 0)
           end,
           write = function(d, _, v)
              local st = d.state
              local on = v & FCR_ENABLE ~= 0
              if on ~= st.fifo then st.rx = {} end          -- switching mode empties the FIFOs
              st.fifo = on
              if on then
                 if v & FCR_CLEAR_RX ~= 0 then st.rx = {} end
                 st.trigger = v >> 6
              end
              refill(st)
              update(d)
           end },
         { "LCR", 3, width = 1, doc = "line control; bit 7 is DLAB",
           read = function(d) return d.state.lcr end,
           write = function(d, _, v) d.state.lcr = v end },
         { "MCR", 4, width = 1, doc = "modem control: DTR, RTS, OUT1, OUT2, LOOP",
           read = function(d) return d.state.mcr end,
           write = function(d, _, v)
              local st = d.state
              local before = modem_lines(st)
              st.mcr = v & 0x1f
              lines_changed(st, before)
              refill(st)
              update(d)
           end },
         { "LSR", 5, width = 1, access = "RO", doc = "line status; reading clears the error bits",
           read = function(d)
              local st = d.state
              local v = (#st.rx > 0 and LSR_DR or 0) | st.lsr_err | LSR_THRE | LSR_TEMT
              st.lsr_err = 0
              update(d)
              return v
           end },
         { "MSR", 6, width = 1, access = "RO", doc = "modem status; reading clears the delta bits",
           read = function(d)
              local st = d.state
              local v = modem_lines(st) | st.msr_delta
              st.msr_delta = 0
              update(d)
              return v
           end },
         { "SCR", 7, width = 1, doc = "scratch" },
      },
   } },
   reset = reset,
   methods = {
      receive = function(d, bytes)
         assert(type(bytes) == "string", "receive: bytes must be a string")
         local st = d.state
         for i = 1, #bytes do st.line[#st.line + 1] = bytes:byte(i) end
         refill(st)
         update(d)
      end,
      transmitted = function(d)
         local s = table.concat(d.state.sent)
         d.state.sent = {}
         return s
      end,
      set_echo = function(d, on) d.state.echo = on and true or false end,
      set_modem = function(d, lines)
         local st = d.state
         local before = modem_lines(st)
         local function bit(name, mask)
            if lines[name] == nil then return st.cable & mask end
            return lines[name] and mask or 0
         end
         st.cable = bit("cts", MSR_CTS) | bit("dsr", MSR_DSR) | bit("ri", MSR_RI) | bit("dcd", MSR_DCD)
         lines_changed(st, before)
         update(d)
      end,
   },
}

return dev
