#!/bin/busybox sh
# /init of bench/vs-qemu-linux.lua's guest: the boot time first, before anything else
# runs, then the modules, then the nvme measurements, then power off.
/bin/guest_bench boot
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/load.list); do insmod /lib/modules/$m.ko; done
i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
/bin/guest_bench nvme /dev/nvme0n1 2000
echo "guest: bench done"
poweroff -f
