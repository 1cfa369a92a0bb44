#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A disk migrates between two nbdkit processes on this machine while a
# writer (the model checker) writes through the source: the seeder is
# r3map-dir under r3map-track, the leecher r3map-dir under r3map-pull
# with source= the seeder.  Clients of the leecher wait until finalize;
# after the seal and finalize the destination holds, byte for byte,
# what the source held at the seal, and the writer goes on there.

. "$srcdir/functions.sh"
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version

track="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"

# The disk: 256 MiB normally, 64 MiB under valgrind.
size=256M
ops=20000
if [ -n "$R3MAP_VALGRIND" ]; then size=64M; ops=4000; fi

src_sock="$tmp/src.sock" dst_sock="$tmp/dst.sock"
src="nbd+unix:///?socket=$src_sock"
dst="nbd+unix:///?socket=$dst_sock"
pids=()
stop_all ()
{
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    pids=()
}
cleanup_fn stop_all

wait_for ()                     # wait_for URI
{
    local i
    for i in $(seq 300); do
        [ -S "${1#*socket=}" ] && return 0
        sleep 0.1
    done
    return 1
}

mkdir "$tmp/a" "$tmp/b"
nbdkit -f -U "$src_sock" --filter="$track" "$(plugin dir)" dir="$tmp/a" \
    size=$size track-control="$tmp/a.ctl" 2>>"$tmp/src.log" &
pids+=($!)
wait_for "$src"
ok "the seeder is up" nbdinfo --size "$src"

# Initial contents: random data over the first half.
head -c $(( $(numfmt --from=iec $size) / 2 )) /dev/urandom > "$tmp/init"
truncate -s $size "$tmp/init"
ok "initial contents written to the source" \
    nbdcopy --flush "$tmp/init" "$src"

# The writer runs on the source during the migration; it saves its
# model when done, then the source is sealed.
$IOTEST --quiet --ops $ops --connections 2 --max-size 262144 \
    --initial "$tmp/init" --model "$tmp/sealed.model" "$src" \
    > "$tmp/writer.out" 2>&1 &
writer=$!

nbdkit -f -U "$dst_sock" --filter="$pullf" "$(plugin dir)" dir="$tmp/b" \
    size=$size source="$src" state="$tmp/b.state" status="$tmp/b.status" \
    precopy-interval=200ms 2>>"$tmp/dst.log" &
pids+=($!)
wait_for "$dst"

ok "a client of the leecher waits until finalize" bash -c "
    ! timeout 2 qemu-io -f raw -c 'read 0 512' '$dst' >/dev/null 2>&1"
wait $writer
writer_status=$?
ok "the writer finished on the source, its model held" test $writer_status = 0
sed 's/^/# /' "$tmp/writer.out"

ctl ()                          # ctl SOCKET COMMAND
{
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
print(s.makefile().readline().strip())
EOF
}
ok "the source is sealed" bash -c "$(declare -f ctl); ctl '$tmp/a.ctl' seal | grep -q '^sealed seq='"

# The sum of the source as sealed.
ok "the source reads back as the writer's model" \
    $IOTEST --quiet --verify-only --initial "$tmp/sealed.model" "$src"
ok "the destination, once finalized, is the source at the seal" \
    timeout 60 $IOTEST --quiet --verify-only --initial "$tmp/sealed.model" "$dst"
ok "and sha256 of both are equal" bash -c "
    test \"\$(nbdcopy '$src' - | sha256sum)\" = \"\$(nbdcopy '$dst' - | sha256sum)\""
ok "the writer goes on at the destination and its model holds" \
    $IOTEST --quiet --ops 2000 --connections 2 --initial "$tmp/sealed.model" "$dst"
cat "$tmp/dst.log" | tail -5

done_testing
