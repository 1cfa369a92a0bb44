#!/usr/bin/env bash
# bench-migrate.sh: live migration of a disk between two nbdkit processes
# while a writer writes to it: r3map (seal/finalize) against a plain copy
# with nbdcopy and against QEMU's own block mirror.
#
# Usage: bash bench/bench-migrate.sh [--help]
#
# For each disk size in BENCH_SIZES and each writer rate in BENCH_RATES,
# the disk is migrated by three methods, in alternating order (the list
# below on odd runs, reversed on even ones).  Every method starts from
# the same disk: an r3map-dir directory of 64 KiB chunks, filled from a
# pattern made once per size (BENCH_FILL bytes of random data at the
# start of every chunk, the rest zeros: every chunk holds data, so every
# method has to move every chunk, but the source takes only a sixteenth
# of the disk's size in memory).  The source is nbdkit r3map-dir below
# nbdkit's log filter, whose log (each request, with a timestamp) gives
# the bytes read at the source and the time of the last read, the same
# way for every method.  The destination is nbdkit r3map-dir on an
# empty directory.  The writer is fio (ioengine nbd, random 64 KiB
# writes, queue depth 1, --rate), the source VM: it writes for
# BENCH_WARMUP seconds before the migration starts, and until the VM
# "stops".  The methods:
#
#   r3map    the source runs nbdkit --filter=r3map-track (above the log
#            filter); the destination is nbdkit --filter=r3map-pull
#            r3map-dir source=<the source> status=..., the filter's
#            defaults otherwise (plus BENCH_PULL_ARGS), as in
#            scripts/demo-migrate.sh.  Once the destination has every
#            chunk local and has converged (r3map status: "waiting for
#            the seal"), the writer is stopped, the VM's last write (4 KiB
#            at the start of the disk's last chunk) is made, and the source
#            is sealed (r3map seal); the destination finalizes by itself
#            (r3map finalize waits for it); then the rest is pulled.
#              downtime: seal sent -> destination released (the
#                leecher's leech_finalized_ms, r3map status --json);
#              total: destination started -> the last read at the source
#                (every chunk local; r3map status says complete);
#              bytes: read at the source (log), = bytes_pulled;
#              first read: one 4 KiB read of the chunk of the VM's last
#                write on the destination, sent as soon as r3map finalize
#                returns (the client connected before the seal): a chunk
#                that is not local yet, unless the background pull got
#                to it first (the table counts the reads that were
#                on-demand fetches).
#   nbdcopy  a plain stop-and-copy: the writer stops, then nbdcopy
#            --sparse=0 copies the source to the destination (sparse
#            detection off, so that it writes every byte as the other
#            two methods do).  downtime = total = the copy.
#   qemu     qemu-storage-daemon opens the source (blockdev driver nbd)
#            and exports it over NBD; the writer writes through that
#            export.  blockdev-mirror sync=full to the destination (a
#            blockdev driver nbd); at BLOCK_JOB_READY the writer is
#            stopped and block-job-cancel completes the job (as libvirt
#            does for a storage migration); downtime: writer stopped ->
#            BLOCK_JOB_COMPLETED; total: blockdev-mirror -> completed;
#            bytes: the job's counter (offset) and the source's log.
#
# The first 4 KiB read after switch-over is measured for the other two
# as well (a local read there).  With BENCH_VERIFY=1 every migration is
# checked: the destination must read back exactly as the source.
#
# Then, for each size in BENCH_SCALE_SIZES, r3map's switch-over alone on
# a disk far larger than memory: the source and destination directories
# are empty (the disk reads as zeros), the destination runs with
# pull-workers=0 (nothing is copied in the background, chunks come on
# demand only), and the writer writes at BENCH_SCALE_RATE from the start.
# Once the destination has converged, the switch-over is the same as
# above: the downtime, the leecher's own part of it, and the first read
# (here always an on-demand fetch).  This shows how the downtime grows
# with the size of the disk when no data is in the way.
#
# The medians over the runs are printed to stdout as markdown tables,
# with the ratios and the targets; progress and the figures of each run
# go to stderr.
#
# Environment:
#   BENCH_SIZES="256M 1G 4G"
#                       disk sizes (K, M, G suffixes: 2^10..), multiples
#                       of 1M
#   BENCH_RATES="0 10 50"
#                       writer rates, MB/s (10^6 bytes/s); 0: no writer
#   BENCH_RUNS=3        runs of every case; the tables show medians
#   BENCH_FILL=4K       random bytes at the start of each 64 KiB chunk of
#                       the initial disk (64K: all random, the whole disk
#                       in memory at the source)
#   BENCH_WARMUP=1      seconds the writer writes before the migration
#   BENCH_METHODS="r3map nbdcopy qemu"
#   BENCH_PULL_ARGS=    more parameters for r3map-pull (e.g.
#                       precopy-interval=250ms)
#   BENCH_SCALE_SIZES="4G 64G 1T"
#                       disk sizes of the switch-over alone (empty: none)
#   BENCH_SCALE_RATE=10 the writer's rate there, MB/s
#   BENCH_READY_TIMEOUT=300
#                       seconds to wait for the r3map destination to
#                       converge before the run is abandoned
#   BENCH_VERIFY=1      compare source and destination after each migration
#   BENCH_DIR=          a directory (on a tmpfs) to work in; by default the
#                       script mounts a private tmpfs in a private mount
#                       namespace (needs root and unshare), else /dev/shm
#   BENCH_PLUGIN=       the r3map-dir plugin (default: the in-tree build)
#   BENCH_TRACK=        the r3map-track filter (default: the in-tree build)
#   BENCH_FILTER=       the r3map-pull filter (default: the in-tree build)
#   BENCH_R3MAP=        the r3map tool (default: the in-tree tools/r3map)
#
# Needs: nbdkit (Debian package nbdkit, with its log filter), nbdcopy
# (libnbd-bin), fio (fio, with its nbd engine), qemu-storage-daemon
# (qemu-system-common, which qemu-system-x86 pulls in), python3 and cmp
# (diffutils).  Memory (tmpfs): the destination's whole disk, plus the
# pattern and the source (BENCH_FILL/64K of the size each), plus what the
# writer fills at the source: about 5.5 GiB at 4G.  A default run takes
# about 45 minutes (2 CPUs): 39 for the migrations, 4 for the
# switch-over alone.

set -euo pipefail

usage () {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

if [[ $# -gt 0 ]]; then
  case $1 in
    -h|--help) usage; exit 0 ;;
    *) echo "bench-migrate.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
fi

die () { echo "bench-migrate.sh: $*" >&2; exit 1; }
say () { echo "bench-migrate.sh: $*" >&2; }

need () {                       # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 ||
    die "$1 not found: install the Debian package $2 (apt-get install $2)"
}

need nbdkit nbdkit
need nbdcopy libnbd-bin
need nbdinfo libnbd-bin
need fio fio
need numfmt coreutils
need cmp diffutils
[[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 not found: install the Debian package python3"
python=/usr/bin/python3
fio --enghelp 2>/dev/null | grep -qw nbd ||
  die "this fio has no nbd engine: install Debian's fio (built with libnbd)"
nbdkit --filter=log null --version >/dev/null 2>&1 ||
  die "nbdkit has no log filter: install the Debian package nbdkit"

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
plugin=${BENCH_PLUGIN:-$top/plugins/dir/.libs/nbdkit-r3map-dir-plugin.so}
track=${BENCH_TRACK:-$top/filters/track/.libs/nbdkit-r3map-track-filter.so}
filter=${BENCH_FILTER:-$top/filters/pull/.libs/nbdkit-r3map-pull-filter.so}
r3map=${BENCH_R3MAP:-$top/tools/r3map}
[[ -f $plugin ]] ||
  die "$plugin not found: build it first (make) or set BENCH_PLUGIN"
[[ -f $track ]] ||
  die "$track not found: build it first (make) or set BENCH_TRACK"
[[ -f $filter ]] ||
  die "$filter not found: build it first (make) or set BENCH_FILTER"
[[ -x $r3map ]] ||
  die "$r3map not found: build it first (make) or set BENCH_R3MAP"

sizes=${BENCH_SIZES-256M 1G 4G}
rates=${BENCH_RATES-0 10 50}
runs=${BENCH_RUNS:-${BENCH_REPS:-3}}
fill_arg=${BENCH_FILL:-4K}
warmup=${BENCH_WARMUP:-1}
methods=${BENCH_METHODS-r3map nbdcopy qemu}
pull_args=${BENCH_PULL_ARGS:-}
ready_timeout=${BENCH_READY_TIMEOUT:-300}
scale_sizes=${BENCH_SCALE_SIZES-4G 64G 1T}
scale_rate=${BENCH_SCALE_RATE:-10}
verify=${BENCH_VERIFY:-1}
chunk=65536

read -r -a size_list <<< "$sizes"
declare -A bytes_of=()
for s in "${size_list[@]}"; do
  b=$(numfmt --from=iec "$s" 2>/dev/null) || die "BENCH_SIZES: $s: not a size (e.g. 256M, 1G)"
  (( b >= 1048576 && b % 1048576 == 0 )) || die "BENCH_SIZES: $s: a multiple of 1M please"
  bytes_of[$s]=$b
done
read -r -a rate_list <<< "$rates"
[[ ${#rate_list[@]} -gt 0 ]] || die "BENCH_RATES is empty"
for r in "${rate_list[@]}"; do
  [[ $r =~ ^[0-9]+$ ]] || die "BENCH_RATES: $r: not a whole number of MB/s"
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS=$runs: not a positive number"
fill=$(numfmt --from=iec "$fill_arg" 2>/dev/null) || die "BENCH_FILL=$fill_arg: not a size"
(( fill >= 1 && fill <= chunk )) || die "BENCH_FILL=$fill_arg: from 1 to 64K"
[[ $warmup =~ ^[0-9]+$ ]] || die "BENCH_WARMUP=$warmup: not a whole number of seconds"
[[ $ready_timeout =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_READY_TIMEOUT=$ready_timeout: not a positive number of seconds"
[[ $verify == 0 || $verify == 1 ]] || die "BENCH_VERIFY=$verify: 0 or 1"
read -r -a method_list <<< "$methods"
have_method () { [[ " ${method_list[*]} " == *" $1 "* ]]; }
[[ ${#method_list[@]} -gt 0 ]] || die "BENCH_METHODS is empty"
for m in "${method_list[@]}"; do
  case $m in
    r3map|nbdcopy) ;;
    qemu) need qemu-storage-daemon qemu-system-x86 ;;
    *) die "BENCH_METHODS: $m: r3map, nbdcopy or qemu" ;;
  esac
done
read -r -a pull_extra <<< "$pull_args"
read -r -a scale_list <<< "$scale_sizes"
for s in "${scale_list[@]}"; do
  b=$(numfmt --from=iec "$s" 2>/dev/null) || die "BENCH_SCALE_SIZES: $s: not a size (e.g. 64G, 1T)"
  (( b >= 1048576 && b % 1048576 == 0 )) || die "BENCH_SCALE_SIZES: $s: a multiple of 1M please"
  bytes_of[$s]=$b
done
[[ $scale_rate =~ ^[0-9]+$ ]] || die "BENCH_SCALE_RATE=$scale_rate: not a whole number of MB/s"
if [[ ${#scale_list[@]} -gt 0 ]] && ! have_method r3map; then
  scale_list=()
fi
[[ ${#size_list[@]} -gt 0 || ${#scale_list[@]} -gt 0 ]] ||
  die "BENCH_SIZES and BENCH_SCALE_SIZES are both empty"
max_size=0
for s in "${size_list[@]}"; do (( ${bytes_of[$s]} > max_size )) && max_size=${bytes_of[$s]}; done

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
work='' mnt='' pids=()

stop_pid () {                   # stop_pid PID: end a process we started
  local i
  [[ -n $1 ]] || return 0
  kill "$1" 2>/dev/null || true
  # A leecher and its seeder stopped together can wait on each other
  # (the leecher connecting to a seeder that no longer accepts): give
  # each 10 s, then kill it.
  for ((i = 0; i < 100; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

cleanup () {
  local i
  # The newest first: clients before the servers they use.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
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
# The destination's whole disk, the patterns and the source (a
# sixteenth each at BENCH_FILL=4K), and what the writers fill at the
# source (up to the whole disk).
pattern_bytes=0
for s in "${size_list[@]}"; do
  pattern_bytes=$(( pattern_bytes + ${bytes_of[$s]} / chunk * ((fill + 4095) / 4096 * 4096) ))
done
need_bytes=$(( 2 * max_size + pattern_bytes + 128 * 1048576 ))
# The switch-over alone: what its writer writes (a few hundred MB).
[[ ${#scale_list[@]} -eq 0 ]] || need_bytes=$(( need_bytes + 1073741824 ))
if [[ -n ${BENCH_DIR:-} ]]; then
  [[ -d $BENCH_DIR ]] || die "BENCH_DIR=$BENCH_DIR: not a directory"
  work=$(mktemp -d "$BENCH_DIR/bench-migrate.XXXXXX")
elif [[ -n ${BENCH_IN_NS:-} ]]; then
  mnt=$(mktemp -d /tmp/bench-migrate.XXXXXX)
  mount -t tmpfs -o "size=$need_bytes,mode=0700" bench-migrate "$mnt" ||
    die "cannot mount a tmpfs on $mnt"
  work=$mnt
else
  work=$(mktemp -d /dev/shm/bench-migrate.XXXXXX)
fi
fstype=$(stat -f -c %T "$work")
[[ $fstype == tmpfs ]] ||
  say "warning: $work is on $fstype, not tmpfs: figures include that file system"
avail=$(( $(stat -f -c '%a * %S' "$work") ))
[[ $avail -ge $(( need_bytes / 2 )) ]] ||
  die "$work: $(numfmt --to=iec $avail) free, $(numfmt --to=iec $need_bytes) wanted"
mkdir "$work/results"
results=$work/results

# ---------------------------------------------------------------- helper
# A small Python helper: a minimal NBD client (one write, one timed
# read), the QMP side of the mirror, and the log filter's log parser.
cat > "$work/helper.py" <<'EOF'
import datetime, json, os, signal, socket, struct, subprocess, sys, time

class NBD:
    """Fixed newstyle handshake, NBD_OPT_GO, simple replies."""
    def __init__(self, path, name=b""):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        hdr = self.recv(18)
        if hdr[:16] != b"NBDMAGICIHAVEOPT":
            sys.exit("%s: not a newstyle NBD server" % path)
        flags = struct.unpack(">H", hdr[16:18])[0]
        self.s.sendall(struct.pack(">I", 1 | (flags & 2)))
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self.s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
        while True:
            _, _, typ, ln = struct.unpack(">QIII", self.recv(20))
            body = self.recv(ln)
            if typ == 1:
                break
            if typ & 0x80000000:
                sys.exit("%s: NBD_OPT_GO refused (%#x)" % (path, typ))
        self.handle = 0

    def recv(self, n):
        b = bytearray()
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                sys.exit("the NBD server closed the connection")
            b += c
        return bytes(b)

    def request(self, typ, off, ln, data=b""):
        self.handle += 1
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, typ, self.handle,
                                   off, ln if typ != 3 else 0) + data)
        magic, err, _ = struct.unpack(">IIQ", self.recv(16))
        if magic != 0x67446698 or err:
            sys.exit("NBD request %d failed: error %d" % (typ, err))
        return self.recv(ln) if typ == 0 else b""

    def close(self):
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))
        self.s.close()

def cmd_timed_read(sock, off):
    """Time one 4 KiB read: ms to stdout."""
    n = NBD(sock)
    t0 = time.perf_counter_ns()
    n.request(0, int(off), 4096)
    t1 = time.perf_counter_ns()
    n.close()
    print("%.3f" % ((t1 - t0) / 1e6))

def cmd_switch(dst_sock, src_sock, off, ready, go, r3map, ctl, status):
    """The r3map switch-over, prepared in advance so that no process
    starts between the VM's stop and the seal: connect to both sides (a
    leecher does not hold the handshake), say so in READY, and wait for
    a line on the FIFO GO (the writer has stopped).  Then make the VM's
    last write (4 KiB at OFF on the source), seal the source, wait for
    the destination to finalize, and at once time one 4 KiB read at OFF
    on the destination.  Prints the seal's time (ns) and the read's ms."""
    off = int(off)
    d = NBD(dst_sock)
    s = NBD(src_sock)
    with open(ready, "w") as f:
        f.write("connected\n")
    with open(go) as f:
        f.readline()
    s.request(1, off, 4096, os.urandom(4096))
    t_seal = time.time_ns()
    if subprocess.run([r3map, "seal", ctl], stdout=subprocess.DEVNULL).returncode:
        sys.exit("r3map seal failed")
    if subprocess.run([r3map, "finalize", "--timeout=120s", status],
                      stdout=subprocess.DEVNULL).returncode:
        sys.exit("r3map finalize failed")
    t0 = time.perf_counter_ns()
    d.request(0, off, 4096)
    t1 = time.perf_counter_ns()
    s.close()
    d.close()
    print(t_seal, "%.3f" % ((t1 - t0) / 1e6))

class QMP:
    def __init__(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for _ in range(500):
            try:
                s.connect(path)
                break
            except OSError:
                time.sleep(0.02)
        else:
            sys.exit("no QMP socket at " + path)
        self.f = s.makefile("rwb", buffering=0)
        self.events = []
        self.read()
        self.cmd("qmp_capabilities")

    def read(self):
        line = self.f.readline()
        if not line:
            sys.exit("QMP: connection closed")
        m = json.loads(line)
        if "event" in m:
            m["t_ns"] = time.time_ns()
            self.events.append(m)
        return m

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode()
                     + b"\n")
        while True:
            m = self.read()
            if "error" in m:
                sys.exit("QMP %s: %s" % (name, m["error"]))
            if "return" in m:
                return m["return"]

    def event(self, names, timeout):
        end = time.time() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] in names:
                    return self.events.pop(i)
            if time.time() > end:
                sys.exit("QMP: no %s within %d s" % ("/".join(names), timeout))
            self.read()

def cmd_mirror(qmp, dst_sock, warmup, *writer):
    """The QEMU side: start the writer, let it write WARMUP s, mirror the
    node "src" to DST_SOCK; at READY stop the writer, then cancel (which
    completes a ready mirror).  Prints the times and counters as JSON."""
    q = QMP(qmp)
    w = subprocess.Popen(list(writer)) if writer else None
    time.sleep(float(warmup))
    q.cmd("blockdev-add", driver="nbd", **{"node-name": "dst"},
          server={"type": "unix", "path": dst_sock})
    t_start = time.time_ns()
    q.cmd("blockdev-mirror", **{"job-id": "mig"}, device="src", target="dst",
          sync="full")
    e = q.event(["BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"], 3600)
    if e["event"] != "BLOCK_JOB_READY":
        sys.exit("the mirror ended before it was ready: %r" % e)
    t_ready = e["t_ns"]
    if w:
        # As halt_writer in the script: a signal during fio's start can
        # be lost.
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            w.send_signal(sig)
            try:
                w.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                pass
    t_stop = time.time_ns()
    q.cmd("block-job-cancel", device="mig")
    e = q.event(["BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"], 3600)
    if e["event"] != "BLOCK_JOB_COMPLETED" or e["data"].get("error"):
        sys.exit("the mirror failed: %r" % e)
    print(json.dumps({"t_start": t_start, "t_ready": t_ready,
                      "t_stop": t_stop, "t_done": e["t_ns"],
                      "offset": e["data"]["offset"]}))

def cmd_log(path, upto):
    """nbdkit's log filter (TZ=UTC): bytes of successful reads, and the
    time of the last one, up to time UPTO (ns)."""
    upto = int(upto)
    pending, nbytes, nreads, last = {}, 0, 0, 0
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) < 5 or p[3] not in ("Read", "...Read"):
                continue
            ts = datetime.datetime.strptime(p[0] + " " + p[1],
                                            "%Y-%m-%d %H:%M:%S.%f")
            t = (int(ts.replace(tzinfo=datetime.timezone.utc).timestamp())
                 * 10**9 + ts.microsecond * 1000)
            if t > upto:
                break
            kv = dict(x.split("=", 1) for x in p[4:] if "=" in x)
            if p[3] == "Read":
                pending[(p[2], kv["id"])] = int(kv["count"], 16)
            elif kv.get("return") == "0":
                nbytes += pending.pop((p[2], kv["id"]), 0)
                nreads += 1
                last = t
    print(nbytes, nreads, last)

def cmd_pattern(path, size, chunk, fill):
    size, chunk, fill = int(size), int(chunk), int(fill)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, chunk):
            f.seek(off)
            f.write(os.urandom(min(fill, size - off)))

def cmd_fio_bw(path):
    """The rate fio wrote at, MB/s (its JSON may follow warnings)."""
    try:
        with open(path) as f:
            text = f.read()
        j = json.loads(text[text.index("{"):])
        print("%.1f" % (j["jobs"][0]["write"]["bw_bytes"] / 1e6))
    except (OSError, ValueError, KeyError, IndexError):
        print("-")

cmds = {"switch": cmd_switch, "timed-read": cmd_timed_read, "mirror": cmd_mirror,
        "log": cmd_log, "pattern": cmd_pattern, "fio-bw": cmd_fio_bw}
cmds[sys.argv[1]](*sys.argv[2:])
EOF
helper () { "$python" "$work/helper.py" "$@"; }

# ---------------------------------------------------------------- machine
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
machine="$(nproc) CPUs ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
versions="nbdkit $(nbdkit --version | awk '{print $2}'),"
versions+=" libnbd $(nbdcopy --version | awk 'NR == 1 {print $2}'), $(fio --version)"
if command -v qemu-storage-daemon >/dev/null 2>&1; then
  versions+=", QEMU $(qemu-storage-daemon --version | awk 'NR == 1 {print $3}')"
fi
config="BENCH_SIZES=\"${size_list[*]}\" BENCH_RATES=\"${rate_list[*]}\""
config+=" BENCH_RUNS=$runs BENCH_FILL=$fill_arg BENCH_WARMUP=$warmup,"
config+=" r3map-pull ${pull_extra[*]:-defaults}"
say "working in $work ($fstype); $config"

# ---------------------------------------------------------------- helpers
now () { date +%s%N; }
ms () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f\n", (b - a) / 1e6 }'; }

record () {                     # record METRIC METHOD SIZE RATE VALUE
  echo "$5" >> "$results/$1.$2.$3.$4"
}

jget () {                       # jget JSON KEY: a number or a string
  local re="\"$2\": \"?([^\",}]*)"
  [[ $1 =~ $re ]] || die "no $2 in: $1"
  echo "${BASH_REMATCH[1]}"
}

wait_sock () {                  # wait_sock SOCKET PID
  local i
  for ((i = 0; i < 3000; i++)); do
    [[ -S $1 ]] && nbdinfo --can connect "nbd+unix:///?socket=$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null ||
      die "the server for $1 failed to start: $(tail -n 5 "$work/nbdkit.err")"
    sleep 0.01
  done
  die "no server on $1 after 30 s"
}

serve () {                      # serve SOCKET ARGS...: sets $served
  rm -f "$1"
  local sock=$1; shift
  # Its messages go to a file: a leecher that converged before its bulk
  # copy is done makes the seeder log "not sealed within 5000 ms" each
  # time its wait for the seal ends, which is expected here.
  TZ=UTC nbdkit -f --exit-with-parent -U "$sock" "$@" 2>> "$work/nbdkit.err" &
  served=$!
  pids+=("$served")
  wait_sock "$sock" "$served"
}

unserve () {                    # unserve PID
  local p keep=()
  stop_pid "$1"
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# A fresh source directory, filled from the pattern of SIZE.
fresh_source () {               # fresh_source SIZE
  rm -rf "$work/src" "$work/dst" "$work"/*.sock "$work"/*.log "$work/status"
  : > "$work/nbdkit.err"
  mkdir "$work/src" "$work/dst"
  serve "$work/fill.sock" "$plugin" dir="$work/src" size="$1"
  nbdcopy "$work/pattern.$1" "nbd+unix:///?socket=$work/fill.sock"
  unserve "$served"
}

writer=''
writer_args () {                # writer_args URI RATE: sets wargs (fio's command)
  # Threads, not processes: a signal to fio reaches all of it.
  wargs=(fio --name=vm --thread --ioengine=nbd --uri="$1" --rw=randwrite
         --bs=64k --rate=$(( $2 * 1000000 )) --time_based --runtime=3600
         --output-format=json --output="$work/fio.json")
}

start_writer () {               # start_writer URI RATE
  writer=''
  rm -f "$work/fio.json"
  (( $2 > 0 )) || return 0
  writer_args "$1" "$2"
  "${wargs[@]}" >/dev/null 2>&1 &
  writer=$!
  pids+=("$writer")
}

# fio stops on SIGINT, but a signal that comes while it starts can be
# lost: then ask again, and at last kill it.
halt_writer () {                # halt_writer: the writer has stopped on return
  local i sig
  [[ -n $writer ]] || return 0
  # Polled every 2 ms: this is the VM's stop, inside r3map's total time
  # (the plain copy's starts after it).
  for sig in INT INT TERM KILL; do
    kill -"$sig" "$writer" 2>/dev/null || break
    for ((i = 0; i < 1000; i++)); do
      kill -0 "$writer" 2>/dev/null || break 2
      sleep 0.002
    done
  done
  wait "$writer" 2>/dev/null || true
}

stop_writer () {                # sets wbw: the writer's rate (MB/s), 0 if none
  wbw=0
  [[ -n $writer ]] || return 0
  halt_writer
  unserve "$writer"
  writer=''
  wbw=$(helper fio-bw "$work/fio.json")
}

verify_copy () {                # verify_copy SRC-URI DST-URI WHAT
  [[ $verify == 1 ]] || return 0
  cmp <(nbdcopy "$1" -) <(nbdcopy "$2" -) >/dev/null ||
    die "$3: the destination differs from the source"
}

first_read () {                 # first_read SOCKET OFFSET: ms of a 4 KiB read
  helper timed-read "$1" "$2"
}

# ---------------------------------------------------------------- methods
run_r3map () {                  # run_r3map SIZE RATE
  local size=$1 rate=$2 src dst t_start t_ready t_stop t_seal
  local j i phase local_ total fin down wbw fr od0 od tend log_bytes reads last
  local ctl=$work/src.ctl status=$work/status marker=$(( ${bytes_of[$1]} - chunk ))
  local ssrv dsrv switch
  fresh_source "$size"
  serve "$work/src.sock" --filter="$track" --filter=log "$plugin" \
    dir="$work/src" size="$size" track-control="$ctl" logfile="$work/src.log"
  ssrv=$served
  src="nbd+unix:///?socket=$work/src.sock"
  start_writer "$src" "$rate"
  sleep "$warmup"

  t_start=$(now)
  serve "$work/dst.sock" --filter="$filter" "$plugin" dir="$work/dst" \
    size="$size" source="$src" status="$status" "${pull_extra[@]}"
  dsrv=$served
  dst="nbd+unix:///?socket=$work/dst.sock"
  # The switch-over, ready in advance (see the helper).
  rm -f "$work/ready" "$work/go"
  mkfifo "$work/go"
  helper switch "$work/dst.sock" "$work/src.sock" "$marker" "$work/ready" \
    "$work/go" "$r3map" "$ctl" "$status" > "$work/switch" &
  switch=$!
  pids+=("$switch")
  # Ready: every chunk local (at least once) and converged.
  for ((i = 0; ; i++)); do
    j=$("$r3map" status --json "$status")
    phase=$(jget "$j" phase)
    local_=$(jget "$j" chunks_local)
    total=$(jget "$j" chunks_total)
    [[ $phase == "waiting for the seal" && $local_ == "$total" && -s $work/ready ]] && break
    (( i * 20 < ready_timeout * 1000 )) ||
      die "r3map: not converged after $ready_timeout s ($phase, $local_/$total chunks)"
    sleep 0.02
  done
  t_ready=$(now)
  od0=$(jget "$j" fetches_on_demand)

  # The VM stops: its writes end, its last one lands, the source is
  # sealed, the destination finalizes and reads at once.
  halt_writer
  t_stop=$(now)
  echo go > "$work/go"
  wait "$switch" || die "r3map: the switch-over failed"
  unserve "$switch"
  read -r t_seal fr < "$work/switch"
  j=$("$r3map" status --json "$status")
  fin=$(jget "$j" leech_finalized_ms)
  down=$(awk -v a="$t_seal" -v f="$fin" 'BEGIN { printf "%.1f\n", f - a / 1e6 }')

  # Post-copy: until every chunk is local.
  for ((i = 0; ; i++)); do
    j=$("$r3map" status --json "$status")
    [[ $(jget "$j" phase) == complete ]] && break
    (( i * 20 < 600000 )) || die "r3map: the post-copy did not complete in 10 minutes"
    sleep 0.02
  done
  tend=$(now)
  stop_writer
  od=$(( $(jget "$j" fetches_on_demand) - od0 ))
  read -r log_bytes reads last < <(helper log "$work/src.log" "$tend")
  [[ $log_bytes == "$(jget "$j" bytes_pulled)" ]] ||
    say "warning: r3map: the source's log counts $log_bytes bytes read," \
      "the destination $(jget "$j" bytes_pulled)"
  verify_copy "$src" "$dst" "r3map $size $rate MB/s"
  unserve "$dsrv"
  unserve "$ssrv"

  record down r3map "$size" "$rate" "$down"
  record total r3map "$size" "$rate" "$(ms "$t_start" "$last")"
  record ready r3map "$size" "$rate" "$(ms "$t_start" "$t_ready")"
  record bytes r3map "$size" "$rate" "$log_bytes"
  record final r3map "$size" "$rate" "$(jget "$j" leech_final_chunks)"
  record rounds r3map "$size" "$rate" "$(jget "$j" leech_rounds)"
  record finus r3map "$size" "$rate" "$(jget "$j" leech_finalize_us)"
  record first r3map "$size" "$rate" "$fr"
  record ondemand r3map "$size" "$rate" "$(( od > 0 ? 1 : 0 ))"
  record wbw r3map "$size" "$rate" "$wbw"
  say "  r3map:   downtime $down ms, total $(ms "$t_start" "$last") ms" \
    "(ready after $(ms "$t_start" "$t_ready") ms, $(jget "$j" leech_rounds) rounds;" \
    "stopping the writer $(ms "$t_ready" "$t_stop") ms;" \
    "writer stopped -> seal $(ms "$t_stop" "$t_seal") ms;" \
    "finalized -> last read $(ms "$(( fin * 1000000 ))" "$last") ms)," \
    "$log_bytes bytes read at the source, final set $(jget "$j" leech_final_chunks)" \
    "chunks, first read $fr ms ($od on-demand fetch), writer $wbw MB/s"
}

run_nbdcopy () {                # run_nbdcopy SIZE RATE
  local size=$1 rate=$2 src dst t0 t1 wbw fr log_bytes reads last ssrv dsrv
  fresh_source "$size"
  serve "$work/src.sock" --filter=log "$plugin" dir="$work/src" size="$size" \
    logfile="$work/src.log"
  ssrv=$served
  serve "$work/dst.sock" "$plugin" dir="$work/dst" size="$size"
  dsrv=$served
  src="nbd+unix:///?socket=$work/src.sock"
  dst="nbd+unix:///?socket=$work/dst.sock"
  start_writer "$src" "$rate"
  sleep "$warmup"
  stop_writer
  t0=$(now)
  nbdcopy --sparse=0 "$src" "$dst"
  t1=$(now)
  fr=$(first_read "$work/dst.sock" $(( ${bytes_of[$size]} - chunk )))
  read -r log_bytes reads last < <(helper log "$work/src.log" "$t1")
  verify_copy "$src" "$dst" "nbdcopy $size $rate MB/s"
  unserve "$dsrv"
  unserve "$ssrv"
  record down nbdcopy "$size" "$rate" "$(ms "$t0" "$t1")"
  record total nbdcopy "$size" "$rate" "$(ms "$t0" "$t1")"
  record bytes nbdcopy "$size" "$rate" "$log_bytes"
  record first nbdcopy "$size" "$rate" "$fr"
  record wbw nbdcopy "$size" "$rate" "$wbw"
  say "  nbdcopy: downtime = total $(ms "$t0" "$t1") ms, $log_bytes bytes read" \
    "at the source, first read $fr ms, writer $wbw MB/s"
}

run_qemu () {                   # run_qemu SIZE RATE
  local size=$1 rate=$2 src dst qsd i j wr=() wbw fr log_bytes reads last
  local t_start t_ready t_stop t_done offset ssrv dsrv
  fresh_source "$size"
  serve "$work/src.sock" --filter=log "$plugin" dir="$work/src" size="$size" \
    logfile="$work/src.log"
  ssrv=$served
  serve "$work/dst.sock" "$plugin" dir="$work/dst" size="$size"
  dsrv=$served
  src="nbd+unix:///?socket=$work/src.sock"
  dst="nbd+unix:///?socket=$work/dst.sock"
  rm -f "$work/qsd.sock" "$work/qmp.sock"
  qemu-storage-daemon \
    --blockdev "driver=nbd,node-name=src,server.type=unix,server.path=$work/src.sock" \
    --nbd-server "addr.type=unix,addr.path=$work/qsd.sock" \
    --export type=nbd,id=vm,node-name=src,name=vm,writable=on \
    --chardev "socket,id=qmp,path=$work/qmp.sock,server=on,wait=off" \
    --monitor chardev=qmp 2> "$work/qsd.err" &
  qsd=$!
  pids+=("$qsd")
  for ((i = 0; i < 1000; i++)); do
    [[ -S $work/qsd.sock ]] && break
    kill -0 "$qsd" 2>/dev/null || die "qemu-storage-daemon failed: $(cat "$work/qsd.err")"
    sleep 0.01
  done
  if (( rate > 0 )); then
    writer_args "nbd+unix:///vm?socket=$work/qsd.sock" "$rate"
    wr=("${wargs[@]}")
  fi
  rm -f "$work/fio.json"
  j=$(helper mirror "$work/qmp.sock" "$work/dst.sock" "$warmup" "${wr[@]}") ||
    die "qemu: the mirror failed"
  t_start=$(jget "$j" t_start) t_ready=$(jget "$j" t_ready)
  t_stop=$(jget "$j" t_stop) t_done=$(jget "$j" t_done) offset=$(jget "$j" offset)
  if (( rate > 0 )); then wbw=$(helper fio-bw "$work/fio.json"); else wbw=0; fi
  unserve "$qsd"
  fr=$(first_read "$work/dst.sock" $(( ${bytes_of[$size]} - chunk )))
  read -r log_bytes reads last < <(helper log "$work/src.log" "$t_done")
  verify_copy "$src" "$dst" "qemu $size $rate MB/s"
  unserve "$dsrv"
  unserve "$ssrv"
  record down qemu "$size" "$rate" "$(ms "$t_stop" "$t_done")"
  record total qemu "$size" "$rate" "$(ms "$t_start" "$t_done")"
  record ready qemu "$size" "$rate" "$(ms "$t_start" "$t_ready")"
  record bytes qemu "$size" "$rate" "$offset"
  record logbytes qemu "$size" "$rate" "$log_bytes"
  record first qemu "$size" "$rate" "$fr"
  record wbw qemu "$size" "$rate" "$wbw"
  say "  qemu:    downtime $(ms "$t_stop" "$t_done") ms, total $(ms "$t_start" "$t_done") ms" \
    "(ready after $(ms "$t_start" "$t_ready") ms), $offset bytes copied" \
    "($log_bytes read at the source), first read $fr ms, writer $wbw MB/s"
}

# The switch-over alone, on an empty disk of SIZE, with no background
# pull: the downtime against the size of the disk.
run_scale () {                  # run_scale SIZE RATE
  local size=$1 rate=$2 src j i fin down t_seal fr switch ssrv dsrv
  local ctl=$work/src.ctl status=$work/status marker=$(( ${bytes_of[$1]} - chunk ))
  rm -rf "$work/src" "$work/dst" "$work"/*.sock "$work/status"
  : > "$work/nbdkit.err"
  mkdir "$work/src" "$work/dst"
  serve "$work/src.sock" --filter="$track" "$plugin" dir="$work/src" \
    size="$size" track-control="$ctl"
  ssrv=$served
  src="nbd+unix:///?socket=$work/src.sock"
  start_writer "$src" "$rate"
  sleep "$warmup"
  serve "$work/dst.sock" --filter="$filter" "$plugin" dir="$work/dst" \
    size="$size" source="$src" status="$status" pull-workers=0 "${pull_extra[@]}"
  dsrv=$served
  rm -f "$work/ready" "$work/go"
  mkfifo "$work/go"
  helper switch "$work/dst.sock" "$work/src.sock" "$marker" "$work/ready" \
    "$work/go" "$r3map" "$ctl" "$status" > "$work/switch" &
  switch=$!
  pids+=("$switch")
  for ((i = 0; ; i++)); do
    j=$("$r3map" status --json "$status")
    [[ $(jget "$j" phase) == "waiting for the seal" && -s $work/ready ]] && break
    (( i * 20 < ready_timeout * 1000 )) ||
      die "r3map ($size, no pull): not converged after $ready_timeout s"
    sleep 0.02
  done
  halt_writer
  echo go > "$work/go"
  wait "$switch" || die "r3map ($size, no pull): the switch-over failed"
  unserve "$switch"
  read -r t_seal fr < "$work/switch"
  j=$("$r3map" status --json "$status")
  fin=$(jget "$j" leech_finalized_ms)
  down=$(awk -v a="$t_seal" -v f="$fin" 'BEGIN { printf "%.1f\n", f - a / 1e6 }')
  stop_writer
  unserve "$dsrv"
  unserve "$ssrv"
  record down scale "$size" "$rate" "$down"
  record finus scale "$size" "$rate" "$(jget "$j" leech_finalize_us)"
  record first scale "$size" "$rate" "$fr"
  record final scale "$size" "$rate" "$(jget "$j" leech_final_chunks)"
  record rounds scale "$size" "$rate" "$(jget "$j" leech_rounds)"
  say "  r3map, $size, no pull: downtime $down ms (final set read -> released" \
    "$(jget "$j" leech_finalize_us) us), final set $(jget "$j" leech_final_chunks)" \
    "chunks, $(jget "$j" leech_rounds) rounds, first read (on demand) $fr ms," \
    "writer $wbw MB/s"
}

# ---------------------------------------------------------------- run
start=$(date +%s)
for s in "${size_list[@]}"; do
  say "pattern for $s: $fill_arg of random data at the start of each 64 KiB chunk"
  helper pattern "$work/pattern.$s" "${bytes_of[$s]}" "$chunk" "$fill"
done
# Touch as much fresh memory as the largest destination once, untimed,
# so that the first run does not pay alone for the first use of it (in a
# VM, the host's page faults).
head -c "$max_size" /dev/zero > "$work/warm-up" && rm -f "$work/warm-up"

for ((run = 1; run <= runs; run++)); do
  if ((run % 2)); then
    order=("${method_list[@]}")
  else
    order=(); for ((i = ${#method_list[@]} - 1; i >= 0; i--)); do order+=("${method_list[i]}"); done
  fi
  for s in "${size_list[@]}"; do
    for r in "${rate_list[@]}"; do
      say "run $run/$runs: $s disk, writer at $r MB/s"
      for m in "${order[@]}"; do
        "run_$m" "$s" "$r"
      done
    done
  done
  for s in "${scale_list[@]}"; do
    say "run $run/$runs: the switch-over alone, an empty $s disk, writer at $scale_rate MB/s"
    run_scale "$s" "$scale_rate"
  done
done
elapsed=$(( $(date +%s) - start ))

# ---------------------------------------------------------------- tables
median () {                     # median METRIC METHOD SIZE RATE: or "-"
  local f=$results/$1.$2.$3.$4
  [[ -s $f ]] || { echo -; return; }
  sort -g "$f" | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
sum () {                        # sum METRIC METHOD SIZE RATE
  local f=$results/$1.$2.$3.$4
  [[ -s $f ]] || { echo 0; return; }
  awk '{ s += $1 } END { print s + 0 }' "$f"
}
count () {
  local f=$results/$1.$2.$3.$4
  [[ -s $f ]] || { echo 0; return; }
  wc -l < "$f"
}
fmt () {                        # fmt FORMAT VALUE-OR-DASH
  if [[ $2 == - ]]; then echo -; else printf "$1" "$2"; fi
}
ratio () {                      # ratio A B
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "-" || b == "-" || b <= 0) print "-"
    else if (a / b >= 10) printf "%.0f\n", a / b
    else printf "%.2f\n", a / b }'
}
mib () { [[ $1 == - ]] && { echo -; return; }; awk -v b="$1" 'BEGIN { printf "%.0f\n", b / 1048576 }'; }
mib1 () { [[ $1 == - ]] && { echo -; return; }; awk -v b="$1" 'BEGIN { printf "%.1f\n", b / 1048576 }'; }


echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $machine; $versions;" \
  "tmpfs ($(if [[ -n $mnt ]]; then echo private mount; else echo "$work"; fi));" \
  "$config; medians of $runs; ${elapsed} s"
if [[ ${#size_list[@]} -gt 0 ]]; then
  echo
  echo "Downtime (ms): r3map seal sent -> destination released (and the part" \
    "of it after the leecher has read the final set from the sealed view:" \
    "marking it missing and releasing the clients, as the leecher reports" \
    "it); nbdcopy: the whole copy; QEMU: writer stopped -> mirror completed."
  echo
  echo "| disk | writer MB/s | r3map | r3map: of which, final set read -> released | nbdcopy | QEMU mirror |"
  echo "|---|---:|---:|---:|---:|---:|"
  for s in "${size_list[@]}"; do
    for r in "${rate_list[@]}"; do
      echo "| $s | $r | $(fmt %.1f "$(median down r3map "$s" "$r")") |" \
        "$(fmt %.2f "$(awk -v v="$(median finus r3map "$s" "$r")" 'BEGIN { print v == "-" ? "-" : v / 1000 }')") |" \
        "$(fmt %.0f "$(median down nbdcopy "$s" "$r")") |" \
        "$(fmt %.1f "$(median down qemu "$s" "$r")") |"
    done
  done
  echo
  echo "Total time (s): r3map destination started -> every chunk local;" \
    "nbdcopy: the copy; QEMU: mirror started -> completed.  Ready: until the" \
    "destination caught up (r3map: every chunk local and converged; QEMU:" \
    "BLOCK_JOB_READY), when the writer is stopped."
  echo
  echo "| disk | writer MB/s | r3map | r3map ready | nbdcopy | QEMU mirror | QEMU ready | r3map / nbdcopy | r3map / QEMU |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for s in "${size_list[@]}"; do
    for r in "${rate_list[@]}"; do
      a=$(median total r3map "$s" "$r"); b=$(median total nbdcopy "$s" "$r")
      c=$(median total qemu "$s" "$r")
      echo "| $s | $r | $(fmt %.2f "$(awk -v v="$a" 'BEGIN { print v == "-" ? "-" : v / 1000 }')") |" \
        "$(fmt %.2f "$(awk -v v="$(median ready r3map "$s" "$r")" 'BEGIN { print v == "-" ? "-" : v / 1000 }')") |" \
        "$(fmt %.2f "$(awk -v v="$b" 'BEGIN { print v == "-" ? "-" : v / 1000 }')") |" \
        "$(fmt %.2f "$(awk -v v="$c" 'BEGIN { print v == "-" ? "-" : v / 1000 }')") |" \
        "$(fmt %.2f "$(awk -v v="$(median ready qemu "$s" "$r")" 'BEGIN { print v == "-" ? "-" : v / 1000 }')") |" \
        "$(ratio "$a" "$b") | $(ratio "$a" "$c") |"
    done
  done
  echo
  echo "Bytes moved (MiB read at the source; QEMU: the job's counter), and" \
    "r3map's final changed set (chunks changed between its last pre-copy" \
    "round and the seal, pulled after the switch-over):"
  echo
  echo "| disk | writer MB/s | r3map | r3map final set, chunks | r3map / (disk + final set) | nbdcopy | QEMU mirror | QEMU / disk |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for s in "${size_list[@]}"; do
    for r in "${rate_list[@]}"; do
      a=$(median bytes r3map "$s" "$r"); f=$(median final r3map "$s" "$r")
      c=$(median bytes qemu "$s" "$r")
      fb=$(awk -v f="$f" -v c="$chunk" 'BEGIN { print f == "-" ? "-" : f * c }')
      echo "| $s | $r | $(mib "$a") | $(fmt %.0f "$f") ($(mib1 "$fb") MiB) |" \
        "$(ratio "$a" "$(awk -v n="${bytes_of[$s]}" -v f="$fb" 'BEGIN { print f == "-" ? "-" : n + f }')") |" \
        "$(mib "$(median bytes nbdcopy "$s" "$r")") | $(mib "$c") |" \
        "$(ratio "$c" "${bytes_of[$s]}") |"
    done
  done
  echo
  echo "First 4 KiB read on the destination right after the switch-over (ms):" \
    "r3map: the chunk of the VM's last write, not yet local when the read" \
    "was an on-demand fetch (counted); the others: a local read."
  echo
  echo "| disk | writer MB/s | r3map | on-demand fetches | r3map pre-copy rounds | nbdcopy | QEMU mirror |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for s in "${size_list[@]}"; do
    for r in "${rate_list[@]}"; do
      echo "| $s | $r | $(fmt %.2f "$(median first r3map "$s" "$r")") |" \
        "$(sum ondemand r3map "$s" "$r") of $(count ondemand r3map "$s" "$r") |" \
        "$(fmt %.0f "$(median rounds r3map "$s" "$r")") |" \
        "$(fmt %.2f "$(median first nbdcopy "$s" "$r")") |" \
        "$(fmt %.2f "$(median first qemu "$s" "$r")") |"
    done
  done
fi

if [[ ${#scale_list[@]} -gt 0 ]]; then
  echo
  echo "The switch-over alone, against the disk's size: empty disks, no" \
    "background pull (pull-workers=0), writer at $scale_rate MB/s until" \
    "the VM stops; downtime and first read (an on-demand fetch) in ms:"
  echo
  echo "| disk | chunks | downtime | of which, final set read -> released | final set, chunks | pre-copy rounds | first read |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for s in "${scale_list[@]}"; do
    echo "| $s | $(( ${bytes_of[$s]} / chunk )) |" \
      "$(fmt %.1f "$(median down scale "$s" "$scale_rate")") |" \
      "$(fmt %.2f "$(awk -v v="$(median finus scale "$s" "$scale_rate")" 'BEGIN { print v == "-" ? "-" : v / 1000 }')") |" \
      "$(fmt %.0f "$(median final scale "$s" "$scale_rate")") |" \
      "$(fmt %.0f "$(median rounds scale "$s" "$scale_rate")") |" \
      "$(fmt %.2f "$(median first scale "$s" "$scale_rate")") |"
  done
fi

# ---------------------------------------------------------------- targets
if have_method r3map && [[ ${#size_list[@]} -gt 0 ]]; then
  echo
  echo "Targets (medians):"
  echo
  small=${size_list[0]} big=${size_list[0]}
  for s in "${size_list[@]}"; do
    (( ${bytes_of[$s]} < ${bytes_of[$small]} )) && small=$s
    (( ${bytes_of[$s]} > ${bytes_of[$big]} )) && big=$s
  done
  for r in "${rate_list[@]}"; do
    [[ $r == 10 ]] || continue
    line="- downtime <= 20 ms at 10 MB/s, independent of the disk size:"
    ok=yes
    for s in "${size_list[@]}"; do
      d=$(median down r3map "$s" 10)
      line+=" $s $(fmt %.1f "$d") ms;"
      awk -v d="$d" 'BEGIN { exit !(d != "-" && d <= 20) }' || ok=no
    done
    echo "$line $small -> $big: x$(ratio "$(median down r3map "$big" 10)" "$(median down r3map "$small" 10)"): $([[ $ok == yes ]] && echo met || echo MISSED)"
  done
  for s in "${size_list[@]}"; do
    for r in "${rate_list[@]}"; do
      a=$(median bytes r3map "$s" "$r"); f=$(median final r3map "$s" "$r")
      lim=$(awk -v n="${bytes_of[$s]}" -v f="$f" -v c="$chunk" 'BEGIN { print 1.1 * n + f * c }')
      t=$(median total r3map "$s" "$r"); p=$(median total nbdcopy "$s" "$r")
      echo "- $s, $r MB/s: bytes $(mib "$a") MiB <= 1.1 x disk + final set = $(mib "$lim") MiB:" \
        "$(awk -v a="$a" -v l="$lim" 'BEGIN { print (a != "-" && a <= l) ? "met" : "MISSED" }');" \
        "total $(ratio "$t" "$p") x plain copy <= 1.2:" \
        "$(awk -v t="$t" -v p="$p" 'BEGIN { print (t != "-" && p != "-" && t <= 1.2 * p) ? "met" : "MISSED" }')"
    done
  done
fi
