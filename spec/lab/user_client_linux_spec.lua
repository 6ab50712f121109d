-- Linux under passthrough.lua with a vfio-user device (--device vfio-user:PATH): the
-- lab's kernel and initramfs (spec/support/linux_guest.lua, as linux_guest_spec boots
-- them), the device a Lua model served by a child process (spec/support/
-- user_test_server.lua): the 16550A serial card of examples/vfio-user, which the
-- kernel's own 8250_pci driver must find and bind. Guest RAM goes to the server by its
-- memfd (DMA_MAP with the fd).
local linux = require "support.linux_guest"
local server = require "support.user_test_server"

local slurp = require("support.child").slurp

describe("Linux with a vfio-user device under passthrough.lua #perinterface", function()
   it("binds 8250_pci to the serial model served over vfio-user, its RAM shared by memfd", function()
      local log = os.tmpname()
      local srv = server.start("examples/vfio-user/serial_16550a.lua", { dma_log = log })
      local ok, out = pcall(linux.ours, { "vfio-user:" .. srv.path })
      srv.stop()
      local maps = slurp(log)
      os.remove(log)
      assert(ok, out)
      local r = linux.parse(out)
      assert.is_true(r.init, "the guest never reached /init:\n" .. out)
      local d = r.pci["1b36:0002"]
      assert.is_table(d, "the serial card not seen by the guest:\n" .. out)
      assert.are.equal("serial", d.driver, "8250_pci's driver:\n" .. out)
      assert.matches(" fd\n", maps, "guest RAM DMA-mapped with its memfd")
   end)
end)
