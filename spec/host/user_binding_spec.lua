-- The vfio-user binding (core.user_socketpair, core.user_connection, vfio.fd) over a
-- socketpair: requests and replies of every kind the first server and client need go
-- through as tables, fds arrive as owned objects, and bytes a hostile peer writes raw to
-- the other end are refused with the errno the C layer names, leaving no fd behind.
local core = require "vfio.core"
local dirent = require "posix.dirent"
local unistd = require "posix.unistd"

local function open_fds()
   collectgarbage(); collectgarbage()        -- fd objects nobody holds are closed first
   local n = 0
   for _ in dirent.files("/proc/self/fd") do n = n + 1 end
   return n
end

local le = string.pack
-- A raw header: id, command, size, flags, error.
local function hdr(id, cmd, size, flags) return le("<I2I2I4I4I4", id, cmd, size, flags or 0, 0) end

describe("vfio-user connections (core.user_socketpair)", function()
   local client, server
   before_each(function()
      client, server = assert(core.user_socketpair {
         max_msg_fds = 8, peer_max_msg_fds = 8, max_data_xfer_size = 4096,
      })
      client:set_limits { role = "client" }
      server:set_limits { role = "server" }
   end)
   after_each(function()
      client:close()
      server:close()
   end)

   it("negotiates the version with the capabilities as tables", function()
      local id = assert(client:request("version", {
         major = 0, minor = 0,
         caps = { max_msg_fds = 16, max_data_xfer_size = 1048576, pgsizes = 4096,
                  max_dma_maps = 65535, write_multiple = true,
                  migration = { pgsize = 4096, max_bitmap_size = 268435456 } },
      }))
      local m = assert(server:recv(1000))
      assert.are.equal("version", m.command)
      assert.are.equal(id, m.id)
      assert.is_false(m.reply)
      assert.are.same({ max_msg_fds = 16, max_data_xfer_size = 1048576, pgsizes = 4096,
                        max_dma_maps = 65535, write_multiple = true,
                        migration = { pgsize = 4096, max_bitmap_size = 268435456 } }, m.caps)
      assert.matches('"max_msg_fds":16', m.json)
      assert(server:reply(m, { major = 0, minor = 0, caps = { max_msg_fds = 8, max_data_xfer_size = 4096 } }))
      local r = assert(client:recv(1000))
      assert.is_true(r.reply)
      assert.are.same({ max_msg_fds = 8, max_data_xfer_size = 4096 }, r.caps)
   end)

   it("passes a DMA map's memfd and SET_IRQS eventfds as owned fd objects", function()
      local ram = assert(core.ram_memfd(0x10000))
      assert(client:request("dma_map", { read = true, write = true, offset = 0x1000,
                                         address = 0xfee00000, size = 0x4000 }, { ram }))
      local m = assert(server:recv(1000))
      assert.are.equal("dma_map", m.command)
      assert.are.equal(0xfee00000, m.address)
      assert.are.equal(0x4000, m.size)
      assert.are.equal(0x1000, m.offset)
      assert.is_true(m.read and m.write)
      assert.are.equal(1, #m.fds)
      assert.are.equal("file", m.fds[1]:kind())
      assert.matches("^vfio%.fd %(fd %d+, file%)$", tostring(m.fds[1]))
      m.fds[1]:close()
      m.fds[1]:close()                                       -- idempotent
      assert.is_true(m.fds[1]:closed())
      assert(server:reply(m))
      assert.is_true(assert(client:recv(1000)).reply)
      ram:close()

      local e1, e2 = assert(core.eventfd()), assert(core.eventfd())
      assert(client:request("device_set_irqs", { flags = 4 | 32, index = 2, start = 0, count = 2 },
                            { e1, e2:fileno() }))
      m = assert(server:recv(1000))
      assert.are.equal(2, #m.fds)
      assert.are.equal("eventfd", m.fds[2]:kind())
      -- the server's copy signals the client's eventfd
      assert(unistd.write(m.fds[1]:fileno(), string.pack("<I8", 1)))
      assert.are.equal(1, e1:read())
      for _, f in ipairs(m.fds) do f:close() end
      e1:close(); e2:close()
   end)

   it("round-trips region info with sparse areas, region I/O, DMA I/O and reset", function()
      assert(client:request("device_get_region_info", { argsz = 32, index = 0 }))
      local m = assert(server:recv(1000))
      assert.are.equal(32, m.argsz)
      local info = { flags = 7, index = 0, size = 0x4000, offset = 0,
                     sparse = { { offset = 0, size = 0x1000 } }, cap_type = { type = 1, subtype = 2 } }
      assert(server:reply(m, info))
      local r = assert(client:recv(1000))
      assert.is_false(r.complete)                             -- argsz 32 holds no caps
      assert.are.equal(32 + 32 + 16, r.argsz)
      -- the chain's start even when it does not fit (QEMU's client refuses a CAPS reply
      -- whose cap_offset is outside [32, argsz]; the kernel's 0 failed its BAR info)
      assert.are.equal(32, r.cap_offset)
      assert(client:request("device_get_region_info", { argsz = r.argsz, index = 0 }))
      m = assert(server:recv(1000))
      assert(server:reply(m, info))
      r = assert(client:recv(1000))
      assert.is_true(r.complete)
      assert.are.same({ { offset = 0, size = 0x1000 } }, r.sparse)
      assert.are.same({ type = 1, subtype = 2 }, r.cap_type)

      assert(client:request("region_write", { region = 0, offset = 0x10, data = "\1\2\3\4", no_reply = true }))
      m = assert(server:recv(1000))
      assert.is_true(m.no_reply)
      assert.are.equal("\1\2\3\4", m.data)
      assert(client:request("region_read", { region = 0, offset = 0x10, count = 4 }))
      m = assert(server:recv(1000))
      assert.is_nil(m.data)
      assert(server:reply(m, { region = 0, offset = 0x10, data = "abcd" }))
      assert.are.equal("abcd", assert(client:recv(1000)).data)

      assert(server:request("dma_write", { address = 0x2000, data = "xyz" }))
      m = assert(client:recv(1000))
      assert.are.equal("dma_write", m.command)
      assert.are.equal("xyz", m.data)
      assert(client:reply(m, { address = 0x2000, count = 3 }))
      assert.are.equal(3, assert(server:recv(1000)).count)

      assert(client:request("device_reset"))
      m = assert(server:recv(1000))
      assert(server:error(m, 95))                             -- EOPNOTSUPP
      r = assert(client:recv(1000))
      assert.are.equal(95, r.error)
   end)

   it("raises on bad arguments and returns nil, msg, errno on a closed peer", function()
      assert.has_error(function() client:request("no_such_command") end)
      assert.has_error(function() client:request("region_read", { offset = "x" }) end)
      assert.has_error(function() client:reply({ id = 1 }) end)
      local _, msg, err = client:recv(0)
      assert.are.equal(11, err)                              -- EAGAIN: nothing yet
      assert.matches("vfio%-user connection", msg)
      server:close()
      _, msg, err = client:recv(1000)
      assert.are.equal(32, err)                              -- EPIPE: closed between messages
      assert.matches("closed by the peer", msg)
      client:close()
      client:close()
      assert.is_true(client:closed())
      assert.has_error(function() client:recv() end)
   end)
end)

describe("hostile bytes written raw to a vfio-user connection", function()
   -- Each case: a fresh pair, the bytes (and fds) from the peer's end, the errno the
   -- receiving server must return; the fds the process holds are counted around it.
   local ram = assert(core.ram_memfd(0x10000))
   local ev = assert(core.eventfd())
   local cases = {
      { "a size below the header", hdr(1, 13, 8), nil, 22 },
      { "a type neither request nor reply", hdr(1, 13, 16, 2), nil, 22 },
      { "a size past the limits", hdr(1, 10, 1 << 30), { ram }, 90 },                 -- EMSGSIZE
      { "more fds than max_msg_fds", hdr(1, 13, 16), { ev, ev, ev }, 7 },              -- E2BIG
      { "fds on a reset", hdr(1, 13, 16), { ev }, 22 },
      { "an unknown command", hdr(1, 99, 16), nil, 38 },                               -- ENOSYS
      { "a write whose count passes the body", hdr(1, 10, 16 + 16 + 2)
           .. le("<I8I4I4", 0, 0, 8) .. "ab", nil, 22 },
      { "a read past max_data_xfer_size", hdr(1, 9, 32) .. le("<I8I4I4", 0, 0, 4097), nil, 7 },
      { "a read whose range wraps", hdr(1, 9, 32) .. le("<I8I4I4", -2, 0, 4), nil, 22 },
      { "a DMA map with an eventfd", hdr(1, 2, 48) .. le("<I4I4I8I8I8", 32, 3, 0, 0x1000, 0x1000),
        { ev }, 22 },
      { "a DMA map past its memfd", hdr(1, 2, 48) .. le("<I4I4I8I8I8", 32, 3, 0xf000, 0x1000, 0x2000),
        { ram }, 22 },
      { "SET_IRQS with a memfd", hdr(1, 8, 36) .. le("<I4I4I4I4I4", 20, 4 | 32, 2, 0, 1),
        { ram }, 22 },
      { "a DMA_READ request to a server", hdr(1, 11, 32) .. le("<I8I8", 0, 4), nil, 22 },
      { "version JSON of the wrong type",
        hdr(1, 1, 16 + 4 + 31) .. le("<I2I2", 0, 0) .. '{"capabilities":{"pgsizes":"4"}}' .. "\0",
        nil, 22 },
   }
   for _, case in ipairs(cases) do
      local what, bytes, fds, errno = case[1], case[2], case[3], case[4]
      it("refuses " .. what .. " with errno " .. errno .. ", no fd left behind", function()
         local before = open_fds()
         local peer, server = assert(core.user_socketpair { max_msg_fds = 2, max_data_xfer_size = 4096 })
         server:set_limits { role = "server" }
         assert(peer:send_raw(bytes, fds))
         local m, msg, err, h = server:recv(1000)
         assert.is_nil(m)
         assert.are.equal(errno, err, msg)
         if errno ~= 7 and h then                              -- a header known: answerable
            assert.are.equal(1, h.id)
            assert(server:error(h, err))
            local r = assert(peer:recv(1000))
            assert.are.equal(err, r.error)
         end
         peer:close(); server:close()
         assert.are.equal(before, open_fds())
      end)
   end

   it("refuses a peer gone in the middle of a message with its fds in flight", function()
      local before = open_fds()
      local peer, server = assert(core.user_socketpair { max_msg_fds = 2 })
      assert(peer:send_raw(hdr(1, 10, 40) .. "abc", { ev, ram }))
      assert.are.equal(11, select(3, server:recv(0)))        -- EAGAIN: incomplete
      peer:close()
      local m, _, err = server:recv(1000)
      assert.is_nil(m)
      assert.are.equal(104, err)                              -- ECONNRESET
      server:close()
      assert.are.equal(before, open_fds())
   end)

   it("keeps the fds of a message nobody took until the next one and closes them then", function()
      local before = open_fds()
      local peer, server = assert(core.user_socketpair { max_msg_fds = 2 })
      assert(peer:request("dma_map", { address = 0, size = 0x1000, read = true }, { ram }))
      local held = { msg = assert(server:recv(1000)) }
      assert.is_false(held.msg.fds[1]:closed())
      assert.are.equal(before + 3, open_fds())               -- two sockets and the fd
      held.msg = nil                                          -- open_fds collects it
      assert.are.equal(before + 2, open_fds())               -- collected: closed
      peer:close(); server:close()
      assert.are.equal(before, open_fds())
   end)
end)
