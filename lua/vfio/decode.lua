---
-- Decode PCI configuration space the way `lspci -vvv` shows it, from config bytes alone
-- (plus BAR sizes, which config bytes cannot give: they come from sysfs or VFIO regions).
-- decode.config(bytes, opts) returns a structured table (header fields, bars, caps with
-- their registers' fields by name) whose :text() is lspci -vvv style text.
-- @module vfio.decode
local pci = require "vfio.pci"
local pcibus = require "vfio.pcibus"
local pciids = require "vfio.pciids"

local M = {}

local fmt = string.format

-- Config accessors: nil past the end of what was read (a 256-byte conventional space or a
-- truncated read), so decoders stop instead of inventing zeroes.
local Cfg = {}
Cfg.__index = Cfg

local function new_cfg(bytes)
   return setmetatable({ s = bytes, n = #bytes }, Cfg)
end

--- A config space reader over a byte string, as decode's walks use it.
-- @type Cfg

--- Whether `len` bytes at `off` lie inside the bytes read.
function Cfg:has(off, len) return off >= 0 and off + len <= self.n end
--- The byte at `off`, or nil past the end.
function Cfg:b(off)
   if not self:has(off, 1) then return nil end
   return self.s:byte(off + 1)
end
--- The little-endian 16-bit word at `off`, or nil past the end.
function Cfg:w(off)
   if not self:has(off, 2) then return nil end
   return string.unpack("<I2", self.s, off + 1)
end
--- The little-endian 32-bit dword at `off`, or nil past the end.
function Cfg:l(off)
   if not self:has(off, 4) then return nil end
   return string.unpack("<I4", self.s, off + 1)
end

local function fl(v) return v and "+" or "-" end

-- A capability being decoded: lines of text plus named register groups of fields.
local Cap = {}
Cap.__index = Cap

local function new_cap(t)
   t.lines, t.regs = {}, {}
   return setmetatable(t, Cap)
end

function Cap:line(s) self.lines[#self.lines + 1] = s end

-- Start a register group (named as lspci labels it: "DevCap", "LnkSta", ...).
function Cap:group(name)
   local g = {}
   self.regs[name] = g
   return g
end

-- "Name+"/"Name-" for each { name, mask } of list, recording booleans into group g.
local function flags(g, value, list)
   local out = {}
   for i, b in ipairs(list) do
      local on = value & b[2] ~= 0
      if g then g[b[1]] = on end
      out[i] = b[1] .. fl(on)
   end
   return table.concat(out, " ")
end

local function F(g, name, on)
   g[name] = on
   return name .. fl(on)
end

---------------------------------------------------------------- standard capabilities

local function cap_pm(cfg, cap, where, w)
   local aux = { 0, 55, 100, 160, 220, 270, 320, 375 }
   cap.version = w & 7
   cap.title = fmt("Power Management version %d", w & 7)
   local g = cap:group("Flags")
   g.AuxCurrent = aux[((w & 0x1c0) >> 6) + 1]
   cap:line(fmt("Flags: %s %s %s %s AuxCurrent=%dmA PME(%s,%s,%s,%s,%s)",
      F(g, "PMEClk", w & 0x8 ~= 0), F(g, "DSI", w & 0x20 ~= 0), F(g, "D1", w & 0x200 ~= 0),
      F(g, "D2", w & 0x400 ~= 0), g.AuxCurrent,
      F(g, "D0", w & 0x800 ~= 0), F(g, "D1", w & 0x1000 ~= 0), F(g, "D2", w & 0x2000 ~= 0),
      F(g, "D3hot", w & 0x4000 ~= 0), F(g, "D3cold", w & 0x8000 ~= 0)))
   -- The PME flags reuse names D1/D2: keep them apart in the structured view.
   g.PME = { D0 = w & 0x800 ~= 0, D1 = w & 0x1000 ~= 0, D2 = w & 0x2000 ~= 0,
      D3hot = w & 0x4000 ~= 0, D3cold = w & 0x8000 ~= 0 }
   g.D1, g.D2 = w & 0x200 ~= 0, w & 0x400 ~= 0
   local t = cfg:w(where + 4)
   if not t then return end
   local s = cap:group("Status")
   s.D = t & 3
   s.DSel, s.DScale = (t & 0x1e00) >> 9, (t & 0x6000) >> 13
   cap:line(fmt("Status: D%d %s %s DSel=%d DScale=%d %s", t & 3,
      F(s, "NoSoftRst", t & 0x8 ~= 0), F(s, "PME-Enable", t & 0x100 ~= 0),
      s.DSel, s.DScale, F(s, "PME", t & 0x8000 ~= 0)))
   local b = cfg:b(where + 6)
   if b and b ~= 0 then
      local br = cap:group("Bridge")
      cap:line(fmt("Bridge: %s %s", F(br, "PM", b & 0x80 ~= 0), F(br, "B3", b & 0x40 == 0)))
   end
end

local function cap_msi(cfg, cap, where, w)
   local g = cap:group("Control")
   g.Enable = w & 1 ~= 0
   g.Count = 1 << ((w & 0x70) >> 4)
   g.Max = 1 << ((w & 0xe) >> 1)
   g.Maskable = w & 0x100 ~= 0
   g["64bit"] = w & 0x80 ~= 0
   cap.title = fmt("MSI: Enable%s Count=%d/%d Maskable%s 64bit%s", fl(g.Enable), g.Count,
      g.Max, fl(g.Maskable), fl(g["64bit"]))
   local is64 = g["64bit"]
   local lo = cfg:l(where + 4)
   local hi = is64 and cfg:l(where + 8) or 0
   local data = cfg:w(where + (is64 and 12 or 8))
   if not (lo and hi and data) then return end
   local m = cap:group("Message")
   m.Address, m.Data = hi << 32 | lo, data
   if is64 then
      cap:line(fmt("Address: %08x%08x  Data: %04x", hi, lo, data))
   else
      cap:line(fmt("Address: %08x  Data: %04x", lo, data))
   end
   if g.Maskable then
      local mo = where + (is64 and 16 or 12)
      local mask, pend = cfg:l(mo), cfg:l(mo + 4)
      if not (mask and pend) then return end
      m.Masking, m.Pending = mask, pend
      cap:line(fmt("Masking: %08x  Pending: %08x", mask, pend))
   end
end

local function cap_msix(cfg, cap, where, w)
   local g = cap:group("Control")
   g.Enable, g.Count, g.Masked = w & 0x8000 ~= 0, (w & 0x7ff) + 1, w & 0x4000 ~= 0
   cap.title = fmt("MSI-X: Enable%s Count=%d Masked%s", fl(g.Enable), g.Count, fl(g.Masked))
   local t, p = cfg:l(where + 4), cfg:l(where + 8)
   if not (t and p) then return end
   cap.table = { bar = t & 7, offset = t & ~7 & 0xffffffff }
   cap.pba = { bar = p & 7, offset = p & ~7 & 0xffffffff }
   cap:line(fmt("Vector table: BAR=%d offset=%08x", cap.table.bar, cap.table.offset))
   cap:line(fmt("PBA: BAR=%d offset=%08x", cap.pba.bar, cap.pba.offset))
end

local function cap_vendor(cfg, cap, where, w, info)
   local len, typ = w & 0xff, w >> 8
   cap.length = len
   -- virtio's vendor capability layout (virtio 1.x 4.1.4) on Red Hat's virtio device IDs,
   -- the only vendor capability lspci itself decodes.
   if info.vendor == 0x1af4 and info.device >= 0x1000 and info.device <= 0x107f
      and len >= 16 and cfg:has(where, len) then
      cap.virtio = {
         cfg_type = typ, type_name = pci.virtio_cfg_types[typ] or "<unknown>",
         bar = cfg:b(where + 4), offset = cfg:l(where + 8), length = cfg:l(where + 12),
      }
      local v = cap.virtio
      cap.title = "Vendor Specific Information: VirtIO: " .. v.type_name
      local s = fmt("BAR=%d offset=%08x size=%08x", v.bar, v.offset, v.length)
      if typ == 2 and len >= 20 then
         v.notify_off_multiplier = cfg:l(where + 16)
         s = s .. fmt(" multiplier=%08x", v.notify_off_multiplier)
      end
      cap:line(s)
      return
   end
   cap.title = fmt("Vendor Specific Information: Len=%02x <?>", len)
end

local function cap_ssvid(cfg, cap, where, _, info)
   local sv, sd = cfg:w(where + 4), cfg:w(where + 6)
   if not (sv and sd) then cap.title = "Subsystem"; return end
   cap.subsystem_vendor, cap.subsystem_id = sv, sd
   cap.title = "Subsystem: " .. pciids.subsystem_label(info.vendor, info.device, sv, sd)
end

local function cap_sata(cfg, cap, where, w)
   cap.title = fmt("SATA HBA v%d.%d", (w >> 4) & 0xf, w & 0xf)
   local bars = cfg:l(where + 4)
   if not bars then return end
   local bar = bars & 0xf
   if bar >= 4 and bar <= 9 then
      cap.bar, cap.bar_offset = bar - 4, (bars >> 4) & 0xfffff
      cap.title = cap.title .. fmt(" BAR%d Offset=%08x", bar - 4, cap.bar_offset)
   elseif bar == 15 then
      cap.title = cap.title .. " InCfgSpace"
   else
      cap.title = cap.title .. fmt(" BAR??%d", bar)
   end
end

-- PCI Express capability --------------------------------------------------------------

local L0S = { "<64ns", "<128ns", "<256ns", "<512ns", "<1us", "<2us", "<4us", "unlimited" }
local L1 = { "<1us", "<2us", "<4us", "<8us", "<16us", "<32us", "<64us", "unlimited" }

local function power_limit(value, scale)
   if scale == 0 and value == 0xff then return ">600W" end
   if scale == 0 and value >= 0xf0 and value <= 0xfe then value = 250 + 25 * (value - 0xf0) end
   local x = value * ({ 1.0, 0.1, 0.01, 0.001 })[scale + 1]
   -- C's %g: integral values print without a fraction, others with up to 6 significant digits.
   return fmt("%.6g", x) .. "W"
end

local function link_speed(s) return pci.link_speeds[s] or "unknown" end

local function is_ep(t) return t == pci.EXP_ENDPOINT or t == pci.EXP_LEG_END end

local function exp_dev(cfg, cap, where, typ)
   local t = cfg:l(where + 4)
   local g = cap:group("DevCap")
   g.MaxPayload = 128 << (t & 7)
   g.PhantFunc = (1 << ((t & 0x18) >> 3)) - 1
   local s = fmt("DevCap:\tMaxPayload %d bytes, PhantFunc %d", g.MaxPayload, g.PhantFunc)
   if is_ep(typ) then
      g.L0s, g.L1 = L0S[((t & 0x1c0) >> 6) + 1], L1[((t & 0xe00) >> 9) + 1]
      s = s .. fmt(", Latency L0s %s, L1 %s", g.L0s, g.L1)
   end
   cap:line(s)
   s = "\t" .. F(g, "ExtTag", t & 0x20 ~= 0)
   if is_ep(typ) or typ == pci.EXP_UPSTREAM or typ == pci.EXP_PCI_BRIDGE then
      s = s .. " " .. F(g, "AttnBtn", t & 0x1000 ~= 0) .. " " .. F(g, "AttnInd", t & 0x2000 ~= 0)
         .. " " .. F(g, "PwrInd", t & 0x4000 ~= 0)
   end
   s = s .. " " .. F(g, "RBE", t & 0x8000 ~= 0)
   local flr_types = is_ep(typ) or typ == pci.EXP_ROOT_INT_EP
   if flr_types then s = s .. " " .. F(g, "FLReset", t & 0x10000000 ~= 0) end
   if typ == pci.EXP_ENDPOINT or typ == pci.EXP_UPSTREAM or typ == pci.EXP_PCI_BRIDGE then
      g.SlotPowerLimit = power_limit((t & 0x3fc0000) >> 18, (t & 0xc000000) >> 26)
      s = s .. " SlotPowerLimit " .. g.SlotPowerLimit
   end
   cap:line(s)

   local w = cfg:w(where + 8)
   g = cap:group("DevCtl")
   cap:line("DevCtl:\t" .. F(g, "CorrErr", w & 1 ~= 0) .. " " .. F(g, "NonFatalErr", w & 2 ~= 0)
      .. " " .. F(g, "FatalErr", w & 4 ~= 0) .. " " .. F(g, "UnsupReq", w & 8 ~= 0))
   s = "\t" .. flags(g, w, { { "RlxdOrd", 0x10 }, { "ExtTag", 0x100 }, { "PhantFunc", 0x200 },
      { "AuxPwr", 0x400 }, { "NoSnoop", 0x800 } })
   if typ == pci.EXP_PCI_BRIDGE then s = s .. " " .. F(g, "BrConfRtry", w & 0x8000 ~= 0) end
   if flr_types and t & 0x10000000 ~= 0 then s = s .. " " .. F(g, "FLReset", w & 0x8000 ~= 0) end
   cap:line(s)
   g.MaxPayload, g.MaxReadReq = 128 << ((w & 0xe0) >> 5), 128 << ((w & 0x7000) >> 12)
   cap:line(fmt("\tMaxPayload %d bytes, MaxReadReq %d bytes", g.MaxPayload, g.MaxReadReq))

   w = cfg:w(where + 0xa)
   g = cap:group("DevSta")
   cap:line("DevSta:\t" .. flags(g, w, { { "CorrErr", 1 }, { "NonFatalErr", 2 }, { "FatalErr", 4 },
      { "UnsupReq", 8 }, { "AuxPwr", 0x10 }, { "TransPend", 0x20 } }))
end

local function link_compare(typ, sta, capv)
   if sta > capv then return " (overdriven)" end
   if sta == capv then return "" end
   if typ == pci.EXP_ROOT_PORT or typ == pci.EXP_DOWNSTREAM or typ == pci.EXP_PCIE_BRIDGE then
      return ""
   end
   return " (downgraded)"
end

local function exp_link(cfg, cap, where, typ)
   local t = cfg:l(where + 0xc)
   local g = cap:group("LnkCap")
   local aspm = (t & 0xc00) >> 10
   g.Port, g.Speed, g.Width = t >> 24, link_speed(t & 0xf), (t & 0x3f0) >> 4
   g.ASPM = ({ [0] = "not supported", "L0s", "L1", "L0s L1" })[aspm]
   local s = fmt("LnkCap:\tPort #%d, Speed %s, Width x%d, ASPM %s", g.Port, g.Speed, g.Width, g.ASPM)
   if aspm ~= 0 then
      s = s .. ", Exit Latency "
      if aspm & 1 ~= 0 then s = s .. "L0s " .. L0S[((t & 0x7000) >> 12) + 1] end
      if aspm & 2 ~= 0 then
         s = s .. (aspm & 1 ~= 0 and ", " or "") .. "L1 " .. L1[((t & 0x38000) >> 15) + 1]
      end
   end
   cap:line(s)
   cap:line("\t" .. flags(g, t, { { "ClockPM", 0x40000 }, { "Surprise", 0x80000 },
      { "LLActRep", 0x100000 }, { "BwNot", 0x200000 }, { "ASPMOptComp", 0x400000 } }))

   local w = cfg:w(where + 0x10)
   local c = cap:group("LnkCtl")
   c.ASPM = ({ [0] = "Disabled", "L0s Enabled", "L1 Enabled", "L0s L1 Enabled" })[w & 3]
   s = fmt("LnkCtl:\tASPM %s;", c.ASPM)
   if typ == pci.EXP_ROOT_PORT or is_ep(typ) or typ == pci.EXP_PCI_BRIDGE then
      c.RCB = w & 8 ~= 0 and 128 or 64
      s = s .. fmt(" RCB %d bytes,", c.RCB)
   end
   cap:line(s .. " " .. F(c, "Disabled", w & 0x10 ~= 0) .. " " .. F(c, "CommClk", w & 0x40 ~= 0))
   cap:line("\t" .. flags(c, w, { { "ExtSynch", 0x80 }, { "ClockPM", 0x100 }, { "AutWidDis", 0x200 },
      { "BWInt", 0x400 }, { "AutBWInt", 0x800 } }))

   w = cfg:w(where + 0x12)
   local st = cap:group("LnkSta")
   local ss, sw = w & 0xf, (w & 0x3f0) >> 4
   st.Speed, st.Width = link_speed(ss), sw
   cap:line(fmt("LnkSta:\tSpeed %s%s, Width x%d%s", st.Speed, link_compare(typ, ss, t & 0xf),
      sw, link_compare(typ, sw, g.Width)))
   cap:line("\t" .. flags(st, w, { { "TrErr", 0x400 }, { "Train", 0x800 }, { "SlotClk", 0x1000 },
      { "DLActive", 0x2000 }, { "BWMgmt", 0x4000 }, { "ABWMgmt", 0x8000 } }))
end

local INDICATOR = { [0] = "Unknown", "On", "Blink", "Off" }

local function exp_slot(cfg, cap, where)
   local t = cfg:l(where + 0x14)
   local g = cap:group("SltCap")
   cap:line("SltCap:\t" .. flags(g, t, { { "AttnBtn", 1 }, { "PwrCtrl", 2 }, { "MRL", 4 },
      { "AttnInd", 8 }, { "PwrInd", 0x10 }, { "HotPlug", 0x40 }, { "Surprise", 0x20 } }))
   g.Slot = (t & 0xfff80000) >> 19
   g.PowerLimit = power_limit((t & 0x7f80) >> 7, (t & 0x18000) >> 15)
   cap:line(fmt("\tSlot #%d, PowerLimit %s; %s %s", g.Slot, g.PowerLimit,
      F(g, "Interlock", t & 0x20000 ~= 0), F(g, "NoCompl", t & 0x40000 ~= 0)))
   local w = cfg:w(where + 0x18)
   local c = cap:group("SltCtl")
   cap:line("SltCtl:\tEnable: " .. flags(c, w, { { "AttnBtn", 1 }, { "PwrFlt", 2 }, { "MRL", 4 },
      { "PresDet", 8 }, { "CmdCplt", 0x10 }, { "HPIrq", 0x20 }, { "LinkChg", 0x1000 } }))
   c.AttnInd, c.PwrInd = INDICATOR[(w & 0xc0) >> 6], INDICATOR[(w & 0x300) >> 8]
   cap:line(fmt("\tControl: AttnInd %s, PwrInd %s, %s %s", c.AttnInd, c.PwrInd,
      F(c, "Power", w & 0x400 ~= 0), F(c, "Interlock", w & 0x800 ~= 0)))
   w = cfg:w(where + 0x1a)
   local s = cap:group("SltSta")
   cap:line("SltSta:\tStatus: " .. flags(s, w, { { "AttnBtn", 1 }, { "PowerFlt", 2 },
      { "MRL", 0x20 }, { "CmdCplt", 0x10 }, { "PresDet", 0x40 }, { "Interlock", 0x80 } }))
   local ch = {}
   s.Changed = ch
   cap:line("\tChanged: " .. flags(ch, w, { { "MRL", 4 }, { "PresDet", 8 }, { "LinkState", 0x100 } }))
end

local function exp_root(cfg, cap, where)
   local w = cfg:w(where + 0x1e)
   local g = cap:group("RootCap")
   cap:line("RootCap: " .. F(g, "CRSVisible", w & 1 ~= 0))
   w = cfg:w(where + 0x1c)
   g = cap:group("RootCtl")
   cap:line("RootCtl: " .. flags(g, w, { { "ErrCorrectable", 1 }, { "ErrNon-Fatal", 2 },
      { "ErrFatal", 4 }, { "PMEIntEna", 8 }, { "CRSVisible", 0x10 } }))
   local l = cfg:l(where + 0x20)
   g = cap:group("RootSta")
   g.ReqID = l & 0xffff
   cap:line(fmt("RootSta: PME ReqID %04x, %s %s", g.ReqID, F(g, "PMEStatus", l & 0x10000 ~= 0),
      F(g, "PMEPending", l & 0x20000 ~= 0)))
end

local TIMEOUT_RANGE = { [0] = "Not Supported", "Range A", "Range B", "Range AB",
   [6] = "Range BC", [7] = "Range ABC", [14] = "Range BCD", [15] = "Range ABCD" }
local TIMEOUT_VALUE = { [0] = "50us to 50ms", "50us to 100us", "1ms to 10ms",
   [5] = "16ms to 55ms", [6] = "65ms to 210ms", [9] = "260ms to 900ms", [10] = "1s to 3.5s",
   [13] = "4s to 13s", [14] = "17s to 64s" }
local OBFF_CAP = { [0] = "Not Supported", "Via message", "Via WAKE#", "Via message/WAKE#" }
local EPR = { [0] = "Not Supported", "Dev Specific", "Form Factor Dev Specific", "Reserved" }
local LNCLS = { [0] = "Not Supported", "64byte cachelines", "128byte cachelines", "Reserved" }
local TPH = { [0] = "TPHComp- ExtTPHComp-", "TPHComp+ ExtTPHComp-", "", "TPHComp+ ExtTPHComp+" }
local OBFF_CTL = { [0] = "Disabled", "Via message A", "Via message B", "Via WAKE#" }

local function exp_dev2(cfg, cap, where, typ, info)
   local l = cfg:l(where + 0x24)
   local g = cap:group("DevCap2")
   local rp, ds, us = typ == pci.EXP_ROOT_PORT, typ == pci.EXP_DOWNSTREAM, typ == pci.EXP_UPSTREAM
   g.CompletionTimeout = TIMEOUT_RANGE[l & 0xf] or "Unknown"
   cap:line(fmt("DevCap2: Completion Timeout: %s, %s %s %s", g.CompletionTimeout,
      F(g, "TimeoutDis", l & 0x10 ~= 0), F(g, "NROPrPrP", l & 0x400 ~= 0), F(g, "LTR", l & 0x800 ~= 0)))
   g.OBFF = OBFF_CAP[(l >> 18) & 3]
   local s = fmt("\t 10BitTagComp%s 10BitTagReq%s OBFF %s, ExtFmt%s EETLPPrefix%s",
      fl(l & 0x10000 ~= 0), fl(l & 0x20000 ~= 0), g.OBFF, fl(l & 0x100000 ~= 0), fl(l & 0x200000 ~= 0))
   g["10BitTagComp"], g["10BitTagReq"] = l & 0x10000 ~= 0, l & 0x20000 ~= 0
   g.ExtFmt, g.EETLPPrefix = l & 0x100000 ~= 0, l & 0x200000 ~= 0
   if g.EETLPPrefix then
      local n = (l >> 22) & 3
      g.MaxEETLPPrefixes = n ~= 0 and n or 4
      s = s .. fmt(", MaxEETLPPrefixes %d", g.MaxEETLPPrefixes)
   end
   cap:line(s)
   g.EmergencyPowerReduction = EPR[(l >> 24) & 3]
   cap:line(fmt("\t EmergencyPowerReduction %s, %s", g.EmergencyPowerReduction,
      F(g, "EmergencyPowerReductionInit", l & 0x04000000 ~= 0)))
   s = "\t " .. F(g, "FRS", l & 0x80000000 ~= 0)
   if rp then
      g.LNSystemCLS = LNCLS[(l >> 14) & 3]
      s = s .. fmt(" LN System CLS %s,", g.LNSystemCLS)
   end
   if rp or typ == pci.EXP_ENDPOINT then
      local tph = (l >> 12) & 3
      g.TPHComp, g.ExtTPHComp = tph & 1 ~= 0, tph == 3
      s = s .. " " .. TPH[tph]
   end
   if rp or ds then s = s .. " " .. F(g, "ARIFwd", l & 0x20 ~= 0) end
   cap:line(s)
   if rp or us or ds or info.has_mem_bar then
      s = "\t AtomicOpsCap:"
      local a = {}
      g.AtomicOpsCap = a
      if rp or us or ds then s = s .. " " .. F(a, "Routing", l & 0x40 ~= 0) end
      if rp or info.has_mem_bar then
         s = s .. " " .. flags(a, l, { { "32bit", 0x80 }, { "64bit", 0x100 }, { "128bitCAS", 0x200 } })
      end
      cap:line(s)
   end

   local w = cfg:w(where + 0x28)
   g = cap:group("DevCtl2")
   g.CompletionTimeout = TIMEOUT_VALUE[w & 0xf] or "Unknown"
   g.OBFF = OBFF_CTL[(w >> 13) & 3]
   s = fmt("DevCtl2: Completion Timeout: %s, %s %s %s OBFF %s,", g.CompletionTimeout,
      F(g, "TimeoutDis", w & 0x10 ~= 0), F(g, "LTR", w & 0x400 ~= 0),
      F(g, "10BitTagReq", w & 0x1000 ~= 0), g.OBFF)
   if rp or ds then s = s .. " " .. F(g, "ARIFwd", w & 0x20 ~= 0) end
   cap:line(s)
   if rp or us or ds or typ == pci.EXP_ENDPOINT or typ == pci.EXP_ROOT_INT_EP
      or typ == pci.EXP_LEG_END then
      s = "\t AtomicOpsCtl:"
      local a = {}
      g.AtomicOpsCtl = a
      if rp or typ == pci.EXP_ENDPOINT or typ == pci.EXP_ROOT_INT_EP or typ == pci.EXP_LEG_END then
         s = s .. " " .. F(a, "ReqEn", w & 0x40 ~= 0)
      end
      if rp or us or ds then s = s .. " " .. F(a, "EgressBlck", w & 0x80 ~= 0) end
      cap:line(s)
   end
end

local function speed_vector(v)
   if v & 0x60 ~= 0 then return "RsvdP" end
   if v & 0x10 ~= 0 then return "2.5-32GT/s" end
   if v & 0x08 ~= 0 then return "2.5-16GT/s" end
   if v & 0x04 ~= 0 then return "2.5-8GT/s" end
   if v & 0x02 ~= 0 then return "2.5-5GT/s" end
   if v & 0x01 ~= 0 then return "2.5GT/s" end
   return "Unknown"
end

local TARGET_SPEED = { [0] = "2.5GT/s", "2.5GT/s", "5GT/s", "8GT/s", "16GT/s", "32GT/s", "64GT/s" }
local DEEMPH = { [0] = "-6dB", "-3.5dB" }
local PRESET = { [0] = "-6dB de-emphasis, 0dB preshoot", "-3.5dB de-emphasis, 0dB preshoot",
   "-4.4dB de-emphasis, 0dB preshoot", "-2.5dB de-emphasis, 0dB preshoot",
   "0dB de-emphasis, 0dB preshoot", "0dB de-emphasis, 1.9dB preshoot",
   "0dB de-emphasis, 2.5dB preshoot", "-6.0dB de-emphasis, 3.5dB preshoot",
   "-3.5dB de-emphasis, 3.5dB preshoot", "0dB de-emphasis, 3.5dB preshoot" }
local MARGIN = { [0] = "Normal Operating Range", "800-1200mV(full-swing)/400-700mV(half-swing)",
   "200-400mV(full-swing)/100-200mV(half-swing)", "200-400mV(full-swing)/100-200mV(half-swing)",
   "200-400mV(full-swing)/100-200mV(half-swing)", "200-400mV(full-swing)/100-200mV(half-swing)" }
local CROSSLINK = { [0] = "unsupported", "Upstream Port", "Downstream Port", "incomplete" }
local COMPONENT = { [0] = "Link Down - Not Determined", "Link Down - Not Present",
   "Link Down - Present", [4] = "Link Up - Present", [5] = "Link Up - Present and DRS Received" }

local function exp_link2(cfg, cap, where, typ, info)
   local l = 0
   -- Link Capabilities 2 was reserved before PCIe 3.0 on non-zero functions of endpoints.
   if not (is_ep(typ) and (info.slot_dev ~= 0 or info.slot_func ~= 0)) then
      l = cfg:l(where + 0x2c)
      if l ~= 0 then
         local g = cap:group("LnkCap2")
         g.SupportedLinkSpeeds = speed_vector((l >> 1) & 0x7f)
         cap:line(fmt("LnkCap2: Supported Link Speeds: %s, %s", g.SupportedLinkSpeeds,
            flags(g, l, { { "Crosslink", 0x100 }, { "Retimer", 0x800000 },
               { "2Retimers", 0x1000000 }, { "DRS", 0x80000000 } })))
      end
      local w = cfg:w(where + 0x30)
      local g = cap:group("LnkCtl2")
      g.TargetLinkSpeed = TARGET_SPEED[w & 0xf] or "Unknown"
      local s = fmt("LnkCtl2: Target Link Speed: %s, %s %s", g.TargetLinkSpeed,
         F(g, "EnterCompliance", w & 0x10 ~= 0), F(g, "SpeedDis", w & 0x20 ~= 0))
      if typ == pci.EXP_DOWNSTREAM then
         g.SelectableDeemphasis = DEEMPH[(w >> 6) & 1]
         s = s .. ", Selectable De-emphasis: " .. g.SelectableDeemphasis
      end
      cap:line(s)
      g.TransmitMargin = MARGIN[(w >> 7) & 7] or "Unknown"
      cap:line(fmt("\t Transmit Margin: %s, %s %s", g.TransmitMargin,
         F(g, "EnterModifiedCompliance", w & 0x400 ~= 0), F(g, "ComplianceSOS", w & 0x800 ~= 0)))
      g.CompliancePreset = PRESET[(w >> 12) & 0xf] or "Unknown"
      cap:line("\t Compliance Preset/De-emphasis: " .. g.CompliancePreset)
   end
   local w = cfg:w(where + 0x32)
   local g = cap:group("LnkSta2")
   g.DeemphasisLevel = DEEMPH[w & 1]
   cap:line(fmt("LnkSta2: Current De-emphasis Level: %s, %s", g.DeemphasisLevel,
      flags(g, w, { { "EqualizationComplete", 2 }, { "EqualizationPhase1", 4 } })))
   cap:line("\t " .. flags(g, w, { { "EqualizationPhase2", 8 }, { "EqualizationPhase3", 0x10 },
      { "LinkEqualizationRequest", 0x20 } }))
   g.CrosslinkRes = CROSSLINK[(w >> 8) & 3]
   local s = "\t " .. flags(g, w, { { "Retimer", 0x40 }, { "2Retimers", 0x80 } })
      .. " CrosslinkRes: " .. g.CrosslinkRes
   local downstream = typ == pci.EXP_ROOT_PORT or typ == pci.EXP_DOWNSTREAM
      or typ == pci.EXP_PCIE_BRIDGE
   if downstream and l & 0x80000000 ~= 0 then
      s = s .. ", " .. F(g, "DRS", w & 0x8000 ~= 0)
      cap:line(s)
      g.DownstreamComp = COMPONENT[(w >> 12) & 7] or "Reserved"
      cap:line("\t DownstreamComp: " .. g.DownstreamComp)
   else
      cap:line(s)
   end
end

local function cap_express(cfg, cap, where, w, info)
   local typ = (w & 0xf0) >> 4
   local slot, link = false, true
   local name = pci.exp_types[typ]
   if typ == pci.EXP_ROOT_PORT or typ == pci.EXP_DOWNSTREAM or typ == pci.EXP_PCIE_BRIDGE then
      slot = w & 0x100 ~= 0
      name = name .. " (Slot" .. fl(slot) .. ")"
   elseif typ == pci.EXP_ROOT_INT_EP or typ == pci.EXP_ROOT_EC then
      link = false
   end
   cap.version, cap.type, cap.type_name = w & 0xf, typ, pci.exp_types[typ]
   cap.msi_message = (w & 0x3e00) >> 9
   cap.title = fmt("Express (v%d) %s, MSI %02x", w & 0xf, name or ("Unknown type " .. typ),
      cap.msi_message)
   info.express_type = typ
   local size = 16
   if slot then size = 24 end
   if typ == pci.EXP_ROOT_PORT or typ == pci.EXP_ROOT_EC then size = 32 end
   if not cfg:has(where + 4, size) then return end
   exp_dev(cfg, cap, where, typ)
   if link then exp_link(cfg, cap, where, typ) end
   if slot then exp_slot(cfg, cap, where) end
   if typ == pci.EXP_ROOT_PORT or typ == pci.EXP_ROOT_EC then exp_root(cfg, cap, where) end
   if (w & 0xf) < 2 then return end
   if not cfg:has(where + 0x24, slot and 24 or 16) then return end
   exp_dev2(cfg, cap, where, typ, info)
   if link then exp_link2(cfg, cap, where, typ, info) end
end

local std_decoders = {
   [0x01] = cap_pm, [0x05] = cap_msi, [0x09] = cap_vendor, [0x0d] = cap_ssvid,
   [0x10] = cap_express, [0x11] = cap_msix, [0x12] = cap_sata,
}

---------------------------------------------------------------- extended capabilities

local function aer_line(cap, label, l, list)
   local g = cap:group(label)
   cap:line(label .. ":\t" .. flags(g, l, list))
end

local function ecap_aer(cfg, cap, where, info)
   cap.title = "Advanced Error Reporting"
   if not cfg:has(where + 4, 40) then return end
   aer_line(cap, "UESta", cfg:l(where + 4), pci.aer_uncorrectable)
   aer_line(cap, "UEMsk", cfg:l(where + 8), pci.aer_uncorrectable)
   aer_line(cap, "UESvrt", cfg:l(where + 12), pci.aer_uncorrectable)
   aer_line(cap, "CESta", cfg:l(where + 16), pci.aer_correctable)
   aer_line(cap, "CEMsk", cfg:l(where + 20), pci.aer_correctable)
   local l = cfg:l(where + 24)
   local g = cap:group("AERCap")
   g.FirstErrorPointer = l & 31
   cap:line(fmt("AERCap:\tFirst Error Pointer: %02x, %s", l & 31, flags(g, l, {
      { "ECRCGenCap", 0x20 }, { "ECRCGenEn", 0x40 }, { "ECRCChkCap", 0x80 }, { "ECRCChkEn", 0x100 } })))
   cap:line("\t" .. flags(g, l, { { "MultHdrRecCap", 0x200 }, { "MultHdrRecEn", 0x400 },
      { "TLPPfxPres", 0x800 }, { "HdrLogCap", 0x1000 } }))
   local h = { cfg:l(where + 28), cfg:l(where + 32), cfg:l(where + 36), cfg:l(where + 40) }
   cap.regs.HeaderLog = h
   cap:line(fmt("HeaderLog: %08x %08x %08x %08x", h[1], h[2], h[3], h[4]))
   local typ = info.express_type
   if (typ == pci.EXP_ROOT_PORT or typ == pci.EXP_ROOT_EC) and cfg:has(where + 44, 12) then
      l = cfg:l(where + 44)
      g = cap:group("RootCmd")
      cap:line("RootCmd: " .. flags(g, l, { { "CERptEn", 1 }, { "NFERptEn", 2 }, { "FERptEn", 4 } }))
      l = cfg:l(where + 48)
      g = cap:group("RootSta")
      cap:line("RootSta: " .. flags(g, l, { { "CERcvd", 1 }, { "MultCERcvd", 2 }, { "UERcvd", 4 },
         { "MultUERcvd", 8 } }))
      g.IntMsg = (l >> 27) & 0x1f
      cap:line(fmt("\t %s IntMsg %d", flags(g, l, { { "FirstFatal", 0x10 }, { "NonFatalMsg", 0x20 },
         { "FatalMsg", 0x40 } }), g.IntMsg))
      g = cap:group("ErrorSrc")
      g.ERR_COR, g.ERR_FATAL_NONFATAL = cfg:w(where + 52), cfg:w(where + 54)
      cap:line(fmt("ErrorSrc: ERR_COR: %04x ERR_FATAL/NONFATAL: %04x", g.ERR_COR,
         g.ERR_FATAL_NONFATAL))
   end
end

local function ecap_dsn(cfg, cap, where)
   local t1, t2 = cfg:l(where + 4), cfg:l(where + 8)
   if not (t1 and t2) then cap.title = "Device Serial Number"; return end
   cap.serial = t2 << 32 | t1
   cap.title = fmt("Device Serial Number %02x-%02x-%02x-%02x-%02x-%02x-%02x-%02x",
      t2 >> 24, (t2 >> 16) & 0xff, (t2 >> 8) & 0xff, t2 & 0xff,
      t1 >> 24, (t1 >> 16) & 0xff, (t1 >> 8) & 0xff, t1 & 0xff)
end

local ACS_BITS = { { "SrcValid", 1 }, { "TransBlk", 2 }, { "ReqRedir", 4 }, { "CmpltRedir", 8 },
   { "UpstreamFwd", 0x10 }, { "EgressCtrl", 0x20 }, { "DirectTrans", 0x40 } }

local function ecap_acs(cfg, cap, where)
   cap.title = "Access Control Services"
   if not cfg:has(where + 4, 4) then return end
   cap:line("ACSCap:\t" .. flags(cap:group("ACSCap"), cfg:w(where + 4), ACS_BITS))
   cap:line("ACSCtl:\t" .. flags(cap:group("ACSCtl"), cfg:w(where + 6), ACS_BITS))
end

local function ecap_ari(cfg, cap, where)
   cap.title = "Alternative Routing-ID Interpretation (ARI)"
   if not cfg:has(where + 4, 4) then return end
   local w = cfg:w(where + 4)
   local g = cap:group("ARICap")
   g.NextFunction = (w >> 8) & 0xff
   cap:line(fmt("ARICap:\t%s %s, Next Function: %d", F(g, "MFVC", w & 1 ~= 0), F(g, "ACS", w & 2 ~= 0),
      g.NextFunction))
   w = cfg:w(where + 6)
   g = cap:group("ARICtl")
   g.FunctionGroup = (w >> 4) & 7
   cap:line(fmt("ARICtl:\t%s %s, Function Group: %d", F(g, "MFVC", w & 1 ~= 0), F(g, "ACS", w & 2 ~= 0),
      g.FunctionGroup))
end

local function ecap_ats(cfg, cap, where)
   cap.title = "Address Translation Service (ATS)"
   if not cfg:has(where + 4, 4) then return end
   local w = cfg:w(where + 4)
   local g = cap:group("ATSCap")
   g.InvalidateQueueDepth = w & 0x1f
   cap:line(fmt("ATSCap:\tInvalidate Queue Depth: %02x", g.InvalidateQueueDepth))
   w = cfg:w(where + 6)
   g = cap:group("ATSCtl")
   g.SmallestTranslationUnit = w & 0x1f
   cap:line(fmt("ATSCtl:\t%s, Smallest Translation Unit: %02x", F(g, "Enable", w & 0x8000 ~= 0),
      g.SmallestTranslationUnit))
end

local function ecap_sriov(cfg, cap, where)
   cap.title = "Single Root I/O Virtualization (SR-IOV)"
   if not cfg:has(where + 4, 0x3c) then return end
   local l = cfg:l(where + 4)
   local g = cap:group("IOVCap")
   g.InterruptMessageNumber = l >> 21
   cap:line(fmt("IOVCap:\t%s %s Interrupt Message Number: %03x", F(g, "Migration", l & 1 ~= 0),
      F(g, "10BitTagReq", l & 4 ~= 0), l >> 21))
   local w = cfg:w(where + 8)
   cap:line("IOVCtl:\t" .. flags(cap:group("IOVCtl"), w, { { "Enable", 1 }, { "Migration", 2 },
      { "Interrupt", 4 }, { "MSE", 8 }, { "ARIHierarchy", 0x10 }, { "10BitTagReq", 0x20 } }))
   cap:line("IOVSta:\t" .. F(cap:group("IOVSta"), "Migration", cfg:w(where + 0xa) & 1 ~= 0))
   g = cap:group("VFs")
   g.Initial, g.Total, g.Number = cfg:w(where + 0xc), cfg:w(where + 0xe), cfg:w(where + 0x10)
   g.FunctionDependencyLink = cfg:b(where + 0x12)
   g.Offset, g.Stride, g.DeviceID = cfg:w(where + 0x14), cfg:w(where + 0x16), cfg:w(where + 0x1a)
   g.SupportedPageSize, g.SystemPageSize = cfg:l(where + 0x1c), cfg:l(where + 0x20)
   cap:line(fmt("Initial VFs: %d, Total VFs: %d, Number of VFs: %d, Function Dependency Link: %02x",
      g.Initial, g.Total, g.Number, g.FunctionDependencyLink))
   cap:line(fmt("VF offset: %d, stride: %d, Device ID: %04x", g.Offset, g.Stride, g.DeviceID))
   cap:line(fmt("Supported Page Size: %08x, System Page Size: %08x", g.SupportedPageSize,
      g.SystemPageSize))
   cap.vf_bars = {}
   local i = 0
   while i < 6 do
      l = cfg:l(where + 0x24 + 4 * i)
      if l == 0xffffffff then l = 0 end
      if l ~= 0 then
         local idx = i
         local typ = l & 6
         local s = fmt("Region %d: Memory at ", idx)
         local addr = l & 0xfffffff0
         if typ == 4 then
            i = i + 1
            local h = cfg:l(where + 0x24 + 4 * i)
            s = s .. fmt("%08x", h)
            addr = h << 32 | addr
         end
         cap.vf_bars[#cap.vf_bars + 1] = { index = idx, address = addr, bits = typ == 4 and 64 or 32,
            prefetchable = l & 8 ~= 0 }
         cap:line(s .. fmt("%08x (%s-bit, %sprefetchable)", l & 0xfffffff0, typ == 0 and "32" or "64",
            l & 8 ~= 0 and "" or "non-"))
      end
      i = i + 1
   end
   l = cfg:l(where + 0x3c)
   cap:line(fmt("VF Migration: offset: %08x, BIR: %x", l & 0xfffffff8, l & 7))
end

local function ecap_ltr(cfg, cap, where)
   cap.title = "Latency Tolerance Reporting"
   if not cfg:has(where + 4, 4) then return end
   local g = cap:group("LTR")
   for _, r in ipairs { { "Max snoop latency", 4, "MaxSnoop" }, { "Max no snoop latency", 6, "MaxNoSnoop" } } do
      local v = cfg:w(where + r[2])
      g[r[3]] = (v & 0x3ff) * (1 << (((v >> 10) & 7) * 5))
      cap:line(fmt("%s: %dns", r[1], g[r[3]]))
   end
end

local function ecap_evendor(cfg, cap, where)
   local h = cfg:l(where + 4)
   if not h then cap.title = "Vendor Specific Information: <unreadable>"; return end
   cap.vsec = { id = h & 0xffff, rev = (h >> 16) & 0xf, length = h >> 20 }
   cap.title = fmt("Vendor Specific Information: ID=%04x Rev=%d Len=%03x <?>", cap.vsec.id,
      cap.vsec.rev, cap.vsec.length)
end

local function ecap_dvsec(cfg, cap, where)
   local h1, h2 = cfg:l(where + 4), cfg:w(where + 8)
   if not (h1 and h2) then cap.title = "Designated Vendor-Specific: <unreadable>"; return end
   cap.dvsec = { vendor = h1 & 0xffff, rev = (h1 >> 16) & 0xf, length = h1 >> 20, id = h2 }
   cap.title = fmt("Designated Vendor-Specific: Vendor=%04x ID=%04x Rev=%d Len=%d <?>",
      cap.dvsec.vendor, h2, cap.dvsec.rev, cap.dvsec.length)
   cap.partial = cap.dvsec.vendor == 0x1e98 -- CXL bodies are not decoded here
end

-- Extended capabilities decoded by title only (pci.ext_cap_ids' name, then what lspci
-- appends): lspci prints more for these, this library marks them partial so comparisons
-- know the body is not reproduced.
local title_only = {
   [0x02] = "", [0x09] = "", [0x13] = "", [0x15] = "", [0x17] = "", [0x19] = "", [0x1b] = "",
   [0x1d] = "", [0x1e] = "", [0x1f] = "", [0x24] = "", [0x05] = "", [0x07] = " <?>",
   [0x12] = "", [0x2e] = "",
}

local ext_decoders = {
   [0x01] = ecap_aer, [0x03] = ecap_dsn, [0x0b] = ecap_evendor, [0x0d] = ecap_acs,
   [0x0e] = ecap_ari, [0x0f] = ecap_ats, [0x10] = ecap_sriov, [0x18] = ecap_ltr,
   [0x23] = ecap_dvsec,
}

---------------------------------------------------------------- header and BARs

local function size_string(x)
   if not x or x == 0 then return "" end
   local suffix = { "", "K", "M", "G", "T" }
   local i = 1
   while i < #suffix and x % 1024 == 0 do
      x = x // 1024
      i = i + 1
   end
   return fmt(" [size=%d%s]", x, suffix[i])
end
M.size_string = size_string

-- sysfs resource flags (include/linux/ioport.h) -> what a BAR's low bits would say.
local IORESOURCE_IO, IORESOURCE_MEM = 0x100, 0x200
local IORESOURCE_PREFETCH, IORESOURCE_MEM_64 = 0x2000, 0x100000

--- Functions of the module.
-- @section functions

--- lspci's size suffix of a length: `" [size=4K]"`, `""` for nil or 0.
-- (defined as a local above, exported as M.size_string)
-- @function size_string

---
-- Parse the text of /sys/bus/pci/devices/BDF/resource: { [0..6] = {start=, size=, flags=} }.
function M.parse_resource(text)
   local res, i = {}, 0
   for a, b, f in text:gmatch("0x(%x+) 0x(%x+) 0x(%x+)") do
      local s, e = tonumber(a, 16), tonumber(b, 16)
      res[i] = { start = s, size = e > s and e - s + 1 or 0, flags = tonumber(f, 16) }
      i = i + 1
   end
   -- Bridge windows follow the ROM line: right after it, or after six SR-IOV lines.
   if i == 11 or i == 17 then
      res.bridge = {}
      for w = 0, 3 do res.bridge[w] = res[i - 4 + w] end
   end
   return res
end

local function decode_bars(cfg, info, n, resources)
   local cmd = info.command
   local bars = {}
   local i = 0
   while i < n do
      local off = 0x10 + 4 * i
      local hw = cfg:l(off) or 0
      local bar = { index = i }
      local res = resources and resources[i]
      local skip_next = false
      if res then
         -- Like lspci with sysfs: address, size and type from the kernel's resource.
         local f = res.flags
         bar.io = f & IORESOURCE_IO ~= 0
         bar.mem = not bar.io and f & IORESOURCE_MEM ~= 0
         bar.bits = bar.mem and (f & IORESOURCE_MEM_64 ~= 0 and 64 or 32) or nil
         bar.prefetchable = bar.mem and f & IORESOURCE_PREFETCH ~= 0
         bar.address, bar.size = res.start, res.size
         bar.type_known = bar.io or bar.mem
         if bar.mem and hw & 1 == 0 and hw & 6 == 4 then
            local hi = cfg:l(off + 4) or 0
            bar.virtual = res.start ~= 0 and hw == 0 and hi == 0
         else
            bar.virtual = res.start ~= 0 and hw == 0 and bar.type_known
               and (hw & 1 == 1) == bar.io
         end
      else
         bar.io = hw & 1 == 1
         bar.mem = not bar.io and hw ~= 0
         bar.hw = hw
         if bar.io then
            bar.address = hw & 0xfffffffc
         else
            local t = hw & 6
            bar.bits = t == 4 and 64 or t == 0 and 32 or t == 2 and "1M" or "type 3"
            bar.prefetchable = hw & 8 ~= 0
            bar.address = hw & 0xfffffff0
            if t == 4 then
               bar.address = bar.address | (cfg:l(off + 4) or 0) << 32
               skip_next = true
            end
         end
         bar.type_known = hw ~= 0
         bar.size = info.bar_sizes and info.bar_sizes[i] or 0
         if bar.size ~= 0 and hw == 0 then bar.unassigned = true end
      end
      if bar.address ~= 0 or bar.type_known or bar.size ~= 0 then
         bar.disabled = bar.io and cmd & 1 == 0 or (not bar.io and cmd & 2 == 0)
         bars[#bars + 1] = bar
      end
      i = i + (skip_next and 2 or 1)
   end
   return bars
end

local function bar_text(bar)
   local s = fmt("Region %d: ", bar.index)
   if bar.io then
      s = s .. "I/O ports at "
      if bar.address ~= 0 or not bar.disabled then s = s .. fmt("%04x", bar.address)
      else s = s .. "<unassigned>" end
   else
      local bits = bar.bits == 64 and "64-bit" or bar.bits == 32 and "32-bit"
         or bar.bits == "1M" and "low-1M" or "type 3"
      s = s .. "Memory at " .. (bar.address ~= 0 and fmt("%08x", bar.address) or "<unassigned>")
         .. fmt(" (%s, %sprefetchable)", bits, bar.prefetchable and "" or "non-")
   end
   if bar.virtual then s = s .. " [virtual]"
   elseif bar.disabled then s = s .. " [disabled]" end
   return s .. size_string(bar.size)
end

local function decode_rom(cfg, info, reg, res)
   local flg = cfg:l(reg) or 0
   local rom = res and res.start or (flg & 0xfffff800)
   local len = res and res.size or info.rom_size or 0
   if rom == 0 and flg == 0 and len == 0 then return nil end
   local r = { address = rom & 0xfffff800, size = len, enabled = flg & 1 == 1 }
   local virtual = false
   if rom & 0xfffff800 ~= 0 and flg & 0xfffff800 == 0 then
      flg, virtual = rom, true
   end
   r.virtual = virtual
   local s = "Expansion ROM at "
   if rom & 0xfffff800 ~= 0 then s = s .. fmt("%08x", rom & 0xfffff800)
   elseif flg & 0xfffff800 ~= 0 then s = s .. "<ignored>"
   else s = s .. "<unassigned>" end
   if virtual then s = s .. " [virtual]" end
   if flg & 1 == 0 then s = s .. " [disabled]"
   elseif not virtual and info.command & 2 == 0 then s = s .. " [disabled by cmd]" end
   r.text = s .. size_string(len)
   return r
end

-- Type 1 (bridge) header: bus numbers, forwarding windows, secondary status, bridge control.
-- Windows come from sysfs when given (as lspci does), else from the config registers.
local function range_line(prefix, base, limit, bits, disabled)
   local digits = (bits + 3) // 4
   local s = fmt("%s: %0" .. digits .. "x-%0" .. digits .. "x", prefix, base, limit)
   if not disabled and base <= limit then s = s .. size_string(limit - base + 1)
   else s = s .. " [disabled]" end
   if bits ~= 0 then s = s .. fmt(" [%d-bit]", bits) end
   return s
end

local function decode_bridge(cfg, info, res)
   local pre, post = {}, {}
   local b = { primary = cfg:b(0x18), secondary = cfg:b(0x19), subordinate = cfg:b(0x1a),
      sec_latency = cfg:b(0x1b) }
   info.bus = b
   pre[#pre + 1] = fmt("Bus: primary=%02x, secondary=%02x, subordinate=%02x, sec-latency=%d",
      b.primary, b.secondary, b.subordinate, b.sec_latency)
   local win = res and res.bridge
   local io_dis = win and win[0].size == 0
   local mem_dis = win and win[1].size == 0
   local pref_dis = win and win[2].size == 0
   local io_base, io_limit = cfg:b(0x1c), cfg:b(0x1d)
   local io_type = io_base & 0xf
   info.windows = {}
   if win and not io_dis then
      local base = win[0].start & ~0xf
      local bits = (win[0].start & 0xf) == 1 and 32 or 16
      info.windows.io = { base = base, limit = base + win[0].size - 1 }
      pre[#pre + 1] = range_line("I/O behind bridge", base, base + win[0].size - 1, bits, io_dis)
   elseif io_type ~= (io_limit & 0xf) or (io_type ~= 0 and io_type ~= 1) then
      pre[#pre + 1] = fmt("!!! Unknown I/O range types %x/%x", io_base, io_limit)
   else
      local base, limit = (io_base & 0xf0) << 8, (io_limit & 0xf0) << 8
      if io_type == 1 then
         base = base | cfg:w(0x30) << 16
         limit = limit | cfg:w(0x32) << 16
      end
      if not (base == 0 and limit == 0 and io_dis) then
         info.windows.io = { base = base, limit = limit + 0xfff }
         pre[#pre + 1] = range_line("I/O behind bridge", base, limit + 0xfff, io_type == 1 and 32 or 16, io_dis)
      end
   end
   local mem_base, mem_limit = cfg:w(0x20), cfg:w(0x22)
   if win and not mem_dis then
      local base = win[1].start & ~0xf
      info.windows.memory = { base = base, limit = base + win[1].size - 1 }
      pre[#pre + 1] = range_line("Memory behind bridge", base, base + win[1].size - 1, 32, mem_dis)
   elseif (mem_base & 0xf) ~= (mem_limit & 0xf) or mem_base & 0xf ~= 0 then
      pre[#pre + 1] = fmt("!!! Unknown memory range types %x/%x", mem_base, mem_limit)
   else
      local base, limit = (mem_base & 0xfff0) << 16, (mem_limit & 0xfff0) << 16
      info.windows.memory = { base = base, limit = limit + 0xfffff }
      pre[#pre + 1] = range_line("Memory behind bridge", base, limit + 0xfffff, 32, mem_dis)
   end
   local pbase, plimit = cfg:w(0x24), cfg:w(0x26)
   local ptype = pbase & 0xf
   if win and not pref_dis then
      local base = win[2].start & ~0xf
      local bits = (win[2].start & 0xf) == 1 and 64 or 32
      info.windows.prefetchable = { base = base, limit = base + win[2].size - 1 }
      pre[#pre + 1] = range_line("Prefetchable memory behind bridge", base, base + win[2].size - 1, bits, pref_dis)
   elseif ptype ~= (plimit & 0xf) or (ptype ~= 0 and ptype ~= 1) then
      pre[#pre + 1] = fmt("!!! Unknown prefetchable memory range types %x/%x", pbase, plimit)
   else
      local base, limit = (pbase & 0xfff0) << 16, (plimit & 0xfff0) << 16
      if ptype == 1 then
         base = base | cfg:l(0x28) << 32
         limit = limit | cfg:l(0x2c) << 32
      end
      if not (base == 0 and limit == 0 and pref_dis) then
         info.windows.prefetchable = { base = base, limit = limit + 0xfffff }
         pre[#pre + 1] = range_line("Prefetchable memory behind bridge", base, limit + 0xfffff,
            ptype == 1 and 64 or 32, pref_dis)
      end
   end
   local ss = cfg:w(0x1e)
   local sg = {}
   info.secondary_status = sg
   sg.DEVSEL = ({ [0] = "fast", [0x200] = "medium", [0x400] = "slow" })[ss & 0x600] or "??"
   pre[#pre + 1] = "Secondary status: " .. flags(sg, ss, { { "66MHz", 0x20 }, { "FastB2B", 0x80 },
      { "ParErr", 0x100 } }) .. " DEVSEL=" .. sg.DEVSEL .. " " .. flags(sg, ss, { { ">TAbort", 0x800 },
      { "<TAbort", 0x1000 }, { "<MAbort", 0x2000 }, { "<SERR", 0x4000 }, { "<PERR", 0x8000 } })
   local bc = cfg:w(0x3e)
   local g = {}
   info.bridge_control = g
   post[1] = "BridgeCtl: " .. flags(g, bc, { { "Parity", 1 }, { "SERR", 2 }, { "NoISA", 4 },
      { "VGA", 8 }, { "VGA16", 0x10 }, { "MAbort", 0x20 }, { ">Reset", 0x40 }, { "FastB2B", 0x80 } })
   post[2] = "\t" .. flags(g, bc, { { "PriDiscTmr", 0x100 }, { "SecDiscTmr", 0x200 },
      { "DiscTmrStat", 0x400 }, { "DiscTmrSERREn", 0x800 } })
   info.bridge_pre, info.bridge_post = pre, post
end

---------------------------------------------------------------- capability walks

local function walk_caps(cfg, info)
   local caps = {}
   if info.status & pci.STATUS_CAP_LIST == 0 then return caps end
   local ptr_reg = info.header_type == 2 and 0x14 or 0x34
   local where = (cfg:b(ptr_reg) or 0) & ~3
   local seen = {}
   while where ~= 0 do
      if not cfg:has(where, 4) then
         caps[#caps + 1] = new_cap { offset = where, title = "<access denied>", broken = true }
         break
      end
      local id, nxt, w = cfg:b(where), cfg:b(where + 1) & ~3, cfg:w(where + 2)
      local cap = new_cap { offset = where, id = id, ext = false, key = pci.cap_keys[id],
         name = pci.cap_name(id) }
      caps[#caps + 1] = cap
      if seen[where] then cap.title, cap.broken = "<chain looped>", true; break end
      seen[where] = true
      if id == 0xff then cap.title, cap.broken = "<chain broken>", true; break end
      local dec = std_decoders[id]
      if dec then
         dec(cfg, cap, where, w, info)
      elseif id == 0 then
         cap.title = "Null"
      else
         cap.title = fmt("Capability ID %#02x [%04x]", id, w)
         cap.partial = true
      end
      if id == 0x10 or id == 0x07 then info.can_have_ext_caps = true end
      where = nxt
   end
   return caps
end

local function walk_ext_caps(cfg, info, caps)
   local where = 0x100
   local seen = {}
   repeat
      local h = cfg:l(where)
      if not h or h == 0 or h == 0xffffffff then break end
      local id, ver = h & 0xffff, (h >> 16) & 0xf
      local cap = new_cap { offset = where, id = id, ext = true, version = ver,
         key = pci.ext_cap_keys[id], name = pci.cap_name(id, true) }
      caps[#caps + 1] = cap
      if seen[where] then cap.title, cap.broken = "<chain looped>", true; break end
      seen[where] = true
      local dec = ext_decoders[id]
      if dec then
         dec(cfg, cap, where, info)
      elseif title_only[id] then
         cap.title, cap.partial = pci.ext_cap_ids[id] .. title_only[id], true
      elseif id == 0 then
         cap.title = "Null"
      elseif pci.ext_cap_ids[id] then
         cap.title = pci.ext_cap_ids[id] .. " <?>"
      else
         cap.title = fmt("Extended Capability ID %#02x", id)
      end
      where = (h >> 20) & ~3
   until where == 0
end

---------------------------------------------------------------- results

local Info = {}
Info.__index = Info

--- What vfio.decode.config returns: the decoded header, capabilities and their text.
-- @type Info

---
-- First capability with this key ("msi", "express", "aer", ...) or ID (number), or nil.
function Info:cap(k, ext)
   for _, c in ipairs(self.caps) do
      if (type(k) == "string" and c.key == k) or (c.id == k and (ext == nil or c.ext == ext)) then
         return c
      end
   end
   return nil
end

local function cap_header(c)
   if c.ext then
      return fmt("Capabilities: [%03x v%d] %s", c.offset, c.version, c.title)
   end
   return fmt("Capabilities: [%02x] %s", c.offset, c.title)
end
M.cap_header = cap_header

---
-- lspci -vvv style text (without the lines lspci takes from the kernel rather than config
-- space, unless given in opts: irq, iommu_group, driver).
function Info:text()
   local o = {}
   local function add(s) o[#o + 1] = s end
   local head = fmt("%s %s: %s", self.slot or "??:??.?", pciids.class_label(self.class >> 8),
      pciids.device_label(self.vendor, self.device))
   if self.revision ~= 0 then head = head .. fmt(" (rev %02x)", self.revision) end
   local pif = pciids.progif(self.class >> 16, (self.class >> 8) & 0xff, self.prog_if)
   if self.prog_if ~= 0 or pif then
      head = head .. fmt(" (prog-if %02x", self.prog_if) .. (pif and (" [" .. pif .. "]") or "") .. ")"
   end
   add(head)
   if self.subsystem_vendor and self.subsystem_vendor ~= 0 and self.subsystem_vendor ~= 0xffff then
      add("\tSubsystem: " .. pciids.subsystem_label(self.vendor, self.device,
         self.subsystem_vendor, self.subsystem_id))
   end
   add("\tControl: " .. self.control_text)
   add("\tStatus: " .. self.status_text)
   if self.command & pci.COMMAND_MASTER ~= 0 then
      local s = fmt("\tLatency: %d", self.latency_timer)
      if self.min_gnt ~= 0 or self.max_lat ~= 0 then
         local parts = {}
         if self.min_gnt ~= 0 then parts[#parts + 1] = fmt("%dns min", self.min_gnt * 250) end
         if self.max_lat ~= 0 then parts[#parts + 1] = fmt("%dns max", self.max_lat * 250) end
         s = s .. " (" .. table.concat(parts, ", ") .. ")"
      end
      if self.cache_line_size ~= 0 then
         s = s .. fmt(", Cache Line Size: %d bytes", self.cache_line_size * 4)
      end
      add(s)
   end
   if self.interrupt_pin ~= 0 or self.irq then
      local pin = self.interrupt_pin ~= 0 and string.char((64 + self.interrupt_pin) & 0xff) or "?"
      -- The host IRQ number comes from the kernel, not config space: shown only when given.
      add(self.irq and fmt("\tInterrupt: pin %s routed to IRQ %d", pin, self.irq)
         or fmt("\tInterrupt: pin %s", pin))
   end
   if self.iommu_group then add("\tIOMMU group: " .. self.iommu_group) end
   if self.bist & 0x80 ~= 0 then
      add(self.bist & 0x40 ~= 0 and "\tBIST is running" or fmt("\tBIST result: %02x", self.bist & 0xf))
   end
   for _, b in ipairs(self.bars) do add("\t" .. b.text) end
   for _, l in ipairs(self.bridge_pre or {}) do add("\t" .. l) end
   if self.rom then add("\t" .. self.rom.text) end
   for _, l in ipairs(self.bridge_post or {}) do add("\t" .. l) end
   for _, c in ipairs(self.caps) do
      add("\t" .. cap_header(c))
      for _, l in ipairs(c.lines) do add("\t\t" .. l) end
   end
   if self.driver then add("\tKernel driver in use: " .. self.driver) end
   return table.concat(o, "\n") .. "\n"
end

-- Printing a decode shows it the way lspci -vvv would.
function Info:__tostring()
   return self:text()
end

--- Functions of the module.
-- @section functions2

--- lspci's header line of a decoded capability: `"Capabilities: [40] ..."` (`[100 v1]`
-- for an extended one).
-- (defined as a local above, exported as M.cap_header)
-- @function cap_header

---
-- bytes: config space as a string (64, 256 or 4096 bytes).
-- opts.resources: parse_resource() result (sysfs), or opts.bar_sizes {[i]=size} and
-- opts.rom_size (VFIO regions 0-5 and 6)
-- opts.slot ("00:03.0"), opts.irq, opts.iommu_group, opts.driver: shown like lspci.
function M.config(bytes, opts)
   opts = opts or {}
   assert(type(bytes) == "string", "config bytes must be a string")
   if #bytes < 64 then error("config space too short: " .. #bytes .. " bytes", 2) end
   local cfg = new_cfg(bytes)
   local info = setmetatable({
      slot = opts.slot, irq = opts.irq, iommu_group = opts.iommu_group, driver = opts.driver,
      bar_sizes = opts.bar_sizes, rom_size = opts.rom_size, size = #bytes,
   }, Info)
   info.vendor, info.device = cfg:w(0), cfg:w(2)
   info.command, info.status = cfg:w(4), cfg:w(6)
   info.revision, info.prog_if = cfg:b(8), cfg:b(9)
   info.class = cfg:b(0xb) << 16 | cfg:b(0xa) << 8 | cfg:b(9)
   info.cache_line_size, info.latency_timer = cfg:b(0xc), cfg:b(0xd)
   info.header_type, info.multifunction = cfg:b(0xe) & 0x7f, cfg:b(0xe) & 0x80 ~= 0
   info.bist = cfg:b(0xf)
   info.interrupt_line, info.interrupt_pin = cfg:b(0x3c), cfg:b(0x3d)
   info.min_gnt, info.max_lat = 0, 0
   local _, at = pcibus.parse_bdf(opts.slot)
   info.slot_dev, info.slot_func = at and at.device or 0, at and at.func or 0
   info.vendor_name, info.device_name = pciids.vendor(info.vendor), pciids.device(info.vendor, info.device)
   info.class_name = pciids.class_label(info.class >> 8)

   local cg = {}
   info.control = cg
   info.control_text = flags(cg, info.command, pci.command_bits)
   local sg = {}
   info.status_bits = sg
   local devsel = ({ [0] = "fast", [0x200] = "medium", [0x400] = "slow" })[info.status & 0x600] or "??"
   sg.DEVSEL = devsel
   info.status_text = flags(sg, info.status, pci.status_bits_pre) .. " DEVSEL=" .. devsel .. " "
      .. flags(sg, info.status, pci.status_bits_post)

   local res = opts.resources
   if info.header_type == 0 then
      info.min_gnt, info.max_lat = cfg:b(0x3e), cfg:b(0x3f)
      info.subsystem_vendor, info.subsystem_id = cfg:w(0x2c), cfg:w(0x2e)
      info.bars = decode_bars(cfg, info, 6, res)
      info.rom = decode_rom(cfg, info, 0x30, res and res[6])
   elseif info.header_type == 1 then
      info.bars = decode_bars(cfg, info, 2, res)
      decode_bridge(cfg, info, res)
      info.rom = decode_rom(cfg, info, 0x38, res and res[6])
   else
      info.bars = {}
   end
   for _, b in ipairs(info.bars) do
      b.text = bar_text(b)
      if not b.io then info.has_mem_bar = true end
   end
   info.caps = walk_caps(cfg, info)
   if info.can_have_ext_caps and cfg.n > 0x100 then walk_ext_caps(cfg, info, info.caps) end
   for _, c in ipairs(info.caps) do
      if c.key and info.caps[c.key] == nil then info.caps[c.key] = c end
   end
   -- Bridges carry their subsystem IDs in the SSVID capability (the kernel reports those).
   if info.header_type == 1 and info.caps.ssvid and info.caps.ssvid.subsystem_vendor then
      info.subsystem_vendor = info.caps.ssvid.subsystem_vendor
      info.subsystem_id = info.caps.ssvid.subsystem_id
   end
   return info
end

---
-- Convenience: lspci -xxxx text -> bytes (the format spec fixtures are stored in).
function M.parse_hex(text)
   local t, n = {}, 0
   for line in text:gmatch("[^\n]+") do
      local off, rest = line:match("^(%x+): ([%x ]+)$")
      local base = off and tonumber(off, 16)
      if not base then rest = "" end
      local i = 0
      for byte in rest:gmatch("%x%x") do
         t[base + i + 1] = string.char(tonumber(byte, 16))
         i = i + 1
         if base + i > n then n = base + i end
      end
   end
   for i = 1, n do if not t[i] then error("hex dump has a hole at offset " .. (i - 1)) end end
   return table.concat(t)
end

return M
