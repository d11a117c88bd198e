//! Frames between a primary's agent and a backup's agent.
//!
//! ```text
//! header (40 bytes, little-endian)
//!   magic "TNDF" | version u8 | kind u8 | flags u16
//!   incarnation token (16 bytes) | epoch u64
//!   body length u32 | crc32c of the header's first 36 bytes and the body
//! body (kind-specific)
//! ```
//!
//! The one flag, [`FLAG_PACKED`], marks a DATA body whose events are packed
//! ([`eventlog::pack`]): event logs are repetitive (a tenth of their size or less), so a batch
//! crosses the network, TLS and the receiver's socket at a fraction of its size.
//!
//! Every frame names the group's incarnation and epoch, so a frame from another incarnation or an
//! older epoch is refused before its body is looked at. Decoding never trusts a length it has not
//! bounded, and every failure is a [`FrameError`] naming what was wrong.

use bytes::Bytes;
use eventlog::ids::{IncarnationToken, Seq};
use eventlog::logfile::{verify_events, Launch};
use eventlog::pack::unpack_events;

pub const MAGIC: [u8; 4] = *b"TNDF";
pub const VERSION: u8 = 7;
pub const HEADER_LEN: usize = 40;
/// Larger bodies are refused as malformed rather than allocated (a log batch is at most 64 MiB).
pub const MAX_BODY: u32 = 65 << 20;
/// Header flag of a DATA frame: the events are zstd-compressed, after their length (u32).
pub const FLAG_PACKED: u16 = 1;
/// Longest group or member name.
pub const MAX_NAME: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Backup to primary, first on a session: who it is, what it already holds, and the epoch
    /// of the primary its log came from (0: it holds nothing).
    Hello { group: String, member: String, handle: u128, held: Seq, log_epoch: u64 },
    /// Primary to backup: the session is accepted; events follow from `resume_from`.
    /// `ack_received`: the primary's output waits only for RECEIVED, so the backup may sync
    /// its log now and then rather than after every round.
    Welcome { resume_from: Seq, ack_received: bool, launch: Launch },
    /// Primary to backup: consecutive events `first_seq..first_seq + count`, as a log batch body.
    /// The events are shared, not copied, from the log batch they came from to the wire. A
    /// sender that has them compressed (`pack_events`) passes that too, and the frame carries it; a
    /// decoded frame has both (the compressed form is what a backup keeps in its log).
    Data { first_seq: Seq, count: u32, wall_ns: u64, events: Bytes, packed: Option<Bytes> },
    /// Backup to primary: every event up to `seq` is durable in the backup's state directory.
    Ack { seq: Seq },
    /// Backup to primary: every event up to `seq` is verified and handed to the backup's log
    /// writer (in its memory, not yet on its disk).
    Received { seq: Seq },
    /// Primary to backup: output depending on events up to `seq` has been released.
    Confirm { seq: Seq },
    /// Backup to primary: the backup knows of the confirmation up to `seq`.
    ConfirmAck { seq: Seq },
    /// Primary to backup: the program has ended; `last_seq` is its last event.
    End { last_seq: Seq },
    /// Either way: the session is refused or closed, and why.
    Refuse { reason: String },
    /// Primary to backup: the backup's log holds events this primary's history does not (another
    /// epoch's primary recorded them); it must set its state aside and catch up from the first
    /// event.
    StartOver { reason: String },
    /// An operator to the primary, first on a connection: hand the group over to backup `to`
    /// (empty: the most up-to-date connected one), under request id `id`.
    Switchover { to: String, id: String },
    /// The primary to the operator: backup `to` is the group's primary in `epoch`.
    SwitchedOver { to: String, epoch: u64 },
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Hello { .. } => 1,
            Body::Welcome { .. } => 2,
            Body::Data { .. } => 3,
            Body::Ack { .. } => 4,
            Body::Confirm { .. } => 5,
            Body::ConfirmAck { .. } => 6,
            Body::End { .. } => 7,
            Body::Refuse { .. } => 8,
            Body::StartOver { .. } => 10,
            Body::Switchover { .. } => 11,
            Body::SwitchedOver { .. } => 12,
            Body::Received { .. } => 9,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Body::Hello { .. } => "HELLO",
            Body::Welcome { .. } => "WELCOME",
            Body::Data { .. } => "DATA",
            Body::Ack { .. } => "ACK",
            Body::Confirm { .. } => "CONFIRM",
            Body::ConfirmAck { .. } => "CONFIRM-ACK",
            Body::End { .. } => "END",
            Body::Refuse { .. } => "REFUSE",
            Body::StartOver { .. } => "START-OVER",
            Body::Switchover { .. } => "SWITCHOVER",
            Body::SwitchedOver { .. } => "SWITCHED-OVER",
            Body::Received { .. } => "RECEIVED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub incarnation: IncarnationToken,
    pub epoch: u64,
    pub body: Body,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("not a tandem frame (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("frame format version {0}, this agent speaks version {VERSION}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("unknown frame flags {0:#06x}")]
    Flags(u16),
    #[error("frame body of {0} bytes is over the limit of {MAX_BODY}")]
    TooLong(u32),
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("malformed {kind} frame: {what}")]
    Malformed { kind: &'static str, what: String },
}

fn malformed(kind: &'static str, what: impl Into<String>) -> FrameError {
    FrameError::Malformed { kind, what: what.into() }
}

/// A frame's header, decoded and checked on its own (the body's length is then known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub flags: u16,
    pub incarnation: IncarnationToken,
    pub epoch: u64,
    pub body_len: u32,
    crc: u32,
}

impl Header {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        let magic: [u8; 4] = bytes[0..4].try_into().unwrap_or_default();
        if magic != MAGIC {
            return Err(FrameError::Magic(magic));
        }
        if bytes[4] != VERSION {
            return Err(FrameError::Version(bytes[4]));
        }
        let kind = bytes[5];
        if !(1..=12).contains(&kind) {
            return Err(FrameError::Kind(kind));
        }
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        if flags & !FLAG_PACKED != 0 || (flags != 0 && kind != 3) {
            return Err(FrameError::Flags(flags));
        }
        let mut incarnation = [0u8; 16];
        incarnation.copy_from_slice(&bytes[8..24]);
        let epoch = u64::from_le_bytes(bytes[24..32].try_into().unwrap_or_default());
        let body_len = u32::from_le_bytes(bytes[32..36].try_into().unwrap_or_default());
        if body_len > MAX_BODY {
            return Err(FrameError::TooLong(body_len));
        }
        let crc = u32::from_le_bytes(bytes[36..40].try_into().unwrap_or_default());
        Ok(Header { kind, flags, incarnation: IncarnationToken(incarnation), epoch, body_len, crc })
    }
}

impl Frame {
    pub fn new(incarnation: IncarnationToken, epoch: u64, body: Body) -> Frame {
        Frame { incarnation, epoch, body }
    }

    pub fn encode(&self) -> Vec<u8> {
        let (mut out, events) = self.encode_parts();
        if let Some(events) = events {
            out.extend_from_slice(&events);
        }
        out
    }

    /// The frame as the header and fixed fields, then (DATA) the events, shared rather than
    /// copied: written one after the other they are [`encode`](Self::encode)'s bytes.
    pub fn encode_parts(&self) -> (Vec<u8>, Option<Bytes>) {
        let mut out = vec![0u8; HEADER_LEN];
        encode_body(&self.body, &mut out);
        let (events, flags) = match &self.body {
            Body::Data { packed: Some(packed), .. } => (Some(packed.clone()), FLAG_PACKED),
            Body::Data { events, .. } => (Some(events.clone()), 0),
            _ => (None, 0),
        };
        out[6..8].copy_from_slice(&flags.to_le_bytes());
        let body_len = (out.len() - HEADER_LEN + events.as_ref().map_or(0, |e| e.len())) as u32;
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = self.body.kind();
        out[8..24].copy_from_slice(&self.incarnation.0);
        out[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        out[32..36].copy_from_slice(&body_len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..36]), &out[HEADER_LEN..]);
        let crc = events.as_ref().map_or(crc, |e| crc32c::crc32c_append(crc, e));
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        (out, events)
    }

    /// Decodes one whole frame: its header's bytes and exactly `header.body_len` body bytes.
    pub fn decode(raw_header: &[u8; HEADER_LEN], body: Bytes) -> Result<Frame, FrameError> {
        let h = Header::parse(raw_header)?;
        if body.len() != h.body_len as usize {
            return Err(malformed("any", format!("{} body bytes, the header says {}", body.len(), h.body_len)));
        }
        if crc32c::crc32c_append(crc32c::crc32c(&raw_header[..36]), &body) != h.crc {
            return Err(FrameError::Checksum);
        }
        Ok(Frame { incarnation: h.incarnation, epoch: h.epoch, body: decode_body(h.kind, h.flags, body)? })
    }

    /// Decodes a frame from the front of `bytes`; returns it and the bytes it took. `Ok(None)`
    /// when `bytes` does not yet hold the whole frame.
    pub fn decode_prefix(bytes: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(raw) = bytes.first_chunk::<HEADER_LEN>() else { return Ok(None) };
        let h = Header::parse(raw)?;
        let end = HEADER_LEN + h.body_len as usize;
        if bytes.len() < end {
            return Ok(None);
        }
        Ok(Some((Frame::decode(raw, Bytes::copy_from_slice(&bytes[HEADER_LEN..end]))?, end)))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(MAX_NAME)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn encode_body(body: &Body, out: &mut Vec<u8>) {
    match body {
        Body::Hello { group, member, handle, held, log_epoch } => {
            put_str(out, group);
            put_str(out, member);
            out.extend_from_slice(&handle.to_le_bytes());
            out.extend_from_slice(&held.0.to_le_bytes());
            out.extend_from_slice(&log_epoch.to_le_bytes());
        }
        Body::Welcome { resume_from, ack_received, launch } => {
            out.extend_from_slice(&resume_from.0.to_le_bytes());
            out.push(u8::from(*ack_received));
            out.extend_from_slice(&(launch.argv.len() as u32).to_le_bytes());
            out.extend_from_slice(&(launch.env.len() as u32).to_le_bytes());
            out.extend_from_slice(&launch.encode());
        }
        // The events follow (`Frame::encode_parts`); compressed, after their length.
        Body::Data { first_seq, count, wall_ns, events, packed } => {
            out.extend_from_slice(&first_seq.0.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&wall_ns.to_le_bytes());
            if packed.is_some() {
                out.extend_from_slice(&(events.len() as u32).to_le_bytes());
            }
        }
        Body::Ack { seq }
        | Body::Received { seq }
        | Body::Confirm { seq }
        | Body::ConfirmAck { seq }
        | Body::End { last_seq: seq } => {
            out.extend_from_slice(&seq.0.to_le_bytes());
        }
        Body::Refuse { reason } | Body::StartOver { reason } => out.extend_from_slice(reason.as_bytes()),
        Body::Switchover { to, id } => {
            put_str(out, to);
            put_str(out, id);
        }
        Body::SwitchedOver { to, epoch } => {
            put_str(out, to);
            out.extend_from_slice(&epoch.to_le_bytes());
        }
    }
}

/// Reads fixed fields off the front of a body.
struct Cursor<'a> {
    rest: &'a [u8],
    kind: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(malformed(self.kind, format!("cut short in {what}")));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap_or_default()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or_default()))
    }

    fn seq(&mut self, what: &str) -> Result<Seq, FrameError> {
        self.u64(what).map(Seq)
    }

    fn name(&mut self, what: &str) -> Result<String, FrameError> {
        let n = self.take(1, what)?[0] as usize;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| malformed(self.kind, format!("{what} is not UTF-8")))
    }

    fn end(self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(self.kind, format!("{} bytes left over", self.rest.len())))
        }
    }
}

fn decode_body(kind: u8, flags: u16, body: Bytes) -> Result<Body, FrameError> {
    let names = [
        "",
        "HELLO",
        "WELCOME",
        "DATA",
        "ACK",
        "CONFIRM",
        "CONFIRM-ACK",
        "END",
        "REFUSE",
        "RECEIVED",
        "START-OVER",
        "SWITCHOVER",
        "SWITCHED-OVER",
    ];
    let mut c = Cursor { rest: &body, kind: names.get(kind as usize).copied().unwrap_or("unknown") };
    let out = match kind {
        1 => {
            let group = c.name("the group name")?;
            let member = c.name("the member name")?;
            let handle = u128::from_le_bytes(c.take(16, "the resume handle")?.try_into().unwrap_or_default());
            let held = c.seq("the held sequence number")?;
            let log_epoch = c.seq("the log's epoch")?.0;
            Body::Hello { group, member, handle, held, log_epoch }
        }
        2 => {
            let resume_from = c.seq("the resume point")?;
            let ack_received = match c.take(1, "the acknowledgement level")?[0] {
                0 => false,
                1 => true,
                other => return Err(malformed(c.kind, format!("acknowledgement level {other}"))),
            };
            let (argc, envc) = (c.u32("argc")?, c.u32("envc")?);
            let launch = Launch::decode(argc, envc, c.rest).ok_or_else(|| malformed(c.kind, "bad launch record"))?;
            c.rest = &[];
            Body::Welcome { resume_from, ack_received, launch }
        }
        3 => {
            let first_seq = c.seq("the first sequence number")?;
            let count = c.u32("the event count")?;
            let wall_ns = c.u64("the wall time")?;
            if count == 0 || first_seq == Seq::ZERO {
                return Err(malformed(c.kind, "an empty batch or sequence number 0"));
            }
            let (events, packed) = if flags & FLAG_PACKED != 0 {
                let len = c.u32("the events' length")?;
                let packed = body.slice(body.len() - c.rest.len()..);
                let events = unpack_events(len, std::mem::take(&mut c.rest)).map_err(|e| malformed(c.kind, e))?;
                (Bytes::from(events), Some(packed))
            } else {
                (body.slice(body.len() - std::mem::take(&mut c.rest).len()..), None)
            };
            verify_events(&events, first_seq, count).map_err(|e| malformed("DATA", e))?;
            Body::Data { first_seq, count, wall_ns, events, packed }
        }
        4 => Body::Ack { seq: c.seq("the sequence number")? },
        5 => Body::Confirm { seq: c.seq("the sequence number")? },
        6 => Body::ConfirmAck { seq: c.seq("the sequence number")? },
        7 => Body::End { last_seq: c.seq("the sequence number")? },
        8 => {
            let reason = String::from_utf8_lossy(c.rest).into_owned();
            c.rest = &[];
            Body::Refuse { reason }
        }
        9 => Body::Received { seq: c.seq("the sequence number")? },
        10 => {
            let reason = String::from_utf8_lossy(c.rest).into_owned();
            c.rest = &[];
            Body::StartOver { reason }
        }
        11 => Body::Switchover { to: c.name("the backup's name")?, id: c.name("the request id")? },
        12 => Body::SwitchedOver { to: c.name("the backup's name")?, epoch: c.seq("the epoch")?.0 },
        other => return Err(FrameError::Kind(other)),
    };
    c.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::sample_events as events;
    use eventlog::pack::{pack_events, PACK_MIN};

    fn samples() -> Vec<Frame> {
        let token = IncarnationToken([7; 16]);
        let launch = Launch {
            argv: vec![b"redis-server".to_vec()],
            env: vec![b"A=1".to_vec()],
            cwd: b"/tmp".to_vec(),
            ..Launch::default()
        };
        [
            Body::Hello {
                group: "g".into(),
                member: "backup-1".into(),
                handle: 0xfeed << 64 | 3,
                held: Seq(41),
                log_epoch: 3,
            },
            Body::Welcome { resume_from: Seq(42), ack_received: true, launch },
            Body::Data { first_seq: Seq(42), count: 5, wall_ns: 9, events: events(42, 5), packed: None },
            Body::Ack { seq: Seq(46) },
            Body::Received { seq: Seq(47) },
            Body::Confirm { seq: Seq(44) },
            Body::ConfirmAck { seq: Seq(44) },
            Body::End { last_seq: Seq(46) },
            Body::Refuse { reason: "wrong group".into() },
            Body::StartOver { reason: "epoch 2 ends at 40".into() },
            Body::Switchover { to: "b2".into(), id: "r-1".into() },
            Body::SwitchedOver { to: "b2".into(), epoch: 4 },
        ]
        .into_iter()
        .map(|b| Frame::new(token, 3, b))
        .collect()
    }

    #[test]
    fn every_kind_round_trips() {
        for f in samples() {
            let bytes = f.encode();
            let (back, used) = Frame::decode_prefix(&bytes).unwrap().unwrap();
            assert_eq!(back, f);
            assert_eq!(used, bytes.len());
            assert_eq!(Frame::decode_prefix(&bytes[..bytes.len() - 1]).unwrap(), None);
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        for f in samples() {
            let bytes = f.encode();
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x10;
                match Frame::decode_prefix(&bad) {
                    Err(_) | Ok(None) => {}
                    Ok(Some((g, _))) => panic!("{} with byte {i} flipped decoded as {g:?}", f.body.name()),
                }
            }
        }
    }

    #[test]
    fn lengths_are_bounded_before_anything_is_allocated() {
        let mut bytes = Frame::new(IncarnationToken::NONE, 1, Body::Ack { seq: Seq(1) }).encode();
        bytes[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Frame::decode_prefix(&bytes), Err(FrameError::TooLong(u32::MAX)));
    }

    #[test]
    fn data_must_hold_the_events_it_announces() {
        let f = Frame::new(
            IncarnationToken::NONE,
            1,
            Body::Data { first_seq: Seq(5), count: 3, wall_ns: 0, events: events(6, 3), packed: None },
        );
        let err = Frame::decode_prefix(&f.encode()).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { kind: "DATA", .. }), "{err}");
    }

    /// Random bytes, and valid frames with random tails: decoding answers, never panics.
    #[test]
    fn a_batch_past_the_last_sequence_number_is_malformed() {
        // Found by the fuzz target: DATA from seq u64::MAX overflowed while being verified.
        let body = Body::Data { first_seq: Seq(u64::MAX), count: 2, wall_ns: 0, events: Bytes::new(), packed: None };
        let err = Frame::decode_prefix(&Frame::new(IncarnationToken::NONE, 1, body).encode()).unwrap_err().to_string();
        assert!(err.contains("past the last sequence number"), "{err}");
    }

    fn data(events: Bytes, packed: Option<Bytes>) -> Frame {
        Frame::new(
            IncarnationToken([7; 16]),
            3,
            Body::Data { first_seq: Seq(1), count: 2000, wall_ns: 5, events, packed },
        )
    }

    #[test]
    fn compressed_events_decode_to_the_same_events() {
        let events = events(1, 2000);
        let packed = pack_events(&events).map(Bytes::from).expect("a large batch of events compresses");
        let bytes = data(events.clone(), Some(packed)).encode();
        assert!(bytes.len() * 4 < events.len(), "{} bytes on the wire for {}", bytes.len(), events.len());
        let (back, used) = Frame::decode_prefix(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let Body::Data { events: got, packed: Some(_), .. } = &back.body else { panic!("{back:?}") };
        assert_eq!(got, &events, "the receiver gets the events themselves");
        assert_eq!(back.encode(), bytes);
        assert_eq!(pack_events(&events[..PACK_MIN - 1]), None, "small batches travel as they are");
    }

    #[test]
    fn compressed_events_that_do_not_decompress_are_malformed() {
        let events = events(1, 2000);
        // A sound coded length before bytes that are not zstd's.
        let mut garbage = pack_events(&events).unwrap()[..4].to_vec();
        garbage.extend([0x5a; 300]);
        let err = Frame::decode_prefix(&data(events.clone(), Some(garbage.into())).encode()).unwrap_err().to_string();
        assert!(err.contains("do not decompress"), "{err}");
        // The length before the compressed events does not match what they decompress to.
        let packed = Bytes::from(pack_events(&events).unwrap());
        for len in [events.len() - 1, events.len() + 1] {
            let frame = data(events.slice(..len.min(events.len())), Some(packed.clone()));
            let mut bytes = frame.encode();
            bytes[HEADER_LEN + 20..HEADER_LEN + 24].copy_from_slice(&(len as u32).to_le_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..36]), &bytes[HEADER_LEN..]);
            bytes[36..40].copy_from_slice(&crc.to_le_bytes());
            let err = Frame::decode_prefix(&bytes).unwrap_err();
            assert!(matches!(err, FrameError::Malformed { kind: "DATA", .. }), "{err}");
        }
    }

    #[test]
    fn unknown_flags_are_refused() {
        for (kind, flags) in [(3u8, 2u16), (3, 0x8001), (4, FLAG_PACKED)] {
            let mut bytes = samples().into_iter().find(|f| f.body.kind() == kind).unwrap().encode();
            bytes[6..8].copy_from_slice(&flags.to_le_bytes());
            assert_eq!(Frame::decode_prefix(&bytes).unwrap_err(), FrameError::Flags(flags));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid: Vec<Vec<u8>> = samples().iter().map(Frame::encode).collect();
        for i in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut bytes: Vec<u8> =
                if i % 2 == 0 { Vec::new() } else { valid[i % valid.len()][..HEADER_LEN].to_vec() };
            bytes.extend((0..len).map(|_| next() as u8));
            let _ = Frame::decode_prefix(&bytes);
        }
    }
}
