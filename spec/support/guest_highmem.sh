#!/bin/sh
# A Linux guest with RAM above 4 GiB (spec/lab/linux_highmem_spec.lua): what its kernel
# took as RAM, then its nvme driver reading the lab disk into pages above 4 GiB
# (bench/guest/guest_dma_high.c, installed as /bin/guest_dma_high).
#   iomem START-END : System RAM      each RAM range of /proc/iomem
#   nvme-high-read 0xGPA SECTOR ok|bad, buffer-top 0xGPA   (guest_dma_high)
sleep 1   # drivers probe asynchronously
grep 'System RAM' /proc/iomem | sed 's/^ */iomem /'
/bin/guest_dma_high
