#!/bin/sh
# settle-layer START: the end of a RUN step that should give the same layer bytes on every build.
# Every path the step wrote (modified after START, `date +%s.%N` when the step began) gets the time
# SOURCE_DATE_EPOCH. apt's lists go (all but `partial`, which the base image holds).
# Files that only record when or how the step ran (apt's logs and binary caches, ldconfig's aux cache) are
# emptied, never deleted: deleting a file of a lower layer leaves a whiteout stamped with the time of the
# build. Python's .pyc stay: with SOURCE_DATE_EPOCH set, py_compile writes them hash-checked, without a
# source time. Copied into every image once (base stage) and run by each RUN step that writes files.
set -eu
start=$1
epoch=${SOURCE_DATE_EPOCH:-315532800}
find /var/lib/apt/lists -mindepth 1 -maxdepth 1 ! -name partial -exec rm -rf {} +
find /var/lib/apt/lists/partial -mindepth 1 -delete 2>/dev/null || true
for noisy in /var/cache/ldconfig/aux-cache /var/cache/apt/pkgcache.bin /var/cache/apt/srcpkgcache.bin \
  /var/log/apt/eipp.log.xz /var/log/apt/history.log /var/log/apt/term.log /var/log/dpkg.log \
  /var/log/alternatives.log; do
  if [ -n "$(find "$noisy" -newermt "@$start" 2>/dev/null)" ]; then : > "$noisy"; fi
done
find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune \
  -o -newermt "@$start" -exec touch -h -d "@$epoch" {} +
