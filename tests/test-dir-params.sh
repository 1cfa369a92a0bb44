#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Bad parameters: each gives exactly one error line naming the
# parameter and the reason, a non-zero exit, no crash, and leaves no
# file behind.

. "$srcdir/functions.sh"

mkdir "$tmp/empty"
touch "$tmp/afile"


ok "missing dir=" refused "dir=: required parameter missing" "$(plugin dir)" size=1M
ok "dir= that does not exist" \
    refused "dir=$tmp/nowhere: No such file or directory" "$(plugin dir)" dir="$tmp/nowhere" size=1M
ok "dir= that is a file" refused "dir=$tmp/afile: not a directory" "$(plugin dir)" dir="$tmp/afile" size=1M
ok "new disk without size=" refused "size=: required to create a new disk" "$(plugin dir)" dir="$tmp/empty"
ok "size=-1" refused "size=-1: not a size" "$(plugin dir)" dir="$tmp/empty" size=-1
ok "size=0" refused "size=0: the disk must not be empty" "$(plugin dir)" dir="$tmp/empty" size=0
ok "size=10Q" refused "size=10Q: not a size" "$(plugin dir)" dir="$tmp/empty" size=10Q
ok "size= too large" refused "size=9E: size too large" "$(plugin dir)" dir="$tmp/empty" size=9E
ok "chunk-size=3000" refused "chunk-size=3000: must be a power of 2 from 4K to 64M" "$(plugin dir)" \
    dir="$tmp/empty" size=1M chunk-size=3000
ok "chunk-size=2K" refused "chunk-size=2K: must be a power of 2" "$(plugin dir)" \
    dir="$tmp/empty" size=1M chunk-size=2K
ok "chunk-size=128M" refused "chunk-size=128M: must be a power of 2" "$(plugin dir)" \
    dir="$tmp/empty" size=1M chunk-size=128M
ok "open-files=0" refused "open-files=0: must be between 1 and" "$(plugin dir)" \
    dir="$tmp/empty" size=1M open-files=0
ok "unknown parameter" refused "unknown parameter 'colour'" "$(plugin dir)" \
    dir="$tmp/empty" size=1M colour=blue
ok "the refused starts left the directory empty" \
    test -z "$(ls -A "$tmp/empty")"

done_testing
