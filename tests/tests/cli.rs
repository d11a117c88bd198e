//! The command line's conventions on every command: flags before `--` and the program after it,
//! a misspelled flag refused with a suggestion, durations and sizes with units, host names in
//! addresses, completions and a manual page.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::*;

/// A command of the tree and the long flags it takes.
struct Node {
    path: Vec<String>,
    flags: Vec<String>,
}

/// Every command `tandem --help` leads to (its `Commands:` sections, hidden commands aside), with
/// the long flags its own `--help` lists: read from the tree itself, so a new command is tested
/// as soon as it exists.
fn command_tree(path: Vec<String>, into: &mut Vec<Node>) {
    let out = tandem().args(&path).arg("--help").output().unwrap();
    assert!(out.status.success(), "tandem {} --help: {}", path.join(" "), text(&out.stderr));
    let help = text(&out.stdout);
    let (mut section, mut children, mut flags) = (String::new(), Vec::new(), Vec::new());
    for line in help.lines() {
        if !line.starts_with(' ') {
            section = line.to_string();
            continue;
        }
        let mut words = line.split_whitespace();
        match (section.as_str(), words.next()) {
            ("Commands:", Some(name)) if name != "help" => children.push(name.to_string()),
            ("Options:", Some(first)) if first.starts_with('-') => {
                let long = std::iter::once(first).chain(words).find(|w| w.starts_with("--"));
                flags.extend(long.map(|w| w.trim_end_matches(',').to_string()));
            }
            _ => {}
        }
    }
    assert!(help.contains("Exit status:"), "tandem {} --help names no exit status:\n{help}", path.join(" "));
    for child in children {
        let mut p = path.clone();
        p.push(child);
        command_tree(p, into);
    }
    into.push(Node { path, flags });
}

/// `--max-threads` as `--max_threads`, `--group` as `--grou`.
fn misspell(flag: &str) -> String {
    match flag[2..].find('-') {
        Some(at) => format!("{}_{}", &flag[..2 + at], &flag[3 + at..]),
        None => flag[..flag.len() - 1].to_string(),
    }
}

#[test]
fn a_misspelled_flag_is_refused_with_a_suggestion_on_every_command() {
    let mut tree = Vec::new();
    command_tree(Vec::new(), &mut tree);
    let names: Vec<String> = tree.iter().map(|n| n.path.join(" ")).collect();
    for expected in
        ["record", "replay", "primary", "backup", "promote", "status", "coordinator reinit", "log show", "certs issue"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    for node in &tree {
        let flag = node.flags.iter().find(|f| !matches!(f.as_str(), "--help" | "--version")).map_or("--help", |f| f);
        let typo = misspell(flag);
        let out = tandem().args(&node.path).arg(&typo).args(["--", "/bin/true"]).output().unwrap();
        let what = format!("tandem {} {typo}", node.path.join(" "));
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(&format!("tip: a similar argument exists: '{flag}'")), "{what}:\n{err}");
    }
}

#[test]
fn the_program_comes_only_after_the_double_dash() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("x.tlog");
    let out = tandem().arg("record").arg("--out").arg(&log).arg("/bin/true").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unexpected argument '/bin/true'"), "{}", text(&out.stderr));
    assert!(!log.exists());
    // The program's own flags are its own, even when they look like tandem's.
    let out = tandem().arg("record").arg("--out").arg(&log).args(["--", "/bin/echo", "--out"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "--out\n");
}

#[test]
fn durations_and_sizes_take_units() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("true.tlog");
    // Its stderr a file: the agent's notes go beside the log.
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let status = tandem()
        .current_dir(dir.path())
        .arg("record")
        .arg("--out")
        .arg(&log)
        .args(["--ring-bytes", "8MiB", "--capture-limit", "1MiB", "--", "/bin/true"])
        .stderr(stderr)
        .status()
        .unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(dir.path().join("true.tlog.notes")).unwrap_or_default());
    assert!(!read_log(&log).unwrap().is_empty());
    // The log and the notes hold the program's environment and inputs.
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(&dir.path().join("true.tlog.notes")), 0o600);
    assert_eq!(mode(&dir.path().join("tandem-captures")), 0o700);
    let out = replay_in(dir.path(), &log, &["--stall-timeout", "500ms"], &[], 0);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A bare number is refused, saying what to write.
    let out = tandem().arg("replay").arg(&log).args(["--stall-timeout", "5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("give the unit too, e.g. 5s or 5ms"), "{}", text(&out.stderr));
    let out = tandem().arg("record").arg("--out").arg(&log).args(["--ring-bytes", "lots", "--", "/bin/true"]).output();
    let err = text(&out.unwrap().stderr);
    assert!(err.contains("not a size") && err.contains("256MiB"), "{err}");
}

/// The old spellings keep working for scripts that use them.
#[test]
fn older_flag_names_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = tandem().args(["certs", "init", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("ca.crt").is_file());
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn addresses_take_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coordinator = tandem()
        .args(["coordinator", "--state-dir"])
        .arg(dir.path().join("coordinator"))
        .args(["--listen", &format!("localhost:{port}"), "--lease-timeout", "2s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _coordinator = Killed(coordinator);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http::get(&format!("127.0.0.1:{port}"), "/v1/status"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "the coordinator did not answer on localhost:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A primary and its backup that name each other by host name.
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &["primary", "backup"]);
    let agent_port = free_port();
    let agent = |role: &str, name: &str, args: &[&str]| {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        tandem()
            .current_dir(&home)
            .args([role, "--group", "g", "--name", name])
            .arg("--certs")
            .arg(&certs_dir)
            .arg("--state-dir")
            .arg(home.join("state"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let at = format!("localhost:{agent_port}");
    let primary = agent("primary", "primary", &["--listen", &at, "--wait-for-backups", "1", "--", "/bin/echo", "hi"]);
    let backup = agent("backup", "backup", &["--primary", &at, "--stall-timeout", "5s"]);
    let (primary, backup) = (wait(primary, "primary"), wait(backup, "backup"));
    assert!(primary.status.success(), "primary: {}", text(&primary.stderr));
    assert!(backup.status.success(), "backup: {}", text(&backup.stderr));
    for name in ["primary", "backup"] {
        let state = dir.path().join(name).join("state");
        assert_eq!(mode(&state), 0o700, "{name}'s state directory");
        assert_eq!(mode(&state.join("log.tlog")), 0o600, "{name}'s log");
    }
    assert_eq!(mode(&dir.path().join("coordinator")), 0o700);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Waits for an agent, killing it after a minute.
fn wait(mut child: Child, what: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the {what} did not finish: {}", text(&child.wait_with_output().unwrap().stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn completions_and_the_manual_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = tandem().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains("tandem") && script.contains("stall-timeout"), "{shell}:\n{script}");
    }
    let out = tandem().arg("man").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(".ie"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(".TH tandem"), "{}", text(&out.stdout));
    let dir = tempfile::tempdir().unwrap();
    let out = tandem().args(["man", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    for page in ["tandem.1", "tandem-record.1", "tandem-log-show.1"] {
        assert!(Path::new(&dir.path().join(page)).is_file(), "{page} missing");
    }
}
