---
-- Multiboot v1 loading: parse an ELF32 (or a.out-kludge) multiboot image, copy it into
-- guest memory and build the multiboot information structure. Guest memory is anything
-- with write(gpa, bytes) and fill(gpa, len, byte) (a vfio.vmm.vm, or a table in specs).
-- Every offset and address comes from an untrusted file: each is checked before use.
-- @module vfio.vmm.multiboot
local address_map = require "vfio.vmm.address_map"

local M = {}

local MAGIC = 0x1BADB002
M.BOOT_MAGIC = 0x2BADB002 -- what the loader puts in EAX
local SEARCH = 8192       -- the header must lie in the first 8 KiB, 4-byte aligned

local LOW_MEM_END = address_map.EBDA_START -- conventional memory the guest may use
local HIGH_MEM = address_map.HIMEM_START
local INFO_SIZE = address_map.MULTIBOOT_INFO_SIZE

local function u32(s, off) return (string.unpack("<I4", s, off + 1)) end

local function find_header(image)
   local limit = math.min(#image, SEARCH) - 12
   for off = 0, limit, 4 do
      if u32(image, off) == MAGIC then
         local flags, sum = u32(image, off + 4), u32(image, off + 8)
         if (MAGIC + flags + sum) & 0xffffffff == 0 then
            return off, flags
         end
      end
   end
   return nil
end

local function parse_aout(image, hoff)
   if #image < hoff + 32 then return nil, "multiboot header truncated" end
   local header_addr, load_addr, load_end, bss_end, entry =
      string.unpack("<I4I4I4I4I4", image, hoff + 12 + 1)
   if load_addr > header_addr or header_addr - load_addr > hoff then
      return nil, "multiboot address fields inconsistent (load_addr > header_addr)"
   end
   local foff = hoff - (header_addr - load_addr)
   local size = load_end == 0 and #image - foff or load_end - load_addr
   if load_end ~= 0 and load_end < load_addr or foff + size > #image then
      return nil, "multiboot load_end_addr beyond the file"
   end
   local memsz = size
   if bss_end ~= 0 then
      if bss_end < load_addr + size then return nil, "multiboot bss_end_addr before load end" end
      memsz = bss_end - load_addr
   end
   return { kind = "aout", entry = entry,
            segments = { { paddr = load_addr, data = image:sub(foff + 1, foff + size), memsz = memsz } } }
end

local function parse_elf(image)
   if #image < 52 or image:sub(1, 4) ~= "\127ELF" then
      return nil, "not an ELF file and no multiboot address fields (flag 16)"
   end
   local class, data = image:byte(5), image:byte(6)
   if class == 2 then return nil, "ELF64 image: multiboot v1 loads ELF32 only" end
   if class ~= 1 or data ~= 1 then return nil, "not a little-endian ELF32 image" end
   local etype, machine, _, entry, phoff, _, _, _, phentsize, phnum =
      string.unpack("<I2I2I4I4I4I4I4I2I2I2", image, 17)
   if etype ~= 2 then return nil, "ELF image is not an executable" end
   if machine ~= 3 then return nil, ("ELF machine %d is not i386"):format(machine) end
   if phnum == 0 or phentsize < 32 or phoff + phnum * phentsize > #image then
      return nil, "ELF program headers lie outside the file"
   end
   local segments = {}
   for i = 0, phnum - 1 do
      local p = phoff + i * phentsize
      local ptype, off, _, paddr, filesz, memsz = string.unpack("<I4I4I4I4I4I4", image, p + 1)
      if ptype == 1 and memsz > 0 then -- PT_LOAD
         if filesz > memsz then return nil, ("ELF segment %d: file size exceeds memory size"):format(i) end
         if off + filesz > #image then return nil, ("ELF segment %d lies outside the file"):format(i) end
         segments[#segments + 1] = { paddr = paddr, data = image:sub(off + 1, off + filesz), memsz = memsz }
      end
   end
   if #segments == 0 then return nil, "ELF image has no loadable segment" end
   return { kind = "elf", entry = entry, segments = segments }
end

---
-- parse(image) -> {kind = "elf"|"aout", entry, segments = {{paddr, data, memsz}}, flags}
-- or nil, message.
function M.parse(image)
   if type(image) ~= "string" then error("image must be a string", 2) end
   local hoff, flags = find_header(image)
   if not hoff then return nil, "not a multiboot image: no valid multiboot header in the first 8 KiB" end
   if flags & 0x4 ~= 0 then return nil, "multiboot video mode requests (flag 2) are not supported" end
   local img, err
   if flags & 0x10000 ~= 0 then img, err = parse_aout(image, hoff) else img, err = parse_elf(image) end
   if not img then return nil, err end
   img.flags = flags
   return img
end

local function overlaps(a, alen, b, blen) return a < b + blen and b < a + alen end

---
-- load(mem, image, {ram_size=, ram_below_4g= (address_map.ram_ranges' below), cmdline=,
--   info_addr=0x9000 (address_map.MULTIBOOT_INFO_START)})
--   -> entry, info_addr
-- or nil, message. Segments must lie inside RAM and clear of the information area.
function M.load(mem, image, opts)
   opts = opts or {}
   local ram_size = assert(opts.ram_size, "ram_size required")
   local ranges = address_map.ram_ranges(ram_size, opts.ram_below_4g)
   local ram = ranges[1].size -- the image and the information lie below the hole
   local info = opts.info_addr or address_map.MULTIBOOT_INFO_START
   local cmdline = opts.cmdline or ""
   if #cmdline > 0xdff or cmdline:find("\0", 1, true) then
      return nil, "command line too long or contains NUL"
   end
   local img, err = M.parse(image)
   if not img then return nil, err end
   for i, s in ipairs(img.segments) do
      if s.paddr + s.memsz > ram or s.paddr + s.memsz > address_map.FIRST_ADDR_PAST_32BITS then
         return nil, ("segment %d (0x%x+0x%x) does not fit in %d MiB of guest RAM below the hole")
            :format(i, s.paddr, s.memsz, ram >> 20)
      end
      if overlaps(s.paddr, s.memsz, info, INFO_SIZE) then
         return nil, ("segment %d overlaps the multiboot information at 0x%x"):format(i, info)
      end
   end
   if img.entry >= ram then return nil, ("entry point 0x%x is outside guest RAM"):format(img.entry) end
   for _, s in ipairs(img.segments) do
      mem:write(s.paddr, s.data)
      if s.memsz > #s.data then mem:fill(s.paddr + #s.data, s.memsz - #s.data, 0) end
   end
   -- Information structure: memory sizes (flag 0), command line (2), memory map (6).
   local cmd_addr, mmap_addr = info + 0x100, info + 0xf00
   local upper_kib = ram > HIGH_MEM and (ram - HIGH_MEM) // 1024 or 0
   local mmap = string.pack("<I4I8I8I4", 20, 0, LOW_MEM_END, 1)
   if ram > HIGH_MEM then mmap = mmap .. string.pack("<I4I8I8I4", 20, HIGH_MEM, ram - HIGH_MEM, 1) end
   -- RAM past the hole, from 4 GiB (mem_upper names only what lies below the first hole)
   if ranges[2] then mmap = mmap .. string.pack("<I4I8I8I4", 20, ranges[2].start, ranges[2].size, 1) end
   mem:fill(info, INFO_SIZE, 0)
   mem:write(info, string.pack("<I4I4I4I4I4", 1 | 4 | 64, LOW_MEM_END // 1024, upper_kib, 0, cmd_addr))
   mem:write(info + 44, string.pack("<I4I4", #mmap, mmap_addr))
   mem:write(cmd_addr, cmdline .. "\0")
   mem:write(mmap_addr, mmap)
   return img.entry, info
end

return M
