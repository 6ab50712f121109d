-- A real interactive session of bin/vfio-poke (and of `lua5.4 -i -l vfio.poke`), driven
-- through tmux: keys go in with send-keys, the screen comes back with capture-pane.
local lab = require "support.lab"
local system = require "system"

local SOCK = "luavfio-poke-spec"
local root = io.popen("pwd"):read("l")

local function sh(cmd)
   local p = io.popen(cmd .. " 2>&1")
   local out = p:read("a")
   local ok = p:close()
   return out, ok
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function tmux(args) return sh("tmux -L " .. SOCK .. " " .. args) end

local function screen()
   return (tmux("capture-pane -p -t poke -S -1000"))
end

-- Wait until the screen matches pattern (plain Lua pattern); the whole screen on timeout.
local function wait_for(pattern, timeout)
   local deadline = system.monotime() + (timeout or 60)
   local s
   repeat
      s = screen()
      if s:find(pattern) then return s end
      system.sleep(0.2)
   until system.monotime() > deadline
   error(("timed out waiting for %q; screen:\n%s"):format(pattern, s), 2)
end

local function count(s, plain)
   local n, i = 0, 1
   while true do
      local a, b = s:find(plain, i, true)
      if not a then return n end
      n, i = n + 1, b + 1
   end
end

-- Type a line and wait for the next prompt (the prompt count grows by one).
local function run(line, timeout)
   local before = count(screen(), "poke>")
   tmux("send-keys -t poke -l " .. q(line))
   tmux("send-keys -t poke Enter")
   local deadline = system.monotime() + (timeout or 60)
   while count(screen(), "poke>") <= before do
      if system.monotime() > deadline then error("no prompt after " .. line .. ":\n" .. screen(), 2) end
      system.sleep(0.2)
   end
   return screen()
end

local function start(cmd)
   tmux("kill-server")
   local home = os.tmpname()
   os.remove(home)
   assert(os.execute("mkdir -p " .. home))
   local _, ok = tmux("new-session -d -s poke -x 200 -y 50 " .. q(
      "cd " .. root .. " && HOME=" .. home .. " " .. cmd .. "; echo POKE-EXIT $?; sleep 600"))
   assert(ok, "tmux did not start")
   return home
end

describe("vfio-poke through tmux", function()
   after_each(function() tmux("kill-server") end)

   it("opens edu, completes a method, reads the id register, sees an MSI", function()
      local edu = lab.need("edu")
      local home = start("bin/vfio-poke " .. edu.bdf)
      wait_for("d = " .. edu.bdf:gsub("%p", "%%%0"), 60)
      wait_for("poke>\n", 60)
      run("edu = d:regs('examples/edu_regs.lua', 0)")

      -- Tab completes a method of the device wrapper ...
      tmux("send-keys -t poke -l 'd:lsp'")
      tmux("send-keys -t poke Tab")
      wait_for("poke> d:lspci\n", 30)
      tmux("send-keys -t poke -l '()'")
      tmux("send-keys -t poke Enter")
      wait_for("Capabilities: %[%x+%] MSI: Enable", 60)
      -- ... and a method of a register object, two __index levels down
      tmux("send-keys -t poke -l 'edu.status:wa'")
      tmux("send-keys -t poke Tab")
      wait_for("poke> edu%.status:wait\n", 30)
      tmux("send-keys -t poke C-u")

      local s = run("edu.id()")
      assert.matches("0x10000ed %(16777453%)", s)
      run("edu.liveness(0x12345678)")
      s = run("edu.liveness()")
      assert.matches("0xedcba987 %(3989547399%)", s)

      run("i = d:irq('msi')")
      run("edu.irq_raise(0x5a)")
      s = run("{ irq = i:wait(5), status = edu.irq_status() }")
      assert.matches("irq = 0x1 %(1%),", s)
      assert.matches("status = 0x5a %(90%),", s)
      run("edu.irq_ack(0x5a)")

      -- readline history: Up brings the previous line back for editing
      tmux("send-keys -t poke Up")
      wait_for("poke> edu%.irq_ack%(0x5a%)\n", 30)
      tmux("send-keys -t poke C-u C-d")
      wait_for("POKE%-EXIT 0", 30)
      local f = assert(io.open(home .. "/.luavfio_poke_history"))
      local hist = f:read("a")
      f:close()
      assert.matches("edu%.id%(%)", hist)
   end)

   it("lua5.4 -i -l vfio.poke gives the same REPL", function()
      start("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' lua5.4 -i -l vfio.poke")
      wait_for("poke>\n", 60)
      tmux("send-keys -t poke -l 'pciids.class_l'")
      tmux("send-keys -t poke Tab")
      wait_for("poke> pciids%.class_label\n", 30)
      tmux("send-keys -t poke C-u")
      local s = run("ls()")
      assert.matches("1234:11e8", s)
      assert.matches("vfio%-pci", s)
      -- Ctrl-C stops a runaway evaluation and the session carries on
      tmux("send-keys -t poke -l 'n = 0; while true do n = n + 1 end'")
      tmux("send-keys -t poke Enter")
      system.sleep(1)
      tmux("send-keys -t poke C-c")
      wait_for("poke:1: interrupted\npoke>", 30)
      s = run("n > 0")
      assert.matches("poke> n > 0\ntrue\n", s)
      tmux("send-keys -t poke C-d")
      wait_for("POKE%-EXIT 0", 30)
   end)
end)
