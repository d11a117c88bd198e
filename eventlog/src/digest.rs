//! The digest used for arguments and data: a backup compares its own calls with the primary's
//! through it, so both sides must compute exactly the same function.

use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

/// Digest of one contiguous buffer.
pub fn digest(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Digest of several buffers taken as one stream (`writev`, `sendmsg`): equal to [`digest`] of
/// their concatenation, so a `write` and a `writev` of the same bytes compare equal.
pub fn digest_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = Xxh3Default::new();
    for p in parts {
        h.update(p);
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_equal_whole() {
        let whole = b"hello, replicated world";
        assert_eq!(digest(whole), digest_parts([&whole[..5], &whole[5..9], &whole[9..]]));
        assert_ne!(digest(b"a"), digest(b"b"));
    }
}
