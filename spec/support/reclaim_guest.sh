#!/bin/sh
# A Linux guest's side of the host taking a device back (spec/lab/reclaim_spec.lua,
# spec/host/lab_aer_spec.lua): the lab's virtio-net (1af4:1041), passed through behind a
# hot-plug slot, is found with its driver; "guest: ready" tells the host to act; then the
# guest waits (up to 120 s) for the function to go, as pciehp removes it once the VMM
# presses the slot's attention button, and keeps running a few seconds after it.
#   guest: virtio BDF driver DRIVER     the function and its driver before
#   guest: ready                        the host may unbind it now
#   guest: virtio removed after N s     pciehp unbound the driver and removed the function
#   guest: virtio still there           it did not go
#   guest: alive after removal          the guest ran on without it
find_virtio() {
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor):$(cat $d/device)" = 0x1af4:0x1041 ] && { echo "${d##*/}"; return; }
  done
}
i=0
dev=$(find_virtio)
while { [ -z "$dev" ] || [ ! -e /sys/bus/pci/devices/$dev/driver ]; } && [ $i -lt 30 ]; do
  sleep 1; i=$((i + 1)); dev=$(find_virtio)
done
drv=none
[ -n "$dev" ] && [ -e /sys/bus/pci/devices/$dev/driver ] \
  && drv=$(basename "$(readlink /sys/bus/pci/devices/$dev/driver)")
echo "guest: virtio $dev driver $drv"
echo "guest: ready"
i=0
while [ -n "$dev" ] && [ -e /sys/bus/pci/devices/$dev ] && [ $i -lt 120 ]; do
  sleep 1; i=$((i + 1))
done
if [ -n "$dev" ] && [ ! -e /sys/bus/pci/devices/$dev ]; then
  echo "guest: virtio removed after $i s"
else
  echo "guest: virtio still there"
fi
dmesg | grep -iE 'pciehp|virtio' | sed 's/^/guest-dmesg: /' | tail -n 20
sleep 3
echo "guest: alive after removal"
