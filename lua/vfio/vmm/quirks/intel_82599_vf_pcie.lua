-- Intel 82599 SR-IOV virtual functions report PCI Express capability version 0
-- (erratum), which some guests reject; version 1 keeps the capability (and with it
-- extended config space) usable.
return {
   name = "intel-82599-vf-pcie-version",
   description = "report PCIe capability version 1 when the device says 0",
   match = { vendor = 0x8086, device = { 0x10ed, 0x1515 } },
   cap_config = { { cap = 0x10, off = 2, size = 2, mask = 0x000f, set = 0x0001, only_if = 0 } },
}
