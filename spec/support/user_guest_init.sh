#!/bin/busybox sh
# /init of the Linux guest of spec/lab/user_guest_spec.lua, the same image under QEMU
# 11.1's vfio-user-pci and under lab/oracle (QEMU's vfio-pci). Like lab/initramfs's own
# /init, but the functions named on the kernel command line by
# luavfio.unbound=DOMAIN:BUS:DEV.FN[,...] get no driver (driver_override, set before the
# modules load): their config space stays as firmware and the PCI core left it, so `lspci
# -vvv` of it is the VMMs' view alone. Then spec/support/guest_checks.sh (at
# /bin/guest_checks), and `lspci -vvv` of every function but the chipset's, between
# "lspci-begin BDF" and "lspci-end" lines.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for a in $(cat /proc/cmdline); do
  case $a in
    luavfio.unbound=*)
      for b in $(echo "${a#*=}" | tr , ' '); do
        echo none > /sys/bus/pci/devices/$b/driver_override && echo "guest: $b left unbound"
      done;;
  esac
done
for m in $(cat /lib/modules/load.list); do insmod /lib/modules/$m.ko || echo "guest: insmod $m failed"; done
echo "guest: init reached"
sh /bin/guest_checks; echo "guest: run.sh exit $?"
for d in /sys/bus/pci/devices/*; do
  case $(cat $d/class) in 0x06*) continue;; esac
  echo "lspci-begin ${d##*/}"
  lspci -vvv -s "${d##*/}" 2>/dev/null   # without modules.alias, libkmod complains
  echo "lspci-end"
done
poweroff -f
