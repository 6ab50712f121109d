-- QEMU's edu device aborts the whole QEMU process (hw_error) when a DMA command names
-- a range outside its 4 KiB buffer at 0x40000. A guest must not be able to do that to
-- the host: trap the DMA registers (0x80-0x9f), keep a copy, forward them, and drop a
-- start command whose device-side range is out of bounds.
local BUF, BUFLEN = 0x40000, 0x1000

local function in_buf(addr, n)
   return addr >= BUF and n <= BUFLEN and addr - BUF <= BUFLEN - n
end

local function regs(q)
   q.state.regs = q.state.regs or { [0] = 0, [8] = 0, [16] = 0, [24] = 0 }
   return q.state.regs
end

local function merge(old, off, size, v)
   local sh = 8 * (off & 7)
   local mask = size == 8 and -1 or ((1 << (8 * size)) - 1)
   return (old & ~(mask << sh)) | ((v & mask) << sh)
end

return {
   name = "edu-dma-guard",
   description = "drop edu DMA commands outside the device buffer (edu would abort QEMU)",
   match = { vendor = 0x1234, device = 0x11e8 },
   windows = { {
      bar = 0, off = 0x80, len = 0x20, reads = "device",
      read = function(q, off, size) return q.trap:device_read(0, 0x80 + off, size) end,
      write = function(q, off, size, v)
         local r = regs(q)
         local base = off & ~7
         r[base] = merge(r[base], off, size, v)
         if base == 24 and (r[24] & 1) ~= 0 then
            local src, dst, cnt = r[0], r[8], r[16]
            local to_ram = (r[24] & 2) ~= 0
            if not in_buf(to_ram and src or dst, cnt) then
               q.state.rejected = (q.state.rejected or 0) + 1
               r[24] = r[24] & ~1
               return
            end
         end
         q.trap:device_write(0, 0x80 + off, size, v)
      end,
   } },
}
