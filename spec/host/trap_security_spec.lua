-- Guest-controlled input on devices recorded in the lab: random config, BAR and guest
-- address accesses (deterministic seed), with the guest programming BARs (overlapping
-- ones included) and decoding on, must never error, never reach the device through an
-- emulated register, and never change the emulated view of IDs and capabilities.
local fixture = require "support.fixture"

local function bytes_at(be, off, n) return be:config_read(off, n) end

-- Config ranges fully emulated without forwarding: IDs, class..BIST, BARs, CIS,
-- subsystem, ROM, cap pointer, line/pin, and every MSI / MSI-X capability.
local function emulated_ranges(t)
   local r = { { 0x00, 4 }, { 0x08, 0x38 } }
   local m, x = t:msi(), t:msix()
   if m then r[#r + 1] = { m.off, 10 } end
   if x then r[#r + 1] = { x.off, 12 } end
   return r
end

describe("trap under random guest input", function()
   for _, name in ipairs(fixture.names) do
      it(name .. ": 20000 random accesses stay in bounds and off emulated device bytes", function()
         local t, be = fixture.trap(name)
         local ranges = emulated_ranges(t)
         local before = {}
         for i, r in ipairs(ranges) do before[i] = bytes_at(be, r[1], r[2]) end
         local ids = t:cfg_read(0, 4)
         local walk = fixture.walk(t)
         math.randomseed(0x5eed + #name)
         local sizes = { 1, 2, 4 }
         local bsizes = { 1, 2, 4, 8 }
         -- The guest programs BARs (overlapping ones too: BAR1 of every device is aimed at
         -- BAR0 now and then) and turns decoding on, so guest addresses reach BAR
         -- dispatch, MSI-X tables and quirk windows through the address decode.
         local bases = { 0xc0000000, 0xc0001000, 0xc0100000, 0xfe000000, 0xc000, 0xd000 }
         local decoded = 0
         for _ = 1, 20000 do
            local op = math.random(7)
            if op == 1 then
               local v = t:cfg_read(math.random(-16, 4200), sizes[math.random(3)])
               assert(math.type(v) == "integer")
            elseif op == 2 then
               local off = math.random(0, 0xff)
               assert(t:cfg_write(off, sizes[math.random(3)], math.random(0, 0xffffffff)))
            elseif op == 5 then
               -- place a BAR (or its upper half) and decode: memory and I/O on
               local bar = math.random(0, 5)
               t:cfg_write(0x10 + 4 * bar, 4, bases[math.random(#bases)] | math.random(0, 1))
               t:cfg_write(4, 2, 0x0007)
            elseif op == 6 or op == 7 then
               local io = math.random(4) == 1
               local b = t:bars()[math.random(0, 6)]
               local addr = (b.mapped and b.addr or bases[math.random(#bases)]) + math.random(-8, 0x2000)
               local size = bsizes[math.random(io and 3 or 4)]
               local v, hit
               if op == 6 then v, hit = (io and t.io_read or t.mmio_read)(t, addr, size)
               else v, hit = (io and t.io_write or t.mmio_write)(t, addr, size, math.random(0, 0xffffffff)) end
               if hit then decoded = decoded + 1 end
               assert(v ~= false)
            else
               local bar = math.random(0, 6)
               local b = t:bars()[bar]
               local off = b.size > 0 and math.random(0, b.size + 16) or math.random(0, 64)
               local size = bsizes[math.random(4)]
               local ok, err
               if op == 3 then ok, err = t:bar_read(bar, off, size)
               else ok, err = t:bar_write(bar, off, size, math.random(0, 0xffffffff)) end
               if not ok then
                  -- only accesses outside an implemented BAR may fail
                  assert(b.size == 0 or b.upper or off + size > b.size, err)
               end
            end
            if math.random(64) == 1 then t:events() end
         end
         for i, r in ipairs(ranges) do
            assert.are.equal(before[i], bytes_at(be, r[1], r[2]),
               ("%s: device config %#x..%#x changed"):format(name, r[1], r[1] + r[2] - 1))
         end
         assert.are.equal(ids, t:cfg_read(0, 4))
         assert.are.same(walk, fixture.walk(t))
         -- what the spec claims to cover: guest addresses that decoding routed to a BAR
         assert.is_true(decoded > 500, name .. ": only " .. decoded .. " accesses were decoded")
      end)
   end

   it("bounds the event queue when nobody drains it", function()
      local t = fixture.trap("e1000e")
      local x = t:msix()
      for i = 1, 300 do t:cfg_write(x.off + 2, 2, (i % 2) * 0x8000) end
      local info = t:info()
      assert.are.equal(256, info.events_queued)
      assert.are.equal(44, info.events_lost)
      assert.are.equal(256, #t:events())
   end)

   it("refuses to let a quirk open header registers to the device", function()
      local t = fixture.trap("edu")
      local ok, err = t:set_perm(0x10, 4, 0, 0, 0xffffffff)
      assert.is_nil(ok); assert.matches("set permissions", err)
   end)
end)
