#!/usr/bin/env bash
# bench-libvirt.sh: virsh migrate --live of the test guest with its disk
# moved by r3map (r3map-hook and r3map-libvirt watch) against libvirt's
# own storage migration (--copy-storage-all: QEMU's drive-mirror to an
# NBD server on the destination).
#
# Usage: bash bench/bench-libvirt.sh [--help]   (as root, from the build tree)
#
# Two libvirtd instances on this machine, as qemu-tests/libvirt-functions.sh
# makes them (each in a mount namespace of its own, migration over
# loopback).  The guest is qemu-tests' (TCG, 256 MiB of RAM, one vCPU)
# running its checksummed writer on a disk of BENCH_SIZE filled with
# random data beforehand:
#
#   r3map      an r3map-dir disk served by the hook; virsh migrate --live
#              --persistent; the destination's hook pulls the disk from
#              the source's seeder over TLS
#   r3map-post the same with precopy='off' (r3map-libvirt attach
#              --precopy=off): the destination copies nothing before the
#              switch-over, all of the disk after it
#   copy       a raw file on the source, an empty sparse file of the same
#              size on the destination; virsh migrate --live --persistent
#              --copy-storage-all
#
# in two loads: idle (the writer paused) and write (the writer writing,
# rate-limited to BENCH_RATE MiB/s).  For each run, from virsh domjobinfo
# --completed: total time, downtime and RAM moved (the destination's),
# disk bytes libvirt moved (the source's); for r3map also the bytes the leecher pulled and
# when the destination held the whole disk (from the start of the
# migration; the guest runs on the destination from the end of the
# migration, with reads of chunks not yet pulled fetched on demand).
# The guest verifies every block it wrote at the end of each run.
#
# Medians over BENCH_REPS repetitions (runs alternate the peers) are
# printed as a markdown table; each run's figures go to stderr.
#
# Environment:
#   BENCH_SIZE=1G     disk size
#   BENCH_REPS=3      repetitions
#   BENCH_RATE=2      the writer's rate, MiB/s, under write load
#   BENCH_LOADS="idle write"
#   BENCH_PEERS="r3map r3map-post copy"
#
# Needs root, libvirtd (libvirt-daemon-system, libvirt-daemon-driver-qemu),
# virsh, qemu-system-x86, the test guest (make -C qemu-tests guest),
# nbdkit, nbdcopy, psktool and /usr/bin/python3.

set -uo pipefail

usage () {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}
if [[ $# -gt 0 ]]; then
  case $1 in
    -h|--help) usage; exit 0 ;;
    *) echo "bench-libvirt.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
fi

size=${BENCH_SIZE:-1G}
reps=${BENCH_REPS:-3}
rate=${BENCH_RATE:-2}
loads=${BENCH_LOADS:-idle write}
peers=${BENCH_PEERS:-r3map r3map-post copy}

abs_top_builddir=$(cd "$(dirname "$0")/.." && pwd)
abs_top_srcdir=$abs_top_builddir
srcdir=$abs_top_srcdir/qemu-tests
R3MAP_VALGRIND=
export abs_top_builddir abs_top_srcdir
# The tests' helpers: a private $tmp, libvirtd instances, the guest.
. "$abs_top_srcdir/tests/functions.sh"
. "$abs_top_srcdir/tests/hook-functions.sh"
. "$srcdir/qemu-functions.sh"
. "$srcdir/libvirt-functions.sh"
set +u
requires_guest >&2
requires_libvirt
set -u
r3map="$abs_top_builddir/tools/r3map"
bytes=$(numfmt --from=iec "$size")

say () { echo "bench-libvirt: $*" >&2; }
ms () { echo $(( $(date +%s%N) / 1000000 )); }

lv_start A 127.0.0.1 >&2
lv_start B 127.0.0.1 >&2
mkdir -p "$tmp/lv-B/run/r3map-test" "$tmp/lv-B/lib/r3map/disks" "$tmp/lv-B/lib/images"
say "random data for the disks ($size)"
head -c "$bytes" /dev/urandom > "$tmp/data"

# fill_r3map DIR: the random data into an r3map-dir disk.
fill_r3map ()
{
    local sock="$tmp/fill-$n.sock" pid="$tmp/fill-$n.pid" status
    mkdir -p "$1"
    nbdkit -U "$sock" -P "$pid" "$(plugin dir)" dir="$1" size="$size" || return 1
    nbdcopy --flush "$tmp/data" "nbd+unix:///?socket=$sock"
    status=$?
    kill "$(cat "$pid")"
    while kill -0 "$(cat "$pid")" 2>/dev/null; do sleep 0.1; done
    return $status
}

# jobinfo HOST DOM KEY: a figure of virsh domjobinfo --completed.
jobinfo ()
{
    lv_virsh "$1" domjobinfo --completed --keep-completed "$2" 2>/dev/null |
        sed -n "s/^$3: *\([0-9.]*\).*/\1/p" | head -n 1
}
# to MiB from libvirt's "1.234 GiB"-style figures
jobinfo_mib ()
{
    lv_virsh "$1" domjobinfo --completed --keep-completed "$2" 2>/dev/null |
        awk -v k="$3" -F': *' '$1 == k { split($2, a, " ");
            f = a[2] == "GiB" ? 1024 : a[2] == "KiB" ? 1/1024 : a[2] == "B" ? 1/1048576 : 1;
            printf "%.0f", a[1] * f }'
}

results="$tmp/results"
: > "$results"
n=0

run ()
{
    local peer=$1 load=$2 rep=$3 dom uuid t0 t1 whole=- pulled=- port
    n=$((n + 1))
    dom="b$n"
    uuid=$(printf '0b0b0b0b-0000-4000-8000-%012d' $n)
    port=$(( 49152 + RANDOM % 10000 ))
    lv_domain_xml "$dom" "$uuid" "r3map.work=writer r3map.size=16M r3map.report=1 r3map.rate=$rate" \
        > "$tmp/$dom.xml"
    mkdir -p "$tmp/lv-A/run/r3map-test"
    local r3=false precopy=on
    case $peer in r3map) r3=true ;; r3map-post) r3=true precopy=off ;; esac
    if $r3; then
        fill_r3map "$tmp/lv-A/lib/r3map/disks/$dom-vda" ||
            { say "cannot fill the r3map disk"; return 1; }
        $R3LV attach --config="$tmp/lv-A/hook.conf" --in-place --plugin=r3map-dir \
            --migration --source-copy=remove --precopy=$precopy "$tmp/$dom.xml" \
            dir="/var/lib/libvirt/r3map/disks/$dom-vda" size="$size" >&2
    else
        mkdir -p "$tmp/lv-A/lib/images"
        cp "$tmp/data" "$tmp/lv-A/lib/images/$dom.raw"
        truncate -s "$bytes" "$tmp/lv-B/lib/images/$dom.raw"
        /usr/bin/python3 - "$tmp/$dom.xml" "/var/lib/libvirt/images/$dom.raw" <<'PY'
import sys
p, f = sys.argv[1], sys.argv[2]
x = open(p).read().replace("</devices>",
    "  <disk type='file' device='disk'>\n"
    "      <driver name='qemu' type='raw' cache='none'/>\n"
    "      <source file='%s'/>\n      <target dev='vda' bus='virtio'/>\n"
    "    </disk>\n  </devices>" % f)
open(p, "w").write(x)
PY
    fi
    lv_virsh A define "$tmp/$dom.xml" >/dev/null && lv_virsh A start "$dom" >/dev/null || {
        say "$peer: cannot start the guest"; return 1; }
    wait_until 120 lv_console_has A "$dom" 'writer: seq [1-9][0-9]* written' ||
        { say "$peer: the writer did not start"; return 1; }
    if [ "$load" = idle ]; then
        lv_serial A "$dom" pause >/dev/null
        wait_until 30 lv_console_has A "$dom" 'writer: paused'
    fi
    $r3 && wait_until 30 bash -c "
        timeout 20 virsh -q -c '$(lv_uri A)' dumpxml $dom | grep -q '<r3map:seeder '"
    sleep 2

    local extra=""
    [ "$peer" = copy ] && extra=--copy-storage-all
    t0=$(ms)
    # The source keeps its (inactive) definition, so that its completed
    # job, which alone counts the disk that libvirt copies, can be read.
    LV_TIMEOUT=600 lv_virsh A migrate --live --persistent $extra "$dom" \
        "$(lv_uri B)" --migrateuri "tcp://127.0.0.1:$port" >&2 ||
        { say "$peer $load: virsh migrate failed"; return 1; }
    t1=$(ms)
    if $r3; then
        local st="$tmp/lv-B/run/r3map/$uuid/vda.status"
        while ! "$r3map" status "$st" 2>/dev/null | grep -q '(100%)'; do
            [ $(( $(ms) - t0 )) -gt 600000 ] && break
            sleep 0.05
        done
        whole=$(( $(ms) - t0 ))
        pulled=$("$r3map" status --json "$st" | /usr/bin/python3 -c \
            'import json, sys; print(round(json.load(sys.stdin)["bytes_pulled"] / 1048576))')
    fi
    local down ram disk
    lv_virsh B domjobinfo --completed --keep-completed "$dom" 2>&1 | sed "s/^/bench-libvirt:   B: /" >&2
    down=$(jobinfo B "$dom" "Total downtime")
    lv_virsh A domjobinfo --completed --keep-completed "$dom" 2>&1 | sed "s/^/bench-libvirt:   A: /" >&2
    ram=$(jobinfo_mib B "$dom" "Memory processed")
    disk=$(jobinfo_mib A "$dom" "File processed")
    lv_serial B "$dom" stop >/dev/null
    wait_until 120 bash -c "test \"\$(timeout 20 virsh -q -c '$(lv_uri B)' domstate $dom)\" = 'shut off'"
    local verdict=FAIL
    lv_console B "$dom" | grep -q '^R3MAP-RESULT: PASS writer-final' && verdict=PASS
    printf '%s %s %s %s %s %s %s %s %s %s\n' "$peer" "$load" "$rep" $((t1 - t0)) \
        "${down:--}" "${ram:--}" "${disk:-0}" "$pulled" "$whole" "$verdict" >> "$results"
    say "$peer $load #$rep: total $((t1 - t0)) ms, downtime ${down:--} ms," \
        "RAM ${ram:--} MiB, disk by libvirt ${disk:-0} MiB, pulled by r3map $pulled MiB," \
        "disk whole at $whole ms, guest's check $verdict"
    lv_virsh B undefine "$dom" >/dev/null 2>&1
    lv_virsh A undefine "$dom" >/dev/null 2>&1
    rm -rf "$tmp/lv-B/lib/r3map/disks/$dom-vda" "$tmp/lv-B/lib/images/$dom.raw" \
        "$tmp/lv-A/lib/images/$dom.raw"
    # The source's seeder goes once the destination has every chunk.
    wait_until 60 bash -c "test -z \"\$(lv_r3map_processes A)\""
    return 0
}

for rep in $(seq "$reps"); do
    for load in $loads; do
        # Alternate the order of the peers from one repetition to the next.
        if [ $((rep % 2)) = 1 ]; then order=$peers; else order=$(printf '%s\n' $peers | tac); fi
        for peer in $order; do
            run "$peer" "$load" "$rep" || say "run failed: $peer $load #$rep"
        done
    done
done

# Medians.
/usr/bin/python3 - "$results" "$size" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(vals):
    v = [float(x) for x in vals if x not in ("-", "")]
    return "%.0f" % statistics.median(v) if v else "-"
print("| migration (%s disk) | load | runs | total ms | downtime ms | RAM MiB | disk MiB by libvirt | disk MiB by r3map | disk whole at ms | guest's check |" % sys.argv[2])
print("|---|---|---|---|---|---|---|---|---|---|")
for peer in ("r3map", "r3map-post", "copy"):
    for load in ("idle", "write"):
        r = [x for x in rows if x[0] == peer and x[1] == load]
        if not r:
            continue
        name = {"r3map": "r3map hook", "r3map-post": "r3map hook, precopy='off'",
                "copy": "--copy-storage-all"}[peer]
        checks = "%d/%d pass" % (sum(x[9] == "PASS" for x in r), len(r))
        print("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
            name, load, len(r), med(x[3] for x in r), med(x[4] for x in r),
            med(x[5] for x in r), med(x[6] for x in r), med(x[7] for x in r),
            med(x[8] for x in r), checks))
PY
