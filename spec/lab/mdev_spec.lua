-- Mediated devices on the real kernel, on mtty (samples/vfio-mdev/mtty.c: a virtual PCI
-- serial card of one or two 16550-like ports whose transmitter loops back into its own
-- receive FIFO): create, list, vfio.open by UUID and by sysfs path, config space, I/O
-- BARs, INTx and MSI through eventfds, data through the UART registers, remove, and the
-- errors. The lab kernel needs mtty (lab/run --kernel 6.12); on Debian's own kernel the
-- specs are pending with the reason.
local vfio = require "vfio"
local mdev = require "vfio.mdev"
local stat = require("posix.sys.stat").stat

local mtty = require "support.mtty"
local PARENT = mtty.PARENT
local IRQ = vfio.IRQ
local ENOENT, EEXIST, ENOSPC, EINVAL = 2, 17, 28, 22

-- 16550 registers (offsets in the port's I/O BAR) and bits mtty implements.
local RX, TX, IER, IIR, FCR, LCR, LSR, SCR = 0, 0, 1, 2, 2, 3, 5, 7
local DLL, DLM = 0, 1
local IER_RDI, IER_THRI = 0x01, 0x02
local FCR_FIFO_CLEAR = 0x07            -- enable the FIFO, clear both: trigger level 1
local LCR_8N1, LCR_DLAB = 0x03, 0x80
local LSR_DR, LSR_THRE_TEMT = 0x01, 0x60
local IIR_RDI = 0x04

local reason, cleanup, created = mtty.reason, mtty.cleanup, mtty.created

-- An mtty mdev of `typ` for the body of a spec, and a function that opens it (by its
-- UUID or by `name`); both undone after the spec.
local function with_mtty(typ)
   local uuid = created(assert(mdev.create("mtty", typ)))
   return uuid, function(name)
      local d = assert(vfio.open(name or uuid))
      mtty.undo(function() d:close() end)
      return d
   end
end

local function send(bar, s)
   for i = 1, #s do bar:write8(TX, s:byte(i)) end
end

local function receive(bar, n)
   local out = {}
   for i = 1, n do out[i] = string.char(bar:read8(RX)) end
   return table.concat(out)
end

describe("mdev on mtty", function()
   if not stat(PARENT) then
      it("needs the mtty parent", function() pending(reason()) end)
      return
   end
   after_each(cleanup)

   it("lists the parent and its two types", function()
      local parents = mdev.parents()
      local p
      for _, x in ipairs(parents) do if x.name == "mtty" then p = x end end
      assert.is_table(p, "mtty among " .. #parents .. " parents")
      assert.are.equal("/sys/devices/virtual/mtty/mtty", p.path)
      local by = {}
      for _, t in ipairs(p.types) do by[t.id] = t end
      assert.are.equal("vfio-pci", by["mtty-1"].device_api)
      assert.are.equal("vfio-pci", by["mtty-2"].device_api)
      assert.are.equal("Single port serial", by["mtty-1"].name)
      assert.are.equal("Dual port serial", by["mtty-2"].name)
      -- 24 ports in all: a dual port instance takes two
      assert.are.equal(by["mtty-1"].available_instances // 2, by["mtty-2"].available_instances)
      assert.is_true(by["mtty-1"].available_instances > 0)
   end)

   it("creates an mdev that vfio.devices lists, opens it by UUID and by path", function()
      local uuid, open = with_mtty("mtty-1")
      assert.is_true(mdev.is_uuid(uuid))
      local e
      for _, d in ipairs(assert(vfio.devices())) do
         if d.uuid == uuid then e = d end
      end
      assert.is_table(e, "vfio.devices lists " .. uuid)
      assert.is_true(e.mdev)
      assert.is_nil(e.bdf)
      assert.are.equal("mtty", e.parent)
      assert.are.equal("mtty-1", e.type)
      assert.is_string(e.driver)
      assert.is_number(e.group)
      for _, name in ipairs { uuid, uuid:upper(), "/sys/bus/mdev/devices/" .. uuid } do
         local dev = open(name)
         assert.are.equal(uuid, dev.uuid)
         assert.are.equal(uuid, dev.name)
         assert.is_nil(dev.bdf)
         assert.are.equal(e.group, dev.group:number())
         assert.is_true(dev.info.pci)
         assert.matches("^vfio.pci_device %(" .. uuid:gsub("%-", "%%-") .. "%)$", tostring(dev))
         dev:close()
      end
   end)

   it("presents a PCI serial controller: config space, I/O BARs, INTx and MSI", function()
      local _, open = with_mtty("mtty-2")
      local dev = open()
      local cfg = dev.config
      assert.are.equal(0xff, cfg.size)
      assert.are.equal(0x32534348, cfg:read32(0x00))     -- vendor 4348, device 3253
      assert.are.equal(0x07000210, cfg:read32(0x08))     -- serial controller, 16550, rev 10
      assert.are.equal(0x32534348, cfg:read32(0x2c))     -- subsystem
      assert.are.equal(1, cfg:read8(0x3d))               -- INTA#
      -- BAR0 and BAR1 are I/O BARs of 8 bytes (one per port): sizing reads back the mask
      for i, off in ipairs { 0x10, 0x14 } do
         assert.are.equal(1, cfg:read32(off) & 1, "BAR" .. (i - 1) .. " is I/O")
         cfg:write32(off, 0xffffffff)
         assert.are.equal(0xfffffff9, cfg:read32(off))
         cfg:write32(off, 0x1)
      end
      for i = 0, 1 do
         local r = dev:region(i)
         assert.are.equal(8, r.size)
         assert.is_true(r.readable and r.writable)
         assert.is_false(r.mappable)
      end
      for i = 2, 6 do assert.are.equal(0, dev:region(i).size) end
      local intx = assert(dev:irq_info(IRQ.INTX))
      assert.are.equal(1, intx.count)
      assert.is_true(intx.eventfd and intx.maskable and intx.automasked)
      local msi = assert(dev:irq_info(IRQ.MSI))
      assert.are.equal(1, msi.count)
      assert.is_true(msi.noresize)
      local none, _, errno = dev:irq_info(IRQ.MSIX)
      assert.is_nil(none)
      assert.are.equal(EINVAL, errno)
   end)

   it("loops serial data back through the UART's registers", function()
      local _, open = with_mtty("mtty-2")
      local dev = open()
      for port = 0, 1 do
         local bar = dev:region(port)
         bar:write8(FCR, FCR_FIFO_CLEAR)
         bar:write8(LCR, LCR_8N1)
         assert.are.equal(LSR_THRE_TEMT, bar:read8(LSR))
         local msg = port == 0 and "hello, mtty" or "port two"
         send(bar, msg)
         assert.are.equal(LSR_DR, bar:read8(LSR) & LSR_DR)
         assert.are.equal(msg, receive(bar, #msg))
         assert.are.equal(LSR_THRE_TEMT, bar:read8(LSR))
         -- the divisor latch and the scratch register keep what is written
         bar:write8(LCR, LCR_DLAB | LCR_8N1)
         bar:write8(DLL, 0x0c)
         bar:write8(DLM, 0x00)
         assert.are.equal(0x0c, bar:read8(DLL))
         assert.are.equal(0x00, bar:read8(DLM))
         bar:write8(LCR, LCR_8N1)
         assert.are.equal(LCR_8N1, bar:read8(LCR))
         bar:write8(SCR, 0x5a + port)
         assert.are.equal(0x5a + port, bar:read8(SCR))
      end
      -- the two ports are separate UARTs
      send(dev:region(0), "A")
      assert.are.equal(LSR_THRE_TEMT, dev:region(1):read8(LSR))
      assert.are.equal("A", receive(dev:region(0), 1))
   end)

   it("raises INTx for received data and MSI for an empty transmitter", function()
      local _, open = with_mtty("mtty-1")
      local dev = open()
      local bar = dev:region(0)
      local e <close> = vfio.eventfd()
      assert(dev:enable_irq(IRQ.INTX, e))
      bar:write8(FCR, FCR_FIFO_CLEAR)
      bar:write8(IER, IER_RDI)
      send(bar, "x")
      assert.are.equal(1, e:wait(2000))
      assert.are.equal(0xc0 | IIR_RDI, bar:read8(IIR))
      assert.are.equal("x", receive(bar, 1))
      -- INTx is automasked: nothing more until it is unmasked
      send(bar, "y")
      local n, err = e:wait(200)
      assert.is_nil(n, "masked INTx fired")
      assert.matches("timed out", err)
      assert.are.equal("y", receive(bar, 1))
      assert(dev:set_irqs(IRQ.INTX, "unmask", 0, 1))
      send(bar, "z")
      assert.are.equal(1, e:wait(2000))
      assert.are.equal("z", receive(bar, 1))
      assert(dev:disable_irq(IRQ.INTX))
      -- MSI: enabling the transmitter-empty interrupt with an empty FIFO raises it at once
      bar:write8(IER, 0)
      local m <close> = vfio.eventfd()
      assert(dev:enable_irq(IRQ.MSI, m))
      bar:write8(IER, IER_THRI)
      assert.are.equal(1, m:wait(2000))
      assert(dev:disable_irq(IRQ.MSI))
   end)

   it("removes an mdev, and says so when it is gone", function()
      local uuid = assert(mdev.create("mtty", "mtty-1"))
      mtty.undo(function() mdev.remove(uuid) end) -- when the spec fails before its own
      do
         local dev <close> = assert(vfio.open(uuid))
         assert.are.equal(0x32534348, dev.config:read32(0))
      end
      collectgarbage()
      assert.is_true(mdev.remove(uuid))
      assert.is_nil(stat("/sys/bus/mdev/devices/" .. uuid))
      local ok, err, errno = mdev.remove(uuid)
      assert.is_nil(ok)
      assert.matches("^remove mdev " .. uuid:gsub("%-", "%%-") .. ": no such mediated device", err)
      assert.are.equal(ENOENT, errno)
      local d
      d, err, errno = vfio.open(uuid)
      assert.is_nil(d)
      assert.matches("no such mediated device", err)
      assert.are.equal(ENOENT, errno)
   end)

   it("explains an unknown type, a UUID in use and a parent with no instances left", function()
      local u, err, errno = mdev.create("mtty", "mtty-9")
      assert.is_nil(u)
      assert.are.equal("create mdev: parent mtty has no type mtty-9 (types: mtty-1, mtty-2)", err)
      assert.are.equal(ENOENT, errno)
      u, err, errno = mdev.create("nosuch", "mtty-1")
      assert.is_nil(u)
      assert.matches("no mediated device parent nosuch", err)
      assert.are.equal(19, errno)
      local uuid = with_mtty("mtty-1")
      u, err, errno = mdev.create("mtty", "mtty-1", uuid)
      assert.is_nil(u)
      assert.matches("the UUID is in use", err)
      assert.are.equal(EEXIST, errno)
      -- take every port left, two at a time
      local left
      for _, t in ipairs(assert(mdev.types("mtty"))) do
         if t.id == "mtty-2" then left = t.available_instances end
      end
      for _ = 1, left do created(assert(mdev.create("mtty", "mtty-2"))) end
      u, err, errno = mdev.create("mtty", "mtty-2")
      assert.is_nil(u)
      assert.matches("no instances available", err)
      assert.are.equal(ENOSPC, errno)
   end)
end)
