#!/usr/bin/env bash
# Wall time from `lab/run` to the first line of COMMAND's output (boot to COMMAND), and to
# lab/run's exit, for the default device set and for a bare guest. Three runs each.
cd "$(dirname "$0")/.."
measure() {
  local t0 t1 t2
  t0=$(date +%s%N)
  { lab/run "$@" -- echo ready; } 2>/dev/null | { read -r _; date +%s%N > /tmp/lab_boot.$$; cat >/dev/null; }
  t2=$(date +%s%N); t1=$(cat /tmp/lab_boot.$$); rm -f /tmp/lab_boot.$$
  printf '%-14s boot to COMMAND %5.2f s   whole run %5.2f s\n' "$label" \
    "$(echo "($t1 - $t0) / 1000000000" | bc -l)" "$(echo "($t2 - $t0) / 1000000000" | bc -l)"
}
echo "lab kernel $(cat "$(. lab/cache.sh; echo "$cache")/lab/kernel/version")"
for i in 1 2 3; do label="defaults"; measure; done
for i in 1 2 3; do label="no-defaults"; measure --no-defaults; done
