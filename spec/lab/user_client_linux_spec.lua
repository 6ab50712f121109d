-- Linux under passthrough.lua with vfio-user devices (--device vfio-user:PATH): the
-- lab's kernel and initramfs (spec/support/linux_guest.lua, as linux_guest_spec boots
-- them), guest RAM going to each server by its memfd (DMA_MAP with the fd), and the
-- guest's own drivers as the judge:
-- * a Lua model served by a child process (spec/support/user_test_server.lua): the 16550A
--   serial card of examples/vfio-user, which 8250_pci must find and bind;
-- * the lab's nvme and e1000e, each served by bin/vfio-user-serve (luavfio's client
--   against luavfio's server over a kernel device): nvme reads the lab disk's pattern
--   with MSI-X completions, e1000e binds and takes interrupts, as linux_guest_spec
--   checks them passed straight through.
-- One boot with the three, on Debian 12's kernel only (#onekernel): the servers map the
-- guest's memfd into the devices' container with the container API the VMM's own specs
-- run through groups and iommufd alike.
local linux = require "support.linux_guest"
local server = require "support.user_test_server"
local us = require "support.user_server"
local lab = require "support.lab"

local slurp = require("support.child").slurp

describe("Linux with vfio-user devices under passthrough.lua #onekernel", function()
   local out, r, maps, logs = "", nil, "", ""
   lazy_setup(function()
      local nvme, e1000e = lab.need("nvme"), lab.need("e1000e")
      local log = os.tmpname()
      local serial = server.start("examples/vfio-user/serial_16550a.lua", { dma_log = log })
      local s1, s2 = us.start(nvme.bdf), us.start(e1000e.bdf)
      local ok, res = pcall(linux.ours, { "vfio-user:" .. serial.path, "vfio-user:" .. s1.socket,
                                          "vfio-user:" .. s2.socket }, { cpus = 2 })
      serial.stop()
      s1.stop()
      s2.stop()
      maps = slurp(log)
      os.remove(log)
      logs = ("\nnvme's server:\n%s\ne1000e's server:\n%s"):format(s1.output():sub(-1500),
                                                                  s2.output():sub(-1500))
      out = tostring(res)
      assert(ok, out .. logs)
      r = linux.parse(out)
      assert(r.init, "the guest never reached /init:\n" .. out .. logs)
      local dma = {}
      for l in s1.output():gmatch("[^\n]*DMA_MAP[^\n]*") do dma[#dma + 1] = l end
      logs = logs .. "\nnvme's DMA_MAP lines:\n" .. table.concat(dma, "\n")
   end)

   it("binds 8250_pci to the serial model served over vfio-user, its RAM shared by memfd", function()
      local d = r.pci["1b36:0002"]
      assert.is_table(d, "the serial card not seen by the guest:\n" .. out)
      assert.are.equal("serial", d.driver, "8250_pci's driver:\n" .. out)
      assert.matches(" fd\n", maps, "guest RAM DMA-mapped with its memfd")
   end)

   it("reads the lab disk's pattern through the nvme vfio-user-serve serves, with MSI-X completions", function()
      assert.are.equal("nvme", (r.pci["1b36:0010"] or {}).driver, out .. logs)
      for _, sector in ipairs { 0, 1234, 16383 } do
         assert.are.equal("ok", r.reads[sector], "sector " .. sector .. ":\n" .. out .. logs)
      end
      assert.is_true(linux.irq_total(r, "^nvme0q%d+$") > 0, out)
      assert.matches("DMA_MAP 0x%x+%+0x%x+ rw: the client's fd, mapped", logs)
   end)

   it("binds e1000e to the e1000e vfio-user-serve serves, its interrupts arriving", function()
      assert.are.equal("e1000e", (r.pci["8086:10d3"] or {}).driver, out .. logs)
      assert.is_true(linux.irq_total(r, "^eth%d") + linux.irq_total(r, "^enp") > 0, out)
   end)
end)
