-- vfio.decode against real config spaces recorded with spec/fixtures/config/capture.sh and
-- the `lspci -vvv` text recorded from the same device at the same time.
local decode = require "vfio.decode"
local lspci = require "support.lspci"

local names = lspci.fixture_names()

describe("decode of recorded config spaces", function()
   it("has fixtures to check", function()
      assert.is_true(#names >= 1, "no fixtures under " .. lspci.fixtures)
   end)

   for _, name in ipairs(names) do
      describe(name, function()
         local fx = lspci.load_fixture(name)

         it("matches lspci -vvv line by line (header, regions, capabilities)", function()
            local info = decode.config(fx.bytes, { resources = fx.resources, slot = fx.slot })
            local diffs, n = lspci.compare(info, fx.lspci)
            assert.are.same({}, diffs)
            assert.is_true(n.lines >= 2) -- Control and Status at least
         end)

         it("gives the same regions from config bytes plus region sizes (the VFIO path)", function()
            local sizes = {}
            for i = 0, 5 do sizes[i] = fx.resources[i].size end
            local info = decode.config(fx.bytes, { bar_sizes = sizes, slot = fx.slot })
            local want = lspci.parse(fx.lspci).regions
            local got = {}
            for _, b in ipairs(info.bars) do got[#got + 1] = b.text end
            for i, l in ipairs(want) do
               if l:match("^Region") then assert.are.equal(l, got[i]) end
            end
         end)

         it("exposes the numbers lspci prints as structured fields", function()
            local info = decode.config(fx.bytes, { resources = fx.resources, slot = fx.slot })
            local text = fx.lspci
            local en, count = text:match("MSI%-X: Enable(.) Count=(%d+)")
            if en then
               local c = info.caps.msix.regs.Control
               assert.are.equal(en == "+", c.Enable)
               assert.are.equal(tonumber(count), c.Count)
            end
            local mp = text:match("DevCap:\tMaxPayload (%d+) bytes")
            if mp then assert.are.equal(tonumber(mp), info.caps.express.regs.DevCap.MaxPayload) end
            for idx, size in text:gmatch("Region (%d+): [^\n]-%[size=(%w+)%]") do
               local bar
               for _, b in ipairs(info.bars) do if b.index == tonumber(idx) then bar = b end end
               assert.is_truthy(bar)
               assert.are.equal(size, decode.size_string(bar.size):match("size=(%w+)"))
            end
            for off, vtype in text:gmatch("Capabilities: %[(%x+)%] Vendor Specific Information: VirtIO: (%S+)") do
               local c
               for _, x in ipairs(info.caps) do if x.offset == tonumber(off, 16) then c = x end end
               assert.are.equal(vtype, c.virtio.type_name)
            end
         end)

         it("survives damaged copies of the same bytes without errors", function()
            local b = fx.bytes
            -- truncated to the 64-byte header
            local info = decode.config(b:sub(1, 64))
            assert.is_string(info:text())
            -- a capability chain pointing at itself
            local ptr = b:byte(0x35)
            if b:byte(7) & 0x10 ~= 0 and ptr >= 0x40 then
               local looped = b:sub(1, ptr + 1) .. string.char(ptr) .. b:sub(ptr + 3)
               local li = decode.config(looped)
               local last
               for _, c in ipairs(li.caps) do if not c.ext then last = c end end
               assert.are.equal("<chain looped>", last.title)
            end
            -- every byte flipped at random positions, many times
            math.randomseed(#b)
            for _ = 1, 200 do
               local t = { b:byte(1, -1) }
               for _ = 1, 16 do
                  local i = math.random(1, #t)
                  t[i] = math.random(0, 255)
               end
               local ok, err = pcall(function()
                  return decode.config(string.char(table.unpack(t))):text()
               end)
               assert.is_true(ok, err)
            end
         end)
      end)
   end
end)

describe("decode of arbitrary bytes", function()
   it("never raises on random config spaces of every size and header type", function()
      math.randomseed(12345)
      for round = 1, 300 do
         local n = ({ 64, 256, 4096 })[round % 3 + 1]
         local t = {}
         for i = 1, n do t[i] = math.random(0, 255) end
         -- steer some rounds into capability lists and known header types
         t[7] = t[7] | 0x10
         t[15] = round % 4
         t[0x35] = 0x40 + (math.random(0, 0x2f) * 4)
         if n > 256 and round % 2 == 0 then
            t[0x101], t[0x102] = math.random(1, 0x2e), 0x10
         end
         local bytes = string.char(table.unpack(t, 1, math.min(n, 200)))
            .. (n > 200 and string.char(table.unpack(t, 201, n)) or "")
         local ok, err = pcall(function() return decode.config(bytes):text() end)
         assert.is_true(ok, err)
      end
   end)
end)

describe("decode helpers", function()
   it("parses lspci -xxxx text and rejects holes", function()
      assert.are.equal("\1\2", decode.parse_hex("00:00.0 x\n00: 01 02\n"))
      assert.has_error(function() decode.parse_hex("10: 01 02\n") end)
   end)

   it("sizes BARs like lspci", function()
      assert.are.equal(" [size=512K]", decode.size_string(512 * 1024))
      assert.are.equal(" [size=1M]", decode.size_string(1 << 20))
      assert.are.equal(" [size=3]", decode.size_string(3))
      assert.are.equal("", decode.size_string(0))
   end)

   it("refuses config spaces shorter than the header", function()
      assert.has_error(function() decode.config(string.rep("\0", 63)) end)
   end)
end)
