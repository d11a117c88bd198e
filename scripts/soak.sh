#!/usr/bin/env bash
# Records real programs nobody here wrote, under load, and replays each recording under jitter
# from a directory whose path differs in length from the recording's, RUNS times per program
# (default 20). A run is clean when the replay exits 0 (its outputs matched the recorded ones call
# by call) and its view of the program's directory holds the primary's files, byte for byte.
# The failover cases run live failover on one host, the demo's layout (see `failover`);
# coordinator_leader kills the leader of three coordinator members under a steered primary, 20
# times a run (LEADER_KILLS), and fails a run where the primary fenced itself or lost its epoch;
# it reports how long each election took and how many returns of a killed member started one.
# Writes the support matrix to docs/support.md (unless --no-doc) and exits 1 if any run failed.
#
#   scripts/soak.sh                      every program, 20 runs each
#   RUNS=3 scripts/soak.sh sqlite popen  those programs only
#   scripts/soak.sh --no-doc stop        SIGTERM to each kind of agent in each state, 20 times
#                                        (not a program: not in the support matrix)
#   RUNS=5 scripts/soak.sh --no-doc continuity switchover
#                                        10 failovers, and 20 switchovers, across 3 hosts in
#                                        network namespaces (tests/tests/continuity.rs), 5 times
set -uo pipefail
cd "$(dirname "$0")/.."
write_doc=1
if [ "${1:-}" = "--no-doc" ]; then
    write_doc=0
    shift
fi
scripts/setup.sh

runs=${RUNS:-20}
tandem=$PWD/target/release/tandem
fixtures=$PWD/tests/fixtures
work=$(mktemp -d /tmp/tandem-soak.XXXXXX)
# SOAK_KEEP=1 keeps the runs' directories (recordings, replays' views and output) for a look.
[ -n "${SOAK_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(nginx python python_gil sqlite memcached pipeline popen tmpfiles stdin sigsuspend failover_sync failover_received failover_async coordinator_leader)

# A port below the kernel's ephemeral range (32768 and up: a client's connection may hold any of
# those) with it and the two after it unused, TCP and UDP.
free_port() {
    local p
    while true; do
        p=$(( 20000 + RANDOM % 12000 ))
        [ -z "$(ss -Htuan "( sport >= :$p and sport <= :$(( p + 2 )) )")" ] && { echo "$p"; return; }
    done
}
wait_port() {
    for _ in $(seq 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
# The program tandem runs: its keeper's (the agent's only child's) only child.
program_of() {
    local keeper
    keeper=$(cut -d' ' -f1 "/proc/$1/task/$1/children")
    cut -d' ' -f1 "/proc/$keeper/task/$keeper/children"
}
stop_agent() {
    local agent=$1 sig=$2
    kill "-$sig" "$(program_of "$agent")" 2>/dev/null
    for _ in $(seq 200); do kill -0 "$agent" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$agent" 2>/dev/null
    wait "$agent" 2>/dev/null
}

# record CMD...: in $p, into $dir/run.tlog; stdin from $p/stdin if present.
record() {
    local input=/dev/null
    [ -f "$p/stdin" ] && input=$p/stdin
    (cd "$p" && exec "$tandem" record --out "$dir/run.tlog" -- "$@" <"$input" >"$dir/record.out" 2>&1)
}
record_bg() {
    (cd "$p" && exec "$tandem" record --out "$dir/run.tlog" -- "$@" </dev/null >"$dir/record.out" 2>&1) &
    agent=$!
}
replay() {
    (cd "$b" && TANDEM_JITTER_US=20 timeout 300 "$tandem" replay --view-dir "$b/view" "$dir/run.tlog" \
        </dev/null >"$dir/replay.out" 2>&1)
}
# The replay's own report (a divergence or a stall names its event), from its notes or output.
why_replay_failed() {
    cat "$dir/run.tlog.notes" "$dir/replay.out" 2>/dev/null | grep -m1 "diverged\|stalled\|tandem: " \
        || echo "the replay exited $? without a report"
}
# Every file of the primary's directory, as the replay left it: in its view's upper layer when it
# wrote it, else as captured.
same_files() {
    local capture
    capture=$(find "$dir/tandem-captures" -mindepth 1 -maxdepth 1 -type d | head -1)/0
    (cd "$p" && find . -type f -not -name '*.pid' -not -name 'stdin') | while read -r f; do
        local theirs=$b/view/upper/0/$f
        [ -e "$theirs" ] || theirs=$capture/$f
        if ! cmp -s "$p/$f" "$theirs"; then
            echo "the replay's ${f#./} differs from the primary's"
            return 1
        fi
    done
}

case_nginx() {
    local port
    port=$(free_port)
    mkdir -p "$p/html" "$p/tmp" "$p/logs"
    head -c 200000 /dev/urandom | base64 >"$p/html/index.html"
    cat >"$p/nginx.conf" <<EOF
daemon off;
user root;
master_process on;
worker_processes 2;
pid $p/nginx.pid;
error_log $p/logs/error.log;
events { worker_connections 256; }
http {
    access_log $p/logs/access.log;
    client_body_temp_path $p/tmp/body;
    proxy_temp_path $p/tmp/proxy;
    fastcgi_temp_path $p/tmp/fastcgi;
    uwsgi_temp_path $p/tmp/uwsgi;
    scgi_temp_path $p/tmp/scgi;
    server { listen 127.0.0.1:$port; root $p/html; }
}
EOF
    record_bg nginx -p "$p" -c "$p/nginx.conf"
    wait_port "$port" || { echo "nginx did not listen"; return 1; }
    wrk -t2 -c8 -d2s "http://127.0.0.1:$port/" >"$dir/load.out" 2>&1
    stop_agent "$agent" QUIT
    replay || { why_replay_failed; return 1; }
    same_files
}

case_python() {
    local port
    port=$(free_port)
    cat >"$p/server.py" <<'EOF'
import sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

lock = threading.Lock()

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        name = "data-%s.txt" % self.path.strip("/")
        with lock:
            with open(name, "ab") as f:
                f.write(body + b"\n")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")
        if self.path == "/quit":
            threading.Thread(target=self.server.shutdown).start()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF
    record_bg python3 server.py "$port"
    wait_port "$port" || { echo "the server did not listen"; return 1; }
    python3 - "$port" <<'EOF'
import sys, threading, http.client
def client(n):
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
    for i in range(100):
        c.request("POST", "/%d" % (i % 4), body=("client %d request %d" % (n, i)).encode())
        c.getresponse().read()
ts = [threading.Thread(target=client, args=(n,)) for n in range(6)]
[t.start() for t in ts]
[t.join() for t in ts]
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
c.request("POST", "/quit", body=b"bye")
c.getresponse().read()
EOF
    wait "$agent"
    replay || { why_replay_failed; return 1; }
    same_files
}

# Threads that compute without calls hold CPython's GIL until a waiter's timed wait runs out
# and it asks for the GIL through a flag read between bytecodes (ARCHITECTURE.md, "Flags read
# between calls"). The recording must hold such requests, or the case tests nothing.
case_python_gil() {
    cat >"$p/gil.py" <<'EOF'
import threading, time
def spin(k):
    x = 0
    for r in range(20):
        for i in range(200_000):
            x += i * k
        time.monotonic()
    with open("spin-%d.txt" % k, "w") as f:
        f.write("%d\n" % x)
def io(n):
    for i in range(300):
        with open("out-%d.txt" % n, "a") as f:
            f.write("%d %f\n" % (i, time.time()))
ts = [threading.Thread(target=spin, args=(k,)) for k in range(2)]
ts += [threading.Thread(target=io, args=(n,)) for n in range(2)]
[t.start() for t in ts]
[t.join() for t in ts]
EOF
    record python3 gil.py || { tail -3 "$dir/record.out"; return 1; }
    "$tandem" log show "$dir/run.tlog" | grep -q "pthread_cond_timedwait *= ETIMEDOUT" \
        || { echo "no thread asked for the GIL through a timed-out wait"; return 1; }
    replay || { why_replay_failed; return 1; }
    same_files
}

case_sqlite() {
    record sqlite3 test.db "CREATE TABLE t(id INTEGER PRIMARY KEY, r INTEGER, at TEXT, blob BLOB);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 5000)
        INSERT INTO t(r, at, blob) SELECT random(), datetime('now'), randomblob(64) FROM n;
        CREATE INDEX tr ON t(r); DELETE FROM t WHERE r % 3 = 0; VACUUM; SELECT count(*) FROM t;" \
        || { tail -3 "$dir/record.out"; return 1; }
    replay || { why_replay_failed; return 1; }
    same_files
}

case_memcached() {
    local port
    port=$(free_port)
    record_bg memcached -t 4 -p "$port" -U 0 -l 127.0.0.1 -u root
    wait_port "$port" || { echo "memcached did not listen"; return 1; }
    python3 - "$port" <<'EOF'
import socket, sys, threading
def client(n):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    f = s.makefile("rb")
    for i in range(500):
        v = b"value-%d-%d" % (n, i)
        s.sendall(b"set k%d 0 0 %d\r\n%s\r\n" % (i % 50, len(v), v))
        f.readline()
        s.sendall(b"get k%d\r\n" % ((i * 7) % 50))
        while f.readline() != b"END\r\n":
            pass
ts = [threading.Thread(target=client, args=(n,)) for n in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
EOF
    stop_agent "$agent" TERM
    replay || { why_replay_failed; return 1; }
    same_files
}

case_pipeline() {
    record bash -c 'seq 1 300000 | sort -r | sha1sum > out; head -c 3000000 /dev/zero | tr "\0" a | wc -c >> out' \
        || { tail -3 "$dir/record.out"; return 1; }
    replay || { why_replay_failed; return 1; }
    same_files
}

# A C fixture of the project's tests, compiled once.
fixture() {
    [ -x "$work/$1" ] || gcc -O1 -pthread -o "$work/$1" "$fixtures/$1.c" || return 1
    echo "$work/$1"
}

# Records and replays a C fixture of the project's tests.
fixture_case() {
    local prog
    prog=$(fixture "$1") || return 1
    record "$prog" || { tail -3 "$dir/record.out"; return 1; }
    replay || { why_replay_failed; return 1; }
    same_files
}

case_popen() { fixture_case popens; }
case_tmpfiles() { fixture_case tmpfiles; }
case_sigsuspend() { fixture_case awaits_signals; }

case_stdin() {
    cat >"$work/fgets.c" <<'EOF'
#include <stdio.h>
#include <string.h>
int main(void) {
    char line[256];
    unsigned long sum = 0, lines = 0;
    FILE *out = fopen("sums", "w");
    while (fgets(line, sizeof line, stdin)) {
        for (char *c = line; *c; c++) sum = sum * 31 + (unsigned char)*c;
        fprintf(out, "%lu %lu\n", ++lines, sum);
    }
    fclose(out);
    return 0;
}
EOF
    [ -x "$work/fgets" ] || gcc -O1 -o "$work/fgets" "$work/fgets.c" || return 1
    seq 1 2000 | sed 's/$/ a line of input/' >"$p/stdin"
    record "$work/fgets" || { tail -3 "$dir/record.out"; return 1; }
    replay || { why_replay_failed; return 1; }
    same_files
}

# Live failover on one host, as the demo runs it: a coordinator, redis-server under a primary in
# $p and a backup in $b (paths of other lengths), writes acknowledged one by one from 4 clients.
# The backup is killed once at a random moment (its program's files stay in its view) and
# restarted with its state directory; then the primary is killed at a random moment. The backup
# must take over, and hold every acknowledged write in sync mode.
# Agent $1 and everything below it die at once, as on a host that dies: the agent first, so it
# never sees its program end (and tells its backups so).
die() {
    local tree
    tree=$(tree_of "$1")
    kill -KILL "$1" $tree 2>/dev/null
    wait "$1" 2>/dev/null
}

failover() {
    local mode=$1 ack=${2:-durable} port agent_port cport coordinator primary backup
    port=$(free_port); agent_port=$(( port + 1 )); cport=$(( port + 2 )); coordinator=127.0.0.1:$cport
    [ -d "$work/certs" ] || {
        "$tandem" certs init --certs "$work/certs" >/dev/null
        "$tandem" certs issue --certs "$work/certs" --name primary >/dev/null
        "$tandem" certs issue --certs "$work/certs" --name backup >/dev/null
    }
    "$tandem" coordinator --state-dir "$dir/coordinator" --listen "$coordinator" >"$dir/coordinator.out" 2>&1 &
    local cpid=$!
    for _ in $(seq 100); do curl -sf "$coordinator/v1/status" | grep -q '"leader":1' && break; sleep 0.05; done
    (cd "$p" && exec "$tandem" primary --group soak --mode "$mode" --ack "$ack" --wait-for-backups 1 --listen "127.0.0.1:$agent_port" \
        --name primary --certs "$work/certs" --state-dir "$dir/primary-state" --coordinator "$coordinator" \
        -- redis-server --port "$port" --save '' --appendonly yes --dir . </dev/null >"$dir/primary.out" 2>&1) &
    primary=$!
    start_backup() {
        (cd "$b" && exec "$tandem" backup --group soak --primary "127.0.0.1:$agent_port" --name backup \
            --certs "$work/certs" --state-dir "$dir/backup-state" --coordinator "$coordinator" </dev/null >>"$dir/backup.out" 2>&1) &
        backup=$!
    }
    start_backup
    wait_port "$port" || { echo "redis did not listen"; kill -KILL $cpid $primary $backup; return 1; }
    python3 "$work/acked_writes.py" write "$port" "$dir/acked" &
    local writer=$!
    sleep "0.$(( RANDOM % 10 ))"
    # The backup dies with its program; restarted, it starts over from its own log and a reset view.
    die "$backup"
    start_backup
    sleep "$(( 1 + RANDOM % 2 )).$(( RANDOM % 10 ))"
    die "$primary"
    local killed
    killed=$(date +%s%N)
    wait "$writer" 2>/dev/null
    local ok=0
    for _ in $(seq 400); do
        if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then ok=1; break; fi
        sleep 0.05
    done
    local took=$(( ($(date +%s%N) - killed) / 1000000 )) result=0 lost
    if [ $ok -eq 0 ]; then
        echo "the backup did not take over: $(grep -h "diverged\|stalled\|tandem: " "$dir/backup-state/agent.log" "$dir/backup.out" 2>/dev/null | tail -1)"
        result=1
    elif [ "$mode" = sync ] && ! lost=$(python3 "$work/acked_writes.py" check "$port" "$dir/acked"); then
        echo "$lost"
        result=1
    else
        echo "$took" >>"$work/took-$case"
    fi
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
    kill -KILL $(tree_of "$backup") "$backup" $cpid 2>/dev/null; wait 2>/dev/null
    return $result
}

cat >"$work/acked_writes.py" <<'EOF'
# write PORT FILE: 4 clients SET distinct keys one by one, each acknowledged key appended to FILE,
# until the connection fails. check PORT FILE: every key in FILE is there with its value.
import socket, sys, threading
what, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, s.makefile("rb")
if what == "write":
    out, lock = open(path, "a"), threading.Lock()
    def client(n):
        try:
            s, f = conn()
            for i in range(10**9):
                k = "k%d:%d" % (n, i)
                s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k.encode(), len(k), k.encode()))
                if f.readline() != b"+OK\r\n":
                    return
                with lock:
                    out.write(k + "\n")
                    out.flush()
        except OSError:
            return
    ts = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
else:
    keys = open(path).read().split()
    s, f = conn()
    lost = 0
    for k in keys:
        s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()))
        head = f.readline()
        if head.startswith(b"$-1"):
            lost += 1
            continue
        lost += f.readline().rstrip(b"\r\n").decode() != k
    print("%d of %d acknowledged writes lost" % (lost, len(keys)) if lost else "%d acknowledged writes, none lost" % len(keys))
    sys.exit(1 if lost else 0)
EOF

case_failover_sync() { case=failover_sync failover sync; }
case_failover_received() { case=failover_received failover sync received; }
case_failover_async() { case=failover_async failover async; }
# Every process below pid $1.
tree_of() {
    local p c
    for p in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$p"
        tree_of "$p"
    done
}
# A process that runs (not a zombie).
runs() { [ -r "/proc/$1/stat" ] && ! awk '{ sub(/.*\) /, ""); exit !($1 == "Z" || $1 == "X") }' "/proc/$1/stat"; }
# Whether any of these processes runs.
any_runs() {
    local p
    for p in "$@"; do runs "$p" && return 0; done
    return 1
}
# Waits (20 s at most) until the agent $1 runs its program: its keeper has a child.
wait_program() {
    local k
    for _ in $(seq 1000); do
        for k in $(tree_of "$1"); do
            if tr '\0' ' ' 2>/dev/null <"/proc/$k/cmdline" | grep -qE '^[^ ]+ (keep|enter-view) ' \
                && [ -n "$(tree_of "$k")" ]; then
                return 0
            fi
        done
        sleep 0.02
    done
    return 1
}
# Sends SIGTERM to agent $1 (what it is: $2) and checks that it and every process below it are
# gone within 2 s.
term_within() {
    local agent=$1 what=$2 tree start ms
    tree=$(tree_of "$agent")
    start=$(date +%s%N)
    kill -TERM "$agent"
    while any_runs "$agent" $tree; do
        ms=$(( ($(date +%s%N) - start) / 1000000 ))
        [ "$ms" -le 5000 ] || break
        sleep 0.01
    done
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    wait "$agent" 2>/dev/null
    echo "$what: gone in $ms ms" >>"$work/stop-times"
    [ "$ms" -le 2000 ] || { echo "$what took $ms ms to stop"; return 1; }
}

# SIGTERM to each kind of agent in each state: following (primary and backup), catching up,
# holding replies, fenced. Each must be gone, with its program, within 2 s.
case_stop() {
    local certs=$dir/certs port service echo prim back coord at
    "$tandem" certs init --certs "$certs" >/dev/null && "$tandem" certs issue --certs "$certs" --name primary >/dev/null \
        && "$tandem" certs issue --certs "$certs" --name backup1 >/dev/null || return 1
    local busy='i=0; while true; do echo $i >> out; sleep 0.01; i=$((i+1)); done'
    local stubborn="trap '' TERM INT; $busy"
    agent_in() { (cd "$1" && shift && exec "$tandem" "$@" </dev/null >>"$dir/agents.out" 2>&1) & }
    member() { echo --group g --name "$1" --certs "$certs" --state-dir "$dir/$1-$2.state"; }

    # tandem record, its program ignoring SIGTERM.
    agent_in "$p" record --out "$dir/r.tlog" --no-capture -- sh -c "$stubborn"
    prim=$!; wait_program $prim || return 1; term_within $prim "record" || return 1

    # A primary and a backup following it: SIGTERM to the backup, then to the primary.
    port=$(free_port)
    agent_in "$p" primary $(member primary 1) --mode async --listen 127.0.0.1:$port --no-capture -- sh -c "$busy"
    prim=$!
    agent_in "$b" backup $(member backup1 1) --primary 127.0.0.1:$port
    back=$!
    wait_program $prim && wait_program $back || return 1
    sleep 0.3
    term_within $back "backup, following" || return 1
    # A backup catching up from the start of the log.
    sleep 1
    agent_in "$b" backup $(member backup1 2) --primary 127.0.0.1:$port
    back=$!
    wait_program $back || return 1
    term_within $back "backup, catching up" || return 1
    term_within $prim "primary, followed" || return 1

    # A sync primary without a backup, holding a reply.
    echo=$(fixture echo_server) || return 1
    port=$(free_port) service=$(free_port)
    agent_in "$p" primary $(member primary 2) --listen 127.0.0.1:$port --no-capture -- "$echo" "$service"
    prim=$!
    wait_port "$service" || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$service"; echo hello >&3; sleep 3) &
    sleep 0.3
    term_within $prim "primary, holding a reply" || return 1

    # A primary fenced (its coordinator gone), its program kept, held.
    at=127.0.0.1:$(free_port)
    "$tandem" coordinator --state-dir "$dir/coordinator" --listen "$at" >>"$dir/agents.out" 2>&1 &
    coord=$!
    for _ in $(seq 200); do curl -sf "http://$at/v1/status" | grep -q '"leader":[0-9]' && break; sleep 0.05; done
    port=$(free_port)
    agent_in "$p" primary $(member primary 3) --listen 127.0.0.1:$port --no-capture --coordinator "$at" \
        --keep-fenced -- sh -c "$busy"
    prim=$!
    wait_program $prim || return 1
    kill -KILL $coord
    # Its notes are in its state directory (its stderr is a file, shared with the program).
    for _ in $(seq 200); do grep -q "keeps running" "$dir/primary-3.state/agent.log" && break; sleep 0.02; done
    grep -q "keeps running" "$dir/primary-3.state/agent.log" || { echo "the primary did not fence itself"; return 1; }
    term_within $prim "primary, fenced" || return 1
}

# A group through one failure after another, and planned switchovers, on three hosts: the
# integration tests that do it (tests/tests/continuity.rs), each run's summary kept.
continuity_test() {
    cargo test --release -q -p tandem-tests --test continuity "$1" -- --nocapture >"$dir/test.out" 2>&1
    local r=$?
    grep -h "$2" "$dir/test.out" >>"$work/said-$c"
    [ $r -eq 0 ] || { grep -m1 -A2 panicked "$dir/test.out"; return 1; }
}
case_continuity() { continuity_test a_group_keeps_a_standby "failovers ("; }
case_switchover() { continuity_test switchovers_round_robin "switchovers round robin"; }

# Three coordinator members on this host, a primary (a shell loop, sync mode) steered by them
# and a backup; the members' leader is killed and restarted 20 times (LEADER_KILLS). Each
# election must fit in the primary's lease: the group never leaves its epoch and the primary
# never fences itself.
case_coordinator_leader() {
    local kills=${LEADER_KILLS:-20} certs=$dir/certs port ports=() pids=() peers="" members="" i k
    "$tandem" certs init --certs "$certs" >/dev/null && "$tandem" certs issue --certs "$certs" --name primary >/dev/null \
        && "$tandem" certs issue --certs "$certs" --name backup >/dev/null || return 1
    port=$(free_port)
    for i in 1 2 3; do
        ports[$i]=$(( port + 1 + i ))
        peers+="${peers:+,}$i=127.0.0.1:${ports[$i]}"
        members+="${members:+,}127.0.0.1:${ports[$i]}"
    done
    member_up() {
        "$tandem" coordinator --state-dir "$dir/m$1" --listen "127.0.0.1:${ports[$1]}" --id "$1" --peers "$peers" \
            >>"$dir/m$1.out" 2>&1 &
        pids[$1]=$!
    }
    # The leader the members $@ agree on, one of them (none while they do not).
    leader_of() {
        local seen="" l
        for i in "$@"; do
            l=$(curl -sf -m 1 "127.0.0.1:${ports[$i]}/v1/status" | grep -o '"leader":[0-9]*' | cut -d: -f2)
            [ -n "$l" ] || return 1
            [ -z "$seen" ] || [ "$seen" = "$l" ] || return 1
            seen=$l
        done
        [[ " $* " == *" $seen "* ]] && echo "$seen"
    }
    wait_leader() {
        local l
        for _ in $(seq 400); do l=$(leader_of "$@") && { echo "$l"; return 0; }; sleep 0.05; done
        return 1
    }
    group() { curl -sf -m 2 "127.0.0.1:${ports[$1]}/v1/groups/g"; }
    term_of() { curl -sf -m 1 "127.0.0.1:${ports[$1]}/v1/status" | grep -o '"term":[0-9]*' | cut -d: -f2; }
    cleanup() { kill -KILL $(tree_of "$prim") $(tree_of "$back") "$prim" "$back" "${pids[@]}" 2>/dev/null; wait 2>/dev/null; }
    for i in 1 2 3; do member_up $i; done
    wait_leader 1 2 3 >/dev/null || { echo "the members elected no leader"; cleanup; return 1; }
    local busy='i=0; while true; do echo $i >> out; sleep 0.01; i=$((i+1)); done' prim back epoch
    (cd "$p" && exec "$tandem" primary --group g --name primary --certs "$certs" --state-dir "$dir/primary.state" \
        --listen "127.0.0.1:$port" --no-capture --coordinator "$members" -- sh -c "$busy" </dev/null >"$dir/primary.out" 2>&1) &
    prim=$!
    (cd "$b" && exec "$tandem" backup --group g --name backup --certs "$certs" --state-dir "$dir/backup.state" \
        --primary "127.0.0.1:$port" --coordinator "$members" </dev/null >"$dir/backup.out" 2>&1) &
    back=$!
    for _ in $(seq 400); do group 1 | grep -q '"backup":{[^}]*"held":[1-9]' && break; sleep 0.05; done
    epoch=$(group 1 | grep -o '"epoch":[0-9]*' | head -1)
    group 1 | grep -q '"backup":{[^}]*"held":[1-9]' || { echo "the backup did not join: $(group 1)"; cleanup; return 1; }
    local leader rest new took term
    for k in $(seq "$kills"); do
        leader=$(wait_leader 1 2 3) || { echo "kill $k: the members agree on no leader"; cleanup; return 1; }
        rest=$(echo 1 2 3 | tr ' ' '\n' | grep -vx "$leader" | tr '\n' ' ')
        local killed
        killed=$(date +%s%N)
        echo "kill $k member $leader $(date -u +%T.%N)" >>"$dir/kills"   # beside the members' logs (SOAK_KEEP)
        kill -KILL "${pids[$leader]}"; wait "${pids[$leader]}" 2>/dev/null
        # shellcheck disable=SC2086
        new=$(wait_leader $rest) || { echo "kill $k: no new leader after member $leader died"; cleanup; return 1; }
        took=$(( ($(date +%s%N) - killed) / 1000000 ))
        echo "$took" >>"$work/elected-coordinator_leader"
        sleep 1
        term=$(term_of "$new")
        member_up "$leader"
        for _ in $(seq 200); do curl -sf -m 1 "127.0.0.1:${ports[$leader]}/v1/status" | grep -q '"ready":true' && break; sleep 0.05; done
        sleep 0.5
        # A member coming back must find the leader's heartbeats before its election timeout.
        echo "$term $(term_of "$new")" | awk '$1 != $2' >>"$work/returns-coordinator_leader"
        if ! runs "$prim" || grep -q "held for good" "$dir/primary.state/agent.log" "$dir/primary.out" 2>/dev/null; then
            echo "kill $k (member $leader): the primary fenced itself: $(grep -h "held for good" "$dir/primary.state/agent.log" "$dir/primary.out" | tail -1)"
            cleanup; return 1
        fi
        # Any member answers for the group; one may not for a moment (a returning member's
        # election), which is not what this checks.
        local now="" m
        for _ in $(seq 40); do
            for m in 1 2 3; do now=$(group "$m" | grep -o '"epoch":[0-9]*' | head -1) && [ -n "$now" ] && break 2; done
            sleep 0.1
        done
        if [ "$now" != "$epoch" ]; then
            echo "kill $k (member $leader): the group left its $epoch: ${now:-no member answered for it}"
            cleanup; return 1
        fi
    done
    cleanup
}

declare -A what=(
    [nginx]="nginx, master and 2 worker processes, under wrk (2 s, 8 connections)"
    [python]="a threaded Python HTTP server (ThreadingHTTPServer) appending POSTs to files, 6 clients"
    [python_gil]="Python threads contending for the GIL: 2 computing without calls, 2 appending to files"
    [sqlite]="sqlite3: 5000 rows of random() and datetime('now'), an index, a delete, VACUUM"
    [memcached]="memcached -t 4 under 4 concurrent clients (set and get)"
    [pipeline]="bash -c pipelines: seq into sort into sha1sum, and 3 MB through tr into wc"
    [popen]="a C program using system() and popen() several times, from two threads"
    [tmpfiles]="a C program using mkstemp, tmpfile, tmpnam and tempnam"
    [stdin]="a C program reading stdin with fgets"
    [sigsuspend]="a C program stopping on signals awaited in sigsuspend, ppoll and sigwait"
    [failover_sync]="live failover on one host, sync mode: redis-server under 4 writing clients, the backup killed and restarted with its files left behind, then the primary killed; every acknowledged write must be on the backup"
    [failover_received]="the same in sync mode at --ack received (a backup acknowledges what it holds in memory): every acknowledged write must be on the backup"
    [failover_async]="the same in async mode: the backup must take over"
    [continuity]="10 failovers in a row across 3 hosts (redis-server, sync mode), each killed host rejoining"
    [switchover]="20 switchovers round robin over 3 hosts (redis-server, sync mode)"
    [coordinator_leader]="three coordinator members, their leader killed and restarted 20 times under a steered primary and its backup: the group must keep its epoch and the primary must not fence itself"
    [stop]="SIGTERM to record, a primary (followed, holding a reply, fenced) and a backup (following, catching up)"
)
declare -A clean failure
status=0
for c in "${cases[@]}"; do
    clean[$c]=0
    failure[$c]=""
    for run in $(seq "$runs"); do
        dir=$work/$c-$run
        p=$dir/primary
        b=$dir/a-backup-elsewhere
        mkdir -p "$p" "$b"
        if why=$("case_$c" 2>&1); then
            clean[$c]=$(( ${clean[$c]} + 1 ))
        else
            status=1
            [ -n "${failure[$c]}" ] || failure[$c]=$(echo "$why" | tr '\n' ' ' | sed 's/|/\\|/g' | cut -c1-300)
        fi
        [ -n "${SOAK_KEEP:-}" ] || rm -rf "$dir"
    done
    if [ -s "$work/took-$c" ]; then
        failure[$c]="$(sort -n "$work/took-$c" | awk '{v[NR]=$1} END {printf "took over in %d/%d/%d ms (min/median/max)", v[1], v[int((NR+1)/2)], v[NR]}') ${failure[$c]}"
    fi
    if [ -s "$work/elected-$c" ]; then
        failure[$c]="$(sort -n "$work/elected-$c" | awk '{v[NR]=$1} END {printf "a new leader in %d/%d/%d ms (min/median/max)", v[1], v[int((NR+1)/2)], v[NR]}'), $(wc -l <"$work/elected-$c" | tr -d ' ') kills, $(cat "$work/returns-$c" 2>/dev/null | wc -l | tr -d ' ') returns of a killed member starting an election ${failure[$c]}"
    fi
    printf '%-15s %3d of %d clean  %s\n' "$c" "${clean[$c]}" "$runs" "${failure[$c]}"
    [ -s "$work/said-$c" ] && sed 's/^/    /' "$work/said-$c"
done
if [ -f "$work/stop-times" ]; then
    echo "stop times (ms): slowest of each kind of agent"
    awk -F': gone in ' '{ split($2, t, " "); if (!($1 in max) || t[1] + 0 > max[$1]) max[$1] = t[1] + 0 }
        END { for (k in max) printf "  %-26s %d\n", k, max[k] }' "$work/stop-times"
fi

if [ $write_doc -eq 1 ]; then
    {
        echo "# Support matrix"
        echo
        echo "Real programs, each recorded under load and replayed $runs times under"
        echo "\`TANDEM_JITTER_US=20\`, every replay from a directory whose path differs in length from the"
        echo "recording's. A run is clean when the replay exits 0 (its outputs matched the recorded ones call"
        echo "by call) and its view of the program's directory holds the primary's files, byte for byte."
        echo "The failover rows run the demo's layout live instead: a run is clean when the backup takes"
        echo "over (and, in sync mode, holds every acknowledged write)."
        echo "Produced by \`scripts/soak.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -r))."
        echo
        echo "| program | clean runs | takeover times, first failure seen |"
        echo "|---|---|---|"
        for c in "${cases[@]}"; do
            echo "| ${what[$c]} | ${clean[$c]} of $runs | ${failure[$c]:-} |"
        done
        echo
        cat docs/limits.md
    } >docs/support.md
    echo "wrote docs/support.md"
fi
exit $status
