-- A Linux guest's own drivers on passed-through lab devices: the lab's kernel and one
-- initramfs (lab/initramfs running spec/support/guest_checks.sh), under QEMU's vfio-pci
-- (lab/oracle --linux), the reference every check of passthrough.lua is held to.
local lab = require "support.lab"
local linux = require "support.linux_guest"

local IDS = { nvme = "1b36:0010", e1000e = "8086:10d3", ["virtio-net-pci"] = "1af4:1041",
              ["qemu-xhci"] = "1b36:000d" }
local DRIVER = { nvme = "nvme", e1000e = "e1000e", ["virtio-net-pci"] = "virtio-pci",
                 ["qemu-xhci"] = "xhci_hcd" }
local NAMES = { "nvme", "e1000e", "virtio-net-pci", "qemu-xhci" }

local function check_report(out, r)
   assert.is_true(r.init, "the guest never reached /init:\n" .. out)
   assert.are.equal(0, r.checks_exit, out)
   for _, name in ipairs(NAMES) do
      local d = r.pci[IDS[name]]
      assert.is_table(d, name .. " not seen by the guest:\n" .. out)
      assert.are.equal(DRIVER[name], d.driver, name .. "'s driver:\n" .. out)
   end
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
      local out, code = linux.oracle(bdfs)
      assert.are.equal(0, code, out)
      check_report(out, linux.parse(out))
   end)
end)
