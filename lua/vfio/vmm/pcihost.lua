---
-- The PCI host bridge of a VM: vfio.core.pcihost (csrc/kvm/pcihost.c) decodes
-- configuration mechanism #1 (ports CF8/CFC-CFF) and ECAM for the C-backed functions
-- attached to it (traps, config spaces), inside the vCPU run loop. This module adds what
-- the VMM builds around it: emulated config spaces, the host bridge function, and the
-- wiring into a VM (handled ranges, or a Lua run handler for tracing). The Lua decoder
-- that spec/host/pcihost_spec.lua compares it with is spec/support/pcihost_oracle.lua.
-- @module vfio.vmm.pcihost
local core = require "vfio.core"

local M = {}

---
-- An emulated configuration space (vfio.core.cfgspace: bytes plus a guest-writable
-- mask, config access in C so it also attaches to the C host bridge).
-- M.config_space{vendor=, device=, class=0xCCSSPP, revision=, header_type=,
--                subsystem_vendor=, subsystem=, size = 256|4096}
function M.config_space(spec)
   local c = core.cfgspace(spec.size or 256)
   c:set(0, 2, (assert(spec.vendor, "vendor required")))
   c:set(2, 2, (assert(spec.device, "device required")))
   c:set(4, 2, 0, 0x0546) -- command: memory, bus master, parity, SERR, INTx disable
   c:set(8, 4, (spec.class or 0) << 8 | (spec.revision or 0))
   c:set(0x0c, 4, (spec.header_type or 0) << 16)
   c:set(0x2c, 4, (spec.subsystem or 0) << 16 | (spec.subsystem_vendor or 0))
   return c
end

---
-- The host bridge function most guests expect at 00:00.0.
function M.host_bridge()
   return M.config_space { vendor = 0x1b36, device = 0x0008, class = 0x060000 }
end

---
-- M.new{ecam_base = addr, ecam_buses = n} -> host (vfio.core.pcihost). Functions must be
-- C-backed: cfgspaces (M.config_space), traps and root ports. ECAM covers buses 0 to
-- n - 1 (n = 1 when not given): a board with root ports passes every bus it numbers
-- (address_map.ECAM_BUSES), so ECAM reaches the functions behind them as CF8/CFC does.
-- @function new
M.new = core.pcihost

---
-- M.handler(host [, fallback [, on_event]]) -> a function for vcpu:run that answers
-- configuration accesses through host:access (the C decode), calls on_event(exit) after
-- a write that raised an event, and passes everything else to fallback (whose result is
-- returned as is). For a VM whose host bridge is not installed as handled ranges.
function M.handler(host, fallback, on_event)
   return function(x)
      local handled, v, ev = host:access(x)
      if handled then
         if ev and on_event then on_event(x) end
         return v
      end
      if fallback then return fallback(x) end
   end
end

---
-- M.install(vm, c_host) -> range ids: CF8-CFF and the ECAM window go to the C host.
function M.install(vm, host)
   local ids = {}
   for _, r in ipairs(host:ranges()) do
      local id, err, errno = vm:add_range(r[1], r[2], r[3], host)
      if not id then
         for _, done in ipairs(ids) do vm:remove_range(done) end
         return nil, err, errno
      end
      ids[#ids + 1] = id
   end
   return ids
end

return M
