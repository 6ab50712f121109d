-- The reference: QEMU's own vfio-pci, nested in the lab, shows its guest the lab devices.
-- Later specs compare the trap core's view with this one; here the oracle itself is checked
-- against the devices' real identity.
local lab = require "support.lab"
local oracle = require "support.oracle"

local function u16(s, off) return s:byte(off + 1) | s:byte(off + 2) << 8 end

describe("lab/oracle (QEMU vfio-pci nested under KVM)", function()
   it("shows a nested guest each passed-through device with its ids and BARs", function()
      local edu, nvme = lab.need("edu"), lab.need("nvme")
      local seen = oracle.run { edu.bdf, nvme.bdf }
      for _, d in ipairs { edu, nvme } do
         local v = assert(seen[d.bdf], "nested guest did not see " .. d.bdf)
         assert.is_true(#v.config == 256 or #v.config == 4096)
         assert.are.equal(d.vendor, u16(v.config, 0))
         assert.are.equal(d.device, u16(v.config, 2))
         assert.are.equal(d.class, u16(v.config, 10) << 8 | v.config:byte(10))
      end
      -- edu's BAR0: 1 MiB of memory, assigned by the nested guest
      local bar0 = seen[edu.bdf].resources[1]
      assert.are.equal(0x100000, bar0.stop - bar0.start + 1)
      assert.are.equal(0x200, bar0.flags & 0x200) -- IORESOURCE_MEM
   end)
end)
