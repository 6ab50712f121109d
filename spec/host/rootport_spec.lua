-- The PCIe root port with a native hot-plug slot (csrc/kvm/rootport.c): without Lua as
-- Linux's pciehp drives it (tests/rootport_host), and through its binding (vfio.rootport)
-- behind the C host bridge, a guest's config accesses given as exit tables.
local core = require "vfio.core"
local pcihost = require "vfio.vmm.pcihost"

local EXP, MSI = 0x40, 0x80
local SLTCTL, SLTSTA, LNKSTA = EXP + 0x18, EXP + 0x1a, EXP + 0x12
local ABPE, CCIE, HPIE, DLLSCE = 0x0001, 0x0010, 0x0020, 0x1000
local PCC, PIC_MASK, PIC_BLINK, PIC_OFF = 0x0400, 0x0300, 0x0200, 0x0300
local EBUSY, ENOENT = 16, 2

describe("the root port without Lua (tests/rootport_host)", function()
   it("routes config by its bus numbers and answers pciehp's hot-add and removals", function()
      local prog = (os.getenv("LUAVFIO_BUILD") or "build") .. "/tests/rootport_host"
      local p = assert(io.popen(prog .. " 2>&1"))
      local out = p:read("a")
      local ok, how, code = p:close()
      assert.is_true(ok, ("rootport_host ended by %s %s: %s"):format(how, code, out))
      assert.matches("^ok: the root port routes config by its bus numbers", out)
   end)
end)

describe("vfio.rootport behind the C host bridge", function()
   local host, port, dev
   local PORT = 0x1c

   -- A guest's config access through mechanism #1, as the run loop would hand it over.
   local function cfg(bus, d, fn, off, size, value)
      host:access { space = "pio", port = 0xcf8, size = 4, write = true,
                    value = 0x80000000 | bus << 16 | d << 11 | fn << 8 | (off & 0xfc) }
      local handled, v, ev = host:access { space = "pio", port = 0xcfc + (off & 3), size = size,
                                            write = value ~= nil, value = value }
      assert.is_true(handled)
      if value ~= nil then return ev end
      return v
   end
   local function prd(off, size) return cfg(0, PORT, 0, off, size) end
   local function pwr(off, size, v) return cfg(0, PORT, 0, off, size, v) end
   -- pciehp's pcie_write_cmd and its interrupt handler
   local function write_cmd(cmd, mask)
      return pwr(SLTCTL, 2, (prd(SLTCTL, 2) & ~mask) | (cmd & mask))
   end
   local function isr()
      local all = 0
      while true do
         local st = prd(SLTSTA, 2) & 0x011f
         if st == 0 then return all end
         all = all | st
         pwr(SLTSTA, 2, st)
      end
   end

   before_each(function()
      host = pcihost.new()
      port = core.rootport { port = 1, slot = 5, secondary = 1,
                             mem = { base = 0xc0000000, size = 0x200000 },
                             io = { base = 0x1000, size = 0x1000 } }
      assert(host:attach(0, PORT, 0, port))
      dev = pcihost.config_space { vendor = 0x8086, device = 0x10d3, class = 0x020000 }
   end)

   it("reads as a PCI-to-PCI bridge with a hot-plug slot", function()
      assert.are.equal(0x000c1b36, prd(0, 4))
      assert.are.equal(0x060400, prd(8, 4) >> 8)
      assert.are.equal(0x00010100, prd(0x18, 4))                 -- buses 0, 1, 1
      assert.are.equal(0xc000, prd(0x20, 2))
      assert.are.equal(0xc010, prd(0x22, 2))
      assert.are.equal(0x10, prd(0x1c, 1))
      assert.are.equal(0x42, prd(EXP + 2, 2) & 0xff)             -- v2 Root Port
      assert.are.equal(5, prd(EXP + 0x14, 4) >> 19)
      assert.matches("vfio.rootport %(1b36:000c, bus 1%-1, empty%)", tostring(port))
      assert.are.same({ present = false, powered = false, link_up = false,
                        power_indicator = "off", attention_indicator = "off",
                        slot_control = 0x07c0, slot_status = 0, link_status = 0x11,
                        secondary = 1, subordinate = 1 }, port:state())
   end)

   it("hot-adds on the attention button, releases on power off, and does it again", function()
      -- pciehp's probe: events cleared, MSI on, notifications on (Command Completed fires)
      pwr(SLTSTA, 2, 0x011f)
      pwr(MSI + 4, 4, 0xfee00000)
      pwr(MSI + 0xc, 2, 0x4022)
      pwr(MSI + 2, 2, 1)
      pwr(4, 2, 0x0007)
      assert.is_true(write_cmd(ABPE | HPIE | CCIE | DLLSCE, 0x103f))
      assert.are.same({ "msi" }, port:events())
      local addr, data = port:msi()
      assert.are.equal(0xfee00000, addr)
      assert.are.equal(0x4022, data)
      isr()
      for _ = 1, 2 do
         assert.is_true(port:insert(dev))
         assert.are.equal(dev, port:child())
         assert.are.equal(0xffffffff, cfg(1, 0, 0, 0, 4))        -- powered off: no link
         assert.are.same({}, port:events())                      -- presence alone is silent
         port:press()
         assert.are.same({ "msi" }, port:events())
         assert.are.equal(0x0009, isr())                         -- ABP and PDC
         write_cmd(PIC_BLINK, PCC | PIC_MASK)                     -- power on
         assert.are.same({ "msi", "power_on" }, port:events())
         assert.are.equal(0x2000, prd(LNKSTA, 2) & 0x2000)
         assert.are.equal(0x0110, isr())                         -- CC and DLLSC
         assert.are.equal(0x10d38086, cfg(1, 0, 0, 0, 4))
         assert.are.equal(0xffffffff, cfg(1, 1, 0, 0, 4))
         -- device_del: the button, then pciehp unbinds and powers the slot off
         port:press()
         assert.are.same({ "msi" }, port:events())
         isr()
         assert.is_true(write_cmd(PCC, PCC))
         assert.are.same({ "msi", "power_off" }, port:events())
         assert.are.equal(0x0110, isr())                         -- CC and the link down
         assert.are.equal(0xffffffff, cfg(1, 0, 0, 0, 4))
         assert.is_true(port:remove())
         assert.is_nil(port:child())
         write_cmd(PIC_OFF, PIC_MASK)
         assert.are.same({ "msi" }, port:events())
         isr()
         assert.is_false(port:state().present)
      end
   end)

   it("removes by surprise: presence and link lost, one MSI", function()
      pwr(MSI + 2, 2, 1)
      pwr(4, 2, 0x0007)
      write_cmd(ABPE | HPIE | CCIE | DLLSCE, 0x103f)
      port:events(); isr()
      assert.is_true(port:insert(dev, true))                     -- there from power-on
      assert.are.same({}, port:events())
      assert.are.equal(0x10d38086, cfg(1, 0, 0, 0, 4))
      assert.is_true(port:remove())
      assert.are.same({ "msi" }, port:events())
      assert.are.equal(0x0108, isr())                            -- PDC and DLLSC
      assert.are.equal(0xffffffff, cfg(1, 0, 0, 0, 4))
      write_cmd(PCC, PCC)                                         -- nothing left to release
      assert.are.same({ "msi" }, port:events())
   end)

   it("reports INTx as a level when MSI is off, and a secondary bus reset", function()
      pwr(4, 2, 0x0007)
      write_cmd(ABPE | HPIE, 0x103f)
      port:events(); isr()
      port:press()
      assert.are.same({ "intx" }, port:events())
      assert.is_true(port:intx())
      isr()
      assert.are.same({ "intx" }, port:events())
      assert.is_false(port:intx())
      assert.is_true(pwr(0x3e, 2, 0x40))
      assert.are.same({ "bus_reset" }, port:events())
   end)

   it("refuses a second function, an empty removal, and what is not a C function", function()
      assert.is_true(port:insert(dev))
      local ok, msg, errno = port:insert(pcihost.host_bridge())
      assert.is_nil(ok)
      assert.are.equal(EBUSY, errno)
      assert.matches("insert into root port", msg)
      assert(port:remove())
      ok, msg, errno = port:remove()
      assert.is_nil(ok)
      assert.are.equal(ENOENT, errno)
      assert.matches("remove from root port", msg)
      assert.has_error(function() port:insert({}) end)
      assert.has_error(function() port:insert(port) end)
      assert.has_error(function() core.rootport { secondary = 2, subordinate = 1 } end)
      assert.has_error(function() core.rootport { mem = { base = 0x1000, size = 0x100000 } } end)
      assert.has_error(function() core.rootport { io = { base = 0xf000, size = 0x2000 } } end)
      assert.has_error(function() core.rootport { slot = 0x2000 } end)
   end)

   it("keeps the function behind it alive, and follows the guest's bus numbers", function()
      assert(port:insert(pcihost.config_space { vendor = 0x144d, device = 0xa808 }, true))
      collectgarbage(); collectgarbage()
      assert.are.equal(0xa808144d, cfg(1, 0, 0, 0, 4))
      pwr(0x18, 4, 0x00040400)
      assert.are.equal(0xffffffff, cfg(1, 0, 0, 0, 4))
      assert.are.equal(0xa808144d, cfg(4, 0, 0, 0, 4))
      assert.are.equal(4, port:state().secondary)
      -- the port's own accessors see the same registers
      assert.are.equal(0x00040400, port:cfg_read(0x18, 4))
      assert.is_false(port:cfg_write(0x18, 4, 0x00010100))
      assert.are.equal(0xa808144d, cfg(1, 0, 0, 0, 4))
   end)
end)
