# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Sourced by the tests of libvirt-hook/ after functions.sh: the hook and
# r3map-libvirt run as libvirt runs them (four arguments, the domain
# XML on stdin), each "host" with its own configuration and files
# under $tmp/HOST, and every process they leave is killed at exit.
#
#   host_config NAME [KEY=VALUE...]   write $tmp/NAME.conf, make $tmp/NAME
#   domain_xml NAME UUID              a small domain XML, as virsh
#                                     dumpxml writes it, on stdout
#   hook NAME DOMAIN OP SUBOP         the hook with NAME's config, the
#                                     XML on stdin
#   run_dir NAME UUID                 where the hook keeps a domain's files
#
# Under check-valgrind the hook and r3map-libvirt run under valgrind.

HOOK="$abs_top_builddir/libvirt-hook/r3map-hook"
R3LV="$abs_top_builddir/libvirt-hook/r3map-libvirt"
[ -n "$R3MAP_VALGRIND" ] && HOOK="$_valgrind $HOOK" && R3LV="$_valgrind $R3LV"
TRACK="$abs_top_builddir/filters/track/.libs/nbdkit-r3map-track-filter.so"
PULL="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"

# The hook daemonizes nbdkit and may leave a retiring process: stop
# whatever a pid file under $tmp names, if it is one of those.
_hook_kill_all ()
{
    local f pid
    for f in $(find "$tmp" -name '*.pid' 2>/dev/null); do
        pid=$(cat "$f" 2>/dev/null) || continue
        case "$(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null)" in
            *nbdkit*|*r3map-hook*) kill -9 "$pid" 2>/dev/null ;;
        esac
    done
}
cleanup_fn _hook_kill_all

# A port range of our own: tests of several suites run at once.
_port_base=$(( 20000 + (RANDOM % 400) * 100 ))

host_config ()
{
    local name=$1
    shift
    mkdir -p "$tmp/$name"
    [ -s "$tmp/keys.psk" ] || psktool -u r3map -p "$tmp/keys.psk" >/dev/null 2>&1
    {
        echo "[hook]"
        echo "run-dir=$tmp/$name/run"
        echo "state-dir=$tmp/$name/state"
        echo "log-file=$tmp/$name/hook.log"
        echo "seed-listen=127.0.0.1"
        echo "seed-address=127.0.0.1"
        echo "seed-ports=$_port_base-$((_port_base + 49))"
        echo "tls-psk=$tmp/keys.psk"
        echo "retire-grace=1s"
        echo "start-timeout=20s"
        for kv in "$@"; do echo "$kv"; done
        echo "[modules]"
        echo "r3map-dir=$(plugin dir)"
        echo "r3map-track=$TRACK"
        echo "r3map-pull=$PULL"
    } > "$tmp/$name.conf"
    _port_base=$((_port_base + 50))
}

domain_xml ()
{
    cat <<XML
<domain type='qemu'>
  <name>$1</name>
  <uuid>$2</uuid>
  <memory unit='KiB'>262144</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
    </disk>
    <console type='pty'/>
  </devices>
</domain>
XML
}

hook ()
{
    local name=$1
    shift
    $HOOK --config="$tmp/$name.conf" "$@"
}

run_dir ()
{
    echo "$tmp/$1/run/$2"
}

# No process the hook started for HOST is alive (an nbdkit or a
# retiring hook: their command lines name HOST's files), and its run
# directory is empty.
nothing_left ()
{
    local n=0
    if pgrep -f -a -- "$tmp/$1[./]" | grep -v pgrep; then
        echo "still running (above)"; n=1
    fi
    if [ -d "$tmp/$1/run" ] && [ -n "$(ls -A "$tmp/$1/run")" ]; then
        echo "left in the run directory:"; find "$tmp/$1/run"; n=1
    fi
    [ $n = 0 ]
}
