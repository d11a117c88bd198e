//! Replication between separate hosts: network namespaces joined by a bridge, a primary and
//! backups each on its own host, links delayed, lossy and cut. Needs root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tandem_tests::lan::{kill_host, Lan};
use tandem_tests::*;

/// The agents' QUIC port on every host (each host has a network stack of its own).
const AGENT_PORT: u16 = 7400;
const REDIS_PORT: u16 = 6379;

/// One test at a time: each runs a primary and replaying backups on this machine's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Cluster {
    lan: Lan,
    dir: tempfile::TempDir,
    /// The port backups dial on the primary's host (the agent's, or an impairing relay's).
    dial: u16,
    /// Hosts that are not the group's backups.
    strangers: usize,
}

impl Cluster {
    fn new(hosts: &[&str]) -> Cluster {
        // TANDEM_TEST_KEEP=1 keeps the hosts' files (logs, state) for a look after a failure.
        let keep = std::env::var_os("TANDEM_TEST_KEEP").is_some();
        let dir = tempfile::Builder::new().disable_cleanup(keep).tempdir().unwrap();
        let members: Vec<&str> = hosts.iter().map(|h| if *h == "p" { "primary" } else { h }).collect();
        certs(&dir.path().join("certs"), &members);
        for h in hosts {
            std::fs::create_dir_all(dir.path().join(h)).unwrap();
        }
        Cluster { lan: Lan::new(hosts), dir, dial: AGENT_PORT, strangers: 0 }
    }

    fn home(&self, host: &str) -> PathBuf {
        self.dir.path().join(host)
    }

    fn primary_at(&self) -> SocketAddr {
        (self.lan.host("p").addr, self.dial).into()
    }

    fn agent(&self, host: &str, certs: &Path, args: &[String], program: &[String]) -> Child {
        self.lan
            .command(host, bin_dir().join("tandem"))
            .current_dir(self.home(host))
            .args(args)
            .arg("--name")
            .arg(if host == "p" { "primary" } else { host })
            .arg("--certs")
            .arg(certs)
            .arg("--state-dir")
            .arg(self.home(host).join("state"))
            .args(program)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The primary, starting its program once every other host's backup is connected.
    fn primary(&self, mode: &str, program: &[String]) -> Child {
        let backups = (self.lan.hosts.len() - 1 - self.strangers).to_string();
        let args = ["primary", "--group", "g", "--mode", mode, "--wait-for-backups", &backups, "--listen"];
        let mut args = args.map(String::from).to_vec();
        args.push(format!("{}:{AGENT_PORT}", self.lan.host("p").addr));
        let mut program = program.to_vec();
        program.insert(0, "--".into());
        self.agent("p", &self.dir.path().join("certs"), &args, &program)
    }

    fn backup_with(&self, host: &str, certs: &Path) -> Child {
        let args = ["backup", "--group", "g", "--primary", &self.primary_at().to_string()].map(String::from);
        self.agent(host, certs, &args, &[])
    }

    fn backup(&self, host: &str) -> Child {
        self.backup_with(host, &self.dir.path().join("certs"))
    }

    fn log(&self, host: &str) -> Vec<LoggedEvent> {
        read_log(&self.home(host).join("state/log.tlog")).unwrap_or_else(|e| panic!("{host}'s log: {e}"))
    }

    /// The backup holds exactly the primary's events: none lost, none twice, in order.
    fn assert_same_log(&self, backup: &str) {
        let (p, b) = (self.log("p"), self.log(backup));
        assert!(!p.is_empty());
        let seqs: Vec<eventlog::Seq> = b.iter().map(|e| e.header.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].next()), "{backup}'s log has gaps or repeats");
        assert_eq!(b.len(), p.len(), "{backup} holds {} events, the primary wrote {}", b.len(), p.len());
        for (x, y) in p.iter().zip(&b) {
            assert_eq!((x.header, &x.payload), (y.header, &y.payload), "{backup}'s event {} differs", x.header.seq);
        }
    }

    fn redis_cli(&self, host: &str, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.lan.host(host).addr.to_string(), "-p", &REDIS_PORT.to_string()])
            .args(args)
            .output()
            .unwrap();
        text(&out.stdout).trim().to_string()
    }

    fn wait_for_redis(&self, host: &str, within: Duration) {
        assert!(self.redis_answers(host, within), "redis on {host} did not answer within {within:?}");
    }

    /// Whether redis on `host` answers PING within `within`.
    fn redis_answers(&self, host: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.redis_cli(host, &["ping"]) == "PONG" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn benchmark(&self, requests: u32) -> Child {
        Command::new("redis-benchmark")
            .args(["-h", &self.lan.host("p").addr.to_string(), "-p", &REDIS_PORT.to_string()])
            .args(["-c", "50", "-n", &requests.to_string(), "-r", "100000", "-t", "set,incr,lpush,sadd", "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Promotes the backup on `host`: what it said, or why not (and the backup's own story).
    fn promote(&self, host: &str, backup: Child) -> (String, Child) {
        let o = tandem().arg("promote").arg("--state-dir").arg(self.home(host).join("state")).output().unwrap();
        if !o.status.success() {
            let (_, berr) = finish(backup, Duration::from_secs(5));
            panic!(
                "promoting {host}: {}
{host}:
{berr}",
                text(&o.stderr)
            );
        }
        (text(&o.stdout), backup)
    }
}

/// Waits for `child` (killing it after `within`) and returns its output and stderr.
fn finish(child: Child, within: Duration) -> (Output, String) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(within).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    let err = text(&out.stderr);
    (out, err)
}

fn stderr_of(child: Child) -> (Output, String) {
    finish(child, Duration::from_secs(120))
}

/// Waits for redis-benchmark; if it failed, stops the agents and fails with what each said.
fn benchmark_done(load: Child, agents: Vec<(&str, Child)>) -> Vec<Child> {
    let (out, err) = stderr_of(load);
    if out.status.success() {
        return agents.into_iter().map(|(_, child)| child).collect();
    }
    let mut story = format!("redis-benchmark failed ({}): {err}{}", out.status, text(&out.stdout));
    for (name, child) in agents {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let (_, said) = finish(child, Duration::from_secs(5));
        story.push_str(&format!("\n{name}:\n{said}"));
    }
    panic!("{story}");
}

fn redis_server() -> Vec<String> {
    let port = REDIS_PORT.to_string();
    ["redis-server", "--port", &port, "--save", "", "--protected-mode", "no", "--enable-debug-command", "yes"]
        .map(String::from)
        .to_vec()
}

/// The primary runs a multi-threaded fixture to its end; every backup follows it to the end
/// with the same transcript, and holds exactly the primary's log.
fn fixture_on_every_backup(c: &Cluster, flags: &[&str], backups: &[&str]) {
    let program = fixture("mt_record", flags);
    let child = fixture("mt_child", flags);
    let running: Vec<(&str, Child)> = backups.iter().map(|b| (*b, c.backup(b))).collect();
    let args = [program.to_str().unwrap(), "transcript", child.to_str().unwrap(), "child-out", "100"];
    let (primary, perr) = stderr_of(c.primary("sync", &args.map(String::from)));
    assert!(primary.status.success(), "primary:\n{perr}");
    for (b, child) in running {
        let (out, err) = stderr_of(child);
        assert!(out.status.success() && err.contains("holds all of it"), "{b}:\n{err}\nprimary:\n{perr}");
        let view = backup_view(&c.home(b).join("state"), &c.home(b).join("merged"));
        for file in ["transcript", "child-out"] {
            let (x, y) = (std::fs::read(c.home("p").join(file)).unwrap(), std::fs::read(view.join(file)).unwrap());
            assert_eq!(text(&x), text(&y), "{b}'s {file} differs");
        }
        c.assert_same_log(b);
    }
}

/// redis-server under load on the primary, with `during` run while the load goes on; then the
/// primary's host dies, every backup is promoted and must answer with the primary's digest.
fn redis_on_every_backup(c: &Cluster, backups: &[&str], requests: u32, during: impl FnOnce()) -> Vec<String> {
    let running: Vec<(&str, Child)> = backups.iter().map(|b| (*b, c.backup(b))).collect();
    let primary = c.primary("sync", &redis_server());
    c.wait_for_redis("p", Duration::from_secs(20));
    let load = c.benchmark(requests);
    during();
    let mut agents = vec![("primary", primary)];
    agents.extend(running);
    let mut agents = benchmark_done(load, agents).into_iter();
    let primary = agents.next().expect("the primary was handed in");
    let running: Vec<(&str, Child)> = backups.iter().copied().zip(agents).collect();
    assert_eq!(c.redis_cli("p", &["set", "last", "word"]), "OK");
    let digest = c.redis_cli("p", &["debug", "digest"]);
    assert_eq!(digest.len(), 40, "{digest}");

    kill_host(&c.lan.host("p").ns);
    let (_, perr) = stderr_of(primary);
    let mut logs = Vec::new();
    for (b, child) in running {
        let (said, child) = c.promote(b, child);
        assert!(said.contains("goes live after event"), "{said}");
        c.wait_for_redis(b, Duration::from_secs(60));
        let theirs = c.redis_cli(b, &["debug", "digest"]);
        let word = c.redis_cli(b, &["get", "last"]);
        kill_host(&c.lan.host(b).ns);
        let (_, berr) = stderr_of(child);
        assert_eq!(theirs, digest, "{b} took over with other data\n{b}:\n{berr}\nprimary:\n{perr}");
        assert_eq!(word, "word");
        logs.push(berr);
    }
    logs
}

#[test]
fn two_backups_on_their_own_hosts_hold_what_the_primary_did() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require("redis-server");
    let c = Cluster::new(&["p", "b1", "b2"]);
    fixture_on_every_backup(&c, &[], &["b1", "b2"]);
    for h in ["p", "b1", "b2"] {
        std::fs::remove_dir_all(c.home(h).join("state")).unwrap();
    }
    redis_on_every_backup(&c, &["b1", "b2"], 30_000, || {});
}

#[test]
fn delay_loss_and_a_cut_link_lose_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require("redis-server");
    let mut c = Cluster::new(&["p", "b1", "b2"]);
    c.dial = c.lan.impair("p", AGENT_PORT, 20, 2.0);
    fixture_on_every_backup(&c, &["-D_FORTIFY_SOURCE=2", "-O2"], &["b1", "b2"]);
    for h in ["p", "b1", "b2"] {
        std::fs::remove_dir_all(c.home(h).join("state")).unwrap();
    }
    let logs = redis_on_every_backup(&c, &["b1", "b2"], 20_000, || {
        std::thread::sleep(Duration::from_secs(1));
        c.lan.set_link("b1", false);
        std::thread::sleep(Duration::from_secs(3));
        c.lan.set_link("b1", true);
    });
    let resumed = logs[0].matches("following the primary").count();
    assert!(resumed >= 2, "b1 never resumed after its link was cut:\n{}", logs[0]);
}

/// A request on a raw connection; the reply if one arrives within `within`.
fn ask(conn: &mut TcpStream, request: &str, within: Duration) -> Option<String> {
    conn.write_all(request.as_bytes()).unwrap();
    conn.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Ok(n) if n > 0 => Some(text(&buf[..n])),
        _ => None,
    }
}

#[test]
fn sync_mode_releases_no_reply_the_backup_does_not_hold() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require("redis-server");
    let c = Cluster::new(&["p", "b1"]);
    let backup = c.backup("b1");
    let primary = c.primary("sync", &redis_server());
    c.wait_for_redis("p", Duration::from_secs(20));
    let mut conn = TcpStream::connect((c.lan.host("p").addr, REDIS_PORT)).unwrap();
    assert_eq!(ask(&mut conn, "SET k before\r\n", Duration::from_secs(5)).as_deref(), Some("+OK\r\n"));

    c.lan.set_link("b1", false);
    let cut_at = Instant::now();
    let held = ask(&mut conn, "SET k during\r\n", Duration::from_secs(4));
    assert_eq!(held, None, "the primary replied while its only backup was cut off");
    c.lan.set_link("b1", true);
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(text(&buf[..n]), "+OK\r\n");
    let waited = cut_at.elapsed();
    assert!(waited >= Duration::from_secs(4), "{waited:?}");

    // The primary dies at once: the backup's replay was starved for the whole cut, and must not
    // count that time against the resumed session's first events.
    kill_host(&c.lan.host("p").ns);
    let (_, perr) = stderr_of(primary);
    let (_, backup) = c.promote("b1", backup);
    let live = c.redis_answers("b1", Duration::from_secs(30));
    let value = c.redis_cli("b1", &["get", "k"]);
    kill_host(&c.lan.host("b1").ns);
    let (_, berr) = stderr_of(backup);
    assert!(live, "redis on b1 did not answer after the promotion\nb1:\n{berr}\nprimary:\n{perr}");
    assert_eq!(value, "during", "primary:\n{perr}");
}

#[test]
fn strangers_and_garbage_are_refused_while_the_good_backup_goes_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require("redis-server");
    let mut c = Cluster::new(&["p", "b1", "x"]);
    c.strangers = 1;
    let theirs = c.dir.path().join("other-certs");
    certs(&theirs, &["x"]);
    let good = c.backup("b1");
    let primary = c.primary("sync", &redis_server());
    c.wait_for_redis("p", Duration::from_secs(20));
    let load = c.benchmark(20_000);

    let stranger = c.backup_with("x", &theirs);
    let (out, serr) = stderr_of(stranger);
    assert_eq!(out.status.code(), Some(125), "the stranger:\n{serr}");
    assert!(serr.contains("refused") && serr.contains("certificate"), "the stranger:\n{serr}");

    let garbage = c
        .lan
        .command("x", bin_dir().join("examples/garbage_peer"))
        .arg(c.dir.path().join("certs"))
        .arg("x")
        .arg(c.primary_at().to_string())
        .output()
        .unwrap();
    assert!(garbage.status.success(), "{}\n{}", text(&garbage.stdout), text(&garbage.stderr));
    assert!(text(&garbage.stdout).contains("bad frame"), "{}", text(&garbage.stdout));

    let [primary, good] = <[Child; 2]>::try_from(benchmark_done(load, vec![("primary", primary), ("b1", good)]))
        .expect("two agents handed in");
    let digest = c.redis_cli("p", &["debug", "digest"]);
    kill_host(&c.lan.host("p").ns);
    let (_, perr) = stderr_of(primary);
    assert!(perr.contains("refused a peer at the handshake"), "primary:\n{perr}");
    assert!(perr.contains("member=x") && perr.contains("bad frame"), "primary:\n{perr}");
    let (_, good) = c.promote("b1", good);
    c.wait_for_redis("b1", Duration::from_secs(60));
    assert_eq!(c.redis_cli("b1", &["debug", "digest"]), digest, "primary:\n{perr}");
    kill_host(&c.lan.host("b1").ns);
    let _ = stderr_of(good);
}

/// The coordinator on host `c`, one member (over HTTPS with the cluster's certificates when
/// `tls`); returns it and the address agents are given.
fn start_coordinator(c: &Cluster, tls: bool) -> (Child, String) {
    let addr = format!("{}:7500", c.lan.host("c").addr);
    let mut cmd = c.lan.command("c", bin_dir().join("tandem"));
    cmd.args(["coordinator", "--state-dir"]).arg(c.home("c").join("coordinator")).args(["--listen", &addr]);
    if tls {
        cmd.arg("--certs").arg(c.dir.path().join("certs")).args(["--name", "c"]);
    }
    let child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let given = if tls { format!("https://{addr}") } else { addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !coordinator_get(c, &given, "/v1/status").is_some_and(|b| b["leader"] == 1) {
        assert!(Instant::now() < deadline, "the coordinator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, given)
}

/// A GET to the coordinator at `addr` (`https://` with host c's certificate, through curl).
fn coordinator_get(c: &Cluster, addr: &str, path: &str) -> Option<serde_json::Value> {
    let body = match addr.strip_prefix("https://") {
        None => match tandem_tests::http::get(addr, path) {
            Ok((200, body)) => body,
            _ => return None,
        },
        Some(bare) => {
            let certs = c.dir.path().join("certs");
            match tandem_tests::http::curl_tls(bare, &certs.join("ca.crt"), Some((&certs, "c")), &[], path) {
                (code, body) if code == "200" => body,
                _ => return None,
            }
        }
    };
    serde_json::from_str(&body).ok()
}

/// redis-server as the primary on `p` and its backup on `b1`, both steered by the coordinator.
fn steered_redis(c: &Cluster, mode: &str, coordinator: &str) -> (Child, Child) {
    let certs = c.dir.path().join("certs");
    let args = ["backup", "--group", "g", "--primary", &c.primary_at().to_string(), "--coordinator", coordinator];
    let backup = c.agent("b1", &certs, &args.map(String::from), &[]);
    let listen = format!("{}:{AGENT_PORT}", c.lan.host("p").addr);
    let args = ["primary", "--group", "g", "--mode", mode, "--wait-for-backups", "1", "--listen", &listen];
    let mut args = args.map(String::from).to_vec();
    args.extend(["--coordinator".to_string(), coordinator.to_string()]);
    let mut program = redis_server();
    program.insert(0, "--".into());
    let primary = c.agent("p", &certs, &args, &program);
    c.wait_for_redis("p", Duration::from_secs(20));
    (primary, backup)
}

fn coordinator_group(c: &Cluster, addr: &str) -> serde_json::Value {
    coordinator_get(c, addr, "/v1/groups/g").expect("the coordinator answers for group g")
}

#[test]
fn the_coordinator_promotes_the_backup_when_the_primary_host_dies() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require("redis-server");
    let mut c = Cluster::new(&["p", "b1", "c"]);
    c.strangers = 1;
    // The coordinator and the agents' calls to it over HTTPS with the cluster's certificates.
    require("curl");
    let (coordinator, at) = start_coordinator(&c, true);
    let (primary, backup) = steered_redis(&c, "sync", &at);
    let load = c.benchmark(5_000);
    let [primary, backup] = <[Child; 2]>::try_from(benchmark_done(load, vec![("primary", primary), ("b1", backup)]))
        .expect("two agents handed in");
    assert_eq!(c.redis_cli("p", &["set", "last", "word"]), "OK");
    let digest = c.redis_cli("p", &["debug", "digest"]);
    let before = coordinator_group(&c, &at);
    assert_eq!((before["epoch"].as_u64(), before["primary"].as_str()), (Some(1), Some("primary")), "{before}");

    // No operator: the primary's lease lapses, the coordinator names the backup, which goes live.
    kill_host(&c.lan.host("p").ns);
    let (_, perr) = stderr_of(primary);
    c.wait_for_redis("b1", Duration::from_secs(30));
    let after = coordinator_group(&c, &at);
    assert_eq!((after["epoch"].as_u64(), after["primary"].as_str()), (Some(2), Some("b1")), "{after}");
    let theirs = c.redis_cli("b1", &["debug", "digest"]);
    let word = c.redis_cli("b1", &["get", "last"]);
    kill_host(&c.lan.host("b1").ns);
    let (_, berr) = stderr_of(backup);
    assert_eq!(theirs, digest, "b1 took over with other data\nb1:\n{berr}\nprimary:\n{perr}");
    assert_eq!(word, "word");
    assert!(berr.contains("the coordinator named this member primary"), "{berr}");
    kill_host(&c.lan.host("c").ns);
    let _ = stderr_of(coordinator);
}

#[test]
fn a_primary_cut_off_from_the_coordinator_fences_itself_while_its_backup_takes_over() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require("redis-server");
    let mut c = Cluster::new(&["p", "b1", "c"]);
    c.strangers = 1;
    let (coordinator, at) = start_coordinator(&c, false);
    // Async mode: outputs leave without waiting for the backup, so only the fence holds them.
    let (primary, backup) = steered_redis(&c, "async", &at);
    assert_eq!(c.redis_cli("p", &["set", "k", "before"]), "OK");
    // Async mode lets the backup lag: cut only once it holds what the primary recorded (and has
    // reported since the SET: positions reach the coordinator every 100 ms).
    std::thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let g = coordinator_group(&c, &at);
        let (p, b) = (g["members"]["primary"]["held"].as_u64(), g["members"]["b1"]["held"].as_u64());
        if p.is_some_and(|p| p > 0 && b >= Some(p)) {
            break;
        }
        assert!(Instant::now() < deadline, "the backup does not catch up: {g}");
        std::thread::sleep(Duration::from_millis(50));
    }

    c.lan.set_link("p", false);
    c.wait_for_redis("b1", Duration::from_secs(30));
    assert_eq!(c.redis_cli("b1", &["get", "k"]), "before");
    // A client next to the old primary gets nothing more from it.
    let mut local = c.lan.command("p", "redis-cli");
    local.args(["-p", &REDIS_PORT.to_string(), "set", "k", "after"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (out, _) = finish(local.spawn().unwrap(), Duration::from_secs(3));
    assert!(!text(&out.stdout).contains("OK"), "the fenced primary replied: {}", text(&out.stdout));

    kill_host(&c.lan.host("p").ns);
    let (_, perr) = stderr_of(primary);
    assert!(perr.contains("the coordinator ended this primary's epoch"), "{perr}");
    kill_host(&c.lan.host("b1").ns);
    let _ = stderr_of(backup);
    kill_host(&c.lan.host("c").ns);
    let _ = stderr_of(coordinator);
}

/// A backup named primary that cannot listen where the primary did (another process holds the
/// port on its host) stops its program and exits naming the address; its lease lapses and the
/// coordinator names the other backup, which takes over with everything the first primary said.
#[test]
fn a_backup_that_cannot_go_live_gives_way_to_another() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require("redis-server");
    require("python3");
    let mut c = Cluster::new(&["p", "b1", "b2", "c"]);
    c.strangers = 1;
    let (coordinator, at) = start_coordinator(&c, false);
    let certs = c.dir.path().join("certs");
    let backup_args = |_: &str| {
        ["backup", "--group", "g", "--primary", &c.primary_at().to_string(), "--coordinator", &at].map(String::from)
    };
    let b1 = c.agent("b1", &certs, &backup_args("b1"), &[]);
    let b2 = c.agent("b2", &certs, &backup_args("b2"), &[]);
    let listen = format!("{}:{AGENT_PORT}", c.lan.host("p").addr);
    let args = ["primary", "--group", "g", "--wait-for-backups", "2", "--listen", &listen, "--coordinator", &at];
    let mut program = redis_server();
    program.insert(0, "--".into());
    let primary = c.agent("p", &certs, &args.map(String::from), &program);
    c.wait_for_redis("p", Duration::from_secs(20));
    assert_eq!(c.redis_cli("p", &["set", "k", "said"]), "OK");

    // The port redis listens on is taken on b1's host.
    let squat = "import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', 6379))\ns.listen()\nprint('bound', flush=True)\ntime.sleep(600)";
    let mut squatter =
        c.lan.command("b1", "python3").args(["-c", squat]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    // Only once it holds the port: a loaded machine can take longer than any fixed wait.
    let mut said = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(squatter.stdout.take().unwrap()), &mut said).unwrap();
    assert_eq!(said.trim(), "bound", "the squatter did not bind the port");
    let request = serde_json::json!({ "id": "to-b1", "command": { "op": "failover", "group": "g", "to": "b1" } });
    let (status, body) = tandem_tests::http::post(&at, "/v1/write", &request.to_string()).unwrap();
    assert_eq!(status, 200, "{body}");

    let (out, b1err) = finish(b1, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(125), "b1:\n{b1err}");
    assert!(b1err.contains("cannot listen on 0.0.0.0:6379"), "b1:\n{b1err}");
    if !c.redis_answers("b2", Duration::from_secs(30)) {
        let group = coordinator_group(&c, &at);
        kill_host(&c.lan.host("b2").ns);
        kill_host(&c.lan.host("p").ns);
        let (_, b2err) = stderr_of(b2);
        let (_, perr) = stderr_of(primary);
        panic!("b2 did not take over: {group}\nb2:\n{b2err}\nb1:\n{b1err}\nprimary:\n{perr}");
    }
    let after = coordinator_group(&c, &at);
    assert_eq!(after["primary"].as_str(), Some("b2"), "{after}\nb1:\n{b1err}");
    assert_eq!(c.redis_cli("b2", &["get", "k"]), "said");
    let _ = squatter.kill();
    let _ = squatter.wait();
    // The first primary was fenced when b1 was named: it stopped its program.
    let (out, perr) = finish(primary, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(125), "primary:\n{perr}");
    kill_host(&c.lan.host("b2").ns);
    let _ = stderr_of(b2);
    kill_host(&c.lan.host("c").ns);
    let _ = stderr_of(coordinator);
}
