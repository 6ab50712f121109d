-- qemu-xhci keeps its MSI-X table inside the register BAR it wants mmapped. With the
-- table trapped, the pages around it cannot be mapped straight into the guest (and on
-- 64 KiB-page hosts that is most of the BAR); moving the table and PBA to an unused
-- BAR leaves BAR0 entirely direct.
return {
   name = "xhci-msix-relocate",
   description = "move qemu-xhci's MSI-X table and PBA to a BAR of their own",
   match = { vendor = 0x1b36, device = 0x000d },
   relocate_msix = { bar = "unused" },
}
