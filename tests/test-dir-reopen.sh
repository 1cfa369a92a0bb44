#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A disk keeps its data and geometry across restarts; a restart that
# asks for another size or chunk size is refused with one clear line
# and leaves the directory exactly as it was.

. "$srcdir/functions.sh"
requires nbdcopy --version

d="$tmp/disk"
mkdir "$d"
head -c 3M /dev/urandom > "$tmp/in"
ok "create a 3M disk and write it" \
    nbdkit -U - "$(plugin dir)" "$d" size=3M chunk-size=16K \
        --run "nbdcopy '$tmp/in' \"\$uri\""

snapshot () { (cd "$d" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
before=$(snapshot)

ok "reopen without size= reads the same data" \
    nbdkit -U - "$(plugin dir)" "$d" \
        --run "nbdcopy \"\$uri\" '$tmp/out' && nbdinfo --size \"\$uri\" > '$tmp/size'"
ok "reopened data is identical" cmp "$tmp/in" "$tmp/out"
ok "reopened size is the recorded one" test "$(cat "$tmp/size")" = 3145728
ok "reopen with the same size= and chunk-size= is accepted" \
    nbdkit -U - "$(plugin dir)" "$d" size=3M chunk-size=16K --run true
ok "reopen with another size= is refused with one line" \
    refused "size=4M: the disk in dir=.* has size 3145728" \
        "$(plugin dir)" "$d" size=4M
ok "reopen with another chunk-size= is refused with one line" \
    refused "chunk-size=64K: the disk in dir=.* has chunk-size 16384" \
        "$(plugin dir)" "$d" chunk-size=64K
ok "the refused reopens changed nothing" test "$before" = "$(snapshot)"

# A damaged metadata file is refused, never trusted.
cp "$d/r3map-dir.meta" "$tmp/meta"
echo "size=oops" >> "$d/r3map-dir.meta"
ok "a damaged r3map-dir.meta is refused" \
    refused "r3map-dir.meta is damaged" "$(plugin dir)" "$d"
cp "$tmp/meta" "$d/r3map-dir.meta"

done_testing
