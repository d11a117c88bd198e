//! Ctrl-C and kill reach the program exactly once: the agent passes on the termination signals
//! sent to it alone, not those the terminal sends to the whole foreground process group (which
//! the program, in that group too, takes itself).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::*;

/// Waits until the program under `child` has made the file `ready`.
fn wait_until_ready(dir: &Path, child: &mut Child) {
    let start = Instant::now();
    while !dir.join("ready").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("tandem ended ({status}) before the program was ready");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the program never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to end; kills it and fails after `limit`.
fn wait_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.kill();
            panic!("tandem did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many SIGINTs the program took, as it wrote.
fn count(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("count")).unwrap_or_else(|e| format!("no count ({e})"))
}

/// `tandem record` as a shell starts a foreground job at a terminal: in a session of its own
/// whose controlling terminal is a pseudo-terminal. Ctrl-C typed there reaches the agent and the
/// program alike; the program must take it once. (A second copy can merge with the first when it
/// comes before the program has taken that one, so a few rounds.)
#[test]
fn ctrl_c_at_a_terminal_reaches_the_program_once() {
    require("setsid");
    let program = fixture("counts_sigint", &[]);
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("int.tlog");
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = || Stdio::from(pty.slave.try_clone().unwrap());
        let mut child = Command::new("setsid")
            .arg("--ctty")
            .arg(bin_dir().join("tandem"))
            .args(["record", "--out"])
            .arg(&log)
            .arg("--")
            .arg(&program)
            .current_dir(dir.path())
            .stdin(slave())
            .stdout(slave())
            .stderr(slave())
            .spawn()
            .unwrap();
        drop(pty.slave);
        let mut master = std::fs::File::from(pty.master);
        // What the terminal shows, kept for failure messages (and so its buffer never fills).
        let shown = {
            let mut master = master.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let _ = master.read_to_end(&mut out); // ends with EIO once nothing holds the terminal
                text(&out)
            })
        };
        wait_until_ready(dir.path(), &mut child);
        master.write_all(b"\x03").unwrap();
        let status = wait_within(&mut child, Duration::from_secs(30));
        drop(master);
        let shown = shown.join().unwrap();
        assert!(status.success(), "round {round}: tandem record: {status}; the terminal showed:\n{shown}");
        assert_eq!(count(dir.path()), "1\n", "round {round}: SIGINTs the program took; the terminal showed:\n{shown}");
    }
}

/// `kill -INT` to the agent alone: the agent passes it on, once.
#[test]
fn sigint_sent_to_the_agent_reaches_the_program_once() {
    use std::os::unix::process::CommandExt;
    let program = fixture("counts_sigint", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("int.tlog");
    let mut child = tandem()
        .args(["record", "--out"])
        .arg(&log)
        .arg("--")
        .arg(&program)
        .current_dir(dir.path())
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_ready(dir.path(), &mut child);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_within(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "tandem record: {status}\n{err}");
    assert_eq!(count(dir.path()), "1\n", "SIGINTs the program took\n{err}");
}
