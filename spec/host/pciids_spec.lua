local pciids = require "vfio.pciids"

describe("pciids", function()
   local tmp
   lazy_setup(function()
      tmp = os.tmpname()
      local f = assert(io.open(tmp, "w"))
      f:write(table.concat({
         "# comment",
         "1234  Acme Corp",
         "\t0001  Widget",
         "\t\t1234 0010  Widget Pro",
         "\t0002  Gadget",
         "# a comment between vendors",
         "5678  Other Inc.",
         "",
         "C 02  Network controller",
         "\t00  Ethernet controller",
         "C 0c  Serial bus controller",
         "\t03  USB controller",
         "\t\t30  XHCI",
         "C ff  Unassigned class",
         "",
      }, "\n"))
      f:close()
      pciids.use(tmp)
   end)
   lazy_teardown(function()
      pciids.use(nil)
      os.remove(tmp)
   end)

   it("looks up vendors, devices and subsystems", function()
      assert.are.equal("Acme Corp", pciids.vendor(0x1234))
      assert.are.equal("Widget", pciids.device(0x1234, 0x0001))
      assert.are.equal("Gadget", pciids.device(0x1234, 0x0002))
      assert.are.equal("Widget Pro", pciids.subsystem(0x1234, 0x0001, 0x1234, 0x0010))
      assert.is_nil(pciids.device(0x5678, 0x0001))
      assert.is_nil(pciids.vendor(0x9999))
   end)

   it("builds lspci's labels, including for unknown ids", function()
      assert.are.equal("Acme Corp Widget", pciids.device_label(0x1234, 1))
      assert.are.equal("Other Inc. Device 0042", pciids.device_label(0x5678, 0x42))
      assert.are.equal("Device 9999:0001", pciids.device_label(0x9999, 1))
      assert.are.equal("Acme Corp Widget", pciids.subsystem_label(0x1234, 1, 0x1234, 1))
      assert.are.equal("Ethernet controller", pciids.class_label(0x0200))
      assert.are.equal("Unassigned class [ffff]", pciids.class_label(0xffff))
      assert.are.equal("Class 3400", pciids.class_label(0x3400))
      assert.are.equal("XHCI", pciids.progif(0x0c, 0x03, 0x30))
   end)

   it("reads Debian's pci.ids when present", function()
      pciids.use(nil)
      local f = io.open("/usr/share/misc/pci.ids")
      if not f then pending("no /usr/share/misc/pci.ids") return end
      -- the first vendor line of the real file, found independently of the module
      local id, name
      for line in f:lines() do
         id, name = line:match("^(%x%x%x%x)  (.+)$")
         if id then break end
      end
      f:close()
      assert.are.equal(name, pciids.vendor(tonumber(id, 16)))
      pciids.use(tmp)
   end)
end)
