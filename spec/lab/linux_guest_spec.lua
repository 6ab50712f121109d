-- A Linux guest's own drivers on passed-through lab devices: the lab's kernel and one
-- initramfs (lab/initramfs running spec/support/guest_checks.sh), under QEMU's vfio-pci
-- (lab/oracle --linux), the reference, and under passthrough.lua, held to the same checks.
local lab = require "support.lab"
local linux = require "support.linux_guest"

local IDS = { nvme = "1b36:0010", e1000e = "8086:10d3", ["virtio-net-pci"] = "1af4:1041",
              ["qemu-xhci"] = "1b36:000d", edu = "1234:11e8", ["pci-testdev"] = "1b36:0005" }
-- edu and pci-testdev have no driver in the guest kernel
local DRIVER = { nvme = "nvme", e1000e = "e1000e", ["virtio-net-pci"] = "virtio-pci",
                 ["qemu-xhci"] = "xhci_hcd", edu = "none", ["pci-testdev"] = "none" }
local NAMES = { "nvme", "e1000e", "virtio-net-pci", "qemu-xhci", "edu", "pci-testdev" }

local function check_report(out, r)
   assert.is_true(r.init, "the guest never reached /init:\n" .. out)
   assert.are.equal(2, r.cpus, "CPUs online:\n" .. out)
   assert.are.equal(0, r.checks_exit, out)
   for _, name in ipairs(NAMES) do
      local d = r.pci[IDS[name]]
      assert.is_table(d, name .. " not seen by the guest:\n" .. out)
      assert.are.equal(DRIVER[name], d.driver, name .. "'s driver:\n" .. out)
   end
   -- edu and pci-testdev: seen with their BARs; edu's MSI reaches the guest's CPU
   for _, name in ipairs { "edu", "pci-testdev" } do
      local bdf = r.pci[IDS[name]].bdf
      assert.matches("\nres " .. bdf:gsub("%p", "%%%0") .. " 0 0x", out, name .. "'s BAR0")
   end
   assert.is_true((r.edu_msi or 0) >= 4, "edu's MSI not seen by the guest:\n" .. out)
   -- nvme: the namespace reads back the lab disk's pattern, completions arrive on MSI-X
   for _, s in ipairs { 0, 1234, 16383 } do assert.are.equal("ok", r.reads[s], "sector " .. s) end
   assert.is_true(linux.irq_total(r, "^nvme0q%d+$") > 0, out)
   -- e1000e and virtio-net: their MSI-X vectors requested once the interface is up
   assert.is_true(linux.irq_total(r, "^eth%d") + linux.irq_total(r, "^enp") > 0
      or linux.irq_total(r, "virtio") > 0, out)
end

describe("a Linux guest under QEMU's vfio-pci (lab/oracle --linux) #nested", function()
   it("binds nvme, e1000e, virtio-net and xhci to their own drivers; nvme reads the disk", function()
      assert.is_true(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()
      local bdfs = {}
      for _, name in ipairs(NAMES) do bdfs[#bdfs + 1] = lab.need(name).bdf end
      local out, code = linux.oracle(bdfs, { cpus = 2 })
      assert.are.equal(0, code, out)
      check_report(out, linux.parse(out))
   end)
end)

describe("a Linux guest under passthrough.lua #nested", function()
   local function bdfs()
      local list = {}
      for _, name in ipairs(NAMES) do list[#list + 1] = lab.need(name).bdf end
      return list
   end

   it("binds the same drivers to the same four devices with 2 CPUs, reads the disk, counts MSI-X", function()
      assert.is_true(lab.inside, "run me with lab/run")
      collectgarbage(); collectgarbage()
      local out, code = linux.ours(bdfs(), { cpus = 2 })
      assert.are.equal(0, code, out)
      assert.matches("passthrough.lua: guest poweroff", out)
      local r = linux.parse(out)
      check_report(out, r)
      -- each device on its own slot from 00:04.0, the 64-bit prefetchable BAR above 4 GiB (at
      -- 4 GiB: the window starts past RAM, which all fits below the hole)
      assert.are.equal("0000:00:04.0", r.pci[IDS.nvme].bdf)
      assert.matches("res " .. r.pci[IDS["virtio-net-pci"]].bdf:gsub("%p", "%%%0") .. " 4 0x0000000100000000", out)
      -- nvme made an I/O queue per CPU, each with its own MSI-X vector
      assert.is_true(r.irqs.nvme0q1 ~= nil and r.irqs.nvme0q2 ~= nil, out)
      -- the devices are usable again afterwards: nothing left bound or mapped
      local vfio = require "vfio"
      for _, b in ipairs(bdfs()) do
         local d = assert(vfio.open(b))
         d:close()
      end
   end)

   it("refuses bad input with a clear message and a non-zero status, leaving nothing behind", function()
      local kernel = require("support.linux_guest").kernel()
      local nvme = lab.need("nvme").bdf
      local function run(args)
         local p = assert(io.popen("lua5.4 passthrough.lua " .. args .. " 2>&1"))
         local out = p:read("a")
         local _, _, code = p:close()
         return out, code
      end
      local out, code = run("--kernel passthrough.lua --device " .. nvme)
      assert.are.equal(125, code); assert.matches("not a bzImage", out)
      out, code = run(("--kernel %s --initrd %s --mem 8 --device %s"):format(kernel, linux.initrd(), nvme))
      assert.are_not.equal(0, code); assert.matches("MiB", out)
      out, code = run(("--kernel %s --device 0000:00:1f.7"):format(kernel))
      assert.are_not.equal(0, code); assert.matches("0000:00:1f.7", out)
      out, code = run(("--kernel %s --frobnicate --device %s"):format(kernel, nvme))
      assert.are.equal(64, code); assert.matches("unknown option '%-%-frobnicate'", out)
      local d = assert(require("vfio").open(nvme))                   -- still free
      d:close()
   end)
end)
