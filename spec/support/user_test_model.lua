-- A small device model for the vfio-user server specs: MSI (1 vector), MSI-X (4
-- vectors, table and PBA in BAR2) and INTA, a DMA engine and a 256-byte buffer in BAR0.
--   BAR0 (4 KiB memory): 0x00 ID "USER" (RO); 0x08/0x0c DMA address low/high; 0x10 DMA
--   length; 0x14 DMA command (write 1: buffer -> client memory, 2: client memory ->
--   buffer); 0x18 DMA status (0 done, else the errno); 0x20 raise (write v: interrupt v
--   through dev:raise, MSI-X, MSI or INTx as enabled); 0x24 lower INTx; 0x100..0x1ff the
--   buffer.
--   BAR2 (4 KiB memory): MSI-X table at 0, PBA at 0x800.
local model = require "vfio.user.model"

local BUF, BUFLEN = 0x100, 0x100

local function dma(d, cmd)
   local st = d.state
   local addr, len = st.dma_lo | st.dma_hi << 32, st.dma_len
   if len > BUFLEN then st.status = 22 return end
   local ok, _, errno
   if cmd == 1 then
      ok, _, errno = d:dma_write(addr, st.buf:sub(1, len))
   elseif cmd == 2 then
      local s
      s, _, errno = d:dma_read(addr, len)
      if s then st.buf = s .. st.buf:sub(len + 1) ok = true end
   else
      ok, errno = false, 22
   end
   st.status = ok and 0 or (errno or 5)
   st.dmas = st.dmas + 1
end

local function plain(name, off)
   return { name, off, width = 4,
            read = function(d) return d.state[name] end,
            write = function(d, _, v) d.state[name] = v end }
end

return model.new {
   name = "vfio-user test device",
   vendor = 0x1de5, device = 0x5e7e, class = 0xff0000, revision = 2, interrupt_pin = 1,
   subsystem_vendor = 0x1de5, subsystem = 0x0001,
   bars = {
      { index = 0, kind = "mem32", size = 4096,
        registers = {
           { "ID", 0x00, width = 4, access = "RO", read = function() return 0x52455355 end },
           plain("dma_lo", 0x08), plain("dma_hi", 0x0c), plain("dma_len", 0x10),
           { "CMD", 0x14, width = 4, write = function(d, _, v) dma(d, v) end, read = function() return 0 end },
           { "STATUS", 0x18, width = 4, access = "RO", read = function(d) return d.state.status end },
           { "RAISE", 0x20, width = 4, write = function(d, _, v) d:raise(v) end, read = function() return 0 end },
           { "LOWER", 0x24, width = 4, write = function(d) d:lower() end, read = function() return 0 end },
        },
        read = function(d, off, n)
           if off >= BUF and off + n <= BUF + BUFLEN then return d.state.buf:sub(off - BUF + 1, off - BUF + n) end
           return string.rep("\0", n)
        end,
        write = function(d, off, bytes)
           if off >= BUF and off + #bytes <= BUF + BUFLEN then
              local b = d.state.buf
              d.state.buf = b:sub(1, off - BUF) .. bytes .. b:sub(off - BUF + #bytes + 1)
           end
        end },
      { index = 2, kind = "mem32", size = 4096 },
   },
   capabilities = { { kind = "msi", vectors = 1 },
                    { kind = "msix", table_size = 4, table_bar = 2, table_offset = 0, pba_offset = 0x800 } },
   reset = function(d)
      d.state = { dma_lo = 0, dma_hi = 0, dma_len = 0, status = 0, dmas = 0, buf = string.rep("\0", BUFLEN) }
   end,
}
