#!/usr/bin/env bash
# Installs what tandem's build, tests, demo and benchmarks need on a Debian machine with Rust,
# then builds tandem (release). Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in gcc:gcc nm:binutils redis-server:redis-server redis-benchmark:redis-tools ip:iproute2 \
            tc:iproute2 sqlite3:sqlite3 bc:bc hyperfine:hyperfine valgrind:valgrind curl:curl \
            javac:default-jdk-headless nginx:nginx-light wrk:wrk memcached:memcached jq:jq; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release --quiet -p preload -p replicator
