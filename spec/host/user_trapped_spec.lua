-- vfio.user.trapped: the served device over the trap core, without VFIO. A recording
-- through its replay, and the kernel path's own logic with a stand-in for the vfio.open
-- device (its set_irqs, irq_info, reset and container are recorded calls; the trap runs
-- over the edu recording): what reaches VFIO_DEVICE_SET_IRQS and the IOMMU for what a
-- client asks, served by the real server over a socket. The kernel device itself is the
-- lab's (spec/lab/user_server_spec.lua).
local core = require "vfio.core"
local record = require "vfio.record"
local trapped = require "vfio.user.trapped"
local server = require "vfio.user.server"
local socket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local child = require "support.child"

local EINVAL, ENOENT, EEXIST = 22, 2, 17

local function edu_trap()
   local fx = assert(record.load("spec/fixtures/edu.lua"))
   return fx, assert(core.trap(assert(core.replay(fx)), { pcie = false }))
end

-- A stand-in for a vfio.open device: what the adapter calls, recorded.
local function fake_device()
   local calls = {}
   local container = {
      map_dma = function(_, buf, iova, acc)
         calls[#calls + 1] = { "map_dma", iova, buf:size(), acc.read, acc.write }
         return true
      end,
      unmap_dma = function(_, iova, size)
         calls[#calls + 1] = { "unmap_dma", iova, size }
         return size
      end,
   }
   return {
      bdf = "0000:00:04.0", num_irqs = 5, container = container, calls = calls,
      -- MSI-X: 4 vectors that cannot grow once enabled (NORESIZE), as before Linux 6.5
      irq_info = function(_, i) return { count = ({ [0] = 1, 1, 4, 1, 1 })[i], flags = i == 2 and 15 or 7 } end,
      msix_enabled = 0,
      set_irqs = function(self, index, action, start, count, data)
         calls[#calls + 1] = { "set_irqs", index, action, start, count, data }
         if index == 2 and action == "trigger" then
            if count == 0 then self.msix_enabled = 0
            elseif self.msix_enabled == 0 then self.msix_enabled = start + count
            elseif start + count > self.msix_enabled then
               return nil, "VFIO_DEVICE_SET_IRQS: Invalid argument", 22
            end
         end
         return true
      end,
      reset = function() calls[#calls + 1] = { "reset" } return true end,
      close = function() calls[#calls + 1] = { "close" } end,
   }
end

describe("vfio.user.trapped", function()
   it("serves a recording's config space as the trap shows it, whole or in pieces", function()
      local fx, trap = edu_trap()
      local dev = assert(trapped.recording(fx, trap))
      assert.are.same({ size = 256, flags = 3 }, dev:region_info(7))
      local cfg = assert(dev:region_read(7, 0, 256))
      for off = 0, 252, 4 do
         assert.are.equal(trap:cfg_read(off, 4), (string.unpack("<I4", cfg, off + 1)), ("0x%02x"):format(off))
      end
      assert.are.equal(cfg:sub(3, 7), dev:region_read(7, 2, 5))             -- 2 + 1 + 2 bytes
      assert.are.equal(fx.config:sub(1, 4), cfg:sub(1, 4))
      assert.are.equal(0x100000, dev:region_info(0).size)                    -- edu's 1 MiB BAR0
      assert.are.equal(fx.regions[0].data[1].bytes:sub(1, 8), dev:region_read(0, 0, 8))
      assert.are.same({ count = 1, flags = fx.irqs[1].flags }, dev:irq_info(1))
   end)

   it("refuses regions, offsets and interrupts out of range with EINVAL", function()
      local fx, trap = edu_trap()
      local dev = assert(trapped.recording(fx, trap))
      for _, r in ipairs { { 9, 0, 4 }, { 7, 254, 4 }, { 7, 256, 1 }, { 0, 0x100000, 1 }, { 1, 0, 4 },
                           { 7, -1, 4 }, { 7, 0, 0 } } do
         local ok, _, errno = dev:region_read(r[1], r[2], r[3])
         assert.is_nil(ok)
         assert.are.equal(EINVAL, errno, table.concat(r, ","))
      end
      assert.are.equal(EINVAL, select(3, dev:region_write(6, 0, "\0")))
      assert.are.equal(EINVAL, select(3, dev:irq_info(5)))
      assert.are.equal(EINVAL, select(3, dev:set_irqs(1, 0, 2, "trigger", { false, false })))
      assert.is_true(dev:dma_map { iova = 0x1000, size = 0x1000 })
      assert.are.equal(EEXIST, select(3, dev:dma_map { iova = 0x1800, size = 0x1000 }))
      assert.are.equal(ENOENT, select(3, dev:dma_unmap { iova = 0x8000, size = 0x1000 }))
      assert.are.equal(EINVAL, select(3, dev:dma_unmap { iova = 0x1000, size = 0x800 }))
      assert.are.equal(0x1000, dev:dma_unmap { all = true })
   end)

   it("writes config through the trap (a BAR sized as firmware does, the command register)", function()
      local fx, trap = edu_trap()
      local dev = assert(trapped.recording(fx, trap))
      assert.is_true(dev:region_write(7, 0x10, "\xff\xff\xff\xff"))
      assert.are.equal(0xfff00000, string.unpack("<I4", dev:region_read(7, 0x10, 4)))
      assert.is_true(dev:region_write(7, 0x04, "\x06\x00"))
      assert.are.equal(6, string.unpack("<I2", dev:region_read(7, 0x04, 2)) & 6)
   end)

   it("offers a trusted client the device file for a BAR's pages, less the trap's windows", function()
      local _, trap = edu_trap()
      -- a quirk's window at BAR0+0x80 (as edu-dma-guard has), a stand-in for the device
      -- file: an eventfd (the server only passes the fd on)
      assert(trap:add_window(0, 0x80, 0x20, { read = function() return 0 end, write = function() end }))
      local file = core.eventfd()
      local fake = fake_device()
      fake.fileno = function() return file:fileno() end
      fake.region = function(_, i)
         return i == 0 and { mappable = true, size = 0x100000, offset = 0x5000000000 } or { size = 0 }
      end
      local plain = assert(trapped.kernel(fake, trap))
      assert.is_nil(plain:region_info(0).mmap)                       -- not without trust_client
      local dev = assert(trapped.kernel(fake, trap, { trust_client = true }))
      local info = dev:region_info(0)
      assert.are.same({ offset = 0x5000000000, sparse = { { offset = 0x1000, size = 0xff000 } } },
                      { offset = info.mmap.offset, sparse = info.mmap.sparse })
      assert.is_nil(dev:region_info(7).mmap)                         -- config: never
      -- the server hands it out only when it trusts the client too
      local dir = child.private_dir()
      for _, trust in ipairs { false, true } do
         local srv = assert(server.listen(dir .. "/s", dev, { signals = false, trust_client = trust }))
         local fd = assert(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))
         assert(socket.connect(fd, { family = socket.AF_UNIX, path = dir .. "/s" }))
         srv:step(0)
         local conn = core.user_connection(fd, { role = "client", max_msg_fds = 4 })
         unistd.close(fd)
         assert(conn:request("version", { major = 0, minor = 0 }))
         srv:step(0)
         assert(conn:recv(1000))
         assert(conn:request("device_get_region_info", { argsz = 64, index = 0 }))
         srv:step(0)
         local r = assert(conn:recv(1000))
         if trust then
            assert.are.equal(4, r.flags & 4)                         -- MMAP
            assert.are.equal(0x5000000000, r.offset)
            assert.are.same({ { offset = 0x1000, size = 0xff000 } }, r.sparse)
            assert.are.equal(1, #r.fds)
            assert.are.equal("eventfd", r.fds[1]:kind())
            r.fds[1]:close()
         else
            assert.are.same({ 0, 0, 0 }, { r.flags & 4, r.offset, #r.fds })
            assert.is_nil(r.sparse)
         end
         conn:close()
         srv:close()
      end
      os.remove(dir)
      file:close()
   end)

   describe("a kernel device (a stand-in for vfio.open's) behind the real server", function()
      local dir, path, s, fake, dev, c

      local function pump() for _ = 1, 4 do s:step(0) end end
      local function ask(cmd, fields, fds)
         assert(c:request(cmd, fields, fds))
         pump()
         return assert(c:recv(1000))
      end

      lazy_setup(function()
         dir = child.private_dir()
         path = dir .. "/sock"
         fake = fake_device()
         local _, trap = edu_trap()
         dev = assert(trapped.kernel(fake, trap))
         s = assert(server.listen(path, dev, { signals = false }))
         local fd = assert(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))
         assert(socket.connect(fd, { family = socket.AF_UNIX, path = path }))
         pump()
         c = core.user_connection(fd, { role = "client", max_msg_fds = 4, peer_max_msg_fds = 16 })
         unistd.close(fd)
         assert.is_nil(ask("version", { major = 0, minor = 0, caps = { max_msg_fds = 4 } }).error)
      end)

      lazy_teardown(function()
         if c then c:close() end
         if s then s:close() end
         os.remove(dir)
      end)

      it("hands VFIO the client's trigger eventfds themselves, and unmasks INTx itself when the"
         .. " client's unmask eventfd fires", function()
         local e1, e2 = core.eventfd(), core.eventfd()
         assert.is_nil(ask("device_set_irqs", { flags = 0x24, index = 1, start = 0, count = 1 }, { e1 }).error)
         local call = fake.calls[#fake.calls]
         assert.are.same({ "set_irqs", 1, "trigger", 0, 1 }, { table.unpack(call, 1, 5) })
         assert.are.equal("integer", math.type(call[6][1]))          -- the fd number itself
         assert.is_true(call[6][1] > 2)
         local before = #fake.calls
         assert.is_nil(ask("device_set_irqs", { flags = 0x14, index = 0, start = 0, count = 1 }, { e2 }).error)
         -- kept by the server, not given to VFIO: the unmask must wait for the client's
         -- earlier posted writes (the guest lowering the line before its EOI)
         for i = before + 1, #fake.calls do assert.are_not.equal("set_irqs", fake.calls[i][1]) end
         e2:write(1)                                                     -- the guest's EOI
         pump()
         local call2 = fake.calls[#fake.calls]
         assert.are.same({ "set_irqs", 0, "unmask", 0, 1 }, { table.unpack(call2, 1, 5) })
         assert.is_nil(call2[6])                                         -- DATA_NONE
         assert.is_nil(ask("device_set_irqs", { flags = 0x21, index = 1, start = 0, count = 0 }).error)
         assert.are.same({ "set_irqs", 1, "trigger", 0, 0 }, { table.unpack(fake.calls[#fake.calls], 1, 5) })
         e1:close()
         e2:close()
      end)

      it("gives a device that cannot resize MSI-X the vectors a client sent in two SET_IRQS", function()
         local e = { core.eventfd(), core.eventfd(), core.eventfd(), core.eventfd() }
         assert.is_nil(ask("device_set_irqs", { flags = 0x24, index = 2, start = 0, count = 2 },
                           { e[1], e[2] }).error)
         assert.are.same({ "set_irqs", 2, "trigger", 0, 2 }, { table.unpack(fake.calls[#fake.calls], 1, 5) })
         local before = #fake.calls
         -- the second part: the kernel refuses it (vector 2 past the 2 enabled), the server
         -- turns MSI-X off and on again with all four
         assert.is_nil(ask("device_set_irqs", { flags = 0x24, index = 2, start = 2, count = 2 },
                           { e[3], e[4] }).error)
         local tail = {}
         for i = before + 1, #fake.calls do tail[#tail + 1] = { table.unpack(fake.calls[i], 1, 5) } end
         assert.are.same({ { "set_irqs", 2, "trigger", 2, 2 }, { "set_irqs", 2, "trigger", 0, 0 },
                           { "set_irqs", 2, "trigger", 0, 4 } }, tail)
         local fds = fake.calls[#fake.calls][6]
         for i = 1, 4 do assert.is_true(math.type(fds[i]) == "integer" and fds[i] > 2, "vector " .. i) end
         assert.are.equal(4, fake.msix_enabled)
         -- a range the device has not is refused as it is, MSI-X left as it was
         before = #fake.calls
         assert.are.equal(22, ask("device_set_irqs", { flags = 0x24, index = 2, start = 3, count = 2 },
                                  { e[3], e[4] }).error)
         assert.are.equal(before, #fake.calls)
         assert.is_nil(ask("device_set_irqs", { flags = 0x21, index = 2, start = 0, count = 0 }).error)
         for _, x in ipairs(e) do x:close() end
      end)

      it("maps a client's memfd into the device's container at the client's IOVA", function()
         local ram = core.ram_memfd(0x10000)
         assert.is_nil(ask("dma_map", { address = 0x100000, size = 0x8000, offset = 0x4000, read = true,
                                        write = true }, { ram }).error)
         assert.are.same({ "map_dma", 0x100000, 0x8000, true, true }, fake.calls[#fake.calls])
         ram:close()
      end)

      it("refuses a map without an fd: the device cannot DMA through messages", function()
         local n = #fake.calls
         local r = ask("dma_map", { address = 0xfffc0000, size = 0x40000, read = true })
         assert.are.equal(EINVAL, r.error)
         assert.are.equal(n, #fake.calls)
         local ok, msg = dev:dma_map { iova = 0xfffc0000, size = 0x40000, readable = true }
         assert.is_nil(ok)
         assert.matches("without an fd: a kernel device DMAs by itself", msg)
      end)

      it("unmaps from the container, and resets the device when the client leaves", function()
         assert.is_nil(ask("dma_unmap", { argsz = 24, address = 0x100000, size = 0x8000 }).error)
         assert.are.same({ "unmap_dma", 0x100000, 0x8000 }, fake.calls[#fake.calls])
         local ram = core.ram_memfd(0x4000)
         assert.is_nil(ask("dma_map", { address = 0x200000, size = 0x4000, read = true }, { ram }).error)
         ram:close()
         c:close()
         c = nil
         pump()
         local tail = {}
         for i = #fake.calls - 2, #fake.calls do tail[#tail + 1] = fake.calls[i][1] end
         assert.are.same({ "set_irqs", "unmap_dma", "reset" }, tail)
      end)
   end)
end)
