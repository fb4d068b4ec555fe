#!/bin/sh
# settle-layer START: the end of a RUN step that should give the same layer bytes on every build.
# Every path the step wrote (modified after START, seconds since the epoch) gets the time SOURCE_DATE_EPOCH,
# and what only records when or how the step ran is removed: apt's lists, logs and binary caches, dpkg's
# backups, ldconfig's aux cache. Python's .pyc stay: with SOURCE_DATE_EPOCH set, py_compile writes them
# hash-checked, without a source time. Copied into every image once (base stage), used by each RUN step.
set -eu
start=$1
epoch=${SOURCE_DATE_EPOCH:-315532800}
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/ldconfig/aux-cache \
  /var/log/apt/eipp.log.xz /var/log/apt/history.log /var/log/apt/term.log \
  /var/log/dpkg.log /var/log/alternatives.log /var/cache/debconf/*-old /var/lib/dpkg/*-old
find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune \
  -o -newermt "@$((start - 1))" -exec touch -h -d "@$epoch" {} +
