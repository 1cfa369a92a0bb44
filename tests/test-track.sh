#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The r3map-track filter on r3map-dir: it passes the disk through
# unchanged (model checker), numbers writes per chunk and shows them
# in the changed-since views, counts reads in the heat view, seals
# (draining writes in flight, refusing later ones) only through its
# local control socket, and probing the views changes nothing.

. "$srcdir/functions.sh"
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version
requires /usr/bin/python3 --version

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
sock="$tmp/nbd.sock"
ctl="$tmp/ctl.sock"
disk="nbd+unix:///?socket=$sock"
view () { echo "nbd+unix:///r3map:$1?socket=$sock"; }

# ctl COMMAND: one command on the control socket, its answer on stdout.
ctl ()
{
    /usr/bin/python3 - "$ctl" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
print(s.makefile().readline().strip())
EOF
}

# A seeder in the background: r3map-dir, 16M, 64K chunks.
# start_seeder [FILTERS... --] [PARAMS...]: FILTERS go below the
# tracking, PARAMS after the plugin's.
mkdir "$tmp/d"
start_seeder ()
{
    local filters=() i
    if [[ " $* " == *" -- "* ]]; then
        while [ "$1" != -- ]; do filters+=("$1"); shift; done
        shift
    fi
    rm -f "$sock"
    nbdkit -f -U "$sock" -P "$tmp/nbdkit.pid" --filter="$track" \
        "${filters[@]}" "$(plugin dir)" dir="$tmp/d" size=16M \
        track-control="$ctl" track-seal-wait=3s "$@" 2>>"$tmp/nbdkit.log" &
    for i in $(seq 100); do
        nbdinfo --can connect "$disk" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
stop_seeder ()
{
    [ -s "$tmp/nbdkit.pid" ] && kill "$(cat "$tmp/nbdkit.pid")" 2>/dev/null
    rm -f "$tmp/nbdkit.pid"
    # nbdkit removes the control socket at exit.
    local i
    for i in $(seq 50); do [ -e "$ctl" ] || return 0; sleep 0.1; done
    return 1
}
cleanup_fn stop_seeder

map () { nbdinfo --map "$(view "$1")" | awk '{print $1, $2, $3}'; }
desc () { nbdinfo "$(view "$1")" | sed -n 's/^\tdescription: //p'; }
export -f ctl view map desc
export sock ctl tmp disk

start_seeder
ok "the seeder runs, with its control socket mode 0600" \
    test "$(stat -c %a "$ctl" 2>&1)" = 600

# --- What the views show ----------------------------------------------
ok "a fresh seeder: nothing changed, write number 0" bash -c "
    map changed-since:0 | tee /dev/stderr | grep -qx '0 16777216 3' &&
    desc changed-since:0 | tee /dev/stderr |
        grep -q '^r3map-track epoch=[0-9a-f]\{16\} seq=0 sealed=no chunk-size=65536\$'"
ok "two writes (chunk 1, chunks 3-4)" \
    qemu-io -f raw -c "write -P 1 70000 10" -c "write -P 2 200000 100000" "$disk"
ok "changed-since:0 shows chunks 1, 3 and 4" bash -c "
    map changed-since:0 | tee /dev/stderr | tr '\n' ' ' |
        grep -qx '0 65536 3 65536 65536 0 131072 65536 3 196608 131072 0 327680 16449536 3 '"
ok "changed-since:1 shows only the second write" bash -c "
    map changed-since:1 | tee /dev/stderr | tr '\n' ' ' |
        grep -qx '0 196608 3 196608 131072 0 327680 16449536 3 '"
ok "a trim and a zero are numbered too" bash -c "
    qemu-io -f raw -c 'discard 655360 65536' -c 'write -z 1048576 4096' '$disk' >/dev/null &&
    map changed-since:2 | tee /dev/stderr | tr '\n' ' ' |
        grep -qx '0 655360 3 655360 65536 0 720896 327680 3 1048576 65536 0 1114112 15663104 3 '"
ok "the description counts them: seq=4" bash -c "desc changed-since:2 | grep -q ' seq=4 '"
ok "the disk reads back what was written" \
    qemu-io -f raw -c "read -P 1 70000 10" -c "read -P 2 200000 100000" \
        -c "read -P 0 655360 65536" "$disk"

# --- Probing changes nothing -------------------------------------------
ctl status > "$tmp/before"
nbdcopy "$(view heat)" "$tmp/heat.before"
ok "probing: --list, --map of the views, reading them, three times" bash -c "
    for i in 1 2 3; do
        nbdinfo --list '$disk' >/dev/null &&
        map changed-since:0 >/dev/null && map heat >/dev/null &&
        nbdcopy \"\$(view changed-since:3)\" null: &&
        nbdcopy \"\$(view heat)\" null: || exit 1
    done"
ok "after probing: the same status and the same heat" bash -c "
    ctl status | cmp - $tmp/before &&
    nbdcopy \"\$(view heat)\" - | cmp - $tmp/heat.before"
ok "the views are read-only" bash -c "
    ! qemu-io -f raw -c 'write 0 512' \"\$(view changed-since:0)\" &&
    nbdinfo --json \"\$(view changed-since:0)\" | grep -q '\"is_read_only\": true'"
ok "an unknown view is refused" _negate nbdinfo "$(view colour)"
ok "changed-since:N with N not a number is refused" \
    _negate nbdinfo "$(view changed-since:x1)"
ok "the seeder logged why" \
    grep -q "export r3map:colour: no such r3map-track view" "$tmp/nbdkit.log"

# --- Heat ----------------------------------------------------------------
# Chunks 1 and 3 were read once already (the read-back check above).
ok "reads of the disk count in the heat view, one byte per chunk" bash -c "
    qemu-io -f raw -c 'read 0 4096' -c 'read 0 4096' -c 'read 0 4096' \
        -c 'read 131072 65536' '$disk' >/dev/null &&
    test \$(nbdinfo --size \"\$(view heat)\") = 256 &&
    nbdcopy \"\$(view heat)\" - | od -An -tu1 -v -N4 | tee /dev/stderr |
        tr -s ' ' | grep -qx ' 3 1 1 1'"

# --- Seal --------------------------------------------------------------
ok "sealed-since:N before the seal: refused after track-seal-wait (3 s)" bash -c "
    t=\$(date +%s%N); ! nbdinfo \"\$(view sealed-since:0)\" 2>/dev/null &&
    ms=\$(( (\$(date +%s%N) - t) / 1000000 )); echo \$ms ms; test \$ms -ge 2900"
ok "a leecher waiting on sealed-since:4 gets the final set once sealed" bash -c "
    (map sealed-since:4 > $tmp/final; desc sealed-since:4 > $tmp/final.desc) &
    sleep 0.5
    qemu-io -f raw -c 'write -P 3 3145728 4096' '$disk' >/dev/null &&
    ctl seal | tee /dev/stderr | grep -qx 'sealed seq=5' && wait \$! &&
    cat $tmp/final $tmp/final.desc &&
    tr '\n' ' ' < $tmp/final | grep -qx '0 3145728 3 3145728 65536 0 3211264 13565952 3 ' &&
    grep -q ' seq=5 sealed=yes final=5 ' $tmp/final.desc"
ok "sealed: a write is refused" \
    _negate qemu-io -f raw -c "write -P 4 0 512" "$disk"
ok "sealed: reads work, the refused write left nothing" \
    qemu-io -f raw -c "read -P 0 0 512" -c "read -P 3 3145728 4096" "$disk"
ok "status says sealed, one write refused" bash -c "
    ctl status | tee /dev/stderr | grep -q ' seq=5 sealed=yes final=5 writes=5 refused=1\$'"
ok "sealing again answers the same number" bash -c "ctl seal | grep -qx 'sealed seq=5'"
ok "unseal: writes work again" bash -c "
    ctl unseal | grep -qx unsealed &&
    qemu-io -f raw -c 'write -P 4 0 512' '$disk' >/dev/null &&
    desc changed-since:5 | grep -q ' seq=6 sealed=no '"
ok "an unknown command gets an error line" bash -c "
    ctl 'format c:' | grep -qx 'error unknown command'"
ok "nbdkit removes the control socket when it stops" stop_seeder

# The seal waits for writes in flight: a write slowed down by 2 s
# below the tracking is started, the seal is asked for 0.5 s later;
# it answers only when the write is done, and counts it.
start_seeder --filter=delay -- delay-write=2
ok "a seeder with the delay filter below the tracking" test -S "$ctl"
ok "seal drains the write in flight, and the final number includes it" bash -c "
    qemu-io -f raw -c 'write -P 5 8388608 65536' '$disk' >/dev/null & w=\$!
    sleep 0.5
    t=\$(date +%s%N); ans=\$(ctl seal); ms=\$(( (\$(date +%s%N) - t) / 1000000 ))
    echo \"\$ans after \$ms ms\"; wait \$w &&
    test \"\$ans\" = 'sealed seq=1' && test \$ms -ge 1000 &&
    map sealed-since:0 | tr '\n' ' ' | grep -q '^0 8388608 3 8388608 65536 0 '"
stop_seeder

# --- Bad parameters ------------------------------------------------------
: > "$tmp/regular"
ok "track-chunk-size=3000" refused "track-chunk-size=3000: must be a power of 2" \
    --filter="$track" "$(plugin dir)" dir="$tmp/d" size=16M track-chunk-size=3000
ok "track-control= a regular file" \
    refused "track-control=$tmp/regular: exists and is not a socket" \
    --filter="$track" "$(plugin dir)" dir="$tmp/d" size=16M track-control="$tmp/regular"
ok "track-seal-wait=forever" refused "track-seal-wait=forever: " \
    --filter="$track" "$(plugin dir)" dir="$tmp/d" size=16M track-seal-wait=forever

# --- The disk passes through intact -----------------------------------
mkdir "$tmp/d2"
ok "10000 random ops on 4 connections through r3map-track match the model" \
    nbdkit -U - --filter="$track" "$(plugin dir)" dir="$tmp/d2" size=16M \
        --run "$IOTEST --quiet --ops 10000 --connections 4 --trim-reads-zero \"\$uri\""

# --- Documentation ---------------------------------------------------
pod="$abs_top_srcdir/filters/track/nbdkit-r3map-track-filter.pod"
nbdkit --filter="$track" null --help > "$tmp/help" 2>&1
for p in $(grep -o '^track-[a-z-]*=' "$tmp/help" | tr -d =); do
    ok "parameter $p= is documented in the man page" \
        grep -q "^=item B<$p=>" "$pod"
done
ok "--help lists three parameters" test "$(grep -c '^track-' "$tmp/help")" = 3
if command -v podchecker >/dev/null; then
    ok "podchecker is happy" podchecker "$pod"
fi

done_testing
