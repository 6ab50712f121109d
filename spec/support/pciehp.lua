-- A guest's side of PCIe native hot-plug, played on a board (vfio.vmm.board with root
-- ports) as Linux's pciehp plays it: config accesses through the board's C host bridge,
-- by configuration mechanism #1 (CF8/CFC) or ECAM (memory-mapped, as a guest told of it
-- by an MCFG configures). Shared by spec/host/hotplug_spec.lua and spec/host/control_spec.lua.
local address_map = require "vfio.vmm.address_map"

local M = {}

local EXP = 0x40
local SLTCTL, SLTSTA = EXP + 0x18, EXP + 0x1a
M.SLTCTL, M.SLTSTA = SLTCTL, SLTSTA

-- A guest's config access through mechanism #1.
function M.cfg(b, bus, dev, off, size, value)
   b.host:access { space = "pio", port = 0xcf8, size = 4, write = true,
                   value = 0x80000000 | bus << 16 | dev << 11 | (off & 0xfc) }
   local _, v = b.host:access { space = "pio", port = 0xcfc + (off & 3), size = size,
                                write = value ~= nil, value = value }
   return v
end

-- Where ECAM puts register `off` of function bus:dev.fn.
function M.ecam_addr(bus, dev, fn, off)
   return address_map.ECAM_START + (bus << 20 | dev << 15 | fn << 12 | off)
end

-- A guest's config access through ECAM, as M.cfg (function 0); the address must be in
-- the board's ECAM window.
function M.ecam(b, bus, dev, off, size, value)
   local handled, v = b.host:access { space = "mmio", addr = M.ecam_addr(bus, dev, 0, off), size = size,
                                      write = value ~= nil, value = value }
   assert(handled, ("%02x:%02x.0 is past the board's ECAM window"):format(bus, dev))
   return v
end

-- What pciehp does on the port at slot `slot`: probe (MSI, notifications), then the
-- commands its state machine issues, each followed by its interrupt handler clearing
-- Slot Status; its config accesses through `access` (M.cfg, the default, or M.ecam).
function M.guest(b, slot, access)
   local cfg = access or M.cfg
   local g = {}
   local function isr()
      local st = cfg(b, 0, slot, SLTSTA, 2) & 0x011f
      if st ~= 0 then cfg(b, 0, slot, SLTSTA, 2, st) end
   end
   function g.cmd(v, mask)
      cfg(b, 0, slot, SLTCTL, 2, (cfg(b, 0, slot, SLTCTL, 2) & ~mask) | (v & mask))
      b:attend_ports()   -- what the board does after the config stop (board:sync)
      isr()
   end
   function g.probe()
      cfg(b, 0, slot, 0x84, 4, 0xfee00000)
      cfg(b, 0, slot, 0x8c, 2, 0x4041)
      cfg(b, 0, slot, 0x82, 2, 1)
      cfg(b, 0, slot, 0x04, 2, 0x0007)
      g.cmd(0x1031, 0x103f)   -- DLLSCE, ABPE, HPIE, CCIE
   end
   function g.power_on() g.cmd(0x0200, 0x0700) end    -- power on, indicator blinking
   function g.power_off() g.cmd(0x0400, 0x0400) end
   g.isr = isr
   return g
end

return M
