#!/bin/sh
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The main job, on an embedded default: serve a 1 GiB disk from a
# directory of chunks with `nbdkit r3map-dir`, use it with stock NBD
# tools, and show what happened.  Everything lives in a temporary
# directory that is removed at the end.

set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
plugin="$top/plugins/dir/.libs/nbdkit-r3map-dir-plugin.so"
[ -f "$plugin" ] || { echo "demo: build r3map first (make)" >&2; exit 1; }

work=$(mktemp -d /tmp/r3map-demo.XXXXXX)
pid=
cleanup ()
{
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

disk="$work/disk"
sock="$work/nbd.sock"
uri="nbd+unix:///?socket=$sock"
mkdir "$disk"

say () { printf '\n== %s\n' "$*"; }

# qemu-io exits 0 even when a pattern does not match: look at what it says.
qio ()
{
    out=$(qemu-io -f raw "$@" 2>&1)
    printf '%s\n' "$out"
    if printf '%s\n' "$out" | grep -qi -e fail -e error; then
        echo "demo: qemu-io reported a failure" >&2
        exit 1
    fi
}

serve ()
{
    echo "\$ nbdkit -U $sock r3map-dir $disk $*"
    nbdkit -f -U "$sock" --exit-with-parent "$plugin" "$disk" "$@" &
    pid=$!
    i=0
    until nbdinfo --can connect "$uri" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "demo: nbdkit did not start" >&2; exit 1; }
        sleep 0.1
    done
}

stop ()
{
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    rm -f "$sock"
}

say "Serve a new 256 MiB disk, stored as 64 KiB chunk files"
serve size=256M
nbdinfo "$uri" | grep -E 'export-size|is_read_only|can_multi_conn|can_trim|can_fua'

say "Write 64 MiB of random data at the start with nbdcopy (4 connections)"
head -c 64M /dev/urandom > "$work/data"
echo "\$ nbdcopy --flush data $uri"
nbdcopy --flush "$work/data" "$uri"

say "Write a pattern across chunk boundaries at 192 MiB with qemu-io"
echo "\$ qemu-io -f raw -c 'write -P 0x5a 192M+1000 3M' -c 'read -P 0x5a ...' $uri"
qio -c "write -P 0x5a $((192 << 20 | 1000)) 3M" \
    -c "read -P 0x5a $((192 << 20 | 1000)) 3M" "$uri"

say "Only written chunks take space; the rest are holes"
echo "\$ nbdinfo --map $uri"
nbdinfo --map "$uri"
printf 'apparent size 256 MiB; %s chunk files use %s\n' \
    "$(find "$disk" -name '0*' | wc -l)" "$(du -sh "$disk" | cut -f1)"

say "Restart nbdkit (size and chunk size come from the directory) and verify"
stop
serve
nbdcopy "$uri" "$work/readback"
printf '%s  %s\n' "$(head -c 64M "$work/readback" | sha256sum | cut -d' ' -f1)" \
    "first 64 MiB of the disk"
printf '%s  %s\n' "$(sha256sum < "$work/data" | cut -d' ' -f1)" \
    "the random data written"
head -c 64M "$work/readback" | cmp -s - "$work/data"
qio -c "read -P 0x5a $((192 << 20 | 1000)) 3M" \
    -c "read -P 0 $((64 << 20)) 128M" "$uri"
stop

say "OK: every byte read back as written, across a restart"
