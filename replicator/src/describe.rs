//! Human-readable and JSON rendering of events for `tandem log show`, both from the fields the
//! call's declaration names (`eventlog::call::decode`), so the two views carry the same fields.

use eventlog::call::decode::{self, Value};
use eventlog::{Call, Event};

/// errno's symbolic name (`EAGAIN`), or its number.
pub fn errno_name(e: i32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(e));
    if name == "UnknownErrno" {
        e.to_string()
    } else {
        name
    }
}

/// The event's decoded fields after the call name: `fd=3(file) count=4096 data="..."`.
pub fn details(fields: &[(&'static str, Value)]) -> String {
    fields.iter().map(|(name, v)| format!("{name}={}", v.text())).collect::<Vec<_>>().join(" ")
}

/// `= 17` or `= -1 EAGAIN` (for calls returning an error number: `= EBUSY`).
pub fn outcome(e: &Event) -> String {
    let h = &e.header;
    if h.errno == 0 {
        format!("= {}", h.result)
    } else if h.result == h.errno as i64 {
        format!("= {}", errno_name(h.errno))
    } else {
        format!("= {} {}", h.result, errno_name(h.errno))
    }
}

/// One line: `seq pid.tid call = result details`.
pub fn line(e: &Event) -> String {
    let h = &e.header;
    let name = h.call().map_or("?", Call::name);
    let line =
        format!("{:>9} {:>3}.{:<3} {:<24} {} {}", h.seq, h.pid, h.tid, name, outcome(e), details(&decode::fields(e)));
    line.trim_end().to_string()
}

/// One JSON object: the header's fields, the errno's name, and the decoded fields under
/// `details`.
pub fn json(e: &Event) -> serde_json::Value {
    let h = &e.header;
    let details: serde_json::Map<String, serde_json::Value> = decode::fields(e)
        .into_iter()
        .map(|(name, v)| (name.to_string(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null)))
        .collect();
    serde_json::json!({
        "seq": h.seq,
        "pid": h.pid,
        "tid": h.tid,
        "call": h.call().map_or("?", Call::name),
        "result": h.result,
        "errno": h.errno,
        "error": (h.errno != 0).then(|| errno_name(h.errno)),
        "len": h.payload_len,
        "fd": h.fd,
        "fd_kind": h.fd_kind().name(),
        "digest": format!("{:016x}", h.digest),
        "aux": h.aux,
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventlog::EventHeader;

    #[test]
    fn text_and_json_carry_the_same_fields() {
        let mut h = EventHeader::new(eventlog::Seq(7), Call::Openat);
        h.fd = 5;
        h.aux = [0o2000000 | (0o644 << 32), (-100i64) as u64];
        h.payload_len = 7;
        let e = Event { header: h, payload: b"/etc/x\0" };
        let text = line(&e);
        assert!(text.contains("flags=O_CLOEXEC") && text.contains("path=\"/etc/x\""), "{text}");
        let json = json(&e);
        assert_eq!(json["details"]["flags"], "O_CLOEXEC");
        assert_eq!(json["details"]["path"], "/etc/x");
        assert_eq!(json["details"]["dirfd"], -100);
        for (name, _) in decode::fields(&e) {
            assert!(text.contains(&format!("{name}=")), "{name} in {text}");
            assert!(json["details"].get(name).is_some(), "{name} in {json}");
        }
    }
}
