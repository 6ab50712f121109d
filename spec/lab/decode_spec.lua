-- Decode of every lab device compared with `lspci -vvv` of the same device, line by line
-- (header, BARs, expansion ROM, every capability): once from sysfs' config file and
-- resources (what lspci itself reads) and once through VFIO (the config region vfio-pci
-- virtualizes, BAR sizes from VFIO regions).
local lab = require "support.lab"
local lspci = require "support.lspci"
local poke = require "vfio.poke"

local function lspci_text(bdf)
   local p = io.popen("lspci -vvv -s " .. bdf .. " 2>/dev/null")
   local t = p:read("a")
   p:close()
   return t
end

local function all_functions()
   local list = {}
   for _, d in ipairs(poke.devices()) do list[#list + 1] = d.bdf end
   return list
end

describe("decode in the lab", function()
   it("has lab devices", function()
      assert.is_true(#lab.devices() >= 6, "expected the six default lab devices")
   end)

   for _, name in ipairs { "edu", "e1000e", "nvme", "virtio-net-pci", "qemu-xhci", "pci-testdev" } do
      describe(name, function()
         it("from sysfs matches lspci -vvv", function()
            local dev = lab.need(name)
            local text = lspci_text(dev.bdf)
            assert.is_truthy(text:find("Capabilities:") or name == "pci-testdev")
            local diffs, n = lspci.compare(assert(poke.lspci(dev.bdf)), text)
            assert.are.same({}, diffs)
            assert.is_true(n.regions >= 1)
         end)

         it("through VFIO matches lspci -vvv", function()
            local dev = lab.need(name)
            local d = assert(poke.open(dev.bdf))
            local info = assert(d:decode())
            local diffs, n = lspci.compare(info, lspci_text(dev.bdf))
            d:close()
            assert.are.same({}, diffs)
            -- every capability compared in full, none only by its title
            assert.are.equal(0, n.partial)
         end)
      end)
   end

   it("decodes every other function of the machine (bridges, chipset) like lspci", function()
      for _, bdf in ipairs(all_functions()) do
         local diffs = lspci.compare(assert(poke.lspci(bdf)), lspci_text(bdf))
         assert.are.same({}, diffs, bdf)
      end
   end)
end)
