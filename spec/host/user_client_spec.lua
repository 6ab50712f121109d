-- vfio.open("vfio-user:PATH"): luavfio's vfio-user client (csrc/user/user_client.c, the
-- trap backend over it, vfio.user_client) against a server in a child process serving
-- Lua device models (spec/support/user_test_server.lua), and against scripted hostile
-- servers. The client must give the model's own view (info, regions, config space as
-- vfio.decode reads it, BARs, interrupts, DMA, reset), and a server that dies, hangs or
-- sends what it should not must cost a clean error: no hang, no crash, no fd left.
local core = require "vfio.core"
local vfio = require "vfio"
local decode = require "vfio.decode"
local record = require "vfio.record"
local model = require "vfio.user.model"
local passthrough = require "vfio.vmm.passthrough"
local server = require "support.user_test_server"
local pwait = require "posix.sys.wait"
local psignal = require "posix.signal"
local dirent = require "posix.dirent"
local ptime = require "posix.time"

local CONFIG, MSIX, INTX = 7, 2, 0
local SERIAL = "examples/vfio-user/serial_16550a.lua"

-- A device with what the serial card lacks: a 32-bit BAR of registers with a doorbell
-- (raise(value)) and a small DMA engine, a 64-bit BAR2, MSI-X with its table in BAR0.
local function test_device()
   return model.new {
      name = "client test device", vendor = 0x1b36, device = 0x11f0, class = 0xff0000, interrupt_pin = 1,
      bars = {
         { index = 0, kind = "mem32", size = 0x1000, registers = {
            { "scratch", 0x00, reset = 0x5a5a5a5a },
            { "doorbell", 0x04, access = "WO", write = function(d, _, v) d:raise(v) end },
            { "dma_addr", 0x08, width = 8 },
            { "dma_len", 0x10 },
            { "dma_cmd", 0x14, access = "WO", write = function(d, _, v)
                 local addr, n = d:register(0, "dma_addr").value, d:register(0, "dma_len").value
                 if v == 1 then
                    d.state.buf = assert(d:dma_read(addr, n))
                 elseif v == 2 then
                    assert(d:dma_write(addr, d.state.buf))
                 end
              end },
         },
           read = function(d, off, n)
              if off >= 0x100 and off < 0x200 then
                 local b = (d.state.buf or "") .. string.rep("\0", 0x100)
                 return b:sub(off - 0x100 + 1, off - 0x100 + n)
              end
              return string.rep("\0", n)
           end,
           write = function(d, off, bytes)
              if off >= 0x100 and off < 0x200 then d.state.buf = bytes end
           end },
         { index = 2, kind = "mem64", size = 0x2000, prefetchable = true },
      },
      capabilities = { { kind = "msix", table_size = 4, table_bar = 0, table_offset = 0x800, pba_offset = 0xc00 },
                       { kind = "express" } },
      reset = function(d) d.state.buf = nil end,
   }
end

local function fd_count()
   local n = 0
   for _ in dirent.files("/proc/self/fd") do n = n + 1 end
   return n
end

local now = require("support.child").now

-- A scripted server: script(conn) runs in a child on the accepted connection.
local function scripted(script)
   local path, pid = server.fork(function(ls)
      local conn = server.accept(ls)
      script(conn)
      conn:recv(5000) -- hold the connection until the client goes
   end, 1)
   return { path = path, stop = function()
      psignal.kill(pid, psignal.SIGKILL)
      pwait.wait(pid)
      os.remove(path)
   end }
end

local function handshake(conn)
   local m = assert(conn:recv(5000))
   assert(m.command == "version")
   conn:set_limits { peer_max_msg_fds = 64 }
   assert(conn:reply(m, { major = 0, minor = 0, capabilities = { max_msg_fds = 8 } }))
   return m
end

local function le_hdr(id, cmd, size, flags, err)
   return string.pack("<I2I2I4I4I4", id, cmd, size, flags, err or 0)
end

describe("vfio-user client", function()
   local srv, dev
   after_each(function()
      if dev then dev:close() end
      if srv then srv.stop() end
      dev, srv = nil, nil
   end)

   describe("against the serial model", function()
      it("gives the model's info, regions, interrupts and config space", function()
         srv = server.start(SERIAL)
         local want = dofile(SERIAL)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         assert.are.equal("vfio-user", dev.interface)
         local wi = want:info()
         assert.are.same({ wi.num_regions, wi.num_irqs, true, true },
                         { dev.num_regions, dev.num_irqs, dev.info.pci, dev.info.reset })
         for i = 0, 8 do
            local w = want:region_info(i)
            local r = dev:region(i)
            assert.are.same({ i, w.size, w.flags }, { r.index, r.size, r.flags })
         end
         for i = 0, 4 do
            local w, q = want:irq_info(i), assert(dev:irq_info(i))
            assert.are.same({ w.count, w.flags }, { q.count, q.flags })
         end
         local mine = assert(dev.config:read(0, 256))
         assert.are.equal(want:region_read(CONFIG, 0, 256), mine)
         local d = decode.config(mine)
         assert.are.same({ 0x1b36, 0x0002, 0x070002 }, { d.vendor, d.device, d.class })
         assert.are.equal(0x1b36, dev.config:read16(0))
      end)

      it("reaches the UART's registers: scratch, loopback through the I/O BAR", function()
         srv = server.start(SERIAL)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         assert(dev.config:write16(4, 1))         -- I/O decoding on
         local bar = dev:region(0)
         assert(bar:write8(7, 0xa5))              -- scratch
         assert.are.equal(0xa5, bar:read8(7))
         assert(bar:write8(4, 0x10))              -- MCR loopback
         assert(bar:write8(0, 0x41))
         assert.are.equal(0x41, bar:read8(0))     -- looped back to RBR
         local st = dev:status()
         assert.is_true(st.alive)
         assert.is_true(st.region_writes >= 3 and st.region_reads >= 2)
      end)

      it("records the device with vfio.record, and the recording replays its config", function()
         srv = server.start(SERIAL)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         local fx = assert(record.capture(dev, { name = "serial over vfio-user" }))
         assert.are.same({ 0x1b36, 0x0002, 0x070002 }, { fx.vendor, fx.device, fx.class })
         assert.are.equal(assert(dev.config:read(0, 256)), fx.config)
         assert.are.same({ 8, 3 }, { fx.regions[0].size, fx.regions[0].flags })
         local be = assert(record.backend(fx))
         assert.are.equal(fx.config:sub(1, 4), be:config_read(0, 4))
         be:close()
      end)

      it("opens in the REPL (vfio.poke): decode, registers, a DMA buffer the server can map", function()
         srv = server.start(SERIAL)
         local poke = require "vfio.poke"
         local d = assert(poke.open("vfio-user:" .. srv.path))
         assert.are.same({ 0x1b36, 0x0002 }, { d.vendor, d.device })
         assert.matches("Serial controller: Red Hat, Inc%. QEMU PCI 16550A Adapter", tostring(d:lspci()))
         local b = assert(d:dma(4096))
         assert.are.equal(0x100000, b.iova)
         dev = d.dev
      end)

      it("names what vfio-user has not (hot reset, migration, host notices)", function()
         srv = server.start(SERIAL)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         local ok, err, errno = dev:hot_reset()
         assert.is_nil(ok)
         assert.are.equal(95, errno)
         assert.matches("vfio%-user device has none", err)
         assert.are.same({ false, 25 }, { select(1, dev:probe_feature(1)), select(3, dev:probe_feature(1)) })
         assert.is_nil((dev:notifier("request")))
         assert.are.same({}, dev:notices())
         assert.matches("^vfio.user_pci_device %(vfio%-user:", tostring(dev))
      end)

      it("says what to do when nothing listens on the path", function()
         local ok, err, errno = vfio.open("vfio-user:/nonexistent/luavfio.sock")
         assert.is_nil(ok)
         assert.are.equal(2, errno)
         assert.matches("is vfio%-user%-serve running%?", err)
      end)
   end)

   describe("against a device with MSI-X, a 64-bit BAR and DMA", function()
      it("gives BAR registers, the 64-bit BAR and the MSI-X capability as the model has them", function()
         srv = server.start(test_device)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         local want = test_device()
         assert.are.equal(want:region_read(CONFIG, 0, 4096), assert(dev.config:read(0, 4096)))
         assert.are.same({ 0x2000, want:region_info(2).flags }, { dev:region(2).size, dev:region(2).flags })
         local bar = dev:region(0)
         local cmd = dev.config:read16(4)
         assert(dev.config:write16(4, cmd | 2))     -- memory decoding on
         assert.are.equal(0x5a5a5a5a, bar:read32(0))
         assert(bar:write32(0, 0x12345678))
         assert.are.equal(0x12345678, bar:read32(0))
         assert.are.equal(4, assert(dev:irq_info(MSIX)).count)
      end)

      it("delivers the model's raise() to eventfds: INTx, then MSI-X vectors", function()
         srv = server.start(test_device)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         assert(dev.config:write16(4, 2))
         local intx = core.eventfd()
         assert(dev:set_irqs(INTX, "trigger", 0, 1, intx))
         assert(dev:region(0):write32(4, 0))          -- doorbell: raise(0), INTx
         assert.are.equal(1, intx:read())
         local v0, v1 = core.eventfd(), core.eventfd()
         assert(dev:set_irqs(MSIX, "trigger", 0, 2, { v0, v1 }))
         assert(dev:region(0):write32(4, 1))          -- raise(1): MSI-X vector 1
         assert.are.equal(1, v1:read())
         assert.is_nil((v0:read()))
         assert(dev:disable_irq(MSIX))
         for _, e in ipairs { intx, v0, v1 } do e:close() end
      end)

      it("maps a shared DMA buffer: the model reads what the client wrote and writes back", function()
         srv = server.start(test_device)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         assert(dev.config:write16(4, 2 | 4))         -- memory, bus master
         local buf = core.dmabuf(4096, { shared = true })
         assert.are.equal("integer", math.type(buf:fileno()))
         buf:write(0x40, "written by the client")
         assert(dev:dma_map(buf, 0x100000))
         local bar = dev:region(0)
         assert(bar:write64(8, 0x100040))
         assert(bar:write32(0x10, 21))
         assert(bar:write32(0x14, 1))                 -- device reads client memory
         assert.are.equal("written by the client", bar:read(0x100, 21))
         assert(bar:write(0x100, "device says hi"))
         assert(bar:write32(0x10, 14))
         assert(bar:write64(8, 0x100800))
         assert(bar:write32(0x14, 2))                 -- device writes client memory
         assert.are.equal("device says hi", buf:read(0x800, 14))
         assert.are.same({ { iova = 0x100000, size = 4096 } }, dev.container:mappings())
         assert(dev:dma_unmap(0x100000, 4096))
         local ok, _, errno = dev:dma_unmap(0x100000, 4096)  -- nothing there any more
         assert.is_nil(ok)
         assert.are.equal(2, errno)
         local anon = core.dmabuf(4096)
         ok, _, errno = dev:dma_map(anon, 0x200000)
         assert.is_nil(ok)
         assert.are.equal(22, errno)
         buf:close(); anon:close()
      end)

      it("resets the device", function()
         srv = server.start(test_device)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         assert(dev.config:write16(4, 2))
         assert(dev:region(0):write32(0, 1))
         assert(dev:reset())
         assert.are.equal(0, dev.config:read16(4) & 2, "command register back to 0")
         assert(dev.config:write16(4, 2))
         assert.are.equal(0x5a5a5a5a, dev:region(0):read32(0))
      end)

      it("runs under the trap core (vfio.vmm.passthrough) in C", function()
         srv = server.start(test_device)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         local pt = assert(passthrough.new(dev, { layout = false }))
         assert.are.equal(0x11f01b36, pt:cfg_read(0, 4))
         assert.matches("vfio%.backend%(vfio%-user vfio%-user:", tostring(pt.backend))
         local bars = pt:bars()
         assert.are.same({ 0x1000, 0x2000 }, { bars[0].size, bars[2].size })
         assert.is_true(bars[2].is64)
         pt:cfg_write(4, 2, 2)
         assert.are.equal(0x5a5a5a5a, pt:bar_read(0, 0, 4))
         pt:close()
      end)

      it("lays out in the VMM's plan (passthrough.lua --plan --device vfio-user:PATH)", function()
         local ramfd = assert(core.ram_memfd(0x2000))
         srv = server.start(test_device, { mmap = { [2] = { fd = ramfd } } })
         local p = assert(io.popen("lua5.4 passthrough.lua --plan --device vfio-user:" .. srv.path .. " 2>&1"))
         local out = p:read("a")
         local _, _, code = p:close()
         assert.are.equal(0, code, out)
         assert.matches("device vfio%.user_pci_device %(vfio%-user:[^)]+%) 1b36:11f0 class ff0000 %-> guest 00:", out)
         assert.matches("guest RAM 64 MiB %(memfd%)", out)
         assert.matches("BAR2 mem64 prefetch size 0x2000 at 0x%x+\n  %+0%.%.%+0x1fff mapped %(KVM memory slot%)", out)
         assert.matches("BAR0 mem32 +size 0x1000 at 0x%x+ %(not mmap%-able%)", out)
         assert.matches("irq MSI%-X 4 vector%(s%), table BAR0%+0x800", out)
         ramfd:close()
      end)

      it("maps the areas the server gives a sealed memfd for, and reaches the rest by message", function()
         local ramfd = assert(core.ram_memfd(0x2000))
         local sparse = { { offset = 0, size = 0x1000 } }
         srv = server.start(test_device, { mmap = { [2] = { fd = ramfd, sparse = sparse } } })
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         local r = dev:region(2)
         assert.is_true(r.mappable)
         assert.are.same({ { offset = 0, size = 0x1000 } }, r:mapped())
         local before = dev:status().requests
         assert(r:write32(0x10, 0xfeedf00d))
         assert.are.equal(0xfeedf00d, r:read32(0x10))
         assert.are.equal(before, dev:status().requests, "the mapped area takes no message")
         local f = assert(io.open("/proc/self/fd/" .. ramfd:fileno(), "rb"))
         f:seek("set", 0x10)
         assert.are.equal(string.pack("<I4", 0xfeedf00d), f:read(4), "the server's memory")
         f:close()
         assert(r:write32(0x1010, 7))                 -- outside the sparse area: REGION_WRITE
         assert.are.equal(7, r:read32(0x1010))
         assert.are.equal(before + 2, dev:status().requests)
         local be = core.user_backend(dev.handle)
         assert.are.same({ 0, 0x1000 }, { be:mapping(2) })
         be:close()
         ramfd:close()
      end)

      it("refuses to map a server's fd that could fault (an unsealed file), and reads by message", function()
         local path = os.tmpname()
         local fh = io.open(path, "wb"); fh:write(string.rep("\0", 0x2000)); fh:close()
         local plain = io.open(path, "r+b")
         local fdobj = { fileno = function() return require("posix.stdio").fileno(plain) end,
                         size = function() return 0x2000 end }
         srv = server.start(test_device, { mmap = { [2] = { fd = fdobj } } })
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         local info = assert(dev.handle:region_info(2))
         assert.are.equal(1, info.mmap_errno, "EPERM: not sealed against shrinking")
         assert.are.same({}, dev:region(2):mapped())
         assert(dev:region(2):write32(0x20, 9))
         assert.are.equal(9, dev:region(2):read32(0x20))
         plain:close()
         os.remove(path)
      end)
   end)

   describe("a server that goes away", function()
      it("killed mid-session: every access fails at once, through the trap too", function()
         srv = server.start(test_device)
         dev = assert(vfio.open("vfio-user:" .. srv.path))
         local pt = assert(passthrough.new(dev, { layout = false }))
         pt:cfg_write(4, 2, 2)
         srv.stop()
         local t0 = now()
         local v, err, errno = dev.config:read32(0)
         assert.is_nil(v)
         assert.truthy(errno == 104 or errno == 32, "ECONNRESET or EPIPE, got " .. tostring(errno))
         assert.matches("vfio%-user", err)
         assert.is_false(dev:status().alive)
         assert.truthy(dev:status().why:find("closed the connection", 1, true)
                       or dev:status().why:find("Broken pipe", 1, true), dev:status().why)
         -- the trap core's answer (the KVM seam gives the guest the value, all ones; Lua
         -- gets the error with it)
         local bv, berr, berrno = pt:bar_read(0, 0, 4)
         assert.is_nil(bv)
         assert.truthy(berrno == 104 or berrno == 32, berr)
         assert.is_true(now() - t0 < 2)
         pt:close()
      end)

      it("silent: a request times out, and the next fails at once", function()
         srv = scripted(function(conn)
            handshake(conn)
            local m = conn:recv(5000)   -- DEVICE_GET_INFO
            conn:reply(m, { argsz = 16, flags = 3, num_regions = 9, num_irqs = 5 })
            for _ = 1, 9 do
               local q = conn:recv(5000)
               conn:reply(q, { flags = 3, index = q.index, size = q.index == 7 and 256 or 0, argsz = 32 })
            end
            for _ = 1, 5 do
               local q = conn:recv(5000)
               conn:reply(q, { argsz = 16, flags = 0, index = q.index, count = 0 })
            end
            ptime.nanosleep { tv_sec = 10, tv_nsec = 0 }   -- never answers again
         end)
         dev = assert(vfio.open("vfio-user:" .. srv.path, { timeout_ms = 200 }))
         local t0 = now()
         local v, err, errno = dev.config:read32(0)
         assert.is_nil(v)
         assert.are.equal(110, errno)
         assert.matches("did not answer region_read within 200 ms", err)
         assert.is_true(now() - t0 < 1.5)
         t0 = now()
         assert.is_nil((dev.config:read32(4)))
         assert.is_true(now() - t0 < 0.1, "no second wait on a dead server")
      end)
   end)

   describe("a hostile server", function()
      -- Each case: what the server answers VERSION with, and what the client says.
      local function hostile(script, want_errno, want_msg)
         collectgarbage()
         collectgarbage()
         local fds = fd_count()
         srv = scripted(script)
         local d, err, errno = vfio.open("vfio-user:" .. srv.path, { timeout_ms = 500 })
         assert.is_nil(d, "refused")
         assert.are.equal(want_errno, errno, err)
         if want_msg then assert.matches(want_msg, err) end
         collectgarbage()
         collectgarbage()
         assert.are.equal(fds, fd_count(), "no fd left behind")
      end

      it("a short message", function()
         hostile(function(conn)
            conn:recv(5000)
            conn:send_raw(le_hdr(0, 1, 8, 1))
         end, 22)
      end)

      it("an overlong message", function()
         hostile(function(conn)
            conn:recv(5000)
            conn:send_raw(le_hdr(0, 1, 0x7fffffff, 1))
         end, 90)
      end)

      it("a reply with the wrong id", function()
         hostile(function(conn)
            local m = conn:recv(5000)
            m.id = m.id + 5
            conn:reply(m, { major = 0, minor = 0 })
         end, 71, "out of step")
      end)

      it("a reply to another command", function()
         hostile(function(conn)
            local m = conn:recv(5000)
            conn:send_raw(le_hdr(m.id, 4, 32, 1) .. string.pack("<I4I4I4I4", 16, 3, 9, 5))
         end, 71, "command 4")
      end)

      it("an error reply with an errno no system has, or none", function()
         hostile(function(conn)
            local m = conn:recv(5000)
            conn:send_raw(le_hdr(m.id, 1, 16, 0x21, 99999))
         end, 5, "errno 99999")
         srv.stop()
         hostile(function(conn)
            local m = conn:recv(5000)
            conn:send_raw(le_hdr(m.id, 1, 16, 0x21, 0))
         end, 5)
      end)

      it("region info with sparse areas outside the region", function()
         hostile(function(conn)
            handshake(conn)
            local m = conn:recv(5000)
            conn:reply(m, { argsz = 16, flags = 3, num_regions = 9, num_irqs = 5 })
            m = conn:recv(5000)
            -- argsz, flags (R W MMAP CAPS), index, cap_offset, size, offset; the sparse
            -- capability: id 1, version 1, next 0, one area [0x800, +0x1000) of a 4 KiB region
            local body = string.pack("<I4I4I4I4I8I8", 64, 15, 0, 32, 0x1000, 0)
               .. string.pack("<I2I2I4I4I4I8I8", 1, 1, 0, 1, 0, 0x800, 0x1000)
            conn:send_raw(le_hdr(m.id, 5, 16 + #body, 1) .. body)
         end, 22, "malformed")
      end)

      it("region info with an fd of the wrong kind: not mapped, the device still usable", function()
         collectgarbage()
         collectgarbage()
         local fds = fd_count()
         srv = scripted(function(conn)
            handshake(conn)
            local m = conn:recv(5000)
            conn:reply(m, { argsz = 16, flags = 3, num_regions = 9, num_irqs = 0 })
            for _ = 1, 9 do
               local q = conn:recv(5000)
               local efd = core.eventfd()
               conn:reply(q, { flags = 3 | 4, index = q.index, size = q.index == 7 and 256 or 0x1000,
                               argsz = 32 }, { efd })
               efd:close()
            end
            local q = conn:recv(5000)
            conn:reply(q, { offset = q.offset, region = q.region, data = string.rep("\1", q.count) })
         end)
         dev = assert(vfio.open("vfio-user:" .. srv.path, { timeout_ms = 500 }))
         assert.are.equal(19, dev.handle:region_info(0).mmap_errno, "ENODEV: an eventfd is no memory")
         assert.are.equal(0x01010101, dev:region(0):read32(0))
         dev:close(); dev = nil
         collectgarbage()
         assert.are.equal(fds, fd_count(), "the region fds closed with the device")
      end)

      it("too many fds", function()
         hostile(function(conn)
            local m = conn:recv(5000)
            conn:set_limits { peer_max_msg_fds = 64 }
            local list = {}
            for i = 1, 20 do list[i] = core.eventfd() end
            conn:send_raw(le_hdr(m.id, 1, 20, 1) .. string.pack("<I2I2", 0, 0), list)
         end, 7)
      end)

      it("a server request in between (DMA_READ) is refused and the wait goes on", function()
         srv = scripted(function(conn)
            local m = conn:recv(5000)
            conn:request("dma_read", { address = 0, count = 4 })
            conn:reply(m, { major = 0, minor = 0 })
            local e = conn:recv(5000)
            assert(e.reply and e.error == 22)
            m = conn:recv(5000)
            conn:reply(m, { argsz = 16, flags = 3, num_regions = 0, num_irqs = 0 })
         end)
         dev = assert(vfio.open("vfio-user:" .. srv.path, { timeout_ms = 1000 }))
         assert.are.equal(0, dev.num_regions)
         assert.is_nil(dev.config)
      end)
   end)
end)
