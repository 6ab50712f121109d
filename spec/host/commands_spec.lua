-- Every command a user runs answers --help with its usage on stdout and status 0, and a
-- usage error with a message on stderr and a non-zero status.
local function run(cmd)
   local err = os.tmpname()
   local p = assert(io.popen(("%s 2>%s"):format(cmd, err)))
   local out = p:read("a")
   local _, _, code = p:close()
   local f = assert(io.open(err))
   local stderr = f:read("a")
   f:close()
   os.remove(err)
   return code, out, stderr
end

-- command, what its usage starts with, a usage error and its status
local COMMANDS = {
   { "lua5.4 passthrough.lua", "usage: lua5.4 passthrough.lua %-%-device BDF",
     "--device 00:03.0 --bogus", 64 },
   { "bin/vfio-passthrough", "usage: vfio%-passthrough %-%-device BDF", "--bogus", 64 },
   { "bin/vfio-poke", "usage: vfio%-poke %[BDF%]", "--bogus", 64 },
   { "bin/vfio-user-serve", "usage: vfio%-user%-serve BDF|RECORDING|MODEL%.lua %-%-socket PATH",
     "edu --socket /nonexistent/s --bogus", 64 },
   { "tools/check-layers", "usage: tools/check%-layers", "--bogus", 2 },
   { "lab/run", "lab/run", "--bogus", 125 },
   { "lab/oracle", "lab/oracle", "--bogus", 2 },
   { "lab/setup", "Install what a fresh Debian 12 machine lacks", "--bogus", 2 },
   { "lab/nested-soak", "lab/nested%-soak", "--bogus", 125 },
   { "lab/kernel/build", "lab/kernel/build", "--bogus", 2 },
   { "lab/vfio-user-client", "lab/vfio%-user%-client", "--bogus", 2 },
}

describe("commands", function()
   for _, c in ipairs(COMMANDS) do
      local cmd, usage, bad, status = c[1], c[2], c[3], c[4]

      it(cmd .. " --help prints usage on stdout and exits 0", function()
         for _, flag in ipairs { "--help", "-h" } do
            local code, out, stderr = run(cmd .. " " .. flag)
            assert.are.equal(0, code, stderr)
            assert.matches("^" .. usage, out)
            assert.are.equal("", stderr)
         end
      end)

      it(cmd .. " " .. bad .. " is a usage error", function()
         local code, out, stderr = run(cmd .. " " .. bad)
         assert.are.equal(status, code, stderr)
         assert.are.equal("", out)
         assert.matches("%-%-bogus", stderr)
      end)
   end

   it("vfio-passthrough's --help lists every option the parser takes", function()
      local _, out = run("bin/vfio-passthrough --help")
      local p = require("vfio.vmm.cli").parser { prog = "vfio-passthrough", usage = "vfio-passthrough",
                                               guest = "guest.elf" }
      local n = 0
      for _, opt in ipairs(p._options) do
         for _, alias in ipairs(opt._aliases) do
            assert.matches("\n  [^\n]-" .. alias:gsub("%-", "%%-") .. "[ ,\n]", out)
            n = n + 1
         end
      end
      assert.is_true(n >= 19, n)
   end)

   -- The Lua commands print their version, the library's and the rockspec's.
   for _, cmd in ipairs { "bin/vfio-passthrough", "lua5.4 passthrough.lua", "bin/vfio-poke",
                          "bin/vfio-user-serve" } do
      it(cmd .. " --version prints luavfio's version", function()
         local code, out, stderr = run(cmd .. " --version")
         assert.are.equal(0, code, stderr)
         local name = cmd:match("([%w.-]+)$")
         assert.are.equal(("%s (luavfio %s)\n"):format(name, require("vfio.version").number), out)
         assert.are.equal(require("vfio.core")._VERSION, "luavfio " .. require("vfio.version").number)
      end)

      it(cmd .. " --completion writes bash, zsh and fish scripts; another shell is a usage error", function()
         for _, shell in ipairs { "bash", "zsh", "fish" } do
            local code, out, stderr = run(cmd .. " --completion " .. shell)
            assert.are.equal(0, code, stderr)
            assert.matches("%-%-version", shell == "fish" and out:gsub("%-l version", "--version") or out)
         end
         local code, out, stderr = run(cmd .. " --completion tcsh")
         assert.are.equal(64, code)
         assert.are.equal("", out)
         assert.matches("%-%-completion must be one of 'bash', 'zsh', 'fish'", stderr)
      end)
   end

   it("vfio-poke takes one BDF at most", function()
      local code, out, stderr = run("bin/vfio-poke 00:03.0 00:04.0")
      assert.are.equal(64, code)
      assert.are.equal("", out)
      assert.matches("^vfio%-poke: one BDF at most %(see %-%-help%)\nusage: vfio%-poke", stderr)
   end)

   it("vfio-user-serve needs a device and a socket, and names a bad device or socket", function()
      local code, out, stderr = run("bin/vfio-user-serve --socket /tmp/x")
      local _
      assert.are.same({ 64, "" }, { code, out })
      assert.matches("^vfio%-user%-serve: a DEVICE .- is needed %(see %-%-help%)\nusage:", stderr)
      code, _, stderr = run("bin/vfio-user-serve spec/fixtures/edu.lua")
      assert.are.equal(64, code)
      assert.matches("%-%-socket PATH is needed", stderr)
      code, _, stderr = run("bin/vfio-user-serve spec/fixtures/edu.lua --socket /tmp/x --model-opt a=1")
      assert.are.equal(1, code)
      assert.matches("%-%-model%-opt is for a model file", stderr)
      code, _, stderr = run("bin/vfio-user-serve no-such-thing --socket /tmp/x")
      assert.are.equal(1, code)
      assert.matches("no%-such%-thing is neither a PCI address, a model file nor a recording", stderr)
      code, _, stderr = run("bin/vfio-user-serve spec/fixtures/edu.lua --socket /nonexistent/dir/s")
      assert.are.equal(1, code)
      assert.matches("bind: No such file or directory", stderr)
   end)
end)
