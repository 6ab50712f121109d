#!/bin/busybox sh
# /init of bench/ram.lua's boot guest: the boot time first (bench/guest/guest_bench.c: the
# guest's TSC since the machine started, over its rate), then the RAM its kernel found,
# then power off. Nothing else runs: the boot is what is measured.
/bin/guest_bench boot
/bin/busybox mount -t proc proc /proc
/bin/busybox grep MemTotal /proc/meminfo
/bin/busybox poweroff -f
