-- passthrough.lua and the VMM without a device or KVM: the BAR split policy, --plan
-- on recorded devices, and the errors a user meets before any VM exists.
local layout = require "vfio.vmm.layout"

local function sh(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local _, _, code = p:close()
   return out, code
end

local function kinds(pieces)
   local out = {}
   for _, p in ipairs(pieces) do out[#out + 1] = ("%s %x+%x"):format(p.kind, p.off, p.len) end
   return out
end

describe("vfio.vmm.layout.split_bar", function()
   it("maps a plain mmap-able BAR whole", function()
      assert.are.same({ "map 0+100000" },
         kinds(layout.split_bar({ size = 0x100000, phys_size = 0x100000 }, { mappable = true })))
   end)

   it("traps the pages of trapped spans, and leaves Lua windows to Lua", function()
      local p = layout.split_bar({ size = 0x100000, phys_size = 0x100000 },
         { mappable = true, lua = { { 0x80, 0x20 } } })
      assert.are.same({ "trap 0+80", "lua 80+20", "trap a0+f60", "map 1000+ff000" }, kinds(p))
      p = layout.split_bar({ size = 0x4000, phys_size = 0x4000 },
         { mappable = true, trapped = { { 0x2000, 65 * 16 }, { 0x3000, 16 } } })
      assert.are.same({ "map 0+2000", "trap 2000+2000" }, kinds(p))
   end)

   it("maps a page read-only when its only trapped spans are read-through windows", function()
      local p = layout.split_bar({ size = 0x2000, phys_size = 0x2000 },
         { mappable = true, lua = { { 0x80, 0x20, ro = true } } })
      assert.are.same({ "romap 0+1000", "trap 0+80", "lua 80+20", "trap a0+f60", "map 1000+1000" }, kinds(p))
      p = layout.split_bar({ size = 0x2000, phys_size = 0x2000 },
         { mappable = true, lua = { { 0x80, 0x20, ro = true } }, trapped = { { 0x800, 16 } } })
      assert.are.same({ "trap 0+80", "lua 80+20", "trap a0+f60", "map 1000+1000" }, kinds(p))
   end)

   it("traps what cannot be mapped: I/O BARs, sub-page BARs, bytes past the region", function()
      assert.are.same({ "trap 0+20" }, kinds(layout.split_bar({ size = 0x20, io = true }, { mappable = true })))
      assert.are.same({ "trap 0+800" }, kinds(layout.split_bar({ size = 0x800 }, { mappable = true })))
      assert.are.same({ "map 0+1000", "trap 1000+3000" },
         kinds(layout.split_bar({ size = 0x4000, phys_size = 0x1000 }, { mappable = true })))
      assert.are.same({ "trap 0+4000" }, kinds(layout.split_bar({ size = 0x4000 }, { mappable = false })))
   end)

   it("sends everything to Lua when tracing", function()
      assert.are.same({ "lua 0+2000" },
         kinds(layout.split_bar({ size = 0x2000 }, { mappable = true, trace = true })))
   end)

   it("ignores windows that lie outside the BAR", function()
      assert.are.same({ "map 0+1000" },
         kinds(layout.split_bar({ size = 0x1000 }, { mappable = true, lua = { { 0x5000, 8 } } })))
   end)
end)

describe("passthrough.lua before a VM exists", function()
   it("refuses guest RAM that would cover the ECAM window", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --mem 3000 --device spec/fixtures/edu.lua")
      assert.are_not.equal(0, code)
      assert.matches("guest RAM of 3000 MiB: it must be 2 to 2816 MiB %(above, it would cover the ECAM"
         .. " window at 0xb0000000%)", out)
      out, code = sh("lua5.4 passthrough.lua --plan --mem 2816 --device spec/fixtures/edu.lua")
      assert.are.equal(0, code, out)
   end)

   it("--plan lays out a recorded edu: BAR address, mapped and trapped parts, IRQs, quirks", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/edu.lua")
      assert.are.equal(0, code, out)
      assert.matches("1234:11e8 class 00ff00 %-> guest 00:04%.0", out)
      assert.matches("BAR0 mem32%s+size 0x100000 at 0xc0000000\n", out)
      assert.matches("  %+0%.%.%+0xfff mapped read%-only %(reads direct, writes trapped%)\n"
         .. "  %+0%.%.%+0x7f trapped %(C dispatch%)\n  %+0x80%.%.%+0x9f trapped %(Lua handler%)", out)
      assert.matches("%+0x1000%.%.%+0xfffff mapped %(KVM memory slot%)", out)
      assert.matches("irq INTx pin A %-> line 10 %(GSI 10%)", out)
      assert.matches("quirks edu%-dma%-guard", out)
   end)

   it("--plan shows nvme's MSI-X table and PBA trapped, the rest of BAR0 mapped", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/nvme.lua")
      assert.are.equal(0, code, out)
      assert.matches("BAR0 mem64%s+size 0x4000 at 0xc0000000\n  %+0%.%.%+0x1fff mapped[^\n]*\n"
         .. "  %+0x2000%.%.%+0x3fff trapped", out)
      assert.matches("irq MSI%-X 65 vector%(s%), table BAR0%+0x2000, PBA BAR0%+0x3000", out)
      assert.matches("quirks none", out)
   end)

   it("rejects unknown arguments and quirk names with usage status 64", function()
      local out, code = sh("lua5.4 passthrough.lua")
      assert.are.equal(64, code)
      assert.matches("usage: ", out)
      out, code = sh("lua5.4 passthrough.lua --device spec/fixtures/edu.lua --plan --quirk nosuch")
      assert.are.equal(64, code)
      assert.matches("unknown quirk nosuch; known: none, ", out)
      assert.matches("edu%-dma%-guard %(edu_dma_guard%)", out)
      out, code = sh("lua5.4 passthrough.lua --device 00:03.0 --bogus")
      assert.are.equal(64, code)
      assert.matches("unknown argument %-%-bogus", out)
   end)

   it("says a guest file is not bootable", function()
      local out, code = sh("lua5.4 passthrough.lua --device 0000:00:03.0 --guest Makefile")
      assert.are.equal(125, code)
      assert.matches("guest Makefile is not bootable: ", out)
   end)

   it("says /dev/kvm is missing (hidden by LUAVFIO_NO_KVM, so on every machine)", function()
      local out, code = sh("LUAVFIO_NO_KVM=1 lua5.4 passthrough.lua --device 0000:00:03.0")
      assert.are.equal(125, code)
      assert.matches("open /dev/kvm %(hidden by LUAVFIO_NO_KVM%): No such file or directory: "
                     .. "this machine has no KVM", out)
   end)
end)
