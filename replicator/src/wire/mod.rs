//! The replication protocol between agents, free of I/O: frames and the session state machines.

pub mod frame;
pub mod session;

/// Encoded events `first..first + count` with payloads of varied lengths, for tests.
#[cfg(test)]
pub(crate) fn sample_events(first: u64, count: u64) -> bytes::Bytes {
    use eventlog::record::{encode_into, EventHeader};
    let mut out = Vec::new();
    for seq in first..first + count {
        let payload = vec![seq as u8; (seq % 4) as usize * 3];
        let h = EventHeader {
            payload_len: payload.len() as u32,
            ..EventHeader::new(eventlog::Seq(seq), eventlog::call::Call::Read)
        };
        encode_into(&mut out, &h, &payload);
    }
    out.into()
}
