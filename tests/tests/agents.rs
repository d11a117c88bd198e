//! Agents end cleanly: a termination signal stops any agent and its program within two seconds,
//! in any state; a killed agent leaves no program behind; faults (an address taken at promotion,
//! a full disk, a foreign certificate, sync mode without a backup) end or wait with a clear word.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use tandem_tests::*;

/// The bound the agents promise from a SIGTERM or SIGINT to the agent and its program being gone.
const STOP_BOUND: Duration = Duration::from_secs(2);

/// A test that times how fast agents stop runs alone: a neighbour loading both cores and the
/// disk (the full-disk test, a catch-up) was measured with it once, 2.4 s with nothing logged
/// for two of them. The other tests run side by side.
static TIMING: RwLock<()> = RwLock::new(());

fn timed_alone() -> RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(|p| p.into_inner())
}

fn side_by_side() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(|p| p.into_inner())
}

/// An agent, with its stderr collected as it comes.
struct Agent {
    child: Child,
    err: Arc<Mutex<String>>,
    what: String,
}

impl Agent {
    fn start(what: &str, mut cmd: Command) -> Agent {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start tandem");
        let err = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Agent { child, err, what: what.to_string() }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until the agent has said `text`.
    fn wait_for(&mut self, text: &str, within: Duration) {
        let start = Instant::now();
        while !self.stderr().contains(text) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} ended ({status}) before saying {text:?}:\n{}", self.what, self.stderr());
            }
            assert!(
                start.elapsed() < within,
                "{} did not say {text:?} within {within:?}:\n{}",
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the agent runs its program: its keeper (`tandem keep`, or `tandem enter-view`
    /// on a backup) has a child. Returns the agent's descendants then.
    fn wait_for_program(&mut self, within: Duration) -> Vec<i32> {
        let start = Instant::now();
        loop {
            let tree = descendants(self.pid());
            let keeper = tree.iter().find(|&&p| {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let mut args = cmdline.split(|&b| b == 0).skip(1);
                matches!(args.next(), Some(b"keep" | b"enter-view")) && !descendants(p).is_empty()
            });
            if keeper.is_some() {
                return tree;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} ended ({status}) before its program started:\n{}", self.what, self.stderr());
            }
            assert!(start.elapsed() < within, "{} started no program:\n{}", self.what, self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the agent to end; kills it and fails after `limit`.
    fn wait_within(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("{} did not end within {limit:?}:\n{}", self.what, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` to the agent alone and checks that it and every process it ran are gone
    /// within [`STOP_BOUND`]. Returns its status and how long it took.
    fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> (ExitStatus, Duration) {
        let tree = descendants(self.pid());
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
        let start = Instant::now();
        let (status, _) = self.wait_within(Duration::from_secs(30));
        while tree.iter().any(|&p| alive(p)) && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = start.elapsed();
        assert!(
            took <= STOP_BOUND,
            "{} and its program took {took:?} to end after {signal}:\n{}",
            self.what,
            self.stderr()
        );
        eprintln!("{}: {signal} -> gone in {} ms ({status})", self.what, took.as_millis());
        (status, took)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process below `pid` (children first found, then theirs).
fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut parents = vec![pid];
    while let Some(p) = parents.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                all.push(c);
                parents.push(c);
            }
        }
    }
    all
}

/// Whether a process runs (a zombie does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|s| s.trim_start().chars().next()), Some('Z' | 'X')),
        Err(_) => false,
    }
}

/// Certificates for `primary`, `backup1` and `backup2`, and a free port for the primary.
fn cluster() -> (tempfile::TempDir, PathBuf, u16) {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &["primary", "backup1", "backup2"]);
    (dir, certs_dir, free_port())
}

fn primary_cmd(dir: &Path, certs: &Path, port: u16, extra: &[&str], program: &[&str]) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = tandem();
    c.current_dir(dir)
        .args(["primary", "--group", "g", "--listen", &format!("127.0.0.1:{port}"), "--name", "primary", "--certs"])
        .arg(certs)
        .arg("--state-dir")
        .arg(dir.with_extension("state"))
        .args(extra)
        .arg("--")
        .args(program);
    c
}

fn backup_cmd(dir: &Path, certs: &Path, name: &str, port: u16, extra: &[&str]) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = tandem();
    c.current_dir(dir)
        .args(["backup", "--group", "g", "--primary", &format!("127.0.0.1:{port}"), "--name", name, "--certs"])
        .arg(certs)
        .args(extra);
    if !extra.contains(&"--state-dir") {
        c.arg("--state-dir").arg(dir.join("tandem-state"));
    }
    c
}

/// A program that goes on until it is killed, making calls all the while, and ignores SIGTERM
/// and SIGINT: only the stop timeout ends it.
const STUBBORN: &str = "trap '' TERM INT; i=0; while true; do echo $i >> out; sleep 0.01; i=$((i+1)); done";

/// A program that goes on until it is stopped, making calls all the while.
const BUSY: &str = "i=0; while true; do echo $i >> out; sleep 0.01; i=$((i+1)); done";

#[test]
fn sigterm_and_sigint_stop_a_recording_agent_and_sigkill_leaves_no_program() {
    let _alone = timed_alone();
    use nix::sys::signal::Signal::{SIGINT, SIGKILL, SIGTERM};
    for (signal, program) in [(SIGTERM, STUBBORN), (SIGINT, STUBBORN), (SIGTERM, BUSY)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = tandem();
        cmd.current_dir(dir.path()).arg("record").arg("--out").arg(dir.path().join("r.tlog"));
        cmd.args(["--no-capture", "--", "sh", "-c", &format!("sleep 1000 & {program}")]);
        let mut agent = Agent::start("tandem record", cmd);
        agent.wait_for_program(Duration::from_secs(20));
        let (status, _) = agent.stop_with(signal);
        assert!(!status.success(), "{status}");
        // The log is whole: the program's end is recorded.
        read_log(&dir.path().join("r.tlog")).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tandem();
    cmd.current_dir(dir.path()).arg("record").arg("--out").arg(dir.path().join("r.tlog"));
    cmd.args(["--no-capture", "--", "sh", "-c", &format!("setsid sleep 1000 & {STUBBORN}")]);
    let mut agent = Agent::start("tandem record", cmd);
    agent.wait_for_program(Duration::from_secs(20));
    // A process in a session of its own too.
    std::thread::sleep(Duration::from_millis(300));
    agent.stop_with(SIGKILL);
}

#[test]
fn sigterm_stops_a_primary_and_its_backups_receive_the_end() {
    let _alone = timed_alone();
    use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
    let (dir, certs, port) = cluster();
    let p = dir.path().join("p");
    let mut primary = Agent::start(
        "the primary",
        primary_cmd(&p, &certs, port, &["--wait-for-backups", "1"], &["sh", "-c", STUBBORN]),
    );
    let mut backup = Agent::start("the backup", backup_cmd(&dir.path().join("b"), &certs, "backup1", port, &[]));
    primary.wait_for_program(Duration::from_secs(20));
    backup.wait_for_program(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = primary.stop_with(SIGTERM);
    assert_eq!(status.code(), Some(128 + 9), "the program ignores SIGTERM: it is killed\n{}", primary.stderr());
    // The backup replays the program's end and stops.
    let (status, _) = backup.wait_within(Duration::from_secs(20));
    assert!(status.success(), "{status}\nbackup:\n{}\nprimary:\n{}", backup.stderr(), primary.stderr());
    assert!(backup.stderr().contains("holds all of it"), "{}", backup.stderr());

    // Killed outright, a primary leaves no program behind.
    let mut primary =
        Agent::start("the primary", primary_cmd(&dir.path().join("p2"), &certs, free_port(), &[], &["sh", "-c", BUSY]));
    primary.wait_for_program(Duration::from_secs(20));
    primary.stop_with(SIGKILL);
}

#[test]
fn sigterm_stops_a_backup_following_and_catching_up_and_sigkill_leaves_no_program() {
    let _alone = timed_alone();
    use nix::sys::signal::Signal::{SIGINT, SIGKILL, SIGTERM};
    let (dir, certs, port) = cluster();
    let p = dir.path().join("p");
    let _primary =
        Agent::start("the primary", primary_cmd(&p, &certs, port, &["--mode", "async"], &["sh", "-c", BUSY]));
    for (i, signal) in [SIGTERM, SIGINT, SIGKILL].into_iter().enumerate() {
        let b = dir.path().join(format!("b{i}"));
        let mut backup = Agent::start("a following backup", backup_cmd(&b, &certs, "backup1", port, &[]));
        backup.wait_for_program(Duration::from_secs(20));
        backup.wait_for("following the primary", Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(300));
        let (status, _) = backup.stop_with(signal);
        if signal != SIGKILL {
            assert_eq!(status.code(), Some(128 + signal as i32), "{}", backup.stderr());
            assert!(backup.stderr().contains("stopped by"), "{}", backup.stderr());
        }
    }
    // A backup that starts late catches up from the primary's log: stopped at once.
    std::thread::sleep(Duration::from_secs(3));
    let mut backup =
        Agent::start("a backup catching up", backup_cmd(&dir.path().join("late"), &certs, "backup2", port, &[]));
    backup.wait_for_program(Duration::from_secs(20));
    backup.stop_with(SIGTERM);
    // And a witness.
    let mut witness =
        Agent::start("a witness", backup_cmd(&dir.path().join("w"), &certs, "backup2", port, &["--witness"]));
    witness.wait_for("following the primary", Duration::from_secs(20));
    witness.stop_with(SIGTERM);
}

/// An address the backup must listen on is taken when it is promoted: it says which, stops its
/// program and exits non-zero, instead of running without a listener.
#[test]
fn a_backup_that_cannot_take_the_primarys_address_stops_and_names_it() {
    let _shared = side_by_side();
    let program = fixture("echo_server", &[]);
    let (dir, certs, port) = cluster();
    let service = free_port().to_string();
    let p = dir.path().join("p");
    let _primary = Agent::start(
        "the primary",
        primary_cmd(&p, &certs, port, &["--no-capture"], &[program.to_str().unwrap(), &service]),
    );
    let b = dir.path().join("b");
    let mut backup = Agent::start("the backup", backup_cmd(&b, &certs, "backup1", port, &[]));
    backup.wait_for_program(Duration::from_secs(20));
    backup.wait_for("following the primary", Duration::from_secs(20));
    let tree = descendants(backup.pid());
    // The primary still listens there.
    let out = tandem().arg("promote").arg("--state-dir").arg(b.join("tandem-state")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, took) = backup.wait_within(Duration::from_secs(20));
    let err = backup.stderr();
    assert_eq!(status.code(), Some(125), "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{service}")), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
    assert!(tree.iter().all(|&p| !alive(p)), "the backup's program is still there:\n{err}");
    eprintln!("the backup stopped {} ms after its promotion", took.as_millis());
}

/// A backup's certificate from another CA, with the cluster's `ca.crt` beside it: the primary
/// refuses it at the handshake, and the backup exits 125 saying so instead of trying forever.
#[test]
fn a_backup_with_a_certificate_from_another_ca_is_refused_for_good() {
    let _shared = side_by_side();
    let (dir, certs_dir, port) = cluster();
    let foreign = dir.path().join("foreign");
    certs(&foreign, &["backup1"]);
    std::fs::copy(certs_dir.join("ca.crt"), foreign.join("ca.crt")).unwrap();
    let p = dir.path().join("p");
    let _primary =
        Agent::start("the primary", primary_cmd(&p, &certs_dir, port, &["--wait-for-backups", "1"], &["true"]));
    std::thread::sleep(Duration::from_millis(500));
    let mut backup =
        Agent::start("the foreign backup", backup_cmd(&dir.path().join("b"), &foreign, "backup1", port, &[]));
    let (status, took) = backup.wait_within(Duration::from_secs(20));
    let err = backup.stderr();
    assert_eq!(status.code(), Some(125), "{err}");
    assert!(err.contains("refused this backup"), "{err}");
    eprintln!("the foreign backup gave up after {} ms", took.as_millis());
}

/// Sync mode with no backup connected: replies wait, and the primary says so every few seconds.
/// SIGTERM stops it all the same.
#[test]
fn sync_mode_without_a_backup_says_what_its_held_replies_wait_for() {
    let _alone = timed_alone();
    let program = fixture("echo_server", &[]);
    let (dir, certs, port) = cluster();
    let service = free_port();
    let p = dir.path().join("p");
    let mut primary = Agent::start(
        "the primary",
        primary_cmd(&p, &certs, port, &["--no-capture"], &[program.to_str().unwrap(), &service.to_string()]),
    );
    primary.wait_for_program(Duration::from_secs(20));
    let start = Instant::now();
    let mut conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", service)) {
            Ok(c) => break c,
            Err(_) if start.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the echo server does not listen: {e}\n{}", primary.stderr()),
        }
    };
    conn.write_all(b"hello\n").unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    assert!(conn.read(&mut buf).is_err(), "a reply left with no backup holding what it depends on");
    primary.wait_for("no backup is connected", Duration::from_secs(10));
    let err = primary.stderr();
    assert!(err.contains("outputs (replies) are held until 1 backup holds event"), "{err}");
    primary.stop_with(nix::sys::signal::Signal::SIGTERM);
}

/// A backup whose state directory fills up says so, waits, and resumes by itself once there is
/// room, losing nothing.
#[test]
fn a_backup_on_a_full_disk_waits_for_room_and_resumes() {
    let _shared = side_by_side();
    assert!(nix::unistd::geteuid().is_root(), "this test mounts a small file system: run it as root");
    let (dir, certs, port) = cluster();
    let b = dir.path().join("b");
    let small = b.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&small).status().unwrap();
    assert!(mounted.success(), "cannot mount a tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    // All but 256 KiB taken.
    let ballast = small.join("ballast");
    let mut dd = Command::new("dd");
    dd.arg("if=/dev/zero").arg(format!("of={}", ballast.display())).args(["bs=256K", "count=95"]);
    assert!(dd.stderr(Stdio::null()).status().unwrap().success(), "cannot fill the small file system");
    let p = dir.path().join("p");
    let program = "i=0; while [ $i -lt 20000 ]; do echo $i >> out; i=$((i+1)); done; sleep 8";
    let mut primary = Agent::start(
        "the primary",
        primary_cmd(&p, &certs, port, &["--no-capture", "--wait-for-backups", "1"], &["sh", "-c", program]),
    );
    let state = small.join("state");
    let mut backup =
        Agent::start("the backup", backup_cmd(&b, &certs, "backup1", port, &["--state-dir", state.to_str().unwrap()]));
    backup.wait_for("is full", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    std::fs::remove_file(&ballast).unwrap();
    backup.wait_for("has room again", Duration::from_secs(20));
    let (status, _) = backup.wait_within(Duration::from_secs(120));
    let (pstatus, _) = primary.wait_within(Duration::from_secs(30));
    assert!(pstatus.success(), "{}", primary.stderr());
    assert!(status.success(), "{status}\nbackup:\n{}\nprimary:\n{}", backup.stderr(), primary.stderr());
    assert_eq!(std::fs::read(b.join("out")).unwrap(), std::fs::read(p.join("out")).unwrap());
    let perr = primary.stderr();
    assert_eq!(perr.matches("session complete").count(), 1, "{perr}");
}

/// A single coordinator member on a free port, with its address.
fn coordinator(dir: &Path) -> (Agent, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = tandem();
    cmd.args(["coordinator", "--data-dir"]).arg(dir.join("coordinator")).args(["--listen", &addr]);
    let c = Agent::start("the coordinator", cmd);
    let start = Instant::now();
    while tandem_tests::http::get(&addr, "/v1/status")
        .map_or(true, |(code, body)| code != 200 || body.contains("\"leader\":null"))
    {
        assert!(start.elapsed() < Duration::from_secs(20), "the coordinator does not answer:\n{}", c.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    (c, addr)
}

/// A primary cut off from its coordinator fences itself: it stops its program and exits 125
/// saying why. With --keep-fenced the program stays, held, and SIGTERM still stops it all.
#[test]
fn a_fenced_primary_stops_its_program_or_keeps_it_held_until_sigterm() {
    let _alone = timed_alone();
    let (dir, certs, _) = cluster();
    for keep in [false, true] {
        let (mut coordinator, at) = coordinator(&dir.path().join(format!("c{keep}")));
        let mut extra = vec!["--coordinator", at.as_str()];
        if keep {
            extra.push("--keep-fenced");
        }
        let p = dir.path().join(format!("p{keep}"));
        let mut primary =
            Agent::start("the primary", primary_cmd(&p, &certs, free_port(), &extra, &["sh", "-c", BUSY]));
        let tree = primary.wait_for_program(Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(300));
        coordinator.child.kill().unwrap();
        if !keep {
            let (status, took) = primary.wait_within(Duration::from_secs(10));
            let err = primary.stderr();
            assert_eq!(status.code(), Some(125), "{err}");
            assert!(err.contains("its program was stopped"), "{err}");
            assert!(tree.iter().all(|&p| !alive(p)), "the fenced primary's program is still there:\n{err}");
            eprintln!("the primary fenced itself and ended {} ms after its coordinator died", took.as_millis());
            continue;
        }
        primary.wait_for("the program keeps running", Duration::from_secs(10));
        // The keeper (the agent's child) and the program are there still.
        let now = descendants(primary.pid());
        assert!(
            tree.iter().filter(|&&p| alive(p)).count() >= 2 && now.len() >= 2,
            "the program was not kept (then {tree:?}, now {now:?}):\n{}",
            primary.stderr()
        );
        let (status, _) = primary.stop_with(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(status.code(), Some(125), "{}", primary.stderr());
    }
}

/// `tandem ARGS --coordinator AT`: its status, stdout and stderr.
fn ask_coordinator(at: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tandem().args(args).args(["--coordinator", at]).output().expect("run tandem");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// An operator's view of a steered group: refused failovers say why and exit 1, a steered backup
/// refuses a promotion behind the coordinator's back, a failover under a request id happens once
/// (the old primary fences itself, the backup goes live), and `tandem group` shows it.
#[test]
fn an_operator_fails_over_a_steered_group_from_a_script() {
    let _shared = side_by_side();
    let (dir, certs, port) = cluster();
    let (_coordinator, at) = coordinator(&dir.path().join("c"));
    let extra = ["--coordinator", at.as_str(), "--mode", "async", "--no-capture"];
    let mut primary =
        Agent::start("the primary", primary_cmd(&dir.path().join("p"), &certs, port, &extra, &["sh", "-c", BUSY]));
    let b = dir.path().join("b1");
    let mut backup = Agent::start("the backup", backup_cmd(&b, &certs, "backup1", port, &["--coordinator", &at]));
    let start = Instant::now();
    loop {
        let (code, out, _) = ask_coordinator(&at, &["group", "show", "g", "--json"]);
        let g: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if code == Some(0) && g["members"]["backup1"]["held"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the backup did not join: {out}\n{}", backup.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }

    let (code, _, err) = ask_coordinator(&at, &["failover", "--group", "g", "--to", "nobody"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim(), "tandem: the coordinator refused: nobody is not a member of group g");
    let (code, _, err) = ask_coordinator(&at, &["failover", "--group", "nogroup"]);
    assert_eq!((code, err.trim()), (Some(1), "tandem: the coordinator refused: no group named nogroup"));
    let (code, _, err) = ask_coordinator(&at, &["group", "reset", "g"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the primary of group g, primary, holds a lease") && err.contains("--force"), "{err}");
    let promote = tandem().arg("promote").arg("--state-dir").arg(b.join("tandem-state")).output().unwrap();
    let err = text(&promote.stderr);
    assert!(!promote.status.success() && err.contains("backup1 follows the coordinator"), "{err}");
    assert!(err.contains("tandem failover --group g --to backup1"), "{err}");

    let (code, out, err) =
        ask_coordinator(&at, &["failover", "--group", "g", "--to", "backup1", "--request-id", "op-1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "group g: epoch 2, primary backup1 (request op-1)");
    // Asked again under the same id (a script's retry): the same answer, no second failover.
    let (code, again, _) =
        ask_coordinator(&at, &["failover", "--group", "g", "--to", "backup1", "--request-id", "op-1"]);
    assert_eq!((code, again), (Some(0), out));
    backup.wait_for("the coordinator named this member primary", Duration::from_secs(20));
    let (status, _) = primary.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(125), "{}", primary.stderr());
    let (code, list, _) = ask_coordinator(&at, &["group", "list"]);
    assert_eq!(code, Some(0));
    let row: Vec<&str> = list.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row, ["g", "running", "2", "backup1", "async", "1"], "{list}");
    // Now nobody is left to take over: refused, after the retries, with the reason.
    let (code, _, err) = ask_coordinator(&at, &["failover", "--group", "g", "--patience", "500ms"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("group g has no backup that may be promoted"), "{err}");
}

/// A primary whose program ends tells the coordinator: its group stops (no failover), and
/// `tandem primary` starts it again as a new incarnation, saying so; `tandem group reset`
/// forgets a stopped group.
#[test]
fn a_stopped_group_starts_again_as_a_new_incarnation() {
    let _shared = side_by_side();
    let (dir, certs, port) = cluster();
    let (_coordinator, at) = coordinator(&dir.path().join("c"));
    let extra = ["--coordinator", at.as_str(), "--mode", "async", "--no-capture"];
    let run = |program: &str| {
        let mut primary = Agent::start(
            "the primary",
            primary_cmd(&dir.path().join("p"), &certs, port, &extra, &["sh", "-c", program]),
        );
        let (status, _) = primary.wait_within(Duration::from_secs(30));
        (status, primary.stderr())
    };
    let (status, err) = run("exit 0");
    assert!(status.success(), "{err}");
    let (_, shown, _) = ask_coordinator(&at, &["group", "show", "g"]);
    assert!(shown.starts_with("group g: stopped, epoch 1"), "{shown}");
    let (status, err) = run("exit 3");
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("group g had stopped; it starts again as a new incarnation"), "{err}");
    assert!(err.contains("in epoch 2"), "{err}");
    // Stopped, it may be forgotten without --force.
    let (code, out, err) = ask_coordinator(&at, &["group", "reset", "g"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("forgot group g (it was stopped in epoch 2)"), "{out}");
    let (_, list, _) = ask_coordinator(&at, &["group", "list"]);
    assert_eq!(list.trim(), "no groups");
}
