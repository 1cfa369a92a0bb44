#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A disk migrates between two "hosts" A and B (each with its own
# configuration, run and state directories), driven only by the hook
# calls libvirt makes, with the XML libvirt passes:
#
#   A  prepare begin             seeder + TLS gateway
#      (r3map-libvirt watch publishes <r3map:seeder>: done here by hand)
#   B  migrate begin             prints the XML with <r3map:incoming>
#   B  prepare begin             leecher from A's gateway
#   A  release end               QEMU gone: seal, retire in the background
#   B  (finalizes; the disk is A's at the seal, byte for byte)
#   A  (retires once B let go: seeder stopped, old copy renamed aside)
#   B  release end               stopped, its copy whole
#
# then a migration B -> C that fails (C's partial copy goes, B goes
# on), a stale note of where the disk is seeded, refused, and a
# migration B -> C with precopy="off" (a pure post-copy: C's
# r3map-pull copies nothing before the seal).

. "$srcdir/functions.sh"
. "$srcdir/hook-functions.sh"
requires psktool --version
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version

r3map="$abs_top_builddir/tools/r3map"
uuid=9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d
for h in A B C; do host_config $h; done
domain_xml vm1 $uuid > "$tmp/orig.xml"
mkdir "$tmp/A/disk"
$R3LV attach --config="$tmp/A.conf" --plugin=r3map-dir --migration \
    --socket="$tmp/vda.sock" "$tmp/orig.xml" dir=/HOSTDIR size=16M > "$tmp/vm1.xml"
# The same domain XML, as each host sees its own paths.
xml_for () { sed "s|/HOSTDIR|$tmp/$1/disk|; s|$tmp/vda.sock|$tmp/$1/vda.sock|"; }
xml_for A < "$tmp/vm1.xml" > "$tmp/A.xml"

# The nbdkit the hook started for HOST's disk pulls from a seeder
# (source=), and its only precopy= argument is WANT (none if empty).
pull_precopy_is ()
{
    local pid args
    pid=$(cat "$(run_dir "$1" $uuid)/vda.pid") || return 1
    args=$(tr '\0' '\n' < "/proc/$pid/cmdline") || return 1
    echo "$args"
    grep -q '^source=nbds://' <<< "$args" &&
        [ "$(grep '^precopy=' <<< "$args")" = "$2" ]
}

# What r3map-libvirt watch does on the source when the domain starts.
publish ()
{
    local h p e
    read -r h p e < "$(run_dir "$1" $uuid)/vda.seed"
    sed "s|<r3map:migration/>|<r3map:migration/><r3map:seeder host=\"$h\" port=\"$p\" epoch=\"$e\"/>|"
}

ok "A: prepare begin" hook A vm1 prepare begin - < "$tmp/A.xml"
A_uri="nbd+unix:///?socket=$tmp/A/vda.sock"
head -c 16M /dev/urandom > "$tmp/data"
ok "A: the guest writes the whole disk" nbdcopy --flush "$tmp/data" "$A_uri"

publish A < "$tmp/vm1.xml" | xml_for B > "$tmp/B-in.xml"
ok "B: migrate begin" bash -c "
    $HOOK --config='$tmp/B.conf' vm1 migrate begin - < '$tmp/B-in.xml' > '$tmp/B.xml'"
ok "B: prepare begin starts the leecher" hook B vm1 prepare begin - < "$tmp/B.xml"
B_uri="nbd+unix:///?socket=$tmp/B/vda.sock"
B_run=$(run_dir B $uuid)
ok "B: it made the local copy's directory" test -d "$tmp/B/disk"
ok "B: its r3map-pull pre-copies: no precopy= argument by default" \
    pull_precopy_is B ""
ok "B: its clients wait until finalize" bash -c "
    ! timeout 2 qemu-io -f raw -c 'read 0 512' '$B_uri' >/dev/null 2>&1"
ok "B: and B seeds it on: it has a gateway too" test -s "$B_run/vda.seed"

# The guest goes on writing on A during the pre-copy.
ok "A: the guest writes more while B pulls" \
    qemu-io -f raw -c "write -P 0x5a 1M 3M" -c "write -P 0xa5 12M 64k" -c flush "$A_uri"
ok "A: release end (QEMU gone after the switch-over)" \
    hook A vm1 release end - < "$tmp/A.xml"
ok "A: it sealed the seeder and retires in the background" bash -c "
    grep -q 'vm1 vda: migrated away (sealed at write' '$tmp/A/hook.log' &&
    test -s '$(run_dir A $uuid)/vda.retire.pid'"
ok "B: finalized" timeout 60 "$r3map" finalize --timeout=30s "$B_run/vda.status"
ok "B: the disk is what A held at the seal" bash -c "
    nbdcopy '$A_uri' - > '$tmp/A.img' && nbdcopy '$B_uri' - | cmp - '$tmp/A.img'"
ok "  (and A held the guest's last writes)" \
    qemu-io -f raw -c "read -P 0x5a 1M 3M" -c "read -P 0xa5 12M 64k" "$B_uri"
ok "B: the guest writes on B" qemu-io -f raw -c "write -P 0x77 0 64k" -c flush "$B_uri"
ok "A: once B holds every chunk it lets go, and A's seeder stops" \
    wait_until 60 nothing_left A
ok "A: its old copy is renamed aside, not left as the disk" bash -c "
    ! test -e '$tmp/A/disk' && ls -d '$tmp/A/disk.migrated-'* &&
    grep -q 'the destination let go of the disk: seeder stopped' '$tmp/A/hook.log'"
ok "B: still serves every byte, with A gone" bash -c "
    qemu-io -f raw -c 'read -P 0x77 0 64k' -c 'read -P 0x5a 1M 3M' '$B_uri' >/dev/null &&
    nbdcopy '$B_uri' - | cmp -i 65536 - '$tmp/A.img'"
ok "B: release end" hook B vm1 release end - < "$tmp/B.xml"
ok "B: nothing left, and the whole copy needs no state file" bash -c "
    ! ls '$tmp/B/state/'*.state 2>/dev/null" 
ok "  (no process)" nothing_left B
ok "B: started again (no incoming now), it is the disk" bash -c "
    xml=\$(sed 's|<r3map:incoming [^>]*/>||' '$tmp/B.xml')
    $HOOK --config='$tmp/B.conf' vm1 prepare begin - <<< \"\$xml\" &&
    qemu-io -f raw -c 'read -P 0x77 0 64k' -c 'read -P 0xa5 12M 64k' '$B_uri' >/dev/null"

# --- B -> C, cancelled ---------------------------------------------------
sed 's|<r3map:incoming [^>]*/>||' "$tmp/B.xml" > "$tmp/B2.xml"
publish B < "$tmp/B2.xml" | sed "s|$tmp/B/|$tmp/C/|g" > "$tmp/C-in.xml"
ok "C: migrate begin and prepare begin" bash -c "
    $HOOK --config='$tmp/C.conf' vm1 migrate begin - < '$tmp/C-in.xml' > '$tmp/C.xml' &&
    $HOOK --config='$tmp/C.conf' vm1 prepare begin - < '$tmp/C.xml'"
ok "C: it pulls" wait_until 30 bash -c "
    '$r3map' status '$(run_dir C $uuid)/vda.status' | grep -q 'local: *[1-9]'"
ok "C: release end before any seal (the migration was cancelled)" \
    hook C vm1 release end - < "$tmp/C.xml"
ok "C: the partial copy is removed, nothing left" bash -c "
    ! test -e '$tmp/C/disk' && ! ls '$tmp/C/state/'*.state 2>/dev/null &&
    grep -q 'the incoming migration did not finish: leecher stopped, partial copy removed' '$tmp/C/hook.log'"
ok "  (no process)" nothing_left C
ok "B: goes on, not sealed, not retiring" bash -c "
    qemu-io -f raw -c 'write -P 0x11 2M 64k' '$B_uri' >/dev/null &&
    ! test -e '$(run_dir B $uuid)/vda.retire.pid'"

# --- Stale notes -----------------------------------------------------------
sed 's|epoch="[0-9a-f]*"|epoch="0000000000000000"|' "$tmp/C.xml" > "$tmp/stale.xml"
ok "C: an <r3map:incoming> whose epoch is not the seeder's is refused" bash -c "
    $HOOK --config='$tmp/C.conf' vm1 prepare begin - < '$tmp/stale.xml' 2> '$tmp/e';
    test \$? = 1 && cat '$tmp/e' && grep -q 'is not the one the domain XML names (epoch' '$tmp/e'"
ok "  nothing left, no directory made" bash -c "! test -e '$tmp/C/disk'"
ok "  (no process)" nothing_left C
mkdir -p "$tmp/C/disk" && echo old > "$tmp/C/disk/old"
ok "C: an incoming migration into a directory that holds something is refused" bash -c "
    $HOOK --config='$tmp/C.conf' vm1 prepare begin - < '$tmp/C.xml' 2> '$tmp/e';
    test \$? = 1 && cat '$tmp/e' && grep -q 'is not empty: an incoming migration needs an empty' '$tmp/e' &&
    test -e '$tmp/C/disk/old'"
ok "  (no process)" nothing_left C

# --- B -> C, precopy="off" -------------------------------------------------
rm -rf "$tmp/C/disk"
publish B < "$tmp/B2.xml" |
    sed "s|$tmp/B/|$tmp/C/|g; s|<r3map:migration/>|<r3map:migration precopy=\"off\"/>|" \
    > "$tmp/C-in.xml"
ok "C: migrate begin and prepare begin, precopy=\"off\"" bash -c "
    grep -q '<r3map:migration precopy=\"off\"/>' '$tmp/C-in.xml' &&
    $HOOK --config='$tmp/C.conf' vm1 migrate begin - < '$tmp/C-in.xml' > '$tmp/C.xml' &&
    $HOOK --config='$tmp/C.conf' vm1 prepare begin - < '$tmp/C.xml'"
C_run=$(run_dir C $uuid)
ok "C: its r3map-pull has precopy=off" pull_precopy_is C precopy=off
ok "C: the pre-copy rounds converge" wait_until 30 bash -c "
    '$r3map' status '$C_run/vda.status' | grep -q '^phase: *waiting for the seal'"
sleep 1
ok "C: and it copied nothing before the seal" bash -c "
    '$r3map' status '$C_run/vda.status' | tee /dev/stderr | grep -q '^local: .*, 0 of [1-9][0-9]* chunks'"
ok "B: the guest's last write" bash -c "
    qemu-io -f raw -c 'write -P 0x33 5M 64k' -c flush '$B_uri' >/dev/null &&
    nbdcopy '$B_uri' - > '$tmp/B.img'"
ok "B: release end (QEMU gone after the switch-over)" \
    hook B vm1 release end - < "$tmp/B2.xml"
ok "C: finalized" timeout 60 "$r3map" finalize --timeout=30s "$C_run/vda.status"
C_uri="nbd+unix:///?socket=$tmp/C/vda.sock"
ok "C: the disk is what B held at the seal" bash -c "
    nbdcopy '$C_uri' - | cmp - '$tmp/B.img'"
ok "B: once C holds every chunk it lets go, and B's seeder stops" \
    wait_until 60 nothing_left B
ok "C: the whole disk was pulled after the seal" bash -c "
    '$r3map' status '$C_run/vda.status' | grep -q '^phase: *complete'"
ok "C: release end" hook C vm1 release end - < "$tmp/C.xml"
ok "  (no process)" nothing_left C
done_testing
