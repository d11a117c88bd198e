//! A real redis-server, recorded under redis-benchmark load, then replayed by a backup that goes
//! live and must hold exactly the primary's data.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::*;

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().unwrap();
    text(&out.stdout).trim().to_string()
}

fn wait_for_ping(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cli(port, &["ping"]) == "PONG" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server under tandem did not answer on port {port}");
}

fn redis_args(port: u16, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["redis-server", "--port", &port.to_string(), "--save", "", "--enable-debug-command", "yes"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `tandem record` of redis-server in `dir`.
fn start_recorded(dir: &Path, log: &Path, args: &[String]) -> Child {
    recording(dir, log, args).spawn().unwrap()
}

/// The `tandem record` command of redis-server in `dir`, its output (redis's log) discarded.
fn recording(dir: &Path, log: &Path, args: &[String]) -> Command {
    let mut c = tandem();
    c.current_dir(dir).arg("record").arg("--out").arg(log).arg("--").args(args).stdout(Stdio::null());
    c
}

/// The program tandem runs: the only child of its keeper, the agent's only child.
fn program_pid(agent: &Child) -> i32 {
    let child_of = |pid: u32| -> u32 {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        children.split_whitespace().next().expect("a child").parse().unwrap()
    };
    child_of(child_of(agent.id())) as i32
}

fn benchmark(port: u16, requests: &str, tests: &str) {
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-n", requests, "-c", "50", "-r", "100000", "-t", tests, "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn redis_under_benchmark_load_is_recorded() {
    require("redis-server");
    require("redis-benchmark");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("redis.tlog");
    let port = free_port();
    let mut server = start_recorded(dir.path(), &log, &redis_args(port, &["--appendonly", "no"]));
    wait_for_ping(port, Duration::from_secs(20));
    benchmark(port, "100000", "set,get");
    cli(port, &["shutdown", "nosave"]);
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
    assert_eq!(events.last().unwrap().header.seq, eventlog::Seq(events.len() as u64));
    assert!(!events.iter().any(|e| e.call() == eventlog::Call::Lost));
}

/// How many background threads redis's jemalloc runs (`MEMORY MALLOC-STATS`).
fn background_threads(port: u16) -> String {
    let stats = cli(port, &["memory", "malloc-stats"]);
    let line = stats.lines().find(|l| l.starts_with("Background threads:")).unwrap_or_else(|| panic!("{stats}"));
    line.trim_start_matches("Background threads:").split(',').next().unwrap().trim().to_string()
}

/// jemalloc's background thread purges from counters no call orders, so a backup's copy decides
/// otherwise: redis asks for it (`jemalloc-bg-thread yes`, its default) and runs without it
/// under tandem, and the agent says so once.
#[test]
fn jemallocs_background_thread_stays_off() {
    require("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = redis_args(port, &[]);
    let mut native =
        Command::new(&args[0]).args(&args[1..]).current_dir(dir.path()).stdout(Stdio::null()).spawn().unwrap();
    wait_for_ping(port, Duration::from_secs(20));
    let natively = background_threads(port);
    cli(port, &["shutdown", "nosave"]);
    native.wait().unwrap();
    assert_eq!(natively, "1", "this redis starts no background thread of its own: the test proves nothing");

    let log = dir.path().join("redis.tlog");
    let server = recording(dir.path(), &log, &args).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_ping(port, Duration::from_secs(20));
    assert_eq!(background_threads(port), "0");
    assert_eq!(cli(port, &["set", "k", "v"]), "OK");
    cli(port, &["shutdown", "nosave"]);
    let out = server.wait_with_output().unwrap();
    let notes = text(&out.stderr);
    assert!(out.status.success(), "{notes}");
    assert_eq!(notes.matches("jemalloc's background thread").count(), 1, "{notes}");
}

/// Records redis under load, kills it, replays the log with --go-live in another directory, and
/// returns (primary's digest, backup's digest, primary dir, backup dir).
fn fail_over(extra: &[&str]) -> (String, String, tempfile::TempDir) {
    require("redis-server");
    require("redis-benchmark");
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = (dir.path().join("primary"), dir.path().join("backup"));
    std::fs::create_dir_all(&p).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let log = dir.path().join("redis.tlog");
    let port = free_port();
    let args = redis_args(port, &[&["--dir", "."][..], extra].concat());
    let mut agent = start_recorded(&p, &log, &args);
    wait_for_ping(port, Duration::from_secs(20));
    benchmark(port, "20000", "set,incr,lpush,sadd");
    let primary = cli(port, &["debug", "digest"]);
    // The primary dies (its agent writes what it had).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(program_pid(&agent)), nix::sys::signal::Signal::SIGKILL).unwrap();
    agent.wait().unwrap();

    let mut backup = tandem()
        .current_dir(&b)
        .arg("replay")
        .arg("--go-live")
        .arg("--view-dir")
        .arg(view_of(&b))
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_ping(port, Duration::from_secs(120));
    let backup_digest = cli(port, &["debug", "digest"]);
    cli(port, &["shutdown", "nosave"]);
    let status = backup.wait().unwrap();
    assert!(status.success(), "the live backup exited {status}");
    (primary, backup_digest, dir)
}

#[test]
fn live_backup_has_the_primarys_data() {
    let (primary, backup, _dir) = fail_over(&["--appendonly", "no"]);
    assert_eq!(primary.len(), 40, "DEBUG DIGEST: {primary}");
    assert_eq!(backup, primary);
}

#[test]
fn live_backup_writes_the_primarys_aof_byte_for_byte() {
    let (primary, backup, dir) = fail_over(&["--appendonly", "yes"]);
    assert_eq!(backup, primary);
    let log = dir.path().join("redis.tlog");
    let replayed = replayed(&dir.path().join("backup"), &log);
    let aof = |side: &Path| {
        let d = side.join("appendonlydir");
        let mut files: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files.iter().map(|f| (f.file_name().unwrap().to_owned(), std::fs::read(f).unwrap())).collect::<Vec<_>>()
    };
    let (p, b) = (aof(&dir.path().join("primary")), aof(&replayed));
    assert_eq!(p.len(), 3, "base, incremental and manifest files");
    for ((pn, pb), (bn, bb)) in p.iter().zip(&b) {
        assert_eq!(pn, bn);
        assert!(pb == bb, "{pn:?} differs");
    }
}

/// The README's first example, as it is written there, in a fresh directory: `tandem record` of
/// redis-server (stopped as a user would, with SIGINT to tandem), then every other command of that
/// block except `--go-live`. The replay runs in the same directory the recording has written its
/// `dump.rdb` into, and must not see it.
#[test]
fn the_readmes_record_and_replay_example_works_as_pasted() {
    require("redis-server");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("```sh")
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("tandem record --out redis.tlog"))
        .expect("the README's record example");
    let commands: Vec<Vec<String>> = block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| l.starts_with("tandem "))
        .map(|l| l.split_whitespace().skip(1).map(String::from).collect())
        .collect();
    assert!(commands.len() >= 4, "{block}");
    let dir = tempfile::tempdir().unwrap();
    let (record, rest) = commands.split_first().unwrap();
    let port: u16 = record.iter().skip_while(|a| *a != "--port").nth(1).unwrap().parse().unwrap();
    let agent =
        tandem().current_dir(dir.path()).args(record).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_ping(port, Duration::from_secs(20));
    for i in 0..50 {
        cli(port, &["set", &format!("key{i}"), &format!("value{i}")]);
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = agent.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "tandem record: {}", text(&out.stderr));
    assert!(dir.path().join("dump.rdb").is_file(), "redis saved nothing on its way out");
    for args in rest.iter().filter(|a| !a.iter().any(|x| x == "--go-live")) {
        let out = tandem().current_dir(dir.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "tandem {}: {}", args.join(" "), text(&out.stderr));
    }
}
