#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Migration faults: the leecher killed mid-pull and restarted with its
# state (it resumes without fetching again what it had); the seeder
# restarted mid-pull (a new epoch: the leecher starts over and still
# ends byte for byte right); the source gone before finalize (clients
# of the destination get errors that say why, never the partial copy,
# and the source's data is intact).

. "$srcdir/functions.sh"
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"
size=64M
chunks=1024                     # of 64K

src="nbd+unix:///?socket=$tmp/src.sock"
dst="nbd+unix:///?socket=$tmp/dst.sock"

# The seeder reads slowly (200 ms per request below the tracking), so
# that the pull takes a few seconds and can be caught in the middle.
start_src ()
{
    start_logged src --filter="$track" --filter=delay \
        "$(plugin dir)" dir="$tmp/a" size=$size track-control="$tmp/a.ctl" \
        delay-read=200ms
}
start_dst ()
{
    start_logged dst --filter="$pullf" "$(plugin dir)" dir="$tmp/b" \
        size=$size source="$src" state="$tmp/b.state" status="$tmp/b.status" \
        pull-workers=1 precopy-interval=200ms "$@"
}
stop_src () { stop_server src "$@"; }
stop_dst () { stop_server dst "$@"; }
field ()                        # field NAME: from r3map status of b.status
{
    "$r3map" status "$tmp/b.status" |
        sed -n "s/^$1: *\([0-9.]*\).*/\1/p"
}
local_chunks ()
{
    "$r3map" status "$tmp/b.status" |
        sed -n 's/^local: .*, \([0-9]*\) of [0-9]* chunks.*/\1/p'
}

mkdir "$tmp/a" "$tmp/b"
head -c $size /dev/urandom > "$tmp/init"
start_src
ok "the source holds random data" nbdcopy --flush "$tmp/init" "$src"

# --- The leecher killed mid-pull, restarted with its state -------------
state_local ()
{
    "$r3map" status "$tmp/b.state" | sed -n 's/^local: *\([0-9]*\) of.*/\1/p'
}
# Killed once the state file records some chunks (it is written about
# every second), long before the end.
start_dst
for i in $(seq 200); do
    n=$(state_local); [ "${n:-0}" -ge 100 ] && break; sleep 0.05
done
stop_dst KILL
had=$(state_local)
echo "# the state file records $had local chunks at the kill"
ok "the leecher was killed in the middle of the pull" \
    test "${had:-0}" -gt 0 -a "${had:-0}" -lt $chunks
start_dst
ok "restarted with its state: what was local still is" \
    test "$(local_chunks)" -ge "$had"
for i in $(seq 600); do
    [ "$(local_chunks)" = $chunks ] && break; sleep 0.1
done
ok "the pull completes" test "$(local_chunks)" = $chunks
pulled=$("$r3map" status "$tmp/b.status" | sed -n 's/^pulled: *\([0-9.]*\) MiB.*/\1/p')
echo "# after the restart the leecher pulled $pulled MiB; $(( (chunks - had) / 16 )) MiB were missing"
ok "no chunk that was local was fetched again" \
    awk -v p="${pulled:-999}" -v m="$(( (chunks - had) * 65536 ))" \
        'BEGIN { exit !(p * 1048576 <= m + 65536) }'
ok "seal and finalize" bash -c "
    '$r3map' seal '$tmp/a.ctl' && '$r3map' finalize --timeout=30s '$tmp/b.status'"
ok "the destination is the source, byte for byte" bash -c "
    nbdcopy '$dst' - | cmp - '$tmp/init'"
stop_dst

# --- The seeder restarted mid-pull: a new epoch ------------------------
"$r3map" seal --unseal "$tmp/a.ctl" >/dev/null
rm -rf "$tmp/b" "$tmp/b.state" "$tmp/b.status"; mkdir "$tmp/b"
start_dst
for i in $(seq 200); do
    n=$(local_chunks); [ "${n:-0}" -ge 200 ] && break; sleep 0.1
done
stop_src
# Meanwhile the source changes (as a restarted VM would).
printf 'restarted' | dd of="$tmp/a/0000000000000003" bs=1 seek=100 conv=notrunc status=none
dd if="$tmp/a/0000000000000003" of="$tmp/init" bs=65536 seek=3 count=1 conv=notrunc status=none
start_src
ok "after the seeder's restart the leecher starts over and completes" bash -c "
    for i in \$(seq 600); do
        '$r3map' status '$tmp/b.status' | grep -q '^phase: *waiting for the seal' && exit 0
        sleep 0.1
    done; exit 1"
ok "seal and finalize" bash -c "
    '$r3map' seal '$tmp/a.ctl' && '$r3map' finalize --timeout=30s '$tmp/b.status'"
ok "the destination is the restarted source, byte for byte" bash -c "
    nbdcopy '$dst' - | cmp - '$tmp/init'"
stop_dst

# --- The source gone before finalize -----------------------------------
"$r3map" seal --unseal "$tmp/a.ctl" >/dev/null
rm -rf "$tmp/b" "$tmp/b.state" "$tmp/b.status"; mkdir "$tmp/b"
start_dst source-timeout=2s
sleep 0.5
stop_src
t0=$(date +%s%N)
ok "a client of the destination gets an error, not the partial copy" \
    _negate timeout 30 qemu-io -f raw -c "read 0 65536" "$dst"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "# failed after $ms ms"
ok "within the source timeout and a round" test $ms -lt 10000
ok "the destination says why" \
    grep -q "lost before finalize .*refusing to serve a partial copy" "$tmp/dst.log"
ok "r3map finalize says the source was lost" bash -c "
    '$r3map' finalize --timeout=5s '$tmp/b.status' 2>&1 | tee /dev/stderr |
        grep -q 'the source was lost before finalize'"
start_src
ok "the source's data is intact" bash -c "nbdcopy '$src' - | cmp - '$tmp/init'"

# --- SIGTERM while a client's request is held ----------------------------
# nbdkit waits for the requests in flight before it exits: a request the
# leecher holds until finalize must not keep it running for ever.
rm -rf "$tmp/b" "$tmp/b.state" "$tmp/b.status"; mkdir "$tmp/b"
start_dst
qemu-io -f raw -c "read 0 512" "$dst" > "$tmp/held.out" 2>&1 &
held=$!
sleep 1
ok "a client's read is held until finalize" kill -0 $held
pid=$(cat "$tmp/dst.pid")
t=$(date +%s%N)
kill -TERM "$pid"
ok "SIGTERM stops the leecher although the read is held" \
    wait_until 30 _gone "$pid"
ms=$(( ($(date +%s%N) - t) / 1000000 ))
echo "# gone after $ms ms"
rm -f "$tmp/dst.pid"
wait $held
held_status=$?
sed 's/^/# qemu-io: /' "$tmp/held.out"
ok "the held read failed: it did not get the partial copy" \
    bash -c "test $held_status != 0 && ! grep -q '^read 512/512' '$tmp/held.out'"

# --- SIGTERM while the leecher waits on the sealed view ------------------
# Once converged, the leecher's thread waits on the seeder's sealed view
# for up to the seeder's track-seal-wait (here 20 s); stopping the
# leecher must not wait for it.
mkdir "$tmp/q" "$tmp/qd"
start_logged quick --filter="$track" "$(plugin dir)" dir="$tmp/q" size=1M \
    track-control="$tmp/q.ctl" track-seal-wait=20s
start_logged qdst --filter="$pullf" "$(plugin dir)" dir="$tmp/qd" size=1M \
    source="nbd+unix:///?socket=$tmp/quick.sock" status="$tmp/qd.status" \
    precopy-interval=50ms
ok "the leecher converges and waits for the seal" wait_until 30 bash -c "
    '$r3map' status '$tmp/qd.status' | grep -q '^phase: *waiting for the seal'"
sleep 1                         # into the wait on the sealed view
pid=$(cat "$tmp/qdst.pid")
t=$(date +%s%N)
kill -TERM "$pid"
wait_until 30 _gone "$pid"
ms=$(( ($(date +%s%N) - t) / 1000000 ))
rm -f "$tmp/qdst.pid"
ok "SIGTERM stops it within 3 s, not after the seal wait ($ms ms)" \
    test $ms -lt 3000
stop_server quick

sed 's/^/# src: /' "$tmp/src.log"
# ---- A seeder that accepts and never answers ------------------------
# (An nbdkit shutting down leaves queued connections so.)  The leecher
# gives up after source-timeout= with a reason, instead of waiting
# forever in the handshake.
python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
time.sleep(120)' > "$tmp/mute.port" &
echo $! > "$tmp/mute.pid"
wait_until 10 test -s "$tmp/mute.port"
mkdir "$tmp/mute"
t=$(date +%s%N)
ok "a mute seeder: the leecher refuses to start, within source-timeout" \
    refused "source=nbd://127.0.0.1:$(cat "$tmp/mute.port"): no answer within 2000 ms" \
    --filter="$pullf" "$(plugin dir)" dir="$tmp/mute" size=$size \
    source="nbd://127.0.0.1:$(cat "$tmp/mute.port")" wait-finalize=on \
    source-timeout=2s
ms=$(( ($(date +%s%N) - t) / 1000000 ))
ok "... after about 2 s ($ms ms)" test $ms -ge 1900 -a $ms -lt 30000

# --- A seeder that fails part of a view ---------------------------------
# The leecher asks for a view's block status in pieces of 4 GiB, 16 in
# flight.  Here (64 GiB) the seeder fails about half of them at once
# (the error filter, outside the delay) and answers the others 1 s
# later.  A leecher that closed on the first failure would leave those
# answers to a closed connection, and nbdkit 1.32 then ends the whole
# seeder, the running guest's disk (README, "Known problems").
mkdir "$tmp/p" "$tmp/pd"
start_logged part --filter=error --filter=delay --filter="$track" \
    "$(plugin dir)" dir="$tmp/p" size=64G track-control="$tmp/p.ctl" \
    error-extents-rate=50% delay-extents=1
start_logged pdst --filter="$pullf" "$(plugin dir)" dir="$tmp/pd" size=64G \
    source="nbd+unix:///?socket=$tmp/part.sock" status="$tmp/pd.status" \
    precopy-interval=100ms
ok "the seeder failed pieces of views" wait_until 60 bash -c "
    test \$(grep -c 'injecting EIO error into extents' '$tmp/part.log') -ge 10"
ok "... and the leecher waited for the others' answers before it closed" \
    _negate grep -E "aborting sleep|Broken pipe|reset by peer|Assertion" "$tmp/part.log"
ok "... so the seeder still serves" timeout 30 nbdinfo --size "$(cat "$tmp/part.uri")"
stop_server pdst
stop_server part

done_testing
