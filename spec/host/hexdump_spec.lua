local hexdump = require "vfio.hexdump"

local function run(cmd, input)
   local tmp = os.tmpname()
   local f = assert(io.open(tmp, "wb")); f:write(input); f:close()
   local p = io.popen(cmd .. " " .. tmp)
   local out = p:read("a")
   p:close()
   os.remove(tmp)
   return out
end

describe("hexdump", function()
   local bytes = {}
   for i = 0, 299 do bytes[#bytes + 1] = string.char((i * 37 + 11) % 256) end
   bytes = table.concat(bytes)

   it("formats like hexdump -C", function()
      if not io.open("/usr/bin/hexdump") then pending("hexdump(1) is not installed") return end
      local want = run("hexdump -C", bytes)
      -- hexdump -C ends with the total length on its own line; we do not print it.
      want = want:gsub("\n%x+\n$", "")
      assert.are.equal(want, hexdump(bytes))
   end)

   it("reads ranges through read(off, n) objects and functions, in chunks", function()
      local calls = {}
      local src = { size = #bytes, read = function(_, off, n)
         calls[#calls + 1] = { off, n }
         return bytes:sub(off + 1, off + n)
      end }
      local text = hexdump(src, 16, 40, { chunk = 16 })
      assert.are.equal(hexdump.format(bytes:sub(17, 56), 16), text)
      assert.are.same({ { 16, 16 }, { 32, 16 }, { 48, 8 } }, calls)
      assert.are.equal(text, hexdump(function(off, n) return bytes:sub(off + 1, off + n) end, 16, 40))
   end)

   it("reads a region in 32-bit loads unless told to read in bulk", function()
      -- a device like QEMU's edu: 64-bit (bulk) loads of its 32-bit registers read all ones
      local regs = "\xed\x00\x00\x01\x78\x56\x34\x12"
      local loads = {}
      local src = { size = 8,
         read = function(_, _, n) loads[#loads + 1] = "bulk"; return string.rep("\xff", n) end,
         read32 = function(_, off) loads[#loads + 1] = off; return (string.unpack("<I4", regs, off + 1)) end }
      assert.matches("^00000000  ed 00 00 01 78 56 34 12", hexdump(src, 0, 8))
      assert.are.same({ 0, 4 }, loads)
      loads = {}
      assert.matches("^00000000  ff ff ff ff ff ff ff ff", hexdump(src, 0, 8, { access = "bulk" }))
      assert.are.same({ "bulk" }, loads)
      -- an unaligned range is read in bulk
      loads = {}
      hexdump(src, 1, 6)
      assert.are.same({ "bulk" }, loads)
   end)

   it("shows little-endian words when grouped", function()
      local line = hexdump("\x78\x56\x34\x12\xef\xbe\xad\xde", 0, nil, { group = 4 })
      assert.matches("^00000000  12345678 deadbeef", line)
   end)

   it("reports read failures with where they happened", function()
      local src = { read = function(_, off) if off >= 32 then return nil, "pread BAR0: Bad address" end
         return string.rep("\0", 16) end }
      local v, err = hexdump(src, 0, 64, { chunk = 16 })
      assert.is_nil(v)
      assert.matches("Bad address", err)
   end)
end)
