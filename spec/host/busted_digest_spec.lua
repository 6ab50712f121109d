-- tools/busted-digest, which spec/run uses to end a run with one line per failed spec:
-- fed what busted itself prints for a file with a failure, an error and a pass.
local files = require "support.files"

local SAMPLE = [[
describe("a sample", function()
   it("passes", function() assert.is_true(true) end)
   it("fails a match", function() assert.matches("wanted", "what came\nsecond line") end)
   it("raises", function() error("the screen:\n\nline one\nline two\nline three\nline four", 0) end)
end)
]]

describe("tools/busted-digest", function()
   it("names each failed spec with its file, line, name and first message lines", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
      files.writefile(dir .. "/sample_spec.lua", SAMPLE)
      local log = dir .. "/log"
      os.execute(("cd %s && lua5.4 /usr/bin/busted -o plainTerminal sample_spec.lua > log 2>&1"):format(dir))
      local p = io.popen("tools/busted-digest tierX " .. log)
      local out = p:read("a")
      p:close()
      os.execute("rm -rf " .. dir)
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal(2, #lines, out)
      assert.matches("^tierX: Failure sample_spec%.lua:3 %(a sample fails a match%) :: "
         .. "sample_spec%.lua:3: Expected strings to match%.", lines[1])
      assert.matches("^tierX: Error sample_spec%.lua:4 %(a sample raises%) :: sample_spec%.lua:4: the screen: | "
         .. "line one | line two | line three$", lines[2])
   end)

   it("is what spec/run calls, and spec/run is valid bash", function()
      local p = io.popen("grep -c 'tools/busted-digest \"\\$tier\" \"\\$log\"' spec/run")
      assert.are.equal("1", p:read("l"))
      p:close()
      local _, _, code = os.execute("bash -n spec/run")
      assert.are.equal(0, code)
   end)

   it("prints nothing for a log without failures, and refuses wrong arguments", function()
      local log = os.tmpname()
      files.writefile(log, "++\n2 successes / 0 failures / 0 errors / 0 pending : 0.1 seconds\n")
      local p = io.popen("tools/busted-digest t " .. log)
      assert.are.equal("", p:read("a"))
      p:close()
      os.remove(log)
      local _, _, code = os.execute("tools/busted-digest onlyone 2>/dev/null")
      assert.are.equal(2, code)
   end)
end)
