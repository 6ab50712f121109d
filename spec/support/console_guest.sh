#!/bin/sh
# The console spec's guest: reads lines from its console (the VMM's terminal) and echoes
# them back marked, until it reads "bye" (then /init powers off) or "reboot" (reboot -f,
# through the keyboard controller's reset line).
echo "guest: type a line"
while read -r line; do
  echo "guest got: $line"
  [ "$line" = bye ] && break
  [ "$line" = reboot ] && { echo "guest: rebooting"; reboot -f; }
done
