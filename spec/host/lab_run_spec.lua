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

   it("says which setup step is missing", function()
      local code, out = run("LUAVFIO_QEMU=/nonexistent/qemu lab/run -- true")
      assert.are.equal(125, code)
      assert.matches("/nonexistent/qemu not found: run lab/setup", out)
      local empty = os.tmpname()
      os.remove(empty)
      code, out = run("LUAVFIO_CACHE=" .. empty .. " lab/run -- true")
      assert.are.equal(125, code)
      assert.matches("no lab kernel in " .. empty:gsub("%p", "%%%0") .. "/lab/kernel: run lab/setup", out)
   end)

   it("returns COMMAND's exit status and streams its output", function()
      local code, out = run("lab/run --no-defaults -- sh -c 'echo from-the-guest; pwd; exit 7'")
      assert.are.equal(7, code)
      assert.matches("from%-the%-guest", out)
      local here = io.popen("pwd"):read("l")
      assert.matches(here, out, 1, true)
   end)

   it("adds devices with --device, --port-device and raw --qemu arguments, and publishes them", function()
      local code, out = run("lab/run --no-defaults --device ivshmem-plain,memdev=labmem " ..
         "--qemu '-object memory-backend-ram,id=labmem,size=64M' --port-device rtl8139 " ..
         "-- sh -c 'cat $LUAVFIO_LAB_DEVICES'")
      assert.are.equal(0, code, out)
      assert.matches("0000:00:02%.0 1af4:1110 050000 %d+ ivshmem%-plain\n", out)
      -- rtl8139 sits behind its root port (slot 3), so on a secondary bus
      assert.matches("0000:0[1-9]:00%.0 10ec:8139 020000 %d+ rtl8139\n", out)
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
