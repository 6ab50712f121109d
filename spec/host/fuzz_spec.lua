-- The libFuzzer targets (fuzz/run) build and run clean for a short while: the trap core
-- on the recorded devices, the run loop's exit decode over the guest-facing devices, and
-- the vfio-user framing and decoder as a server and as a client.
-- The long runs are recorded in fuzz/README.md.
local function run(cmd)
   local p = io.popen(cmd .. " 2>&1")
   local out = p:read("a")
   local ok, _, code = p:close()
   assert.is_true(ok, ("%s exited %s:\n%s"):format(cmd, code, out:sub(-2000)))
   local runs = tonumber(out:match("stat::number_of_executed_units:%s*(%d+)"))
   assert.is_truthy(runs, out:sub(-2000))
   assert.is_true(runs > 1000, "only " .. tostring(runs) .. " executions")
   assert.is_nil(out:find("ERROR: libFuzzer", 1, true))
   assert.is_nil(out:find("runtime error", 1, true))
   return out
end

describe("fuzz/run #noasan", function()
   it("builds the trap fuzzer and runs it with no crash", function()
      run("fuzz/run 10 -seed=1")
   end)

   it("builds the exit decode fuzzer (fuzz/exit_fuzz.c) and runs it with no crash", function()
      local out = run("fuzz/run exit 5 -seed=1")
      assert.is_nil(out:find("exit_fuzz: ", 1, true))   -- no invariant broken
   end)

   it("builds the vfio-user targets (fuzz/user_*_fuzz.c) and runs them with no crash", function()
      for _, target in ipairs { "user-server", "user-client", "user-backend" } do
         local out = run("fuzz/run " .. target .. " 5 -seed=1")
         assert.is_nil(out:find("user_fuzz: ", 1, true))   -- no invariant broken
      end
   end)
end)
