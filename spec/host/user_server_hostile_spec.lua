-- The vfio-user server (vfio.user.server) against a hostile peer: a scripted client on a
-- raw socket sends malformed and out-of-range messages. Each is refused with the errno
-- the protocol names (an error reply, unless the message was posted or the stream is
-- lost, then the client is dropped), the server goes on serving the next client, and no
-- fd is left behind. The server runs in this process, one poll round at a time; the
-- last tests run bin/vfio-user-serve in the background with this spec as its client (DMA
-- through messages while the client sends requests of its own, --once, SIGINT).
local core = require "vfio.core"
local server = require "vfio.user.server"
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local stat = require "posix.sys.stat"
local perrno = require "posix.errno"
local pwait = require "posix.sys.wait"
local dirent = require "posix.dirent"
local child = require "support.child"

local EINVAL, ENOENT, EEXIST, EMSGSIZE, ENOSYS, ENOTSUP, EPIPE, EIO =
   perrno.EINVAL, perrno.ENOENT, perrno.EEXIST, perrno.EMSGSIZE, perrno.ENOSYS,
   perrno.ENOTSUP, perrno.EPIPE, perrno.EIO

local CMD = { version = 1, dma_map = 2, dma_unmap = 3, device_get_info = 4, region_read = 9,
              region_write = 10, device_set_irqs = 8, device_get_irq_info = 7 }

local function open_fds()
   local n = 0
   for name in dirent.files("/proc/self/fd") do
      if name ~= "." and name ~= ".." then n = n + 1 end
   end
   return n - 1   -- the directory's own
end

-- A raw message: header (id, command, size, flags, error) and a body.
local function raw(id, cmd, body, flags, size)
   body = body or ""
   return string.pack("<I2I2I4I4I4", id, cmd, size or 16 + #body, flags or 0, 0) .. body
end

describe("vfio-user server with a hostile peer", function()
   local dir, path, s, dev, fds_before
   local opened = {}

   local function pump(n)
      for _ = 1, n or 4 do s:step(0) end
   end

   local function connect()
      local fd = assert(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))
      assert(socket.connect(fd, { family = socket.AF_UNIX, path = path }))
      pump(1)
      local c = core.user_connection(fd, { role = "client", max_msg_fds = 4,
                                           peer_max_msg_fds = 64, peer_max_data_xfer_size = 1 << 20 })
      unistd.close(fd)
      opened[#opened + 1] = c
      return c
   end

   -- Send `request` (a command and its fields) or raw bytes; serve; the reply.
   local function ask(c, cmd, fields, fds)
      local ok, err = c:request(cmd, fields, fds)
      assert(ok, err)
      pump()
      return c:recv(1000)
   end
   local function ask_raw(c, bytes, fds)
      assert(c:send_raw(bytes, fds))
      pump()
      return c:recv(200)
   end

   local function versioned()
      local c = connect()
      local r = assert(ask(c, "version", { major = 0, minor = 0, caps = { max_msg_fds = 4 } }))
      assert.is_nil(r.error)
      assert.are.equal(16, r.caps.max_msg_fds)
      -- memory decoding and bus mastering on: the model serves its BARs
      assert.is_nil(assert(ask(c, "region_write", { region = 7, offset = 4, data = "\6\0" })).error)
      return c
   end

   -- The client was dropped: its next read is the end of the stream (or a reset, when
   -- the server closed with bytes of ours unread).
   local function dropped(c)
      pump()
      local m, _, errno = c:recv(500)
      assert.is_nil(m)
      assert.is_true(errno == EPIPE or errno == perrno.ECONNRESET, tostring(errno))
      assert.is_nil(s.client)
      c:close()
   end

   -- A client with INTx's trigger and unmask eventfds given to the server, and the line
   -- asserted by the model (automasked): the client, the trigger, the unmask eventfd.
   local function intx_asserted()
      local c = versioned()
      local trig, unmask = core.eventfd(), core.eventfd()
      assert.is_nil(assert(ask(c, "device_set_irqs", { flags = 0x24, index = 0, start = 0, count = 1 },
                               { trig })).error)
      assert.is_nil(assert(ask(c, "device_set_irqs", { flags = 0x14, index = 0, start = 0, count = 1 },
                               { unmask })).error)
      dev:raise()
      assert.are.equal(1, trig:read())
      return c, trig, unmask
   end

   lazy_setup(function()
      dir = child.private_dir()
      path = dir .. "/sock"
      fds_before = open_fds()
      dev = assert(loadfile("spec/support/user_test_model.lua"))()
      s = assert(server.listen(path, dev, { signals = false }))
   end)

   after_each(function()
      -- a test that failed half-way leaves its client: the next must find the server free
      for _, c in ipairs(opened) do c:close() end
      opened = {}
      if s and not s.closed then pump() end
   end)

   lazy_teardown(function()
      if s then s:close() end
      os.remove(dir)
   end)

   it("makes the socket 0600", function()
      assert.are.equal("rw-------", stat.stat(path).st_mode & tonumber("777", 8) == tonumber("600", 8)
         and "rw-------" or ("%o"):format(stat.stat(path).st_mode))
   end)

   it("refuses every command before VERSION (EINVAL) and negotiates after it", function()
      local c = connect()
      local r = assert(ask(c, "device_get_info", { argsz = 16 }))
      assert.are.equal(EINVAL, r.error)
      r = assert(ask(c, "version", { major = 0, minor = 0 }))
      assert.is_nil(r.error)
      r = assert(ask(c, "device_get_info", { argsz = 16 }))
      assert.are.same({ 9, 5 }, { r.num_regions, r.num_irqs })
      c:close()
   end)

   it("refuses a VERSION with another major (ENOTSUP) and drops that client", function()
      local c = connect()
      local r = assert(ask(c, "version", { major = 1, minor = 0 }))
      assert.are.equal(ENOTSUP, r.error)
      dropped(c)
   end)

   it("refuses a second VERSION (EINVAL)", function()
      local c = versioned()
      assert.are.equal(EINVAL, assert(ask(c, "version", { major = 0, minor = 0 })).error)
      c:close()
   end)

   it("drops a client whose header announces fewer than 16 bytes (the stream is lost)", function()
      local c = versioned()
      c:send_raw(raw(7, CMD.device_get_info, "", 0, 8))
      dropped(c)
   end)

   it("answers a message over the size limit with EMSGSIZE and drops the client", function()
      local c = versioned()
      c:send_raw(raw(8, CMD.region_write, "", 0, 16 << 20))
      pump()
      local r = assert(c:recv(500))
      assert.are.equal(EMSGSIZE, r.error)
      assert.are.equal(8, r.id)
      dropped(c)
   end)

   it("refuses payloads of the wrong size and unknown commands, and keeps the client", function()
      local c = versioned()
      local r = assert(ask_raw(c, raw(9, CMD.device_get_info, "\0\0\0")))
      assert.are.same({ 9, EINVAL }, { r.id, r.error })
      r = assert(ask_raw(c, raw(10, 99, "")))
      assert.are.same({ 10, ENOSYS }, { r.id, r.error })
      r = assert(ask(c, "device_get_info", { argsz = 16 }))
      assert.is_nil(r.error)
      c:close()
   end)

   it("refuses region and interrupt indices out of range (EINVAL)", function()
      local c = versioned()
      assert.are.equal(EINVAL, assert(ask(c, "device_get_region_info", { argsz = 32, index = 9 })).error)
      assert.are.equal(EINVAL, assert(ask(c, "region_read", { region = 9, offset = 0, count = 4 })).error)
      assert.are.equal(EINVAL, assert(ask(c, "device_get_irq_info", { argsz = 16, index = 5 })).error)
      assert.are.equal(EINVAL, assert(ask(c, "device_set_irqs", { flags = 0x21, index = 7, start = 0,
                                                                     count = 1 })).error)
      assert.are.equal(EINVAL, assert(ask(c, "device_set_irqs", { flags = 0x21, index = 2, start = 3,
                                                                     count = 2 })).error)
      c:close()
   end)

   it("refuses offsets past a region and offsets that wrap", function()
      local c = versioned()
      assert.are.equal(EINVAL, assert(ask(c, "region_read", { region = 0, offset = 4094, count = 4 })).error)
      assert.are.equal(EINVAL, assert(ask(c, "region_read", { region = 7, offset = 256, count = 1 })).error)
      local body = string.pack("<I8I4I4", -16, 0, 32)   -- 0xfffffffffffffff0 + 32 wraps
      assert.are.equal(EINVAL, assert(ask_raw(c, raw(40, CMD.region_read, body))).error)
      body = string.pack("<I4I4I8I8I8", 32, 1, 0, -4096, 8192)   -- a DMA map that wraps
      assert.are.equal(EINVAL, assert(ask_raw(c, raw(41, CMD.dma_map, body))).error)
      c:close()
   end)

   it("sends no reply to a posted write, even one it refuses", function()
      local c = versioned()
      assert(c:request("region_write", { region = 9, offset = 0, data = "\1\2\3\4", no_reply = true }))
      local before = s.stats.posted_errors
      local r = assert(ask(c, "region_read", { region = 0, offset = 0, count = 4 }))
      assert.are.equal("USER", r.data)               -- the read's reply, none for the write
      assert.are.equal(before + 1, s.stats.posted_errors)
      c:close()
   end)

   it("drops a client that sends more fds than it advertised (E2BIG, the stream is lost)", function()
      local c = versioned()
      local efds = {}
      for i = 1, 17 do efds[i] = core.eventfd() end
      c:send_raw(raw(50, CMD.device_set_irqs, string.pack("<I4I4I4I4I4", 20, 0x24, 2, 0, 17)), efds)
      for _, e in ipairs(efds) do e:close() end
      dropped(c)
   end)

   it("refuses fds of the wrong kind: a pipe for an eventfd, a socket for memory (EINVAL)", function()
      local c = versioned()
      local r, w = unistd.pipe()
      local reply = assert(ask_raw(c, raw(51, CMD.device_set_irqs, string.pack("<I4I4I4I4I4", 20, 0x24, 0, 0, 1)),
                                   { r }))
      assert.are.equal(EINVAL, reply.error)
      local a, b = core.user_socketpair()
      reply = assert(ask_raw(c, raw(52, CMD.dma_map, string.pack("<I4I4I8I8I8", 32, 3, 0, 0x100000, 0x1000)),
                             { a:fileno() }))
      assert.are.equal(EINVAL, reply.error)
      unistd.close(r)
      unistd.close(w)
      a:close()
      b:close()
      c:close()
   end)

   it("refuses a memfd map past the file's end, and maps what fits", function()
      local c = versioned()
      local ram = core.ram_memfd(0x4000)
      local r = assert(ask(c, "dma_map", { address = 0x10000, size = 0x8000, offset = 0, read = true,
                                           write = true }, { ram }))
      assert.are.equal(EINVAL, r.error)
      r = assert(ask(c, "dma_map", { address = 0x10000, size = 0x4000, offset = 0, read = true,
                                     write = true }, { ram }))
      assert.is_nil(r.error)
      assert.are.equal(1, #dev._maps)
      ram:close()
      c:close()
      pump()
   end)

   it("refuses overlapping DMA maps (EEXIST) and unmapping what was never mapped (ENOENT)", function()
      local c = versioned()
      assert.is_nil(assert(ask(c, "dma_map", { address = 0x1000, size = 0x2000, read = true })).error)
      assert.are.equal(EEXIST, assert(ask(c, "dma_map", { address = 0x2000, size = 0x1000, read = true })).error)
      assert.are.equal(ENOENT, assert(ask(c, "dma_unmap", { argsz = 24, address = 0x8000, size = 0x1000 })).error)
      assert.are.equal(EINVAL, assert(ask(c, "dma_unmap", { argsz = 24, address = 0x1000, size = 0x1000 })).error)
      local r = assert(ask(c, "dma_unmap", { argsz = 24, all = true }))
      assert.is_nil(r.error)
      assert.are.equal(0, #dev._maps)
      c:close()
   end)

   it("answers EIO when the model raises, and keeps serving", function()
      local c = versioned()
      local saved = dev.region_read
      dev.region_read = function() error("a model bug") end
      local r = assert(ask(c, "region_read", { region = 0, offset = 0, count = 4 }))
      dev.region_read = saved
      assert.are.equal(EIO, r.error)
      assert.are.equal("USER", assert(ask(c, "region_read", { region = 0, offset = 0, count = 4 })).data)
      c:close()
   end)

   it("drops a client that disconnects in the middle of a message, and serves the next", function()
      local c = versioned()
      c:send_raw(raw(60, CMD.region_read, string.pack("<I8I4I4", 0, 0, 4)):sub(1, 20))
      pump()
      c:close()
      pump()
      assert.is_nil(s.client)
      local c2 = versioned()
      assert.are.equal("USER", assert(ask(c2, "region_read", { region = 0, offset = 0, count = 4 })).data)
      c2:close()
   end)

   it("watches an INTx unmask eventfd and unmasks the model when it fires", function()
      local c, trig, unmask = intx_asserted()
      local before = s.stats.interrupts_unmasked
      unmask:write(1)                                              -- the client's EOI
      pump()
      assert.are.equal(before + 1, s.stats.interrupts_unmasked)
      assert.are.equal(1, trig:read())                             -- still asserted: again
      dev:lower()
      trig:close()
      unmask:close()
      c:close()
   end)

   it("unmasks INTx only after the client's posted writes sent before the EOI", function()
      local c, trig, unmask = intx_asserted()
      -- the guest's handler: a posted write lowering the line, then its EOI; both are
      -- ready when the server next polls, and the unmask must not overtake the write
      assert(c:request("region_write", { region = 0, offset = 0x24, data = "\0\0\0\0", no_reply = true }))
      local refused = s.stats.posted_errors
      unmask:write(1)
      s:step(0)
      assert.is_nil(trig:read())                                   -- no second interrupt
      assert.are.equal(refused, s.stats.posted_errors)
      trig:close()
      unmask:close()
      c:close()
   end)

   it("takes back a departed client's interrupts and DMA ranges, and resets the device", function()
      local c = versioned()
      local efd = core.eventfd()
      assert.is_nil(assert(ask(c, "device_set_irqs", { flags = 0x24, index = 0, start = 0, count = 1 },
                               { efd })).error)
      assert.is_nil(assert(ask(c, "dma_map", { address = 0, size = 0x1000, read = true })).error)
      dev.state.dma_len = 77
      c:close()
      pump()
      assert.are.equal(0, #dev._maps)
      assert.is_nil(next(dev._triggers[0]))
      assert.are.equal(0, dev.state.dma_len)
      efd:close()
   end)

   it("refuses a peer that is neither its owner nor root, even on a socket others may reach", function()
      local other = assert(server.listen(dir .. "/sock2", dev, { owner = 4242, signals = false }))
      stat.chmod(dir, tonumber("755", 8))
      stat.chmod(dir .. "/sock2", tonumber("666", 8))
      local pid = assert(unistd.fork())
      if pid == 0 then
         unistd.setpid("g", 65534)
         unistd.setpid("u", 65534)
         local fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
         if not socket.connect(fd, { family = socket.AF_UNIX, path = dir .. "/sock2" }) then unistd._exit(2) end
         local got = socket.recv(fd, 16)       -- the server closes it without a word
         unistd._exit(got == "" and 0 or 3)
      end
      local status
      for _ = 1, 200 do
         other:step(10)
         local p, _, code = pwait.wait(pid, pwait.WNOHANG)
         if p == pid then status = code break end
      end
      stat.chmod(dir, tonumber("700", 8))
      assert.are.equal(0, status)
      assert.are.equal(1, other.stats.refused)
      assert.are.equal(0, other.stats.accepted)
      other:close()
   end)

   it("leaves no fd behind", function()
      pump()
      collectgarbage()
      collectgarbage()
      s:close()
      assert.are.equal(fds_before, open_fds())
      assert.is_nil(stat.stat(path))
   end)

   describe("vfio-user-serve in the background, with this spec as its client", function()
      local us = require "support.user_server"
      local psignal = require "posix.signal"

      local function client_of(srv)
         local fd = assert(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))
         assert(socket.connect(fd, { family = socket.AF_UNIX, path = srv.socket }))
         local conn = core.user_connection(fd, { role = "client", max_msg_fds = 4 })
         unistd.close(fd)
         assert(conn:request("version", { major = 0, minor = 0, caps = { max_data_xfer_size = 8 } }))
         assert.is_nil(assert(conn:recv(3000)).error)
         return conn
      end

      it("DMAs through messages, serving this client's requests while it waits for a reply", function()
         local srv = us.start("spec/support/user_test_model.lua")
         local ok, err = pcall(function()
            local conn = client_of(srv)
            local function req(cmd, f) assert(conn:request(cmd, f)) return assert(conn:recv(3000)) end
            assert.is_nil(req("region_write", { region = 7, offset = 4, data = "\6\0" }).error)
            assert.is_nil(req("dma_map", { address = 0x10000, size = 0x1000, read = true, write = true }).error)
            assert.is_nil(req("region_write", { region = 0, offset = 0x100, data = "0123456789abcdef" }).error)
            for off, v in pairs { [0x08] = 0x10010, [0x0c] = 0, [0x10] = 16 } do
               assert.is_nil(req("region_write", { region = 0, offset = off, data = string.pack("<I4", v) }).error)
            end
            -- the command, posted: the model's DMA_WRITE comes in 8-byte messages (this
            -- client's max_data_xfer_size)
            assert(conn:request("region_write", { region = 0, offset = 0x14, data = string.pack("<I4", 1),
                                                  no_reply = true }))
            local first = assert(conn:recv(3000))
            assert.are.same({ "dma_write", 0x10010, "01234567" }, { first.command, first.address, first.data })
            -- a request of ours before we answer: the server serves it meanwhile
            assert(conn:request("region_read", { region = 0, offset = 0, count = 4 }))
            local r = assert(conn:recv(3000))
            assert.is_true(r.reply)
            assert.are.equal("USER", r.data)
            assert(conn:reply(first, { address = first.address, count = 8 }))
            local second = assert(conn:recv(3000))
            assert.are.same({ "dma_write", 0x10018, "89abcdef" }, { second.command, second.address, second.data })
            assert(conn:reply(second, { address = second.address, count = 8 }))
            assert.are.equal(string.pack("<I4", 0), req("region_read", { region = 0, offset = 0x18, count = 4 }).data)
            conn:close()
         end)
         local code = srv.stop()
         assert(ok, tostring(err) .. "\n" .. srv.output())
         assert.are.equal(0, code)
      end)

      it("--once: exits 0 when its client leaves, the socket removed; SIGINT stops it too", function()
         local srv = us.start("spec/support/user_test_model.lua", { args = { "--once" } })
         client_of(srv):close()
         child.wait_for(srv.child, "the server's exit", function() return srv.child.status() end, 10)
         assert.are.equal(0, srv.child.status())
         assert.is_nil(stat.stat(srv.socket))
         srv.stop()
         local srv2 = us.start("spec/support/user_test_model.lua")
         psignal.kill(srv2.pid, psignal.SIGINT)
         child.wait_for(srv2.child, "the server's exit", function() return srv2.child.status() end, 10)
         assert.are.equal(0, srv2.child.status())
         assert.is_nil(stat.stat(srv2.socket))
         srv2.stop()
      end)
   end)
end)
