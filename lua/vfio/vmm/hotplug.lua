---
-- PCIe native hot-plug: the root ports on bus 0 (vfio.core.rootport, csrc/kvm/rootport.c)
-- and each port's slot as the VMM drives it. The board (vfio.vmm.board) makes the ports,
-- gives each bridge windows from its BAR allocator and carries out the actions a port
-- returns; this module says what a port's events and the VMM's requests mean:
--
--   empty --device_add--> adding --guest powers the slot on--> on
--   on --device_del--> removing --guest powers the slot off--> release --> empty
--                               \--no answer by the deadline--> surprise removal, release
--
-- A hot-add is presence, then the attention button (Linux's pciehp enables link and button
-- events, not presence, on a slot with a button: it powers the slot on after its 5 s grace
-- and scans); a removal is the button, after which pciehp unbinds the drivers and powers
-- the slot off, which is when the device may be released. A guest that powers an occupied
-- slot off by itself gives the device up the same way.
--
-- Actions a port returns, for the board to carry out: `{"msi", addr, data}` (send it with
-- vm:signal_msi), `{"intx", level}` (the port's INTx line), `{"release", device}` (take
-- the device out of the machine and give it back to the host).
-- @module vfio.vmm.hotplug
local core = require "vfio.core"
local layout = require "vfio.vmm.layout"

local M = {}

local MiB = 1 << 20

-- The bridge windows firmware leaves an empty hot-plug port, so that a device hot-added
-- later fits: 32-bit non-prefetchable memory (the nvme's and e1000e's BARs) and 64-bit
-- prefetchable memory above 4 GiB. No I/O window: the I/O space is 16 KiB in all, four
-- ports would take it from the devices on bus 0, and the drivers this VMM serves do not
-- need their I/O BARs (Linux leaves them unassigned).
M.WINDOWS = { mem = 2 * MiB, pref = 2 * MiB, io = 0 }

local function pow2ceil(n)
   local p = 1
   while p < n do p = p << 1 end
   return p
end

---
-- The windows a port needs for a device seated behind it at boot (`bars`: trap:bars()
-- form): at least M.WINDOWS, grown to the device's memory BARs (each window a power of
-- two of at least 1 MiB, the bridge granule), and 4 KiB of I/O when it has I/O BARs.
function M.windows_for(bars)
   local need = { mmio32 = 0, mmio64 = 0, io = 0 }
   for i = 0, 6 do
      local b = bars[i]
      if b and b.size > 0 and not b.upper then
         local w = M.bridge_policy(b)[1]
         need[w] = need[w] + b.size
      end
   end
   return { mem = math.max(M.WINDOWS.mem, pow2ceil(need.mmio32)),
            pref = math.max(M.WINDOWS.pref, pow2ceil(need.mmio64)),
            io = need.io > 0 and 0x1000 or 0 }
end

-- Seconds a guest has to power a slot off after the attention button before the device
-- is removed by surprise: pciehp waits 5 s for a second press that cancels, then unbinds.
M.REMOVE_TIMEOUT = 20

-- Ports sit on bus 0 from this slot on (devices take the slots from 4 up).
M.FIRST_SLOT = 0x10

---
-- Where a BAR of a device behind a port goes: I/O in the I/O window, 64-bit prefetchable
-- memory in the prefetchable window (else the memory window), the rest (32-bit, or not
-- prefetchable, and the ROM) in the non-prefetchable memory window, which is below 4 GiB:
-- a bridge forwards only prefetchable memory through its 64-bit window.
function M.bridge_policy(bar)
   if bar.io then return { "io" } end
   if bar.is64 and bar.prefetch then return { "mmio64", "mmio32" } end
   return { "mmio32" }
end

local Port = {}
Port.__index = Port

---
-- M.port{index=, slot=, secondary=, windows = {mmio32 = {base=, limit=}, mmio64 = ...,
-- io = ...} (absent: closed), intx_line=, now = fn} -> a port (not yet on a host bridge):
-- its root port function (port.rootport), an allocator over its windows for the BARs of a
-- device seated behind it at boot (port.alloc), its slot empty.
function M.port(o)
   local function win(w) return w and { base = w.base, size = w.limit - w.base + 1 } or nil end
   local w = o.windows or {}
   local rp = core.rootport { port = o.index + 1, slot = o.index + 1, secondary = o.secondary,
                              subordinate = o.secondary, mem = win(w.mmio32),
                              pref = win(w.mmio64), io = win(w.io) }
   local alloc_windows = {}
   for name, v in pairs(w) do alloc_windows[name] = { base = v.base, limit = v.limit } end
   return setmetatable({
      index = o.index, slot = o.slot, secondary = o.secondary, windows = w,
      intx_line = o.intx_line, rootport = rp, state = "empty",
      alloc = layout.new { windows = alloc_windows, policy = M.bridge_policy },
   }, Port)
end

--- A root port and its slot (vfio.vmm.hotplug.port).
-- @type Port

---
-- The BARs of `bars` (trap:bars() form) this port's windows can take: all of them but
-- the I/O BARs when the port has no I/O window (left unassigned, decoding off).
function Port:placeable(bars)
   local out, dropped = {}, false
   for i = 0, 6 do
      local b = bars[i]
      if b and b.io and not self.windows.io then
         dropped = true
      else
         out[i] = b
      end
   end
   return out, dropped
end

---
-- Put a device's config function behind the port: at boot (there from power-on: powered,
-- link up), or hot (presence, then the attention button). Returns true, or nil, message.
function Port:insert(device, fn, at_boot)
   if self.device then return nil, ("root port %d is occupied"):format(self.index) end
   local ok, err = self.rootport:insert(fn, at_boot)
   if not ok then return nil, err end
   self.device = device
   if at_boot then
      self.state = "on"
   else
      self.state = "adding"
      self.rootport:press()
   end
   return true
end

---
-- Ask the guest to give the device up (the attention button); past `deadline` (a vm.now()
-- time) the device is removed by surprise. Returns true, or nil, message.
function Port:request_removal(deadline)
   if not self.device then return nil, ("root port %d is empty"):format(self.index) end
   if self.state == "removing" then return true end
   self.state, self.deadline = "removing", deadline
   self.rootport:press()
   return true
end

---
-- The device leaves the port (after release): presence and link lost.
function Port:take_out()
   if self.device then self.rootport:remove() end
   self.device, self.state, self.deadline = nil, "empty", nil
end

---
-- The actions the port's events and the clock ask for (`now`: vm.now()).
function Port:actions(now)
   local out = {}
   for _, e in ipairs(self.rootport:events()) do
      if e == "msi" then
         local addr, data = self.rootport:msi()
         if addr then out[#out + 1] = { "msi", addr, data } end
      elseif e == "intx" then
         out[#out + 1] = { "intx", self.rootport:intx() }
      elseif e == "power_on" and self.state == "adding" then
         self.state = "on"
      elseif e == "power_off" and self.device then
         out[#out + 1] = { "release", self.device }
      end
   end
   if self.state == "removing" and self.deadline and now and now >= self.deadline
      and self.device then
      self.deadline = nil
      out[#out + 1] = { "release", self.device, surprise = true }
   end
   return out
end

---
-- What `--plan` and the REPL show of the port.
function Port:describe()
   local st = self.rootport:state()
   local function w(x)
      return x and ("%#x-%#x"):format(x.base, x.limit) or "closed"
   end
   return ("root port 00:%02x.0 (slot %d, bus %d): %s, windows mem %s pref %s io %s"):format(
      self.slot, self.index + 1, self.secondary,
      self.state .. (st.powered and ", powered" or ""), w(self.windows.mmio32),
      w(self.windows.mmio64), w(self.windows.io))
end

--- Functions of the module.
-- @section functions

---
-- hotplug.add(board, name [, {port = index, quirks =, no_mmap =, trace =,
-- on_release = fn(name, surprise)}]) -> port, or nil, message, errno: what a device_add
-- request does: open `name` (a PCI address, or a recording spec/fixtures/NAME.lua),
-- make it an assigned device and hot-add it into an empty root port of `board`
-- (board:device_add). The board closes it when it releases it, and what it was opened
-- from is closed then too.
function M.add(board, name, opts)
   opts = opts or {}
   local assigned = require "vfio.vmm.assigned"
   local dev, err, errno
   if type(name) == "string" and name:match("%.lua$") then
      dev = name
   else
      local ok
      ok, dev, err, errno = pcall(require("vfio").open, name)
      if not ok then return nil, tostring(dev) end
      if not dev then return nil, err, errno end
   end
   local function close_dev() if type(dev) == "table" then dev:close() end end
   local d
   d, err, errno = assigned.new(dev, { quirks = opts.quirks, no_mmap = opts.no_mmap,
                                      trace = opts.trace })
   if not d then
      close_dev()
      return nil, err, errno
   end
   local p
   local function released(_, surprise)
      close_dev()
      if opts.on_release then opts.on_release(name, surprise) end
   end
   p, err, errno = board:device_add(d, { port = opts.port, name = name, on_release = released })
   if not p then
      d:close()
      close_dev()
      return nil, err, errno
   end
   return p
end

---
-- hotplug.del(board, name [, {timeout = seconds}]) -> true, or nil, message: what a
-- device_del request does: ask the guest to give back the device added as `name` (or
-- passed through from that PCI address), board:device_del.
function M.del(board, name, opts)
   local d = board:find_device(name)
   if not d then return nil, ("no device %s on this board"):format(tostring(name)) end
   return board:device_del(d, opts)
end

return M
