-- The reference: QEMU's own vfio-pci, nested under KVM in the lab (lab/oracle), shows its
-- guest the lab devices. First the oracle itself is checked against the devices' real
-- identity; then the config space the trap core presents is compared with it: IDs, class,
-- header type, BAR sizes and flags, and the order of standard and extended capabilities.
--
-- Deliberate differences: none seen with the lab devices. QEMU drops SR-IOV, ARI and
-- resizable BAR; the trap hides SR-IOV and resizable BAR and keeps ARI read-only (harmless
-- without other functions); no lab device has any of them.
local lab = require "support.lab"
local oracle = require "support.oracle"
local passthrough = require "vfio.vmm.passthrough"

local PCIE = { ["e1000e"] = true, ["nvme"] = true, ["virtio-net-pci"] = true, ["qemu-xhci"] = true }
local NAMES = { "edu", "e1000e", "nvme", "virtio-net-pci", "qemu-xhci", "pci-testdev" }
local deliberate = {}

local function rd(s, off, n)
   local v = 0
   for i = n, 1, -1 do v = v << 8 | (s:byte(off + i) or 0) end
   return v
end

-- The guest's view, from a config image (nested) or a read function (trap).
local function view(read, size)
   local v = {
      id = read(0, 4), class = read(8, 4) >> 8, header = read(0x0e, 1) & 0x7f, caps = {}, ext = {},
   }
   local p, seen = read(0x34, 1) & 0xfc, {}
   if (read(6, 2) & 0x10) ~= 0 then
      while p ~= 0 and not seen[p] do
         seen[p] = true
         v.caps[#v.caps + 1] = read(p, 1)
         p = read(p + 1, 1) & 0xfc
      end
   end
   p, seen = 0x100, {}
   while size > 256 and p ~= 0 and not seen[p] do
      seen[p] = true
      local h = read(p, 4)
      if h == 0 or h == 0xffffffff then break end
      if (h & 0xffff) ~= 0 then v.ext[#v.ext + 1] = h & 0xffff end
      p = (h >> 20) & 0xffc
   end
   return v
end

-- sysfs resource flags: IO 0x100, MEM 0x200, PREFETCH 0x2000, MEM_64 0x100000
local function res_bars(res)
   local out = {}
   for i = 0, 6 do
      local r = res[i + 1]
      if r and r.stop > r.start then
         out[i] = { size = r.stop - r.start + 1, io = (r.flags & 0x100) ~= 0,
                    prefetch = (r.flags & 0x2000) ~= 0, is64 = (r.flags & 0x100000) ~= 0 }
         -- Linux flags every ROM resource prefetchable: a ROM BAR has no such bit
         if i == 6 then out[i].prefetch = false end
      end
   end
   return out
end

local function trap_bars(pt)
   local out = {}
   for i = 0, 6 do
      local b = pt:bars()[i]
      if b.size > 0 and not b.upper then
         out[i] = { size = b.size, io = b.io, prefetch = b.prefetch, is64 = b.is64 }
      end
   end
   return out
end

-- #nested: spec/run gives this file a lab boot of its own. Run after the other lab specs in
-- one boot, the nested Linux guest sometimes froze the whole lab guest (about 1 run in 3;
-- cause not found yet); in a fresh boot it has not.
describe("lab/oracle (QEMU vfio-pci nested under KVM) #nested", function()
   local seen
   lazy_setup(function()
      assert.is_true(lab.inside, "run me with lab/run")
      -- devices other specs left to the GC must be closed before QEMU opens their groups
      collectgarbage(); collectgarbage()
      local list = {}
      for _, name in ipairs(NAMES) do
         list[#list + 1] = (PCIE[name] and "port:" or "") .. lab.need(name).bdf
      end
      seen = oracle.run(list)
   end)

   it("shows a nested guest each passed-through device with its ids and BARs", function()
      for _, name in ipairs(NAMES) do
         local d = lab.need(name)
         local v = assert(seen[d.bdf], "nested guest did not see " .. name)
         assert.are.equal(PCIE[name] and 4096 or 256, #v.config)
         assert.are.equal(d.vendor, rd(v.config, 0, 2))
         assert.are.equal(d.device, rd(v.config, 2, 2))
         assert.are.equal(d.class, rd(v.config, 9, 3))
      end
      -- edu's BAR0: 1 MiB of memory, assigned by the nested guest
      local bar0 = seen[lab.need("edu").bdf].resources[1]
      assert.are.equal(0x100000, bar0.stop - bar0.start + 1)
      assert.are.equal(0x200, bar0.flags & 0x200) -- IORESOURCE_MEM
   end)

   for _, name in ipairs(NAMES) do
      it("and the trap core shows the same " .. name .. ": IDs, class, header, BARs, capability order", function()
         local d = lab.need(name)
         local q = assert(seen[d.bdf], name .. " not seen by the nested guest")
         local vfio = require "vfio"
         local dev <close> = assert(vfio.open(d.bdf))
         local pt <close> = assert(passthrough(dev, { quirks = false, layout = false, pcie = PCIE[name] }))
         local tv = view(function(o, n) return pt:cfg_read(o, n) end, pt.trap:info().cfg_size)
         local qv = view(function(o, n) return rd(q.config, o, n) end, #q.config)
         for _, k in ipairs(deliberate[name] or {}) do tv[k], qv[k] = nil, nil end
         assert.are.same(qv, tv)
         assert.are.same(res_bars(q.resources), trap_bars(pt))
      end)
   end
end)
