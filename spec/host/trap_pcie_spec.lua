-- The PCI Express control registers on the recorded PCIe lab devices follow vfio-pci's
-- policy (drivers/vfio/pci/vfio_pci_config.c, init_pci_cap_exp_perm and
-- vfio_exp_config_write) on the trap core's own, whatever the backend lets through.
local fixture = require "support.fixture"
local record = require "vfio.record"

local PCIE = { "e1000e", "nvme", "virtio-net-pci", "qemu-xhci" }

-- through: guest bits the device gets; shadow: bits the guest owns (reads back what it
-- wrote, the device never sees them); every other bit is read-only: reads come from the
-- device, writes are dropped. DevCtl's FLR (15) and MRRS (14:12) have specs of their own.
local REGS = {
   { name = "DevCtl", off = 0x08, through = 0x0d1f, shadow = 0x00e0, skip = 0xf000 },
   { name = "LnkCtl", off = 0x10, through = 0, shadow = 0 },
   { name = "DevCtl2", off = 0x28, through = 0xffdf, shadow = 0, v2 = true },
   { name = "LnkCtl2", off = 0x30, through = 0, shadow = 0, v2 = true },
}

local function pcie_cap(t)
   for _, c in ipairs(t:caps()) do
      if c.id == 0x10 and not c.ext and not c.hidden then return c end
   end
end

local function dev16(be, off)
   return string.unpack("<I2", be:config_read(off, 2))
end

local function trap_with_devctl(name, devctl)
   local fx = fixture.load(name)
   local off = assert(pcie_cap(fixture.trap(fx))).off + 8
   return fixture.trap(record.patch(fx, off, string.pack("<I2", devctl)))
end

describe("trap PCIe control registers (vfio-pci's policy)", function()
   for _, reg in ipairs(REGS) do
      for _, size in ipairs({ 1, 2, 4 }) do
         it(("%s: forwards only what vfio-pci lets through, bit by bit, in %d-byte writes")
            :format(reg.name, size), function()
            local seen = 0
            for _, name in ipairs(PCIE) do
               local t, be = fixture.trap(name)
               local cap = assert(pcie_cap(t), name)
               assert.are.equal(name == "e1000e" and 20 or 60, cap.len, name) -- v1: no *2 registers
               if not reg.v2 or cap.len > reg.off then
                  seen = seen + 1
                  local off = cap.off + reg.off
                  local before = dev16(be, off)
                  for bit = 0, 15 do
                     local b = 1 << bit
                     if b & (reg.skip or 0) == 0 then
                        local what = ("%s %s bit %d, %d-byte write"):format(name, reg.name, bit, size)
                        -- the bits with specs of their own keep the guest's value
                        local keep = t:cfg_read(off, 2) & (reg.skip or 0)
                        local woff, v, v0 = off, b | keep, keep
                        if size == 1 then
                           local sh = 8 * (bit // 8)
                           woff, v, v0 = off + bit // 8, (v >> sh) & 0xff, (v0 >> sh) & 0xff
                        end
                        local w = be:stats().cfg_writes
                        t:cfg_write(woff, size, v)
                        local want = (before & ~reg.through) | (b & reg.through)
                        assert.are.equal(want, dev16(be, off), what .. ": device")
                        assert.are.equal((want & ~reg.shadow) | (b & reg.shadow), t:cfg_read(off, 2),
                                         what .. ": guest reads")
                        if reg.through == 0 and size < 4 then
                           assert.are.equal(w, be:stats().cfg_writes, what .. ": no device write")
                        end
                        t:cfg_write(woff, size, v0)
                        assert.are.equal(before & ~reg.through, dev16(be, off), what .. ": cleared")
                     end
                  end
                  assert.are.same({}, t:events(), name)
               end
            end
            assert.are.equal(reg.v2 and 3 or 4, seen)
         end)
      end
   end

   it("keeps DevCtl MPS in the shadow: the guest reads its value, the device keeps its own", function()
      for _, name in ipairs(PCIE) do
         local t, be = fixture.trap(name)
         local off = pcie_cap(t).off + 8
         local dev = dev16(be, off)
         t:cfg_write(off, 2, (dev & ~0x00e0) | 5 << 5)       -- 4096-byte payloads
         assert.are.equal(5, (t:cfg_read(off, 2) >> 5) & 7, name)
         assert.are.equal(dev & 0x00e0, dev16(be, off) & 0x00e0, name)
      end
   end)

   it("passes MRRS to the device no lower than the device's MPS, and never a reserved size", function()
      -- the recordings run at MPS 128 B; this one is patched to MPS 512 B, MRRS 512 B
      local t, be = trap_with_devctl("nvme", 2 << 5 | 2 << 12)
      local off = pcie_cap(t).off + 8
      local function mrrs(v) return (v >> 12) & 7 end
      assert.are.equal(2, mrrs(t:cfg_read(off, 2)))
      t:cfg_write(off, 2, 2 << 5 | 5 << 12)                 -- 4096 B: above MPS, as asked
      assert.are.equal(5, mrrs(dev16(be, off)))
      assert.are.equal(5, mrrs(t:cfg_read(off, 2)))
      t:cfg_write(off + 1, 1, 0)                            -- 128 B: the device gets MPS
      assert.are.equal(2, mrrs(dev16(be, off)))
      assert.are.equal(0, mrrs(t:cfg_read(off, 2)))         -- the guest reads its own
      t:cfg_write(off, 4, 2 << 5 | 4 << 12)                 -- 2048 B, in a dword write
      assert.are.equal(4, mrrs(dev16(be, off)))
      local w = be:stats().cfg_writes
      t:cfg_write(off, 2, 2 << 5 | 7 << 12)                 -- reserved encoding
      assert.are.equal(4, mrrs(dev16(be, off)))
      assert.are.equal(7, mrrs(t:cfg_read(off, 2)))
      assert.are.equal(w + 1, be:stats().cfg_writes)        -- the other bits' write only
      assert.are.equal(2, (dev16(be, off) >> 5) & 7)        -- MPS never changed
      -- acting on a change only: the host chose MRRS 256 B under MPS 512 B, and writes
      -- of other DevCtl bits keep it
      local t2, be2 = trap_with_devctl("virtio-net-pci", 2 << 5 | 1 << 12)
      local off2 = pcie_cap(t2).off + 8
      t2:cfg_write(off2, 2, t2:cfg_read(off2, 2) | 0x000f)   -- error reporting enables
      assert.are.equal(2 << 5 | 1 << 12 | 0x000f, dev16(be2, off2))
   end)

   it("turns initiate-FLR into an event only where DevCap offers FLR; it reads 0, never reaches the device", function()
      local flr = { nvme = true, ["virtio-net-pci"] = true, e1000e = false, ["qemu-xhci"] = false }
      for _, name in ipairs(PCIE) do
         local t, be = fixture.trap(name)
         local cap = pcie_cap(t)
         assert.are.equal(flr[name], t:cfg_read(cap.off + 4, 4) & 0x10000000 ~= 0, name)
         for _, size in ipairs({ 1, 2, 4 }) do
            local off, v = cap.off + 8, 0x8000
            if size == 1 then off, v = off + 1, 0x80 end
            t:cfg_write(off, size, v)
            assert.are.same(flr[name] and { { type = "flr" } } or {}, t:events(), name)
            assert.are.equal(0, t:cfg_read(cap.off + 8, 2) & 0x8000, name)
            assert.are.equal(0, dev16(be, cap.off + 8) & 0x8000, name)
         end
      end
   end)
end)
