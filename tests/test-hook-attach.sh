#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map-libvirt attach: what it adds to a domain's XML (the NBD disk
# and its r3map metadata, indented like their neighbours), that it
# changes nothing else, that the hook accepts what it writes, and that
# bad arguments are refused with one line naming them, the file left
# untouched.

. "$srcdir/functions.sh"
. "$srcdir/hook-functions.sh"
requires psktool --version

uuid=0b7e7c3a-1f9d-4c55-8a0e-55d1a2b3c4d5
host_config A
domain_xml vm1 $uuid > "$tmp/vm1.xml"
cp "$tmp/vm1.xml" "$tmp/orig.xml"

attach ()
{
    $R3LV attach --config="$tmp/A.conf" "$@"
}

ok "attach writes the XML to stdout" bash -c "
    $R3LV attach --config='$tmp/A.conf' --plugin=r3map-dir --migration \
        --tls-psk=/etc/r3map/k.psk --pull-priority=0-64M \
        '$tmp/vm1.xml' dir=/var/lib/r3map/vm1-vda size=20G > '$tmp/out.xml'"
ok "and leaves the file alone" cmp "$tmp/vm1.xml" "$tmp/orig.xml"

# The only changes: added lines (after libxml2's double quotes).
diff <(tr "'" '"' < "$tmp/orig.xml") "$tmp/out.xml" > "$tmp/diff"
ok "nothing of the domain changed, only lines were added" \
    bash -c "cat '$tmp/diff'; ! grep -q '^[<-]' '$tmp/diff'"
ok "the disk QEMU sees: NBD on the hook's socket, after the other disks" bash -c "
    grep -A9 '<target dev=\"hdc\"' '$tmp/out.xml' | tr -d '\n' | grep -q \
    '</disk>    <disk type=\"network\" device=\"disk\">      <driver name=\"qemu\" type=\"raw\" cache=\"none\" error_policy=\"stop\"/>      <source protocol=\"nbd\">        <host transport=\"unix\" socket=\"$tmp/A/run/$uuid/vda.sock\"/>      </source>      <target dev=\"vda\" bus=\"virtio\"/>      <geometry cyls=\"41610\" heads=\"16\" secs=\"63\"/>    </disk>'"
ok "without size=, a geometry all the same" bash -c "
    $R3LV attach --config='$tmp/A.conf' --plugin=memory '$tmp/orig.xml' |
        grep -q '<geometry cyls=\"16383\" heads=\"16\" secs=\"63\"/>'"
ok "the metadata, in the r3map namespace, indented" bash -c "
    sed -n '/<metadata>/,/<\/metadata>/p' '$tmp/out.xml' | tee /dev/stderr | diff - <(cat <<'XML'
  <metadata>
    <r3map:domain xmlns:r3map=\"urn:r3map:libvirt:1\">
      <r3map:disk target=\"vda\">
        <r3map:plugin name=\"r3map-dir\">
          <r3map:param name=\"dir\">/var/lib/r3map/vm1-vda</r3map:param>
          <r3map:param name=\"size\">20G</r3map:param>
        </r3map:plugin>
        <r3map:migration tls-psk=\"/etc/r3map/k.psk\" pull-priority=\"0-64M\"/>
      </r3map:disk>
    </r3map:domain>
  </metadata>
XML
)"
ok "the hook reads it as an r3map domain (and refuses its missing directory)" bash -c "
    $HOOK --config='$tmp/A.conf' vm1 prepare begin - < '$tmp/out.xml' 2>&1 |
        grep -q 'dir=/var/lib/r3map/vm1-vda: No such file or directory'"

ok "a second disk, in place" attach --in-place --target=vdb --plugin=r3map-dir \
    "$tmp/vm1.xml" dir=/var/lib/r3map/vm1-vdb
ok "the file now has it" grep -q '<target dev="vdb" bus="virtio"/>' "$tmp/vm1.xml"
cp "$tmp/vm1.xml" "$tmp/before.xml"
ok "the same target again is refused" bash -c "
    $R3LV attach --config='$tmp/A.conf' --in-place --target=vdb --plugin=r3map-dir \
        '$tmp/vm1.xml' dir=/x 2>&1 | grep -q 'disk vdb already has r3map metadata (--replace'"
ok "and the file is untouched" cmp "$tmp/vm1.xml" "$tmp/before.xml"
ok "--replace replaces both, in place" bash -c "
    $R3LV attach --config='$tmp/A.conf' --in-place --replace --target=vdb \
        --plugin=r3map-dir '$tmp/vm1.xml' dir=/y &&
    test \$(grep -c '<target dev=\"vdb\"' '$tmp/vm1.xml') = 1 &&
    test \$(grep -c 'r3map:disk target=\"vdb\"' '$tmp/vm1.xml') = 1 &&
    grep -q '<r3map:param name=\"dir\">/y</r3map:param>' '$tmp/vm1.xml'"
ok "--replace of the same disk twice gives the same file" bash -c "
    cp '$tmp/vm1.xml' '$tmp/r1.xml' &&
    $R3LV attach --config='$tmp/A.conf' --in-place --replace --target=vdb \
        --plugin=r3map-dir '$tmp/vm1.xml' dir=/y && cmp '$tmp/vm1.xml' '$tmp/r1.xml'"
ok "--precopy=off writes precopy=\"off\", and implies the migration element" bash -c "
    $R3LV attach --config='$tmp/A.conf' --plugin=memory --target=vdc \
        --precopy=off '$tmp/orig.xml' size=1M | tee '$tmp/p.xml' |
        grep -q '^        <r3map:migration precopy=\"off\"/>\$'"
ok "and the hook reads it" bash -c "
    $HOOK --config='$tmp/A.conf' vm1 migrate begin - < '$tmp/p.xml' 2>&1 |
        grep -q 'has not published where it seeds disk vdc'"
ok "a value with XML characters is escaped" bash -c "
    $R3LV attach --config='$tmp/A.conf' --plugin=memory --target=vdc \
        '$tmp/orig.xml' 'size=1M' 'x=<a&b>' | grep -q '<r3map:param name=\"x\">&lt;a&amp;b&gt;</r3map:param>'"

refused_attach ()
{
    local pattern=$1 status
    shift
    cp "$tmp/orig.xml" "$tmp/t.xml"
    $R3LV attach --config="$tmp/A.conf" --in-place "$@" > "$tmp/o" 2> "$tmp/e"
    status=$?
    cat "$tmp/e"
    test $status != 0 && test "$(grep -c . "$tmp/e")" = 1 &&
        grep -q -- "$pattern" "$tmp/e" && cmp "$tmp/t.xml" "$tmp/orig.xml" &&
        ! test -s "$tmp/o"
}
ok "no --plugin" refused_attach "--plugin=NAME is required" "$tmp/t.xml"
ok "a plugin path" refused_attach "--plugin=/x.so: not a plugin name" \
    --plugin=/x.so "$tmp/t.xml"
ok "a reserved parameter" refused_attach "source=nbd://x: the hook sets source itself" \
    --plugin=r3map-dir "$tmp/t.xml" source=nbd://x
ok "a parameter without =" refused_attach "dir: plugin parameters are KEY=VALUE" \
    --plugin=r3map-dir "$tmp/t.xml" dir
ok "a relative dir=" refused_attach "dir=x: must be an absolute path" \
    --plugin=r3map-dir "$tmp/t.xml" dir=x
ok "a bad chunk size" refused_attach "--chunk-size=3K: must be a power of 2" \
    --plugin=r3map-dir --chunk-size=3K "$tmp/t.xml" dir=/x
ok "a target that is a path" refused_attach "--target=../a: not a disk target" \
    --plugin=r3map-dir --target=../a "$tmp/t.xml" dir=/x
ok "a bad source-copy" refused_attach "--source-copy=shred: must be rename or remove" \
    --plugin=r3map-dir --source-copy=shred "$tmp/t.xml" dir=/x
ok "a bad precopy" refused_attach "--precopy=maybe: must be on or off" \
    --plugin=r3map-dir --precopy=maybe "$tmp/t.xml" dir=/x
ok "a file that is not XML" bash -c "
    echo 'not xml' > '$tmp/n.xml';
    $R3LV attach --plugin=r3map-dir '$tmp/n.xml' dir=/x 2>&1 | grep -q 'not well-formed'"
ok "a domain without <uuid>" bash -c "
    grep -v '<uuid>' '$tmp/orig.xml' > '$tmp/nu.xml';
    $R3LV attach --plugin=r3map-dir '$tmp/nu.xml' dir=/x 2>&1 | grep -q 'the domain has no <uuid>'"
ok "a missing file" bash -c "
    $R3LV attach --plugin=r3map-dir '$tmp/none.xml' dir=/x 2>&1 | grep -q 'none.xml'"

done_testing
