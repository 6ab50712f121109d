-- A real interactive session of bin/vfio-poke (and of `lua5.4 -i -l vfio.poke`), driven
-- through tmux: keys go in with send-keys, the screen comes back with capture-pane.
local lab = require "support.lab"
local system = require "system"
local support_tmux = require "support.tmux"

local term = support_tmux.new("luavfio-poke-spec", "poke")
local root = io.popen("pwd"):read("l")
local q = support_tmux.quote

local function screen() return term:screen() end
local function wait_for(pattern, timeout) return term:wait_for(pattern, timeout) end

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
   term:keys("-l " .. q(line))
   term:keys("Enter")
   local deadline = system.monotime() + (timeout or 60)
   while count(screen(), "poke>") <= before do
      if system.monotime() > deadline then error("no prompt after " .. line .. ":\n" .. screen(), 2) end
      system.sleep(0.2)
   end
   return screen()
end

local function start(cmd)
   local home = os.tmpname()
   os.remove(home)
   assert(os.execute("mkdir -p " .. home))
   term:start("cd " .. root .. " && HOME=" .. home .. " " .. cmd .. "; echo POKE-EXIT $?; sleep 600")
   return home
end

describe("vfio-poke through tmux #onekernel", function()
   after_each(function() term:kill() end)

   it("opens edu, completes a method, reads the id register, sees an MSI", function()
      local edu = lab.need("edu")
      local home = start("bin/vfio-poke " .. edu.bdf)
      wait_for("d = " .. edu.bdf:gsub("%p", "%%%0"), 60)
      wait_for("poke>\n", 60)
      run("edu = d:regs('examples/edu_regs.lua', 0)")

      -- Tab completes a method of the device wrapper ...
      term:keys("-l 'd:lsp'")
      term:keys("Tab")
      wait_for("poke> d:lspci\n", 30)
      term:keys("-l '()'")
      term:keys("Enter")
      wait_for("Capabilities: %[%x+%] MSI: Enable", 60)
      -- ... and a method of a register object, two __index levels down
      term:keys("-l 'edu.status:wa'")
      term:keys("Tab")
      wait_for("poke> edu%.status:wait\n", 30)
      term:keys("C-u")

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
      term:keys("Up")
      wait_for("poke> edu%.irq_ack%(0x5a%)\n", 30)
      term:keys("C-u C-d")
      wait_for("POKE%-EXIT 0", 30)
      local f = assert(io.open(home .. "/.luavfio_poke_history"))
      local hist = f:read("a")
      f:close()
      assert.matches("edu%.id%(%)", hist)
   end)

   it("lua5.4 -i -l vfio.poke gives the same REPL", function()
      start("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' lua5.4 -i -l vfio.poke")
      wait_for("poke>\n", 60)
      term:keys("-l 'pciids.class_l'")
      term:keys("Tab")
      wait_for("poke> pciids%.class_label\n", 30)
      term:keys("C-u")
      local s = run("ls()")
      assert.matches("1234:11e8", s)
      assert.matches("vfio%-pci", s)
      -- Ctrl-C stops a runaway evaluation and the session carries on
      term:keys("-l 'n = 0; while true do n = n + 1 end'")
      term:keys("Enter")
      system.sleep(1)
      term:keys("C-c")
      wait_for("poke:1: interrupted\npoke>", 30)
      s = run("n > 0")
      assert.matches("poke> n > 0\ntrue\n", s)
      term:keys("C-d")
      wait_for("POKE%-EXIT 0", 30)
   end)
end)
