-- Small file helpers the specs share: a shell step that must succeed, whole-file writes
-- and reads, and how many fds this process has open.
local M = {}

function M.sh(cmd) assert(os.execute(cmd), cmd) end

function M.writefile(p, s)
   local f = assert(io.open(p, "w")); f:write(s); f:close()
end

-- The file's contents, or nil when it cannot be opened.
function M.readfile(p)
   local f = io.open(p); if not f then return nil end
   local s = f:read("a"); f:close(); return s
end

-- The number of open fds of this process (luaposix).
function M.open_fds()
   local n = 0
   for _, name in ipairs(require("posix.dirent").dir("/proc/self/fd")) do
      if name:match("^%d+$") then n = n + 1 end
   end
   return n
end

return M
