---
-- PCI configuration space knowledge as data: header registers, capability IDs and names,
-- bit layouts of the registers that decode.lua and the REPL show. Offsets and bit positions
-- follow the PCI Local Bus 3.0 and PCI Express Base specifications.
-- @module vfio.pci
local M = {}

-- Header registers common to all header types, then type 0 (endpoint) and type 1 (bridge).
-- width in bytes.
M.header_common = {
   { name = "vendor_id",       offset = 0x00, width = 2 },
   { name = "device_id",       offset = 0x02, width = 2 },
   { name = "command",         offset = 0x04, width = 2 },
   { name = "status",          offset = 0x06, width = 2 },
   { name = "revision",        offset = 0x08, width = 1 },
   { name = "prog_if",         offset = 0x09, width = 1 },
   { name = "subclass",        offset = 0x0a, width = 1 },
   { name = "class",           offset = 0x0b, width = 1 },
   { name = "cache_line_size", offset = 0x0c, width = 1 },
   { name = "latency_timer",   offset = 0x0d, width = 1 },
   { name = "header_type",     offset = 0x0e, width = 1 },
   { name = "bist",            offset = 0x0f, width = 1 },
}

M.header_type0 = {
   { name = "bar0",                offset = 0x10, width = 4 },
   { name = "bar1",                offset = 0x14, width = 4 },
   { name = "bar2",                offset = 0x18, width = 4 },
   { name = "bar3",                offset = 0x1c, width = 4 },
   { name = "bar4",                offset = 0x20, width = 4 },
   { name = "bar5",                offset = 0x24, width = 4 },
   { name = "cardbus_cis",         offset = 0x28, width = 4 },
   { name = "subsystem_vendor_id", offset = 0x2c, width = 2 },
   { name = "subsystem_id",        offset = 0x2e, width = 2 },
   { name = "rom_address",         offset = 0x30, width = 4 },
   { name = "capabilities_ptr",    offset = 0x34, width = 1 },
   { name = "interrupt_line",      offset = 0x3c, width = 1 },
   { name = "interrupt_pin",       offset = 0x3d, width = 1 },
   { name = "min_gnt",             offset = 0x3e, width = 1 },
   { name = "max_lat",             offset = 0x3f, width = 1 },
}

M.header_type1 = {
   { name = "bar0",                offset = 0x10, width = 4 },
   { name = "bar1",                offset = 0x14, width = 4 },
   { name = "primary_bus",         offset = 0x18, width = 1 },
   { name = "secondary_bus",       offset = 0x19, width = 1 },
   { name = "subordinate_bus",     offset = 0x1a, width = 1 },
   { name = "sec_latency_timer",   offset = 0x1b, width = 1 },
   { name = "io_base",             offset = 0x1c, width = 1 },
   { name = "io_limit",            offset = 0x1d, width = 1 },
   { name = "sec_status",          offset = 0x1e, width = 2 },
   { name = "memory_base",         offset = 0x20, width = 2 },
   { name = "memory_limit",        offset = 0x22, width = 2 },
   { name = "pref_memory_base",    offset = 0x24, width = 2 },
   { name = "pref_memory_limit",   offset = 0x26, width = 2 },
   { name = "pref_base_upper32",   offset = 0x28, width = 4 },
   { name = "pref_limit_upper32",  offset = 0x2c, width = 4 },
   { name = "io_base_upper16",     offset = 0x30, width = 2 },
   { name = "io_limit_upper16",    offset = 0x32, width = 2 },
   { name = "capabilities_ptr",    offset = 0x34, width = 1 },
   { name = "rom_address",         offset = 0x38, width = 4 },
   { name = "interrupt_line",      offset = 0x3c, width = 1 },
   { name = "interrupt_pin",       offset = 0x3d, width = 1 },
   { name = "bridge_control",      offset = 0x3e, width = 2 },
}

---
-- Register lookup by name for a header type.
function M.header_registers(htype)
   local t = {}
   for _, r in ipairs(M.header_common) do t[#t + 1] = r end
   for _, r in ipairs(htype == 1 and M.header_type1 or M.header_type0) do t[#t + 1] = r end
   return t
end

-- Bit lists are { name, mask } in the order lspci prints them.
M.command_bits = {
   { "I/O", 0x1 }, { "Mem", 0x2 }, { "BusMaster", 0x4 }, { "SpecCycle", 0x8 },
   { "MemWINV", 0x10 }, { "VGASnoop", 0x20 }, { "ParErr", 0x40 }, { "Stepping", 0x80 },
   { "SERR", 0x100 }, { "FastB2B", 0x200 }, { "DisINTx", 0x400 },
}

M.STATUS_DEVSEL_MASK = 0x600
M.status_bits_pre = {
   { "Cap", 0x10 }, { "66MHz", 0x20 }, { "UDF", 0x40 }, { "FastB2B", 0x80 }, { "ParErr", 0x100 },
}
M.status_bits_post = {
   { ">TAbort", 0x800 }, { "<TAbort", 0x1000 }, { "<MAbort", 0x2000 }, { ">SERR", 0x4000 },
   { "<PERR", 0x8000 }, { "INTx", 0x8 },
}

M.COMMAND_IO, M.COMMAND_MEMORY, M.COMMAND_MASTER = 0x1, 0x2, 0x4
M.STATUS_CAP_LIST = 0x10

-- Capability IDs (PCI Code and ID Assignment spec) with lspci's names.
M.cap_ids = {
   [0x00] = "Null",
   [0x01] = "Power Management",
   [0x02] = "AGP",
   [0x03] = "Vital Product Data",
   [0x04] = "Slot ID",
   [0x05] = "MSI",
   [0x06] = "CompactPCI hot-swap",
   [0x07] = "PCI-X",
   [0x08] = "HyperTransport",
   [0x09] = "Vendor Specific Information",
   [0x0a] = "Debug port",
   [0x0b] = "CompactPCI central resource control",
   [0x0c] = "Hot-plug capable",
   [0x0d] = "Subsystem",
   [0x0e] = "AGP3",
   [0x0f] = "Secure device",
   [0x10] = "Express",
   [0x11] = "MSI-X",
   [0x12] = "SATA HBA",
   [0x13] = "PCI Advanced Features",
   [0x14] = "Enhanced Allocation",
}

-- Short keys for capabilities, used as field names on decoded results (info.caps.msi ...).
M.cap_keys = {
   [0x01] = "pm", [0x03] = "vpd", [0x05] = "msi", [0x07] = "pcix", [0x09] = "vendor",
   [0x0d] = "ssvid", [0x10] = "express", [0x11] = "msix", [0x12] = "sata", [0x13] = "af",
   [0x14] = "ea",
}

-- Short names for one-line summaries (passthrough's plan).
M.cap_short = {
   [0x01] = "PM", [0x05] = "MSI", [0x09] = "vendor", [0x10] = "PCIe", [0x11] = "MSI-X",
   [0x12] = "SATA", [0x13] = "AF",
}

M.ext_cap_ids = {
   [0x00] = "Null",
   [0x01] = "Advanced Error Reporting",
   [0x02] = "Virtual Channel",
   [0x03] = "Device Serial Number",
   [0x04] = "Power Budgeting",
   [0x05] = "Root Complex Link",
   [0x06] = "Root Complex Internal Link",
   [0x07] = "Root Complex Event Collector",
   [0x08] = "Multi-Function Virtual Channel",
   [0x09] = "Virtual Channel",
   [0x0a] = "Root Complex Register Block",
   [0x0b] = "Vendor Specific Information",
   [0x0c] = "Configuration Access Correlation",
   [0x0d] = "Access Control Services",
   [0x0e] = "Alternative Routing-ID Interpretation (ARI)",
   [0x0f] = "Address Translation Service (ATS)",
   [0x10] = "Single Root I/O Virtualization (SR-IOV)",
   [0x11] = "Multi-Root I/O Virtualization",
   [0x12] = "Multicast",
   [0x13] = "Page Request Interface (PRI)",
   [0x15] = "Physical Resizable BAR",
   [0x16] = "Dynamic Power Allocation",
   [0x17] = "Transaction Processing Hints",
   [0x18] = "Latency Tolerance Reporting",
   [0x19] = "Secondary PCI Express",
   [0x1a] = "Protocol Multiplexing",
   [0x1b] = "Process Address Space ID (PASID)",
   [0x1c] = "LN Requester",
   [0x1d] = "Downstream Port Containment",
   [0x1e] = "L1 PM Substates",
   [0x1f] = "Precision Time Measurement",
   [0x20] = "PCI Express over M_PHY",
   [0x21] = "FRS Queueing",
   [0x22] = "Readiness Time Reporting",
   [0x23] = "Designated Vendor-Specific",
   [0x24] = "VF Resizable BAR",
   [0x25] = "Data Link Feature",
   [0x26] = "Physical Layer 16.0 GT/s",
   [0x27] = "Lane Margining at the Receiver",
   [0x28] = "Hierarchy ID",
   [0x29] = "Native PCIe Enclosure Management",
   [0x2e] = "Data Object Exchange",
}

M.ext_cap_keys = {
   [0x01] = "aer", [0x02] = "vc", [0x03] = "dsn", [0x0b] = "evendor", [0x0d] = "acs",
   [0x0e] = "ari", [0x0f] = "ats", [0x10] = "sriov", [0x13] = "pri", [0x15] = "rebar",
   [0x17] = "tph", [0x18] = "ltr", [0x19] = "secpci", [0x1b] = "pasid", [0x1d] = "dpc",
   [0x1e] = "l1pm", [0x1f] = "ptm", [0x23] = "dvsec",
}

-- PCI Express capability: device/port types (Express Capabilities register bits 7:4).
M.exp_types = {
   [0x0] = "Endpoint",
   [0x1] = "Legacy Endpoint",
   [0x4] = "Root Port",
   [0x5] = "Upstream Port",
   [0x6] = "Downstream Port",
   [0x7] = "PCI-Express to PCI/PCI-X Bridge",
   [0x8] = "PCI/PCI-X to PCI-Express Bridge",
   [0x9] = "Root Complex Integrated Endpoint",
   [0xa] = "Root Complex Event Collector",
}
M.EXP_ENDPOINT, M.EXP_LEG_END, M.EXP_ROOT_PORT = 0x0, 0x1, 0x4
M.EXP_UPSTREAM, M.EXP_DOWNSTREAM, M.EXP_PCI_BRIDGE = 0x5, 0x6, 0x7
M.EXP_PCIE_BRIDGE, M.EXP_ROOT_INT_EP, M.EXP_ROOT_EC = 0x8, 0x9, 0xa

-- Register offsets inside the PCI Express capability.
M.exp_regs = {
   { name = "flags",  offset = 0x02, width = 2 },
   { name = "devcap", offset = 0x04, width = 4 }, { name = "devctl", offset = 0x08, width = 2 },
   { name = "devsta", offset = 0x0a, width = 2 }, { name = "lnkcap", offset = 0x0c, width = 4 },
   { name = "lnkctl", offset = 0x10, width = 2 }, { name = "lnksta", offset = 0x12, width = 2 },
   { name = "sltcap", offset = 0x14, width = 4 }, { name = "sltctl", offset = 0x18, width = 2 },
   { name = "sltsta", offset = 0x1a, width = 2 }, { name = "rtctl", offset = 0x1c, width = 2 },
   { name = "rtcap", offset = 0x1e, width = 2 }, { name = "rtsta", offset = 0x20, width = 4 },
   { name = "devcap2", offset = 0x24, width = 4 }, { name = "devctl2", offset = 0x28, width = 2 },
   { name = "devsta2", offset = 0x2a, width = 2 }, { name = "lnkcap2", offset = 0x2c, width = 4 },
   { name = "lnkctl2", offset = 0x30, width = 2 }, { name = "lnksta2", offset = 0x32, width = 2 },
}

M.link_speeds = { [1] = "2.5GT/s", [2] = "5GT/s", [3] = "8GT/s", [4] = "16GT/s",
   [5] = "32GT/s", [6] = "64GT/s" }

-- AER uncorrectable / correctable error bits, shared by status, mask and severity registers.
M.aer_uncorrectable = {
   { "DLP", 0x10 }, { "SDES", 0x20 }, { "TLP", 0x1000 }, { "FCP", 0x2000 },
   { "CmpltTO", 0x4000 }, { "CmpltAbrt", 0x8000 }, { "UnxCmplt", 0x10000 },
   { "RxOF", 0x20000 }, { "MalfTLP", 0x40000 }, { "ECRC", 0x80000 },
   { "UnsupReq", 0x100000 }, { "ACSViol", 0x200000 },
}
M.aer_correctable = {
   { "RxErr", 0x1 }, { "BadTLP", 0x40 }, { "BadDLLP", 0x80 }, { "Rollover", 0x100 },
   { "Timeout", 0x1000 }, { "AdvNonFatalErr", 0x2000 },
}

-- virtio's vendor capability cfg_type (virtio 1.x, 4.1.4).
M.virtio_cfg_types = { [1] = "CommonCfg", [2] = "Notify", [3] = "ISR", [4] = "DeviceCfg" }

---
-- Named bits as a table of booleans (used for structured results).
function M.bits(value, list)
   local t = {}
   for _, b in ipairs(list) do t[b[1]] = value & b[2] ~= 0 end
   return t
end

--- The name of capability `id` (extended when `ext`), or `"Capability ID 0x.."`.
function M.cap_name(id, ext)
   local name = (ext and M.ext_cap_ids or M.cap_ids)[id]
   return name or string.format(ext and "Extended Capability ID %#x" or "Capability ID %#x", id)
end

return M
