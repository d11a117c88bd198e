use super::*;

const CHOSEN: IncarnationToken = IncarnationToken([0x5a; 16]);

fn entry(body: &str) -> model::Request {
    let write = parse_write(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
    write.into_entry(|| Ok::<_, std::convert::Infallible>(CHOSEN)).unwrap_or_else(|e| match e {})
}

#[test]
fn the_form_before_versions_and_version_one_make_the_same_entry() {
    let token = IncarnationToken([0x11; 16]);
    // Exactly what agents of the previous build send.
    let pairs = [
        (
            r#"{"id":"r1","command":{"op":"register","group":"web","member":"p","address":"p:7400","primary":true,"mode":"sync","token":null,"new_incarnation":""}}"#.to_string(),
            r#"{"version":1,"id":"r1","request":{"op":"register","group":"web","member":"p","address":"p:7400","primary":true,"mode":"sync"}}"#.to_string(),
        ),
        (
            format!(r#"{{"id":"r2","command":{{"op":"register","group":"web","member":"b1","address":"b1:7400","primary":false,"mode":null,"token":"{token}","new_incarnation":""}}}}"#),
            format!(r#"{{"version":1,"id":"r2","request":{{"op":"register","group":"web","member":"b1","address":"b1:7400","token":"{token}"}}}}"#),
        ),
        (
            r#"{"id":"r3","command":{"op":"report","group":"web","member":"b1","epoch":3,"held":40,"released":7,"diverged":false}}"#.to_string(),
            r#"{"version":1,"id":"r3","request":{"op":"report","group":"web","member":"b1","epoch":3,"held":40,"released":7}}"#.to_string(),
        ),
        (
            r#"{"id":"r4","command":{"op":"failover","group":"web","to":"b1"}}"#.to_string(),
            r#"{"version":1,"id":"r4","request":{"op":"failover","group":"web","to":"b1"}}"#.to_string(),
        ),
    ];
    for (old, new) in pairs {
        assert_eq!(parse_write(old.as_bytes()).map(|w| w.version()), Ok(0));
        assert_eq!(parse_write(new.as_bytes()).map(|w| w.version()), Ok(1));
        assert_eq!(entry(&old), entry(&new), "{old}\n{new}");
    }
    // An explicit version 0 is the same form.
    let explicit = r#"{"version":0,"id":"r4","command":{"op":"failover","group":"web","to":"b1"}}"#;
    assert_eq!(
        entry(explicit).command,
        Command::Failover { group: "web".into(), to: Some("b1".into()), silent: Vec::new() }
    );
}

#[test]
fn the_client_sends_version_one_in_the_documented_shape() {
    let req = WriteRequest::new(
        "r1".into(),
        Request::Report {
            group: "g".into(),
            member: "b".into(),
            epoch: Epoch(2),
            held: Seq(5),
            released: Seq(0),
            diverged: false,
        },
    );
    let json = serde_json::to_value(&req).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"version": 1, "id": "r1", "request": {"op": "report", "group": "g", "member": "b", "epoch": 2, "held": 5, "released": 0, "diverged": false}})
    );
    assert_eq!(entry(&json.to_string()).id, "r1");
}

#[test]
fn the_form_before_versions_keeps_its_own_rules() {
    // A registration that named the new group's incarnation keeps it; a backup's needs none.
    let named = format!(
        r#"{{"id":"a","command":{{"op":"register","group":"g","member":"p","address":"x","primary":true,"new_incarnation":"{}"}}}}"#,
        IncarnationToken([7; 16])
    );
    assert!(
        matches!(entry(&named).command, Command::Register { new_incarnation, .. } if new_incarnation == IncarnationToken([7; 16]))
    );
    let backup = r#"{"id":"b","command":{"op":"register","group":"g","member":"b","address":"x"}}"#;
    assert!(matches!(entry(backup).command, Command::Register { new_incarnation, .. } if new_incarnation.is_none()));
    // A presented token is passed on as the text it was, to be refused as stale if it is not
    // the group's.
    let stale = r#"{"id":"c","command":{"op":"register","group":"g","member":"b","address":"x","token":"0000"}}"#;
    assert!(matches!(entry(stale).command, Command::Register { token: Some(ref t), .. } if t == "0000"));
    // The leader's own command was accepted then, and still is in that form.
    let lapse = r#"{"id":"d","command":{"op":"lease_expired","group":"g","epoch":4}}"#;
    assert_eq!(entry(lapse).command, Command::LeaseExpired { group: "g".into(), epoch: Epoch(4), silent: Vec::new() });
}

#[test]
fn an_unknown_op_or_a_newer_version_is_refused_as_unsupported_with_what_this_member_speaks() {
    let unknown = r#"{"version":1,"id":"x","request":{"op":"frobnicate","group":"g"}}"#;
    let e = parse_write(unknown.as_bytes()).unwrap_err();
    assert_eq!(e, RequestError::UnknownOp { version: 1, op: "frobnicate".into() });
    assert_eq!(e.kind(), "unsupported_request");
    let text = e.to_string();
    assert!(text.contains("API version 1") && text.contains("\"frobnicate\"") && text.contains("upgrade"), "{text}");

    let old_form_unknown = r#"{"id":"x","command":{"op":"frobnicate"}}"#;
    assert_eq!(
        parse_write(old_form_unknown.as_bytes()).unwrap_err(),
        RequestError::UnknownOp { version: 0, op: "frobnicate".into() }
    );
    // The leader's own command is no part of version 1.
    let lapse = r#"{"version":1,"id":"x","request":{"op":"lease_expired","group":"g","epoch":4}}"#;
    assert_eq!(parse_write(lapse.as_bytes()).unwrap_err().kind(), "unsupported_request");

    let future = r#"{"version":2,"id":"x","request":{"op":"register","group":"g","shiny":true}}"#;
    let e = parse_write(future.as_bytes()).unwrap_err();
    assert_eq!(e, RequestError::NewerVersion { version: 2 });
    assert_eq!(e.kind(), "unsupported_request");
    assert!(e.to_string().contains("API version 1") && e.to_string().contains("version 2"), "{e}");
}

#[test]
fn a_malformed_write_is_a_bad_request_naming_what_is_wrong() {
    for (body, says) in [
        ("not json", "not a write request"),
        (r#"{"version":"one","id":"x","request":{"op":"failover","group":"g"}}"#, "whole number"),
        (r#"{"version":-1,"id":"x","request":{"op":"failover","group":"g"}}"#, "whole number"),
        (r#"{"version":1,"id":"x","request":{"op":"report","group":"g"}}"#, "member"),
        (r#"{"version":1,"id":"x","request":{"group":"g"}}"#, "op"),
        (r#"{"version":1,"id":"x","command":{"op":"failover","group":"g"}}"#, "request"),
        (
            r#"{"version":1,"id":"x","request":{"op":"register","group":"g","member":"b","address":"x","token":"0000"}}"#,
            "incarnation token",
        ),
        (
            r#"{"id":"x","command":{"op":"register","group":"g","member":"p","address":"x","new_incarnation":"zz"}}"#,
            "incarnation token",
        ),
    ] {
        let e = parse_write(body.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), "bad_request", "{body}: {e}");
        assert!(e.to_string().contains(says), "{body}: {e}");
    }
}
