#!/usr/bin/env bash
# bench-dir.sh: benchmark nbdkit r3map-dir against nbdkit's file plugin.
#
# Usage: bash bench/bench-dir.sh [--help]
#
# Both servers keep their data on the same tmpfs and are measured in one
# run, alternating (r3map-dir first on odd repetitions, file first on even
# ones).  Each repetition, for each server:
#
#   1. a fresh, empty disk: an empty directory for r3map-dir, a sparse
#      file made with truncate for file (neither preallocated);
#   2. sequential write: BENCH_SIZE of random data (a file on the same
#      tmpfs) into the export with `nbdcopy --flush`, flush included;
#   3. sequential read: the whole export to `null:` with nbdcopy (both
#      disks now hold the same data);
#   4. 4 KiB random reads with fio's nbd engine, queue depth 1, then 32,
#      BENCH_RUNTIME each.
#
# The medians over the repetitions are printed to stdout as a markdown
# table; ratio = r3map-dir / file, throughput everywhere (MB/s = 10^6
# bytes/s, or IOPS), so higher is better on every row and 1.00 is parity.
# Progress and the raw figures of each repetition go to stderr.
#
# Environment:
#   BENCH_SIZE=1G       disk size and amount copied (K, M, G suffixes: 2^10..)
#   BENCH_REPS=5        repetitions; the table shows medians
#   BENCH_RUNTIME=10    seconds of each random-read run (fio --runtime)
#   BENCH_DIR=          a directory (on a tmpfs) to work in; by default the
#                       script mounts a private tmpfs in a private mount
#                       namespace (needs root and unshare), else /dev/shm
#   BENCH_OPEN_FILES=   pass open-files=N to r3map-dir (default: not passed,
#                       the plugin's own default)
#   BENCH_NOFILE=       run `ulimit -n N` before starting the servers
#                       (default: the limit the script inherits)
#   BENCH_PLUGIN=       the r3map-dir plugin (default: the in-tree build,
#                       plugins/dir/.libs/nbdkit-r3map-dir-plugin.so)
#
# Needs: nbdkit (Debian package nbdkit), nbdcopy and nbdinfo (libnbd-bin),
# fio (fio) and jq (jq) or /usr/bin/python3 (python3).  A default run takes
# about 4 minutes (2 CPUs, 1 GiB: 3 min 40 s).

set -euo pipefail

usage () {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

if [[ $# -gt 0 ]]; then
  case $1 in
    -h|--help) usage; exit 0 ;;
    *) echo "bench-dir.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
fi

die () { echo "bench-dir.sh: $*" >&2; exit 1; }
say () { echo "bench-dir.sh: $*" >&2; }

need () {                       # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 ||
    die "$1 not found: install the Debian package $2 (apt-get install $2)"
}

need nbdkit nbdkit
need nbdcopy libnbd-bin
need nbdinfo libnbd-bin
need fio fio
need numfmt coreutils
if command -v jq >/dev/null 2>&1; then
  json_iops () { jq -e '.jobs[0].read.iops' "$1"; }
elif [[ -x /usr/bin/python3 ]]; then
  json_iops () {
    /usr/bin/python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"])' "$1"
  }
else
  die "neither jq nor /usr/bin/python3 found: install the Debian package jq"
fi
fio --enghelp 2>/dev/null | grep -qw nbd ||
  die "this fio has no nbd engine: install Debian's fio (built with libnbd)"

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
plugin=${BENCH_PLUGIN:-$top/plugins/dir/.libs/nbdkit-r3map-dir-plugin.so}
[[ -f $plugin ]] ||
  die "$plugin not found: build it first (make -C plugins/dir) or set BENCH_PLUGIN"

size_arg=${BENCH_SIZE:-1G}
reps=${BENCH_REPS:-5}
runtime=${BENCH_RUNTIME:-10}
open_files=${BENCH_OPEN_FILES:-}
nofile=${BENCH_NOFILE:-}

size=$(numfmt --from=iec "$size_arg" 2>/dev/null) ||
  die "BENCH_SIZE=$size_arg: not a size (e.g. 1G, 512M)"
[[ $size -ge 1048576 ]] || die "BENCH_SIZE=$size_arg: at least 1M please"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS=$reps: not a positive number"
[[ $runtime =~ ^[1-9][0-9]*s?$ ]] ||
  die "BENCH_RUNTIME=$runtime: not a number of seconds"
[[ -z $open_files || $open_files =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_OPEN_FILES=$open_files: not a positive number"
[[ -z $nofile || $nofile =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_NOFILE=$nofile: not a positive number"

# By default, move into a private mount namespace (same process, via
# exec) so that the tmpfs mounted below is invisible to the rest of the
# system and disappears with the script whatever happens.
if [[ -z ${BENCH_DIR:-} && -z ${BENCH_IN_NS:-} && $(id -u) -eq 0 ]] &&
   command -v unshare >/dev/null 2>&1 &&
   unshare -m --propagation private true 2>/dev/null; then
  export BENCH_IN_NS=1
  exec unshare -m --propagation private -- "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

if [[ -n $nofile ]]; then
  ulimit -n "$nofile" 2>/dev/null ||
    die "BENCH_NOFILE=$nofile: cannot set ulimit -n (hard limit $(ulimit -Hn);" \
      "raising it needs CAP_SYS_RESOURCE)"
fi

# ---------------------------------------------------------------- cleanup
work='' mnt='' pids=()

cleanup () {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
  if [[ -n $mnt ]]; then
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    rmdir "$mnt" 2>/dev/null || true
  elif [[ -n $work ]]; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tmpfs
if [[ -n ${BENCH_DIR:-} ]]; then
  [[ -d $BENCH_DIR ]] || die "BENCH_DIR=$BENCH_DIR: not a directory"
  work=$(mktemp -d "$BENCH_DIR/bench-dir.XXXXXX")
elif [[ -n ${BENCH_IN_NS:-} ]]; then
  mnt=$(mktemp -d /tmp/bench-dir.XXXXXX)
  # The random source and one disk at a time, plus room for metadata.
  mount -t tmpfs -o "size=$((2 * size + 64 * 1048576)),mode=0700" \
    bench-dir "$mnt" || die "cannot mount a tmpfs on $mnt"
  work=$mnt
else
  work=$(mktemp -d /dev/shm/bench-dir.XXXXXX)
fi
fstype=$(stat -f -c %T "$work")
[[ $fstype == tmpfs ]] ||
  say "warning: $work is on $fstype, not tmpfs: figures include that file system"
avail=$(( $(stat -f -c '%a * %S' "$work") ))
[[ $avail -ge $((2 * size)) ]] ||
  die "$work: $(numfmt --to=iec $avail) free, $(numfmt --to=iec $((2 * size))) needed"

# ---------------------------------------------------------------- machine
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
machine="$(nproc) CPUs ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
nbdkit_version=$(nbdkit --version | awk '{print $2}')
r3map_args=()
[[ -n $open_files ]] && r3map_args+=("open-files=$open_files")
config="BENCH_SIZE=$size_arg BENCH_REPS=$reps BENCH_RUNTIME=$runtime,"
config+=" ulimit -n $(ulimit -n),"
config+=" r3map-dir ${r3map_args[*]:-open-files default} chunk-size default (64K)"

say "working in $work ($fstype); $config"
say "creating $size_arg of random data"
head -c "$size" /dev/urandom > "$work/src"
[[ $(stat -c %s "$work/src") -eq $size ]] || die "short random source file"
# Touch as much fresh memory once more, untimed, so that the first
# server measured does not pay alone for the first use of it (in a VM,
# the host's page faults).
cp "$work/src" "$work/warm-up" && rm -f "$work/warm-up"

# ---------------------------------------------------------------- servers
sock=$work/sock
uri="nbd+unix:///?socket=$sock"
server=

start_server () {               # start_server r3map-dir|file
  local peer=$1 i
  rm -f "$sock"
  case $peer in
    r3map-dir)
      mkdir "$work/disk"
      nbdkit -f --exit-with-parent -U "$sock" "$plugin" \
        dir="$work/disk" size="$size" "${r3map_args[@]}" &
      ;;
    file)
      truncate -s "$size" "$work/disk"
      nbdkit -f --exit-with-parent -U "$sock" file file="$work/disk" &
      ;;
  esac
  server=$!
  pids+=("$server")
  for ((i = 0; i < 100; i++)); do
    nbdinfo --can connect "$uri" 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || die "nbdkit $peer failed to start"
    sleep 0.1
  done
  die "nbdkit $peer: no answer on $sock after 10 s"
}

stop_server () {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  pids=()
  rm -rf "$work/disk" "$sock"
}

# ---------------------------------------------------------------- tests
tests=(write read qd1 qd32)
declare -A label=(
  [write]="sequential write, $size_arg, nbdcopy --flush (MB/s)"
  [read]="sequential read, $size_arg, nbdcopy to null: (MB/s)"
  [qd1]="4 KiB random read, QD1, fio nbd (IOPS)"
  [qd32]="4 KiB random read, QD32, fio nbd (IOPS)"
)
results=$work/results
mkdir "$results"

now () { date +%s%N; }

mbps () {                       # mbps START-NS END-NS
  awk -v b="$size" -v t0="$1" -v t1="$2" \
    'BEGIN { printf "%.1f\n", b / ((t1 - t0) / 1e9) / 1e6 }'
}

randread () {                   # randread QUEUE-DEPTH
  fio --name=randread --ioengine=nbd --uri="$uri" --rw=randread --bs=4k \
    --iodepth="$1" --time_based --runtime="$runtime" \
    --output-format=json --output="$work/fio.json" >/dev/null
  json_iops "$work/fio.json" | awk '{ printf "%.0f\n", $1 }'
}

run_peer () {                   # run_peer REP PEER
  local rep=$1 peer=$2 t0 t1 w r q1 q32
  start_server "$peer"
  t0=$(now); nbdcopy --flush "$work/src" "$uri"; t1=$(now)
  w=$(mbps "$t0" "$t1")
  t0=$(now); nbdcopy "$uri" null:; t1=$(now)
  r=$(mbps "$t0" "$t1")
  q1=$(randread 1)
  q32=$(randread 32)
  stop_server
  echo "$w" >> "$results/write.$peer"
  echo "$r" >> "$results/read.$peer"
  echo "$q1" >> "$results/qd1.$peer"
  echo "$q32" >> "$results/qd32.$peer"
  say "rep $rep/$reps $(printf '%-9s' "$peer"): write $w MB/s, read $r MB/s, QD1 $q1 IOPS, QD32 $q32 IOPS"
}

start=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  if ((rep % 2)); then order=(r3map-dir file); else order=(file r3map-dir); fi
  for peer in "${order[@]}"; do
    run_peer "$rep" "$peer"
  done
done
elapsed=$(( $(date +%s) - start ))

median () {
  sort -g "$1" | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------- table
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $machine; nbdkit $nbdkit_version;" \
  "tmpfs ($(if [[ -n $mnt ]]; then echo private mount; else echo "$work"; fi));" \
  "$config; medians of $reps; ${elapsed} s"
echo
echo "| test | r3map-dir | file | ratio |"
echo "|---|---:|---:|---:|"
for t in "${tests[@]}"; do
  a=$(median "$results/$t.r3map-dir")
  b=$(median "$results/$t.file")
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f\n", (b > 0 ? a / b : 0) }')
  if [[ $t == qd* ]]; then fmt='%.0f'; else fmt='%.1f'; fi
  printf "| %s | $fmt | $fmt | %s |\n" "${label[$t]}" "$a" "$b" "$ratio"
done
