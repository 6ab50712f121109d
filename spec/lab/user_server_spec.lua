-- bin/vfio-user-serve in the lab: a real device bound to vfio-pci (edu, nvme) served over
-- vfio-user through the trap core, QEMU 11.1's client (lab/qemu-vfio-user, from the
-- host's cache, read-only inside the lab) under qtest as the guest. Config space is the
-- trap's view, BARs go through the trap to the device, the device's INTx and MSI reach
-- the client's eventfds through VFIO_DEVICE_SET_IRQS, and guest RAM (a shared memfd) is
-- mapped into the device's IOMMU at the client's IOVAs, so edu's DMA engine reads and
-- writes it.
local lab = require "support.lab"
local qvu = require "support.qemu_vfio_user"
local us = require "support.user_server"
local stat = require "posix.sys.stat"

local BDF = "03.0"
-- edu's registers (BAR0): ID, liveness (reads back inverted), factorial, interrupt
-- status, raise, acknowledge; the DMA engine (lab.edu_dma's layout) and its buffer.
local ID, LIVENESS, FACT, STATUS, IRQ_STATUS, IRQ_RAISE, IRQ_ACK = 0x00, 0x04, 0x08, 0x20, 0x24, 0x60, 0x64
local DMA_SRC, DMA_DST, DMA_CNT, DMA_CMD, EDU_BUF = 0x80, 0x88, 0x90, 0x98, 0x40000

describe("vfio-user-serve with a lab device and QEMU 11.1's client #onekernel", function()
   local root, why = qvu.available()
   if not root then
      -- lab/setup unpacks it: inside the lab its absence is a failure, not a skip
      it("has QEMU's vfio-user client in the cache", function() error(why) end)
      return
   end

   describe("edu", function()
      local edu, srv, s, b0
      lazy_setup(function()
         edu = lab.need("edu")
         srv = us.start(edu.bdf)
         s = assert(qvu.start { socket = srv.socket, shared = true, memory = "128M" })
         local bars = s:assign_bars(BDF, { master = true })
         b0 = assert(bars[0], "edu's BAR0").addr
      end)
      lazy_teardown(function()
         if s then s:close() end
         if srv then srv.stop() end
      end)

      it("shows QEMU edu's IDs and class through the trap core", function()
         assert.are.equal(0x11e81234, s:cfg_read(BDF, 0x00, 4))
         assert.are.equal(0x00ff, s:cfg_read(BDF, 0x0a, 2))
         assert.truthy(s:find_cap(BDF, 0x05), "edu's MSI capability")
      end)

      it("reaches edu's registers through the trap: ID, liveness, factorial", function()
         assert.are.equal(0x010000ed, s:readl(b0 + ID))
         s:writel(b0 + LIVENESS, 0x12345678)
         assert.are.equal(0xedcba987, s:readl(b0 + LIVENESS))
         s:writel(b0 + FACT, 5)
         assert.is_true(lab.wait_until(function() return s:readl(b0 + STATUS) & 1 == 0 end))
         assert.are.equal(120, s:readl(b0 + FACT))
      end)

      it("maps the shared guest RAM into edu's IOMMU: DMA both ways", function()
         assert.matches("DMA_MAP 0x100000%+0x7f00000 rw: the client's fd, mapped", srv.output())
         s:memwrite(0x200000, "edu reads guest RAM")
         s:writeq(b0 + DMA_SRC, 0x200000)
         s:writeq(b0 + DMA_DST, EDU_BUF)
         s:writeq(b0 + DMA_CNT, 19)
         s:writel(b0 + DMA_CMD, 1)                                 -- RAM -> edu
         assert.is_true(lab.wait_until(function() return s:readl(b0 + DMA_CMD) & 1 == 0 end))
         s:writeq(b0 + DMA_SRC, EDU_BUF)
         s:writeq(b0 + DMA_DST, 0x300000)
         s:writel(b0 + DMA_CMD, 3)                                 -- edu -> RAM
         assert.is_true(lab.wait_until(function() return s:readl(b0 + DMA_CMD) & 1 == 0 end))
         assert.are.equal("edu reads guest RAM", s:memread(0x300000, 19))
      end)

      it("refuses the maps that come without an fd (the BIOS ROM): QEMU goes on", function()
         assert.matches("DMA_MAP 0xfffc0000%+0x40000 without an fd: a kernel device DMAs by itself",
            srv.output())
         assert.are.equal(0x010000ed, s:readl(b0 + ID))
      end)

      it("passes edu's INTx to the client's eventfd", function()
         s:irq_intercept_in("ioapic")
         s:writel(b0 + IRQ_RAISE, 0x1)
         assert.truthy(s:wait_irq(nil, 5))
         assert.are.equal(0x1, s:readl(b0 + IRQ_STATUS))
         s:writel(b0 + IRQ_ACK, 0x1)
      end)

      it("passes edu's MSI to the client's eventfd, QEMU writing the message into RAM", function()
         assert.truthy(s:msi_enable(BDF, 0x400000, 0x4321))
         s:writel(b0 + IRQ_RAISE, 0x2)
         assert.is_true(s:wait_mem(0x400000, 0x4321, 5))
         s:writel(b0 + IRQ_ACK, 0x2)
      end)

      it("serves a second QEMU after the first quits, and stops on SIGTERM releasing the device", function()
         s:close()
         s = assert(qvu.start { socket = srv.socket, shared = true, memory = "128M" })
         assert.are.equal(0x11e81234, s:cfg_read(BDF, 0x00, 4))
         local b = s:assign_bars(BDF)[0].addr
         assert.are.equal(0x010000ed, s:readl(b + ID))
         local socket = srv.socket
         assert.are.equal(0, srv.stop())
         srv = nil
         assert.is_nil(stat.stat(socket))
         -- the device file is closed: it opens again
         local vfio = require "vfio"
         local d = assert(vfio.open(edu.bdf))
         d:close()
      end)
   end)

   describe("edu with --trust-client", function()
      it("hands QEMU edu's BAR0 pages to map, but the page of the DMA guard's window", function()
         local edu = lab.need("edu")
         local srv = us.start(edu.bdf, { args = { "--trust-client" } })
         local ok, err = pcall(function()
            local s = assert(qvu.start { socket = srv.socket, shared = true, memory = "128M" })
            local b = s:assign_bars(BDF, { master = true })[0].addr
            assert.are.equal(0x010000ed, s:readl(b + ID))             -- page 0: through the trap
            s:writel(b + LIVENESS, 0x0f0f0f0f)
            assert.are.equal(0xf0f0f0f0, s:readl(b + LIVENESS))
            for _ = 1, 200 do s:readl(b + 0x2000) end                 -- mapped: no message
            s:close()
         end)
         local out
         local gone = lab.wait_until(function()
            out = srv.output()
            return out:find("gone: gone", 1, true)
         end, 10)
         local code = srv.stop()
         assert(ok, tostring(err) .. "\n" .. srv.output():sub(-2000))
         assert.is_true(gone, out)
         assert.are.equal(0, code)
         assert.matches("GET_REGION_INFO 0: the client may map 1 area%(s%) of it", out)
         local requests = tonumber(out:match("gone: gone %((%d+) requests"))
         assert.is_true(requests < 200, out)
      end)
   end)

   describe("nvme", function()
      it("shows QEMU the nvme's IDs and CAP register through the trap core", function()
         local nvme = lab.need("nvme")
         local srv = us.start(nvme.bdf)
         local ok, err = pcall(function()
            local s <close> = assert(qvu.start { socket = srv.socket, shared = true, memory = "128M" })
            assert.are.equal(nvme.vendor | nvme.device << 16, s:cfg_read(BDF, 0x00, 4))
            assert.are.equal(0x010802, s:cfg_read(BDF, 0x08, 4) >> 8)
            local bars = s:assign_bars(BDF)
            assert.are_not.equal(0xffffffff, s:readl(bars[0].addr))   -- CAP's low half
            assert.is_true(s:readl(bars[0].addr + 0x08) >> 16 >= 1)   -- VS: NVMe 1.x or later
         end)
         local code = srv.stop()
         assert(ok, tostring(err) .. "\n" .. srv.output():sub(-2000))
         assert.are.equal(0, code)
      end)
   end)
end)
