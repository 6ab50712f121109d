local poke = require "vfio.poke"
local regs = require "vfio.regs"

local function fake_region()
   local mem = { [0] = 0x010000ed }
   local log = {}
   return {
      mem = mem, log = log, size = 1 << 20,
      read32 = function(_, o) log[#log + 1] = { "r", o }; return mem[o] or 0 end,
      write32 = function(_, o, v) log[#log + 1] = { "w", o, v }; mem[o] = v; return true end,
      read64 = function(_, o) return mem[o] or 0 end,
      write64 = function(_, o, v) log[#log + 1] = { "w", o, v }; mem[o] = v; return true end,
   }
end

describe("poke.pp", function()
   it("prints integers in hex and decimal", function()
      assert.are.equal("0x1f (31)", poke.pp(31))
      assert.are.equal("-1 (0xffffffffffffffff)", poke.pp(-1))
      assert.are.equal("1.5", poke.pp(1.5))
   end)

   it("pretty-prints nested tables with sorted keys and survives cycles", function()
      local t = { 10, b = { c = true }, a = "x" }
      t.self = t
      local s = poke.pp(t)
      assert.are.equal(table.concat({
         "{", "  0xa (10),", '  a = "x",', "  b = {", "    c = true,", "  },", "  self = <cycle>,", "}" }, "\n"), s)
   end)

   it("uses __tostring for objects and hexdumps binary strings", function()
      local obj = setmetatable({}, { __tostring = function() return "<thing>" end })
      assert.are.equal("<thing>", poke.pp(obj))
      assert.are.equal("<3 bytes: 01 02 ff>", poke.pp("\1\2\255"))
      local bytes = {}
      for i = 0, 19 do bytes[#bytes + 1] = string.char(i) end
      assert.matches("^<20 bytes>\n00000000  00 01", poke.pp(table.concat(bytes)))
   end)
end)

describe("poke.complete", function()
   local env, dev
   before_each(function()
      dev = fake_region()
      env = poke.env { edu = regs.bind(dofile("examples/edu_regs.lua"), dev) }
   end)

   it("completes globals and helpers", function()
      assert.are.same({ "hexdump" }, poke.complete("hexd", env))
      assert.are.same({ "print(lspci" }, poke.complete("print(lsp", env))
   end)

   it("completes module functions and methods through __index chains", function()
      assert.are.same({ "x = pciids.device", "x = pciids.device_label" }, poke.complete("x = pciids.devi", env))
      assert.are.same({ "edu.status:wait", "edu.status:write" }, poke.complete("edu.status:w", env))
      -- a class-style object: methods live in the metatable's __index table's metatable
      local Base = { hello = function() end }
      local Mid = setmetatable({ mid = function() end }, { __index = Base })
      env.o = setmetatable({}, { __index = Mid })
      assert.are.same({ "o:hello" }, poke.complete("o:he", env))
      assert.are.same({ "o:mid" }, poke.complete("o:m", env))
   end)

   it("completes register fields without reading the device", function()
      local before = #dev.log
      local c = poke.complete("edu.status.r", env)
      assert.are.same({ "edu.status.raise_irq", "edu.status.read" }, c)
      assert.are.equal(before, #dev.log)
   end)
end)

describe("poke sessions", function()
   local out, s, dev
   before_each(function()
      out = {}
      dev = fake_region()
      s = poke.session(poke.env { edu = regs.bind(dofile("examples/edu_regs.lua"), dev) },
         function(x) out[#out + 1] = x end)
   end)

   it("evaluates expressions and statements, keeping state", function()
      assert.are.equal("ok", s:feed("x = 40"))
      assert.are.equal("ok", s:feed("x + 2"))
      assert.are.equal("0x2a (42)\n", out[#out])
      assert.are.equal("ok", s:feed("=x"))
      assert.are.equal("0x28 (40)\n", out[#out])
   end)

   it("continues incomplete chunks", function()
      assert.are.equal("more", s:feed("function f(a)"))
      assert.are.equal("more", s:feed("  return a * 2"))
      assert.are.equal("ok", s:feed("end"))
      s:feed("f(21)")
      assert.are.equal("0x2a (42)\n", out[#out])
   end)

   it("reports errors and carries on", function()
      assert.are.equal("error", s:feed("error('boom')"))
      assert.matches("boom", out[#out])
      assert.are.equal("error", s:feed("1 +* 2"))
      assert.are.equal("ok", s:feed("1"))
   end)

   it("reads registers by calling them and writes only on a write call", function()
      s:feed("edu.id()")
      assert.are.equal("0x10000ed (16777453)\n", out[#out])
      s:feed("edu.status")
      s:feed("edu")
      s:feed("edu:dump()")
      for _, e in ipairs(dev.log) do assert.are_not.equal("w", e[1]) end
      s:feed("edu.liveness(0x12345678)")
      assert.are.same({ "w", 4, 0x12345678 }, dev.log[#dev.log])
   end)
end)

describe("poke discovery", function()
   it("normalizes PCI addresses", function()
      assert.are.equal("0000:00:03.0", poke.bdf("00:03.0"))
      assert.are.equal("0000:00:1f.7", poke.bdf("0000:00:1F.7"))
      assert.has_error(function() poke.bdf("3.0") end)
      -- a function number is 0 to 7: 8-f name none (the REPL took them once)
      assert.has_error(function() poke.bdf("0000:00:03.8") end,
         "not a PCI address (want 0000:00:03.0 or 00:03.0): 0000:00:03.8")
      assert.has_error(function() poke.bdf("00:03.f") end)
   end)

   it("lists the same functions and ids as lspci -n", function()
      local p = io.popen("lspci -n -D 2>/dev/null")
      local want = {}
      for line in p:lines() do
         local bdf, class, ids = line:match("^(%S+) (%x+): (%x+:%x+)")
         if bdf then want[#want + 1] = { bdf, ids, class } end
      end
      p:close()
      if #want == 0 then pending("lspci lists nothing here") return end
      local got = {}
      for _, d in ipairs(poke.devices()) do
         got[#got + 1] = { d.bdf, string.format("%04x:%04x", d.vendor, d.device),
            string.format("%04x", d.class >> 8) }
      end
      assert.are.same(want, got)
   end)

   it("decodes a function from sysfs like lspci -vvv", function()
      local list = poke.devices()
      if #list == 0 then pending("no PCI devices") return end
      local lspci = require "support.lspci"
      for _, d in ipairs(list) do
         local info = assert(poke.lspci(d.bdf))
         local p = io.popen("lspci -vvv -s " .. d.bdf .. " 2>/dev/null")
         local text = p:read("a")
         p:close()
         local diffs = lspci.compare(info, text)
         assert.are.same({}, diffs)
      end
   end)
end)

-- Issue 25 item 8: the REPL never swallows a failure. A call that returns nil, message,
-- errno shows the message with the errno's name, in an assignment too (which printed
-- nothing and left the variable nil); and readline's absence is said once at start.
describe("poke failures", function()
   local out, s
   before_each(function()
      out = {}
      s = poke.session(poke.env {
         fail = function() return nil, "open 0000:00:03.0: no IOMMU group", 19 end,
         fail2 = function() return nil, "lspci x: no such file" end,
         good = function() return 42 end,
      }, function(x) out[#out + 1] = x end)
   end)

   it("an assignment whose call failed shows the message and leaves the variable nil", function()
      assert.are.equal("failed", s:feed('d = fail()'))
      assert.are.same({ "failed: open 0000:00:03.0: no IOMMU group (ENODEV); d = nil\n" }, out)
      assert.is_nil(rawget(s.env, "d"))
      assert.are.equal("failed", s:feed('local e <close> = fail2()'))
      assert.are.equal("failed: lspci x: no such file; e = nil\n", out[#out])
      s:feed("t = {}")
      assert.are.equal("failed", s:feed('t.x, y = fail()'))
      assert.are.equal("failed: open 0000:00:03.0: no IOMMU group (ENODEV); t.x = nil\n", out[#out])
   end)

   it("an expression that failed shows the same line, errno by name", function()
      assert.are.equal("failed", s:feed('fail()'))
      assert.are.equal("failed: open 0000:00:03.0: no IOMMU group (ENODEV)\n", out[#out])
      assert.are.equal("failed", s:feed('=fail()'))
   end)

   it("a successful assignment prints nothing and assigns every value", function()
      assert.are.equal("ok", s:feed('a, b = good(), "x"'))
      assert.are.same({}, out)
      assert.are.equal(42, rawget(s.env, "a"))
      assert.are.equal("x", rawget(s.env, "b"))
      assert.are.equal("ok", s:feed('c = a == 42'))
      assert.is_true(rawget(s.env, "c"))
      assert.are.equal("ok", s:feed('t = { k = "v=w" }'))
      assert.are.equal("v=w", rawget(s.env, "t").k)
      assert.are.equal("error", s:feed('z = error("boom")'))
      assert.matches("boom", out[#out])
   end)

   it("names errno symbolically", function()
      assert.are.equal("ENOENT", require("vfio.pcibus").errname(2))
      assert.are.equal("EBUSY", require("vfio.pcibus").errname(16))
      assert.are.equal("EAGAIN", require("vfio.pcibus").errname(11))
      assert.are.equal("errno 4000", require("vfio.pcibus").errname(4000))
   end)

   it("d = open(bdf) on a host without an IOMMU says so (fake sysfs)", function()
      if not pcall(require, "posix") then pending("luaposix missing") return end
      local fakehost = require "support.fakehost"
      local vfio = require "vfio"
      local host = fakehost.new()
      host:driver("vfio-pci")
      host:pci("0000:00:03.0", { driver = "vfio-pci" })
      local saved = vfio.sysfs
      vfio.sysfs = host.sys
      local ok, status = pcall(s.feed, s, 'd = open("0000:00:03.0")')
      vfio.sysfs = saved
      host:remove()
      assert.is_true(ok, status)
      assert.are.equal("failed", status)
      assert.matches("^failed: open 0000:00:03%.0: no IOMMU group %(.*iommu_group is missing%): "
         .. "enable the IOMMU %(intel_iommu=on or amd_iommu=on .*%) %(ENODEV%); d = nil\n$", out[#out])
   end)

   it("on this machine, through bin/vfio-poke, when a device has no IOMMU group", function()
      local bdf
      for name in io.popen("ls /sys/bus/pci/devices 2>/dev/null"):lines() do
         local f = io.open("/sys/bus/pci/devices/" .. name .. "/iommu_group")
         if f then f:close() elseif not bdf then bdf = name end
      end
      if not bdf then pending("every PCI function here has an IOMMU group") return end
      local p = assert(io.popen(("printf 'd = open(\"%s\")\\n=d\\n' | bin/vfio-poke 2>&1"):format(bdf)))
      local text = p:read("a")
      p:close()
      assert.matches("^failed: open " .. bdf:gsub("%p", "%%%0") .. ": no IOMMU group .* %(ENODEV%); "
         .. "d = nil\nnil\n$", text)
   end)
end)

describe("poke without lua-readline", function()
   local function repl(opts)
      local out, err, lines = {}, {}, { "x = 1", "=x" }
      opts.env = poke.env()
      opts.out = function(x) out[#out + 1] = x end
      opts.err = { write = function(_, x) err[#err + 1] = x end }
      opts.input = function() return table.remove(lines, 1) end
      opts.banner = false
      poke.repl(opts)
      return table.concat(out), table.concat(err)
   end

   it("says once at start on a terminal that completion and history are off", function()
      local out, err = repl { tty = true, readline = false }
      assert.are.equal(poke.READLINE_NOTE, err)
      assert.matches("lua%-readline is not installed: Tab completion, line editing and history "
         .. "are off %(Debian: apt install lua%-readline", err)
      assert.matches("0x1 %(1%)", out)
   end)

   it("says nothing when readline is there, or when the input is not a terminal", function()
      local rl = {}
      for _, k in ipairs { "set_options", "set_readline_name", "set_complete_function",
                           "save_history", "set_completion_append_character" } do
         rl[k] = function() end
      end
      local _, err = repl { tty = true, readline = rl }
      assert.are.equal("", err)
      _, err = repl { tty = false }
      assert.are.equal("", err)
   end)

   it("bin/vfio-poke on a pseudo-terminal with readline hidden", function()
      if not os.execute("command -v script >/dev/null") then pending("no script(1)") return end
      local p = assert(io.popen("printf 'x = 1\\n' | timeout 20 script -qec \"lua5.4 -e "
         .. "'package.preload.readline = function() error(\\\"hidden\\\") end' bin/vfio-poke\" "
         .. "/dev/null 2>&1"))
      local text = p:read("a")
      p:close()
      local _, n = text:gsub("lua%-readline is not installed", "")
      assert.are.equal(1, n, text)
   end)
end)
