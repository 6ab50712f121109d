#!/bin/sh
# What a Linux guest reports about its PCI devices, the same under passthrough.lua and
# under lab/oracle (QEMU's vfio-pci): lines the lab specs compare.
#   pci BDF VENDOR:DEVICE CLASS DRIVER   every PCI function and the driver bound to it
#   res BDF START END FLAGS              its resources (BARs, ROM) with flags
#   nvme-read SECTOR ok|bad              a sector of the lab disk against its pattern
#   irq NAME COUNT                       interrupts per handler name (summed over CPUs)
#   cpus N                               CPUs online
#   EDU_MSI BEFORE AFTER                 edu's MSI, aimed at the APIC error vector, as
#                                        the ERR count sees it (bench/guest/guest_edu.c)
sleep 1   # drivers probe asynchronously
for d in /sys/bus/pci/devices/*; do
  b=${d##*/}
  drv=none; [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))
  echo "pci $b $(cat $d/vendor | cut -c3-):$(cat $d/device | cut -c3-) $(cat $d/class) $drv"
  n=0
  while read -r s e f; do
    [ "$s" = 0x0000000000000000 ] || echo "res $b $n $s $e $f"
    n=$((n + 1))
  done < $d/resource
done
# the lab disk: 16-byte lines "lv<sector>.<line>\n" (lab/run)
for s in 0 1234 16383; do
  if [ -b /dev/nvme0n1 ]; then
    want=$(u=0; while [ $u -lt 32 ]; do printf 'lv%06x.%06x\n' $s $u; u=$((u + 1)); done)
    got=$(dd if=/dev/nvme0n1 bs=512 skip=$s count=1 iflag=direct 2>/dev/null)
    [ "$got" = "$want" ] && echo "nvme-read $s ok" || echo "nvme-read $s bad"
  fi
done
# e1000e and virtio-net request their interrupts when the interface goes up
for n in /sys/class/net/*; do [ "${n##*/}" = lo ] || ip link set "${n##*/}" up 2>/dev/null; done
sleep 1
awk 'NR > 1 && $1 ~ /^[0-9]+:$/ { n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i;
     print "irq " $NF " " n }' /proc/interrupts | grep -E 'nvme|eth|enp|e1000e|virtio|xhci|edu|vfio' || true
echo "cpus $(grep -c ^processor /proc/cpuinfo)"
if [ -x /bin/guest_edu ]; then /bin/guest_edu; fi
