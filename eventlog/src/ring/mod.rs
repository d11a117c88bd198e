//! Shared-memory rings between the shim (producers) and the agent (consumer).
//!
//! One memfd holds a header page, a table of slot headers and one ring per slot. Each thread of
//! the program claims a slot and is the only writer of its ring, so recording needs no lock: a
//! thread takes its sequence number with one atomic add on the header and copies its event into
//! its own ring. The agent merges the rings back into sequence order. The region is mapped
//! `MAP_SHARED`, so forked children keep using it, and its descriptor survives `exec`.
//!
//! A region made for replay (see [`feed`]) also holds the feed: the events, in sequence order,
//! that the program's threads consume one at a time, and the table of those threads.
//!
//! Layout (offsets from the start of the region):
//!
//! ```text
//! 0                 ShmHeader (one page)
//! PAGE              NoteArea: the shim's notes for the agent to print (two pages)
//! 3 * PAGE          InodeLocks: locks ordering calls on one regular file (one page)
//! slots_offset      SlotHeader[ring_count], 128 bytes each, rounded up to a page
//! rings_offset      ring data, ring_bytes per slot
//! replay_offset     ReplayControl (one page)                   } only when
//! threads_offset    ThreadSlot[thread_count], rounded to a page } thread_count > 0
//! feed_offset       feed data, feed_bytes                      }
//! ```

pub mod feed;
mod gate;
pub mod inodes;
pub mod notes;
pub mod pipes;
pub mod sys;

use crate::ids::{LogicalPid, LogicalTid, Seq};
use crate::record::{record_len, EventHeader, HEADER_LEN};
use bytemuck::Zeroable;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

pub const MAGIC: u64 = u64::from_le_bytes(*b"TNDMSHM\0");
/// Bump whenever any layout in this module changes.
pub const VERSION: u32 = 11;
pub const PAGE: usize = 4096;
/// Largest payload one event may carry; bigger reads are cut to this size by the shim (a short
/// read is always legal for the descriptors whose bytes are recorded).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Smallest ring that can hold the largest event twice over.
pub const MIN_RING_BYTES: u32 = 4 << 20;
/// Smallest feed that can hold the largest event.
pub const MIN_FEED_BYTES: u64 = 4 << 20;

/// What the program under the shim is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum Mode {
    Record = 1,
    Replay = 2,
}

/// The first page of the region.
#[repr(C, align(64))]
pub struct ShmHeader {
    pub magic: u64,
    pub version: u32,
    pub mode: u32,
    pub ring_count: u32,
    pub ring_bytes: u32,
    pub thread_count: u32,
    _pad0a: u32,
    pub feed_bytes: u64,
    pub total_len: u64,
    _pad0: [u8; 16],
    /// The next sequence number to hand out. Alone on its cache line: every event touches it.
    pub next_seq: AtomicU64,
    _pad1: [u8; 56],
    /// The next logical pid to hand out (fork, spawn).
    pub next_lpid: AtomicU32,
    /// Futex word the agent sleeps on; producers bump it to wake the agent.
    pub doorbell: AtomicU32,
    /// Non-zero while the agent sleeps on `doorbell`.
    pub agent_sleeping: AtomicU32,
    /// Upper bound in microseconds of the shim's random pause before each call (0: none); set by
    /// the agent, to perturb schedules in tests without touching the program's environment.
    pub jitter_us: AtomicU32,
    /// Non-zero: a backup prints every event it takes.
    pub trace: AtomicU32,
    /// One past the highest slot ever claimed (bounds scans of the slot table).
    pub slots_high: AtomicU32,
    /// Non-zero: output to the outside world waits for the backups (see `gate.rs`).
    pub output_gate: AtomicU32,
    /// Non-zero: a backup's program records on where its replay ends (it goes live as the
    /// group's primary; see [`Region::record_on_from`]). Written by the agent before going live.
    pub record_after_replay: AtomicU32,
    _pad2: [u8; 32],
    /// Outputs depending only on events up to here may leave. Written by the agent.
    pub released: AtomicU64,
    /// Futex word the agent bumps when `released` moves.
    pub gate_wake: AtomicU32,
    /// Threads waiting on `gate_wake`.
    pub gate_waiters: AtomicU32,
    _pad3: [u8; 48],
    /// The next number a note takes (see `notes.rs`).
    pub notes_next: AtomicU64,
    /// Notes given up because every slot was taken.
    pub notes_lost: AtomicU64,
    /// Futex word writers bump after posting a note; the agent's note printer sleeps on it.
    pub notes_bell: AtomicU32,
    _pad4: [u8; 44],
    /// The pipes the program was started with (its standard input or output, from a shell's
    /// pipeline outside it), by inode number (0: a free entry), written once by the program's
    /// first process: every other pipe is the program's own, both ends inside it (see
    /// [`Region::add_outside_pipe`]).
    pub outside_pipes: [AtomicU64; OUTSIDE_PIPES],
    /// The inode of the pipe the agent gives the program as its standard input (0: none): the
    /// program's own, though its first process is started with it.
    pub stdin_pipe: AtomicU64,
    _reserved: [u8; PAGE - 320 - OUTSIDE_PIPES * 8 - 8],
}

/// Pipes from outside the program a region keeps track of.
pub const OUTSIDE_PIPES: usize = 64;

const _: () = assert!(core::mem::size_of::<ShmHeader>() == PAGE);

/// Slot states.
pub const SLOT_FREE: u32 = 0;
pub const SLOT_CLAIMING: u32 = 1;
pub const SLOT_ACTIVE: u32 = 2;
/// The owner is gone; the agent frees the slot once it has drained the ring.
pub const SLOT_CLOSED: u32 = 3;

/// Per-ring control block. The first cache line is written by the producer, the second by the
/// consumer, so neither side's writes bounce the other's line on every event.
#[repr(C, align(64))]
pub struct SlotHeader {
    /// Bytes ever written (monotonic across owners).
    pub tail: AtomicU64,
    pub state: AtomicU32,
    /// Real pid and tid of the owner, for diagnostics and for reclaiming a dead owner's slot.
    pub owner_pid: AtomicI32,
    pub owner_tid: AtomicI32,
    pub lpid: AtomicU32,
    pub ltid: AtomicU32,
    /// Non-zero while the producer sleeps on `head_wake` for room.
    pub producer_waiting: AtomicU32,
    /// The last sequence number the producer took. If the merge waits for that number and the
    /// owner is dead, the event is lost rather than late.
    pub reserved: AtomicU64,
    /// The last sequence number of an event that was not output to the outside world.
    pub last_input: AtomicU64,
    _pad0: [u8; 16],
    /// Bytes ever consumed (monotonic across owners).
    pub head: AtomicU64,
    /// Futex word the consumer bumps after advancing `head`.
    pub head_wake: AtomicU32,
    _pad1: [u8; 52],
}

const _: () = assert!(core::mem::size_of::<SlotHeader>() == 128);

/// Why a mapping is not a usable region.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LayoutError {
    TooSmall { len: usize },
    Misaligned,
    BadMagic,
    Version { found: u32 },
    Geometry,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::TooSmall { len } => write!(f, "shared region of {len} bytes is too small"),
            LayoutError::Misaligned => f.write_str("shared region is not page aligned"),
            LayoutError::BadMagic => f.write_str("shared region has no tandem header"),
            LayoutError::Version { found } => {
                write!(f, "shared region has layout version {found}, this build uses {VERSION}")
            }
            LayoutError::Geometry => f.write_str("shared region's ring geometry is inconsistent"),
        }
    }
}

/// Geometry of a region: recording rings, and (for replay) the thread table and the feed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Geometry {
    pub ring_count: u32,
    pub ring_bytes: u32,
    pub thread_count: u32,
    pub feed_bytes: u64,
}

impl Geometry {
    /// A region for recording: `ring_count` rings of `ring_bytes`.
    pub const fn record(ring_count: u32, ring_bytes: u32) -> Geometry {
        Geometry { ring_count, ring_bytes, thread_count: 0, feed_bytes: 0 }
    }

    /// A region for replay: room for `thread_count` threads and a feed of `feed_bytes`.
    pub const fn replay(thread_count: u32, feed_bytes: u64) -> Geometry {
        Geometry { ring_count: 0, ring_bytes: 0, thread_count, feed_bytes }
    }

    /// This replay region with recording rings too: a backup's program records on from where
    /// its replay ends, once promoted.
    pub const fn with_rings(self, ring_count: u32, ring_bytes: u32) -> Geometry {
        Geometry { ring_count, ring_bytes, ..self }
    }

    pub fn notes_offset(&self) -> usize {
        PAGE
    }

    pub fn inode_locks_offset(&self) -> usize {
        self.notes_offset() + notes::NOTES_LEN
    }

    pub fn pipes_offset(&self) -> usize {
        self.inode_locks_offset() + inodes::INODE_LOCKS_LEN
    }

    pub fn slots_offset(&self) -> usize {
        self.pipes_offset() + pipes::PIPES_LEN
    }

    pub fn rings_offset(&self) -> usize {
        let slots = self.ring_count as usize * core::mem::size_of::<SlotHeader>();
        self.slots_offset() + slots.div_ceil(PAGE) * PAGE
    }

    pub fn replay_offset(&self) -> usize {
        self.rings_offset() + self.ring_count as usize * self.ring_bytes as usize
    }

    pub fn threads_offset(&self) -> usize {
        self.replay_offset() + PAGE
    }

    pub fn feed_offset(&self) -> usize {
        let threads = self.thread_count as usize * core::mem::size_of::<feed::ThreadSlot>();
        self.threads_offset() + threads.div_ceil(PAGE) * PAGE
    }

    pub fn has_feed(&self) -> bool {
        self.thread_count > 0
    }

    pub fn total_len(&self) -> usize {
        if self.has_feed() {
            self.feed_offset() + self.feed_bytes as usize
        } else {
            self.replay_offset()
        }
    }

    pub fn is_valid(&self) -> bool {
        let rings_ok = self.ring_count == 0
            || (self.ring_count <= 4096 && self.ring_bytes.is_power_of_two() && self.ring_bytes >= MIN_RING_BYTES);
        let feed_ok = self.thread_count == 0
            || (self.thread_count <= 4096
                && self.feed_bytes.is_power_of_two()
                && self.feed_bytes >= MIN_FEED_BYTES
                && self.feed_bytes <= 1 << 40);
        rings_ok && feed_ok && (self.ring_count > 0 || self.thread_count > 0)
    }
}

/// A mapped region. Cheap to copy: it does not own the mapping.
#[derive(Clone, Copy)]
pub struct Region {
    base: NonNull<u8>,
    geometry: Geometry,
}

// SAFETY: all shared state in the region is accessed through atomics, and ring bytes are only
// written by the slot's single producer before it publishes `tail` (release) and only read by the
// consumer below the published `tail` (acquire).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Writes a fresh header and zeroed slot table into `base`.
    ///
    /// # Safety
    /// `base` must point to `geometry.total_len()` writable bytes, page aligned, zero-filled (a
    /// new memfd), not yet shared with any other user.
    pub unsafe fn init(base: *mut u8, geometry: Geometry, mode: Mode) -> Result<Region, LayoutError> {
        if !geometry.is_valid() {
            return Err(LayoutError::Geometry);
        }
        let header = base as *mut ShmHeader;
        // SAFETY: the caller guarantees `base` is valid, aligned and exclusively ours; a zeroed
        // ShmHeader is a valid value (atomics and integers), so writing its fields is sound.
        unsafe {
            (*header).ring_count = geometry.ring_count;
            (*header).ring_bytes = geometry.ring_bytes;
            (*header).thread_count = geometry.thread_count;
            (*header).feed_bytes = geometry.feed_bytes;
            (*header).mode = mode as u32;
            (*header).total_len = geometry.total_len() as u64;
            (*header).next_seq.store(1, Ordering::Relaxed);
            (*header).next_lpid.store(crate::ids::FIRST_PID.0 + 1, Ordering::Relaxed);
            (*header).version = VERSION;
            (*header).magic = MAGIC;
        }
        // SAFETY: the header was just written and checked by `attach`.
        unsafe { Region::attach(base, geometry.total_len()) }
    }

    /// Validates an existing region.
    ///
    /// # Safety
    /// `base` must point to `len` bytes mapped shared and readable/writable for as long as the
    /// returned `Region` (or any copy) is used.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Region, LayoutError> {
        if len < PAGE {
            return Err(LayoutError::TooSmall { len });
        }
        if !(base as usize).is_multiple_of(PAGE) {
            return Err(LayoutError::Misaligned);
        }
        let header = base as *const ShmHeader;
        // SAFETY: at least one page is mapped (checked above); the caller vouches for validity.
        let (magic, version) = unsafe { ((*header).magic, (*header).version) };
        if magic != MAGIC {
            return Err(LayoutError::BadMagic);
        }
        if version != VERSION {
            return Err(LayoutError::Version { found: version });
        }
        // SAFETY: as above; the header's version matches this build's layout.
        let geometry = unsafe {
            Geometry {
                ring_count: (*header).ring_count,
                ring_bytes: (*header).ring_bytes,
                thread_count: (*header).thread_count,
                feed_bytes: (*header).feed_bytes,
            }
        };
        if !geometry.is_valid() {
            return Err(LayoutError::Geometry);
        }
        if geometry.total_len() > len {
            return Err(LayoutError::TooSmall { len });
        }
        let base = NonNull::new(base).ok_or(LayoutError::TooSmall { len: 0 })?;
        Ok(Region { base, geometry })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// What the region was made for.
    pub fn mode(&self) -> Option<Mode> {
        match self.header().mode {
            1 => Some(Mode::Record),
            2 => Some(Mode::Replay),
            _ => None,
        }
    }

    /// A pointer `offset` bytes into the region (within the validated length).
    fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.geometry.total_len());
        // SAFETY: offsets come from the validated geometry, inside the mapping.
        unsafe { self.base.as_ptr().add(offset) }
    }

    #[inline(always)]
    pub fn header(&self) -> &ShmHeader {
        // SAFETY: validated in `attach`; the header lives as long as the mapping.
        unsafe { &*(self.base.as_ptr() as *const ShmHeader) }
    }

    /// The slot header of ring `index` (panics if out of range).
    #[inline(always)]
    pub fn slot(&self, index: u32) -> &SlotHeader {
        assert!(index < self.geometry.ring_count);
        let off = self.geometry.slots_offset() + index as usize * core::mem::size_of::<SlotHeader>();
        // SAFETY: in bounds of the validated slot table; SlotHeader is all atomics and padding.
        unsafe { &*(self.base.as_ptr().add(off) as *const SlotHeader) }
    }

    fn ring_data(&self, index: u32) -> *mut u8 {
        self.at(self.geometry.rings_offset() + index as usize * self.geometry.ring_bytes as usize)
    }

    /// Takes the next sequence number. The shim's counters stay raw integers (a [`Seq`] is made
    /// where an event header is filled).
    #[inline(always)]
    pub fn take_seq(&self) -> u64 {
        self.header().next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A backup's program goes live as the group's primary and records on: its next event is
    /// numbered `next_seq`, its next process `next_lpid`, as if the primary had gone on. Set by
    /// the agent before it tells the program to go live; needs the region's rings.
    pub fn record_on_from(&self, next_seq: u64, next_lpid: u32) {
        let h = self.header();
        h.next_seq.store(next_seq, Ordering::Relaxed);
        h.next_lpid.fetch_max(next_lpid, Ordering::Relaxed);
        h.record_after_replay.store(1, Ordering::Release);
    }

    /// Whether the program records on once its replay ends (see [`Region::record_on_from`]).
    pub fn records_after_replay(&self) -> bool {
        self.geometry.ring_count > 0 && self.header().record_after_replay.load(Ordering::Acquire) != 0
    }

    /// Hands out a logical pid.
    pub fn take_lpid(&self) -> u32 {
        self.header().next_lpid.fetch_add(1, Ordering::Relaxed)
    }

    /// Notes that the pipe with inode `inode` leads outside the program (it was open when the
    /// program started), so that every process of the program that comes to hold it knows it as
    /// one. False when the table is full.
    pub fn add_outside_pipe(&self, inode: u64) -> bool {
        if inode == 0 || self.is_outside_pipe(inode) {
            return true;
        }
        let table = &self.header().outside_pipes;
        table.iter().any(|e| e.compare_exchange(0, inode, Ordering::AcqRel, Ordering::Relaxed).is_ok())
    }

    /// Whether the pipe with inode `inode` leads outside the program.
    pub fn is_outside_pipe(&self, inode: u64) -> bool {
        inode != 0 && self.header().outside_pipes.iter().any(|e| e.load(Ordering::Acquire) == inode)
    }

    /// Wakes the agent if it sleeps.
    pub fn ring_doorbell(&self) {
        let h = self.header();
        h.doorbell.fetch_add(1, Ordering::Release);
        if h.agent_sleeping.load(Ordering::Acquire) != 0 {
            sys::futex_wake(&h.doorbell, 1);
        }
    }

    /// Agent side: sleeps until a producer rings or `timeout_ns` passes.
    pub fn wait_doorbell(&self, seen: u32, timeout_ns: u64) {
        let h = self.header();
        h.agent_sleeping.store(1, Ordering::SeqCst);
        sys::futex_wait(&h.doorbell, seen, timeout_ns);
        h.agent_sleeping.store(0, Ordering::Relaxed);
    }

    /// Copies bytes from ring `index` at stream position `pos` (wrapping) into `out`.
    fn copy_out(&self, index: u32, pos: u64, out: &mut [u8]) {
        let mask = self.geometry.ring_bytes as u64 - 1;
        // SAFETY: the ring is `ring_bytes` long; these bytes lie below the producer's published
        // tail, so the producer no longer writes them.
        unsafe { copy_from_circular(self.ring_data(index), mask, pos, out) }
    }
}

/// Copies `out.len()` bytes starting at stream position `pos` of the circular buffer at `data`
/// (`mask + 1` bytes long) into `out`, in at most two pieces.
///
/// # Safety
/// `data` points to `mask + 1` readable bytes, `out.len() <= mask + 1`, and nobody writes the
/// bytes read meanwhile.
unsafe fn copy_from_circular(data: *const u8, mask: u64, pos: u64, out: &mut [u8]) {
    let size = (mask + 1) as usize;
    let start = (pos & mask) as usize;
    let first = out.len().min(size - start);
    // SAFETY: per the caller; both pieces stay inside the buffer.
    unsafe {
        core::ptr::copy_nonoverlapping(data.add(start), out.as_mut_ptr(), first);
        core::ptr::copy_nonoverlapping(data, out.as_mut_ptr().add(first), out.len() - first);
    }
}

/// Copies `bytes` into the circular buffer at `data` at stream position `pos`; returns the
/// position after them.
///
/// # Safety
/// `data` points to `mask + 1` writable bytes, `bytes.len() <= mask + 1`, and nobody reads the
/// bytes written meanwhile.
#[inline(always)]
unsafe fn copy_into_circular(data: *mut u8, mask: u64, pos: u64, bytes: &[u8]) -> u64 {
    let size = (mask + 1) as usize;
    let start = (pos & mask) as usize;
    let first = bytes.len().min(size - start);
    // SAFETY: per the caller; both pieces stay inside the buffer.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(start), first);
        if first < bytes.len() {
            core::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), data, bytes.len() - first);
        }
    }
    pos + bytes.len() as u64
}

/// A thread's write end of its ring. Lives in the thread's own memory (not shared), so the
/// cached positions cost no shared-memory traffic.
#[derive(Clone, Copy)]
pub struct Producer {
    region: Region,
    index: u32,
    slot: *const SlotHeader,
    data: *mut u8,
    mask: u64,
    tail: u64,
    /// Writes that end at or below this need no look at the consumer's head: it is at most the
    /// last head seen plus the ring's size, so nothing unread is overwritten.
    check_at: u64,
}

// SAFETY: a Producer is the single writer of its slot; moving it to another thread moves that
// role with it. It is deliberately not Sync: two threads must never write through one Producer.
unsafe impl Send for Producer {}

impl Producer {
    /// Claims a free slot for a thread. Returns `None` when every slot is taken.
    pub fn claim(region: Region, owner_pid: i32, owner_tid: i32, lpid: u32, ltid: u32) -> Option<Producer> {
        for index in 0..region.geometry.ring_count {
            let slot = region.slot(index);
            if slot.state.compare_exchange(SLOT_FREE, SLOT_CLAIMING, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            slot.owner_pid.store(owner_pid, Ordering::Relaxed);
            slot.owner_tid.store(owner_tid, Ordering::Relaxed);
            slot.lpid.store(lpid, Ordering::Relaxed);
            slot.ltid.store(ltid, Ordering::Relaxed);
            slot.producer_waiting.store(0, Ordering::Relaxed);
            let tail = slot.tail.load(Ordering::Relaxed);
            let head = slot.head.load(Ordering::Acquire);
            slot.state.store(SLOT_ACTIVE, Ordering::Release);
            region.header().slots_high.fetch_max(index + 1, Ordering::SeqCst);
            return Some(Producer {
                region,
                index,
                slot,
                data: region.ring_data(index),
                mask: region.geometry.ring_bytes as u64 - 1,
                tail,
                check_at: head + region.geometry.ring_bytes as u64 / 2,
            });
        }
        None
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    #[inline(always)]
    pub fn region(&self) -> Region {
        self.region
    }

    #[inline(always)]
    fn slot(&self) -> &SlotHeader {
        // SAFETY: `slot` points into the region's slot table, which lives as long as `region`.
        unsafe { &*self.slot }
    }

    /// Takes the next sequence number for this thread's next event.
    #[inline(always)]
    pub fn take_seq(&self) -> u64 {
        let seq = self.region.take_seq();
        self.slot().reserved.store(seq, Ordering::Relaxed);
        seq
    }

    /// Appends one event: `fill` sets the header's fields (written in place, straight into the
    /// ring), then the payload parts follow back to back. `payload_len` is the parts' total and
    /// must not exceed [`MAX_PAYLOAD`]. Blocks (sleeping, never spinning) while the ring is full.
    #[inline(always)]
    pub fn write_with(&mut self, payload_len: usize, fill: impl FnOnce(&mut EventHeader), parts: &[&[u8]]) {
        debug_assert!(payload_len <= MAX_PAYLOAD);
        let len = record_len(payload_len) as u64;
        let cap = self.mask + 1;
        if self.tail + len > self.check_at {
            self.make_room(len);
        }
        let start = (self.tail & self.mask) as usize;
        if start + len as usize <= cap as usize {
            // SAFETY: the record fits before the end of the ring, `make_room` guaranteed the
            // consumer is done with these bytes, and ring offsets are multiples of 8, so the
            // header is aligned; every bit pattern is a valid EventHeader (Pod). This thread is
            // the slot's only producer.
            unsafe {
                let dst = self.data.add(start);
                let header = &mut *(dst as *mut EventHeader);
                fill(header);
                header.payload_len = payload_len as u32;
                if payload_len > 0 {
                    let mut at = dst.add(HEADER_LEN);
                    for part in parts {
                        core::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                        at = at.add(part.len());
                    }
                    core::ptr::write_bytes(at, 0, dst.add(len as usize).offset_from(at) as usize);
                }
            }
        } else {
            let mut header = EventHeader::zeroed();
            fill(&mut header);
            header.payload_len = payload_len as u32;
            let mut pos = self.put(self.tail, bytemuck::bytes_of(&header));
            for part in parts {
                pos = self.put(pos, part);
            }
            let pad = (len - HEADER_LEN as u64 - payload_len as u64) as usize;
            self.put(pos, &[0u8; 8][..pad]);
        }
        self.tail += len;
        self.slot().tail.store(self.tail, Ordering::Release);
        // Ask for the lines the next records go to now: the consumer last read them on another
        // core, and a store that misses would otherwise stall the next sequence-number add.
        prefetch_for_write(self.data.wrapping_add(((self.tail + 128) & self.mask) as usize));
        prefetch_for_write(self.data.wrapping_add(((self.tail + 192) & self.mask) as usize));
    }

    /// Appends a ready-made header and its payload parts (see [`Producer::write_with`]).
    #[inline]
    pub fn write(&mut self, header: &EventHeader, parts: &[&[u8]]) {
        self.write_with(header.payload_len as usize, |h| *h = *header, parts);
    }

    #[inline(always)]
    fn put(&mut self, pos: u64, bytes: &[u8]) -> u64 {
        // SAFETY: the ring is `mask + 1` bytes; `make_room` guaranteed the consumer has finished
        // with these bytes; this thread is the slot's only producer.
        unsafe { copy_into_circular(self.data, self.mask, pos, bytes) }
    }

    /// Slow path, at most once per eighth of the ring written: look at the consumer's head. Past
    /// half full, wake the agent; when full, sleep until the record fits.
    #[cold]
    fn make_room(&mut self, len: u64) {
        let cap = self.mask + 1;
        // SAFETY: see `slot()`; a separate reference so `self` stays free to update.
        let slot = unsafe { &*self.slot };
        let mut head = slot.head.load(Ordering::Acquire);
        if self.tail + len - head > cap / 2 {
            self.region.ring_doorbell();
        }
        while self.tail + len - head > cap {
            let seen = slot.head_wake.load(Ordering::Acquire);
            slot.producer_waiting.store(1, Ordering::SeqCst);
            head = slot.head.load(Ordering::Acquire);
            if self.tail + len - head <= cap {
                break;
            }
            self.region.ring_doorbell();
            sys::futex_wait(&slot.head_wake, seen, 10_000_000);
            head = slot.head.load(Ordering::Acquire);
        }
        slot.producer_waiting.store(0, Ordering::Relaxed);
        self.check_at = (head + cap).min(self.tail + cap / 8).max(self.tail + len);
    }

    /// Gives the slot back: the agent frees it after draining what is left.
    pub fn close(&self) {
        self.slot().state.store(SLOT_CLOSED, Ordering::Release);
        self.region.ring_doorbell();
    }
}

/// Hints that the cache line at `p` is about to be written. Never faults, whatever `p` is.
#[inline(always)]
fn prefetch_for_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetchw only hints the cache; it has no architectural effect and cannot fault.
    unsafe {
        core::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above, for the ARM store prefetch.
    unsafe {
        core::arch::asm!("prfm pstl1keep, [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
}

/// Consumer side of one slot, as seen by the agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SlotView {
    pub state: u32,
    /// The sequence number the slot's thread took last.
    pub reserved: Seq,
    pub head: u64,
    pub tail: u64,
    pub owner_pid: i32,
    pub owner_tid: i32,
    pub lpid: LogicalPid,
    pub ltid: LogicalTid,
}

impl Region {
    /// A snapshot of slot `index`: what the agent needs to decide whether to read it.
    pub fn slot_view(&self, index: u32) -> SlotView {
        let s = self.slot(index);
        let state = s.state.load(Ordering::Acquire);
        SlotView {
            state,
            reserved: Seq(s.reserved.load(Ordering::Relaxed)),
            head: s.head.load(Ordering::Relaxed),
            tail: s.tail.load(Ordering::Acquire),
            owner_pid: s.owner_pid.load(Ordering::Relaxed),
            owner_tid: s.owner_tid.load(Ordering::Relaxed),
            lpid: LogicalPid(s.lpid.load(Ordering::Relaxed)),
            ltid: LogicalTid(s.ltid.load(Ordering::Relaxed)),
        }
    }

    /// The producer's published tail of ring `index`.
    #[inline]
    pub fn published_tail(&self, index: u32) -> u64 {
        self.slot(index).tail.load(Ordering::Acquire)
    }

    /// Reads the event header at `head` of ring `index`; `tail` is the published tail the caller
    /// observed (so the header is complete). Returns `None` if the ring is empty.
    pub fn peek_header(&self, index: u32, head: u64, tail: u64) -> Option<EventHeader> {
        if tail.saturating_sub(head) < HEADER_LEN as u64 {
            return None;
        }
        let mut buf = [0u8; HEADER_LEN];
        self.copy_out(index, head, &mut buf);
        Some(bytemuck::pod_read_unaligned(&buf))
    }

    /// The sequence number, call id and record length of the event at `head` of ring `index`,
    /// whose header lies below the published tail. Reads those fields alone: the merge walks
    /// every event of a run this way and copies the run in one piece.
    pub fn peek_seq_call_len(&self, index: u32, head: u64) -> (u64, u16, usize) {
        let mask = self.geometry.ring_bytes as u64 - 1;
        let data = self.ring_data(index);
        let field = |offset: usize| ((head + offset as u64) & mask) as usize;
        // SAFETY: records start at multiples of 8 and the ring's length is a power of two of at
        // least a header, so no field wraps; all lie below the published tail, so the producer
        // no longer writes them.
        let (seq, call, payload_len) = unsafe {
            (
                core::ptr::read_unaligned(data.add(field(core::mem::offset_of!(EventHeader, seq))) as *const u64),
                core::ptr::read_unaligned(data.add(field(core::mem::offset_of!(EventHeader, call))) as *const u16),
                core::ptr::read_unaligned(
                    data.add(field(core::mem::offset_of!(EventHeader, payload_len))) as *const u32
                ),
            )
        };
        (seq, call, record_len(payload_len as usize))
    }

    /// Appends the `len` bytes at `head` of ring `index` (whole records below the published
    /// tail) to `out`.
    #[cfg(feature = "host")]
    pub fn copy_records(&self, index: u32, head: u64, len: usize, out: &mut Vec<u8>) {
        assert!(len <= self.geometry.ring_bytes as usize);
        out.reserve(len);
        let at = out.len();
        let mask = self.geometry.ring_bytes as u64 - 1;
        // SAFETY: `reserve` made room for `len` more bytes after `at`; `len` fits in the ring and
        // the bytes lie below the producer's published tail, so it no longer writes them. Every
        // byte up to `at + len` is written before the length covers it.
        unsafe {
            let room = core::slice::from_raw_parts_mut(out.as_mut_ptr().add(at), len);
            copy_from_circular(self.ring_data(index), mask, head, room);
            out.set_len(at + len);
        }
    }

    /// Marks `new_head` consumed on ring `index` and wakes its producer if it waits for room.
    pub fn advance_head(&self, index: u32, new_head: u64) {
        let s = self.slot(index);
        s.head.store(new_head, Ordering::Release);
        s.head_wake.fetch_add(1, Ordering::Release);
        if s.producer_waiting.load(Ordering::SeqCst) != 0 {
            sys::futex_wake(&s.head_wake, 1);
        }
    }

    /// Frees a closed slot whose ring is drained (`head` as the consumer last advanced it equals
    /// the tail), so a new thread can claim it.
    pub fn free_slot(&self, index: u32) -> bool {
        let s = self.slot(index);
        s.head.load(Ordering::Acquire) == s.tail.load(Ordering::Acquire)
            && s.state.compare_exchange(SLOT_CLOSED, SLOT_FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Closes a slot whose owner died without closing it (killed, or gone through `exec`).
    pub fn close_orphan(&self, index: u32) -> bool {
        self.slot(index).state.compare_exchange(SLOT_ACTIVE, SLOT_CLOSED, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

#[cfg(feature = "host")]
mod host;
#[cfg(feature = "host")]
pub use host::SharedRegion;

#[cfg(test)]
mod tests;
