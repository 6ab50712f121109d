---
-- A vfio-user server: one served device (vfio.user.model, a recording or a kernel VFIO
-- device through vfio.user.trapped) on a UNIX socket, for a VMM's vfio-user client
-- (QEMU's `-device vfio-user-pci`).
--
--     local server = require "vfio.user.server"
--     server.serve("/run/dev.sock", dev)                 -- until SIGTERM or SIGINT
--
-- or, to drive the loop yourself: `local s = assert(server.listen(path, dev, opts))`,
-- then `s:step(ms)` (one poll round) or `s:run()`, and `s:close()`.
--
-- What it does:
-- * The socket is made 0600 (umask before bind) and every peer's credentials
--   (SO_PEERCRED) must name the server's owner (its effective uid, or opts.owner) or
--   root; anyone else is closed at once. One client is served at a time, until it
--   disconnects; the next waits in the listen backlog. A client that leaves (or is
--   dropped for breaking the stream) has its interrupts turned off, its DMA ranges
--   unmapped, its fds closed, and the device is reset as VFIO resets a device whose
--   file is closed; then the next client (a VMM restarted) is accepted.
-- * VERSION first (major 0), answered with this end's limits (max_msg_fds,
--   max_data_xfer_size, pgsizes 4096, max_dma_maps); a request before it is refused
--   (EINVAL), a major other than 0 too (ENOTSUP, and the client is dropped).
-- * Every other command QEMU's client sends is dispatched to the served device (see
--   lua/vfio/user/README.md for its interface). Nothing the peer sends raises: a
--   message the protocol layer refuses, a device refusal and a device hook that raised
--   are error replies with the errno (EIO for a raise). A request flagged NO_REPLY (a
--   posted REGION_WRITE) gets no reply, not even an error.
-- * SET_IRQS: the client's eventfds become the device's triggers (objects with
--   `:signal()`, which writes the eventfd, and `:fileno()`). An INTx unmask eventfd is
--   watched by the server, which serves what the client sent before it and then calls
--   `dev:set_irqs(0, 0, 1, "unmask")`, a kernel device's too: a guest lowers the line
--   with a posted write, then EOIs, and the unmask must not pass that write.
-- * DMA_MAP with an fd: the fd's pages are mapped MAP_SHARED (read-only unless the map
--   is writable), and the device gets `range.memory` (read/write on the mapping) and
--   `range.buffer` (the vfio.dmabuf, which a kernel device maps into its IOMMU). A
--   memfd not sealed against shrinking (F_SEAL_SHRINK) could be cut under the mapping:
--   for a device that reads memory itself (a model) such a map is served through
--   messages instead. DMA_MAP without an fd: `range.memory` sends DMA_READ/DMA_WRITE
--   requests to the client and waits for the replies (opts.dma_timeout ms), serving the
--   client's own requests meanwhile; `range.buffer` is nil. DMA_UNMAP (and unmap-all)
--   go to the device first, then the mappings are released.
-- * The loop is poll(2): the listener or the client, watched unmask eventfds, and the
--   device's own fds (`dev:poll_fds()` -> list of fds or objects with `fileno()`,
--   `dev:on_ready(fd)` called when one is readable) and ticks (`dev.tick_ms` and
--   `dev:tick()`), so a model's interrupts go out while the client is idle.
-- * `run()` stops on SIGTERM or SIGINT (opts.signals = false leaves signals alone):
--   it stops accepting, drops the client as above, closes the listener and removes the
--   socket file.
-- @module vfio.user.server
local core = require "vfio.core"
local unix_socket = require "vfio.unix_socket"
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local ppoll = require "posix.poll"
local psignal = require "posix.signal"
local perrno = require "posix.errno"
local ptime = require "posix.time"

local M = {}

local EINVAL, ENOTSUP, EIO, EBUSY, ETIMEDOUT, ENOSPC =
   perrno.EINVAL, perrno.ENOTSUP, perrno.EIO, perrno.EBUSY, perrno.ETIMEDOUT, perrno.ENOSPC

--- What this server advertises and holds the client to, unless opts say otherwise.
M.DEFAULTS = {
   max_msg_fds = 16,              -- QEMU sends SET_IRQS eventfds in chunks of this many
   max_data_xfer_size = 1 << 20,  -- the protocol's default, and the models' largest access
   max_dma_maps = 65535,
   pgsizes = 4096,
   dma_timeout = 5000,            -- ms a DMA_READ/DMA_WRITE may wait for its reply
   max_nesting = 4,               -- requests served while a DMA waits, one inside another
}

-- SET_IRQS flags (VFIO_IRQ_SET_*) the server reads: DATA_NONE (1) and ACTION_MASK (8) are
-- what is left.
local DATA_BOOL, DATA_EVENTFD = 2, 4
local ACTION_UNMASK, ACTION_TRIGGER = 16, 32
local IRQ_NORESIZE = 8                  -- VFIO_IRQ_INFO_NORESIZE
local PAGE = core.PAGE_SIZE or 4096

local function now_ms()
   local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
   return t.tv_sec * 1000 + t.tv_nsec // 1000000
end

local fail = require("vfio.errors").fail

local function ult(a, b) return math.ult(a, b) end

-- A client's eventfd as a device trigger: signal() adds 1 to its counter.
local Trigger = {}
Trigger.__index = Trigger
Trigger.__name = "vfio.user.trigger"
local ONE = string.pack("<I8", 1)
function Trigger:signal()
   if self.fd:closed() then return false end
   unistd.write(self.fd:fileno(), ONE)   -- EAGAIN: the counter is full, already pending
   return true
end
function Trigger:fileno() return self.fd:fileno() end
function Trigger:close() self.fd:close() end
function Trigger:__tostring() return "vfio.user.trigger (" .. tostring(self.fd) .. ")" end

local function trigger(fdobj) return setmetatable({ fd = fdobj }, Trigger) end

-- Read an eventfd's counter (the unmask eventfd): true when it had fired.
local function drain(fd)
   local s = unistd.read(fd, 8)
   return s ~= nil and #s == 8
end

---------------------------------------------------------------- the server

local Server = {}
Server.__index = Server
Server.__name = "vfio.user.server"

local function log(self, f, ...)
   if self.trace then self.trace(f:format(...)) end
end

local nonblock = unix_socket.nonblock

---
-- Listen on a UNIX socket for vfio-user clients of `device`.
-- @tparam string path the socket's path (must not exist)
-- @tparam table device a served device (vfio.user.model, vfio.user.trapped)
-- @tparam[opt] table opts `owner` (uid allowed besides root; default the effective
-- uid), `max_msg_fds`, `max_data_xfer_size`, `max_dma_maps`, `dma_timeout` (ms),
-- `trust_client` (hand the client the mmap fds a device offers for its BARs),
-- `reset_on_disconnect` (default true), `trace` (a function taking one line per event),
-- `signals` (false: `run` leaves SIGTERM/SIGINT alone), `once` (`run` returns when the
-- first client leaves)
-- @return a server, or `nil, message, errno`
function M.listen(path, device, opts)
   opts = opts or {}
   if type(path) ~= "string" or path == "" then error("vfio.user.listen: path must be a string", 2) end
   if type(device) ~= "table" or type(device.region_read) ~= "function" then
      error("vfio.user.listen: device must be a served device (vfio.user.model, vfio.user.trapped)", 2)
   end
   local limits = {}
   for k, v in pairs(M.DEFAULTS) do limits[k] = opts[k] or v end
   local ranges = { max_msg_fds = { 1, 64 }, max_data_xfer_size = { 4096, 64 << 20 },
                    max_dma_maps = { 1, 1 << 30 }, dma_timeout = { 1, 3600000 }, max_nesting = { 0, 64 } }
   for k, r in pairs(ranges) do
      local v = limits[k]
      if math.type(v) ~= "integer" or v < r[1] or v > r[2] then
         error(("vfio.user.listen: opts.%s must be an integer in [%d, %d]"):format(k, r[1], r[2]), 2)
      end
   end
   -- 0600, non-blocking; SIGPIPE ignored: a peer gone is EPIPE, not death
   local fd, err, errno = unix_socket.listen(path, 4, "vfio-user server")
   if not fd then return nil, err, errno end
   return setmetatable({
      path = path, fd = fd, device = device, opts = opts, limits = limits,
      owner = opts.owner or unistd.geteuid(), trace = opts.trace,
      stats = { accepted = 0, refused = 0, clients = 0, requests = 0, errors = 0,
                posted_errors = 0, dropped = 0, dma_requests = 0, interrupts_unmasked = 0 },
      last_tick = now_ms(),
   }, Server)
end

---
-- Listen, serve until SIGTERM or SIGINT (or opts.once: the first client's departure),
-- clean up. opts as for `listen`.
-- @tparam string path the socket path
-- @tparam table device the served device
-- @tparam[opt] table opts
-- @return true, or `nil, message, errno`
function M.serve(path, device, opts)
   local s, err, errno = M.listen(path, device, opts)
   if not s then return nil, err, errno end
   return s:run()
end

--- A listening vfio-user server (`listen`): `step`, `run`, `stop`, `close`; its `stats`
-- count what it served and refused.
-- @type Server

---------------------------------------------------------------- a client's state

local function close_fds(list)
   for _, f in ipairs(list or {}) do
      if type(f) == "userdata" or type(f) == "table" then f:close() end
   end
end

-- The client's fds for interrupt index `index`, vectors start..start+#new-1, replaced.
local function keep_triggers(c, index, start, new)
   local t = c.irqs[index] or {}
   c.irqs[index] = t
   for i = 1, #new do
      local old = t[start + i - 1]
      if old then old:close() end
      t[start + i - 1] = new[i] or nil
   end
end

local function drop_triggers(c, index)
   for _, trig in pairs(c.irqs[index] or {}) do trig:close() end
   c.irqs[index] = nil
end

-- Forget the server's mappings inside [iova, iova + size) (all of them when all).
local function release_maps(c, iova, size, all)
   local last = iova and iova + size - 1
   for i = #c.maps, 1, -1 do
      local m = c.maps[i]
      if all or (not ult(m.iova, iova) and not ult(last, m.iova + m.size - 1)) then
         table.remove(c.maps, i)
         if m.buffer then m.buffer:close() end   -- still IOMMU-mapped: freed when unmapped
      end
   end
end

-- Run a device method for a peer's request; a raise is EIO (counted, logged).
local function call(self, what, fn, ...)
   local ok, a, b, c = pcall(fn, self.device, ...)
   if ok then return a, b, c end
   self.stats.errors = self.stats.errors + 1
   log(self, "device error in %s: %s", what, tostring(a))
   return fail(EIO, "%s: device error: %s", what, tostring(a))
end

local function has(dev, name) return type(dev[name]) == "function" end

-- A kernel device whose MSI or MSI-X cannot grow while enabled (VFIO_IRQ_INFO_NORESIZE:
-- kernels before 6.5 fix the vector count when the index is enabled): a client sends
-- a long vector list in several SET_IRQS (max_msg_fds eventfds a message), and the
-- kernel refuses the second. Such a set is carried out by turning the index off and on
-- again with every vector the client has given, as QEMU's vfio-pci does for such a
-- device. Only for a range the device has (the first refusal was not for that).
local function set_triggers_resized(self, c, m, trigs)
   local dev = self.device
   local info = call(self, "SET_IRQS", dev.irq_info, m.index)
   if not info or (info.flags or 0) & IRQ_NORESIZE == 0 or m.start + m.count > (info.count or 0) then
      return nil
   end
   local have = c.irqs[m.index] or {}
   local n = m.start + m.count
   for i in pairs(have) do if i + 1 > n then n = i + 1 end end
   local all = {}
   for i = 0, n - 1 do
      local j = i - m.start
      if j >= 0 and j < m.count then all[i + 1] = trigs[j + 1] else all[i + 1] = have[i] or false end
   end
   local ok, err, errno = call(self, "SET_IRQS", dev.set_irqs, m.index, 0, 0, "trigger", nil)
   if not ok then return nil, err, errno end
   log(self, "SET_IRQS %d: vectors %d..%d added by turning the index off and on with %d vector(s)"
       .. " (the device cannot resize)", m.index, m.start, n - 1, n)
   return call(self, "SET_IRQS", dev.set_irqs, m.index, 0, n, "trigger", all)
end

-- Everything the client gave the device, taken back; the device reset as VFIO does
-- when the last user of a device closes it.
local function drop_client(self, why)
   local c = self.client
   if not c then return end
   self.client = nil
   self.pollset = nil
   log(self, "client (pid %s) gone: %s (%d requests, %d DMA messages)", tostring(c.cred and c.cred.pid), why,
       self.stats.requests, self.stats.dma_requests)
   local dev = self.device
   -- every index the client touched: a kernel device holds the client's eventfds itself
   for index in pairs(c.touched) do
      call(self, "disconnect: interrupts off", dev.set_irqs, index, 0, 0, "trigger", nil)
      drop_triggers(c, index)
   end
   for _, u in pairs(c.unmask) do u:close() end
   if #c.maps > 0 then call(self, "disconnect: DMA unmap", dev.dma_unmap, { all = true }) end
   release_maps(c, nil, nil, true)
   if self.opts.reset_on_disconnect ~= false and has(dev, "reset") then
      call(self, "disconnect: reset", dev.reset)
   end
   if has(dev, "disconnected") then call(self, "disconnect", dev.disconnected) end
   c.conn:close()
   if why ~= "gone" and why ~= "closed" and why ~= "stopped" then
      self.stats.dropped = self.stats.dropped + 1
   end
end

local function accept(self)
   local fd = socket.accept(self.fd)
   if not fd then return end
   local cred, cerr = core.peercred(fd)
   if not cred or (cred.uid ~= self.owner and cred.uid ~= 0) then
      self.stats.refused = self.stats.refused + 1
      log(self, "refused a peer: %s", cred and ("uid %d is neither uid %d nor root"):format(cred.uid, self.owner)
         or tostring(cerr))
      unistd.close(fd)
      return
   end
   -- non-blocking: a client that stops reading makes a send give up (ETIMEDOUT after
   -- 10 s, then it is dropped) instead of holding the server and its SIGTERM for ever
   nonblock(fd)
   local L = self.limits
   local conn, err = core.user_connection(fd, {
      role = "server", max_msg_fds = L.max_msg_fds, max_data_xfer_size = L.max_data_xfer_size,
      -- until VERSION says more: the protocol's defaults
      peer_max_msg_fds = 1, peer_max_data_xfer_size = 1 << 20 })
   unistd.close(fd)   -- the connection holds its own duplicate
   if not conn then
      log(self, "connection: %s", tostring(err))
      return
   end
   self.stats.accepted = self.stats.accepted + 1
   self.stats.clients = self.stats.clients + 1
   self.client = { conn = conn, cred = cred, versioned = false, irqs = {}, unmask = {}, touched = {},
                   maps = {}, nesting = 0 }
   log(self, "client connected (pid %d uid %d)", cred.pid, cred.uid)
   if has(self.device, "connected") then call(self, "connect", self.device.connected, cred) end
end

---------------------------------------------------------------- DMA through messages

local dispatch   -- a request, served (below); a DMA wait serves the client's meanwhile

-- Wait for the reply to request `id`, serving the client's requests meanwhile.
local function wait_reply(self, c, id, what)
   local deadline = now_ms() + self.limits.dma_timeout
   while self.client == c do
      local left = deadline - now_ms()
      if left <= 0 then break end
      local m, err, errno, hdr = c.conn:recv(left)
      if m then
         if m.reply and m.id == id then
            if m.error then return fail(m.error, "%s: the client answered errno %d", what, m.error) end
            return m
         elseif not m.reply then
            if c.nesting >= self.limits.max_nesting then
               if not m.no_reply then c.conn:error(m, EBUSY) end
            else
               c.nesting = c.nesting + 1
               dispatch(self, c, m)
               c.nesting = c.nesting - 1
            end
         end   -- a stale reply (to a request that timed out): dropped
      elseif errno == ETIMEDOUT or errno == perrno.EAGAIN then
         break
      elseif hdr and errno ~= perrno.EMSGSIZE then
         if not hdr.reply and not hdr.no_reply then c.conn:error(hdr, errno) end
      else
         drop_client(self, tostring(err))
         return fail(EIO, "%s: the client is gone (%s)", what, tostring(err))
      end
   end
   if self.client ~= c then return fail(EIO, "%s: the client is gone", what) end
   return fail(ETIMEDOUT, "%s: no reply from the client in %d ms", what, self.limits.dma_timeout)
end

-- The client's memory at [iova, iova + size) through DMA_READ/DMA_WRITE messages.
local function message_memory(self, c, iova, size)
   local function chunk() return math.max(1, math.min(c.peer_xfer, self.limits.max_data_xfer_size)) end
   return {
      read = function(_, off, n)
         if off < 0 or n < 0 or off > size or n > size - off then
            return fail(EINVAL, "DMA read of %d bytes at +0x%x outside 0x%x bytes", n, off, size)
         end
         local parts, at = {}, 0
         while at < n do
            local k = math.min(chunk(), n - at)
            if self.client ~= c then return fail(EIO, "DMA read: the client is gone") end
            local id, err, errno = c.conn:request("dma_read", { address = iova + off + at, count = k })
            if not id then return nil, err, errno end
            self.stats.dma_requests = self.stats.dma_requests + 1
            local r
            r, err, errno = wait_reply(self, c, id, "DMA_READ")
            if not r then return nil, err, errno end
            if type(r.data) ~= "string" or #r.data ~= k then
               return fail(EIO, "DMA_READ: the client answered %d bytes for %d", r.data and #r.data or 0, k)
            end
            parts[#parts + 1] = r.data
            at = at + k
         end
         return table.concat(parts)
      end,
      write = function(_, off, bytes)
         local n = #bytes
         if off < 0 or off > size or n > size - off then
            return fail(EINVAL, "DMA write of %d bytes at +0x%x outside 0x%x bytes", n, off, size)
         end
         local at = 0
         while at < n do
            local k = math.min(chunk(), n - at)
            if self.client ~= c then return fail(EIO, "DMA write: the client is gone") end
            local id, err, errno = c.conn:request("dma_write", { address = iova + off + at,
                                                                 data = bytes:sub(at + 1, at + k) })
            if not id then return nil, err, errno end
            self.stats.dma_requests = self.stats.dma_requests + 1
            local r
            r, err, errno = wait_reply(self, c, id, "DMA_WRITE")
            if not r then return nil, err, errno end
            at = at + k
         end
         return true
      end,
   }
end

-- A mapping of the client's fd as memory.
local function buffer_memory(buf, size)
   return {
      read = function(_, off, n)
         if off < 0 or n < 0 or off > size or n > size - off then
            return fail(EINVAL, "DMA read of %d bytes at +0x%x outside 0x%x bytes", n, off, size)
         end
         return buf:read(off, n)
      end,
      write = function(_, off, bytes)
         if off < 0 or off > size or #bytes > size - off then
            return fail(EINVAL, "DMA write of %d bytes at +0x%x outside 0x%x bytes", #bytes, off, size)
         end
         local ok, err = pcall(buf.write, buf, off, bytes)
         if not ok then return fail(perrno.EFAULT, "DMA write: %s", tostring(err)) end
         return true
      end,
   }
end

---------------------------------------------------------------- commands

local H = {}

local function caps_of(self)
   local L = self.limits
   return { max_msg_fds = L.max_msg_fds, max_data_xfer_size = L.max_data_xfer_size,
            pgsizes = L.pgsizes, max_dma_maps = L.max_dma_maps }
end

function H.version(self, c, m)
   if c.versioned then return fail(EINVAL, "VERSION: already negotiated") end
   if m.major ~= 0 then
      c.bad_version = true
      return fail(ENOTSUP, "VERSION: major %d (this server speaks 0)", m.major)
   end
   local caps = m.caps or {}
   c.peer_fds = math.min(caps.max_msg_fds or 1, 64)
   c.peer_xfer = math.min(caps.max_data_xfer_size or (1 << 20), 64 << 20)
   c.conn:set_limits { peer_max_msg_fds = c.peer_fds, peer_max_data_xfer_size = c.peer_xfer }
   c.versioned = true
   return { major = 0, minor = 0, caps = caps_of(self) }
end

function H.device_get_info(self, _, _)
   local info, err, errno = call(self, "DEVICE_GET_INFO", self.device.info)
   if not info then return nil, err, errno end
   return { argsz = 16, flags = info.flags or 0, num_regions = info.num_regions or 0,
            num_irqs = info.num_irqs or 0 }
end

function H.device_get_region_info(self, _, m)
   local r, err, errno = call(self, "GET_REGION_INFO", self.device.region_info, m.index)
   if not r then return nil, err, errno end
   local out = { argsz = 32, flags = (r.flags or 0) & ~4, index = m.index, size = r.size or 0, offset = 0 }
   -- an fd to map only for a client the server trusts (opts.trust_client): the client
   -- then reaches those pages of the device without the server, or the trap core, seeing it
   if type(r.mmap) == "table" and self.opts.trust_client then
      out.flags = out.flags | 4
      out.offset = r.mmap.offset
      out.sparse = r.mmap.sparse
      log(self, "GET_REGION_INFO %d: the client may map %d area(s) of it", m.index, #(r.mmap.sparse or {}))
      local fd = r.mmap.fd
      if math.type(fd) ~= "integer" then fd = fd:fileno() end
      return out, nil, nil, { fd }
   end
   return out
end

function H.device_get_irq_info(self, _, m)
   local r, err, errno = call(self, "GET_IRQ_INFO", self.device.irq_info, m.index)
   if not r then return nil, err, errno end
   return { argsz = 16, flags = r.flags or 0, index = m.index, count = r.count or 0 }
end

function H.region_read(self, _, m)
   local data, err, errno = call(self, "REGION_READ", self.device.region_read, m.region, m.offset, m.count)
   if not data then return nil, err, errno end
   if type(data) ~= "string" or #data ~= m.count then
      return fail(EIO, "REGION_READ: the device answered %s bytes for %d",
         type(data) == "string" and #data or type(data), m.count)
   end
   return { offset = m.offset, region = m.region, data = data }
end

function H.region_write(self, _, m)
   local ok, err, errno = call(self, "REGION_WRITE", self.device.region_write, m.region, m.offset, m.data)
   if not ok then return nil, err, errno end
   return { offset = m.offset, region = m.region, count = m.count }
end

function H.region_write_multi(self, _, m)
   for i, w in ipairs(m.writes or {}) do
      local ok, err, errno = call(self, "REGION_WRITE_MULTI", self.device.region_write, w.region, w.offset, w.data)
      if not ok then return nil, ("write %d: %s"):format(i, tostring(err)), errno end
   end
   return { count = m.count }
end

function H.device_get_region_io_fds(_, _, _)
   return fail(ENOTSUP, "GET_REGION_IO_FDS: this server hands out no ioeventfds")
end

function H.device_reset(self, c, _)
   -- the kernel keeps interrupts wired and DMA mapped across a reset; so does the device
   local ok, err, errno = call(self, "DEVICE_RESET", self.device.reset)
   if not ok then return nil, err, errno end
   for _, u in pairs(c.unmask) do drain(u:fileno()) end
   return {}
end

function H.device_set_irqs(self, c, m)
   local fl = m.flags
   if math.type(m.index) == "integer" and m.index >= 0 and m.index < 16 then c.touched[m.index] = true end
   local action = fl & ACTION_TRIGGER ~= 0 and "trigger" or fl & ACTION_UNMASK ~= 0 and "unmask" or "mask"
   local dev = self.device
   if fl & DATA_EVENTFD ~= 0 then
      if action == "unmask" then
         -- the resample eventfd: watched here, an unmask when it fires, even for a kernel
         -- device that could take it itself: the guest's write that lowers the line comes
         -- as a posted REGION_WRITE before its EOI, and the kernel would unmask before the
         -- server had read it (a second interrupt for one); step() serves the socket first
         if m.count ~= 1 or m.index ~= 0 then
            close_fds(m.fds)
            return fail(EINVAL, "SET_IRQS: an unmask eventfd is for INTx (index 0, one vector)")
         end
         local ok, err, errno = call(self, "SET_IRQS", dev.irq_info, 0)
         if not ok or (ok.count or 0) == 0 then
            close_fds(m.fds)
            return nil, err or "SET_IRQS: the device has no INTx", errno or EINVAL
         end
         if c.unmask[0] then c.unmask[0]:close() end
         c.unmask[0] = m.fds[1]
         return {}
      end
      -- one fd a vector, or none at all: every vector de-assigned (VFIO's fd -1)
      local trigs = {}
      for i = 1, m.count do trigs[i] = m.fds[i] and trigger(m.fds[i]) or false end
      local ok, err, errno = call(self, "SET_IRQS", dev.set_irqs, m.index, m.start, m.count, action, trigs)
      if not ok and errno == EINVAL and action == "trigger" and dev.native_eventfds and m.start > 0
         and (m.index == 1 or m.index == 2) then
         local rok, rerr, rerrno = set_triggers_resized(self, c, m, trigs)
         if rok then ok = rok elseif rerr then err, errno = rerr, rerrno end
      end
      if not ok then
         for _, t in ipairs(trigs) do if t then t:close() end end
         return nil, err, errno
      end
      if action == "trigger" then keep_triggers(c, m.index, m.start, trigs)
      else for _, t in ipairs(trigs) do if t then t:close() end end end
      return {}
   end
   local data
   if fl & DATA_BOOL ~= 0 then
      data = { bool = true }
      for i, b in ipairs(m.bools or {}) do data[i] = b end
   end
   local ok, err, errno = call(self, "SET_IRQS", dev.set_irqs, m.index, m.start, m.count, action, data)
   if not ok then return nil, err, errno end
   if action == "trigger" and data == nil and m.count == 0 then
      drop_triggers(c, m.index)
      if m.index == 0 and c.unmask[0] then c.unmask[0]:close(); c.unmask[0] = nil end
   end
   return {}
end

function H.dma_map(self, c, m)
   local fdobj = m.fds[1]
   if #c.maps >= self.limits.max_dma_maps then
      close_fds(m.fds)
      return fail(ENOSPC, "DMA_MAP: %d ranges already mapped", #c.maps)
   end
   if not m.read and not m.write then
      close_fds(m.fds)
      return fail(EINVAL, "DMA_MAP: neither readable nor writable")
   end
   local dev = self.device
   local entry = { iova = m.address, size = m.size, readable = m.read, writable = m.write }
   local buffer
   if fdobj then
      if m.offset % PAGE ~= 0 or m.size % PAGE ~= 0 then
         fdobj:close()
         return fail(EINVAL, "DMA_MAP: 0x%x bytes at offset 0x%x of the fd are not whole pages", m.size, m.offset)
      end
      local seals = core.fd_seals(fdobj)
      local err, errno
      buffer, err, errno = core.dmabuf_map(fdobj, m.offset, m.size, { write = m.write })
      fdobj:close()   -- the mapping keeps the file
      if not buffer then return nil, "DMA_MAP: " .. tostring(err), errno end
      if not (seals and seals.shrink) and not dev.native_eventfds then
         -- a model reads this memory itself: a file the client may shrink could fault
         log(self, "DMA_MAP 0x%x+0x%x: the fd is not sealed against shrinking; served by messages",
             m.address, m.size)
         buffer:close()
         buffer = nil
      end
   end
   entry.buffer = buffer
   entry.memory = buffer and buffer_memory(buffer, m.size) or message_memory(self, c, m.address, m.size)
   local ok, err, errno = call(self, "DMA_MAP", dev.dma_map, entry)
   if not ok then
      if buffer then buffer:close() end
      return nil, err, errno
   end
   c.maps[#c.maps + 1] = entry
   log(self, "DMA_MAP 0x%x+0x%x %s%s: %s", m.address, m.size, m.read and "r" or "", m.write and "w" or "",
       buffer and "the client's fd, mapped" or "through DMA_READ/DMA_WRITE messages")
   return {}
end

function H.dma_unmap(self, c, m)
   local range = m.all and { all = true } or { iova = m.address, size = m.size }
   local bytes, err, errno = call(self, "DMA_UNMAP", self.device.dma_unmap, range)
   if not bytes then return nil, err, errno end
   release_maps(c, m.address, m.size, m.all)
   return { argsz = m.argsz, flags = m.flags, address = m.address, size = m.size }
end

-- Dispatch one decoded request from the client (and reply unless it was posted).
function dispatch(self, c, m)
   self.stats.requests = self.stats.requests + 1
   local h = H[m.command]
   local out, err, errno, fds
   if not c.versioned and m.command ~= "version" then
      close_fds(m.fds)
      out, err, errno = fail(EINVAL, "%s before VERSION", tostring(m.command))
   elseif not h then
      close_fds(m.fds)
      out, err, errno = fail(ENOTSUP, "%s is not served", tostring(m.command))
   else
      local ok, a, b, d, e = pcall(h, self, c, m)
      if ok then out, err, errno, fds = a, b, d, e
      else
         close_fds(m.fds)
         out, err, errno = fail(EIO, "%s: %s", m.command, tostring(a))
         log(self, "server error in %s: %s", m.command, tostring(a))
      end
   end
   if self.client ~= c then return end   -- gone while it was served (a DMA wait)
   if not out then
      if m.no_reply then
         self.stats.posted_errors = self.stats.posted_errors + 1
      else
         self.stats.errors = self.stats.errors + 1
      end
      log(self, "%s id %d refused: %s (errno %s)", tostring(m.command), m.id, tostring(err), tostring(errno))
      if not m.no_reply then
         local ok, serr = c.conn:error(m, math.tointeger(errno) or EIO)
         if not ok then drop_client(self, tostring(serr)) return end
      end
      if c.bad_version then drop_client(self, "unsupported version") end
      return
   end
   if not m.no_reply then
      local ok, serr = c.conn:reply(m, out, fds)
      if not ok then drop_client(self, tostring(serr)) end
   end
end

-- Read and serve every whole message the client has sent.
local function serve_client(self, c)
   for _ = 1, 64 do   -- a round's worth: the device's fds get their turn too
      if self.client ~= c then return end
      local m, err, errno, hdr = c.conn:recv(0)
      if not m then
         if errno == perrno.EAGAIN then return end
         if errno == perrno.EPIPE then drop_client(self, "gone") return end
         if hdr and not hdr.reply and not hdr.no_reply then c.conn:error(hdr, errno) end
         self.stats.errors = self.stats.errors + 1
         log(self, "refused a message: %s", tostring(err))
         -- no header (or EMSGSIZE): the framing is lost; a decode error keeps it in sync
         if not hdr or errno == perrno.EMSGSIZE then drop_client(self, tostring(err)) return end
      elseif m.reply then
         log(self, "stray reply id %d dropped", m.id)
      else
         dispatch(self, c, m)
      end
   end
end

---------------------------------------------------------------- the loop

local function fileno(x)
   if math.type(x) == "integer" then return x end
   return x:fileno()
end

-- What step() polls: fds (posix.poll's table) and what each fd is. Rebuilt only when
-- that changed (another client, another unmask eventfd, stopping, or a device with fds
-- of its own, asked each round): the set is built per message otherwise.
local function poll_set(self)
   local dev, c = self.device, self.client
   local unmask = c and c.unmask[0]
   local ps = self.pollset
   if ps and ps.client == c and ps.unmask == unmask and ps.stopping == self.stopping and not ps.dynamic then
      for _, p in pairs(ps.fds) do p.revents = nil end   -- posix.poll leaves them when nothing came
      return ps
   end
   local fds, what = {}, {}
   if c then
      fds[c.conn:fd()] = { events = { IN = true } }
      what[c.conn:fd()] = "client"
      for index, u in pairs(c.unmask) do
         fds[u:fileno()] = { events = { IN = true } }
         what[u:fileno()] = { unmask = index }
      end
   elseif not self.stopping then
      fds[self.fd] = { events = { IN = true } }
      what[self.fd] = "listener"
   end
   local dynamic = has(dev, "poll_fds")
   if dynamic then
      local ok, list = pcall(dev.poll_fds, dev)
      for _, f in ipairs(ok and list or {}) do
         local n = fileno(f)
         fds[n] = { events = { IN = true } }
         what[n] = { device = f }
      end
   end
   ps = { fds = fds, what = what, client = c, unmask = unmask, stopping = self.stopping, dynamic = dynamic }
   self.pollset = ps
   return ps
end

local NOTHING = {}

---
-- One round: wait up to `ms` milliseconds (nil: until something happens) for the
-- listener, the client, a watched eventfd or a device fd, and serve what is ready.
-- @tparam[opt] int ms how long to wait
-- @treturn boolean true, or `nil, message, errno` when poll failed (EINTR: a signal)
function Server:step(ms)
   if self.closed then return fail(EINVAL, "vfio-user server %s: closed", self.path) end
   local dev = self.device
   local ps = poll_set(self)
   local fds, what = ps.fds, ps.what
   local timeout = ms or -1
   local tick = dev.tick_ms
   if tick and has(dev, "tick") then
      local due = self.last_tick + tick - now_ms()
      if due < 0 then due = 0 end
      if timeout < 0 or due < timeout then timeout = due end
   end
   local n, err, errno = ppoll.poll(fds, timeout)
   if not n then return nil, err, errno end
   local unmasks
   for fd, p in pairs(fds) do
      local r = p.revents or NOTHING
      if r.IN or r.HUP or r.ERR then
         local w = what[fd]
         if w == "listener" then
            accept(self)
         elseif w == "client" then
            if self.client then serve_client(self, self.client) end
         elseif type(w) == "table" and w.unmask then
            unmasks = unmasks or {}
            unmasks[#unmasks + 1] = { fd = fd, index = w.unmask }
         elseif type(w) == "table" and w.device then
            call(self, "on_ready", dev.on_ready, w.device)
         end
      end
   end
   -- unmasks last, after every message the client sent before its guest's EOI
   for _, u in ipairs(unmasks or NOTHING) do
      if self.client and self.client.unmask[u.index] and self.client.unmask[u.index]:fileno() == u.fd then
         local watched = self.client.unmask[u.index]
         serve_client(self, self.client)
         -- still the same eventfd (the messages served may have replaced or closed it)
         if self.client and self.client.unmask[u.index] == watched and drain(u.fd) then
            self.stats.interrupts_unmasked = self.stats.interrupts_unmasked + 1
            call(self, "INTx unmask", dev.set_irqs, u.index, 0, 1, "unmask")
         end
      end
   end
   if tick and has(dev, "tick") and now_ms() - self.last_tick >= tick then
      self.last_tick = now_ms()
      call(self, "tick", dev.tick)
   end
   return true
end

---
-- Serve until `stop()`, SIGTERM or SIGINT (unless opts.signals is false), or, with
-- opts.once, until the first client leaves; then close.
-- @treturn boolean true, or `nil, message, errno` when poll failed
function Server:run()
   local old = {}
   if self.opts.signals ~= false then
      for _, s in ipairs { psignal.SIGTERM, psignal.SIGINT } do
         old[s] = psignal.signal(s, function() self.stopping = true end)
      end
   end
   local served = self.stats.clients
   local ok, err, errno = true, nil, nil
   while not self.stopping do
      local r, e, en = self:step(250)   -- bounded: a signal between two polls is seen soon
      if not r and en ~= perrno.EINTR then ok, err, errno = nil, e, en break end
      if self.opts.once and self.stats.clients > served and not self.client then break end
   end
   for s, h in pairs(old) do psignal.signal(s, h or psignal.SIG_DFL) end
   self:close()
   return ok, err, errno
end

--- Ask `run()` to return after the current round.
function Server:stop() self.stopping = true end

--- The connected client's credentials (`{pid, uid, gid}`), or nil.
function Server:client_info() return self.client and self.client.cred end

--- Drop the client (as if it left), close the listener and remove the socket file. Idempotent.
function Server:close()
   if self.closed then return end
   self.stopping = true
   drop_client(self, "stopped")
   self.closed = true
   unistd.close(self.fd)
   unistd.unlink(self.path)
end
Server.__close = Server.close
Server.__gc = Server.close

function Server:__tostring()
   return ("vfio.user.server (%s%s)"):format(self.path, self.closed and ", closed" or "")
end

M.Server = Server
return M
