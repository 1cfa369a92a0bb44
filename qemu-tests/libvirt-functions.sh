# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Sourced by the libvirt tests after ../tests/functions.sh and
# qemu-functions.sh: libvirtd instances on this one machine, each in a
# mount namespace of its own, as if each were a host.
#
#   requires_libvirt         skip (saying why) without libvirtd, virsh,
#                            root or unshare
#   lv_netns NAME            a network namespace for instance NAME,
#                            joined to this one by a veth pair: sets
#                            LV_IP_NAME (its address) and LV_HOST_IP_NAME
#                            (this side's)
#   lv_start NAME [IP [LISTEN]]  a libvirtd with its own /etc/libvirt,
#                            /run/libvirt, /var/lib/libvirt,
#                            /var/log/libvirt and /var/cache/libvirt (bind
#                            mounts of $tmp/lv-NAME/{etc,run,lib,log,cache}),
#                            its own host_uuid, r3map-hook installed, and
#                            r3map-libvirt watch beside it; IP: where
#                            its seeders are reached (127.0.0.1), LISTEN
#                            the address they listen on (IP)
#   lv_virsh NAME ARGS...    virsh on NAME
#   lv_uri NAME              its libvirt URI
#   lv_path NAME PATH        where NAME's PATH (/run/libvirt/...) is, seen
#                            from the test
#   lv_stop NAME             destroy its domains, stop it, and kill what
#                            it left (QEMU, nbdkit, retiring hooks)
#
# In every instance the hook keeps its files under /run/libvirt/r3map
# and /var/lib/libvirt/r3map, so two instances never share one: as on
# two hosts, the same domain XML names the same paths on both.  Each
# instance is stopped by the test's exit trap whatever happens; the
# namespaces and their mounts go with their last process.

: "${LV_TIMEOUT:=60}"
_lv_names=""

requires_libvirt ()
{
    [ "$(id -u)" = 0 ] || skip_all "needs root (libvirtd, mount namespaces)"
    command -v libvirtd >/dev/null 2>&1 ||
        skip_all "needs libvirtd (Debian packages libvirt-daemon-system, libvirt-daemon-driver-qemu)"
    command -v virsh >/dev/null 2>&1 || skip_all "needs virsh (libvirt-clients)"
    command -v unshare >/dev/null 2>&1 || skip_all "needs unshare (util-linux)"
    command -v psktool >/dev/null 2>&1 || skip_all "needs psktool (gnutls-bin)"
    unshare -m --propagation private true 2>/dev/null ||
        skip_all "cannot make a mount namespace here"
    # The mount point of each instance's /run/libvirt: a system with
    # libvirt's tmpfiles has it; make it if not (it stays empty).
    mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
    [ -s "$tmp/keys.psk" ] || psktool -u r3map -p "$tmp/keys.psk" >/dev/null
}

lv_uri ()
{
    echo "qemu+unix:///system?socket=$tmp/lv-$1/run/libvirt-sock"
}

_lv_netns_n=$(( RANDOM % 250 + 1 ))
lv_netns ()
{
    local name=$1 holder h="r3h$$$1" c="r3c$$$1"
    command -v ip >/dev/null 2>&1 || skip_all "needs ip (iproute2)"
    # A process that holds the namespaces until lv_stop kills it.
    unshare -m -n --propagation private -- sleep 100000 &
    holder=$!
    echo $holder > "$tmp/netns-$name.pid"
    cleanup_fn _lv_netns_stop "$name" "$h"
    for i in $(seq 50); do
        [ "$(readlink /proc/$holder/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break
        sleep 0.1
    done
    eval "LV_HOST_IP_$name=10.213.$_lv_netns_n.1 LV_IP_$name=10.213.$_lv_netns_n.2"
    ip link add "$h" type veth peer name "$c" &&
    ip link set "$c" netns "$holder" &&
    ip addr add "10.213.$_lv_netns_n.1/30" dev "$h" &&
    ip link set "$h" up &&
    nsenter -t "$holder" -n -- ip addr add "10.213.$_lv_netns_n.2/30" dev "$c" &&
    nsenter -t "$holder" -n -- ip link set "$c" up &&
    nsenter -t "$holder" -n -- ip link set lo up || {
        echo "Bail out! cannot make a network namespace for $name"; exit 1; }
    _lv_netns_n=$((_lv_netns_n + 1))
}

_lv_netns_stop ()
{
    ip link del "$2" 2>/dev/null
    _lv_kill_pidfiles "$tmp/netns-$1.pid"
}

lv_virsh ()
{
    local name=$1
    shift
    timeout "$LV_TIMEOUT" virsh -q -c "$(lv_uri "$name")" "$@"
}

lv_path ()
{
    case "$2" in
        /run/libvirt/*)       echo "$tmp/lv-$1/run/${2#/run/libvirt/}" ;;
        /var/lib/libvirt/*)   echo "$tmp/lv-$1/lib/${2#/var/lib/libvirt/}" ;;
        /var/log/libvirt/*)   echo "$tmp/lv-$1/log/${2#/var/log/libvirt/}" ;;
        *)                    echo "$2" ;;
    esac
}

_lv_n=0
lv_start ()
{
    local name=$1 ip=${2:-127.0.0.1} listen=${3:-${2:-127.0.0.1}} d="$tmp/lv-$1" i
    _lv_n=$((_lv_n + 1))
    mkdir -p "$d"/{run,lib,log,cache}
    cp -a /etc/libvirt "$d/etc"
    cp -a /var/lib/libvirt/. "$d/lib/"
    # No default network: nothing here needs one (and no dnsmasq).
    rm -f "$d/etc/qemu/networks/autostart/"*.xml
    cat >> "$d/etc/libvirtd.conf" <<CONF
host_uuid = "$(printf '00000000-0000-4000-8000-%012d' $_lv_n)"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
    cat >> "$d/etc/qemu.conf" <<CONF
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
remember_owner = 0
CONF
    cat > "$d/hook.conf" <<CONF
[hook]
run-dir=/run/libvirt/r3map
state-dir=/var/lib/libvirt/r3map/state
log-file=/var/log/libvirt/r3map-hook.log
seed-listen=$listen
seed-address=$ip
seed-ports=$((_port_base + _lv_n * 20))-$((_port_base + _lv_n * 20 + 19))
tls-psk=$tmp/keys.psk
retire-grace=2s
[modules]
r3map-dir=$(plugin dir)
r3map-track=$TRACK
r3map-pull=$PULL
CONF
    # libvirt runs every executable of qemu.d with its four arguments:
    # the hook, with this instance's settings (and under valgrind when
    # the suite is).
    mkdir -p "$d/etc/hooks/qemu.d"
    cat > "$d/etc/hooks/qemu.d/r3map-hook" <<SH
#!/bin/sh
exec $HOOK --config=$d/hook.conf "\$@"
SH
    chmod 755 "$d/etc/hooks/qemu.d/r3map-hook"

    _lv_names="$_lv_names $name"
    cleanup_fn lv_stop "$name"
    # The namespace lives as long as libvirtd (and what it starts).  In
    # a network namespace of its own (lv_netns), libvirtd also listens
    # on TCP there, as on a host of its own.
    local enter="unshare -m --propagation private --"
    if [ -s "$tmp/netns-$name.pid" ]; then
        enter="nsenter -t $(cat "$tmp/netns-$name.pid") -m -n --"
        cat >> "$d/etc/libvirtd.conf" <<CONF
listen_tcp = 1
listen_tls = 0
auth_tcp = "none"
listen_addr = "$ip"
CONF
    fi
    $enter env listen="$( [ -s "$tmp/netns-$name.pid" ] && echo --listen )" bash -c "
        mount --bind '$d/etc' /etc/libvirt &&
        mount --bind '$d/run' /run/libvirt &&
        mount --bind '$d/lib' /var/lib/libvirt &&
        mount --bind '$d/log' /var/log/libvirt &&
        mount --bind '$d/cache' /var/cache/libvirt &&
        exec libvirtd --daemon \$listen --pid-file=/run/libvirt/libvirtd.pid" \
        > "$d/libvirtd.out" 2>&1 || {
        echo "Bail out! libvirtd $name did not start"; sed 's/^/# /' "$d/libvirtd.out"
        exit 1
    }
    for i in $(seq $((LV_TIMEOUT * 10))); do
        [ -s "$d/run/libvirtd.pid" ] && virsh -q -c "$(lv_uri "$name")" version \
            >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! lv_virsh "$name" version >/dev/null 2>&1; then
        echo "Bail out! libvirtd $name does not answer"
        sed 's/^/# /' "$d/libvirtd.out" "$d/log/libvirtd.log" 2>/dev/null | tail -20
        exit 1
    fi
    # The watcher, in the same namespace: it finds the hook's files
    # where the hook made them.
    nsenter -t "$(cat "$d/run/libvirtd.pid")" -m -n -- \
        $R3LV watch --config="$d/hook.conf" --connect=qemu:///system \
        --pid-file="$d/watch.pid" > "$d/watch.out" 2>&1 &
    disown $!
    for i in $(seq 100); do
        grep -q 'watching' "$d/log/r3map-hook.log" 2>/dev/null && break
        sleep 0.1
    done
}

_lv_kill_pidfiles ()
{
    local f pid
    for f in "$@"; do
        [ -s "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null) || continue
        kill -9 "$pid" 2>/dev/null
    done
}

lv_stop ()
{
    local name=$1 d="$tmp/lv-$1" dom pid i
    [ -d "$d" ] || return 0
    if [ -s "$d/run/libvirtd.pid" ]; then
        for dom in $(virsh -q -c "$(lv_uri "$name")" list --name 2>/dev/null); do
            timeout 20 virsh -q -c "$(lv_uri "$name")" destroy "$dom" >/dev/null 2>&1
        done
    fi
    _lv_kill_pidfiles "$d/watch.pid"
    pid=$(cat "$d/run/libvirtd.pid" 2>/dev/null)
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    fi
    # What libvirtd or the hook left running: QEMU, nbdkit, a retiring
    # hook (each named by a pid file under this instance's files).
    _lv_kill_pidfiles "$d"/run/qemu/*.pid "$d"/run/r3map/*/*.pid
    rm -f "$d/run/libvirtd.pid"
}

# The hook's processes of instance NAME that are still alive (their
# pid files), one per line: empty when nothing is left.
lv_r3map_processes ()
{
    local f pid
    for f in "$tmp/lv-$1"/run/r3map/*/*.pid; do
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        kill -0 "$pid" 2>/dev/null && echo "$f: $pid"
    done
}

# lv_domain_xml NAME UUID CMDLINE: the test guest as a libvirt domain
# (no disk yet: r3map-libvirt attach adds it).  Its console is a Unix
# socket (commands typed with guest_serial) logged to a file, both
# under /run/libvirt/r3map-test of the instance running it.
lv_domain_xml ()
{
    cat <<XML
<domain type='qemu'>
  <name>$1</name>
  <uuid>$2</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$GUEST_KERNEL</kernel>
    <initrd>$GUEST_INITRD</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 $3</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='unix'>
      <source mode='bind' path='/run/libvirt/r3map-test/$1.serial.sock'/>
      <log file='/run/libvirt/r3map-test/$1.serial'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
XML
}

# lv_console NAME DOMAIN: the guest's console as instance NAME logged it.
lv_console ()
{
    tr -d '\r' < "$tmp/lv-$1/run/r3map-test/$2.serial" 2>/dev/null
}

lv_console_has ()
{
    lv_console "$1" "$2" | grep -Eq -- "$3"
}

# lv_serial NAME DOMAIN LINE...: type on the guest's console.
lv_serial ()
{
    local name=$1 dom=$2
    shift 2
    $QMP_PY --timeout 10 serial "$tmp/lv-$name/run/r3map-test/$dom.serial.sock" "$@"
}

# lv_define NAME DOMAIN UUID CMDLINE: define the test guest on instance
# NAME with an r3map-dir disk of 16 MiB at
# /var/lib/libvirt/r3map/disks/DOMAIN-vda (made here), that may migrate.
lv_define ()
{
    local name=$1 dom=$2 uuid=$3 cmdline=$4
    mkdir -p "$tmp/lv-$name/run/r3map-test" "$tmp/lv-$name/lib/r3map/disks/$dom-vda"
    lv_domain_xml "$dom" "$uuid" "$cmdline" > "$tmp/$dom.xml"
    $R3LV attach --config="$tmp/lv-$name/hook.conf" --in-place \
        --plugin=r3map-dir --migration "$tmp/$dom.xml" \
        dir="/var/lib/libvirt/r3map/disks/$dom-vda" size=16M &&
    lv_virsh "$name" define "$tmp/$dom.xml" >/dev/null
}

# lv_state NAME DOMAIN: running, shut off, ...; nothing if undefined.
lv_state ()
{
    lv_virsh "$1" domstate "$2" 2>/dev/null | head -n 1
}

lv_hook_log ()
{
    cat "$tmp/lv-$1/log/r3map-hook.log" 2>/dev/null
}
