-- Run a shell command for a spec or a benchmark: its output (stdout and stderr) and exit.
local M = {}

-- M.run(cmd) -> output, exit code, true if it exited 0
function M.run(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local ok, _, code = p:close()
   return out, code, ok == true
end

return M
