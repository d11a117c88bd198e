//! The coordinator as its users run it: `tandem coordinator` processes spoken to over HTTP.

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::http::{get, post};
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
        .args(["coordinator", "--data-dir"])
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

fn register(group: &str, member: &str) -> Value {
    json!({ "op": "register", "group": group, "member": member, "address": format!("{member}:7400"), "mode": "sync" })
}

fn group(addr: &str, name: &str) -> Value {
    let (status, body) = get(addr, &format!("/v1/groups/{name}")).expect("read group");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("group is JSON")
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
        .args(["coordinator", "--data-dir"])
        .arg(&data)
        .args(["--listen", &addr])
        .output()
        .expect("run tandem coordinator");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "a damaged file must stop the member: {err}");
    assert!(err.contains(&file.display().to_string()) && err.contains("damaged"), "{err}");
}
