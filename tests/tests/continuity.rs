//! Continuous protection: a group keeps a standby through failure after failure. Three agent
//! hosts and a coordinator, each in a network namespace of its own; redis-server under load from
//! clients that count every acknowledged write. Whichever host is primary is killed at a random
//! moment, again and again; each time a backup takes over, and the killed host is started again
//! as a backup and rejoins. Needs root.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_tests::lan::{kill_host, Lan};
use tandem_tests::*;

const AGENT_PORT: u16 = 7400;
const REDIS_PORT: u16 = 6379;
const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// A backup this close to the primary's reported position has caught up.
const CAUGHT_UP_EVENTS: u64 = 5_000;

struct Group {
    lan: Lan,
    dir: tempfile::TempDir,
    coordinator: String,
    agents: Vec<(String, Child)>,
    /// Agents started so far on each host, to name their output files.
    starts: usize,
}

impl Group {
    fn home(&self, host: &str) -> PathBuf {
        self.dir.path().join(host)
    }

    fn addr(&self, host: &str) -> Ipv4Addr {
        self.lan.host(host).addr
    }

    /// `tandem ARGS -- PROGRAM` on `host` as member `host`, its output in a file of its own.
    fn agent(&mut self, host: &str, args: &[String], program: &[&str]) {
        self.starts += 1;
        let out = std::fs::File::create(self.home(host).join(format!("agent-{}.out", self.starts))).unwrap();
        let child = self
            .lan
            .command(host, bin_dir().join("tandem"))
            .current_dir(self.home(host))
            .args(args)
            .args(["--name", host, "--coordinator", &self.coordinator])
            .arg("--certs")
            .arg(self.dir.path().join("certs"))
            .arg("--state-dir")
            .arg(self.home(host).join("state"))
            .args(program)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.agents.push((host.to_string(), child));
    }

    fn listen(&self, host: &str) -> String {
        format!("{}:{AGENT_PORT}", self.addr(host))
    }

    fn primary(&mut self, host: &str) {
        let mut args: Vec<String> =
            ["primary", "--group", "g", "--mode", "sync", "--wait-for-backups", "1", "--listen"]
                .map(String::from)
                .to_vec();
        args.push(self.listen(host));
        let port = REDIS_PORT.to_string();
        self.agent(host, &args, &["--", "redis-server", "--port", &port, "--save", "", "--protected-mode", "no"]);
    }

    /// A backup with no --primary: the coordinator says where the primary is, now and later.
    fn backup(&mut self, host: &str) {
        let mut args: Vec<String> = ["backup", "--group", "g", "--listen"].map(String::from).to_vec();
        args.push(self.listen(host));
        self.agent(host, &args, &[]);
    }

    /// The host dies: every process on it at once. Its agents are reaped.
    fn kill(&mut self, host: &str) {
        kill_host(&self.lan.host(host).ns);
        for (h, child) in self.agents.iter_mut() {
            if h == host {
                let _ = child.wait();
            }
        }
        self.agents.retain(|(h, _)| h != host);
    }

    fn view(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((200, body)) = tandem_tests::http::get(&self.coordinator, "/v1/groups/g") {
                if let Ok(v) = serde_json::from_str(&body) {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "the coordinator does not answer for group g");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every member but `primary` has caught up, as heard since `since`, in an epoch
    /// after `epoch`.
    fn wait_caught_up(&self, primary: &str, epoch: u64, since: Instant, round: usize) {
        loop {
            let v = self.view();
            let head = v["members"][primary]["held"].as_u64().unwrap_or(0);
            let caught_up = HOSTS.iter().filter(|h| **h != primary).all(|h| {
                let m = &v["members"][*h];
                m["catching_up"] == false
                    && m["diverged"] == false
                    // Heard from since then, not an old agent's last word.
                    && m["last_report_ms"].as_u64().is_some_and(|ms| u128::from(ms) < since.elapsed().as_millis())
                    && m["held"].as_u64().is_some_and(|held| held + CAUGHT_UP_EVENTS >= head)
            });
            if caught_up && v["epoch"].as_u64() > Some(epoch) {
                return;
            }
            assert!(
                since.elapsed() < Duration::from_secs(90),
                "round {round}: the group has not two caught-up backups again: {v}\n{}",
                self.story()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every acknowledged write (`keys`) is there (`lost` are not), and there were enough.
    fn assert_none_lost(&self, keys: &[String], lost: &[String]) {
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes lost, e.g. {:?}\n{}",
            lost.len(),
            keys.len(),
            &lost[..lost.len().min(5)],
            self.story()
        );
        assert!(keys.len() > 100, "too few writes were acknowledged: {}\n{}", keys.len(), self.story());
    }

    /// How many times a backup's state was set aside (its log held events the new primary's
    /// history does not) and it caught up from the start.
    fn starts_over(&self) -> usize {
        HOSTS
            .iter()
            .map(|h| std::fs::read_to_string(self.home(h).join("state/agent.log")).unwrap_or_default())
            .map(|log| log.lines().filter(|l| l.contains("its state is set aside")).count())
            .sum()
    }

    /// The agents' own words, for a failure's message.
    fn story(&self) -> String {
        let mut all = String::new();
        for h in HOSTS {
            for e in std::fs::read_dir(self.home(h)).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("agent-") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(8).collect();
                    all += &format!("--- {h}/{name}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                }
            }
            let log = std::fs::read_to_string(self.home(h).join("state/agent.log")).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(std::env::var("TANDEM_STORY_LINES").ok().and_then(|n| n.parse().ok()).unwrap_or(12))
                .collect();
            all += &format!("--- {h}/state/agent.log\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        all
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for h in HOSTS {
            kill_host(&self.lan.host(h).ns);
        }
        kill_host(&self.lan.host("c").ns);
        for (_, c) in self.agents.iter_mut() {
            let _ = c.wait();
        }
    }
}

fn ping(addr: Ipv4Addr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from((addr, REDIS_PORT)), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut line = String::new();
    s.write_all(b"PING\r\n").is_ok() && BufReader::new(s).read_line(&mut line).is_ok() && line == "+PONG\r\n"
}

/// Clients writing distinct keys one at a time to the current primary (`target`), each key
/// counted once acknowledged; a failed connection is retried, at the primary named by then.
type Acked = Arc<Mutex<Vec<(String, Instant)>>>;

fn writers(target: Arc<Mutex<Ipv4Addr>>, stop: Arc<AtomicBool>, acked: Acked) -> Vec<std::thread::JoinHandle<()>> {
    (0..4)
        .map(|n| {
            let (target, stop, acked) = (target.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let at = *target.lock().unwrap();
                    let Ok(s) =
                        TcpStream::connect_timeout(&SocketAddr::from((at, REDIS_PORT)), Duration::from_millis(300))
                    else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                    let mut reader = BufReader::new(s.try_clone().unwrap());
                    let mut s = s;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let k = format!("k{n}:{i}");
                        let cmd = format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{k}\r\n", k.len(), k.len());
                        let mut line = String::new();
                        if s.write_all(cmd.as_bytes()).is_err()
                            || reader.read_line(&mut line).is_err()
                            || line != "+OK\r\n"
                        {
                            break;
                        }
                        acked.lock().unwrap().push((k, Instant::now()));
                    }
                }
            })
        })
        .collect()
}

/// Which of `keys` the redis at `addr` lacks (or holds with another value).
fn missing(addr: Ipv4Addr, keys: &[String]) -> Vec<String> {
    let s = TcpStream::connect(SocketAddr::from((addr, REDIS_PORT))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut s = s;
    let mut lost = Vec::new();
    for chunk in keys.chunks(500) {
        let mut cmds = String::new();
        for k in chunk {
            cmds += &format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len());
        }
        s.write_all(cmds.as_bytes()).unwrap();
        for k in chunk {
            let mut head = String::new();
            reader.read_line(&mut head).unwrap();
            if head.starts_with("$-1") {
                lost.push(k.clone());
                continue;
            }
            let mut value = String::new();
            reader.read_line(&mut value).unwrap();
            if value.trim_end() != k {
                lost.push(k.clone());
            }
        }
    }
    lost
}

fn spread(ms: &mut [u128]) -> String {
    ms.sort_unstable();
    format!("min {} ms, median {} ms, max {} ms", ms[0], ms[ms.len() / 2], ms[ms.len() - 1])
}

/// A cheap random number (no crate for one test): xorshift seeded from the clock.
fn random_below(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n
}

/// A coordinator on host c, redis-server under a sync primary on h1, backups on h2 and h3 that
/// know only the coordinator.
fn start_group() -> Group {
    let dir = tempfile::tempdir().unwrap();
    certs(&dir.path().join("certs"), &HOSTS);
    let lan = Lan::new(&["h1", "h2", "h3", "c"]);
    for h in HOSTS.iter().chain(&["c"]) {
        std::fs::create_dir_all(dir.path().join(h)).unwrap();
    }
    let coordinator = format!("{}:7500", lan.host("c").addr);
    let mut g = Group { lan, dir, coordinator: coordinator.clone(), agents: Vec::new(), starts: 0 };
    let c = g
        .lan
        .command("c", bin_dir().join("tandem"))
        .args(["coordinator", "--listen", &coordinator, "--state-dir"])
        .arg(g.home("c").join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(g.home("c").join("coordinator.out")).unwrap())
        .spawn()
        .unwrap();
    g.agents.push(("c".into(), c));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tandem_tests::http::get(&coordinator, "/v1/status")
        .is_ok_and(|(s, b)| s == 200 && b.contains("\"leader\":1"))
    {
        assert!(Instant::now() < deadline, "the coordinator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    g.backup("h2");
    g.backup("h3");
    g.primary("h1");
    let started = Instant::now();
    while !ping(g.addr("h1")) {
        assert!(started.elapsed() < Duration::from_secs(30), "redis on h1 did not answer\n{}", g.story());
        std::thread::sleep(Duration::from_millis(50));
    }

    g
}

#[test]
fn a_group_keeps_a_standby_through_failover_after_failover() {
    require("redis-server");
    let failovers: usize = std::env::var("TANDEM_FAILOVERS").ok().and_then(|n| n.parse().ok()).unwrap_or(10);
    let mut g = start_group();
    let target = Arc::new(Mutex::new(g.addr("h1")));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = writers(target.clone(), stop.clone(), acked.clone());
    let mut rng = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let (mut took, mut rejoined) = (Vec::new(), Vec::new());
    let mut outcomes = Vec::new();
    for round in 1..=failovers {
        std::thread::sleep(Duration::from_millis(1000 + random_below(&mut rng, 1000)));
        let before = g.view();
        let (epoch, old) = (before["epoch"].as_u64().unwrap(), before["primary"].as_str().unwrap().to_string());
        g.kill(&old);
        let killed = Instant::now();
        let new = loop {
            let v = g.view();
            let named = v["primary"].as_str().filter(|p| *p != old && v["epoch"].as_u64() > Some(epoch));
            if let Some(p) = named.filter(|p| ping(g.addr(p))) {
                break p.to_string();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(15),
                "round {round}: no backup took over from {old}: {v}\n{}",
                g.story()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        took.push(killed.elapsed().as_millis());
        *target.lock().unwrap() = g.addr(&new);
        // The killed host comes back as a backup of the new primary.
        g.backup(&old);
        let back = Instant::now();
        g.wait_caught_up(&new, epoch, back, round);
        rejoined.push(back.elapsed().as_millis());
        outcomes.push(format!("{old} -> {new} in {} ms", took[took.len() - 1]));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let keys: Vec<String> = acked.lock().unwrap().iter().map(|(k, _)| k.clone()).collect();
    let at = *target.lock().unwrap();
    let lost = missing(at, &keys);
    eprintln!(
        "{failovers} failovers ({}); each {}; two caught-up backups again after {} ({} started over from the first event); {} acknowledged writes, {} lost",
        outcomes.join(", "),
        spread(&mut took),
        spread(&mut rejoined),
        g.starts_over(),
        keys.len(),
        lost.len()
    );
    g.assert_none_lost(&keys, &lost);
    // Each failover fits in a second on a quiet machine (scripts/soak.sh reports them); here
    // the other tests' builds may share the cores.
    assert!(took.iter().all(|ms| *ms <= 3000), "a failover took more than 3 s: {took:?}\n{}", g.story());
}

/// The longest stretch between two acknowledged writes (any client's) from `from` to `to`: what
/// the clients saw of a switchover.
fn longest_pause(acked: &Acked, from: Instant, to: Instant) -> Duration {
    let acked = acked.lock().unwrap();
    let mut times: Vec<Instant> = acked.iter().map(|(_, t)| *t).filter(|t| *t >= from && *t <= to).collect();
    times.sort_unstable();
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(to - from)
}

#[test]
fn switchovers_round_robin_lose_no_acknowledged_write() {
    require("redis-server");
    let switchovers: usize = std::env::var("TANDEM_SWITCHOVERS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let g = start_group();
    let target = Arc::new(Mutex::new(g.addr("h1")));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let clients = writers(target.clone(), stop.clone(), acked.clone());
    let (mut pauses, mut commands, mut rejoined) = (Vec::new(), Vec::new(), Vec::new());
    let mut primary = "h1".to_string();
    let t0 = Instant::now();
    for round in 1..=switchovers {
        let epoch = g.view()["epoch"].as_u64().unwrap();
        g.wait_caught_up(&primary, epoch.saturating_sub(1), Instant::now() - Duration::from_millis(500), round);
        std::thread::sleep(Duration::from_millis(300));
        let next = HOSTS[(HOSTS.iter().position(|h| *h == primary).unwrap() + 1) % HOSTS.len()];
        let asked = Instant::now();
        let out = tandem()
            .args(["switchover", "--group", "g", "--to", next, "--coordinator", &g.coordinator, "--name", "h1"])
            .arg("--certs")
            .arg(g.dir.path().join("certs"))
            .output()
            .unwrap();
        let answered = Instant::now();
        assert!(
            out.status.success(),
            "round {round}: switchover to {next}: {}{}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            g.view(),
            g.story()
        );
        assert!(
            text(&out.stdout).contains(&format!("{next} is the primary of group g in epoch {}", epoch + 1)),
            "{}",
            text(&out.stdout)
        );
        *target.lock().unwrap() = g.addr(next);
        // The clients' pause: from the command to the first writes at the new primary, and a
        // second more for the slowest.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(g.addr(next)) {
            assert!(Instant::now() < deadline, "round {round}: {next} does not answer\n{}", g.story());
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_secs(1));
        pauses.push(longest_pause(&acked, asked, Instant::now()).as_millis());
        commands.push((answered - asked).as_millis());
        // The old primary rejoins by itself, as a backup replaying its own log.
        g.wait_caught_up(next, epoch, asked, round);
        rejoined.push(asked.elapsed().as_millis());
        eprintln!("round {round}: {primary} -> {next} at {:?}", t0.elapsed());
        primary = next.to_string();
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let keys: Vec<String> = acked.lock().unwrap().iter().map(|(k, _)| k.clone()).collect();
    let lost = missing(*target.lock().unwrap(), &keys);
    eprintln!(
        "{switchovers} switchovers round robin over 3 hosts (sync mode); clients paused {}; the command took {}; the old primary rejoined (restarted as a backup from its own log) and both backups caught up after {} ({} started over from the first event); {} acknowledged writes, {} lost",
        spread(&mut pauses),
        spread(&mut commands),
        spread(&mut rejoined),
        g.starts_over(),
        keys.len(),
        lost.len()
    );
    g.assert_none_lost(&keys, &lost);
}
