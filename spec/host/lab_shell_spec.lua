-- The interactive lab (make lab-shell's path), driven like a person would through tmux.
local function sh(cmd)
   local p = assert(io.popen(cmd .. " 2>&1"))
   local out = p:read("a")
   p:close()
   return out
end

local function wait_for(session, pattern, seconds)
   local screen = ""
   for _ = 1, seconds * 2 do
      screen = sh("tmux capture-pane -p -t " .. session)
      if screen:find(pattern) then return screen end
      os.execute("sleep 0.5")
   end
   error(("timed out waiting for %q; screen:\n%s"):format(pattern, screen))
end

describe("lab/run --interactive #noasan #labboot", function()
   local session = "luavfio-spec-" .. os.time()
   after_each(function() os.execute("tmux kill-session -t " .. session .. " 2>/dev/null") end)

   it("gives a root shell at the project root with the lab's devices, and powers off on exit", function()
      local root = sh("pwd"):gsub("%s+$", "")
      local status = os.tmpname()
      os.execute(("tmux new-session -d -s %s -x 120 -y 30 'lab/run --interactive --no-defaults " ..
         "--device edu --timeout 120; echo $? > %s; sleep 60'"):format(session, status))
      wait_for(session, "root@lab:[^\n]*#", 90) -- capture-pane trims the trailing space
      os.execute("tmux send-keys -t " .. session ..
         " 'echo answer=$((6*7)); echo at=$(pwd); cut -d\" \" -f5 $LUAVFIO_LAB_DEVICES; tty' Enter")
      local screen = wait_for(session, "/dev/ttyS0", 30)
      assert.matches("answer=42", screen)
      assert.matches("at=" .. root:gsub("%p", "%%%0") .. "\n", screen)
      assert.matches("\nedu\n", screen)
      os.execute("tmux send-keys -t " .. session .. " 'exit 3' Enter")
      for _ = 1, 60 do
         local f = io.open(status)
         local rc = f and f:read("l")
         if f then f:close() end
         if rc and rc ~= "" then
            assert.are.equal("3", rc)
            os.remove(status)
            return
         end
         os.execute("sleep 0.5")
      end
      error("lab/run did not exit after the shell did")
   end)
end)
