//! An event's fields as its call's declaration names them, decoded: paths as text, signals by
//! name, socket addresses as `127.0.0.1:7000`, flags by name. `log show` prints them as text and
//! as JSON from the same list, so the two views always carry the same fields.

use super::spec::{Bits, Field, Format, Len, Names, Part, Shape, Slot};
use crate::record::Event;
use crate::FdKind;
use serde::ser::{SerializeMap, SerializeSeq};
use std::fmt::Write;

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Signed(i64),
    Unsigned(u64),
    /// A descriptor and the kind recorded with it.
    Fd(i64, Option<FdKind>),
    /// A count of some unit (`ns`, `us`, `s`): a number in JSON.
    Amount(u64, &'static str),
    /// A name the number decodes to (`SIGTERM`, `O_CREAT|O_CLOEXEC`, `127.0.0.1:7000`).
    Name(String),
    /// Text from the program (a path, a host name).
    Text(String),
    /// Bytes of data.
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Record(Vec<(&'static str, Value)>),
}

/// How many bytes of data the text view shows (JSON carries up to [`JSON_BYTES`]).
pub const TEXT_BYTES: usize = 48;
pub const JSON_BYTES: usize = 4096;

impl Value {
    /// The text view of the value.
    pub fn text(&self) -> String {
        match self {
            Value::Signed(v) => v.to_string(),
            Value::Unsigned(v) => v.to_string(),
            Value::Fd(fd, Some(kind)) => format!("{fd}({})", kind.name()),
            Value::Fd(fd, None) => fd.to_string(),
            Value::Amount(v, unit) => format!("{v}{unit}"),
            Value::Name(s) => s.clone(),
            Value::Text(s) => format!("{:?}", s),
            Value::Bytes(b) => preview(b, TEXT_BYTES),
            Value::List(items) => format!("[{}]", items.iter().map(Value::text).collect::<Vec<_>>().join(" ")),
            Value::Record(fields) => {
                fields.iter().map(|(k, v)| format!("{k}={}", v.text())).collect::<Vec<_>>().join(",")
            }
        }
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Signed(v) => s.serialize_i64(*v),
            Value::Unsigned(v) | Value::Amount(v, _) => s.serialize_u64(*v),
            Value::Fd(fd, _) => s.serialize_i64(*fd),
            Value::Name(t) | Value::Text(t) => s.serialize_str(t),
            Value::Bytes(b) => s.serialize_str(&escape(&b[..b.len().min(JSON_BYTES)])),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Record(fields) => record(s, fields),
        }
    }
}

/// Fields as one JSON object.
pub fn record<S: serde::Serializer>(s: S, fields: &[(&'static str, Value)]) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(fields.len()))?;
    for (k, v) in fields {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// Bytes as text, with quotes, backslashes and anything unprintable escaped.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// Up to `max` bytes as a quoted, escaped string (`...` after it when there is more).
pub fn preview(bytes: &[u8], max: usize) -> String {
    let more = if bytes.len() > max { "..." } else { "" };
    format!("\"{}\"{more}", escape(&bytes[..bytes.len().min(max)]))
}

/// The event's fields, in declaration order: its `fd` slot, its `aux` slots, its digest if the
/// call has one, its payload parts. Unknown calls have none.
pub fn fields(e: &Event) -> Vec<(&'static str, Value)> {
    let h = &e.header;
    let Some(call) = h.call() else { return Vec::new() };
    let spec = call.spec();
    let mut out = Vec::new();
    match spec.fd {
        Slot::One(f) if f.format == Format::Fd => out.push((f.name, Value::Fd(h.fd as i64, Some(h.fd_kind())))),
        slot => slot_fields(slot, h.fd as i64 as u64, &mut out),
    }
    for (i, slot) in spec.aux.iter().enumerate() {
        slot_fields(*slot, h.aux[i], &mut out);
    }
    if !spec.digest.is_empty() && h.digest != 0 {
        out.push(("digest", Value::Name(format!("{:016x}", h.digest))));
    }
    let mut at = 0usize;
    let payload = e.payload;
    for p in spec.payload {
        let len = part_len(p, e, at).min(payload.len().saturating_sub(at));
        let bytes = &payload[at..at + len];
        at += len;
        if !bytes.is_empty() {
            out.push((p.name, part_value(p, bytes, h.aux)));
        }
    }
    out
}

fn part_len(p: &Part, e: &Event, at: usize) -> usize {
    let h = &e.header;
    match p.len {
        Len::Result => h.result.max(0) as usize,
        Len::Aux(i) => h.aux[i] as usize,
        Len::Word(i) => e.payload.get(i * 4..i * 4 + 4).map_or(0, |w| u32_at(w, 0) as usize),
        Len::Fixed(n) => n,
        Len::IfOk(n) => {
            if h.result >= 0 {
                n
            } else {
                0
            }
        }
        Len::Rest => e.payload.len().saturating_sub(at),
    }
}

fn slot_fields(slot: Slot, raw: u64, out: &mut Vec<(&'static str, Value)>) {
    match slot {
        Slot::Unused => {}
        Slot::One(f) => out.push((f.name, value(f, raw))),
        Slot::Halves(lo, hi) => {
            out.push((lo.name, value(lo, raw)));
            out.push((hi.name, value(hi, raw)));
        }
    }
}

/// One field's value out of its slot.
pub fn value(f: Field, raw: u64) -> Value {
    let (v, signed) = match f.bits {
        Bits::All => (raw, raw as i64),
        Bits::Low32 => (raw & 0xffff_ffff, raw as u32 as i32 as i64),
        Bits::High32 => (raw >> 32, (raw >> 32) as u32 as i32 as i64),
    };
    let narrow = f.bits != Bits::All;
    match f.format {
        Format::Unsigned => Value::Unsigned(v),
        Format::Signed => Value::Signed(signed),
        Format::Fd => Value::Fd(if narrow { signed } else { v as i32 as i64 }, None),
        Format::Hex => Value::Name(format!("{v:#x}")),
        Format::Digest => Value::Name(format!("{v:016x}")),
        Format::Signal => signal(v as i64),
        Format::Flags(names) => Value::Name(flags(v, names)),
        Format::Enum(names) => {
            names.iter().find(|(n, _)| *n == v).map_or(Value::Signed(signed), |(_, s)| Value::Name((*s).into()))
        }
        Format::Clock => clock(v as i32),
        Format::Nanos => Value::Amount(v, "ns"),
        Format::WaitStatus => Value::Name(wait_status(v as u32 as i32)),
        Format::ChildState => Value::Name(child_state((v >> 32) as i32, v as u32 as i32)),
    }
}

/// `SIGTERM`, `SIGRTMIN+3`, or the number.
pub fn signal(sig: i64) -> Value {
    const SIGRTMIN: i64 = 34;
    if let Ok(s) = nix::sys::signal::Signal::try_from(sig as i32) {
        return Value::Name(s.as_str().into());
    }
    if (SIGRTMIN..=64).contains(&sig) {
        return Value::Name(format!("SIGRTMIN+{}", sig - SIGRTMIN));
    }
    Value::Signed(sig)
}

/// Named bits joined by `|`, with any bits left over in hex; `0` when none is set.
pub fn flags(v: u64, names: Names) -> String {
    let mut parts = Vec::new();
    let mut left = v;
    for (bits, name) in names {
        if *bits != 0 && v & bits == *bits && left & bits != 0 {
            parts.push((*name).to_string());
            left &= !bits;
        }
    }
    if left != 0 {
        parts.push(format!("{left:#x}"));
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join("|")
    }
}

fn clock(id: i32) -> Value {
    let name = match id {
        0 => "REALTIME",
        1 => "MONOTONIC",
        2 => "PROCESS_CPUTIME_ID",
        3 => "THREAD_CPUTIME_ID",
        4 => "MONOTONIC_RAW",
        5 => "REALTIME_COARSE",
        6 => "MONOTONIC_COARSE",
        7 => "BOOTTIME",
        _ => return Value::Signed(id as i64),
    };
    Value::Name(name.into())
}

fn signal_text(sig: i32) -> String {
    signal(sig as i64).text()
}

/// A wait status as `waitpid` reports it.
pub fn wait_status(st: i32) -> String {
    let (low, high) = (st & 0x7f, (st >> 8) & 0xff);
    match low {
        0 => format!("exited {high}"),
        0x7f if st & 0xff == 0x7f => format!("stopped by {}", signal_text(high)),
        _ if st == 0xffff => "continued".into(),
        sig => format!("killed by {}{}", signal_text(sig), if st & 0x80 != 0 { " (core dumped)" } else { "" }),
    }
}

/// A child's change as `waitid` reports it: `si_code` and `si_status`.
pub fn child_state(code: i32, status: i32) -> String {
    match code {
        0 => "none".into(),
        1 => format!("exited {status}"),
        2 => format!("killed by {}", signal_text(status)),
        3 => format!("killed by {} (core dumped)", signal_text(status)),
        4 => format!("trapped by {}", signal_text(status)),
        5 => format!("stopped by {}", signal_text(status)),
        6 => "continued".into(),
        _ => format!("code {code} status {status}"),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |w| u16::from_le_bytes([w[0], w[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    b.get(at..at + 8).map_or(0, |w| i64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
}

/// Text up to its first NUL.
fn c_text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A socket address as people write it: `127.0.0.1:7000`, `[::1]:7000`, a Unix path, `@name`
/// for an abstract one.
pub fn sockaddr(b: &[u8]) -> String {
    const AF_UNIX: u16 = 1;
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let port = || b.get(2..4).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
    match u16_at(b, 0) {
        AF_INET if b.len() >= 8 => format!("{}.{}.{}.{}:{}", b[4], b[5], b[6], b[7], port()),
        AF_INET6 if b.len() >= 24 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[8..24]);
            format!("[{}]:{}", std::net::Ipv6Addr::from(octets), port())
        }
        AF_UNIX if b.len() <= 2 => "unix:unnamed".into(),
        AF_UNIX if b[2] == 0 => format!("@{}", escape(&b[3..]).trim_end_matches("\\x00")),
        AF_UNIX => c_text(&b[2..]),
        family => format!("family {family} ({} bytes)", b.len()),
    }
}

const POLL: Names = &[(0x1, "IN"), (0x2, "PRI"), (0x4, "OUT"), (0x8, "ERR"), (0x10, "HUP"), (0x20, "NVAL")];

fn part_value(p: &Part, b: &[u8], aux: [u64; 2]) -> Value {
    match p.shape {
        Shape::Bytes | Shape::Control => Value::Bytes(b.to_vec()),
        Shape::Text => Value::Text(c_text(b)),
        Shape::SockAddr => Value::Name(sockaddr(b)),
        Shape::Siginfo => Value::Record(vec![
            ("signo", signal(u32_at(b, 0) as i32 as i64)),
            ("code", Value::Signed(u32_at(b, 8) as i32 as i64)),
            ("pid", Value::Signed(u32_at(b, 16) as i32 as i64)),
            ("status", Value::Signed(u32_at(b, 24) as i32 as i64)),
        ]),
        Shape::PollFds => Value::List(
            b.chunks_exact(8)
                .map(|c| {
                    Value::Record(vec![
                        ("fd", Value::Signed(u32_at(c, 0) as i32 as i64)),
                        ("events", Value::Name(flags(u16_at(c, 4) as u64, POLL))),
                        ("revents", Value::Name(flags(u16_at(c, 6) as u64, POLL))),
                    ])
                })
                .collect(),
        ),
        Shape::EpollEvents => Value::List(
            b.chunks_exact(12)
                .map(|c| {
                    Value::Record(vec![
                        ("fd", Value::Signed(u32_at(c, 4) as i32 as i64)),
                        ("events", Value::Name(flags(u32_at(c, 0) as u64, super::spec::names::EPOLL_EVENTS))),
                    ])
                })
                .collect(),
        ),
        Shape::SelectSets => select_sets(b, aux[0] as usize, aux[1]),
        Shape::Utsname => {
            let f = |i: usize| Value::Text(c_text(b.get(i * 65..(i + 1) * 65).unwrap_or(&[])));
            Value::Record(vec![("sysname", f(0)), ("nodename", f(1)), ("release", f(2)), ("machine", f(4))])
        }
        Shape::Rusage => {
            let tv = |at: usize| format!("{}.{:06}", i64_at(b, at), i64_at(b, at + 8));
            Value::Record(vec![
                ("utime", Value::Name(tv(0))),
                ("stime", Value::Name(tv(16))),
                ("maxrss_kib", Value::Signed(i64_at(b, 32))),
            ])
        }
        Shape::Stat => Value::Record(vec![
            ("mode", Value::Name(file_mode(u32_at(b, 24)))),
            ("size", Value::Signed(i64_at(b, 48))),
            ("mtime", Value::Name(file_time(i64_at(b, 88), i64_at(b, 96)))),
            ("ctime", Value::Name(file_time(i64_at(b, 104), i64_at(b, 112)))),
            ("nlink", Value::Unsigned(i64_at(b, 16) as u64)),
            ("uid", Value::Unsigned(u32_at(b, 28) as u64)),
            ("gid", Value::Unsigned(u32_at(b, 32) as u64)),
            ("ino", Value::Unsigned(i64_at(b, 8) as u64)),
            ("dev", Value::Name(format!("{:#x}", i64_at(b, 0)))),
        ]),
        Shape::Statx => Value::Record(vec![
            ("mask", Value::Name(flags(u32_at(b, 0) as u64, super::spec::names::STATX_MASK))),
            ("mode", Value::Name(file_mode(u16_at(b, 28) as u32))),
            ("size", Value::Unsigned(i64_at(b, 40) as u64)),
            ("mtime", Value::Name(file_time(i64_at(b, 112), u32_at(b, 120) as i64))),
            ("ctime", Value::Name(file_time(i64_at(b, 96), u32_at(b, 104) as i64))),
            ("nlink", Value::Unsigned(u32_at(b, 16) as u64)),
            ("uid", Value::Unsigned(u32_at(b, 20) as u64)),
            ("gid", Value::Unsigned(u32_at(b, 24) as u64)),
            ("ino", Value::Unsigned(i64_at(b, 32) as u64)),
            ("dev", Value::Name(format!("{}:{}", u32_at(b, 136), u32_at(b, 140)))),
        ]),
        Shape::Dirent => dirent(b, 19, b.len(), b.get(18).copied().unwrap_or(0)),
        Shape::Dirents64 => Value::List(records(b).map(|r| dirent(r, 19, r.len(), r[18])).collect()),
        Shape::Dirents => Value::List(records(b).map(|r| dirent(r, 18, r.len() - 1, r[r.len() - 1])).collect()),
        Shape::MsgMeta => Value::Record(vec![
            ("name_len", Value::Unsigned(u32_at(b, 0) as u64)),
            ("control_len", Value::Unsigned(u32_at(b, 4) as u64)),
            ("msg_flags", Value::Name(flags(u32_at(b, 8) as u64, super::spec::names::MSG))),
        ]),
    }
}

/// One directory entry: its name (`b[name..end]`, up to a NUL), type and inode number.
fn dirent(b: &[u8], name: usize, end: usize, kind: u8) -> Value {
    let kind = match kind {
        0 => "unknown".to_string(),
        1 => "fifo".into(),
        2 => "char".into(),
        4 => "dir".into(),
        6 => "block".into(),
        8 => "file".into(),
        10 => "link".into(),
        12 => "socket".into(),
        14 => "whiteout".into(),
        k => format!("type {k}"),
    };
    Value::Record(vec![
        ("name", Value::Text(c_text(b.get(name..end).unwrap_or(&[])))),
        ("type", Value::Name(kind)),
        ("ino", Value::Unsigned(i64_at(b, 0) as u64)),
    ])
}

/// The records of a `getdents` buffer, each by its `d_reclen` (at offset 16); a record too short
/// to hold a name, or running past the buffer, ends the list.
fn records(b: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut at = 0usize;
    core::iter::from_fn(move || {
        let len = u16_at(b, at + 16) as usize;
        let r = b.get(at..at.checked_add(len)?).filter(|_| len >= 20)?;
        at += len;
        Some(r)
    })
}

/// A file's type and permission bits: `file 0644`, `dir 0755`, `link 0777`.
pub fn file_mode(mode: u32) -> String {
    let kind = match mode & 0o170000 {
        0o100000 => "file",
        0o040000 => "dir",
        0o120000 => "link",
        0o020000 => "char",
        0o060000 => "block",
        0o010000 => "fifo",
        0o140000 => "socket",
        _ => "type?",
    };
    format!("{kind} {:04o}", mode & 0o7777)
}

/// A file time as seconds and nanoseconds since the epoch.
fn file_time(seconds: i64, nanoseconds: i64) -> String {
    format!("{seconds}.{nanoseconds:09}")
}

/// select's sets after the call (the descriptors left in each) and the remaining timeout.
fn select_sets(b: &[u8], nfds: usize, given: u64) -> Value {
    const SET: usize = 128;
    let mut fields = Vec::new();
    let mut at = 0;
    for (bit, name) in [(1, "read"), (2, "write"), (4, "except")] {
        if given & bit == 0 {
            continue;
        }
        let set = b.get(at..at + SET).unwrap_or(&[]);
        at += SET;
        let fds = (0..nfds.min(SET * 8))
            .filter(|fd| set.get(fd / 8).is_some_and(|byte| byte & (1 << (fd % 8)) != 0))
            .map(|fd| Value::Signed(fd as i64))
            .collect();
        fields.push((name, Value::List(fds)));
    }
    if given & 8 != 0 {
        fields.push(("remaining", Value::Name(format!("{}.{:06}", i64_at(b, at), i64_at(b, at + 8)))));
    }
    Value::Record(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EventHeader;
    use crate::Call;

    fn event(call: Call, fd: i32, aux: [u64; 2], payload: &[u8]) -> (EventHeader, Vec<u8>) {
        let mut h = EventHeader::new(crate::Seq(1), call);
        h.fd = fd;
        h.aux = aux;
        h.payload_len = payload.len() as u32;
        (h, payload.to_vec())
    }

    fn decoded(call: Call, fd: i32, aux: [u64; 2], payload: &[u8]) -> Vec<(&'static str, Value)> {
        let (header, payload) = event(call, fd, aux, payload);
        fields(&Event { header, payload: &payload })
    }

    fn get<'a>(fields: &'a [(&'static str, Value)], name: &str) -> &'a Value {
        &fields.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no field {name} in {fields:?}")).1
    }

    #[test]
    fn addresses_read_as_people_write_them() {
        let mut v4 = vec![2, 0, 0x1b, 0x58, 127, 0, 0, 1];
        v4.extend([0; 8]);
        assert_eq!(sockaddr(&v4), "127.0.0.1:7000");
        let mut v6 = vec![10, 0, 0x1b, 0x58, 0, 0, 0, 0];
        v6.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(sockaddr(&v6), "[::1]:7000");
        assert_eq!(sockaddr(b"\x01\x00/tmp/s\x00"), "/tmp/s");
        assert_eq!(sockaddr(b"\x01\x00\x00name"), "@name");
        let f = decoded(Call::Connect, 3, [16, 0], &v4);
        assert_eq!(get(&f, "address"), &Value::Name("127.0.0.1:7000".into()));
    }

    #[test]
    fn flags_signals_and_paths_are_named() {
        let open = decoded(Call::Openat, 5, [0o2000000 | 0o100 | 1 | (0o644 << 32), (-100i64) as u64], b"/etc/x\0");
        assert_eq!(get(&open, "flags"), &Value::Name("O_WRONLY|O_CREAT|O_CLOEXEC".into()));
        assert_eq!(get(&open, "mode"), &Value::Name("0x1a4".into()));
        assert_eq!(get(&open, "dirfd"), &Value::Fd(-100, None));
        assert_eq!(get(&open, "path"), &Value::Text("/etc/x".into()));
        let sig = decoded(Call::Signal, -1, [15, 0], &[]);
        assert_eq!(get(&sig, "signal"), &Value::Name("SIGTERM".into()));
        let kill = decoded(Call::Kill, -1, [42, 64], &[]);
        assert_eq!(get(&kill, "signal"), &Value::Name("SIGRTMIN+30".into()));
        let ctl = decoded(Call::EpollCtl, 4, [1 | (7 << 32), 0x1 | 0x8000_0000], &[]);
        assert_eq!(get(&ctl, "op"), &Value::Name("ADD".into()));
        assert_eq!(get(&ctl, "fd"), &Value::Fd(7, None));
        assert_eq!(get(&ctl, "events"), &Value::Name("IN|ET".into()));
        let wait = decoded(Call::Waitpid, -1, [9, (-1i32 as u32 as u64) | (1 << 32)], &[]);
        assert_eq!(get(&wait, "status"), &Value::Name("killed by SIGKILL".into()));
        assert_eq!(get(&wait, "pid"), &Value::Signed(-1));
        assert_eq!(get(&wait, "options"), &Value::Name("WNOHANG".into()));
        assert_eq!(flags(0x1_0000_0000, &[]), "0x100000000");
        assert_eq!(flags(0, &[]), "0");
    }

    #[test]
    fn payload_parts_follow_their_lengths() {
        let mut payload = b"hello".to_vec();
        payload.extend([2, 0, 0, 80, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let (mut h, p) = event(Call::Recvfrom, 3, [100, 16], &payload);
        h.result = 5;
        let f = fields(&Event { header: h, payload: &p });
        assert_eq!(get(&f, "data"), &Value::Bytes(b"hello".to_vec()));
        assert_eq!(get(&f, "source"), &Value::Name("10.0.0.1:80".into()));
        // A damaged length never reads past the payload.
        let (mut h, p) = event(Call::Recvfrom, 3, [100, 1 << 40], &payload);
        h.result = 1 << 40;
        assert_eq!(get(&fields(&Event { header: h, payload: &p }), "data"), &Value::Bytes(payload.clone()));
    }

    #[test]
    fn stat_structs_show_mode_size_and_times() {
        let mut st = [0u8; 144];
        st[8..16].copy_from_slice(&77u64.to_le_bytes());
        st[24..28].copy_from_slice(&0o100644u32.to_le_bytes());
        st[48..56].copy_from_slice(&12i64.to_le_bytes());
        st[88..96].copy_from_slice(&1_700_000_000i64.to_le_bytes());
        st[96..104].copy_from_slice(&5i64.to_le_bytes());
        let mut payload = st.to_vec();
        payload.extend(b"dir/written");
        let f = decoded(Call::Stat, -1, [0, 0], &payload);
        let Value::Record(stat) = get(&f, "stat") else { panic!("{f:?}") };
        assert_eq!(get(stat, "mode"), &Value::Name("file 0644".into()));
        assert_eq!(get(stat, "size"), &Value::Signed(12));
        assert_eq!(get(stat, "mtime"), &Value::Name("1700000000.000000005".into()));
        assert_eq!(get(stat, "ino"), &Value::Unsigned(77));
        assert_eq!(get(&f, "path"), &Value::Text("dir/written".into()));
        // A failed stat filled nothing: the payload is the path alone.
        let (mut h, p) = event(Call::Stat, -1, [0, 0], b"missing");
        h.result = -1;
        let f = fields(&Event { header: h, payload: &p });
        assert_eq!(get(&f, "path"), &Value::Text("missing".into()));
        assert!(f.iter().all(|(n, _)| *n != "stat"), "{f:?}");

        let mut stx = [0u8; 256];
        stx[0..4].copy_from_slice(&0x7ffu32.to_le_bytes());
        stx[28..30].copy_from_slice(&0o40755u16.to_le_bytes());
        stx[40..48].copy_from_slice(&4096u64.to_le_bytes());
        stx[112..120].copy_from_slice(&1_700_000_001i64.to_le_bytes());
        let f = decoded(Call::Statx, -100, [0x100, 0x7ff], &stx);
        let Value::Record(statx) = get(&f, "statx") else { panic!("{f:?}") };
        assert_eq!(get(statx, "mask"), &Value::Name("BASIC_STATS".into()));
        assert_eq!(get(statx, "mode"), &Value::Name("dir 0755".into()));
        assert_eq!(get(statx, "size"), &Value::Unsigned(4096));
        assert_eq!(get(statx, "mtime"), &Value::Name("1700000001.000000000".into()));
        assert_eq!(get(&f, "flags"), &Value::Name("AT_SYMLINK_NOFOLLOW".into()));
    }

    #[test]
    fn directory_entries_show_name_and_type() {
        let mut entry = 42u64.to_le_bytes().to_vec();
        entry.extend(7i64.to_le_bytes());
        entry.extend(24u16.to_le_bytes());
        entry.push(8);
        entry.extend(b"made.txt");
        let (mut h, p) = event(Call::Readdir, 3, [0, 0], &entry);
        h.result = 1;
        let f = fields(&Event { header: h, payload: &p });
        let Value::Record(e) = get(&f, "entry") else { panic!("{f:?}") };
        assert_eq!(get(e, "name"), &Value::Text("made.txt".into()));
        assert_eq!(get(e, "type"), &Value::Name("file".into()));
        assert_eq!(get(e, "ino"), &Value::Unsigned(42));

        // Two getdents64 records (the second a directory), NUL-padded to 24 bytes each.
        let mut buf = Vec::new();
        for (ino, kind, name) in [(5u64, 8u8, &b"a.txt"[..]), (6, 4, b"sub")] {
            buf.extend(ino.to_le_bytes());
            buf.extend(0i64.to_le_bytes());
            buf.extend(24u16.to_le_bytes());
            buf.push(kind);
            buf.extend(name);
            buf.resize(buf.len().next_multiple_of(24), 0);
        }
        let (mut h, p) = event(Call::Getdents64, 3, [4096, 0], &buf);
        h.result = buf.len() as i64;
        let f = fields(&Event { header: h, payload: &p });
        let Value::List(list) = get(&f, "entries") else { panic!("{f:?}") };
        let names: Vec<_> = list
            .iter()
            .map(|v| {
                let Value::Record(r) = v else { panic!("{v:?}") };
                (get(r, "name").clone(), get(r, "type").clone())
            })
            .collect();
        assert_eq!(
            names,
            [
                (Value::Text("a.txt".into()), Value::Name("file".into())),
                (Value::Text("sub".into()), Value::Name("dir".into()))
            ]
        );
        // The old getdents keeps the type in a record's last byte.
        let mut old = 9u64.to_le_bytes().to_vec();
        old.extend(0i64.to_le_bytes());
        old.extend(24u16.to_le_bytes());
        old.extend(b"x\0\0\0\0");
        old.push(10);
        let (mut h, p) = event(Call::Getdents, 3, [4096, 0], &old);
        h.result = old.len() as i64;
        let f = fields(&Event { header: h, payload: &p });
        let Value::List(list) = get(&f, "entries") else { panic!("{f:?}") };
        let Value::Record(r) = &list[0] else { panic!("{list:?}") };
        assert_eq!(get(r, "name"), &Value::Text("x".into()));
        assert_eq!(get(r, "type"), &Value::Name("link".into()));
    }

    #[test]
    fn every_declared_call_decodes_an_empty_event() {
        for &call in Call::ALL {
            let f = decoded(call, -1, [u64::MAX, u64::MAX], &[]);
            let json = serde_json::to_string(&f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>());
            assert!(json.is_ok(), "{call}");
        }
    }
}
