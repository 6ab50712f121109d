-- The guest address map (vfio.vmm.address_map): its regions apart where they must be,
-- aligned where KVM and PCI need it, RAM around the hole, the modules that place things
-- reading it, and agreement with the C layer's own windows (the pages KVM takes, the
-- irqchip's windows the C address map keeps free, the host bridge's ECAM). Needs no KVM.
local map = require "vfio.vmm.address_map"
local core = require "vfio.core"

local KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
local PAGE = 4 * KiB
local FOUR_GIB = 1 << 32

local function overlaps(a, b) return a.start < b.start + b.size and b.start < a.start + a.size end
local function hex(v) return ("%#x"):format(v) end

-- A #define of the C KVM layer, whatever prefix its name carries (csrc/kvm/*.c and *.h).
local function c_define(suffix)
   local p = assert(io.popen("cat csrc/kvm/*.c csrc/kvm/*.h"))
   local src = p:read("a")
   p:close()
   local v = src:match("#define%s+[%w_]-" .. suffix .. "%s+(0x%x+)")
   return v and math.tointeger(tonumber(v))
end

describe("vfio.vmm.address_map", function()
   local regions = map.regions()

   it("lists every region with an integer start and size, lowest first", function()
      assert.is_true(#regions >= 14)
      local last = -1
      for _, r in ipairs(regions) do
         if r.space ~= "io" then
            assert.are.equal("integer", math.type(r.start), r.name)
            assert.are.equal("integer", math.type(r.size), r.name)
            assert.is_true(r.size > 0, r.name)
            assert.is_true(r.start >= last, r.name .. " is out of order")
            last = r.start
         end
      end
   end)

   it("keeps regions apart, but for a Linux and a multiboot guest's own pages", function()
      for i, a in ipairs(regions) do
         for j = i + 1, #regions do
            local b = regions[j]
            if (a.space or "mem") == (b.space or "mem") and overlaps(a, b) then
               -- the page tables (Linux) and the multiboot information share pages: no
               -- guest has both
               assert.is_true(a.boot ~= nil and b.boot ~= nil and a.boot ~= b.boot,
                  ("%s [%s, +%s) overlaps %s [%s, +%s)"):format(a.name, hex(a.start), hex(a.size),
                     b.name, hex(b.start), hex(b.size)))
            end
         end
      end
   end)

   it("page-aligns what KVM maps or takes, and aligns ECAM and the MP table as they need", function()
      for _, name in ipairs { "RAM_START", "HOLE_START", "RAM_HIGH_START", "ECAM_START", "MMIO32_START",
                              "MMIO64_START", "IOAPIC_START", "LAPIC_START", "KVM_IDENTITY_MAP_START",
                              "KVM_TSS_START", "GDT_START", "ZERO_PAGE_START", "PAGE_TABLES_START",
                              "PAGE_TABLES_END", "MULTIBOOT_INFO_START", "CMDLINE_START", "HIMEM_START" } do
         assert.are.equal(0, map[name] % PAGE, name .. " is not page-aligned")
      end
      for _, name in ipairs { "MMIO32_SIZE", "MMIO64_SIZE", "IOAPIC_SIZE", "LAPIC_SIZE", "ECAM_SIZE",
                              "KVM_SYSTEM_PAGES_SIZE", "ZERO_PAGE_SIZE", "MULTIBOOT_INFO_SIZE" } do
         assert.are.equal(0, map[name] % PAGE, name .. " is not whole pages")
      end
      assert.are.equal(PAGE, map.PAGE_SIZE)
      -- ECAM: 1 MiB per bus, the window aligned to it (the C host bridge refuses less)
      assert.are.equal(MiB, map.ECAM_BUS_SIZE)
      assert.are.equal(0, map.ECAM_START % MiB)
      assert.are.equal(map.ECAM_BUSES * MiB, map.ECAM_SIZE)
      -- the MP floating pointer is found on 16-byte boundaries of the BIOS area
      assert.are.equal(0, map.MPTABLE_START % 16)
      -- BAR windows: a BAR is aligned to its size, so a window aligned to its own size
      -- packs BARs from its base on
      assert.are.equal(0, map.MMIO64_START % map.MMIO64_ALIGN)
      assert.are.equal(0, map.MMIO64_SIZE % map.MMIO64_ALIGN)
      for _, size in ipairs { 64 * MiB, map.HOLE_START, map.HOLE_START + 2 * MiB, 6 * GiB, 100 * GiB } do
         local start = map.mmio64_window(size)
         assert.are.equal(0, start % map.MMIO64_ALIGN, hex(size))
      end
      assert.are.equal(0, map.IO_PORT_START % map.IO_PORT_SIZE)
   end)

   it("puts the loader's pages below the EBDA, and the MP table in the BIOS area", function()
      for _, r in ipairs(regions) do
         if r.boot then
            assert.is_true(r.start + r.size <= map.EBDA_START, r.name .. " reaches the EBDA")
            assert.is_true(r.start >= PAGE, r.name .. " is on page 0 (real-mode IVT)")
         end
      end
      assert.are.equal(0x9fc00, map.EBDA_START)
      assert.are.equal(MiB, map.HIMEM_START)
      assert.is_true(map.MPTABLE_START >= map.EBDA_START)
      -- the largest MP table the VMM builds (254 CPUs, every slot's four pins) fits
      local mptable = require "vfio.vmm.mptable"
      local pci = {}
      for slot = 0, 31 do
         for pin = 1, 4 do pci[#pci + 1] = { slot = slot, pin = pin, ioapic_pin = 16 + (pin - 1) } end
      end
      local bytes, at = mptable.build { cpus = 254, pci = pci }
      assert.are.equal(map.MPTABLE_START, at)
      assert.is_true(at + #bytes <= map.HIMEM_START)
   end)

   it("has the hole below 4 GiB hold ECAM, the 32-bit BAR window, the APICs and KVM's pages", function()
      assert.are.equal(map.ECAM_START, map.HOLE_START)
      assert.are.equal(FOUR_GIB, map.FIRST_ADDR_PAST_32BITS)
      for _, name in ipairs { "ecam", "mmio32", "ioapic", "lapic", "kvm identity map", "kvm tss" } do
         local found
         for _, r in ipairs(regions) do
            if r.name == name then found = r end
         end
         assert.is_truthy(found, name)
         assert.is_true(found.start >= map.HOLE_START and found.start + found.size <= FOUR_GIB, name)
      end
      -- the 32-bit BAR window runs up to the IOAPIC; the 64-bit one starts past 4 GiB
      assert.are.equal(map.IOAPIC_START, map.MMIO32_START + map.MMIO32_SIZE)
      assert.is_true(map.ECAM_START + map.ECAM_SIZE <= map.MMIO32_START)
      -- ECAM below the 32-bit BAR window has room for every bus there can be
      assert.are.equal(map.MMIO32_START, map.ECAM_START + 256 * map.ECAM_BUS_SIZE)
      assert.is_true(map.MMIO64_START >= FOUR_GIB)
      -- the largest RAM and the 64-bit window above it: a 40-bit guest reaches both
      local start, size = map.mmio64_window(map.RAM_SIZE_MAX)
      assert.are.equal(map.RAM_END_MAX, map.ram_end(map.RAM_SIZE_MAX))
      assert.is_true(start >= map.RAM_END_MAX)
      assert.is_true(start + size <= 1 << 40)
      assert.are.equal(map.KVM_IDENTITY_MAP_START + PAGE, map.KVM_TSS_START)
      assert.are.equal(map.KVM_IDENTITY_MAP_START, map.KVM_SYSTEM_PAGES_START)
      assert.are.equal(4 * PAGE, map.KVM_SYSTEM_PAGES_SIZE)
      -- the I/O BAR window ends with the port space, above the legacy PC ports
      assert.are.equal(0x10000, map.IO_PORT_START + map.IO_PORT_SIZE)
   end)

   it("splits RAM at the hole: below it, then from 4 GiB up", function()
      local r = map.ram_ranges
      assert.are.same({ { start = 0, size = 64 * MiB } }, r(64 * MiB))
      assert.are.same({ { start = 0, size = 0 } }, r(0))
      assert.are.same({ { start = 0, size = map.HOLE_START } }, r(map.HOLE_START))
      assert.are.same({ { start = 0, size = map.HOLE_START }, { start = FOUR_GIB, size = 1 } },
                      r(map.HOLE_START + 1))
      assert.are.same({ { start = 0, size = map.HOLE_START },
                        { start = FOUR_GIB, size = 16 * GiB - map.HOLE_START } }, r(16 * GiB))
      for _, size in ipairs { 2 * MiB, 3 * GiB, 4 * GiB, 64 * GiB, 256 * GiB, map.RAM_SIZE_MAX } do
         local total = 0
         for _, range in ipairs(r(size)) do
            total = total + range.size
            for _, reg in ipairs(map.regions(size)) do
               -- RAM meets none of the devices' windows (the loaders' pages are in RAM)
               if not reg.boot and not reg.name:match("^ram") and reg.name ~= "ebda and bios"
                  and reg.space ~= "io" then
                  assert.is_false(overlaps(range, reg), ("%d GiB of RAM meets %s"):format(size // GiB, reg.name))
               end
            end
         end
         assert.are.equal(size, total)
      end
      assert.has_error(function() r(-1) end)
      assert.has_error(function() r(1.5) end)
      assert.has_error(function() r("1G") end)
   end)

   it("is where the VMM's modules place things, and where they stop RAM", function()
      local layout = require "vfio.vmm.layout"
      assert.are.same({ base = map.MMIO32_START, limit = 0xfebfffff }, layout.defaults.mmio32)
      assert.are.same({ base = FOUR_GIB, limit = FOUR_GIB + 256 * GiB - 1 }, layout.defaults.mmio64)
      -- with RAM past the hole, the 64-bit window starts at the GiB boundary above its end
      assert.are.same({ base = 8 * GiB, limit = 8 * GiB + map.MMIO64_SIZE - 1 }, layout.windows(6 * GiB).mmio64)
      assert.are.same({ base = 6 * GiB, limit = 6 * GiB + map.MMIO64_SIZE - 1 },
                      layout.windows(map.HOLE_START + 2 * GiB).mmio64)
      assert.are.same({ base = 0xc000, limit = 0xffff }, layout.defaults.io)
      assert.are.equal(PAGE, layout.PAGE)
      local linux = require "vfio.vmm.linux"
      assert.are.equal(map.ZERO_PAGE_START, linux.BOOT_PARAMS)
      assert.are.equal(map.GDT_START, linux.GDT)
      assert.are.equal(map.CMDLINE_START, linux.CMDLINE)
      assert.are.equal(map.PAGE_TABLES_START, linux.PML4)
      assert.are.equal(map.HIMEM_START, linux.HIGH)
      assert.are.equal(map.RAM_SIZE_MAX, linux.RAM_MAX)
      assert.are.equal(2047, linux.VMLINUX_CMDLINE_SIZE)
      -- a PML4, a PDPT and four page directories
      assert.are.equal(6 * PAGE, map.PAGE_TABLES_END - map.PAGE_TABLES_START)
      local mptable = require "vfio.vmm.mptable"
      assert.are.equal(map.LAPIC_START, mptable.LAPIC)
      assert.are.equal(map.IOAPIC_START, mptable.IOAPIC)
      assert.are.equal(map.ECAM_START, require("vfio.vmm.board").ECAM_BASE)
      assert.are.equal(map.ECAM_BUSES, require("vfio.vmm.board").ECAM_BUSES)
      -- one RAM limit for the board, a bare VM and the Linux loader: RAM around the hole,
      -- ending at RAM_END_MAX
      assert.are.equal(map.RAM_SIZE_MAX, require("vfio.vmm.board").MAX_MEM_MIB << 20)
      assert.are.equal(map.RAM_SIZE_MAX, require("vfio.vmm.vm").RAM_LIMIT)
      -- the e820 map reserves the low legacy area, the whole ECAM window and the pages KVM
      -- takes
      local e820 = linux.e820(64 * MiB)
      assert.are.same({ addr = map.EBDA_START, size = map.HIMEM_START - map.EBDA_START,
                        type = linux.E820_RESERVED }, e820[2])
      assert.are.same({ addr = map.ECAM_START, size = map.ECAM_SIZE, type = linux.E820_RESERVED }, e820[4])
      assert.are.same({ addr = map.KVM_SYSTEM_PAGES_START, size = map.KVM_SYSTEM_PAGES_SIZE,
                        type = linux.E820_RESERVED }, e820[5])
   end)

   it("lists RAM's ranges among the regions when given a RAM size, the 64-bit window above", function()
      local list = map.regions(6 * GiB)
      local by = {}
      for _, r in ipairs(list) do by[r.name] = r end
      assert.are.same({ name = "ram", start = map.HIMEM_START, size = map.HOLE_START - map.HIMEM_START },
                      by.ram)
      assert.are.same({ name = "ram high", start = FOUR_GIB, size = 6 * GiB - map.HOLE_START }, by["ram high"])
      assert.are.equal(8 * GiB, by.mmio64.start)
      for _, r in ipairs(map.regions(64 * MiB)) do assert.are_not.equal("ram high", r.name) end
      assert.are.equal(map.HOLE_START, map.low_ram_end(6 * GiB))
      assert.are.equal(64 * MiB, map.low_ram_end(64 * MiB))
      assert.are.equal(FOUR_GIB + 6 * GiB - map.HOLE_START, map.ram_end(6 * GiB))
      assert.are.equal(64 * MiB, map.ram_end(64 * MiB))
   end)

   describe("agrees with the C layer", function()
      it("on the pages KVM takes at VM creation (vfio.core.kvm_layout)", function()
         local k = core.kvm_layout
         assert.are.equal(map.KVM_IDENTITY_MAP_START, k.identity_map)
         assert.are.equal(map.KVM_TSS_START, k.tss)
         assert.are.equal(map.KVM_SYSTEM_PAGES_SIZE, k.system_pages_size)
         assert.are.equal(k.identity_map + PAGE, k.tss)
      end)

      it("on the irqchip windows the C address map keeps free (csrc/kvm)", function()
         assert.are.equal(map.IOAPIC_START, c_define("IOAPIC_BASE"), "IOAPIC base")
         assert.are.equal(map.IOAPIC_SIZE, c_define("IOAPIC_SIZE"), "IOAPIC size")
         assert.are.equal(map.LAPIC_START, c_define("LAPIC_BASE"), "LAPIC base")
         assert.are.equal(map.LAPIC_SIZE, c_define("LAPIC_SIZE"), "LAPIC size")
      end)

      it("on the host bridge's ECAM window (vfio.core.pcihost, as the board makes it)", function()
         local k = core.kvm_layout
         assert.are.equal(map.ECAM_BUS_SIZE, k.ecam_bus_size)
         assert.are.equal(256 * k.ecam_bus_size, k.ecam_max)
         assert.is_true(map.ECAM_SIZE <= k.ecam_max)
         local ranges = core.pcihost({ ecam_base = map.ECAM_START, ecam_buses = map.ECAM_BUSES }):ranges()
         assert.are.same({ "pio", 0xcf8, 8 }, ranges[1])
         assert.are.same({ "mmio", map.ECAM_START, map.ECAM_SIZE }, ranges[2])
         -- one bus when not told: the board tells it every bus
         ranges = core.pcihost({ ecam_base = map.ECAM_START }):ranges()
         assert.are.same({ "mmio", map.ECAM_START, map.ECAM_BUS_SIZE }, ranges[2])
         local b = assert(require("vfio.vmm.board").new { plan = true })
         assert.are.same({ "mmio", map.ECAM_START, map.ECAM_SIZE }, b.host:ranges()[2])
         b:close()
      end)

      it("on the buses the board can number: bus 0 and one per root port slot", function()
         local hotplug = require "vfio.vmm.hotplug"
         assert.are.equal(32 - hotplug.FIRST_SLOT, map.ECAM_BUSES - 1)
         local board = require "vfio.vmm.board"
         local b = assert(board.new { plan = true, hotplug_slots = map.ECAM_BUSES - 1 })
         assert.are.equal(map.ECAM_BUSES - 1, b.ports[#b.ports].secondary)
         local ok, err = b:add_root_port()
         assert.is_nil(ok)
         assert.matches("no free slot", err)
         b:close()
      end)
   end)
end)
