#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# r3map-redis against a private redis-server on a Unix socket: the
# random I/O model checker in two geometries, an nbdcopy round trip,
# the documented key layout, a server that goes away and comes back,
# and bad parameters.

. "$srcdir/functions.sh"
requires redis-server --version
requires redis-cli --version
requires nbdcopy --version
requires nbdinfo --version
requires qemu-io --version

sock="$tmp/redis.sock"

start_redis ()
{
    redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 \
        --daemonize yes --pidfile "$tmp/redis.pid" --dir "$tmp" \
        --save '' --appendonly yes --appendfsync always --logfile "$tmp/redis.log" || return 1
    local i
    for i in $(seq 100); do
        redis-cli -s "$sock" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    return 1
}

stop_redis ()
{
    [ -s "$tmp/redis.pid" ] || return 0
    local pid
    pid=$(cat "$tmp/redis.pid")
    kill -9 "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$tmp/redis.pid"
}
cleanup_fn stop_redis

start_redis || skip_all "cannot start redis-server"

rcli ()
{
    redis-cli -s "$sock" "$@"
}

# --- The model checker ----------------------------------------------
run_geometry ()
{
    local name="$1" size="$2" chunk="$3" ops=$(model_ops 10000)
    ok "$name: $ops random ops on 4 connections match the model" \
        nbdkit -U - "$(plugin redis)" server="$sock" key="$name" \
            size="$size" chunk-size="$chunk" \
            --run "$IOTEST --quiet --ops $ops --connections 4 \
                       --trim-reads-zero --model '$tmp/$name.model' \"\$uri\""
    ok "$name: the disk after a restart is the model's" \
        nbdkit -U - "$(plugin redis)" server="$sock" key="$name" \
            size="$size" chunk-size="$chunk" connections=1 \
            --run "$IOTEST --quiet --verify-only --initial '$tmp/$name.model' \"\$uri\""
}

run_geometry small-chunks $((4 * 1024 * 1024 + 4095)) 4K
run_geometry default-chunks 16M 64K

# --- nbdcopy round trip -----------------------------------------------
head -c $((8 * 1024 * 1024 + 512)) /dev/urandom > "$tmp/in"
ok "nbdcopy of random data in" \
    nbdkit -U - "$(plugin redis)" server="$sock" key=copy \
        size=$((8 * 1024 * 1024 + 512)) \
        --run "nbdcopy --connections=4 '$tmp/in' \"\$uri\""
ok "nbdcopy out: same sha256" bash -c "
    nbdkit -U - '$(plugin redis)' server='$sock' key=copy \
        size=$((8 * 1024 * 1024 + 512)) \
        --run 'nbdcopy \"\$uri\" $tmp/out' &&
    test \"\$(sha256sum < $tmp/in)\" = \"\$(sha256sum < $tmp/out)\""

# --- Key layout, trim, block status -----------------------------------
# Chunk 0 gets a partial write (SETRANGE), chunk 5 a whole one (SET).
# qemu-io drives single requests; it exits 1 if one fails or if a read
# does not match its -P pattern.
qio ()
{
    nbdkit -U - "$(plugin redis)" server="$sock" key=layout size=1M \
        --run "qemu-io -f raw $(printf " -c '%s'" "$@") \"\$uri\""
}
ok "write part of chunk 0 and the whole of chunk 5" \
    qio "write -P 0x78 10 100" "write -P 0x79 327680 65536"
ok "the keys are layout:0000000000000000 and layout:0000000000000005" \
    test "$(rcli --scan --pattern 'layout:*' | sort | tr '\n' ' ')" = \
         "layout:0000000000000000 layout:0000000000000005 "
ok "chunk 0 holds the partial write, zero padded" \
    test "$(rcli strlen layout:0000000000000000)" = 110
ok "chunk 5 holds the whole chunk" \
    test "$(rcli strlen layout:0000000000000005)" = 65536
ok "nbdinfo --map reports the missing chunks as holes" bash -c "
    nbdkit -U - '$(plugin redis)' server='$sock' key=layout size=1M \
        --run 'nbdinfo --map \"\$uri\"' > $tmp/map &&
    cat $tmp/map &&
    test \"\$(grep -c . $tmp/map)\" = 4 &&
    grep -Eq '^ *65536 +262144 +3 +hole,zero' $tmp/map &&
    grep -Eq '^ *393216 +655360 +3 +hole,zero' $tmp/map"
ok "the data reads back" \
    qio "read -P 0 0 10" "read -P 0x78 10 100" "read -P 0 110 327570" \
        "read -P 0x79 327680 65536" "read -P 0 393216 655360"
ok "a wrong pattern is noticed (qemu-io exits non-zero)" \
    _negate qio "read -P 0x79 10 100"
ok "trim of chunk 5 deletes its key" qio "discard 327680 65536"
ok "only chunk 0 is left" \
    test "$(rcli --scan --pattern 'layout:*')" = layout:0000000000000000
ok "the trimmed chunk reads as zeros" qio "read -P 0 327680 65536"
ok "partial zero of chunk 0 keeps its neighbours" \
    qio "write -z 20 10" "read -P 0x78 10 10" "read -P 0 20 10" "read -P 0x78 30 80"

# --- The server goes away and comes back ------------------------------
# One nbdkit lives through it all, each step is a new client
# connection: a hung server (SIGSTOP) makes a read fail within the
# timeout; a killed one fails at once; once a new server is up on the
# same socket, requests work again, and the write acknowledged before
# the kill -9 is still there (the server runs with appendfsync always).
{ echo 'sock="$1" tmp="$2"'; declare -f start_redis; echo start_redis; } \
    > "$tmp/start-redis.sh"
cat > "$tmp/outage.sh" <<'EOF'
sock="$1" tmp="$2" uri="$3"
qio () { qemu-io -f raw -c "$1" "$uri"; }
elapsed () { echo $(( $(date +%s%N) / 1000000 - $1 )); }
pid=$(cat "$tmp/redis.pid")
qio "write -P 0x7a 0 4096" || exit 1
kill -STOP "$pid"
t=$(( $(date +%s%N) / 1000000 ))
if qio "read 0 4096"; then echo "read from a hung server succeeded"; exit 1; fi
echo "hung server: failed after $(elapsed $t) ms"
[ "$(elapsed $t)" -lt 5000 ] || exit 1
kill -CONT "$pid"
kill -9 "$pid"; rm -f "$tmp/redis.pid"
t=$(( $(date +%s%N) / 1000000 ))
if qio "read 0 4096"; then echo "read from no server succeeded"; exit 1; fi
echo "no server: failed after $(elapsed $t) ms"
[ "$(elapsed $t)" -lt 5000 ] || exit 1
bash "$tmp/start-redis.sh" "$sock" "$tmp" || exit 1
# The server persists every write before answering: the write
# acknowledged before kill -9 is there.
qio "read -P 0x7a 0 4096" || exit 1
qio "write -P 0x77 0 4096" || exit 1
qio "read -P 0x77 0 4096" || exit 1
EOF
ok "server gone: reads fail within the timeout, nbdkit stays up, then work again" \
    nbdkit -U - "$(plugin redis)" server="$sock" key=outage size=1M \
        timeout=1s connections=2 \
        --run "bash '$tmp/outage.sh' '$sock' '$tmp' \"\$uri\""
ok "the failures were logged as such" bash -c "
    nbdkit -U - '$(plugin redis)' server='$sock' key=outage size=1M timeout=1s \
        --run 'redis-cli -s $sock shutdown nosave; qemu-io -f raw -c \"read 0 4096\" \"\$uri\"' \
        2>&1 | tee /dev/stderr | grep -q 'pread: server=$sock: cannot connect: '"
[ -s "$tmp/redis.pid" ] && rm -f "$tmp/redis.pid"
start_redis >/dev/null 2>&1 || true

# A hung server in the middle of random I/O: the reads in flight fail
# within the timeout, and once the server runs again the disk is still
# exactly the model's.
cat > "$tmp/hang.sh" <<'EOF'
tmp="$1" uri="$2"
ms () { echo $(( $(date +%s%N) / 1000000 )); }
pid=$(cat "$tmp/redis.pid")
$IOTEST --quiet --ops 2000 --connections 4 --trim-reads-zero \
    --model "$tmp/hang.model" "$uri" || exit 1
# Full reads, one after another, until one fails.  One request in
# flight per connection (--requests=1): see test-s3.sh's outage check.
(while nbdcopy --connections=4 --requests=1 "$uri" null:; do :; done) 2>"$tmp/inflight.err" &
copy=$!
sleep 0.5
kill -STOP "$pid"
t=$(ms)
wait $copy
cat "$tmp/inflight.err"
echo "in flight when the server hung: failed after $(( $(ms) - t )) ms"
[ $(( $(ms) - t )) -lt 5000 ] || { kill -CONT "$pid"; exit 1; }
kill -CONT "$pid"
timeout 60 nbdinfo --size "$uri" >/dev/null ||
    { echo "nbdkit's server did not live through the hang"; exit 1; }
$IOTEST --quiet --verify-only --initial "$tmp/hang.model" "$uri" || exit 1
$IOTEST --quiet --ops 1000 --connections 4 --trim-reads-zero \
    --initial "$tmp/hang.model" "$uri" || exit 1
EOF
export IOTEST
ok "server hung mid-run: in-flight reads fail within the timeout, then the model still matches" \
    nbdkit -U - "$(plugin redis)" server="$sock" key=hang \
        size=8M timeout=1s --run "bash '$tmp/hang.sh' '$tmp' \"\$uri\""

# --- Durability ----------------------------------------------------------
# The suite's server persists every write before it answers
# (appendonly yes, appendfsync always): the default durable=true
# accepts it (every check above ran so).  Other settings are refused.
rcli config set appendfsync everysec >/dev/null
ok "appendfsync everysec: refused at start, naming the settings" \
    refused "durable=true: server=$sock has appendonly yes, appendfsync everysec: writes it acknowledges may be lost" \
    "$(plugin redis)" server="$sock" size=1M
rcli config set appendonly no >/dev/null
ok "appendonly no: refused at start" \
    refused "durable=true: server=$sock has appendonly no, appendfsync everysec" \
    "$(plugin redis)" server="$sock" size=1M
ok "durable=false serves it" \
    nbdkit -U - "$(plugin redis)" server="$sock" size=1M durable=false \
        --run "qemu-io -f raw -c 'write -P 0x11 0 4096' -c 'read -P 0x11 0 4096' \"\$uri\""
rcli config set appendonly yes >/dev/null
rcli config set appendfsync always >/dev/null
rcli acl setuser default -config >/dev/null
ok "settings unreadable (CONFIG denied): refused, durable=false suggested" \
    refused "durable=true: server=$sock: cannot read the server's persistence settings (CONFIG GET appendonly: NOPERM" \
    "$(plugin redis)" server="$sock" size=1M
rcli acl setuser default +@all >/dev/null

# --- Authentication and database ---------------------------------------
printf 's3cret-pw\n' > "$tmp/pw"
rcli config set requirepass s3cret-pw >/dev/null
ok "no password: refused at start" \
    bash -c "nbdkit '$(plugin redis)' server='$sock' size=1M --run true 2>&1 |
             grep -q 'cannot connect: .*NOAUTH\|cannot connect: AUTH'"
ok "password-file=, db=3: data lands in database 3" bash -c "
    nbdkit -v -U - '$(plugin redis)' server='$sock' size=1M key=auth db=3 \
        password-file='$tmp/pw' \
        --run 'qemu-io -f raw -c \"write -P 0x41 0 512\" \"\$uri\"' > $tmp/authlog 2>&1 &&
    test \"\$(REDISCLI_AUTH=s3cret-pw redis-cli -s $sock -n 3 strlen auth:0000000000000000)\" = 512"
ok "the password is not logged" _negate grep -q s3cret-pw "$tmp/authlog"
ok "REDISCLI_AUTH= is used without password-file=" \
    env REDISCLI_AUTH=s3cret-pw nbdkit -U - "$(plugin redis)" server="$sock" \
        size=1M key=auth db=3 --run "qemu-io -f raw -c 'read -P 0x41 0 512' \"\$uri\""
REDISCLI_AUTH=s3cret-pw rcli config set requirepass '' >/dev/null

# --- Bad parameters -----------------------------------------------------
ok "missing server=" refused "server=: required parameter missing" "$(plugin redis)" size=1M
ok "missing size=" refused "size=: required parameter missing" "$(plugin redis)" server="$sock"
ok "chunk-size=3000" refused "chunk-size=3000: must be a power of 2 from 4K to 16M" "$(plugin redis)" \
    server="$sock" size=1M chunk-size=3000
ok "unreachable server" refused "server=$tmp/nowhere.sock: cannot connect: " "$(plugin redis)" \
    server="$tmp/nowhere.sock" size=1M
ok "db=-1" refused "db=-1: not a non-negative integer" "$(plugin redis)" \
    server="$sock" size=1M db=-1
ok "db beyond the server's databases" refused "server=$sock: cannot connect: db=99" "$(plugin redis)" \
    server="$sock" size=1M db=99
ok "timeout=0" refused "timeout=0: must be from 1ms" "$(plugin redis)" server="$sock" size=1M timeout=0
ok "unknown parameter" refused "unknown parameter 'colour'" "$(plugin redis)" \
    server="$sock" size=1M colour=blue

# --- Documentation ---------------------------------------------------
pod="$abs_top_srcdir/plugins/redis/nbdkit-r3map-redis-plugin.pod"
nbdkit --dump-plugin "$(plugin redis)" > "$tmp/dump" 2>&1
for p in $(sed -n 's/^r3map_redis_parameters=//p' "$tmp/dump" | tr , ' '); do
    ok "parameter $p= is documented in the man page" \
        grep -q "^=item \(\[\)\?B<$p=>" "$pod"
done

done_testing
