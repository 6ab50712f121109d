-- The vfio-user server (lua/vfio/user/server.lua, bin/vfio-user-serve) against QEMU 11.1's
-- own client (-device vfio-user-pci) under qtest: the spec is the guest's CPU (config
-- space through CF8/CFC, port and memory accesses, interrupt lines), QEMU forwards what
-- it does to the server as vfio-user messages, and the models' state is read back in the
-- server process through a control channel (spec/support/user_server.lua). Pending when
-- lab/setup has not unpacked that QEMU (lab/vfio-user-client).
local qvu = require "support.qemu_vfio_user"
local us = require "support.user_server"
local child = require "support.child"
local record = require "vfio.record"
local stat = require "posix.sys.stat"

local BDF = "03.0"
local SERIAL = us.ROOT .. "/examples/vfio-user/serial_16550a.lua"
local GPIO = us.ROOT .. "/examples/vfio-user/pci_idio_16.lua"
local TEST_MODEL = us.ROOT .. "/spec/support/user_test_model.lua"

-- UART registers (offsets in BAR0) and bits, as serial_reg.h names them.
local THR, IER, IIR, MCR, LSR = 0, 1, 2, 4, 5
local IER_THRI, MCR_LOOP, LSR_DR = 0x02, 0x10, 0x01

describe("vfio-user server with QEMU 11.1's client under qtest", function()
   local root, why = qvu.available()
   if not root then
      pending(why)
      return
   end

   describe("serving the 16550A model (examples/vfio-user/serial_16550a.lua)", function()
      local srv, s, io0
      lazy_setup(function()
         srv = us.start(SERIAL, { control = true })
         s = assert(qvu.start { socket = srv.socket })
         local bars = s:assign_bars(BDF)
         io0 = bars[0] and bars[0].kind == "io" and bars[0].addr
      end)
      lazy_teardown(function()
         if s then s:close() end
         if srv then srv.stop() end
      end)

      it("shows QEMU the IDs, the class and one 8-byte I/O BAR", function()
         assert.are.equal(0x00021b36, s:cfg_read(BDF, 0x00, 4))
         assert.are.equal(0x07000201, s:cfg_read(BDF, 0x08, 4))    -- class 070002, revision 1
         assert.are.equal(0x11001af4, s:cfg_read(BDF, 0x2c, 4))    -- subsystem
         assert.are.equal(1, s:cfg_read(BDF, 0x3d, 1))             -- INTA
         assert.truthy(io0, "BAR0 is an I/O BAR")
      end)

      it("loops THR back to RBR through posted I/O writes and synchronous reads", function()
         s:outb(io0 + MCR, MCR_LOOP)
         for _, ch in ipairs { 0x41, 0x00, 0xff } do
            s:outb(io0 + THR, ch)
            assert.are.equal(LSR_DR, s:inb(io0 + LSR) & LSR_DR)
            assert.are.equal(ch, s:inb(io0 + THR))
         end
         assert.are.equal(0, s:inb(io0 + LSR) & LSR_DR)
         s:outb(io0 + MCR, 0)
      end)

      it("echoes the line's output back to its input when the model is told to", function()
         srv:eval("dev:set_echo(true) dev:transmitted()")
         for c in ("ok?"):gmatch(".") do s:outb(io0 + THR, c:byte()) end
         local got = {}
         for _ = 1, 3 do got[#got + 1] = string.char(s:inb(io0 + THR)) end
         assert.are.equal("ok?", table.concat(got))
         assert.are.equal("ok?", srv:eval("return dev:transmitted()"))
         srv:eval("dev:set_echo(false)")
      end)

      it("raises INTx through the client's eventfd when IER enables the THRE interrupt", function()
         s:irq_intercept_in("ioapic")
         assert.is_nil(s:irq_level(23) or nil)
         s:outb(io0 + IER, IER_THRI)
         local line = assert(s:wait_irq(nil, 3))
         assert.is_true(line >= 16 and line <= 23, line)
         assert.are.equal(0x02, s:inb(io0 + IIR) & 0x0f)           -- THRE is the cause
         s:outb(io0 + IER, 0)
      end)

      it("serves a second QEMU once the first has quit (a VMM restarted), the device reset", function()
         s:outb(io0 + MCR, MCR_LOOP)
         s:outb(io0 + THR, 0x55)                                   -- left in the FIFO
         s:close()
         s = assert(qvu.start { socket = srv.socket })
         assert.are.equal(0x00021b36, s:cfg_read(BDF, 0x00, 4))
         io0 = s:assign_bars(BDF)[0].addr
         assert.are.equal(0, s:inb(io0 + MCR))                     -- reset: loopback off
         assert.are.equal(0, s:inb(io0 + LSR) & LSR_DR)            -- and the FIFO empty
         s:outb(io0 + MCR, MCR_LOOP)
         s:outb(io0 + THR, 0x5a)
         assert.are.equal(0x5a, s:inb(io0 + THR))
         child.wait_for(srv.child, "the second client", function()
            return select(2, srv.output():gsub("client connected", "")) == 2
         end, 5)
      end)
   end)

   describe("serving the PCI-IDIO-16 model (examples/vfio-user/pci_idio_16.lua)", function()
      local srv, s, io2
      lazy_setup(function()
         srv = us.start(GPIO, { control = true })
         s = assert(qvu.start { socket = srv.socket })
         io2 = s:assign_bars(BDF)[2].addr
      end)
      lazy_teardown(function()
         if s then s:close() end
         if srv then srv.stop() end
      end)

      it("reads the input pins the model is given through BAR2", function()
         srv:eval("dev:set_inputs(0x3ca5)")
         assert.are.equal(0xa5, s:inb(io2 + 1))
         assert.are.equal(0x3c, s:inb(io2 + 5))
      end)

      it("drives the outputs the model records", function()
         srv:eval("dev:output_log()")
         s:outb(io2 + 0, 0x81)
         s:outb(io2 + 4, 0x7e)
         assert.are.same({ 0x0081, 0x7e81 }, { srv:eval("return table.unpack(dev:output_log())") })
         assert.are.equal(0x7e81, srv:eval("return dev:outputs()"))
         assert.are.equal(0x81, s:inb(io2 + 0))
      end)

      it("raises its change-of-state interrupt while QEMU is idle", function()
         s:irq_intercept_in("ioapic")
         s:inb(io2 + 2)                                             -- enable the interrupt
         srv:eval("dev:set_input(15, true)")                       -- a pin changes, no request
         assert.truthy(s:wait_irq(nil, 3))
         assert.are.equal(0x4 | 0x2, s:inb(io2 + 6))               -- raised; pins 8-15 changed
         s:outb(io2 + 1, 0)                                        -- cleared
         assert.are.equal(0, s:inb(io2 + 6))
      end)
   end)

   describe("serving a model with MSI, MSI-X and a DMA engine (spec/support/user_test_model.lua)", function()
      local srv
      lazy_setup(function() srv = us.start(TEST_MODEL, { control = true }) end)
      lazy_teardown(function() if srv then srv.stop() end end)

      local function session(shared)
         local s = assert(qvu.start { socket = srv.socket, shared = shared })
         local bars = s:assign_bars(BDF, { master = true })
         return s, bars[0].addr, bars[2].addr
      end

      it("delivers MSI: the vector's eventfd makes QEMU write the message into RAM", function()
         local s <close>, b0 = session(false)
         assert.truthy(s:msi_enable(BDF, 0x40000, 0x4242))
         s:writel(b0 + 0x20, 0)                                     -- raise vector 0
         assert.is_true(s:wait_mem(0x40000, 0x4242))
      end)

      it("delivers MSI-X through QEMU's table, a masked vector only once unmasked", function()
         local s <close>, b0, b2 = session(false)
         local cap = assert(s:find_cap(BDF, 0x11))
         for v, e in pairs { [2] = { 0x50000, 0x5151, 0 }, [1] = { 0x50100, 0x1111, 1 } } do
            s:writel(b2 + 16 * v, e[1])
            s:writel(b2 + 16 * v + 4, 0)
            s:writel(b2 + 16 * v + 8, e[2])
            s:writel(b2 + 16 * v + 12, e[3])
         end
         s:cfg_write(BDF, cap + 2, 2, s:cfg_read(BDF, cap + 2, 2) | 0x8000)
         s:writel(b0 + 0x20, 2)
         assert.is_true(s:wait_mem(0x50000, 0x5151))
         s:writel(b0 + 0x20, 1)                                     -- masked: pending
         assert.is_nil((s:wait_mem(0x50100, 0x1111, 0.3)))
         s:writel(b2 + 16 + 12, 0)                                  -- unmask vector 1
         s:writel(b0 + 0x20, 1)
         assert.is_true(s:wait_mem(0x50100, 0x1111))
      end)

      local function dma_both_ways(s, b0)
         s:memwrite(b0 + 0x100, "from the device, by DMA")
         s:writel(b0 + 0x08, 0x20000)
         s:writel(b0 + 0x0c, 0)
         s:writel(b0 + 0x10, 23)
         s:writel(b0 + 0x14, 1)                                     -- buffer -> RAM
         assert.is_true(s:wait_mem(0x20000, string.unpack("<I4", "from")))
         assert.are.equal("from the device, by DMA", s:memread(0x20000, 23))
         assert.are.equal(0, s:readl(b0 + 0x18))
         s:memwrite(0x30000, "guest RAM read by DMA!!")
         s:writel(b0 + 0x08, 0x30000)
         s:writel(b0 + 0x14, 2)                                     -- RAM -> buffer
         local t = child.now() + 3
         while s:memread(b0 + 0x100, 4) ~= "gues" and child.now() < t do child.sleep(0.01) end
         assert.are.equal("guest RAM read by DMA!!", s:memread(b0 + 0x100, 23))
         assert.are.equal(0, s:readl(b0 + 0x18))
      end

      it("DMAs both ways through DMA_READ/DMA_WRITE messages when guest RAM is private", function()
         local s <close>, b0 = session(false)
         local before = srv:eval("return dev.state.dmas")
         dma_both_ways(s, b0)
         assert.are.equal(before + 2, srv:eval("return dev.state.dmas"))
         assert.matches("DMA_MAP 0x100000%+0xff00000 rw: through DMA_READ/DMA_WRITE messages", srv.output())
      end)

      it("DMAs both ways through the client's mapped memfd when guest RAM is shared", function()
         local s <close>, b0 = session(true)
         dma_both_ways(s, b0)
         assert.matches("DMA_MAP 0x100000%+0xff00000 rw: the client's fd, mapped", srv.output())
         -- the BIOS ROM is not in the memfd: it comes without an fd, served by messages
         assert.matches("DMA_MAP 0xfffc0000%+0x40000 r: through DMA_READ/DMA_WRITE messages", srv.output())
      end)

      it("unmaps every range when the client leaves", function()
         child.wait_for(srv.child, "the last client's departure", function()
            return select(2, srv.output():gsub("gone: gone", "")) >= 4
         end, 5)
         assert.are.equal(0, srv:eval("return #dev._maps"))
      end)
   end)

   describe("serving a recording (spec/fixtures/nvme.lua) through the trap core", function()
      local srv, s, fx
      lazy_setup(function()
         fx = assert(record.load(us.ROOT .. "/spec/fixtures/nvme.lua"))
         srv = us.start(us.ROOT .. "/spec/fixtures/nvme.lua")
         s = assert(qvu.start { socket = srv.socket })
      end)
      lazy_teardown(function()
         if s then s:close() end
         if srv then srv.stop() end
      end)

      local function rec32(off) return (string.unpack("<I4", fx.config, off + 1)) end

      it("shows QEMU the recording's IDs, class and capability chain", function()
         for _, off in ipairs { 0x00, 0x08, 0x2c } do
            assert.are.equal(rec32(off), s:cfg_read(BDF, off, 4), ("offset 0x%02x"):format(off))
         end
         local function chain(read)
            local ids, off = {}, read(0x34)
            while off ~= 0 and #ids < 16 do
               ids[#ids + 1] = ("%02x@%02x"):format(read(off), off)
               off = read(off + 1)
            end
            return ids
         end
         local via_qemu = chain(function(o) return s:cfg_read(BDF, o, 1) end)
         assert.are.same(chain(function(o) return fx.config:byte(o + 1) end), via_qemu)
         assert.is_true(#via_qemu >= 2)
      end)

      it("reads the recorded BAR0 registers through QEMU", function()
         local b0 = s:assign_bars(BDF)[0]
         local bytes = fx.regions[0].data[1].bytes
         assert.are.equal(fx.regions[0].size, b0.size)
         assert.are.equal((string.unpack("<I4", bytes, 1)), s:readl(b0.addr))       -- CAP
         assert.are.equal((string.unpack("<I4", bytes, 9)), s:readl(b0.addr + 8))   -- VS
      end)
   end)

   -- #noasan: a minute of TCG; the server's C under it is ASan-checked by the qtest cases
   describe("a Linux guest (the lab's kernel under TCG) with the 16550A model #noasan", function()
      it("binds 8250_pci to it, and reads back through the model's echo what it wrote", function()
         local p = io.popen(". lab/cache.sh && cat \"$cache/lab/kernel/version\" 2>/dev/null && echo \"$cache\"")
         local ver, cache = p:read("l"), p:read("l")
         p:close()
         local kernel = cache and ver and ("%s/lab/kernel/boot/vmlinuz-%s"):format(cache, ver)
         if not kernel or not stat.stat(kernel) then
            pending("no lab kernel in the cache (lab/setup fetches it)")
            return
         end
         local ip = io.popen("lab/initramfs --modules '' --run spec/support/user_serial_guest.sh 2>&1")
         local initrd = ip:read("a"):match("(%S+)%s*$")
         assert(ip:close(), initrd)
         local srv = us.start(SERIAL, { control = true, model_opts = { echo = true } })
         local g = assert(qvu.start_guest { kernel = kernel, initrd = initrd, socket = srv.socket })
         local ok, err = pcall(child.wait_for, g, "the guest's checks",
            function() return g.output():find("guest: run.sh exit %d") end, 120)
         local out = g.output():gsub("\r", "")
         g.stop()
         local transmitted = srv:eval("return dev:transmitted()")
         srv.stop()
         assert(ok, tostring(err))
         assert.matches("user%-serial id 0x1b36:0x0002 class 0x070002", out)
         assert.matches("user%-serial driver serial\n", out)          -- 8250_pci
         assert.matches("user%-serial echo echo%-roundtrip!!\n", out)  -- INTx, EOI, unmask
         assert.matches("user%-serial irq +%d+: +[1-9]%d* [^\n]*ttyS%d", out)  -- counted
         assert.matches("guest: run.sh exit 0", out)
         assert.are.equal("echo-roundtrip!!", transmitted)
      end)
   end)

   it("vfio-user-serve stops on SIGTERM with a client connected: exit 0, socket removed", function()
      local srv = us.start(SERIAL)
      local s <close> = assert(qvu.start { socket = srv.socket })
      assert.are.equal(0x00021b36, s:cfg_read(BDF, 0x00, 4))
      local socket = srv.socket
      assert.are.equal(0, srv.stop())
      assert.is_nil(stat.stat(socket))
      assert.matches("gone: stopped", srv.output())
   end)
end)
