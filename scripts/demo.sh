#!/usr/bin/env bash
# The most complete real scenario tandem supports so far: a real redis-server runs as the primary
# under `tandem record` and takes load; the primary is killed; a backup replays its log, catches
# up to the exact point the primary reached, goes live on the same port and serves the primary's
# data, byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

tandem=$PWD/target/release/tandem
work=$(mktemp -d /tmp/tandem-demo.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
log="$work/redis.tlog"
mkdir -p "$work/primary" "$work/backup"
redis_args=(redis-server --port "$port" --save '' --appendonly yes --dir . --enable-debug-command yes)

wait_ping() {
    for _ in $(seq 600); do
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return
        sleep 0.05
    done
    echo "redis-server on port $port did not answer" >&2
    exit 1
}

echo "== primary: redis-server on port $port under tandem record (log $log)"
(cd "$work/primary" && exec "$tandem" record --out "$log" -- "${redis_args[@]}" > "$work/primary.out" 2>&1) &
agent=$!
wait_ping
primary_pid=$(cut -d' ' -f1 "/proc/$agent/task/$agent/children")

echo "== redis-benchmark: 50 clients, SET, INCR, LPUSH, SADD over 100000 random keys"
redis-benchmark -p "$port" -c 50 -n 20000 -r 100000 -t set,incr,lpush,sadd -q 2>&1 | tr '\r' '\n' | grep 'per second'
echo "== a last acknowledged write: SET demo:last-write \"$(date -u +%T)\""
redis-cli -p "$port" set demo:last-write "$(date -u +%T)"
primary_digest=$(redis-cli -p "$port" debug digest)
echo "   primary's DEBUG DIGEST: $primary_digest"

echo "== killing the primary (SIGKILL to redis-server, pid $primary_pid)"
kill -KILL "$primary_pid"
wait "$agent" || true
"$tandem" log stats "$log" | head -4

echo
echo "== backup: tandem replay --go-live, in another directory"
start=$(date +%s%N)
(cd "$work/backup" && exec "$tandem" replay --go-live "$log" > "$work/backup.out" 2>&1) &
backup=$!
wait_ping
echo "   the backup answers on port $port after $(( ($(date +%s%N) - start) / 1000000 )) ms"
backup_digest=$(redis-cli -p "$port" debug digest)
echo "   backup's DEBUG DIGEST:  $backup_digest"
echo "   GET demo:last-write:     $(redis-cli -p "$port" get demo:last-write)"
echo "   DBSIZE:                  $(redis-cli -p "$port" dbsize)"
echo "   a new write on the live backup: SET demo:after-failover yes -> $(redis-cli -p "$port" set demo:after-failover yes)"
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$backup" || true

echo
status=0
if [ "$primary_digest" = "$backup_digest" ]; then
    echo "OK: the backup holds exactly the primary's data"
else
    echo "FAILED: the digests differ"
    status=1
fi
base=$(ls "$work/primary/appendonlydir" | grep -m1 '\.incr\.aof$')
if cmp -s "$work/primary/appendonlydir/$base" <(head -c "$(stat -c %s "$work/primary/appendonlydir/$base")" "$work/backup/appendonlydir/$base"); then
    echo "OK: the backup's append-only file starts with the primary's, byte for byte ($(stat -c %s "$work/primary/appendonlydir/$base") bytes)"
else
    echo "FAILED: the append-only files differ"
    status=1
fi
echo "Logs and data kept in $work"
exit $status
