-- The host's side of spec/support/hotplug_guest.sh (the PCIe hot-plug guest): whether the
-- guest kernel can run it, and its console report parsed. Shared by
-- spec/lab/hotplug_spec.lua and bench/hotplug.lua.
local linux = require "support.linux_guest"

local M = {}

--- Why the guest kernel cannot do this, or nil: its pciehp is not built (its config beside
-- the image says so; a kernel without a config file is tried).
function M.no_pciehp()
   local kernel = linux.kernel()
   local dir, ver = kernel:match("^(.*)/vmlinuz%-(.*)$")
   local f = dir and io.open(dir .. "/config-" .. ver)
   if not f then return nil end
   local config = f:read("a")
   f:close()
   if not config:find("\nCONFIG_HOTPLUG_PCI_PCIE=y", 1, true) then
      return ("the guest kernel %s has no pciehp (CONFIG_HOTPLUG_PCI_PCIE unset)"):format(ver)
   end
end

--- The guest's report (spec/support/hotplug_guest.sh): slots by name; adds[slot][n], the
-- nth device in that slot, with what the guest saw of it until it left.
function M.report(out)
   local r = { slots = {}, adds = {}, trouble = {} }
   local function add(s, n)
      r.adds[s] = r.adds[s] or {}
      r.adds[s][n] = r.adds[s][n] or { reads = {}, irqs = 0 }
      return r.adds[s][n]
   end
   local cur = {}   -- the slot's device now being reported
   for line in out:gmatch("[^\r\n]+") do
      local rest = line:match("^hp: (.*)$")
      if rest then
         local s, addr, port = rest:match("^slot (%S+) addr (%S+) port (%S+)")
         if s then r.slots[s] = { addr = addr, port = port } end
         if rest:match("^ready") then r.ready = true end
         if rest == "done" then r.done = true end
         local t = rest:match("^trouble (.*)$")
         if t then r.trouble[#r.trouble + 1] = t end
         local n, bdf, id, drv
         s, n, bdf, id, drv = rest:match("^added (%S+) (%d+) (%S+) (%S+) (%S+)$")
         if s then
            cur[s] = add(s, tonumber(n))
            cur[s].bdf, cur[s].id, cur[s].driver = bdf, id, drv
         end
         local a, p, l
         s, a, p, l = rest:match("^state (%S+) adapter (%S+) power (%S+) link (%S+)$")
         if s and cur[s] then cur[s].adapter, cur[s].power, cur[s].link = a, p, l end
         local present, linkup
         s, present, linkup = rest:match("^pciehp (%S+) present (%d+) linkup (%d+)$")
         if s and cur[s] then cur[s].present, cur[s].linkup = tonumber(present), tonumber(linkup) end
         local sec, verdict
         s, sec, verdict = rest:match("^nvme%-read (%S+) (%d+) (%a+)$")
         if s and cur[s] then cur[s].reads[tonumber(sec)] = verdict end
         local ifc, mac, carrier
         s, ifc, mac, carrier = rest:match("^net (%S+) (%S+) (%S+) carrier (%S+)$")
         if s and cur[s] then cur[s].net = { iface = ifc, mac = mac, carrier = carrier } end
         local count
         s, count = rest:match("^irq (%S+) %S+ (%d+)$")
         if s and cur[s] then cur[s].irqs = cur[s].irqs + tonumber(count) end
         s, n = rest:match("^checked (%S+) (%d+)$")
         if s then add(s, tonumber(n)).checked = true end
         local bound, left
         s, n, bound, left, a, p = rest:match(
            "^removed (%S+) (%d+) %S+ bound (%S+) left (%S+) adapter (%S+) power (%S+) link %S+$")
         if s then add(s, tonumber(n)).removed = { bound = bound, left = left, adapter = a, power = p } end
      end
   end
   return r
end

return M
