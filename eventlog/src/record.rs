//! The event record: a fixed 64-byte header followed by a payload padded to 8 bytes. The same
//! bytes travel through the shared-memory rings, the log files and (later) the network.

use crate::call::Call;
use crate::fdkind::FdKind;
use crate::ids::{LogicalPid, LogicalTid, Seq};
use bytemuck::{Pod, Zeroable};

/// Header of one event.
///
/// Field meaning per call (what `digest`, `aux` and the payload hold) is documented with the
/// hooks and in ARCHITECTURE.md; the rule is: whatever a backup needs to hand back a
/// nondeterministic result, plus a digest to check its own call against.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct EventHeader {
    pub seq: Seq,
    pub pid: LogicalPid,
    pub tid: LogicalTid,
    pub call: u16,
    /// Low four bits: [`FdKind`] of `fd`; above them the bits of [`flags`].
    pub flags: u16,
    /// The descriptor the call was made on (or the first one it created), -1 if none.
    pub fd: i32,
    pub result: i64,
    /// `errno` after the call when it failed, 0 otherwise.
    pub errno: i32,
    pub payload_len: u32,
    /// Digest of the call's defining data (bytes written, bytes read from local files, a path).
    pub digest: u64,
    /// Call-specific values (a time, a child's logical id, an epoll op).
    pub aux: [u64; 2],
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 64);
const _: () = assert!(core::mem::align_of::<EventHeader>() == 8);

/// Flag bits above the descriptor kind.
pub mod flags {
    /// The thread's next event is a signal delivered right after this call returns: a backup
    /// delivers it at the same boundary.
    pub const SIGNAL_NEXT: u16 = 1 << 4;
}

pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

/// Bytes an event with `payload_len` bytes of payload occupies in a ring or a log batch.
pub const fn record_len(payload_len: usize) -> usize {
    HEADER_LEN + ((payload_len + 7) & !7)
}

impl EventHeader {
    /// A header for `call` numbered `seq`, everything else empty (no descriptor, no payload).
    pub fn new(seq: Seq, call: Call) -> EventHeader {
        EventHeader {
            seq,
            pid: LogicalPid(0),
            tid: LogicalTid(0),
            call: call as u16,
            flags: 0,
            fd: -1,
            result: 0,
            errno: 0,
            payload_len: 0,
            digest: 0,
            aux: [0; 2],
        }
    }

    pub fn call(&self) -> Option<Call> {
        Call::from_id(self.call)
    }

    pub fn fd_kind(&self) -> FdKind {
        FdKind::from_bits(self.flags)
    }

    pub fn record_len(&self) -> usize {
        record_len(self.payload_len as usize)
    }
}

/// An event read back from a log or ring: the header and a view of its payload.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    pub header: EventHeader,
    pub payload: &'a [u8],
}

/// Why bytes could not be read as an event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RecordError {
    /// Fewer bytes than a header.
    ShortHeader {
        available: usize,
    },
    /// The header names more payload than the bytes hold.
    ShortPayload {
        needed: usize,
        available: usize,
    },
    UnknownCall {
        id: u16,
    },
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RecordError::ShortHeader { available } => {
                write!(f, "{available} bytes left, an event header needs {HEADER_LEN}")
            }
            RecordError::ShortPayload { needed, available } => {
                write!(f, "event needs {needed} bytes, {available} left")
            }
            RecordError::UnknownCall { id } => write!(f, "unknown call id {id}"),
        }
    }
}

impl<'a> Event<'a> {
    /// Reads the event at the start of `bytes`; returns it and the bytes after it.
    pub fn parse(bytes: &'a [u8]) -> Result<(Event<'a>, &'a [u8]), RecordError> {
        if bytes.len() < HEADER_LEN {
            return Err(RecordError::ShortHeader { available: bytes.len() });
        }
        let header: EventHeader = bytemuck::pod_read_unaligned(&bytes[..HEADER_LEN]);
        if Call::from_id(header.call).is_none() {
            return Err(RecordError::UnknownCall { id: header.call });
        }
        let len = header.record_len();
        if bytes.len() < len {
            return Err(RecordError::ShortPayload { needed: len, available: bytes.len() });
        }
        let payload = &bytes[HEADER_LEN..HEADER_LEN + header.payload_len as usize];
        Ok((Event { header, payload }, &bytes[len..]))
    }
}

/// Appends an encoded event to `out` (host side: tests and tools that build logs).
#[cfg(feature = "host")]
pub fn encode_into(out: &mut Vec<u8>, header: &EventHeader, payload: &[u8]) {
    debug_assert_eq!(header.payload_len as usize, payload.len());
    out.extend_from_slice(bytemuck::bytes_of(header));
    out.extend_from_slice(payload);
    out.resize(out.len() + (record_len(payload.len()) - HEADER_LEN - payload.len()), 0);
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;

    fn header(seq: u64, payload_len: u32) -> EventHeader {
        EventHeader {
            pid: LogicalPid(1),
            tid: LogicalTid(2),
            flags: FdKind::Socket as u16,
            fd: 5,
            result: payload_len as i64,
            payload_len,
            ..EventHeader::new(Seq(seq), Call::Read)
        }
    }

    #[test]
    fn encode_parse_round_trip_with_padding() {
        let mut buf = Vec::new();
        encode_into(&mut buf, &header(1, 3), b"abc");
        encode_into(&mut buf, &header(2, 0), b"");
        assert_eq!(buf.len(), 64 + 8 + 64);
        let (e1, rest) = Event::parse(&buf).unwrap();
        assert_eq!(e1.payload, b"abc");
        assert_eq!(e1.header.fd_kind(), FdKind::Socket);
        let (e2, rest) = Event::parse(rest).unwrap();
        assert_eq!(e2.header.seq, Seq(2));
        assert!(rest.is_empty());
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let mut buf = Vec::new();
        encode_into(&mut buf, &header(1, 16), &[7; 16]);
        assert_eq!(Event::parse(&buf[..70]).unwrap_err(), RecordError::ShortPayload { needed: 80, available: 70 });
        assert_eq!(Event::parse(&buf[..10]).unwrap_err(), RecordError::ShortHeader { available: 10 });
        let mut bad = header(1, 0);
        bad.call = 9999;
        let mut buf = Vec::new();
        encode_into(&mut buf, &bad, b"");
        assert_eq!(Event::parse(&buf).unwrap_err(), RecordError::UnknownCall { id: 9999 });
    }
}
