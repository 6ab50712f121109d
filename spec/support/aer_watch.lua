-- Inside the lab (spec/host/lab_aer_spec.lua runs it through lab/run): open the lab's
-- virtio-net, register VFIO's error and request interrupts, say "aer-watch: armed BDF",
-- and report what comes within 120 s:
--   aer-watch: error N          the error interrupt fired (N signals)
--   aer-watch: request N        the request interrupt fired (it must not, here)
--   aer-watch: nothing          nothing within the time
--   aer-watch: failed MESSAGE   the device or its interrupts could not be set up
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("LUAVFIO_BUILD") or "build") .. "/?.so;" .. package.cpath
local vfio = require "vfio"
local lab = require "support.lab"
local ppoll = require "posix.poll"

local function say(fmt, ...)
   io.stdout:write("aer-watch: ", fmt:format(...), "\n")
   io.stdout:flush()
end

local d = lab.device("virtio-net-pci")
if not d then say("failed no virtio-net-pci bound in this lab") os.exit(1) end
local dev, err = vfio.open(d.bdf)
if not dev then say("failed %s", err) os.exit(1) end
local efd, rfd
efd, err = dev:error_eventfd()
if efd then rfd, err = dev:request_eventfd() end
if not efd or not rfd then say("failed %s", err) os.exit(1) end
say("armed %s", d.bdf)
local fds = { [efd:fileno()] = { events = { IN = true } }, [rfd:fileno()] = { events = { IN = true } } }
local n = ppoll.poll(fds, 120000)
if not n or n == 0 then
   say("nothing")
else
   local got = dev:notices()
   for _, kind in ipairs { "error", "request" } do
      if got[kind] then say("%s %d", kind, got[kind]) end
   end
end
dev:close()
