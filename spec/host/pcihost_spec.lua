-- The PCI host bridge's decoding of CF8/CFC and ECAM accesses, fed with exit tables
-- shaped like vcpu:run's: the VMM's (vfio.core.pcihost, in C) against an independent
-- Lua decoder kept as the oracle (spec/support/pcihost_oracle.lua).
local pcihost = require "vfio.vmm.pcihost"
local oracle = require "support.pcihost_oracle"

-- handled, value, event as both answer them (the C host adds what it decoded after these)
local function A(host, x)
   local handled, v, ev = host:access(x)
   if x.write then return handled, v, ev end
   return handled, v
end

local function pio(port, size, write, value)
   return { reason = "io", space = "pio", port = port, size = size, count = 1, write = write, value = value }
end
local function mmio(addr, size, write, value)
   return { reason = "mmio", space = "mmio", addr = addr, size = size, count = 1, write = write, value = value }
end

-- A function that records what reaches it.
local function recorder()
   local r = { log = {} }
   function r:cfg_read(off, size)
      self.log[#self.log + 1] = ("r %x %d"):format(off, size)
      return 0x44332211 >> (8 * (off % 4)) -- distinct bytes per offset
   end
   function r:cfg_write(off, size, v)
      self.log[#self.log + 1] = ("w %x %d %x"):format(off, size, v)
   end
   return r
end

local function cf8(bus, dev, fn, reg)
   return 0x80000000 | bus << 16 | dev << 11 | fn << 8 | reg
end

describe("the Lua oracle decoder", function()
   local host, f
   before_each(function()
      host = oracle.new { ecam_base = 0xb0000000, ecam_buses = 2 }
      f = recorder()
      host:attach(0, 3, 0, f)
   end)

   it("latches the CF8 address and reads it back", function()
      assert.are.same({ true, nil, false }, { host:access(pio(0xcf8, 4, true, cf8(0, 3, 0, 0x10))) })
      assert.are.same({ true, cf8(0, 3, 0, 0x10) }, { host:access(pio(0xcf8, 4, false)) })
      -- Byte accesses to CF8 are not configuration cycles: not ours.
      assert.is_false((host:access(pio(0xcf8, 1, true, 0))))
      assert.is_false((host:access(pio(0xcf9, 1, true, 6))))
   end)

   it("routes CFC-CFF accesses to the function with offset and size", function()
      host:access(pio(0xcf8, 4, true, cf8(0, 3, 0, 0x3c)))
      assert.are.same({ true, 0x44332211 }, { host:access(pio(0xcfc, 4, false)) })
      assert.are.same({ true, 0x33 }, { host:access(pio(0xcfe, 1, false)) })
      assert.are.same({ true, 0x4433 }, { host:access(pio(0xcfe, 2, false)) })
      assert.are.same({ true, nil, false }, { host:access(pio(0xcfd, 1, true, 0x1ab)) })
      assert.are.same({ "r 3c 4", "r 3e 1", "r 3e 2", "w 3d 1 ab" }, f.log)
   end)

   it("reads all ones for absent functions, disabled cycles and dword-crossing accesses", function()
      host:access(pio(0xcf8, 4, true, cf8(0, 4, 0, 0)))
      assert.are.same({ true, 0xffffffff }, { host:access(pio(0xcfc, 4, false)) })
      host:access(pio(0xcf8, 4, true, cf8(1, 3, 0, 0)))
      assert.are.same({ true, 0xffff }, { host:access(pio(0xcfc, 2, false)) })
      host:access(pio(0xcf8, 4, true, cf8(0, 3, 0, 0) & 0x7fffffff))
      assert.are.same({ true, 0xffffffff }, { host:access(pio(0xcfc, 4, false)) })
      host:access(pio(0xcf8, 4, true, cf8(0, 3, 0, 0)))
      assert.are.same({ true, 0xffffffff }, { host:access(pio(0xcfd, 4, false)) })
      assert.are.same({ true, nil, false }, { host:access(pio(0xcfe, 4, true, 1)) })
      assert.are.same({}, f.log)
   end)

   it("decodes ECAM addresses, including extended registers and 8-byte accesses", function()
      local base = 0xb0000000 | 3 << 15
      assert.are.same({ true, 0x2211 }, { host:access(mmio(base + 0x100, 2, false)) })
      assert.are.same({ true, nil, false }, { host:access(mmio(base + 0x804, 4, true, 0xdeadbeef)) })
      assert.are.same({ true, 0x4433221144332211 }, { host:access(mmio(base + 0x10, 8, false)) })
      assert.are.same({ true, nil, false }, { host:access(mmio(base + 0x18, 8, true, 0x1111222233334444)) })
      assert.are.same({ "r 100 2", "w 804 4 deadbeef", "r 10 4", "r 14 4", "w 18 4 33334444",
                        "w 1c 4 11112222" }, f.log)
      -- Misaligned: all ones, never reaches the function.
      assert.are.same({ true, 0xffff }, { host:access(mmio(base + 0x101, 2, false)) })
      -- Bus 1 is inside the window but empty; bus 2 is outside it.
      assert.are.same({ true, 0xffffffff }, { host:access(mmio(0xb0100000, 4, false)) })
      assert.is_false((host:access(mmio(0xb0200000, 4, false))))
      assert.are.equal(6, #f.log) -- the misaligned and absent accesses never reached f
   end)

   it("calls on_event after a write that raised one", function()
      local cs = pcihost.config_space { vendor = 1, device = 2 }
      assert.are.equal("vfio.cfgspace (256 bytes, 0001:0002)", tostring(cs))
      cs:notify(0x10, 4)
      host:attach(0, 4, 0, cs)
      local events = {}
      local h = host:handler(nil, function(x) events[#events + 1] = x.value end)
      h(pio(0xcf8, 4, true, cf8(0, 4, 0, 0x10)))
      h(pio(0xcfc, 4, true, 0xfe000000))
      h(pio(0xcf8, 4, true, cf8(0, 4, 0, 0x14)))
      h(pio(0xcfc, 4, true, 0xfd000000))
      assert.are.same({ 0xfe000000 }, events)
   end)

   it("chains a fallback handler for everything else", function()
      local other = {}
      local h = host:handler(function(x) other[#other + 1] = x.port or x.addr; return 7 end)
      assert.are.equal(7, h(pio(0x70, 1, false)))
      assert.are.equal(7, h(mmio(0xfed00000, 4, false)))
      host:access(pio(0xcf8, 4, true, cf8(0, 3, 0, 0)))
      assert.are.equal(0x44332211, h(pio(0xcfc, 4, false)))
      assert.is_nil(h(pio(0xcfc, 4, true, 5)))
      assert.are.same({ 0x70, 0xfed00000 }, other)
   end)

   it("refuses bad addresses and double attachment", function()
      assert.has_error(function() host:attach(0, 32, 0, f) end)
      assert.has_error(function() host:attach(0, 3, 0, recorder()) end, "00:03.0 is already attached")
      host:detach(0, 3, 0)
      assert.is_nil(host:lookup(0, 3, 0))
      assert.has_error(function() oracle.new { ecam_base = 0xb0001000 } end)
   end)

   it("emulates a host bridge configuration space with write masks", function()
      local hb = pcihost.host_bridge()
      host:attach(0, 0, 0, hb)
      host:access(pio(0xcf8, 4, true, cf8(0, 0, 0, 0)))
      assert.are.same({ true, 0x00081b36 }, { host:access(pio(0xcfc, 4, false)) })
      host:access(pio(0xcf8, 4, true, cf8(0, 0, 0, 8)))
      assert.are.same({ true, 0x06000000 }, { host:access(pio(0xcfc, 4, false)) })
      host:access(pio(0xcf8, 4, true, cf8(0, 0, 0, 0)))
      host:access(pio(0xcfc, 4, true, 0xffffffff)) -- IDs are read-only
      host:access(pio(0xcf8, 4, true, cf8(0, 0, 0, 4)))
      host:access(pio(0xcfc, 2, true, 0xffff))     -- command: only the writable bits stick
      assert.are.same({ true, 0x00081b36 }, { host:access(mmio(0xb0000000, 4, false)) })
      assert.are.same({ true, 0x0546 }, { host:access(mmio(0xb0000004, 2, false)) })
      assert.are.same({ true, 0xffffffff }, { host:access(mmio(0xb0000100, 4, false)) })
   end)
end)

-- The same decoding, in the oracle and in C (vfio.core.pcihost), against C-backed
-- configuration spaces that both accept.
for _, impl in ipairs { "lua", "c" } do
   describe("host bridge decoding (" .. impl .. ")", function()
      local host, f
      before_each(function()
         local opts = { ecam_base = 0xb0000000, ecam_buses = 2 }
         host = impl == "lua" and oracle.new(opts) or pcihost.new(opts)
         f = require("vfio.core").cfgspace(4096)
         f:set(0, 4, 0x11e81234)
         f:set(0x3c, 4, 0x44332211, 0x0000ff00) -- only byte 0x3d is guest-writable
         f:set(0x100, 4, 0x00010001)
         f:set(0x10, 4, 0x89abcdef)
         f:set(0x14, 4, 0x01234567)
         host:attach(0, 3, 0, f)
      end)

      it("latches CF8 and routes CFC-CFF by lane", function()
         assert.are.same({ true, nil, false }, { A(host, pio(0xcf8, 4, true, cf8(0, 3, 0, 0x3c))) })
         assert.are.same({ true, cf8(0, 3, 0, 0x3c) }, { A(host, pio(0xcf8, 4, false)) })
         assert.are.same({ true, 0x44332211 }, { A(host, pio(0xcfc, 4, false)) })
         assert.are.same({ true, 0x33 }, { A(host, pio(0xcfe, 1, false)) })
         assert.are.same({ true, 0x4433 }, { A(host, pio(0xcfe, 2, false)) })
         A(host, pio(0xcfd, 1, true, 0xab))
         A(host, pio(0xcfc, 1, true, 0x99)) -- read-only byte
         assert.are.same({ true, 0x4433ab11 }, { A(host, pio(0xcfc, 4, false)) })
      end)

      it("reads all ones where nothing answers", function()
         A(host, pio(0xcf8, 4, true, cf8(0, 4, 0, 0)))
         assert.are.same({ true, 0xffffffff }, { A(host, pio(0xcfc, 4, false)) })
         A(host, pio(0xcf8, 4, true, cf8(0, 3, 0, 0) & 0x7fffffff))
         assert.are.same({ true, 0xffff }, { A(host, pio(0xcfc, 2, false)) })
         A(host, pio(0xcf8, 4, true, cf8(0, 3, 0, 0)))
         assert.are.same({ true, 0xffffffff }, { A(host, pio(0xcfe, 4, false)) })
         assert.are.same({ true, 0xffff }, { A(host, mmio(0xb0018001, 2, false)) })
         assert.are.same({ true, 0xffffffff }, { A(host, mmio(0xb0100000, 4, false)) })
         assert.is_false((A(host, mmio(0xb0200000, 4, false))))
         assert.is_false((A(host, pio(0x80, 1, false))))
      end)

      it("decodes ECAM, extended registers and 8-byte accesses", function()
         local base = 0xb0000000 | 3 << 15
         assert.are.same({ true, 0x11e81234 }, { A(host, mmio(base, 4, false)) })
         assert.are.same({ true, 0x00010001 }, { A(host, mmio(base + 0x100, 4, false)) })
         assert.are.same({ true, 0x0123456789abcdef }, { A(host, mmio(base + 0x10, 8, false)) })
         assert.are.same({ true, nil, false }, { A(host, mmio(base + 0x3d, 1, true, 0x5a)) })
         assert.are.same({ true, 0x5a }, { A(host, mmio(base + 0x3d, 1, false)) })
      end)

      it("reports writes to notify bytes as events", function()
         f:notify(0x04, 2)
         f:set(0x04, 2, 0, 0x0006)
         A(host, pio(0xcf8, 4, true, cf8(0, 3, 0, 0x04)))
         assert.are.same({ true, nil, true }, { A(host, pio(0xcfc, 2, true, 0x0006)) })
         assert.are.same({ true, nil, false }, { A(host, pio(0xcfe, 2, true, 0)) })
         assert.are.same({ true, 0x0006 }, { A(host, pio(0xcfc, 2, false)) })
         assert.are.same({ true, nil, true }, { A(host, mmio(0xb0018000, 8, true, 0x0000000200000000)) })
         f:notify(0x04, 2, false)
         assert.are.same({ true, nil, false }, { A(host, mmio(0xb0018004, 1, true, 0)) })
      end)

      it("detaches functions", function()
         host:detach(0, 3, 0)
         assert.are.same({ true, 0xffffffff }, { A(host, mmio(0xb0018000, 4, false)) })
      end)
   end)
end

describe("vfio.core.pcihost", function()
   it("accepts only C-backed functions and reports slot conflicts", function()
      local host = pcihost.new()
      assert.has_error(function() host:attach(0, 1, 0, {}) end)
      local f = pcihost.host_bridge()
      assert(host:attach(0, 0, 0, f))
      local ok, msg, errno = host:attach(0, 0, 0, f)
      assert.is_nil(ok)
      assert.are.equal("attach 00:00.0: File exists", msg)
      assert.are.equal(17, errno)
      assert.are.same({ { "pio", 0xcf8, 8 } }, host:ranges())
      assert.are.same({ { "pio", 0xcf8, 8 }, { "mmio", 0xe0000000, 4 << 20 } },
                      pcihost.new { ecam_base = 0xe0000000, ecam_buses = 4 }:ranges())
      assert.has_error(function() pcihost.new { ecam_base = 0xe0001000 } end)
   end)
end)

describe("vfio.core.pcihost's decode report", function()
   it("says which function access an exit became: bdf, offset, size, value", function()
      local host = pcihost.new { ecam_base = 0xe0000000 }
      local f = pcihost.config_space { vendor = 0x1234, device = 0x5678 }
      assert(host:attach(0, 5, 0, f))
      host:access(pio(0xcf8, 4, true, cf8(0, 5, 0, 0)))
      assert.are.same({ true, 0x5678, false, 5 << 3, 2, 2, 0x5678 },
                      { host:access(pio(0xcfe, 2, false)) })
      assert.are.same({ true, nil, false, 5 << 3, 0x3c, 1, 0x0b },
                      { host:access(mmio(0xe0000000 | 5 << 15 | 0x3c, 1, true, 0x10b)) })
      -- nothing reached: the CF8 latch itself, an absent function
      assert.are.same({ true, cf8(0, 5, 0, 0), false }, { host:access(pio(0xcf8, 4, false)) })
      assert.are.same({ true, 0xffffffff, false }, { host:access(mmio(0xe0000000 | 6 << 15, 4, false)) })
   end)
end)
