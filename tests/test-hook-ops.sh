#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map-hook alone, called as libvirt calls it (four arguments, the
# domain XML on stdin), with XML it must ignore, XML it must refuse and
# operations it does not know: the right exit status, one clear line
# on stderr for an error, nothing started and no file made when
# nothing is to be done.  No nbdkit runs here (test-hook-lifecycle.sh
# and test-hook-migrate.sh start real ones).

. "$srcdir/functions.sh"
. "$srcdir/hook-functions.sh"
requires psktool --version
requires /usr/bin/python3 --version

uuid=6f1c2f0e-6a51-4bd5-9d7e-1f0c3b2a4d5e
host_config A
domain_xml vm1 $uuid > "$tmp/plain.xml"

# A domain with r3map metadata, in libxml2's style (double quotes, no
# declaration) so that the hook's output compares line by line.
r3map_xml ()
{
    # $1: what goes in <r3map:disk>; $2: the NBD disk's XML.
    cat <<XML
<domain type="qemu">
  <name>vm1</name>
  <uuid>$uuid</uuid>
  <devices>
    ${2:-<disk type=\"network\" device=\"disk\"><source protocol=\"nbd\"><host transport=\"unix\" socket=\"$tmp/vda.sock\"/></source><target dev=\"vda\" bus=\"virtio\"/><geometry cyls=\"16\" heads=\"16\" secs=\"63\"/></disk>}
  </devices>
  <metadata>
    <r3map:domain xmlns:r3map="urn:r3map:libvirt:1">
      <r3map:disk target="vda">
        ${1:-<r3map:plugin name=\"r3map-dir\"><r3map:param name=\"dir\">$tmp/disk</r3map:param></r3map:plugin>}
      </r3map:disk>
    </r3map:domain>
  </metadata>
</domain>
XML
}

# hook_says STATUS PATTERN HOOK-ARGS... < XML: the exit status is
# STATUS, stderr is one line matching PATTERN (none if PATTERN is
# empty), stdout is empty, and the host's run directory stays empty.
hook_says ()
{
    local want=$1 pattern=$2 status
    shift 2
    hook A "$@" > "$tmp/out" 2> "$tmp/err"
    status=$?
    cat "$tmp/err"
    [ "$status" = "$want" ] || { echo "exit status $status, not $want"; return 1; }
    if [ -z "$pattern" ]; then
        [ ! -s "$tmp/err" ] || { echo "stderr not empty"; return 1; }
    else
        [ "$(grep -c . "$tmp/err")" = 1 ] || { echo "not one line"; return 1; }
        grep -q -- "$pattern" "$tmp/err" || return 1
    fi
    [ ! -s "$tmp/out" ] || { echo "stdout:"; cat "$tmp/out"; return 1; }
    nothing_left A
}

# --- Calls that are not libvirt's ----------------------------------------
ok "three arguments: usage error, exit 2" bash -c "
    $HOOK --config='$tmp/A.conf' vm1 prepare begin < /dev/null 2>&1 |
        grep -q 'expected 4 arguments' &&
    ! $HOOK --config='$tmp/A.conf' vm1 prepare begin < /dev/null 2>/dev/null;
    $HOOK --config='$tmp/A.conf' vm1 prepare begin </dev/null >/dev/null 2>&1;
    test \$? = 2"
ok "--help" bash -c "$HOOK --help | grep -q 'r3map-hook(1)'"
ok "a configuration file named but missing: exit 1, names it" bash -c "
    $HOOK --config='$tmp/none.conf' vm1 prepare begin - < '$tmp/plain.xml' 2> '$tmp/e';
    test \$? = 1 && cat '$tmp/e' && grep -q '$tmp/none.conf: No such file' '$tmp/e'"
printf '[hook]\nseed-ports=2000-1000\n' > "$tmp/bad.conf"
ok "a bad seed-ports: exit 1, names the key" bash -c "
    $HOOK --config='$tmp/bad.conf' vm1 prepare begin - < '$tmp/plain.xml' 2> '$tmp/e';
    test \$? = 1 && cat '$tmp/e' && grep -q 'seed-ports=2000-1000' '$tmp/e'"

# --- What is not the hook's ------------------------------------------------
r3map_xml > "$tmp/r3map.xml"
for op in "start begin" "started begin" "stopped end" "reconnect begin" \
          "attach begin" "restore begin" "release begin" "brand-new op"; do
    # shellcheck disable=SC2086
    ok "an r3map domain, '$op': nothing, exit 0" \
        hook_says 0 "" vm1 $op - < "$tmp/r3map.xml"
done
ok "an unknown operation with malformed XML: nothing, exit 0" \
    hook_says 0 "" vm1 frobnicate begin - < /dev/null
for op in "prepare begin" "release end" "migrate begin"; do
    # shellcheck disable=SC2086
    ok "a domain without r3map metadata, '$op': nothing, exit 0" \
        hook_says 0 "" vm1 $op - < "$tmp/plain.xml"
done
ok "metadata of another namespace is not ours" hook_says 0 "" vm1 prepare begin - \
    < <(sed 's|urn:r3map:libvirt:1|http://example.org/other|' "$tmp/r3map.xml")

# --- Malformed XML ----------------------------------------------------------
ok "malformed XML at prepare begin: exit 1, one line" \
    hook_says 1 "domain XML: not well-formed XML (line" vm1 prepare begin - \
    < <(head -n 5 "$tmp/r3map.xml")
ok "empty stdin at prepare begin: exit 1" \
    hook_says 1 "domain XML: not well-formed" vm1 prepare begin - < /dev/null
ok "XML that is not a domain: exit 1" \
    hook_says 1 "the root element is not <domain>" vm1 prepare begin - \
    <<< "<network><name>x</name></network>"
ok "an external entity is not loaded (dir= stays empty)" \
    hook_says 1 "dir=: must be an absolute path" vm1 prepare begin - < <(
    echo '<?xml version="1.0"?>'
    echo '<!DOCTYPE domain [ <!ENTITY x SYSTEM "file:///etc/hostname"> ]>'
    r3map_xml '<r3map:plugin name="r3map-dir"><r3map:param name="dir">&x;</r3map:param></r3map:plugin>')
ok "binary garbage: exit 1" \
    hook_says 1 "not well-formed" vm1 prepare begin - < <(head -c 4096 /dev/urandom)

# --- Wrong r3map metadata: refused before anything starts -------------------
bad ()
{
    local desc=$1 pattern=$2 disk=$3 qdisk=${4:-}
    r3map_xml "$disk" "$qdisk" > "$tmp/bad.xml"
    ok "$desc" hook_says 1 "$pattern" vm1 prepare begin - < "$tmp/bad.xml"
}
dir="<r3map:param name=\"dir\">$tmp/disk</r3map:param>"
bad "no plugin element" "no <r3map:plugin" "<!-- none -->"
bad "a plugin given by path" "<r3map:plugin name='/tmp/evil.so'>: not a plugin name" \
    '<r3map:plugin name="/tmp/evil.so"/>'
bad "a parameter the hook sets (source=)" "<r3map:param name='source'>: set by the hook" \
    "<r3map:plugin name=\"r3map-dir\">$dir<r3map:param name=\"source\">nbd://x</r3map:param></r3map:plugin>"
bad "a parameter of the filters (track-control=)" "name='track-control'>: set by the hook" \
    "<r3map:plugin name=\"r3map-dir\"><r3map:param name=\"track-control\">/x</r3map:param></r3map:plugin>"
bad "a relative dir=" "dir=disk: must be an absolute path" \
    '<r3map:plugin name="r3map-dir"><r3map:param name="dir">disk</r3map:param></r3map:plugin>'
bad "a bad parameter name" "<r3map:param name='a b'>: not a parameter name" \
    '<r3map:plugin name="memory"><r3map:param name="a b">1</r3map:param></r3map:plugin>'
r3map_xml > "$tmp/bad.xml"
sed -i 's|<r3map:disk target="vda">|<r3map:disk target="vda" chunk-size="3000">|' "$tmp/bad.xml"
ok "a chunk size that is not a power of 2" hook_says 1 "chunk-size=3000: must be a power of 2" \
    vm1 prepare begin - < "$tmp/bad.xml"
bad "no <disk> with that target" "the domain has no <disk> with <target dev='vda'/>" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin>" \
    "<disk type=\"network\"><source protocol=\"nbd\"><host transport=\"unix\" socket=\"$tmp/s\"/></source><target dev=\"vdb\"/></disk>"
bad "a file disk, not NBD" "its <disk> must be <disk type='network'>" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin>" \
    "<disk type=\"file\"><source file=\"/x\"/><target dev=\"vda\"/></disk>"
bad "NBD over TCP, not a Unix socket" "its <disk> must be <disk type='network'>" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin>" \
    "<disk type=\"network\"><source protocol=\"nbd\"><host name=\"h\" port=\"1\"/></source><target dev=\"vda\"/></disk>"
bad "a relative socket" "<host socket=...> must be an absolute path" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin>" \
    "<disk type=\"network\"><source protocol=\"nbd\"><host transport=\"unix\" socket=\"s.sock\"/></source><target dev=\"vda\"/></disk>"
r3map_xml > "$tmp/bad.xml"
sed -i 's|<r3map:disk target="vda">|<r3map:disk target="../../etc">|' "$tmp/bad.xml"
ok "a target that is a path" hook_says 1 "<r3map:disk target='../../etc'>: not a disk target name" \
    vm1 prepare begin - < "$tmp/bad.xml"
r3map_xml "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin></r3map:disk><r3map:disk target=\"vda\"><r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin>" \
    > "$tmp/bad.xml"
ok "the same disk twice" hook_says 1 "disk vda is named twice" vm1 prepare begin - < "$tmp/bad.xml"
sed 's|<uuid>.*</uuid>|<uuid>../x</uuid>|' "$tmp/r3map.xml" > "$tmp/bad.xml"
ok "a domain without a valid UUID" hook_says 1 "no valid <uuid>" vm1 prepare begin - < "$tmp/bad.xml"
bad "a seeder port out of range" "<r3map:seeder port='70000'>: not a TCP port" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin><r3map:migration/><r3map:seeder host=\"h\" port=\"70000\" epoch=\"0123456789abcdef\"/>"
bad "a seeder epoch that is not one" "epoch='xyz'>: not an r3map-track epoch" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin><r3map:migration/><r3map:seeder host=\"h\" port=\"1\" epoch=\"xyz\"/>"
bad "a seeder host with a space" "<r3map:seeder host='a b'>: not a host name" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin><r3map:migration/><r3map:seeder host=\"a b\" port=\"1\" epoch=\"0123456789abcdef\"/>"
bad "a relative key file" "tls-psk=keys.psk: must be an absolute path" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin><r3map:migration tls-psk=\"keys.psk\"/>"
bad "a bad source-copy" "source-copy='shred': must be 'rename' or 'remove'" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin><r3map:migration source-copy=\"shred\"/>"
bad "a bad precopy" "precopy='maybe': must be 'on' or 'off'" \
    "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin><r3map:migration precopy=\"maybe\"/>"
ok "the same errors at release end, which libvirt ignores, exit 1 too" \
    hook_says 1 "not well-formed" vm1 release end - < /dev/null

# --- migrate begin -----------------------------------------------------------
r3map_xml "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin>" > "$tmp/m.xml"
ok "migrate begin, a disk without <r3map:migration>: refused" \
    hook_says 1 "disk vda has no <r3map:migration>: r3map cannot move it" \
    vm1 migrate begin - < "$tmp/m.xml"
r3map_xml "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin>
        <r3map:migration/>" > "$tmp/m.xml"
ok "migrate begin, no seeder published: refused, says what publishes it" \
    hook_says 1 "the source has not published where it seeds disk vda (r3map-libvirt watch" \
    vm1 migrate begin - < "$tmp/m.xml"
r3map_xml "<r3map:plugin name=\"r3map-dir\">$dir</r3map:plugin>
        <r3map:migration/>
        <r3map:seeder host=\"192.0.2.1\" port=\"10811\" epoch=\"0123456789abcdef\"/>" \
    > "$tmp/m.xml"
ok "migrate begin, a disk without <geometry>: refused, says why" \
    hook_says 1 "disk vda has no <geometry>: QEMU would read it at start" \
    vm1 migrate begin - < <(sed 's|<geometry [^>]*/>||' "$tmp/m.xml")
hook A vm1 migrate begin - < "$tmp/m.xml" > "$tmp/m.out" 2> "$tmp/m.err"
ok "migrate begin with a seeder: exit 0, nothing on stderr" \
    bash -c "test $? = 0 && ! test -s '$tmp/m.err'"
ok "it prints the XML with the seeder turned into <r3map:incoming>, and nothing else changed" \
    bash -c "diff <(sed 's/<r3map:seeder /<r3map:incoming /' '$tmp/m.xml') '$tmp/m.out'"
ok "the printed XML is what prepare begin reads as incoming" bash -c "
    grep -q '<r3map:incoming host=\"192.0.2.1\" port=\"10811\" epoch=\"0123456789abcdef\"/>' '$tmp/m.out'"
ok "migrate begin starts nothing" nothing_left A
ok "a stale <r3map:incoming> is replaced, not doubled" bash -c "
    sed 's|<r3map:migration/>|<r3map:migration/><r3map:incoming host=\"h\" port=\"1\" epoch=\"0000000000000000\"/>|' '$tmp/m.xml' |
        $HOOK --config='$tmp/A.conf' vm1 migrate begin - > '$tmp/m2.out' &&
    test \$(grep -c 'r3map:incoming' '$tmp/m2.out') = 1 &&
    grep -q 'epoch=\"0123456789abcdef\"' '$tmp/m2.out'"
ok "the hook logged what it did" grep -q "vm1 vda: incoming migration, seeded by 192.0.2.1:10811" "$tmp/A/hook.log"

done_testing
