-- Region access logic of vfio.core on a host without VFIO: a region described by hand
-- over an ordinary file behaves like a device region (pread/pwrite and mmap of the same
-- fd), so bounds, flags, widths, sparse mapping and fallbacks are all checked here.
local core = require "vfio.core"

local SIZE = 64 * 1024
local path = os.tmpname()

local function fresh_file()
   local f = assert(io.open(path, "wb"))
   assert(f:write(string.rep("\0", SIZE)))
   f:close()
end

local function file_bytes(off, n)
   local f = assert(io.open(path, "rb"))
   f:seek("set", off)
   local s = f:read(n)
   f:close()
   return s
end

local dev
before_each(function()
   fresh_file()
   dev = assert(core.device_file(path, "testdev"))
end)
after_each(function() dev:close() end)
teardown(function() os.remove(path) end)

local function region(t)
   local info = { index = 0, offset = 4096, size = 32768, readable = true, writable = true,
      mappable = true }
   for k, v in pairs(t or {}) do info[k] = v end
   return core.region(dev, info)
end

describe("vfio.core region", function()
   it("exposes its description as fields", function()
      local r = region { sparse = { { offset = 0, size = 4096 } } }
      assert.are.equal(0, r.index)
      assert.are.equal(32768, r.size)
      assert.are.equal(4096, r.offset)
      assert.is_true(r.readable and r.writable and r.mappable)
      assert.are.same({ { offset = 0, size = 4096 } }, r.sparse)
      assert.are.equal("testdev", r.device_name)
      assert.matches("vfio.region %(0 of testdev, size 0x8000%)", tostring(r))
      assert.are.equal(dev, r:device())
   end)

   for _, mapped in ipairs { false, true } do
      local how = mapped and "through a mapping" or "through pread/pwrite"
      it("reads and writes 8/16/32/64-bit values " .. how, function()
         local r = region()
         if mapped then assert(r:map()) end
         assert(r:write8(1, 0xab))
         assert(r:write16(2, 0xcdef))
         assert(r:write32(4, 0x12345678))
         assert(r:write64(8, -2))
         assert.are.equal(0xab, r:read8(1))
         assert.are.equal(0xcdef, r:read16(2))
         assert.are.equal(0x12345678, r:read32(4))
         assert.are.equal(-2, r:read64(8))
         assert.are.equal(0xcdefab00, r:read32(0))
         -- the bytes landed at the region's offset in the file, little-endian
         assert.are.equal("\0\xab\xef\xcd\x78\x56\x34\x12", file_bytes(4096, 8))
         -- the last bytes of the region are reachable, one past is not
         assert(r:write32(32768 - 4, 0x01020304))
         assert.are.equal(0x01020304, r:read32(32768 - 4))
         assert.are.equal(0x01, r:read8(32767))
         -- unaligned accesses work too (they take the pread path when mapped)
         assert(r:write32(5, 0xa1b2c3d4))
         assert.are.equal(0xa1b2c3d4, r:read32(5))
      end)

      it("reads and writes byte strings " .. how, function()
         local r = region()
         if mapped then assert(r:map()) end
         local s = ("0123456789abcdef"):rep(300):sub(1, 4097)
         assert(r:write(3, s))
         assert.are.equal(s, r:read(3, #s))
         assert.are.equal(s, file_bytes(4096 + 3, #s))
         assert.are.equal("", r:read(100, 0))
         assert.are.equal(32768, #r:read(0, 32768))
         local buf = core.dmabuf(8192)
         assert(r:read_into(3, 4097, buf, 10))
         assert.are.equal(s, buf:read(10, 4097))
         buf:write(0, ("xy"):rep(50))
         assert(r:write_from(200, 100, buf, 0))
         assert.are.equal(("xy"):rep(50), r:read(200, 100))
         assert.has_error(function() r:read_into(0, 8193, buf, 0) end)
         assert.has_error(function() r:read_into(0, 16, buf, 8190) end)
         buf:close()
      end)

      it("raises on accesses outside the region " .. how, function()
         local r = region()
         if mapped then assert(r:map()) end
         for _, f in ipairs {
            function() r:read32(-1) end,
            function() r:read32(32768 - 3) end,
            function() r:read8(32768) end,
            function() r:read64(math.maxinteger) end,
            function() r:read64(math.mininteger) end,
            function() r:write16(32767, 0) end,
            function() r:read(32760, 9) end,
            function() r:read(0, -1) end,
            function() r:read(math.maxinteger, 2) end,
            function() r:write(32767, "ab") end,
         } do
            assert.has_error(f)
         end
         local ok, err = pcall(r.read32, r, 32766)
         assert.is_false(ok)
         assert.matches("region 0 of testdev: access of 4 bytes at offset 32766 is outside "
            .. "the region %(size 32768%)", err)
      end)
   end

   it("checks value widths and argument types", function()
      local r = region()
      assert.has_error(function() r:write8(0, 256) end)
      assert.has_error(function() r:write8(0, -129) end)
      assert.has_error(function() r:write16(0, 0x10000) end)
      assert.has_error(function() r:write32(0, 0x100000000) end)
      assert.has_error(function() r:write32(0, "x") end)
      assert.has_error(function() r:read32("x") end)
      assert.has_error(function() r:read32(1.5) end)
      assert(r:write8(0, -1))
      assert.are.equal(0xff, r:read8(0))
      -- methods check their receiver without a registry lookup, but still check it
      assert.has_error(function() r.read32({}, 0) end)
      assert.has_error(function() r.read32(io.stdout, 0) end)
      assert.has_error(function() r.read32(dev, 0) end)
      assert.has_error(function() r.read32(nil, 0) end)
      assert.has_error(function() r.read32(setmetatable({}, getmetatable(r)), 0) end)
   end)

   it("enforces the region's read and write flags", function()
      local ro = region { writable = false }
      assert.are.equal(0, ro:read32(0))
      assert.has_error(function() ro:write32(0, 1) end, "region 0 of testdev is not writable")
      assert.has_error(function() ro:write(0, "x") end)
      local wo = region { readable = false }
      assert(wo:write32(0, 7))
      assert.has_error(function() wo:read32(0) end, "region 0 of testdev is not readable")
      assert.has_error(function() wo:read(0, 1) end)
      -- mapped: a read-only mapping still refuses stores, without touching memory
      assert(ro:map())
      assert.are.equal(7, ro:read32(0))
      assert.has_error(function() ro:write32(0, 1) end)
      assert(wo:map())
      assert.has_error(function() wo:read32(0) end)
      assert(wo:write32(0, 9))
      assert.are.equal(9, ro:read32(0))
   end)

   it("maps only the sparse areas; accesses elsewhere fall back to pread/pwrite", function()
      local r = region { sparse = { { offset = 8192, size = 4096 }, { offset = 0, size = 4096 } } }
      local ok, n = r:map()
      assert.is_true(ok)
      assert.are.equal(2, n)
      assert.are.same({ { offset = 8192, size = 4096 }, { offset = 0, size = 4096 } },
         r:mapped())
      -- inside, between and across the areas: same values, same file bytes
      for _, off in ipairs { 0, 4092, 4096, 6000, 8188, 8192, 12284, 20000 } do
         assert(r:write32(off, off + 1))
         assert.are.equal(off + 1, r:read32(off))
         assert.are.equal(string.pack("<I4", off + 1), file_bytes(4096 + off, 4))
      end
      local s = ("z"):rep(10000)
      assert(r:write(2000, s)) -- spans mapped, unmapped, mapped, unmapped
      assert.are.equal(s, r:read(2000, 10000))
      assert.are.equal(s, file_bytes(4096 + 2000, 10000))
      assert(r:map()) -- mapping twice is a no-op
      r:unmap()
      assert.are.same({}, r:mapped())
      assert.are.equal(s, r:read(2000, 10000))
   end)

   it("rejects sparse areas outside the region and bad descriptions", function()
      assert.has_error(function() region { sparse = { { offset = 32768, size = 4096 } } } end)
      assert.has_error(function() region { sparse = { { offset = 0, size = 0 } } } end)
      assert.has_error(function() region { sparse = { { offset = -4096, size = 4096 } } } end)
      assert.has_error(function() region { size = -1 } end)
      assert.has_error(function() region { offset = math.maxinteger } end)
      assert.has_error(function() core.region(dev, { offset = 0 }) end)
   end)

   it("returns nil, message, errno when mmap is not allowed or fails", function()
      local r = region { mappable = false }
      local ok, err, errno = r:map()
      assert.is_nil(ok)
      assert.matches("map region 0 of testdev %(region does not support mmap%)", err)
      assert.are.equal(22, errno)
      -- a misaligned sparse area cannot be mapped: the kernel says EINVAL
      local r2 = region { sparse = { { offset = 100, size = 4096 } } }
      ok, err, errno = r2:map()
      assert.is_nil(ok)
      assert.matches("mmap region 0 of testdev", err)
      assert.are.equal(22, errno)
      assert.are.same({}, r2:mapped())
      assert.are.equal(0, r2:read32(100)) -- still usable through pread
   end)

   it("returns nil, message, errno for I/O failures", function()
      -- a region reaching past the end of the file: pread finds nothing there
      local r = core.region(dev, { offset = SIZE - 4, size = 4096, readable = true,
         writable = false })
      local v, err, errno = r:read32(8)
      assert.is_nil(v)
      assert.matches("read region 0 of testdev at 0x8: ", err)
      assert.are.equal(5, errno)
   end)

   it("is unmapped and refused once the device closes; close is idempotent", function()
      local r = region()
      assert(r:map())
      assert(r:write32(0, 5))
      dev:close()
      dev:close()
      assert.is_true(dev:closed())
      assert.are.same({}, r:mapped())
      assert.has_error(function() r:read32(0) end, "region 0 of testdev: device is closed")
      assert.has_error(function() r:map() end)
      assert.is_false(r:closed())
      r:close()
      r:close()
      assert.is_true(r:closed())
      assert.has_error(function() r:read32(0) end, "region 0 is closed")
      dev = assert(core.device_file(path, "testdev"))
      do
         local r2 <close> = region()
         assert(r2:map())
         assert.are.equal(5, r2:read32(0))
      end
   end)

   it("records a failed REGION_INFO on the region instead of failing", function()
      -- an ordinary file does not answer VFIO ioctls: each region reports ENOTTY
      local r = dev:region(3)
      assert.are.equal(3, r.index)
      assert.are.equal(0, r.size)
      assert.matches("VFIO_DEVICE_GET_REGION_INFO region 3 of testdev: ", r.error)
      assert.are.equal(25, r.errno)
      local v, err, errno = r:read32(0)
      assert.is_nil(v)
      assert.matches("read region 3 of testdev: ", err)
      assert.are.equal(25, errno)
      assert.is_nil((r:map()))
      assert.matches("info failed", tostring(r))
      -- the device itself is still usable
      assert.is_truthy(region():read32(0))
   end)
end)

-- A region described longer than the file behind it (issue 21, item 7): a mapping of it
-- would kill the process with SIGBUS at the first load past the file's end, so map()
-- refuses it (ENXIO, a message that says why) and the backend reads it with pread, which
-- fails cleanly. Run in a child lua5.4, so that a SIGBUS shows as a failure here.
describe("vfio.core region over a file shorter than itself", function()
   it("is never mapped: reads past the file's end fail cleanly, the process lives", function()
      local child = os.tmpname()
      local f = assert(io.open(child, "w"))
      f:write(([=[
package.path, package.cpath = %q, %q
local core = require "vfio.core"
local path = os.tmpname()
local g = assert(io.open(path, "wb")); g:write(("\1"):rep(4096)); g:close()
local dev = assert(core.device_file(path, "short"))
os.remove(path)
local r = core.region(dev, { offset = 0, size = 0x10000, readable = true, writable = true,
                             mappable = true })
local ok, msg, errno = r:map()
print("map", tostring(ok), msg, errno)
print("mapped", #r:mapped())
print("read32", r:read32(0), (r:read32(0x8000)))
print("read", (r:read(0x4000, 16)))
local ofs = core.region(dev, { offset = 0x1000, size = 0x1000, readable = true, mappable = true })
print("map2", (ofs:map()))
local be = assert(core.vfio_backend(dev, { regions = {
   [0] = { offset = 0, size = 0x10000, flags = 7, mmap = true },
   [1] = { offset = 0, size = 0x1000, flags = 7, mmap = true } } }))
local m = be:mapped()
print("backend", tostring(m[0]), tostring(m[1]))
print("bread", be:region_read(0, 0, 4), (be:region_read(0, 0x8000, 4)))
print("done")
]=]):format(package.path, package.cpath))
      f:close()
      local p = io.popen("lua5.4 " .. child .. " 2>&1; echo status $?")
      local out = p:read("a")
      p:close()
      os.remove(child)
      assert.matches("status 0\n$", out)
      assert.matches("map\tnil\tmmap region 0 of short %(offset 0x0 size 0x10000: the file "
                     .. "behind it ends before that%): [^\n]*\t6\n", out)
      assert.matches("mapped\t0\n", out)
      assert.matches("read32\t16843009\tnil\n", out)
      assert.matches("read\tnil\n", out)
      assert.matches("map2\tnil\n", out)
      assert.matches("backend\t6\ttrue\n", out)
      assert.matches("bread\t16843009\tnil\n", out)
      assert.matches("done\n", out)
   end)
end)
