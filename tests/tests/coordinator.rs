//! The coordinator as its users run it: `tandem coordinator` processes spoken to over HTTP.

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::http::{curl_tls, get, post};
use tandem_tests::*;

/// A member process, killed when dropped.
struct Coordinator {
    child: Child,
    addr: String,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_single(data_dir: &Path, addr: &str) -> Coordinator {
    let child = tandem()
        .args(["coordinator", "--state-dir"])
        .arg(data_dir)
        .args(["--listen", addr])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem coordinator");
    let c = Coordinator { child, addr: addr.to_string() };
    wait_leader(&c.addr);
    c
}

/// Waits until the member at `addr` answers and knows a leader.
fn wait_leader(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, body)) = get(addr, "/v1/status") {
            let status: Value = serde_json::from_str(&body).expect("status is JSON");
            if !status["leader"].is_null() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the coordinator at {addr} did not elect a leader");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(addr: &str, id: &str, command: Value) -> (u16, Value) {
    let (status, body) = post(addr, "/v1/write", &json!({ "id": id, "command": command }).to_string()).expect("write");
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("reply is not JSON: {body}")))
}

/// A primary's registration (which creates the group).
fn register(group: &str, member: &str) -> Value {
    json!({ "op": "register", "group": group, "member": member, "address": format!("{member}:7400"), "primary": true })
}

fn group(addr: &str, name: &str) -> Value {
    let (status, body) = get(addr, &format!("/v1/groups/{name}")).expect("read group");
    assert_eq!(status, 200, "{body}");
    let mut g: Value = serde_json::from_str(&body).expect("group is JSON");
    // The replicated state: what the leader alone knows (the lease left, when each member last
    // reported) is not part of it.
    if let Some(o) = g.as_object_mut() {
        o.remove("lease_left_ms");
    }
    if let Some(members) = g["members"].as_object_mut() {
        for m in members.values_mut().filter_map(Value::as_object_mut) {
            m.remove("last_report_ms");
        }
    }
    g
}

#[test]
fn a_single_member_keeps_its_state_across_a_kill_and_refuses_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coordinator");
    let addr = format!("127.0.0.1:{}", free_port());
    let c = start_single(&data, &addr);

    let (status, g) = write(&addr, "reg-p", register("web", "p"));
    assert_eq!((status, g["primary"].as_str(), g["epoch"].as_u64()), (200, Some("p"), Some(1)), "{g}");
    let token = g["incarnation"].as_str().expect("a new group gets an incarnation token").to_string();
    let mut b1 = register("web", "b1");
    b1["token"] = json!(token);
    b1["primary"] = json!(false);
    assert_eq!(write(&addr, "reg-b1", b1).0, 200);
    let report = json!({ "op": "report", "group": "web", "member": "b1", "epoch": 1, "held": 40, "released": 0, "diverged": false });
    assert_eq!(write(&addr, "rep-b1", report).0, 200);
    let (status, after) = write(&addr, "fail-1", json!({ "op": "failover", "group": "web", "to": "b1" }));
    assert_eq!((status, after["primary"].as_str(), after["epoch"].as_u64()), (200, Some("b1"), Some(2)), "{after}");
    // A stale registration is refused with both incarnations named.
    let stale =
        json!({ "op": "register", "group": "web", "member": "old", "address": "x", "mode": "sync", "token": "0000" });
    let (status, refusal) = write(&addr, "reg-old", stale);
    assert_eq!(status, 409);
    assert!(refusal["message"].as_str().unwrap().contains(&token), "{refusal}");

    // SIGKILL: whatever was acknowledged is on disk.
    drop(c);
    let c = start_single(&data, &addr);
    assert_eq!(group(&addr, "web"), after, "the state after a restart differs");
    // The failover request, retried after the restart, returns its first outcome and runs once.
    let (status, again) = write(&addr, "fail-1", json!({ "op": "failover", "group": "web", "to": "b1" }));
    assert_eq!((status, &again), (200, &after));
    assert_eq!(group(&addr, "web")["epoch"], 2);
    drop(c);

    // Damage the file where the group's records are: the member refuses to start, naming it.
    let file = data.join("coordinator.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = b"\"incarnation\"";
    let spots: Vec<usize> =
        (0..bytes.len() - needle.len()).filter(|&i| &bytes[i..i + needle.len()] == needle).collect();
    assert!(!spots.is_empty(), "the group's records are not in {}", file.display());
    for i in spots {
        bytes[i + 3] ^= 0x01;
    }
    std::fs::write(&file, bytes).unwrap();
    let out = tandem()
        .args(["coordinator", "--state-dir"])
        .arg(&data)
        .args(["--listen", &addr])
        .output()
        .expect("run tandem coordinator");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "a damaged file must stop the member: {err}");
    assert!(err.contains(&file.display().to_string()) && err.contains("damaged"), "{err}");
}

/// Three members, each on a host of its own.
struct Cluster {
    lan: tandem_tests::lan::Lan,
    dir: tempfile::TempDir,
    members: Vec<Option<Child>>,
    /// Members serve HTTPS with the cluster's certificates (in `dir/certs`).
    tls: bool,
}

const PORT: u16 = 7500;

/// One cluster test at a time: elections are timing-sensitive on a small machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    fn new() -> Cluster {
        let lan = tandem_tests::lan::Lan::new(&["c1", "c2", "c3"]);
        Cluster { lan, dir: tempfile::tempdir().unwrap(), members: vec![None, None, None], tls: false }
    }

    /// Three running members, and the leader they agree on.
    fn running() -> (Cluster, usize) {
        let mut c = Cluster::new();
        for i in 1..=3 {
            c.start(i);
        }
        let leader = c.leader(&[1, 2, 3]);
        (c, leader)
    }

    /// Members with certificates coordinator-1..3 and a client certificate `client`.
    fn with_tls() -> Cluster {
        let mut c = Cluster::new();
        certs(&c.dir.path().join("certs"), &["coordinator-1", "coordinator-2", "coordinator-3", "client"]);
        c.tls = true;
        c
    }

    /// curl over HTTPS to member `i` as `who` (a certificate in `certs`, or none): the status
    /// code and body.
    /// curl over HTTPS to member `i` as `who` (see `curl_tls`): the status code and body.
    fn curl(&self, i: usize, who: Option<(&Path, &str)>, args: &[&str], path: &str) -> (String, String) {
        curl_tls(&self.addr(i), &self.dir.path().join("certs/ca.crt"), who, args, path)
    }

    fn addr(&self, i: usize) -> String {
        format!("{}:{PORT}", self.lan.host(&format!("c{i}")).addr)
    }

    fn peers(&self) -> String {
        (1..=3).map(|i| format!("{i}={}", self.addr(i))).collect::<Vec<_>>().join(",")
    }

    fn data(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("m{i}"))
    }

    fn log_path(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).unwrap();
        let child = self
            .lan
            .command(&format!("c{i}"), bin_dir().join("tandem"))
            .args(["coordinator", "--state-dir"])
            .arg(self.data(i))
            .args(["--listen", &self.addr(i), "--id", &i.to_string(), "--peers", &self.peers()])
            .args(if self.tls { vec!["--certs".into(), self.dir.path().join("certs")] } else { vec![] })
            .stderr(log)
            .spawn()
            .expect("start a coordinator member");
        self.members[i - 1] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn status(&self, i: usize) -> Option<Value> {
        match get(&self.addr(i), "/v1/status") {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// The leader, once it has led `among` in one term for `settled`; says so when the term moved
    /// meanwhile (a member that came back started an election).
    fn settled_leader(&self, among: &[usize], settled: Duration) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        let term = |c: &Cluster, l: usize| c.status(l).and_then(|s| s["term"].as_u64());
        let mut seen = (self.leader(among), None);
        seen.1 = term(self, seen.0);
        loop {
            std::thread::sleep(settled);
            let now = (self.leader(among), term(self, self.leader(among)));
            if now == seen {
                return now.0;
            }
            eprintln!(
                "the leader moved while the group settled: member {} in term {:?}, then {} in {:?}",
                seen.0, seen.1, now.0, now.1
            );
            assert!(Instant::now() < deadline, "members {among:?} keep electing leaders");
            seen = now;
        }
    }

    /// The leader, once the live members among `among` agree on one that is one of them.
    fn leader(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen: Vec<Option<u64>> =
                among.iter().map(|&i| self.status(i).and_then(|s| s["leader"].as_u64())).collect();
            if let Some(Some(l)) = seen.first() {
                if seen.iter().all(|s| *s == Some(*l)) && among.contains(&(*l as usize)) {
                    return *l as usize;
                }
            }
            assert!(Instant::now() < deadline, "members {among:?} agree on no leader: {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn applied(&self, i: usize) -> u64 {
        self.status(i).and_then(|s| s["last_applied"].as_u64()).unwrap_or(0)
    }

    /// Waits until member `i` holds state and has applied as much as member `like`.
    fn wait_caught_up(&self, i: usize, like: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = self.applied(like);
        while !(self.status(i).is_some_and(|s| s["ready"] == true) && self.applied(i) >= target) {
            assert!(Instant::now() < deadline, "member {i} did not catch up: {:?}\n{}", self.status(i), self.log(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn groups(&self, i: usize) -> serde_json::Map<String, Value> {
        let (status, body) = get(&self.addr(i), "/v1/groups").expect("read groups");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("groups are JSON")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 1..=3 {
            self.kill(i);
        }
    }
}

/// Writes a new group per request to the members in `targets` in turn, retrying each request id
/// until it is acknowledged, until `stop`; returns the acknowledged groups.
fn write_stream(addrs: Vec<String>, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vec<String> {
    let mut acked = Vec::new();
    let mut k = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let name = format!("g{k}");
        let body = json!({ "id": format!("w{k}"), "command": register(&name, "p") }).to_string();
        for attempt in 0.. {
            let addr = &addrs[(k + attempt) % addrs.len()];
            if let Ok((200, _)) = post(addr, "/v1/write", &body) {
                acked.push(name.clone());
                break;
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return acked;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        k += 1;
    }
    acked
}

#[test]
fn three_members_lose_no_acknowledged_write_when_the_leader_dies_or_is_cut_off() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (mut c, leader) = Cluster::running();

    // Writes to every member in turn while the leader is SIGKILLed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3).map(|i| c.addr(i)).collect();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || write_stream(addrs, stop))
    };
    std::thread::sleep(Duration::from_millis(800));
    c.kill(leader);
    let rest: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
    let new_leader = c.leader(&rest);
    assert_ne!(new_leader, leader);
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(acked.len() > 20, "too few writes went through: {}", acked.len());
    let groups = c.groups(new_leader);
    let missing: Vec<&String> = acked.iter().filter(|g| !groups.contains_key(*g)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost after the leader died: {missing:?}");

    // The old leader comes back with its state and catches up.
    c.start(leader);
    c.wait_caught_up(leader, new_leader);

    // Cut the leader off: the other two elect a leader of their own and go on; the cut-off
    // member acknowledges nothing and confirms no primary's lease (it still believes it leads);
    // back on the LAN, it follows and catches up.
    require("curl");
    let (status, leased) = write(&c.addr(new_leader), "leased", register("leased", "p"));
    assert_eq!(status, 200, "{leased}");
    let epoch = group(&c.addr(new_leader), "leased")["epoch"].as_u64().expect("an epoch");
    let cut = new_leader;
    c.lan.set_link(&format!("c{cut}"), false);
    let rest: Vec<usize> = (1..=3).filter(|&i| i != cut).collect();
    let leader = c.leader(&rest);
    let renewal = json!({ "group": "leased", "member": "p", "epoch": epoch }).to_string();
    let out = c
        .lan
        .command(&format!("c{cut}"), "curl")
        .args(["-s", "-m", "5", "-X", "POST", "--data", &renewal])
        .arg(format!("http://{}/v1/lease", c.addr(cut)))
        .output()
        .expect("run curl on the cut-off host");
    let reply = text(&out.stdout);
    assert!(
        !reply.contains("\"primary\":true"),
        "a leader cut off from the majority confirmed a primary's lease: {reply}"
    );
    assert!(reply.contains("unconfirmed"), "{reply}");
    let body = json!({ "id": "while-cut", "command": register("cut", "p") }).to_string();
    let (status, reply) = post(&c.addr(leader), "/v1/write", &body).expect("write to the new leader");
    assert_eq!(status, 200, "{reply}");
    let body = json!({ "id": "to-the-cut-one", "command": register("lost", "p") }).to_string();
    let out = c
        .lan
        .command(&format!("c{cut}"), "curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10", "-X", "POST", "--data", &body])
        .arg(format!("http://{}/v1/write", c.addr(cut)))
        .output()
        .expect("run curl on the cut-off host");
    let code = text(&out.stdout);
    assert_ne!(code, "200", "a member cut off from the majority acknowledged a write");
    c.lan.set_link(&format!("c{cut}"), true);
    c.wait_caught_up(cut, leader);
    let groups = c.groups(cut);
    assert!(groups.contains_key("cut") && !groups.contains_key("lost"), "{groups:?}");
}

#[test]
fn a_wiped_member_rejoins_by_catching_up_before_it_votes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (mut c, leader) = Cluster::running();
    for k in 0..30 {
        let body = json!({ "id": format!("w{k}"), "command": register(&format!("g{k}"), "p") }).to_string();
        assert_eq!(post(&c.addr(leader), "/v1/write", &body).unwrap().0, 200);
    }
    let wiped = (1..=3).find(|&i| i != leader).unwrap();
    c.kill(wiped);
    std::fs::remove_dir_all(c.data(wiped)).unwrap();
    c.start(wiped);
    c.wait_caught_up(wiped, leader);
    let log = c.log(wiped);
    let catching = log.find("catching up on incarnation").expect("the wiped member caught up first");
    let holding = log.rfind("holding the coordinator's incarnation").expect("then held the incarnation");
    assert!(catching < holding, "{log}");
    let incarnation = c.status(leader).unwrap()["incarnation"].clone();
    assert_eq!(c.status(wiped).unwrap()["incarnation"], incarnation);
    // It now counts for the quorum: with the third member gone, the two still write.
    let third = (1..=3).find(|&i| i != leader && i != wiped).unwrap();
    c.kill(third);
    let body = json!({ "id": "after", "command": register("after", "p") }).to_string();
    let (status, reply) = post(&c.addr(wiped), "/v1/write", &body).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(c.groups(wiped).len(), 31);
}

#[test]
fn with_two_of_three_wiped_clients_are_told_of_the_loss_until_an_operator_reinitialises() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (mut c, leader) = Cluster::running();
    let body = json!({ "id": "w0", "command": register("g0", "p") }).to_string();
    assert_eq!(post(&c.addr(leader), "/v1/write", &body).unwrap().0, 200);
    let old = c.status(1).unwrap()["incarnation"].as_str().unwrap().to_string();
    // The cluster has formed: its first member has seen every member hold the incarnation (until
    // then a member without state joins the new cluster as at its start).
    let deadline = Instant::now() + Duration::from_secs(20);
    while (1..=3).any(|i| c.status(i).is_none_or(|s| s["forming"] == true)) {
        assert!(Instant::now() < deadline, "the cluster does not finish forming");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Members 2 and 3 lose their disks together; member 1 keeps its state. (Wiped one after
    // the other, the first would catch up from the two others before the second goes.)
    for i in [2, 3] {
        c.kill(i);
        std::fs::remove_dir_all(c.data(i)).unwrap();
    }
    for i in [2, 3] {
        c.start(i);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 1..=3 {
        loop {
            let body = json!({ "id": format!("lost{i}"), "command": register("new", "p") }).to_string();
            let (status, reply) = post(&c.addr(i), "/v1/write", &body).unwrap_or((0, String::new()));
            assert_ne!(status, 200, "member {i} served a write with its incarnation lost: {reply}");
            if status == 503 && reply.contains("held by 1 of 3") && reply.contains(&old) {
                break;
            }
            assert!(Instant::now() < deadline, "member {i} does not report the loss: {status} {reply}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The operator starts a new incarnation on member 2.
    c.kill(2);
    let out = tandem()
        .args(["coordinator", "reinit", "--state-dir"])
        .arg(c.data(2))
        .args(["--id", "2", "--peers", &c.peers()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    c.start(2);
    let new_leader = c.leader(&[2, 3]);
    let new = c.status(new_leader).unwrap()["incarnation"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let body = json!({ "id": "w1", "command": register("g1", "p") }).to_string();
    let (status, reply) = post(&c.addr(3), "/v1/write", &body).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(!c.groups(new_leader).contains_key("g0"), "the new incarnation starts empty");

    // A client of the old incarnation is told its data was lost, with both incarnations named.
    let (status, reply) =
        tandem_tests::http::request_with(&c.addr(3), "GET", "/v1/groups", &[("x-tandem-incarnation", &old)], "")
            .unwrap();
    assert_eq!(status, 410, "{reply}");
    assert!(reply.contains(&old) && reply.contains(&new), "{reply}");

    // Member 1 learns its incarnation was replaced, discards its state and stops; started again,
    // it joins the new one.
    let member1 = c.members[0].as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while member1.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "member 1 kept serving a replaced incarnation");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.log(1).contains(&format!("the other members moved to {new}")), "{}", c.log(1));
    c.members[0] = None;
    c.start(1);
    c.wait_caught_up(1, new_leader);
    assert_eq!(c.status(1).unwrap()["incarnation"], new.as_str());
}

#[test]
fn three_members_over_tls_serve_only_the_cluster() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require("curl");
    let mut c = Cluster::with_tls();
    for i in 1..=3 {
        c.start(i);
    }
    let ours = c.dir.path().join("certs");
    let me = Some((ours.as_path(), "client"));
    // The members find each other over TLS and elect a leader; every member holds the
    // incarnation (one that does not yet cannot take a write for the leader).
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = 'formed: loop {
        let mut leaders = Vec::new();
        for i in 1..=3 {
            let (code, body) = c.curl(i, me, &[], "/v1/status");
            let status: Value = serde_json::from_str(&body).unwrap_or_default();
            if code == "200" && status["ready"] == true && status["forming"] != true {
                leaders.extend(status["leader"].as_u64());
            }
            assert!(Instant::now() < deadline, "no leader over TLS: {code} {body}\n{}", c.log(i));
        }
        if leaders.len() == 3 && leaders.iter().all(|&l| l == leaders[0]) {
            break 'formed leaders[0] as usize;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // A write sent to a follower reaches the leader over TLS and comes back.
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let body = json!({ "id": "tls-1", "command": register("secure", "p") }).to_string();
    let (code, reply) = c.curl(follower, me, &["-X", "POST", "--data", &body], "/v1/write");
    assert_eq!(code, "200", "{reply}");
    let (code, reply) = c.curl(leader, me, &[], "/v1/groups/secure");
    assert_eq!(code, "200", "{reply}");

    // Without a certificate, or with one from another CA, nothing is served.
    let (code, _) = c.curl(leader, None, &[], "/v1/groups/secure");
    assert_eq!(code, "000", "a client without a certificate was served");
    let theirs = c.dir.path().join("other-certs");
    certs(&theirs, &["client"]);
    let (code, _) = c.curl(leader, Some((theirs.as_path(), "client")), &[], "/v1/groups/secure");
    assert_eq!(code, "000", "a client with another CA's certificate was served");
    assert!(c.log(leader).contains("refused a peer at the handshake"), "{}", c.log(leader));
}

/// A steered agent with its stderr collected as it comes, killed when dropped.
struct Agent {
    child: Child,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Agent {
    fn start(mut cmd: std::process::Command) -> Agent {
        use std::io::BufRead;
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start an agent");
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), err.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Agent { child, err }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program that goes on until it is stopped, making calls all the while.
const BUSY: &str = "i=0; while true; do echo $i >> out; sleep 0.01; i=$((i+1)); done";

impl Cluster {
    /// Every member's address, as agents are given them.
    fn members_arg(&self) -> String {
        (1..=3).map(|i| self.addr(i)).collect::<Vec<_>>().join(",")
    }

    /// Group `name` as the members among `among` see it (any that answers).
    fn group_among(&self, among: &[usize], name: &str) -> Option<Value> {
        among.iter().find_map(|&i| match get(&self.addr(i), &format!("/v1/groups/{name}")) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        })
    }
}

/// A primary steered by three members, with a backup, while the members' leader is killed and
/// restarted again and again, and once cut off the LAN (a member that hangs instead of refusing):
/// each election fits in the primary's lease, so the group stays in its epoch, the backup is
/// never named, and the primary never fences itself.
#[test]
fn losing_the_coordinators_leader_fences_no_primary() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (mut c, _) = Cluster::running();
    let certs_dir = c.dir.path().join("certs");
    certs(&certs_dir, &["primary", "backup"]);
    let port = free_port();
    let members = c.members_arg();
    let agent = |role: &str, args: &[&str], program: &[&str]| {
        let dir = c.dir.path().join(role);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = tandem();
        cmd.current_dir(&dir)
            .arg(role)
            .args(["--group", "g", "--name", role, "--certs"])
            .arg(&certs_dir)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--coordinator", &members])
            .args(args);
        if !program.is_empty() {
            cmd.arg("--").args(program);
        }
        Agent::start(cmd)
    };
    let listen = format!("127.0.0.1:{port}");
    let mut primary = agent("primary", &["--listen", &listen, "--no-capture"], &["sh", "-c", BUSY]);
    let mut backup = agent("backup", &["--primary", &listen], &[]);

    // The backup joined and holds events: it could be named, were the primary's lease to lapse.
    let all = [1, 2, 3];
    let deadline = Instant::now() + Duration::from_secs(30);
    let epoch = loop {
        let g = c.group_among(&all, "g");
        if let Some(g) = g.as_ref().filter(|g| g["members"]["backup"]["held"].as_u64().unwrap_or(0) > 0) {
            assert_eq!(g["primary"], "primary", "{g}");
            break g["epoch"].as_u64().expect("an epoch");
        }
        assert!(
            Instant::now() < deadline,
            "the backup did not join: {g:?}\nprimary:\n{}\nbackup:\n{}",
            primary.stderr(),
            backup.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let check = |c: &Cluster, primary: &mut Agent, backup: &mut Agent, round: &str| {
        let live: Vec<usize> = all.iter().copied().filter(|&i| c.status(i).is_some()).collect();
        let g = c.group_among(&live, "g").expect("the members answer for group g");
        assert!(primary.running(), "{round}: the primary ended:\n{}", primary.stderr());
        assert!(backup.running(), "{round}: the backup ended:\n{}", backup.stderr());
        let said = primary.stderr();
        assert!(!said.contains("held for good"), "{round}: the primary fenced itself:\n{said}");
        assert_eq!(g["epoch"].as_u64(), Some(epoch), "{round}: the group left its epoch: {g}\n{said}");
        assert_eq!(g["primary"], "primary", "{round}: {g}");
    };

    for round in 1..=3 {
        let leader = c.leader(&all);
        let killed = Instant::now();
        c.kill(leader);
        let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        let new_leader = c.leader(&rest);
        eprintln!(
            "round {round}: member {leader} killed, member {new_leader} leads {} ms later",
            killed.elapsed().as_millis()
        );
        // Well past the lease: the primary renews with the new leader.
        std::thread::sleep(Duration::from_millis(1500));
        check(&c, &mut primary, &mut backup, &format!("round {round}, leader {leader} killed"));
        c.start(leader);
        c.wait_caught_up(leader, new_leader);
        std::thread::sleep(Duration::from_millis(500));
        check(&c, &mut primary, &mut backup, &format!("round {round}, member {leader} back"));
    }

    // Cut off, the leader does not refuse connections: they hang. The agents' tries at it are
    // cut short, and they renew with the others once those elect a leader. From a settled group:
    // a member that came back can still, rarely, start an election, and two within one lease are
    // more than a primary outlasts.
    let leader = c.settled_leader(&all, Duration::from_secs(1));
    c.lan.set_link(&format!("c{leader}"), false);
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let new_leader = c.leader(&rest);
    std::thread::sleep(Duration::from_millis(1500));
    check(&c, &mut primary, &mut backup, &format!("leader {leader} cut off"));
    c.lan.set_link(&format!("c{leader}"), true);
    c.wait_caught_up(leader, new_leader);
    std::thread::sleep(Duration::from_millis(500));
    check(&c, &mut primary, &mut backup, &format!("member {leader} back on the LAN"));
}
