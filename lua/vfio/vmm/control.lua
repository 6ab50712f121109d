---
-- The VMM's control socket (`--control PATH`, doc/control.md): a UNIX stream socket
-- speaking vfio.vmm.control_protocol's JSON lines, and the commands it runs against a
-- board (info, device_add, device_del, pause, resume, quit, eval, help).
--
-- Who may connect: the socket is made with mode 0600 (umask 0177 around bind, then chmod
-- again) and every peer's credentials (SO_PEERCRED, vfio.core.peercred) must name the
-- VMM's owner (its effective uid) or root; anyone else gets one error line and is
-- closed. So `eval`, which runs Lua inside the VMM, runs only the owner's own code.
--
-- How it runs: nothing here blocks while the guest runs. The server's fds (the listener
-- and each client) are the run's wake fds (vcpu:run / vm:run_vcpus opts.wake), so the
-- run returns with a "wake" exit as soon as a client connects or sends, even while the
-- guest idles in an in-kernel HLT; the run loop then calls control:between_runs(), which
-- accepts, reads, runs every complete request on the Lua thread (no vCPU runs meanwhile,
-- as for an exit handler) and writes the replies without blocking (what a client does
-- not read stays queued, up to MAX_OUTPUT, past which the client is dropped). While
-- paused it waits on the socket instead of returning.
--
-- Hostile peers: at most MAX_CLIENTS at once (the next is told so and closed), each
-- request line capped and checked by the protocol module before a command sees it, a
-- client that disconnects mid-line loses that line only, a command that raises answers
-- an error (the VMM goes on). SIGPIPE is ignored once a server listens, so a peer that
-- goes away while a reply is written is an EPIPE, not the end of the VMM.
--
--   local ctl = control.open{path=, board=, open_device=fn(bdf), hotplug=, trace=}
--   vcpu:run(handler, {wake = ctl:fds()})    ctl:between_runs(pump)    ctl:stopped(r)
--   ctl:close()
-- @module vfio.vmm.control
local protocol = require "vfio.vmm.control_protocol"
local pcibus = require "vfio.pcibus"
local unix_socket = require "vfio.unix_socket"
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local pposix_poll = require "posix.poll"
local stat = require "posix.sys.stat"
local perrno = require "posix.errno"

local M = {}

--- Clients connected at once; one more is told "too many clients" and closed.
M.MAX_CLIENTS = 16
--- Reply bytes queued for one client that does not read; past it the client is dropped.
M.MAX_OUTPUT = 4 * 1024 * 1024
--- Bytes read from a client at a time, and the most read from one per service round (so
-- a flooding client cannot keep the guest stopped).
M.READ_CHUNK = 16 * 1024
M.READ_ROUND = 256 * 1024
--- How long close() (and a guest_stopped event) waits for slow readers, in seconds.
M.FLUSH_SECONDS = 1

local nonblock = unix_socket.nonblock

local function core() return require "vfio.core" end

local Server = {}
Server.__index = Server

-- The path is ours to take: nothing there, or a socket no one listens on any more (a
-- VMM that died). Anything else (a file, a live socket) is refused, never removed.
local function claim_path(path)
   local st = stat.lstat(path)
   if not st then return true end
   if stat.S_ISSOCK(st.st_mode) == 0 then
      return nil, ("%s exists and is not a socket: not replaced"):format(path)
   end
   local fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
   if not fd then return nil, ("%s: cannot probe the old socket"):format(path) end
   local ok, _, errno = socket.connect(fd, { family = socket.AF_UNIX, path = path })
   unistd.close(fd)
   if ok then return nil, ("%s: another VMM listens there"):format(path) end
   if errno ~= perrno.ECONNREFUSED then
      return nil, ("%s: cannot tell whether the old socket is in use"):format(path)
   end
   unistd.unlink(path)
   return true
end

--- Functions of the module.
-- @section functions

---
-- listen(path, {handlers = {cmd = fn(args, client) -> result | nil, message},
--   owner = uid (default: the effective uid), max_clients =}) -> server, or nil, message,
--   errno. The socket is mode 0600; peers other than the owner and root are refused.
function M.listen(path, opts)
   opts = opts or {}
   if type(path) ~= "string" or path == "" then error("listen: a socket path is required", 2) end
   if #path > 107 then
      return nil, ("control socket %s: longer than a UNIX socket path may be (107 bytes)"):format(path)
   end
   local ok, why = claim_path(path)
   if not ok then return nil, "control socket " .. why end
   -- 0600, non-blocking; SIGPIPE ignored
   local fd, err, errno = unix_socket.listen(path, 16, "control socket")
   if not fd then return nil, err, errno end
   return setmetatable({
      path = path, fd = fd, clients = {}, handlers = opts.handlers or {},
      owner = opts.owner or unistd.geteuid(), max_clients = opts.max_clients or M.MAX_CLIENTS,
      stats = { accepted = 0, refused = 0, requests = 0, errors = 0, dropped = 0 },
   }, Server)
end

--- A listening control server (control.listen).
-- @type Server

---
-- The fds a run wakes on (a list of integers, fresh): the listener and every client,
-- but one that has sent its EOF (readable for ever) or that sent more than a round's
-- worth (READ_ROUND) last time: its rest is read at the next round anyway, and a wake on
-- it would end every run at once, so a flooding client could keep the guest stopped.
function Server:fds()
   local out = { self.fd }
   for _, c in ipairs(self.clients) do
      if not c.eof and not c.throttled then out[#out + 1] = c.fd end
   end
   return out
end

local function queue(c, line)
   if c.dead then return end
   c.out[#c.out + 1] = line
   c.outlen = c.outlen + #line
   if c.outlen > M.MAX_OUTPUT then c.dead = "it does not read its replies" end
end

-- Write what a client has queued, as far as the socket takes it now.
local function flush(c)
   while not c.dead and #c.out > 0 do
      local s = table.concat(c.out)
      c.out = { s }
      local n, _, errno = unistd.write(c.fd, s)
      if not n then
         if errno == perrno.EAGAIN or errno == perrno.EINTR then return end
         c.dead = "gone"
         return
      end
      c.outlen = c.outlen - n
      c.out = n < #s and { s:sub(n + 1) } or {}
   end
end

local function close_client(self, c, why)
   unistd.close(c.fd)
   for i, x in ipairs(self.clients) do
      if x == c then table.remove(self.clients, i) break end
   end
   if why and why ~= "gone" and why ~= "closed" then self.stats.dropped = self.stats.dropped + 1 end
end

-- A refused peer gets one line (best effort: its socket is fresh, the line is short).
local function refuse(fd, message)
   unistd.write(fd, protocol.error_reply(nil, message))
   unistd.close(fd)
end

local function accept_all(self)
   while true do
      local fd = socket.accept(self.fd)
      if not fd then return end
      nonblock(fd)
      local cred, cerr = core().peercred(fd)
      if not cred then
         self.stats.refused = self.stats.refused + 1
         refuse(fd, "refused: the peer's credentials cannot be read: " .. tostring(cerr))
      elseif cred.uid ~= self.owner and cred.uid ~= 0 then
         self.stats.refused = self.stats.refused + 1
         refuse(fd, ("refused: uid %d is neither the VMM's owner (uid %d) nor root")
            :format(cred.uid, self.owner))
      elseif #self.clients >= self.max_clients then
         self.stats.refused = self.stats.refused + 1
         refuse(fd, ("refused: too many clients (%d connected)"):format(#self.clients))
      else
         self.stats.accepted = self.stats.accepted + 1
         self.clients[#self.clients + 1] = { fd = fd, cred = cred, framer = protocol.framer(),
                                             out = {}, outlen = 0 }
      end
   end
end

---
-- Run one request line of client c and queue its reply.
function Server:request(c, line)
   -- events a command raises go out after its reply, so its client reads the answer first
   self.deferred = {}
   self:run_request(c, line)
   local events = self.deferred
   self.deferred = nil
   for _, e in ipairs(events) do self:broadcast(e[1], e[2]) end
end

--- Parse one request line of client c, run its command and queue the reply.
function Server:run_request(c, line)
   self.stats.requests = self.stats.requests + 1
   local req, err, id = protocol.parse(line)
   if not req then
      self.stats.errors = self.stats.errors + 1
      queue(c, protocol.error_reply(id, err))
      return
   end
   local h = self.handlers[req.cmd]
   if not h then
      self.stats.errors = self.stats.errors + 1
      queue(c, protocol.error_reply(req.id, ("%s is not available here"):format(req.cmd)))
      return
   end
   local ok, result, herr = pcall(h, req.args, c)
   if not ok then
      self.stats.errors = self.stats.errors + 1
      queue(c, protocol.error_reply(req.id, ("%s failed: %s"):format(req.cmd, tostring(result))))
   elseif result == nil then
      self.stats.errors = self.stats.errors + 1
      queue(c, protocol.error_reply(req.id, herr or (req.cmd .. " failed")))
   else
      queue(c, protocol.reply(req.id, result))
   end
end

local function read_client(self, c)
   local got = 0
   c.throttled = false
   while not c.dead and not self.closing do
      if got >= M.READ_ROUND then
         c.throttled = true   -- the rest next round; no wake on it meanwhile (fds)
         return
      end
      local data, _, errno = socket.recv(c.fd, M.READ_CHUNK)
      if not data then
         if errno ~= perrno.EAGAIN and errno ~= perrno.EINTR then c.dead = "gone" end
         return
      end
      if data == "" then
         -- EOF: an unfinished line is dropped; the complete ones ran; replies to them
         -- are written if the peer still reads (a half-close), then the socket closes
         c.eof = true
         return
      end
      got = got + #data
      for _, item in ipairs(c.framer:feed(data)) do
         if item.error then
            self.stats.errors = self.stats.errors + 1
            queue(c, protocol.error_reply(nil, item.error))
         else
            self:request(c, item.line)
         end
         if self.closing then break end
      end
   end
end

---
-- One round, without blocking: new peers accepted (or refused), what each client sent
-- read and its complete requests run in order, replies and events written as far as the
-- sockets take them, and clients that left or cannot keep up closed.
function Server:service()
   if self.closed then return end
   accept_all(self)
   local snapshot = { table.unpack(self.clients) }
   for _, c in ipairs(snapshot) do
      if not c.dead and not c.eof then read_client(self, c) end
      flush(c)
   end
   for _, c in ipairs(snapshot) do
      if c.dead then
         close_client(self, c, c.dead)
      elseif c.eof and #c.out == 0 then
         close_client(self, c, "closed")
      end
   end
end

---
-- Wait up to `seconds` for a peer to connect or send (or for a signal), then service.
function Server:wait(seconds)
   -- no guest runs meanwhile: a throttled client is read as soon as it has more; one at
   -- EOF only matters while its replies are still going out
   local fds = { [self.fd] = { events = { IN = true } } }
   for _, c in ipairs(self.clients) do
      fds[c.fd] = { events = { IN = not c.eof, OUT = #c.out > 0 } }
   end
   pposix_poll.poll(fds, math.max(0, math.floor(seconds * 1000)))
   self:service()
end

---
-- Queue an event line for every client (pushed by the next service round).
function Server:broadcast(name, fields)
   if self.deferred then
      self.deferred[#self.deferred + 1] = { name, fields }
      return
   end
   local line = protocol.event(name, fields)
   for _, c in ipairs(self.clients) do queue(c, line) end
end

---
-- Close: queued lines written for up to FLUSH_SECONDS, every client closed, the socket
-- closed and its path removed. Idempotent.
function Server:close()
   if self.closed then return end
   self.closing = true
   local clock = require "posix.time"
   local function now()
      local t = clock.clock_gettime(clock.CLOCK_MONOTONIC)
      return t.tv_sec + t.tv_nsec * 1e-9
   end
   local until_t = now() + M.FLUSH_SECONDS
   while now() < until_t do
      local pending = false
      for _, c in ipairs(self.clients) do
         flush(c)
         if not c.dead and #c.out > 0 then pending = true end
      end
      if not pending then break end
      local fds = {}
      for _, c in ipairs(self.clients) do
         if not c.dead and #c.out > 0 then fds[c.fd] = { events = { OUT = true } } end
      end
      pposix_poll.poll(fds, 50)
   end
   for i = #self.clients, 1, -1 do unistd.close(self.clients[i].fd) end
   self.clients = {}
   unistd.close(self.fd)
   -- remove the path only if it is still the socket we made (not one a successor bound)
   local st = stat.lstat(self.path)
   if st and stat.S_ISSOCK(st.st_mode) ~= 0 then unistd.unlink(self.path) end
   self.closed = true
end
Server.__close = Server.close
Server.__gc = Server.close

-- ---------------------------------------------------------------------------------
-- The commands against a board.

local function hex(v) return v and ("%#x"):format(v) or nil end

local function guest_address(seat)
   return seat and ("%02x:%02x.%d"):format(seat.bus or 0, seat.slot, seat.fn) or nil
end

-- A device's id on the socket: its host address, or for a recording its file.
local function device_id(d)
   local bdf = d.host_bdf and d:host_bdf()
   if bdf then return bdf end
   local dev = d.dev
   return type(dev) == "string" and dev or tostring(dev)
end

--- Functions of the module.
-- @section functions2

--- What info says of one device on `board`.
function M.device_info(board, d)
   local seat = board:where(d)
   local bars = {}
   for i, b in pairs(d:bars() or {}) do
      if b.size and b.size > 0 and not b.upper then
         bars[#bars + 1] = { index = i, kind = i == 6 and "rom" or b.io and "io" or (b.is64 and "mem64" or "mem32"),
                             addr = hex(b.addr), size = hex(b.size), prefetch = b.prefetch or false }
      end
   end
   table.sort(bars, function(a, b) return a.index < b.index end)
   local st = d.status and d:status() or {}
   return {
      id = device_id(d), host = d:host_bdf(), guest = guest_address(seat),
      bus = seat and seat.bus, slot = seat and seat.slot, ["function"] = seat and seat.fn,
      port = seat and seat.port,   -- the root port (0-based) a hot-plug slot device sits behind
      intx_line = seat and seat.intx_line, bars = protocol.array(bars),
      irq = st.irq and protocol.object(st.irq) or protocol.object { mode = "none" },
      quirks = protocol.array(st.quirks or {}),
   }
end

local Control = {}
Control.__index = Control

-- The device whose host address (or a recording's id) is `want`.
local function find_by_host(self, want)
   for _, d in ipairs(self.board.devices) do
      if device_id(d) == want or d:host_bdf() == want then return d end
   end
end

local function find_device(self, name)
   name = tostring(name)
   local want = pcibus.parse_bdf(name) or name
   -- With its domain ("0000:00:04.0") a name is a host address (or a recording's id);
   -- without ("00:04.0") a guest address first, as info shows them, then a host one:
   -- the two can read alike (the host's 00:04.0 behind a port, a device at guest 00:04.0).
   if name:match("^%x+:%x+:%x+%.%x$") then return find_by_host(self, want) end
   for _, d in ipairs(self.board.devices) do
      if guest_address(self.board:where(d)) == name then return d end
   end
   return find_by_host(self, want)
end

local COMMANDS = {}

function COMMANDS.help(self)
   local out = {}
   for name, spec in pairs(protocol.COMMANDS) do
      local args = {}
      for a, t in pairs(spec.args) do args[a] = t end
      out[name] = { args = protocol.object(args), doc = spec.doc, available = self.server.handlers[name] ~= nil }
   end
   return { commands = out, events = protocol.EVENTS }
end

function COMMANDS.info(self)
   local b = self.board
   local devices = {}
   for _, d in ipairs(b.devices) do devices[#devices + 1] = M.device_info(b, d) end
   local m = b.machine
   return {
      vcpus = m and m.vcpus and #m.vcpus or self.cpus or 1,
      ram = { mib = b.mem_mib, backend = (m and m.ram_backend) or b.ram_backend or "anonymous" },
      state = self.paused and "paused" or "running",
      hotplug = self.hotplug ~= nil,
      devices = protocol.array(devices),
   }
end

function COMMANDS.pause(self)
   if self.paused then return nil, "already paused" end
   self.paused = true
   self.server:broadcast("paused")
   return { state = "paused" }
end

function COMMANDS.resume(self)
   if not self.paused then return nil, "not paused" end
   self.paused = false
   self.server:broadcast("resumed")
   return { state = "running" }
end

function COMMANDS.quit(self)
   self.quit = true
   self.paused = false
   return { state = "quitting" }
end

-- The hot-plug slot the board has for a device: without one, a device can neither come
-- nor go while the guest runs (its slot is a fixed one the guest enumerated at boot).
local NO_SLOT = "no hot-plug slot: this board has no PCIe root port to plug a device into "
   .. "or out of while the guest runs"

function COMMANDS.device_add(self, args)
   local bdf, why = pcibus.parse_bdf(args.device)
   if not bdf then return nil, ("device_add: %s"):format(why or "not a PCI address") end
   -- by host address only: a guest address can read the same as another host's (the
   -- boot device at guest 00:04.0, the host's 0000:00:04.0 being added)
   local there = find_by_host(self, bdf)
   if there then
      return nil, ("device_add: %s is already in the VM (guest %s)")
         :format(bdf, tostring(guest_address(self.board:where(there))))
   end
   if not self.hotplug then return nil, "device_add: " .. NO_SLOT end
   if not self.open_device then return nil, "device_add: this VMM cannot open devices" end
   local d, err, errno = self.open_device(bdf)
   if not d then
      return nil, ("device_add: cannot open %s: %s%s"):format(bdf, tostring(err),
         errno and (" (" .. pcibus.errname(errno) .. ")") or "")
   end
   local ok, aerr = self.hotplug.add(d, { slot = args.slot })
   if not ok then
      pcall(self.close_device, d)   -- what this command opened, it closes: nothing stays behind
      return nil, ("device_add: %s: %s"):format(bdf, tostring(aerr))
   end
   self.opened[d] = true
   local info = M.device_info(self.board, d)
   self.server:broadcast("device_added", { device = info.id, guest = info.guest, host = info.host })
   return info
end

function COMMANDS.device_del(self, args)
   local d = find_device(self, args.device)
   if not d then return nil, ("device_del: no device %s in the VM (info lists them)"):format(args.device) end
   if not self.hotplug then
      return nil, ("device_del: %s sits in guest slot %s, which is no hot-plug slot (%s)")
         :format(device_id(d), tostring(guest_address(self.board:where(d))), NO_SLOT)
   end
   local info = M.device_info(self.board, d)
   if self.removing[d] then
      return nil, ("device_del: %s is already being removed: the guest has not given it back yet "
         .. "(event device_removed when it has)"):format(info.id)
   end
   -- A removal is the guest's to finish (its pciehp powers the slot off, or the board
   -- removes the device by surprise after a timeout): device_removed is sent then, by
   -- Control:released, which may run before remove returns.
   self.removing[d] = info
   local ok, err = self.hotplug.remove(d)
   if not ok then
      self.removing[d] = nil
      return nil, ("device_del: %s: %s"):format(info.id, tostring(err))
   end
   return { device = info.id, guest = info.guest, host = info.host,
            removing = self.removing[d] ~= nil }
end

---
-- A device has left the machine (the board's release, board:on_released): what
-- device_add opened is closed, and every client hears of it (event device_removed).
-- @param d the assigned device
-- @tparam table how `{host =, seat =, surprise =}` as board:on_released gives it
function Control:released(d, how)
   local info = self.removing[d] or { id = device_id(d), host = how.host }
   self.removing[d] = nil
   if self.opened[d] then
      self.opened[d] = nil
      pcall(self.close_device, d)
   end
   if self.server then
      self.server:broadcast("device_removed", { device = info.id, guest = info.guest,
         host = info.host or how.host, surprise = how.surprise and true or false })
   end
end

-- eval: the environment an attached REPL works in.
local function lspci_of(self, which)
   local d = type(which) == "table" and which or find_device(self, tostring(which))
   if not d then return nil, ("no device %s"):format(tostring(which)) end
   local trap = d.trap or d:config_function()
   local words, size = {}, 256
   if trap:cfg_read(0x100, 4) then
      -- an extended space (PCIe): read all of it when its first header is there
      size = 4096
   end
   for off = 0, size - 4, 4 do
      local v = trap:cfg_read(off, 4)
      if not v then break end
      words[#words + 1] = string.pack("<I4", v)
   end
   local sizes = {}
   for i, b in pairs(d:bars() or {}) do
      if i < 6 then sizes[i] = b.size end
   end
   local rom = (d:bars() or {})[6]
   return require("vfio.decode").config(table.concat(words), {
      bar_sizes = sizes, rom_size = rom and rom.size, slot = guest_address(self.board:where(d)) })
end

local function eval_env(self, out)
   local env = {
      board = self.board, vm = self.board.vm, control = self,
      print = function(...)
         local parts = {}
         for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
         out[#out + 1] = table.concat(parts, "\t")
      end,
      --- the devices by id
      devices = {},
      lspci = function(which) return lspci_of(self, which) end,
      trace = function(n, which)
         local d = which and (type(which) == "table" and which or find_device(self, tostring(which)))
         if which and not d then return nil, ("no device %s"):format(tostring(which)) end
         local id, lines = d and device_id(d), {}
         for _, e in ipairs(self.trace_lines) do
            if not id or e.tag == id then lines[#lines + 1] = e.line end
         end
         n = n or #lines
         return table.concat(lines, "\n", math.max(1, #lines - n + 1), #lines)
      end,
   }
   for _, d in ipairs(self.board.devices) do env.devices[device_id(d)] = d end
   -- globals an eval defines stay for the next one (the session's own table)
   return setmetatable(env, { __index = self.globals })
end

-- A chunk gets this many VM instructions before it is stopped (a runaway loop would
-- otherwise keep the guest stopped and the socket deaf for ever).
M.EVAL_INSTRUCTIONS = 200000000

function COMMANDS.eval(self, args)
   local out = {}
   local env = eval_env(self, out)
   local fn, err = load("return " .. args.code, "=eval", "t", env)
   if not fn then fn, err = load(args.code, "=eval", "t", env) end
   if not fn then return nil, err end
   local co = coroutine.create(fn)
   debug.sethook(co, function() error("eval stopped: more than " .. M.EVAL_INSTRUCTIONS
      .. " instructions", 2) end, "", M.EVAL_INSTRUCTIONS)
   local res = table.pack(coroutine.resume(co))
   if not res[1] then return nil, debug.traceback(co, tostring(res[2])) end
   if coroutine.status(co) ~= "dead" then return nil, "eval: the chunk yielded (not supported)" end
   for k, v in pairs(env) do
      -- what the chunk assigned to globals stays for the next chunk
      if rawget(self.globals, k) == nil and not ({ board = 1, vm = 1, control = 1, print = 1,
         devices = 1, lspci = 1, trace = 1 })[k] then
         self.globals[k] = v
      end
   end
   local values = {}
   for i = 2, res.n do values[#values + 1] = tostring(res[i]) end
   return { output = protocol.array(out), values = protocol.array(values) }
end

---
-- open{path =, board = a vfio.vmm.board, open_device = fn(bdf) -> assigned device or
--   nil, message, errno (device_add's), close_device = fn(d) (what closes a device
--   open_device opened, when it cannot be added or is removed; default d:close()),
--   hotplug = {add = fn(d, {slot=}), remove = fn(d) (asks for the removal; the board's
--   release ends it)} (nil: the board's root ports, board:device_add / device_del, when it
--   has any, else none),
--   cpus = n (info on a board without a VM), eval = false (no eval command),
--   owner = uid} -> control, or nil, message, errno.
function M.open(opts)
   local self = setmetatable({ board = assert(opts.board, "control.open: board required"),
                               open_device = opts.open_device, cpus = opts.cpus,
                               close_device = opts.close_device or function(d) d:close() end,
                               opened = {}, removing = {}, paused = false, quit = false, trace_lines = {},
                               globals = setmetatable({}, { __index = _G }) }, Control)
   self.hotplug = opts.hotplug
   local b = self.board
   if not self.hotplug and b.ports and #b.ports > 0 then
      -- the board's root ports: an add is seated and announced to the guest at once, a
      -- removal ends when the board releases the device (Control:released)
      -- `slot` is the slot's physical number, as the guest's /sys/bus/pci/slots names it (1 to N)
      self.hotplug = { add = function(d, at) return b:device_add(d, { port = at.slot and at.slot - 1 }) end,
                       remove = function(d) return b:device_del(d) end }
   end
   if type(b.on_released) == "function" then
      b:on_released(function(d, how) self:released(d, how) end)
   end
   local handlers = {}
   for name, fn in pairs(COMMANDS) do
      if name ~= "eval" or opts.eval ~= false then
         handlers[name] = function(args) return fn(self, args) end
      end
   end
   local server, err, errno = M.listen(opts.path, { handlers = handlers, owner = opts.owner })
   if not server then return nil, err, errno end
   self.server = server
   return self
end

--- A control server over a board (control.open).
-- @type Control

--- The run's wake fds (opts.wake of vcpu:run / vm:run_vcpus).
function Control:fds() return self.server:fds() end

--- Keep a trace line for eval's trace(n [, device]) (the last 1000), tagged with the id of
-- the device it is about (nil: the board's).
function Control:log(line, tag)
   local t = self.trace_lines
   t[#t + 1] = { line = line, tag = tag }
   if #t > 1000 then table.remove(t, 1) end
end

---
-- Between two runs: service the socket; while paused, wait on it (calling pump(), if
-- given, every 50 ms: the console; pump returning false, or should_stop() true, ends
-- the wait as a quit). Returns false when the run must end (quit), else true.
function Control:between_runs(pump, should_stop)
   self.server:service()
   while self.paused and not self.quit do
      if pump and pump() == false then return false end
      if should_stop and should_stop() then return false end
      self.server:wait(0.05)
   end
   return not self.quit
end

---
-- The guest stopped (r: boot_linux's result, or {result=, status=}): every client gets a
-- guest_stopped event, written before close() returns.
function Control:stopped(r)
   self.server:broadcast("guest_stopped", { result = r and r.result or "error",
                                            status = r and r.status })
   self.server:service()
end

--- Close the devices device_add opened (after the board's close, which took them out of
-- the VM). Idempotent.
function Control:release()
   for d in pairs(self.opened) do pcall(self.close_device, d) end
   self.opened = {}
end

--- Close the server (queued lines written first, for up to FLUSH_SECONDS); devices that
-- device_add opened and are still on the board stay (the board's close closes them).
-- Idempotent.
function Control:close()
   if self.server then self.server:close() end
end
Control.__close = Control.close

return M
