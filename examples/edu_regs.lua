-- Register description of QEMU's "edu" teaching device (1234:11e8), BAR0, 1 MiB.
-- Layout as documented in QEMU's docs/specs/edu.rst. Use:
--   local regs = require "vfio.regs"
--   local edu = regs.bind(dofile "examples/edu_regs.lua", dev:region(0))
--   edu.id()  --> 0x010000ed
return {
   name = "edu",
   width = 4,
   { "id", 0x00, access = "RO", doc = "0xRRrr00edu: major.minor version and 0xed",
     fields = { magic = { 0, 7 }, minor = { 16, 23 }, major = { 24, 31 } } },
   { "liveness", 0x04, access = "RW", doc = "reads back the bitwise inverse of what was written" },
   { "factorial", 0x08, access = "RW",
     doc = "write n to compute n!; poll status.computing until 0, then read the result here" },
   { "status", 0x20, access = "RW",
     fields = { computing = { 0, 0, doc = "factorial in progress (read-only)" },
                raise_irq = { 7, 7, doc = "raise an interrupt when the factorial is done" } } },
   { "irq_status", 0x24, access = "RO", doc = "pending interrupt bits (0x1 factorial, 0x100 DMA)" },
   { "irq_raise", 0x60, access = "WO", doc = "write a value: sets those irq_status bits and raises the irq" },
   { "irq_ack", 0x64, access = "WO", doc = "write irq_status bits to clear them and lower the irq" },
   -- The DMA registers are 64 bits wide in edu, but an 8-byte access through VFIO's
   -- pread/pwrite path reaches the device as two 4-byte ones, and edu answers the upper half
   -- with all ones. A 4-byte write sets the whole register (zero-extended), so they are
   -- described as their low 32 bits: DMA addresses below 4 GiB.
   { "dma_src", 0x80, access = "RW", doc = "DMA source address (IOVA or 0x40000 + offset)" },
   { "dma_dst", 0x88, access = "RW", doc = "DMA destination address" },
   { "dma_count", 0x90, access = "RW", doc = "DMA transfer length in bytes" },
   { "dma_cmd", 0x98, access = "RW",
     fields = { start = 0, to_ram = { 1, 1, doc = "0: RAM -> device, 1: device -> RAM" },
                raise_irq = { 2, 2, doc = "raise an interrupt when the transfer is done" } } },
}
-- edu's 4 KiB DMA buffer sits at 0x40000 of edu's DMA address space: dma_src/dma_dst take
-- 0x40000 + offset for it. It is not reachable through BAR0 (reads there return all ones).
