#!/usr/bin/env bash
# bench-pull.sh: read throughput of a remote disk against round trip time:
# direct access, nbdkit --filter=r3map-pull, nbdkit's cache + readahead.
#
# Usage: bash bench/bench-pull.sh [--help]
#
# The remote is nbdkit's file plugin serving BENCH_SIZE of random data
# (a file on a private tmpfs) behind nbdkit's delay filter: every request
# (read, write, zero, trim, extents, cache) and every connection (open)
# waits RTT ms in the remote before it is served, for each RTT in
# BENCH_RTTS.  The remote runs BENCH_REMOTE_THREADS threads per
# connection, so up to that many requests wait at once, as on a network
# where the round trip is a latency, not a limit on requests in flight.
# The peers, on a Unix socket each, in alternating order (the list below
# on odd repetitions, reversed on even ones):
#
#   direct           the client talks to the remote itself
#   r3map-pull S     nbdkit --filter=r3map-pull with source= the remote
#                    and the local store S below it, for each S in
#                    BENCH_STORES: file (nbdkit's file plugin, a sparse
#                    file) or r3map-dir (an empty directory), on the
#                    tmpfs; the filter's defaults otherwise (chunk-size
#                    64K, pull-workers 4) plus BENCH_PULL_ARGS
#   cache+readahead B
#                    nbdkit --filter=readahead --filter=cache nbd
#                    socket=REMOTE cache-on-read=true
#                    cache-min-block-size=B (the order nbdkit's manual
#                    pages give: readahead above cache), its cache file
#                    on the tmpfs, for each B in BENCH_CACHE_BLOCKS
#
# The client is nbdcopy to null: with --no-extents (so that only reads
# are sent), 1 connection and 256 KiB requests, in two profiles:
#
#   QD1    --requests=1: one request in flight, each read waits for the
#          one before it (a reader that does not overlap its reads);
#   QD64   --requests=64: 64 requests in flight, whose round trips
#          overlap (a bulk copy).
#
# Each repetition, for each RTT, for each peer:
#
#   1. start: the time from starting nbdkit until a client connects
#      (nbdinfo --can connect, retried every 5 ms); for direct, the time
#      nbdinfo --can connect takes on the remote;
#   2. first byte: the latency of one cold 4 KiB read of the last 4 KiB
#      of the disk (fio, nbd engine, lat of its one read), right away;
#   3. first read QD1: the whole disk, right after that (for r3map-pull
#      while its background pull runs, for the cache while it is empty
#      but for the last block);
#   4. r3map-pull only: the time from start until its status= file says
#      the pull is complete (the file is updated a few times a second),
#      and how many chunks steps 2 and 3 fetched on demand;
#   5. second read QD1 and QD64: the whole disk again (r3map-pull: pulled;
#      cache: everything cached);
#   6. r3map-pull and cache: a fresh start on an empty store, and a
#      first read QD64 right after start.
#
# direct has no cache, so its first and only reads are measured once
# each (QD1, QD64).  The local store alone (nbdkit's file plugin, or
# r3map-dir filled beforehand with the same data, no filter, no remote) is
# read with both profiles once per repetition: the reference of the
# pulled reads.
#
# The medians over the repetitions are printed to stdout as markdown
# tables (MB/s = 10^6 bytes/s; latencies in ms), with the ratios that the
# targets name, and a PNG plot of the first reads is written to
# BENCH_PLOT.  Progress and the raw figures of each run go to stderr.
#
# Environment:
#   BENCH_SIZE=512M     disk size (K, M, G suffixes: 2^10..)
#   BENCH_RTTS="0 1 5 10 25"
#                       round trip times in ms (integers)
#   BENCH_REPS=3        repetitions; the tables show medians
#   BENCH_STORES="file r3map-dir"
#                       local stores below r3map-pull
#   BENCH_CACHE_BLOCKS="4M"
#                       cache-min-block-size of nbdkit's cache filter (its
#                       default is 64K: slow, see docs/BENCHMARKS.md)
#   BENCH_PULL_ARGS=    more parameters for r3map-pull (e.g. pull-workers=8)
#   BENCH_REMOTE_THREADS=64
#                       nbdkit -t of the remote
#   BENCH_PLOT=bench-pull.png
#                       where to write the plot (empty: no plot)
#   BENCH_DIR=          a directory (on a tmpfs) to work in; by default the
#                       script mounts a private tmpfs in a private mount
#                       namespace (needs root and unshare), else /dev/shm
#   BENCH_FILTER=       the r3map-pull filter (default: the in-tree build,
#                       filters/pull/.libs/nbdkit-r3map-pull-filter.so)
#   BENCH_PLUGIN=       the r3map-dir plugin (default: the in-tree build)
#   BENCH_R3MAP=        the r3map tool (default: the in-tree tools/r3map)
#
# Needs: nbdkit (Debian package nbdkit, with its delay, cache and
# readahead filters and nbd plugin), nbdcopy and nbdinfo (libnbd-bin), fio
# (fio), gnuplot (gnuplot-nox) and jq (jq) or /usr/bin/python3 (python3).
# A default run takes about 9 minutes (2 CPUs, 512 MiB: 8 min 22 s); most of it is
# direct access at QD1, which reads 2048 requests, one round trip each.

set -euo pipefail

usage () {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

if [[ $# -gt 0 ]]; then
  case $1 in
    -h|--help) usage; exit 0 ;;
    *) echo "bench-pull.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
fi

die () { echo "bench-pull.sh: $*" >&2; exit 1; }
say () { echo "bench-pull.sh: $*" >&2; }

need () {                       # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 ||
    die "$1 not found: install the Debian package $2 (apt-get install $2)"
}

need nbdkit nbdkit
need nbdcopy libnbd-bin
need nbdinfo libnbd-bin
need fio fio
need numfmt coreutils
plot=${BENCH_PLOT-bench-pull.png}
[[ -z $plot ]] || need gnuplot gnuplot-nox
if command -v jq >/dev/null 2>&1; then
  json_lat () { jq -e '.jobs[0].read.lat_ns.mean' "$1"; }
elif [[ -x /usr/bin/python3 ]]; then
  json_lat () {
    /usr/bin/python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["jobs"][0]["read"]["lat_ns"]["mean"])' "$1"
  }
else
  die "neither jq nor /usr/bin/python3 found: install the Debian package jq"
fi
fio --enghelp 2>/dev/null | grep -qw nbd ||
  die "this fio has no nbd engine: install Debian's fio (built with libnbd)"
for f in delay cache readahead; do
  nbdkit --filter="$f" null --version >/dev/null 2>&1 ||
    die "nbdkit has no $f filter: install the Debian package nbdkit"
done
nbdkit nbd --version >/dev/null 2>&1 ||
  die "nbdkit has no nbd plugin: install the Debian package nbdkit"

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
filter=${BENCH_FILTER:-$top/filters/pull/.libs/nbdkit-r3map-pull-filter.so}
plugin=${BENCH_PLUGIN:-$top/plugins/dir/.libs/nbdkit-r3map-dir-plugin.so}
r3map=${BENCH_R3MAP:-$top/tools/r3map}
[[ -f $filter ]] ||
  die "$filter not found: build it first (make -C filters/pull) or set BENCH_FILTER"
[[ -x $r3map ]] ||
  die "$r3map not found: build it first (make -C tools) or set BENCH_R3MAP"

size_arg=${BENCH_SIZE:-512M}
rtts=${BENCH_RTTS-0 1 5 10 25}
reps=${BENCH_REPS:-3}
stores=${BENCH_STORES-file r3map-dir}
cache_blocks=${BENCH_CACHE_BLOCKS-4M}
pull_args=${BENCH_PULL_ARGS:-}
rthreads=${BENCH_REMOTE_THREADS:-64}

size=$(numfmt --from=iec "$size_arg" 2>/dev/null) ||
  die "BENCH_SIZE=$size_arg: not a size (e.g. 512M, 1G)"
(( size >= 1048576 && size % 1048576 == 0 )) ||
  die "BENCH_SIZE=$size_arg: a multiple of 1M please"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS=$reps: not a positive number"
[[ $rthreads =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_REMOTE_THREADS=$rthreads: not a positive number"
read -r -a rtt_list <<< "$rtts"
[[ ${#rtt_list[@]} -gt 0 ]] || die "BENCH_RTTS is empty"
for r in "${rtt_list[@]}"; do
  [[ $r =~ ^[0-9]+$ ]] || die "BENCH_RTTS: $r: not a whole number of ms"
done
read -r -a store_list <<< "$stores"
for s in "${store_list[@]}"; do
  [[ $s == file || $s == r3map-dir ]] || die "BENCH_STORES: $s: file or r3map-dir"
  [[ $s == file || -f $plugin ]] ||
    die "$plugin not found: build it first (make -C plugins/dir) or set BENCH_PLUGIN"
done
read -r -a block_list <<< "$cache_blocks"
for b in "${block_list[@]}"; do
  bb=$(numfmt --from=iec "$b" 2>/dev/null) || die "BENCH_CACHE_BLOCKS: $b: not a size"
  (( bb >= 4096 && (bb & (bb - 1)) == 0 )) ||
    die "BENCH_CACHE_BLOCKS: $b: not a power of 2 >= 4K"
done
read -r -a pull_extra <<< "$pull_args"

# By default, move into a private mount namespace (same process, via
# exec) so that the tmpfs mounted below is invisible to the rest of the
# system and disappears with the script whatever happens.
if [[ -z ${BENCH_DIR:-} && -z ${BENCH_IN_NS:-} && $(id -u) -eq 0 ]] &&
   command -v unshare >/dev/null 2>&1 &&
   unshare -m --propagation private true 2>/dev/null; then
  export BENCH_IN_NS=1
  exec unshare -m --propagation private -- "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

# ---------------------------------------------------------------- cleanup
work='' mnt='' pids=() remote=''

cleanup () {
  local pid
  for pid in "${pids[@]}" $remote; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=() remote=''
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
# The remote's data, one local store (or cache file) at a time, and a
# filled r3map-dir for the local store alone, plus room for metadata.
need_bytes=$((3 * size + 64 * 1048576))
if [[ -n ${BENCH_DIR:-} ]]; then
  [[ -d $BENCH_DIR ]] || die "BENCH_DIR=$BENCH_DIR: not a directory"
  work=$(mktemp -d "$BENCH_DIR/bench-pull.XXXXXX")
elif [[ -n ${BENCH_IN_NS:-} ]]; then
  mnt=$(mktemp -d /tmp/bench-pull.XXXXXX)
  mount -t tmpfs -o "size=$need_bytes,mode=0700" bench-pull "$mnt" ||
    die "cannot mount a tmpfs on $mnt"
  work=$mnt
else
  work=$(mktemp -d /dev/shm/bench-pull.XXXXXX)
fi
fstype=$(stat -f -c %T "$work")
[[ $fstype == tmpfs ]] ||
  say "warning: $work is on $fstype, not tmpfs: figures include that file system"
avail=$(( $(stat -f -c '%a * %S' "$work") ))
[[ $avail -ge $need_bytes ]] ||
  die "$work: $(numfmt --to=iec $avail) free, $(numfmt --to=iec $need_bytes) needed"

# ---------------------------------------------------------------- machine
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
machine="$(nproc) CPUs ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
versions="nbdkit $(nbdkit --version | awk '{print $2}'),"
versions+=" libnbd $(nbdcopy --version | awk 'NR == 1 {print $2}'), $(fio --version)"
config="BENCH_SIZE=$size_arg BENCH_RTTS=\"${rtt_list[*]}\" BENCH_REPS=$reps,"
config+=" stores: ${store_list[*]:-none}, cache blocks: ${block_list[*]:-none},"
config+=" r3map-pull ${pull_extra[*]:-defaults}, remote -t $rthreads"

say "working in $work ($fstype); $config"
say "creating $size_arg of random data"
head -c "$size" /dev/urandom > "$work/src"
[[ $(stat -c %s "$work/src") -eq $size ]] || die "short random source file"
cp "$work/src" "$work/warm-up" && rm -f "$work/warm-up"
mkdir "$work/cachetmp" "$work/results"
results=$work/results

# ---------------------------------------------------------------- helpers
now () { date +%s%N; }

mbps () {                       # mbps START-NS END-NS
  awk -v b="$size" -v t0="$1" -v t1="$2" \
    'BEGIN { printf "%.1f\n", b / ((t1 - t0) / 1e9) / 1e6 }'
}
ms () {                         # ms START-NS END-NS
  awk -v t0="$1" -v t1="$2" 'BEGIN { printf "%.1f\n", (t1 - t0) / 1e6 }'
}

rsock=$work/remote.sock
ruri="nbd+unix:///?socket=$rsock"
sock=$work/sock
server='' uri=''

start_remote () {               # start_remote RTT-MS
  local d="$1ms" i
  rm -f "$rsock"
  nbdkit -f --exit-with-parent -t "$rthreads" -U "$rsock" --filter=delay \
    file file="$work/src" delay-read="$d" delay-write="$d" delay-zero="$d" \
    delay-trim="$d" delay-extents="$d" delay-cache="$d" delay-open="$d" &
  remote=$!
  for ((i = 0; i < 300; i++)); do
    [[ -S $rsock ]] && nbdinfo --can connect "$ruri" 2>/dev/null && return 0
    kill -0 "$remote" 2>/dev/null || die "the remote nbdkit failed to start"
    sleep 0.05
  done
  die "the remote nbdkit: no answer on $rsock after 15 s"
}

stop_remote () {
  kill "$remote" 2>/dev/null || true
  wait "$remote" 2>/dev/null || true
  remote=''
}

# Start nbdkit with the arguments given (on $sock, in the background) and
# print the milliseconds until a client can connect.
start_server () {
  local t0 i
  rm -f "$sock"
  t0=$(now)
  nbdkit -f --exit-with-parent -U "$sock" "$@" &
  server=$!
  pids+=("$server")
  uri="nbd+unix:///?socket=$sock"
  for ((i = 0; i < 6000; i++)); do
    if [[ -S $sock ]] && nbdinfo --can connect "$uri" 2>/dev/null; then
      ms "$t0" "$(now)"
      return 0
    fi
    kill -0 "$server" 2>/dev/null || die "nbdkit $* failed to start"
    sleep 0.005
  done
  die "nbdkit $*: no answer on $sock after 30 s"
}

stop_server () {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  pids=()
  rm -rf "$sock" "$work/store" "$work/status" "${work:?}"/cachetmp/*
}

read_all () {                   # read_all REQUESTS: prints MB/s
  local t0 t1
  t0=$(now)
  nbdcopy --no-extents --connections=1 --requests="$1" \
    --request-size=262144 "$uri" null:
  t1=$(now)
  mbps "$t0" "$t1"
}

first_byte () {                 # prints the ms of one cold 4 KiB read
  fio --name=first-byte --ioengine=nbd --uri="$uri" --rw=read --bs=4k \
    --size=4k --offset=$((size - 4096)) \
    --output-format=json --output="$work/fio.json" >/dev/null
  json_lat "$work/fio.json" | awk '{ printf "%.2f\n", $1 / 1e6 }'
}

wait_pulled () {                # wait_pulled START-NS: prints seconds
  local i
  for ((i = 0; i < 60000; i++)); do
    if [[ -f $work/status ]] &&
       "$r3map" status "$work/status" 2>/dev/null | grep -q '^phase: *complete'; then
      awk -v t0="$1" -v t1="$(now)" 'BEGIN { printf "%.2f\n", (t1 - t0) / 1e9 }'
      return 0
    fi
    kill -0 "$server" 2>/dev/null || die "r3map-pull exited before the pull completed"
    sleep 0.02
  done
  die "r3map-pull: the pull did not complete within 20 minutes"
}

record () {                     # record METRIC PEER RTT VALUE
  echo "$4" >> "$results/$1.$2.$3"
}

peer_args () {                  # sets args=() for PEER
  local peer=$1
  case $peer in
    pull-file)
      truncate -s "$size" "$work/store"
      args=(--filter="$filter" file file="$work/store") ;;
    pull-r3map-dir)
      mkdir "$work/store"
      args=(--filter="$filter" "$plugin" dir="$work/store" size="$size") ;;
    cache-*)
      args=(--filter=readahead --filter=cache nbd socket="$rsock"
            cache-on-read=true cache-min-block-size="${peer#cache-}") ;;
  esac
  if [[ $peer == pull-* ]]; then
    args+=(source="$ruri" status="$work/status" "${pull_extra[@]}")
  fi
}

run_peer () {                   # run_peer REP RTT PEER
  local rep=$1 rtt=$2 peer=$3 t0 t1 up fb c1 w1 w64 c64 pulled='' od='' args
  if [[ $peer == direct ]]; then
    uri=$ruri
    t0=$(now); nbdinfo --can connect "$uri"; t1=$(now)
    up=$(ms "$t0" "$t1")
    fb=$(first_byte)
    c1=$(read_all 1)
    c64=$(read_all 64)
    w1='' w64=''
  else
    peer_args "$peer"
    t0=$(now)
    if [[ $peer == cache-* ]]; then
      TMPDIR=$work/cachetmp start_server "${args[@]}" > "$work/up"
    else
      start_server "${args[@]}" > "$work/up"
    fi
    up=$(cat "$work/up")
    fb=$(first_byte)
    c1=$(read_all 1)
    if [[ $peer == pull-* ]]; then
      pulled=$(wait_pulled "$t0")
      od=$("$r3map" status "$work/status" |
           sed -n 's/^on demand: *\([0-9]*\).*/\1/p')
    fi
    w1=$(read_all 1)
    w64=$(read_all 64)
    stop_server
    peer_args "$peer"
    if [[ $peer == cache-* ]]; then
      TMPDIR=$work/cachetmp start_server "${args[@]}" > /dev/null
    else
      start_server "${args[@]}" > /dev/null
    fi
    c64=$(read_all 64)
    stop_server
  fi
  record up "$peer" "$rtt" "$up"
  record fb "$peer" "$rtt" "$fb"
  record c1 "$peer" "$rtt" "$c1"
  record c64 "$peer" "$rtt" "$c64"
  [[ -n $w1 ]] && record w1 "$peer" "$rtt" "$w1"
  [[ -n $w64 ]] && record w64 "$peer" "$rtt" "$w64"
  [[ -n $pulled ]] && record pulled "$peer" "$rtt" "$pulled"
  [[ -n $od ]] && record od "$peer" "$rtt" "$od"
  say "rep $rep/$reps RTT ${rtt} ms $(printf '%-15s' "$peer"): start $up ms," \
    "first byte $fb ms, QD1 first $c1${w1:+ then $w1}," \
    "QD64 first $c64${w64:+ then $w64} MB/s${pulled:+, pulled after $pulled s}" \
    "${od:+($od on-demand fetches)}"
}

run_local () {                  # run_local REP STORE: the store alone
  local rep=$1 store=$2 l1 l64
  case $store in
    file)
      start_server file file="$work/src" > /dev/null ;;
    r3map-dir)
      mkdir "$work/store"
      start_server "$plugin" dir="$work/store" size="$size" > /dev/null
      nbdcopy "$work/src" "$uri" ;;
  esac
  l1=$(read_all 1)
  l64=$(read_all 64)
  stop_server
  record l1 "$store" 0 "$l1"
  record l64 "$store" 0 "$l64"
  say "rep $rep/$reps local store $(printf '%-9s' "$store") alone: QD1 $l1, QD64 $l64 MB/s"
}

peers=(direct)
for s in "${store_list[@]}"; do peers+=("pull-$s"); done
for b in "${block_list[@]}"; do peers+=("cache-$b"); done
declare -A name=([direct]="direct")
for s in "${store_list[@]}"; do name[pull-$s]="r3map-pull ($s)"; done
for b in "${block_list[@]}"; do name[cache-$b]="cache+readahead ($b)"; done

# ---------------------------------------------------------------- run
start=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  if ((rep % 2)); then
    order=("${peers[@]}")
  else
    order=(); for ((i = ${#peers[@]} - 1; i >= 0; i--)); do order+=("${peers[i]}"); done
  fi
  for s in "${store_list[@]}"; do run_local "$rep" "$s"; done
  for rtt in "${rtt_list[@]}"; do
    start_remote "$rtt"
    for peer in "${order[@]}"; do
      run_peer "$rep" "$rtt" "$peer"
    done
    stop_remote
  done
done
elapsed=$(( $(date +%s) - start ))

median () {                     # median METRIC PEER RTT: or "-"
  local f=$results/$1.$2.$3
  [[ -s $f ]] || { echo -; return; }
  sort -g "$f" | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio () {                      # ratio A B
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "-" || b == "-" || b <= 0) print "-"
    else if (a / b >= 10) printf "%.0f\n", a / b
    else printf "%.2f\n", a / b }'
}
row () {                        # row LABEL METRIC PEER FORMAT
  local line="| $1 |" r v
  for r in "${rtt_list[@]}"; do
    v=$(median "$2" "$3" "$r")
    if [[ $v == - ]]; then line+=" - |"; else line+=" $(printf "$4" "$v") |"; fi
  done
  echo "$line"
}

# ---------------------------------------------------------------- tables
head_line="| peer, read |"; rule="|---|"
for r in "${rtt_list[@]}"; do head_line+=" ${r} ms |"; rule+="---:|"; done

echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $machine; $versions;" \
  "tmpfs ($(if [[ -n $mnt ]]; then echo private mount; else echo "$work"; fi));" \
  "$config; medians of $reps; ${elapsed} s"
echo
echo "Sequential read of the whole disk, nbdcopy --no-extents, 1 connection," \
  "256 KiB requests, MB/s, by round trip time:"
echo
echo "$head_line"
echo "$rule"
row "direct, QD1" c1 direct '%.1f'
row "direct, QD64" c64 direct '%.1f'
for p in "${peers[@]}"; do
  [[ $p == direct ]] && continue
  if [[ $p == pull-* ]]; then when="right after start"; again="pulled"
  else when="first read"; again="second read"; fi
  row "${name[$p]}, QD1, $when" c1 "$p" '%.1f'
  row "${name[$p]}, QD1, $again" w1 "$p" '%.1f'
  row "${name[$p]}, QD64, $when" c64 "$p" '%.1f'
  row "${name[$p]}, QD64, $again" w64 "$p" '%.1f'
done
echo
echo "| local store alone (no filter, no remote) | QD1 | QD64 |"
echo "|---|---:|---:|"
for s in "${store_list[@]}"; do
  printf "| %s | %.1f | %.1f |\n" "$s" "$(median l1 "$s" 0)" "$(median l64 "$s" 0)"
done
echo
echo "Start and first byte, ms (r3map-pull: also the time until pulled, s):"
echo
echo "$head_line"
echo "$rule"
for p in "${peers[@]}"; do
  row "${name[$p]}: start until a client connects, ms" up "$p" '%.0f'
  row "${name[$p]}: cold 4 KiB read, ms" fb "$p" '%.1f'
  if [[ $p == pull-* ]]; then
    row "${name[$p]}: start until pulled, s" pulled "$p" '%.2f'
    row "${name[$p]}: on-demand fetches (first byte and QD1 read)" od "$p" '%.0f'
  fi
done

# The ratios of the targets, at 10 ms (or the RTT closest to it) and 0 ms.
near=${rtt_list[0]}
for r in "${rtt_list[@]}"; do
  (( (r - 10) * (r - 10) < (near - 10) * (near - 10) )) && near=$r
done
low=${rtt_list[0]}
for r in "${rtt_list[@]}"; do (( r < low )) && low=$r; done
echo
echo "| ratio (r3map-pull / reference) | QD1 | QD64 | target |"
echo "|---|---:|---:|---|"
for s in "${store_list[@]}"; do
  p=pull-$s
  echo "| ${name[$p]} right after start / direct, $near ms |" \
    "$(ratio "$(median c1 "$p" "$near")" "$(median c1 direct "$near")") |" \
    "$(ratio "$(median c64 "$p" "$near")" "$(median c64 direct "$near")") | >= 50 |"
  echo "| ${name[$p]} pulled / direct, $near ms |" \
    "$(ratio "$(median w1 "$p" "$near")" "$(median c1 direct "$near")") |" \
    "$(ratio "$(median w64 "$p" "$near")" "$(median c64 direct "$near")") | >= 50 |"
  for b in "${block_list[@]}"; do
    c=cache-$b
    echo "| ${name[$p]} right after start / ${name[$c]} first read, $near ms |" \
      "$(ratio "$(median c1 "$p" "$near")" "$(median c1 "$c" "$near")") |" \
      "$(ratio "$(median c64 "$p" "$near")" "$(median c64 "$c" "$near")") | >= 2 |"
  done
  echo "| ${name[$p]} pulled, $low ms / $s alone |" \
    "$(ratio "$(median w1 "$p" "$low")" "$(median l1 "$s" 0)") |" \
    "$(ratio "$(median w64 "$p" "$low")" "$(median l64 "$s" 0)") | >= 0.8 |"
done

# ---------------------------------------------------------------- plot
if [[ -n $plot ]]; then
  dat=$work/plot.dat
  {
    printf '# rtt'
    for p in "${peers[@]}"; do printf ' "%s"' "${name[$p]}"; done
    echo
    for r in "${rtt_list[@]}"; do
      printf '%s' "$r"
      for m in c1 c64; do
        for p in "${peers[@]}"; do
          v=$(median "$m" "$p" "$r"); [[ $v == - ]] && v=NaN
          printf ' %s' "$v"
        done
      done
      echo
    done
  } > "$dat"
  n=${#peers[@]}
  {
    echo "set terminal pngcairo size 1200,520 font 'sans,10'"
    echo "set output '$plot'"
    echo "set multiplot layout 1,2 title 'Sequential read of a $size_arg remote disk" \
      "after start (nbdcopy, 256 KiB requests; medians of $reps)'"
    echo "set logscale y; set grid; set key bottom left"
    echo "set xlabel 'round trip time (ms)'; set ylabel 'MB/s (log scale)'"
    echo "set datafile missing 'NaN'"
    for panel in 1 2; do
      if ((panel == 1)); then
        echo "set title 'QD1: one request in flight'"; off=1
      else
        echo "set title 'QD64: 64 requests in flight'"; off=$((n + 1))
      fi
      line="plot"
      for ((i = 0; i < n; i++)); do
        line+=" '$dat' using 1:$((off + i + 1)) with linespoints lw 2"
        line+=" title '${name[${peers[i]}]}',"
      done
      echo "${line%,}"
    done
    echo "unset multiplot"
  } > "$work/plot.gp"
  gnuplot "$work/plot.gp" || die "gnuplot failed"
  say "plot written to $plot"
fi
