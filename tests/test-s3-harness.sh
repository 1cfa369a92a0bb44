#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The S3 test harness itself (s3-server.sh): s3rver behind the
# verifying proxy works for awscli and for curl's own SigV4 signing
# (libcurl's, which r3map-s3 uses), and the proxy refuses what a real
# S3 refuses and s3rver does not: a wrong secret, an unknown key, a
# body that does not match its sha256.

. "$srcdir/functions.sh"
. "$srcdir/s3-server.sh"

requires curl --version
requires /usr/bin/aws --version
start_s3 "$tmp/s3"

head -c 1500000 /dev/urandom > "$tmp/obj"
B=harness-bucket

# status_is CODE ERROR CURL-ARGS...: curl gets HTTP CODE
# and, if ERROR is not empty, an XML error with that code.
status_is ()
{
    local want="$1" err="$2" got
    shift 2
    got=$(curl -sS -o "$tmp/resp" -w '%{http_code}' "$@") || return 1
    if test "$got" != "$want" ||
        { test -n "$err" && ! grep -q "<Code>$err</Code>" "$tmp/resp"; }; then
        echo "HTTP $got, wanted $want $err:"
        head -c 1000 "$tmp/resp" | tr -d '\0'; echo
        return 1
    fi
}

sigv4 ()
{
    echo --aws-sigv4 "aws:amz:$S3_REGION:s3"
}

# --- awscli ------------------------------------------------------------
ok "awscli: create a bucket" s3_aws s3 mb "s3://$B"
ok "awscli: put" s3_aws s3 cp --quiet "$tmp/obj" "s3://$B/dir/a b+c.bin"
ok "awscli: get, bytes identical" eval \
    's3_aws s3 cp --quiet "s3://$B/dir/a b+c.bin" "$tmp/got" && cmp "$tmp/obj" "$tmp/got"'
ok "awscli: list with a prefix" eval \
    's3_aws s3api list-objects-v2 --bucket $B --prefix "dir/a b" | grep -q "\"dir/a b+c.bin\""'
ok "awscli: delete" s3_aws s3 rm --quiet "s3://$B/dir/a b+c.bin"
ok "awscli: the object is gone" eval \
    '! s3_aws s3 ls "s3://$B/dir/" | grep -q "a b+c.bin"'
ok "awscli with a wrong secret: 403 SignatureDoesNotMatch" eval \
    'S3_SECRET_KEY=wrong s3_aws s3 ls "s3://$B/" 2>&1 | tee /dev/stderr |
     grep -q SignatureDoesNotMatch'

# --- curl --aws-sigv4 --------------------------------------------------
ok "curl: put with a body" s3_curl -f -T "$tmp/obj" "$S3_ENDPOINT/$B/c/obj"
ok "curl: ranged get" eval \
    's3_curl -f -r 1000-1999 "$S3_ENDPOINT/$B/c/obj" -o "$tmp/range" &&
     cmp "$tmp/range" <(tail -c +1001 "$tmp/obj" | head -c 1000)'
ok "curl: open-ended ranged get" eval \
    's3_curl -f -r 1499000- "$S3_ENDPOINT/$B/c/obj" -o "$tmp/range" &&
     cmp "$tmp/range" <(tail -c +1499001 "$tmp/obj")'
ok "curl: list-type=2&prefix= query" eval \
    's3_curl -f "$S3_ENDPOINT/$B?list-type=2&prefix=c%2F" | grep -q "<Key>c/obj</Key>"'
ok "curl: two requests on one kept-alive connection" eval \
    's3_curl -f -v -o /dev/null -o /dev/null "$S3_ENDPOINT/$B/c/obj" \
        "$S3_ENDPOINT/$B/c/obj" 2>&1 | grep -q "Re-using existing connection"'
ok "curl with a wrong secret: 403 SignatureDoesNotMatch" \
    status_is 403 SignatureDoesNotMatch $(sigv4) --user "$S3_ACCESS_KEY:wrong" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$S3_ENDPOINT/$B/c/obj"
ok "curl with an unknown access key: 403 InvalidAccessKeyId" \
    status_is 403 InvalidAccessKeyId $(sigv4) --user "NOBODY:$S3_SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$S3_ENDPOINT/$B/c/obj"
ok "unsigned request: 403" status_is 403 AccessDenied "$S3_ENDPOINT/$B/c/obj"
hello=$(printf hello | sha256sum | cut -d' ' -f1)
ok "curl put with a real sha256 header" \
    status_is 200 "" $(sigv4) --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: $hello" -X PUT --data-binary hello \
    "$S3_ENDPOINT/$B/h"
ok "a tampered body is refused: XAmzContentSHA256Mismatch" \
    status_is 400 XAmzContentSHA256Mismatch $(sigv4) \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: $hello" -X PUT --data-binary hellO \
    "$S3_ENDPOINT/$B/h"
ok "and the object kept its bytes" eval \
    'test "$(s3_curl -f "$S3_ENDPOINT/$B/h")" = hello'
ok "s3rver itself accepts a wrong secret (why the proxy exists)" \
    status_is 200 "" $(sigv4) --user "$S3_ACCESS_KEY:wrong" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$S3_UPSTREAM/$B/c/obj"

# --- outage ------------------------------------------------------------
stop_s3
ok "s3rver stopped: the proxy answers 503" \
    status_is 503 ServiceUnavailable $(sigv4) \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$S3_ENDPOINT/$B/c/obj"
restart_s3
ok "s3rver restarted on the same port and data" eval \
    's3_curl -f "$S3_ENDPOINT/$B/c/obj" -o "$tmp/got" && cmp "$tmp/obj" "$tmp/got"'
ok "make_bucket" make_bucket other-bucket
ok "the proxy logged its verdicts" eval \
    'cat "$tmp/s3proxy.log" && grep -q " refused 403 SignatureDoesNotMatch$" "$tmp/s3proxy.log" &&
     grep -q "^PUT /$B/c/obj ok 200$" "$tmp/s3proxy.log"'

done_testing
