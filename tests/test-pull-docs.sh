#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The filter and the r3map command document themselves: the man pages
# are valid POD and built, every parameter in the filter's --help is
# documented in its man page, and r3map --help names its commands.

. "$srcdir/functions.sh"
requires command -v podchecker

pod="$abs_top_srcdir/filters/pull/nbdkit-r3map-pull-filter.pod"
filter="$abs_top_builddir/filters/pull/.libs/nbdkit-r3map-pull-filter.so"
ok "the filter's man page is valid POD" podchecker "$pod"
ok "the filter's man page was built" \
    test -s "$abs_top_builddir/filters/pull/nbdkit-r3map-pull-filter.1"
ok "the r3map man page is valid POD" podchecker "$abs_top_srcdir/tools/r3map.pod"
ok "the r3map man page was built" test -s "$abs_top_builddir/tools/r3map.1"

nbdkit --filter="$filter" null --help > "$tmp/help" 2>&1
params=$(sed -n 's/^\([a-z-]*\)=<.*/\1/p' "$tmp/help" |
         grep -vx size | sort -u)   # size= is the null plugin's
ok "--help lists parameters" test -n "$params"
for p in $params; do
    ok "parameter $p= is documented in the man page" \
        grep -q "^=item \(\[\)\?B<$p=>" "$pod"
done
ok "every documented parameter is in --help" \
    bash -c "for p in \$(sed -n 's/^=item \[\?B<\([a-z-]*\)=>.*/\1/p' '$pod'); do
                 grep -q \"^\$p=\" '$tmp/help' || { echo \"\$p\"; exit 1; }
             done"
ok "r3map --help names status" \
    bash -c "'$abs_top_builddir/tools/r3map' --help | grep -q '^status'"

done_testing
