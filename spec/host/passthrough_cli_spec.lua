-- passthrough.lua and the VMM without a device or KVM: the BAR split policy, --plan
-- on recorded devices, and the errors a user meets before any VM exists.
local layout = require "vfio.vmm.layout"

local function sh(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local _, _, code = p:close()
   return out, code
end

local function kinds(pieces)
   local out = {}
   for _, p in ipairs(pieces) do out[#out + 1] = ("%s %x+%x"):format(p.kind, p.off, p.len) end
   return out
end

describe("vfio.vmm.layout.split_bar", function()
   it("maps a plain mmap-able BAR whole", function()
      assert.are.same({ "map 0+100000" },
         kinds(layout.split_bar({ size = 0x100000, phys_size = 0x100000 }, { mappable = true })))
   end)

   it("traps the pages of trapped spans whole, a Lua window's too (its C range passes it on)", function()
      local p = layout.split_bar({ size = 0x100000, phys_size = 0x100000 },
         { mappable = true, trapped = { { 0x80, 0x20 } } })
      assert.are.same({ "trap 0+1000", "map 1000+ff000" }, kinds(p))
      p = layout.split_bar({ size = 0x100000, phys_size = 0x100000 },
         { mappable = true, trapped = { { 0xff0, 0x20 } } })              -- over a page edge
      assert.are.same({ "trap 0+2000", "map 2000+fe000" }, kinds(p))
      p = layout.split_bar({ size = 0x4000, phys_size = 0x4000 },
         { mappable = true, trapped = { { 0x2000, 65 * 16 }, { 0x3000, 16 } } })
      assert.are.same({ "map 0+2000", "trap 2000+2000" }, kinds(p))
   end)

   it("maps a page read-only when its only trapped spans are read-through windows", function()
      local p = layout.split_bar({ size = 0x2000, phys_size = 0x2000 },
         { mappable = true, trapped = { { 0x80, 0x20, ro = true } } })
      assert.are.same({ "romap 0+1000", "trap 0+1000", "map 1000+1000" }, kinds(p))
      p = layout.split_bar({ size = 0x2000, phys_size = 0x2000 },
         { mappable = true, trapped = { { 0x80, 0x20, ro = true }, { 0x800, 16 } } })
      assert.are.same({ "trap 0+1000", "map 1000+1000" }, kinds(p))
      p = layout.split_bar({ size = 0x3000, phys_size = 0x3000 },         -- one page each
         { mappable = true, trapped = { { 0x80, 0x20, ro = true }, { 0x1800, 16 } } })
      assert.are.same({ "romap 0+1000", "trap 0+2000", "map 2000+1000" }, kinds(p))
   end)

   it("traps what cannot be mapped: I/O BARs, sub-page BARs, bytes past the region", function()
      assert.are.same({ "trap 0+20" }, kinds(layout.split_bar({ size = 0x20, io = true }, { mappable = true })))
      assert.are.same({ "trap 0+800" }, kinds(layout.split_bar({ size = 0x800 }, { mappable = true })))
      assert.are.same({ "map 0+1000", "trap 1000+3000" },
         kinds(layout.split_bar({ size = 0x4000, phys_size = 0x1000 }, { mappable = true })))
      assert.are.same({ "trap 0+4000" }, kinds(layout.split_bar({ size = 0x4000 }, { mappable = false })))
   end)

   it("sends everything to Lua when tracing: no slot, no range", function()
      assert.are.same({},
         kinds(layout.split_bar({ size = 0x2000 }, { mappable = true, trace = true })))
      assert.are.same({},
         kinds(layout.split_bar({ size = 0x2000 }, { mappable = true, trace = true,
                                                     trapped = { { 0x80, 0x20, ro = true } } })))
   end)

   it("ignores windows that lie outside the BAR", function()
      assert.are.same({ "map 0+1000" },
         kinds(layout.split_bar({ size = 0x1000 }, { mappable = true, trapped = { { 0x5000, 8 } } })))
   end)
end)

describe("passthrough.lua before a VM exists", function()
   it("lays out RAM past the hole from 4 GiB up, and refuses more than the address map holds", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --mem 6G --device spec/fixtures/edu.lua")
      assert.are.equal(0, code, out)
      assert.matches("guest RAM 6144 MiB %(anonymous%) at 0x0%.%.0xafffffff and 0x100000000%.%.0x1cfffffff, "
         .. "mapped for device DMA at IOVA == GPA", out)
      out, code = sh("lua5.4 passthrough.lua --plan --mem 2816 --device spec/fixtures/edu.lua --mem-backing memfd")
      assert.are.equal(0, code, out)
      assert.matches("guest RAM 2816 MiB %(memfd%) at 0x0%.%.0xafffffff,", out)
      out, code = sh("lua5.4 passthrough.lua --plan --mem 800G --device spec/fixtures/edu.lua")
      assert.are.equal(64, code)
      assert.matches("%-%-mem 800G: guest RAM of 819200 MiB: it must be 2 to 785152 MiB %(RAM past the hole at "
         .. "0xb0000000 continues at 4 GiB and ends by 768 GiB, below the 64%-bit BAR window%)", out)
   end)

   it("--plan lays out a recorded edu: BAR address, mapped and trapped parts, IRQs, quirks", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/edu.lua")
      assert.are.equal(0, code, out)
      assert.matches("1234:11e8 class 00ff00 %-> guest 00:04%.0", out)
      assert.matches("BAR0 mem32%s+size 0x100000 at 0xc0000000\n", out)
      assert.matches("  %+0%.%.%+0xfff mapped read%-only %(reads direct, writes trapped%)\n"
         .. "  %+0%.%.%+0xfff trapped %(C dispatch%)\n    %+0x80%.%.%+0x9f trapped %(Lua handler%)\n"
         .. "  %+0x1000%.%.%+0xfffff mapped %(KVM memory slot%)\n", out)
      assert.matches("%+0x1000%.%.%+0xfffff mapped %(KVM memory slot%)", out)
      assert.matches("irq INTx pin A %-> line 10 %(GSI 10%)", out)
      assert.matches("quirks edu%-dma%-guard", out)
   end)

   it("--plan shows the INTx lines the run would wire: legacy ones for the multiboot guest, "
      .. "IOAPIC pins (which the MP table names) with --kernel", function()
      local two = " --device spec/fixtures/edu.lua --device spec/fixtures/e1000e.lua"
      local out, code = sh("lua5.4 passthrough.lua --plan" .. two)
      assert.are.equal(0, code, out)
      local lines = {}
      for l in out:gmatch("irq INTx pin A %-> line (%d+)") do lines[#lines + 1] = tonumber(l) end
      assert.are.same({ 10, 11 }, lines)
      out, code = sh("lua5.4 passthrough.lua --plan --kernel passthrough.lua" .. two)
      assert.are.equal(0, code, out)
      lines = {}
      for l in out:gmatch("irq INTx pin A %-> line (%d+) %(GSI %d+%)") do lines[#lines + 1] = tonumber(l) end
      assert.are.same({ 16, 17 }, lines)
      -- one device is a board with one device: the same lines as the first of several
      out, code = sh("lua5.4 passthrough.lua --plan --kernel passthrough.lua --device spec/fixtures/edu.lua")
      assert.are.equal(0, code, out)
      assert.matches("guest 00:04%.0.*irq INTx pin A %-> line 16 %(GSI 16%)", out)
   end)

   it("--plan shows nvme's MSI-X table and PBA trapped, the rest of BAR0 mapped", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/nvme.lua")
      assert.are.equal(0, code, out)
      assert.matches("BAR0 mem64%s+size 0x4000 at 0xc0000000\n  %+0%.%.%+0x1fff mapped[^\n]*\n"
         .. "  %+0x2000%.%.%+0x3fff trapped", out)
      assert.matches("irq MSI%-X 65 vector%(s%), table BAR0%+0x2000, PBA BAR0%+0x3000", out)
      assert.matches("quirks none", out)
   end)

   it("rejects unknown arguments and quirk names with usage status 64", function()
      local out, code = sh("lua5.4 passthrough.lua")
      assert.are.equal(64, code)
      assert.matches("%-%-device is needed", out)
      assert.matches("usage: ", out)
      out, code = sh("lua5.4 passthrough.lua --device spec/fixtures/edu.lua --plan --quirk nosuch")
      assert.are.equal(64, code)
      assert.matches("unknown quirk nosuch; known: none, ", out)
      assert.matches("edu%-dma%-guard %(edu_dma_guard%)", out)
      out, code = sh("lua5.4 passthrough.lua --device 00:03.0 --bogus")
      assert.are.equal(64, code)
      assert.matches("unknown option '%-%-bogus'", out)
   end)

   it("says a guest file is not bootable", function()
      local out, code = sh("lua5.4 passthrough.lua --device 0000:00:03.0 --guest Makefile")
      assert.are.equal(125, code)
      assert.matches("guest Makefile is not bootable: ", out)
   end)

   it("says /dev/kvm is missing (hidden by LUAVFIO_NO_KVM, so on every machine)", function()
      local out, code = sh("LUAVFIO_NO_KVM=1 lua5.4 passthrough.lua --device 0000:00:03.0")
      assert.are.equal(125, code)
      assert.matches("open /dev/kvm %(hidden by LUAVFIO_NO_KVM%): No such file or directory: "
                     .. "this machine has no KVM", out)
   end)
end)

-- The option parser (argparse): every usage error names the option and what it wants,
-- exits 64 and comes before any device is opened (the devices named here do not exist,
-- or are addresses this machine cannot open: an error about them would come later).
describe("passthrough.lua's options", function()
   local function usage_error(args, want)
      local out, code = sh("lua5.4 passthrough.lua " .. args)
      assert.are.equal(64, code, out)
      assert.matches(want, out)
      assert.matches("usage: lua5%.4 passthrough%.lua ", out)
      return out
   end

   it("take --opt=value as well as --opt value", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --device=spec/fixtures/edu.lua --mem=128 --quirk=none")
      assert.are.equal(0, code, out)
      assert.matches("guest RAM 128 MiB", out)
      assert.matches("quirks none", out)
   end)

   it("take --mem with a size suffix; a plain number stays MiB", function()
      for _, c in ipairs { { "512M", 512 }, { "1G", 1024 }, { "1GiB", 1024 }, { "1.5g", 1536 },
                           { "2048K", 2 }, { "300", 300 } } do
         local out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/edu.lua --mem " .. c[1])
         assert.are.equal(0, code, out)
         assert.matches("guest RAM " .. c[2] .. " MiB", out)
      end
   end)

   it("name the option and what it wants in each error", function()
      usage_error("--cpus two --device 00:03.0",
         "passthrough%.lua: %-%-cpus: expected a whole number of vCPUs, got 'two'")
      usage_error("--device 00:03.0 --timeout", "%-%-timeout: expected a number of seconds, got nothing")
      usage_error("--device 00:03.0 --timeout soon", "%-%-timeout: expected a number of seconds, got 'soon'")
      usage_error("--device 00:03.0 --timeout=-1", "%-%-timeout: expected a number of seconds, got '%-1'")
      usage_error("--device 00:03.0 --timeout 0", "%-%-timeout 0: a run limit must be more than 0 seconds; "
         .. "leave %-%-timeout out for no limit")
      usage_error("--device 00:03.0 --mem-backing shm", "%-%-mem%-backing must be one of 'anonymous', 'memfd', "
         .. "'hugetlbfs'")
      usage_error("--device 00:03.0 --mem-backing memfd --hugepages",
         "%-%-hugepages puts guest RAM on huge pages: it cannot go with %-%-mem%-backing memfd")
      local size = "%-%-mem: expected a size in MiB or with a suffix %(512M, 6G%), got "
      usage_error("--device 00:03.0 --mem lots", size .. "'lots'")
      usage_error("--device 00:03.0 --mem 100K", size .. "'100K'")
      usage_error("--device 00:03.0 --mem 1", "%-%-mem 1: guest RAM of 1 MiB: it must be 2 to 785152 MiB")
      usage_error("--device 00:03.0 --mem=1T", "%-%-mem 1T: guest RAM of 1048576 MiB")
      usage_error("--device 00:03.0 --decompress maybe", "%-%-decompress: expected host or guest, got 'maybe'")
      usage_error("--device 00:03.0 --halt-poll-us 1.5",
         "%-%-halt%-poll%-us: expected a whole number of microseconds, got '1%.5'")
      usage_error("--device", "%-%-device: expected a PCI address such as 0000:00:03%.0, got nothing")
      usage_error("--device 00:03.0 --cpus 0 --kernel Makefile", "%-%-cpus 0: at least 1")
      usage_error("--device 00:03.0 --cpus 65 --kernel Makefile", "%-%-cpus 65: at most 64")
      usage_error("--device 00:03.0 --cpus 2", "%-%-cpus needs %-%-kernel")
      usage_error("--device 00:03.0 --initrd Makefile", "%-%-initrd needs %-%-kernel")
      usage_error("--device 00:03.0 --plan=yes", "option '%-%-plan' does not take arguments")
      usage_error("--device 00:03.0 stray", "unexpected argument")
      usage_error("--completion tcsh", "%-%-completion must be one of 'bash', 'zsh', 'fish'")
   end)

   it("report a missing --kernel, --initrd or --guest file as a usage error, before any device", function()
      -- 0000:00:03.0 is never opened: the file is reported first
      usage_error("--device 0000:00:03.0 --kernel /nonexistent/bzImage",
         "%-%-kernel /nonexistent/bzImage: No such file or directory")
      usage_error("--device 0000:00:03.0 --kernel Makefile --initrd /nonexistent/initrd",
         "%-%-initrd /nonexistent/initrd: No such file or directory")
      usage_error("--device 0000:00:03.0 --guest /nonexistent/guest.elf",
         "%-%-guest /nonexistent/guest%.elf: No such file or directory")
      -- a file that exists but is no kernel cannot set up the VM (125), as before
      local out, code = sh("lua5.4 passthrough.lua --device 0000:00:03.0 --kernel Makefile")
      assert.are.equal(125, code, out)
      assert.matches("kernel Makefile: ", out)
   end)

   it("say that names like edu only exist inside the lab", function()
      local out = usage_error("--device edu", "%-%-device edu: names like edu only exist inside the lab")
      assert.is_nil(out:find("bad argument", 1, true), out)
      usage_error("--device 00:3.0", "%-%-device 00:3%.0: not a PCI address")
      usage_error("--device spec/fixtures/edu.lua", "a recorded fixture only lays out with %-%-plan")
      -- inside the lab, a name not in its list says which names there are
      local list = os.tmpname()
      local f = assert(io.open(list, "w"))
      f:write("0000:00:03.0 1234:11e8 vfio-pci 7 edu\n")
      f:close()
      local out2, code = sh(("LUAVFIO_LAB_DEVICES=%s lua5.4 passthrough.lua --plan --device nvme"):format(list))
      os.remove(list)
      assert.are.equal(64, code, out2)
      assert.matches("%-%-device nvme: the lab has no device of that name %(it has: edu%)", out2)
   end)

   it("print the version with --version", function()
      local out, code = sh("lua5.4 passthrough.lua --version")
      assert.are.equal(0, code, out)
      assert.are.equal("passthrough.lua (luavfio " .. require("vfio.version").number .. ")\n", out)
   end)

   it("write bash, zsh and fish completion from the parser's own definition", function()
      local p = require("vfio.vmm.cli").parser { prog = "vfio-passthrough", usage = "vfio-passthrough",
                                               guest = "guest.elf" }
      for _, shell in ipairs { "bash", "zsh", "fish" } do
         local out, code = sh("lua5.4 bin/vfio-passthrough --completion " .. shell)
         assert.are.equal(0, code, out)
         assert.are.equal(p["get_" .. shell .. "_complete"](p), out)
         for _, opt in ipairs { "device", "kernel", "mem", "quirk", "no-mmap", "plan", "version" } do
            assert.matches((shell == "fish" and "%-l " or "%-%-") .. opt:gsub("%-", "%%-"), out)
         end
      end
      local out = sh("lua5.4 bin/vfio-passthrough --completion bash")
      assert.matches("_vfio%-passthrough%(%)", out)
      assert.matches("complete %-F _vfio%-passthrough", out)
   end)
end)

describe("per-device options (--device BDF,no-mmap=on,quirk=NAME)", function()
   local cli = require "vfio.vmm.cli"
   local how = { prog = "passthrough.lua", usage = "lua5.4 passthrough.lua", guest = "guest.elf" }

   it("parse into the device's own no_mmap and quirks, the command's options the default", function()
      local o = assert(cli.parse({ "--device", "0000:00:03.0,no-mmap=on,quirk=none", "--device", "00:04.0",
                                   "--device=00:05.0,quirk=edu_dma_guard,quirk=e1000e_io_window,no-mmap=off",
                                   "--no-mmap", "--quirk", "edu-dma-guard" }, how))
      assert.are.same({ name = "0000:00:03.0", no_mmap = true, quirks = { "none" } }, o.devices[1])
      assert.are.same({ name = "00:04.0", no_mmap = true, quirks = { "edu-dma-guard" } }, o.devices[2])
      assert.are.same({ name = "00:05.0", no_mmap = false, quirks = { "edu_dma_guard", "e1000e_io_window" } },
                      o.devices[3])
      o = assert(cli.parse({ "--device", "00:03.0,no-mmap" }, how))
      assert.are.same({ name = "00:03.0", no_mmap = true }, o.devices[1])
      o = assert(cli.parse({ "--device", "00:03.0" }, how))
      assert.are.same({ name = "00:03.0" }, o.devices[1])
   end)

   it("refuse unknown or malformed device options, naming --device", function()
      local function refused(dev, want)
         local o, err = cli.parse({ "--device", dev }, how)
         assert.is_nil(o)
         assert.matches(want, err)
      end
      refused("00:03.0,foo=1",
         "^%-%-device 00:03%.0,foo=1: unknown device option 'foo=1' %(known: no%-mmap=on|off, quirk=NAME, "
         .. "port=on|off%)")
      refused("00:03.0,port=maybe", "^%-%-device 00:03%.0,port=maybe: port takes on or off, got 'maybe'")
      refused("00:03.0,no-mmap=maybe",
         "^%-%-device 00:03%.0,no%-mmap=maybe: no%-mmap takes on or off, got 'maybe'")
      refused("00:03.0,quirk=", "quirk= needs a quirk name or none")
      refused(",no-mmap=on", "^%-%-device: expected a PCI address")
   end)

   it("take a vfio-user device (vfio-user:PATH), with guest RAM on a memfd its server can map", function()
      assert.are.equal("vfio-user:/run/dev.sock",
                       (cli.resolve_device("vfio-user:/run/dev.sock", false, "/nonexistent")))
      local no, why = cli.resolve_device("vfio-user:", false, "/nonexistent")
      assert.is_nil(no)
      assert.matches("path of the vfio%-user server's socket is missing", why)
      local o = assert(cli.parse({ "--device", "vfio-user:/run/dev.sock" }, how))
      assert.are.same({ name = "vfio-user:/run/dev.sock" }, o.devices[1])
      assert.are.equal("memfd", o.mem_backing, "memfd by default with a vfio-user device")
      o = assert(cli.parse({ "--device", "vfio-user:/run/dev.sock", "--hugepages" }, how))
      assert.are.equal("hugetlbfs", o.mem_backing)
      local bad, err = cli.parse({ "--device", "vfio-user:/run/dev.sock", "--mem-backing", "anonymous" }, how)
      assert.is_nil(bad)
      assert.matches("%-%-device vfio%-user:/run/dev%.sock: its server does DMA in guest RAM it maps from a memfd", err)
      assert.matches("use %-%-mem%-backing memfd", err)
      o = assert(cli.parse({ "--device", "00:03.0" }, how))
      assert.are.equal("anonymous", o.mem_backing, "a kernel device keeps the default")
   end)

   it("port=on seats a device behind a root port of its own; --hotplug-slots adds empty ones", function()
      local o = assert(cli.parse({ "--device", "00:03.0,port=on", "--device", "00:04.0,port",
                                   "--device", "00:05.0,port=off", "--hotplug-slots", "2" }, how))
      assert.are.same({ true, true }, { o.devices[1].port, o.devices[2].port })
      assert.is_nil(o.devices[3].port)
      assert.are.equal(2, o.hotplug_slots)
      local bad, err = cli.parse({ "--device", "00:03.0", "--hotplug-slots", "17" }, how)
      assert.is_nil(bad)
      assert.matches("^%-%-hotplug%-slots 17: 0 to 16", err)
      local out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/nvme.lua "
         .. "--device spec/fixtures/e1000e.lua,port=on --hotplug-slots 1")
      assert.are.equal(0, code, out)
      assert.matches("root port 00:10%.0 %(slot 1, bus 1%): empty", out)
      assert.matches("root port 00:11%.0 %(slot 2, bus 2%): on", out)
      assert.matches("device spec/fixtures/nvme%.lua [^\n]*%-> guest 00:04%.0\n", out)
      assert.matches("device spec/fixtures/e1000e%.lua [^\n]*%-> guest 02:00%.0 %(behind root port 00:11%.0%)", out)
   end)

   it("--device may be left out only for a board of hot-plug slots the control socket fills", function()
      local o = assert(cli.parse({ "--kernel", "bz", "--hotplug-slots", "2", "--control", "/tmp/x.sock" }, how))
      assert.are.same({}, o.devices)
      assert.are.equal(2, o.hotplug_slots)
      for _, argv in ipairs {
         { "--kernel", "bz", "--hotplug-slots", "2" },                    -- nothing could fill them
         { "--kernel", "bz", "--hotplug-slots", "0", "--control", "/tmp/x.sock" },
         { "--kernel", "bz", "--control", "/tmp/x.sock" } } do
         local bad, err = cli.parse(argv, how)
         assert.is_nil(bad, table.concat(argv, " "))
         assert.matches("^%-%-device is needed: which device to pass through %(none at boot only with "
            .. "%-%-hotplug%-slots N and %-%-control PATH", err)
      end
      -- --plan shows such a board: its empty ports and nothing else
      local out, code = sh("lua5.4 passthrough.lua --plan --hotplug-slots 2")
      assert.are.equal(0, code, out)
      assert.matches("^root port 00:10%.0 %(slot 1, bus 1%): empty[^\n]*\nroot port 00:11%.0 %(slot 2, bus 2%): "
         .. "empty[^\n]*\n$", out)
   end)

   it("apply to that device only: --plan shows one device trapped, the other mapped", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/edu.lua,no-mmap=on "
         .. "--device spec/fixtures/nvme.lua")
      assert.are.equal(0, code, out)
      local edu, nvme = out:match("^(device spec/fixtures/edu%.lua.-)(\ndevice spec/fixtures/nvme%.lua.*)$")
      assert.is_truthy(edu, out)
      assert.matches("BAR0 mem32%s+size 0x100000 at 0x%x+ %(mmap off%)", edu)
      assert.is_nil(edu:find("mapped (KVM memory slot)", 1, true), edu)
      assert.matches("%+0%.%.%+0x1fff mapped", nvme)
      assert.is_nil(nvme:find("mmap off", 1, true), nvme)
   end)

   it("take quirks per device: none on one, the default on the other", function()
      local out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/edu.lua,quirk=none "
         .. "--device spec/fixtures/edu.lua")
      assert.are.equal(0, code, out)
      local first, second = out:match("^(device .-)(\ndevice .*)$")
      assert.matches("quirks none", first)
      assert.matches("%+0%.%.%+0xfffff mapped", first)
      assert.matches("quirks edu%-dma%-guard", second)
      out, code = sh("lua5.4 passthrough.lua --plan --device spec/fixtures/edu.lua,quirk=nosuch")
      assert.are.equal(64, code, out)
      assert.matches("unknown quirk nosuch; known: none, ", out)
   end)
end)
