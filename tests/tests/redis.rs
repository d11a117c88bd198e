//! A real redis-server recorded under redis-benchmark load.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::*;

fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = Command::new("redis-cli").args(["-p", &port.to_string(), "ping"]).output().unwrap();
        if text(&out.stdout).trim() == "PONG" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server under tandem did not answer on port {port}");
}

#[test]
fn redis_under_benchmark_load_is_recorded() {
    require("redis-server");
    require("redis-benchmark");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("redis.tlog");
    let port = free_port();
    let mut server = tandem()
        .arg("record")
        .arg("--out")
        .arg(&log)
        .args(["--", "redis-server", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_ping(port);
    let bench = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-n", "100000", "-c", "50", "-t", "set,get", "-q"])
        .output()
        .unwrap();
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    Command::new("redis-cli").args(["-p", &port.to_string(), "shutdown", "nosave"]).output().unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "tandem record exited {status}");

    let out = tandem().args(["log", "stats"]).arg(&log).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats = text(&out.stdout);
    let count = |call: &str| -> u64 {
        stats
            .lines()
            .find(|l| l.split_whitespace().next() == Some(call))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // 50 benchmark connections (plus the ping and shutdown clients), one request per read.
    assert!(count("accept4") >= 50, "{stats}");
    assert!(count("read") >= 200_000, "{stats}");
    assert!(count("write") >= 200_000, "{stats}");
    assert!(count("epoll_wait") > 1000, "{stats}");
    assert!(count("gettimeofday") + count("clock_gettime") > 100_000, "{stats}");
    let events = read_log(&log).unwrap();
    assert_eq!(events.last().unwrap().header.seq, events.len() as u64);
    assert!(!events.iter().any(|e| e.call() == eventlog::Call::Lost));
}
