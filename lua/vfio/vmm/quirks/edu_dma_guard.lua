-- QEMU's edu device aborts the whole QEMU process (hw_error) when a DMA runs over a
-- range outside its 4 KiB buffer at 0x40000 (later QEMUs log it and copy out of bounds).
-- A guest must not be able to do that to the host: trap the DMA registers (0x80-0x9f),
-- keep a copy of src, dst and count, forward them, and drop a start command whose
-- device-side range edu would refuse.
--
-- The copy is only worth something if it changes exactly when edu's registers do, so
-- the guard takes edu's access rules from its model (hw/misc/edu.c, QEMU 7.2), and a
-- write edu ignores is dropped here, never forwarded:
--   - edu's MMIO handler only sees 4- and 8-byte accesses, naturally aligned
--     (MemoryRegionOps valid sizes 4 to 8, no unaligned access);
--   - only 0x80 src, 0x88 dst, 0x90 count and 0x98 cmd act, and a write there sets the
--     whole 64-bit register to the value zero-extended: a 4-byte write at 0x80 clears
--     bits 63:32, and 4-byte writes at 0x84, 0x8c, 0x94 and 0x9c do nothing;
--   - while a DMA runs (cmd bit 0, which edu clears when done) every write is ignored;
--   - a cmd write without bit 0 is ignored; one with it stores cmd and starts the DMA.
-- (Through pwrite, Linux 6.1's vfio-pci splits an 8-byte write into two 4-byte ones, so
-- edu keeps only the low half; the copy then differs only in values of 4 GiB and more,
-- which no check passes.)
local BUF, BUFLEN = 0x40000, 0x1000
local SRC, DST, CNT, CMD = 0x00, 0x08, 0x10, 0x18   -- in the window at 0x80
local RUN, TO_RAM = 0x1, 0x2

-- edu_check_range passes: the start inside the buffer, the end after the start (a
-- count of 0 or one that wraps fails) and not past the buffer; all unsigned 64-bit.
local function edu_accepts(addr, cnt)
   local stop = addr + cnt
   return not math.ult(addr, BUF) and math.ult(addr, BUF + BUFLEN)
      and math.ult(addr, stop) and not math.ult(BUF + BUFLEN, stop)
end

-- Registers the guest never set through the guard count as 0, which no check passes.
local function regs(q)
   q.state.regs = q.state.regs or { [SRC] = 0, [DST] = 0, [CNT] = 0, [CMD] = 0 }
   return q.state.regs
end

-- edu clears RUN on its own when a DMA ends, so ask it. A DMA ending just after this
-- read only costs a write edu would have taken; it never lets the copy and edu differ.
local function dma_running(q)
   local cmd = q.trap:device_read(0, 0x80 + CMD, 4)
   return cmd == nil or (cmd & RUN) ~= 0
end

return {
   name = "edu-dma-guard",
   description = "drop edu DMA commands outside the device buffer (edu would abort QEMU)",
   match = { vendor = 0x1234, device = 0x11e8 },
   windows = { {
      bar = 0, off = 0x80, len = 0x20, reads = "device",
      read = function(q, off, size) return q.trap:device_read(0, 0x80 + off, size) end,
      write = function(q, off, size, v)
         if (size ~= 4 and size ~= 8) or off % 8 ~= 0 then return end
         if size == 4 then v = v & 0xffffffff end
         if off == CMD and (v & RUN) == 0 then return end
         if dma_running(q) then return end
         local r = regs(q)
         if off == CMD then
            local addr = (v & TO_RAM) ~= 0 and r[SRC] or r[DST]
            if not edu_accepts(addr, r[CNT]) then
               q.state.rejected = (q.state.rejected or 0) + 1
               return
            end
         end
         -- When the write may not have reached edu, the copy forgets the value.
         r[off] = q.trap:device_write(0, 0x80 + off, size, v) and v or 0
      end,
   } },
}
