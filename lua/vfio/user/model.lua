---
-- PCI device models written in Lua, behind the "served device" interface a vfio-user
-- server calls.
--
-- `model.new(description)` turns a description (data: IDs, class, BARs, capabilities,
-- registers in the style of `vfio.regs`, with optional read and write hooks) into a
-- served device: a PCI function whose config space behaves like a real device's as the
-- kernel's vfio_pci_config.c shows it to a user (read-only IDs, BAR sizing, writable
-- command bits, W1C status, a capability chain, MSI and MSI-X control as the PCI spec
-- allows), whose BARs answer through the registers, and whose interrupts and DMA go
-- through whatever the server gives it. No socket and no protocol here: the server
-- (vfio.user, later) decodes messages and calls these methods.
--
-- The served-device interface (what a server calls; every argument that comes from the
-- peer is checked, and a bad one is answered `nil, message, errno`, never raised):
--
--    dev:info()                     {flags, num_regions = 9, num_irqs = 5, pci, reset}
--    dev:region_info(index)         {index, size, flags, read, write, mmap}
--    dev:region_read(index, off, n) bytes
--    dev:region_write(index, off, bytes)            true
--    dev:irq_info(index)            {index, count, flags, eventfd, maskable, automasked, noresize}
--    dev:set_irqs(index, start, count, action, data) true
--    dev:dma_map{iova, size, readable, writable, memory}   true
--    dev:dma_unmap{iova, size} or {all = true}     bytes unmapped
--    dev:reset()                    true
--
-- Region indices are VFIO's PCI ones (BAR0-5 = 0-5, ROM 6, CONFIG 7, VGA 8); IRQ indices
-- too (INTX 0, MSI 1, MSIX 2, ERR 3, REQ 4); the flags are the VFIO uAPI's numbers
-- (M.DEVICE_FLAGS, M.REGION_FLAGS, M.IRQ_FLAGS). `set_irqs` takes VFIO_DEVICE_SET_IRQS
-- apart: action "trigger", "mask" or "unmask"; data nil (DATA_NONE), a list of count
-- triggers (DATA_EVENTFD: a function, or an object with a :signal() method, standing for
-- an eventfd; false for fd -1) or `{bool = true, b1, b2, ...}` (DATA_BOOL). A trigger is
-- called once per interrupt, as an eventfd is written once.
--
-- What the model's own code calls (its hooks receive the device):
--
--    dev:raise(vector)        an interrupt: MSI-X vector, else MSI vector, else INTx
--    dev:lower()              INTx deasserted (a level: raise holds it until lower)
--    dev:set_level(on, v)     a level source: raise on a rising edge, lower when off
--    dev:dma_read(iova, n)    bytes from the client's memory, or nil, message, errno
--    dev:dma_write(iova, s)   true, or nil, message, errno
--    dev:register(bar, name [, i])   a register's slot: .value is its stored value
--    dev:config(off, width)   a config register's current value
--    dev:bank(bar)            vfio.regs bank over region_read/write (a driver's view)
--
-- Interrupts follow the device as a host kernel drives it: SET_IRQS with triggers on MSI
-- or MSI-X is what the host's own MSI setup does to a real function (it enables the
-- capability and unmasks the vectors it wired; removing a trigger masks its vector), so
-- a client that emulates the MSI-X table itself (QEMU does) still gets its interrupts,
-- and one that writes the table through the BAR gets the PCI spec's masking. A vector
-- raised while masked (function mask, entry mask, MSI mask bit, or no trigger yet) is
-- pending (the PBA bit, the MSI pending bit) and sent when unmasked. INTx is a level,
-- shown in the status register's interrupt bit, gated by the command register's INTx
-- disable and by MSI/MSI-X being on, and VFIO-automasked: signalled once per rising
-- edge, again on unmask while still asserted.
--
-- DMA: the server registers each of the client's DMA_MAP ranges with a `memory` object
-- (`memory:read(offset, n)`, `memory:write(offset, bytes)`, offsets from the start of
-- the range: mapped fds or DMA_READ/WRITE messages, the server decides). The device is
-- its own IOMMU: an access needs bus mastering on and a mapped range with the right
-- permission; a miss sets Received Master Abort in the status register, as a real
-- device's failed request does.
--
-- Errors: a description or a call from model code that is wrong raises; what the peer
-- sends is refused with `nil, message, errno` (EINVAL, E2BIG, ENOTTY, EEXIST, ENOENT, ENOSPC),
-- a BAR access while its decoding is off or the function in D3hot is EIO, and an error
-- raised by a model hook during a peer's access is caught and answered EIO (the message
-- kept in dev.last_error), so a broken model never takes the server down.
-- @module vfio.user.model
local regs = require "vfio.regs"
local errors = require "vfio.errors"

local M = {}

local fmt = string.format
local fail = errors.fail

local EPERM, ENOENT, EIO, E2BIG, EFAULT, EEXIST, EINVAL, ENOTTY, ENOSPC = 1, 2, 5, 7, 14, 17, 22, 25, 28

--- VFIO PCI region indices.
M.REGION = { BAR0 = 0, BAR1 = 1, BAR2 = 2, BAR3 = 3, BAR4 = 4, BAR5 = 5, ROM = 6, CONFIG = 7,
             VGA = 8, COUNT = 9 }
--- VFIO PCI interrupt indices.
M.IRQ = { INTX = 0, MSI = 1, MSIX = 2, ERR = 3, REQ = 4, COUNT = 5 }
--- VFIO_DEVICE_FLAGS_* of device info.
M.DEVICE_FLAGS = { RESET = 1, PCI = 2 }
--- VFIO_REGION_INFO_FLAG_* of region info.
M.REGION_FLAGS = { READ = 1, WRITE = 2, MMAP = 4 }
--- VFIO_IRQ_INFO_* of interrupt info.
M.IRQ_FLAGS = { EVENTFD = 1, MASKABLE = 2, AUTOMASKED = 4, NORESIZE = 8 }
--- The most DMA ranges a device keeps (vfio-user's max_dma_maps default).
M.MAX_DMA_MAPS = 65535
--- The largest region access answered (vfio-user's max_data_xfer_size default): a peer
-- cannot make the model build a string the size of a huge BAR.
M.MAX_ACCESS = 1 << 20

local REGION_NAMES = { [0] = "BAR0", "BAR1", "BAR2", "BAR3", "BAR4", "BAR5", "ROM", "config", "VGA" }
local IRQ_NAMES = { [0] = "INTx", "MSI", "MSI-X", "ERR", "REQ" }
local ACTIONS = { trigger = true, mask = true, unmask = true }

-- Config space registers and bits (PCI Local Bus 3.0, PCI Express Base).
local CMD_IO, CMD_MEM, CMD_MASTER, CMD_PARITY, CMD_SERR, CMD_INTX_DISABLE =
   0x1, 0x2, 0x4, 0x40, 0x100, 0x400
local STATUS_INTX, STATUS_CAP_LIST = 0x8, 0x10
local STATUS_W1C = 0xf900       -- parity, target/master aborts, SERR, detected parity
local STATUS_RECEIVED_MASTER_ABORT = 0x2000
local CAP_PM, CAP_MSI, CAP_EXP, CAP_MSIX = 0x01, 0x05, 0x10, 0x11
local EXP_TYPES = { endpoint = 0x0, legacy = 0x1, integrated = 0x9 }
local MPS_CODES = { [128] = 0, [256] = 1, [512] = 2, [1024] = 3, [2048] = 4, [4096] = 5 }

local function mask_of(bits) return bits >= 64 and -1 or (1 << bits) - 1 end
local function is_int(v) return math.type(v) == "integer" end
local function is_pow2(v) return is_int(v) and v > 0 and v & (v - 1) == 0 end
local function align4(v) return (v + 3) & ~3 end

-- Little-endian bytes of v, `width` of them (1..8).
local function le_bytes(v, width) return string.pack("<i8", v):sub(1, width) end

local function callable(f)
   if type(f) == "function" then return true end
   local mt = getmetatable(f)
   return type(mt) == "table" and type(mt.__call) == "function"
end

-- A trigger from the server: a function, or an object whose :signal() delivers.
local function is_trigger(t)
   if callable(t) then return true end
   if type(t) ~= "table" and type(t) ~= "userdata" then return false end
   local ok, s = pcall(function() return t.signal end)
   return ok and callable(s)
end

local function signal(t)
   if callable(t) then t() else t:signal() end
end

-- The device's behaviours after a change, defined with the interrupts below; config
-- space's write handlers call them.
local intx_update, msi_deliver, msix_deliver, do_reset, reset_state

---------------------------------------------------------------- description checks

local function derr(fmtstr, ...) error("model.new: " .. fmtstr:format(...), 4) end

local function want_int(v, what, lo, hi)
   if not is_int(v) or (lo and v < lo) or (hi and v > hi) then
      derr("%s must be an integer%s, got %s", what,
           lo and hi and fmt(" in 0x%x..0x%x", lo, hi) or "", tostring(v))
   end
   return v
end

local BAR_KINDS = { io = true, mem32 = true, mem64 = true }

local function check_bars(desc)
   local bars, used = {}, {}
   for i, b in ipairs(desc.bars or {}) do
      if type(b) ~= "table" then derr("bars[%d] is not a table", i) end
      local idx = want_int(b.index, fmt("bars[%d].index", i), 0, 5)
      local where = "BAR" .. idx
      if used[idx] then derr("%s is described twice (or is the upper half of a 64-bit BAR)", where) end
      if not BAR_KINDS[b.kind] then derr("%s: kind must be io, mem32 or mem64, got %s", where, tostring(b.kind)) end
      if not is_pow2(b.size) then derr("%s: size must be a power of two, got %s", where, tostring(b.size)) end
      if b.kind == "io" then
         if b.size < 4 or b.size > 256 then derr("%s: an I/O BAR is 4 to 256 bytes, got %d", where, b.size) end
         if b.prefetchable then derr("%s: an I/O BAR cannot be prefetchable", where) end
      elseif b.kind == "mem32" then
         if b.size < 16 or b.size > 1 << 31 then
            derr("%s: a 32-bit BAR is 16 bytes to 2 GiB, got %d", where, b.size)
         end
      else
         if idx == 5 then derr("BAR5 cannot be 64-bit: it has no upper half") end
         if b.size < 16 or b.size > 1 << 62 then
            derr("%s: a 64-bit BAR is 16 bytes to 4 EiB, got %d", where, b.size)
         end
         if used[idx + 1] then derr("%s is 64-bit: BAR%d is its upper half", where, idx + 1) end
         used[idx + 1] = "upper"
      end
      used[idx] = true
      for k in pairs { read = 1, write = 1 } do
         if b[k] ~= nil and not callable(b[k]) then derr("%s.%s must be a function", where, k) end
      end
      bars[idx] = { index = idx, size = b.size, kind = b.kind, io = b.kind == "io",
                    prefetchable = b.prefetchable and true or false, read = b.read, write = b.write,
                    spec = b, items = {} }
   end
   for idx, u in pairs(used) do
      if u == "upper" and bars[idx] then derr("BAR%d is the upper half of BAR%d", idx, idx - 1) end
   end
   return bars
end

-- Register slots of a BAR from a vfio.regs-style list; hooks and reset values by name.
local function bar_slots(bar)
   local entries = bar.spec.registers
   if entries == nil then return end
   local d = regs.describe { name = "BAR" .. bar.index, registers = entries }
   local raw = {}
   for _, e in ipairs(entries) do raw[e.name or e[1]] = e end
   bar.desc, bar.byname = d, {}
   for _, r in ipairs(d.list) do
      local e = raw[r.name]
      for _, k in ipairs { "read", "write" } do
         if e[k] ~= nil and not callable(e[k]) then
            derr("BAR%d register %s: %s must be a function", bar.index, r.name, k)
         end
      end
      if e.reset ~= nil and not is_int(e.reset) then
         derr("BAR%d register %s: reset must be an integer", bar.index, r.name)
      end
      local n = r.count or 1
      local last = r.offset + (n - 1) * (r.stride or r.width) + r.width
      if last > bar.size then
         derr("BAR%d register %s (0x%x..0x%x) is past the BAR's end (%d bytes)", bar.index, r.name, r.offset,
              last - 1, bar.size)
      end
      local list = {}
      for i = 0, n - 1 do
         local s = { kind = "register", name = r.name, index = r.count and i or nil,
                     offset = r.offset + i * (r.stride or r.width), width = r.width, access = r.access,
                     fields = r.fields, read = e.read, write = e.write,
                     reset = (e.reset or 0) & mask_of(r.width * 8) }
         s.value, s.len = s.reset, s.width
         list[#list + 1] = s
         bar.items[#bar.items + 1] = s
      end
      bar.byname[r.name] = r.count and list or list[1]
   end
end

---------------------------------------------------------------- the class

local Device = {}
Device.__index = Device
Device.__name = "vfio.user.model"

-- Config space as bytes with per-byte write and write-1-to-clear masks: the policy is
-- data (like the kernel's perm_bits), the handlers after a write are few and named.
local function cfg_put(dev, off, width, value, wmask, w1c)
   for i = 0, width - 1 do
      local sh = 8 * i
      dev._cfg[off + i] = (value >> sh) & 0xff
      dev._wmask[off + i] = ((wmask or 0) >> sh) & 0xff
      dev._w1c[off + i] = ((w1c or 0) >> sh) & 0xff
   end
end

local function cfg_get(dev, off, width)
   local v = 0
   for i = width - 1, 0, -1 do v = v << 8 | (dev._cfg[off + i] or 0) end
   return v
end

-- Change stored bits without the masks (the device's own updates: status, pending bits).
local function cfg_set_bits(dev, off, width, mask, on)
   local v = cfg_get(dev, off, width)
   v = on and (v | mask) or (v & ~mask)
   for i = 0, width - 1 do dev._cfg[off + i] = (v >> (8 * i)) & 0xff end
end

local function watch(dev, off, len, fn) dev._watch[#dev._watch + 1] = { lo = off, hi = off + len, fn = fn } end

local function build_header(dev, desc, bars, express)
   local have_io, have_mem = false, false
   for _, b in pairs(bars) do
      if b.io then have_io = true else have_mem = true end
   end
   cfg_put(dev, 0x00, 2, desc.vendor)
   cfg_put(dev, 0x02, 2, desc.device)
   local cmd_w = CMD_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE
      | (have_io and CMD_IO or 0) | (have_mem and CMD_MEM or 0)
   cfg_put(dev, 0x04, 2, 0, cmd_w)
   cfg_put(dev, 0x06, 2, 0, 0, STATUS_W1C)
   cfg_put(dev, 0x08, 1, desc.revision or 0)
   cfg_put(dev, 0x09, 3, desc.class)
   cfg_put(dev, 0x0c, 1, 0, 0xff)                       -- cache line size: scratch
   cfg_put(dev, 0x0d, 1, 0, express and 0 or 0xff)      -- latency timer: RO 0 on PCIe
   for idx = 0, 5 do
      local b = bars[idx]
      local off = 0x10 + 4 * idx
      if b and b.io then
         cfg_put(dev, off, 4, 0x1, ~(b.size - 1) & 0xfffffffc)
      elseif b then
         local typ = (b.kind == "mem64" and 0x4 or 0) | (b.prefetchable and 0x8 or 0)
         cfg_put(dev, off, 4, typ, ~(b.size - 1) & 0xfffffff0)
         if b.kind == "mem64" then cfg_put(dev, off + 4, 4, 0, (~(b.size - 1) >> 32) & 0xffffffff) end
      end
   end
   cfg_put(dev, 0x2c, 2, desc.subsystem_vendor or 0)
   cfg_put(dev, 0x2e, 2, desc.subsystem or 0)
   cfg_put(dev, 0x3c, 1, 0, 0xff)                       -- interrupt line: the OS's scratch
   cfg_put(dev, 0x3d, 1, dev._pin)
   watch(dev, 0x04, 2, function(d) intx_update(d) end)
end

---------------------------------------------------------------- capabilities

local CAP_BUILDERS = {}

function CAP_BUILDERS.pm(dev, _, off)
   cfg_put(dev, off + 2, 2, 0x0003)                     -- PMC: version 3, D0 and D3hot only
   -- PMCSR: the power state is writable; NoSoftReset set, so D3hot -> D0 keeps state.
   cfg_put(dev, off + 4, 2, 0x0008, 0x0003)
   dev._pm = { off = off }
   dev._pm.state = 0
   watch(dev, off + 4, 1, function(d)
      -- D1 and D2 are not supported: such a write leaves the state as it was
      local st = cfg_get(d, off + 4, 1) & 3
      if st == 1 or st == 2 then
         d._cfg[off + 4] = d._cfg[off + 4] & ~3 | d._pm.state
         st = d._pm.state
      end
      d._pm.state = st
   end)
   return 8
end

function CAP_BUILDERS.msi(dev, c, off)
   local n = c.vectors or 1
   if not is_pow2(n) or n > 32 then derr("msi: vectors must be 1, 2, 4, 8, 16 or 32, got %s", tostring(n)) end
   local is64, maskable = c.is64 ~= false, c.maskable and true or false
   local mmc = 0
   while 1 << mmc < n do mmc = mmc + 1 end
   local ctrl = mmc << 1 | (is64 and 0x80 or 0) | (maskable and 0x100 or 0)
   cfg_put(dev, off + 2, 2, ctrl, 0x0071)               -- enable and multiple-message enable
   cfg_put(dev, off + 4, 4, 0, 0xfffffffc)
   local data = off + 8
   if is64 then cfg_put(dev, off + 8, 4, 0, 0xffffffff) data = off + 12 end
   cfg_put(dev, data, 2, 0, 0xffff)
   local m = { off = off, vectors = n, mmc = mmc, is64 = is64, maskable = maskable }
   local len = data + 2 - off
   if maskable then
      m.mask_off, m.pending_off = data + 4, data + 8
      cfg_put(dev, m.mask_off, 4, 0, mask_of(n))
      cfg_put(dev, m.pending_off, 4, 0)
      len = data + 12 - off
      watch(dev, m.mask_off, 4, function(d) msi_deliver(d) end)
   end
   dev._msi = m
   watch(dev, off + 2, 2, function(d)
      -- more vectors than the function has are clamped, as the kernel does
      local c2 = cfg_get(d, off + 2, 2)
      if (c2 >> 4) & 7 > mmc then
         for i = 0, 1 do d._cfg[off + 2 + i] = ((c2 & ~0x70 | mmc << 4) >> (8 * i)) & 0xff end
      end
      intx_update(d)
      msi_deliver(d)
   end)
   return len
end

function CAP_BUILDERS.msix(dev, c, off, bars)
   local n = c.table_size
   if not is_int(n) or n < 1 or n > 2048 then derr("msix: table_size must be 1..2048, got %s", tostring(n)) end
   local tb, to, pb, po = c.table_bar, c.table_offset or 0, c.pba_bar or c.table_bar, c.pba_offset
   for _, p in ipairs { { tb, "table_bar" }, { pb, "pba_bar" } } do
      local b = bars[p[1]]
      if not b or b.io then derr("msix: %s must name a memory BAR of this device, got %s", p[2], tostring(p[1])) end
   end
   if po == nil then po = (to + 16 * n + 7) & ~7 end
   local tlen, plen = 16 * n, 8 * ((n + 63) // 64)
   for _, p in ipairs { { to, tlen, tb, "table" }, { po, plen, pb, "PBA" } } do
      if not is_int(p[1]) or p[1] % 8 ~= 0 or p[1] < 0 or p[1] + p[2] > bars[p[3]].size then
         derr("msix: the %s (offset %s, %d bytes) must be 8-byte aligned inside BAR%d", p[4], tostring(p[1]),
              p[2], p[3])
      end
   end
   if tb == pb and to < po + plen and po < to + tlen then derr("msix: the table and the PBA overlap") end
   cfg_put(dev, off + 2, 2, n - 1, 0xc000)              -- function mask and enable
   cfg_put(dev, off + 4, 4, to | tb)
   cfg_put(dev, off + 8, 4, po | pb)
   local x = { off = off, size = n, table_bar = tb, table_offset = to, pba_bar = pb, pba_offset = po,
               entries = {}, pending = {} }
   dev._msix = x
   bars[tb].items[#bars[tb].items + 1] = { kind = "msix_table", offset = to, len = tlen }
   bars[pb].items[#bars[pb].items + 1] = { kind = "msix_pba", offset = po, len = plen }
   watch(dev, off + 2, 2, function(d)
      intx_update(d)
      msix_deliver(d)
   end)
   return 12
end

function CAP_BUILDERS.express(dev, c, off)
   local typ = EXP_TYPES[c.type or "endpoint"]
   if not typ then derr("express: type must be endpoint, legacy or integrated, got %s", tostring(c.type)) end
   local mps = MPS_CODES[c.max_payload or 128]
   if not mps then derr("express: max_payload must be 128..4096 bytes, a power of two") end
   local speed, width = c.link_speed or 1, c.link_width or 1
   want_int(speed, "express: link_speed (1 = 2.5GT/s ... 6 = 64GT/s)", 1, 6)
   want_int(width, "express: link_width", 1, 32)
   local link = typ ~= EXP_TYPES.integrated
   cfg_put(dev, off + 2, 2, 2 | typ << 4)               -- version 2
   -- DevCap: payload, role-based error reporting, FLR when asked for
   cfg_put(dev, off + 4, 4, mps | 0x8000 | (c.flr and 1 << 28 or 0))
   -- DevCtl: error reporting enables, relaxed ordering, payload, extended tags, no snoop,
   -- read request size writable; reset value as the spec gives it (RO, no snoop, 512B)
   cfg_put(dev, off + 8, 2, 0x2810, 0x79ff)
   cfg_put(dev, off + 0x0a, 2, 0, 0, 0x000f)            -- DevSta: error bits W1C
   if link then
      cfg_put(dev, off + 0x0c, 4, speed | width << 4)
      cfg_put(dev, off + 0x10, 2, 0, 0x02cb)            -- LnkCtl: ASPM, RCB, clock bits
      cfg_put(dev, off + 0x12, 2, 0x1000 | speed | width << 4)
      cfg_put(dev, off + 0x2c, 4, ((1 << speed) - 1) << 1)
      cfg_put(dev, off + 0x30, 2, speed, 0x000f)        -- LnkCtl2: target link speed
   end
   dev._exp = { off = off, flr = c.flr and true or false }
   if c.flr then
      -- Initiate Function Level Reset: write-only, the function resets itself
      watch(dev, off + 9, 1, function(d, woff, bytes)
         local at = off + 9 - woff + 1
         local b = bytes:byte(at)
         if b and b & 0x80 ~= 0 then do_reset(d) end
      end)
   end
   return 0x3c
end

local CAP_IDS = { pm = CAP_PM, msi = CAP_MSI, msix = CAP_MSIX, express = CAP_EXP }

local function build_caps(dev, desc, bars)
   local caps = desc.capabilities or {}
   if type(caps) ~= "table" then derr("capabilities must be a list") end
   local seen, at, prev = {}, 0x40, nil
   for i, c in ipairs(caps) do
      local kind = type(c) == "table" and (c.kind or c[1])
      if not CAP_IDS[kind] then
         derr("capabilities[%d]: kind must be pm, msi, msix or express, got %s", i, tostring(kind))
      end
      if seen[kind] then derr("capabilities: %s given twice", kind) end
      seen[kind] = true
      local off = c.offset or at
      if not is_int(off) or off < 0x40 or off % 4 ~= 0 or off < at then
         derr("capabilities[%d] (%s): offset must be dword aligned, at 0x40 or after the previous one, got %s",
              i, kind, tostring(off))
      end
      cfg_put(dev, off, 1, CAP_IDS[kind])
      local len = CAP_BUILDERS[kind](dev, c, off, bars)
      if off + len > 0x100 then derr("capabilities: %s at 0x%x does not fit below 0x100", kind, off) end
      if prev then dev._cfg[prev + 1] = off else cfg_put(dev, 0x34, 1, off) end
      prev, at = off, align4(off + len)
   end
   if prev then cfg_put(dev, 0x06, 2, STATUS_CAP_LIST, 0, STATUS_W1C) end
end

---------------------------------------------------------------- construction

local RESERVED = {}

---
-- A served device from a description:
--
--    { vendor = 0x1b36, device = 0x0002, subsystem_vendor =, subsystem =,
--      class = 0x070002, revision = 1, interrupt_pin = 1 (INTA; 0: none),
--      bars = { { index = 0, kind = "io"|"mem32"|"mem64", size = 8, prefetchable =,
--                 registers = { vfio.regs entries, each with optional
--                               read = function(dev, r) return value end,
--                               write = function(dev, r, value, old) end, reset = value },
--                 read = function(dev, off, n) return bytes end,   -- bytes no register has
--                 write = function(dev, off, bytes) end } },
--      capabilities = { { kind = "pm" },
--                       { kind = "msi", vectors = 1, is64 = true, maskable = false },
--                       { kind = "msix", table_size =, table_bar =, table_offset =,
--                         pba_bar =, pba_offset = },
--                       { kind = "express", type = "endpoint", max_payload = 128,
--                         link_speed = 1, link_width = 1, flr = false } },
--      reset = function(dev) end,         -- the model's own state, at creation and reset
--      dma_map = function(dev, range) end, dma_unmap = function(dev, range) end,
--      methods = { name = function(dev, ...) end },   -- the model's own API on dev
--    }
--
-- Capabilities are chained from 0x40 in the order given (or at `offset`); express makes
-- config space 4096 bytes. Raises on a description that is wrong.
-- @tparam table desc the description
-- @treturn Device the served device
function M.new(desc)
   if type(desc) ~= "table" then error("model.new: expects a description table", 2) end
   want_int(desc.vendor, "vendor", 0, 0xfffe)
   want_int(desc.device, "device", 0, 0xffff)
   want_int(desc.class, "class (class << 16 | subclass << 8 | prog-if)", 0, 0xffffff)
   if desc.revision ~= nil then want_int(desc.revision, "revision", 0, 0xff) end
   if desc.subsystem_vendor ~= nil then want_int(desc.subsystem_vendor, "subsystem_vendor", 0, 0xffff) end
   if desc.subsystem ~= nil then want_int(desc.subsystem, "subsystem", 0, 0xffff) end
   local pin = desc.interrupt_pin or 0
   want_int(pin, "interrupt_pin (0 none, 1..4 INTA..INTD)", 0, 4)
   for _, k in ipairs { "reset", "dma_map", "dma_unmap" } do
      if desc[k] ~= nil and not callable(desc[k]) then derr("%s must be a function", k) end
   end
   local dev = setmetatable({
      description = desc, name = desc.name or fmt("%04x:%04x", desc.vendor, desc.device),
      state = {}, counters = { refused = 0, model_errors = 0 },
      _cfg = {}, _wmask = {}, _w1c = {}, _watch = {}, _pin = pin,
      _triggers = { [0] = {}, {}, {}, {}, {} }, _intx = { line = false, masked = false },
      _level = false, _maps = {},
   }, Device)
   local bars = check_bars(desc)
   dev._bars = bars
   for _, b in pairs(bars) do bar_slots(b) end
   local express = false
   for _, c in ipairs(type(desc.capabilities) == "table" and desc.capabilities or {}) do
      if type(c) == "table" and (c.kind or c[1]) == "express" then express = true end
   end
   dev._cfg_size = express and 4096 or 256
   build_header(dev, desc, bars, express)
   build_caps(dev, desc, bars)
   for _, b in pairs(bars) do
      table.sort(b.items, function(x, y) return x.offset < y.offset end)
      for i = 2, #b.items do
         local p, q = b.items[i - 1], b.items[i]
         if q.offset < p.offset + p.len then
            derr("BAR%d: %s at 0x%x overlaps %s at 0x%x", b.index, q.name or q.kind, q.offset,
                 p.name or p.kind, p.offset)
         end
      end
   end
   -- the reset image: everything the device holds in config space at power-on
   dev._cfg_reset = table.move(dev._cfg, 0, dev._cfg_size - 1, 0, {})
   for name, fn in pairs(desc.methods or {}) do
      if RESERVED[name] or Device[name] ~= nil then derr("methods.%s would hide the device's own %s", name, name) end
      if not callable(fn) then derr("methods.%s must be a function", name) end
      dev[name] = fn
   end
   reset_state(dev)
   return dev
end

---------------------------------------------------------------- guard

-- Runs fn(...) for a peer's request: a hook's error becomes EIO, never a raise.
local function guarded(dev, what, fn, ...)
   local ok, a, b, c = pcall(fn, ...)
   if ok then return a, b, c end
   dev.counters.model_errors = dev.counters.model_errors + 1
   dev.last_error = tostring(a)
   return fail(EIO, "%s: %s: model error: %s", dev.name, what, tostring(a))
end

local function refuse(dev, errno, f, ...)
   dev.counters.refused = dev.counters.refused + 1
   return fail(errno, "%s: " .. f, dev.name, ...)
end

---------------------------------------------------------------- the interface: info

--- A served device: what `model.new` returns. The methods up to `reset` are what a
-- vfio-user server calls; the rest are for the model's own code.
-- @type Device

--- Device info, as VFIO_DEVICE_GET_INFO gives it.
-- @treturn table `{flags, num_regions, num_irqs, pci = true, reset = true}`
function Device:info()
   return { flags = M.DEVICE_FLAGS.PCI | M.DEVICE_FLAGS.RESET, num_regions = M.REGION.COUNT,
            num_irqs = M.IRQ.COUNT, pci = true, reset = true, name = self.name }
end

local function region_size(dev, index)
   if index == M.REGION.CONFIG then return dev._cfg_size end
   local b = dev._bars[index]
   return b and b.size or 0
end

local function check_index(dev, index, count, what)
   if not is_int(index) or index < 0 or index >= count then
      return refuse(dev, EINVAL, "no %s index %s (0..%d)", what, tostring(index), count - 1)
   end
   return true
end

--- Region info, as VFIO_DEVICE_GET_REGION_INFO gives it. A region the device does not
-- have (a missing BAR, the upper half of a 64-bit BAR, ROM, VGA) has size 0. No region is
-- mmap-able: a Lua model answers every access itself.
-- @tparam integer index the region (0..8)
-- @treturn table `{index, size, flags, read, write, mmap = false}`, or nil, message, errno
function Device:region_info(index)
   local ok, err, errno = check_index(self, index, M.REGION.COUNT, "region")
   if not ok then return nil, err, errno end
   local size = region_size(self, index)
   local flags = size > 0 and (M.REGION_FLAGS.READ | M.REGION_FLAGS.WRITE) or 0
   return { index = index, size = size, flags = flags, read = size > 0, write = size > 0, mmap = false }
end

-- Whether a peer's access [off, off+n) fits a region of `size` bytes; checked without
-- overflow, for any integers.
local function check_range(dev, index, off, n, size, verb)
   if not is_int(off) or not is_int(n) then
      return refuse(dev, EINVAL, "%s %s: offset and size must be integers", verb, REGION_NAMES[index])
   end
   if size == 0 then return refuse(dev, EINVAL, "%s %s: the device has no such region", verb, REGION_NAMES[index]) end
   if n < 1 or off < 0 or n > size or off > size - n then
      return refuse(dev, EINVAL, "%s %s: %d bytes at 0x%x are outside the region (%d bytes)", verb,
                    REGION_NAMES[index], n, off, size)
   end
   if n > M.MAX_ACCESS then
      return refuse(dev, E2BIG, "%s %s: %d bytes is more than one access may carry (%d)", verb,
                    REGION_NAMES[index], n, M.MAX_ACCESS)
   end
   return true
end

---------------------------------------------------------------- config space

local function config_read(dev, off, n)
   local cfg, t = dev._cfg, {}
   for i = 0, n - 1 do t[i + 1] = cfg[off + i] or 0 end
   return string.char(table.unpack(t))
end

local function config_write(dev, off, bytes)
   local cfg, wm, wc = dev._cfg, dev._wmask, dev._w1c
   local hi = off + #bytes
   for i = 0, #bytes - 1 do
      local o, b = off + i, bytes:byte(i + 1)
      local m, c = wm[o] or 0, wc[o] or 0
      if m ~= 0 or c ~= 0 then cfg[o] = ((cfg[o] or 0) & ~m | b & m) & ~(b & c) end
   end
   for _, w in ipairs(dev._watch) do
      if off < w.hi and w.lo < hi then w.fn(dev, off, bytes) end
   end
   return true
end

--- A config space register's current value (model-side; no side effects).
-- @tparam integer off offset in config space
-- @tparam[opt=4] integer width 1, 2 or 4 bytes
-- @treturn integer the value
function Device:config(off, width)
   width = width or 4
   if not is_int(off) or off < 0 or not is_int(width) or off + width > self._cfg_size then
      error(fmt("config: %s bytes at %s are outside config space", tostring(width), tostring(off)), 2)
   end
   return cfg_get(self, off, width)
end

---------------------------------------------------------------- BARs

-- Register reads: the hook's value, or the stored one; RC clears, WO reads 0.
local function slot_read(dev, s)
   if s.access == "WO" then return 0 end
   local v = s.value
   if s.read then
      local r = s.read(dev, s)
      if r ~= nil then
         if not is_int(r) then error(fmt("register %s: read hook returned %s, not an integer", s.name, type(r))) end
         v = r
      end
   end
   if s.access == "RC" then s.value = 0 end
   return v & mask_of(s.width * 8)
end

-- Register writes: `value` holds the written bytes in place, `bits` says which bits.
local function slot_write(dev, s, value, bits)
   local a, old = s.access, s.value
   if a == "RO" or a == "RC" then return end
   local new
   if a == "W1C" then new = old & ~(value & bits) else new = old & ~bits | value & bits end
   s.value = new & mask_of(s.width * 8)
   if s.write then s.write(dev, s, s.value, old) end
end

local item_read, item_write = {}, {}

function item_read.register(dev, s, rel, n)
   return le_bytes(slot_read(dev, s) >> (8 * rel), n)
end

function item_write.register(dev, s, rel, bytes)
   local v, bits = 0, 0
   for i = 1, #bytes do
      local sh = 8 * (rel + i - 1)
      v, bits = v | bytes:byte(i) << sh, bits | 0xff << sh
   end
   slot_write(dev, s, v, bits)
end

-- MSI-X table: 4 dwords per entry (address low, high, data, vector control); a vector's
-- control word has one writable bit, the mask, which is set at reset.
local function msix_entry(dev, v)
   local e = dev._msix.entries[v]
   if not e then e = { 0, 0, 0, 1 } dev._msix.entries[v] = e end
   return e
end

function item_read.msix_table(dev, _, rel, n)
   local t = {}
   for i = rel, rel + n - 1 do
      local e = msix_entry(dev, i // 16)
      local w = e[(i % 16) // 4 + 1]
      t[#t + 1] = string.char((w >> (8 * (i % 4))) & 0xff)
   end
   return table.concat(t)
end

function item_write.msix_table(dev, _, rel, bytes)
   local touched = {}
   for i = 1, #bytes do
      local at = rel + i - 1
      local v, word, sh = at // 16, (at % 16) // 4 + 1, 8 * (at % 4)
      local e = msix_entry(dev, v)
      -- vector control has one writable bit, the mask; the other words are all writable
      local writable = (word == 4 and 1 or 0xffffffff) & (0xff << sh)
      e[word] = e[word] & ~writable | (bytes:byte(i) << sh) & writable
      if word == 4 then touched[v] = true end
   end
   if next(touched) then msix_deliver(dev) end
end

function item_read.msix_pba(dev, _, rel, n)
   local t = {}
   for i = rel, rel + n - 1 do
      local byte = 0
      for bit = 0, 7 do
         if dev._msix.pending[i * 8 + bit] then byte = byte | 1 << bit end
      end
      t[#t + 1] = string.char(byte)
   end
   return table.concat(t)
end

function item_write.msix_pba() end   -- read-only (the spec leaves writes undefined)

-- The first item of a BAR that ends after `off` (items are sorted, never overlap).
local function first_item(items, off)
   local lo, hi = 1, #items + 1
   while lo < hi do
      local mid = (lo + hi) // 2
      local it = items[mid]
      if it.offset + it.len <= off then lo = mid + 1 else hi = mid end
   end
   return lo
end

local function gap_read(dev, bar, off, n)
   if bar.read then
      local s = bar.read(dev, off, n)
      if s ~= nil then
         if type(s) ~= "string" or #s ~= n then
            error(fmt("BAR%d read hook at 0x%x must return %d bytes, got %s", bar.index, off, n,
                      type(s) == "string" and #s .. " bytes" or type(s)))
         end
         return s
      end
   end
   return string.rep("\0", n)
end

local function bar_read(dev, bar, off, n)
   local parts, pos, last, items = {}, off, off + n, bar.items
   for i = first_item(items, off), #items do
      local it = items[i]
      if it.offset >= last then break end
      local lo, hi = math.max(it.offset, off), math.min(it.offset + it.len, last)
      if lo > pos then parts[#parts + 1] = gap_read(dev, bar, pos, lo - pos) end
      parts[#parts + 1] = item_read[it.kind](dev, it, lo - it.offset, hi - lo)
      pos = hi
   end
   if last > pos then parts[#parts + 1] = gap_read(dev, bar, pos, last - pos) end
   return table.concat(parts)
end

local function bar_write(dev, bar, off, bytes)
   local pos, last, items = off, off + #bytes, bar.items
   local function gap(to)
      if to > pos and bar.write then bar.write(dev, pos, bytes:sub(pos - off + 1, to - off)) end
   end
   for i = first_item(items, off), #items do
      local it = items[i]
      if it.offset >= last then break end
      local lo, hi = math.max(it.offset, off), math.min(it.offset + it.len, last)
      gap(lo)
      item_write[it.kind](dev, it, lo - it.offset, bytes:sub(lo - off + 1, hi - off))
      pos = hi
   end
   gap(last)
   return true
end

-- A BAR answers only while its decoding is on and the function is in D0, as hardware
-- does (and as vfio-pci refuses memory BAR access with memory decoding off).
local function bar_decodes(dev, bar, verb)
   local cmd = cfg_get(dev, 0x04, 2)
   if cmd & (bar.io and CMD_IO or CMD_MEM) == 0 then
      return refuse(dev, EIO, "%s BAR%d: %s decoding is off in the command register", verb, bar.index,
                    bar.io and "I/O" or "memory")
   end
   if dev._pm and dev._pm.state == 3 then
      return refuse(dev, EIO, "%s BAR%d: the function is in D3hot", verb, bar.index)
   end
   return true
end

---------------------------------------------------------------- region read/write

--- Read `n` bytes at `off` of a region (the peer's REGION_READ). Config space reads have
-- no side effects; a BAR read runs the registers' read hooks.
-- @tparam integer index region index
-- @tparam integer off offset in the region
-- @tparam integer n byte count
-- @treturn string the bytes, or nil, message, errno
function Device:region_read(index, off, n)
   local ok, err, errno = check_index(self, index, M.REGION.COUNT, "region")
   if not ok then return nil, err, errno end
   ok, err, errno = check_range(self, index, off, n, region_size(self, index), "read")
   if not ok then return nil, err, errno end
   if index == M.REGION.CONFIG then return config_read(self, off, n) end
   local bar = self._bars[index]
   ok, err, errno = bar_decodes(self, bar, "read")
   if not ok then return nil, err, errno end
   return guarded(self, fmt("read BAR%d at 0x%x", index, off), bar_read, self, bar, off, n)
end

--- Write bytes at `off` of a region (the peer's REGION_WRITE). Config space follows the
-- device's write masks (unwritable bits and bytes are ignored, W1C bits clear); a BAR
-- write runs the registers' write hooks.
-- @tparam integer index region index
-- @tparam integer off offset in the region
-- @tparam string bytes the data
-- @treturn boolean true, or nil, message, errno
function Device:region_write(index, off, bytes)
   local ok, err, errno = check_index(self, index, M.REGION.COUNT, "region")
   if not ok then return nil, err, errno end
   if type(bytes) ~= "string" then return refuse(self, EINVAL, "write %s: data must be bytes", REGION_NAMES[index]) end
   ok, err, errno = check_range(self, index, off, #bytes, region_size(self, index), "write")
   if not ok then return nil, err, errno end
   if index == M.REGION.CONFIG then
      return guarded(self, fmt("write config at 0x%x", off), config_write, self, off, bytes)
   end
   local bar = self._bars[index]
   ok, err, errno = bar_decodes(self, bar, "write")
   if not ok then return nil, err, errno end
   return guarded(self, fmt("write BAR%d at 0x%x", index, off), bar_write, self, bar, off, bytes)
end

---------------------------------------------------------------- interrupts

local function irq_count(dev, index)
   if index == M.IRQ.INTX then return dev._pin ~= 0 and 1 or 0 end
   if index == M.IRQ.MSI then return dev._msi and dev._msi.vectors or 0 end
   if index == M.IRQ.MSIX then return dev._msix and dev._msix.size or 0 end
   if index == M.IRQ.ERR then return dev._exp and 1 or 0 end
   return 1  -- REQ: the device can always be asked back
end

--- Interrupt info, as VFIO_DEVICE_GET_IRQ_INFO gives it: INTx maskable and automasked,
-- MSI fixed in size, MSI-X vectors added one at a time and maskable, ERR (PCIe only) and
-- REQ one each.
-- @tparam integer index the interrupt index (0..4)
-- @treturn table `{index, count, flags, eventfd, maskable, automasked, noresize}`, or nil, message, errno
function Device:irq_info(index)
   local ok, err, errno = check_index(self, index, M.IRQ.COUNT, "interrupt")
   if not ok then return nil, err, errno end
   local F = M.IRQ_FLAGS
   local flags = F.EVENTFD
   if index == M.IRQ.INTX then
      flags = flags | F.MASKABLE | F.AUTOMASKED
   elseif index == M.IRQ.MSIX then
      flags = flags | F.MASKABLE
   else
      flags = flags | F.NORESIZE
      if index == M.IRQ.MSI and self._msi and self._msi.maskable then flags = flags | F.MASKABLE end
   end
   return { index = index, count = irq_count(self, index), flags = flags, eventfd = true,
            maskable = flags & F.MASKABLE ~= 0, automasked = flags & F.AUTOMASKED ~= 0,
            noresize = flags & F.NORESIZE ~= 0 }
end

local function msi_on(dev) return dev._msi ~= nil and cfg_get(dev, dev._msi.off + 2, 2) & 1 ~= 0 end
local function msix_on(dev) return dev._msix ~= nil and cfg_get(dev, dev._msix.off + 2, 2) & 0x8000 ~= 0 end

-- Signal INTx's trigger once, then masked until the client unmasks (VFIO's automask).
local function intx_fire(dev)
   local t = dev._triggers[M.IRQ.INTX][0]
   if not t then return false, "INTx has no trigger" end
   if dev._intx.masked then return false, "INTx masked" end
   dev._intx.masked = true
   signal(t)
   return true, "intx"
end

-- INTx: the device's level, shown in the status register; on the pin unless INTx is
-- disabled in the command register or MSI/MSI-X is on.
function intx_update(dev)
   local asserted = dev._level and dev._pin ~= 0 and not msi_on(dev) and not msix_on(dev)
   cfg_set_bits(dev, 0x06, 2, STATUS_INTX, asserted)
   local line = asserted and cfg_get(dev, 0x04, 2) & CMD_INTX_DISABLE == 0
   local was = dev._intx.line
   dev._intx.line = line
   if line and not was then return intx_fire(dev) end
   return false, line and "INTx already asserted" or "INTx not asserted"
end

local function msi_mask_bit(dev, v)
   local m = dev._msi
   return m.maskable and cfg_get(dev, m.mask_off, 4) >> v & 1 == 1
end

local function msi_send(dev, v)
   local m = dev._msi
   local t = dev._triggers[M.IRQ.MSI][v]
   if msi_mask_bit(dev, v) or not t then
      if m.maskable then cfg_set_bits(dev, m.pending_off, 4, 1 << v, true) return false, "pending" end
      return false, "MSI vector " .. v .. " has no trigger"
   end
   signal(t)
   return true, "msi"
end

function msi_deliver(dev)
   local m = dev._msi
   if not m or not m.maskable or not msi_on(dev) then return end
   local pend = cfg_get(dev, m.pending_off, 4)
   for v = 0, m.vectors - 1 do
      if pend >> v & 1 == 1 and not msi_mask_bit(dev, v) and dev._triggers[M.IRQ.MSI][v] then
         cfg_set_bits(dev, m.pending_off, 4, 1 << v, false)
         signal(dev._triggers[M.IRQ.MSI][v])
      end
   end
end

local function msix_masked(dev, v)
   if cfg_get(dev, dev._msix.off + 2, 2) & 0x4000 ~= 0 then return true end
   return msix_entry(dev, v)[4] & 1 == 1
end

local function msix_send(dev, v)
   local t = dev._triggers[M.IRQ.MSIX][v]
   if msix_masked(dev, v) or not t then
      dev._msix.pending[v] = true
      return false, "pending"
   end
   signal(t)
   return true, "msix"
end

function msix_deliver(dev)
   local x = dev._msix
   if not x or not msix_on(dev) then return end
   local ready = {}
   for v in pairs(x.pending) do
      if not msix_masked(dev, v) and dev._triggers[M.IRQ.MSIX][v] then ready[#ready + 1] = v end
   end
   table.sort(ready)
   for _, v in ipairs(ready) do
      x.pending[v] = nil
      signal(dev._triggers[M.IRQ.MSIX][v])
   end
end

--- Raise an interrupt (model-side). With MSI-X on: that vector (pending in the PBA
-- while masked); else with MSI on: that vector of those enabled (a higher one is folded
-- onto the last, as a function with fewer vectors than conditions does); else INTx is
-- asserted, and stays so until `lower`. "err" and "req" signal the ERR and REQ triggers.
-- @tparam[opt=0] integer|string vector the vector, or "intx", "err", "req"
-- @treturn boolean whether a trigger was signalled
-- @treturn string how: "msix", "msi", "intx", or why not ("pending", "INTx masked", ...)
function Device:raise(vector)
   vector = vector or 0
   if vector == "err" or vector == "req" then
      local t = self._triggers[vector == "err" and M.IRQ.ERR or M.IRQ.REQ][0]
      if not t then return false, vector .. " has no trigger" end
      signal(t)
      return true, vector
   end
   if vector ~= "intx" then
      if not is_int(vector) or vector < 0 then
         error('raise: vector must be a non-negative integer, "intx", "err" or "req"', 2)
      end
      if msix_on(self) then
         if vector >= self._msix.size then
            error(fmt("raise: vector %d but the MSI-X table has %d entries", vector, self._msix.size), 2)
         end
         return msix_send(self, vector)
      end
      if msi_on(self) then
         local enabled = 1 << ((cfg_get(self, self._msi.off + 2, 2) >> 4) & 7)
         return msi_send(self, math.min(vector, enabled - 1))
      end
   end
   if self._pin == 0 then return false, "the device has no INTx pin" end
   self._level = true
   return intx_update(self)
end

--- Deassert INTx (model-side): the condition behind `raise` is gone.
function Device:lower()
   self._level = false
   intx_update(self)
end

--- A level source (model-side): `on` raises on a rising edge (an MSI/MSI-X message, or
-- INTx asserted), off lowers INTx. A model whose interrupt is "any enabled condition
-- pending" calls this after every change.
-- @tparam boolean on the level
-- @tparam[opt=0] integer vector the MSI/MSI-X vector for a rising edge
function Device:set_level(on, vector)
   if on then
      if self._level_src then return false, "already raised" end
      self._level_src = true
      return self:raise(vector)
   end
   self._level_src = false
   self:lower()
   return false, "lowered"
end

-- What the host's MSI/MSI-X setup does to the function for the triggers it wired (the
-- kernel enables the capability and unmasks the vectors it requested): done after
-- SET_IRQS and after a reset, as pci_restore_state restores it.
local function apply_host_irqs(dev)
   local m, x = dev._msi, dev._msix
   if m and next(dev._triggers[M.IRQ.MSI]) and not msi_on(dev) then
      local top = 0
      for v in pairs(dev._triggers[M.IRQ.MSI]) do top = math.max(top, v) end
      local mme = 0
      while 1 << mme <= top do mme = mme + 1 end
      mme = math.min(mme, m.mmc)
      local c = cfg_get(dev, m.off + 2, 2) & ~0x70 | mme << 4 | 1
      for i = 0, 1 do dev._cfg[m.off + 2 + i] = (c >> (8 * i)) & 0xff end
   end
   if x and next(dev._triggers[M.IRQ.MSIX]) then
      for v in pairs(dev._triggers[M.IRQ.MSIX]) do
         local e = msix_entry(dev, v)
         e[4] = e[4] & ~1
      end
      cfg_set_bits(dev, x.off + 2, 2, 0x8000, true)
   end
   intx_update(dev)
   msi_deliver(dev)
   msix_deliver(dev)
end

local function disable_index(dev, index)
   local tr = dev._triggers[index]
   for k in pairs(tr) do tr[k] = nil end
   if index == M.IRQ.INTX then
      dev._intx.masked = false
   elseif index == M.IRQ.MSI and dev._msi then
      cfg_set_bits(dev, dev._msi.off + 2, 2, 1, false)
   elseif index == M.IRQ.MSIX and dev._msix then
      cfg_set_bits(dev, dev._msix.off + 2, 2, 0x8000, false)
      for v = 0, dev._msix.size - 1 do msix_entry(dev, v)[4] = 1 end
   end
   intx_update(dev)
end

-- DATA_NONE or DATA_BOOL with ACTION_TRIGGER: fire the interrupt from the host side
-- (VFIO's loopback test), whatever the device's masks say.
local function fire(dev, index, sub)
   local t = dev._triggers[index][sub]
   if t then signal(t) end
end

local function set_mask(dev, index, sub, masked)
   if index == M.IRQ.INTX then
      if masked then dev._intx.masked = true return end
      dev._intx.masked = false
      if dev._intx.line then intx_fire(dev) end
   elseif index == M.IRQ.MSIX then
      local e = msix_entry(dev, sub)
      e[4] = masked and e[4] | 1 or e[4] & ~1
      if not masked then msix_deliver(dev) end
   else
      cfg_set_bits(dev, dev._msi.mask_off, 4, 1 << sub, masked)
      if not masked then msi_deliver(dev) end
   end
end

local function do_set_irqs(dev, index, start, count, action, kind, data)
   if action == "trigger" and kind == "none" and count == 0 then
      disable_index(dev, index)
      return true
   end
   for i = 0, count - 1 do
      local sub, d = start + i, data and data[i + 1]
      if action == "trigger" then
         if kind == "eventfd" then
            dev._triggers[index][sub] = d or nil
            if index == M.IRQ.MSIX and not d and dev._msix then msix_entry(dev, sub)[4] = 1 end
            if index == M.IRQ.INTX then dev._intx.masked = false end
         elseif kind == "none" or d then
            fire(dev, index, sub)
         end
      elseif kind == "none" or d then
         set_mask(dev, index, sub, action == "mask")
      end
   end
   if action == "trigger" and kind == "eventfd" then
      apply_host_irqs(dev)
      if index == M.IRQ.INTX and dev._intx.line then intx_fire(dev) end
   end
   return true
end

--- VFIO_DEVICE_SET_IRQS (the server's SET_IRQS): wire, fire, mask or unmask interrupts.
-- `action` is "trigger", "mask" or "unmask"; `data` nil (DATA_NONE), a list of `count`
-- triggers with false for "no fd" (DATA_EVENTFD), or `{bool = true, ...}` (DATA_BOOL).
-- Trigger with DATA_NONE and count 0 turns the index off. Mask/unmask apply to INTx, to
-- MSI-X vectors (their table mask bits) and to maskable MSI; ERR and REQ only trigger.
-- @tparam integer index interrupt index
-- @tparam integer start first vector
-- @tparam integer count vector count
-- @tparam string action "trigger", "mask" or "unmask"
-- @param[opt] data nil, a list of triggers, or `{bool = true, ...}`
-- @treturn boolean true, or nil, message, errno
function Device:set_irqs(index, start, count, action, data)
   local ok, err, errno = check_index(self, index, M.IRQ.COUNT, "interrupt")
   if not ok then return nil, err, errno end
   local name = IRQ_NAMES[index]
   if not ACTIONS[action] then return refuse(self, EINVAL, "SET_IRQS %s: action %s", name, tostring(action)) end
   if not is_int(start) or not is_int(count) or start < 0 or count < 0 then
      return refuse(self, EINVAL, "SET_IRQS %s: start and count must be non-negative integers", name)
   end
   local kind = "none"
   if data ~= nil then
      if type(data) ~= "table" then error("set_irqs: data must be nil or a table", 2) end
      kind = data.bool and "bool" or "eventfd"
      for i = 1, count do
         local d = data[i]
         if kind == "bool" and type(d) ~= "boolean" then
            error(fmt("set_irqs: DATA_BOOL entry %d must be a boolean", i), 2)
         elseif kind == "eventfd" and d ~= false and not is_trigger(d) then
            error(fmt("set_irqs: entry %d must be a trigger (a function or an object with :signal()) or false", i), 2)
         end
      end
   end
   local max = irq_count(self, index)
   if max == 0 then return refuse(self, EINVAL, "SET_IRQS %s: the device has no %s interrupt", name, name) end
   if not (action == "trigger" and kind == "none" and count == 0) then
      if count == 0 or start >= max or count > max - start then
         return refuse(self, EINVAL, "SET_IRQS %s: vectors %d..%d outside 0..%d", name, start, start + count - 1,
                       max - 1)
      end
   end
   if action ~= "trigger" then
      if index == M.IRQ.ERR or index == M.IRQ.REQ then
         return refuse(self, ENOTTY, "SET_IRQS %s: only trigger is supported", name)
      end
      if index == M.IRQ.MSI and not self._msi.maskable then
         return refuse(self, ENOTTY, "SET_IRQS MSI: this MSI capability has no per-vector masking")
      end
      if kind == "eventfd" then
         return refuse(self, EINVAL, "SET_IRQS %s: %s with eventfds is the server's (it watches the fd)", name, action)
      end
   end
   return guarded(self, "SET_IRQS " .. name, do_set_irqs, self, index, start, count, action, kind, data)
end

---------------------------------------------------------------- DMA

-- Unsigned 64-bit order: IOVAs are u64 on the wire, beyond Lua's signed integers.
local ult = math.ult
local function uend(iova, size) return iova + size - 1 end   -- last byte, wrapping

-- Index of the first map whose last byte is >= iova (maps are sorted, disjoint).
local function map_index(maps, iova)
   local lo, hi = 1, #maps + 1
   while lo < hi do
      local mid = (lo + hi) // 2
      if ult(uend(maps[mid].iova, maps[mid].size), iova) then lo = mid + 1 else hi = mid end
   end
   return lo
end

local function check_iova(dev, what, iova, size)
   if not is_int(iova) or not is_int(size) then
      return refuse(dev, EINVAL, "%s: iova and size must be integers", what)
   end
   if size == 0 or ult(uend(iova, size), iova) then
      return refuse(dev, EINVAL, "%s: 0x%x bytes at 0x%x wrap or are empty", what, size, iova)
   end
   return true
end

--- Register a range of the client's memory for DMA (the server's DMA_MAP): `range` is
-- `{iova, size, readable, writable, memory}`; `memory:read(off, n)` and
-- `memory:write(off, bytes)` reach it (offsets from iova). Overlapping a range already
-- mapped is EEXIST.
-- @tparam table range the range
-- @treturn boolean true, or nil, message, errno
function Device:dma_map(range)
   if type(range) ~= "table" then error("dma_map: expects {iova=, size=, readable=, writable=, memory=}", 2) end
   local mem = range.memory
   if mem == nil or not pcall(function() assert(callable(mem.read) and callable(mem.write)) end) then
      error("dma_map: range.memory must have read(off, n) and write(off, bytes)", 2)
   end
   local ok, err, errno = check_iova(self, "DMA_MAP", range.iova, range.size)
   if not ok then return nil, err, errno end
   local maps = self._maps
   if #maps >= M.MAX_DMA_MAPS then return refuse(self, ENOSPC, "DMA_MAP: %d ranges already mapped", #maps) end
   local i = map_index(maps, range.iova)
   local m = maps[i]
   if m and not ult(uend(range.iova, range.size), m.iova) then
      return refuse(self, EEXIST, "DMA_MAP: 0x%x bytes at 0x%x overlap the range at 0x%x", range.size,
                    range.iova, m.iova)
   end
   local entry = { iova = range.iova, size = range.size, readable = range.readable and true or false,
                   writable = range.writable and true or false, memory = mem }
   table.insert(maps, i, entry)
   if self.description.dma_map then
      return guarded(self, "DMA_MAP", function() self.description.dma_map(self, entry) return true end)
   end
   return true
end

--- Forget mapped ranges (the server's DMA_UNMAP): every range inside `{iova, size}`, or
-- all of them with `{all = true}`. A range cut in two is EINVAL, nothing mapped there is
-- ENOENT.
-- @tparam table range `{iova, size}` or `{all = true}`
-- @treturn integer the bytes unmapped, or nil, message, errno
function Device:dma_unmap(range)
   if type(range) ~= "table" then error("dma_unmap: expects {iova=, size=} or {all = true}", 2) end
   local maps, gone = self._maps, {}
   if range.all then
      for i = #maps, 1, -1 do gone[#gone + 1] = table.remove(maps, i) end
   else
      local ok, err, errno = check_iova(self, "DMA_UNMAP", range.iova, range.size)
      if not ok then return nil, err, errno end
      local last = uend(range.iova, range.size)
      local i = map_index(maps, range.iova)
      local j = i
      while maps[j] and not ult(last, maps[j].iova) do
         local m = maps[j]
         if ult(m.iova, range.iova) or ult(last, uend(m.iova, m.size)) then
            return refuse(self, EINVAL, "DMA_UNMAP: 0x%x bytes at 0x%x cut the range 0x%x+0x%x", range.size,
                          range.iova, m.iova, m.size)
         end
         j = j + 1
      end
      if j == i then
         return refuse(self, ENOENT, "DMA_UNMAP: nothing mapped in 0x%x bytes at 0x%x", range.size, range.iova)
      end
      for k = j - 1, i, -1 do gone[#gone + 1] = table.remove(maps, k) end
   end
   local bytes = 0
   for _, m in ipairs(gone) do bytes = bytes + m.size end
   if self.description.dma_unmap then
      local ok, err, errno = guarded(self, "DMA_UNMAP", function()
         for _, m in ipairs(gone) do self.description.dma_unmap(self, m) end
         return true
      end)
      if not ok then return nil, err, errno end
   end
   return bytes
end

-- The pieces of [iova, iova+n) as (map, offset in map, length), or nil and why.
local function dma_pieces(dev, iova, n, write)
   local pieces, at, left = {}, iova, n
   local maps = dev._maps
   local i = map_index(maps, iova)
   while left > 0 do
      local m = maps[i]
      if not m or ult(at, m.iova) then return nil, fmt("0x%x is not mapped", at) end
      if write and not m.writable then return nil, fmt("0x%x is mapped read-only", at) end
      if not write and not m.readable then return nil, fmt("0x%x is mapped write-only", at) end
      local off = at - m.iova
      local len = m.size - off
      if ult(left, len) then len = left end
      pieces[#pieces + 1] = { m, off, len }
      at, left, i = at + len, left - len, i + 1
   end
   return pieces
end

local function dma_check(dev, verb, iova, n)
   if not is_int(iova) or not is_int(n) or n < 0 then error(verb .. ": iova and n must be integers, n >= 0", 3) end
   if cfg_get(dev, 0x04, 2) & CMD_MASTER == 0 then
      return fail(EPERM, "%s: %s of %d bytes at 0x%x: bus mastering is off", dev.name, verb, n, iova)
   end
   if n > 0 and ult(uend(iova, n), iova) then
      return fail(EFAULT, "%s: %s of %d bytes at 0x%x wraps", dev.name, verb, n, iova)
   end
   return true
end

local function dma_fault(dev, verb, n, iova, why)
   cfg_set_bits(dev, 0x06, 2, STATUS_RECEIVED_MASTER_ABORT, true)
   return fail(EFAULT, "%s: %s of %d bytes at 0x%x: %s", dev.name, verb, n, iova, why)
end

--- Read the client's memory (model-side DMA). Needs bus mastering on and mapped,
-- readable memory; a miss sets Received Master Abort in the status register.
-- @tparam integer iova the address
-- @tparam integer n byte count
-- @treturn string the bytes, or nil, message, errno
function Device:dma_read(iova, n)
   local ok, err, errno = dma_check(self, "dma_read", iova, n)
   if not ok then return nil, err, errno end
   local pieces, why = dma_pieces(self, iova, n, false)
   if not pieces then return dma_fault(self, "dma_read", n, iova, why) end
   local out = {}
   for _, p in ipairs(pieces) do
      local s, e2, n2 = p[1].memory:read(p[2], p[3])
      if s == nil then return nil, e2, n2 end
      out[#out + 1] = s
   end
   return table.concat(out)
end

--- Write the client's memory (model-side DMA); as `dma_read`, with writable memory.
-- @tparam integer iova the address
-- @tparam string bytes the data
-- @treturn boolean true, or nil, message, errno
function Device:dma_write(iova, bytes)
   if type(bytes) ~= "string" then error("dma_write: bytes must be a string", 2) end
   local ok, err, errno = dma_check(self, "dma_write", iova, #bytes)
   if not ok then return nil, err, errno end
   local pieces, why = dma_pieces(self, iova, #bytes, true)
   if not pieces then return dma_fault(self, "dma_write", #bytes, iova, why) end
   local at = 1
   for _, p in ipairs(pieces) do
      local r, e2, n2 = p[1].memory:write(p[2], bytes:sub(at, at + p[3] - 1))
      if not r then return nil, e2, n2 end
      at = at + p[3]
   end
   return true
end

---------------------------------------------------------------- reset

-- Device state back to power-on: config space, registers, MSI-X table and PBA, the
-- interrupt level; then the model's own reset hook.
function reset_state(dev)
   table.move(dev._cfg_reset, 0, dev._cfg_size - 1, 0, dev._cfg)
   for _, b in pairs(dev._bars) do
      for _, it in ipairs(b.items) do
         if it.kind == "register" then it.value = it.reset end
      end
   end
   if dev._msix then dev._msix.entries, dev._msix.pending = {}, {} end
   if dev._pm then dev._pm.state = 0 end
   dev._level, dev._level_src = false, false
   dev._intx.line, dev._intx.masked = false, false
   if dev.description.reset then dev.description.reset(dev) end
end

function do_reset(dev)
   reset_state(dev)
   apply_host_irqs(dev)
   return true
end

--- Reset the function (the server's DEVICE_RESET, or FLR through config space): config
-- space and registers to their reset values, the model's reset hook; the interrupts the
-- host wired and the DMA ranges stay, as the kernel's reset keeps them.
-- @treturn boolean true, or nil, message, errno
function Device:reset()
   return guarded(self, "reset", do_reset, self)
end

---------------------------------------------------------------- model-side helpers

--- A register's slot (model-side): `.value` is its stored value, read and written
-- without side effects; `.name`, `.index`, `.offset`, `.width`, `.access`.
-- @tparam integer bar the BAR index
-- @tparam string name the register's name
-- @tparam[opt] integer index the element of a register array
-- @treturn table the slot
function Device:register(bar, name, index)
   local b = self._bars[bar]
   local r = b and b.byname and b.byname[name]
   if not r then error(fmt("register: BAR%s has no register %s", tostring(bar), tostring(name)), 2) end
   if index ~= nil then
      r = r[index + 1]
      if not r then error(fmt("register: %s has no element %s", name, tostring(index)), 2) end
   elseif r[1] then
      error(fmt("register: %s is an array: give an index", name), 2)
   end
   return r
end

--- The BAR's registers as a `vfio.regs` bank whose accesses go through region_read and
-- region_write, with their side effects: a driver's view, for specs and the REPL.
-- @tparam integer bar the BAR index
-- @treturn table the bank
function Device:bank(bar)
   local b = self._bars[bar]
   if not b or not b.desc then error(fmt("bank: BAR%s has no registers", tostring(bar)), 2) end
   local dev = self
   return regs.bind(b.desc, {
      read = function(_, off, n) return dev:region_read(bar, off, n) end,
      write = function(_, off, bytes) return dev:region_write(bar, off, bytes) end,
   })
end

Device.__tostring = function(d)
   return fmt("vfio.user.model %s (%06x, %d-byte config)", d.name, d.description.class, d._cfg_size)
end

for k in pairs(Device) do RESERVED[k] = true end
for _, k in ipairs { "description", "name", "state", "counters", "last_error" } do RESERVED[k] = true end

M.Device = Device
return M
