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
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A primary in `dir` that starts `program` once one backup is connected.
fn primary(dir: &Path, certs: &Path, port: u16, program: &[&str]) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    tandem()
        .current_dir(dir)
        .args(["primary", "--group", "g", "--wait-for-backups", "1", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--name", "primary", "--certs"])
        .arg(certs)
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
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("certs"), dir.path().join("other-certs"));
    certs(&ours, &["primary", "backup1"]);
    certs(&theirs, &["backup1"]);
    let port = free_port();
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
    for file in ["transcript", "child-out"] {
        let (a, b) = (std::fs::read(p.join(file)).unwrap(), std::fs::read(dir.path().join("b").join(file)).unwrap());
        assert_eq!(text(&a), text(&b), "{file} differs");
    }
    assert!(perr.contains("refused a peer at the handshake"), "primary:\n{perr}\nstranger:\n{serr}");
    assert!(!std::fs::exists(dir.path().join("s").join("transcript")).unwrap(), "the stranger got the program");
}

/// A program that makes no call for longer than the backup's stall timeout is quiet, not stuck:
/// when its next event arrives the backup takes it, instead of judging the wait a stall.
#[test]
fn a_quiet_primary_is_not_a_stalled_backup() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &["primary", "backup1"]);
    let port = free_port();
    let primary = primary(
        &dir.path().join("p"),
        &certs_dir,
        port,
        &["sh", "-c", "echo before > out; sleep 2; echo after >> out"],
    );
    let b = dir.path().join("b");
    let good = backup(&b, &certs_dir, "backup1", port, &["--stall-timeout", "1"]).wait_with_output().unwrap();
    let perr = text(&primary.wait_with_output().unwrap().stderr);
    let berr = text(&good.stderr);
    assert!(good.status.success(), "backup failed:\n{berr}\nprimary:\n{perr}");
    assert_eq!(text(&std::fs::read(b.join("out")).unwrap()), "before\nafter\n");
}
