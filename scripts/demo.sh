#!/usr/bin/env bash
# The most complete real scenario tandem supports so far: a real redis-server runs under
# `tandem primary` and takes load while a `tandem backup` follows it live over QUIC (sync mode:
# no reply leaves before the backup holds what it depends on), both steered by a
# `tandem coordinator`. The primary is killed; its lease lapses, the coordinator names the backup
# primary of a new epoch, and the backup replays up to the exact point the primary reached, goes
# live on the same port and serves the primary's data, byte for byte, recording on as the
# group's primary. No one runs a command. Then the old primary's host comes back as a backup of
# the new primary and catches up, and `tandem switchover` hands the group back to it as planned.
# The backup's redis runs in a private view of the primary's directory (captured when the
# primary started, mounted at the primary's path in a namespace of its own): it writes its
# append-only file there, beside the primary's on the same host, without touching it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

tandem=$PWD/target/release/tandem
work=$(mktemp -d /tmp/tandem-demo.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
agent_port=$(( port + 1 ))
coordinator_port=$(( port + 2 ))
backup_port=$(( port + 3 ))
coordinator=127.0.0.1:$coordinator_port
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

echo "== certificates: a cluster CA, a primary, a backup and an operator"
"$tandem" certs init --certs "$work/certs" >/dev/null
for name in primary backup operator; do "$tandem" certs issue --certs "$work/certs" --name $name >/dev/null; done

echo "== coordinator: one member at $coordinator (lease timeout 500 ms)"
"$tandem" coordinator --state-dir "$work/coordinator" --listen "$coordinator" > "$work/coordinator.out" 2>&1 &
coordinator_pid=$!
trap 'kill $coordinator_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$coordinator/v1/status" | grep -q '"leader":1' && break; sleep 0.05; done

echo "== primary: redis-server on port $port under tandem primary (sync mode)"
(cd "$work/primary" && exec "$tandem" primary --group demo --wait-for-backups 1 --listen "127.0.0.1:$agent_port" --name primary \
    --certs "$work/certs" --state-dir "$work/primary-state" --coordinator "$coordinator" -- "${redis_args[@]}" > "$work/primary.out" 2>&1) &
agent=$!

echo "== backup: tandem backup, finding the primary through the coordinator; it serves backups at 127.0.0.1:$backup_port once promoted"
(cd "$work/backup" && exec "$tandem" backup --group demo --listen "127.0.0.1:$backup_port" --name backup \
    --certs "$work/certs" --state-dir "$work/backup-state" --coordinator "$coordinator" > "$work/backup.out" 2>&1) &
backup=$!
wait_ping
keeper=$(cut -d' ' -f1 "/proc/$agent/task/$agent/children")
primary_pid=$(cut -d' ' -f1 "/proc/$keeper/task/$keeper/children")

echo "== redis-benchmark: 50 clients, SET, INCR, LPUSH, SADD over 100000 random keys"
redis-benchmark -p "$port" -c 50 -n 20000 -r 100000 -t set,incr,lpush,sadd -q 2>&1 | tr '\r' '\n' | grep 'per second'
echo "== a last acknowledged write: SET demo:last-write \"$(date -u +%T)\""
redis-cli -p "$port" set demo:last-write "$(date -u +%T)"
primary_digest=$(redis-cli -p "$port" debug digest)
echo "   primary's DEBUG DIGEST: $primary_digest"
echo "== tandem status: the group as the coordinator and the agents on this host see it"
"$tandem" status --coordinator "$coordinator" --group demo --state-dir "$work/primary-state" \
    --state-dir "$work/backup-state" | sed 's/^/   /'

echo "== the primary's host dies (SIGKILL to its agent and to redis-server, pid $primary_pid)"
kill -KILL "$agent" "$keeper" "$primary_pid"
wait "$agent" || true

start=$(date +%s%N)

echo
echo "== the lease lapses; the coordinator promotes the backup, which replays what it holds and goes live"
wait_ping
echo "   the backup answers on port $port $(( ($(date +%s%N) - start) / 1000000 )) ms after the kill"
"$tandem" status --coordinator "$coordinator" --group demo --state-dir "$work/backup-state" | sed 's/^/   /'
# The program shares the agent's stderr (a file here): the agent's notes are in its state directory.
grep -h "named this member primary" "$work/backup-state/agent.log" | sed 's/^/   backup: /' | cut -c1-160
backup_digest=$(redis-cli -p "$port" debug digest)
echo "   backup's DEBUG DIGEST:  $backup_digest"
echo "   GET demo:last-write:     $(redis-cli -p "$port" get demo:last-write)"
echo "   DBSIZE:                  $(redis-cli -p "$port" dbsize)"
echo "   a new write on the live backup: SET demo:after-failover yes -> $(redis-cli -p "$port" set demo:after-failover yes)"
base=$(ls "$work/primary/appendonlydir" | grep -m1 '\.incr\.aof$')
# What the backup's redis wrote (before the old primary's host comes back) to its view of the primary's directory.
backup_files=$work/backup-state/view/upper/0
if cmp -s "$work/primary/appendonlydir/$base" <(head -c "$(stat -c %s "$work/primary/appendonlydir/$base")" "$backup_files/appendonlydir/$base"); then
    aof_said="OK: the backup's append-only file starts with the primary's, byte for byte ($(stat -c %s "$work/primary/appendonlydir/$base") bytes)"
else
    aof_said="FAILED: the append-only files differ"
fi

echo
echo "== the old primary's host comes back: tandem backup in its own state directory, no --primary"
(cd "$work/primary" && exec "$tandem" backup --group demo --listen "127.0.0.1:$agent_port" --name primary \
    --certs "$work/certs" --state-dir "$work/primary-state" --coordinator "$coordinator" > "$work/rejoin.out" 2>&1) &
rejoined=$!
redis-benchmark -p "$port" -c 50 -n 20000 -r 100000 -t set,incr -q 2>&1 | tr '\r' '\n' | grep 'per second' | sed 's/^/   meanwhile, /'
for _ in $(seq 600); do
    "$tandem" status --coordinator "$coordinator" --group demo --json 2>/dev/null | python3 -c '
import json, sys
g = json.load(sys.stdin)["groups"][0]
me = {r["member"]: r for r in g["members"]}.get("primary", {})
sys.exit(0 if me.get("role") == "backup" and me.get("state") == "ok" and (me.get("lag_events") or 0) < 1000 else 1)' && break
    sleep 0.1
done
"$tandem" status --coordinator "$coordinator" --group demo | sed 's/^/   /'

echo
echo "== tandem switchover --group demo --to primary: planned, no acknowledged write lost"
redis-cli -p "$port" set demo:before-switchover yes >/dev/null
before_switchover=$(redis-cli -p "$port" debug digest)
start=$(date +%s%N)
"$tandem" switchover --group demo --to primary --coordinator "$coordinator" --certs "$work/certs" --name operator | sed 's/^/   /'
wait_ping
echo "   redis answers again $(( ($(date +%s%N) - start) / 1000000 )) ms after the command started"
after_switchover=$(redis-cli -p "$port" debug digest)
echo "   DEBUG DIGEST before: $before_switchover, after: $after_switchover"
for _ in $(seq 100); do "$tandem" status --coordinator "$coordinator" --group demo 2>/dev/null | grep -q ' backup .* ok$' && break; sleep 0.1; done
"$tandem" status --coordinator "$coordinator" --group demo | sed 's/^/   /'
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$rejoined" || true
kill "$backup" 2>/dev/null || true
wait "$backup" || true

echo
status=0
if [ "$primary_digest" = "$backup_digest" ]; then
    echo "OK: the backup holds exactly the primary's data"
else
    echo "FAILED: the digests differ"
    status=1
fi
if [ "$before_switchover" = "$after_switchover" ]; then
    echo "OK: after the switchover the old primary's host serves exactly the data it was handed"
else
    echo "FAILED: the switchover changed the data"
    status=1
fi
echo "$aof_said"
case $aof_said in FAILED*) status=1 ;; esac
echo "Logs and data kept in $work (the backup's files: $backup_files)"
exit $status
