#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# bench-qemu-migrate.sh: live migration of a real QEMU guest with its
# disk, r3map against QEMU's own ways of moving a disk.
#
# Usage: bash bench/bench-qemu-migrate.sh [--help]      (after make)
#
# The guest is the test guest of qemu-tests/ (built by `make -C
# qemu-tests guest` if needed): 256 MiB of RAM, one vCPU, one virtio-blk
# disk of BENCH_SIZES, which holds random data, served by nbdkit
# r3map-dir.  It runs the checksummed writer (r3map-guest-io), writing
# blocks of 64 KiB at random places at each rate of BENCH_RATES (MiB/s;
# 0 is idle: the writer is paused during the migration and resumed once
# the guest runs on the destination).  Source and destination are two
# QEMU processes on this machine, migrating over a Unix socket.
#
# Methods (BENCH_METHODS), each run on a fresh source guest:
#
#   r3map    the source disk is nbdkit --filter=r3map-track r3map-dir;
#            the destination's is nbdkit --filter=r3map-pull r3map-dir
#            source=the seeder (precopy-interval BENCH_PRECOPY), started
#            with the destination QEMU.  QMP:
#              dst: (started with -incoming defer)
#                   migrate-incoming {"uri": "unix:MIG"}
#              src: migrate-set-capabilities pause-before-switchover, events
#                   migrate {"uri": "unix:MIG"}
#                   ... event MIGRATION status=pre-switchover
#              seal (the line "seal" on the seeder's control socket, as
#                   `r3map seal` sends it: the source QEMU has drained and
#                   flushed its disk before it pauses, so the seal is
#                   immediate)
#              src: migrate-continue {"state": "pre-switchover"}
#              dst: ... event RESUME
#            The destination's finalize (`r3map finalize`, started
#            with `migrate`) runs while QEMU sends the rest of the RAM and
#            the device state; a guest request that comes before it is
#            done waits for it (the longest write shows that).
#            Independent when `r3map status` says every chunk is local.
#            `migrate` is sent as soon as the destination QEMU listens:
#            the seal may come while the leecher still pulls the disk.
#   r3map-post    the same with precopy=off on the destination: the
#           leecher copies nothing before the seal (pure post-copy).
#   r3map-nice    the same as r3map with pull-nice=19 on the destination:
#            its background pull yields the CPUs to the QEMUs.
#   r3map-late    the same as r3map-post with pull-delay=BENCH_PULL_DELAY:
#            the background pull starts that long after finalize, once
#            the guest runs on the destination, so that nothing of the
#            disk's copy overlaps QEMU's migration.
#   r3map-late-nice  the same with pull-nice=19: the pull after the
#            switchover yields the CPUs to the guest.
#   r3map-wait    the same as r3map, but migrate-continue is sent only
#            once `r3map finalize` has returned (finalize inside QEMU's
#            downtime).
#   r3map-ready   the same as r3map, but `migrate` is sent once the
#            leecher has pulled every chunk once and its rounds converged (`r3map
#            status`: waiting for the seal, 100 %), as drive-mirror waits
#            for BLOCK_JOB_READY.
#   mirror   QEMU's drive-mirror as libvirt's --copy-storage-all does it;
#            the destination's disk is nbdkit r3map-dir (an empty one):
#              dst: nbd-server-start {"addr": {"type": "unix", ...}}
#                   nbd-server-add {"device": "vda", "writable": true}
#                   migrate-incoming
#              src: drive-mirror {"device": "vda", "job-id": "mirror0",
#                   "target": "nbd+unix:///vda?socket=...", "format": "raw",
#                   "sync": "full", "mode": "existing"}
#                   ... event BLOCK_JOB_READY
#                   migrate-set-capabilities pause-before-switchover, events
#                   migrate
#                   ... event MIGRATION status=pre-switchover
#                   block-job-cancel {"device": "mirror0"}
#                   ... event BLOCK_JOB_COMPLETED (a ready mirror, cancelled,
#                   completes: the target holds the source)
#                   migrate-continue
#              dst: ... event RESUME; nbd-server-stop
#            (libvirt cancels the mirror at pre-switchover too.)
#            Independent at the switchover.
#   backing  post-copy of the disk through a backing chain: the
#            destination's disk is a new qcow2 overlay (a local file)
#            whose backing file is the source's export (raw, over NBD):
#              qemu-img create -f qcow2 -F raw -b nbd+unix:///?socket=SRC
#              src: migrate-set-capabilities events; migrate
#              dst: ... event RESUME
#                   block-stream {"device": "vda", "job-id": "stream0"}
#                   ... event BLOCK_JOB_COMPLETED
#            Independent when the stream completes (it drops the backing).
#   shared   RAM only, both QEMUs on the same storage (the source's
#            nbdkit): the floor.
#              src: migrate-set-capabilities events; migrate
#              dst: ... event RESUME
#   shared-pause  the same with pause-before-switchover and an immediate
#            migrate-continue: what the pause alone costs (r3map and
#            mirror both use it).
#
# Every QEMU: -accel tcg (or what the tests' probe chose), -m 256,
# migrate-set-parameters max-bandwidth 10 GB/s (QEMU's default, 32 MiB/s,
# would make RAM the bottleneck), the other migration parameters at
# their defaults.  The virtio-blk device is given its geometry
# (cyls/heads/secs), so that QEMU reads nothing from the disk when it
# starts (see qemu-tests/qemu-functions.sh).
#
# Measured, each run (t0 = the start of the first destination process:
# the leecher, or the destination QEMU):
#
#   switchover    t0 until the guest runs on the destination (RESUME)
#   downtime      query-migrate's "downtime" on the source (ms)
#   QEMU's steps  from the timestamps of QEMU's events (µs): the
#                 source's STOP, MIGRATION pre-switchover and completed,
#                 the destination's RESUME.  STOP → completed is the
#                 downtime again, finer; STOP → RESUME is how long the
#                 guest is stopped, the destination's load included
#   longest write the guest's longest write from t0 until BENCH_AFTER
#                 seconds after it resumed (the writer's `latency`
#                 command): a disk that stalls after resuming shows here,
#                 as would one slowed down during the copy
#   independence  t0 until the destination no longer needs the source
#                 (r3map: the leecher's complete_ms, every chunk local
#                 after finalize)
#   disk bytes    bytes read from the source's nbdkit (its stats filter),
#                 by the leecher, the mirror, or the destination's backing
#                 file; the guest itself reads nothing
#   RAM bytes     query-migrate's ram.transferred
#   r3map's steps pause-before-switchover → seal, → migrate-continue;
#                 seal → the leecher released its clients; and that
#                 release against the destination's RESUME (its
#                 timestamp): > 0 when the guest ran before its disk
#                 was released
#
# The medians over BENCH_REPS runs go to stdout as markdown tables, with
# the issue's targets checked; every run's figures go to stderr and, as
# JSON lines, to BENCH_DIR/results.jsonl (kept).
#
# Environment:
#   BENCH_SIZES="1G 4G"       disk sizes
#   BENCH_RATES="0 10 50"     writer rates, MiB/s (0: idle)
#   BENCH_METHODS="shared shared-pause r3map r3map-nice r3map-post r3map-late r3map-late-nice r3map-wait r3map-ready mirror backing"
#   BENCH_REPS=3              runs of each; tables show medians
#   BENCH_PRECOPY=50ms        r3map-pull precopy-interval
#   BENCH_PULL_DELAY=250ms    r3map-pull pull-delay of r3map-late
#   BENCH_WARMUP=3            seconds the writer writes before t0
#   BENCH_AFTER=3             seconds measured after the switchover
#   BENCH_MEM_WARM=4G         memory touched and freed just before each
#                             run's t0, so that every run's destination
#                             QEMU meets the same free memory (0: off;
#                             see warm_memory)
#   BENCH_DIR=/var/tmp        where the disks live (about 2.5x the
#                             largest size is needed)
#   BENCH_VERIFY=0            1: after each run the guest verifies every
#                             block it wrote (slow for large disks)
#   BENCH_RESULTS=FILE        run nothing: the tables from an earlier
#                             run's results.jsonl (with the same
#                             BENCH_SIZES, BENCH_RATES, BENCH_METHODS)
#
# Processes are bounded in time and killed, and every file removed, at
# the end of each run and on any failure (results.jsonl stays).

set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in
    -h|--help) sed -n '4,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "usage: bash bench/bench-qemu-migrate.sh [--help]" >&2; exit 2 ;;
esac
for f in plugins/dir/.libs/nbdkit-r3map-dir-plugin.so \
         filters/track/.libs/nbdkit-r3map-track-filter.so \
         filters/pull/.libs/nbdkit-r3map-pull-filter.so tools/r3map \
         qemu-tests/r3map-guest-io; do
    [ -e "$top/$f" ] || { echo "bench: $top/$f: build r3map first (make)" >&2; exit 1; }
done
for c in nbdkit nbdcopy qemu-system-x86_64 qemu-img; do
    command -v $c >/dev/null || { echo "bench: needs $c" >&2; exit 1; }
done
[ -f "$top/qemu-tests/guest/guest.env" ] || make -C "$top/qemu-tests" guest >&2

exec /usr/bin/python3 - "$top" <<'PY'
import json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

top = sys.argv[1]
sys.path.insert(0, os.path.join(top, "qemu-tests"))
from qmp import QMP, QMPError  # noqa: E402

E = os.environ
SIZES = E.get("BENCH_SIZES", "1G 4G").split()
RATES = [int(r) for r in E.get("BENCH_RATES", "0 10 50").split()]
METHODS = E.get("BENCH_METHODS", "shared shared-pause r3map r3map-nice r3map-post r3map-late r3map-late-nice r3map-wait r3map-ready mirror backing").split()
R3MAP_METHODS = ("r3map", "r3map-nice", "r3map-post", "r3map-late", "r3map-late-nice",
                 "r3map-wait", "r3map-ready")
REPS = int(E.get("BENCH_REPS", "3"))
PRECOPY = E.get("BENCH_PRECOPY", "50ms")
PULL_DELAY = E.get("BENCH_PULL_DELAY", "250ms")
WARMUP = float(E.get("BENCH_WARMUP", "3"))
AFTER = float(E.get("BENCH_AFTER", "3"))
MEM_WARM = E.get("BENCH_MEM_WARM", "4G")
VERIFY = E.get("BENCH_VERIFY", "0") == "1"
BLOCK = 65536

PLUGIN = top + "/plugins/dir/.libs/nbdkit-r3map-dir-plugin.so"
TRACK = top + "/filters/track/.libs/nbdkit-r3map-track-filter.so"
PULL = top + "/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
R3MAP = top + "/tools/r3map"
GEOMETRY = "cyls=16383,heads=16,secs=63"

genv = {}
for line in open(top + "/qemu-tests/guest/guest.env"):
    k, v = line.strip().split("=", 1)
    genv[k] = v
accel = E.get("R3MAP_QEMU_ACCEL")
if not accel:
    try:
        accel = open(top + "/qemu-tests/guest/accel").read().split()[0]
    except OSError:
        accel = "tcg"

if E.get("BENCH_RESULTS"):
    work = None
    results_path = E["BENCH_RESULTS"]
else:
    work = tempfile.mkdtemp(prefix="r3map-bench-qemu.", dir=E.get("BENCH_DIR", "/var/tmp"))
    results_path = os.path.join(work, "results.jsonl")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def size_bytes(s):
    m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * m[s[-1]] if s[-1] in m else int(s)


class Fail(Exception):
    pass


def warm_memory():
    """Touch MEM_WARM of memory in a child process, which then exits.

    The destination QEMU receives the guest's RAM into transparent huge
    pages, zeroing 2 MiB at each first touch.  On this machine (itself a
    VM that gives free memory back to its host) that zeroing is several
    times slower on memory not touched lately: QEMU's RAM migration then
    takes 300-500 ms instead of 50-150, and the downtime grows with it.
    Which of the two a run got depended on the run before it (after one
    that freed a pulled disk's tmpfs pages, nearly always the fast one),
    not on its method.  Every run now starts from memory just touched
    and freed: 1 GiB was not enough to make the fast mode certain, 4 GiB
    was."""
    if size_bytes(MEM_WARM) == 0:
        return
    subprocess.run([sys.executable, "-c",
                    "import sys; n = int(sys.argv[1]); b = bytearray(n); "
                    "b[::4096] = b'\\1' * len(range(0, n, 4096))",
                    str(size_bytes(MEM_WARM))], check=True, timeout=120)


def wait_for(what, pred, timeout, interval=0.005):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Fail("timed out (%g s) waiting for %s" % (timeout, what))
        time.sleep(interval)


# --- Processes: all bounded, all cleaned up ---------------------------------

class Run:
    """One migration: its directory, processes and QMP connections."""

    def __init__(self, name):
        self.dir = os.path.join(work, name)
        os.mkdir(self.dir)
        self.procs = []          # (name, Popen), stopped in reverse order
        self.qmps = []

    def path(self, f):
        return os.path.join(self.dir, f)

    def spawn(self, name, argv):
        out = open(self.path(name + ".log"), "wb")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        self.procs.append((name, p))
        return p

    def nbdkit(self, name, args, stats=False):
        sock = self.path(name + ".sock")
        argv = ["nbdkit", "-f", "-U", sock, "-P", self.path(name + ".pid")]
        if stats:
            argv += ["--filter=stats"]
        argv += args
        if stats:
            argv += ["statsfile=" + self.path(name + ".stats")]
        p = self.spawn(name, argv)
        wait_for("nbdkit %s" % name,
                 lambda: p.poll() is not None or os.path.exists(self.path(name + ".pid")),
                 120)
        if p.poll() is not None:
            raise Fail("nbdkit %s exited: %s" % (name, open(self.path(name + ".log")).read()))
        return sock

    def stop(self, name, timeout=60):
        for n, p in self.procs:
            if n == name and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def qemu(self, name, cmdline, disk_args, incoming=False):
        argv = ["qemu-system-x86_64", "-name", name, "-accel", accel,
                "-m", "256", "-smp", "1", "-nodefaults", "-display", "none",
                "-no-reboot", "-kernel", genv["GUEST_KERNEL"],
                "-initrd", genv["GUEST_INITRD"],
                "-append", "console=ttyS0 quiet panic=-1 no_timer_check " + cmdline,
                "-chardev", "socket,id=ser0,path=%s,server=on,wait=off,logfile=%s"
                % (self.path(name + ".serial.sock"), self.path(name + ".serial")),
                "-serial", "chardev:ser0",
                "-qmp", "unix:%s,server=on,wait=off" % self.path(name + ".qmp")]
        argv += disk_args
        if incoming:
            argv += ["-incoming", "defer"]
        self.spawn(name, argv)
        q = QMP(self.path(name + ".qmp"), 120)
        self.qmps.append(q)
        return q

    def console(self, name):
        try:
            with open(self.path(name + ".serial"), "rb") as f:
                return f.read().decode("utf-8", "replace").replace("\r", "")
        except OSError:
            return ""

    def type(self, name, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.path(name + ".serial.sock"))
        s.sendall(line.encode() + b"\n")
        s.close()

    def wait_line(self, name, regex, timeout, after=0):
        r = re.compile(regex, re.M)

        def found():
            return r.search(self.console(name), after)
        return wait_for("console %s: %s" % (name, regex), found, timeout, 0.02)

    def close(self, keep=False):
        for q in self.qmps:
            try:
                q.close()
            except OSError:
                pass
        for n, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 20
        for n, p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if keep:
            # The logs of a failed run, for whoever reads results.jsonl.
            kept = self.dir + ".failed"
            os.mkdir(kept)
            for f in os.listdir(self.dir):
                if f.endswith((".log", ".serial", ".status")):
                    shutil.copy(os.path.join(self.dir, f), kept)
        shutil.rmtree(self.dir, ignore_errors=True)


def blockdev(sock, fmt=None):
    if fmt == "qcow2":
        return ["-blockdev", json.dumps({"driver": "qcow2", "node-name": "vda",
                                         "file": {"driver": "file", "filename": sock}}),
                "-device", "virtio-blk-pci,drive=vda," + GEOMETRY]
    return ["-blockdev", "driver=nbd,server.type=unix,server.path=%s,"
            "node-name=vda,cache.direct=on" % sock,
            "-device", "virtio-blk-pci,drive=vda," + GEOMETRY]


def stats_read_bytes(path):
    """Bytes read, from nbdkit's stats filter output."""
    units = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
    try:
        for line in open(path):
            m = re.match(r"read: \d+ ops, [0-9.]+ s, ([0-9.]+) (\w+)", line)
            if m:
                return int(float(m.group(1)) * units[m.group(2)])
    except OSError:
        return None
    return 0


def control(path, line):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    s.sendall(line.encode() + b"\n")
    reply = s.makefile().readline().strip()
    s.close()
    return reply


def r3map_status(path):
    out = subprocess.run([R3MAP, "status", "--json", path], capture_output=True,
                         timeout=30)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)


def event_ms(q, name, status=None, after=0.0):
    """QEMU's realtime timestamp (ms) of the first event NAME (with
    data.status STATUS) seen on Q at or after AFTER, or None."""
    for ev in q.seen:
        ts = ev.get("timestamp", {})
        t = ts.get("seconds", 0) * 1000 + ts.get("microseconds", 0) / 1000
        if ev.get("event") == name and t >= after and \
                (status is None or ev.get("data", {}).get("status") == status):
            return t
    return None


def event_steps(r, qs, qd, t_migrate_rt):
    """The migration's steps from QEMU's own event timestamps, to the
    microsecond (query-migrate's downtime is in whole ms): the source's
    STOP, its pause at pre-switchover, its completion, and the
    destination's RESUME."""
    stop = event_ms(qs, "STOP", after=t_migrate_rt)
    pause = event_ms(qs, "MIGRATION", "pre-switchover", t_migrate_rt)
    done = event_ms(qs, "MIGRATION", "completed", t_migrate_rt)
    run = event_ms(qd, "RESUME")
    if stop is not None and done is not None:
        r["ev_downtime_ms"] = done - stop
    if stop is not None and pause is not None:
        r["ev_stop_to_pause_ms"] = pause - stop
    if pause is not None and done is not None:
        r["ev_pause_to_done_ms"] = done - pause
    if done is not None and run is not None:
        r["ev_done_to_resume_ms"] = run - done
    if stop is not None and run is not None:
        r["guest_stopped_ms"] = run - stop


def latency(run, name, timeout=60):
    """Send `latency`, return (longest write ms, writes so far)."""
    n = len(run.console(name))
    run.type(name, "latency")
    m = run.wait_line(name, r"writer: longest write ([0-9.]+) ms \(seq \d+\) of (\d+) writes",
                      timeout, n)
    return float(m.group(1)), int(m.group(2))


def migrate_params(q, pause):
    q.cmd("migrate-set-capabilities", capabilities=[
        {"capability": "pause-before-switchover", "state": pause},
        {"capability": "events", "state": True}])
    q.cmd("migrate-set-parameters", **{"max-bandwidth": 10 * 1000 ** 3})


# --- One run ----------------------------------------------------------------

src_dirs = {}


def source_disk(size):
    """A directory of random chunk files, filled once per size."""
    if size in src_dirs:
        return src_dirs[size]
    d = os.path.join(work, "disk-" + size)
    os.mkdir(d)
    log("bench: filling a %s source disk with random data" % size)
    subprocess.run(["nbdkit", "-U", "-", PLUGIN, d, "size=" + size, "--run",
                    "head -c %d /dev/urandom | nbdcopy - \"$uri\"" % size_bytes(size)],
                   check=True, timeout=3600)
    os.sync()
    src_dirs[size] = d
    return d


def one_run(method, size, rate, rep):
    # Each run starts with no dirty page cache left by the one before
    # (a pulled 4 GiB disk is still being written back long after its
    # run, and would slow down the next one's fsyncs and I/O).
    os.sync()
    run = Run("%s-%s-%d-%d" % (method, size, rate, rep))
    r = {"method": method, "size": size, "rate": rate, "rep": rep}
    ok = False
    try:
        r = measure(run, r, method, size, rate)
        ok = True
        return r
    except Exception as e:
        # A guest kernel that crashed explains the failure better than
        # the step that noticed it.
        for name in ("d", "s"):
            m = re.search(r"^.*(Kernel panic|BUG:|Oops).*$", run.console(name), re.M)
            if m:
                raise Fail("the guest's kernel crashed on the %s: %s (%s)" % (
                    "destination" if name == "d" else "source", m.group(0).strip(), e))
        raise
    finally:
        run.close(keep=not ok)


def measure(run, r, method, size, rate):
    nbytes = size_bytes(size)
    srcdir = source_disk(size)
    cmdline = ("r3map.work=writer r3map.block=%d r3map.rate=%d r3map.report=1"
               % (BLOCK, rate if rate else 1))
    mig = "unix:" + run.path("mig.sock")

    # The source: its storage, then the guest, writing.
    r3 = method in R3MAP_METHODS
    args = ([] if not r3 else ["--filter=" + TRACK]) + \
        [PLUGIN, srcdir, "size=" + size]
    if r3:
        args.append("track-control=" + run.path("src.ctl"))
    src_sock = run.nbdkit("src", args, stats=True)
    qs = run.qemu("s", cmdline, blockdev(src_sock))
    run.wait_line("s", r"writer: run [0-9a-f]+", 120)
    time.sleep(WARMUP)
    if rate == 0:
        run.type("s", "pause")
        run.wait_line("s", r"writer: paused at seq", 30)
    latency(run, "s")                       # from now on
    migrate_params(qs, r3 or method in ("mirror", "shared-pause"))
    if r3:
        w0 = int(re.search(r"writes=(\d+)", control(run.path("src.ctl"), "status")).group(1))

    # The destination.
    warm_memory()
    t0 = time.monotonic()
    t0_rt = time.time() * 1000
    finalize = None
    if r3:
        os.mkdir(run.path("dst"))
        dst_sock = run.nbdkit("dst", [
            "--filter=" + PULL, PLUGIN, run.path("dst"), "size=" + size,
            "source=nbd+unix:///?socket=" + src_sock,
            "status=" + run.path("dst.status"), "precopy-interval=" + PRECOPY] +
            (["precopy=off"] if method in ("r3map-post", "r3map-late", "r3map-late-nice") else []) +
            (["pull-delay=" + PULL_DELAY] if method in ("r3map-late", "r3map-late-nice") else []) +
            (["pull-nice=19"] if method in ("r3map-nice", "r3map-late-nice") else []))
        r["dst_disk_ms"] = (time.monotonic() - t0) * 1000
        qd = run.qemu("d", cmdline, blockdev(dst_sock), incoming=True)
    elif method == "mirror":
        os.mkdir(run.path("dst"))
        dst_sock = run.nbdkit("dst", [PLUGIN, run.path("dst"), "size=" + size])
        r["dst_disk_ms"] = (time.monotonic() - t0) * 1000
        qd = run.qemu("d", cmdline, blockdev(dst_sock), incoming=True)
        qd.cmd("nbd-server-start", addr={"type": "unix",
                                         "data": {"path": run.path("dnbd.sock")}})
        qd.cmd("nbd-server-add", device="vda", writable=True)
    elif method == "backing":
        overlay = run.path("overlay.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                        "-b", "nbd+unix:///?socket=" + src_sock, overlay, size],
                       check=True, timeout=60)
        r["dst_disk_ms"] = (time.monotonic() - t0) * 1000
        qd = run.qemu("d", cmdline, blockdev(overlay, "qcow2"), incoming=True)
    else:
        qd = run.qemu("d", cmdline, blockdev(src_sock), incoming=True)
    qd.cmd("migrate-incoming", uri=mig)

    def start_finalize():
        # The leecher published its status before nbdkit wrote its pid
        # file; finalize waits on it.
        return subprocess.Popen([R3MAP, "finalize", "--timeout=30m",
                                 run.path("dst.status")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if method == "r3map-ready":
        def ready():
            st = r3map_status(run.path("dst.status")) or {}
            return st.get("phase") == "waiting for the seal" and \
                st.get("chunks_local") == st.get("chunks_total")
        wait_for("the leecher's first pass", ready, 3600, 0.05)
        r["leecher_ready_s"] = time.monotonic() - t0
    if method == "mirror":
        qs.cmd("drive-mirror", device="vda", **{"job-id": "mirror0"},
               target="nbd+unix:///vda?socket=" + run.path("dnbd.sock"),
               format="raw", sync="full", mode="existing")
        qs.wait_event("BLOCK_JOB_READY", {"device": "mirror0"}, timeout=3600)
        r["mirror_ready_s"] = time.monotonic() - t0

    # Migrate.
    t_migrate = time.monotonic()
    t_migrate_rt = time.time() * 1000
    r["t0_to_migrate_ms"] = (t_migrate - t0) * 1000
    qs.cmd("migrate", uri=mig)
    if r3:
        finalize = start_finalize()
    if r3 or method in ("mirror", "shared-pause"):
        qs.wait_event("MIGRATION", {"status": "pre-switchover"}, timeout=600)
        t_pause = time.monotonic()
        def finalized():
            try:
                out, _ = finalize.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                finalize.kill()
                raise Fail("r3map finalize did not return")
            if finalize.returncode != 0:
                raise Fail("r3map finalize: %s" % out.decode())
            m = re.search(r"(\d+) chunks changed at the seal", out.decode())
            r["final_chunks"] = int(m.group(1)) if m else None
        if r3:
            reply = control(run.path("src.ctl"), "seal")
            t_seal = time.monotonic()
            t_seal_rt = time.time() * 1000
            r["seal_ms"] = (t_seal - t_pause) * 1000
            r["sealed"] = reply
            if method == "r3map-wait":
                finalized()
        elif method == "mirror":
            qs.cmd("block-job-cancel", device="mirror0")
            ev = qs.wait_event("BLOCK_JOB_COMPLETED", {"device": "mirror0"}, timeout=600)
            r["mirror_job_bytes"] = ev["data"].get("len")
            r["mirror_cancel_ms"] = (time.monotonic() - t_pause) * 1000
        t_cont = time.monotonic()
        qs.cmd("migrate-continue", state="pre-switchover")
        r["pause_to_continue_ms"] = (t_cont - t_pause) * 1000
    resume = qd.wait_event("RESUME", timeout=600)
    t_run = time.monotonic()
    if r3:
        # Asked only now: before, the questions (a subprocess for the
        # status) would take CPU from the QEMUs during the downtime.
        # The sealed source takes no more writes.
        r["written_chunks"] = int(re.search(r"writes=(\d+)", control(
            run.path("src.ctl"), "status")).group(1)) - w0
        # How much the leecher held at the switchover (after the final
        # set was made missing again).
        st = r3map_status(run.path("dst.status")) or {}
        r["local_at_switchover"] = st.get("chunks_local", 0) / max(1, st.get("chunks_total", 1))
        if method != "r3map-wait":
            finalized()
        # The leecher's release against QEMU's RESUME, both on the
        # realtime clock: > 0 when the destination's guest ran before
        # its disk was released (its requests waited meanwhile).
        ts = resume.get("timestamp", {})
        fin = (r3map_status(run.path("dst.status")) or {}).get("leech_finalized_ms")
        if fin:
            r["finalize_ms"] = fin - t_seal_rt
        if fin and "seconds" in ts:
            r["released_after_resume_ms"] = fin - (ts["seconds"] * 1000 + ts["microseconds"] / 1000)
    info = qs.poll("query-migrate", "status", "completed", fail=("failed", "cancelled"))
    if method == "mirror":
        qd.cmd("nbd-server-stop")
    if method == "backing":
        qd.cmd("block-stream", device="vda", **{"job-id": "stream0"})
    if rate == 0:
        run.type("d", "resume")
    r["switchover_s"] = t_run - t0
    r["migrate_to_run_s"] = t_run - t_migrate
    r["downtime_ms"] = info.get("downtime")
    r["ram_bytes"] = info.get("ram", {}).get("transferred")
    r["migration_total_ms"] = info.get("total-time")
    event_steps(r, qs, qd, t_migrate_rt)

    # The guest on the destination, measured for AFTER seconds.
    time.sleep(AFTER)
    lat, writes = latency(run, "d")
    r["longest_write_ms"] = lat
    r["guest_writes"] = writes
    m = re.findall(r"writer: seq \d+ written [0-9.]+ MiB at ([0-9.]+) MiB/s",
                   run.console("s"))
    r["src_rate_mibs"] = float(statistics.median(float(x) for x in m[1:])) if len(m) > 1 else None

    # Until the destination no longer needs the source.
    if r3:
        def complete():
            s = r3map_status(run.path("dst.status"))
            return s if s and s.get("complete_ms") else None
        s = wait_for("every chunk local", complete, 3600, 0.02)
        # The leecher dates it (complete_ms): the pull may end while
        # the guest is measured above.
        r["independent_s"] = (s["complete_ms"] - t0_rt) / 1000
        r["pulled_bytes"] = s["bytes_pulled"]
    elif method == "mirror":
        r["independent_s"] = r["switchover_s"]
    elif method == "backing":
        qd.wait_event("BLOCK_JOB_COMPLETED", {"device": "stream0"}, timeout=3600)
        r["independent_s"] = time.monotonic() - t0
    else:
        r["independent_s"] = None

    if VERIFY:
        n = len(run.console("d"))
        run.type("d", "verify")
        m = run.wait_line("d", r"^R3MAP-RESULT: (PASS|FAIL) writer-verify.*", 3600, n)
        r["verify"] = m.group(0)

    # The source goes: its QEMU, then its storage (the stats are written
    # when nbdkit exits).
    try:
        qs.cmd("quit")
    except (QMPError, OSError):
        pass
    run.stop("s")
    if method != "shared" and method != "shared-pause":
        run.stop("src")
        r["disk_bytes"] = stats_read_bytes(run.path("src.stats"))
    else:
        r["disk_bytes"] = 0
    return r


# --- Main -------------------------------------------------------------------

def stop_all(sig, frame):
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, stop_all)
results = []
if E.get("BENCH_RESULTS"):
    # The tables again, from an earlier run's raw figures.
    with open(E["BENCH_RESULTS"]) as f:
        results = [json.loads(line) for line in f if line.strip()]
    REPS = 0
else:
    log("bench: %s, guest %s (%s), accel %s, in %s" % (
        time.strftime("%Y-%m-%d %H:%M"), genv["GUEST_KVER"], genv["GUEST_KERNEL_KIND"],
        accel, work))
try:
    for rep in range(1, REPS + 1):
        for size in SIZES:
            for rate in RATES:
                # Alternate the order of the methods from one repetition
                # to the next: the machine's load drifts.
                order = METHODS if rep % 2 else list(reversed(METHODS))
                for method in order:
                    t = time.monotonic()
                    try:
                        r = one_run(method, size, rate, rep)
                    except (Fail, QMPError, OSError, subprocess.SubprocessError) as e:
                        r = {"method": method, "size": size, "rate": rate, "rep": rep,
                             "error": str(e)}
                    r["wall_s"] = time.monotonic() - t
                    results.append(r)
                    log(json.dumps(r))
                    with open(results_path, "a") as f:
                        f.write(json.dumps(r) + "\n")
except KeyboardInterrupt:
    log("bench: interrupted")
finally:
    for d in src_dirs.values():
        shutil.rmtree(d, ignore_errors=True)


def med(rows, key):
    v = [x[key] for x in rows if x.get(key) is not None]
    return statistics.median(v) if v else None


def fmt(v, f="%.2f"):
    return "—" if v is None else f % v


def ok_rows(method, size, rate):
    return [x for x in results if (x["method"], x["size"], x["rate"]) ==
            (method, size, rate) and "error" not in x]


print("| disk | writer | method | switchover s | downtime ms | longest write ms "
      "| independent s | disk MiB | RAM MiB | runs |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for size in SIZES:
    for rate in RATES:
        for method in METHODS:
            rows = ok_rows(method, size, rate)
            errs = len([x for x in results if (x["method"], x["size"], x["rate"]) ==
                        (method, size, rate) and "error" in x])
            db = med(rows, "disk_bytes")
            rb = med(rows, "ram_bytes")
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d%s |" % (
                size, "idle" if rate == 0 else "%d MiB/s (%s)" % (rate, fmt(med(rows, "src_rate_mibs"), "%.0f")),
                method, fmt(med(rows, "switchover_s")), fmt(med(rows, "downtime_ms"), "%.0f"),
                fmt(med(rows, "longest_write_ms"), "%.0f"), fmt(med(rows, "independent_s")),
                fmt(db / 2 ** 20 if db is not None else None, "%.0f"),
                fmt(rb / 2 ** 20 if rb is not None else None, "%.0f"),
                len(rows), " (%d failed)" % errs if errs else ""))

# The issue's targets, from the medians.
print()
print("| disk | writer | method | switchover − floor s | downtime − floor ms "
      "| longest write − floor ms | disk bytes / (1.05 size + written) "
      "| independence / mirror's |")
print("|---|---|---|---:|---:|---:|---:|---:|")
for size in SIZES:
  for rate in RATES:
    for r3m in R3MAP_METHODS:
        r3, fl, mi = (ok_rows(m, size, rate) for m in (r3m, "shared", "mirror"))
        if not r3:
            continue

        def diff(a, b, k, scale=1):
            x, y = med(a, k), med(b, k)
            return None if x is None or y is None else (x - y) * scale
        ratio = [x["disk_bytes"] / (1.05 * size_bytes(size) + BLOCK * x.get("written_chunks", 0))
                 for x in r3 if x.get("disk_bytes")]
        ind = None
        if mi and med(r3, "independent_s") and med(mi, "independent_s"):
            ind = med(r3, "independent_s") / med(mi, "independent_s")
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            size, "idle" if rate == 0 else "%d MiB/s" % rate, r3m,
            fmt(diff(r3, fl, "switchover_s"), "%+.2f"), fmt(diff(r3, fl, "downtime_ms"), "%+.0f"),
            fmt(diff(r3, fl, "longest_write_ms"), "%+.0f"),
            fmt(statistics.median(ratio) if ratio else None), fmt(ind)))

# The same targets, paired: the methods of one repetition run one after
# the other (in alternating order), so the difference within a
# repetition leaves out much of the machine's drift between them.
def rep_of(rows):
    return {x["rep"]: x for x in rows}


def paired(a, b, key, scale=1):
    """Per repetition, A's KEY minus B's: the median, the range and the
    list (for counting against a target)."""
    ra, rb = rep_of(a), rep_of(b)
    d = sorted((ra[k][key] - rb[k][key]) * scale for k in ra
               if k in rb and ra[k].get(key) is not None and rb[k].get(key) is not None)
    return d


def fmt_paired(d, f, target):
    if not d:
        return "—"
    return "%s (%s … %s), %d of %d within %s" % (
        f % statistics.median(d), f % d[0], f % d[-1],
        len([x for x in d if x <= target]), len(d), f % target)


print()
print("| disk | writer | method | switchover − floor s, paired: median (range) "
      "| downtime − floor ms, paired: median (range) "
      "| guest stopped − floor ms, paired: median (range) |")
print("|---|---|---|---|---|---|")
for size in SIZES:
    for rate in RATES:
        for r3m in R3MAP_METHODS:
            r3, fl = ok_rows(r3m, size, rate), ok_rows("shared", size, rate)
            if not r3 or not fl:
                continue
            print("| %s | %s | %s | %s | %s | %s |" % (
                size, "idle" if rate == 0 else "%d MiB/s" % rate, r3m,
                fmt_paired(paired(r3, fl, "switchover_s"), "%+.2f", 0.1),
                fmt_paired(paired(r3, fl, "downtime_ms"), "%+.0f", 5),
                fmt_paired(paired(r3, fl, "guest_stopped_ms"), "%+.1f", 5)))

# QEMU's RAM migration has two speeds here: done in one pass
# (query-migrate total-time about 50-150 ms) or after several of its
# 100 ms bandwidth windows (200-700 ms), with a longer downtime, when
# the destination zeroes huge pages slowly (see warm_memory).  A run
# that still gets the slow one shows here, apart from the others.
SLOW_MS = 150


def by_mode(rows, key, slow):
    v = [x[key] for x in rows if x.get(key) is not None and
         x.get("migration_total_ms") is not None and
         (x["migration_total_ms"] > SLOW_MS) == slow]
    return (statistics.median(v), len(v)) if v else (None, 0)


def table(head, methods, cols):
    """One row per disk, writer and method that has runs: COLS are
    functions of the runs, one per HEAD."""
    print()
    print("| disk | writer | method | %s | runs |" % " | ".join(head))
    print("|---|---|---|" + "---:|" * (len(head) + 1))
    for size in SIZES:
        for rate in RATES:
            for m in methods:
                rows = ok_rows(m, size, rate)
                if rows:
                    print("| %s | %s | %s | %s | %d |" % (
                        size, "idle" if rate == 0 else "%d MiB/s" % rate, m,
                        " | ".join(f(rows) for f in cols), len(rows)))


def col(key, f, scale=1):
    return lambda rows: fmt(None if med(rows, key) is None else med(rows, key) * scale, f)


# The methods within each of QEMU's two modes.
table(["runs in QEMU's slow mode", "switchover s, one pass", "switchover s, slow",
       "downtime ms, one pass", "downtime ms, slow"], METHODS,
      [lambda rows: "%d" % by_mode(rows, "switchover_s", True)[1],
       lambda rows: fmt(by_mode(rows, "switchover_s", False)[0]),
       lambda rows: fmt(by_mode(rows, "switchover_s", True)[0]),
       lambda rows: fmt(by_mode(rows, "downtime_ms", False)[0], "%.0f"),
       lambda rows: fmt(by_mode(rows, "downtime_ms", True)[0], "%.0f")])

# r3map's switch-over, step by step.
table(["pause → seal ms", "pause → continue ms", "seal → released ms",
       "released − RESUME ms"], R3MAP_METHODS,
      [col("seal_ms", "%.1f"), col("pause_to_continue_ms", "%.1f"),
       col("finalize_ms", "%.1f"), col("released_after_resume_ms", "%+.0f")])

# The downtime from QEMU's event timestamps: the source's STOP, its
# pause at pre-switchover (methods that ask for it), its completion,
# and the destination's RESUME.  STOP -> completed is query-migrate's
# downtime to the microsecond; STOP -> RESUME is how long the guest is
# stopped, the destination's load included.
table(["STOP → pre-switchover ms", "pre-switchover → completed ms",
       "STOP → completed ms", "completed → RESUME ms", "STOP → RESUME ms"], METHODS,
      [col("ev_stop_to_pause_ms", "%.2f"), col("ev_pause_to_done_ms", "%.2f"),
       col("ev_downtime_ms", "%.2f"), col("ev_done_to_resume_ms", "%.2f"),
       col("guest_stopped_ms", "%.2f")])

# Where the switchover's time goes: setting up the destination (its
# disk, its QEMU, for r3map the leecher's first exchanges) until
# `migrate`, then QEMU's migration itself.
table(["t0 → destination's disk ready ms", "t0 → migrate ms",
       "migrate → RESUME s", "query-migrate total-time ms"], METHODS,
      [col("dst_disk_ms", "%.0f"), col("t0_to_migrate_ms", "%.0f"),
       col("migrate_to_run_s", "%.2f"), col("migration_total_ms", "%.0f")])
print()
print("Raw figures: %s" % results_path)
PY
