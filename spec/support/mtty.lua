-- For the lab specs on mtty (samples/vfio-mdev/mtty.c): where its parent is, why a spec is
-- pending without it, and what a spec made, undone after it. busted keeps one finally per
-- spec, so the undo steps queue here: devices closed, then mdevs removed, the last first.
local mdev = require "vfio.mdev"

local M = {}

M.PARENT = "/sys/class/mdev_bus/mtty"

function M.reason()
   return ("no mtty mdev parent (%s is missing): the lab kernel %s lacks samples/vfio-mdev/"
      .. "mtty; run these with lab/run --kernel 6.12"):format(M.PARENT,
      os.getenv("LUAVFIO_LAB_KERNEL") or "(unknown)")
end

local steps = {}

-- Queue fn to run after the spec.
function M.undo(fn) steps[#steps + 1] = fn end

-- Run what was queued, the last first (an after_each).
function M.cleanup()
   for i = #steps, 1, -1 do steps[i]() end
   steps = {}
   collectgarbage()
end

-- An mdev made by the spec, removed after it once nothing holds it open.
function M.created(uuid)
   M.undo(function() collectgarbage(); collectgarbage(); mdev.remove(uuid) end)
   return uuid
end

return M
