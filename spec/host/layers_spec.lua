-- The dependency rules between layers (csrc/README.md, lua/vfio/*/README.md) hold, and
-- tools/check-layers really fails when a lower layer reaches up.
local function sh(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local _, _, code = p:close()
   return out, code
end

-- A copy of the layered parts of the tree, for breaking the rules on purpose.
local function copy_tree()
   local dir = os.tmpname()
   os.remove(dir)
   local out, code = sh(("mkdir -p %s && cp -r csrc lua tools bin passthrough.lua %s"):format(dir, dir))
   assert(code == 0, out)
   return dir
end

local function append(path, text)
   local f = assert(io.open(path, "a"))
   f:write(text)
   f:close()
end

describe("tools/check-layers #noasan", function()
   it("passes on this tree", function()
      local out, code = sh("tools/check-layers")
      assert.are.equal(0, code, out)
      assert.matches("check%-layers: ok", out)
   end)

   it("fails when a lower C layer includes a higher one or Lua outside the bindings", function()
      local dir = copy_tree()
      append(dir .. "/csrc/vfio/vfio_dma.c", '#include "trap/trap.h"\n')
      append(dir .. "/csrc/kvm/kvm.c", "#include <lauxlib.h>\n")
      append(dir .. "/csrc/trap/trap_core.c", '#include "kvm.h"\n')
      local out, code = sh(dir .. "/tools/check-layers")
      os.execute("rm -rf " .. dir)
      assert.are.equal(1, code, out)
      assert.matches("csrc/vfio/vfio_dma.c:%d+: csrc/vfio includes trap/trap.h", out)
      assert.matches("csrc/kvm/kvm.c:%d+: <lauxlib.h> in csrc/kvm", out)
      assert.matches('csrc/trap/trap_core.c:%d+: "kvm.h" is not in csrc/trap', out)
      assert.matches("3 problem", out)
   end)

   it("fails when the library requires the VMM or the REPL, and on missing modules", function()
      local dir = copy_tree()
      append(dir .. "/lua/vfio/hexdump.lua", '-- require "vfio.poke" in a comment is fine\n'
         .. 'local _ = function() return require("vfio.vmm.board") end\n')
      append(dir .. "/lua/vfio/vmm/irq.lua", 'local _ = pcall(require, "vfio.poke")\n')
      append(dir .. "/passthrough.lua", 'local _ = require "vfio.machine"\n')
      local out, code = sh(dir .. "/tools/check-layers")
      os.execute("rm -rf " .. dir)
      assert.are.equal(1, code, out)
      assert.matches('lua/vfio/hexdump.lua:%d+: the library %(lua/vfio%) requires "vfio.vmm.board"', out)
      assert.matches('lua/vfio/vmm/irq.lua:%d+: the VMM %(lua/vfio/vmm%) requires "vfio.poke"', out)
      assert.matches('passthrough.lua:%d+: require "vfio.machine": no such module', out)
      assert.matches("3 problem", out)
   end)

   it("fails when vfio-user (lua/vfio/user) requires the VMM or the REPL", function()
      local dir = copy_tree()
      append(dir .. "/lua/vfio/user/model.lua",
             'local _ = function() return require("vfio.vmm.board"), require "vfio.poke" end\n')
      local out, code = sh(dir .. "/tools/check-layers")
      os.execute("rm -rf " .. dir)
      assert.are.equal(1, code, out)
      assert.matches('lua/vfio/user/model.lua:%d+: vfio%-user %(lua/vfio/user%) requires "vfio.vmm.board"', out)
      assert.matches('lua/vfio/user/model.lua:%d+: vfio%-user %(lua/vfio/user%) requires "vfio.poke"', out)
      assert.matches("2 problem", out)
   end)

   it("--help prints usage on stdout and exits 0", function()
      local p = assert(io.popen("tools/check-layers --help 2>/dev/null"))
      local out = p:read("a")
      local _, _, code = p:close()
      assert.are.equal(0, code)
      assert.matches("^usage: tools/check%-layers", out)
   end)
end)
