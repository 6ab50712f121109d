-- examples/vfio-user/pci_idio_16.lua through the served-device interface, driven the way
-- gpio-pci-idio-16 drives the card: outputs written and read back, inputs the script
-- sets seen by the driver, and the change-of-state interrupt latched, reported in the
-- status register the (shared-IRQ) handler checks, and cleared.
local decode = require "vfio.decode"
local served = require "support.served_model"

local EXAMPLE = "examples/vfio-user/pci_idio_16.lua"
local CONFIG, INTX = 7, 0
local OUT0_7, IN0_7, IRQ_CTL, FILTER_CTL, OUT8_15, IN8_15, IRQ_STATUS = 0, 1, 2, 3, 4, 5, 6

local function open() return served.open(EXAMPLE, 2) end
local counter = served.counter

-- What the 6.1 driver's handler asks before claiming the shared interrupt.
local function ours(status) return status & 0x3 ~= 0 and status & 0x4 ~= 0 end

describe("examples/vfio-user/pci_idio_16.lua", function()
   it("has the IDs gpio-pci-idio-16 matches and its registers in an 8-port I/O BAR2", function()
      local dev = open()
      assert(dev:region_write(CONFIG, 0x18, string.pack("<I4", 0xd000)))
      local info = decode.config(assert(dev:region_read(CONFIG, 0, 256)), { bar_sizes = { [2] = 8 } })
      assert.are.same({ 0x494f, 0x0dc8 }, { info.vendor, info.device })
      assert.are.equal(1, #info.bars)
      assert.are.same({ 2, true, 8 }, { info.bars[1].index, info.bars[1].io, info.bars[1].size })
      assert.are.equal(1, info.interrupt_pin)
   end)

   it("takes the driver's probe: interrupt disabled, filters deactivated", function()
      local dev, p = open()
      assert.is_true(dev:filters_active())
      p.o(IRQ_CTL, 0)                 -- devm_idio_16_regmap_register: disable the IRQ first
      p.o(FILTER_CTL, 0)              -- config.filters: deactivate input filters
      assert.is_false(dev:filters_active())
      p.i(FILTER_CTL)
      assert.is_true(dev:filters_active(), "reading offset 3 activates them")
   end)

   it("drives the outputs the driver writes, reads them back and records them", function()
      local dev, p = open()
      p.o(OUT0_7, 0xa5)
      p.o(OUT8_15, 0x3c)
      assert.are.equal(0x3ca5, dev:outputs())
      assert.are.same({ 0xa5, 0x3ca5 }, { p.i(OUT0_7), p.i(OUT8_15) << 8 | p.i(OUT0_7) })
      -- gpio set for line 2 off: read-modify-write of the low byte
      p.o(OUT0_7, p.i(OUT0_7) & ~(1 << 2))
      assert.are.same({ 0x00a5, 0x3ca5, 0x3ca1 }, dev:output_log())
      assert.are.same({}, dev:output_log(), "the log is taken")
   end)

   it("shows the inputs the script sets as GPIO lines 16-31", function()
      local dev, p = open()
      dev:set_input(3, true)
      dev:set_input(12, true)
      assert.are.same({ 0x08, 0x10 }, { p.i(IN0_7), p.i(IN8_15) })
      dev:set_inputs(0x8001)
      assert.are.same({ 0x01, 0x80 }, { p.i(IN0_7), p.i(IN8_15) })
      dev:set_input(0, false)
      assert.are.equal(0x8000, dev:inputs())
   end)

   it("latches a change of an input as an interrupt once enabled, until the driver clears it", function()
      local dev, p = open()
      local t = counter()
      assert(dev:set_irqs(INTX, 0, 1, "trigger", { t }))
      p.o(IRQ_CTL, 0)
      dev:set_input(5, true)
      assert.are.equal(0, t.n, "disabled: not latched")
      assert.are.equal(0, p.i(IRQ_STATUS))
      -- the first unmask: clear, then enable by reading offset 2
      p.o(IN0_7, 0)
      p.i(IRQ_CTL)
      dev:set_input(5, false)
      assert.are.equal(1, t.n)
      local status = p.i(IRQ_STATUS)
      assert.are.equal(0x5, status, "raised, by inputs 0-7")
      assert.is_true(ours(status))
      dev:set_input(9, true)
      assert.are.equal(0x7, p.i(IRQ_STATUS), "then inputs 8-15 too")
      assert.are.equal(1, t.n, "still latched: one edge")
      p.o(IN0_7, 0)                   -- clear interrupt
      assert.are.equal(0, p.i(IRQ_STATUS))
      assert.is_false(ours(p.i(IRQ_STATUS)), "a shared IRQ now is someone else's")
      assert.are.equal(0, string.unpack("<I2", dev:region_read(CONFIG, 0x06, 2)) & 0x8, "INTx deasserted")
      assert(dev:set_irqs(INTX, 0, 1, "unmask"))
      assert.are.equal(1, t.n)
      dev:set_inputs(0)
      assert.are.equal(2, t.n, "the next change raises it again")
      -- all lines masked: the driver disables the IRQ, and the line drops
      p.o(IRQ_CTL, 0)
      assert.are.equal(0, string.unpack("<I2", dev:region_read(CONFIG, 0x06, 2)) & 0x8)
   end)

   it("comes out of reset with outputs off and the interrupt disabled, the inputs as they are", function()
      local dev, p = open()
      p.o(OUT0_7, 0xff)
      p.i(IRQ_CTL)
      dev:set_inputs(0x0101)
      assert(dev:reset())
      assert(dev:region_write(CONFIG, 0x04, string.pack("<I2", 0x0001)))
      assert.are.same({ 0, 0, 0x01, 0x01 }, { p.i(OUT0_7), p.i(IRQ_STATUS), p.i(IN0_7), p.i(IN8_15) })
      dev:set_inputs(0)
      assert.are.equal(0, p.i(IRQ_STATUS), "disabled after reset")
   end)
end)
