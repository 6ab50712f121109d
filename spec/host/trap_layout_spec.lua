-- BAR layout policy over devices recorded in the lab.
local fixture = require "support.fixture"
local layout = require "vfio.vmm.layout"

describe("vfio.vmm.layout", function()
   it("places every lab device's BARs naturally aligned and without overlap", function()
      local alloc = layout.new()
      local taken = {}
      for _, name in ipairs(fixture.names) do
         local t = fixture.trap(name)
         local bars = t:bars()
         local placed = assert(alloc:place(bars))
         for i, p in pairs(placed) do
            local b = bars[i]
            assert.are.equal(0, p.addr % b.size, name .. " BAR" .. i .. " misaligned")
            local w = layout.defaults[p.window]
            assert.is_true(p.addr >= w.base and p.addr + b.size - 1 <= w.limit)
            for _, o in ipairs(taken) do
               assert.is_true(p.addr + b.size <= o[1] or o[1] + o[2] <= p.addr
                  or o[3] ~= p.window, "overlap")
            end
            taken[#taken + 1] = { p.addr, b.size, p.window }
         end
      end
   end)

   it("uses the I/O window for I/O BARs and the 64-bit window for prefetchable 64-bit BARs", function()
      local alloc = layout.new()
      local e = assert(alloc:place(fixture.trap("e1000e"):bars()))
      assert.are.equal("io", e[2].window)
      assert.are.equal("mmio32", e[0].window)
      assert.are.equal("mmio32", e[6].window)                 -- ROM below 4 GiB
      local v = assert(alloc:place(fixture.trap("virtio-net-pci"):bars()))
      assert.are.equal("mmio64", v[4].window)
      assert.are.equal("mmio32", v[1].window)
      local n = assert(alloc:place(fixture.trap("nvme"):bars()))
      assert.are.equal("mmio32", n[0].window)                 -- small, not prefetchable
   end)

   it("programs the placement through config writes and keeps type bits", function()
      local t = fixture.trap("virtio-net-pci")
      local placed = assert(layout.new():place(t:bars()))
      layout.program(t, placed)
      local bars = t:bars()
      assert.are.equal(placed[4].addr, bars[4].addr)
      assert.are.equal(placed[4].addr | 0xc, t:cfg_read(0x20, 4) | (t:cfg_read(0x24, 4) << 32))
      assert.are.equal(placed[1].addr, t:cfg_read(0x14, 4))
   end)

   it("takes a user policy and reports a BAR that does not fit", function()
      local alloc = layout.new {
         windows = { mmio32 = { base = 0xe0000000, limit = 0xe00fffff },
                     mmio64 = { base = 1 << 40, limit = (1 << 41) - 1 },
                     io = { base = 0x1000, limit = 0x1fff } },
         policy = function(bar) return bar.io and { "io" } or { "mmio64", "mmio32" } end,
      }
      local n = assert(alloc:place(fixture.trap("nvme"):bars()))
      assert.are.equal("mmio64", n[0].window)                 -- the user's choice
      local e = assert(alloc:place(fixture.trap("pci-testdev"):bars()))
      assert.are.equal("mmio32", e[0].window)                 -- 32-bit BAR falls back
      local ok, err = alloc:place(fixture.trap("edu"):bars()) -- 1 MiB: window too small
      assert.is_nil(ok)
      assert.matches("BAR0", err)
   end)
end)
