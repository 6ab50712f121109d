---
-- An Intel MultiProcessor Specification 1.4 table, as bytes: how a guest without ACPI
-- learns its CPUs, its IOAPIC and how interrupts reach it. Linux finds the floating
-- pointer by scanning 0xf0000-0xfffff (among other places) on 16-byte boundaries.
--
-- Interrupt routing matches KVM's in-kernel irqchip as vfio.core sets it up (GSI n
-- reaches IOAPIC pin n, GSI 0-15 the PICs too: kvm_setup_default_irq_routing): ISA IRQ n
-- is IOAPIC pin n, identity. That includes IRQ 0: KVM's PIT raises GSI 0, so the timer
-- is pin 0 (not pin 2 as on PC chipsets, where ACPI needs an override to say so).
-- @module vfio.vmm.mptable
local address_map = require "vfio.vmm.address_map"

local M = {}

M.ADDR = address_map.MPTABLE_START -- floating pointer; the configuration table follows it
M.LAPIC = address_map.LAPIC_START
M.IOAPIC = address_map.IOAPIC_START
M.IOAPIC_VERSION = 0x11
M.LAPIC_VERSION = 0x14
M.BUS_PCI, M.BUS_ISA = 0, 1
-- a family 6 CPU with an FPU and a local APIC: enough for Linux, which reads CPUID itself
M.CPU_SIGNATURE = 0x600
M.CPU_FEATURES = 0x201

-- entry types and interrupt types
M.PROCESSOR, M.BUS, M.IOAPIC_ENTRY, M.IO_INTERRUPT, M.LOCAL_INTERRUPT = 0, 1, 2, 3, 4
M.INT, M.NMI, M.SMI, M.EXTINT = 0, 1, 2, 3
-- I/O interrupt flags: PCI INTx lines are level-triggered, active low
M.PCI_FLAGS = 0x0f        -- polarity 11 (active low), trigger 11 (level)

local function checksum(s)
   local sum = 0
   for i = 1, #s do sum = sum + s:byte(i) end
   return (-sum) & 0xff
end

-- Replace the byte at offset `off` (0-based) of s with b.
local function put(s, off, b) return s:sub(1, off) .. string.char(b) .. s:sub(off + 2) end

---
-- build{cpus = 1, pci = {{slot=, pin=1..4, ioapic_pin=}}, addr = M.ADDR,
--       cpu_signature=, cpu_features=} -> bytes (floating pointer, then the table), addr.
-- Raises on arguments out of range: they come from the VMM, not the guest.
function M.build(opts)
   opts = opts or {}
   local n = opts.cpus or 1
   assert(math.type(n) == "integer" and n >= 1 and n <= 254, "cpus must be in [1, 254]")
   local addr = opts.addr or M.ADDR
   assert(addr % 16 == 0, "the floating pointer is 16-byte aligned")
   local sig, feat = opts.cpu_signature or M.CPU_SIGNATURE, opts.cpu_features or M.CPU_FEATURES
   local ioapic_id = n -- after the CPUs' APIC IDs 0..n-1
   local entries = {}
   local function add(e) entries[#entries + 1] = e end
   for i = 0, n - 1 do
      -- enabled, and CPU 0 is the bootstrap processor
      add(string.pack("<BBBBI4I4I4I4", M.PROCESSOR, i, M.LAPIC_VERSION, 1 | (i == 0 and 2 or 0),
                      sig, feat, 0, 0))
   end
   add(string.pack("<BBc6", M.BUS, M.BUS_PCI, "PCI   "))
   add(string.pack("<BBc6", M.BUS, M.BUS_ISA, "ISA   "))
   add(string.pack("<BBBBI4", M.IOAPIC_ENTRY, ioapic_id, M.IOAPIC_VERSION, 1, M.IOAPIC))
   for irq = 0, 15 do
      -- flags 0: conforming to the bus, which for ISA is edge-triggered, active high
      add(string.pack("<BBI2BBBB", M.IO_INTERRUPT, M.INT, 0, M.BUS_ISA, irq, ioapic_id, irq))
   end
   for _, p in ipairs(opts.pci or {}) do
      assert(math.type(p.slot) == "integer" and p.slot >= 0 and p.slot < 32, "PCI slot must be in [0, 31]")
      assert(math.type(p.pin) == "integer" and p.pin >= 1 and p.pin <= 4, "PCI pin must be 1..4 (INTA-INTD)")
      assert(math.type(p.ioapic_pin) == "integer" and p.ioapic_pin >= 0 and p.ioapic_pin < 24,
             "ioapic_pin must be in [0, 23]")
      -- the source IRQ of a PCI entry is slot << 2 | pin (INTA = 0)
      add(string.pack("<BBI2BBBB", M.IO_INTERRUPT, M.INT, M.PCI_FLAGS, M.BUS_PCI,
                      p.slot << 2 | (p.pin - 1), ioapic_id, p.ioapic_pin))
   end
   -- the virtual wire every CPU's LAPIC is programmed with (vcpu:set_lapic_lint)
   add(string.pack("<BBI2BBBB", M.LOCAL_INTERRUPT, M.EXTINT, 0, M.BUS_ISA, 0, 0xff, 0))
   add(string.pack("<BBI2BBBB", M.LOCAL_INTERRUPT, M.NMI, 0, M.BUS_ISA, 0, 0xff, 1))
   local body = table.concat(entries)
   local header = string.pack("<c4I2BBc8c12I4I2I2I4I2BB", "PCMP", 44 + #body, 4, 0,
                              "LUAVFIO ", "VMM         ", 0, 0, #entries, M.LAPIC, 0, 0, 0)
   local config = header .. body
   config = put(config, 7, checksum(config))
   -- floating pointer: the table's address, length 1 (16 bytes), revision 1.4,
   -- feature byte 1 = 0 (a table is present), byte 2 = 0 (virtual wire, no IMCR)
   local fp = string.pack("<c4I4BBBBBBBB", "_MP_", addr + 16, 1, 4, 0, 0, 0, 0, 0, 0)
   fp = put(fp, 10, checksum(fp))
   return fp .. config, addr
end

return M
