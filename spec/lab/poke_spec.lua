-- The poke helpers against real devices: discovery, register objects on edu's BAR0 and on
-- config space, hexdumps of regions, MSI and INTx through d:irq, and the shipped example.
local lab = require "support.lab"
local poke = require "vfio.poke"

describe("poke in the lab", function()
   it("lists every lab device with its driver, group and pci.ids name", function()
      local byb = {}
      for _, d in ipairs(poke.devices()) do byb[d.bdf] = d end
      for _, want in ipairs(lab.devices()) do
         local d = byb[want.bdf]
         assert.is_truthy(d, want.bdf)
         assert.are.equal(want.vendor, d.vendor)
         assert.are.equal(want.device, d.device)
         assert.are.equal("vfio-pci", d.driver)
         assert.are.equal(tostring(want.group), d.group)
         assert.is_string(d.name)
      end
      assert.matches("vfio%-pci", tostring(poke.devices()))
   end)

   describe("edu", function()
      local d, edu
      before_each(function()
         d = assert(poke.open(lab.need("edu").bdf))
         edu = assert(d:regs("examples/edu_regs.lua", 0))
      end)
      after_each(function()
         d:close()
         d, edu = nil, nil
      end)

      it("reads registers by calling them and writes by calling with a value", function()
         assert.are.equal(0xed, edu.id.magic)
         edu.liveness(0x0f0f0f0f)
         assert.are.equal(0xf0f0f0f0, edu.liveness())
      end)

      it("waits for the factorial with a field condition", function()
         edu.factorial(8)
         assert.is_truthy(edu.status:wait({ computing = 0 }, { timeout = 5 }))
         assert.are.equal(40320, edu.factorial())
      end)

      it("routes MSI and INTx to eventfds", function()
         local msi = assert(d:irq("msi"))
         edu.irq_raise(0x10)
         assert.are.equal(1, msi:wait(5))
         edu.irq_ack(0x10)
         msi:close()
         local intx = assert(d:irq("intx"))
         edu.irq_raise(0x20)
         assert.are.equal(1, intx:wait(5))
         edu.irq_ack(0x20)
         intx:close()
      end)

      it("moves data both ways through a DMA buffer with edu's engine", function()
         d:cfg().command:set(0x4) -- bus master, so edu's DMA reaches memory
         local buf = assert(d:dma(8192, 0x200000))
         assert.are.equal(8192, buf.size)
         local msg = "lab DMA " .. os.time()
         buf:write(0, msg)
         local function dma(src, dst, cmd)
            edu.dma_src(src); edu.dma_dst(dst); edu.dma_count(#msg)
            edu.dma_cmd(cmd)
            assert.is_truthy(edu.dma_cmd:wait({ start = 0 }, { timeout = 5 }))
         end
         dma(buf.iova, 0x40000, 1)
         dma(0x40000, buf.iova + 4096, 3)
         assert.are.equal(msg, buf:read(4096, #msg))
         assert.matches("^00000000  6c 61 62 20", tostring(buf:hexdump(0, 16)))
         assert.is_true(buf:close())
      end)

      it("hexdumps a BAR range and the config space as read", function()
         local text = assert(tostring(d:hexdump(0, 0, 16)))
         assert.matches("^00000000  ed 00 00 01", text)
         local cfg = tostring(d:hexdump("config", 0, 16))
         assert.matches("^00000000  34 12 e8 11", cfg)
      end)

      it("names config header registers", function()
         local cfg = d:cfg()
         assert.are.equal(0x1234, cfg.vendor_id())
         assert.are.equal(0x11e8, cfg.device_id())
         assert.has_error(function() cfg.vendor_id(1) end)
      end)

      it("completes methods of VFIO region objects through their metatables", function()
         local env = poke.env { d = d }
         assert.are.same({ "d.config:write16" }, poke.complete("d.config:write1", env))
         local c = poke.complete("d:reg", env)
         assert.is_truthy(#c >= 2) -- regions (the device's) and regs (the wrapper's)
      end)
   end)

   it("runs examples/poke_session.lua", function()
      -- vfio keeps a closed device's group open until it is collected; the example opens
      -- the same group from another process.
      collectgarbage()
      collectgarbage()
      local p = io.popen("lua5.4 examples/poke_session.lua " .. lab.need("edu").bdf .. " 2>&1")
      local out = p:read("a")
      local ok = p:close()
      assert.is_true(ok, out)
      assert.matches("id: 0x10000ed %(16777453%)", out)
      assert.matches("10! = 0x375f00 %(3628800%)", out)
      assert.matches("interrupts: 0x1 %(1%)", out)
      assert.matches('dma round trip: "poked through the IOMMU"', out)
   end)

   it("unbinds from vfio-pci and binds back", function()
      local bdf = lab.need("pci-testdev").bdf
      assert(poke.unbind(bdf, { probe = false }))
      local drv
      for _, x in ipairs(poke.devices()) do if x.bdf == bdf then drv = x.driver end end
      assert.is_nil(drv)
      assert(poke.bind(bdf))
      for _, x in ipairs(poke.devices()) do if x.bdf == bdf then drv = x.driver end end
      assert.are.equal("vfio-pci", drv)
   end)
end)
