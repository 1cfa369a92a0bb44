#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The frontends document themselves: libr3map's man pages are valid
# POD and built (the function names lead to r3map_map(3)), every
# function the library exports and every flag in <libr3map.h> is in
# r3map_map(3), and every option of "r3map mount --help" is in r3map(1).

. "$srcdir/functions.sh"
requires command -v podchecker

lib="$abs_top_srcdir/libr3map"
for p in libr3map r3map_map; do
    ok "$p(3) is valid POD" podchecker "$lib/$p.pod"
done
for p in libr3map r3map_map r3map_sync r3map_unmap; do
    ok "$p.3 was built" test -s "$abs_top_builddir/libr3map/$p.3"
done
ok "r3map_sync.3 and r3map_unmap.3 lead to r3map_map.3" \
    eval "grep -qx '.so man3/r3map_map.3' '$abs_top_builddir/libr3map/r3map_sync.3' &&
          grep -qx '.so man3/r3map_map.3' '$abs_top_builddir/libr3map/r3map_unmap.3'"

funcs=$(sed -n 's/^ *\(r3map_[a-z_]*\);$/\1/p' "$lib/libr3map.syms")
ok "libr3map.syms exports functions" test -n "$funcs"
for f in $funcs; do
    ok "$f is in r3map_map(3)'s synopsis and in libr3map.h" \
        eval "grep -q '^ .* \**$f (' '$lib/r3map_map.pod' &&
              grep -q '^extern .* \**$f (' '$lib/libr3map.h'"
done
flags=$(sed -n 's/^#define \(R3MAP_[A-Z_]*\) .*/\1/p' "$lib/libr3map.h")
ok "libr3map.h defines flags" test -n "$flags"
for f in $flags; do
    ok "flag $f is described in r3map_map(3)" \
        grep -q "^=item C<$f>" "$lib/r3map_map.pod"
done

r3map="$abs_top_builddir/tools/r3map"
ok "r3map --help names mount" eval "'$r3map' --help | grep -q '^mount'"
opts=$("$r3map" mount --help | grep -o -- '--[a-z]\+' | sort -u)
ok "r3map mount --help lists options" test -n "$opts"
for o in $opts; do
    ok "mount option $o is documented in r3map(1)" \
        grep -q "^=item .*B<$o\\b" "$abs_top_srcdir/tools/r3map.pod"
done

done_testing
