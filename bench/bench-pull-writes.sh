#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# bench-pull-writes.sh: a client writing while r3map-pull pulls.  What
# a migrated guest's writes see in the seconds after the switchover,
# without the guest: how long the longest write takes and how many get
# done, against the same writer with the pull held off, and how long
# the pull takes meanwhile.
#
# Usage: bash bench/bench-pull-writes.sh [--help]
#
# The remote is nbdkit's r3map-dir plugin serving BENCH_SIZE of random
# data, filled once (in the first of BENCH_DIRS).  For each repetition,
# each directory D in BENCH_DIRS, each local store S in BENCH_STORES
# and each setting W in BENCH_WORKERS, a destination is started:
#
#   nbdkit --filter=r3map-pull STORE source=REMOTE pull-workers=N
#
# with STORE r3map-dir (an empty directory in D: a file per 64 KiB
# chunk) or file (nbdkit's file plugin on a sparse file in D), and N
# from W; W "off" is pull-delay=1h (the writer alone).  At once fio
# (nbd engine) writes 64 KiB blocks at BENCH_RATE MiB/s, queue depth 1,
# sequentially from the middle of the disk, for BENCH_SECONDS: whole
# chunks, as the migrated guest of bench-qemu-migrate.sh writes.  Then
# `r3map status --follow` waits until every chunk is local.  The store
# is deleted after each run, as a destination's would be before the
# next migration.
#
# Environment:
#   BENCH_SIZE=1G             the disk
#   BENCH_DIRS="/var/tmp /dev/shm"  file systems of the local store
#   BENCH_STORES="r3map-dir file"
#   BENCH_WORKERS="off 1 4"   pull-workers, or off (no pull)
#   BENCH_RATE=50             the writer's MiB/s
#   BENCH_SECONDS=3           the writer's time
#   BENCH_REPS=3              repetitions; the table shows medians
#
# Output: a markdown table on stdout (medians), one line per run on
# stderr.  Needs nbdkit, fio with its nbd engine, python3; run `make`
# first.

set -euo pipefail

if [ "${1:-}" = "--help" ]; then
    sed -n '4,/^$/s/^# \{0,1\}//p' "$0"
    exit 0
fi

top=$(cd "$(dirname "$0")/.." && pwd)
size=${BENCH_SIZE:-1G}
dirs=${BENCH_DIRS:-/var/tmp /dev/shm}
stores=${BENCH_STORES:-r3map-dir file}
workers=${BENCH_WORKERS:-off 1 4}
rate=${BENCH_RATE:-50}
seconds=${BENCH_SECONDS:-3}
reps=${BENCH_REPS:-3}

dir_plugin=$top/plugins/dir/.libs/nbdkit-r3map-dir-plugin.so
pull=$top/filters/pull/.libs/nbdkit-r3map-pull-filter.so
r3map=$top/tools/r3map
for f in "$dir_plugin" "$pull" "$r3map"; do
    [ -e "$f" ] || { echo "bench: $f: build r3map first (make)" >&2; exit 1; }
done
for c in nbdkit fio python3; do
    command -v $c >/dev/null || { echo "bench: needs $c" >&2; exit 1; }
done

set -- $dirs
work=$(mktemp -d "$1/r3map-bench-pull-writes.XXXXXX")
pids=()
cleanup ()
{
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || :; done
    rm -rf "$work" "${stores_made[@]}"
}
stores_made=()
trap cleanup EXIT

ms () { echo $(( $(date +%s%N) / 1000000 )); }

# Start nbdkit in the background, its pid in $nbdkit_pid.
start_nbdkit ()
{
    local sock=$1 i; shift
    rm -f "$sock" "$sock.pid"
    nbdkit -U "$sock" -P "$sock.pid" "$@"
    # nbdkit's parent returns before its child writes the pid file.
    for i in $(seq 100); do
        [ -s "$sock.pid" ] && break
        sleep 0.05
    done
    nbdkit_pid=$(cat "$sock.pid")
    pids+=("$nbdkit_pid")
}

stop_nbdkit ()
{
    kill "$1" 2>/dev/null || :
    while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
}

echo "bench: filling a $size remote with random data" >&2
mkdir "$work/remote"
start_nbdkit "$work/remote.sock" "$dir_plugin" "$work/remote" size="$size"
remote=$nbdkit_pid
nbdcopy -- [ nbdkit --exit-with-parent random size="$size" ] \
    "nbd+unix:///?socket=$work/remote.sock"
sync
bytes=$(nbdinfo --size "nbd+unix:///?socket=$work/remote.sock")
offset=$(( bytes / 2 ))

results=$work/results
: > "$results"
for rep in $(seq "$reps"); do
    for d in $dirs; do
        for s in $stores; do
            for w in $workers; do
                store=$(mktemp -d "$d/r3map-bench-store.XXXXXX")
                stores_made+=("$store")
                case $s in
                r3map-dir) args=("$dir_plugin" "$store/dir" size="$size")
                           mkdir "$store/dir" ;;
                file)      truncate -s "$size" "$store/img"
                           args=(file "$store/img") ;;
                *) echo "bench: BENCH_STORES: $s: r3map-dir or file" >&2
                   exit 1 ;;
                esac
                case $w in
                off) pargs=(pull-delay=1h) ;;
                *)   pargs=(pull-workers="$w") ;;
                esac
                sync
                t0=$(ms)
                start_nbdkit "$work/dst.sock" --filter="$pull" "${args[@]}" \
                    "source=nbd+unix:///?socket=$work/remote.sock" \
                    status="$work/dst.status" "${pargs[@]}"
                # The pull's end, watched from its start (not after fio).
                rm -f "$work/pulled"
                if [ "$w" != off ]; then
                    ( "$r3map" status --follow "$work/dst.status" >/dev/null
                      ms > "$work/pulled" ) &
                    follow=$!
                fi
                fio --name=w --ioengine=nbd \
                    --uri="nbd+unix:///?socket=$work/dst.sock" \
                    --rw=write --bs=64k --rate="${rate}m" --iodepth=1 \
                    --runtime="$seconds" --time_based --offset="$offset" \
                    --size=$(( bytes - offset )) --output-format=json \
                    2>/dev/null | sed -n '/^{/,$p' > "$work/fio.json"
                pulled=—
                if [ "$w" != off ]; then
                    wait "$follow"
                    pulled=$(( $(cat "$work/pulled") - t0 ))
                fi
                stop_nbdkit "$nbdkit_pid"
                rm -rf "$store"
                python3 - "$work/fio.json" "$rep" "$d" "$s" "$w" "$pulled" \
                    >> "$results" <<'EOF'
import json, sys
f, rep, d, s, w, pulled = sys.argv[1:]
j = json.load(open(f))["jobs"][0]["write"]
print(json.dumps({"rep": int(rep), "dir": d, "store": s, "workers": w,
                  "writes": j["total_ios"],
                  "longest_ms": j["lat_ns"]["max"] / 1e6,
                  "pull_ms": None if pulled == "—" else int(pulled)}))
EOF
                tail -n1 "$results" >&2
            done
        done
    done
done
stop_nbdkit "$remote"

python3 - "$results" "$rate" "$seconds" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate, seconds = int(sys.argv[2]), int(sys.argv[3])
want = rate * 16 * seconds          # 64 KiB writes
keys = []
for r in rows:
    k = (r["dir"], r["store"], r["workers"])
    if k not in keys:
        keys.append(k)
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
print("| store's file system | local store | pull-workers | writes done (of %d) | longest write ms | pull s | runs |" % want)
print("|---|---|---|---:|---:|---:|---:|")
for k in keys:
    rs = [r for r in rows if (r["dir"], r["store"], r["workers"]) == k]
    p = med([r["pull_ms"] for r in rs])
    print("| %s | %s | %s | %d | %.0f | %s | %d |" % (
        k[0], k[1], "off (no pull)" if k[2] == "off" else k[2],
        med([r["writes"] for r in rs]), med([r["longest_ms"] for r in rs]),
        "—" if p is None else "%.1f" % (p / 1000), len(rs)))
EOF
