#!/bin/sh
# make demo's Linux guest: what the guest's own drivers made of the devices passed
# through (run as /run.sh by lab/initramfs's /init).
sleep 1
echo "== lspci -nnk, inside the guest"
lspci -nnk 2>/dev/null
echo "== the nvme disk: three sectors against the lab disk's pattern (O_DIRECT)"
for s in 0 1234 16383; do
  want=$(u=0; while [ $u -lt 32 ]; do printf 'lv%06x.%06x\n' $s $u; u=$((u + 1)); done)
  got=$(dd if=/dev/nvme0n1 bs=512 skip=$s count=1 iflag=direct 2>/dev/null)
  [ "$got" = "$want" ] && echo "sector $s: ok ($(echo "$got" | head -n1))" || echo "sector $s: WRONG"
done
for n in /sys/class/net/*; do [ "${n##*/}" = lo ] || ip link set "${n##*/}" up 2>/dev/null; done
sleep 1
echo "== interrupts of the passed-through devices"
head -n1 /proc/interrupts
grep -E 'nvme|eth|virtio|xhci' /proc/interrupts
