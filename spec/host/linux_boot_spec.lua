-- The Linux boot protocol loader (vfio.vmm.linux) against the lab's Debian kernel, and
-- the MP table (vfio.vmm.mptable) decoded here independently of its builder (and by
-- biosdecode when dmidecode is installed). Needs no /dev/kvm.
local linux = require "vfio.vmm.linux"
local mptable = require "vfio.vmm.mptable"

local MiB = 1 << 20

-- The lab kernel, found as lab/cache.sh finds the cache.
local function kernel_path()
   local cache = os.getenv("LUAVFIO_CACHE")
   if not cache or cache == "" then
      cache = (os.getenv("XDG_CACHE_HOME") or ((os.getenv("HOME") or "") .. "/.cache")) .. "/luavfio"
   end
   local dir = cache .. "/lab/kernel"
   local f = io.open(dir .. "/version")
   local ver = f and f:read("l")
   if f then f:close() end
   return dir .. "/boot/vmlinuz-" .. (ver or "VERSION"), ver ~= nil
end

local read = require("support.lspci").slurp

local function patch(s, off, bytes) return s:sub(1, off) .. bytes .. s:sub(off + #bytes + 1) end

local memory = require("support.guest_memory").new

describe("vfio.vmm.linux: the boot protocol loader", function()
   local path, have_version = kernel_path()
   local image = read(path)
   local function need_kernel()
      if not image then
         pending(("no lab kernel at %s (%s): lab/setup downloads it"):format(path,
                 have_version and "missing" or "no version file"))
         return true
      end
   end

   it("parses the setup header at the offsets of boot.rst", function()
      if need_kernel() then return end
      local h = assert(linux.parse(image))
      local function at(fmt, off) return (string.unpack("<" .. fmt, image, off + 1)) end
      assert.is_true(h.version >= 0x20a)
      assert.are.equal(at("I2", 0x206), h.version)
      local sects = at("B", 0x1f1)
      assert.are.equal(sects == 0 and 4 or sects, h.setup_sects)
      assert.are.equal((h.setup_sects + 1) * 512, h.kernel_offset)
      assert.are.equal(#image - h.kernel_offset, h.kernel_size)
      assert.are.equal(1, h.loadflags & 1)                       -- LOADED_HIGH
      assert.are.equal(0x100000, h.code32_start)
      assert.is_true(h.relocatable)
      assert.are.equal(at("I4", 0x230), h.kernel_alignment)
      assert.are.equal(at("I8", 0x258), h.pref_address)
      assert.are.equal(at("I4", 0x260), h.init_size)
      assert.are.equal(at("I4", 0x22c), h.initrd_addr_max)
      assert.are.equal(at("I2", 0x236), h.xloadflags)
      assert.are.equal(1, h.xloadflags & 1)                      -- a 64-bit kernel
      assert.are.equal(at("I4", 0x238), h.cmdline_size)
      assert.are.equal(0x202 + image:byte(0x202), h.header_end)
      -- the version string the header points at names the file's version (file(1)
      -- reads it the same way; here the path says what it should be)
      local kv = at("I2", 0x20e) + 0x200
      local ver = path:match("vmlinuz%-(.+)$")
      assert.are.equal(ver, image:sub(kv + 1, kv + #ver))
   end)

   it("loads kernel, initrd and command line and fills boot_params", function()
      if need_kernel() then return end
      local h = assert(linux.parse(image))
      local ram = 256 * MiB
      local mem = memory(ram)
      local initrd = ("\x1f\x8b"):rep(5000)
      local info = assert(linux.load(mem, image, { ram_size = ram, cmdline = "console=ttyS0 quiet", initrd = initrd }))
      -- relocatable: loaded at pref_address, entered at the load address
      assert.are.equal(h.pref_address, info.load)
      assert.are.equal(h.pref_address, info.entry)
      assert.are.equal(h.pref_address + h.init_size, info.kernel_end)
      assert.are.equal(image:sub(h.kernel_offset + 1, h.kernel_offset + 4096), mem:get(info.load, 4096))
      -- the initrd: page-aligned, at the top of RAM, above the kernel's reach
      assert.are.equal((ram - #initrd) & ~0xfff, info.initrd)
      assert.is_true(info.initrd >= info.kernel_end)
      assert.are.equal(initrd:sub(1, 64), mem:get(info.initrd, 64))
      assert.are.equal("console=ttyS0 quiet\0", mem:get(info.cmdline, 20))
      local bp = mem:get(info.boot_params, 4096)
      local function f(fmt, off) return (string.unpack("<" .. fmt, bp, off + 1)) end
      -- the image's setup header, copied, then the loader's fields
      assert.are.equal("HdrS", bp:sub(0x203, 0x206))
      assert.are.equal(h.version, f("I2", 0x206))
      assert.are.equal(image:sub(0x1f2, 0x20f), bp:sub(0x1f2, 0x20f))
      assert.are.equal(0xff, f("B", 0x210))                      -- type_of_loader
      assert.are.equal(0x81, f("B", 0x211) & 0xc1)               -- LOADED_HIGH | CAN_USE_HEAP
      assert.are.equal(0xfe00, f("I2", 0x224))                   -- heap_end_ptr
      assert.are.equal(info.cmdline, f("I4", 0x228))             -- cmd_line_ptr
      assert.are.equal(info.initrd, f("I4", 0x218))              -- ramdisk_image
      assert.are.equal(#initrd, f("I4", 0x21c))                  -- ramdisk_size
      assert.are.equal(0, f("I4", 0x0c0))                        -- ext_ramdisk_image
      assert.are.equal(0, f("I4", 0x0c4))                        -- ext_ramdisk_size
      assert.are.equal(0, f("I4", 0x0c8))                        -- ext_cmd_line_ptr
      -- e820: low RAM, the EBDA/BIOS hole, RAM from 1 MiB, ECAM, KVM's TSS pages
      local n = f("B", 0x1e8)
      assert.are.equal(5, n)
      local e = {}
      for i = 0, n - 1 do
         local addr, size, typ = string.unpack("<I8I8I4", bp, 0x2d0 + 20 * i + 1)
         e[#e + 1] = { addr, size, typ }
      end
      assert.are.same({ { 0, 0x9fc00, 1 }, { 0x9fc00, 0x60400, 2 }, { 0x100000, ram - 0x100000, 1 },
                        { 0xb0000000, 17 << 20, 2 }, { 0xfffbc000, 0x4000, 2 } }, e)
      -- the boot GDT: flat code at 0x10, flat data at 0x18
      assert.are.equal(31, info.gdt_limit)
      assert.are.equal(string.pack("<I8I8", 0x00cf9b000000ffff, 0x00cf93000000ffff), mem:get(info.gdt_base + 16, 16))
   end)

   it("places the initrd below initrd_addr_max when that is lower than the top of RAM", function()
      if need_kernel() then return end
      local h = assert(linux.parse(image))
      local max = h.pref_address + h.init_size + 2 * MiB - 1
      local img = patch(image, 0x22c, string.pack("<I4", max))
      local info = assert(linux.load(memory(512 * MiB), img, { ram_size = 512 * MiB, initrd = ("x"):rep(10000) }))
      assert.are.equal((max + 1 - 10000) & ~0xfff, info.initrd)
   end)

   it("loads a kernel that cannot move at 1 MiB, entered at code32_start", function()
      if need_kernel() then return end
      local img = patch(image, 0x234, "\0")
      local info = assert(linux.load(memory(256 * MiB), img, { ram_size = 256 * MiB }))
      assert.are.equal(0x100000, info.load)
      assert.are.equal(0x100000, info.entry)
      assert.is_nil(info.initrd)
   end)

   it("explains each input it refuses, writing nothing", function()
      local mem = memory(256 * MiB)
      local _, err = linux.load(mem, ("\0"):rep(4096), { ram_size = 256 * MiB })
      assert.are.equal("not a bzImage (no HdrS magic)", err)
      _, err = linux.parse("short")
      assert.are.equal("not a bzImage (no HdrS magic)", err)
      if need_kernel() then return end
      local h = assert(linux.parse(image))
      _, err = linux.load(mem, patch(image, 0x206, string.pack("<I2", 0x205)), { ram_size = 256 * MiB })
      assert.are.equal("boot protocol 2.05 is too old (2.06 or later needed)", err)
      _, err = linux.load(mem, image, { ram_size = 64 * MiB })
      local need = (h.pref_address + h.init_size + MiB - 1) // MiB
      assert.are.equal(("kernel needs %d MiB but --mem gives 64"):format(need), err)
      local big = ("x"):rep(200 * MiB)
      _, err = linux.load(mem, image, { ram_size = 256 * MiB, initrd = big })
      assert.matches(("^initrd of %d bytes does not fit below 0x10000000"):format(#big), err)
      _, err = linux.load(mem, image, { ram_size = 256 * MiB, cmdline = ("a"):rep(h.cmdline_size + 1) })
      assert.matches("exceeds the kernel's cmdline_size", err)
      _, err = linux.load(mem, patch(image, 0x211, "\0"), { ram_size = 256 * MiB })
      assert.matches("not loaded high", err)
      _, err = linux.load(mem, image:sub(1, h.kernel_offset), { ram_size = 256 * MiB })
      assert.matches("truncated", err)
      assert.are.same({}, mem.chunks)
   end)

   it("never raises on corrupted headers", function()
      if need_kernel() then return end
      math.randomseed(10)
      local head = image:sub(1, 0x1000)
      for _ = 1, 300 do
         local bad = head
         for _ = 1, math.random(1, 6) do
            bad = patch(bad, math.random(0x1f0, 0x26f), string.char(math.random(0, 255)))
         end
         local ok, h, err = pcall(linux.parse, bad .. ("\0"):rep(4096))
         assert.is_true(ok, h)
         assert.is_true(h ~= nil or type(err) == "string")
      end
   end)
end)

-- An independent decoder of the MP table: floating pointer, header, entries.
local function decode_mp(s, addr)
   local mp = {}
   local fp = s:sub(1, 16)
   local sig, ptr, len, rev, _, f1, f2 = string.unpack("<c4I4BBBBB", fp)
   mp.fp = { sig = sig, ptr = ptr, len = len, rev = rev, f1 = f1, f2 = f2 }
   local sum = 0
   for i = 1, 16 do sum = sum + fp:byte(i) end
   mp.fp.sum = sum & 0xff
   local off = ptr - addr
   local hsig, blen, hrev, _, oem, prod, _, _, count, lapic = string.unpack("<c4I2BBc8c12I4I2I2I4", s, off + 1)
   mp.hdr = { sig = hsig, len = blen, rev = hrev, oem = oem, product = prod, count = count, lapic = lapic }
   sum = 0
   for i = off + 1, off + blen do sum = sum + s:byte(i) end
   mp.hdr.sum = sum & 0xff
   mp.cpus, mp.buses, mp.ioapics, mp.ints, mp.lints = {}, {}, {}, {}, {}
   local p = off + 44
   for _ = 1, count do
      local t = s:byte(p + 1)
      if t == 0 then
         local _, id, ver, flags, sig2, feat = string.unpack("<BBBBI4I4", s, p + 1)
         mp.cpus[#mp.cpus + 1] = { id = id, ver = ver, en = flags & 1, bsp = flags >> 1 & 1, sig = sig2, feat = feat }
         p = p + 20
      else
         if t == 1 then
            local _, id, name = string.unpack("<BBc6", s, p + 1)
            mp.buses[id] = name
         elseif t == 2 then
            local _, id, ver, flags, a = string.unpack("<BBBBI4", s, p + 1)
            mp.ioapics[#mp.ioapics + 1] = { id = id, ver = ver, en = flags & 1, addr = a }
         else
            local _, it, flags, bus, irq, dst, pin = string.unpack("<BBI2BBBB", s, p + 1)
            local list = t == 3 and mp.ints or mp.lints
            list[#list + 1] = { type = it, flags = flags, bus = bus, irq = irq, dst = dst, pin = pin }
         end
         p = p + 8
      end
   end
   mp.end_off = p
   return mp
end

describe("vfio.vmm.mptable", function()
   it("builds a table that decodes to what was asked for, with valid checksums", function()
      local pci = { { slot = 1, pin = 1, ioapic_pin = 16 }, { slot = 2, pin = 4, ioapic_pin = 19 } }
      local s, addr = mptable.build { cpus = 3, pci = pci, cpu_signature = 0xa00f11, cpu_features = 0x178bfbff }
      assert.are.equal(0xf0000, addr)
      local mp = decode_mp(s, addr)
      assert.are.same({ sig = "_MP_", ptr = addr + 16, len = 1, rev = 4, f1 = 0, f2 = 0, sum = 0 }, mp.fp)
      assert.are.equal("PCMP", mp.hdr.sig)
      assert.are.equal(4, mp.hdr.rev)
      assert.are.equal(0, mp.hdr.sum)
      assert.are.equal(0xfee00000, mp.hdr.lapic)
      assert.are.equal(#s - 16, mp.hdr.len)
      assert.are.equal(#s, mp.end_off)                 -- the count covers every byte
      assert.are.equal(3 + 2 + 1 + 16 + 2 + 2, mp.hdr.count)
      for i, c in ipairs(mp.cpus) do
         assert.are.same({ id = i - 1, ver = 0x14, en = 1, bsp = i == 1 and 1 or 0, sig = 0xa00f11,
                           feat = 0x178bfbff }, c)
      end
      assert.are.same({ [0] = "PCI   ", [1] = "ISA   " }, mp.buses)
      assert.are.same({ { id = 3, ver = 0x11, en = 1, addr = 0xfec00000 } }, mp.ioapics)
      for irq = 0, 15 do
         assert.are.same({ type = 0, flags = 0, bus = 1, irq = irq, dst = 3, pin = irq }, mp.ints[irq + 1])
      end
      assert.are.same({ type = 0, flags = 0x0f, bus = 0, irq = 1 << 2 | 0, dst = 3, pin = 16 }, mp.ints[17])
      assert.are.same({ type = 0, flags = 0x0f, bus = 0, irq = 2 << 2 | 3, dst = 3, pin = 19 }, mp.ints[18])
      assert.are.same({ { type = 3, flags = 0, bus = 1, irq = 0, dst = 0xff, pin = 0 },
                        { type = 1, flags = 0, bus = 1, irq = 0, dst = 0xff, pin = 1 } }, mp.lints)
   end)

   it("is found where Linux scans, by biosdecode too (when dmidecode is installed)", function()
      local s, addr = mptable.build { cpus = 2 }
      assert.is_true(addr >= 0xf0000 and addr < 0x100000 and addr % 16 == 0)
      if not os.execute("command -v biosdecode >/dev/null 2>&1") then
         pending("no biosdecode (Debian's dmidecode): the independent decoder above still ran")
         return
      end
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write(("\0"):rep(addr), s, ("\0"):rep(0x100000 - addr - #s))
      f:close()
      local p = assert(io.popen("biosdecode -d " .. path))
      local out = p:read("a")
      p:close()
      os.remove(path)
      assert.matches("Intel Multiprocessor present", out)
      assert.matches("Specification Revision: 1.4", out)
      assert.matches(("Configuration Table Address: 0x%08X"):format(addr + 16), out)
      assert.matches("Mode: Virtual Wire", out)
   end)

   it("checks what the VMM asks for", function()
      assert.has_error(function() mptable.build { cpus = 0 } end)
      assert.has_error(function() mptable.build { pci = { { slot = 32, pin = 1, ioapic_pin = 16 } } } end)
      assert.has_error(function() mptable.build { pci = { { slot = 1, pin = 5, ioapic_pin = 16 } } } end)
      assert.has_error(function() mptable.build { addr = 0xf0008 } end)
   end)
end)
