# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Sourced by the QEMU tests after ../tests/functions.sh: the test guest,
# QEMU processes and long-running nbdkit servers, each bounded in time
# and stopped by the test's exit trap whatever happens.
#
#   requires_guest           build or reuse the guest (skips the test,
#                            saying why, when it cannot be built), pick
#                            the accelerator; sets GUEST_KERNEL,
#                            GUEST_INITRD, GUEST_ACCEL
#   nbdkit_start NAME ARGS...  nbdkit -U $tmp/NAME.sock ARGS in the
#                            background, ready when it returns
#   nbdkit_stop NAME         stop it and wait until it has exited
#   guest_start NAME CMDLINE QEMU-ARGS...
#                            start a guest; CMDLINE is added to the
#                            kernel command line (r3map.work=... etc.,
#                            see guest-init); the serial console goes
#                            to $tmp/NAME.serial and takes input on
#                            $tmp/NAME.serial.sock; QMP on $tmp/NAME.qmp
#   guest_wait NAME          wait for the guest to power off; fails
#                            unless QEMU exited 0 in time
#   guest_run NAME CMDLINE QEMU-ARGS...   both
#   guest_stop NAME          quit QEMU (QMP, then signals)
#   guest_passed NAME WHAT   the guest printed "R3MAP-RESULT: PASS WHAT"
#                            and no FAIL line
#   guest_failed NAME WHAT   it printed "R3MAP-RESULT: FAIL WHAT"
#   guest_wait_line NAME ERE [SECONDS]   wait for a console line
#   guest_serial NAME LINE...  type lines on the guest's console
#   guest_qmp NAME STEP...   qmp.py steps on the guest's QMP socket
#   disk_nbd_old SOCK / disk_nbd_uri SOCK / disk_blockdev SOCK ID
#                            the QEMU arguments for an NBD disk, in
#                            each syntax
#   disk_dev old|uri|blockdev SOCK ID
#                            the same, the virtio-blk device given with
#                            its geometry: then QEMU reads nothing from
#                            the disk when it starts (see below)
#
# Live migration (test-live-migrate*.sh):
#   guest_incoming NAME CMDLINE QEMU-ARGS...
#                            a destination QEMU (-incoming defer) listening
#                            for the migration on $tmp/NAME.mig; CMDLINE
#                            and QEMU-ARGS as the source's, but for the
#                            disks
#   migrate_prepare NAME [BYTES/S]  on a source: pause-before-switchover
#                            and events on, the bandwidth limit (default:
#                            none worth the name)
#   guest_gone NAME SECONDS  wait for the QEMU to exit, whatever its
#                            status (a cancelled destination exits 1)
#   nbdkit_running NAME      its nbdkit still runs
#   track_status CONTROL     the "status" line of an r3map-track control
#                            socket (epoch= seq= sealed= final= writes=
#                            refused=)
#   must DESCRIPTION COMMAND...  as ok, but a failure ends the test at
#                            once ("Bail out!"): the steps after it
#                            would only wait for their time limits
#
# GUEST_TIMEOUT (seconds, default 120) bounds every QEMU run;
# R3MAP_QEMU_ACCEL=kvm|tcg overrides the probe.

QEMU=qemu-system-x86_64
QMP_PY="/usr/bin/python3 $abs_top_srcdir/qemu-tests/qmp.py"
GUEST_IO="$abs_top_builddir/qemu-tests/r3map-guest-io"
GUEST_DIR="$abs_top_builddir/qemu-tests/guest"
: "${GUEST_TIMEOUT:=120}"
: "${R3MAP_QEMU_FULL:=}"

_guest_names=""

requires_guest ()
{
    local out status
    command -v $QEMU >/dev/null 2>&1 ||
        skip_all "needs $QEMU (Debian package qemu-system-x86)"
    [ -x /usr/bin/python3 ] || skip_all "needs /usr/bin/python3 for QMP"
    [ -x "$GUEST_IO" ] || skip_all "needs $GUEST_IO (make check builds it)"
    out=$(bash "$abs_top_srcdir/qemu-tests/build-guest.sh" "$GUEST_DIR" \
               "$GUEST_IO" "$abs_top_srcdir/qemu-tests/guest-init" 2>&1)
    status=$?
    if [ $status = 77 ]; then
        skip_all "cannot build the test guest: $(printf '%s\n' "$out" | tail -n 1)"
    elif [ $status != 0 ]; then
        echo "Bail out! building the guest failed"
        printf '%s\n' "$out" | sed 's/^/# /'
        exit 1
    fi
    # shellcheck disable=SC1091
    . "$GUEST_DIR/guest.env"
    _guest_accel
    echo "# guest: Debian kernel $GUEST_KVER ($GUEST_KERNEL_KIND), accel $GUEST_ACCEL ($GUEST_ACCEL_WHY)"
}

# KVM only where a probe boot proves it works: /dev/kvm may exist and
# yet not boot a stock kernel.  The verdict is kept in the guest
# directory (one probe per build tree and kernel).
_guest_accel ()
{
    local cache="$GUEST_DIR/accel" line
    if [ -n "${R3MAP_QEMU_ACCEL:-}" ]; then
        GUEST_ACCEL=$R3MAP_QEMU_ACCEL
        GUEST_ACCEL_WHY="from R3MAP_QEMU_ACCEL"
        return
    fi
    exec 8>"$GUEST_DIR/.accel.lock"
    flock 8
    if [ ! -s "$cache" ] || [ "$cache" -ot "$GUEST_DIR/kernel/version" ]; then
        if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
            echo "tcg no usable /dev/kvm" > "$cache"
        else
            timeout --kill-after=2 10 $QEMU -accel kvm -m 256 -smp 1 \
                -nodefaults -display none -no-reboot \
                -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" \
                -append "console=ttyS0 quiet panic=-1 no_timer_check r3map.work=probe" \
                -serial "file:$tmp/kvm-probe.serial" \
                > "$tmp/kvm-probe.out" 2>&1
            if grep -q '^R3MAP-RESULT: PASS probe' "$tmp/kvm-probe.serial" 2>/dev/null; then
                echo "kvm a probe boot with KVM worked" > "$cache"
            else
                echo "tcg a probe boot with KVM did not finish in 10 s" > "$cache"
            fi
        fi
    fi
    exec 8>&-
    line=$(cat "$cache")
    GUEST_ACCEL=${line%% *}
    GUEST_ACCEL_WHY=${line#* }
}

# --- nbdkit servers ------------------------------------------------------

_wait_for ()
{
    local secs=$1 i
    shift
    for i in $(seq $((secs * 10))); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

nbdkit_start ()
{
    local name=$1
    shift
    rm -f "$tmp/$name.sock" "$tmp/$name.nbdkit.pid"
    nbdkit -f --exit-with-parent -U "$tmp/$name.sock" \
        -P "$tmp/$name.nbdkit.pid" "$@" > "$tmp/$name.nbdkit.log" 2>&1 &
    cleanup_fn _nbdkit_kill "$name"
    if ! _wait_for 60 test -s "$tmp/$name.nbdkit.pid"; then
        echo "Bail out! nbdkit $name did not start"
        sed 's/^/# /' "$tmp/$name.nbdkit.log"
        exit 1
    fi
}

# TERM first, then KILL: an r3map-pull leecher that holds a client's
# request until finalize does not exit on TERM (nbdkit waits for the
# request), and nothing may outlive the test.
_nbdkit_kill ()
{
    local pid
    [ -s "$tmp/$1.nbdkit.pid" ] || return 0
    pid=$(cat "$tmp/$1.nbdkit.pid")
    kill "$pid" 2>/dev/null || return 0
    _wait_for 5 _pid_gone "$pid" || kill -9 "$pid" 2>/dev/null
}

_pid_gone ()
{
    ! kill -0 "$1" 2>/dev/null
}

nbdkit_stop ()
{
    local pid
    [ -s "$tmp/$1.nbdkit.pid" ] || return 0
    pid=$(cat "$tmp/$1.nbdkit.pid")
    kill "$pid" 2>/dev/null
    if ! _wait_for 60 _pid_gone "$pid"; then
        kill -9 "$pid" 2>/dev/null
        _wait_for 10 _pid_gone "$pid"
        echo "# nbdkit $1 did not exit on SIGTERM within 60 s: killed"
        return 1
    fi
    rm -f "$tmp/$1.nbdkit.pid"
}

# --- Disks ---------------------------------------------------------------

disk_nbd_old ()
{
    echo "-drive file=nbd:unix:$1,format=raw,if=virtio,cache=none"
}

disk_nbd_uri ()
{
    echo "-drive file=nbd+unix:///?socket=$1,format=raw,if=virtio,cache=none"
}

disk_blockdev ()
{
    echo "-blockdev driver=nbd,server.type=unix,server.path=$1,node-name=$2,cache.direct=on"
    echo "-device virtio-blk-pci,drive=$2"
}

# When a virtio-blk (or IDE, SCSI) device is given no geometry, QEMU
# guesses one from the partition table: it reads sector 0 when it
# creates the device, in its main loop, before it serves QMP.  On a
# leecher, which holds every read until finalize, that hangs the
# destination QEMU at startup.  With cyls/heads/secs given nothing is
# read (virtio-blk only passes them on to the guest, which ignores
# them).  The -drive options cannot carry a geometry (if=virtio makes
# the device itself), hence if=none and a -device of our own.
DISK_GEOMETRY="cyls=16383,heads=16,secs=63"

disk_dev ()
{
    local kind=$1 sock=$2 id=$3
    case "$kind" in
        old) echo "-drive file=nbd:unix:$sock,format=raw,if=none,id=$id,cache=none" ;;
        uri) echo "-drive file=nbd+unix:///?socket=$sock,format=raw,if=none,id=$id,cache=none" ;;
        blockdev)
            echo "-blockdev driver=nbd,server.type=unix,server.path=$sock,node-name=$id,cache.direct=on" ;;
    esac
    echo "-device virtio-blk-pci,drive=$id,$DISK_GEOMETRY"
}

# --- Guests --------------------------------------------------------------

# no_timer_check: on a loaded host a TCG guest's kernel can miss the
# timer interrupt it waits for while it sets up the IO-APIC, and panic
# ("IO-APIC + timer doesn't work!"); the check proves nothing here.
guest_start ()
{
    local name=$1 cmdline=$2
    shift 2
    rm -f "$tmp/$name".{qmp,serial,serial.sock,qemu.pid,status}
    timeout --kill-after=5 "$GUEST_TIMEOUT" \
        $QEMU -name "$name" -accel "$GUEST_ACCEL" -m 256 -smp 1 \
        -nodefaults -display none -no-reboot \
        -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" \
        -append "console=ttyS0 quiet panic=-1 no_timer_check $cmdline" \
        -chardev "socket,id=ser0,path=$tmp/$name.serial.sock,server=on,wait=off,logfile=$tmp/$name.serial" \
        -serial chardev:ser0 \
        -qmp "unix:$tmp/$name.qmp,server=on,wait=off" \
        -pidfile "$tmp/$name.qemu.pid" \
        "$@" > "$tmp/$name.qemu.out" 2>&1 &
    echo $! > "$tmp/$name.timeout.pid"
    _guest_names="$_guest_names $name"
    cleanup_fn _guest_kill "$name"
    date +%s.%N > "$tmp/$name.start"
}

_guest_kill ()
{
    local f
    for f in "$tmp/$1.qemu.pid" "$tmp/$1.timeout.pid"; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
}

# Wait for the guest's QEMU to exit; its status goes to NAME.status
# (124: killed by the time limit).
guest_wait ()
{
    local name=$1 status start end
    wait "$(cat "$tmp/$name.timeout.pid")"
    status=$?
    end=$(date +%s.%N)
    start=$(cat "$tmp/$name.start")
    echo "$status" > "$tmp/$name.status"
    echo "# guest $name: QEMU exited with status $status after" \
         "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s" \
         "($(grep -o 'up after [0-9.]* s' "$tmp/$name.serial" 2>/dev/null | head -n 1))"
    if [ "$status" != 0 ]; then
        echo "# guest $name: QEMU said:"
        sed 's/^/#   /' "$tmp/$name.qemu.out"
        echo "# guest $name: console:"
        tr -d '\r' < "$tmp/$name.serial" 2>/dev/null | tail -n 20 | sed 's/^/#   /'
    fi
    [ "$status" = 0 ]
}

guest_run ()
{
    guest_start "$@"
    guest_wait "$1"
}

guest_stop ()
{
    $QMP_PY --timeout 10 "$tmp/$1.qmp" cmd quit >/dev/null 2>&1
    _wait_for 10 _pid_gone "$(cat "$tmp/$1.timeout.pid")" || _guest_kill "$1"
    guest_wait "$1"
}

_console ()
{
    tr -d '\r' < "$tmp/$1.serial" 2>/dev/null
}

guest_passed ()
{
    local name=$1 what=$2
    _console "$name" | grep '^R3MAP-RESULT:'
    _console "$name" | grep -q "^R3MAP-RESULT: PASS $what" &&
        ! _console "$name" | grep -q '^R3MAP-RESULT: FAIL'
}

guest_failed ()
{
    _console "$1" | grep '^R3MAP-RESULT:'
    _console "$1" | grep -q "^R3MAP-RESULT: FAIL $2"
}

guest_wait_line ()
{
    local name=$1 ere=$2 secs=${3:-60}
    _wait_for "$secs" _console_has "$name" "$ere"
}

_console_has ()
{
    _console "$1" | grep -Eq -- "$2"
}

guest_serial ()
{
    local name=$1
    shift
    $QMP_PY --timeout 10 serial "$tmp/$name.serial.sock" "$@"
}

# --- Live migration ------------------------------------------------------

guest_incoming ()
{
    local name=$1 cmdline=$2
    shift 2
    rm -f "$tmp/$name.mig"
    guest_start "$name" "$cmdline" "$@" -incoming defer
    cleanup_fn rm -f "$tmp/$name.mig"
    guest_qmp "$name" cmd migrate-incoming "{\"uri\": \"unix:$tmp/$name.mig\"}" \
        > /dev/null
}

migrate_prepare ()
{
    local name=$1 bw=${2:-10000000000}
    guest_qmp "$name" \
        cmd migrate-set-capabilities '{"capabilities": [
            {"capability": "pause-before-switchover", "state": true},
            {"capability": "events", "state": true}]}' \
        cmd migrate-set-parameters "{\"max-bandwidth\": $bw}" > /dev/null
}

guest_gone ()
{
    local name=$1 secs=$2 pid
    pid=$(cat "$tmp/$name.timeout.pid")
    _wait_for "$secs" _pid_gone "$pid" || return 1
    wait "$pid"
    echo $? > "$tmp/$name.status"
    return 0
}

nbdkit_running ()
{
    [ -s "$tmp/$1.nbdkit.pid" ] && kill -0 "$(cat "$tmp/$1.nbdkit.pid")" 2>/dev/null
}

track_status ()
{
    /usr/bin/python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"status\n")
print(s.makefile().readline().strip())
PY
}

must ()
{
    local failed=$_tap_failed
    ok "$@"
    if [ "$_tap_failed" != "$failed" ]; then
        echo "Bail out! $1"
        exit 1
    fi
}

guest_qmp ()
{
    local name=$1
    shift
    $QMP_PY --timeout "${QMP_TIMEOUT:-30}" "$tmp/$name.qmp" "$@"
}
