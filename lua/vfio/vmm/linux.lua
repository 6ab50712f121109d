---
-- The Linux x86 boot protocol (Documentation/arch/x86/boot.rst): parse a bzImage's setup
-- header, copy the kernel, the initrd and the command line into guest RAM, and build
-- boot_params (the "zero page") with an e820 map. The real-mode setup code never runs:
-- there is no firmware, so the loader does its job. Two entries: load() puts the
-- compressed kernel where its decompressor expects it (the 32-bit entry);
-- load_vmlinux() puts an uncompressed vmlinux's segments at their physical addresses,
-- with identity page tables for the 64-bit entry (vfio.vmm.vmlinux makes the vmlinux).
-- Guest memory is anything with write(gpa, bytes) and fill(gpa, len, byte) (a vfio.vm,
-- or a table in specs). Every field comes from an untrusted file and is checked first.
-- @module vfio.vmm.linux
local address_map = require "vfio.vmm.address_map"

local M = {}

-- Where the loader puts things (vfio.vmm.address_map says why there).
local MiB = 1 << 20
M.BOOT_PARAMS = address_map.ZERO_PAGE_START -- the zero page
M.GDT = address_map.GDT_START    -- the boot GDT (selectors 0x10 code, 0x18 data)
M.CMDLINE = address_map.CMDLINE_START
M.HIGH = address_map.HIMEM_START -- where a kernel that cannot move is loaded
M.LOW_RAM_END = address_map.EBDA_START -- conventional memory; the EBDA and BIOS area follow
M.BOOT_CS, M.BOOT_DS = 0x10, 0x18
-- The 64-bit entry's identity map: a PML4, a PDPT and four page directories of 2 MiB
-- pages covering the low 4 GiB, from PML4 to PAGE_TABLES_END. That is all the entry needs:
-- everything the loader writes lies below the hole, and the kernel builds its own map of
-- RAM above 4 GiB (from the e820 map) before it touches it.
M.PML4 = address_map.PAGE_TABLES_START
M.PAGE_TABLES_END = address_map.PAGE_TABLES_END
-- RAM past this is refused (address_map.RAM_SIZE_MAX: RAM and the 64-bit BAR window above
-- it inside a 40-bit guest physical width).
M.RAM_MAX = address_map.RAM_SIZE_MAX
-- A vmlinux without a bzImage around it has no setup header: its command line limit is
-- x86's COMMAND_LINE_SIZE less the NUL.
M.VMLINUX_CMDLINE_SIZE = address_map.CMDLINE_SIZE - 1

-- loadflags and xloadflags bits
M.LOADED_HIGH = 0x01
M.KEEP_SEGMENTS = 0x40
M.CAN_USE_HEAP = 0x80
M.XLF_KERNEL_64 = 0x01

-- e820 types
M.E820_RAM, M.E820_RESERVED = 1, 2

-- boot_params offsets (zero-page.rst) and setup header offsets (boot.rst)
M.OFF = {
   ext_ramdisk_image = 0x0c0, ext_ramdisk_size = 0x0c4, ext_cmd_line_ptr = 0x0c8,
   e820_entries = 0x1e8, e820_table = 0x2d0,
   setup_sects = 0x1f1, boot_flag = 0x1fe, jump = 0x200, header = 0x202, version = 0x206,
   type_of_loader = 0x210, loadflags = 0x211, code32_start = 0x214,
   ramdisk_image = 0x218, ramdisk_size = 0x21c, heap_end_ptr = 0x224,
   cmd_line_ptr = 0x228, initrd_addr_max = 0x22c, kernel_alignment = 0x230,
   relocatable_kernel = 0x234, min_alignment = 0x235, xloadflags = 0x236,
   cmdline_size = 0x238, pref_address = 0x258, init_size = 0x260,
}
local O = M.OFF

local function u8(s, off) return (string.unpack("<I1", s, off + 1)) end
local function u16(s, off) return (string.unpack("<I2", s, off + 1)) end
local function u32(s, off) return (string.unpack("<I4", s, off + 1)) end
local function u64(s, off) return (string.unpack("<I8", s, off + 1)) end

local function align_up(v, a) return (v + a - 1) // a * a end

---
-- parse(image) -> header table (the fields above, plus setup_size, kernel_offset,
-- kernel_size, header_end) or nil, message.
function M.parse(image)
   if type(image) ~= "string" then error("image must be a string", 2) end
   if #image < 0x264 or image:sub(O.header + 1, O.header + 4) ~= "HdrS" then
      return nil, "not a bzImage (no HdrS magic)"
   end
   local h = { version = u16(image, O.version) }
   -- 2.06 gives cmdline_size; 2.10 init_size and pref_address are read below too,
   -- with the values older kernels imply when absent.
   if h.version < 0x206 then
      return nil, ("boot protocol %d.%02d is too old (2.06 or later needed)")
         :format(h.version >> 8, h.version & 0xff)
   end
   h.setup_sects = u8(image, O.setup_sects)
   if h.setup_sects == 0 then h.setup_sects = 4 end
   h.loadflags = u8(image, O.loadflags)
   if h.loadflags & M.LOADED_HIGH == 0 then
      return nil, "kernel is not loaded high (a zImage): only bzImages boot"
   end
   h.setup_size = (h.setup_sects + 1) * 512
   h.kernel_offset = h.setup_size
   h.kernel_size = #image - h.setup_size
   if h.kernel_size <= 0 then return nil, "bzImage truncated: no protected-mode kernel after the setup" end
   h.header_end = 0x202 + u8(image, O.jump + 1) -- the header's length is in its jump
   if h.header_end > h.setup_size or h.header_end < 0x23c then
      return nil, "setup header length is inconsistent with the setup size"
   end
   h.code32_start = u32(image, O.code32_start)
   h.initrd_addr_max = u32(image, O.initrd_addr_max)
   h.kernel_alignment = u32(image, O.kernel_alignment)
   h.relocatable = u8(image, O.relocatable_kernel) ~= 0
   h.cmdline_size = u32(image, O.cmdline_size)
   if h.version >= 0x20a and h.header_end >= 0x264 then
      h.min_alignment = u8(image, O.min_alignment)
      h.xloadflags = u16(image, O.xloadflags)
      h.pref_address = u64(image, O.pref_address)
      h.init_size = u32(image, O.init_size)
   else
      h.min_alignment, h.xloadflags, h.pref_address = 0, 0, M.HIGH
      h.init_size = h.kernel_size * 4 -- no field: the decompressor's usual need, roughly
   end
   if h.kernel_alignment == 0 or h.kernel_alignment & (h.kernel_alignment - 1) ~= 0 then
      if h.relocatable then return nil, ("kernel_alignment 0x%x is not a power of two"):format(h.kernel_alignment) end
      h.kernel_alignment = 0x1000
   end
   if h.pref_address >= address_map.FIRST_ADDR_PAST_32BITS then
      return nil, ("pref_address 0x%x is above 4 GiB"):format(h.pref_address)
   end
   return h
end

---
-- e820(ram_size [, below]) -> {{addr, size, type}}: low RAM, the EBDA and BIOS area (where the MP
-- table lives), RAM from 1 MiB to the hole (or RAM's end), the host bridge's ECAM window,
-- the pages KVM keeps for the real-mode TSS, and RAM past the hole from 4 GiB
-- (address_map.ram_ranges), by address. ECAM is reserved as firmware reserves MMCONFIG:
-- without it Linux takes the hole from RAM's end as free for the BARs and bridge windows
-- it assigns itself (from the largest gap's start, which is ECAM's with RAM up to the
-- hole), and a guest that learns of ECAM (an MCFG) trusts it only where it is reserved.
function M.e820(ram_size, below)
   local ranges = address_map.ram_ranges(ram_size, below)
   local map = {
      { addr = 0, size = M.LOW_RAM_END, type = M.E820_RAM },
      { addr = M.LOW_RAM_END, size = M.HIGH - M.LOW_RAM_END, type = M.E820_RESERVED },
      { addr = M.HIGH, size = ranges[1].size - M.HIGH, type = M.E820_RAM },
      { addr = address_map.ECAM_START, size = address_map.ECAM_SIZE, type = M.E820_RESERVED },
      { addr = address_map.KVM_SYSTEM_PAGES_START, size = address_map.KVM_SYSTEM_PAGES_SIZE,
        type = M.E820_RESERVED },
   }
   if ranges[2] then map[#map + 1] = { addr = ranges[2].start, size = ranges[2].size, type = M.E820_RAM } end
   return map
end

-- Where the initrd goes: below the top of RAM (and initrd_addr_max), above `above`.
local function place_initrd(size, addr_max, above, ram)
   if size == 0 then return nil end
   local top = math.min(addr_max + 1, ram)
   local addr = (top - size) & ~0xfff
   if top < size or addr < above then
      return nil, ("initrd of %d bytes does not fit below 0x%x above the kernel's end 0x%x (--mem %d MiB)")
         :format(size, top, above, ram // MiB)
   end
   return addr
end

-- The placement: where the kernel goes, how far it reaches while it decompresses, and
-- the initrd below the top of RAM (and initrd_addr_max) but above all that.
local function plan(h, low, initrd_size, cmdline)
   local p = {}
   if #cmdline > h.cmdline_size then
      return nil, ("command line of %d bytes exceeds the kernel's cmdline_size %d"):format(#cmdline, h.cmdline_size)
   end
   if cmdline:find("\0", 1, true) then return nil, "command line contains NUL" end
   -- A relocatable kernel loaded at pref_address decompresses in place; one loaded at
   -- 1 MiB copies itself up to the aligned pref_address first. Either way it reaches to
   -- the same end, so the one that avoids the copy wins when it is allowed.
   p.load = h.relocatable and h.pref_address >= M.HIGH and h.pref_address or M.HIGH
   p.entry = p.load == M.HIGH and h.code32_start or p.load
   if not h.relocatable and h.code32_start ~= M.HIGH then
      return nil, ("code32_start 0x%x: a kernel that cannot move must start at 0x%x")
         :format(h.code32_start, M.HIGH)
   end
   local run_at = math.max(align_up(p.load, h.kernel_alignment), h.pref_address)
   p.kernel_end = math.max(run_at + h.init_size, p.load + h.kernel_size)
   if p.kernel_end > low then
      return nil, ("kernel needs %d MiB but --mem gives %d"):format(
         align_up(p.kernel_end, MiB) // MiB, low // MiB)
   end
   local ierr
   p.initrd, ierr = place_initrd(initrd_size, h.initrd_addr_max, p.kernel_end, low)
   if ierr then return nil, ierr end
   return p
end

local function gdt(long)
   -- null, null, then 4 GiB flat code (0x10) and data (0x18), as boot.rst asks for; the
   -- 64-bit entry's code segment has L set and D clear
   return string.pack("<I8I8I8I8", 0, 0, long and 0x00af9b000000ffff or 0x00cf9b000000ffff,
                      0x00cf93000000ffff)
end

local function page_tables()
   local t = { string.pack("<I8", (M.PML4 + 0x1000) | 3) .. ("\0"):rep(4088) }
   local pdpt = {}
   for i = 0, 3 do pdpt[#pdpt + 1] = string.pack("<I8", (M.PML4 + 0x2000 + i * 0x1000) | 3) end
   t[2] = table.concat(pdpt) .. ("\0"):rep(4096 - 32)
   for i = 0, 3 do
      local pd = {}
      for j = 0, 511 do pd[j + 1] = string.pack("<I8", ((i * 512 + j) << 21) | 0x83) end -- present, writable, 2 MiB
      t[#t + 1] = table.concat(pd)
   end
   return table.concat(t)
end

-- boot_params: zeroed, the setup header at 0x1f1, then what the loader fills.
local function write_boot_params(mem, header, loadflags, ram, below, cmdline_addr, initrd, initrd_size)
   local bp = M.BOOT_PARAMS
   local e820 = M.e820(ram, below)
   mem:fill(bp, address_map.ZERO_PAGE_SIZE, 0)
   mem:write(bp + O.setup_sects, header)
   mem:write(bp + O.type_of_loader, string.pack("<I1", 0xff)) -- no registered loader id
   mem:write(bp + O.loadflags, string.pack("<I1", (loadflags | M.CAN_USE_HEAP) & ~M.KEEP_SEGMENTS))
   mem:write(bp + O.heap_end_ptr, string.pack("<I2", 0xfe00))
   mem:write(bp + O.cmd_line_ptr, string.pack("<I4", cmdline_addr))
   mem:write(bp + O.ext_cmd_line_ptr, string.pack("<I4", 0))
   mem:write(bp + O.ramdisk_image, string.pack("<I4I4", (initrd or 0) & 0xffffffff, initrd_size & 0xffffffff))
   mem:write(bp + O.ext_ramdisk_image, string.pack("<I4I4", (initrd or 0) >> 32, initrd_size >> 32))
   mem:write(bp + O.e820_entries, string.pack("<I1", #e820))
   local t = {}
   for i, e in ipairs(e820) do t[i] = string.pack("<I8I8I4", e.addr, e.size, e.type) end
   mem:write(bp + O.e820_table, table.concat(t))
   return bp, e820
end


---
-- load(mem, image, {ram_size=, ram_below_4g= (address_map.ram_ranges' below), cmdline="",
--   initrd=bytes}) ->
--   {entry=, boot_params=, gdt_base=, gdt_limit=, load=, kernel_end=, initrd=, initrd_size=,
--    cmdline=, e820=, header=}, or nil, message. Nothing is written when it fails.
function M.load(mem, image, opts)
   opts = opts or {}
   local ram = assert(opts.ram_size, "ram_size required")
   local cmdline = opts.cmdline or ""
   local initrd = opts.initrd or ""
   local h, err = M.parse(image)
   if not h then return nil, err end
   if ram < 2 * MiB or ram > M.RAM_MAX then return nil, ("RAM size 0x%x unsupported"):format(ram) end
   -- the kernel and the initrd stay below the hole
   local p, perr = plan(h, address_map.low_ram_end(ram, opts.ram_below_4g), #initrd, cmdline)
   if not p then return nil, perr end

   mem:write(p.load, image:sub(h.kernel_offset + 1))
   if #initrd > 0 then mem:write(p.initrd, initrd) end
   mem:write(M.CMDLINE, cmdline .. "\0")
   mem:write(M.GDT, gdt())

   local bp, e820 = write_boot_params(mem, image:sub(O.setup_sects + 1, h.header_end), h.loadflags,
                                      ram, opts.ram_below_4g, M.CMDLINE, p.initrd, #initrd)
   return { entry = p.entry, boot_params = bp, gdt_base = M.GDT, gdt_limit = #gdt() - 1,
            load = p.load, kernel_end = p.kernel_end, initrd = p.initrd, initrd_size = #initrd,
            cmdline = M.CMDLINE, e820 = e820, header = h }
end

-- A setup header for a vmlinux that came without one (boot.rst's fields a 64-bit
-- kernel reads: the magic, the version, and the loader's own), from 0x1f1 to 0x268.
local function vmlinux_header()
   local h = ("\0"):rep(0x268 - O.setup_sects)
   local function put(off, fmt, v)
      local at = off - O.setup_sects
      local b = string.pack(fmt, v)
      h = h:sub(1, at) .. b .. h:sub(at + #b + 1)
   end
   put(O.boot_flag, "<I2", 0xaa55)
   put(O.header, "c4", "HdrS")
   put(O.version, "<I2", 0x20f)
   put(O.kernel_alignment, "<I4", 0x200000)
   put(O.cmdline_size, "<I4", M.VMLINUX_CMDLINE_SIZE)
   return h
end

---
-- load_vmlinux(mem, vml, {ram_size=, ram_below_4g=, cmdline="", initrd=bytes, image=the
-- bzImage it came from, if any}) -> {entry=, boot_params=, gdt_base=, gdt_limit=, cr3=, load=,
-- kernel_end=, initrd=, ...} or nil, message. vml is vfio.vmm.vmlinux.open's (checked
-- against ram_size already); its segments are written here. Nothing is written when the
-- placement fails.
function M.load_vmlinux(mem, vml, opts)
   local ram = assert(opts.ram_size, "ram_size required")
   local cmdline, initrd = opts.cmdline or "", opts.initrd or ""
   if ram < 2 * MiB or ram > M.RAM_MAX then return nil, ("RAM size 0x%x unsupported"):format(ram) end
   local header, loadflags, cmdline_size, initrd_max = vmlinux_header(), M.LOADED_HIGH, M.VMLINUX_CMDLINE_SIZE,
      0x7fffffff
   if opts.image then
      local h, err = M.parse(opts.image)
      if not h then return nil, err end
      header, loadflags = opts.image:sub(O.setup_sects + 1, h.header_end), h.loadflags
      cmdline_size, initrd_max = h.cmdline_size, h.initrd_addr_max
   end
   if #cmdline > cmdline_size then
      return nil, ("command line of %d bytes exceeds the kernel's cmdline_size %d"):format(#cmdline, cmdline_size)
   end
   if cmdline:find("\0", 1, true) then return nil, "command line contains NUL" end
   local initrd_at, ierr = place_initrd(#initrd, initrd_max, vml.end_,
                                        address_map.low_ram_end(ram, opts.ram_below_4g))
   if ierr then return nil, ierr end

   local ok, lerr = require("vfio.vmm.vmlinux").load(mem, vml)
   if not ok then return nil, lerr end
   if #initrd > 0 then mem:write(initrd_at, initrd) end
   mem:write(M.CMDLINE, cmdline .. "\0")
   mem:write(M.GDT, gdt(true))
   mem:write(M.PML4, page_tables())
   local bp, e820 = write_boot_params(mem, header, loadflags, ram, opts.ram_below_4g, M.CMDLINE,
                                      initrd_at, #initrd)
   return { entry = vml.entry, boot_params = bp, gdt_base = M.GDT, gdt_limit = #gdt(true) - 1,
            cr3 = M.PML4, long_mode = true, load = vml.start, kernel_end = vml.end_, initrd = initrd_at,
            initrd_size = #initrd, cmdline = M.CMDLINE, e820 = e820 }
end

return M
