#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Build the test guest into DIR (the build tree's qemu-tests/guest):
#
#   build-guest.sh DIR GUEST-IO INIT
#
# - Debian's kernel: the package linux-image-amd64 points at, fetched
#   with "apt-get download" (the only download: Debian's mirror) and
#   unpacked with dpkg-deb -x; or the .deb named by R3MAP_GUEST_KERNEL_DEB.
#   Kept: vmlinuz, the uncompressed vmlinux when it carries the PVH entry
#   note (QEMU boots it directly, about twice as fast under TCG), and the
#   six virtio modules the guest needs.
# - An initramfs (cpio, newc): busybox-static, the modules, INIT as
#   /init and GUEST-IO (the static workload program) as /bin/r3map-guest-io.
#
# The kernel is kept across runs; the initramfs is rebuilt when INIT or
# GUEST-IO is newer.  Concurrent callers (parallel tests) serialise on a
# lock.  On success DIR/guest.env holds GUEST_KERNEL, GUEST_KERNEL_KIND
# (pvh or bzimage), GUEST_BZIMAGE, GUEST_INITRD and GUEST_KVER.
#
# Exit status 77 with the reason as the last line on stderr when the
# guest cannot be built on this machine (no network to Debian's mirror,
# a missing tool): the tests skip then.  A failed download is remembered
# for 10 minutes so that a suite without network skips at once.

set -euo pipefail

dir=$1 guest_io=$2 init=$3
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

unavailable ()
{
    echo "build-guest: $*" >&2
    exit 77
}

for tool in dpkg-deb cpio gzip xz readelf flock; do
    command -v $tool >/dev/null 2>&1 || unavailable "needs $tool"
done

exec 9>"$dir/.lock"
flock 9

modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev
         virtio_pci virtio_blk"

# --- The kernel ----------------------------------------------------------

# vmlinuz is xz, gzip or zstd data after a small setup stub; like the
# kernel's scripts/extract-vmlinux, try every place the magic occurs.
extract_vmlinux ()
{
    local image=$1 out=$2 magic cmd off
    for pair in '\xfd\x37\x7a\x58\x5a\x00:xz -dc --single-stream' \
                '\x1f\x8b\x08:gzip -dc' \
                '\x28\xb5\x2f\xfd:zstd -dc'; do
        magic=${pair%%:*} cmd=${pair#*:}
        command -v "${cmd%% *}" >/dev/null 2>&1 || continue
        for off in $(LC_ALL=C grep -obUaP "$magic" "$image" | cut -d: -f1 |
                     head -n 5); do
            # Trailing data after the stream makes the tools complain:
            # what counts is that an ELF image came out.
            tail -c +$((off + 1)) "$image" | $cmd > "$out" 2>/dev/null || true
            if readelf -h "$out" >/dev/null 2>&1; then
                return 0
            fi
        done
    done
    rm -f "$out"
    return 1
}

build_kernel ()
{
    local dl="$dir/download" deb pkg kver x m f
    rm -rf "$dl"
    mkdir -p "$dl"
    if [ -n "${R3MAP_GUEST_KERNEL_DEB:-}" ]; then
        deb=$R3MAP_GUEST_KERNEL_DEB
    else
        if [ -f "$dir/download-failed" ] &&
           [ -n "$(find "$dir/download-failed" -mmin -10)" ]; then
            unavailable "$(cat "$dir/download-failed") (remembered; remove" \
                "$dir/download-failed to retry)"
        fi
        # "apt-get download linux-image-6.1.*-amd64" would fetch every
        # 6.1 kernel flavour the mirror still lists (over a gigabyte):
        # take the one the linux-image-amd64 meta-package points at.
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
              sed -n 's/^ *Depends: \(linux-image-6\.1\.[^ ]*-amd64\)$/\1/p' |
              head -n 1 || true)
        if [ -z "$pkg" ]; then
            pkg=$(apt-cache pkgnames linux-image-6.1. 2>/dev/null |
                  grep -E '^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$' |
                  sort -V | tail -n 1 || true)
        fi
        if [ -z "$pkg" ]; then
            echo "no linux-image-6.1.*-amd64 known to apt (run apt-get update)" \
                > "$dir/download-failed"
            unavailable "$(cat "$dir/download-failed")"
        fi
        if ! (cd "$dl" && apt-get download -q "$pkg") > "$dl/apt.log" 2>&1; then
            sed 's/^/build-guest: apt: /' "$dl/apt.log" >&2
            echo "apt-get download $pkg failed (needs network to Debian's mirror)" \
                > "$dir/download-failed"
            unavailable "$(cat "$dir/download-failed")"
        fi
        deb=$(ls "$dl"/linux-image-*.deb)
    fi
    rm -f "$dir/download-failed"
    echo "build-guest: unpacking $(basename "$deb")" >&2
    x="$dl/x"
    dpkg-deb -x "$deb" "$x"
    f=$(ls "$x"/boot/vmlinuz-* | head -n 1)
    kver=${f##*/vmlinuz-}

    rm -rf "$dir/kernel.new"
    mkdir -p "$dir/kernel.new/modules"
    cp "$f" "$dir/kernel.new/vmlinuz"
    for m in $modules; do
        f=$(find "$x/lib/modules/$kver" -name "$m.ko" -o -name "$m.ko.xz" \
                 -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n 1)
        [ -n "$f" ] || { echo "build-guest: $kver has no module $m" >&2; exit 1; }
        case "$f" in
            *.xz)  xz -dc "$f" ;;
            *.zst) zstd -dc "$f" ;;
            *.gz)  gzip -dc "$f" ;;
            *)     cat "$f" ;;
        esac > "$dir/kernel.new/modules/$m.ko"
    done
    # PVH: an ELF note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY) lets QEMU
    # start the uncompressed kernel in 32-bit mode with no firmware.
    if extract_vmlinux "$dir/kernel.new/vmlinuz" "$dir/kernel.new/vmlinux" &&
       readelf -n "$dir/kernel.new/vmlinux" | grep -q '(0x00000012)'; then
        echo "build-guest: vmlinux has the PVH entry" >&2
    else
        rm -f "$dir/kernel.new/vmlinux"
        echo "build-guest: no PVH vmlinux: booting the bzImage" >&2
    fi
    echo "$kver" > "$dir/kernel.new/version"
    rm -rf "$dir/kernel" "$dl"
    mv "$dir/kernel.new" "$dir/kernel"
}

[ -f "$dir/kernel/version" ] || build_kernel

# --- The initramfs -------------------------------------------------------

busybox=$(command -v busybox || true)
[ -n "$busybox" ] || unavailable "needs busybox (busybox-static)"
if readelf -l "$busybox" | grep -q 'Requesting program interpreter'; then
    unavailable "$busybox is dynamically linked: needs busybox-static"
fi
if readelf -l "$guest_io" | grep -q 'Requesting program interpreter'; then
    echo "build-guest: $guest_io is not statically linked" >&2
    exit 1
fi

initrd="$dir/initrd.cpio.gz"
if [ ! -s "$initrd" ] || [ "$init" -nt "$initrd" ] ||
   [ "$guest_io" -nt "$initrd" ] || [ "$dir/kernel/version" -nt "$initrd" ]; then
    root="$dir/root"
    rm -rf "$root"
    mkdir -p "$root/bin" "$root/lib/modules" "$root/proc" "$root/sys" \
             "$root/dev" "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    cp "$guest_io" "$root/bin/r3map-guest-io"
    cp "$init" "$root/init"
    chmod 755 "$root/init" "$root/bin/busybox" "$root/bin/r3map-guest-io"
    cp "$dir"/kernel/modules/*.ko "$root/lib/modules/"
    (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) |
        gzip -1 > "$initrd.new"
    mv "$initrd.new" "$initrd"
    rm -rf "$root"
fi

{
    if [ -f "$dir/kernel/vmlinux" ]; then
        echo "GUEST_KERNEL=$dir/kernel/vmlinux"
        echo "GUEST_KERNEL_KIND=pvh"
    else
        echo "GUEST_KERNEL=$dir/kernel/vmlinuz"
        echo "GUEST_KERNEL_KIND=bzimage"
    fi
    echo "GUEST_BZIMAGE=$dir/kernel/vmlinuz"
    echo "GUEST_INITRD=$initrd"
    echo "GUEST_KVER=$(cat "$dir/kernel/version")"
} > "$dir/guest.env.new"
mv "$dir/guest.env.new" "$dir/guest.env"
