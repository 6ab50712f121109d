-- examples/guest against a real passed-through edu under QEMU's vfio-pci (nested KVM):
-- the guest program is right on the very device passthrough.lua will hand it, and this
-- is the reference run bench/vs-qemu.lua compares with.
local lab = require "support.lab"
local guest = require "support.guest"

describe("examples/guest with edu passed through by QEMU's vfio-pci", function()
   it("passes every edu test (MMIO, MSI, INTx, DMA through the IOMMU)", function()
      local edu = assert(lab.device("edu"), "lab has no edu")
      local out, code = guest.qemu_vfio(edu.bdf)
      local r = guest.parse(out)
      assert.matches("^%x%x:%x%x%.%d 1234:11e8$", r.found)
      for _, name in ipairs(guest.EDU_TESTS) do
         assert.are.equal("PASS", r.tests[name], name .. " in:\n" .. out)
      end
      for _, b in ipairs { "cfg_read", "bar_read", "msi_roundtrip" } do
         assert.is_true(r.bench[b] > 0, b)
      end
      assert.are.equal("PASS", r.result)
      assert.are.equal(0, code) -- the guest's own exit code, through lab/oracle
   end)
end)
