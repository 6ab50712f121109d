#!/bin/sh
# The PCIe hot-plug spec's guest (spec/lab/hotplug_spec.lua), the same under passthrough.lua
# (--hotplug-slots, device_add/device_del on its control socket) and under QEMU (lab/oracle
# --hotplug-ports, device_add/device_del on its QMP monitor). It watches the hot-plug slots
# Linux's pciehp registered and tells its console, in lines "hp: ...", what it sees of each
# device that comes into one and of each that leaves:
#   hp: slot S addr DDDD:BB:00 port BDF         a slot found (its bus, its root port)
#   hp: ready S...                              every slot found: devices may come
#   hp: added S N BDF VEN:DEV DRIVER            the Nth device in slot S, its driver bound
#   hp: state S adapter A power P link L        the slot as pciehp says (sysfs), the port's
#                                               Data Link Layer Link Active (config space)
#   hp: pciehp S present K linkup M             pciehp's "Card present"/"Link Up" lines
#                                               for the slot so far (dmesg)
#   hp: nvme-read S SECTOR ok|bad               nvme: a sector of the lab disk, checked
#   hp: net S IFACE MAC carrier C               e1000e: its interface, brought up
#   hp: irq S NAME COUNT                        the driver's interrupts (/proc/interrupts)
#   hp: checked S N                             the Nth device in slot S fully reported
#   hp: removed S N BDF bound B left L adapter A power P link L
#                                               it left: still bound to its driver (B),
#                                               its disk or interface still there (L),
#                                               the slot's state once powered off
#   hp: trouble LINE                            a kernel warning or pciehp failure since
#                                               ready (dmesg)
#   hp: done                                    hp-cycles devices came and went
# Kernel command line: hp-slots=N (slots to wait for, default 1), hp-cycles=N (devices to
# see come and go before it ends, default 2); /init then powers the machine off.
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n 1; }
nap() { sleep 0.2; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds (its output discarded); 1 if never
wait_for() {
  local t=$(($1 * 5)); shift
  until "$@" >/dev/null 2>&1; do
    t=$((t - 1)); [ $t -le 0 ] && return 1
    nap
  done
}

want=$(arg hp-slots); want=${want:-1}
cycles=$(arg hp-cycles); cycles=${cycles:-2}
st=/tmp/hp
mkdir -p $st

# Data Link Layer Link Active of a port (1/0; ? without a PCI Express capability), from
# its Link Status register: the capability list from 0x34, capability ID 0x10, +0x12.
link_active() {
  [ -r "$1/config" ] || { echo '?'; return; }
  od -An -tu1 -v "$1/config" | awk '
    { for (i = 1; i <= NF; i++) b[n++] = $i }
    END { p = b[52] - b[52] % 4; k = 0
          while (p >= 64 && k++ < 48) {
            if (b[p] == 16) { print int((b[p + 18] + 256 * b[p + 19]) / 8192) % 2; exit }
            p = b[p + 1] - b[p + 1] % 4 }
          print "?" }'
}

# The hot-plug slots: pciehp's have a power attribute (ACPI's pci_slot ones do not).
slots_found() {
  local n=0 x
  for x in /sys/bus/pci/slots/*; do [ -e "$x/power" ] && n=$((n + 1)); done
  [ $n -ge "$want" ]
}
wait_for 30 slots_found
slots=""
for sd in /sys/bus/pci/slots/*; do
  [ -e "$sd/power" ] || continue
  s=${sd##*/}
  addr=$(cat "$sd/address")                 # DDDD:BB:DD
  port=$(readlink -f "/sys/class/pci_bus/${addr%:*}/device")
  echo "$addr" > $st/$s.addr
  echo "$port" > $st/$s.port
  echo 0 > $st/$s.adds
  slots="$slots $s"
  echo "hp: slot $s addr $addr port ${port##*/} adapter $(cat "$sd/adapter") power $(cat "$sd/power")"
done
since=$(dmesg | wc -l)
echo "hp: ready$slots"

# The driver's interrupts: handler names starting with $2
irqs() {
  awk -v s="$1" -v p="$2" 'NR > 1 && $1 ~ /^[0-9]+:$/ && index($NF, p) == 1 {
    n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print "hp: irq " s " " $NF " " n }' /proc/interrupts
}

# The nvme's disk (one nvme in the guest at a time): nvmeXnY, not a path node nvmeXcYnZ.
nvme_disk() {
  local x n
  for x in /sys/block/nvme*; do
    n=${x##*/}
    case $n in *c*) continue;; esac
    [ -b "/dev/$n" ] && { echo "$n"; return 0; }
  done
  return 1
}

check_nvme() { # slot, device directory
  local disk sec want_s got c
  wait_for 30 nvme_disk
  disk=$(nvme_disk)
  [ -n "$disk" ] || { echo "hp: nvme $1 no disk"; return; }
  echo "/dev/$disk" > $st/$1.what
  # the lab disk: 16-byte lines "lv<sector>.<line>\n" (lab/run), read past the page cache
  for sec in 0 1234 16383; do
    want_s=$(u=0; while [ $u -lt 32 ]; do printf 'lv%06x.%06x\n' $sec $u; u=$((u + 1)); done)
    got=$(dd if="/dev/$disk" bs=512 skip=$sec count=1 iflag=direct 2>/dev/null)
    [ "$got" = "$want_s" ] && echo "hp: nvme-read $1 $sec ok" || echo "hp: nvme-read $1 $sec bad"
  done
  for c in "$2"/nvme/nvme*; do [ -e "$c" ] && irqs "$1" "${c##*/}q"; done
}

net_iface() {
  local x
  for x in "$1"/net/*; do [ -e "$x" ] && { echo "${x##*/}"; return 0; }; done
  return 1
}
carrier_up() { [ "$(cat "/sys/class/net/$1/carrier" 2>/dev/null)" = 1 ]; }

check_net() { # slot, device directory
  local ifc
  wait_for 30 net_iface "$2"
  ifc=$(net_iface "$2")
  [ -n "$ifc" ] || { echo "hp: net $1 no interface"; return; }
  echo "/sys/class/net/$ifc" > $st/$1.what
  # up: the driver requests its vectors and fires a link interrupt (e1000e's open)
  ip link set "$ifc" up
  wait_for 5 carrier_up "$ifc"
  echo "hp: net $1 $ifc $(cat "/sys/class/net/$ifc/address") carrier $(cat "/sys/class/net/$ifc/carrier" 2>/dev/null || echo '?')"
  irqs "$1" "$ifc"
}

added() { # slot
  local s addr port bdf d sd n drv
  s=$1 addr=$(cat $st/$1.addr) port=$(cat $st/$1.port)
  bdf=$addr.0 d=/sys/bus/pci/devices/$addr.0 sd=/sys/bus/pci/slots/$1
  n=$(($(cat $st/$s.adds) + 1)); echo $n > $st/$s.adds
  echo "$bdf" > $st/$s.bdf
  wait_for 30 test -e "$d/driver"
  drv=$(readlink "$d/driver" 2>/dev/null); drv=${drv##*/}; drv=${drv:-none}
  echo "$drv" > $st/$s.drv
  echo "hp: added $s $n $bdf $(cut -c3- "$d/vendor"):$(cut -c3- "$d/device") $drv"
  echo "hp: state $s adapter $(cat "$sd/adapter") power $(cat "$sd/power") link $(link_active "$port")"
  echo "hp: pciehp $s present $(dmesg | grep -cF "Slot($s): Card present") linkup $(dmesg | grep -cF "Slot($s): Link Up")"
  case $drv in
    nvme) check_nvme "$s" "$d";;
    e1000e) check_net "$s" "$d";;
  esac
  echo "hp: checked $s $n"
}

slot_off() { [ "$(cat "$1/power")" = 0 ] && [ "$(cat "$1/adapter")" = 0 ]; }

removed() { # slot
  local s port sd bdf drv what bound left
  s=$1 port=$(cat $st/$1.port) sd=/sys/bus/pci/slots/$1
  bdf=$(cat $st/$s.bdf) drv=$(cat $st/$s.drv) what=$(cat $st/$s.what 2>/dev/null)
  # pciehp unbinds and removes the device, then powers the slot off; the VMM then takes
  # the card out (presence goes)
  wait_for 30 slot_off "$sd"
  bound=no; [ -e "/sys/bus/pci/drivers/$drv/$bdf" ] && bound=yes
  left=no; [ -n "$what" ] && [ -e "$what" ] && left=yes
  echo "hp: removed $s $(cat $st/$s.adds) $bdf bound $bound left $left adapter $(cat "$sd/adapter")" \
    "power $(cat "$sd/power") link $(link_active "$port")"
  rm -f $st/$s.bdf $st/$s.drv $st/$s.what
}

gone=0
while [ $gone -lt "$cycles" ]; do
  for s in $slots; do
    dev=/sys/bus/pci/devices/$(cat $st/$s.addr).0
    if [ -f $st/$s.bdf ]; then
      [ -e "$dev" ] || { removed "$s"; gone=$((gone + 1)); }
    elif [ -e "$dev" ]; then
      added "$s"
    fi
  done
  nap
done
dmesg | tail -n +$((since + 1)) \
  | grep -E 'Call Trace|BUG:|WARNING:|Oops|pciehp.*(No link|Cannot train|No device found|Link Down|Card not present)' \
  | sed 's/^/hp: trouble /'
echo "hp: done"
