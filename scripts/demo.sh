#!/usr/bin/env bash
# The most complete real scenario tandem supports so far: a real redis-server recorded under
# redis-benchmark load, then what the log holds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

tandem=target/release/tandem
work=$(mktemp -d /tmp/tandem-demo.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
log="$work/redis.tlog"

echo "== recording redis-server on port $port into $log"
"$tandem" record --out "$log" -- redis-server --port "$port" --save '' --appendonly no --dir "$work" \
    > "$work/redis.out" 2>&1 &
recorder=$!
for _ in $(seq 200); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.05
done

echo "== redis-benchmark: 100000 requests, 50 clients, SET and GET"
redis-benchmark -p "$port" -n 100000 -c 50 -t set,get -q
redis-cli -p "$port" shutdown nosave >/dev/null || true
wait "$recorder"

echo
echo "== tandem log stats $log"
"$tandem" log stats "$log" | head -32
echo
echo "== the first requests, as tandem log show prints them"
"$tandem" log show "$log" | grep -m 12 -E " (accept4|read|write|epoll_wait) "
echo
echo "Log kept in $work"
