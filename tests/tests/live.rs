//! Live replication on one host: `tandem primary` streams to `tandem backup` over QUIC on the
//! loopback interface.

use std::path::Path;
use std::process::{Child, Stdio};
use tandem_tests::*;

fn backup(dir: &Path, certs: &Path, name: &str, port: u16, extra: &[&str]) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    tandem()
        .current_dir(dir)
        .args(["backup", "--group", "g", "--primary", &format!("127.0.0.1:{port}"), "--name", name, "--certs"])
        .arg(certs)
        .arg("--state-dir")
        .arg(dir.join("tandem-state"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A directory holding the cluster's certificates (`certs`, for `primary` and `backup1`), and a
/// free port for the primary.
fn cluster() -> (tempfile::TempDir, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &["primary", "backup1"]);
    (dir, certs_dir, free_port())
}

/// A primary in `dir` that starts `program` once one backup is connected.
fn primary(dir: &Path, certs: &Path, port: u16, program: &[&str]) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    tandem()
        .current_dir(dir)
        .args(["primary", "--group", "g", "--wait-for-backups", "1", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--name", "primary", "--certs"])
        .arg(certs)
        .arg("--state-dir")
        .arg(dir.with_extension("state"))
        .arg("--")
        .args(program)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_backup_follows_the_primary_live_and_strangers_are_refused() {
    let program = fixture("mt_record", &[]);
    let child = fixture("mt_child", &[]);
    let (dir, ours, port) = cluster();
    let theirs = dir.path().join("other-certs");
    certs(&theirs, &["backup1"]);
    let p = dir.path().join("p");
    // The program starts once a backup is connected: the stranger is refused before that.
    let primary = primary(
        &p,
        &ours,
        port,
        &[program.to_str().unwrap(), "transcript", child.to_str().unwrap(), "child-out", "100"],
    );
    let stranger = backup(&dir.path().join("s"), &theirs, "backup1", port, &[]).wait_with_output().unwrap();
    let serr = text(&stranger.stderr);
    assert!(!stranger.status.success(), "the stranger was not refused:\n{serr}");
    assert!(serr.contains("refused"), "{serr}");
    let good = backup(&dir.path().join("b"), &ours, "backup1", port, &[]);
    let primary = primary.wait_with_output().unwrap();
    let perr = text(&primary.stderr);
    assert!(primary.status.success(), "primary failed:\n{perr}");
    let good = good.wait_with_output().unwrap();
    let berr = text(&good.stderr);
    assert!(good.status.success(), "backup failed:\n{berr}\nprimary:\n{perr}");
    assert!(berr.contains("holds all of it"), "{berr}");
    assert!(perr.contains("session complete"), "{perr}");
    let b = dir.path().join("b");
    let b = backup_view(&b.join("tandem-state"), &b.join("merged"));
    for file in ["transcript", "child-out"] {
        let (a, b) = (std::fs::read(p.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap());
        assert_eq!(text(&a), text(&b), "{file} differs");
    }
    assert!(perr.contains("refused a peer at the handshake"), "primary:\n{perr}\nstranger:\n{serr}");
    assert!(!std::fs::exists(dir.path().join("s").join("transcript")).unwrap(), "the stranger got the program");
}

/// A program that makes no call for longer than the backup's stall timeout is quiet, not stuck:
/// when its next event arrives the backup takes it, instead of judging the wait a stall.
#[test]
fn a_quiet_primary_is_not_a_stalled_backup() {
    let (dir, certs_dir, port) = cluster();
    let primary = primary(
        &dir.path().join("p"),
        &certs_dir,
        port,
        &["sh", "-c", "echo before > out; sleep 2; echo after >> out"],
    );
    let b = dir.path().join("b");
    let good = backup(&b, &certs_dir, "backup1", port, &["--stall-timeout", "1s"]).wait_with_output().unwrap();
    let perr = text(&primary.wait_with_output().unwrap().stderr);
    let berr = text(&good.stderr);
    assert!(good.status.success(), "backup failed:\n{berr}\nprimary:\n{perr}");
    let b = backup_view(&b.join("tandem-state"), &b.join("merged"));
    assert_eq!(text(&std::fs::read(b.join("out")).unwrap()), "before\nafter\n");
}

/// A backup's agent killed in the middle of the stream leaves its log with space made ready past
/// the last batch; started again on the same state directory, it cuts that space, replays what
/// the log holds and follows the primary on to the end.
#[test]
fn a_killed_backup_resumes_from_its_own_log() {
    let (dir, certs_dir, port) = cluster();
    let p = dir.path().join("p");
    // About 3 s.
    let program = "i=0; while [ $i -lt 100 ]; do echo $i >> out; sleep 0.03; i=$((i+1)); done";
    let primary = primary(&p, &certs_dir, port, &["sh", "-c", program]);
    let b = dir.path().join("b");
    let log = b.join("tandem-state").join("log.tlog");
    let mut first = backup(&b, &certs_dir, "backup1", port, &["--witness"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Some batches, then zeros.
    let held_and_ready = |log: &Path| {
        std::fs::read(log).is_ok_and(|bytes| {
            bytes.len() > 8192
                && bytes.windows(4).filter(|w| w == b"TBAT").count() >= 3
                && bytes[bytes.len() - 4096..].iter().all(|&b| b == 0)
        })
    };
    while !held_and_ready(&log) {
        assert!(std::time::Instant::now() < deadline, "the backup's log has no space made ready past its batches");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let again = backup(&b, &certs_dir, "backup1", port, &[]).wait_with_output().unwrap();
    let perr = text(&primary.wait_with_output().unwrap().stderr);
    let berr = text(&again.stderr);
    assert!(again.status.success(), "backup failed:\n{berr}\nprimary:\n{perr}");
    assert!(
        !berr.contains("from=1\n") && berr.contains("following the primary"),
        "it did not resume from its log:\n{berr}"
    );
    let view = backup_view(&b.join("tandem-state"), &b.join("merged"));
    assert_eq!(text(&std::fs::read(view.join("out")).unwrap()), text(&std::fs::read(p.join("out")).unwrap()));
    // A finished log ends with its end marker, not with space made ready.
    let bytes = std::fs::read(&log).unwrap();
    assert_eq!(&bytes[bytes.len() - 40..bytes.len() - 36], b"TEND", "the finished log does not end at its end marker");
}

/// A backup whose host has another build of the program than the primary ran refuses to start,
/// naming the file, instead of diverging far from the cause.
#[test]
fn a_backup_with_another_build_of_the_program_is_refused() {
    let (dir, certs_dir, port) = cluster();
    let program = dir.path().join("tool");
    std::fs::copy("/bin/sleep", &program).unwrap();
    let mut primary = primary(&dir.path().join("p"), &certs_dir, port, &[program.to_str().unwrap(), "1"]);
    // Once the primary keeps its membership it has looked at its program; this host's copy is
    // then made another build.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !dir.path().join("p.state/membership").exists() {
        assert!(std::time::Instant::now() < deadline, "the primary did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::remove_file(&program).unwrap();
    std::fs::copy("/bin/true", &program).unwrap();
    let refused = backup(&dir.path().join("b"), &certs_dir, "backup1", port, &[]).wait_with_output().unwrap();
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(126), "{err}");
    assert!(err.contains("tool") && err.contains("differs from the primary's"), "{err}");
    // It waits for a backup that will not come.
    primary.kill().unwrap();
    primary.wait().unwrap();
}

/// A backup whose shim is another build than the primary's refuses to start, naming it: another
/// build moves the program's addresses, and its replay would diverge where the program's
/// allocator chooses by address.
#[test]
fn a_backup_with_another_build_of_the_shim_is_refused() {
    let (dir, certs_dir, port) = cluster();
    let mut primary = primary(&dir.path().join("p"), &certs_dir, port, &["/bin/sleep", "1"]);
    let other = dir.path().join("libtandem.so");
    std::fs::copy("/bin/true", &other).unwrap();
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let refused = tandem()
        .current_dir(&b)
        .env("TANDEM_PRELOAD", &other)
        .args(["backup", "--group", "g", "--primary", &format!("127.0.0.1:{port}"), "--name", "backup1", "--certs"])
        .arg(&certs_dir)
        .arg("--state-dir")
        .arg(b.join("tandem-state"))
        .output()
        .unwrap();
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(126), "{err}");
    assert!(err.contains(&format!("{}: differs from the primary's", other.display())), "{err}");
    assert!(err.contains("run the primary's tandem build on this host"), "{err}");
    primary.kill().unwrap();
    primary.wait().unwrap();
}

/// `--retain`: past the bound the primary drops the oldest events from its log once its
/// connected backup holds them. A backup started then, which would need them, is refused with
/// the reason; the one connected from the start follows to the end, and `tandem status` says
/// no backup that needs older events can join.
#[test]
fn a_bounded_log_refuses_a_late_backup_and_keeps_the_early_one() {
    let (dir, certs_dir, port) = cluster();
    let p = dir.path().join("p");
    // Some MiB of events, then a wait until the primary is stopped.
    let program = "i=0; while [ $i -lt 20000 ]; do echo $i >> out; i=$((i+1)); done; touch looped; exec sleep 600";
    let primary = tandem()
        .current_dir({
            std::fs::create_dir_all(&p).unwrap();
            &p
        })
        .args(["primary", "--group", "g", "--wait-for-backups", "1", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--name", "primary", "--retain", "16KiB", "--certs"])
        .arg(&certs_dir)
        .arg("--state-dir")
        .arg(p.with_extension("state"))
        .args(["--", "sh", "-c", program])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let early_dir = dir.path().join("early");
    let early = backup(&early_dir, &certs_dir, "backup1", port, &[]);
    // The program has looped and the log has been cut (a store comes at least every second).
    let kept_from = || {
        let out = tandem().args(["status", "--json", "--state-dir"]).arg(p.with_extension("state")).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["groups"][0]["kept_from"].as_u64()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !p.join("looped").exists() || kept_from().is_none() {
        assert!(std::time::Instant::now() < deadline, "the log was not cut");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = p.with_extension("state").join("log.tlog");
    let meta = std::fs::metadata(&log).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() * 512 < meta.len() / 2, "the dropped batches still take the disk: {meta:?}");
    let status = tandem().args(["status", "--state-dir"]).arg(p.with_extension("state")).output().unwrap();
    assert!(text(&status.stdout).contains("no backup that needs older events can join"), "{}", text(&status.stdout));

    let late = backup(&dir.path().join("late"), &certs_dir, "backup1", port, &[]).wait_with_output().unwrap();
    let lerr = text(&late.stderr);
    assert!(!late.status.success(), "the late backup was not refused:\n{lerr}");
    assert!(lerr.contains("needs events from 1 on") && lerr.contains("--retain"), "{lerr}");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(primary.id() as i32), nix::sys::signal::SIGTERM).unwrap();
    let perr = text(&primary.wait_with_output().unwrap().stderr);
    let early = early.wait_with_output().unwrap();
    let eerr = text(&early.stderr);
    assert!(early.status.success(), "the early backup failed:\n{eerr}\nprimary:\n{perr}");
    assert!(perr.contains("the log keeps events from"), "{perr}");
    // The cut log reads from its first kept batch, and says so; a replay of it is refused.
    let stats = tandem().args(["log", "stats"]).arg(&log).output().unwrap();
    assert!(
        stats.status.success() && text(&stats.stdout).contains("older events were dropped (--retain)"),
        "{stats:?}"
    );
    let replay = tandem().args(["replay", "--no-view"]).arg(&log).output().unwrap();
    assert!(!replay.status.success() && text(&replay.stderr).contains("dropped by --retain"), "{replay:?}");
    let view = backup_view(&early_dir.join("tandem-state"), &early_dir.join("merged"));
    assert_eq!(text(&std::fs::read(view.join("out")).unwrap()), text(&std::fs::read(p.join("out")).unwrap()));
}
