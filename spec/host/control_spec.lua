-- The control socket's server (vfio.vmm.control) over real UNIX sockets: its mode and
-- path, peer credentials, many clients, clients that disconnect mid-command or do not
-- read, and the commands against a board made without a VM (plan = true) with recorded
-- devices: info, pause/resume/quit, eval, and device_add/device_del with every error path
-- (a device that cannot be opened, one already in the VM, a full machine, an unknown id,
-- a second removal, two clients racing) leaving nothing behind. The #kvm part runs a
-- real VM whose guest sits in an in-kernel HLT and checks that a wake fd ends the run.
local control = require "vfio.vmm.control"
local protocol = require "vfio.vmm.control_protocol"
local board = require "vfio.vmm.board"
local assigned = require "vfio.vmm.assigned"
local record = require "vfio.record"
local json = require "dkjson"
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local fcntl = require "posix.fcntl"
local stat = require "posix.sys.stat"
local pwait = require "posix.sys.wait"
local kvmhost = require "support.kvm"

local dir = require("support.child").private_dir()
local n_paths = 0
teardown(function()
   for f in require("posix.dirent").files(dir) do
      if f ~= "." and f ~= ".." then os.remove(dir .. "/" .. f) end
   end
   os.remove(dir)
end)

local function new_path()
   n_paths = n_paths + 1
   return ("%s/ctl%d.sock"):format(dir, n_paths)
end

-- A client: non-blocking, so the test drives both ends from one thread.
local function connect(path)
   local fd = assert(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))
   assert(socket.connect(fd, { family = socket.AF_UNIX, path = path }))
   local fl = fcntl.fcntl(fd, fcntl.F_GETFL)
   fcntl.fcntl(fd, fcntl.F_SETFL, fl | fcntl.O_NONBLOCK)
   return { fd = fd, buf = "" }
end

-- Write s whole (the server's service runs meanwhile when the socket is full); false
-- when the server has closed this client.
local EAGAIN = require("posix.errno").EAGAIN
local current_server
local function send(c, s)
   local sent = 0
   for _ = 1, 10000 do
      if sent >= #s then return true end
      local n, _, errno = unistd.write(c.fd, s:sub(sent + 1))
      if n then
         sent = sent + n
      elseif errno ~= EAGAIN then
         return false
      elseif current_server then
         current_server:service()
      end
   end
   error("send: the server never read")
end

-- Service the server until client c has n lines (decoded), or a round limit.
local function lines(srv, c, n)
   current_server = srv
   c.queue = c.queue or {}
   for _ = 1, 2000 do
      if #c.queue >= n then break end
      srv:service()
      local data = socket.recv(c.fd, 1 << 20)
      if data and data ~= "" then c.buf = c.buf .. data end
      while true do
         local nl = c.buf:find("\n", 1, true)
         if not nl then break end
         c.queue[#c.queue + 1] = assert(json.decode(c.buf:sub(1, nl - 1)))
         c.buf = c.buf:sub(nl + 1)
      end
      if data == "" then break end   -- closed by the server
   end
   local out = {}
   for i = 1, math.min(n, #c.queue) do out[i] = table.remove(c.queue, 1) end
   return out
end

-- The next reply client c gets (events before it are skipped).
local function reply(srv, c)
   for _ = 1, 20 do
      local v = lines(srv, c, 1)[1]
      if v == nil or not v.event then return v end
   end
end

-- Send request t and return its reply.
local function request(srv, c, t)
   send(c, json.encode(t) .. "\n")
   return reply(srv, c)
end

local function closed_by_server(srv, c)
   for _ = 1, 200 do
      srv:service()
      local data, _, errno = socket.recv(c.fd, 65536)
      if data == "" or (not data and errno ~= require("posix.errno").EAGAIN) then return true end
   end
   return false
end

-- A recorded device standing in for the host function bdf.
local function fixture(name, bdf)
   local t = record.load("spec/fixtures/" .. name .. ".lua")
   t.bdf = bdf
   return assert(assigned.new(t))
end

local function plan_board(n)
   local b = assert(board.new { plan = true, mem_mib = 64 })
   local devs = {}
   for i = 1, n or 1 do
      devs[i] = fixture("edu", ("0000:00:%02x.0"):format(0x10 + i))
      assert(b:add_device(devs[i]))
   end
   return b, devs
end

describe("control socket: the server", function()
   it("listens at mode 0600, refuses a path that is a file or a live socket, replaces a dead one", function()
      local b = plan_board()
      local path = new_path()
      local ctl = assert(control.open { path = path, board = b })
      assert.are.equal(tonumber("600", 8), stat.stat(path).st_mode & tonumber("777", 8))
      -- a live socket: another VMM listens there
      local again, err = control.open { path = path, board = b }
      assert.is_nil(again)
      assert.matches("another VMM listens there", err)
      ctl:close()
      assert.is_nil(stat.lstat(path))   -- the path goes with the server
      -- a regular file is never replaced
      local file = new_path()
      io.open(file, "w"):close()
      local none, ferr = control.open { path = file, board = b }
      assert.is_nil(none)
      assert.matches("is not a socket", ferr)
      assert.is_not_nil(stat.lstat(file))
      -- a socket nobody listens on (a VMM that died) is taken over
      local stale = new_path()
      local fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
      assert(socket.bind(fd, { family = socket.AF_UNIX, path = stale }))
      unistd.close(fd)
      ctl = assert(control.open { path = stale, board = b })
      local c = connect(stale)
      assert.is_true(request(ctl.server, c, { id = 1, cmd = "info" }).ok)
      unistd.close(c.fd)
      ctl:close()
   end)

   it("reads the peer's credentials (vfio.core.peercred)", function()
      local a, bfd = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM, 0)
      local cred = assert(require("vfio.core").peercred(a))
      assert.are.equal(unistd.geteuid(), cred.uid)
      assert.are.equal(unistd.getpid(), cred.pid)
      unistd.close(a)
      unistd.close(bfd)
      local r, err, errno = require("vfio.core").peercred(0x7fffffff)   -- no such fd
      assert.is_nil(r)
      assert.is_string(err)
      assert.are.equal(9, errno)   -- EBADF
   end)

   it("refuses a peer that is neither its owner nor root, by its credentials", function()
      if unistd.geteuid() ~= 0 then pending("needs root, to connect from another uid") return end
      local b = plan_board()
      local path = new_path()
      -- the owner is someone else; the file mode is opened up so the peer reaches the
      -- credential check (the mode alone would stop it at connect)
      local ctl = assert(control.open { path = path, board = b, owner = 4242 })
      assert(stat.chmod(path, tonumber("666", 8)))
      assert(stat.chmod(dir, tonumber("711", 8)))
      local r, w = unistd.pipe()
      local pid = unistd.fork()
      if pid == 0 then
         unistd.close(r)
         unistd.setpid("g", 65534)
         unistd.setpid("u", 65534)
         local fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
         local ok = socket.connect(fd, { family = socket.AF_UNIX, path = path })
         local got = ok and socket.recv(fd, 4096) or "connect failed"
         unistd.write(w, got or "")
         unistd._exit(0)
      end
      unistd.close(w)
      local got = ""
      for _ = 1, 400 do
         ctl.server:wait(0.01)
         local fl = fcntl.fcntl(r, fcntl.F_GETFL)
         fcntl.fcntl(r, fcntl.F_SETFL, fl | fcntl.O_NONBLOCK)
         local data = unistd.read(r, 4096)
         if data and data ~= "" then got = got .. data end
         if got:find("\n", 1, true) then break end
      end
      pwait.wait(pid)
      unistd.close(r)
      assert(stat.chmod(dir, tonumber("700", 8)))
      local v = assert(json.decode(got), got)
      assert.is_false(v.ok)
      assert.matches("refused: uid 65534 is neither the VMM's owner %(uid 4242%) nor root", v.error)
      assert.are.equal(0, #ctl.server.clients)
      assert.are.equal(1, ctl.server.stats.refused)
      -- root is let in
      local c = connect(path)
      assert.is_true(request(ctl.server, c, { id = 1, cmd = "info" }).ok)
      unistd.close(c.fd)
      ctl:close()
   end)

   it("serves many clients at once, each its own replies, and refuses one too many", function()
      local b = plan_board()
      local path = new_path()
      local ctl = assert(control.open { path = path, board = b })
      local cs = {}
      for i = 1, control.MAX_CLIENTS do cs[i] = connect(path) end
      -- every client sends before any is served: requests interleave in one round
      for i, c in ipairs(cs) do send(c, json.encode { id = "c" .. i, cmd = "eval", code = "return " .. i } .. "\n") end
      for i, c in ipairs(cs) do
         local v = lines(ctl.server, c, 1)[1]
         assert.are.equal("c" .. i, v.id)
         assert.are.same({ tostring(i) }, v.result.values)
      end
      local extra = connect(path)
      local v = lines(ctl.server, extra, 1)[1]
      assert.matches("too many clients", v.error)
      assert.is_true(closed_by_server(ctl.server, extra))
      assert.are.equal(control.MAX_CLIENTS, #ctl.server.clients)
      -- one leaves: there is room again
      unistd.close(cs[1].fd)
      ctl.server:service()
      local again = connect(path)
      assert.is_true(request(ctl.server, again, { id = 1, cmd = "info" }).ok)
      for i = 2, #cs do unistd.close(cs[i].fd) end
      unistd.close(again.fd)
      unistd.close(extra.fd)
      ctl:close()
   end)

   it("takes requests split across writes and several in one, in order", function()
      local b = plan_board()
      local path = new_path()
      local ctl = assert(control.open { path = path, board = b })
      local c = connect(path)
      local text = '{"id":1,"cmd":"eval","code":"return 1"}\n{"id":2,"cmd":"eval","code":"return 2"}\n'
      for i = 1, #text, 7 do
         send(c, text:sub(i, i + 6))
         ctl.server:service()
      end
      local got = lines(ctl.server, c, 2)
      assert.are.same({ 1, 2 }, { got[1].id, got[2].id })
      unistd.close(c.fd)
      ctl:close()
   end)

   it("survives a client that disconnects mid-command, or before reading its reply", function()
      local b = plan_board()
      local path = new_path()
      local ctl = assert(control.open { path = path, board = b })
      local gone = connect(path)
      send(gone, '{"id":1,"cmd":"dev')      -- half a request, then away
      ctl.server:service()
      unistd.close(gone.fd)
      local rude = connect(path)
      -- a complete request (a big reply), and away before the reply comes
      send(rude, '{"id":2,"cmd":"eval","code":"return (\\"x\\"):rep(1 << 20)"}\n')
      unistd.close(rude.fd)
      for _ = 1, 5 do ctl.server:service() end
      assert.are.equal(0, #ctl.server.clients)
      local c = connect(path)
      assert.is_true(request(ctl.server, c, { id = 3, cmd = "info" }).ok)
      unistd.close(c.fd)
      ctl:close()
   end)

   it("answers an overlong line once and bad lines each, then serves the next", function()
      local b = plan_board()
      local path = new_path()
      local ctl = assert(control.open { path = path, board = b })
      local c = connect(path)
      send(c, ("a"):rep(protocol.MAX_LINE + 100) .. "\n{bad json\n[]\n"
         .. '{"id":5,"cmd":"reboot"}\n{"id":6,"cmd":"info"}\n')
      local got = lines(ctl.server, c, 5)
      assert.matches("line too long", got[1].error)
      assert.matches("bad JSON", got[2].error)
      assert.matches("JSON object", got[3].error)
      assert.are.same({ 5, false }, { got[4].id, got[4].ok })
      assert.matches("unknown command \"reboot\"", got[4].error)
      assert.are.same({ 6, true }, { got[5].id, got[5].ok })
      unistd.close(c.fd)
      ctl:close()
   end)

   it("reads a flooding client a round at a time and wakes no run on it meanwhile", function()
      local b = plan_board()
      local ctl = assert(control.open { path = new_path(), board = b })
      local c = connect(ctl.server.path)
      ctl.server:service()
      assert.are.equal(2, #ctl:fds())
      -- more than a round's worth of requests in the socket at once (a small round: the
      -- socket's own buffer holds less than the real one)
      local saved = control.READ_ROUND
      control.READ_ROUND = 8192
      local line = '{"cmd":"x","id":1}\n'   -- a short error reply each
      local burst = line:rep(control.READ_ROUND // #line + 200)
      local quiet = 0
      local sent = 0
      for _ = 1, 100000 do
         if sent >= #burst then break end
         local n, _, errno = unistd.write(c.fd, burst:sub(sent + 1, sent + 65536))
         assert(n or errno == EAGAIN, "the server closed the flooding client")
         if n then sent = sent + n else
            ctl.server:service()
            if #ctl:fds() == 1 then quiet = quiet + 1 end
            socket.recv(c.fd, 1 << 22)   -- read the replies so the server's queue drains
         end
      end
      for _ = 1, 50 do
         ctl.server:service()
         if #ctl:fds() == 1 then quiet = quiet + 1 end
         socket.recv(c.fd, 1 << 22)
      end
      control.READ_ROUND = saved
      assert.is_true(quiet > 0, "the flooding client was never left out of the wake fds")
      -- once drained it is a wake fd again
      assert.are.equal(2, #ctl:fds())
      unistd.close(c.fd)
      ctl:close()
   end)

   it("drops a client that does not read its replies, and no one else", function()
      local b = plan_board()
      local path = new_path()
      local ctl = assert(control.open { path = path, board = b })
      local saved = control.MAX_OUTPUT
      control.MAX_OUTPUT = 1 << 20
      local hog, good = connect(path), connect(path)
      local req = '{"id":1,"cmd":"eval","code":"return (\\"y\\"):rep(200000)"}\n'
      current_server = ctl.server
      for _ = 1, 40 do
         if not send(hog, req) then break end
         ctl.server:service()
      end
      control.MAX_OUTPUT = saved
      assert.is_true(closed_by_server(ctl.server, hog))
      assert.are.equal(1, ctl.server.stats.dropped)
      assert.is_true(request(ctl.server, good, { id = 2, cmd = "info" }).ok)
      unistd.close(hog.fd)
      unistd.close(good.fd)
      ctl:close()
   end)
end)

describe("control socket: commands", function()
   it("info says the machine, its devices with guest and host addresses, BARs and interrupts", function()
      local b = plan_board(2)
      local ctl = assert(control.open { path = new_path(), board = b, cpus = 2 })
      local c = connect(ctl.server.path)
      local v = request(ctl.server, c, { id = 1, cmd = "info" })
      assert.is_true(v.ok)
      local r = v.result
      assert.are.equal(2, r.vcpus)
      assert.are.same({ mib = 64, backend = "anonymous" }, r.ram)
      assert.are.equal("running", r.state)
      assert.are.equal(2, #r.devices)
      assert.are.same({ "0000:00:11.0", "00:04.0", 4 }, { r.devices[1].host, r.devices[1].guest, r.devices[1].slot })
      assert.are.same({ "0000:00:12.0", "00:05.0", 5 }, { r.devices[2].host, r.devices[2].guest, r.devices[2].slot })
      assert.are.equal(0, r.devices[1].bars[1].index)
      assert.are.equal("0x100000", r.devices[1].bars[1].size)
      assert.are.equal("none", r.devices[1].irq.mode)
      assert.are.equal(board.intx_gsi(4, 1), r.devices[1].intx_line)
      unistd.close(c.fd)
      ctl:close()
   end)

   it("pauses, resumes and quits, with events to every client after the reply", function()
      local b = plan_board()
      local ctl = assert(control.open { path = new_path(), board = b })
      local c1, c2 = connect(ctl.server.path), connect(ctl.server.path)
      ctl.server:service()
      send(c1, '{"id":1,"cmd":"pause"}\n')
      local got = lines(ctl.server, c1, 2)
      assert.are.same({ 1, true }, { got[1].id, got[1].ok })
      assert.are.equal("paused", got[2].event)
      assert.are.equal("paused", lines(ctl.server, c2, 1)[1].event)
      assert.is_true(ctl.paused)
      assert.matches("already paused", request(ctl.server, c2, { id = 2, cmd = "pause" }).error)
      -- between_runs waits while paused, and returns once c2 resumes
      send(c2, '{"id":3,"cmd":"resume"}\n')
      assert.is_true(ctl:between_runs())
      assert.is_false(ctl.paused)
      assert.matches("not paused", request(ctl.server, c1, { id = 4, cmd = "resume" }).error)
      -- a pause is ended by quit too
      request(ctl.server, c1, { id = 5, cmd = "pause" })
      send(c1, '{"id":6,"cmd":"quit"}\n')
      assert.is_false(ctl:between_runs())
      assert.is_true(ctl.quit)
      ctl:stopped { result = "quit", status = 0 }
      local tail = lines(ctl.server, c2, 4)
      local last = tail[#tail]
      assert.are.same({ "guest_stopped", "quit", 0 }, { last.event, last.result, last.status })
      unistd.close(c1.fd)
      unistd.close(c2.fd)
      ctl:close()
   end)

   it("evals Lua in the VMM: the board, lspci as the guest sees it, globals kept, errors and runaways", function()
      local b = plan_board()
      local ctl = assert(control.open { path = new_path(), board = b })
      local c = connect(ctl.server.path)
      local v = request(ctl.server, c, { id = 1, cmd = "eval", code = "x = #board.devices print('n', x)" })
      assert.are.same({ "n\t1" }, v.result.output)
      v = request(ctl.server, c, { id = 2, cmd = "eval", code = "x + 1" })
      assert.are.same({ "2" }, v.result.values)
      v = request(ctl.server, c, { id = 3, cmd = "eval", code = "lspci('00:04.0')" })
      assert.matches("^00:04.0 .*Device 1234:11e8", v.result.values[1])
      assert.matches("Region 0: Memory at c0000000", v.result.values[1])
      -- the trace lines, all or one device's (the cli tags them with its host address)
      ctl:log("cfg  read 000/4 (00:04.0)", "0000:00:11.0")
      ctl:log("host bridge line")
      v = request(ctl.server, c, { id = 31, cmd = "eval", code = "trace(10, '00:04.0')" })
      assert.are.same({ "cfg  read 000/4 (00:04.0)" }, v.result.values)
      v = request(ctl.server, c, { id = 32, cmd = "eval", code = "trace(1)" })
      assert.are.same({ "host bridge line" }, v.result.values)
      v = request(ctl.server, c, { id = 4, cmd = "eval", code = "error('boom')" })
      assert.is_false(v.ok)
      assert.matches("boom", v.error)
      v = request(ctl.server, c, { id = 5, cmd = "eval", code = "this is not Lua" })
      assert.is_false(v.ok)
      local saved = control.EVAL_INSTRUCTIONS
      control.EVAL_INSTRUCTIONS = 100000
      v = request(ctl.server, c, { id = 6, cmd = "eval", code = "while true do end" })
      control.EVAL_INSTRUCTIONS = saved
      assert.matches("eval stopped", v.error)
      -- eval can be left out
      local ctl2 = assert(control.open { path = new_path(), board = b, eval = false })
      local c2 = connect(ctl2.server.path)
      assert.matches("not available", request(ctl2.server, c2, { id = 1, cmd = "eval", code = "1" }).error)
      unistd.close(c.fd)
      unistd.close(c2.fd)
      ctl:close()
      ctl2:close()
   end)

   it("answers device_add and device_del with no hot-plug slot when the board has none", function()
      local b = plan_board()
      local opened = 0
      local ctl = assert(control.open { path = new_path(), board = b,
                                        open_device = function() opened = opened + 1 end })
      local c = connect(ctl.server.path)
      local v = request(ctl.server, c, { id = 1, cmd = "device_add", device = "0000:00:1e.0" })
      assert.matches("no hot%-plug slot", v.error)
      v = request(ctl.server, c, { id = 2, cmd = "device_del", device = "0000:00:11.0" })
      assert.matches("which is no hot%-plug slot", v.error)
      assert.are.equal(0, opened)           -- refused before anything was opened
      assert.are.equal(1, #b.devices)
      v = request(ctl.server, c, { id = 3, cmd = "device_add", device = "not-a-bdf" })
      assert.matches("^device_add: ", v.error)
      unistd.close(c.fd)
      ctl:close()
   end)

   it("hot-plugs through the board's root ports: device_del ends when the guest powers the slot off", function()
      local pciehp = require "support.pciehp"
      local b = assert(board.new { plan = true, mem_mib = 64, hotplug_slots = 1 })
      local g = pciehp.guest(b, 0x10)
      g.probe()
      local live, closed = {}, 0
      local ctl = assert(control.open {
         path = new_path(), board = b,
         open_device = function(bdf)
            local d = fixture("nvme", bdf)
            live[d] = true
            return d
         end,
         close_device = function(d) live[d] = nil closed = closed + 1 d:close() end })
      local c1, c2 = connect(ctl.server.path), connect(ctl.server.path)
      ctl.server:service()
      local v = request(ctl.server, c1, { id = 1, cmd = "info" })
      assert.is_true(v.result.hotplug)
      v = request(ctl.server, c1, { id = 2, cmd = "device_add", device = "0000:00:03.0", slot = 2 })
      assert.matches("root port 1 is not an empty hot%-plug slot", v.error)
      assert.are.equal(1, closed)                     -- what the failed add opened is closed
      v = request(ctl.server, c1, { id = 3, cmd = "device_add", device = "0000:00:03.0", slot = 1 })
      assert.is_true(v.ok, v.error)
      local added = lines(ctl.server, c2, 1)[1]
      assert.are.same({ "device_added", "0000:00:03.0", "01:00.0" }, { added.event, added.host, added.guest })
      local port = b.ports[1]
      g.isr()                                         -- pciehp sees the button and presence
      g.power_on()
      assert.are.equal("on", port.state)
      -- device_del presses the button; nothing is released until the guest powers off
      v = request(ctl.server, c1, { id = 4, cmd = "device_del", device = "0000:00:03.0" })
      assert.is_true(v.ok, v.error)
      assert.is_true(v.result.removing)
      assert.are.equal("removing", port.state)
      v = request(ctl.server, c1, { id = 5, cmd = "device_del", device = "0000:00:03.0" })
      assert.matches("already being removed", v.error)
      assert.is_not_nil(next(live))                   -- still open: the guest has it
      g.isr()
      g.power_off()                                   -- pciehp unbound the driver, slot off
      ctl.server:service()
      local ev = lines(ctl.server, c2, 1)[1]
      assert.are.same({ "device_removed", "0000:00:03.0", false }, { ev.event, ev.host, ev.surprise })
      assert.is_nil(next(live))
      assert.are.equal(2, closed)
      assert.are.equal("empty", port.state)
      v = request(ctl.server, c1, { id = 6, cmd = "device_del", device = "0000:00:03.0" })
      assert.matches("no device 0000:00:03.0 in the VM", v.error)
      unistd.close(c1.fd)
      unistd.close(c2.fd)
      ctl:close()
      b:close()
   end)

   it("through root ports: a full machine, a boot device, adds while the guest removes: refused, closed",
      function()
      local pciehp = require "support.pciehp"
      local b = assert(board.new { plan = true, mem_mib = 64, hotplug_slots = 1 })
      assert(b:add_device(fixture("edu", "0000:00:11.0")))
      local g = pciehp.guest(b, 0x10)
      g.probe()
      local live, closed = {}, 0
      local ctl = assert(control.open {
         path = new_path(), board = b,
         open_device = function(bdf)
            local d = fixture("nvme", bdf)
            live[d] = true
            return d
         end,
         close_device = function(d) live[d] = nil closed = closed + 1 d:close() end })
      local c = connect(ctl.server.path)
      ctl.server:service()
      local v = request(ctl.server, c, { id = 1, cmd = "device_add", device = "0000:00:03.0" })
      assert.is_true(v.ok, v.error)
      g.isr()
      g.power_on()
      v = request(ctl.server, c, { id = 2, cmd = "device_add", device = "0000:00:05.0" })
      assert.are.equal("device_add: 0000:00:05.0: no empty hot-plug slot (board.new{hotplug_slots = n}, "
         .. "--hotplug-slots N)", v.error)
      assert.are.equal(1, closed)
      v = request(ctl.server, c, { id = 3, cmd = "device_del", device = "0000:00:11.0" })
      assert.are.equal("device_del: 0000:00:11.0: that device is not behind a root port", v.error)
      assert.are.equal(0, next(ctl.removing) and 1 or 0)
      v = request(ctl.server, c, { id = 4, cmd = "device_del", device = "0000:00:03.0" })
      assert.is_true(v.ok, v.error)
      -- while the guest removes it: its slot is taken, and it is still in the VM
      v = request(ctl.server, c, { id = 5, cmd = "device_add", device = "0000:00:05.0", slot = 1 })
      assert.are.equal("device_add: 0000:00:05.0: root port 0 is not an empty hot-plug slot", v.error)
      assert.are.equal(2, closed)
      v = request(ctl.server, c, { id = 6, cmd = "device_add", device = "0000:00:03.0" })
      assert.are.equal("device_add: 0000:00:03.0 is already in the VM (guest 01:00.0)", v.error)
      local open_now = 0
      for _ in pairs(live) do open_now = open_now + 1 end
      assert.are.equal(1, open_now)             -- the one the guest is removing
      g.isr()
      g.power_off()
      ctl.server:service()
      assert.is_nil(next(live))
      assert.are.equal(3, closed)
      assert.are.same({}, ctl.opened)
      assert.are.same({}, ctl.removing)
      assert.are.equal(1, #b.devices)
      assert.are.equal("empty", b.ports[1].state)
      unistd.close(c.fd)
      ctl:close()
      b:close()
   end)

   describe("with hot-plug (the board's add_device and release standing in)", function()
      local function setup()
         local b = plan_board()
         local live, closed = {}, {}
         local ctl = assert(control.open {
            path = new_path(), board = b,
            hotplug = { add = function(d, at) return b:add_device(d, at) end,
                        remove = function(d) b:release(d) return true end },
            open_device = function(bdf)
               if bdf == "0000:00:1f.0" then return nil, "VFIO_GROUP_GET_DEVICE_FD 0000:00:1f.0: No such device", 19 end
               local d = fixture("nvme", bdf)
               live[d] = true
               return d
            end,
            close_device = function(d) live[d] = nil closed[#closed + 1] = d d:close() end })
         return b, ctl, live, closed
      end

      it("adds and removes a device, with events, and reports every error path", function()
         local b, ctl, live, closed = setup()
         local c1, c2 = connect(ctl.server.path), connect(ctl.server.path)
         ctl.server:service()
         -- a device that cannot be opened
         local v = request(ctl.server, c1, { id = 1, cmd = "device_add", device = "00:1f.0" })
         assert.matches("cannot open 0000:00:1f.0: VFIO_GROUP_GET_DEVICE_FD .*No such device %(ENODEV%)", v.error)
         -- one already in the VM (added at boot)
         v = request(ctl.server, c1, { id = 2, cmd = "device_add", device = "0000:00:11.0" })
         assert.matches("0000:00:11.0 is already in the VM %(guest 00:04.0%)", v.error)
         -- a good one
         v = request(ctl.server, c1, { id = 3, cmd = "device_add", device = "0000:00:03.0" })
         assert.is_true(v.ok, v.error)
         assert.are.same({ "0000:00:03.0", "00:05.0" }, { v.result.host, v.result.guest })
         local ev = lines(ctl.server, c2, 1)[1]
         assert.are.same({ "device_added", "0000:00:03.0", "00:05.0" }, { ev.event, ev.device, ev.guest })
         -- again: already there
         v = request(ctl.server, c1, { id = 4, cmd = "device_add", device = "0000:00:03.0" })
         assert.matches("already in the VM %(guest 00:05.0%)", v.error)
         -- removal by guest address, then twice, then an unknown one
         v = request(ctl.server, c1, { id = 5, cmd = "device_del", device = "00:05.0" })
         assert.is_true(v.ok, v.error)
         v = request(ctl.server, c1, { id = 6, cmd = "device_del", device = "0000:00:03.0" })
         assert.matches("no device 0000:00:03.0 in the VM", v.error)
         v = request(ctl.server, c1, { id = 7, cmd = "device_del", device = "0000:00:1d.0" })
         assert.matches("no device", v.error)
         -- what device_add opened is closed when removed; the boot device stays open
         assert.are.equal(1, #closed)
         assert.is_nil(next(live))
         assert.are.equal(1, #b.devices)
         unistd.close(c1.fd)
         unistd.close(c2.fd)
         ctl:close()
      end)

      it("adds a host device whose address reads like a guest address already taken", function()
         local b, ctl = setup()
         local c = connect(ctl.server.path)
         -- the boot device sits at guest 00:04.0; the host's 0000:00:04.0 is another device
         local v = request(ctl.server, c, { id = 1, cmd = "device_add", device = "0000:00:04.0" })
         assert.is_true(v.ok, v.error)
         assert.are.equal("0000:00:04.0", v.result.host)
         assert.are.equal(2, #b.devices)
         unistd.close(c.fd)
         ctl:close()
      end)

      it("into a full machine: a clear error, the opened device closed, the board as it was", function()
         local b, ctl, live, closed = setup()
         for s = 0, 31 do b.reserved[s] = true end   -- every slot of bus 0 taken
         local c = connect(ctl.server.path)
         local v = request(ctl.server, c, { id = 1, cmd = "device_add", device = "0000:00:03.0" })
         assert.matches("device_add: 0000:00:03.0: bus 0 has no free slot", v.error)
         assert.are.equal(1, #closed)
         assert.is_nil(next(live))
         assert.are.equal(1, #b.devices)
         unistd.close(c.fd)
         ctl:close()
      end)

      it("two clients racing for one device: one wins, the other is told", function()
         local b, ctl = setup()
         local c1, c2 = connect(ctl.server.path), connect(ctl.server.path)
         ctl.server:service()
         send(c1, '{"id":1,"cmd":"device_add","device":"0000:00:03.0"}\n')
         send(c2, '{"id":1,"cmd":"device_add","device":"0000:00:03.0"}\n')
         local r1, r2 = reply(ctl.server, c1), reply(ctl.server, c2)
         assert.are_not.equal(r1.ok, r2.ok)
         assert.matches("already in the VM", (r1.ok and r2 or r1).error)
         send(c1, '{"id":2,"cmd":"device_del","device":"0000:00:03.0"}\n')
         send(c2, '{"id":2,"cmd":"device_del","device":"0000:00:03.0"}\n')
         local d1, d2 = reply(ctl.server, c1), reply(ctl.server, c2)
         assert.are_not.equal(d1.ok, d2.ok)
         assert.matches("no device 0000:00:03.0", (d1.ok and d2 or d1).error)
         assert.are.equal(1, #b.devices)
         unistd.close(c1.fd)
         unistd.close(c2.fd)
         ctl:close()
      end)
   end)
end)

describe("vfio-poke --attach", function()
   it("runs Lua inside the VMM and its commands over the socket", function()
      local b = plan_board()
      local ctl = assert(control.open { path = new_path(), board = b })
      -- the VMM's side in a child process, serving until quit (or 30 s)
      local pid = unistd.fork()
      if pid == 0 then
         local t = os.time() + 30
         while not ctl.quit and os.time() < t do ctl.server:wait(0.05) end
         ctl.server:service()
         unistd._exit(ctl.quit and 0 or 1)
      end
      local p = io.popen(("printf '%%s\\n' 'x = 20' '= x * 2 + #board.devices' 'for i = 1, 2 do' "
         .. "'print(\"line\", i)' 'end' 'lspci(\"00:04.0\")' ':pause' ':nope' 'error(\"boom\")' ':quit' "
         .. "| bin/vfio-poke --attach %s 2>&1"):format(ctl.server.path))
      local out = p:read("a")
      local ok = p:close()
      local _, how, code = pwait.wait(pid)
      assert.is_true(ok, out)
      assert.are.same({ "exited", 0 }, { how, code })
      assert.matches("\n41\n", out)
      assert.matches("line\t1\nline\t2\n", out)
      assert.matches("00:04.0 Unclassified device %[00ff%]: Device 1234:11e8", out)
      assert.matches('"state":"paused"', out)
      assert.matches("event: paused", out)
      assert.matches("error: unknown command \"nope\"", out)
      assert.matches("error: eval:1: boom", out)
      assert.matches('"state":"quitting"', out)
      ctl:close()
      -- no VMM there: a clear message, status 1
      local p2 = io.popen("bin/vfio-poke --attach " .. dir .. "/none.sock </dev/null 2>&1")
      local out2 = p2:read("a")
      local ok2, _, rc = p2:close()
      assert.is_falsy(ok2)
      assert.are.equal(1, rc)
      assert.matches("cannot attach to .*none%.sock", out2)
   end)
end)

-- Real-mode guest: cli; hlt; jmp back. With the in-kernel irqchip the HLT never leaves
-- KVM (no interrupt can come), as a Linux guest idles: only a wake ends the run.
local HALT = string.char(0xFA, 0xF4, 0xEB, 0xFD)

local function halted_vm(ncpu)
   local vm, kvm = kvmhost.vm { ram = 0x20000 }
   if not vm then return nil, kvm end
   assert(vm:create_irqchip())
   vm:write(0x1000, HALT)
   local cpus = {}
   for i = 1, ncpu do
      cpus[i] = assert(vm:vcpu(i - 1))
      assert(cpus[i]:setup_real(0, 0x1000))
   end
   return vm, kvm, cpus
end

-- A pipe whose read end becomes readable `after` seconds from now (a child writes it).
-- The write end stays open here too (closed by the caller at the end): a pipe with no
-- writer left reads as hung up, which wakes a run as readiness does.
local function late_pipe(after)
   local r, w = unistd.pipe()
   local pid = unistd.fork()
   if pid == 0 then
      unistd.close(r)
      require("posix.time").nanosleep { tv_sec = 0, tv_nsec = math.floor(after * 1e9) }
      unistd.write(w, "x")
      unistd._exit(0)
   end
   return r, pid, w
end

describe("the run's wake fds #kvm", function()
   it("end a single vCPU's run that idles in an in-kernel HLT", function()
      local vm, kvm, cpus = halted_vm(1)
      if not vm then pending(kvm) return end
      local r, pid, w = late_pipe(0.3)
      local e = assert(cpus[1]:run(nil, { timeout = 30, wake = { r } }))
      assert.are.equal("wake", e.reason)
      pwait.wait(pid)
      -- still readable: the next run wakes at once (level-triggered)
      e = assert(cpus[1]:run(nil, { timeout = 30, wake = { r } }))
      assert.are.equal("wake", e.reason)
      -- drained, and without wake fds, the run ends on its timeout: no wake left behind
      unistd.read(r, 16)
      e = assert(cpus[1]:run(nil, { timeout = 0.2 }))
      assert.are.equal("timeout", e.reason)
      e = assert(cpus[1]:run(nil, { timeout = 0.2, wake = { r } }))
      assert.are.equal("timeout", e.reason)
      -- the last writer gone, the pipe reads as hung up: that wakes a run too
      unistd.close(w)
      e = assert(cpus[1]:run(nil, { timeout = 30, wake = { r } }))
      assert.are.equal("wake", e.reason)
      unistd.close(r)
      vm:close(); kvm:close()
   end)

   it("end vm:run_vcpus while every vCPU waits in KVM", function()
      local vm, kvm, cpus = halted_vm(2)
      if not vm then pending(kvm) return end
      local r, pid, w = late_pipe(0.3)
      local e = assert(vm:run_vcpus(cpus, function() end, { timeout = 30, wake = { r } }))
      assert.are.equal("wake", e.reason)
      pwait.wait(pid)
      unistd.read(r, 16)
      e = assert(vm:run_vcpus(cpus, function() end, { timeout = 0.2, wake = { r } }))
      assert.are.equal("timeout", e.reason)
      unistd.close(w)
      unistd.close(r)
      vm:close(); kvm:close()
   end)

   it("check the option", function()
      local vm, kvm, cpus = halted_vm(1)
      if not vm then pending(kvm) return end
      assert.has_error(function() cpus[1]:run(nil, { wake = 3 }) end)
      assert.has_error(function() cpus[1]:run(nil, { wake = { "x" } }) end)
      local many = {}
      for i = 1, 65 do many[i] = 0 end
      assert.has_error(function() cpus[1]:run(nil, { wake = many }) end)
      vm:close(); kvm:close()
   end)
end)

describe("--control on the command line", function()
   local cli = require "vfio.vmm.cli"
   local how = { prog = "vfio-passthrough", usage = "vfio-passthrough", guest = "guest.elf" }
   it("needs --kernel and a path, and goes with a run", function()
      local o = assert(cli.parse({ "--device", "00:03.0", "--kernel", "bz", "--control", "/tmp/x.sock" }, how))
      assert.are.equal("/tmp/x.sock", o.control)
      local _, err = cli.parse({ "--device", "00:03.0", "--control", "/tmp/x.sock" }, how)
      assert.matches("%-%-control needs %-%-kernel", err)
      _, err = cli.parse({ "--device", "00:03.0", "--kernel", "bz", "--plan", "--control", "/tmp/x" }, how)
      assert.matches("not with %-%-plan", err)
      _, err = cli.parse({ "--device", "00:03.0", "--kernel", "bz", "--control" }, how)
      assert.matches("%-%-control: expected a socket path", err)
   end)
end)
