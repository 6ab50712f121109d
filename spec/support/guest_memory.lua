-- Guest memory stand-in for the boot loaders' host specs: anything with write(gpa, bytes)
-- and fill(gpa, len, byte), as a VM is, keeping each write as a chunk (a kernel is
-- megabytes), and get(gpa, len) reading back what the writes left (zeros elsewhere).
local M = {}

function M.new(size)
   local m = { chunks = {}, size = size }
   function m:write(gpa, s)
      assert(gpa >= 0 and gpa + #s <= self.size, "write outside RAM")
      self.chunks[#self.chunks + 1] = { gpa, s }
   end
   function m:fill(gpa, len, b) self:write(gpa, string.char(b):rep(len)) end
   function m:get(gpa, len)
      local out = ("\0"):rep(len)
      for _, c in ipairs(self.chunks) do
         local a, s = c[1], c[2]
         local lo, hi = math.max(a, gpa), math.min(a + #s, gpa + len)
         if lo < hi then out = out:sub(1, lo - gpa) .. s:sub(lo - a + 1, hi - a) .. out:sub(hi - gpa + 1) end
      end
      return out
   end
   return m
end

return M
