//! The frame decoder on arbitrary bytes: it must return a frame or an error, never crash,
//! hang or allocate without bound; a frame it accepts must come back unchanged from its own encoding.
//!
//! The first input byte picks the shape: raw bytes (what a stranger sends), or a header made
//! valid (magic, version, length, checksum) around an arbitrary body, so the body decoders see
//! the fuzzer's input instead of the checksum refusing almost all of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicator::wire::frame::{Frame, HEADER_LEN, MAGIC, VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else { return };
    let bytes = if shape & 1 == 0 || rest.len() < HEADER_LEN {
        rest.to_vec()
    } else {
        let mut b = rest.to_vec();
        let body_len = (b.len() - HEADER_LEN) as u32;
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = 1 + (b[5] % 8);
        // DATA may be compressed: the decompressor sees the fuzzer's input too.
        let flags = if b[5] == 3 { u16::from(b[6] & 1) } else { 0 };
        b[6..8].copy_from_slice(&flags.to_le_bytes());
        b[32..36].copy_from_slice(&body_len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..36]), &b[HEADER_LEN..]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    };
    if let Ok(Some((frame, used))) = Frame::decode_prefix(&bytes) {
        let again = Frame::decode_prefix(&frame.encode()).expect("an encoded frame decodes");
        assert_eq!(again.map(|(f, _)| f), Some(frame));
        assert!(used <= bytes.len());
    }
});
