#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Bad parameters of r3map-pull: each stops nbdkit with one error line
# naming the parameter and the reason, and a state file of another
# disk is refused, never trusted or rewritten.

. "$srcdir/functions.sh"

filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
head -c 1M /dev/urandom > "$tmp/remote"
start_server remote file "$tmp/remote"
src="source=$(cat "$tmp/remote.uri")"
f="--filter=$filter"
truncate -s 1M "$tmp/local1"
truncate -s 2M "$tmp/local2"

ok "neither source= nor cache=" \
    refused "source=URI or cache=FILE is required" $f file "$tmp/local1"
ok "both source= and cache=" \
    refused "source= and cache= are exclusive" $f file "$tmp/local1" "$src" cache="$tmp/c"
ok "source= that is not an NBD URI" \
    refused "source=http://example.com/disk: not an NBD URI" \
        $f file "$tmp/local1" source=http://example.com/disk
ok "source= that cannot be reached" \
    refused "source=nbd+unix:///?socket=$tmp/nowhere: .*No such file" \
        $f file "$tmp/local1" "source=nbd+unix:///?socket=$tmp/nowhere"
ok "chunk-size=3000" \
    refused "chunk-size=3000: must be a power of 2 from 4K to 64M" $f file "$tmp/local1" "$src" chunk-size=3000
ok "chunk-size=2K" \
    refused "chunk-size=2K: must be a power of 2" $f file "$tmp/local1" "$src" chunk-size=2K
ok "chunk-size=lots" \
    refused "chunk-size=lots: not a size" $f file "$tmp/local1" "$src" chunk-size=lots
ok "pull-workers=65" \
    refused "pull-workers=65: must be between 0 and 64" $f file "$tmp/local1" "$src" pull-workers=65
ok "pull-nice=20" \
    refused "pull-nice=20: must be between 0 and 19" $f file "$tmp/local1" "$src" pull-nice=20
ok "pull-delay=soon" \
    refused "pull-delay=soon: " $f file "$tmp/local1" "$src" pull-delay=soon
ok "pull-delay=2d" \
    refused "pull-delay=2d: at most a day" $f file "$tmp/local1" "$src" pull-delay=2d
ok "push=maybe" \
    refused "push=maybe: " $f file "$tmp/local1" "$src" push=maybe
ok "push-interval=0" \
    refused "push-interval=0: must be more than 0" $f file "$tmp/local1" "$src" push-interval=0
ok "retry-delay=soon" \
    refused "retry-delay=soon: " $f file "$tmp/local1" "$src" retry-delay=soon
ok "cache= in a directory that does not exist" \
    refused "cache=$tmp/nowhere/c: No such file or directory" \
        $f file "$tmp/remote" cache="$tmp/nowhere/c"
ok "source= given twice" \
    refused "source=.*: source= was given twice" $f file "$tmp/local1" "$src" "$src"

# A state file made for this disk, then offered to others.
ok "a state file is made" \
    nbdkit -U - $f file "$tmp/local1" "$src" state="$tmp/state" --run true
cp "$tmp/state" "$tmp/state.orig"
head -c 2M /dev/urandom > "$tmp/remote2"
start_server remote2 file "$tmp/remote2"
ok "a state file of a disk of another size" \
    refused "state=$tmp/state: made for a disk of 1048576 bytes, this one has 2097152" \
        $f file "$tmp/local2" "source=$(cat "$tmp/remote2.uri")" state="$tmp/state" \
        identity="$(cat "$tmp/remote.uri")"
ok "a state file of another disk of the same size" \
    refused "state=$tmp/state: made for the disk 'nbd+unix:///?socket=$tmp/remote.sock', not 'other'" \
        $f file "$tmp/local1" "$src" state="$tmp/state" identity=other
ok "a state file of another chunk size" \
    refused "state=$tmp/state: made with chunk-size 65536, not 4096" \
        $f file "$tmp/local1" "$src" state="$tmp/state" chunk-size=4K
echo "not a state file" > "$tmp/junk"
ok "a file that is not a state file" \
    refused "state=$tmp/junk: not an r3map-pull state file" \
        $f file "$tmp/local1" "$src" state="$tmp/junk"
ok "the refused starts left the state file as it was" cmp "$tmp/state" "$tmp/state.orig"

# pull-nice: the background pull's threads (named r3map-pull) run at
# that nice value, nbdkit's own threads at theirs.  A remote that
# answers each read after 30 s keeps them alive long enough to look
# (both servers are killed at the end, not waited for).
start_server slow --filter=delay file "$tmp/remote" rdelay=30
start_server nice $f file "$tmp/local1" \
    source="$(cat "$tmp/slow.uri")" pull-nice=7
# The thread's name and nice value: fields 2 and 19 of its stat file.
threads () {
    local t
    for t in /proc/"$(cat "$tmp/nice.pid")"/task/*; do
        echo "$(cat "$t/comm") $(sed 's/^.*) //' "$t/stat" | cut -d' ' -f17)"
    done
}
ok "pull-nice=7: four r3map-pull threads, each at nice 7" wait_until 30 bash -c "
    $(declare -f threads); tmp='$tmp'
    threads | grep -c '^r3map-pull 7\$' | grep -qx 4"
ok "pull-nice=7: nbdkit's own threads at nice 0" bash -c "
    $(declare -f threads); tmp='$tmp'
    threads | grep -v '^r3map-pull ' | tee /dev/stderr | awk '\$NF != 0 { exit 1 }'"

# pull-delay: until it has passed only what a client reads is fetched.
truncate -s 1M "$tmp/local3"
start_server delayed $f file "$tmp/local3" "$src" pull-delay=8s \
    status="$tmp/delayed.status"
ok "pull-delay=8s: a read is served at once" \
    qemu-io -r -f raw -c "read 128k 4k" "$(cat "$tmp/delayed.uri")"
sleep 1
pulled () { status_field "$tmp/delayed.status" bytes_pulled; }
ok "pull-delay=8s: meanwhile only the chunk read was pulled" \
    test "$(pulled)" = 65536
ok "pull-delay=8s: meanwhile not complete (complete_ms 0)" \
    test "$(status_field "$tmp/delayed.status" complete_ms)" = 0
all_pulled () { test "$(pulled)" = 1048576; }
ok "pull-delay=8s: then the rest" wait_until 60 all_pulled
seen_ms=$(date +%s%3N)
# The copy is dated when its last chunk came (the worker publishes it at
# once), which is after the delay and before the test saw it.
ok "pull-delay=8s: complete_ms dates the end of the pull" bash -c "
    '$abs_top_builddir/tools/r3map' status --json '$tmp/delayed.status' |
    /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d[\"complete_ms\"] - d[\"started_ms\"], $seen_ms - d[\"complete_ms\"], file=sys.stderr)
assert d[\"started_ms\"] + 8000 <= d[\"complete_ms\"] <= $seen_ms, d'"
ok "pull-delay=8s: r3map status says since when it is complete" bash -c "
    '$abs_top_builddir/tools/r3map' status '$tmp/delayed.status' |
        grep '^complete: *[0-9.]* s after the start'"
ok "pull-delay=8s: the copy is the remote" \
    cmp "$tmp/local3" "$tmp/remote"

done_testing
