-- Broadcom BCM57810: its option ROM is known to hang or misbehave when a guest runs
-- it (QEMU keeps it on a denylist and hides the ROM BAR unless the user insists).
return {
   name = "bcm57810-rom-denylist",
   description = "hide the option ROM of the Broadcom BCM57810",
   match = { vendor = 0x14e4, device = 0x168e },
   hide_rom = true,
}
