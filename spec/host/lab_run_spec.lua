-- lab/run's contract, from the host: exit status, clear failures within the time limit.
-- These boot the lab (a few seconds each) and are not repeated under ASan.
local function run(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   local _, _, code = p:close()
   return code, out
end

describe("lab/run #noasan", function()
   it("rejects an unknown device model before booting", function()
      local code, out = run("lab/run --device no-such-model -- true")
      assert.are.equal(125, code)
      assert.matches("unknown QEMU device 'no%-such%-model'", out)
   end)

   it("rejects unknown options and a missing command", function()
      local code, out = run("lab/run --bogus -- true")
      assert.are.equal(125, code)
      assert.matches("unknown option '%-%-bogus'", out)
      code, out = run("lab/run")
      assert.are.equal(125, code)
      assert.matches("no COMMAND given", out)
   end)

   it("returns COMMAND's exit status and streams its output", function()
      local code, out = run("lab/run --no-defaults -- sh -c 'echo from-the-guest; pwd; exit 7'")
      assert.are.equal(7, code)
      assert.matches("from%-the%-guest", out)
      local here = io.popen("pwd"):read("l")
      assert.matches(here, out, 1, true)
   end)

   it("reports a guest kernel panic with a non-zero exit", function()
      local code, out = run("lab/run --no-defaults --timeout 120 -- sh -c 'echo c > /proc/sysrq-trigger'")
      assert.are.equal(125, code)
      assert.matches("guest kernel panic: Kernel panic", out)
   end)

   it("stops a hung command at the timeout", function()
      local t0 = os.time()
      local code, out = run("lab/run --no-defaults --timeout 4 -- sleep 600")
      assert.are.equal(124, code)
      assert.matches("timed out after 4s", out)
      assert.is_true(os.time() - t0 < 30)
   end)
end)
