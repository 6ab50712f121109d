-- Guest RAM past the hole and its backings (vfio.vmm.ram, vfio.core.ram_memfd and
-- ram_hugetlbfs, csrc/kvm/ram.c): the e820 and multiboot maps with RAM from 4 GiB up,
-- memfd seals, huge-page and hugetlbfs failures explained, the IOMMU aperture checked,
-- and BARs placed inside an IOMMU's usable IOVA ranges, 64-bit ones above RAM's end (a
-- 39-bit aperture as the lab's). The #kvm part maps RAM above 4 GiB in a VM, anonymous
-- and from a memfd, and reads back through the memfd what was written through the VM.
local core = require "vfio.core"
local ram = require "vfio.vmm.ram"
local map = require "vfio.vmm.address_map"
local linux = require "vfio.vmm.linux"
local layout = require "vfio.vmm.layout"
local kvmhost = require "support.kvm"

local MiB, GiB = 1 << 20, 1 << 30
local FOUR_GIB = 1 << 32
local ENOMEM, EINVAL, ENOTTY, EPERM = 12, 22, 25, 1

describe("guest RAM past the hole", function()
   it("is in the e820 map from 4 GiB up, after the pages KVM keeps", function()
      local e = linux.e820(6 * GiB)
      assert.are.same({ addr = 0x100000, size = map.HOLE_START - 0x100000, type = linux.E820_RAM }, e[3])
      assert.are.same({ addr = map.ECAM_START, size = map.ECAM_SIZE, type = linux.E820_RESERVED }, e[4])
      assert.are.same({ addr = map.KVM_SYSTEM_PAGES_START, size = map.KVM_SYSTEM_PAGES_SIZE,
                        type = linux.E820_RESERVED }, e[5])
      assert.are.same({ addr = FOUR_GIB, size = 6 * GiB - map.HOLE_START, type = linux.E820_RAM }, e[6])
      assert.are.equal(6, #e)
      -- RAM that fits below the hole has no entry above it
      assert.are.equal(5, #linux.e820(map.HOLE_START))
      assert.are.same({ addr = 0x100000, size = map.HOLE_START - 0x100000, type = linux.E820_RAM },
                      linux.e820(map.HOLE_START)[3])
      -- less below the hole (--mem 768M,below-4g=256M): the rest from 4 GiB
      e = linux.e820(768 * MiB, 256 * MiB)
      assert.are.same({ addr = 0x100000, size = 255 * MiB, type = linux.E820_RAM }, e[3])
      assert.are.same({ addr = FOUR_GIB, size = 512 * MiB, type = linux.E820_RAM }, e[6])
      -- the entries add up to the RAM asked for
      local total = 0
      for _, x in ipairs(linux.e820(768 * MiB, 256 * MiB)) do
         if x.type == linux.E820_RAM then total = total + x.size end
      end
      assert.are.equal(768 * MiB - (0x100000 - 0x9fc00), total)
   end)

   it("refuses a below-4g outside [1 MiB, the hole]", function()
      assert.has_error(function() map.ram_ranges(GiB, 0) end)
      assert.has_error(function() map.ram_ranges(GiB, map.HOLE_START + MiB) end)
      assert.are.same({ { start = 0, size = 16 * MiB }, { start = FOUR_GIB, size = 16 * MiB } },
                      map.ram_ranges(32 * MiB, 16 * MiB))
   end)
end)

describe("vfio.core.ram_memfd", function()
   it("makes a memfd of the size asked for, sealed against shrinking and growing", function()
      local r = assert(core.ram_memfd(4 * MiB))
      assert.are.equal("memfd", r:kind())
      assert.are.equal(4 * MiB, r:size())
      assert.are.equal(4096, r:page_size())
      assert.is_true(r:sealed())
      assert.matches("^vfio.ramfd %(memfd, 4194304 bytes, fd %d+%)$", tostring(r))
      -- the seals hold against whoever has the fd: no shrinking, no growing
      local unistd = require "posix.unistd"
      local ok, _, errno = unistd.ftruncate(r:fileno(), MiB)
      assert.is_nil(ok)
      assert.are.equal(EPERM, errno)
      ok, _, errno = unistd.ftruncate(r:fileno(), 8 * MiB)
      assert.is_nil(ok)
      assert.are.equal(EPERM, errno)
      -- its bytes are readable through the fd (another process maps the same pages)
      local f = assert(io.open("/proc/self/fd/" .. r:fileno(), "rb"))
      assert.are.equal(4 * MiB, f:seek("end"))
      f:close()
      r:close()
      r:close()
      assert.is_true(r:closed())
      assert.are.equal("vfio.ramfd (closed)", tostring(r))
      assert.has_error(function() r:size() end)
   end)

   it("refuses a size that is no whole number of pages, or none", function()
      local r, msg, errno = core.ram_memfd(4097)
      assert.is_nil(r)
      assert.are.equal("create guest RAM in a memfd of 4097 bytes: Invalid argument", msg)
      assert.are.equal(EINVAL, errno)
      assert.has_error(function() core.ram_memfd(0) end)
      assert.has_error(function() core.ram_memfd(-4096) end)
   end)
end)

describe("vfio.vmm.ram", function()
   local info = ram.meminfo("MemTotal:        2048000 kB\nHugePages_Total:       3\nHugePages_Free:        1\n"
      .. "Hugepagesize:       2048 kB\n")

   it("reads /proc/meminfo", function()
      assert.are.same({ MemTotal = 2048000, HugePages_Total = 3, HugePages_Free = 1, Hugepagesize = 2048 }, info)
      assert.is_number(ram.meminfo().MemTotal)
   end)

   it("refuses more RAM than the host has, saying what it has", function()
      assert.is_true(ram.check_host(GiB, info))
      local ok, msg = ram.check_host(4 * GiB, info)
      assert.is_nil(ok)
      assert.are.equal("guest RAM of 4096 MiB is more than this host's memory (MemTotal 2000 MiB): give --mem less",
                       msg)
   end)

   it("says how many huge pages a size needs and how to reserve them", function()
      assert.are.equal("not enough huge pages: guest RAM of 64 MiB needs 32 pages of 2048 KiB, 1 free of 3; reserve "
         .. "them with echo 34 > /proc/sys/vm/nr_hugepages (as root; or hugepages=32 on the host's kernel command "
         .. "line), or leave --hugepages out", ram.hugepages_hint(64 * MiB, 2 * MiB, info))
      -- another size than the default: its own pool in sysfs
      local hint = ram.hugepages_hint(2 * GiB, GiB, info)
      assert.matches("needs 2 pages of 1048576 KiB, %d+ free of %d+; reserve them with echo %d+ > "
         .. "/sys/kernel/mm/hugepages/hugepages%-1048576kB/nr_hugepages", hint)
   end)

   it("opens each backing: none for anonymous, a sealed memfd, a hugetlbfs mount only", function()
      assert.is_false(ram.open(4 * MiB))
      assert.is_false(ram.open(4 * MiB, { backing = "anonymous" }))
      local r = assert(ram.open(4 * MiB, { backing = "memfd" }))
      assert.are.equal("memfd", r:kind())
      assert.is_true(r:sealed())
      r:close()
      local none, msg, errno = ram.open(4 * MiB, { backing = "hugetlbfs", hugetlbfs = "/tmp" })
      assert.is_nil(none)
      assert.are.equal(ENOTTY, errno)
      assert.are.equal("create guest RAM in /tmp: not a hugetlbfs mount (mount -t hugetlbfs none DIR, or leave the "
         .. "path out for the default huge page size)", msg)
      assert.has_error(function() ram.open(4 * MiB, { backing = "shm" }) end)
   end)

   it("explains a huge-page pool too small for the RAM", function()
      local host = ram.meminfo()
      local page = (host.Hugepagesize or 0) * 1024
      if page == 0 then pending("this kernel has no huge pages") return end
      local f = io.open("/proc/sys/vm/nr_overcommit_hugepages")
      local overcommit = f and tonumber(f:read("l")) or 0
      if f then f:close() end
      if overcommit > 0 then pending("huge pages overcommit here: a pool is never short") return end
      -- one page more than the pool has free
      local size = ((host.HugePages_Free or 0) + 1) * page
      local r, msg, errno = ram.open(size, { backing = "hugetlbfs" })
      assert.is_nil(r)
      assert.are.equal(ENOMEM, errno)
      assert.matches(("^create guest RAM in a huge%%-page memfd of %d bytes: Cannot allocate memory: not enough "
         .. "huge pages: guest RAM of %d MiB needs %d pages of %d KiB, %d free of %d; reserve them with echo %%d+ > "
         .. "/proc/sys/vm/nr_hugepages"):format(size, size // MiB, size // page, page // 1024,
            host.HugePages_Free, host.HugePages_Total), msg)
   end)

   it("checks guest RAM against an IOMMU's usable IOVA ranges", function()
      local bits39 = { { start = 0, last = 0xfedfffff }, { start = 0xfef00000, last = (1 << 39) - 1 } }
      assert.is_true(ram.check_aperture(6 * GiB, bits39))
      assert.is_true(ram.check_aperture(6 * GiB, {}))
      assert.is_true(ram.check_aperture(6 * GiB, nil))
      local bits32 = { { start = 0, last = 0xfedfffff }, { start = 0xfef00000, last = 0xffffffff } }
      assert.is_true(ram.check_aperture(2 * GiB, bits32))
      local ok, msg = ram.check_aperture(6 * GiB, bits32)
      assert.is_nil(ok)
      assert.are.equal("IOMMU aperture too small: guest RAM at 0x100000000..0x1cfffffff (mapped for DMA at IOVA == "
         .. "guest-physical) is outside the IOMMU's usable IOVA ranges (they end at 0xffffffff, a 32-bit address "
         .. "width): give --mem less, so that RAM ends below 0x100000000", msg)
      -- the ranges of a container (iommu_info) or an IOAS (iova_ranges)
      local container = { iommu_info = function() return { iova_ranges = bits39 } end }
      assert.are.same(bits39, ram.iova_ranges(container))
      local ioas = { iova_ranges = function() return bits32, 4096 end }
      assert.are.same(bits32, ram.iova_ranges(ioas))
      assert.is_nil(ram.iova_ranges(nil))
   end)
end)

describe("BAR placement inside the IOMMU's usable IOVA ranges", function()
   local bits39 = { { start = 0, last = 0xfedfffff }, { start = 0xfef00000, last = (1 << 39) - 1 } }

   it("puts 64-bit BARs above RAM's end, inside a 39-bit aperture", function()
      local a = layout.new { windows = layout.windows(6 * GiB) }
      a:restrict(bits39)
      local at = assert(a:reserve("mmio64", GiB))
      assert.are.equal(8 * GiB, at)                   -- the GiB boundary above RAM's end
      assert.is_true(at + GiB <= 1 << 39)
      -- without RAM past the hole, the window starts at 4 GiB
      a = layout.new { windows = layout.windows(256 * MiB) }
      a:restrict(bits39)
      assert.are.equal(FOUR_GIB, a:reserve("mmio64", 16 * MiB))
   end)

   it("skips what the IOMMU cannot address and says so when nothing is left", function()
      -- a usable range starting past the window's base: BARs start there
      local a = layout.new { windows = layout.windows(6 * GiB) }
      a:restrict { { start = 0, last = 0xffffffff }, { start = 16 * GiB, last = 17 * GiB - 1 } }
      assert.are.equal(16 * GiB, a:reserve("mmio64", 256 * MiB))
      assert.are.equal(16 * GiB + 256 * MiB, a:reserve("mmio64", 256 * MiB))
      local none, err = a:reserve("mmio64", GiB)
      assert.is_nil(none)
      assert.matches("window mmio64 full %(0x40000000 bytes at 0x420000000%.%.0x41ffffffff inside the IOMMU's "
         .. "usable IOVA ranges%)", err)
      -- two containers: only where both can address
      a = layout.new { windows = layout.windows(6 * GiB) }
      a:restrict(bits39)
      a:restrict { { start = 0, last = (1 << 34) - 1 } }
      assert.are.equal(8 * GiB, a:reserve("mmio64", 8 * GiB))
      assert.is_nil(a:reserve("mmio64", 8 * GiB))
      -- a window the IOMMU's ranges exclude: a 32-bit BAR avoids the MSI window's range
      a = layout.new { windows = layout.windows(64 * MiB) }
      a:restrict { { start = 0, last = 0xdfffffff }, { start = 0xfef00000, last = (1 << 39) - 1 } }
      assert.are.equal(0xc0000000, a:reserve("mmio32", 256 * MiB))
      assert.are.equal(0xd0000000, a:reserve("mmio32", 256 * MiB))
      assert.is_nil(a:reserve("mmio32", 256 * MiB))
   end)

   -- A recorded device whose DMA goes through a container reporting `ranges`.
   local function behind_iommu(name, ranges)
      local m = assert(require("vfio.vmm.assigned").new("spec/fixtures/" .. name .. ".lua"))
      local container = { iommu_info = function() return { iova_ranges = ranges } end }
      return setmetatable({ dma_container = function() return container end }, { __index = m })
   end

   it("is what the board does with a device behind a 39-bit IOMMU, and a narrower one", function()
      local board = require "vfio.vmm.board"
      local b = assert(board.new { mem_mib = 6144, plan = true })
      local d = behind_iommu("virtio-net-pci", bits39)
      assert(b:add_device(d))
      local bar4 = d.trap:bars()[4]
      assert.is_true(bar4.is64 and bar4.prefetch)
      assert.are.equal(8 * GiB, bar4.addr)          -- above RAM's end (no longer 512 GiB)
      assert.matches("guest RAM 6144 MiB %(anonymous%) at 0x0%.%.0xafffffff and 0x100000000%.%.0x1cfffffff", b:plan())
      b:close()
      -- an IOMMU that reaches 8 GiB only: the prefetchable BAR falls back below 4 GiB
      b = assert(board.new { mem_mib = 6144, plan = true })
      d = behind_iommu("virtio-net-pci", { { start = 0, last = (1 << 33) - 1 } })
      assert(b:add_device(d))
      bar4 = d.trap:bars()[4]
      assert.is_true(bar4.addr >= map.MMIO32_START and bar4.addr < FOUR_GIB)
      b:close()
   end)

   it("maps every RAM range for DMA once per container, and keeps what the maps took", function()
      local board = require "vfio.vmm.board"
      local b = assert(board.new { mem_mib = 6144, plan = true })
      -- the VM's memory slots as KVM lists them: RAM below the hole and above 4 GiB, and
      -- a BAR slot the board must not map
      local slots = { { gpa = 0, size = 0xb0000000, ram = true },
                      { gpa = 0xc0000000, size = 0x1000, ram = false },
                      { gpa = FOUR_GIB, size = 6 * GiB - 0xb0000000, ram = true } }
      b.vm = { memory = function() return slots end }
      local maps, unmaps = {}, {}
      local container = { iommu_info = function() return { iova_ranges = bits39 } end,
                          map_dma = function(_, vm, iova, o)
                             assert.are.equal(b.vm, vm)
                             maps[#maps + 1] = { iova, o.gpa, o.size, o.read, o.write }
                             return true end,
                          unmap_dma = function(_, iova, size) unmaps[#unmaps + 1] = { iova, size } end }
      assert.is_true(b:map_dma(container))
      assert.is_true(b:map_dma(container))   -- once per container
      assert.are.same({ { 0, 0, 0xb0000000, true, true },
                        { FOUR_GIB, FOUR_GIB, 6 * GiB - 0xb0000000, true, true } }, maps)
      assert.are.equal(6 * GiB, b.dma_timing.bytes)
      assert.is_true(b.dma_timing.seconds >= 0 and b.dma_timing.seconds < 60)
      b:close()
      assert.are.same({ { 0, 0xb0000000 }, { FOUR_GIB, 6 * GiB - 0xb0000000 } }, unmaps)
   end)
end)

describe("guest RAM above 4 GiB in a VM #kvm", function()
   it("maps RAM from 4 GiB up, anonymous and from a memfd, and the memfd holds what the guest sees", function()
      local ok, why = kvmhost.usable()
      if not ok then pending(why) return end
      local vmlib = require "vfio.vmm.vm"
      for _, backing in ipairs { "anonymous", "memfd" } do
         local m = assert(vmlib.create { mem_mib = 64, ram_below_4g = 32 * MiB, backing = backing })
         assert.are.same({ { start = 0, size = 32 * MiB, slot = m.ram_ranges[1].slot },
                           { start = FOUR_GIB, size = 32 * MiB, slot = m.ram_ranges[2].slot } }, m.ram_ranges)
         local slots = {}
         for _, s in ipairs(m.vm:memory()) do if s.ram then slots[#slots + 1] = s end end
         assert.are.equal(2, #slots)
         for _, s in ipairs(slots) do assert.are.equal(backing == "memfd", s.shared) end
         m.vm:write(FOUR_GIB + 0x1000, "above the hole")
         assert.are.equal("above the hole", m.vm:read(FOUR_GIB + 0x1000, 14))
         -- nothing between the hole and 4 GiB, nothing past RAM's end
         assert.has_error(function() m.vm:read(32 * MiB, 1) end)
         assert.has_error(function() m.vm:read(FOUR_GIB + 32 * MiB, 1) end)
         if backing == "memfd" then
            assert.is_false(m.ram_fd:closed())
            local f = assert(io.open("/proc/self/fd/" .. m.ram_fd:fileno(), "rb"))
            f:seek("set", 32 * MiB + 0x1000)   -- the file holds low RAM, then high RAM
            assert.are.equal("above the hole", f:read(14))
            f:close()
         else
            assert.is_nil(m.ram_fd)
         end
         m:close()
      end
   end)

   it("boots the multiboot test program with RAM above 4 GiB and no time limit: it ends itself", function()
      local ok, why = kvmhost.usable()
      if not ok then pending(why) return end
      local m <close> = assert(require("vfio.vmm.vm").create { mem_mib = 64, ram_below_4g = 32 * MiB,
                                                                backing = "memfd" })
      -- no host bridge: the program's config reads through CF8/CFC are left to a handler
      -- that answers none of them (all ones: no device), so it ends with "nodev"
      local r = assert(m:boot("build/guest/guest.elf", { cmdline = "dev=1234:11e8", timeout = false,
                                                         handler = function() end }))
      assert.are.equal("nodev", r.result, r.output)
      -- mem_upper names RAM below the hole only; the rest is in the memory map
      assert.matches("memory 32 MiB\n", r.output)
   end)

   it("refuses to map a memfd past its end, or unaligned", function()
      local vm, kvm = kvmhost.vm()
      if not vm then pending(kvm) return end
      local r = assert(core.ram_memfd(4 * MiB))
      local slot, msg, errno = vm:add_ram(FOUR_GIB, 8 * MiB, { fd = r })
      assert.is_nil(slot)
      assert.are.equal(EINVAL, errno)
      assert.matches("^add guest RAM gpa 0x100000000 size 0x800000 from offset 0x0 of a memfd of 0x400000 bytes", msg)
      assert.is_nil(vm:add_ram(FOUR_GIB, 4 * MiB, { fd = r, offset = 4096 }))
      assert.is_nil(vm:add_ram(FOUR_GIB, 2 * MiB, { fd = r, offset = 100 }))
      slot = assert(vm:add_ram(FOUR_GIB, 2 * MiB, { fd = r, offset = 2 * MiB }))
      r:close()                                     -- the mapping holds the file
      vm:write(FOUR_GIB, "still here")
      assert.are.equal("still here", vm:read(FOUR_GIB, 10))
      assert(vm:unmap(slot))
      vm:close()
      kvm:close()
   end)
end)
