#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# (make check-qemu) Managed mounts: a guest runs on r3map-pull over a
# slow remote while the disk is still being pulled, and reads what the
# remote holds (fetched on demand, ahead of the background pull).
#
# - r3map-dir: the remote is another nbdkit r3map-dir; the local copy
#   is an r3map-dir under the filter (source=).
# - r3map-s3: the remote is the bucket, r3map-s3 under the filter, the
#   local copy a cache file (cache=); what the guest writes is written
#   back to the bucket.
#
# nbdkit's rate filter makes each remote slow (256 Mbit/s): a 1 GiB
# disk then takes about 30 s to pull, and the guest is done long before.

. "$srcdir/../tests/functions.sh"
. "$srcdir/../tests/s3-server.sh"
. "$srcdir/qemu-functions.sh"
requires nbdcopy --version
requires curl --version
requires_guest
start_s3 "$tmp/s3"

pullf="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
r3map="$abs_top_builddir/tools/r3map"
GUEST_IO_HOST="$abs_top_builddir/qemu-tests/r3map-guest-io-host"

size=8M
seed=$((RANDOM * 32768 + RANDOM + 1))
work="r3map.size=$size r3map.seed=$seed"
# The pattern, made on the host.
truncate -s $size "$tmp/pattern"
"$GUEST_IO_HOST" pattern-write --size $size --seed $seed "$tmp/pattern" >/dev/null

# still_pulling STATUS-FILE: some chunks are not local yet.
still_pulling ()
{
    "$r3map" status --json "$1" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%(chunks_local)d of %(chunks_total)d chunks local" % d)
sys.exit(0 if d["chunks_local"] < d["chunks_total"] else 1)'
}

# --- r3map-dir ----------------------------------------------------------
mkdir "$tmp/remote" "$tmp/local"
nbdkit_start remote --filter=rate "$(plugin dir)" "$tmp/remote" size=1G rate=256M
must "the remote r3map-dir holds the pattern" \
    nbdcopy "$tmp/pattern" "nbd+unix:///?socket=$tmp/remote.sock"
nbdkit_start mount --filter="$pullf" "$(plugin dir)" "$tmp/local" size=1G \
    source="nbd+unix:///?socket=$tmp/remote.sock" status="$tmp/mount.status"
# shellcheck disable=SC2046
guest_run d "r3map.work=pattern-verify $work" $(disk_nbd_old "$tmp/mount.sock")
ok "r3map-pull over r3map-dir: the guest reads the remote's pattern" \
    guest_passed d pattern-verify
ok "... while the disk is still being pulled" still_pulling "$tmp/mount.status"
nbdkit_stop mount
nbdkit_stop remote

# --- r3map-s3 -------------------------------------------------------------
B=r3map-pull
make_bucket "$B" || _s3_bail "cannot create bucket $B"
s3=("$(plugin s3)" bucket="$B" key=vm1 size=1G object-size=256K
    endpoint="$S3_ENDPOINT" access-key="$S3_ACCESS_KEY" secret-key="$S3_SECRET_KEY")
must "the bucket holds the pattern" \
    nbdkit -U - "${s3[@]}" --run "nbdcopy '$tmp/pattern' \"\$uri\""
nbdkit_start s3m --filter="$pullf" --filter=rate "${s3[@]}" rate=256M \
    cache="$tmp/cache" state="$tmp/s3m.state" status="$tmp/s3m.status"
# shellcheck disable=SC2046
guest_run r "r3map.work=pattern-verify $work" $(disk_nbd_uri "$tmp/s3m.sock")
ok "r3map-pull over r3map-s3: the guest reads the bucket's pattern" \
    guest_passed r pattern-verify
ok "... while the disk is still being pulled" still_pulling "$tmp/s3m.status"

# The guest writes another pattern through the mount: its flush (at
# the end of pattern-write) returns once the writes are in the bucket.
seed2=$((seed + 1))
# shellcheck disable=SC2046
guest_run w "r3map.work=pattern-write r3map.size=$size r3map.seed=$seed2" \
    $(disk_blockdev "$tmp/s3m.sock" disk0)
ok "the guest writes through the mount" guest_passed w pattern-write
nbdkit_stop s3m
ok "what it wrote is in the bucket" \
    nbdkit -U - "${s3[@]}" --run "nbdcopy \"\$uri\" '$tmp/image' &&
        '$GUEST_IO_HOST' pattern-verify --size $size --seed $seed2 '$tmp/image'"

done_testing
