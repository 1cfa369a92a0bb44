#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map-guest-io, the guest's workload program, on the host against
# image files: what the guest tests conclude is only as good as its
# checks, so each kind of damage must be caught here.

. "$srcdir/../tests/functions.sh"
# The copy linked as usual (the guest's own is static), so that
# valgrind and the sanitizers see it.
GUEST_IO="$abs_top_builddir/qemu-tests/r3map-guest-io-host"
[ -x "$GUEST_IO" ] || skip_all "needs $GUEST_IO (make check builds it)"
requires /usr/bin/python3 --version
if [ -n "$R3MAP_VALGRIND" ]; then
    GUEST_IO="$_valgrind $GUEST_IO"
fi
gio () { $GUEST_IO "$@"; }
_wait_for_line ()
{
    local i
    for i in $(seq 100); do
        grep -q "$1" "$2" && return 0
        sleep 0.1
    done
    return 1
}

truncate -s 4M "$tmp/a"
truncate -s 2M "$tmp/b"

# --- Pattern ----------------------------------------------------------
ok "pattern: write then verify two files" gio pattern --seed 7 "$tmp/a" "$tmp/b"
ok "pattern-verify again (a separate run)" gio pattern-verify --seed 7 "$tmp/a" "$tmp/b"
cmd_fails "another seed does not verify" gio pattern-verify --seed 8 "$tmp/a"
cp "$tmp/a" "$tmp/a.moved"
dd if="$tmp/a" of="$tmp/a.moved" bs=512 skip=10 seek=11 count=1 conv=notrunc status=none
ok "a sector copied to the wrong place is caught, at its offset" bash -c "
    $GUEST_IO pattern-verify --seed 7 '$tmp/a.moved' | tee /dev/stderr |
        grep -q '^R3MAP-RESULT: FAIL pattern-verify 1 bad sectors of 8192, the first at byte 5632 '
    test \${PIPESTATUS[0]} = 1"
printf 'X' | dd of="$tmp/a" bs=1 seek=100000 conv=notrunc status=none
cmd_fails "one changed byte is caught" gio pattern-verify --seed 7 "$tmp/a"
ok "--size: only the first part is written and checked" bash -c "
    truncate -s 1M '$tmp/c' &&
    $GUEST_IO pattern --size 64K '$tmp/c' &&
    test \"\$(tail -c +65537 '$tmp/c' | tr -d '\\0' | wc -c)\" = 0"

# --- Writer -------------------------------------------------------------
ok "writer for 1 s verifies every block it wrote" bash -c "
    $GUEST_IO writer --seconds 1 --control none '$tmp/a' '$tmp/b' > '$tmp/w1' &&
    cat '$tmp/w1' && grep -q '^R3MAP-RESULT: PASS writer-final: [1-9]' '$tmp/w1'"
ok "writer at 2 MiB/s for 1 s writes about 2 MiB" bash -c "
    $GUEST_IO writer --seconds 1 --rate 2 --control none '$tmp/b' > '$tmp/w2' &&
    n=\$(sed -n 's/.*stopped at seq \\([0-9]*\\).*/\\1/p' '$tmp/w2') && echo \$n &&
    test \$n -ge 400 && test \$n -le 620"

# Driven over a FIFO as the serial console drives it in the guest:
# pause, damage written blocks three ways, then verify: each is named.
mkfifo "$tmp/ctl"
truncate -s 4M "$tmp/w"
gio writer --control "$tmp/ctl" --report 0.2 "$tmp/w" > "$tmp/w3" 2>&1 &
wpid=$!
cleanup_fn kill $wpid
exec 3>"$tmp/ctl"
sleep 0.5
echo verify >&3
echo pause >&3
ok "writer: paused on command" _wait_for_line "writer: paused at seq" "$tmp/w3"
ok "writer: an intermediate verify passed" grep -q '^R3MAP-RESULT: PASS writer-verify 1:' "$tmp/w3"
echo latency >&3
ok "writer: 'latency' tells the longest write so far" \
    _wait_for_line "writer: longest write [0-9.]* ms (seq [1-9][0-9]*) of [1-9]" "$tmp/w3"
ok "writer: progress lines tell the longest write of the interval" \
    grep -q "writer: seq [0-9]* written .* MiB/s, longest write [0-9.]* ms" "$tmp/w3"
/usr/bin/python3 - "$tmp/w" <<'PY'
import struct, sys
path = sys.argv[1]
d = bytearray(open(path, "rb").read())
found = 0
for i in range(0, len(d), 4096):
    if struct.unpack_from("<Q", d, i)[0] != 0x5233574B424C4B31:
        continue
    found += 1
    if found == 1:
        d[i + 1000] ^= 1                      # payload damaged
    elif found == 2:                          # an older sequence number
        seq, = struct.unpack_from("<Q", d, i + 32)
        struct.pack_into("<Q", d, i + 32, seq - 1)
    elif found == 3:
        d[i:i + 4096] = bytes(4096)           # the write never landed
    elif found == 4:                          # a block written elsewhere
        d[i + 24] ^= 1
    else:
        break
open(path, "r+b").write(d)
PY
echo verify >&3
echo stop >&3
exec 3>&-
wait $wpid
status=$?
grep -v "written .* MiB at" "$tmp/w3" | sed "s/^/# /"
ok "writer: exit status 1 after the damage" test $status = 1
ok "writer: a damaged payload is caught" grep -q 'bad checksum' "$tmp/w3"
ok "writer: a lost write is caught" grep -q 'an older write (a write was lost)' "$tmp/w3"
ok "writer: a missing block is caught" grep -q 'no block header' "$tmp/w3"
ok "writer: a misplaced block is caught" grep -q 'a block meant for another place' "$tmp/w3"
ok "writer: verify 2 and the final one fail, naming 4 blocks" bash -c "
    grep -q '^R3MAP-RESULT: FAIL writer-verify 2: 4 of 1024 blocks wrong' '$tmp/w3' &&
    grep -q '^R3MAP-RESULT: FAIL writer-final: 4 of 1024 blocks wrong' '$tmp/w3'"

# --- Usage --------------------------------------------------------------
ok "bad usage exits 2" bash -c "
    $GUEST_IO writer --block 1000 '$tmp/b'; test \$? = 2 &&
    $GUEST_IO nonsense '$tmp/b'; test \$? = 2 &&
    $GUEST_IO pattern --size 3M '$tmp/b'; test \$? = 2"

done_testing
