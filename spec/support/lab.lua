-- Which lab devices this run has: lab/run publishes them in $LUAVFIO_LAB_DEVICES, one line
-- per device bound to vfio-pci: "BDF VENDOR:DEVICE CLASS GROUP NAME". Specs pick devices
-- by what they are (lab.device "edu"), never by slot.
local lab = {}

lab.inside = os.getenv("LUAVFIO_LAB") == "1"

local function parse(path)
   local list = {}
   local f = path and io.open(path)
   if not f then return list end
   for line in f:lines() do
      local bdf, ven, dev, class, group, name =
         line:match("^(%S+) (%x+):(%x+) (%x+) (%d+) (%S+)$")
      if bdf then
         list[#list + 1] = {
            bdf = bdf, vendor = tonumber(ven, 16), device = tonumber(dev, 16),
            class = tonumber(class, 16), group = tonumber(group), name = name,
            id = ven .. ":" .. dev,
         }
      end
   end
   f:close()
   return list
end

-- The devices of this run. Inside the lab an empty list is an error, never an empty
-- loop: a spec that checks "every lab device" must not pass because there are none.
local cached
function lab.devices()
   cached = cached or parse(os.getenv("LUAVFIO_LAB_DEVICES"))
   if lab.inside and #cached == 0 then
      error("no lab devices published (" .. tostring(os.getenv("LUAVFIO_LAB_DEVICES"))
         .. " is empty or missing): the lab bound nothing to vfio-pci", 2)
   end
   return cached
end

-- The first bound device whose QEMU name (or vendor:device) is `what`, or nil.
function lab.device(what)
   for _, d in ipairs(lab.devices()) do
      if d.name == what or d.id == what then return d end
   end
   return nil
end

-- For specs: the device, or an error that says the lab lacks it (a missing device is a
-- failure, never a silent skip).
function lab.need(what)
   local d = lab.device(what)
   if not d then
      error(("lab device %s is not bound in this run (%s)"):format(what,
         os.getenv("LUAVFIO_LAB_DEVICES") or "not inside lab/run"), 2)
   end
   return d
end

-- Poll pred() until it is true or `seconds` (default 5) have passed: true if it became true.
function lab.wait_until(pred, seconds)
   local deadline = os.time() + (seconds or 5)
   repeat
      if pred() then return true end
   until os.time() > deadline
   return false
end

-- One transfer of edu's DMA engine (BAR0 registers 0x80 source, 0x88 destination, 0x90
-- count, 0x98 command: 1 starts, 2 is device-to-RAM; the device's buffer is at 0x40000):
-- true once the engine is idle again, false if it did not finish within 5 s.
function lab.edu_dma(bar, src, dst, n, cmd)
   bar:write64(0x80, src)
   bar:write64(0x88, dst)
   bar:write64(0x90, n)
   bar:write32(0x98, cmd)
   return lab.wait_until(function() return bar:read32(0x98) & 1 == 0 end)
end

return lab
