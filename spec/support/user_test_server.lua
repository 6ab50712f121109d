-- A test peer for the vfio-user client specs: a minimal vfio-user server in a forked
-- child, serving a vfio.user.model device over core.user_connection. It stands in until
-- the project's own server (vfio.user.serve) is on main; it is no server to ship: one
-- device, the happy path of each request, every refusal the model's own errno.
--
--   local srv = require("support.user_test_server").start(make_device [, opts])
--     make_device   a function returning the served device (run in the child; it may
--                   dofile an example model), or a path to a model file
--     opts.mmap     {[region] = {fd = a vfio.core ramfd (made before the fork, so the
--                   spec reads what the client wrote), sparse = {{offset=, size=}...}}}:
--                   the region is that memfd (its info carries the fd), not the model's
--     opts.dma_log  a path: the child appends "iova size\n" for each DMA_MAP it took
--   srv.path, srv.pid, srv.stop() (SIGKILL the child, reap it), srv.alive()
--   M.fork(body, backlog, name), M.accept(ls): the listening child on its own, for a
--   spec's scripted server (or a bench's bare one)
local core = require "vfio.core"
local unistd = require "posix.unistd"
local psocket = require "posix.sys.socket"
local pwait = require "posix.sys.wait"
local psignal = require "posix.signal"
local ppoll = require "posix.poll"

local M = {}

local REGION_MMAP, REGION_CAPS = 4, 8
local DATA_NONE, DATA_BOOL, DATA_EVENTFD = 1, 2, 4
local ACTION_MASK, ACTION_UNMASK = 8, 16
local UNMAP_ALL = 2
local ENOSYS, EINVAL = 38, 22

-- A trigger (the model's word for an eventfd): one write of 1 per interrupt.
local function trigger(fdobj)
   return { fd = fdobj, signal = function(self)
      unistd.write(self.fd:fileno(), string.pack("<I8", 1))
   end }
end

-- Client memory behind a DMA map's fd, read and written through /proc (a memfd).
local function fd_memory(fdobj, base)
   local f = assert(io.open("/proc/self/fd/" .. fdobj:fileno(), "r+b"))
   fdobj:close()
   return {
      read = function(_, off, n) f:seek("set", base + off); return f:read(n) end,
      write = function(_, off, bytes) f:seek("set", base + off); f:write(bytes); f:flush(); return true end,
   }
end

local function file_rw(fdnum, off, n, bytes)
   local f = assert(io.open("/proc/self/fd/" .. fdnum, "r+b"))
   f:seek("set", off)
   local r
   if bytes then f:write(bytes); r = true else r = f:read(n) end
   f:close()
   return r
end

-- Serve one connection until the client goes. unmask: eventfds the client gave for
-- "unmask" (INTx resampling), watched beside the socket.
local function serve(conn, dev, opts)
   local unmask = {}
   local function answer(m, ok, _, errno, fields, fds)
      if not ok then return conn:error(m, errno or EINVAL) end
      if m.no_reply then return true end
      return conn:reply(m, fields, fds)
   end
   while true do
      local fds = { [conn:fileno()] = { events = { IN = true } } }
      for fd in pairs(unmask) do fds[fd] = { events = { IN = true } } end
      ppoll.poll(fds, -1)
      for fd, u in pairs(unmask) do
         if fds[fd].revents and fds[fd].revents.IN then
            unistd.read(fd, 8)
            dev:set_irqs(u.index, u.start, 1, "unmask")
         end
      end
      if fds[conn:fileno()].revents and next(fds[conn:fileno()].revents) then
         local m, _, rerr, hdr = conn:recv(0)
         if not m then
            if rerr == 11 then goto continue end
            if hdr and not hdr.reply then conn:error(hdr, rerr) end
            if rerr ~= EINVAL and rerr ~= ENOSYS then return end
            goto continue
         end
         local cmd = m.command
         if cmd == "version" then
            conn:set_limits { max_msg_fds = 16, peer_max_msg_fds = 16 }
            conn:reply(m, { major = 0, minor = 0, capabilities = {
               max_msg_fds = 8, max_data_xfer_size = 1 << 20, pgsizes = 4096, max_dma_maps = 65535 } })
         elseif cmd == "device_get_info" then
            local i = dev:info()
            conn:reply(m, { argsz = 16, flags = i.flags, num_regions = i.num_regions, num_irqs = i.num_irqs })
         elseif cmd == "device_get_region_info" then
            local mm = opts.mmap and opts.mmap[m.index]
            local ri, err, errno = dev:region_info(m.index)
            if mm and ri then
               ri = { size = mm.fd:size(), flags = 3 | REGION_MMAP | (mm.sparse and REGION_CAPS or 0) }
            end
            answer(m, ri, err, errno, ri and { flags = ri.flags, index = m.index, size = ri.size,
                                              offset = 0, sparse = mm and mm.sparse, argsz = m.argsz },
                   mm and { mm.fd:fileno() } or nil)
         elseif cmd == "device_get_irq_info" then
            local q, err, errno = dev:irq_info(m.index)
            answer(m, q, err, errno, q and { argsz = 16, flags = q.flags, index = m.index, count = q.count })
         elseif cmd == "device_set_irqs" then
            local action = m.flags & ACTION_MASK ~= 0 and "mask" or m.flags & ACTION_UNMASK ~= 0 and "unmask"
               or "trigger"
            local data, ok, err, errno
            if m.flags & DATA_EVENTFD ~= 0 and action == "unmask" then
               for i, f in ipairs(m.fds) do
                  unmask[f:fileno()] = { index = m.index, start = m.start + i - 1, fd = f }
               end
               ok = true
            else
               if m.flags & DATA_EVENTFD ~= 0 then
                  data = {}
                  for i, f in ipairs(m.fds) do data[i] = trigger(f) end
               elseif m.flags & DATA_BOOL ~= 0 then
                  data = { bool = true, table.unpack(m.bools) }
               end
               if m.index == 0 and action == "trigger" and m.flags & DATA_NONE ~= 0 and m.count == 0 then
                  unmask = {}
               end
               ok, err, errno = dev:set_irqs(m.index, m.start, m.count, action, data)
            end
            answer(m, ok, err, errno, {})
         elseif cmd == "region_read" then
            local mm = opts.mmap and opts.mmap[m.region]
            local data, err, errno
            if mm then data = file_rw(mm.fd:fileno(), m.offset, m.count)
            else data, err, errno = dev:region_read(m.region, m.offset, m.count) end
            answer(m, data, err, errno, { offset = m.offset, region = m.region, data = data })
         elseif cmd == "region_write" then
            local mm = opts.mmap and opts.mmap[m.region]
            local ok, err, errno
            if mm then ok = file_rw(mm.fd:fileno(), m.offset, nil, m.data)
            else ok, err, errno = dev:region_write(m.region, m.offset, m.data) end
            answer(m, ok, err, errno, { offset = m.offset, region = m.region, count = m.count })
         elseif cmd == "dma_map" then
            local mem = m.fds[1] and fd_memory(m.fds[1], m.offset)
            local ok, err, errno = dev:dma_map { iova = m.address, size = m.size, readable = m.flags & 1 ~= 0,
                                                 writable = m.flags & 2 ~= 0, memory = mem }
            if ok and opts.dma_log then
               local f = io.open(opts.dma_log, "a")
               f:write(("%d %d %s\n"):format(m.address, m.size, mem and "fd" or "nofd"))
               f:close()
            end
            answer(m, ok, err, errno, {})
         elseif cmd == "dma_unmap" then
            local r, err, errno
            if m.flags & UNMAP_ALL ~= 0 then r, err, errno = dev:dma_unmap { all = true }
            else r, err, errno = dev:dma_unmap { iova = m.address, size = m.size } end
            answer(m, r, err, errno, { argsz = m.argsz, flags = m.flags, address = m.address, size = m.size })
         elseif cmd == "device_reset" then
            answer(m, dev:reset())
         else
            conn:error(m, ENOSYS)
         end
      end
      ::continue::
   end
end
M.serve = serve

---
-- M.fork(body, backlog, name) -> path, pid: a UNIX socket listening at a new path
-- (before the fork, so a client can connect at once) and a forked child running
-- body(listening_fd); the child exits 0 when body returns, 1 when it raises (with name,
-- the error on stderr). For servers a spec scripts itself, and for bench/.
function M.fork(body, backlog, name)
   local path = os.tmpname()
   os.remove(path)
   local ls = assert(psocket.socket(psocket.AF_UNIX, psocket.SOCK_STREAM, 0))
   assert(psocket.bind(ls, { family = psocket.AF_UNIX, path = path }))
   assert(psocket.listen(ls, backlog))
   local pid = assert(unistd.fork())
   if pid == 0 then
      local ok, err = pcall(body, ls)
      if not ok and name then io.stderr:write(name, ": ", tostring(err), "\n") end
      unistd._exit(ok and 0 or 1)
   end
   unistd.close(ls)
   return path, pid
end

---
-- M.accept(listening_fd) -> the next client as a server-side core.user_connection, or
-- nil when accept fails.
function M.accept(ls)
   local s = psocket.accept(ls)
   if not s then return nil end
   local conn = core.user_connection(s, { role = "server", max_msg_fds = 16 })
   unistd.close(s)
   return conn
end

---
-- Start the child: listening before the fork, so the client can connect at once.
function M.start(make_device, opts)
   opts = opts or {}
   local path, pid = M.fork(function(ls)
      local dev = type(make_device) == "string" and dofile(make_device) or make_device()
      while true do
         local conn = M.accept(ls)
         if not conn then break end
         serve(conn, dev, opts)
         conn:close()
         if not opts.many then break end
      end
   end, 4, "user_test_server")
   local srv = { path = path, pid = pid }
   function srv.alive()
      if srv.reaped then return false end
      local p = pwait.wait(pid, pwait.WNOHANG)
      if p == pid then srv.reaped = true return false end
      return true
   end
   function srv.stop()
      if not srv.reaped then
         psignal.kill(pid, psignal.SIGKILL)
         pwait.wait(pid)
         srv.reaped = true
      end
      os.remove(path)
   end
   return srv
end

return M
