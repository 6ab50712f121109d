---
-- The listening UNIX sockets of the project's servers (the VMM's control socket,
-- vfio.vmm.control; the vfio-user server, vfio.user.server): made one way, mode 0600 from
-- the moment it exists, non-blocking and close-on-exec. Needs luaposix.
-- @module vfio.unix_socket
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local stat = require "posix.sys.stat"
local fcntl = require "posix.fcntl"
local psignal = require "posix.signal"
local fail = require("vfio.errors").fail

local M = {}

--- Make fd non-blocking and close-on-exec (a listening socket, or a client it accepted).
-- @tparam int fd the descriptor
function M.nonblock(fd)
   local fl = fcntl.fcntl(fd, fcntl.F_GETFL)
   if fl then fcntl.fcntl(fd, fcntl.F_SETFL, fl | fcntl.O_NONBLOCK) end
   fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
end

--- A stream socket listening at path, mode 0600 (only its owner and root may connect),
-- non-blocking. SIGPIPE is ignored from then on: a write to a peer that has gone fails
-- with EPIPE instead of killing the process. The caller has made sure nothing it must
-- keep is at path.
-- @tparam string path the socket's path
-- @tparam int backlog listen(2)'s backlog
-- @tparam string label what the socket is, for messages ("control socket")
-- @treturn int the fd, or `nil, message, errno` (the message "LABEL PATH: bind: why")
function M.listen(path, backlog, label)
   local fd, err, errno = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
   if not fd then return fail(errno, "%s %s: socket: %s", label, path, tostring(err)) end
   M.nonblock(fd)
   -- 0600 from the start: between bind and chmod nobody else may connect
   local old = stat.umask(tonumber("177", 8))
   local ok
   ok, err, errno = socket.bind(fd, { family = socket.AF_UNIX, path = path })
   stat.umask(old)
   if not ok then
      unistd.close(fd)
      return fail(errno, "%s %s: bind: %s", label, path, tostring(err))
   end
   stat.chmod(path, tonumber("600", 8))
   ok, err, errno = socket.listen(fd, backlog)
   if not ok then
      unistd.close(fd)
      unistd.unlink(path)
      return fail(errno, "%s %s: listen: %s", label, path, tostring(err))
   end
   psignal.signal(psignal.SIGPIPE, psignal.SIG_IGN)
   return fd
end

return M
