#!/bin/sh
# The control socket spec's guest: says it is ready, then ticks once a second so the
# host sees whether its vCPUs run (paused: no ticks). With "stop-after N" on the kernel
# line it stops ticking after N ticks and /init powers the machine off.
echo "guest: control ready"
n=0
limit=$(sed -n 's/.*stop-after=\([0-9]*\).*/\1/p' /proc/cmdline)
while :; do
  n=$((n + 1))
  echo "guest: tick $n"
  [ -n "$limit" ] && [ "$n" -ge "$limit" ] && break
  sleep 1
done
echo "guest: done ticking"
