-- The Linux guest's serial console on a real terminal (tmux): passthrough.lua --kernel
-- puts the terminal in raw mode, what is typed reaches the guest's ttyS0, the guest's
-- output comes back live, Ctrl-A x ends the run and the terminal is restored.
local system = require "system"

local SOCK = "luavfio-console-spec"
local root = io.popen("pwd"):read("l")

local function sh(cmd)
   local p = io.popen(cmd .. " 2>&1")
   local out = p:read("a")
   local ok = p:close()
   return out, ok
end
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function tmux(args) return sh("tmux -L " .. SOCK .. " " .. args) end
local function screen() return (tmux("capture-pane -p -t con -S -1000")) end

local function wait_for(pattern, timeout)
   local deadline = system.monotime() + (timeout or 120)
   local s
   repeat
      s = screen()
      if s:find(pattern) then return s end
      system.sleep(0.3)
   until system.monotime() > deadline
   error(("timed out waiting for %q; screen:\n%s"):format(pattern, s), 2)
end

local function start(run_script)
   local img = assert(sh("lab/initramfs --run " .. run_script):match("(%S+)%s*$"))
   local kernel = os.getenv("LUAVFIO_CACHE") .. "/lab/kernel/boot/vmlinuz-" .. os.getenv("LUAVFIO_LAB_KERNEL")
   local nvme = require("support.lab").need("nvme").bdf
   tmux("kill-server")
   local cmd = ("cd %s && lua5.4 passthrough.lua --kernel %s --initrd %s --append quiet --device %s; "
      .. "echo CON-EXIT $?; echo TTY-$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon); sleep 600"):format(root, kernel, img, nvme)
   local _, ok = tmux("new-session -d -s con -x 160 -y 50 " .. q(cmd))
   assert(ok, "tmux did not start")
end

describe("the Linux guest's console on a terminal", function()
   after_each(function() tmux("kill-server") end)

   it("takes typed lines to the guest and its answers back, and powers off", function()
      start("spec/support/console_guest.sh")
      wait_for("guest: type a line", 180)
      tmux("send-keys -t con -l 'hello luavfio'")
      tmux("send-keys -t con Enter")
      wait_for("guest got: hello luavfio", 60)
      tmux("send-keys -t con -l bye")
      tmux("send-keys -t con Enter")
      local s = wait_for("TTY%-%S+", 120)
      assert.matches("CON%-EXIT 0", s)            -- the guest powered off
      assert.matches("TTY%-icanon", s)            -- the terminal is cooked again
   end)

   it("ends on Ctrl-A x, tearing the VM down", function()
      start("spec/support/console_guest.sh")
      wait_for("guest: type a line", 180)
      tmux("send-keys -t con C-a")
      tmux("send-keys -t con -l x")
      local s = wait_for("TTY%-%S+", 60)
      assert.matches("CON%-EXIT 1", s)
      assert.matches("guest interrupted", s)
      assert.matches("TTY%-icanon", s)
      -- the device is free again
      local d = assert(require("vfio").open(require("support.lab").need("nvme").bdf))
      d:close()
   end)
end)
