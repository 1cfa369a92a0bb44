#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The main job: live-migrate a disk between two nbdkit processes on
# this machine while a writer keeps writing to it.
#
#   source       nbdkit --filter=r3map-track r3map-dir  (the seeder)
#   destination  nbdkit --filter=r3map-pull  r3map-dir source=...
#
# A writer (fio, random 64K writes at DEMO_RATE) plays the source VM.
# The destination pulls the disk in the background and re-pulls what
# the writer changes (pre-copy rounds) while its own clients wait.
# Then the "VM" stops: the writer ends, the source is sealed with
# r3map seal, the destination finalizes (r3map finalize) and its
# clients may go on, while the rest is pulled.  The demo prints the
# downtime (seal to release), the total time, the bytes moved, and the
# checksums of both disks.
#
# Environment: DEMO_SIZE (default 512M), DEMO_RATE (default 10m, fio's
# --rate), DEMO_SECONDS (how long the writer writes, default 6).

set -euo pipefail

size=${DEMO_SIZE:-512M}
rate=${DEMO_RATE:-10m}
seconds=${DEMO_SECONDS:-6}

top=$(cd "$(dirname "$0")/.." && pwd)
dir="$top/plugins/dir/.libs/nbdkit-r3map-dir-plugin.so"
track="$top/filters/track/.libs/nbdkit-r3map-track-filter.so"
pull="$top/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$top/tools/r3map"
for f in "$dir" "$track" "$pull" "$r3map"; do
    [ -e "$f" ] || { echo "demo: $f: build r3map first (make)" >&2; exit 1; }
done
for c in nbdkit nbdcopy fio sha256sum; do
    command -v $c >/dev/null ||
        { echo "demo: $c not found (scripts/install-deps installs it)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/r3map-migrate.XXXXXX)
pids=()
cleanup ()
{
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$work"/*.pid; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    sleep 0.2
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

src="nbd+unix:///?socket=$work/src.sock"
dst="nbd+unix:///?socket=$work/dst.sock"
ms () { echo $(( $(date +%s%N) / 1000000 )); }
say () { printf '\n== %s\n' "$*"; }
wait_sock () { local i; for i in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.1; done; return 1; }

say "source: a $size disk (r3map-dir) under r3map-track"
mkdir "$work/a" "$work/b"
nbdkit -U "$work/src.sock" -P "$work/src.pid" --filter="$track" "$dir" \
    dir="$work/a" size="$size" track-control="$work/a.ctl"
wait_sock "$work/src.sock"
echo "filling it with random data..."
head -c "$(numfmt --from=iec "$size")" /dev/urandom > "$work/data"
nbdcopy --flush "$work/data" "$src"
rm -f "$work/data"

say "the source VM writes: fio, random 64K writes at $rate/s for ${seconds}s"
fio --name=vm --ioengine=nbd --uri="$src" --rw=randwrite --bs=64k \
    --rate="$rate" --time_based --runtime="$seconds" \
    --output="$work/fio.out" >/dev/null 2>&1 &
writer=$!
pids+=($writer)
sleep 1

say "destination: r3map-dir under r3map-pull, source=the seeder"
t_start=$(ms)
nbdkit -U "$work/dst.sock" -P "$work/dst.pid" --filter="$pull" "$dir" \
    dir="$work/b" size="$size" source="$src" status="$work/b.status" \
    precopy-interval=250ms
wait_sock "$work/dst.sock"
"$r3map" status --follow --interval=250ms "$work/b.status" &
bar=$!
pids+=($bar)
wait $writer || true
# Pre-copy until it caught up (every chunk local at least once).
until "$r3map" status "$work/b.status" |
        grep -q '^phase: *waiting for the seal\|^phase: *pre-copy' &&
      "$r3map" status "$work/b.status" | grep -q '(100%)'; do
    sleep 0.1
done
kill $bar 2>/dev/null || true
wait $bar 2>/dev/null || true
echo

say "the source VM stopped: seal the source, finalize the destination"
t_seal=$(ms)
"$r3map" seal "$work/a.ctl"
"$r3map" finalize --timeout=60s "$work/b.status"
t_fin=$(ms)
sum_src=$(nbdcopy "$src" - | sha256sum | cut -d' ' -f1)

say "post-copy: the destination pulls what changed at the seal"
"$r3map" status --follow --interval=100ms "$work/b.status"
t_end=$(ms)

sum_dst=$(nbdcopy "$dst" - | sha256sum | cut -d' ' -f1)
pulled=$("$r3map" status "$work/b.status" | sed -n 's/^pulled: *\([^(]*\) (.*/\1/p')

say "result"
printf '%-34s %s ms (seal sent -> destination released)\n' "downtime:" $((t_fin - t_seal))
printf '%-34s %s ms (destination start -> every chunk local)\n' "total time:" $((t_end - t_start))
printf '%-34s %s for a %s disk\n' "bytes moved:" "$pulled" "$size"
printf '%-34s %s\n' "sha256 of the source at the seal:" "$sum_src"
printf '%-34s %s\n' "sha256 of the destination:" "$sum_dst"
if [ "$sum_src" = "$sum_dst" ]; then
    echo "The destination holds exactly what the source held at the seal."
else
    echo "MISMATCH: the destination differs from the source" >&2
    exit 1
fi
