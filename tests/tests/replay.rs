//! Replay: a backup follows the primary's log to the same state, and says so when it cannot.

use std::path::Path;
use std::time::{Duration, Instant};
use tandem_tests::*;

/// Records the multi-threaded fixture and replays it, each side with its own random jitter; the
/// backup must write exactly the primary's transcript and child output, with no report.
fn record_and_replay_fixture(flags: &[&str], runs: usize) {
    let program = fixture("mt_record", flags);
    let child = fixture("mt_child", &[]);
    let args = ["transcript", child.to_str().unwrap(), "child-out", "100"];
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let (p, b) = (dir.path().join("primary"), dir.path().join("backup"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let log = dir.path().join("mt.tlog");
        let rec = record_in(&p, &log, &program, &args, 40);
        assert!(rec.status.success(), "run {run}: record failed: {}", text(&rec.stderr));
        let rep = replay_in(&b, &log, &[], &[], 40);
        let err = text(&rep.stderr);
        assert_eq!(rep.status.code(), Some(0), "run {run}: replay failed:\n{err}");
        assert!(!err.contains("diverged") && !err.contains("stalled"), "run {run}: {err}");
        let replayed = replayed(&b, &log);
        for file in ["transcript", "child-out"] {
            let (a, z) = (std::fs::read(p.join(file)).unwrap(), std::fs::read(replayed.join(file)).unwrap());
            assert_eq!(text(&a), text(&z), "run {run}: {file} differs");
        }
    }
}

#[test]
fn multithreaded_fixture_replays_exactly_under_jitter() {
    record_and_replay_fixture(&[], 50);
}

#[test]
fn fortified_fixture_replays_exactly_under_jitter() {
    record_and_replay_fixture(&["-O2", "-D_FORTIFY_SOURCE=2"], 50);
}

/// The seq of the first write to stdout in a log.
fn first_stdout_write(log: &Path, nth: usize) -> eventlog::Seq {
    read_log(log)
        .unwrap()
        .iter()
        .filter(|e| e.call() == eventlog::Call::Write && e.header.fd == 1)
        .nth(nth)
        .expect("a write to stdout")
        .header
        .seq
}

#[test]
fn input_the_shim_cannot_see_is_a_divergence() {
    let program = fixture("tsc_writer", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tsc.tlog");
    let rec = record_in(dir.path(), &log, &program, &["same", "tsc"], 0);
    assert!(rec.status.success());
    let rep = replay_in(dir.path(), &log, &[], &[], 0);
    assert_eq!(rep.status.code(), Some(3), "{}", text(&rep.stderr));
    let seq = first_stdout_write(&log, 1);
    let err = text(&rep.stderr);
    assert!(
        err.contains(&format!("replay diverged at seq {seq}: seq {seq}, process 1 thread 0: write fd 1:")),
        "{err}"
    );
    assert!(err.contains("the bytes differ from the primary's"), "{err}");
}

#[test]
fn a_different_argument_is_a_divergence() {
    let program = fixture("tsc_writer", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("arg.tlog");
    assert!(record_in(dir.path(), &log, &program, &["alpha"], 0).status.success());
    // The same argument replays cleanly ...
    let same = replay_in(dir.path(), &log, &[], &[], 0);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    // ... another one does not.
    let rep = replay_in(dir.path(), &log, &[], &[program.to_str().unwrap(), "omega"], 0);
    assert_eq!(rep.status.code(), Some(3), "{}", text(&rep.stderr));
    let seq = first_stdout_write(&log, 0);
    assert!(text(&rep.stderr).contains(&format!("replay diverged at seq {seq}:")), "{}", text(&rep.stderr));
}

#[test]
fn a_stall_is_reported_within_five_seconds() {
    let program = fixture("stall", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stall.tlog");
    assert!(record_in(dir.path(), &log, &program, &["go"], 0).status.success());
    let started = Instant::now();
    let rep = replay_in(dir.path(), &log, &[], &[program.to_str().unwrap(), "block"], 0);
    let took = started.elapsed();
    assert_eq!(rep.status.code(), Some(4), "{}", text(&rep.stderr));
    assert!(took < Duration::from_secs(9), "reported after {took:?}");
    let err = text(&rep.stderr);
    assert!(
        err.contains("replay stalled at seq 2")
            && err.contains("process 1 thread 0's clock_gettime")
            && err.contains("is running the program's own code"),
        "{err}"
    );
}

#[test]
fn sqlite_replays_to_the_same_database_file() {
    require("sqlite3");
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(dir.path());
    let log = dir.path().join("sqlite.tlog");
    let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, r INTEGER, at TEXT, blob BLOB); \
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000) \
        INSERT INTO t(r, at, blob) SELECT random(), datetime('now'), randomblob(64) FROM n; \
        CREATE INDEX tr ON t(r); DELETE FROM t WHERE r % 3 = 0; VACUUM; SELECT count(*) FROM t;";
    let sqlite = std::path::PathBuf::from("sqlite3");
    assert!(record_in(&p, &log, &sqlite, &["test.db", sql], 0).status.success());
    // sqlite names its files by absolute path: the replay, started elsewhere, runs its program
    // where the primary's data appears at the primary's path, in a view of its own.
    let rep = replay_in(&b, &log, &[], &[], 0);
    assert_eq!(rep.status.code(), Some(0), "{}", text(&rep.stderr));
    let (x, y) =
        (std::fs::read(p.join("test.db")).unwrap(), std::fs::read(replayed(&b, &log).join("test.db")).unwrap());
    assert!(x == y, "the backup's database differs from the primary's");
}

/// The go-live contract, on a small epoll echo server: the primary's own connections read as
/// closed on the live backup and refuse writes with ECONNRESET (no SIGPIPE); new clients are
/// served; the listening socket is where the primary's was.
#[test]
fn going_live_closes_the_primarys_connections_and_serves_new_ones() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let program = fixture("echo_server", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("echo.tlog");
    let port = free_port();
    let mut agent = tandem()
        .current_dir(dir.path())
        .args(["record", "--out"])
        .arg(&log)
        .arg("--")
        .arg(&program)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let connect = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                return s;
            }
            assert!(Instant::now() < deadline, "nobody listens on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut old = connect();
    old.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    old.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    // The primary dies with the connection open (the program is its keeper's child, the agent's
    // grandchild).
    let child_of = |pid: i32| -> i32 {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        children.split_whitespace().next().unwrap().parse().unwrap()
    };
    let pid = child_of(child_of(agent.id() as i32));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    agent.wait().unwrap();
    drop(old);

    let backup = tandem()
        .current_dir(dir.path())
        .arg("replay")
        .arg("--go-live")
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut new = connect();
    new.write_all(b"again").unwrap();
    new.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again");
    new.write_all(b"quit").unwrap();
    let out = backup.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    // The primary accepted fd 5 (its own output is not executed on the backup); once live the
    // backup finds it closed, and writing to it fails with ECONNRESET (104).
    assert!(said.contains("eof 5 write 104"), "{said}");
    assert!(said.contains("accept 5") || said.contains("accept 6"), "{said}");
}

/// A shell that runs more commands over its life than the replay has thread slots (256 by
/// default): slots and child entries of processes that have ended are taken again, and the
/// shell's reaping (wait3) is replayed like any wait.
#[test]
fn a_shell_running_more_commands_than_thread_slots_replays() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sh.tlog");
    let script = "i=0; while [ $i -lt 400 ]; do /bin/true; i=$((i+1)); done; echo $i > out";
    let rec = record_in(dir.path(), &log, Path::new("/bin/sh"), &["-c", script], 0);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    let waits = read_log(&log).unwrap().iter().filter(|e| e.call() == eventlog::Call::Wait4).count();
    assert!(waits >= 400, "the shell's reaping was not recorded ({waits} waits)");
    std::fs::remove_file(dir.path().join("out")).unwrap();
    let rep = replay_in(dir.path(), &log, &[], &[], 0);
    let err = text(&rep.stderr);
    assert_eq!(rep.status.code(), Some(0), "replay failed:\n{err}");
    assert!(!err.contains("slots are taken") && !err.contains("will not be followed"), "{err}");
    assert_eq!(text(&std::fs::read(replayed(dir.path(), &log).join("out")).unwrap()), "400\n");
}

/// A parent that reaps with waitid (polling, peeking without reaping, then reaping, half of it
/// through syscall(2)) sees the primary's children in the primary's order, with their statuses,
/// and its own children are reaped as it goes.
#[test]
fn children_reaped_with_waitid_replay_in_the_recorded_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("reaper.tlog");
    let program = fixture("reaper", &[]);
    let program = program.to_str().unwrap();
    let rec = record_in(dir.path(), &log, Path::new(program), &["out"], 50);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    let recorded = std::fs::read(dir.path().join("out")).unwrap();
    assert!(text(&recorded).lines().count() == 9, "{}", text(&recorded));
    let events = read_log(&log).unwrap();
    let waitids = events.iter().filter(|e| e.call() == eventlog::Call::Waitid).count();
    assert!(waitids >= 16, "waitid was not recorded ({waitids} events)");
    assert!(events.iter().any(|e| e.call() == eventlog::Call::Wait4), "wait4 through syscall(2) was not recorded");
    std::fs::remove_file(dir.path().join("out")).unwrap();
    let rep = replay_in(dir.path(), &log, &[], &[], 50);
    assert_eq!(rep.status.code(), Some(0), "replay failed:\n{}", text(&rep.stderr));
    assert_eq!(text(&std::fs::read(replayed(dir.path(), &log).join("out")).unwrap()), text(&recorded));
}

/// A thread reads a counter the other changes between its calls, then trylocks, and its next
/// call depends on what it read (jemalloc's background thread does this): the backup's reader
/// reads only once everything before its trylock has happened, as the primary's did, even when
/// the other thread's calls are slowed (jitter on the replay side only: the primary's read falls
/// just before its trylock). Before, 1 of 30 such replays was clean.
#[test]
fn a_read_just_before_a_trylock_sees_what_the_primarys_saw() {
    let program = fixture("reads_before_trylock", &["-O2"]);
    for round in 0..8 {
        let run = record_then_replay(&program, &["20", "200000"], (0, 40));
        // Two calls a round (trylock, a clock), three when the trylock took the lock.
        let calls = read_log(&run.log).unwrap().iter().filter(|e| e.header.tid.0 == 1).count();
        assert!(calls >= 40, "round {round}: the reader made {calls} calls");
    }
}

/// Temporary names come from randomness the shim cannot see: a replay in another directory
/// takes the primary's names and makes the same files and directory, which the program then
/// uses by name.
#[test]
fn temporary_names_are_the_primarys() {
    let run = record_then_replay(&fixture("tempnames", &[]), &[], (0, 0));
    let (p, b, log) = (&run.primary, &run.backup, &run.log);
    let transcript = std::fs::read_to_string(p.join("transcript")).unwrap();
    assert_eq!(transcript, std::fs::read_to_string(b.join("transcript")).unwrap());
    let names: Vec<&str> = transcript.split_whitespace().take(5).collect();
    assert!(b.join(format!("{}.renamed", names[0])).is_file(), "{transcript}");
    assert!(b.join(names[2]).join("file").is_file(), "the directory mkdtemp made: {transcript}");
    let calls: Vec<_> = read_log(log).unwrap().into_iter().map(|e| e.call()).collect();
    for call in [eventlog::Call::Mkstemp, eventlog::Call::Mkdtemp, eventlog::Call::Mktemp] {
        assert!(calls.contains(&call), "{call} was not recorded");
    }
}

/// Three processes append 2000 numbered lines each to one file through an inherited `O_APPEND`
/// descriptor, then two threads use one file through separate opens, one appending, one reading
/// as it grows: calls on one file take their sequence numbers in the order they ran (the file's
/// lock), so a replay under jitter in another directory writes and reads the primary's bytes in
/// the primary's order.
#[test]
fn calls_on_one_file_replay_in_their_order() {
    let program = fixture("shared_file", &[]);
    let runs: u32 = std::env::var("TANDEM_SHARED_FILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let (p, b) = primary_and_backup_dirs(dir.path());
        let log = dir.path().join("shared.tlog");
        let rec = record_in(&p, &log, &program, &[], 40);
        assert!(rec.status.success(), "run {run}: record failed: {}", text(&rec.stderr));
        let rep = replay_in(&b, &log, &[], &[], 40);
        assert_eq!(rep.status.code(), Some(0), "run {run}: replay failed:\n{}", text(&rep.stderr));
        let view = replayed(&b, &log);
        for name in ["shared.log", "threads.dat", "copy.dat"] {
            let want = std::fs::read(p.join(name)).unwrap();
            let got = std::fs::read(view.join(name)).unwrap();
            assert!(want == got, "run {run}: the replay's {name} differs from the primary's");
        }
        let log_lines = std::fs::read_to_string(p.join("shared.log")).unwrap();
        assert_eq!(log_lines.lines().count(), 6000, "run {run}");
    }
}

/// Unnamed temporary files (tmpfile, tmpfile64) and a mkstemp file, written, rewound and read
/// back through stdio, and names from tmpnam, tmpnam_r and tempnam: a replay under jitter in a
/// directory of another length makes unnamed files of its own at the primary's descriptors and
/// hands back the primary's names, so it prints what the primary printed.
#[test]
fn temporary_files_and_names_replay_under_jitter() {
    let program = fixture("tmpfiles", &[]);
    for run in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (p, b) = primary_and_backup_dirs(dir.path());
        let log = dir.path().join("tmpfiles.tlog");
        let rec = record_in(&p, &log, &program, &[], 20);
        assert!(rec.status.success(), "run {run}: record failed: {}", text(&rec.stderr));
        let rep = replay_in(&b, &log, &[], &[], 20);
        assert_eq!(rep.status.code(), Some(0), "run {run}: replay failed:\n{}", text(&rep.stderr));
        let transcript = std::fs::read_to_string(p.join("transcript")).unwrap();
        let b = replayed(&b, &log);
        assert_eq!(transcript, std::fs::read_to_string(b.join("transcript")).unwrap(), "run {run}");
        assert_eq!(text(&rec.stdout), transcript, "run {run}");
        assert_eq!(text(&rep.stdout), transcript, "run {run}: the backup printed otherwise");
        assert!(
            transcript.starts_with("read [first unnamed] [second unnamed] [named by mkstemp] fds 3 4 5 kept kept"),
            "run {run}: {transcript}"
        );
        let kept = transcript.split_whitespace().nth(13).unwrap();
        assert_eq!(std::fs::read(b.join(kept)).unwrap(), b"named by mkstemp\n", "run {run}");
        let calls: Vec<_> = read_log(&log).unwrap().into_iter().map(|e| e.call()).collect();
        for call in [eventlog::Call::Tmpfile, eventlog::Call::Tmpnam, eventlog::Call::Tempnam] {
            assert!(calls.contains(&call), "run {run}: {call} was not recorded");
        }
    }
}

/// Shells started by system(3), several times and from two threads at once, take the logical
/// pids the record gave them: a replay in another directory runs the same shells and ends with
/// the primary's files and exit statuses.
#[test]
fn shells_started_by_system_replay_under_jitter() {
    let program = fixture("shells", &[]);
    for run in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (p, b) = primary_and_backup_dirs(dir.path());
        let log = dir.path().join("shells.tlog");
        let rec = record_in(&p, &log, &program, &[], 20);
        assert!(rec.status.success(), "run {run}: record failed: {}", text(&rec.stderr));
        let rep = replay_in(&b, &log, &[], &[], 20);
        assert_eq!(rep.status.code(), Some(0), "run {run}: replay failed:\n{}", text(&rep.stderr));
        let b = replayed(&b, &log);
        for file in ["transcript", "a.txt", "b.txt", "c.txt", "thread.txt"] {
            let (x, y) = (std::fs::read(p.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap());
            assert_eq!(text(&x), text(&y), "run {run}: {file} differs");
        }
        assert_eq!(std::fs::read_to_string(p.join("transcript")).unwrap(), "statuses 0 3 0 0 5\n");
        let events = read_log(&log).unwrap();
        let unseen = events.iter().filter(|e| e.call() == eventlog::Call::ProcessStart).count();
        assert_eq!(unseen, 0, "run {run}: a shell took its logical pid in start order");
    }
}

/// Shells started by popen(3) and system(3) take the logical pids the record gave them, and the
/// bytes through the streams move for real on a backup: a pipeline's output read right after a
/// system(3), a file cat'ed (with write(2), more than a pipe holds) through one stream while
/// another is written to (more than a pipe holds, counted by wc, which reads with read(2)), and
/// a stream opened by each of two threads at once. Replays under jitter in a directory of
/// another length end with the primary's transcript, files, output and exit statuses.
#[test]
fn popen_streams_and_system_replay_under_jitter() {
    let program = fixture("popens", &[]);
    for run in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (p, b) = primary_and_backup_dirs(dir.path());
        let log = dir.path().join("popens.tlog");
        let rec = record_in(&p, &log, &program, &[], 20);
        assert!(rec.status.success(), "run {run}: record failed: {}", text(&rec.stderr));
        let rep = replay_in(&b, &log, &[], &[], 20);
        assert_eq!(rep.status.code(), Some(0), "run {run}: replay failed:\n{}", text(&rep.stderr));
        let b = replayed(&b, &log);
        for file in ["transcript", "numbers.txt", "counted.txt"] {
            let (x, y) = (std::fs::read(p.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap());
            assert_eq!(text(&x), text(&y), "run {run}: {file} differs");
        }
        let transcript = std::fs::read_to_string(p.join("transcript")).unwrap();
        let lines: Vec<&str> = transcript.lines().collect();
        assert_eq!(lines[0], "statuses 0 0 0 2 3 4 0", "run {run}: {transcript}");
        assert!(lines[1].starts_with("sha1 ") && lines[1].len() == 5 + 40 + 3, "run {run}: {transcript}");
        assert_eq!(lines[2], "numbers 30000 sum 450015000 counted 288894", "run {run}");
        assert_eq!(lines[3], "lines [from-main] [from-thread]", "run {run}");
        assert_eq!(text(&rec.stdout), transcript, "run {run}");
        assert_eq!(text(&rep.stdout), transcript, "run {run}: the backup printed otherwise");
        let events = read_log(&log).unwrap();
        let count = |call: eventlog::Call| events.iter().filter(|e| e.call() == call).count();
        assert_eq!(count(eventlog::Call::ProcessStart), 0, "run {run}: a shell took its logical pid in start order");
        for call in
            [eventlog::Call::Popen, eventlog::Call::PopenStream, eventlog::Call::Pclose, eventlog::Call::PcloseStatus]
        {
            assert_eq!(count(call), 5, "run {run}: {call}");
        }
        let on_stream = |call: eventlog::Call| {
            events.iter().any(|e| e.call() == call && e.header.fd_kind() == eventlog::FdKind::InnerPipe)
        };
        assert!(on_stream(eventlog::Call::Read), "run {run}: wc's reads were not a stream's");
        assert!(on_stream(eventlog::Call::Write), "run {run}: cat's writes were not a stream's");
    }
}

/// Descriptors received over a Unix socket (`SCM_RIGHTS`, as nginx passes its workers each
/// other's channels) exist on a backup too, as stand-ins at the primary's numbers: the program
/// closes them as it did on the primary.
#[test]
fn descriptors_received_over_a_socket_have_stand_ins() {
    let run = record_then_replay(&fixture("passes_fds", &[]), &[], (0, 20));
    for side in [&run.primary, &run.backup] {
        assert_eq!(std::fs::read_to_string(side.join("passed")).unwrap(), "received hello; closes 0 0\n");
    }
}

/// Waits for `file` to exist (a fixture saying it has reached a point), then connects to `port`
/// and returns what the program sends before it closes the connection.
fn when_ready_fetch(file: &Path, port: u16) -> String {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !file.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "nobody listens on {port}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    got
}

/// The program's own pipes move their bytes for real on a backup, in the primary's order: one
/// write of 1 MiB (more than a pipe holds, returning only after many reads took their numbers),
/// single bytes from four threads into a non-blocking pipe drained by a poller, 300 KB to a forked
/// child. Replays under jitter in a directory of another length end with the primary's files.
/// And bytes waiting in such a pipe when a backup goes live are there for the live program.
#[test]
fn the_programs_own_pipes_replay_and_keep_their_bytes_at_go_live() {
    let program = fixture("inner_pipes", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(dir.path());
    let log = dir.path().join("pipes.tlog");
    let port = free_port();
    let client = {
        let ready = p.join("ready");
        std::thread::spawn(move || when_ready_fetch(&ready, port))
    };
    let rec = record_in(&p, &log, &program, &[&port.to_string()], 20);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    assert_eq!(client.join().unwrap(), "in flight\n");
    let out = std::fs::read_to_string(p.join("out")).unwrap();
    assert!(out.starts_with("big 1048576 sum ") && out.contains("quick 100 100 100 100\n"), "{out}");
    let events = read_log(&log).unwrap();
    let chained = events.iter().filter(|e| e.call() == eventlog::Call::Write && e.header.aux[1] != 0).count();
    assert!(chained > 300, "writes to the program's own pipes name the write before them ({chained})");
    for run in 0..5 {
        let rep = replay_in(&b, &log, &[], &[], 20);
        assert_eq!(rep.status.code(), Some(0), "run {run}: replay failed:\n{}", text(&rep.stderr));
        let merged = replayed(&b, &log);
        for file in ["out", "child"] {
            let (x, y) = (std::fs::read(p.join(file)).unwrap(), std::fs::read(merged.join(file)).unwrap());
            assert_eq!(text(&x), text(&y), "run {run}: {file} differs");
        }
    }

    // The primary dies while "in flight" waits in a pipe; a backup goes live and has it.
    let live = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(live.path());
    let log = live.path().join("cut.tlog");
    let mut agent = tandem()
        .current_dir(&p)
        .args(["record", "--out"])
        .arg(&log)
        .arg("--")
        .arg(&program)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !p.join("ready").exists() {
        assert!(Instant::now() < deadline, "the program never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", agent.id())).unwrap();
    let pid: i32 = pid.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    agent.wait().unwrap();
    let backup = tandem()
        .current_dir(&b)
        .args(["replay", "--go-live", "--view-dir"])
        .arg(view_of(&b))
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The live program's own "ready" lies in its view; the port tells when it listens.
    assert_eq!(when_ready_fetch(&p.join("ready"), port), "in flight\n");
    let out = backup.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `tandem record` of `program` in `dir`, in a process group of its own that is killed whole if
/// it has not ended within `limit` (a program that waits for good under the shim must fail the
/// test, not hang it).
fn record_within(dir: &Path, log: &Path, program: &Path, limit: Duration) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let child = tandem()
        .current_dir(dir)
        .args(["record", "--out"])
        .arg(log)
        .arg("--")
        .arg(program)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
            if nix::sys::signal::killpg(group, None).is_err() {
                return;
            }
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    });
    let out = child.wait_with_output().unwrap();
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    watchdog.join().unwrap();
    out
}

/// A program that stops on signals it awaits (ppoll and sigsuspend with a mask, sigwait,
/// sigwaitinfo), as servers do:
/// recorded, the awaited signal reaches its handler; replayed in another directory, the same
/// signals end the same waits.
#[test]
fn signals_awaited_in_sigsuspend_and_sigwait_are_delivered() {
    let program = fixture("awaits_signals", &[]);
    for run in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (p, b) = primary_and_backup_dirs(dir.path());
        let log = dir.path().join("sig.tlog");
        let rec = record_within(&p, &log, &program, Duration::from_secs(30));
        assert!(rec.status.success(), "run {run}: record failed or hung ({:?}): {}", rec.status, text(&rec.stderr));
        let transcript = std::fs::read_to_string(p.join("transcript")).unwrap();
        assert!(transcript.starts_with("ppoll 10 after 1, sigsuspend 10 after 1,"), "{transcript}");
        assert!(transcript.ends_with("then 12 and 15 from the child yes\n"), "{transcript}");
        let rep = replay_in(&b, &log, &[], &[], 20);
        assert_eq!(rep.status.code(), Some(0), "run {run}: replay failed:\n{}", text(&rep.stderr));
        let b = replayed(&b, &log);
        assert_eq!(transcript, std::fs::read_to_string(b.join("transcript")).unwrap(), "run {run}");
    }
}

/// What stat says is the primary's: a replay runs later in real time, in a view whose files have
/// their own times and inode numbers, yet the file the program wrote, its directory and the one
/// above read as on the primary through every stat entry point (their times against the recorded
/// clock, sizes, links, inode numbers), and the directory lists the primary's names. Recorded
/// in one directory and replayed in another, under jitter.
#[test]
fn stat_results_are_the_primarys() {
    let program = fixture("stats", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(dir.path());
    let log = dir.path().join("stats.tlog");
    let rec = record_in(&p, &log, &program, &[], 20);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    let transcript = std::fs::read_to_string(p.join("transcript")).unwrap();
    for line in ["stat written: before now, 12 bytes", "statx written: before now", "syscall written: before now"] {
        assert!(transcript.contains(line), "{line:?} in {transcript}");
    }
    assert!(transcript.ends_with("names: . .. transcript written\n"), "{transcript}");
    let rep = replay_in(&b, &log, &[], &[], 20);
    assert_eq!(rep.status.code(), Some(0), "replay failed:\n{}", text(&rep.stderr));
    let b = replayed(&b, &log);
    assert_eq!(transcript, std::fs::read_to_string(b.join("transcript")).unwrap());
    let calls: Vec<_> = read_log(&log).unwrap().into_iter().map(|e| e.call()).collect();
    use eventlog::Call;
    for call in [Call::Stat, Call::Lstat, Call::Fstat, Call::Fstatat, Call::Statx] {
        assert!(calls.contains(&call), "{call} was not recorded");
    }
}

/// `ls -la` compares each file's time with the current time (and asks for the time again for a
/// file in the future): run by bash in the captured data, then on a captured directory after the
/// shell has written beside it, it replays in another directory with the primary's listings (the
/// first compared by the digest of what it wrote to stdout), `..` and its times included.
///
/// `ls` stats a directory's entries in the order readdir gives them, which a backup takes from
/// the record (`directory_listings_are_the_primarys` lists a directory that mixes captured
/// entries with ones written during the run).
#[test]
fn ls_la_lists_what_the_primary_listed() {
    require("bash");
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(dir.path());
    for (name, text) in [("data.txt", "captured before the run\n"), ("sub/inside.txt", "in a directory\n")] {
        std::fs::create_dir_all(p.join(name).parent().unwrap()).unwrap();
        std::fs::write(p.join(name), text).unwrap();
    }
    let log = dir.path().join("ls.tlog");
    let script = "ls -la; echo made > made.txt; ls -la sub > listing";
    let rec = record_in(&p, &log, Path::new("/bin/bash"), &["-c", script], 20);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    for name in [" .\n", " ..\n", " data.txt\n", " sub\n"] {
        assert!(text(&rec.stdout).contains(name), "{name:?} in {}", text(&rec.stdout));
    }
    let listing = std::fs::read_to_string(p.join("listing")).unwrap();
    assert!(listing.contains(" inside.txt\n") && listing.contains(" ..\n"), "{listing}");
    let rep = replay_in(&b, &log, &[], &[], 20);
    assert_eq!(rep.status.code(), Some(0), "replay failed:\n{}", text(&rep.stderr));
    assert_eq!(listing, std::fs::read_to_string(replayed(&b, &log).join("listing")).unwrap());
}

/// Directory listings are input: in a directory that mixes captured files with files written
/// during the run (which the view's overlay lists after the captured ones, and ext4 in an order
/// of its own), `ls -la`, `ls -laU` (readdir order, each entry stated in turn) and a program that
/// lists it through readdir, readdir_r, getdents64 and syscall(2)'s getdents64 and getdents give
/// the primary's listings, in the primary's order, replayed under jitter in a directory of
/// another length.
#[test]
fn directory_listings_are_the_primarys() {
    require("bash");
    let lister = fixture("listing", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(dir.path());
    for name in ["kept-a", "kept-b", "kept-c", "kept-d", "kept-e"] {
        std::fs::write(p.join(name), format!("{name} was here first\n")).unwrap();
    }
    std::fs::create_dir(p.join("out")).unwrap();
    // The lister is part of the program's data (a replay's view has /tmp private, and the build
    // may live there).
    std::fs::copy(&lister, p.join("out/lister")).unwrap();
    let log = dir.path().join("listing.tlog");
    let script = "for f in new-1 new-2 new-3 new-4 new-5 new-6; do echo $f > $f; done; mkdir new-dir; \
         { ls -la; ls -laU; out/lister; } > out/transcript";
    let rec = record_in(&p, &log, Path::new("/bin/bash"), &["-c", script], 20);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    let transcript = std::fs::read_to_string(p.join("out/transcript")).unwrap();
    for line in [" kept-a\n", " new-6\n", " new-dir\n", "readdir_r:", "syscall getdents:"] {
        assert!(transcript.contains(line), "{line:?} in {transcript}");
    }
    assert!(transcript.contains(" new-dir/4"), "{transcript}");
    let rep = replay_in(&b, &log, &[], &[], 20);
    assert_eq!(rep.status.code(), Some(0), "replay failed:\n{}", text(&rep.stderr));
    assert_eq!(transcript, std::fs::read_to_string(replayed(&b, &log).join("out/transcript")).unwrap());
    let calls: Vec<_> = read_log(&log).unwrap().into_iter().map(|e| e.call()).collect();
    use eventlog::Call;
    for call in [Call::Readdir, Call::Getdents64, Call::Getdents] {
        assert!(calls.contains(&call), "{call} was not recorded");
    }
}

/// A backup runs its program's stats too: a regular file outside the data (so not replicated)
/// whose size changed since the record stops the replay, with a report naming the path.
#[test]
fn a_file_of_another_size_is_a_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = primary_and_backup_dirs(dir.path());
    // Outside /tmp, which a replay's view makes private (and the build may live in /tmp).
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| bin_dir().to_path_buf());
    let elsewhere = tempfile::tempdir_in(home).unwrap();
    let file = elsewhere.path().join("outside.txt");
    std::fs::write(&file, "twelve bytes").unwrap();
    let log = dir.path().join("size.tlog");
    let rec = record_in(&p, &log, Path::new("/usr/bin/stat"), &["-c", "%s", file.to_str().unwrap()], 0);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    assert_eq!(text(&rec.stdout), "12\n");
    std::fs::write(&file, "thirteen now!").unwrap();
    let rep = replay_in(&b, &log, &[], &[], 0);
    assert_eq!(rep.status.code(), Some(3), "{}", text(&rep.stderr));
    let err = text(&rep.stderr);
    let report = format!("{:?}: a regular file of 12 bytes on the primary, 13 bytes here", file.display().to_string());
    assert!(err.contains(&report), "{report} in {err}");
}
