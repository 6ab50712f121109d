---
-- The host taking a device back, and the host's word on its errors: what the VMM does
-- about VFIO's request and error interrupts (vfio.open's `notifier`), as QEMU does.
--
-- request  the host wants the device (a driver unbind from vfio-pci, a hot unplug): the
--          kernel blocks the unbind until every fd of the device is closed and repeats
--          the request every 10 s meanwhile. A device in a hot-plug slot is asked of the
--          guest (the slot's attention button, board:device_del); once the guest powers
--          the slot off, or after hotplug.REMOVE_TIMEOUT seconds, the board releases it
--          and closes every fd of it, and the unbind completes. A device with no slot
--          cannot leave a running guest: the VMM says so once per burst of requests and
--          keeps serving the guest (the unbind completes when the VMM exits).
-- error    the host's AER driver saw an uncorrectable error on the device: what the
--          device does now is unknown, so the run stops, naming the device.
--
-- The decisions are data (Watch:decide); the board (board:attend_host) gathers each
-- device's notices between run slices and carries the decisions out. Between slices
-- means up to a slice late (0.5 s, 0.05 s with a console): a run woken by the
-- eventfds themselves would answer at once, and needs the run loop to wait on them.
-- @module vfio.vmm.reclaim
local M = {}

-- Seconds without a request after which the next one starts a new burst: the kernel
-- repeats a request every 10 s for as long as the unbind waits.
M.BURST_GAP = 30

-- What the VMM says, for each case (%s: the device's host address).
M.UNPLUG = "the host wants %s back: asking the guest to give it up through its hot-plug "
   .. "slot; it goes back to the host once the guest powers the slot off, or after %d s"
M.NO_SLOT = "the host wants %s back, but it has no hot-plug slot in this VM (--device "
   .. "%s,port=on gives it one): the guest keeps it, and the host's unbind waits until "
   .. "this VMM exits"
M.ERROR = "device %s reported an uncorrectable error (the host's AER driver): the VM is "
   .. "stopped; the host's kernel log says more"

local Watch = {}
Watch.__index = Watch

---
-- A watch over a machine's devices: it remembers when each device's last request came.
-- @tparam[opt] table opts `remove_timeout`: the seconds UNPLUG names (hotplug.REMOVE_TIMEOUT)
function M.new(opts)
   opts = opts or {}
   return setmetatable({ last_request = {}, remove_timeout = opts.remove_timeout or 20 },
      Watch)
end

--- A watch over a machine's devices (vfio.vmm.reclaim.new).
-- @type Watch

---
-- What to do about the notices that came: `list` holds one entry per device with news,
-- `{name = host address, request = n (or nil), error = n (or nil), slot = true when it
-- is in a hot-plug slot}`; `now` is vfio.vmm.vm.now(). Returns a list of actions, each
-- naming its entry by index: `{"stop", i, text}` (end the run, saying text),
-- `{"unplug", i, note = text or nil}` (ask the guest for the device; note to say, once
-- per burst), `{"note", i, text}` (say text; the device stays).
function Watch:decide(list, now)
   local out = {}
   for i, d in ipairs(list) do
      if d.error then out[#out + 1] = { "stop", i, M.ERROR:format(d.name) } end
      if d.request then
         local last = self.last_request[d.name]
         local new_burst = last == nil or now - last >= M.BURST_GAP
         self.last_request[d.name] = now
         if d.slot then
            out[#out + 1] = { "unplug", i,
                              note = new_burst and M.UNPLUG:format(d.name, self.remove_timeout)
                                 or nil }
         elseif new_burst then
            out[#out + 1] = { "note", i, M.NO_SLOT:format(d.name, d.name) }
         end
      end
   end
   return out
end

return M
