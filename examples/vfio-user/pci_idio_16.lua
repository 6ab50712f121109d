-- ACCES PCI-IDIO-16 (16 isolated inputs, 16 FET outputs), as a vfio-user device model
-- (vfio.user.model).
--
-- Why this device: it is the smallest card Linux drives that has the world outside the
-- computer in it: pins a script sets (the inputs) and pins the driver sets that a script
-- reads back (the outputs), and an interrupt on any change of an input. Its registers
-- show two more habits of real hardware: one offset meaning different things for reads
-- and writes, and a read with a side effect (reading offset 2 enables the interrupt).
-- Unlike the serial card its interrupt is a latch the driver clears, and it is shared
-- (IRQF_SHARED), so the driver asks the status register whether the card raised it.
--
-- Which driver binds: Linux's gpio-pci-idio-16 ("pci-idio-16"), by ID 494f:0dc8, on
-- BAR2 (pcim_iomap_regions(pdev, BIT(2))), 8-bit registers, through the IDIO-16 library
-- (gpio-idio-16.c). 32 GPIO lines: 0-15 the outputs OUT0-15, 16-31 the inputs IIN0-15,
-- which have interrupts (both edges). Registers (gpio-pci-idio-16.c, both the 6.1 driver
-- and the regmap one of 6.4 and later):
--   0  read/write  outputs 0-7          4  read/write  outputs 8-15
--   1  read inputs 0-7, write: clear the interrupt
--   2  read: enable the interrupt, write: disable it
--   3  read: activate input filters, write: deactivate them
--   5  read inputs 8-15                 6  read interrupt status
-- The status register's bit 2 says the card raised the interrupt; the 6.1 driver also
-- wants bit 0 or 1 set (`!(irq_status & 0x3) || !(irq_status & 0x4)` is "not ours"),
-- so this model sets bit 0 for a change on inputs 0-7 and bit 1 for inputs 8-15 (what
-- the real card's low bits mean is not in the driver). A change while the interrupt is
-- disabled is not latched. BAR2 is 8 I/O ports; the card's other BARs (the PCI bridge's)
-- are left out: no driver touches them. The class code is not known from the driver,
-- which matches by ID: 0xff0000 (unassigned) here.
--
-- Use: `local dev = dofile("examples/vfio-user/pci_idio_16.lua")`. The model's own
-- methods: dev:set_input(n, on) (n 0-15), dev:set_inputs(mask16), dev:inputs(),
-- dev:outputs() (the 16 output pins as the driver last wrote them), dev:output_log()
-- (every output word written, oldest first, since the last call), dev:filters_active().
local model = require "vfio.user.model"

local STATUS_IRQ, STATUS_LOW, STATUS_HIGH = 0x4, 0x1, 0x2

local function update(dev)
   local st = dev.state
   dev:set_level(st.irq_enabled and st.status & STATUS_IRQ ~= 0)
end

local function write_outputs(dev, shift, v)
   local st = dev.state
   st.out = st.out & ~(0xff << shift) | v << shift
   st.log[#st.log + 1] = st.out
end

-- Inputs changed from `old` to the current ones: latch the interrupt if it is enabled.
local function inputs_changed(dev, old)
   local st = dev.state
   local diff = old ~ st.inputs
   if diff == 0 or not st.irq_enabled then return end
   st.status = st.status | STATUS_IRQ | (diff & 0xff ~= 0 and STATUS_LOW or 0)
      | (diff & 0xff00 ~= 0 and STATUS_HIGH or 0)
   update(dev)
end

local dev = model.new {
   name = "ACCES PCI-IDIO-16",
   vendor = 0x494f, device = 0x0dc8, class = 0xff0000, interrupt_pin = 1,
   bars = { {
      index = 2, kind = "io", size = 8,
      registers = {
         { "OUT0_7", 0, width = 1, doc = "FET drive outputs 0-7",
           read = function(d) return d.state.out & 0xff end,
           write = function(d, _, v) write_outputs(d, 0, v) end },
         { "IN0_7", 1, width = 1, doc = "isolated inputs 0-7 (read); clear interrupt (write)",
           read = function(d) return d.state.inputs & 0xff end,
           write = function(d)
              d.state.status = 0
              update(d)
           end },
         { "IRQ_CTL", 2, width = 1, doc = "enable interrupt (read); disable interrupt (write)",
           read = function(d)
              d.state.irq_enabled = true
              update(d)
              return 0
           end,
           write = function(d)
              d.state.irq_enabled = false
              update(d)
           end },
         { "FILTER_CTL", 3, width = 1, doc = "activate input filters (read); deactivate (write)",
           read = function(d) d.state.filters = true return 0 end,
           write = function(d) d.state.filters = false end },
         { "OUT8_15", 4, width = 1, doc = "FET drive outputs 8-15",
           read = function(d) return d.state.out >> 8 end,
           write = function(d, _, v) write_outputs(d, 8, v) end },
         { "IN8_15", 5, width = 1, access = "RO", doc = "isolated inputs 8-15",
           read = function(d) return d.state.inputs >> 8 end },
         { "IRQ_STATUS", 6, width = 1, access = "RO",
           doc = "bit 2: interrupt raised; bits 0/1: inputs 0-7/8-15 changed",
           read = function(d) return d.state.status end },
      },
   } },
   -- The card's state at power-on; the inputs are the world's and keep their levels.
   reset = function(d)
      d.state = { out = 0, log = d.state.log or {}, inputs = d.state.inputs or 0, irq_enabled = false,
                  status = 0, filters = true }
   end,
   methods = {
      set_input = function(d, n, on)
         assert(math.type(n) == "integer" and n >= 0 and n <= 15, "set_input: pin 0..15")
         local old = d.state.inputs
         d.state.inputs = on and (old | 1 << n) or (old & ~(1 << n))
         inputs_changed(d, old)
      end,
      set_inputs = function(d, mask)
         assert(math.type(mask) == "integer" and mask >= 0 and mask <= 0xffff, "set_inputs: a 16-bit mask")
         local old = d.state.inputs
         d.state.inputs = mask
         inputs_changed(d, old)
      end,
      inputs = function(d) return d.state.inputs end,
      outputs = function(d) return d.state.out end,
      output_log = function(d)
         local log = d.state.log
         d.state.log = {}
         return log
      end,
      filters_active = function(d) return d.state.filters end,
   },
}

return dev
