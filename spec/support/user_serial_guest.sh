#!/bin/sh
# The Linux guest of spec/host/user_server_spec.lua: the 16550A model served over
# vfio-user at 00:03.0. Reports which driver bound it, its tty, what a write sends and
# what the model's echo brings back (raw mode: no line discipline echo), and its
# interrupt count while the port is open.
d=/sys/bus/pci/devices/0000:00:03.0
echo "user-serial id $(cat $d/vendor):$(cat $d/device) class $(cat $d/class)"
[ -e $d/driver ] && echo "user-serial driver $(basename "$(readlink $d/driver)")"
t=$(ls $d/tty 2>/dev/null | head -n 1)
echo "user-serial tty ${t:-none}"
[ -n "$t" ] || exit 1
exec 3<>/dev/$t          # held open: the port keeps its interrupt handler to the end
stty -F /dev/$t raw -echo 115200 || exit 2
dd if=/dev/$t of=/tmp/in bs=1 count=16 2>/dev/null &
sleep 1
printf 'echo-roundtrip!!' > /dev/$t
n=0
while [ "$(wc -c < /tmp/in)" -lt 16 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
echo "user-serial echo $(cat /tmp/in)"
grep "$t" /proc/interrupts | sed "s/^/user-serial irq /"
exit 0
