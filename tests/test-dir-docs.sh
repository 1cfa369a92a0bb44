#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The plugin documents itself: its man page is valid POD, documents
# every parameter the plugin accepts (as --dump-plugin lists them),
# and --help shows them too.

. "$srcdir/functions.sh"
requires command -v podchecker

pod="$abs_top_srcdir/plugins/dir/nbdkit-r3map-dir-plugin.pod"
ok "the man page is valid POD" podchecker "$pod"
ok "the man page was built" test -s "$abs_top_builddir/plugins/dir/nbdkit-r3map-dir-plugin.1"

ok "--dump-plugin runs" bash -c "nbdkit --dump-plugin '$(plugin dir)' > '$tmp/dump'"
ok "--dump-plugin lists the parameters" grep -q "^r3map_dir_parameters=" "$tmp/dump"
ok "--dump-plugin reports the thread model parallel" grep -qx "thread_model=parallel" "$tmp/dump"
nbdkit "$(plugin dir)" --help > "$tmp/help" 2>&1
for p in $(sed -n 's/^r3map_dir_parameters=//p' "$tmp/dump" | tr , ' '); do
    ok "parameter $p= is documented in the man page" \
        grep -q "^=item \(\[\)\?B<$p=>" "$pod"
    ok "parameter $p= is in --help" grep -q "^$p=" "$tmp/help"
done

done_testing
