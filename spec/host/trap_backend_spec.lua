-- The kernel VFIO backend's pread/pwrite path, exercised on the host with a regular
-- file laid out like a VFIO device fd (each region at its own offset), filled from a
-- lab recording; the trap over it must behave exactly like the trap over the replay.
local fixture = require "support.fixture"
local core = require "vfio.core"
local unistd = require "posix.unistd"
local stdlib = require "posix.stdlib"

local STRIDE = 1 << 20   -- region i at i * 1 MiB (the kernel uses i << 40)

local function device_file(fx)
   local fd, path = stdlib.mkstemp("/tmp/luavfio-trap-XXXXXX")
   assert(fd, path)
   local dev = assert(core.device_file(path, "file"))   -- the backend's own handle on it
   os.remove(path)
   local regions = {}
   for i = 0, 8 do
      local r = fx.regions[i]
      if i == 7 then
         regions[7] = { offset = 7 * STRIDE, size = #fx.config, flags = 3 }
         assert(unistd.lseek(fd, 7 * STRIDE, unistd.SEEK_SET))
         assert(unistd.write(fd, fx.config) == #fx.config)
      elseif r and r.size <= STRIDE then
         regions[i] = { offset = i * STRIDE, size = r.size, flags = r.flags }
         for _, c in ipairs(r.data or {}) do
            assert(unistd.lseek(fd, i * STRIDE + c.off, unistd.SEEK_SET))
            assert(unistd.write(fd, c.bytes) == #c.bytes)
         end
      end
   end
   local irqs = {}
   for i = 0, 4 do irqs[i] = fx.irqs[i] end
   return fd, regions, irqs, dev
end

describe("VFIO backend (pread/pwrite at region offsets)", function()
   it("presents the same config and BARs as the replay of the same recording", function()
      for _, name in ipairs { "edu", "e1000e", "nvme", "pci-testdev" } do
         local fx = fixture.load(name)
         local fd, regions, irqs, dev = device_file(fx)
         local be = assert(core.vfio_backend(dev, { regions = regions, irqs = irqs, name = name .. " (file)" }))
         local tv, tr = assert(core.trap(be)), fixture.trap(fx)
         assert.are.same(tr:bars(), tv:bars())
         assert.are.same(tr:caps(), tv:caps())
         for off = 0, tr:info().cfg_size - 4, 4 do
            assert.are.equal(tr:cfg_read(off, 4), tv:cfg_read(off, 4))
         end
         local b0 = tr:bars()[0]
         if b0.size > 0 and b0.size <= STRIDE then
            assert.are.equal(tr:bar_read(0, 0, 4), tv:bar_read(0, 0, 4))
         end
         tv:close(); be:close()
         unistd.close(fd)
      end
   end)

   it("writes BAR data and forwarded config bits at the region's offset", function()
      local fx = fixture.load("edu")
      local fd, regions, irqs, dev = device_file(fx)
      local be = assert(core.vfio_backend(dev, { regions = regions, irqs = irqs, name = "edu (file)" }))
      local t = assert(core.trap(be))
      assert.is_true(t:bar_write(0, 0x40000, 4, 0xcafef00d))
      assert(unistd.lseek(fd, 0x40000, unistd.SEEK_SET))
      assert.are.equal(string.pack("<I4", 0xcafef00d), unistd.read(fd, 4))
      t:cfg_write(4, 2, 0x0002)
      assert(unistd.lseek(fd, 7 * STRIDE + 4, unistd.SEEK_SET))
      assert.are.equal(2, string.unpack("<I2", unistd.read(fd, 2)) & 0x547)
      t:cfg_write(0x10, 4, 0xffffffff)                       -- sizing stays in the shadow
      assert(unistd.lseek(fd, 7 * STRIDE + 0x10, unistd.SEEK_SET))
      assert.are.equal(fx.config:sub(0x11, 0x14), unistd.read(fd, 4))
      t:close(); be:close()
      unistd.close(fd)
   end)

   it("maps mappable regions itself and falls back to pread where it cannot", function()
      local fx = fixture.load("edu")
      local fd, regions, irqs, dev = device_file(fx)
      regions[0].flags = regions[0].flags | 4                -- mappable
      regions[0].mmap = true
      regions[6] = { offset = 6 * STRIDE, size = 0x1000, flags = 1, mmap = true } -- not mappable
      local be = assert(core.vfio_backend(dev, { regions = regions, irqs = irqs, name = "edu (file)" }))
      local m = be:mapped()
      assert.is_true(m[0])
      assert.are.equal(22, m[6])                             -- EINVAL: stays on pread
      local t = assert(core.trap(be))
      assert.are.equal(0x010000ed, t:bar_read(0, 0, 4))
      t:bar_write(0, 0x40008, 8, 0x0123456789abcdef)         -- one 8-byte store
      assert(unistd.lseek(fd, 0x40008, unistd.SEEK_SET))
      assert.are.equal(string.pack("<I8", 0x0123456789abcdef), unistd.read(fd, 8))
      assert.are.equal(0x89abcdef, t:bar_read(0, 0x40008, 4))
      assert.are.equal(0x2345, t:bar_read(0, 0x4000d, 2))    -- unaligned: through pread
      -- the VM layer borrows the mapping for its memory slots instead of mapping again
      -- (offset and length only: a host address never reaches Lua)
      assert.are.same({ 0, regions[0].size }, { be:mapping(0) })
      local none, err, errno = be:mapping(6)
      assert.is_nil(none)
      assert.are.equal("mapping edu (file)[6]: Invalid argument", err)
      assert.are.equal(22, errno)
      none, err = be:mapping(1)
      assert.is_nil(none)
      assert.matches("No such file or directory", err)
      local _, replay = fixture.trap("edu")
      assert.is_nil(replay:mapping(0))                       -- a recording has no mapping
      t:close(); be:close()
      unistd.close(fd)
   end)

   it("reports a failing pread with the operation and the device", function()
      local fx = fixture.load("edu")
      local fd, regions, irqs, dev = device_file(fx)
      unistd.close(fd)
      local be = assert(core.vfio_backend(dev, { regions = regions, irqs = irqs, name = "edu (file)" }))
      local t = assert(core.trap(be))
      dev:close()                                            -- the device goes away under us
      local v, err, errno = t:cfg_read(6, 2)
      assert.is_nil(v)
      assert.matches("config read edu %(file%)%+0x6: Bad file descriptor", err)
      assert.are.equal(9, errno)
      t:close(); be:close()
   end)

   it("is built from a vfio.device in C, which asks the device itself for its regions", function()
      -- A file is no VFIO device: the info ioctl fails, and the error names it and it.
      local path = os.tmpname()
      local dev <close> = assert(core.device_file(path, "0000:00:09.0"))
      local be, err, errno = core.vfio_backend(dev)
      assert.is_nil(be)
      assert.are.equal("VFIO_DEVICE_GET_INFO 0000:00:09.0: Inappropriate ioctl for device", err)
      assert.are.equal(25, errno)
      assert.has_error(function() core.vfio_backend(dev, 5) end)
      os.remove(path)
   end)
end)

describe("vfio.vmm.passthrough", function()
   local passthrough = require "vfio.vmm.passthrough"

   it("recognises devices and backends by type, not by how they print", function()
      local path = os.tmpname()
      local dev <close> = assert(core.device_file(path, "0000:00:09.0"))
      -- a vfio.core device and a vfio.open device (its C device is .handle) alike
      for _, d in ipairs { dev, { handle = dev, bdf = "0000:00:09.0" } } do
         local pt, err = passthrough.new(d)
         assert.is_nil(pt)
         assert.matches("^VFIO_DEVICE_GET_INFO 0000:00:09.0: ", err)
      end
      local impostor = setmetatable({}, { __tostring = function() return "vfio.backend(x)" end })
      assert.has_error(function() passthrough.new(impostor) end,
         "vfio.vmm.passthrough: expected a VFIO device, a backend or a recorded fixture")
      os.remove(path)
   end)
end)
