-- lab/kernel/build's progress, without building a kernel: its long steps run under
-- lab/kernel/heartbeat, driven here on short fake steps with a 1 s interval.
local function run(cmd)
   local err = os.tmpname()
   local t0 = os.time()
   local p = assert(io.popen(("%s 2>%s"):format(cmd, err)))
   local out = p:read("a")     -- returns when every writer of the pipe is gone
   local _, _, code = p:close()
   local f = assert(io.open(err))
   local stderr = f:read("a")
   f:close()
   os.remove(err)
   return code, out, stderr, os.time() - t0
end

local function slurp(path)
   local f = io.open(path)
   if not f then return nil end
   local s = f:read("a")
   f:close()
   return s
end

local function lines(s)
   local t = {}
   for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
   return t
end

describe("lab/kernel/heartbeat", function()
   local log
   before_each(function() log = os.tmpname() end)
   after_each(function() os.remove(log) end)

   it("names the step and its log, then beats with the time so far, and stops with the step", function()
      local code, out, stderr, took = run(("lab/kernel/heartbeat --interval 1 'building bzImage' %s sleep 3")
         :format(log))
      assert.are.equal(0, code, stderr)
      assert.are.equal("", out)
      local l = lines(stderr)
      assert.are.equal("kernel: building bzImage (log: " .. log .. ")", l[1])
      assert.is_true(#l >= 3 and #l <= 4, stderr)   -- beats at 1 s, 2 s (and maybe 3 s)
      for i = 2, #l do
         local s = l[i]:match("^kernel: building bzImage, (%d+) s so far %(log: " .. log:gsub("%p", "%%%0") .. "%)$")
         assert.is_truthy(s, l[i])
         assert.is_true(tonumber(s) >= i - 1 and tonumber(s) <= i + 1, l[i])
      end
      -- the heartbeat and its sleep ended with the step: the pipe closed at once
      assert.is_true(took <= 5, took)
   end)

   it("counts the objects a kernel build compiled so far, from its log", function()
      local code, _, stderr = run(("lab/kernel/heartbeat --interval=1 'building bzImage' %s sh -c "
         .. "'printf \"  CC      init/main.o\\n  CC      kernel/fork.o\\n  LD      vmlinux\\n\"; sleep 2'")
         :format(log))
      assert.are.equal(0, code, stderr)
      assert.matches("\nkernel: building bzImage, %d s so far, 2 objects compiled %(log: ", stderr)
      assert.matches("  CC      kernel/fork%.o\n  LD      vmlinux\n$", slurp(log))
   end)

   it("keeps the log of a failed step, shows its tail and exits with the step's status", function()
      local code, _, stderr = run(("lab/kernel/heartbeat --interval 1 'building bzImage' %s sh -c "
         .. "'echo compiling; sleep 1.5; echo \"error: it broke\"; exit 3'"):format(log))
      assert.are.equal(3, code, stderr)
      assert.matches("kernel: building bzImage, %d s so far %(log: ", stderr)
      assert.matches("compiling\nerror: it broke\nkernel: building bzImage failed after %d s %(status 3%); "
         .. "the log is kept: " .. log:gsub("%p", "%%%0") .. "\n$", stderr)
      assert.are.equal("compiling\nerror: it broke\n", slurp(log))
   end)

   it("appends to the log the build named before", function()
      local f = assert(io.open(log, "w"))
      f:write("configuring\n")
      f:close()
      local code, _, stderr = run(("lab/kernel/heartbeat 'a step' %s echo built"):format(log))
      assert.are.equal(0, code, stderr)
      assert.are.equal("configuring\nbuilt\n", slurp(log))
      assert.are.equal("kernel: a step (log: " .. log .. ")\n", stderr)
   end)

   it("is a usage error without a step, a log and a command", function()
      local code, _, stderr = run("lab/kernel/heartbeat 'a step'")
      assert.are.equal(2, code)
      assert.matches("usage: lab/kernel/heartbeat", stderr)
   end)
end)

describe("lab/kernel/build", function()
   local script = slurp("lab/kernel/build")

   it("names its log at the start, outside the build that a failure removes", function()
      assert.matches('\nlog=%$cache/lab/kernel%-6%.12%-build%.log\n', script)
      assert.matches('say "building Linux 6%.12 for the lab; its log: %$log"', script)
      -- the EXIT trap removes $work and $out.new only
      assert.matches("trap 'rm %-rf \"%$work\" \"%$out%.new\"' EXIT", script)
   end)

   it("runs the unpacking and the bzImage build under the heartbeat", function()
      assert.matches('"%$heartbeat" "building bzImage" "%$log" make %-C "%$src" %-j"%$jobs" bzImage', script)
      assert.matches('"%$heartbeat" "unpacking the kernel source" "%$log" tar %-xJf', script)
      assert.matches('\nheartbeat=%$root/lab/kernel/heartbeat\n', script)
   end)
end)
