#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Sparseness: only written chunks have files; trim and zero of whole
# chunks delete them; block status reports missing chunks as holes.

. "$srcdir/functions.sh"
requires qemu-io --version
requires nbdinfo --version

d="$tmp/disk"
mkdir "$d"
chunks () { find "$d" -name '[0-9a-f]*' -type f ! -name '*.meta' | sed 's|.*/||' | sort | tr '\n' ' '; }

# 64K chunks: write into chunks 1, 2 and 5 (the write at 131000
# straddles chunks 1 and 2).
ok "writes create only the chunks they touch" \
    nbdkit -U - "$(plugin dir)" "$d" size=1M \
        --run "qemu-io -f raw -c 'write -P 1 131000 10000' -c 'write -P 2 327680 10' \"\$uri\""
ok "chunk files are 1, 2 and 5" \
    test "$(chunks)" = "0000000000000001 0000000000000002 0000000000000005 "

ok "block status reports the missing chunks as holes" \
    nbdkit -U - "$(plugin dir)" "$d" \
        --run "nbdinfo --map \"\$uri\" > '$tmp/map'"
cat > "$tmp/map.expected" <<'MAP'
         0       65536    3  hole,zero
     65536      131072    0  data
    196608      131072    3  hole,zero
    327680       65536    0  data
    393216      655360    3  hole,zero
MAP
ok "map is exactly the written chunks" diff -u "$tmp/map.expected" "$tmp/map"

# Trim all of chunk 1 and part of chunk 2; zero all of chunk 5.
ok "trim and zero" \
    nbdkit -U - "$(plugin dir)" "$d" \
        --run "qemu-io -f raw -d unmap -c 'discard 65536 70000' -c 'write -z 327680 65536' \
                  -c 'read -P 0 65536 70000' -c 'read -P 1 135536 5464' \
                  -c 'read -P 0 327680 65536' \"\$uri\" > '$tmp/out' 2>&1 &&
               ! grep -q -i fail '$tmp/out'"
ok "whole chunks trimmed or zeroed are deleted, partial ones kept" \
    test "$(chunks)" = "0000000000000002 "

done_testing
