-- The multiboot loader against the real guest image and against broken images.
local multiboot = require "vfio.vmm.multiboot"

local GUEST = "build/guest/guest.elf"

local function read(path)
   local f = assert(io.open(path, "rb"))
   local s = f:read("a"); f:close()
   return s
end

-- Guest memory stand-in: one byte per address, bounded like RAM.
local function memory(size)
   local m = { bytes = {}, size = size }
   function m:write(gpa, s)
      assert(gpa >= 0 and gpa + #s <= self.size, "write outside RAM")
      for i = 1, #s do self.bytes[gpa + i - 1] = s:byte(i) end
   end
   function m:fill(gpa, len, b)
      assert(gpa >= 0 and gpa + len <= self.size, "fill outside RAM")
      for i = 0, len - 1 do self.bytes[gpa + i] = b end
   end
   function m:get(gpa, len)
      local t = {}
      for i = 0, len - 1 do t[#t + 1] = string.char(self.bytes[gpa + i] or 0) end
      return table.concat(t)
   end
   return m
end

-- Facts about the ELF file from binutils, independent of the loader.
local function readelf()
   local p = assert(io.popen("readelf -W -h -l " .. GUEST))
   local out = p:read("a"); p:close()
   local entry = tonumber(out:match("Entry point address:%s+(0x%x+)"))
   local segs = {}
   for off, paddr, filesz, memsz in out:gmatch("LOAD%s+(0x%x+)%s+0x%x+%s+(0x%x+)%s+(0x%x+)%s+(0x%x+)") do
      segs[#segs + 1] = { off = tonumber(off), paddr = tonumber(paddr),
                          filesz = tonumber(filesz), memsz = tonumber(memsz) }
   end
   return entry, segs
end

local function patch(s, off, bytes) return s:sub(1, off) .. bytes .. s:sub(off + #bytes + 1) end

describe("vfio.vmm.multiboot", function()
   local image = read(GUEST)

   it("parses the guest ELF as binutils sees it", function()
      local entry, segs = readelf()
      local img = assert(multiboot.parse(image))
      assert.are.equal("elf", img.kind)
      assert.are.equal(entry, img.entry)
      assert.are.equal(#segs, #img.segments)
      for i, s in ipairs(segs) do
         assert.are.equal(s.paddr, img.segments[i].paddr)
         assert.are.equal(s.filesz, #img.segments[i].data)
         assert.are.equal(s.memsz, img.segments[i].memsz)
         assert.are.equal(image:sub(s.off + 1, s.off + s.filesz), img.segments[i].data)
      end
   end)

   it("loads segments, zeroes bss and writes the information structure", function()
      local _, segs = readelf()
      local mem = memory(8 << 20)
      -- Dirty the bss first: the loader must zero it.
      local s = segs[1]
      mem:fill(s.paddr + s.filesz, s.memsz - s.filesz, 0xcc)
      local entry, info = assert(multiboot.load(mem, image, { ram_size = 8 << 20, cmdline = "dev=1234:11e8" }))
      assert.are.equal((readelf()), entry)
      assert.are.equal(image:sub(s.off + 1, s.off + s.filesz), mem:get(s.paddr, s.filesz))
      assert.are.equal(("\0"):rep(s.memsz - s.filesz), mem:get(s.paddr + s.filesz, s.memsz - s.filesz))
      local flags, lower, upper, _, cmd = string.unpack("<I4I4I4I4I4", mem:get(info, 20))
      assert.are.equal(1 | 4 | 64, flags)
      assert.are.equal(639, lower)
      assert.are.equal(7 * 1024, upper)
      assert.are.equal("dev=1234:11e8\0", mem:get(cmd, 14))
      local mlen, maddr = string.unpack("<I4I4", mem:get(info + 44, 8))
      assert.are.equal(48, mlen)
      local _, base1, len1, type1, _, base2, len2, type2 =
         string.unpack("<I4I8I8I4I4I8I8I4", mem:get(maddr, 48))
      assert.are.same({ 0, 0x9fc00, 1, 0x100000, 7 << 20, 1 }, { base1, len1, type1, base2, len2, type2 })
   end)

   it("maps RAM past the hole from 4 GiB in the memory map; mem_upper stops at the hole", function()
      local map = require "vfio.vmm.address_map"
      local function mmap_of(ram_size, below)
         local mem = memory(8 << 20)
         local _, info = assert(multiboot.load(mem, image, { ram_size = ram_size, ram_below_4g = below }))
         local upper = string.unpack("<I4", mem:get(info + 8, 4))
         local mlen, maddr = string.unpack("<I4I4", mem:get(info + 44, 8))
         local out = {}
         for off = 0, mlen - 1, 24 do
            local _, base, len, typ = string.unpack("<I4I8I8I4", mem:get(maddr + off, 24))
            out[#out + 1] = { base, len, typ }
         end
         return out, upper
      end
      local m, upper = mmap_of(6 << 30)
      assert.are.same({ { 0, 0x9fc00, 1 }, { 0x100000, map.HOLE_START - 0x100000, 1 },
                        { 1 << 32, (6 << 30) - map.HOLE_START, 1 } }, m)
      assert.are.equal((map.HOLE_START - 0x100000) // 1024, upper)
      m, upper = mmap_of(16 << 20, 8 << 20)
      assert.are.same({ { 0, 0x9fc00, 1 }, { 0x100000, 7 << 20, 1 }, { 1 << 32, 8 << 20, 1 } }, m)
      assert.are.equal(7 * 1024, upper)
   end)

   it("refuses images that are not multiboot", function()
      local img, err = multiboot.parse(("\0"):rep(10000))
      assert.is_nil(img)
      assert.matches("no valid multiboot header", err)
      -- A header with a wrong checksum is no header.
      local bad = patch(image, 0x1008, "\1\2\3\4")
      assert.matches("no valid multiboot header", select(2, multiboot.parse(bad)))
   end)

   it("refuses ELF64 with a clear message", function()
      local bad = patch(image, 4, "\2")
      assert.are.equal("ELF64 image: multiboot v1 loads ELF32 only", select(2, multiboot.parse(bad)))
   end)

   it("refuses program headers and segments outside the file", function()
      local phoff = string.unpack("<I4", image, 29)
      local bad = patch(image, 28, string.pack("<I4", #image))
      assert.matches("program headers lie outside", select(2, multiboot.parse(bad)))
      -- First PT_LOAD: file size beyond the end of the file (and memsz to match).
      bad = patch(image, phoff + 16, string.pack("<I4I4", 0x7fffffff, 0x7fffffff))
      assert.matches("outside the file", select(2, multiboot.parse(bad)))
      bad = patch(image, phoff + 16, string.pack("<I4I4", 0x100, 0x10))
      assert.matches("file size exceeds memory size", select(2, multiboot.parse(bad)))
   end)

   it("refuses segments that do not fit in guest RAM", function()
      local mem = memory(1 << 20)
      local e, err = multiboot.load(mem, image, { ram_size = 1 << 20 })
      assert.is_nil(e)
      assert.matches("does not fit in 1 MiB of guest RAM", err)
      assert.are.same({}, mem.bytes) -- nothing written before the checks
      e, err = multiboot.load(memory(8 << 20), image, { ram_size = 8 << 20, info_addr = 0x100000 })
      assert.is_nil(e)
      assert.matches("overlaps the multiboot information", err)
   end)

   it("loads an a.out-kludge image (address fields, flag 16)", function()
      local flags = 0x10003
      local hdr = string.pack("<I4I4I4I4I4I4I4I4", 0x1BADB002, flags, (-(0x1BADB002 + flags)) & 0xffffffff,
                              0x200000, 0x200000, 0, 0x200100, 0x200020)
      local code = ("\144"):rep(0x20) -- nops after the header
      local img = assert(multiboot.parse(hdr .. code))
      assert.are.equal("aout", img.kind)
      assert.are.equal(0x200020, img.entry)
      assert.are.equal(0x200000, img.segments[1].paddr)
      assert.are.equal(#hdr + #code, #img.segments[1].data)
      assert.are.equal(0x100, img.segments[1].memsz)
      local mem = memory(4 << 20)
      assert(multiboot.load(mem, hdr .. code, { ram_size = 4 << 20 }))
      assert.are.equal(hdr, mem:get(0x200000, #hdr))
      -- load_addr after header_addr is inconsistent.
      local bad = string.pack("<I4I4I4I4I4I4I4I4", 0x1BADB002, flags, (-(0x1BADB002 + flags)) & 0xffffffff,
                              0x200000, 0x300000, 0, 0, 0x200020)
      assert.matches("inconsistent", select(2, multiboot.parse(bad)))
   end)

   it("never fails or writes outside RAM on corrupted images", function()
      math.randomseed(5)
      local header_area = 0x1100 -- ELF header, program headers and the multiboot header
      for _ = 1, 300 do
         local bad = image
         for _ = 1, math.random(1, 8) do
            local off = math.random(0, header_area - 1)
            bad = patch(bad, off, string.char(math.random(0, 255)))
         end
         local ok, entry, err = pcall(multiboot.load, memory(4 << 20), bad, { ram_size = 4 << 20 })
         assert.is_true(ok, entry) -- the memory stand-in raises on writes outside RAM
         if not entry then assert.is_string(err) else assert.is_true(entry < 4 << 20) end
      end
      -- Truncations at every length of the headers.
      for n = 0, header_area, 7 do
         local img, err = multiboot.parse(image:sub(1, n))
         assert.is_nil(img)
         assert.is_string(err)
      end
   end)

   it("rejects command lines that cannot be passed", function()
      local e, err = multiboot.load(memory(8 << 20), image, { ram_size = 8 << 20, cmdline = "a\0b" })
      assert.is_nil(e)
      assert.matches("command line", err)
   end)
end)
