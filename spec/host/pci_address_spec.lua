-- The one parser of PCI addresses (vfio.pcibus.parse_bdf) and the places that take an
-- address from a user: vfio.open, the REPL, the passthrough command, the board's grouping
-- of functions by slot. Needs no device.
local pcibus = require "vfio.pcibus"

describe("vfio.pcibus.parse_bdf", function()
   it("takes the long and the short form, in any case, and gives the sysfs name", function()
      local bdf, at = pcibus.parse_bdf("0000:00:03.0")
      assert.are.equal("0000:00:03.0", bdf)
      assert.are.same({ domain = 0, bus = 0, device = 3, func = 0 }, at)
      assert.are.equal("0000:00:03.0", (pcibus.parse_bdf("00:03.0")))
      bdf, at = pcibus.parse_bdf("00AB:Cd:1F.7")
      assert.are.equal("00ab:cd:1f.7", bdf)
      assert.are.same({ domain = 0xab, bus = 0xcd, device = 0x1f, func = 7 }, at)
      assert.is_truthy(("0000:00:03.0"):match(pcibus.BDF))
   end)

   it("refuses function numbers past 7 and anything that is not an address", function()
      for _, s in ipairs { "0000:00:03.8", "00:03.f", "0000:00:03.A", "3.0", "00:3.0", "0:00:03.0",
                           "0000:00:03.0 ", " 00:03.0", "0000:00:03", "0000-00-03.0", "", "x" } do
         local bdf, why = pcibus.parse_bdf(s)
         assert.is_nil(bdf, s)
         assert.are.equal("not a PCI address (want 0000:00:03.0 or 00:03.0): " .. s, why)
      end
      for _, v in ipairs { 3, true, {} } do
         local bdf, why = pcibus.parse_bdf(v)
         assert.is_nil(bdf)
         assert.matches("not a PCI address", why)
      end
      assert.is_nil((pcibus.parse_bdf(nil)))
   end)

   it("is what vfio.open, the REPL, the passthrough command and the board take", function()
      local vfio = require "vfio"
      assert.has_error(function() vfio.open("0000:00:03.8") end)
      assert.has_error(function() require("vfio.poke").bdf("0000:00:03.9") end)
      local cli = require "vfio.vmm.cli"
      assert.are.equal("00:03.0", (cli.resolve_device("00:03.0", false, "/nonexistent")))
      assert.are.equal("0000:00:03.7", (cli.resolve_device("0000:00:03.7", false, "/nonexistent")))
      local no, why = cli.resolve_device("0000:00:03.8", false, "/nonexistent")
      assert.is_nil(no)
      assert.matches("not a PCI address", why)
      -- the board groups functions by host slot, whichever form names them
      local placed = require("vfio.vmm.board").functions { "00:10.0", "0000:00:10.1", "0000:00:10.9" }
      assert.are.same({ slot = 0, fn = 0, multifunction = true }, placed[1])
      assert.are.same({ slot = 0, fn = 1, multifunction = false }, placed[2])
      assert.are.same({ slot = 1, fn = 0, multifunction = false }, placed[3])
   end)
end)
