#!/usr/bin/env bash
# bench-frontends.sh: first-touch latency and sequential read throughput
# of r3map's frontends against libnbd reading the same export directly,
# over a managed mount (r3map-pull), by round trip time.
#
# Usage: bash bench/bench-frontends.sh [--help]
#
# The remote is nbdkit's file plugin serving BENCH_SIZE of random data
# (a file on a private tmpfs) behind nbdkit's delay filter: every
# request and every new connection waits RTT ms, for each RTT in
# BENCH_RTTS, with 64 threads (as in bench-pull.sh).  In front of it, on
# a Unix socket, the managed mount: nbdkit --filter=r3map-pull file
# STORE source=REMOTE (a sparse file on the tmpfs, 64 KiB chunks).  The
# readers, all on that socket:
#
#   slice        libr3map: the export mapped with r3map_map
#   file         r3map mount --file (nbdfuse): the export as a file
#   libnbd       nbd_pread directly, one request at a time (QD1)
#   libnbd-qd16  nbd_aio_pread directly, 16 requests in flight
#
# (bench/r3map-bench-frontends does the measuring; see its head.)
# Each repetition, for each RTT, in alternating order of the readers:
#
#   1. first touch, remote: on a fresh r3map-pull with pull-workers=0
#      (nothing is local until touched), BENCH_TOUCHES pages, each in a
#      64 KiB chunk of its own, at random, one after the other: the
#      median and 90th percentile latency of one touch (the slice: a
#      load from the region, no readahead; the file: a 4 KiB pread;
#      libnbd: a 4 KiB nbd_pread).  The remote's round trip is in it;
#   2. first touch, local: the same once the r3map-pull has pulled the
#      whole disk: only the frontend and the filter's local read;
#   3. sequential read of the whole export right after the start of a
#      fresh r3map-pull (its background pull running: pull-workers=4),
#      every byte read by the program (a sum), as an application would;
#   4. the same once it has pulled everything; and for the slice, a
#      second walk of a region already all there (memory speed).
#
# Once per repetition, on a pulled mount at the lowest RTT, the cost of
# the slice's write tracking: the first write to a fetched page (a
# userfaultfd write-protect fault), a second write, r3map_sync per
# dirty page, and what a compare-based design would pay per 64 KiB
# chunk instead (a clean copy at fetch, a memcmp at sync).
#
# The medians over the repetitions are printed to stdout as markdown
# tables, with the ratios the targets name.  Progress and the raw
# figures go to stderr.
#
# Environment:
#   BENCH_SIZE=256M      export size (K, M, G suffixes: 2^10..)
#   BENCH_RTTS="0 10"    round trip times in ms (whole numbers)
#   BENCH_REPS=3         repetitions; the tables show medians
#   BENCH_TOUCHES=200    pages touched per first-touch measurement
#   BENCH_DIR=           a directory (on a tmpfs) to work in; by default
#                        a private tmpfs in a private mount namespace
#                        (needs root and unshare), else /dev/shm
#
# Needs: root (userfaultfd, FUSE), nbdkit with its delay filter
# (Debian package nbdkit), nbdfuse and nbdinfo (libnbd-bin), fuse3, and
# this tree built (make).  A default run takes about 2.5 minutes.

set -euo pipefail

usage () {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

if [[ $# -gt 0 ]]; then
  case $1 in
    -h|--help) usage; exit 0 ;;
    *) echo "bench-frontends.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
fi

die () { echo "bench-frontends.sh: $*" >&2; exit 1; }
say () { echo "bench-frontends.sh: $*" >&2; }

need () {                       # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 ||
    die "$1 not found: install the Debian package $2 (apt-get install $2)"
}
need nbdkit nbdkit
need nbdinfo libnbd-bin
need nbdfuse libnbd-bin
need fusermount3 fuse3
need numfmt coreutils
[[ $(id -u) -eq 0 ]] || die "must run as root (userfaultfd and FUSE)"
nbdkit --filter=delay null --version >/dev/null 2>&1 ||
  die "nbdkit has no delay filter: install the Debian package nbdkit"

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
filter=$top/filters/pull/.libs/nbdkit-r3map-pull-filter.so
r3map=$top/tools/r3map
measure=$top/bench/r3map-bench-frontends
for f in "$filter" "$r3map" "$measure"; do
  [[ -e $f ]] || die "$f not found: build the tree first (make)"
done

size_arg=${BENCH_SIZE:-256M}
rtts=${BENCH_RTTS-0 10}
reps=${BENCH_REPS:-3}
touches=${BENCH_TOUCHES:-200}
size=$(numfmt --from=iec "$size_arg" 2>/dev/null) ||
  die "BENCH_SIZE=$size_arg: not a size (e.g. 256M, 1G)"
(( size >= 16 * 1048576 && size % 1048576 == 0 )) ||
  die "BENCH_SIZE=$size_arg: a multiple of 1M, at least 16M please"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS=$reps: not a positive number"
[[ $touches =~ ^[1-9][0-9]*$ ]] || die "BENCH_TOUCHES=$touches: not a positive number"
(( touches <= size / 65536 )) || die "BENCH_TOUCHES=$touches: more than the chunks"
read -r -a rtt_list <<< "$rtts"
[[ ${#rtt_list[@]} -gt 0 ]] || die "BENCH_RTTS is empty"
for r in "${rtt_list[@]}"; do
  [[ $r =~ ^[0-9]+$ ]] || die "BENCH_RTTS: $r: not a whole number of ms"
done

# A private mount namespace: the tmpfs and the FUSE mounts below are
# invisible to the rest of the system and go away with the script.
if [[ -z ${BENCH_DIR:-} && -z ${BENCH_IN_NS:-} ]] &&
   command -v unshare >/dev/null 2>&1 &&
   unshare -m --propagation private true 2>/dev/null; then
  export BENCH_IN_NS=1
  exec unshare -m --propagation private -- "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

# ---------------------------------------------------------------- cleanup
work='' mnt='' remote='' server='' mounter=''

stop_pid () {                   # stop_pid PID: TERM, wait
  [[ -n $1 ]] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup () {
  stop_pid "$mounter"; stop_pid "$server"; stop_pid "$remote"
  mounter='' server='' remote=''
  if [[ -n $mnt ]]; then
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    rmdir "$mnt" 2>/dev/null || true
  elif [[ -n $work ]]; then
    fusermount3 -uz "$work/mp" 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tmpfs
need_bytes=$((2 * size + 64 * 1048576))
if [[ -n ${BENCH_DIR:-} ]]; then
  [[ -d $BENCH_DIR ]] || die "BENCH_DIR=$BENCH_DIR: not a directory"
  work=$(mktemp -d "$BENCH_DIR/bench-frontends.XXXXXX")
elif [[ -n ${BENCH_IN_NS:-} ]]; then
  mnt=$(mktemp -d /tmp/bench-frontends.XXXXXX)
  mount -t tmpfs -o "size=$need_bytes,mode=0700" bench-frontends "$mnt" ||
    die "cannot mount a tmpfs on $mnt"
  work=$mnt
else
  work=$(mktemp -d /dev/shm/bench-frontends.XXXXXX)
fi
mkdir "$work/mp" "$work/results" "$work/t"
results=$work/results
export TMPDIR=$work/t

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
machine="$(nproc) CPUs ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
versions="nbdkit $(nbdkit --version | awk '{print $2}'), libnbd $(nbdinfo --version | awk 'NR == 1 {print $2}')"
config="BENCH_SIZE=$size_arg BENCH_RTTS=\"${rtt_list[*]}\" BENCH_REPS=$reps BENCH_TOUCHES=$touches"
say "working in $work; $config"
head -c "$size" /dev/urandom > "$work/src"

# ---------------------------------------------------------------- servers
rsock=$work/remote.sock
ruri="nbd+unix:///?socket=$rsock"
sock=$work/pull.sock
uri="nbd+unix:///?socket=$sock"

wait_sock () {                  # wait_sock URI PID
  local i
  for ((i = 0; i < 3000; i++)); do
    nbdinfo --can connect "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || die "a server failed to start ($1)"
    sleep 0.01
  done
  die "no answer on $1 after 30 s"
}

start_remote () {               # start_remote RTT
  local d="$1ms"
  rm -f "$rsock"
  nbdkit -f --exit-with-parent -t 64 -U "$rsock" --filter=delay \
    file file="$work/src" delay-read="$d" delay-write="$d" delay-zero="$d" \
    delay-trim="$d" delay-extents="$d" delay-cache="$d" delay-open="$d" &
  remote=$!
  wait_sock "$ruri" "$remote"
}
stop_remote () { stop_pid "$remote"; remote=''; }

start_pull () {                 # start_pull PULL-WORKERS: fresh store
  rm -f "$sock" "$work/store" "$work/status"
  truncate -s "$size" "$work/store"
  nbdkit -f --exit-with-parent -U "$sock" --filter="$filter" file \
    file="$work/store" source="$ruri" pull-workers="$1" \
    status="$work/status" &
  server=$!
  wait_sock "$uri" "$server"
}
stop_pull () { stop_pid "$server"; server=''; }

wait_pulled () {
  local i
  for ((i = 0; i < 60000; i++)); do
    "$r3map" status "$work/status" 2>/dev/null | grep -q '^phase: *complete' &&
      return 0
    sleep 0.02
  done
  die "r3map-pull: the pull did not complete in 20 minutes"
}

# Run the measuring program for READER (slice, libnbd, libnbd-qd16 or
# file) with the arguments after it; for file, inside a file mount.
run_reader () {                 # run_reader READER MODE ARGS...
  local reader=$1 mode=$2 out
  shift 2
  if [[ $reader == file ]]; then
    rm -f "$work/mount.out"
    "$r3map" mount --file "$uri" "$work/mp" > "$work/mount.out" &
    mounter=$!
    for ((i = 0; i < 3000; i++)); do
      [[ -s $work/mount.out ]] && break
      kill -0 "$mounter" 2>/dev/null || die "r3map mount --file failed"
      sleep 0.01
    done
    out=$("$measure" "$mode" file "$(cat "$work/mount.out")" "$@" 2>/dev/null)
    stop_pid "$mounter"; mounter=''
  else
    out=$("$measure" "$mode" "$reader" "$uri" "$@" 2>/dev/null)
  fi
  echo "$out"
}

record () { echo "$3" >> "$results/$1.$2"; }     # record METRIC KEY VALUE

# ---------------------------------------------------------------- run
touch_readers=(slice file libnbd)
seq_readers=(slice file libnbd libnbd-qd16)
start=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  if ((rep % 2)); then t_order=("${touch_readers[@]}"); s_order=("${seq_readers[@]}")
  else
    t_order=(); for ((i = ${#touch_readers[@]} - 1; i >= 0; i--)); do t_order+=("${touch_readers[i]}"); done
    s_order=(); for ((i = ${#seq_readers[@]} - 1; i >= 0; i--)); do s_order+=("${seq_readers[i]}"); done
  fi
  for rtt in "${rtt_list[@]}"; do
    start_remote "$rtt"
    seed=$((rep * 1000 + rtt))
    for r in "${t_order[@]}"; do        # 1. first touch, remote
      start_pull 0
      read -r med p90 _ <<< "$(run_reader "$r" touch "$touches" "$seed")"
      stop_pull
      record touch-remote "$r.$rtt" "$med"; record touch-remote-p90 "$r.$rtt" "$p90"
      say "rep $rep RTT $rtt ms: first touch, remote, $r: median $med us, p90 $p90 us"
    done
    start_pull 4                        # 2. first touch, local
    wait_pulled
    for r in "${t_order[@]}"; do
      read -r med p90 _ <<< "$(run_reader "$r" touch "$touches" "$seed")"
      record touch-local "$r.$rtt" "$med"; record touch-local-p90 "$r.$rtt" "$p90"
      say "rep $rep RTT $rtt ms: first touch, local, $r: median $med us, p90 $p90 us"
    done
    for r in "${s_order[@]}" slice-again; do  # 4. sequential, pulled
      v=$(run_reader "$r" seq)
      record seq-pulled "$r.$rtt" "$v"
      say "rep $rep RTT $rtt ms: sequential, pulled, $r: $v MB/s"
    done
    if [[ $rtt == "${rtt_list[0]}" ]]; then
      read -r wpf w2 sy cp cm <<< "$("$measure" wp "$uri" "$touches" "$seed" 2>/dev/null)"
      record wp-fault x "$wpf"; record wp-second x "$w2"; record wp-sync x "$sy"
      record cmp-copy x "$cp"; record cmp-cmp x "$cm"
      say "rep $rep: write tracking: first write $wpf us, second $w2 us," \
          "sync $sy us/page; compare-based: copy $cp us, memcmp $cm us per chunk"
    fi
    stop_pull
    for r in "${s_order[@]}"; do        # 3. sequential, right after start
      start_pull 4
      v=$(run_reader "$r" seq)
      stop_pull
      record seq-start "$r.$rtt" "$v"
      say "rep $rep RTT $rtt ms: sequential, right after start, $r: $v MB/s"
    done
    stop_remote
  done
done
elapsed=$(( $(date +%s) - start ))

# ---------------------------------------------------------------- tables
median () {                     # median METRIC KEY, or "-"
  local f=$results/$1.$2
  [[ -s $f ]] || { echo -; return; }
  sort -g "$f" | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio () {
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "-" || b == "-" || b <= 0) print "-"; else printf "%.2f\n", a / b }'
}
declare -A name=([slice]="slice (libr3map)" [file]="file (r3map mount --file)"
                 [libnbd]="libnbd, QD1" [libnbd-qd16]="libnbd, QD16"
                 [slice-again]="slice (libr3map), second walk")
head_line="| reader |"; rule="|---|"
for r in "${rtt_list[@]}"; do head_line+=" ${r} ms |"; rule+="---:|"; done
row () {                        # row LABEL METRIC READER FORMAT
  local line="| $1 |" r v
  for r in "${rtt_list[@]}"; do
    v=$(median "$2" "$3.$r")
    if [[ $v == - ]]; then line+=" - |"; else line+=" $(printf "$4" "$v") |"; fi
  done
  echo "$line"
}

echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $machine; $versions; $config;" \
  "load average at the end $(cut -d' ' -f1-3 /proc/loadavg); ${elapsed} s"
echo
echo "First touch of one page, µs, median (90th percentile), by round trip time:"
echo
echo "$head_line"
echo "$rule"
for r in "${touch_readers[@]}"; do
  line="| ${name[$r]}, chunk at the remote |"
  for t in "${rtt_list[@]}"; do
    line+=" $(median touch-remote "$r.$t") ($(median touch-remote-p90 "$r.$t")) |"
  done
  echo "$line"
done
for r in "${touch_readers[@]}"; do
  line="| ${name[$r]}, chunk local at r3map-pull |"
  for t in "${rtt_list[@]}"; do
    line+=" $(median touch-local "$r.$t") ($(median touch-local-p90 "$r.$t")) |"
  done
  echo "$line"
done
echo
echo "Sequential read of the whole export, MB/s:"
echo
echo "$head_line"
echo "$rule"
for r in "${seq_readers[@]}"; do row "${name[$r]}, right after start" seq-start "$r" '%.0f'; done
for r in "${seq_readers[@]}"; do row "${name[$r]}, pulled" seq-pulled "$r" '%.0f'; done
row "${name[slice-again]}" seq-pulled slice-again '%.0f'
echo
echo "| ratio | ${rtt_list[*]/%/ ms |}"
echo "|---|$(for r in "${rtt_list[@]}"; do printf -- '---:|'; done)"
for f in slice file; do
  for ref in libnbd libnbd-qd16; do
    for when in start pulled; do
      line="| ${name[$f]} / ${name[$ref]}, $when |"
      for t in "${rtt_list[@]}"; do
        line+=" $(ratio "$(median seq-$when "$f.$t")" "$(median seq-$when "$ref.$t")") |"
      done
      echo "$line"
    done
  done
done
echo
echo "Write tracking of the slice (at ${rtt_list[0]} ms, pulled), medians:"
echo
echo "| cost | µs |"
echo "|---|---:|"
echo "| first write to a fetched page (write-protect fault) | $(median wp-fault x) |"
echo "| a later write to the same page | $(median wp-second x) |"
echo "| r3map_sync, per dirty page | $(median wp-sync x) |"
echo "| compare-based instead: clean copy of a 64 KiB chunk at fetch | $(median cmp-copy x) |"
echo "| compare-based instead: memcmp of a 64 KiB chunk at sync | $(median cmp-cmp x) |"
