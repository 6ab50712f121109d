#!/bin/sh
# The Linux guest of spec/host/user_gpio_guest_spec.lua: the PCI-IDIO-16 model
# (examples/vfio-user/pci_idio_16.lua) served over vfio-user at 00:03.0, driven by the
# kernel's gpio-pci-idio-16 through the GPIO sysfs interface (busybox has no libgpiod).
# Lines 0-15 are the card's outputs, 16-31 its inputs. Reports the input pins as the
# driver reads them, writes an output pattern, then arms a both-edges interrupt on
# input 0 and waits for the spec to change that pin in the model.
d=/sys/bus/pci/devices/0000:00:03.0
echo "user-gpio id $(cat $d/vendor):$(cat $d/device)"
[ -e $d/driver ] && echo "user-gpio driver $(basename "$(readlink $d/driver)")"
base=""
for c in /sys/class/gpio/gpiochip*; do
  [ "$(readlink -f $c/device)" = "$(readlink -f $d)" ] && base=$(cat $c/base) && echo "user-gpio chip $(cat $c/ngpio) lines"
done
[ -n "$base" ] || exit 1
# An exported line's directory takes the line's name when the chip names its lines, as
# this driver does (OUT0-15, IIN0-15), gpioN otherwise.
line() {
  if [ "$1" -lt 16 ]; then n=OUT$1; else n=IIN$(($1 - 16)); fi
  [ -d /sys/class/gpio/$n ] && echo /sys/class/gpio/$n || echo /sys/class/gpio/gpio$(($base + $1))
}
export_line() { [ -d "$(line $1)" ] || echo $(($base + $1)) > /sys/class/gpio/export; }
value() { cat "$(line $1)/value"; }

in=0
for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  export_line $((16 + i)) || exit 2
  [ "$(value $((16 + i)))" = 1 ] && in=$((in | 1 << i))
done
printf 'user-gpio inputs 0x%04x\n' $in

# The outputs set: 0, 5, 10 and 15 (0x8421), written one line at a time.
for i in 0 5 10 15; do
  export_line $i || exit 3
  echo high > "$(line $i)/direction" || exit 3
done
out=0
for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  export_line $i || exit 3
  [ "$(value $i)" = 1 ] && out=$((out | 1 << i))
done
printf 'user-gpio outputs 0x%04x\n' $out

# Input 0's edge interrupt: the chip's handler (pci-idio-16 in /proc/interrupts) must run.
echo both > "$(line 16)/edge" || exit 4
irqs() { grep pci-idio-16 /proc/interrupts | awk '{ n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; print n }'; }
before=$(irqs)
echo "user-gpio waiting for input 0"
n=0
while [ "$(value 16)" != 1 ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
sleep 0.5
echo "user-gpio input 0 now $(value 16)"
echo "user-gpio irqs before ${before:-none} after $(irqs)"
grep pci-idio-16 /proc/interrupts | sed "s/^/user-gpio irq /"
exit 0
