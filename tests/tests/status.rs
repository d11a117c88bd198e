//! The operator's view: `tandem status` with and without a coordinator, agents' and members'
//! `/metrics` read with a Prometheus parser, `/health` without a quorum, and the progress of a
//! catch-up on a terminal and in a log.

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::http::get;
use tandem_tests::*;

/// One test at a time: each runs a group of agents, and the machine is small.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Processes killed when the test ends, however it ends.
#[derive(Default)]
struct Processes(Vec<Child>);

impl Processes {
    fn add(&mut self, c: Child) {
        self.0.push(c);
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Group {
    dir: tempfile::TempDir,
    certs: PathBuf,
    port: u16,
}

impl Group {
    fn new() -> Group {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        certs(&certs_dir, &["primary", "backup1"]);
        Group { dir, certs: certs_dir, port: free_port() }
    }

    /// The primary's working directory (its data).
    fn p(&self) -> PathBuf {
        self.dir.path().join("p")
    }

    fn primary_state(&self) -> PathBuf {
        self.dir.path().join("p.state")
    }

    fn backup_state(&self) -> PathBuf {
        self.dir.path().join("b").join("tandem-state")
    }

    /// `tandem primary` running `busy EVENTS SECONDS`, its stderr to `stderr`.
    fn primary(&self, extra: &[&str], events: u64, stderr: Stdio) -> Child {
        std::fs::create_dir_all(self.p()).unwrap();
        tandem()
            .current_dir(self.p())
            .args(["primary", "--group", "g", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--name", "primary", "--certs"])
            .arg(&self.certs)
            .arg("--state-dir")
            .arg(self.primary_state())
            .args(extra)
            .arg("--")
            .arg(fixture("busy", &[]))
            .args([&events.to_string(), "120"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    fn backup(&self, extra: &[&str], env: &[(&str, &str)]) -> Child {
        let b = self.dir.path().join("b");
        std::fs::create_dir_all(&b).unwrap();
        let err = std::fs::File::create(self.dir.path().join("backup.err")).unwrap();
        tandem()
            .current_dir(&b)
            .envs(env.iter().copied())
            .args(["backup", "--group", "g", "--primary", &format!("127.0.0.1:{}", self.port)])
            .args(["--name", "backup1", "--certs"])
            .arg(&self.certs)
            .arg("--state-dir")
            .arg(self.backup_state())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap()
    }

    /// What the agents wrote (their notes files, and what they said on stderr).
    fn notes(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_default();
        format!(
            "primary:\n{}{}\nbackup:\n{}{}",
            read(self.dir.path().join("primary.err")),
            read(self.primary_state().join("agent.log")),
            read(self.dir.path().join("backup.err")),
            read(self.backup_state().join("agent.log"))
        )
    }

    /// Waits until the program's burst of events is over.
    fn wait_burst(&self, within: Duration) {
        wait_for(within, || self.p().join("burst-done").exists(), || format!("no burst\n{}", self.notes()));
    }
}

fn wait_for(within: Duration, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tandem status --json ARGS`.
fn status(args: &[&str]) -> Result<Value, String> {
    let out = tandem().current_dir("/").args(["status", "--json"]).args(args).output().unwrap();
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out.stdout)))
}

/// The row of `member` in group `g`.
fn row<'a>(s: &'a Value, member: &str) -> Option<&'a Value> {
    s["groups"].as_array()?.iter().find(|g| g["group"] == "g")?["members"]
        .as_array()?
        .iter()
        .find(|m| m["member"] == member)
}

/// A scrape of `/metrics` at `addr`, read by a Prometheus text parser.
fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (code, body) = get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("/metrics is not Prometheus text ({e}):\n{body}"))
}

/// The value of sample `name` (with `label`=`value` when given), summed over matching samples.
fn sample(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn wait_answering(addr: &str) {
    wait_for(Duration::from_secs(30), || get(addr, "/health").is_ok(), || format!("nothing answers on {addr}"));
}

/// Once the primary is idle, a backup's lag is 0 at the next look: polls until `held` has
/// stood still for a second, then expects lag 0 within one report interval.
fn lag_falls_to_zero(look: impl Fn() -> Result<Value, String>, g: &Group) -> Value {
    let mut last = (u64::MAX, Instant::now());
    wait_for(
        Duration::from_secs(60),
        || {
            let held = look().ok().and_then(|s| row(&s, "primary").and_then(|r| r["held"].as_u64()));
            match held {
                Some(h) if h == last.0 => last.1.elapsed() >= Duration::from_secs(1),
                Some(h) => {
                    last = (h, Instant::now());
                    false
                }
                None => false,
            }
        },
        || format!("the primary's position never stood still: {:?}\n{}", look(), g.notes()),
    );
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let s = look().unwrap();
        let lag = row(&s, "backup1").and_then(|r| r["lag_events"].as_u64());
        if lag == Some(0) {
            return s;
        }
        assert!(Instant::now() < deadline, "the idle primary's backup still lags: {s}\n{}", g.notes());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_a_coordinator_status_comes_from_the_agents_and_metrics_count_the_work() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let g = Group::new();
    let mut running = Processes::default();
    let (pm, bm) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let perr = std::fs::File::create(g.dir.path().join("primary.err")).unwrap();
    running.add(g.primary(&["--wait-for-backups", "1", "--metrics", &pm], 300_000, perr.into()));
    wait_answering(&pm);
    // Before the program starts: nothing recorded yet.
    let before = scrape(&pm);
    assert_eq!(sample(&before, "tandem_events_recorded_total", None), 0.0);
    assert_eq!(get(&pm, "/health").unwrap().0, 200);
    running.add(g.backup(&["--metrics", &bm], &[]));
    g.wait_burst(Duration::from_secs(60));

    let (ps, bs) = (g.primary_state(), g.backup_state());
    let look = || status(&["--state-dir", ps.to_str().unwrap(), "--state-dir", bs.to_str().unwrap()]);
    let s = lag_falls_to_zero(look, &g);
    let (p, b) = (row(&s, "primary").unwrap(), row(&s, "backup1").unwrap());
    assert_eq!((p["role"].as_str(), b["role"].as_str()), (Some("primary"), Some("backup")), "{s}");
    assert_eq!(s["groups"][0]["source"], "agents", "{s}");
    assert!(p["held"].as_u64().unwrap() >= 300_000, "{s}");
    assert_eq!(b["held"], p["held"], "{s}");
    assert_eq!((b["lag_bytes"].as_u64(), b["lag_seconds"].as_f64()), (Some(0), Some(0.0)), "{s}");
    assert!(b["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{s}");
    // The primary alone knows its whole group.
    let alone = status(&["--state-dir", ps.to_str().unwrap()]).unwrap();
    assert!(row(&alone, "backup1").is_some(), "{alone}");

    // The counters moved with the burst.
    let after = scrape(&pm);
    assert!(sample(&after, "tandem_events_recorded_total", None) >= 300_000.0);
    let to_b1 = Some(("backup", "backup1"));
    assert!(sample(&after, "tandem_batches_sent_total", to_b1) > 0.0);
    assert!(sample(&after, "tandem_bytes_sent_total", to_b1) > 0.0);
    assert!(sample(&after, "tandem_acks_total", to_b1) > 0.0);
    assert_eq!(sample(&after, "tandem_backup_lag_events", to_b1), 0.0);
    assert!(sample(&after, "tandem_output_wait_seconds_count", None) > 0.0);
    let backup = scrape(&bm);
    assert!(sample(&backup, "tandem_batches_received_total", None) > 0.0);
    assert!(sample(&backup, "tandem_fsync_seconds_count", None) > 0.0);
    assert!(sample(&backup, "tandem_events_replayed_total", None) > 0.0);
    assert_eq!(get(&bm, "/ready").unwrap().0, 200, "{}", g.notes());

    // The table, as an operator reads it.
    let out = tandem().current_dir("/").args(["status", "--state-dir"]).arg(&ps).output().unwrap();
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(table.contains("group g: epoch 1, primary primary (from the agents)"), "{table}");
    assert!(table.contains("MEMBER") && table.contains("backup1"), "{table}");
}

#[test]
fn with_a_coordinator_status_shows_lease_reports_and_lag_and_the_member_s_metrics_move() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let g = Group::new();
    let mut running = Processes::default();
    let coord = format!("127.0.0.1:{}", free_port());
    running.add(
        tandem()
            .current_dir("/")
            .args(["coordinator", "--state-dir"])
            .arg(g.dir.path().join("coordinator"))
            .args(["--listen", &coord])
            .stderr(std::fs::File::create(g.dir.path().join("coordinator.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(
        Duration::from_secs(20),
        || get(&coord, "/health").is_ok_and(|(code, _)| code == 200),
        || "the coordinator is not healthy".into(),
    );
    let perr = std::fs::File::create(g.dir.path().join("primary.err")).unwrap();
    running.add(g.primary(&["--wait-for-backups", "1", "--coordinator", &coord], 200_000, perr.into()));
    running.add(g.backup(&["--coordinator", &coord], &[]));
    g.wait_burst(Duration::from_secs(60));

    let look = || status(&["--coordinator", &coord, "--group", "g"]);
    let s = lag_falls_to_zero(look, &g);
    assert_eq!(s["groups"][0]["source"], "coordinator", "{s}");
    let (p, b) = (row(&s, "primary").unwrap(), row(&s, "backup1").unwrap());
    assert_eq!((p["role"].as_str(), b["role"].as_str()), (Some("primary"), Some("backup")), "{s}");
    assert!(p["lease_left_seconds"].as_f64().is_some_and(|l| l > 0.0), "{s}");
    for r in [p, b] {
        assert!(r["last_report_seconds"].as_f64().is_some_and(|t| t < 2.0), "{s}");
    }
    // A backup is known by its host's address, not by its state directory's name.
    let address = b["address"].as_str().unwrap();
    assert!(address.parse::<std::net::IpAddr>().is_ok(), "{s}");
    // Every group without --group; and on this host the agents add their own state.
    let all = status(&["--coordinator", &coord]).unwrap();
    assert!(row(&all, "backup1").is_some(), "{all}");

    // Reports keep coming from idle agents: the member's counters move.
    let first = scrape(&coord);
    std::thread::sleep(Duration::from_millis(2500));
    let second = scrape(&coord);
    let reports = |s| sample(s, "tandem_coordinator_reports_total", None);
    assert!(reports(&second) > reports(&first), "reports did not move");
    assert!(sample(&second, "tandem_coordinator_lease_renewals_total", None) > 0.0);
    assert_eq!(sample(&second, "tandem_coordinator_raft_role", Some(("role", "leader"))), 1.0);
    assert_eq!(sample(&second, "tandem_coordinator_member_lag_events", Some(("member", "backup1"))), 0.0);
}

/// Three members on this host, each at its own port.
fn three_members(dir: &Path, running: &mut Processes) -> Vec<String> {
    let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let peers = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    for (i, addr) in addrs.iter().enumerate() {
        running.add(
            tandem()
                .current_dir("/")
                .args(["coordinator", "--state-dir"])
                .arg(dir.join(format!("m{}", i + 1)))
                .args(["--listen", addr, "--id", &(i + 1).to_string(), "--peers", &peers])
                .stderr(std::fs::File::create(dir.join(format!("m{}.err", i + 1))).unwrap())
                .spawn()
                .unwrap(),
        );
    }
    addrs
}

#[test]
fn a_member_without_a_quorum_is_not_healthy() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut running = Processes::default();
    let addrs = three_members(dir.path(), &mut running);
    let healthy = |a: &str| get(a, "/health").is_ok_and(|(code, _)| code == 200);
    wait_for(
        Duration::from_secs(30),
        || addrs.iter().all(|a| healthy(a)),
        || "the members never became healthy".into(),
    );
    assert!(addrs.iter().all(|a| get(a, "/ready").is_ok_and(|(code, _)| code == 200)));
    // Two of three stop: the survivor has no majority, whichever it was.
    for c in running.0.iter_mut().skip(1) {
        let _ = c.kill();
        let _ = c.wait();
    }
    let survivor = &addrs[0];
    wait_for(
        Duration::from_secs(10),
        || get(survivor, "/health").is_ok_and(|(code, _)| code == 503),
        || format!("still healthy without a quorum: {:?}", get(survivor, "/health")),
    );
    let (_, body) = get(survivor, "/health").unwrap();
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["healthy"], false, "{body}");
    assert!(health["reason"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
    let (_, status) = get(survivor, "/v1/status").unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["healthy"], false, "{status}");
    assert_eq!(sample(&scrape(survivor), "tandem_coordinator_healthy", None), 0.0);
}

/// A late backup catching up two million events: the primary draws a bar on its terminal, and
/// the backup, whose notes go to its log, writes progress lines there (every 50ms here, with
/// the knob `TANDEM_PROGRESS_EVERY`, as its replay of two million events takes a fraction of a
/// second; 5s by default). The backup must then follow on: it holds everything and has not
/// diverged.
#[test]
fn a_catch_up_shows_a_bar_on_a_terminal_and_lines_in_a_log() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let g = Group::new();
    let mut running = Processes::default();
    let pty = nix::pty::openpty(None, None).unwrap();
    // Only as the agent's stderr: a descriptor the program inherits would shift its own numbers,
    // and a backup's program would diverge from it.
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).unwrap();
    }
    let primary = g.primary(&[], 2_000_000, Stdio::from(pty.slave.try_clone().unwrap()));
    drop(pty.slave);
    running.add(primary);
    let mut master = std::fs::File::from(pty.master);
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let shown = shown.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once nothing holds the terminal.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    g.wait_burst(Duration::from_secs(120));
    running.add(g.backup(&[], &[("TANDEM_PROGRESS_EVERY", "50ms")]));
    let log = g.backup_state().join("agent.log");
    let bs = g.backup_state();
    // The last line says the replay caught up.
    let caught_up = || {
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.lines().any(|l| l.contains("replaying the primary's events: ") && l.contains(" in ")))
    };
    wait_for(Duration::from_secs(180), caught_up, || format!("the backup did not catch up\n{}", g.notes()));
    let s = status(&["--state-dir", bs.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}\n{}", g.notes()));
    assert!(row(&s, "backup1").is_some_and(|r| r["held"].as_u64() >= Some(2_000_000) && r["state"] == "ok"), "{s}");
    let terminal = text(&shown.lock().unwrap());
    assert!(terminal.contains("tandem: catching up backup1 ["), "no bar on the terminal:\n{terminal}");
    assert!(terminal.contains("events/s") && terminal.contains(" left"), "{terminal}");
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    let progress: Vec<&str> = lines.lines().filter(|l| l.contains("replaying the primary's events: ")).collect();
    let during: Vec<&&str> = progress.iter().filter(|l| l.contains("events/s") && l.contains('%')).collect();
    assert!(during.len() >= 2, "fewer than two progress lines in {}:\n{lines}", log.display());
}
