---
-- The guest's serial console on the user's terminal: stdin in raw mode, its bytes fed to
-- the UART between run slices, Ctrl-A x to end the run (Ctrl-A Ctrl-A sends Ctrl-A), the
-- terminal's mode restored on close. Nothing happens when stdin is not a terminal.
--   local c = console.open()   -- nil unless stdin is a tty (and luaposix is there)
--   c:pump(uart) -> false once the user asked to quit;  c:close()
-- @module vfio.vmm.console
local M = {}
local Console = {}
Console.__index = Console

local CTRL_A = "\1"

local function stty(args)
   local p = io.popen("stty " .. args .. " < /dev/tty 2>/dev/null")
   local out = p and p:read("a") or ""
   if p then p:close() end
   return out
end

--- Put the terminal in raw mode for the guest's console.
-- @return a console, or nil when stdin is not a terminal or luaposix is missing
function M.open()
   local okp, unistd = pcall(require, "posix.unistd")
   local okpoll, poll = pcall(require, "posix.poll")
   if not okp or not okpoll or unistd.isatty(0) ~= 1 then return nil end
   local saved = stty("-g"):match("%S+")
   if not saved then return nil end
   stty("raw -echo")
   return setmetatable({ unistd = unistd, poll = poll, saved = saved, escape = false }, Console)
end

--- The guest's serial console on the user's terminal (vfio.vmm.console.open).
-- @type Console

---
-- Move what the user typed to the UART; false when Ctrl-A x was typed.
function Console:pump(uart)
   while self.poll.rpoll(0, 0) == 1 do
      local bytes = self.unistd.read(0, 256)
      if not bytes or bytes == "" then return true end
      local out = {}
      for c in bytes:gmatch(".") do
         if self.escape then
            self.escape = false
            if c == "x" or c == "X" then
               if #out > 0 then uart:feed(table.concat(out)) end
               return false
            end
            out[#out + 1] = c == CTRL_A and CTRL_A or nil
         elseif c == CTRL_A then
            self.escape = true
         else
            out[#out + 1] = c
         end
      end
      if #out > 0 then uart:feed(table.concat(out)) end
   end
   return true
end

--- Restore the terminal's mode (idempotent; also `__close` and `__gc`).
function Console:close()
   if self.saved then stty(self.saved) end
   self.saved = nil
end
Console.__close = Console.close
Console.__gc = Console.close

return M
