-- The Linux guest's serial console on a real terminal (tmux): passthrough.lua --kernel
-- puts the terminal in raw mode, what is typed reaches the guest's ttyS0, the guest's
-- output comes back live, Ctrl-A x ends the run and the terminal is restored.
local tmux = require "support.tmux"

local root = io.popen("pwd"):read("l")
local term = tmux.new("luavfio-console-spec", "con")

local function start(run_script)
   local guest = require "support.linux_guest"
   local img, kernel = guest.initramfs("--run " .. run_script), guest.kernel()
   local nvme = require("support.lab").need("nvme").bdf
   -- after the run: its status, and whether the terminal is in canonical mode again
   local cmd = ("cd %s && lua5.4 passthrough.lua --kernel %s --initrd %s --append quiet --device %s; "
      .. "echo CON-EXIT $?; echo TTY-$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon); "
      .. "sleep 600"):format(root, kernel, img, nvme)
   term:start(cmd)
end

-- The lab kernel's last messages, for a guest that never came up (one line).
local function lab_dmesg()
   local p = io.popen("dmesg | tail -n 3")
   local out = p:read("a"):gsub("%s*\n%s*", " | ")
   p:close()
   return out
end

-- Wait for the guest's prompt; when it never comes, the first line of the error says
-- what passthrough.lua said (after a timeout: where the vCPU was) and what the lab's
-- kernel said last, so the one-line digest at the end of a run carries them.
local function wait_prompt()
   local ok, err = pcall(term.wait_for, term, "guest: type a line", 180)
   if ok then return end
   local screen = term:screen()
   error(("no prompt in 180 s; %s; lab: %s\n%s"):format(
      screen:match("passthrough%.lua: guest [^\n]*") or "passthrough.lua gave no verdict",
      lab_dmesg(), tostring(err)), 0)
end

describe("the Linux guest's console on a terminal #onekernel", function()
   after_each(function() term:kill() end)

   it("takes typed lines to the guest and its answers back, and powers off", function()
      start("spec/support/console_guest.sh")
      wait_prompt()
      term:keys("-l 'hello luavfio'")
      term:keys("Enter")
      term:wait_for("guest got: hello luavfio", 60)
      term:keys("-l bye")
      term:keys("Enter")
      local s = term:wait_for("TTY%-%S+", 120)
      assert.matches("CON%-EXIT 0", s)            -- the guest powered off
      assert.matches("TTY%-icanon", s)            -- the terminal is cooked again
   end)

   it("ends with status 0 when the guest reboots (reboot -f)", function()
      start("spec/support/console_guest.sh")
      wait_prompt()
      term:keys("-l reboot")
      term:keys("Enter")
      local s = term:wait_for("TTY%-%S+", 120)
      assert.matches("guest: rebooting", s)
      assert.matches("guest reboot", s)             -- passthrough.lua's verdict
      assert.matches("CON%-EXIT 0", s)
      assert.matches("TTY%-icanon", s)
   end)

   it("ends on Ctrl-A x, tearing the VM down", function()
      start("spec/support/console_guest.sh")
      wait_prompt()
      term:keys("C-a")
      term:keys("-l x")
      local s = term:wait_for("TTY%-%S+", 60)
      assert.matches("CON%-EXIT 1", s)
      assert.matches("guest interrupted", s)
      assert.matches("TTY%-icanon", s)
      -- the device is free again
      local d = assert(require("vfio").open(require("support.lab").need("nvme").bdf))
      d:close()
   end)
end)

describe("the Linux guest without a terminal #onekernel", function()
   it("tears the VM down on SIGINT, and the device is usable again", function()
      local sh = require("support.shell").run
      local guest = require "support.linux_guest"
      local img, kernel = guest.initramfs("--run spec/support/console_guest.sh"), guest.kernel()
      local nvme = require("support.lab").need("nvme").bdf
      -- stdin a FIFO held open (no terminal, no EOF), SIGINT once the guest is up; no
      -- process outlives the command (popen reads until the last writer is gone)
      local log = os.tmpname()
      local out = sh(("f=$(mktemp -u); mkfifo $f; lua5.4 passthrough.lua --kernel %s --initrd %s "
         .. "--append quiet --device %s < $f > %s 2>&1 & pid=$!; exec 4> $f; n=0; "
         .. "until grep -q 'guest: type a line' %s || ! kill -0 $pid 2>/dev/null; do "
         .. "n=$((n+1)); [ $n -gt 360 ] && break; sleep 0.5; done; kill -INT $pid; wait $pid; "
         .. "echo EXIT $?; exec 4>&-; rm -f $f; cat %s"):format(kernel, img, nvme, log, log, log))
      os.remove(log)
      assert(out:find("guest: type a line", 1, true), ("no prompt; %s; lab: %s"):format(
         out:match("passthrough%.lua: guest [^\n]*") or out:sub(-200), lab_dmesg()))
      assert.matches("EXIT 130", out)
      assert.matches("interrupted by signal 2; VM torn down", out)
      local d = assert(require("vfio").open(nvme))
      assert.are.equal(0x1b36, d.config:read16(0))   -- QEMU's nvme, open again
      d:close()
   end)
end)
