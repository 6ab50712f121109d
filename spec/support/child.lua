-- A program a spec runs in the background while it drives it (the VMM with its control
-- socket, lab/oracle with QEMU's monitor): a process group of its own, stdin /dev/null,
-- stdout and stderr in a log file the spec reads as it goes, and a private directory for
-- the log and the sockets.
local unistd = require "posix.unistd"
local fcntl = require "posix.fcntl"
local pwait = require "posix.sys.wait"
local psignal = require "posix.signal"
local stat = require "posix.sys.stat"
local dirent = require "posix.dirent"
local ptime = require "posix.time"

local M = {}

--- Seconds on the monotonic clock.
function M.now()
   local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
   return t.tv_sec + t.tv_nsec * 1e-9
end

--- Sleep s seconds (a fraction allowed).
function M.sleep(s)
   ptime.nanosleep { tv_sec = math.floor(s), tv_nsec = math.floor((s % 1) * 1e9) }
end

local function slurp(path)
   local f = io.open(path)
   if not f then return "" end
   local s = f:read("a")
   f:close()
   return s
end

---
-- M.spawn(program, args) -> child: runs program (looked up in PATH unless it has a
-- slash) with args, a list or a function(dir) returning one (dir: the child's private
-- directory, mode 0700, for the sockets it is told to make). child.dir, child.pid,
-- child.status() (nil while it runs, then its exit status; 128 + N when signal N ended
-- it), child.output() (its log so far), child.stop() (SIGTERM to its process group, SIGKILL
-- after 20 s; the directory removed; idempotent).
function M.spawn(program, args)
   local dir = os.tmpname()
   os.remove(dir)
   assert(stat.mkdir(dir, tonumber("700", 8)))
   if type(args) == "function" then args = args(dir) end
   local c = { dir = dir, log = dir .. "/log" }
   local pid = assert(unistd.fork())
   if pid == 0 then
      unistd.setpid("p", 0, 0)
      local out = fcntl.open(c.log, fcntl.O_WRONLY | fcntl.O_CREAT | fcntl.O_TRUNC, tonumber("600", 8))
      local null = fcntl.open("/dev/null", fcntl.O_RDONLY)
      unistd.dup2(null, 0)
      unistd.dup2(out, 1)
      unistd.dup2(out, 2)
      unistd.execp(program, args)
      unistd._exit(127)
   end
   c.pid = pid
   function c.status()
      if c.exit then return c.exit end
      local p, how, code = pwait.wait(pid, pwait.WNOHANG)
      if p == pid then c.exit = how == "exited" and code or 128 + (code or 0) end
      return c.exit
   end
   function c.output() return slurp(c.log) end
   function c.stop()
      if c.stopped then return end
      c.stopped = true
      if not c.status() then
         psignal.killpg(pid, psignal.SIGTERM)
         local t = M.now() + 20
         while not c.status() and M.now() < t do M.sleep(0.1) end
         if not c.status() then
            psignal.killpg(pid, psignal.SIGKILL)
            pwait.wait(pid)
         end
      end
      for name in dirent.files(dir) do
         if name ~= "." and name ~= ".." then os.remove(dir .. "/" .. name) end
      end
      os.remove(dir)
   end
   return c
end

---
-- M.wait_for(child, what, pred, seconds) -> pred()'s first true value, polled every 0.2 s;
-- an error naming `what`, the child's state and the end of its output when it does not
-- come in time or the child ends first.
function M.wait_for(c, what, pred, seconds)
   local t = M.now() + seconds
   while M.now() < t do
      local v = pred()
      if v then return v end
      if c.status() then
         v = pred()   -- what it wrote last
         if v then return v end
         break
      end
      M.sleep(0.2)
   end
   error(("%s: not in %d s (%s %s)\n%s"):format(what, seconds, c.name or "child",
      c.status() and ("exited " .. c.status()) or "running", c.output():sub(-4000)), 2)
end

return M
