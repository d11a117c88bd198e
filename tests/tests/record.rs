//! Recording real programs: the log holds every event exactly once, in the order things really
//! happened, under the right logical process and thread.

use eventlog::ids::FIRST_PID;
use eventlog::{LogicalPid, LogicalTid, Seq};
use std::collections::{BTreeSet, HashMap};
use tandem_tests::*;

struct Transcript {
    lock: u64,
    tids: HashMap<i64, u32>,
    child_status: i32,
    usr1: i32,
    order: Vec<u32>,
}

fn parse_transcript(text: &str) -> Transcript {
    let mut t = Transcript { lock: 0, tids: HashMap::new(), child_status: -1, usr1: 0, order: Vec::new() };
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("lock") => t.lock = u64::from_str_radix(w.next().unwrap(), 16).unwrap(),
            Some("tid") => {
                let worker: u32 = w.next().unwrap().parse().unwrap();
                t.tids.insert(w.next().unwrap().parse().unwrap(), worker);
            }
            Some("child") => t.child_status = w.nth(1).unwrap().parse().unwrap(),
            Some("usr1") => t.usr1 = w.next().unwrap().parse().unwrap(),
            Some("order") => t.order = w.map(|x| x.parse().unwrap()).collect(),
            _ => {}
        }
    }
    t
}

fn check_multithreaded_fixture(flags: &[&str]) {
    let program = fixture("mt_record", flags);
    let child = fixture("mt_child", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (log, transcript, child_out) =
        (dir.path().join("t.tlog"), dir.path().join("transcript"), dir.path().join("child"));
    let out =
        record(&log, &program, &[transcript.to_str().unwrap(), child.to_str().unwrap(), child_out.to_str().unwrap()]);
    assert!(out.status.success(), "tandem record failed: {}", text(&out.stderr));
    let t = parse_transcript(&std::fs::read_to_string(&transcript).unwrap());
    assert_eq!(t.child_status, 7, "the exec'd child ran and exited 7");
    assert_eq!(t.usr1, 1, "the SIGUSR1 handler ran once");
    let events = read_log(&log).unwrap();

    // Every sequence number from the first to the last, exactly once, in order.
    let seqs: Vec<Seq> = events.iter().map(|e| e.header.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).map(Seq).collect::<Vec<_>>());
    assert!(!events.iter().any(|e| e.call() == eventlog::Call::Lost));

    // Each worker's events carry its logical tid: worker i is the (i+1)-th thread main created.
    for e in events.iter().filter(|e| e.call() == eventlog::Call::Gettid) {
        let worker = t.tids[&e.header.result];
        assert_eq!(
            (e.header.pid, e.header.tid),
            (FIRST_PID, LogicalTid(worker + 1)),
            "gettid result {} under the wrong ids",
            e.header.result
        );
    }
    let created: Vec<u64> = events
        .iter()
        .filter(|e| e.call() == eventlog::Call::PthreadCreate && e.header.pid == FIRST_PID)
        .map(|e| e.header.aux[0])
        .collect();
    assert_eq!(created, vec![1, 2, 3, 4]);

    // The lock was taken in exactly the order the program saw.
    let lock_order: Vec<u32> = events
        .iter()
        .filter(|e| e.call() == eventlog::Call::MutexLock && e.header.aux[0] == t.lock)
        .map(|e| e.header.tid.0 - 1)
        .collect();
    assert_eq!(lock_order.len(), t.order.len());
    assert_eq!(lock_order, t.order, "lock events out of the real acquisition order");
    // Condition-variable wake-ups re-take the same lock; unlocks come from the workers.
    assert!(events.iter().any(|e| e.call() == eventlog::Call::CondWait && e.header.aux[1] == t.lock));
    assert!(events.iter().any(|e| e.call() == eventlog::Call::CondSignal));

    // Time and randomness, per worker.
    for w in 1..=4 {
        let of = |c| {
            events
                .iter()
                .filter(|e| e.call() == c && e.header.pid == FIRST_PID && e.header.tid == LogicalTid(w))
                .count()
        };
        assert!(of(eventlog::Call::ClockGettime) >= 200, "worker {w} clock_gettime");
        assert_eq!(of(eventlog::Call::Getrandom), 1, "worker {w} getrandom");
        let urandom = events.iter().any(|e| {
            e.call() == eventlog::Call::Read
                && (e.header.pid, e.header.tid) == (FIRST_PID, LogicalTid(w))
                && e.header.fd_kind() == eventlog::FdKind::Random
                && e.payload.len() == e.header.result as usize
        });
        assert!(urandom, "worker {w} read /dev/urandom with its bytes recorded");
    }

    // The pipe, the program's own: every worker wrote its line into it and main read them all, the
    // bytes known by digest (a backup moves them for real), each call naming the one before it
    // its way.
    let on_pipe =
        |call| events.iter().filter(move |e| e.call() == call && e.header.fd_kind() == eventlog::FdKind::InnerPipe);
    let written: BTreeSet<u64> = on_pipe(eventlog::Call::Write).map(|e| e.header.digest).collect();
    let lines: BTreeSet<u64> = (0..4).map(|w| eventlog::digest::digest(format!("w{w}\n").as_bytes())).collect();
    assert_eq!(written, lines, "each worker's line, written into the pipe");
    let read: i64 = on_pipe(eventlog::Call::Read).map(|e| e.header.result.max(0)).sum();
    assert_eq!(read, 12, "main read every line");
    let after: Vec<u64> = on_pipe(eventlog::Call::Write).map(|e| e.header.aux[1]).collect();
    assert_eq!(after.iter().filter(|&&a| a == 0).count(), 1, "only the first write follows none: {after:?}");

    // The forked child: its own logical pid, exec recorded, and the exec'd image's events under
    // the same pid even though its environment had no LD_PRELOAD.
    let fork = events.iter().find(|e| e.call() == eventlog::Call::Fork).expect("fork event");
    let child_pid = LogicalPid(fork.header.aux[0] as u32);
    assert_eq!(child_pid, LogicalPid(2));
    let of_child: Vec<_> = events.iter().filter(|e| e.header.pid == child_pid).collect();
    assert!(of_child.iter().all(|e| e.header.seq > fork.header.seq));
    let exec = of_child.iter().find(|e| e.call() == eventlog::Call::Execve).expect("child's execve");
    assert!(text(&exec.payload).ends_with("mt_child"));
    let after_exec: Vec<_> = of_child.iter().filter(|e| e.header.seq > exec.header.seq).map(|e| e.call()).collect();
    for c in [
        eventlog::Call::ClockGettime,
        eventlog::Call::Getpid,
        eventlog::Call::Open,
        eventlog::Call::Write,
        eventlog::Call::Exit,
    ] {
        assert!(after_exec.contains(&c), "exec'd child's {c} missing: {after_exec:?}");
    }
    assert!(std::fs::read_to_string(&child_out).unwrap().ends_with("child\n"));
    let wait =
        events.iter().find(|e| e.call() == eventlog::Call::Waitpid && e.header.pid == FIRST_PID).expect("waitpid");
    assert_eq!((wait.header.aux[0] >> 8) & 0xff, 7);

    // The signal became an event, once.
    let signals: Vec<_> = events.iter().filter(|e| e.call() == eventlog::Call::Signal).collect();
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].header.aux[0], 10, "SIGUSR1");
}

#[test]
fn multithreaded_fixture_is_recorded_in_real_order() {
    check_multithreaded_fixture(&[]);
}

#[test]
fn fortified_build_is_recorded_the_same_way() {
    let program = fixture("mt_record", &["-O2", "-D_FORTIFY_SOURCE=2"]);
    let imports = std::process::Command::new("nm").args(["-D", "--undefined-only"]).arg(&program).output().unwrap();
    assert!(text(&imports.stdout).contains("__read_chk"), "the fortified build should call __read_chk");
    check_multithreaded_fixture(&["-O2", "-D_FORTIFY_SOURCE=2"]);
}

#[test]
fn exit_status_is_the_programs() {
    let program = fixture("exit_with", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("x.tlog");
    assert_eq!(record(&log, &program, &["3"]).status.code(), Some(3));
    assert_eq!(record(&log, &program, &["0", "15"]).status.code(), Some(128 + 15));
}

#[test]
fn io_uring_fails_with_enosys_and_is_logged() {
    let program = fixture("io_uring_probe", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("u.tlog");
    let out = record(&log, &program, &[]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("errno=38"));
    let events = read_log(&log).unwrap();
    let refused = events.iter().find(|e| e.call() == eventlog::Call::IoUringSetup).expect("io_uring_setup event");
    assert_eq!((refused.header.result, refused.header.errno, refused.header.aux[0]), (-1, 38, 425));
}

#[test]
fn static_binaries_are_refused_with_a_reason() {
    let program = fixture("exit_with", &["-static"]);
    let dir = tempfile::tempdir().unwrap();
    let out = record(&dir.path().join("s.tlog"), &program, &[]);
    assert_eq!(out.status.code(), Some(126));
    let msg = text(&out.stderr);
    assert!(msg.starts_with("tandem: ") && msg.contains("statically linked") && msg.lines().count() == 1, "{msg}");
}

/// `tandem record [--allow-unseen-sync] --out LOG -- command` in `dir`.
fn record_unseen(dir: &std::path::Path, allow: bool, command: &[&str]) -> std::process::Output {
    let mut c = tandem();
    c.current_dir(dir).arg("record");
    if allow {
        c.arg("--allow-unseen-sync");
    }
    c.arg("--out").arg(dir.join("u.tlog")).arg("--").args(command).output().unwrap()
}

/// Programs whose threads synchronise without the C library are refused at once with the reason
/// and the override; with the override they are recorded, and the output says so.
fn refused_unless_allowed(dir: &std::path::Path, command: &[&str], named: &str, prints: &str) {
    let out = record_unseen(dir, false, command);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    let msg = text(&out.stderr);
    assert!(msg.contains(named) && msg.contains("--allow-unseen-sync") && msg.lines().count() == 1, "{msg}");
    assert!(!dir.join("u.tlog").exists(), "nothing is recorded");
    let out = record_unseen(dir, true, command);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("recording it anyway (--allow-unseen-sync)"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), prints);
    assert!(!read_log(&dir.join("u.tlog")).unwrap().is_empty());
}

#[test]
fn a_rust_std_program_is_refused_unless_allowed() {
    require("rustc");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter.rs");
    std::fs::write(
        &src,
        "fn main() { let m = std::sync::Arc::new(std::sync::Mutex::new(0)); \
         let t: Vec<_> = (0..2).map(|_| { let m = m.clone(); std::thread::spawn(move || *m.lock().unwrap() += 1) }).collect(); \
         for t in t { t.join().unwrap(); } println!(\"{}\", m.lock().unwrap()); }",
    )
    .unwrap();
    let built = std::process::Command::new("rustc")
        .arg("-O")
        .arg("-o")
        .arg(dir.path().join("counter"))
        .arg(&src)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let program = dir.path().join("counter");
    refused_unless_allowed(dir.path(), &[program.to_str().unwrap()], "is a Rust program", "2");
}

#[test]
fn a_java_program_is_refused_unless_allowed() {
    require("javac");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Hello.java"),
        "public class Hello { public static void main(String[] a) { System.out.println(\"hello\"); } }",
    )
    .unwrap();
    let built = std::process::Command::new("javac").arg("Hello.java").current_dir(dir.path()).output().unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let classes = dir.path().to_str().unwrap().to_string();
    refused_unless_allowed(dir.path(), &["java", "-Xint", "-cp", &classes, "Hello"], "Java virtual machine", "hello");
}

#[test]
fn unknown_program_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = tandem()
        .arg("record")
        .arg("--out")
        .arg(dir.path().join("n.tlog"))
        .arg("--")
        .arg("no-such-program-xyz")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(text(&out.stderr).trim(), "tandem: no-such-program-xyz: command not found (searched PATH)");
}

#[test]
fn program_closing_every_descriptor_keeps_being_recorded() {
    let program = fixture("closes_all", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.tlog");
    let out = record(&log, &program, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let calls: Vec<_> = read_log(&log).unwrap().iter().map(|e| e.call()).collect();
    let after_close: Vec<_> = calls.iter().skip_while(|c| **c != eventlog::Call::CloseRange).collect();
    for c in [eventlog::Call::ClockGettime, eventlog::Call::Open, eventlog::Call::Write] {
        assert!(after_close.contains(&&c), "{c} missing after closefrom: {calls:?}");
    }
}
