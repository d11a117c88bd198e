#!/usr/bin/env bash
# Benchmarks that BENCHMARKS.md reports. Each figure is measured against native in the same run.
#   scripts/bench.sh calls   added cost per intercepted call (clock_gettime, mutex lock/unlock)
#   scripts/bench.sh instructions  the shim's instructions per call (callgrind; part of `calls`)
#   scripts/bench.sh redis   redis-benchmark SET throughput under `tandem record` vs native
#   scripts/bench.sh drain   events per second the agent sustains from one busy thread
#   scripts/bench.sh replay  wall time of replaying a recorded redis-server run, against the run
#   scripts/bench.sh handoff the sequencer's hand-off between two threads, against native futexes
#   scripts/bench.sh live    redis-benchmark SET throughput under `tandem primary` with one backup
#                            on loopback, sync and async mode, vs native (and sync with the
#                            backup's state directory in tmpfs: what the disk's flush costs)
#   scripts/bench.sh cpu     CPU seconds of each process under redis-benchmark: native, record,
#                            async primary with its backup on the same cores
#   scripts/bench.sh stream  event throughput between two agents on loopback
#   scripts/bench.sh footprint  log bytes an hour of an idle memcached and per redis request, on a
#                            primary and its backup
#   scripts/bench.sh coordinator  three coordinator members on loopback: writes, lease renewals,
#                            and how soon after a primary's last renewal its epoch ends
#   scripts/bench.sh         all of them
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# TANDEM=path/to/tandem benchmarks another build (its libtandem.so beside it).
tandem=${TANDEM:-$PWD/target/release/tandem}
work=$(mktemp -d /tmp/tandem-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
rounds=${ROUNDS:-9}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# The median of column N of FILE.
median_of() { awk -v c="$1" '{print $c}' "$2" | median; }

calls() {
    gcc -O2 -pthread -o "$work/call_cost" bench/call_cost.c
    gcc -O2 -shared -fPIC -o "$work/bare.so" bench/bare_interposer.c -ldl
    # The program runs on core 1, the agent on core 0. Paused (300 us between batches) the
    # figures are the hook's own cost; back to back (no pause) they add what the agent's draining
    # beside the program costs it.
    for i in $(seq "$rounds"); do
        for pause in 300 0; do
            taskset -c 1 "$work/call_cost" 2000 $pause | sed "s/^/native $pause /"
            LD_PRELOAD="$work/bare.so" taskset -c 1 "$work/call_cost" 2000 $pause | sed "s/^/bare $pause /"
            taskset -c 0 "$tandem" record --no-capture --out "$work/calls.tlog" -- \
                taskset -c 1 "$work/call_cost" 2000 $pause | sed "s/^/tandem $pause /"
        done
    done > "$work/calls.txt"
    # The median over rounds of column C of runs of KIND with PAUSE for workload W.
    pick() { awk -v k=$1 -v p=$2 -v w=$3 -v c=$4 '$1==k && $2==p && $3==w {print $c}' "$work/calls.txt" | median; }
    echo "Per-call cost, ns (median of $rounds runs, each the median of 2000 batches of 1000 calls)"
    printf '%-16s %8s %8s %8s %12s %12s\n' workload native bare tandem "bare added" "tandem added"
    for w in clock_gettime mutex_pair; do
        n=$(pick native 300 $w 4); b=$(pick bare 300 $w 4); t=$(pick tandem 300 $w 4)
        printf '%-16s %8.1f %8.1f %8.1f %12.1f %12.1f\n' $w "$n" "$b" "$t" "$(echo "$b - $n" | bc)" "$(echo "$t - $n" | bc)"
    done
    echo "(mutex_pair is one lock and one unlock: two intercepted calls)"
    echo
    echo "Back to back, the agent draining beside the program (median batch; mean of all batches, waits for room included)"
    printf '%-16s %8s %8s %12s %8s %12s\n' workload native tandem "added" "mean" "mean added"
    for w in clock_gettime mutex_pair; do
        n=$(pick native 0 $w 4); t=$(pick tandem 0 $w 4); nm=$(pick native 0 $w 5); tm=$(pick tandem 0 $w 5)
        printf '%-16s %8.1f %8.1f %12.1f %8.1f %12.1f\n' $w "$n" "$t" "$(echo "$t - $n" | bc)" "$tm" "$(echo "$tm - $nm" | bc)"
    done
    echo
    instructions
}

# callgrind counts instructions, so this figure is the same whatever else the machine does.
instructions() {
    command -v valgrind >/dev/null || { echo "(valgrind not installed: no instruction counts)"; return; }
    gcc -O2 -pthread -o "$work/instr_count" bench/instr_count.c
    count() { # what, under tandem?
        local out="$work/cg.$1.$2" n=100000
        if [ "$2" = tandem ]; then
            "$tandem" record --no-capture --out "$work/cg.tlog" -- valgrind --tool=callgrind --callgrind-out-file="$out" "$work/instr_count" $n "$1" 2>/dev/null
        else
            valgrind --tool=callgrind --callgrind-out-file="$out" "$work/instr_count" $n "$1" 2>/dev/null
        fi
        grep -E '^summary:' "$out" | awk '{print $2}'
    }
    echo "Instructions per iteration, callgrind, 100000 iterations"
    printf '%-16s %10s %10s %10s\n' workload native tandem added
    local names=(clock_gettime mutex_pair "" write_devnull read_devzero fstat_file)
    empty=$(count 2 native); emptys=$(count 2 tandem)
    for w in 0 1 3 4 5; do
        base=$(count $w native); withs=$(count $w tandem)
        n=$(( (base - empty) / 100000 )); t=$(( (withs - emptys) / 100000 ))
        printf '%-16s %10d %10d %10d\n' "${names[$w]}" $n $t $((t - n))
    done
}

redis_rps() { # port
    redis-benchmark -p "$1" -c 50 -n 200000 -t set -q 2>/dev/null | grep -oE 'SET: [0-9.]+' | awk '{print $2}'
}

wait_ping() {
    for _ in $(seq 200); do redis-cli -p "$1" ping 2>/dev/null | grep -q PONG && return; sleep 0.05; done
    echo "redis on port $1 did not start" >&2; exit 1
}

# Runs COMMAND (a redis-server on PORT, maybe under tandem) in the background, prints its SET
# requests/s, shuts it down and waits for every background job.
measure_rps() { # port command...
    local port=$1; shift
    "$@" >/dev/null 2>&1 &
    wait_ping "$port"
    redis_rps "$port"
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait
}

redis_cmd=(redis-server --save '' --appendonly no --dir "$work")

redis() {
    for i in $(seq "$rounds"); do
        echo "native $(measure_rps $(( 21000 + i )) "${redis_cmd[@]}" --port $(( 21000 + i )))"
        port=$(( 22000 + i ))
        echo "record $(measure_rps $port "$tandem" record --no-capture --out "$work/redis.tlog" -- "${redis_cmd[@]}" --port $port)"
    done > "$work/redis.txt"
    n=$(awk '$1=="native" {print $2}' "$work/redis.txt" | median)
    r=$(awk '$1=="record" {print $2}' "$work/redis.txt" | median)
    echo "redis-benchmark -c 50 -n 200000 -t set (requests/s, median of $rounds alternating runs)"
    printf '%-22s %12s %8s\n' mode "requests/s" ratio
    printf '%-22s %12.0f %8s\n' native "$n" 1.00
    printf '%-22s %12.0f %8.2f\n' "tandem record" "$r" "$(echo "scale=4; $r / $n" | bc)"
}

drain() {
    gcc -O2 -o "$work/tight_loop" bench/tight_loop.c
    for i in $(seq "$rounds"); do
        "$tandem" record --no-capture --out "$work/drain.tlog" -- "$work/tight_loop" 10000000
        "$tandem" log stats "$work/drain.tlog" | awk '/^duration/ {gsub(/[(]/, "", $4); print $4}'
    done > "$work/drain.txt"
    bytes=$("$tandem" log stats --json "$work/drain.tlog" | jq -r .record_bytes)
    stored=$(logged_bytes "$work/drain.tlog")
    echo "Agent drain rate: one thread making 10,000,000 clock_gettime calls (median of $rounds runs)"
    printf '%-22s %14s %18s %16s\n' "" "events/s" "MiB/s of events" "log MiB stored"
    e=$(median < "$work/drain.txt")
    printf '%-22s %14.0f %18.0f %16.1f\n' "tandem record" "$e" "$(echo "$e * $bytes / 10000003 / 1048576" | bc)" \
        "$(echo "$stored / 1048576" | bc -l)"
}

now_ns() { date +%s%N; }

replay() {
    for i in $(seq "$rounds"); do
        port=$(( 23000 + i ))
        start=$(now_ns)
        "$tandem" record --no-capture --out "$work/replay.tlog" -- "${redis_cmd[@]}" --port $port >/dev/null 2>&1 &
        wait_ping $port
        redis-benchmark -p $port -c 50 -n 100000 -r 100000 -t set,incr,lpush,sadd -q >/dev/null 2>&1
        redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
        wait
        recorded=$(( $(now_ns) - start ))
        span=$("$tandem" log stats "$work/replay.tlog" | awk '/^duration/ {printf "%d", $2 * 1000000000}')
        start=$(now_ns)
        "$tandem" replay "$work/replay.tlog" >/dev/null 2>&1
        replayed=$(( $(now_ns) - start ))
        events=$("$tandem" log stats "$work/replay.tlog" | awk '/^events/ {print $2}')
        echo "$recorded $span $replayed $events"
    done > "$work/replay.txt"
    r=$(median_of 1 "$work/replay.txt")
    s=$(median_of 2 "$work/replay.txt")
    p=$(median_of 3 "$work/replay.txt")
    e=$(median_of 4 "$work/replay.txt")
    echo "redis-server under redis-benchmark -c 50 -n 100000 -r 100000 -t set,incr,lpush,sadd, then replayed"
    echo "(median of $rounds runs; about $e events per log)"
    printf '%-34s %10s %12s\n' "" seconds "replay ratio"
    printf '%-34s %10.3f\n' "tandem record, launch to exit" "$(echo "$r / 1000000000" | bc -l)"
    printf '%-34s %10.3f\n' "log span, first to last event" "$(echo "$s / 1000000000" | bc -l)"
    printf '%-34s %10.3f %12.2f\n' "tandem replay, launch to exit" "$(echo "$p / 1000000000" | bc -l)" "$(echo "$p / $s" | bc -l)"
    echo "(the ratio is replay wall time over the log span: the stricter of the two)"
}

handoff() {
    gcc -O2 -pthread -o "$work/handoff" bench/handoff.c
    echo "Hand-off between two threads, ns: from the holder's unlock to the waiter's lock returning"
    echo "(median of $rounds runs of 20000 hand-offs; each run reports its median and 90th percentile)"
    printf '%-26s %-10s %10s %10s\n' "waiter has waited" mode median p90
    for delay in 0 50; do
        for i in $(seq "$rounds"); do
            "$work/handoff" 20000 $delay 2>&1 | sed 's/^/native /'
            "$tandem" record --no-capture --out "$work/handoff.tlog" -- "$work/handoff" 20000 $delay 2>&1 | sed 's/^/record /'
            "$tandem" replay "$work/handoff.tlog" 2>&1 | grep '^handoff' | sed 's/^/replay /'
        done > "$work/handoff.txt"
        for mode in native record replay; do
            m=$(awk -v m=$mode '$1==m {print $4}' "$work/handoff.txt" | median)
            p=$(awk -v m=$mode '$1==m {print $5}' "$work/handoff.txt" | median)
            printf '%-26s %-10s %10d %10d\n' "$([ $delay = 0 ] && echo "a moment" || echo "50 us (asleep)")" $mode "$m" "$p"
        done
    done
}

certs() {
    [ -f "$work/certs/ca.crt" ] && return
    "$tandem" certs init --certs "$work/certs" >/dev/null
    for n in primary backup; do "$tandem" certs issue --certs "$work/certs" --name $n >/dev/null; done
}

# One run of redis-server as a primary in MODE with one backup; prints its SET requests/s.
# The backup's state directory is on disk unless BACKUP_STATE names another.
primary_rps() { # mode port [ack level]
    local agent=$(( $2 + 1000 )) state=${BACKUP_STATE:-$work/b/state}
    rm -rf "$work/p" "$work/b" "$state"; mkdir -p "$work/p" "$work/b"
    (cd "$work/b" && exec "$tandem" backup --group bench --primary 127.0.0.1:$agent --name backup \
        --certs "$work/certs" --state-dir "$state" >/dev/null 2>"$work/b/err") &
    measure_rps "$2" primary_redis "$1" "$2" "$agent" "${3:-durable}"
    rm -rf "$state"
}

primary_redis() { # mode port agent-port ack-level
    cd "$work/p" && exec "$tandem" primary --group bench --wait-for-backups 1 --listen 127.0.0.1:$3 --mode "$1" --ack "$4" \
        --name primary --certs "$work/certs" --state-dir "$work/p/state" -- "${redis_cmd[@]}" --port "$2" 2>"$work/p/err"
}

live() {
    certs
    for i in $(seq "$rounds"); do
        echo "native $(measure_rps $(( 25000 + i )) "${redis_cmd[@]}" --port $(( 25000 + i )))"
        echo "sync-durable $(primary_rps sync $(( 26000 + i )) durable)"
        echo "sync-received $(primary_rps sync $(( 24000 + i )) received)"
        echo "async $(primary_rps async $(( 27000 + i )))"
        # The same sync run with the backup's log in memory: what the device's flush costs.
        echo "sync-tmpfs $(BACKUP_STATE=/dev/shm/tandem-bench-state.$$ primary_rps sync $(( 29000 + i )))"
    done > "$work/live.txt"
    n=$(awk '$1=="native" {print $2}' "$work/live.txt" | median)
    rm -f "$work/live.ratios"
    echo "redis-benchmark -c 50 -n 200000 -t set, one backup on loopback (requests/s, median of $rounds alternating runs)"
    printf '%-50s %12s %8s\n' mode "requests/s" ratio
    printf '%-50s %12.0f %8s\n' native "$n" 1.00
    for m in async sync-received sync-durable sync-tmpfs; do
        r=$(awk -v m=$m '$1==m {print $2}' "$work/live.txt" | median)
        case $m in
            async) label="tandem primary --mode async" ;;
            sync-received) label="tandem primary --ack received" ;;
            sync-durable) label="tandem primary --ack durable (the default)" ;;
            sync-tmpfs) label="--ack durable, backup's log in tmpfs" ;;
        esac
        printf '%-50s %12.0f %8.2f\n' "$label" "$r" "$(echo "scale=4; $r / $n" | bc)"
        printf '%s %.3f %s\n' "$m" "$(echo "scale=4; $r / $n" | bc)" "${live_targets[$m]}" >> "$work/live.ratios"
    done
    chart_live "$work/live.ratios" docs/bench-live.png
}

# Ratio to native of each live mode and its target, as bars (gnuplot, installed if missing).
declare -A live_targets=([async]=0.90 [sync-received]=0.65 [sync-durable]=0.50 [sync-tmpfs]=0)
chart_live() { # ratios-file png
    if ! command -v gnuplot >/dev/null; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null
    fi
    gnuplot <<GP
set terminal png size 800,420
set output "$2"
set title "redis-benchmark SET under tandem primary, one backup on loopback (2 cores)"
set ylabel "requests/s, ratio to native"
set yrange [0:1.1]
set style fill solid 0.6
set boxwidth 0.6
set grid ytics
set key top right
plot "$1" using 0:2:xtic(1) with boxes title "measured", \
     "$1" using 0:(\$3 > 0 ? \$3 : 1/0) with points pt 7 ps 2 title "target"
GP
    echo "(chart: $2)"
}

# CPU seconds (user and system, from /proc) each process spends while redis-benchmark sends
# 200,000 SETs: natively, under `tandem record`, and as a primary in async mode with its backup
# on the same two cores. Which share of the machine replication takes, beside what native uses.
cpu() {
    certs
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
    under_backup() { # pid: whether a `tandem backup` started it, however far up
        local p=$1
        while [ "$p" -gt 1 ]; do
            p=$(awk '{print $4}' "/proc/$p/stat")
            tr '\0' ' ' <"/proc/$p/cmdline" | grep -q "tandem backup" && return 0
        done
        return 1
    }
    for i in $(seq "$rounds"); do
        for mode in native record async; do
            local port=$(( 30000 + i * 10 )) agent=$(( 30001 + i * 10 ))
            rm -rf "$work/p" "$work/b"; mkdir -p "$work/p" "$work/b"
            case $mode in
                native) "${redis_cmd[@]}" --port $port >/dev/null 2>&1 & ;;
                record) "$tandem" record --no-capture --out "$work/cpu.tlog" -- "${redis_cmd[@]}" --port $port >/dev/null 2>&1 & ;;
                async)
                    (cd "$work/b" && exec "$tandem" backup --group bench --primary 127.0.0.1:$agent --name backup \
                        --certs "$work/certs" --state-dir "$work/b/state" >/dev/null 2>&1) &
                    primary_redis async $port $agent durable >/dev/null 2>&1 & ;;
            esac
            wait_ping $port
            local pids p
            pids=$(pgrep -f "tandem (record|primary|backup) |redis-server .*:$port" || true)
            declare -A before=()
            for p in $pids; do before[$p]=$(ticks "$p"); done
            local start=$(now_ns)
            TIMEFORMAT="%U %S"
            local client
            client=$( { time redis-benchmark -p $port -c 50 -n 200000 -t set -q >/dev/null 2>&1; } 2>&1 | awk '{print ($1 + $2) * 100}')
            local wall=$(( ($(now_ns) - start) / 10000000 ))
            for p in $pids; do
                local who
                case "$(tr '\0' ' ' <"/proc/$p/cmdline")" in
                    *"tandem record"*|*"tandem primary"*) who=agent ;;
                    *"tandem backup"*) who=backup-agent ;;
                    *) who=redis
                       under_backup "$p" && who=backup-redis ;;
                esac
                echo "$mode $who $(( $(ticks "$p") - ${before[$p]} ))"
            done
            echo "$mode client ${client%.*}"
            echo "$mode wall $wall"
            redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
            sleep 1
            pkill -f "tandem backup --group bench --primary 127.0.0.1:$agent" 2>/dev/null || true
            wait
        done
    done > "$work/cpu.txt"
    echo "CPU seconds while redis-benchmark sends 200,000 SETs (-c 50), median of $rounds rounds"
    printf '%-8s %8s %8s %8s %8s %8s %8s %8s\n' mode wall redis client agent backup-redis backup-agent "cpu/wall"
    for mode in native record async; do
        local cols=() total=0 v
        for who in wall redis client agent backup-redis backup-agent; do
            v=$(awk -v m=$mode -v w=$who '$1==m && $2==w {print $3}' "$work/cpu.txt" | median)
            v=${v:-0}
            cols+=("$(echo "scale=2; $v / 100" | bc)")
            [ "$who" = wall ] || total=$(( total + v ))
        done
        printf '%-8s %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f\n' $mode "${cols[@]}" "$(echo "scale=2; $total / ${cols[0]} / 100" | bc)"
    done
    echo "(seconds of CPU; cpu/wall is how many of the two cores the processes kept busy)"
}

size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }

# A primary records 10M events, then its program waits; a witness backup started then catches up
# over QUIC (from the primary's memory and log file), verifying and durably appending each batch.
# Once the witness is following, the program ends: the witness exits when it holds all of it.
stream() {
    certs
    gcc -O2 -o "$work/tight_loop" bench/tight_loop.c
    for mode in zstd none; do
        flag=()
        [ "$mode" = none ] && flag=(--no-compress)
        for i in $(seq "$rounds"); do
            agent=$(( 28000 + i ))
            rm -rf "$work/p" "$work/b"; mkdir -p "$work/p" "$work/b"; mkfifo "$work/p/go"
            (cd "$work/p" && exec "$tandem" primary --group bench --listen 127.0.0.1:$agent --mode async "${flag[@]}" \
                --name primary --certs "$work/certs" --state-dir "$work/p/state" -- \
                sh -c "'$work/tight_loop' 10000000 && touch '$work/p/done' && read x < '$work/p/go'" 2>"$work/p/err") &
            pid=$!
            while [ ! -f "$work/p/done" ]; do sleep 0.05; done
            sleep 0.3
            start=$(now_ns)
            (cd "$work/b" && exec "$tandem" backup --witness --group bench --primary 127.0.0.1:$agent --name backup \
                --certs "$work/certs" --state-dir "$work/b/state" 2>"$work/b/err") &
            bpid=$!
            until grep -q 'following the primary' "$work/b/err" 2>/dev/null; do sleep 0.002; done
            echo > "$work/p/go"
            wait "$bpid" || { cat "$work/b/err" >&2; exit 1; }
            took=$(( $(now_ns) - start ))
            wait "$pid"
            events=$("$tandem" log stats "$work/p/state/log.tlog" | awk '/^events/ {print $2}')
            # The events' bytes as logged, not the primary's file: it stores them packed.
            logged=$("$tandem" log stats --json "$work/p/state/log.tlog" | jq -r .record_bytes)
            echo "$took $logged $events $(size_of "$work/b/state/log.tlog")"
        done > "$work/stream.$mode.txt"
    done
    b=$(median_of 2 "$work/stream.zstd.txt")
    e=$(median_of 3 "$work/stream.zstd.txt")
    echo "Stream between two agents on loopback: a witness catching up on $e events ($((b / 1048576)) MiB of log)"
    echo "(median of $rounds runs; QUIC with TLS 1.3, crc32c checked, appended and fdatasync'd before each ACK)"
    printf '%-22s %10s %14s %10s %16s\n' "" seconds "events/s" "MiB/s" "witness log MiB"
    for mode in zstd none; do
        t=$(median_of 1 "$work/stream.$mode.txt")
        w=$(median_of 4 "$work/stream.$mode.txt")
        printf '%-22s %10.3f %14.0f %10.0f %16.1f\n' "compression $mode" "$(echo "$t / 1000000000" | bc -l)" \
            "$(echo "$e * 1000000000 / $t" | bc -l)" "$(echo "$b * 1000000000 / $t / 1048576" | bc -l)" \
            "$(echo "$w / 1048576" | bc -l)"
    done
}

# Log bytes an hour of an idle memcached, and per request of redis under redis-benchmark, on
# a sync primary and its one backup. The program is stopped (SIGTERM to the primary) and both
# logs are measured to their end marker: the launch and startup count too.
logged_bytes() { "$tandem" log stats --json "$1" | jq -r .logged_bytes; }
log_seconds() { "$tandem" log stats --json "$1" | jq -r .duration_s; }
footprint_run() { # port program...
    local agent=$(( $1 + 1000 )); shift
    rm -rf "$work/p" "$work/b"; mkdir -p "$work/p" "$work/b"
    (cd "$work/b" && exec "$tandem" backup --group bench --primary 127.0.0.1:$agent --name backup \
        --certs "$work/certs" --state-dir "$work/b/state" >/dev/null 2>"$work/b/err") &
    backup_pid=$!
    (cd "$work/p" && exec "$tandem" primary --group bench --wait-for-backups 1 --listen 127.0.0.1:$agent \
        --name primary --certs "$work/certs" --state-dir "$work/p/state" -- "$@" >/dev/null 2>"$work/p/err") &
    primary_pid=$!
}
footprint_stop() {
    kill -TERM "$primary_pid"; wait "$primary_pid" || true; wait "$backup_pid" || true
}
footprint() {
    certs
    local seconds=${FOOTPRINT_SECONDS:-120}
    footprint_run 23001 memcached -t 4 -p 23001 -U 0 -u root
    sleep "$seconds"
    footprint_stop
    local mp mb sp sb
    mp=$(logged_bytes "$work/p/state/log.tlog"); sp=$(log_seconds "$work/p/state/log.tlog")
    mb=$(logged_bytes "$work/b/state/log.tlog"); sb=$(log_seconds "$work/b/state/log.tlog")
    footprint_run 23002 "${redis_cmd[@]}" --port 23002
    wait_ping 23002
    local requests=200000 rp rb
    redis_rps 23002 >/dev/null
    footprint_stop
    rp=$(logged_bytes "$work/p/state/log.tlog"); rb=$(logged_bytes "$work/b/state/log.tlog")
    echo "Log footprint: tandem primary (sync, durable) with one backup on loopback"
    printf '%-52s %14s %14s\n' "" primary backup
    printf '%-52s %14.1f %14.1f\n' "idle memcached -t 4, MB an hour (${seconds} s run)" \
        "$(echo "$mp * 3600 / $sp / 1000000" | bc -l)" "$(echo "$mb * 3600 / $sb / 1000000" | bc -l)"
    printf '%-52s %14.1f %14.1f\n' "redis-server, bytes per SET (redis-benchmark -n $requests)" \
        "$(echo "$rp / $requests" | bc -l)" "$(echo "$rb / $requests" | bc -l)"
}

# Three members on loopback, each its own process and data dir on this machine's disk.
coordinator() {
    cargo build --release -q -p coordinator --example coordinator_bench
    local peers="1=127.0.0.1:29101,2=127.0.0.1:29102,3=127.0.0.1:29103" pids=()
    for i in 1 2 3; do
        "$tandem" coordinator --state-dir "$work/coord$i" --listen 127.0.0.1:2910$i --id $i --peers "$peers" \
            2>"$work/coord$i.log" &
        pids+=($!)
    done
    for _ in $(seq 100); do
        curl -sf 127.0.0.1:29101/v1/status 2>/dev/null | grep -q '"leader":[0-9]' && break
        sleep 0.1
    done
    echo "Coordinator: three members on loopback (tandem coordinator --peers ...)"
    target/release/examples/coordinator_bench 127.0.0.1:29101,127.0.0.1:29102,127.0.0.1:29103 500
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
}

case "${1:-all}" in
    calls) calls ;;
    instructions) instructions ;;
    redis) redis ;;
    drain) drain ;;
    replay) replay ;;
    handoff) handoff ;;
    live) live ;;
    stream) stream ;;
    coordinator) coordinator ;;
    footprint) footprint ;;
    cpu) cpu ;;
    all) calls; echo; redis; echo; drain; echo; replay; echo; handoff; echo; live; echo; cpu; echo; stream; echo; footprint; echo; coordinator ;;
    *) echo "usage: scripts/bench.sh [calls|instructions|redis|drain|replay|handoff|live|cpu|stream|footprint|coordinator]" >&2; exit 2 ;;
esac
