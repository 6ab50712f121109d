-- e1000e's I/O BAR is an indirect window onto its MMIO registers (IOADDR at +0,
-- IODATA at +4). Served here through BAR0's dispatch so everything trapped in BAR0
-- (quirk windows, emulation) also applies when the guest comes in through the ports.
local BAR_IO, BAR_MMIO = 2, 0

return {
   name = "e1000e-io-window",
   description = "route e1000e IOADDR/IODATA through the trap's BAR0 dispatch",
   match = { vendor = 0x8086, device = 0x10d3 },
   windows = { {
      bar = BAR_IO, off = 0, len = 8,
      read = function(q, off, size)
         local a = q.state.ioaddr or 0
         if off == 0 and size == 4 then return a end
         if off == 4 and size == 4 then return q.trap:bar_read(BAR_MMIO, a, 4) or 0xffffffff end
         return 0xffffffff >> (8 * (4 - math.min(size, 4)))
      end,
      write = function(q, off, size, v)
         if off == 0 and size == 4 then
            -- dword aligned, within the 128 KiB register BAR
            q.state.ioaddr = v & 0x1fffc
         elseif off == 4 and size == 4 then
            q.trap:bar_write(BAR_MMIO, q.state.ioaddr or 0, 4, v)
         end
      end,
   } },
}
