#!/usr/bin/env bash
# bench-s3.sh: benchmark nbdkit r3map-s3 and r3map-redis against nbdkit's
# own S3 plugin, s3backer and the S3 server's own ceiling.
#
# Usage: bash bench/bench-s3.sh [--help]
#
# One S3 server (s3rver from tests/node_modules, started as the test
# suite starts it, with atomic PUTs acknowledged once stored) serves every
# S3 peer in one run; its data, the random source and Redis's files are
# on a private tmpfs.  The peers, in alternating order (the list below on
# odd repetitions, reversed on even ones):
#
#   r3map-s3 OS     nbdkit r3map-s3 at object-size=OS, for OS = 64K and
#                   each of BENCH_OBJECT_SIZES
#   nbdkit S3 64K   nbdkit's own S3 plugin (Python, boto3) at
#                   object-size=64K, the largest nbdkit 1.32 accepts
#   s3backer 64K    s3backer (FUSE) at --blockSize=64k, --directIO
#   r3map-redis CS  nbdkit r3map-redis on a redis-server of its own (Unix
#                   socket, appendonly yes, appendfsync always, on the
#                   tmpfs), for CS in BENCH_REDIS_CHUNK_SIZES
#   ceiling OS      no adapter: curl --parallel straight to s3rver, for
#                   every object size OS that r3map-s3 is measured at
#
# Each repetition, for each peer, on a fresh, empty disk (a new key prefix):
#
#   1. sequential write: BENCH_SIZE of random data with `nbdcopy --flush`
#      (request size: the object size, at least nbdcopy's 256K default, so
#      that every write is whole objects); s3backer: nbdcopy --flush to
#      MOUNT/file, then unmount, timed until s3backer has exited (its fsync
#      leaves up to a block cache of dirty blocks unwritten); ceiling:
#      BENCH_SIZE / OS PUTs of OS bytes, BENCH_PARALLEL at a time;
#   2. sequential read: the whole disk to `null:` with nbdcopy (s3backer
#      freshly mounted, so with an empty block cache); ceiling: GETs of
#      every object, BENCH_PARALLEL at a time;
#   3. 4 KiB random reads at queue depth 32 for BENCH_RUNTIME: fio's nbd
#      engine (nbdkit's S3 plugin: 64 KiB reads, its minimum block size,
#      each counted as one); s3backer: fio on MOUNT/file with direct=1
#      (BENCH_S3BACKER_FIO engine); ceiling: BENCH_CEILING_GETS ranged
#      GETs of 4 KiB at random 4 KiB-aligned offsets, 32 at a time.
#
# The medians over the repetitions are printed to stdout as markdown: the
# figures (MB/s = 10^6 bytes/s, or IOPS; higher is better), the ratios of
# r3map-s3 to nbdkit's S3 plugin, to the server's ceiling and to s3backer
# (ratio = r3map / reference), and the CPU used by s3rver (or
# redis-server) and by the adapter (nbdkit or s3backer), in % of one CPU.
# Progress and the raw figures of each repetition go to stderr.
#
# Environment:
#   BENCH_SIZE=512M     disk size and amount copied (K, M, G suffixes: 2^10..)
#   BENCH_SIZE_SLOW=    disk size for nbdkit's S3 plugin and s3backer
#                       (default: BENCH_SIZE); the table header says so
#   BENCH_REPS=3        repetitions; the tables show medians
#   BENCH_RUNTIME=10    seconds of each fio random-read run
#   BENCH_OBJECT_SIZES="256K 1M 4M"
#                       r3map-s3 object sizes measured besides 64K
#   BENCH_REDIS_CHUNK_SIZES="64K 1M"
#                       r3map-redis chunk sizes (empty: no Redis rows)
#   BENCH_CONNECTIONS=  pass connections=N to r3map-s3 (default: not
#                       passed, the plugin's own default)
#   BENCH_PARALLEL=32   concurrent requests of the ceiling's PUTs and GETs
#   BENCH_CEILING_GETS=8192
#                       ranged 4 KiB GETs of the ceiling's random-read row
#   BENCH_S3BACKER_FIO=psync
#                       fio engine for s3backer: psync (32 jobs, queue
#                       depth 1 each) or libaio (1 job, queue depth 32)
#   BENCH_DIR=          a directory (on a tmpfs) to work in; by default the
#                       script mounts a private tmpfs in a private mount
#                       namespace (needs root and unshare), else /dev/shm
#   BENCH_PLUGIN_S3=    the r3map-s3 plugin (default: the in-tree build,
#                       plugins/s3/.libs/nbdkit-r3map-s3-plugin.so)
#   BENCH_PLUGIN_REDIS= the r3map-redis plugin (default: the in-tree build,
#                       plugins/redis/.libs/nbdkit-r3map-redis-plugin.so)
#
# Needs: nbdkit (Debian package nbdkit), nbdkit's S3 plugin
# (nbdkit-plugin-python, python3-boto3), nbdcopy and nbdinfo (libnbd-bin),
# fio (fio), curl (curl), s3backer (s3backer), fusermount3 (fuse3),
# redis-server (redis-server), node (nodejs), s3rver (`npm ci` in tests/),
# and jq (jq) or /usr/bin/python3 (python3); root for s3backer's FUSE mount.
# A default run takes about 11 minutes (2 CPUs, 512 MiB: 10 min 34 s).

set -euo pipefail

usage () {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

if [[ $# -gt 0 ]]; then
  case $1 in
    -h|--help) usage; exit 0 ;;
    *) echo "bench-s3.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
fi

die () { echo "bench-s3.sh: $*" >&2; exit 1; }
say () { echo "bench-s3.sh: $*" >&2; }

need () {                       # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 ||
    die "$1 not found: install the Debian package $2 (apt-get install $2)"
}

need nbdkit nbdkit
need nbdcopy libnbd-bin
need nbdinfo libnbd-bin
need fio fio
need curl curl
need s3backer s3backer
need fusermount3 fuse3
need redis-server redis-server
need node nodejs
need numfmt coreutils
need shuf coreutils
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
nbdkit python --version >/dev/null 2>&1 ||
  die "nbdkit has no python plugin: install the Debian package nbdkit-plugin-python"
nbdkit S3 --version >/dev/null 2>&1 ||
  die "nbdkit has no S3 plugin: install the Debian package nbdkit-plugin-python"
/usr/bin/python3 -c 'import boto3' >/dev/null 2>&1 ||
  die "nbdkit's S3 plugin needs boto3: install the Debian package python3-boto3"
[[ -e /dev/fuse ]] || die "no /dev/fuse: s3backer needs FUSE"

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
plugin_s3=${BENCH_PLUGIN_S3:-$top/plugins/s3/.libs/nbdkit-r3map-s3-plugin.so}
plugin_redis=${BENCH_PLUGIN_REDIS:-$top/plugins/redis/.libs/nbdkit-r3map-redis-plugin.so}
[[ -f $plugin_s3 ]] ||
  die "$plugin_s3 not found: build it first (make -C plugins/s3) or set BENCH_PLUGIN_S3"
s3rver_pkg=$top/tests/node_modules/s3rver
[[ -f $s3rver_pkg/bin/s3rver.js ]] ||
  die "s3rver not found in tests/node_modules: run 'npm ci' in tests/"

size_arg=${BENCH_SIZE:-512M}
slow_arg=${BENCH_SIZE_SLOW:-$size_arg}
reps=${BENCH_REPS:-3}
runtime=${BENCH_RUNTIME:-10}
object_sizes=${BENCH_OBJECT_SIZES-256K 1M 4M}
redis_sizes=${BENCH_REDIS_CHUNK_SIZES-64K 1M}
connections=${BENCH_CONNECTIONS:-}
parallel=${BENCH_PARALLEL:-32}
ceiling_gets=${BENCH_CEILING_GETS:-8192}
s3backer_fio=${BENCH_S3BACKER_FIO:-psync}

size=$(numfmt --from=iec "$size_arg" 2>/dev/null) ||
  die "BENCH_SIZE=$size_arg: not a size (e.g. 512M, 1G)"
slow=$(numfmt --from=iec "$slow_arg" 2>/dev/null) ||
  die "BENCH_SIZE_SLOW=$slow_arg: not a size (e.g. 128M)"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS=$reps: not a positive number"
[[ $runtime =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_RUNTIME=$runtime: not a number of seconds"
[[ -z $connections || $connections =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_CONNECTIONS=$connections: not a positive number"
[[ $parallel =~ ^[1-9][0-9]*$ ]] || die "BENCH_PARALLEL=$parallel: not a positive number"
[[ $ceiling_gets =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_CEILING_GETS=$ceiling_gets: not a positive number"
[[ $s3backer_fio == psync || $s3backer_fio == libaio ]] ||
  die "BENCH_S3BACKER_FIO=$s3backer_fio: psync or libaio"

# Object sizes as canonical suffixed strings (64K, 1M) and bytes.
declare -A bytes=()
canon () {                      # canon SIZE: prints e.g. 1M
  local b
  b=$(numfmt --from=iec "$1" 2>/dev/null) || die "$1: not a size"
  (( b >= 4096 && (b & (b - 1)) == 0 )) || die "$1: not a power of 2 >= 4K"
  if (( b % 1048576 == 0 )); then echo "$((b / 1048576))M"; else echo "$((b / 1024))K"; fi
}
s3_sizes=(64K)
for s in $object_sizes; do
  s=$(canon "$s"); [[ " ${s3_sizes[*]} " == *" $s "* ]] || s3_sizes+=("$s")
done
r_sizes=()
for s in $redis_sizes; do
  s=$(canon "$s"); [[ " ${r_sizes[*]} " == *" $s "* ]] || r_sizes+=("$s")
done
for s in "${s3_sizes[@]}" "${r_sizes[@]}"; do
  bytes[$s]=$(numfmt --from=iec "$s")
  (( size % ${bytes[$s]} == 0 )) || die "BENCH_SIZE=$size_arg: not a multiple of $s"
done
(( slow >= 1048576 && slow % 65536 == 0 )) ||
  die "BENCH_SIZE_SLOW=$slow_arg: a multiple of 64K, at least 1M please"
(( size >= 1048576 )) || die "BENCH_SIZE=$size_arg: at least 1M please"

# By default, move into a private mount namespace (same process, via
# exec) so that the tmpfs and the FUSE mount below are invisible to the
# rest of the system and disappear with the script whatever happens.
if [[ -z ${BENCH_DIR:-} && -z ${BENCH_IN_NS:-} && $(id -u) -eq 0 ]] &&
   command -v unshare >/dev/null 2>&1 &&
   unshare -m --propagation private true 2>/dev/null; then
  export BENCH_IN_NS=1
  exec unshare -m --propagation private -- "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

# ---------------------------------------------------------------- cleanup
work='' mnt='' fuse='' pids=() s3rver_pid=''

cleanup () {
  local pid
  if [[ -n $fuse ]] && mountpoint -q "$fuse" 2>/dev/null; then
    fusermount3 -u "$fuse" 2>/dev/null || umount -l "$fuse" 2>/dev/null || true
  fi
  for pid in "${pids[@]}" $s3rver_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=() s3rver_pid=''
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
# The random source, one disk at a time in s3rver (plus its metadata
# files), and Redis's append-only file of one disk.
need_bytes=$((3 * size + 256 * 1048576))
if [[ -n ${BENCH_DIR:-} ]]; then
  [[ -d $BENCH_DIR ]] || die "BENCH_DIR=$BENCH_DIR: not a directory"
  work=$(mktemp -d "$BENCH_DIR/bench-s3.XXXXXX")
elif [[ -n ${BENCH_IN_NS:-} ]]; then
  mnt=$(mktemp -d /tmp/bench-s3.XXXXXX)
  mount -t tmpfs -o "size=$need_bytes,mode=0700" bench-s3 "$mnt" ||
    die "cannot mount a tmpfs on $mnt"
  work=$mnt
else
  work=$(mktemp -d /dev/shm/bench-s3.XXXXXX)
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
nbdkit_version=$(nbdkit --version | awk '{print $2}')
s3rver_version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$s3rver_pkg/package.json" | head -n1)
s3backer_version=$(s3backer --version 2>&1 | awk '/^s3backer version/ {print $3; exit}')
redis_version=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
versions="nbdkit $nbdkit_version, s3rver $s3rver_version (node $(node --version)),"
versions+=" s3backer ${s3backer_version:-?}, redis $redis_version, $(curl --version | awk 'NR == 1 {print $1, $2}')"
r3map_args=()
[[ -n $connections ]] && r3map_args+=("connections=$connections")
config="BENCH_SIZE=$size_arg BENCH_REPS=$reps BENCH_RUNTIME=$runtime"
[[ $slow -ne $size ]] && config+=" BENCH_SIZE_SLOW=$slow_arg (nbdkit S3 and s3backer)"
config+=", r3map-s3 connections=${connections:-default (16)}, ceiling $parallel parallel requests"

say "working in $work ($fstype); $config"
say "creating $size_arg of random data"
head -c "$size" /dev/urandom > "$work/src"
[[ $(stat -c %s "$work/src") -eq $size ]] || die "short random source file"
head -c "$slow" "$work/src" > "$work/src-slow"
cp "$work/src" "$work/warm-up" && rm -f "$work/warm-up"

# ---------------------------------------------------------------- s3rver
# Run as tests/s3-server.sh runs it (see tests/s3rver-run.js), but talk
# to it directly: no verifying proxy in between.
mkdir "$work/s3data"
node --openssl-legacy-provider "$top/tests/s3rver-run.js" "$s3rver_pkg" \
  -d "$work/s3data" -a 127.0.0.1 -p 0 -s > "$work/s3rver.out" 2>&1 &
s3rver_pid=$!
port=
for ((i = 0; i < 100; i++)); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/s3rver.out")
  [[ -n $port ]] && break
  kill -0 "$s3rver_pid" 2>/dev/null ||
    die "s3rver failed to start: $(cat "$work/s3rver.out")"
  sleep 0.1
done
[[ -n $port ]] || die "s3rver did not start within 10 s"
endpoint=http://127.0.0.1:$port
bucket=bench
s3_curl () {
  curl -sS --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}
s3_curl -f -X PUT "$endpoint/$bucket" -o /dev/null ||
  die "cannot create the bucket $bucket on s3rver"
say "s3rver on $endpoint, pid $s3rver_pid"

# ---------------------------------------------------------------- CPU
# CPU time (user + system, all threads) of a process, in clock ticks.
hz=$(getconf CLK_TCK)
ticks () {
  [[ -n ${1:-} && -r /proc/$1/stat ]] || { echo 0; return; }
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
cpu_pct () {                    # cpu_pct TICKS0 TICKS1 START-NS END-NS
  awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" -v hz="$hz" \
    'BEGIN { printf "%.0f\n", (b - a) / hz / ((t1 - t0) / 1e9) * 100 }'
}

# ---------------------------------------------------------------- servers
sock=$work/sock
uri="nbd+unix:///?socket=$sock"
fuse=$work/fuse
mkdir "$fuse"
server=''                       # the adapter: nbdkit or s3backer
backend=''                      # whose CPU is the server's: s3rver or redis
redis_pid=''
prefix=''

wait_nbd () {                   # wait_nbd NAME
  local i
  for ((i = 0; i < 300; i++)); do
    nbdinfo --can connect "$uri" 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || die "nbdkit $1 failed to start"
    sleep 0.1
  done
  die "nbdkit $1: no answer on $sock after 30 s"
}

mount_s3backer () {             # mount_s3backer DISK-SIZE
  # -f: in the foreground, so that its pid is the one to wait for.
  s3backer -f --baseURL="$endpoint/" --accessId=S3RVER --accessKey=S3RVER \
    --authVersion=aws4 --blockSize=64k --size="$1" --prefix="$prefix/" \
    --directIO "$bucket" "$fuse" >>"$work/s3backer.log" 2>&1 &
  server=$!
  pids+=("$server")
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -e $fuse/file ]] && return 0
    kill -0 "$server" 2>/dev/null || die "s3backer failed to start: $(tail -n 3 "$work/s3backer.log")"
    sleep 0.1
  done
  die "s3backer: no $fuse/file after 30 s"
}

unmount_s3backer () {
  fusermount3 -u "$fuse" 2>/dev/null || umount "$fuse"
  wait "$server" 2>/dev/null || true
  pids=("${pids[@]/$server}")
}

start_redis () {
  mkdir "$work/redis"
  redis-server --port 0 --unixsocket "$work/redis/sock" --unixsocketperm 700 \
    --daemonize no --dir "$work/redis" --save '' --appendonly yes \
    --appendfsync always > "$work/redis/log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S $work/redis/sock ]] && return 0
    kill -0 "$redis_pid" 2>/dev/null || die "redis-server failed to start: $(cat "$work/redis/log")"
    sleep 0.1
  done
  die "redis-server: no socket after 10 s"
}

start_server () {               # start_server REP PEER
  local rep=$1 peer=$2 os=${2##*-}
  prefix="r$rep-$peer"
  rm -f "$sock"
  backend=$s3rver_pid
  case $peer in
    r3map-s3-*)
      nbdkit -f --exit-with-parent -U "$sock" "$plugin_s3" \
        bucket="$bucket" key="$prefix" size="$size" object-size="$os" \
        endpoint="$endpoint" access-key=S3RVER secret-key=S3RVER \
        "${r3map_args[@]}" &
      ;;
    s3-*)
      nbdkit -f --exit-with-parent -U "$sock" S3 \
        bucket="$bucket" key="$prefix" size="$slow" object-size="$os" \
        endpoint-url="$endpoint" access-key=S3RVER secret-key=S3RVER &
      ;;
    r3map-redis-*)
      start_redis
      backend=$redis_pid
      nbdkit -f --exit-with-parent -U "$sock" "$plugin_redis" \
        server="$work/redis/sock" size="$size" chunk-size="$os" &
      ;;
  esac
  server=$!
  pids+=("$server")
  wait_nbd "$peer"
}

stop_server () {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=() server='' redis_pid=''
  rm -rf "$sock" "$work/redis" "$work/s3data/$bucket/$prefix"
}

# ---------------------------------------------------------------- tests
tests=(write read qd32)
results=$work/results
mkdir "$results"

now () { date +%s%N; }

mbps () {                       # mbps BYTES START-NS END-NS
  awk -v b="$1" -v t0="$2" -v t1="$3" \
    'BEGIN { printf "%.1f\n", b / ((t1 - t0) / 1e9) / 1e6 }'
}

randread () {                   # randread [BLOCK-SIZE]: fio on the NBD export
  fio --name=randread --ioengine=nbd --uri="$uri" --rw=randread --bs="${1:-4k}" \
    --iodepth=32 --time_based --runtime="$runtime" \
    --output-format=json --output="$work/fio.json" >/dev/null
  json_iops "$work/fio.json" | awk '{ printf "%.0f\n", $1 }'
}

randread_file () {              # randread_file: fio on s3backer's file
  local engine=(--ioengine=psync --numjobs=32 --group_reporting)
  [[ $s3backer_fio == libaio ]] && engine=(--ioengine=libaio --iodepth=32)
  fio --name=randread --filename="$fuse/file" --direct=1 "${engine[@]}" \
    --rw=randread --bs=4k --time_based --runtime="$runtime" \
    --output-format=json --output="$work/fio.json" >/dev/null
  json_iops "$work/fio.json" | awk '{ printf "%.0f\n", $1 }'
}

# The server's ceiling: curl --parallel, signing every request itself
# (--aws-sigv4), one config file (-K) per batch of requests.
ceiling_curl () {               # ceiling_curl CONFIG EXPECTED-CODE
  s3_curl --no-progress-meter --parallel --parallel-max "$parallel" -K "$1" \
    -w '%{http_code}\n' > "$work/codes" ||
    die "ceiling: curl failed ($(sort "$work/codes" | uniq -c | tr '\n' ' '))"
  local bad
  bad=$(grep -cv "^$2\$" "$work/codes" || true)
  [[ $bad -eq 0 ]] ||
    die "ceiling: $bad answers not $2 ($(sort "$work/codes" | uniq -c | tr '\n' ' '))"
}

run_ceiling () {                # run_ceiling OS: prints W R Q
  local os=$1 ob=${bytes[$1]} n i t0 t1 w r q
  n=$((size / ob))
  head -c "$ob" "$work/src" > "$work/object"
  for ((i = 0; i < n; i++)); do
    printf 'url = "%s/%s/%s/%016x"\nupload-file = "%s"\noutput = "/dev/null"\n' \
      "$endpoint" "$bucket" "$prefix" "$i" "$work/object"
  done > "$work/put.cfg"
  for ((i = 0; i < n; i++)); do
    printf 'url = "%s/%s/%s/%016x"\noutput = "/dev/null"\n' \
      "$endpoint" "$bucket" "$prefix" "$i"
  done > "$work/get.cfg"
  shuf -r -n "$ceiling_gets" -i "0-$((size / 4096 - 1))" |
    awk -v e="$endpoint" -v b="$bucket" -v p="$prefix" -v per="$((ob / 4096))" '{
      o = int($1 / per); s = ($1 % per) * 4096
      printf "url = \"%s/%s/%s/%016x\"\nrange = \"%d-%d\"\noutput = \"/dev/null\"\n",
        e, b, p, o, s, s + 4095 }' > "$work/range.cfg"
  t0=$(now); ceiling_curl "$work/put.cfg" 200; t1=$(now)
  w=$(mbps "$size" "$t0" "$t1")
  t0=$(now); ceiling_curl "$work/get.cfg" 200; t1=$(now)
  r=$(mbps "$size" "$t0" "$t1")
  # Queue depth 32, like fio's.
  t0=$(now)
  parallel=32 ceiling_curl "$work/range.cfg" 206
  t1=$(now)
  q=$(awk -v n="$ceiling_gets" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%.0f\n", n / ((t1 - t0) / 1e9) }')
  echo "$w $r $q"
}

run_peer () {                   # run_peer REP PEER
  local rep=$1 peer=$2 os=${2##*-} t0 t1 w r q c0 c1 s0 s1 rs=262144 n=$size
  local src=$work/src cw cr cq sw sr sq line
  [[ $peer == s3-* || $peer == s3backer-* ]] && { n=$slow; src=$work/src-slow; }
  (( ${bytes[$os]:-65536} > rs )) && rs=${bytes[$os]}
  case $peer in
    ceiling-*)
      prefix="r$rep-$peer"
      s0=$(ticks "$s3rver_pid"); t0=$(now)
      line=$(run_ceiling "$os")
      t1=$(now); s1=$(ticks "$s3rver_pid")
      read -r w r q <<< "$line"
      # One CPU figure for the three phases of the ceiling.
      sw=$(cpu_pct "$s0" "$s1" "$t0" "$t1"); sr=$sw; sq=$sw
      cw=-; cr=-; cq=-
      rm -rf "${work:?}/s3data/$bucket/$prefix"
      ;;
    s3backer-*)
      prefix="r$rep-$peer"
      mount_s3backer "$n"
      s0=$(ticks "$s3rver_pid"); c0=$(ticks "$server"); t0=$(now)
      nbdcopy --flush "$src" "$fuse/file"
      c1=$(ticks "$server")
      unmount_s3backer
      t1=$(now); s1=$(ticks "$s3rver_pid")
      w=$(mbps "$n" "$t0" "$t1")
      sw=$(cpu_pct "$s0" "$s1" "$t0" "$t1"); cw=$(cpu_pct "$c0" "$c1" "$t0" "$t1")
      mount_s3backer "$n"
      s0=$(ticks "$s3rver_pid"); c0=$(ticks "$server"); t0=$(now)
      nbdcopy "$fuse/file" null:
      t1=$(now); s1=$(ticks "$s3rver_pid"); c1=$(ticks "$server")
      r=$(mbps "$n" "$t0" "$t1")
      sr=$(cpu_pct "$s0" "$s1" "$t0" "$t1"); cr=$(cpu_pct "$c0" "$c1" "$t0" "$t1")
      s0=$(ticks "$s3rver_pid"); c0=$(ticks "$server"); t0=$(now)
      q=$(randread_file)
      t1=$(now); s1=$(ticks "$s3rver_pid"); c1=$(ticks "$server")
      sq=$(cpu_pct "$s0" "$s1" "$t0" "$t1"); cq=$(cpu_pct "$c0" "$c1" "$t0" "$t1")
      unmount_s3backer
      stop_server
      ;;
    *)
      start_server "$rep" "$peer"
      s0=$(ticks "$backend"); c0=$(ticks "$server"); t0=$(now)
      nbdcopy --request-size="$rs" --flush "$src" "$uri"
      t1=$(now); s1=$(ticks "$backend"); c1=$(ticks "$server")
      w=$(mbps "$n" "$t0" "$t1")
      sw=$(cpu_pct "$s0" "$s1" "$t0" "$t1"); cw=$(cpu_pct "$c0" "$c1" "$t0" "$t1")
      s0=$(ticks "$backend"); c0=$(ticks "$server"); t0=$(now)
      nbdcopy --request-size="$rs" "$uri" null:
      t1=$(now); s1=$(ticks "$backend"); c1=$(ticks "$server")
      r=$(mbps "$n" "$t0" "$t1")
      sr=$(cpu_pct "$s0" "$s1" "$t0" "$t1"); cr=$(cpu_pct "$c0" "$c1" "$t0" "$t1")
      s0=$(ticks "$backend"); c0=$(ticks "$server"); t0=$(now)
      # nbdkit's S3 plugin sets its minimum block size to the object
      # size, so libnbd refuses 4 KiB reads: read whole 64K blocks
      # instead, as a client that honours the minimum (QEMU) does.
      if [[ $peer == s3-* ]]; then q=$(randread 64k); else q=$(randread); fi
      t1=$(now); s1=$(ticks "$backend"); c1=$(ticks "$server")
      sq=$(cpu_pct "$s0" "$s1" "$t0" "$t1"); cq=$(cpu_pct "$c0" "$c1" "$t0" "$t1")
      stop_server
      ;;
  esac
  echo "$w" >> "$results/write.$peer"
  echo "$r" >> "$results/read.$peer"
  echo "$q" >> "$results/qd32.$peer"
  for t in write read qd32; do
    case $t in write) a=$sw b=$cw ;; read) a=$sr b=$cr ;; qd32) a=$sq b=$cq ;; esac
    echo "$a" >> "$results/scpu-$t.$peer"
    [[ $b == - ]] || echo "$b" >> "$results/ccpu-$t.$peer"
  done
  say "rep $rep/$reps $(printf '%-16s' "$peer"): write $w MB/s, read $r MB/s," \
    "QD32 $q IOPS; server CPU $sw/$sr/$sq %, adapter CPU $cw/$cr/$cq %"
}

peers=()
for s in "${s3_sizes[@]}"; do peers+=("r3map-s3-$s"); done
peers+=(s3-64K s3backer-64K)
for s in "${r_sizes[@]}"; do peers+=("r3map-redis-$s"); done
for s in "${s3_sizes[@]}"; do peers+=("ceiling-$s"); done

start=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  order=("${peers[@]}")
  if ! ((rep % 2)); then
    order=()
    for ((i = ${#peers[@]} - 1; i >= 0; i--)); do order+=("${peers[i]}"); done
  fi
  for peer in "${order[@]}"; do
    run_peer "$rep" "$peer"
  done
done
elapsed=$(( $(date +%s) - start ))

median () {
  [[ -s $1 ]] || { echo 0; return; }
  sort -g "$1" | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
m () { median "$results/$1.$2"; }
ratio () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", (b > 0 ? a / b : 0) }'; }

# r3map-s3's best object size: the highest geometric mean of the
# sequential write and read medians.
best='' best_score=0
for s in "${s3_sizes[@]}"; do
  score=$(awk -v a="$(m write "r3map-s3-$s")" -v b="$(m read "r3map-s3-$s")" \
    'BEGIN { printf "%.3f\n", sqrt(a * b) }')
  if [[ -z $best ]] || awk -v a="$score" -v b="$best_score" 'BEGIN { exit !(a > b) }'; then
    best=$s best_score=$score
  fi
done

# ---------------------------------------------------------------- tables
slow_note=''
[[ $slow -ne $size ]] && slow_note=" (nbdkit S3 and s3backer: $slow_arg)"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $machine; $versions;" \
  "tmpfs ($(if [[ -n $mnt ]]; then echo private mount; else echo "$work"; fi));" \
  "$config; medians of $reps; ${elapsed} s"
echo
echo "| peer | object size | sequential write, $size_arg$slow_note, MB/s | sequential read, MB/s | 4 KiB random read, QD32, IOPS |"
echo "|---|---:|---:|---:|---:|"
name () {
  case $1 in
    r3map-s3-*) echo "r3map-s3" ;;
    s3-*) echo "nbdkit S3" ;;
    s3backer-*) echo "s3backer" ;;
    r3map-redis-*) echo "r3map-redis" ;;
    ceiling-*) echo "server ceiling (curl, $parallel parallel)" ;;
  esac
}
for p in "${peers[@]}"; do
  printf '| %s | %s | %.1f | %.1f | %.0f |\n' "$(name "$p")" "${p##*-}" \
    "$(m write "$p")" "$(m read "$p")" "$(m qd32 "$p")"
done

echo
echo "| ratio (r3map / reference) | write | read | QD32 | target |"
echo "|---|---:|---:|---:|---|"
ratio_row () {                  # ratio_row LABEL A B TARGET
  printf '| %s | %s | %s | %s | %s |\n' "$1" \
    "$(ratio "$(m write "$2")" "$(m write "$3")")" \
    "$(ratio "$(m read "$2")" "$(m read "$3")")" \
    "$(ratio "$(m qd32 "$2")" "$(m qd32 "$3")")" "$4"
}
ratio_row "r3map-s3 64K / nbdkit S3 64K" r3map-s3-64K s3-64K ">= 2 (write, read)"
[[ $best != 64K ]] &&
  ratio_row "r3map-s3 $best (best) / nbdkit S3 64K (its best)" "r3map-s3-$best" s3-64K ">= 5"
for s in "${s3_sizes[@]}"; do
  ratio_row "r3map-s3 $s / server ceiling $s" "r3map-s3-$s" "ceiling-$s" ">= 0.8"
done
ratio_row "r3map-s3 64K / s3backer 64K" r3map-s3-64K s3backer-64K "> 1"
[[ $best != 64K ]] &&
  ratio_row "r3map-s3 $best (best) / s3backer 64K" "r3map-s3-$best" s3backer-64K "> 1"

echo
echo "| CPU, % of one CPU (server / adapter) | write | read | QD32 |"
echo "|---|---:|---:|---:|"
for p in "${peers[@]}"; do
  if [[ $p == r3map-redis-* ]]; then srv=redis-server; else srv=s3rver; fi
  row="| $(name "$p") ${p##*-} ($srv / "
  case $p in s3backer-*) row+="s3backer)" ;; ceiling-*) row+="-)" ;; *) row+="nbdkit)" ;; esac
  for t in "${tests[@]}"; do
    a=$(m "scpu-$t" "$p")
    if [[ -s $results/ccpu-$t.$p ]]; then b=$(m "ccpu-$t" "$p"); else b=-; fi
    row+=" | $a / $b"
  done
  echo "$row |"
done
