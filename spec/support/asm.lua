-- Tiny guests for host specs, assembled by binutils (as, ld) into flat binaries: the
-- code reads as code, and the assembler is independent of what the specs test.
local M = {}

local function sh(cmd)
   local ok = os.execute(cmd .. " >/dev/null 2>&1")
   return ok
end

-- assemble(source, org) -> bytes, or nil, message (no binutils, or the source is bad).
-- source is GNU as syntax; start it with .code16 or .code32.
function M.assemble(source, org)
   local base = os.tmpname()
   local f = assert(io.open(base .. ".s", "w"))
   f:write(".globl _start\n_start:\n", source, "\n")
   f:close()
   local ok = sh(("as --32 -o %s.o %s.s"):format(base, base)) and
      sh(("ld -m elf_i386 -Ttext=0x%x --oformat binary -o %s.bin %s.o"):format(org, base, base))
   local bin
   if ok then
      local b = io.open(base .. ".bin", "rb")
      bin = b and b:read("a")
      if b then b:close() end
   end
   for _, ext in ipairs { "", ".s", ".o", ".bin" } do os.remove(base .. ext) end
   if not bin then return nil, "as/ld (binutils) could not assemble the guest" end
   return bin
end

return M
