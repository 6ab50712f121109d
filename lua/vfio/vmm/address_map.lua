---
-- The guest's physical address map, in one place: every guest-physical address the VMM
-- puts something at, one named constant per region and a line of why. The other VMM
-- modules read their addresses here; spec/host/address_map_spec.lua checks the regions
-- against each other and against the C layer's own windows (the pages KVM takes, the
-- irqchip's windows, the host bridge's ECAM).
--
--   0           low RAM: the boot GDT, the zero page, page tables or multiboot
--               information, the kernel command line (what a loader leaves for the guest)
--   0x9fc00     the EBDA and the BIOS area up to 1 MiB: reserved, the MP table in it
--   1 MiB       RAM on, the kernel (or a multiboot image) at its start
--   HOLE_START  the hole below 4 GiB, no RAM: ECAM (bus 0 and the root ports' secondary
--               buses, reserved in the e820 map), the 32-bit BAR window, the IOAPIC, the
--               LAPIC, the pages KVM keeps for itself
--   4 GiB       RAM above the hole: the part of a RAM size past HOLE_START (ram_ranges)
--   RAM's end   the 64-bit BAR window, from the next GiB boundary (mmio64_window), 256 GiB
--
-- A guest's RAM is thus one range or two, and the e820 map, the multiboot memory map, the
-- VM's slots and the IOMMU's DMA mappings are all made from ram_ranges. Everything a loader
-- writes (the kernel, the initrd, boot_params) stays below the hole (low_ram_end). RAM may
-- end up to RAM_END_MAX, which leaves the 64-bit window inside a 40-bit guest physical
-- address width; the board narrows the BAR windows further to what the IOMMU can address
-- (its usable IOVA ranges), and the host's memory, the memlock limit and huge pages set
-- their own limits, each explained where it is met (vfio.vmm.ram).
-- @module vfio.vmm.address_map
local M = {}

local KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

M.PAGE_SIZE = 4 * KiB            -- KVM slots, BAR mappings and the system pages are in pages

-- ---- low memory: below 1 MiB, what the loaders write (no firmware runs) ----
M.RAM_START = 0                  -- RAM from guest-physical 0, as on a PC
M.GDT_START = 0x1000             -- the boot GDT of the Linux entries: null, null, code 0x10, data 0x18
M.GDT_SIZE = 0x1000              -- a page kept for it (32 bytes used)
M.ZERO_PAGE_START = 0x7000       -- Linux's boot_params, "the zero page": setup header and e820 map
M.ZERO_PAGE_SIZE = 0x1000
M.PAGE_TABLES_START = 0x9000     -- the 64-bit entry's identity map: PML4, PDPT, four page
                                 -- directories of 2 MiB pages over the low 4 GiB
M.PAGE_TABLES_END = 0xf000       -- (exclusive) six pages
M.MULTIBOOT_INFO_START = 0x9000  -- the multiboot information (a multiboot guest has no page
                                 -- tables of ours: the two never meet in one guest)
M.MULTIBOOT_INFO_SIZE = 0x1000   -- header, command line at +0x100, memory map at +0xf00
M.CMDLINE_START = 0x20000        -- the Linux command line, clear of the pages above and below 1 MiB
M.CMDLINE_SIZE = 2048            -- x86's COMMAND_LINE_SIZE: a vmlinux's limit with its NUL
M.EBDA_START = 0x9fc00           -- conventional memory ends: the EBDA and BIOS area follow
                                 -- (reserved in the e820 map and the multiboot memory map)
M.MPTABLE_START = 0xf0000        -- the MP floating pointer, then its table: in the BIOS area
                                 -- Linux scans on 16-byte boundaries
M.HIMEM_START = 0x100000         -- 1 MiB: RAM above the legacy area; a kernel that cannot
                                 -- move is loaded here

-- ---- the hole below 4 GiB: no RAM, the devices' windows ----
M.FIRST_ADDR_PAST_32BITS = 1 << 32 -- 4 GiB: the end of what 32-bit fields can name
M.HOLE_START = 0xb0000000        -- RAM below 4 GiB ends here, where ECAM begins
M.ECAM_START = 0xb0000000        -- the host bridge's ECAM window, below the BAR window
M.ECAM_BUS_SIZE = 1 * MiB        -- ECAM per bus: 32 devices x 8 functions x 4 KiB
M.ECAM_BUSES = 1 + (32 - 0x10)   -- bus 0 and a secondary bus per PCIe root port: the ports
                                 -- take bus 0's slots 0x10-0x1f (vfio.vmm.hotplug.FIRST_SLOT),
                                 -- the board numbers their buses 1 to 16; the hole up to
                                 -- MMIO32_START has room for all 256 buses
M.ECAM_SIZE = M.ECAM_BUSES * M.ECAM_BUS_SIZE -- bus b's functions at ECAM_START + (b << 20)
M.MMIO32_START = 0xc0000000      -- BARs below 4 GiB (32-bit BARs, the ROM, small 64-bit ones)
M.MMIO32_SIZE = 0xfec00000 - 0xc0000000 -- up to the IOAPIC
M.IOAPIC_START = 0xfec00000      -- the in-kernel IOAPIC's registers (KVM's fixed address)
M.IOAPIC_SIZE = 0x1000
M.LAPIC_START = 0xfee00000       -- the local APICs' registers (the architectural default)
M.LAPIC_SIZE = 1 * MiB           -- the C address map keeps the whole MiB off slots and ranges
M.KVM_IDENTITY_MAP_START = 0xfffbc000 -- KVM_SET_IDENTITY_MAP_ADDR: one page of KVM's own
                                 -- (the real-mode identity page table on Intel)
M.KVM_TSS_START = 0xfffbd000     -- KVM_SET_TSS_ADDR: three pages for the real-mode TSS
M.KVM_SYSTEM_PAGES_START = M.KVM_IDENTITY_MAP_START -- the two together, reserved in e820
M.KVM_SYSTEM_PAGES_SIZE = 0x4000

-- ---- above 4 GiB ----
M.RAM_HIGH_START = M.FIRST_ADDR_PAST_32BITS -- RAM past HOLE_START continues here
M.MMIO64_START = M.FIRST_ADDR_PAST_32BITS -- the lowest the 64-bit BAR window starts (RAM all
                                 -- below the hole); it starts above RAM's end (mmio64_window)
M.MMIO64_ALIGN = 1 * GiB         -- the window starts on a GiB boundary past RAM's end
M.MMIO64_SIZE = 256 * GiB        -- 64-bit BARs (prefetchable or large)
M.RAM_END_MAX = (1 << 40) - M.MMIO64_SIZE -- RAM ends at or below this: RAM and the window
                                 -- above it stay inside a 40-bit guest physical width
M.RAM_SIZE_MAX = M.RAM_END_MAX - (M.RAM_HIGH_START - M.HOLE_START) -- the RAM that reaches it

-- ---- I/O ports ----
M.IO_PORT_START = 0xc000         -- I/O BARs: above the legacy ISA and PC ports
M.IO_PORT_SIZE = 0x4000          -- to 0xffff

---
-- The guest-physical RAM ranges of a guest with `size` bytes of RAM: [0, HOLE_START) holds
-- what fits below the hole, the rest starts at 4 GiB. `below` puts less below the hole
-- (as QEMU's max-ram-below-4g): a guest with little RAM can still have some above 4 GiB.
-- @tparam integer size bytes of guest RAM (at least 0)
-- @tparam[opt=HOLE_START] integer below the most RAM below the hole (1 MiB to HOLE_START)
-- @treturn {table,...} `{start =, size =}` each, lowest first: one range, or two when
-- `size` passes HOLE_START (or `below`)
function M.ram_ranges(size, below)
   if math.type(size) ~= "integer" or size < 0 then
      error(("RAM size must be a non-negative integer, got %s"):format(tostring(size)), 2)
   end
   below = below or M.HOLE_START
   if math.type(below) ~= "integer" or below < M.HIMEM_START or below > M.HOLE_START then
      error(("RAM below 4 GiB must be an integer in [%#x, %#x], got %s"):format(M.HIMEM_START,
         M.HOLE_START, tostring(below)), 2)
   end
   local low = math.min(size, below)
   local ranges = { { start = M.RAM_START, size = low } }
   if size > low then ranges[2] = { start = M.RAM_HIGH_START, size = size - low } end
   return ranges
end

---
-- Where guest RAM of `size` bytes ends: the address past its highest byte.
-- @tparam integer size bytes of guest RAM
-- @tparam[opt] integer below as for ram_ranges
-- @treturn integer the end address
function M.ram_end(size, below)
   local r = M.ram_ranges(size, below)
   return r[#r].start + r[#r].size
end

---
-- Where RAM below the hole ends, for what a loader must put below 4 GiB (a kernel, an
-- initrd, boot information): the whole of a small RAM, else HOLE_START (or `below`).
-- @tparam integer size bytes of guest RAM
-- @tparam[opt] integer below as for ram_ranges
-- @treturn integer the end address of the low range
function M.low_ram_end(size, below)
   return M.ram_ranges(size, below)[1].size
end

---
-- The 64-bit BAR window of a guest with `size` bytes of RAM: from the first GiB boundary
-- at or above both 4 GiB and RAM's end, MMIO64_SIZE long.
-- @tparam integer size bytes of guest RAM
-- @tparam[opt] integer below as for ram_ranges
-- @treturn integer the window's start
-- @treturn integer its size
function M.mmio64_window(size, below)
   local e = math.max(M.ram_end(size, below), M.MMIO64_START)
   return (e + M.MMIO64_ALIGN - 1) & ~(M.MMIO64_ALIGN - 1), M.MMIO64_SIZE
end

---
-- The regions above as a list, for checks and listings: `{name =, start =, size =,
-- boot = "linux" | "multiboot" | nil}` (boot: only that guest kind uses it; nil: every
-- guest), the MMIO and port windows with `space = "io"` for the port window. With
-- `ram_size`, RAM's ranges ("ram", "ram high") are listed too and the 64-bit window sits
-- above them; without, the window is where it sits over RAM that all fits below the hole.
-- @tparam[opt] integer ram_size bytes of guest RAM
-- @tparam[opt] integer below as for ram_ranges
-- @treturn {table,...} the regions, by start address
function M.regions(ram_size, below)
   local mmio64_start, mmio64_size = M.mmio64_window(ram_size or 0, below)
   local list = {
      { name = "gdt", start = M.GDT_START, size = M.GDT_SIZE, boot = "linux" },
      { name = "zero page", start = M.ZERO_PAGE_START, size = M.ZERO_PAGE_SIZE, boot = "linux" },
      { name = "page tables", start = M.PAGE_TABLES_START,
        size = M.PAGE_TABLES_END - M.PAGE_TABLES_START, boot = "linux" },
      { name = "multiboot info", start = M.MULTIBOOT_INFO_START, size = M.MULTIBOOT_INFO_SIZE,
        boot = "multiboot" },
      { name = "command line", start = M.CMDLINE_START, size = M.CMDLINE_SIZE, boot = "linux" },
      { name = "ebda and bios", start = M.EBDA_START, size = M.HIMEM_START - M.EBDA_START },
      { name = "ecam", start = M.ECAM_START, size = M.ECAM_SIZE },
      { name = "mmio32", start = M.MMIO32_START, size = M.MMIO32_SIZE },
      { name = "ioapic", start = M.IOAPIC_START, size = M.IOAPIC_SIZE },
      { name = "lapic", start = M.LAPIC_START, size = M.LAPIC_SIZE },
      { name = "kvm identity map", start = M.KVM_IDENTITY_MAP_START, size = M.PAGE_SIZE },
      { name = "kvm tss", start = M.KVM_TSS_START, size = 3 * M.PAGE_SIZE },
      { name = "mmio64", start = mmio64_start, size = mmio64_size },
      { name = "io ports", start = M.IO_PORT_START, size = M.IO_PORT_SIZE, space = "io" },
   }
   if ram_size then
      local r = M.ram_ranges(ram_size, below)
      -- low RAM holds the loader's pages: it is listed as what lies from 1 MiB up
      if r[1].size > M.HIMEM_START then
         table.insert(list, 7, { name = "ram", start = M.HIMEM_START, size = r[1].size - M.HIMEM_START })
      end
      if r[2] then table.insert(list, #list - 1, { name = "ram high", start = r[2].start, size = r[2].size }) end
   end
   return list
end

return M
