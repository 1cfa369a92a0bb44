#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map-s3 against s3rver behind the SigV4-verifying proxy
# (s3-server.sh): the random I/O model checker, an nbdcopy round trip,
# the documented object layout, single-object mode, a wrong secret, an
# outage of the server, bad parameters and the man page.

. "$srcdir/functions.sh"
. "$srcdir/s3-server.sh"
requires curl --version
requires /usr/bin/aws --version
requires nbdcopy --version
requires nbdinfo --version
requires qemu-io --version
start_s3 "$tmp/s3"

B=r3map-test
make_bucket "$B" || _s3_bail "cannot create bucket $B"

creds="endpoint=$S3_ENDPOINT access-key=$S3_ACCESS_KEY secret-key=$S3_SECRET_KEY"
s3 ()
{
    nbdkit -U - "$(plugin s3)" bucket="$B" $creds "$@"
}
# For the checks that run in bash -c.
export NBDKIT_BIN _valgrind R3MAP_VALGRIND B creds tmp abs_top_builddir
export S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION
export -f nbdkit _wrap s3 s3_aws plugin

# --- The model checker ----------------------------------------------
# The test server (s3rver) is single-threaded and answers a few hundred
# requests a second on an idle machine: 2000 operations are the bulk
# of this test's time (a quarter of it under valgrind: model_ops).
ops=$(model_ops 2000)
ok "$ops random ops on 4 connections match the model" \
    s3 key=disk size=16M object-size=64K \
        --run "$IOTEST --quiet --ops $ops --connections 4 --max-size 131072 \
                   --trim-reads-zero --model '$tmp/disk.model' \"\$uri\""
ok "the disk after a restart is the model's" \
    s3 key=disk size=16M object-size=64K connections=1 \
        --run "$IOTEST --quiet --verify-only --initial '$tmp/disk.model' \"\$uri\""

# --- nbdcopy round trip -----------------------------------------------
head -c $((8 * 1024 * 1024)) /dev/urandom > "$tmp/in"
ok "nbdcopy of random data in" \
    s3 key=copy size=8M object-size=256K \
        --run "nbdcopy --connections=4 '$tmp/in' \"\$uri\""
ok "nbdcopy out: same sha256" bash -c "
    s3 key=copy size=8M object-size=256K --run 'nbdcopy \"\$uri\" $tmp/out' &&
    test \"\$(sha256sum < $tmp/in)\" = \"\$(sha256sum < $tmp/out)\""
ok "the copy is 32 objects copy/%016x" bash -c "
    s3_aws s3 ls s3://$B/copy/ > $tmp/ls && cat $tmp/ls &&
    test \$(grep -c ' 262144 [0-9a-f]\{16\}\$' $tmp/ls) = 32 &&
    grep -q ' 000000000000001f\$' $tmp/ls"

# --- Object layout, missing objects, trim ------------------------------
qio ()
{
    s3 key=layout size=1M object-size=64K \
        --run "qemu-io -f raw $(printf " -c '%s'" "$@") \"\$uri\""
}
export -f qio
ok "write part of object 0 and the whole of object 5" \
    qio "write -P 0x78 10 100" "write -P 0x79 327680 65536"
ok "the objects are layout/0000000000000000 and layout/0000000000000005" \
    bash -c "
    s3_aws s3 ls s3://$B/layout/ | tee /dev/stderr | awk '{print \$3, \$4}' |
        tr '\n' ' ' | grep -qx '65536 0000000000000000 65536 0000000000000005 '"
ok "the data reads back, missing objects as zeros" \
    qio "read -P 0 0 10" "read -P 0x78 10 100" "read -P 0 110 327570" \
        "read -P 0x79 327680 65536" "read -P 0 393216 655360"
ok "a wrong pattern is noticed (qemu-io exits non-zero)" \
    _negate qio "read -P 0x79 10 100"
ok "a write spanning three objects, unaligned" \
    qio "write -P 0x33 120000 140000" "read -P 0x33 120000 140000" \
        "read -P 0x78 10 100" "read -P 0 260000 67680" "read -P 0x79 327680 65536"
ok "trim of objects 5-15 and part of 4 deletes object 5" \
    qio "discard 300000 748576" "read -P 0 300000 748576" "read -P 0x33 200000 60000"
ok "object 5 is gone, 0-4 remain" bash -c "
    s3_aws s3 ls s3://$B/layout/ | awk '{print \$4}' | tr '\n' ' ' |
        grep -qx '0000000000000000 0000000000000001 0000000000000002 0000000000000003 0000000000000004 '"
ok "partial zero keeps its neighbours" \
    qio "write -z 20 10" "read -P 0x78 10 10" "read -P 0 20 10" "read -P 0x78 30 80"
head -c 131072 /dev/zero > "$tmp/big"
s3_aws s3 cp --quiet "$tmp/big" "s3://$B/layout/0000000000000008"
ok "an object larger than object-size: EIO with a clear message" bash -c "
    ! qio 'read 524288 4096' 2>$tmp/bigerr; cat $tmp/bigerr;
    grep -q 'key=layout/0000000000000008: the object is larger than object-size=65536' $tmp/bigerr"

# --- Block status ----------------------------------------------------
# Objects 0-4 and 8 exist, the rest are holes.
ok "block status: missing objects are holes" bash -c "
    s3 key=layout size=1M object-size=64K --run 'nbdinfo --map \"\$uri\"' |
        awk '{print \$1, \$2, \$3}' > $tmp/map; cat $tmp/map;
    printf '0 327680 0\n327680 196608 3\n524288 65536 0\n589824 458752 3\n' |
        cmp - $tmp/map"
# 2048 objects of 4K: listings of 1000 keys, truncated, continued by
# start-after (one ListObjectsV2 per block status request).
ok "block status over 1537 of 2048 objects" bash -c "
    s3 key=many size=8M object-size=4K \
        --run 'qemu-io -f raw -c \"write -P 1 0 6M\" -c \"write -P 2 8384512 4096\" \"\$uri\"' &&
    : > $tmp/s3proxy.log &&
    s3 key=many size=8M object-size=4K --run 'nbdinfo --map \"\$uri\"' |
        awk '{print \$1, \$2, \$3}' > $tmp/map; cat $tmp/map;
    printf '0 6291456 0\n6291456 2093056 3\n8384512 4096 0\n' | cmp - $tmp/map"
ok "each block status request was one bounded listing" bash -c "
    grep 'list-type=2' $tmp/s3proxy.log > $tmp/lists; cat $tmp/lists;
    n=\$(grep -c 'max-keys=1000&' $tmp/lists);
    test \$n -ge 2 && test \$(grep -c . $tmp/lists) -le \$((n + 2)) &&
    ! grep -v ' ok 200' $tmp/lists"

# --- Single-object mode -----------------------------------------------
head -c $((3 * 1024 * 1024 + 123)) /dev/urandom > "$tmp/single"
s3_aws s3 cp --quiet "$tmp/single" "s3://$B/images/single.img"
ok "single object: size from HEAD" bash -c "
    s3 key=images/single.img --run 'nbdinfo --size \"\$uri\"' | grep -qx $((3 * 1024 * 1024 + 123))"
ok "single object: read back identically" bash -c "
    s3 key=images/single.img --run 'nbdcopy \"\$uri\" $tmp/single.out' &&
    cmp $tmp/single $tmp/single.out"
ok "single object: writes are refused" \
    s3 key=images/single.img \
        --run "! qemu-io -f raw -c 'write 0 512' \"\$uri\" &&
               nbdinfo --json \"\$uri\" | grep -q '\"is_read_only\": true'"

# --- Wrong secret --------------------------------------------------------
# s3refused PATTERN ARGS...: r3map-s3 with ARGS refuses to start, with
# one error line matching PATTERN.
s3refused ()
{
    local want="$1"
    shift
    refused "$want" "$(plugin s3)" "$@"
}
ok "wrong secret: refused at start with one line naming the bucket" \
    s3refused "start: bucket=$B: access denied (HTTP 403): check the credentials" \
    bucket="$B" key=disk size=16M endpoint="$S3_ENDPOINT" \
    access-key="$S3_ACCESS_KEY" secret-key=Wr0ngS3cretValue
ok "the wrong secret is not in the output" \
    _negate grep -q Wr0ngS3cretValue "$tmp/err"
printf 'Wr0ngS3cretValue\n' > "$tmp/secret"
printf 'T0kenValue\n' > "$tmp/token"
ok "secret-key=+FILE, session-token=+FILE: not in the output, even with -v" bash -c "
    nbdkit -v '$(plugin s3)' bucket=$B key=disk size=16M endpoint=$S3_ENDPOINT \
        access-key=$S3_ACCESS_KEY secret-key=+$tmp/secret \
        session-token=+$tmp/token --run true > $tmp/verbose 2>&1
    test \$? = 1 && grep 'error' $tmp/verbose &&
    ! grep -q 'Wr0ngS3cretValue\|T0kenValue' $tmp/verbose"
ok "the right secret from secret-key=+FILE works" bash -c "
    printf '%s\n' '$S3_SECRET_KEY' > $tmp/secret &&
    nbdkit -U - '$(plugin s3)' bucket=$B key=disk size=16M object-size=64K \
        endpoint=$S3_ENDPOINT access-key=$S3_ACCESS_KEY secret-key=+$tmp/secret \
        --run 'nbdinfo --size \"\$uri\"'"
ok "missing bucket: refused at start" \
    s3refused "bucket=no-such-bucket: not found (HTTP 404)" \
    bucket=no-such-bucket key=disk size=1M $creds
ok "credentials from the environment" \
    env AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
    HOME="$tmp/nohome" \
    nbdkit -U - "$(plugin s3)" bucket="$B" key=layout size=1M object-size=64K \
        endpoint="$S3_ENDPOINT" --run "qemu-io -f raw -c 'read -P 0x79 327680 10' \"\$uri\" >/dev/null; qemu-io -f raw -c 'read -P 0x78 10 10' \"\$uri\""
mkdir -p "$tmp/home/.aws" "$tmp/home2/.aws"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" > "$tmp/home2/.aws/credentials"
ok "credentials from ~/.aws/credentials" \
    env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_PROFILE \
    -u AWS_SHARED_CREDENTIALS_FILE HOME="$tmp/home2" \
    nbdkit -U - "$(plugin s3)" bucket="$B" key=layout size=1M object-size=64K \
        endpoint="$S3_ENDPOINT" --run "qemu-io -f raw -c 'read -P 0x78 10 10' \"\$uri\""

# --- Outage ----------------------------------------------------------------
# One nbdkit lives through it: the model checker writes, s3rver is
# stopped (the proxy then answers 503) while a full read is in flight,
# the read fails within the bounded retries, s3rver comes back and the
# disk is still exactly the model's, and new random I/O works.  The
# failures must come from the outage itself (the proxy's 503s, a reset
# connection), not from timeout=: that is set well above what a
# request waits in the queue of the single-threaded test server on a
# busy machine under valgrind (a PUT there once took over 2 s).
{
    echo "tmp='$tmp' _s3_dir='$_s3_dir' _s3_port='$_s3_port'"
    echo "_s3rver_pkg='$_s3rver_pkg' abs_top_srcdir='$abs_top_srcdir'"
    echo "IOTEST='$IOTEST' ops1=$(model_ops 1000) ops2=$(model_ops 500)"
    declare -f _s3_wait _s3_listening _s3_negate_listening _s3rver_port \
        _s3rver_start _s3_bail stop_s3 restart_s3
} > "$tmp/s3ctl.sh"
cat > "$tmp/outage.sh" <<'EOF'
. "$1"; uri="$2"
ms () { echo $(( $(date +%s%N) / 1000000 )); }
# Each step, as it starts, straight to the test's log (fd 3): if the
# check is stopped, the last line says where it was.
t_start=$(ms)
step () { echo "# outage: +$(( $(ms) - t_start )) ms: $*" >&3; }
step "model checker, $ops1 ops"
$IOTEST --quiet --ops $ops1 --connections 4 --trim-reads-zero \
    --model "$tmp/outage.model" "$uri" || exit 1
# Full reads, one after another, until one fails.  One request in
# flight per connection: nbdkit 1.32's server aborts (connections.c:
# "raw_send_socket: Assertion `sock >= 0' failed") when a client closes
# a connection while two or more of its replies are still to be sent,
# which nbdcopy does when its first read fails; the next client then
# waits for ever on the listening socket nbdkit's --run parent keeps.
step "full reads; s3rver stopped"
(while nbdcopy --connections=4 --requests=1 "$uri" null:; do :; done) 2>"$tmp/inflight.err" &
copy=$!
sleep 0.5
stop_s3
step "s3rver stopped"
t=$(ms)
# Bounded: reads that go on succeeding are this check's failure, not
# a test that never ends.
for i in $(seq 300); do kill -0 $copy 2>/dev/null || break; sleep 0.1; done
if kill -0 $copy 2>/dev/null; then
    echo "reads still succeed 30 s after s3rver was stopped"
    pkill -P $copy nbdcopy; kill $copy; exit 1
fi
wait $copy
step "the reads failed"
cat "$tmp/inflight.err"
echo "in flight when stopped: failed after $(( $(ms) - t )) ms"
[ $(( $(ms) - t )) -lt 5000 ] || exit 1
step "nbdkit's server still answers"
timeout 60 nbdinfo --size "$uri" >/dev/null ||
    { echo "nbdkit's server did not live through the outage"; exit 1; }
t=$(ms)
step "a new read"
if qemu-io -f raw -c "read 0 4096" "$uri"; then
    echo "read with s3rver stopped succeeded"; exit 1
fi
echo "stopped: failed after $(( $(ms) - t )) ms"
[ $(( $(ms) - t )) -lt 5000 ] || exit 1
step "s3rver restarted"
restart_s3
step "verify"
$IOTEST --quiet --verify-only --initial "$tmp/outage.model" "$uri" || exit 1
step "model checker, $ops2 ops"
$IOTEST --quiet --ops $ops2 --connections 4 --trim-reads-zero \
    --initial "$tmp/outage.model" "$uri" || exit 1
step "done"
EOF
exec 3>&1
ok "s3rver stopped: in-flight and new requests fail within the retries, nbdkit stays up, then the model still matches" \
    s3 key=outage size=8M object-size=64K timeout=15s retries=2 connections=8 \
        --run "bash '$tmp/outage.sh' '$tmp/s3ctl.sh' \"\$uri\""
ok "the failure was logged as such" bash -c "
    s3 key=outage size=1M object-size=64K timeout=15s retries=2 \
        --run '. $tmp/s3ctl.sh; stop_s3; qemu-io -f raw -c \"read 0 4096\" \"\$uri\"; restart_s3' \
        > $tmp/outage.log 2>&1; cat $tmp/outage.log;
    grep -q 'pread: bucket=$B key=outage/0000000000000000: HTTP 503 ServiceUnavailable after 3 tries' $tmp/outage.log"

# --- Bad parameters -----------------------------------------------------
ok "missing bucket=" s3refused "bucket=: required parameter missing" \
    key=disk size=1M $creds
ok "missing key=" s3refused "key=: required parameter missing" \
    bucket="$B" size=1M $creds
ok "object-size not dividing size" \
    s3refused "object-size=65536: must divide size=1052672" \
    bucket="$B" key=disk size=1052672 object-size=64K $creds
ok "object-size=3000" s3refused "object-size=3000: must be a power of 2 from 4K to 64M" \
    bucket="$B" key=disk size=1M object-size=3000 $creds
ok "addressing=diagonal" s3refused "addressing=diagonal: must be path or virtual" \
    bucket="$B" key=disk size=1M addressing=diagonal $creds
printf 'this is [not\n an ini file = \x01\n' > "$tmp/home/.aws/credentials"
# refused_home HOME ARGS...: refused with HOME and no AWS_* variables.
refused_home ()
{
    (
        unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN \
            AWS_PROFILE AWS_SHARED_CREDENTIALS_FILE
        export HOME="$1"
        shift
        s3refused "$@"
    )
}
ok "garbage credentials file" refused_home "$tmp/home" "$tmp/home/.aws/credentials: cannot read AWS credentials: " \
    bucket="$B" key=disk size=1M endpoint="$S3_ENDPOINT"
ok "no credentials at all" refused_home "$tmp/nohome" "access-key=: no credentials" \
    bucket="$B" key=disk size=1M endpoint="$S3_ENDPOINT"
ok "unreachable endpoint" s3refused "start: bucket=$B key=(bucket): " \
    bucket="$B" key=disk size=1M endpoint=http://127.0.0.1:1 \
    access-key=a secret-key=b retries=1 timeout=2s
ok "object-size= without size=" s3refused "object-size=65536: only with size=" \
    bucket="$B" key=disk object-size=64K $creds
ok "timeout=0" s3refused "timeout=0: must be from 1ms" \
    bucket="$B" key=disk size=1M timeout=0 $creds
ok "unknown parameter" s3refused "unknown parameter 'colour'" \
    bucket="$B" key=disk size=1M colour=blue $creds

# --- Documentation ---------------------------------------------------
pod="$abs_top_srcdir/plugins/s3/nbdkit-r3map-s3-plugin.pod"
nbdkit --dump-plugin "$(plugin s3)" > "$tmp/dump" 2>&1
ok "--dump-plugin lists the parameters" grep -q '^r3map_s3_parameters=bucket,' "$tmp/dump"
for p in $(sed -n 's/^r3map_s3_parameters=//p' "$tmp/dump" | tr , ' '); do
    ok "parameter $p= is documented in the man page" \
        grep -q "^=item \(\[\)\?B<$p=>" "$pod"
done
if command -v podchecker >/dev/null; then
    ok "podchecker is happy" podchecker "$pod"
fi

done_testing
