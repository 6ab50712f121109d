-- A Linux guest's own GPIO driver as the judge of the PCI-IDIO-16 model
-- (examples/vfio-user/pci_idio_16.lua) served by bin/vfio-user-serve: the lab's kernel
-- (Debian 12's 6.1, its gpio-pci-idio-16 module) boots under TCG in QEMU 11.1 with the
-- model as a vfio-user-pci function, and a script in the guest
-- (spec/support/user_gpio_guest.sh) reads the inputs, writes outputs and waits for an
-- edge interrupt, through /sys/class/gpio. The model's side is set and read through the
-- server's control channel (spec/support/user_server.lua). Pending without the unpacked
-- QEMU (lab/vfio-user-client) or the lab kernel (lab/setup).
local qvu = require "support.qemu_vfio_user"
local us = require "support.user_server"
local child = require "support.child"
local stat = require "posix.sys.stat"

local GPIO = us.ROOT .. "/examples/vfio-user/pci_idio_16.lua"
local INPUTS = 0xa55a          -- the world's levels on the 16 inputs, set before boot
local OUTPUTS = 0x8421         -- what the guest drives: outputs 0, 5, 10 and 15

-- The lab kernel's path, or nil and why not.
local function lab_kernel()
   local p = io.popen("cd '" .. us.ROOT .. "' && . lab/cache.sh"
      .. " && cat \"$cache/lab/kernel/version\" 2>/dev/null && echo \"$cache\"")
   local ver, cache = p:read("l"), p:read("l")
   p:close()
   local kernel = cache and ver and ("%s/lab/kernel/boot/vmlinuz-%s"):format(cache, ver)
   if not kernel or not stat.stat(kernel) then return nil, "no lab kernel in the cache (lab/setup fetches it)" end
   return kernel
end

-- #noasan: a minute of TCG; the server's C under it is ASan-checked by user_server_spec's qtest cases
describe("a Linux guest (the lab's kernel under TCG) with the PCI-IDIO-16 model over vfio-user #noasan", function()
   local root, why = qvu.available()
   local kernel, kwhy = lab_kernel()
   if not root or not kernel then
      pending(why or kwhy)
      return
   end

   local out, srv, log, outputs, g
   lazy_setup(function()
      local ip = io.popen("cd '" .. us.ROOT .. "' && lab/initramfs --modules gpio_pci_idio_16"
         .. " --run spec/support/user_gpio_guest.sh 2>&1")
      local initrd = ip:read("a")
      assert(ip:close(), initrd)
      initrd = initrd:match("(%S+)%s*$")
      srv = us.start(GPIO, { control = true })
      srv:eval(("dev:set_inputs(%d)"):format(INPUTS))
      g = assert(qvu.start_guest { kernel = kernel, initrd = initrd, socket = srv.socket })
      local ok, err = pcall(function()
         child.wait_for(g, "the guest arming input 0's interrupt",
            function()
               return g.output():find("user%-gpio waiting for input 0") or g.output():find("guest: run.sh exit")
            end, 180)
         -- read while the guest runs: its poweroff ends the session, which resets the card
         log = srv:eval("return dev:output_log()")
         outputs = srv:eval("return dev:outputs()")
         srv:eval("dev:set_input(0, true)")        -- the edge the guest waits for
         child.wait_for(g, "the guest's checks", function() return g.output():find("guest: run.sh exit %d") end, 60)
      end)
      out = g.output():gsub("\r", "")
      assert(ok, tostring(err) .. "\n" .. out:sub(-3000))
   end)
   lazy_teardown(function()
      if g then g.stop() end
      if srv then srv.stop() end
   end)

   it("binds gpio-pci-idio-16, a 32-line chip", function()
      assert.matches("user%-gpio id 0x494f:0x0dc8\n", out)
      assert.matches("user%-gpio driver pci%-idio%-16\n", out)
      assert.matches("user%-gpio chip 32 lines\n", out)
   end)

   it("reads the input pins the model was given", function()
      assert.matches(("user%%-gpio inputs 0x%04x\n"):format(INPUTS), out)
   end)

   it("drives the outputs: the model records each write, the driver reads them back", function()
      assert.are.equal(OUTPUTS, outputs)
      assert.matches(("user%%-gpio outputs 0x%04x\n"):format(OUTPUTS), out)
      -- one line at a time, in the guest's order: each write adds its pin to the last
      local seen, want = {}, { 0x0001, 0x0021, 0x0421, 0x8421 }
      for _, w in ipairs(log) do
         if w ~= seen[#seen] then seen[#seen + 1] = w end
      end
      local from = 1
      for _, w in ipairs(want) do
         local found
         for k = from, #seen do
            if seen[k] == w then found, from = k, k + 1 break end
         end
         assert.truthy(found, ("output word 0x%04x in the model's log %s"):format(w, table.concat(seen, ",")))
      end
   end)

   it("delivers the change-of-state interrupt when the spec sets an input in the model", function()
      assert.matches("user%-gpio input 0 now 1\n", out)
      local before, after = out:match("user%-gpio irqs before (%d+) after (%d+)\n")
      assert.truthy(before, out:sub(-2000))
      assert.is_true(tonumber(after) > tonumber(before), ("irqs %s -> %s"):format(before, after))
      assert.matches("guest: run.sh exit 0", out)
   end)
end)
