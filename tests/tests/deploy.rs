//! The example systemd units in deploy/systemd: where systemd cannot run them (a container, a CI
//! runner), their ExecStart lines run as systemd would (the environment file's settings put in,
//! the main process alone signalled with KillSignal, as KillMode=mixed does), and each service
//! must start, stop within its TimeoutStopSec, and come back when started again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::http::curl_tls;
use tandem_tests::*;

/// A unit file: its settings by key (a key given twice keeps both, in order).
struct Unit {
    settings: BTreeMap<String, Vec<String>>,
}

impl Unit {
    fn read(name: &str) -> Unit {
        let path = root().join("deploy/systemd").join(name);
        let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '['])) {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{name}: not KEY=VALUE: {line}"));
            settings.entry(key.trim().to_string()).or_default().push(value.trim().to_string());
        }
        Unit { settings }
    }

    fn get(&self, key: &str) -> &str {
        self.settings.get(key).and_then(|v| v.last()).map(String::as_str).unwrap_or_else(|| panic!("no {key}"))
    }

    fn timeout(&self) -> Duration {
        humantime::parse_duration(self.get("TimeoutStopSec")).expect("TimeoutStopSec is a duration")
    }

    /// ExecStart as systemd splits it: `${VAR}` one word, `$VAR` split on white space.
    fn command(&self, env: &BTreeMap<String, String>) -> Vec<String> {
        let mut words = Vec::new();
        for word in self.get("ExecStart").split_whitespace() {
            if let Some(var) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                words.push(env.get(var).unwrap_or_else(|| panic!("{var} is not set")).clone());
            } else if let Some(var) = word.strip_prefix('$') {
                words.extend(
                    env.get(var).unwrap_or_else(|| panic!("{var} is not set")).split_whitespace().map(String::from),
                );
            } else {
                words.push(word.to_string());
            }
        }
        words
    }

    /// Every variable ExecStart uses.
    fn variables(&self) -> Vec<String> {
        self.get("ExecStart")
            .split_whitespace()
            .filter_map(|w| w.strip_prefix('$'))
            .map(|w| w.trim_start_matches('{').trim_end_matches('}').to_string())
            .collect()
    }
}

/// KEY=VALUE lines of an environment file.
fn env_file(name: &str) -> BTreeMap<String, String> {
    let body = std::fs::read_to_string(root().join("deploy/systemd").join(name)).unwrap();
    body.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A service started from its unit, as systemd would.
struct Service {
    unit: Unit,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    fn new(unit: &str, env: BTreeMap<String, String>, cwd: &Path, log: PathBuf) -> Service {
        Service { unit: Unit::read(unit), env, cwd: cwd.to_path_buf(), log, child: None }
    }

    fn start(&mut self) {
        let words = self.unit.command(&self.env);
        assert_eq!(words[0], "/usr/local/bin/tandem", "the units run tandem from /usr/local/bin");
        std::fs::create_dir_all(&self.cwd).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = std::process::Command::new(bin_dir().join("tandem"))
            .args(&words[1..])
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Stops it as KillMode=mixed does: KillSignal to the main process; it must be gone within
    /// TimeoutStopSec (systemd would kill what is left then).
    fn stop(&mut self) -> std::process::ExitStatus {
        assert_eq!(self.unit.get("KillSignal"), "SIGTERM");
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + self.unit.timeout();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("still running {:?} after SIGTERM:\n{}", self.unit.timeout(), self.notes());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it said: on stderr, or (an agent whose stderr is a file) in its state directory.
    fn notes(&self) -> String {
        let agent_log = self.env.get("STATE_DIR").map(|d| Path::new(d).join("agent.log"));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.log), agent_log.as_deref().map(read).unwrap_or_default())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(within: Duration, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_setting_the_units_use_is_in_their_example_environment_files() {
    for (unit, env) in [
        ("tandem-coordinator.service", "coordinator.env.example"),
        ("tandem-primary.service", "primary.env.example"),
        ("tandem-backup.service", "backup.env.example"),
    ] {
        let (unit, env) = (Unit::read(unit), env_file(env));
        for var in unit.variables() {
            assert!(env.contains_key(&var), "{var} is not in the example");
        }
        assert!(unit.timeout() <= Duration::from_secs(30));
    }
}

/// The units' lines run: a coordinator member, a primary and a backup over TLS, as the
/// deployment guide sets them up on three hosts (here one).
#[test]
fn the_units_start_stop_within_their_timeout_and_start_again() {
    require("curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs_dir = d.join("certs");
    certs(&certs_dir, &["coordinator-1", "primary", "backup1", "operator"]);
    let set = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let certs = certs_dir.to_str().unwrap().to_string();
    let coord_at = format!("127.0.0.1:{}", free_port());
    let mut coordinator = Service::new(
        "tandem-coordinator.service",
        set(&[
            ("STATE_DIR", d.join("var/coordinator").display().to_string()),
            ("LISTEN", coord_at.clone()),
            ("ID", "1".into()),
            ("PEERS", format!("1={coord_at}")),
            ("CERTS", certs.clone()),
            ("LEASE_TIMEOUT", "500ms".into()),
        ]),
        &d.join("var"),
        d.join("coordinator.log"),
    );
    let ca = certs_dir.join("ca.crt");
    let healthy = |at: &str| curl_tls(at, &ca, Some((&certs_dir, "operator")), &[], "/health").0 == "200";
    coordinator.start();
    wait_for(Duration::from_secs(20), || healthy(&coord_at), || coordinator.notes());

    let coordinators = format!("https://{coord_at}");
    let primary_at = format!("127.0.0.1:{}", free_port());
    let data = d.join("var/data");
    let mut primary = Service::new(
        "tandem-primary.service",
        set(&[
            ("GROUP", "web".into()),
            ("NAME", "primary".into()),
            ("LISTEN", primary_at.clone()),
            ("CERTS", certs.clone()),
            ("STATE_DIR", d.join("var/primary").display().to_string()),
            ("COORDINATOR", coordinators.clone()),
            ("METRICS", format!("127.0.0.1:{}", free_port())),
            ("DATA", data.display().to_string()),
            ("PROGRAM", format!("{} 1000 600", fixture("busy", &[]).display())),
        ]),
        &data,
        d.join("primary.log"),
    );
    let backup_metrics = format!("127.0.0.1:{}", free_port());
    let mut backup = Service::new(
        "tandem-backup.service",
        set(&[
            ("GROUP", "web".into()),
            ("NAME", "backup1".into()),
            ("PRIMARY", primary_at.clone()),
            ("LISTEN", format!("127.0.0.1:{}", free_port())),
            ("CERTS", certs.clone()),
            ("STATE_DIR", d.join("var/backup").display().to_string()),
            ("COORDINATOR", coordinators.clone()),
            ("METRICS", backup_metrics.clone()),
        ]),
        &d.join("var"),
        d.join("backup.log"),
    );
    primary.start();
    backup.start();
    let status = || {
        let out = tandem()
            .current_dir("/")
            .args(["status", "--json", "--group", "web", "--coordinator", &coordinators, "--certs", &certs])
            .args(["--name", "operator"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let backup_held = |s: &serde_json::Value| {
        s["groups"][0]["members"]
            .as_array()
            .and_then(|m| m.iter().find(|r| r["member"] == "backup1"))
            .and_then(|r| r["held"].as_u64())
            .unwrap_or(0)
    };
    let notes = || format!("{}\n{}\n{}", coordinator.notes(), primary.notes(), backup.notes());
    wait_for(Duration::from_secs(60), || backup_held(&status()) >= 1000, || format!("{}\n{}", status(), notes()));

    // The coordinator restarts; the agents carry on with it.
    coordinator.stop();
    coordinator.start();
    wait_for(Duration::from_secs(20), || healthy(&coord_at), || coordinator.notes());

    // The backup restarts and resumes from its own log.
    backup.stop();
    let held_before = backup_held(&status());
    backup.start();
    wait_for(
        Duration::from_secs(30),
        || tandem_tests::http::get(&backup_metrics, "/ready").is_ok_and(|(c, _)| c == 200),
        || {
            let ready = tandem_tests::http::get(&backup_metrics, "/ready");
            format!("the backup did not come back ({ready:?}):\n{}", backup.notes())
        },
    );
    assert!(backup.notes().contains("following the primary"), "{}", backup.notes());
    assert!(backup_held(&status()) >= held_before);

    // The primary stops within its timeout, its program with it; it is not restarted (the
    // coordinator names a backup instead).
    assert_eq!(primary.unit.get("Restart"), "no");
    primary.stop();
    backup.stop();
    coordinator.stop();
}
