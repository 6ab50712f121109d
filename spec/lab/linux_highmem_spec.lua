-- Guest RAM above 4 GiB, as the guest's own driver uses it: the lab's kernel booted under
-- passthrough.lua with the lab's nvme and RAM on both sides of the hole (--mem
-- 512M,below-4g=256M: 256 MiB below, 256 MiB from 4 GiB up, so the lab's 1.5 GiB can pin
-- it all), for each RAM backing the lab can give: its e820 RAM past 4 GiB is what the
-- guest's kernel took, and its nvme driver reads the pattern disk with O_DIRECT into
-- pages whose guest-physical addresses (/proc/self/pagemap) lie above 4 GiB: the device
-- wrote them through the IOMMU at IOVA == guest-physical. A huge-page pool too small for
-- the RAM is refused first, with the count to reserve.
local lab = require "support.lab"
local linux = require "support.linux_guest"
local sh = require("support.shell").run

local MEM = "512M,below-4g=256M"
local HIGH_START, HIGH_END = 1 << 32, (1 << 32) + (256 << 20) -- RAM above 4 GiB: [start, end)

local function initrd()
   local prog = (os.getenv("LUAVFIO_BUILD") or "build") .. "/bench/guest_dma_high"
   return linux.initramfs(("--run spec/support/guest_highmem.sh --file %s:/bin/guest_dma_high"):format(prog))
end

local function boot(nvme, backing)
   return sh(("lua5.4 passthrough.lua --kernel %s --initrd %s --timeout 300 --mem %s %s --device %s")
      :format(linux.kernel(), initrd(), MEM, backing, nvme))
end

-- The guest saw RAM from 4 GiB up and read the disk into it: four pages, each above 4 GiB
-- and inside that RAM, each with the disk's pattern.
local function check(out, code)
   assert.are.equal(0, code, out)
   assert.matches("passthrough.lua: guest poweroff", out)
   assert.matches("iomem 100000000%-10fffffff : System RAM", out)
   local reads = 0
   for gpa, sector, verdict in out:gmatch("nvme%-high%-read 0x(%x+) (%d+) (%a+)") do
      local at = tonumber(gpa, 16)
      assert.is_true(at >= HIGH_START and at < HIGH_END, ("page 0x%x is not above 4 GiB:\n%s"):format(at, out))
      assert.are.equal("ok", verdict, ("sector %s into 0x%x:\n%s"):format(sector, at, out))
      reads = reads + 1
   end
   assert.are.equal(4, reads, out)
   assert.matches("guest: run.sh exit 0", out)
end

-- Huge pages of the default size: /proc/meminfo's numbers.
local function meminfo()
   local f = assert(io.open("/proc/meminfo"))
   local t = {}
   for k, v in f:read("a"):gmatch("([%w_]+):%s*(%d+)") do t[k] = tonumber(v) end
   f:close()
   return t
end

local function set_nr_hugepages(n)
   local f = assert(io.open("/proc/sys/vm/nr_hugepages", "w"))
   f:write(tostring(n), "\n")
   f:close()
end

describe("a Linux guest with RAM above 4 GiB under passthrough.lua #nested", function()
   it("reads the nvme disk into guest RAM above 4 GiB, anonymous RAM", function()
      assert.is_true(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()
      check(boot(lab.need("nvme").bdf, ""))
   end)

   it("reads the nvme disk into guest RAM above 4 GiB, RAM in a sealed memfd", function()
      assert.is_true(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()
      check(boot(lab.need("nvme").bdf, "--mem-backing memfd"))
   end)

   it("refuses huge pages the pool lacks, then reads the disk into huge-page RAM above 4 GiB", function()
      assert.is_true(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()
      local nvme = lab.need("nvme").bdf
      local m = meminfo()
      local page_kib = m.Hugepagesize
      if not page_kib then pending("the lab kernel has no huge pages") return end
      local need = (512 * 1024) // page_kib
      local before = m.HugePages_Total
      finally(function() set_nr_hugepages(before) end)
      if m.HugePages_Free < need then
         -- too few: refused before the guest runs, with what to reserve
         local out, code = boot(nvme, "--hugepages")
         assert.are.equal(125, code, out)
         assert.matches(("not enough huge pages: guest RAM of 512 MiB needs %d pages of %d KiB"):format(need,
            page_kib), out)
         set_nr_hugepages(before + need - m.HugePages_Free)
      end
      m = meminfo()
      if m.HugePages_Free < need then
         pending(("the lab could reserve %d of the %d huge pages of %d KiB a 512 MiB guest needs")
            :format(m.HugePages_Free, need, page_kib))
         return
      end
      check(boot(nvme, "--hugepages"))
      -- the guest's RAM came back to the pool when the VM closed
      assert.are.equal(m.HugePages_Free, meminfo().HugePages_Free)
   end)
end)
