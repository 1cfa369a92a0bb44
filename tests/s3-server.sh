# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# Sourced by the S3 shell tests, after functions.sh: a real S3 server
# (s3rver, from npm: run "npm ci" in tests/ first) on loopback, behind
# s3-verify-proxy.py, which checks every request's SigV4 signature
# (s3rver itself accepts any secret).  s3rver runs through
# s3rver-run.js, which makes its PUTs atomic and acknowledged only once
# stored, as S3's are (see there).
#
#   start_s3 DIR      start both, data in DIR; skips the test (skip_all)
#                     when s3rver or python3-botocore is missing; exports
#                     S3_ENDPOINT  http://127.0.0.1:PORT  (the proxy: use this)
#                     S3_UPSTREAM  http://127.0.0.1:PORT  (s3rver, unchecked)
#                     S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION
#   make_bucket NAME  create a bucket through the proxy
#   s3_curl ARGS...   curl signing with --aws-sigv4 (UNSIGNED-PAYLOAD)
#   s3_aws ARGS...    /usr/bin/aws --endpoint-url $S3_ENDPOINT ARGS...
#   stop_s3           stop s3rver only (the proxy then answers 503)
#   restart_s3        start s3rver again, same port and data
#
# Logs: $tmp/s3rver.out and $tmp/s3proxy.log (one line per request).

S3_PYTHON=/usr/bin/python3
_s3_port=0
_s3_dir=

# Wait up to 10 s for a command to succeed.
_s3_wait ()
{
    local i
    for i in $(seq 100); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

_s3_listening ()
{
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_s3_bail ()
{
    echo "Bail out! $*"
    for f in "$tmp/s3rver.out" "$tmp/s3proxy.err"; do
        [ -f "$f" ] && sed 's/^/# /' "$f"
    done
    exit 1
}

# The pids live in files, so that stop_s3 and restart_s3 also work in
# a subshell (as under ok) and cleanup still finds the current s3rver.
_s3_kill ()
{
    local f
    for f in "$tmp/s3proxy.pid" "$tmp/s3rver.pid"; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
        rm -f "$f"
    done
}

_s3rver_port ()
{
    local p
    p=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
        "$tmp/s3rver.out" 2>/dev/null)
    [ -n "$p" ] && echo "$p"
}

_s3rver_start ()
{
    # -p 0 lets s3rver pick a free port; it prints it ("S3rver
    # listening on 127.0.0.1:PORT") even with -s.
    : > "$tmp/s3rver.out"
    node --openssl-legacy-provider "$abs_top_srcdir/tests/s3rver-run.js" \
        "$_s3rver_pkg" -d "$_s3_dir" -a 127.0.0.1 -p "$_s3_port" -s \
        >"$tmp/s3rver.out" 2>&1 &
    echo $! > "$tmp/s3rver.pid"
    _s3_wait _s3rver_port >/dev/null ||
        _s3_bail "s3rver did not start within 10 s"
    _s3_port=$(_s3rver_port)
}

start_s3 ()
{
    local d
    _s3rver_pkg=
    for d in "$abs_top_srcdir/tests" "$abs_top_builddir/tests"; do
        if [ -f "$d/node_modules/s3rver/bin/s3rver.js" ]; then
            _s3rver_pkg="$d/node_modules/s3rver"
            break
        fi
    done
    [ -n "$_s3rver_pkg" ] ||
        skip_all "needs s3rver: run 'npm ci' in tests/"
    command -v node >/dev/null 2>&1 || skip_all "needs node for s3rver"
    "$S3_PYTHON" -c 'import botocore.auth' >/dev/null 2>&1 ||
        skip_all "needs $S3_PYTHON with botocore (python3-botocore)"

    _s3_dir="$1"
    _s3_port=0
    mkdir -p "$_s3_dir"
    cleanup_fn _s3_kill
    _s3rver_start

    rm -f "$tmp/s3proxy.port"
    "$S3_PYTHON" "$abs_top_srcdir/tests/s3-verify-proxy.py" \
        --listen 127.0.0.1:0 --upstream "127.0.0.1:$_s3_port" \
        --access-key S3RVER --secret-key S3RVER --region us-east-1 \
        --port-file "$tmp/s3proxy.port" --log "$tmp/s3proxy.log" \
        2>"$tmp/s3proxy.err" &
    echo $! > "$tmp/s3proxy.pid"
    _s3_wait test -s "$tmp/s3proxy.port" ||
        _s3_bail "s3-verify-proxy.py did not start within 10 s"
    _s3_proxy_port=$(cat "$tmp/s3proxy.port")
    _s3_wait _s3_listening "$_s3_proxy_port" ||
        _s3_bail "s3-verify-proxy.py does not answer on $_s3_proxy_port"

    export S3_ENDPOINT="http://127.0.0.1:$_s3_proxy_port"
    export S3_UPSTREAM="http://127.0.0.1:$_s3_port"
    export S3_ACCESS_KEY=S3RVER
    export S3_SECRET_KEY=S3RVER
    export S3_REGION=us-east-1
}

stop_s3 ()
{
    [ -s "$tmp/s3rver.pid" ] || return 0
    kill "$(cat "$tmp/s3rver.pid")" 2>/dev/null
    rm -f "$tmp/s3rver.pid"
    # Until the port is closed.
    _s3_wait _s3_negate_listening "$_s3_port"
}

_s3_negate_listening ()
{
    ! _s3_listening "$1"
}

restart_s3 ()
{
    stop_s3
    _s3rver_start
}

s3_curl ()
{
    curl -sS --aws-sigv4 "aws:amz:$S3_REGION:s3" \
        --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

s3_aws ()
{
    AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
    AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
    AWS_DEFAULT_REGION="$S3_REGION" \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        /usr/bin/aws --endpoint-url "$S3_ENDPOINT" "$@"
}

make_bucket ()
{
    if command -v curl >/dev/null 2>&1; then
        s3_curl -f -X PUT "$S3_ENDPOINT/$1" -o /dev/null
    else
        s3_aws s3api create-bucket --bucket "$1" >/dev/null
    fi
}
