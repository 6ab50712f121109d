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
   { "bin/passthrough", "usage: passthrough %-%-device BDF", "--bogus", 64 },
   { "bin/vfio-poke", "usage: vfio%-poke %[BDF%]", "--bogus", 64 },
   { "tools/check-layers", "usage: tools/check%-layers", "--bogus", 2 },
   { "lab/run", "lab/run", "--bogus", 125 },
   { "lab/oracle", "lab/oracle", "--bogus", 2 },
   { "lab/setup", "Install what a fresh Debian 12 machine lacks", "--bogus", 2 },
   { "lab/nested-soak", "lab/nested%-soak", "--bogus", 125 },
   { "lab/kernel/build", "lab/kernel/build", "--bogus", 2 },
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

   it("passthrough's --help lists every option the parser takes", function()
      local _, out = run("bin/passthrough --help")
      for _, opt in ipairs { "--device", "--guest", "--mem", "--quirk", "--cmdline", "--timeout",
                             "--no-mmap", "--trace", "--plan" } do
         assert.matches("\n  " .. opt:gsub("%-", "%%-") .. " ", out)
      end
   end)
end)
