-- Lab: record every lab device with vfio.record and check the recording replays what
-- the kernel's VFIO device shows, through the same trap core. With
-- LUAVFIO_RECORD_DIR=spec/fixtures the recordings are kept as the host specs' fixtures.
local lab = require "support.lab"
local core = require "vfio.core"
local record = require "vfio.record"

-- A device object with the interface vfio.record uses (config, region(i), irq_info(i)):
-- vfio.open when the Lua layer has it, else straight from vfio.core.
local function open(d)
   local ok, vfio = pcall(require, "vfio")
   if ok and vfio.open then return assert(vfio.open(d.bdf)) end
   local c = assert(core.container())
   local g = assert(core.group(d.group))
   assert(g:set_container(c))
   assert(c:set_iommu())
   local h = assert(g:device(d.bdf))
   local info = assert(h:info())
   return {
      bdf = d.bdf, handle = h, num_regions = info.num_regions, num_irqs = info.num_irqs,
      config = h:region(7),
      region = function(self, i) return self.handle:region(i) end,
      irq_info = function(self, i) return self.handle:irq_info(i) end,
      fileno = function(self) return self.handle:fileno() end,
      close = function(self) self.handle:close(); g:close(); c:close() end,
      _keep = { c, g },
   }
end

local function vfio_backend(dev, name)
   -- pread/pwrite only, as the recording was made
   return assert(core.vfio_backend(dev.handle or dev, { mmap = false, name = name }))
end

local names = { "edu", "e1000e", "nvme", "virtio-net-pci", "qemu-xhci", "pci-testdev" }

describe("vfio.record in the lab", function()
   assert.is_true(lab.inside, "run me with lab/run")
   local outdir = os.getenv("LUAVFIO_RECORD_DIR")
   for _, name in ipairs(names) do
      it("records " .. name .. " and replays it like the VFIO device", function()
         local d = lab.need(name)
         local dev = open(d)
         local path = (outdir or "/tmp") .. "/" .. name .. ".lua"
         local fx = assert(record.record(dev, path, { name = name }))
         assert.are.equal(d.vendor, fx.vendor)
         assert.are.equal(d.device, fx.device)
         local back = assert(record.load(path))
         assert.are.equal(fx.config, back.config)
         local replay = assert(record.backend(path))
         local live = vfio_backend(dev, d.bdf)
         local tr, tl = assert(core.trap(replay)), assert(core.trap(live))
         -- the same trap core over the recording and over the device
         assert.are.same(tl:bars(), tr:bars())
         assert.are.same(tl:caps(), tr:caps())
         local size = tl:info().cfg_size
         for off = 0, size - 4, 4 do
            local a, b = tl:cfg_read(off, 4), tr:cfg_read(off, 4)
            assert(a == b, ("%s config %#x: device %#x, replay %#x"):format(name, off, a, b))
         end
         tl:close(); tr:close(); live:close()
         dev:close()
      end)
   end
end)
