#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The random I/O model checker through r3map-pull, in both topologies,
# on 4 connections, while the background pull runs: the remote starts
# with random data that the model knows (--initial), its reads are
# slowed down so that the pull is far from done when the checker
# starts, and the chunks are small so that requests straddle many.
# With push on, once the checker's last flush returned, the remote must
# hold the model's disk.
#
# R3MAP_PULL_OPS sets the number of operations (default 10000, a
# quarter of it under valgrind).

. "$srcdir/functions.sh"
requires qemu-io --version

ops=${R3MAP_PULL_OPS:-$(model_ops 10000)}
filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"
size=32M

head -c $size /dev/urandom > "$tmp/initial"
# The local store of topology a.  (nbdkit's file plugin, not its
# memory plugin, whose allocators leak a little at load in 1.32.)
truncate -s $size "$tmp/local"

# The checker, once the pull has started and while it is not done.
check="wait_until () { n=600; while ! \"\$@\" >/dev/null 2>&1; do n=\$((n-1)); [ \$n -gt 0 ] || return 1; sleep 0.1; done; }
wait_until test -s '$tmp/status' &&
$r3map status '$tmp/status' > '$tmp/before' &&
$IOTEST --quiet --ops $ops --connections 4 --initial '$tmp/initial' \
    --model '$tmp/model' \"\$uri\" &&
qemu-io -f raw -c flush \"\$uri\""

# --run does not wait for nbdkit's cleanup: wait for it before looking
# at the remote or starting again on the same files.
gone () { wait_until 120 _gone "$(cat "$tmp/nbdkit.pid")"; }

# (a) source=URI: the remote is another nbdkit, the local store the
# plugin below.
cp "$tmp/initial" "$tmp/remote-a"
start_server remote-a --filter=delay file "$tmp/remote-a" delay-read=20ms
ok "source=: $ops random ops on 4 connections match the model" \
    nbdkit -U - -P "$tmp/nbdkit.pid" --filter="$filter" file "$tmp/local" \
        source="$(cat "$tmp/remote-a.uri")" chunk-size=4K pull-workers=2 \
        status="$tmp/status" --run "$check"
gone
ok "source=: the pull had not finished when the checker started" \
    grep -q "^phase: *pulling" "$tmp/before"
ok "source=: push is off, the remote was not written" \
    cmp "$tmp/initial" "$tmp/remote-a"

# (a) again, writing back.
rm -f "$tmp/status"
ok "source= push=on: $ops random ops match the model" \
    nbdkit -U - -P "$tmp/nbdkit.pid" --filter="$filter" file "$tmp/local" \
        source="$(cat "$tmp/remote-a.uri")" chunk-size=4K pull-workers=2 \
        push=on push-interval=100ms status="$tmp/status" --run "$check"
gone
ok "source= push=on: the remote holds the model's disk" \
    cmp "$tmp/model" "$tmp/remote-a"
stop_server remote-a

# (b) cache=FILE: the plugin below is the remote.
cp "$tmp/initial" "$tmp/remote-b"
rm -f "$tmp/status"
ok "cache=: $ops random ops on 4 connections match the model" \
    nbdkit -U - -P "$tmp/nbdkit.pid" --filter="$filter" --filter=delay file "$tmp/remote-b" \
        delay-read=20ms cache="$tmp/cache" state="$tmp/state" \
        chunk-size=4K pull-workers=2 push-interval=100ms \
        status="$tmp/status" --run "$check"
gone
ok "cache=: the pull had not finished when the checker started" \
    grep -q "^phase: *pulling" "$tmp/before"
ok "cache=: the remote holds the model's disk" cmp "$tmp/model" "$tmp/remote-b"
ok "cache=: a restart on the state file serves the model's disk" \
    nbdkit -U - -P "$tmp/nbdkit.pid" --filter="$filter" file "$tmp/remote-b" \
        cache="$tmp/cache" state="$tmp/state" chunk-size=4K pull-workers=0 \
        --run "$IOTEST --quiet --verify-only --initial '$tmp/model' \"\$uri\""

done_testing
