#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map mount --device: an export as /dev/nbdN through nbd-client.
#
# Where the kernel has no nbd module, r3map must say so in one line,
# exit non-zero at once, and start nothing (that part always runs).
# Where it has one, data goes both ways through the device, and
# nothing stays attached after a signal or after r3map is killed.

. "$srcdir/functions.sh"
requires_root

R3MAP="$abs_top_builddir/tools/r3map"
[ -n "$R3MAP_VALGRIND" ] && R3MAP="$_valgrind $R3MAP"
export TMPDIR="$tmp"

have_nbd () { [ -d /sys/module/nbd ] || [ -e /sys/block/nbd0 ]; }

if ! have_nbd; then
    # The server is a command that would leave a mark if it were run.
    start=$(date +%s%N)
    timeout 10 $R3MAP mount --device -- \
        sh -c "touch '$tmp/server-ran'; exec nbdkit memory 1M" \
        > "$tmp/out" 2> "$tmp/err"
    status=$?
    elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    sed 's/^/# /' "$tmp/err"
    ok "no nbd module: r3map exits 1 (not a hang: timeout says 124)" \
        test $status = 1
    ok "...within 3 s (${elapsed_ms} ms)" test $elapsed_ms -lt 3000
    ok "...with one line that says so" \
        eval "test \"\$(grep -c . '$tmp/err')\" = 1 && grep -q 'no nbd module' '$tmp/err'"
    ok "...having started nothing" test ! -e "$tmp/server-ran"
    ok "...and printed no device" test ! -s "$tmp/out"
    ok "the same with a URI" \
        eval "! $R3MAP mount --device nbd://localhost 2> '$tmp/err' &&
              grep -q 'no nbd module' '$tmp/err'"
    skip_check "attaching, data both ways, detaching on SIGTERM and" \
        "SIGKILL: this kernel has no nbd module (no /sys/module/nbd)"
    done_testing
    exit
fi

requires nbd-client -h
requires nbdcopy --version

attached () { [ -e "/sys/block/${1#/dev/}/pid" ]; }

head -c 16M /dev/urandom > "$tmp/data"
truncate -s 16M "$tmp/disk"
start_server remote file "$tmp/disk"
uri=$(cat "$tmp/remote.uri")

ok "write through the device" \
    $R3MAP mount --device "$uri" \
        --run "dd if='$tmp/data' of=\"\$device\" bs=1M oflag=direct conv=fsync status=none"
nbdcopy "$uri" "$tmp/back"
ok "...read back through NBD" cmp "$tmp/data" "$tmp/back"

head -c 16M /dev/urandom > "$tmp/data2"
nbdcopy "$tmp/data2" "$uri"
ok "read through the device what NBD wrote" \
    $R3MAP mount --device -r "$uri" \
        --run "dd if=\"\$device\" of='$tmp/read' bs=1M iflag=direct status=none"
ok "...the same bytes" cmp "$tmp/data2" "$tmp/read"

# In the background; its pid is r3map's through exec.
( exec $R3MAP mount --device -- nbdkit memory 16M > "$tmp/out" 2> "$tmp/err" ) &
rpid=$!
cleanup_fn "kill -9 $rpid"
wait_until 30 test -s "$tmp/out"
dev=$(cat "$tmp/out")
ok "background attach prints the device" test -b "$dev"
ok "...attached" attached "$dev"
kill -TERM $rpid
wait $rpid
ok "SIGTERM: r3map exits 0" test $? = 0
ok "...the device is detached" wait_until 10 eval "! attached $dev"

( exec $R3MAP mount --device -- nbdkit memory 16M > "$tmp/out" 2> "$tmp/err" ) &
rpid=$!
cleanup_fn "kill -9 $rpid"
wait_until 30 test -s "$tmp/out"
dev=$(cat "$tmp/out")
kids=$(pgrep -P $rpid)
{ kill -9 $rpid; wait $rpid; } 2>/dev/null
ok "r3map killed with SIGKILL: the device is detached" \
    wait_until 10 eval "! attached $dev"
ok "...nbd-client and the server are gone" \
    wait_until 10 eval "! kill -0 $kids 2>/dev/null"

done_testing
