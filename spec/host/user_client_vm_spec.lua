-- A vfio-user device in a VM (#kvm: these run on a usable /dev/kvm, in make check the
-- lab's nested KVM): the board adds a device vfio.open("vfio-user:PATH") opened from a
-- Lua model served by a child process (spec/support/user_test_server.lua), its guest
-- RAM on a memfd the server maps (DMA_MAP with the fd), its mappable BAR a memory slot
-- of the server's memfd, its INTx on the board's router; and passthrough.lua boots the
-- multiboot test program (examples/guest) with the device, which finds it on bus 0,
-- sizes its BARs through the trap and walks its capabilities.
local core = require "vfio.core"
local vfio = require "vfio"
local model = require "vfio.user.model"
local board = require "vfio.vmm.board"
local assigned = require "vfio.vmm.assigned"
local server = require "support.user_test_server"
local kvmhost = require "support.kvm"

local function test_device()
   return model.new {
      name = "vm test device", vendor = 0x1b36, device = 0x11f0, class = 0xff0000, interrupt_pin = 1,
      bars = {
         { index = 0, kind = "mem32", size = 0x1000, registers = {
            { "scratch", 0x00, reset = 0x5a5a5a5a },
            { "doorbell", 0x04, access = "WO", write = function(d, _, v) d:raise(v) end },
         } },
         { index = 2, kind = "mem64", size = 0x2000, prefetchable = true },
      },
      capabilities = { { kind = "msix", table_size = 4, table_bar = 0, table_offset = 0x800, pba_offset = 0xc00 },
                       { kind = "express" } },
   }
end

local slurp = require("support.child").slurp

describe("a vfio-user device in a VM #kvm", function()
   local srv, dev, dma_log
   before_each(function()
      dma_log = os.tmpname()
   end)
   after_each(function()
      if dev then dev:close() end
      if srv then srv.stop() end
      os.remove(dma_log)
      dev, srv = nil, nil
   end)

   it("is added to a board: guest RAM shared by its memfd, BAR2 a slot of the server's memfd, INTx wired", function()
      local ok, why = kvmhost.usable()
      if not ok then pending(why) return end
      local ramfd = assert(core.ram_memfd(0x2000))
      srv = server.start(test_device, { dma_log = dma_log, mmap = { [2] = { fd = ramfd } } })
      dev = assert(vfio.open("vfio-user:" .. srv.path))
      local b = assert(board.new { mem_mib = 16, backing = "memfd" })
      local a = assert(assigned.new(dev))
      assert(b:add_device(a))
      -- every RAM range went to the server with the RAM's memfd
      local maps = {}
      for line in slurp(dma_log):gmatch("[^\n]+") do maps[#maps + 1] = line end
      assert.is_true(#maps >= 1, "guest RAM DMA-mapped")
      for _, l in ipairs(maps) do assert.matches(" fd$", l) end
      assert.are.same({ { iova = 0, size = 16 << 20 } }, dev.container:mappings())
      -- BAR2 is a memory slot (the backend's mapping of the server's memfd)
      local bar2 = a.trap:bars()[2]
      local slot
      for _, s in ipairs(b.vm:memory()) do
         if not s.ram and s.gpa == bar2.addr then slot = s end
      end
      assert.is_truthy(slot, "BAR2 mapped into the guest")
      assert.are.equal(0x2000, slot.size)
      -- BAR0 is trapped: its scratch register answers through the trap in C
      local bar0 = a.trap:bars()[0]
      assert.are.equal(0x5a5a5a5a, (a.trap:mmio_read(bar0.addr, 4)))
      assert.are.equal("intx", a:status().irq.mode)
      b:close()
      a:close()
      ramfd:close()
   end)

   it("refuses a board whose guest RAM the server cannot map", function()
      local ok, why = kvmhost.usable()
      if not ok then pending(why) return end
      srv = server.start(test_device)
      dev = assert(vfio.open("vfio-user:" .. srv.path))
      local b = assert(board.new { mem_mib = 16, backing = "anonymous" })
      local a = assert(assigned.new(dev))
      local added, err = b:add_device(a)
      assert.is_nil(added)
      assert.matches("mem%-backing memfd", err)
      b:close()
      a:close()
   end)

   it("boots the test program under passthrough.lua --device vfio-user:PATH", function()
      local ok, why = kvmhost.usable()
      if not ok then pending(why) return end
      srv = server.start(test_device, { dma_log = dma_log })
      local p = assert(io.popen(("lua5.4 passthrough.lua --device vfio-user:%s --guest build/guest/guest.elf "
         .. "--cmdline 'dev=1b36:11f0 caps' --timeout 60 2>&1"):format(srv.path)))
      local out = p:read("a")
      local _, _, code = p:close()
      assert.are.equal(0, code, out)
      assert.matches("FOUND %x%x:%x%x%.0 1b36:11f0", out)
      assert.matches("BAR0 mem32", out)
      assert.matches("BAR2 mem64", out)
      assert.matches("RESULT PASS", out)
      assert.matches(" fd\n", slurp(dma_log), "guest RAM shared with the server")
   end)
end)
