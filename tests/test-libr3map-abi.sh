#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# libr3map as installed: "make install DESTDIR=" puts the header, the
# library, libr3map.pc and the man pages in place; a program built
# against them with "pkg-config --cflags --libs libr3map" (and nothing
# from the build tree) links, loads the installed library and runs;
# the library exports its API, under a version node, and nothing else.

. "$srcdir/functions.sh"
requires pkg-config --version
requires nm --version
: "${CC:=cc}"
requires $CC --version

inst="$tmp/inst"
ok "make install DESTDIR=... of libr3map" \
    make -s -C "$abs_top_builddir/libr3map" install DESTDIR="$inst"
pc=$(find "$inst" -name libr3map.pc)
ok "...installs libr3map.pc" test -f "$pc"
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR="$inst"
unset PKG_CONFIG_LIBDIR
# pkgconf puts the sysroot in front of variables, pkg-config does not.
in_inst () { case $1 in "$inst"/*) echo "$1" ;; *) echo "$inst$1" ;; esac; }
incdir=$(in_inst "$(pkg-config --variable=includedir libr3map)")
libdir=$(in_inst "$(pkg-config --variable=libdir libr3map)")
ok "...the header" test -f "$incdir/libr3map.h"
ok "...the library" test -f "$libdir/libr3map.so.0"
ok "...the man pages" \
    eval "for p in libr3map r3map_map r3map_sync r3map_unmap; do
              test -n \"\$(find '$inst' -name \$p.3)\" || exit 1; done"
version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"/\1/p' "$abs_top_builddir/config.h")
ok "pkg-config --modversion is r3map's version ($version)" \
    test "$(pkg-config --modversion libr3map)" = "$version"

ok "the header compiles alone as strict C99" \
    eval "echo '#include <libr3map.h>' |
          $CC -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only \
              \$(pkg-config --cflags libr3map) -x c -"

# The example, copied out of the tree so that no build-tree header or
# library can be found by accident.
cp "$abs_top_srcdir/examples/checksum.c" "$tmp/prog.c"
ok "a program built with pkg-config --cflags --libs libr3map" \
    eval "$CC ${SANITIZER_CFLAGS:-} -o '$tmp/prog' '$tmp/prog.c' \
              \$(pkg-config --cflags --libs libr3map)"
ok "...needs libr3map.so.0 and finds the installed one" \
    eval "LD_LIBRARY_PATH='$libdir' ldd '$tmp/prog' |
          grep -q 'libr3map.so.0 => $libdir/libr3map.so.0'"

if [ -n "$R3MAP_VALGRIND" ]; then
    skip_check "running it: valgrind does not implement userfaultfd(2)"
else
    head -c 3M /dev/urandom > "$tmp/disk"
    start_server remote file "$tmp/disk"
    ok "...and runs: the export's CRC, as cksum(1) says" \
        test "$(LD_LIBRARY_PATH="$libdir" "$tmp/prog" "$(cat "$tmp/remote.uri")")" \
             = "$(cksum < "$tmp/disk")"
fi

ok "nm reads the installed library" \
    eval "nm -D --defined-only '$libdir/libr3map.so.0' > '$tmp/syms'"
sed 's/^/# /' "$tmp/syms"
ok "the library exports the API and nothing else" \
    test "$(awk '$2 == "T" { print $3 }' "$tmp/syms" | sort | tr '\n' ' ')" \
        = "r3map_get_errno@@LIBR3MAP_0.1 r3map_get_error@@LIBR3MAP_0.1 r3map_map@@LIBR3MAP_0.1 r3map_sync@@LIBR3MAP_0.1 r3map_unmap@@LIBR3MAP_0.1 "
ok "...no data symbols" test -z "$(awk '$2 ~ /^[BDGRS]$/' "$tmp/syms")"

done_testing
