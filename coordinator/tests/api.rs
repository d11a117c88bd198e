//! The write API over HTTP, against one member started in this process: the form before versions
//! and version 1 are answered alike, and a request this build does not know is refused as such.

use bytes::Bytes;
use coordinator::http::{exchange, Transport};
use coordinator::server::{Config, Member};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One member on a free port, serving once it leads.
async fn start_member(dir: &std::path::Path) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let addr = format!("127.0.0.1:{port}");
    let config = Config {
        data_dir: dir.join("coordinator"),
        listen: addr.parse().expect("an address"),
        id: 1,
        peers: [(1, addr.clone())].into(),
        // No lease lapses during the test.
        lease_timeout: Duration::from_secs(600),
        transport: Transport::plain(),
    };
    let member = Member::start(&config).await.expect("start the member");
    tokio::spawn(member.serve(config.listen));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = call(&addr, Method::GET, "/v1/status", "").await;
        if status == StatusCode::OK && body["ready"] == true && body["leader"] == 1 {
            return addr;
        }
        assert!(Instant::now() < deadline, "the member did not start to lead: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(addr: &str, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    match exchange(&Transport::plain(), addr, method, path, None, Bytes::from(body.to_string())).await {
        Ok((status, reply)) => {
            let value = serde_json::from_slice(&reply).unwrap_or_else(|_| json!(String::from_utf8_lossy(&reply)));
            (status, value)
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, json!(e.to_string())),
    }
}

async fn write(addr: &str, body: Value) -> (StatusCode, Value) {
    call(addr, Method::POST, "/v1/write", &body.to_string()).await
}

/// The same write in the form before versions and in version 1.
fn both_forms(id: &str, command: Value) -> (Value, Value) {
    let old = json!({ "id": format!("{id}.0"), "command": command });
    let new = json!({ "version": 1, "id": format!("{id}.1"), "request": command });
    (old, new)
}

/// A reply with what differs by design between two groups (their names and tokens) taken out.
/// `reply` with its group's name and token replaced, and without what the leader knows of time
/// (a lease's time left, how long ago a member reported), which differs between two reads.
fn normalised(reply: &Value, group: &str, token: &str) -> String {
    let mut reply = reply.clone();
    strip_times(&mut reply);
    reply.to_string().replace(token, "TOKEN").replace(group, "GROUP")
}

fn strip_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("lease_left_ms");
            map.remove("last_report_ms");
            map.values_mut().for_each(strip_times);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answers_both_request_forms_alike_and_refuses_what_it_does_not_know() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let addr = start_member(dir.path()).await;

    // The same sequence against one group in the form before versions and another in version 1
    // (names that occur in no message).
    let (v0_group, v1_group) = ("grp-v0", "grp-v1");
    let mut tokens = Vec::new();
    for group in [v0_group, v1_group] {
        let (old, new) = both_forms(
            "reg-p",
            json!({ "op": "register", "group": group, "member": "p", "address": "p:7400", "primary": true, "mode": "sync" }),
        );
        let (status, g) = write(&addr, if group == v0_group { old } else { new }).await;
        assert_eq!(status, StatusCode::OK, "{g}");
        tokens.push(g["incarnation"].as_str().expect("a new group's token").to_string());
    }
    let steps = |group: &str, token: &str| {
        vec![
            json!({ "op": "register", "group": group, "member": "b1", "address": "b1:7400", "token": token }),
            json!({ "op": "register", "group": group, "member": "b2", "address": "b2:7400" }),
            json!({ "op": "report", "group": group, "member": "p", "epoch": 1, "held": 50, "released": 40, "diverged": false }),
            json!({ "op": "report", "group": group, "member": "b1", "epoch": 1, "held": 45, "released": 0, "diverged": false }),
            // Refused: b2 joined without a token and has not caught up.
            json!({ "op": "failover", "group": group, "to": "b2" }),
            json!({ "op": "failover", "group": group, "to": "b1" }),
            // Refused: epoch 1 is over.
            json!({ "op": "report", "group": group, "member": "b2", "epoch": 1, "held": 45, "released": 0, "diverged": false }),
            // Refused: the group has a primary.
            json!({ "op": "register", "group": group, "member": "p", "address": "p:7400", "primary": true, "token": token }),
        ]
    };
    let olds = steps(v0_group, &tokens[0]);
    let news = steps(v1_group, &tokens[1]);
    for (i, (old, new)) in olds.into_iter().zip(news).enumerate() {
        let (old_status, old_reply) = write(&addr, both_forms(&format!("s{i}"), old).0).await;
        let (new_status, new_reply) = write(&addr, both_forms(&format!("s{i}"), new).1).await;
        assert_eq!(old_status, new_status, "step {i}: {old_reply} / {new_reply}");
        assert_eq!(
            normalised(&old_reply, v0_group, &tokens[0]),
            normalised(&new_reply, v1_group, &tokens[1]),
            "step {i}: the two forms had different outcomes"
        );
        assert!(old_status == StatusCode::OK || old_status == StatusCode::CONFLICT, "step {i}: {old_reply}");
        if old_status == StatusCode::CONFLICT {
            let message = new_reply["message"].as_str().expect("a refusal says why");
            assert!(new_reply["error"]["error"].is_string(), "{new_reply}");
            assert!(!message.contains("Some(") && !message.contains("None"), "Debug text in {message}");
        }
    }
    let (status, old) = call(&addr, Method::GET, &format!("/v1/groups/{v0_group}"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (_, new) = call(&addr, Method::GET, &format!("/v1/groups/{v1_group}"), "").await;
    assert_eq!(normalised(&old, v0_group, &tokens[0]), normalised(&new, v1_group, &tokens[1]));
    assert_eq!((old["primary"].as_str(), old["epoch"].as_u64()), (Some("b1"), Some(2)), "{old}");

    // Step 5's failover, sent again under its id in either form, returns its first outcome and
    // changes nothing.
    let failover = json!({ "op": "failover", "group": v0_group, "to": "b1" });
    let (status, first) = write(&addr, json!({ "id": "s5.0", "command": failover })).await;
    assert_eq!((status, first["epoch"].as_u64()), (StatusCode::OK, Some(2)), "{first}");
    let retry = json!({ "version": 1, "id": "s5.0", "request": failover });
    assert_eq!(write(&addr, retry).await, (status, first));
    let (_, now) = call(&addr, Method::GET, &format!("/v1/groups/{v0_group}"), "").await;
    assert_eq!(normalised(&now, v0_group, &tokens[0]), normalised(&old, v0_group, &tokens[0]));

    // Requests of a newer build: refused with what this member speaks, and nothing else.
    let refused = [
        json!({ "version": 1, "id": "f1", "request": { "op": "frobnicate", "group": v0_group } }),
        json!({ "id": "f2", "command": { "op": "frobnicate", "group": v0_group } }),
        json!({ "version": 2, "id": "f3", "request": { "op": "register", "group": v0_group, "member": "q", "address": "q:1" } }),
    ];
    for body in refused {
        let (status, reply) = write(&addr, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert_eq!(reply["error"], "unsupported_request", "{reply}");
        let message = reply["message"].as_str().expect("a message");
        assert!(message.contains("API version 1") && message.contains("upgrade the member"), "{message}");
    }
    let (_, reply) = write(&addr, json!({ "version": 1, "id": "f1", "request": { "op": "frobnicate" } })).await;
    assert!(reply["message"].as_str().is_some_and(|m| m.contains("\"frobnicate\"")), "{reply}");
    let (_, reply) = write(&addr, json!({ "version": 7, "id": "f3", "request": { "op": "register" } })).await;
    assert!(reply["message"].as_str().is_some_and(|m| m.contains("version 7")), "{reply}");

    // The member keeps serving: writes in both forms and reads.
    let (old, new) = both_forms(
        "after",
        json!({ "op": "register", "group": "after", "member": "p", "address": "p:1", "primary": true }),
    );
    assert_eq!(write(&addr, old).await.0, StatusCode::OK);
    assert_eq!(write(&addr, new).await.0, StatusCode::OK, "the primary registers again");
    let (status, groups) = call(&addr, Method::GET, "/v1/groups", "").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&String> = groups.as_object().map(|g| g.keys().collect()).unwrap_or_default();
    assert_eq!(names, ["after", v0_group, v1_group], "{groups}");
}
