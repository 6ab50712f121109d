-- bin/vfio-user-serve run by a spec in the background (spec/support/child.lua): its
-- socket in the child's private directory, and for models a control channel
-- (spec/support/user_served.lua) through which srv:eval(code) runs Lua in the server
-- process with `dev` in scope.
local child = require "support.child"
local stat = require "posix.sys.stat"
local fcntl = require "posix.fcntl"
local unistd = require "posix.unistd"
local ppoll = require "posix.poll"
local json = require "dkjson"

local M = {}

M.ROOT = child.ROOT
M.COMMAND = M.ROOT .. "/bin/vfio-user-serve"

---
-- M.start(device, opts) -> server: bin/vfio-user-serve DEVICE (a model file, a
-- recording, a BDF) on a socket in a private directory. opts.model_opts: the
-- --model-opt table; opts.control (models only): serve it through user_served.lua with
-- a control channel; opts.args: more arguments. Waits for the socket.
function M.start(device, opts)
   opts = opts or {}
   local srv = {}
   local c = child.spawn(M.COMMAND, function(dir)
      srv.socket = dir .. "/sock"
      local args = { device, "--socket", srv.socket, "--trace" }
      if opts.control then
         srv.control = dir .. "/ctl"
         assert(stat.mkfifo(srv.control, tonumber("600", 8)))
         assert(stat.mkfifo(srv.control .. ".out", tonumber("600", 8)))
         args = { M.ROOT .. "/spec/support/user_served.lua", "--socket", srv.socket, "--trace",
                  "--model-opt", "model=" .. device, "--model-opt", "control=" .. srv.control }
      end
      for k, v in pairs(opts.model_opts or {}) do
         args[#args + 1] = "--model-opt"
         args[#args + 1] = ("%s=%s"):format(k, tostring(v))
      end
      for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
      return args
   end)
   c.name = "vfio-user-serve"
   srv.child, srv.pid, srv.dir = c, c.pid, c.dir
   if srv.control then
      srv.cmd = assert(fcntl.open(srv.control, fcntl.O_RDWR | fcntl.O_NONBLOCK))
      srv.out = assert(fcntl.open(srv.control .. ".out", fcntl.O_RDWR | fcntl.O_NONBLOCK))
      srv.buf = ""
   end
   child.wait_for(c, "the server's socket " .. srv.socket, function() return stat.stat(srv.socket) end, 10)

   --- srv:eval(code) -> the values code returns in the server process (raises on its error).
   function srv.eval(_, code)
      local line = json.encode(code) .. "\n"
      assert(unistd.write(srv.cmd, line) == #line)
      local deadline = child.now() + 5
      while true do
         local nl = srv.buf:find("\n", 1, true)
         if nl then
            local r = json.decode(srv.buf:sub(1, nl - 1))
            srv.buf = srv.buf:sub(nl + 1)
            if not r.ok then error("in the server: " .. tostring(r.error), 2) end
            return table.unpack(r.values or {}, 1, r.n or 0)
         end
         if child.now() > deadline then error("no answer from the server:\n" .. c.output():sub(-2000), 2) end
         if ppoll.rpoll(srv.out, 100) == 1 then srv.buf = srv.buf .. (unistd.read(srv.out, 65536) or "") end
      end
   end

   --- srv:fds() -> how many fds the server process has open (/proc/PID/fd).
   function srv.fds()
      local n = 0
      for name in require("posix.dirent").files(("/proc/%d/fd"):format(c.pid)) do
         if name ~= "." and name ~= ".." then n = n + 1 end
      end
      return n
   end

   --- srv:stop() -> exit status: SIGTERM, then wait (the child's stop()).
   function srv.stop()
      if srv.cmd then unistd.close(srv.cmd) unistd.close(srv.out) srv.cmd = nil end
      if not c.status() then
         require("posix.signal").kill(c.pid, require("posix.signal").SIGTERM)
         local t = child.now() + 10
         while not c.status() and child.now() < t do child.sleep(0.02) end
      end
      srv.log = srv.log or c.output()
      c.stop()   -- SIGKILL if it did not end; removes the directory
      return c.status()
   end
   function srv.output() return srv.log or c.output() end
   return srv
end

return M
