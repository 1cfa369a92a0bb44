#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map-hook with real nbdkit processes, as libvirt drives it when a
# domain starts and stops: prepare begin starts the disk's nbdkit (and
# the TLS gateway of a migratable disk) and returns once it answers;
# release end flushes and stops them and leaves nothing behind; a start
# that fails says why, in one line, and leaves nothing either.

. "$srcdir/functions.sh"
. "$srcdir/hook-functions.sh"
requires psktool --version
requires nbdinfo --version
requires nbdcopy --version

uuid=3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a
host_config A
domain_xml vm1 $uuid > "$tmp/orig.xml"
mkdir "$tmp/disk"
$R3LV attach --config="$tmp/A.conf" --plugin=r3map-dir --migration \
    "$tmp/orig.xml" dir="$tmp/disk" size=8M > "$tmp/vm1.xml"
run=$(run_dir A $uuid)
sock="$run/vda.sock"
uri="nbd+unix:///?socket=$sock"

ok "prepare begin starts the disk, exit 0, silent" bash -c "
    $HOOK --config='$tmp/A.conf' vm1 prepare begin - < '$tmp/vm1.xml' > '$tmp/o' 2>&1 &&
    ! test -s '$tmp/o'"
ok "the socket serves the disk when the hook returns" \
    bash -c "test \"\$(nbdinfo --size '$uri')\" = 8388608"
ok "under r3map-track: its control socket answers" bash -c "
    echo status | timeout 5 /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b\"status\n\")
print(s.recv(200).decode())' '$run/vda.ctl' | tee /dev/stderr | grep -q '^epoch=[0-9a-f]\{16\} seq=0 sealed=no'"
read -r seed_host seed_port seed_epoch < "$run/vda.seed"
ok "the gateway's note: host, port, epoch" \
    test "$seed_host:${#seed_port}:${#seed_epoch}" = "127.0.0.1:5:16"
ok "the gateway serves the disk's views over TLS with the key" bash -c "
    nbdinfo 'nbds://r3map@127.0.0.1:$seed_port/r3map:changed-since:0?tls-psk-file=$tmp/keys.psk' |
        grep -q 'description: r3map-track epoch=$seed_epoch'"
ok "and refuses a client without TLS" \
    _negate nbdinfo --size "nbd://127.0.0.1:$seed_port/"
ok "and is read-only" bash -c "
    nbdinfo 'nbds://r3map@127.0.0.1:$seed_port/?tls-psk-file=$tmp/keys.psk' |
        grep -q 'is_read_only: true'"

head -c 8M /dev/urandom > "$tmp/data"
ok "a client writes the disk (as QEMU would)" nbdcopy "$tmp/data" "$uri"
ok "prepare begin again: the running nbdkit is kept" bash -c "
    pid=\$(cat '$run/vda.pid');
    $HOOK --config='$tmp/A.conf' vm1 prepare begin - < '$tmp/vm1.xml' &&
    test \"\$(cat '$run/vda.pid')\" = \$pid && kill -0 \$pid"
ok "release end: exit 0" hook A vm1 release end - < "$tmp/vm1.xml"
ok "no process, socket or file left behind" nothing_left A
ok "the hook logged the start and the stop" bash -c "
    grep -q 'vm1 vda: serving $sock' '$tmp/A/hook.log' &&
    grep -q 'vm1 vda: stopped' '$tmp/A/hook.log'"
ok "started again, the disk holds what was written" bash -c "
    $HOOK --config='$tmp/A.conf' vm1 prepare begin - < '$tmp/vm1.xml' &&
    nbdcopy '$uri' - | cmp - '$tmp/data'"
ok "release end again: nothing left" bash -c "
    $HOOK --config='$tmp/A.conf' vm1 release end - < '$tmp/vm1.xml'"
ok "  (checked)" nothing_left A
ok "release end of a domain that is not running: exit 0, nothing to do" \
    hook A vm1 release end - < "$tmp/vm1.xml"

# --- Starts that fail ----------------------------------------------------
fails_cleanly ()
{
    local pattern=$1 xml=$2 status
    hook A vm1 prepare begin - < "$xml" > "$tmp/o" 2> "$tmp/e"
    status=$?
    cat "$tmp/e"
    test $status = 1 && test "$(grep -c . "$tmp/e")" = 1 &&
        grep -q -- "$pattern" "$tmp/e" && nothing_left A
}
sed "s|$tmp/disk|$tmp/missing|" "$tmp/vm1.xml" > "$tmp/bad.xml"
ok "nbdkit refuses to start: exit 1, its reason in one line, nothing left" \
    fails_cleanly "disk vda: nbdkit exited at start (status 1): .*dir=$tmp/missing: No such file" \
    "$tmp/bad.xml"
sed "s|<r3map:migration/>|<r3map:migration tls-psk=\"$tmp/none.psk\"/>|" "$tmp/vm1.xml" > "$tmp/bad.xml"
ok "a migratable disk without its key: exit 1, names it, the disk's nbdkit stopped" \
    fails_cleanly "disk vda: tls-psk=$tmp/none.psk: No such file or directory" "$tmp/bad.xml"
mkdir -p "$tmp/A/state"
: > "$tmp/A/state/$uuid-vda.state"
ok "a copy left incomplete by a migration here is not started" \
    fails_cleanly "disk vda: the copy on this host is incomplete" "$tmp/vm1.xml"
rm "$tmp/A/state/$uuid-vda.state"

# Two disks, the second fails: the first is stopped again.
mkdir "$tmp/disk2"
$R3LV attach --config="$tmp/A.conf" --plugin=r3map-dir --target=vdb \
    "$tmp/vm1.xml" dir="$tmp/disk2" size=bad > "$tmp/two.xml"
ok "two disks, the second fails: the first is stopped too" \
    fails_cleanly "disk vdb: nbdkit exited at start" "$tmp/two.xml"

# nbdkit that never answers: bounded by start-timeout.
cat > "$tmp/slow-nbdkit" <<'SH'
#!/bin/sh
exec sleep 60
SH
chmod +x "$tmp/slow-nbdkit"
host_config S "nbdkit=$tmp/slow-nbdkit" "start-timeout=1s"
ok "an nbdkit that never answers: failed after start-timeout, not hung" bash -c "
    start=\$SECONDS
    $HOOK --config='$tmp/S.conf' vm1 prepare begin - < '$tmp/vm1.xml' 2> '$tmp/e';
    test \$? = 1 && cat '$tmp/e' && grep -q 'did not answer within 1000 ms (start-timeout)' '$tmp/e' &&
    test \$((SECONDS - start)) -lt 15"
ok "  and it was killed" _negate pgrep -f -- "$tmp/slow-nbdkit"

done_testing
