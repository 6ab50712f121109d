-- A program a spec runs in the background while it drives it (the VMM with its control
-- socket, lab/oracle with QEMU's monitor): a process group of its own, stdin /dev/null,
-- stdout and stderr in a log file the spec reads as it goes, and a private directory for
-- the log and the sockets. Also the small helpers the specs and their support modules
-- share: the clock, sleep, a file's text, private directories, the tree's root.
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

--- The text of the file at path ("" when it cannot be read).
function M.slurp(path)
   local f = io.open(path)
   if not f then return "" end
   local s = f:read("a")
   f:close()
   return s
end
local slurp = M.slurp

--- The top of the source tree, from this file's own path (spec/support/child.lua).
M.ROOT = debug.getinfo(1, "S").source:gsub("^@", ""):match("^(.*)/spec/support/[^/]+$") or "."

--- A new private directory (mode 0700) under the temporary directory; its path.
function M.private_dir()
   local dir = os.tmpname()
   os.remove(dir)
   assert(stat.mkdir(dir, tonumber("700", 8)))
   return dir
end

--- Remove dir and the files in it (not below: the private directories hold no more).
function M.remove_dir(dir)
   for name in dirent.files(dir) do
      if name ~= "." and name ~= ".." then os.remove(dir .. "/" .. name) end
   end
   os.remove(dir)
end

--- The exit status of the child process pid once it has ended (nil while it runs), or
-- with block, once it ends; 128 + N when signal N ended it. Reaps it: ask once.
function M.reap(pid, block)
   local p, how, code = pwait.wait(pid, not block and pwait.WNOHANG or nil)
   if p == pid then return how == "exited" and code or 128 + (code or 0) end
end

--- End the child pid, leader of its own process group: SIGTERM to the group, up to
-- seconds for status() (the caller's, reaping it) to say it ended, polled every step
-- seconds, then SIGKILL to the group. Its exit status.
function M.terminate(pid, status, seconds, step)
   psignal.killpg(pid, psignal.SIGTERM)
   local t = M.now() + seconds
   while not status() and M.now() < t do M.sleep(step) end
   if status() then return status() end
   psignal.killpg(pid, psignal.SIGKILL)
   return M.reap(pid, true)
end

---
-- M.spawn(program, args) -> child: runs program (looked up in PATH unless it has a
-- slash) with args, a list or a function(dir) returning one (dir: the child's private
-- directory, mode 0700, for the sockets it is told to make). child.dir, child.pid,
-- child.status() (nil while it runs, then its exit status; 128 + N when signal N ended
-- it), child.output() (its log so far), child.stop() (SIGTERM to its process group, SIGKILL
-- after 20 s; the directory removed; idempotent).
function M.spawn(program, args)
   local dir = M.private_dir()
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
      c.exit = c.exit or M.reap(pid)
      return c.exit
   end
   function c.output() return slurp(c.log) end
   function c.stop()
      if c.stopped then return end
      c.stopped = true
      if not c.status() then c.exit = M.terminate(pid, c.status, 20, 0.1) end
      M.remove_dir(dir)
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
