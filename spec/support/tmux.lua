-- A terminal for specs of interactive programs: a tmux session on its own server socket;
-- keys go in with send-keys, the screen comes back with capture-pane.
--   local t = require("support.tmux").new("sock", "session")
--   t:start(cmd)  t:keys("-l text")  t:screen()  t:wait_for(pattern, seconds)  t:kill()
local system = require "system"

local M = {}
local T = {}
T.__index = T

-- output, true if it exited 0
function M.sh(cmd)
   local out, _, ok = require("support.shell").run(cmd)
   return out, ok
end

-- a shell word for s
function M.quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

function M.new(sock, session) return setmetatable({ sock = sock, session = session }, T) end

function T:cmd(args) return M.sh("tmux -L " .. self.sock .. " " .. args) end

-- A new session (the old server killed) running cmd in a 200x50 window.
function T:start(cmd)
   self:cmd("kill-server")
   local _, ok = self:cmd(("new-session -d -s %s -x 200 -y 50 %s"):format(self.session, M.quote(cmd)))
   assert(ok, "tmux did not start")
end

function T:keys(args) return self:cmd("send-keys -t " .. self.session .. " " .. args) end

function T:screen() return (self:cmd("capture-pane -p -t " .. self.session .. " -S -1000")) end

-- Wait until the screen matches pattern (a Lua pattern); raises with the screen on timeout.
function T:wait_for(pattern, timeout)
   local deadline = system.monotime() + (timeout or 60)
   local s
   repeat
      s = self:screen()
      if s:find(pattern) then return s end
      system.sleep(0.2)
   until system.monotime() > deadline
   error(("timed out waiting for %q; screen:\n%s"):format(pattern, s), 2)
end

function T:kill() self:cmd("kill-server") end

return M
