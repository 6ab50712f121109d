#!/bin/sh
# The console spec's guest: reads lines from its console (the VMM's terminal) and echoes
# them back marked, until it reads "bye".
echo "guest: type a line"
while read -r line; do
  echo "guest got: $line"
  [ "$line" = bye ] && break
done
