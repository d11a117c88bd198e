//! Notes from the shim to the agent. The shim never writes to the program's own descriptors (a
//! note on the program's stderr would move that file's offset and size, which the program can
//! see): it posts each note into a slot of the region's notes area, and the agent prints them.
//!
//! A writer claims a number with one atomic add, takes the first free slot from that number on
//! (free to writing, by compare-and-swap), copies its text and publishes it with its length in
//! one release store. The agent alone takes published notes (and frees their slots). A note
//! that finds every slot taken is lost and counted. Nothing allocates, locks or calls libc.

use super::{sys, Region, PAGE};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Slots in the notes area.
pub const NOTE_SLOTS: usize = 32;
/// Bytes of one slot.
pub const NOTE_BYTES: usize = 256;
/// Most bytes of text a note carries (longer ones are cut).
pub const NOTE_TEXT: usize = NOTE_BYTES - 16;

/// `NoteSlot::word`: free.
const NOTE_FREE: u32 = 0;
/// A writer is filling the slot.
const NOTE_WRITING: u32 = 1 << 31;
/// Published; the low bits hold the text's length.
const NOTE_READY: u32 = 1 << 30;
const NOTE_LEN_MASK: u32 = NOTE_READY - 1;

/// One note.
#[repr(C, align(64))]
pub struct NoteSlot {
    /// [`NOTE_FREE`], [`NOTE_WRITING`], or [`NOTE_READY`] with the text's length.
    word: AtomicU32,
    _pad0: u32,
    /// The number the writer claimed: the agent prints notes in this order.
    order: AtomicU64,
    text: UnsafeCell<[u8; NOTE_TEXT]>,
}

const _: () = assert!(core::mem::size_of::<NoteSlot>() == NOTE_BYTES);

/// The notes area, right after the header page.
#[repr(C)]
pub struct NoteArea {
    slots: [NoteSlot; NOTE_SLOTS],
}

/// Bytes of the notes area (whole pages).
pub const NOTES_LEN: usize = core::mem::size_of::<NoteArea>();

const _: () = assert!(NOTES_LEN == 2 * PAGE);

impl Region {
    fn note_area(&self) -> &NoteArea {
        // SAFETY: the notes area lies inside every validated region (see `Geometry`), page
        // aligned; it is all atomics, plain integers and bytes, valid when zeroed.
        unsafe { &*(self.at(self.geometry.notes_offset()) as *const NoteArea) }
    }

    /// The shim: posts a note for the agent to print. Returns false when every slot is taken (the
    /// caller may wait and try again, or count the note lost with [`Region::note_lost`]).
    pub fn post_note(&self, text: &[u8]) -> bool {
        let h = self.header();
        let first = h.notes_next.fetch_add(1, Ordering::Relaxed);
        for i in 0..NOTE_SLOTS as u64 {
            let slot = &self.note_area().slots[((first + i) % NOTE_SLOTS as u64) as usize];
            if slot.word.compare_exchange(NOTE_FREE, NOTE_WRITING, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            let n = text.len().min(NOTE_TEXT);
            // SAFETY: the writing state makes this thread the slot's only user: other writers
            // take free slots only, and the agent reads published ones only.
            unsafe { (&mut *slot.text.get())[..n].copy_from_slice(&text[..n]) };
            slot.order.store(first, Ordering::Relaxed);
            slot.word.store(NOTE_READY | n as u32, Ordering::Release);
            h.notes_bell.fetch_add(1, Ordering::Release);
            sys::futex_wake(&h.notes_bell, 1);
            return true;
        }
        false
    }

    /// The shim: a note found no free slot and was given up.
    pub fn note_lost(&self) {
        self.header().notes_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes lost so far.
    pub fn notes_lost(&self) -> u64 {
        self.header().notes_lost.load(Ordering::Relaxed)
    }

    /// The agent (one thread at a time): hands every published note to `take` with its number,
    /// and frees its slot. Notes still being written wait for the next call.
    pub fn take_notes(&self, mut take: impl FnMut(u64, &[u8])) {
        let mut text = [0u8; NOTE_TEXT];
        for slot in &self.note_area().slots {
            let word = slot.word.load(Ordering::Acquire);
            if word & NOTE_READY == 0 {
                continue;
            }
            let n = ((word & NOTE_LEN_MASK) as usize).min(NOTE_TEXT);
            // SAFETY: a published slot is written by nobody until we free it below; the acquire
            // load above makes its text visible.
            unsafe { text[..n].copy_from_slice(&(&*slot.text.get())[..n]) };
            let order = slot.order.load(Ordering::Relaxed);
            slot.word.store(NOTE_FREE, Ordering::Release);
            take(order, &text[..n]);
        }
    }

    /// The agent: the doorbell writers ring after posting a note.
    pub fn notes_bell(&self) -> u32 {
        self.header().notes_bell.load(Ordering::Acquire)
    }

    /// The agent: sleeps until a note is posted after `seen` was read, or `timeout_ns` passes.
    pub fn wait_notes(&self, seen: u32, timeout_ns: u64) {
        sys::futex_wait(&self.header().notes_bell, seen, timeout_ns);
    }

    /// The agent: wakes whoever waits in [`Region::wait_notes`] (to stop it).
    pub fn ring_notes_bell(&self) {
        let h = self.header();
        h.notes_bell.fetch_add(1, Ordering::Release);
        sys::futex_wake(&h.notes_bell, i32::MAX as u32);
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;
    use crate::ring::{Geometry, Mode, SharedRegion, MIN_RING_BYTES};

    fn taken(region: &Region) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        region.take_notes(|order, text| out.push((order, String::from_utf8_lossy(text).into_owned())));
        out.sort();
        out
    }

    #[test]
    fn notes_reach_the_agent_in_order_and_overflow_is_counted() {
        let shared = SharedRegion::create(Geometry::record(2, MIN_RING_BYTES), Mode::Record).unwrap();
        let region = shared.region();
        assert!(region.post_note(b"first"));
        assert!(region.post_note(b"second"));
        assert_eq!(taken(&region), vec![(0, "first".into()), (1, "second".into())]);
        assert!(taken(&region).is_empty(), "a note was taken twice");

        for i in 0..NOTE_SLOTS {
            assert!(region.post_note(format!("note {i}").as_bytes()));
        }
        assert!(!region.post_note(b"one too many"), "a note overwrote one not yet taken");
        region.note_lost();
        assert_eq!(region.notes_lost(), 1);
        let all = taken(&region);
        assert_eq!(all.len(), NOTE_SLOTS);
        assert_eq!(all[0].1, "note 0");
        assert_eq!(all[NOTE_SLOTS - 1].1, format!("note {}", NOTE_SLOTS - 1));
        // Room again, wherever the claim counter stands.
        assert!(region.post_note(&[b'x'; 1000]));
        assert_eq!(taken(&region)[0].1.len(), NOTE_TEXT, "a long note is cut to its slot");
    }

    #[test]
    fn a_replay_region_carries_notes_too() {
        let shared = SharedRegion::create(Geometry::replay(4, 4 << 20), Mode::Replay).unwrap();
        let region = shared.region();
        let seen = region.notes_bell();
        assert!(region.post_note(b"from a backup"));
        assert_ne!(region.notes_bell(), seen, "posting a note did not ring the agent");
        assert_eq!(taken(&region), vec![(0, "from a backup".into())]);
        // The feed's control page does not overlap the notes.
        region.feed().unwrap().report(crate::Seq(3), b"diverged");
        assert!(taken(&region).is_empty());
    }
}
