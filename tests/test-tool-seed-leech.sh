#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map seed and r3map leech: the two ends of a migration, each one
# command.  A disk migrates from `r3map seed` to `r3map leech` while a
# writer (the model checker) writes through the seeder; leech follows
# the pull, runs its hooks with the documented environment, and returns
# once every chunk is local, its server going on.  Also: the URI that
# seed prints works (plain and over TLS), seed --foreground runs
# --on-before-close before it stops nbdkit, stale sockets are replaced
# and live ones refused, and bad options are one line and exit 1.

. "$srcdir/functions.sh"
requires nbdinfo --version
requires nbdcopy --version
requires qemu-io --version

size=32M
ops=3000
if [ -n "$R3MAP_VALGRIND" ]; then ops=1000; fi

# ---- Bad options: one line each, exit 1, nothing started -------------
ok "seed: an unknown option" \
    one_error "^r3map: seed: unknown option --bogus" $R3MAP seed --bogus dir
ok "seed: an option without its value" \
    one_error "^r3map: seed: -U needs a value" $R3MAP seed -U
ok "seed: a bad port" \
    one_error "^r3map: seed: --port=0: must be between 1 and 65535" \
        $R3MAP seed --port=0 dir
ok "seed: a bad chunk size" \
    one_error "^r3map: seed: --chunk-size=3000: must be a power of 2" \
        $R3MAP seed --chunk-size=3000 dir
ok "seed: a bad --tls" \
    one_error "^r3map: seed: --tls=maybe: must be off, on or require" \
        $R3MAP seed --tls=maybe dir
ok "seed: a PSK file that is not there" \
    one_error "^r3map: seed: --tls-psk=$tmp/none: No such file" \
        $R3MAP seed --tls-psk="$tmp/none" dir
ok "seed: a Unix socket and a port" \
    one_error "^r3map: seed: --unix and --port/--ip" \
        $R3MAP seed -U "$tmp/x.sock" --port=10809 dir
ok "seed: --on-before-close without --foreground" \
    one_error "^r3map: seed: --on-before-close: .* only with --foreground" \
        $R3MAP seed --on-before-close=true dir
ok "seed: no plugin" \
    one_error "^r3map: seed: give the plugin" $R3MAP seed
ok "leech: not a URI" \
    one_error "^r3map: leech: SOURCE-URI=foo: " $R3MAP leech foo dir
ok "leech: no plugin" \
    one_error "^r3map: leech: give the source's URI" \
        $R3MAP leech nbd://localhost/
ok "leech: hooks with --detach" \
    one_error "^r3map: leech: --detach: the hooks run while" \
        $R3MAP leech -d --on-after-sync=true nbd://localhost/ dir
ok "leech: a bad --interval" \
    one_error "^r3map: leech: --interval=soon: not a duration" \
        $R3MAP leech --interval=soon nbd://localhost/ dir
ok "nothing was started by the bad commands" \
    bash -c "! ls '$tmp'/*.sock 2>/dev/null"

# ---- Documented: every option and every variable of a hook -----------
pod="$abs_top_srcdir/tools/r3map.pod"
opts=$(sed -n 's/^ *{ "\([a-z-]*\)", *[a-z]*_argument.*/\1/p' \
           "$abs_top_srcdir"/tools/{seed,leech,migrate}.c \
           "$abs_top_srcdir/tools/r3map.h" | grep -vx help | sort -u)
ok "seed, leech and migrate have options" test -n "$opts"
for o in $opts; do
    ok "--$o is documented in r3map(1)" grep -q "^=item .*B<--$o[=>]" "$pod"
done
vars=$(grep -oh '"R3MAP_[A-Z_]*"' "$abs_top_srcdir"/tools/*.c | tr -d '"' | sort -u)
ok "the hooks get variables" test -n "$vars"
for v in $vars; do
    ok "$v is documented in r3map(1)" grep -q "^=item .*C<$v>" "$pod"
done
ok "r3map --help names seed, leech and migrate" bash -c "
    '$abs_top_builddir/tools/r3map' --help > '$tmp/help' &&
    grep -q '^seed ' '$tmp/help' && grep -q '^leech ' '$tmp/help' &&
    grep -q '^migrate ' '$tmp/help'"

# ---- seed ------------------------------------------------------------
mkdir "$tmp/a" "$tmp/b"
src_sock="$tmp/src.sock"
src="nbd+unix:///?socket=$src_sock"
ok "r3map seed starts the seeder, prints its URI and returns" bash -c "
    $R3MAP seed -U '$src_sock' -P '$tmp/src.pid' --control='$tmp/a.ctl' \
        dir dir='$tmp/a' size=$size > '$tmp/seed.out' 2>>'$tmp/seed.log'
    cat '$tmp/seed.out'; test \"\$(cat '$tmp/seed.out')\" = '$src'"
[ -s "$tmp/src.pid" ] && cleanup_fn "kill -9 $(cat "$tmp/src.pid") 2>/dev/null"
ok "the seeder goes on after r3map seed returned" \
    bash -c "kill -0 \$(cat '$tmp/src.pid') && nbdinfo --size '$src'"
ok "it is r3map-dir under r3map-track: the views are listed" bash -c "
    nbdinfo --list '$src' | tee /dev/stderr | grep -q 'r3map:changed-since:0'"
ok "a second seeder on the same socket is refused, in one line" \
    one_error "^r3map: seed: --unix=$src_sock: in use by another server" \
        $R3MAP seed -U "$src_sock" dir dir="$tmp/b" size=$size

head -c $(( $(numfmt --from=iec $size) / 2 )) /dev/urandom > "$tmp/init"
truncate -s $size "$tmp/init"
nbdcopy --flush "$tmp/init" "$src"

# ---- leech, while the source is written ------------------------------
$IOTEST --quiet --ops $ops --connections 2 --max-size 262144 \
    --initial "$tmp/init" --model "$tmp/sealed.model" "$src" \
    > "$tmp/writer.out" 2>&1 &
writer=$!

dst_sock="$tmp/dst.sock"
dst="nbd+unix:///?socket=$dst_sock"
# Each hook appends one line: its phase and the variables it was given.
record='echo "$R3MAP_PHASE src=$R3MAP_SOURCE dst=$R3MAP_DEST status=$R3MAP_STATUS local=$R3MAP_CHUNKS_LOCAL total=$R3MAP_CHUNKS_TOTAL chunk=$R3MAP_CHUNK_SIZE size=$R3MAP_SIZE pulled=$R3MAP_BYTES_PULLED dirty=$R3MAP_DIRTY_CHUNKS dirty_bytes=$R3MAP_DIRTY_BYTES rounds=$R3MAP_PRECOPY_ROUNDS"'
timeout 120 $R3MAP leech -U "$dst_sock" -P "$tmp/dst.pid" \
    --status="$tmp/b.status" --state="$tmp/b.state" --interval=100ms \
    --on-chunk-is-local="$record >> '$tmp/hooks'" \
    --on-after-sync="$record >> '$tmp/hooks'" \
    "$src" dir dir="$tmp/b" size=$size precopy-interval=100ms \
    > "$tmp/leech.out" 2>>"$tmp/leech.log" &
leech=$!
cleanup_fn "kill $leech 2>/dev/null"
wait_until 60 test -s "$tmp/dst.pid"
[ -s "$tmp/dst.pid" ] && cleanup_fn "kill -9 $(cat "$tmp/dst.pid") 2>/dev/null"

wait $writer
ok "the writer ran on the source while it was pulled" test $? = 0
ok "clients of the leecher wait until finalize" bash -c "
    ! timeout 1 qemu-io -f raw -c 'read 0 512' '$dst' >/dev/null 2>&1"
ok "r3map seal seals the source" "$abs_top_builddir/tools/r3map" seal "$tmp/a.ctl"
wait $leech
leech_status=$?
sed 's/^/# /' "$tmp/leech.log"
sed 's/^/# /' "$tmp/leech.out" | grep -v '^# Pre-copy\|^# Converged\|^# Pull' || true
ok "r3map leech returned 0 once every chunk was local" test $leech_status = 0
ok "it printed the URI of the destination first" \
    test "$(head -1 "$tmp/leech.out")" = "$dst"
ok "it showed the progress bar of r3map status --follow" \
    grep -q '^Pulled  100% \[=*\] (32/32 MiB' "$tmp/leech.out"
ok "it printed the finalize and the bytes pulled" bash -c "
    grep -q '^finalized: [0-9]* chunks changed at the seal' '$tmp/leech.out' &&
    grep -q '^pulled: .* for a 32.0 MiB disk in [0-9]* ms\$' '$tmp/leech.out'"
ok "the leecher goes on after r3map leech returned, complete" bash -c "
    kill -0 \$(cat '$tmp/dst.pid') &&
    '$abs_top_builddir/tools/r3map' status '$tmp/b.status' | grep -q '^phase: *complete'"

sed 's/^/# /' "$tmp/hooks" | tail -5
json=$("$abs_top_builddir/tools/r3map" status --json "$tmp/b.status")
final=$(echo "$json" | sed 's/.*"leech_final_chunks": \([0-9]*\).*/\1/')
total=$(( $(numfmt --from=iec $size) / 65536 ))
ok "--on-after-sync ran once, with the final changed set" bash -c "
    test \$(grep -c '^after-sync ' '$tmp/hooks') = 1 &&
    grep -q '^after-sync src=$src dst=$dst status=$tmp/b.status .* chunk=65536 size=$(numfmt --from=iec $size) .*dirty=$final dirty_bytes=$((final * 65536)) rounds=[1-9]' '$tmp/hooks'"
ok "--on-chunk-is-local ran before the seal, and after it if chunks were missing then" bash -c "
    sed -n '1p' '$tmp/hooks' | grep -q '^chunk-is-local ' || exit 1
    grep -q '^after-sync .* local=$total ' '$tmp/hooks' && exit 0
    sed -n '/^after-sync/,\$p' '$tmp/hooks' | grep -q '^chunk-is-local '"
ok "each run with the environment, batched (a run per new count)" bash -c "
    grep '^chunk-is-local' '$tmp/hooks' | grep -v \
      '^chunk-is-local src=$src dst=$dst status=$tmp/b.status local=[0-9]* total=$total chunk=65536 size=[0-9]* pulled=[0-9]* dirty= dirty_bytes= rounds=\$' &&
      exit 1
    test -z \"\$(grep '^chunk-is-local' '$tmp/hooks' | cut -d' ' -f5 | uniq -d)\""
ok "its last run saw every chunk local" bash -c "
    grep '^chunk-is-local ' '$tmp/hooks' | tail -1 | grep -q ' local=$total total=$total '"

ok "the source is the writer's model" \
    $IOTEST --quiet --verify-only --initial "$tmp/sealed.model" "$src"
ok "the destination is the source at the seal, byte for byte" bash -c "
    test \"\$(nbdcopy '$src' - | sha256sum)\" = \"\$(nbdcopy '$dst' - | sha256sum)\""
ok "the seeder can go" stop_server src
ok "the destination still reads as the model" \
    $IOTEST --quiet --verify-only --initial "$tmp/sealed.model" "$dst"
ok "the leecher stops on TERM" stop_server dst

# ---- seed: a stale socket, --foreground and --on-before-close --------
ok "the stopped seeder left its socket behind (nbdkit does)" \
    test -S "$src_sock"
timeout --foreground 120 \
$R3MAP seed -f -U "$src_sock" -P "$tmp/fg.pid" --control="$tmp/fg.ctl" \
    --on-before-close="env | grep '^R3MAP_' | grep -v '^R3MAP_VALGRIND=\|^R3MAP_NBDKIT=' |
                           sort > '$tmp/close.env';
                       nbdinfo --size '$src' > '$tmp/close.size'" \
    dir dir="$tmp/a" size=$size > "$tmp/fg.out" 2>>"$tmp/seed.log" &
fg=$!                   # timeout's: it passes a TERM on to r3map alone
wait_until 60 test -s "$tmp/fg.pid"
[ -s "$tmp/fg.pid" ] && cleanup_fn "kill -9 $(cat "$tmp/fg.pid") 2>/dev/null"
ok "seed --foreground replaces that stale socket, serves, and stays" bash -c "
    nbdinfo --size '$src' && kill -0 $fg"
kill -TERM $fg
wait $fg
ok "on TERM it runs --on-before-close, then exits 0" test $? = 0
sed 's/^/# /' "$tmp/close.env"
ok "the hook ran while the seeder still served" \
    test "$(cat "$tmp/close.size" 2>/dev/null)" = "$(numfmt --from=iec $size)"
ok "the hook's environment" bash -c "
    printf '%s\n' R3MAP_CONTROL=$tmp/fg.ctl R3MAP_PHASE=before-close \
        R3MAP_SOURCE=$src | cmp - '$tmp/close.env'"
ok "then the seeder stopped" wait_until 30 _gone "$(cat "$tmp/fg.pid")"

# ---- seed over TLS: the URI it prints is the one leechers use --------
if psktool --version >/dev/null 2>&1; then
    psktool -u alice -p "$tmp/keys.psk" >/dev/null 2>&1
    ok "seed with --tls-psk prints an nbds URI with the key's user" bash -c "
        $R3MAP seed -U '$tmp/tls.sock' -P '$tmp/tls.pid' \
            --tls-psk='$tmp/keys.psk' dir dir='$tmp/a' size=$size \
            > '$tmp/tls.uri' 2>>'$tmp/seed.log'
        cat '$tmp/tls.uri'
        test \"\$(cat '$tmp/tls.uri')\" = \
            'nbds+unix://alice@/?socket=$tmp/tls.sock&tls-psk-file=$tmp/keys.psk'"
    [ -s "$tmp/tls.pid" ] && cleanup_fn "kill -9 $(cat "$tmp/tls.pid") 2>/dev/null"
    ok "a client with that URI reads the disk" \
        nbdinfo --size "$(cat "$tmp/tls.uri")"
    ok "a client without TLS is refused (TLS is required)" \
        _negate nbdinfo --size "nbd+unix:///?socket=$tmp/tls.sock"
    ok "the TLS seeder stops" stop_server tls
else
    echo "# psktool (gnutls-bin) is missing: the TLS URI is not checked"
fi

# ---- leech: a source that is not there --------------------------------
ok "leech from a source that cannot be reached: nbdkit says why, exit 1" \
    bash -c "
    $R3MAP leech -U '$tmp/lost.sock' 'nbd+unix:///?socket=$tmp/none.sock' \
        dir dir='$tmp/b' size=$size > /dev/null 2> '$tmp/lost.err'
    test \$? = 1 && cat '$tmp/lost.err' &&
    grep -q 'source=nbd+unix:///?socket=$tmp/none.sock' '$tmp/lost.err' &&
    grep -q '^r3map: leech: the leecher (nbdkit) exited before it was ready' \
        '$tmp/lost.err'"

done_testing
