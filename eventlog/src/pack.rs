//! Batches of events compressed, as a log keeps them and a DATA frame carries them.
//!
//! Events are first coded header by header against a prediction, then zstd-compressed. zstd's
//! fast levels cost about one match search per run of changed bytes, and consecutive events differ
//! in a few scattered bytes (the sequence number, a time), so raw events cost it two or three
//! matches each. Coded, a header is only its call, a mask of which of its eight words differ
//! from the prediction, and those words: most events of a busy program then take a few bytes
//! with long repeats between them.
//!
//! ```text
//! packed:  coded length (u32), then the coded events zstd-compressed
//! coded:   per event: call (u16), mask (u8), each header word whose mask bit is set (u64),
//!          then the payload as the record holds it (padded to 8 bytes)
//! ```
//!
//! Word 0 (the sequence number) is predicted as the previous event's plus one; the other seven
//! as the same words of the last event with the same call (by call id modulo [`TABLE`]), zero
//! before there is one. Words are in the host's byte order, as the records are.

use crate::record::{record_len, EventHeader, HEADER_LEN};
use std::cell::RefCell;
use std::io;

/// Smaller batches are kept (and sent) as they are: compressing them would save little.
pub const PACK_MIN: usize = 16 << 10;
/// zstd's level: one of its fast levels.
const ZSTD_LEVEL: i32 = -1;
/// Prediction rows, picked by call id: more than there are calls that come often.
const TABLE: usize = 256;

type Words = [u64; 8];
/// The most bytes a coded header takes: call, mask and every word.
const CODED_HEADER_MAX: usize = 3 + HEADER_LEN;

/// `events` packed, when they are large enough to be worth it and come out at least an eighth
/// smaller; `None` when not, or when they are not whole records.
pub fn pack_events(events: &[u8]) -> Option<Vec<u8>> {
    if events.len() < PACK_MIN {
        return None;
    }
    let packed = pack(events)?;
    (packed.len() <= events.len() - events.len() / 8).then_some(packed)
}

/// `events` packed whatever their size; `None` if they are not whole records.
pub fn pack(events: &[u8]) -> Option<Vec<u8>> {
    with(&CODED, Vec::new, |coded| {
        let n = code(events, coded)?;
        let coded = &coded[..n];
        let compressed =
            with_zstd(&COMPRESSOR, || zstd::bulk::Compressor::new(ZSTD_LEVEL), |c| c.compress(coded)).ok()?;
        let mut packed = Vec::with_capacity(4 + compressed.len());
        packed.extend_from_slice(&u32::try_from(coded.len()).ok()?.to_le_bytes());
        packed.extend_from_slice(&compressed);
        Some(packed)
    })
}

/// The `len` bytes of events that `packed` ([`pack_events`]) holds; why not, if it does not.
pub fn unpack_events(len: u32, packed: &[u8]) -> Result<Vec<u8>, String> {
    let len = checked_len(len)?;
    let (coded_len, compressed) = packed.split_first_chunk::<4>().ok_or("packed events without their coded length")?;
    let coded_len = u32::from_le_bytes(*coded_len) as usize;
    // The longest coding of `len` bytes: every event a bare header with every word sent.
    if coded_len > len + len / HEADER_LEN * 3 {
        return Err(format!("{coded_len} bytes of coded events cannot hold {len} bytes of events"));
    }
    let coded = decompress(compressed, coded_len)?;
    decode(&coded, len)
}

/// The `len` bytes of events in `packed`, zstd-compressed without coding (logs of version 5 and
/// older).
pub fn unpack_plain(len: u32, packed: &[u8]) -> Result<Vec<u8>, String> {
    decompress(packed, checked_len(len)?)
}

fn checked_len(len: u32) -> Result<usize, String> {
    if len > crate::logfile::MAX_BATCH_BODY {
        return Err(format!("compressed events of {len} bytes are too large"));
    }
    Ok(len as usize)
}

fn decompress(compressed: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let out = with_zstd(&DECOMPRESSOR, zstd::bulk::Decompressor::new, |d| d.decompress(compressed, len))
        .map_err(|e| format!("events do not decompress: {e}"))?;
    if out.len() != len {
        return Err(format!("{} bytes of events, the batch says {len}", out.len()));
    }
    Ok(out)
}

/// Codes `events` into `out`, which keeps its length between batches (so it is zeroed only as it
/// grows); returns the coded length, `None` if they are not whole records.
fn code(events: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    // Room for the last header's stores past what it keeps.
    let most = events.len() + events.len() / HEADER_LEN * 3 + CODED_HEADER_MAX;
    if out.len() < most {
        out.resize(most, 0);
    }
    let mut table = [[0u64; 8]; TABLE];
    let mut prev_seq = 0u64;
    let mut rest = events;
    let mut at = 0;
    while let Some(head) = rest.first_chunk::<HEADER_LEN>() {
        let words: Words = bytemuck::pod_read_unaligned(head);
        let header: EventHeader = bytemuck::cast(words);
        let record = record_len(header.payload_len as usize);
        let payload = rest.get(HEADER_LEN..record)?;
        let row = &mut table[header.call as usize % TABLE];
        row[0] = prev_seq.wrapping_add(1);
        let slot: &mut [u8; CODED_HEADER_MAX] = out.get_mut(at..at + CODED_HEADER_MAX)?.try_into().ok()?;
        slot[..2].copy_from_slice(&header.call.to_le_bytes());
        // Every word is stored and only those that differ are kept: no branch per word.
        let mut mask = 0u8;
        let mut len = 3;
        for (k, (w, p)) in words.iter().zip(row.iter()).enumerate() {
            let differs = w != p;
            mask |= u8::from(differs) << k;
            slot[len..len + 8].copy_from_slice(&w.to_ne_bytes());
            len += 8 * usize::from(differs);
        }
        slot[2] = mask;
        at += len;
        out.get_mut(at..at + payload.len())?.copy_from_slice(payload);
        at += payload.len();
        *row = words;
        prev_seq = header.seq.0;
        rest = &rest[record..];
    }
    rest.is_empty().then_some(at)
}

/// The `len` bytes of events that `coded` holds; why not, if it does not hold exactly them.
fn decode(coded: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let ends = |what: &str| format!("the coded events end inside {what}");
    let mut out = Vec::with_capacity(len);
    let mut table = [[0u64; 8]; TABLE];
    let mut prev_seq = 0u64;
    let mut rest = coded;
    while out.len() < len {
        let ([c0, c1, mask], r) =
            rest.split_first_chunk::<3>().map(|(h, r)| (*h, r)).ok_or_else(|| ends("an event"))?;
        rest = r;
        let call = u16::from_le_bytes([c0, c1]);
        let row = &mut table[call as usize % TABLE];
        let mut words = *row;
        words[0] = prev_seq.wrapping_add(1);
        for (k, w) in words.iter_mut().enumerate() {
            if mask & (1 << k) != 0 {
                let (v, r) = rest.split_first_chunk::<8>().ok_or_else(|| ends("a header"))?;
                *w = u64::from_ne_bytes(*v);
                rest = r;
            }
        }
        let header: EventHeader = bytemuck::cast(words);
        if header.call != call {
            return Err(format!("a coded event says call {call} and holds call {}", header.call));
        }
        let record = record_len(header.payload_len as usize);
        if out.len() + record > len {
            return Err(format!("the coded events hold more than the batch's {len} bytes"));
        }
        let (payload, r) = rest.split_at_checked(record - HEADER_LEN).ok_or_else(|| ends("a payload"))?;
        rest = r;
        out.extend_from_slice(bytemuck::bytes_of(&header));
        out.extend_from_slice(payload);
        *row = words;
        prev_seq = header.seq.0;
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes follow the batch's coded events", rest.len()));
    }
    Ok(out)
}

thread_local! {
    // Kept per thread: making a zstd context costs about as much as a batch's compression, and
    // a coding buffer of a batch's size costs its page faults.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static CODED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's value from `slot`, made by `make` on first use.
fn with<C, T>(
    slot: &'static std::thread::LocalKey<RefCell<Option<C>>>,
    make: impl FnOnce() -> C,
    f: impl FnOnce(&mut C) -> T,
) -> T {
    slot.with(|cell| f(cell.borrow_mut().get_or_insert_with(make)))
}

/// [`with`] for a zstd context, whose making can fail.
fn with_zstd<C, T>(
    slot: &'static std::thread::LocalKey<RefCell<Option<C>>>,
    make: impl FnOnce() -> io::Result<C>,
    f: impl FnOnce(&mut C) -> io::Result<T>,
) -> io::Result<T> {
    slot.with(|cell| {
        let mut cell = cell.borrow_mut();
        let context = match cell.as_mut() {
            Some(context) => context,
            None => cell.insert(make()?),
        };
        f(context)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Call;
    use crate::ids::Seq;
    use crate::record::encode_into;

    /// Events as a busy program makes them: runs of one call, times that move, payloads.
    fn events(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let call = [Call::MutexLock, Call::MutexUnlock, Call::ClockGettime, Call::Read][(i % 7 % 4) as usize];
            let mut h = EventHeader::new(Seq(1000 + i), call);
            h.aux = [7, i * 31 % 1000];
            let payload = vec![i as u8; (i % 5 * 3) as usize];
            h.payload_len = payload.len() as u32;
            encode_into(&mut out, &h, &payload);
        }
        out
    }

    #[test]
    fn events_come_back_as_they_were() {
        for n in [0, 1, 2, 100, 5000] {
            let events = events(n);
            let packed = pack(&events).unwrap();
            assert_eq!(unpack_events(events.len() as u32, &packed).unwrap(), events, "{n} events");
        }
    }

    #[test]
    fn a_run_of_one_call_codes_to_a_few_bytes_an_event() {
        let mut events = Vec::new();
        for i in 0..4096 {
            let mut h = EventHeader::new(Seq(1 + i), [Call::MutexLock, Call::MutexUnlock][i as usize % 2]);
            h.aux = [0x7fff_0000, 0];
            encode_into(&mut events, &h, &[]);
        }
        let mut coded = Vec::new();
        let n = code(&events, &mut coded).unwrap();
        coded.truncate(n);
        // The first event of each call sends its words; every later one is its call and mask.
        assert!(coded.len() <= 4096 * 3 + 2 * 8 * 8, "{} bytes", coded.len());
        assert_eq!(decode(&coded, events.len()).unwrap(), events);
        assert!(pack_events(&events).unwrap().len() < 200);
    }

    #[test]
    fn bytes_that_are_not_whole_records_are_not_packed() {
        let events = events(10);
        assert_eq!(pack(&events[..events.len() - 8]), None);
        assert_eq!(pack(&events[..40]), None);
    }

    #[test]
    fn damaged_coded_events_are_refused_not_misread() {
        let events = events(300);
        let mut coded = Vec::new();
        let n = code(&events, &mut coded).unwrap();
        coded.truncate(n);
        assert!(decode(&coded[..coded.len() - 1], events.len()).unwrap_err().contains("end inside"));
        let mut longer = coded.clone();
        longer.push(0);
        assert!(decode(&longer, events.len()).unwrap_err().contains("follow"));
        assert!(decode(&coded, events.len() - 64).is_err());
        // Every single damaged byte either decodes to other bytes (which the batch's checks then
        // refuse) or is refused here; none panics or reads past the end.
        for at in 0..coded.len() {
            let mut bad = coded.clone();
            bad[at] ^= 0x41;
            if let Ok(out) = decode(&bad, events.len()) {
                assert_eq!(out.len(), events.len());
            }
        }
    }

    #[test]
    fn packed_events_that_lie_about_their_length_are_refused() {
        let events = events(500);
        let packed = pack(&events).unwrap();
        assert!(unpack_events(events.len() as u32 + 64, &packed).is_err());
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack_events(events.len() as u32, &huge).unwrap_err().contains("cannot hold"));
        assert!(unpack_events(events.len() as u32, &packed[..3]).is_err());
        assert!(unpack_events(events.len() as u32, &[0x5a; 40]).is_err());
    }
}
