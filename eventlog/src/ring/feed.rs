//! The replay feed: a backup program's events, in sequence order, in shared memory.
//!
//! The agent appends whole event records as they arrive (from a log file, later from the
//! network). The program's threads consume them strictly one at a time: the event at the read
//! position belongs to exactly one logical thread, which alone may consume it ("holds the turn").
//! Consuming advances the read position and wakes exactly the owner of the next event through its
//! futex in the thread table. A thread whose own event is next never sleeps.
//!
//! The control page also carries the run's state (replaying or live), the end-of-log flag, and
//! the first divergence report.

use super::{copy_from_circular, copy_into_circular, sys, Region};
use crate::ids::{LogicalPid, LogicalTid, Seq};
use crate::record::{EventHeader, HEADER_LEN};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// An exhaustive model of the futex hand-offs below.
#[cfg(test)]
mod model;

/// Feed states.
pub const STATE_REPLAYING: u32 = 0;
/// The log is exhausted and the program runs for real from here on.
pub const STATE_LIVE: u32 = 1;

/// What a thread is doing, for stall reports.
pub const PHASE_RUNNING: u32 = 0;
/// Waiting for its turn to make `call`.
pub const PHASE_WAITING: u32 = 1;
/// Holds the turn and is inside the real `call`.
pub const PHASE_IN_CALL: u32 = 2;

const THREAD_FREE: u32 = 0;
const THREAD_CLAIMING: u32 = 1;
const THREAD_ACTIVE: u32 = 2;
/// Given back by its thread (exit, exec). Only the agent frees a slot ([`Feed::reap`]), so a
/// slot it finds active under a dead thread cannot have been taken by another meanwhile.
const THREAD_EXITED: u32 = 3;

/// Bytes of a divergence report.
pub const REPORT_BYTES: usize = 2048;

/// The replay control page.
#[repr(C, align(64))]
pub struct ReplayControl {
    // Written by the agent.
    pub write_pos: AtomicU64,
    /// Events appended so far.
    pub appended: AtomicU64,
    /// Non-zero once no more events will be appended.
    pub eof: AtomicU32,
    pub state: AtomicU32,
    /// One past the highest thread slot ever claimed (bounds the owner search).
    pub threads_high: AtomicU32,
    _pad0: [u8; 36],
    // Written by the thread holding the turn.
    pub read_pos: AtomicU64,
    /// Sequence number of the last event consumed (0 before the first).
    pub delivered: AtomicU64,
    /// Bumped whenever the read position moves (the agent waits on it for room).
    pub progress: AtomicU32,
    _pad1: [u8; 44],
    // Written by the agent.
    /// How many of `flag_mutexes` are filled in.
    pub flag_count: AtomicU32,
    _pad3: [u8; 4],
    pub flag_mutexes: [FlagMutex; FLAG_MUTEXES],
    _pad4: [u8; 24],
    /// 0: no report; 1: being written; 2: written.
    pub report_state: AtomicU32,
    pub report_len: AtomicU32,
    pub report_seq: AtomicU64,
    _pad2: [u8; 48],
    report: UnsafeCell<[u8; REPORT_BYTES]>,
    _reserved: [u8; super::PAGE - 320 - REPORT_BYTES],
}

const _: () = assert!(core::mem::size_of::<ReplayControl>() == super::PAGE);

/// How many mutexes with a timed-out condition wait the agent notes (see [`Feed::held_back_by_flag_mutex`]).
pub const FLAG_MUTEXES: usize = 4;

/// A mutex a condition wait timed out on, in the primary's log.
#[repr(C)]
pub struct FlagMutex {
    pub lpid: AtomicU32,
    _pad: [u8; 4],
    /// The mutex's address in that process.
    pub addr: AtomicU64,
    /// Sequence number of the first timed-out wait on it.
    pub since: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<FlagMutex>() == 24);
const _: () = assert!(core::mem::offset_of!(ReplayControl, report_state) == 256);

/// `ETIMEDOUT`, as a condition wait returns it (the same number on every Linux architecture).
const ETIMEDOUT: i64 = 110;

/// The mutex a lock or condition-wait event is about (same process), if it is one.
fn mutex_of(h: &EventHeader) -> Option<u64> {
    use crate::Call;
    let call = h.call;
    if [Call::MutexLock, Call::MutexTrylock, Call::MutexTimedlock, Call::MutexUnlock].iter().any(|c| *c as u16 == call)
    {
        Some(h.aux[0])
    } else if [Call::CondWait, Call::CondTimedwait, Call::CondWaitRelease].iter().any(|c| *c as u16 == call) {
        Some(h.aux[1])
    } else {
        None
    }
}

/// One thread of the backup program.
#[repr(C, align(64))]
pub struct ThreadSlot {
    pub state: AtomicU32,
    pub lpid: AtomicU32,
    pub ltid: AtomicU32,
    pub os_pid: AtomicI32,
    pub os_tid: AtomicI32,
    /// Futex word: bumped by whoever hands this thread the turn.
    pub wake: AtomicU32,
    /// Non-zero while the thread sleeps (or is about to) on `wake`.
    pub sleeping: AtomicU32,
    pub phase: AtomicU32,
    /// The call the thread waits to make, or is making.
    pub call: AtomicU32,
    _pad: [u8; 28],
}

const _: () = assert!(core::mem::size_of::<ThreadSlot>() == 64);

impl ThreadSlot {
    /// Whether a live thread holds this slot.
    pub fn is_active(&self) -> bool {
        self.state.load(Ordering::Acquire) == THREAD_ACTIVE
    }
}

/// A view of a region's feed. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Feed {
    ctl: *const ReplayControl,
    threads: *const ThreadSlot,
    thread_count: u32,
    data: *mut u8,
    mask: u64,
}

// SAFETY: all shared state is atomics; feed bytes are written by the agent only above the
// published write position and read by the turn holder only below it.
unsafe impl Send for Feed {}
// SAFETY: as above.
unsafe impl Sync for Feed {}

/// The next event, as the turn holder sees it.
#[derive(Clone, Copy, Debug)]
pub struct Next {
    pub header: EventHeader,
    /// Stream position of the record.
    pub pos: u64,
}

impl Region {
    /// The feed, if this region was made for replay.
    pub fn feed(&self) -> Option<Feed> {
        let g = self.geometry;
        g.has_feed().then(|| Feed {
            ctl: self.at(g.replay_offset()) as *const ReplayControl,
            threads: self.at(g.threads_offset()) as *const ThreadSlot,
            thread_count: g.thread_count,
            data: self.at(g.feed_offset()),
            mask: g.feed_bytes - 1,
        })
    }
}

impl Feed {
    #[inline(always)]
    pub fn control(&self) -> &ReplayControl {
        // SAFETY: the control page lies inside the validated mapping.
        unsafe { &*self.ctl }
    }

    pub fn thread(&self, index: u32) -> &ThreadSlot {
        assert!(index < self.thread_count);
        // SAFETY: in bounds of the validated thread table.
        unsafe { &*self.threads.add(index as usize) }
    }

    pub fn is_live(&self) -> bool {
        self.control().state.load(Ordering::Acquire) == STATE_LIVE
    }

    // ---- consumers (the program's threads) -----------------------------------------------

    /// The event at the read position, if the agent has appended it.
    #[inline]
    pub fn peek(&self) -> Option<Next> {
        self.peek_seen(&mut 0)
    }

    /// [`Feed::peek`], given `known_end`, a write position seen before (it only grows): while it
    /// covers the header, the agent's line, which another core writes as it appends, is not read.
    #[inline]
    pub fn peek_seen(&self, known_end: &mut u64) -> Option<Next> {
        let c = self.control();
        let pos = c.read_pos.load(Ordering::SeqCst);
        if pos + HEADER_LEN as u64 > *known_end {
            *known_end = c.write_pos.load(Ordering::SeqCst);
            if pos + HEADER_LEN as u64 > *known_end {
                return None;
            }
        }
        let mut buf = [0u8; HEADER_LEN];
        // SAFETY: the record below a write position read was complete then; if the turn has
        // moved on since, the agent may be refilling these bytes, which the check below sees.
        unsafe { copy_from_circular(self.data, self.mask, pos, &mut buf) };
        // A waiter's look may be overtaken: the turn moves on and the agent refills the freed
        // room with a later record at the same bytes. Only while `read_pos` has not moved is the
        // header the one at `pos` (the model test in feed/model.rs shows the stale turn otherwise).
        core::sync::atomic::fence(Ordering::Acquire);
        if c.read_pos.load(Ordering::Relaxed) != pos {
            return None;
        }
        Some(Next { header: bytemuck::pod_read_unaligned(&buf), pos })
    }

    /// The first event of thread `pid.tid` at or after the read position, if the agent has
    /// appended it: a look ahead, without the turn (a read from a `popen` stream's pipe learns its
    /// count from it).
    pub fn find_ahead(&self, pid: LogicalPid, tid: LogicalTid) -> Option<Next> {
        self.look_ahead(|n| (n.header.pid == pid && n.header.tid == tid).then_some(*n))
    }

    /// The next event of thread `pid.tid` among the first `within` events from the read position,
    /// with how many events of other threads come before it: `Some(None)` if it is not among
    /// them, `None` if fewer than `within` are appended and it is not among those yet.
    pub fn next_within(&self, pid: LogicalPid, tid: LogicalTid, within: usize) -> Option<Option<(Next, usize)>> {
        let mut before = 0usize;
        self.look_ahead(|n| {
            if n.header.pid == pid && n.header.tid == tid {
                return Some(Some((*n, before)));
            }
            before += 1;
            (before >= within).then_some(None)
        })
    }

    /// Shows `visit` each appended event from the read position on, in order, until it returns
    /// something. The records before the one it looks at may be consumed, and their bytes
    /// refilled, meanwhile: it goes on from the new read position then (those events have
    /// happened), never showing an event twice.
    fn look_ahead<T>(&self, mut visit: impl FnMut(&Next) -> Option<T>) -> Option<T> {
        let c = self.control();
        let mut seen = 0u64;
        'look: loop {
            let mut pos = c.read_pos.load(Ordering::SeqCst);
            let end = c.write_pos.load(Ordering::SeqCst);
            while end.saturating_sub(pos) >= HEADER_LEN as u64 {
                let mut buf = [0u8; HEADER_LEN];
                // SAFETY: below `write_pos`; checked below against the turn moving past it (only
                // then may the agent refill these bytes).
                unsafe { copy_from_circular(self.data, self.mask, pos, &mut buf) };
                core::sync::atomic::fence(Ordering::Acquire);
                if c.read_pos.load(Ordering::Relaxed) > pos {
                    continue 'look;
                }
                let next = Next { header: bytemuck::pod_read_unaligned(&buf), pos };
                pos += next.header.record_len() as u64;
                if next.header.seq.0 <= seen {
                    continue;
                }
                seen = next.header.seq.0;
                if let Some(found) = visit(&next) {
                    return Some(found);
                }
            }
            return None;
        }
    }

    /// Whether `h` is an event on a mutex a condition wait timed out on (at or before it).
    pub fn on_flag_mutex(&self, h: &EventHeader) -> bool {
        let c = self.control();
        let n = (c.flag_count.load(Ordering::Acquire) as usize).min(FLAG_MUTEXES);
        mutex_of(h).is_some_and(|m| {
            c.flag_mutexes[..n].iter().any(|f| {
                f.lpid.load(Ordering::Relaxed) == h.pid.0
                    && f.addr.load(Ordering::Relaxed) == m
                    && f.since.load(Ordering::Relaxed) <= h.seq.0
            })
        })
    }

    /// Whether thread `pid.tid`, having just consumed an event, must wait for its next one to be
    /// due before it runs on: when that event is on a mutex some condition wait timed out on, and
    /// so is another thread's event before it (see `hold_for_flag_mutexes` in the shim). `None`
    /// while the thread's next event is not appended yet.
    pub fn held_back_by_flag_mutex(&self, pid: LogicalPid, tid: LogicalTid) -> Option<bool> {
        if self.control().flag_count.load(Ordering::Acquire) == 0 {
            return Some(false);
        }
        let mut touched = false;
        self.look_ahead(|n| {
            let h = &n.header;
            if h.pid == pid && h.tid == tid {
                return Some(touched && self.on_flag_mutex(h));
            }
            touched = touched || (h.pid == pid && self.on_flag_mutex(h));
            None
        })
    }

    /// Copies payload bytes `[offset, offset + out.len())` of the record at `pos`.
    pub fn copy_payload(&self, next: &Next, offset: usize, out: &mut [u8]) {
        let len = next.header.payload_len as usize;
        let n = out.len().min(len.saturating_sub(offset));
        let at = next.pos + (HEADER_LEN + offset) as u64;
        // SAFETY: the range lies inside a complete record below `write_pos`.
        unsafe { copy_from_circular(self.data, self.mask, at, &mut out[..n]) };
    }

    /// Consumes the event `next` (the caller holds the turn) and wakes the owner of the event
    /// after it.
    pub fn consume(&self, next: &Next) {
        let c = self.control();
        c.delivered.store(next.header.seq.0, Ordering::Relaxed);
        c.read_pos.store(next.pos + next.header.record_len() as u64, Ordering::SeqCst);
        c.progress.fetch_add(1, Ordering::Release);
        self.wake_owner_of_next();
    }

    /// Wakes whichever thread owns the event at the read position (if it has registered).
    pub fn wake_owner_of_next(&self) {
        if let Some(next) = self.peek() {
            if let Some(i) = self.find(next.header.pid.0, next.header.tid.0) {
                self.wake(i);
            }
        }
    }

    fn wake(&self, index: u32) {
        let t = self.thread(index);
        t.wake.fetch_add(1, Ordering::SeqCst);
        if t.sleeping.load(Ordering::SeqCst) != 0 {
            sys::futex_wake(&t.wake, 1);
        }
    }

    /// Registers a thread; returns its slot. `None` when the table is full.
    pub fn register(&self, lpid: u32, ltid: u32, os_pid: i32, os_tid: i32) -> Option<u32> {
        for i in 0..self.thread_count {
            let t = self.thread(i);
            if t.state.compare_exchange(THREAD_FREE, THREAD_CLAIMING, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            t.lpid.store(lpid, Ordering::Relaxed);
            t.ltid.store(ltid, Ordering::Relaxed);
            t.os_pid.store(os_pid, Ordering::Relaxed);
            t.os_tid.store(os_tid, Ordering::Relaxed);
            t.phase.store(PHASE_RUNNING, Ordering::Relaxed);
            t.sleeping.store(0, Ordering::Relaxed);
            t.state.store(THREAD_ACTIVE, Ordering::SeqCst);
            self.control().threads_high.fetch_max(i + 1, Ordering::SeqCst);
            return Some(i);
        }
        None
    }

    /// How many threads the table holds at once.
    pub fn thread_count(&self) -> u32 {
        self.thread_count
    }

    /// Gives a thread's slot back (thread exit, exec); the agent frees it.
    pub fn unregister(&self, index: u32) {
        self.thread(index).state.store(THREAD_EXITED, Ordering::Release);
    }

    /// The agent: frees the slots given back and, with `is_alive`, those of threads that ended
    /// without giving theirs back (a process's exit ends all its threads at once). Returns how
    /// many.
    #[cfg(feature = "host")]
    pub fn reap(&self, is_alive: Option<&dyn Fn(i32, i32) -> bool>) -> u32 {
        let high = self.control().threads_high.load(Ordering::SeqCst).min(self.thread_count);
        let mut freed = 0;
        for i in 0..high {
            let t = self.thread(i);
            let state = t.state.load(Ordering::Acquire);
            let gone = match (state, is_alive) {
                (THREAD_EXITED, _) => true,
                (THREAD_ACTIVE, Some(alive)) => {
                    !alive(t.os_pid.load(Ordering::Relaxed), t.os_tid.load(Ordering::Relaxed))
                }
                _ => false,
            };
            if gone && t.state.compare_exchange(state, THREAD_FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                freed += 1;
            }
        }
        freed
    }

    /// The registered slot of logical thread `lpid.ltid`.
    pub fn find(&self, lpid: u32, ltid: u32) -> Option<u32> {
        let high = self.control().threads_high.load(Ordering::SeqCst).min(self.thread_count);
        (0..high).find(|&i| {
            let t = self.thread(i);
            t.state.load(Ordering::SeqCst) == THREAD_ACTIVE
                && t.lpid.load(Ordering::Relaxed) == lpid
                && t.ltid.load(Ordering::Relaxed) == ltid
        })
    }

    /// Sleeps until slot `index` is woken (its `wake` word moves past `seen`) or `timeout_ns`
    /// passes. The caller stores `sleeping` and re-checks its condition first.
    pub fn sleep(&self, index: u32, seen: u32, timeout_ns: u64) {
        sys::futex_wait(&self.thread(index).wake, seen, timeout_ns);
    }

    /// Records the first divergence (later ones are dropped); returns whether this one was kept.
    pub fn report(&self, seq: Seq, text: &[u8]) -> bool {
        let c = self.control();
        if c.report_state.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        let n = text.len().min(REPORT_BYTES);
        // SAFETY: report_state 1 makes us the only writer; readers wait for state 2.
        unsafe { (&mut *c.report.get())[..n].copy_from_slice(&text[..n]) };
        c.report_seq.store(seq.0, Ordering::Relaxed);
        c.report_len.store(n as u32, Ordering::Relaxed);
        c.report_state.store(2, Ordering::Release);
        true
    }

    // ---- the agent -----------------------------------------------------------------------

    /// Bytes free for appending.
    pub fn room(&self) -> u64 {
        let c = self.control();
        (self.mask + 1) - (c.write_pos.load(Ordering::Relaxed) - c.read_pos.load(Ordering::Acquire))
    }

    /// Appends as many whole records from the front of `records` as fit; returns the bytes and
    /// events taken. `records` must be well-formed, consecutive records (a verified log batch).
    pub fn append(&self, records: &[u8]) -> (usize, u64) {
        let room = self.room() as usize;
        let (mut take, mut events) = (0usize, 0u64);
        while take + HEADER_LEN <= records.len() {
            let h: EventHeader = bytemuck::pod_read_unaligned(&records[take..take + HEADER_LEN]);
            let len = h.record_len();
            if take + len > room || take + len > records.len() {
                break;
            }
            if h.call == crate::Call::CondTimedwait as u16 && h.result == ETIMEDOUT {
                self.note_flag_mutex(&h);
            }
            take += len;
            events += 1;
        }
        if take == 0 {
            return (0, 0);
        }
        let c = self.control();
        let pos = c.write_pos.load(Ordering::Relaxed);
        // SAFETY: `take` bytes fit in the free part of the feed, which no consumer reads.
        unsafe { copy_into_circular(self.data, self.mask, pos, &records[..take]) };
        c.appended.fetch_add(events, Ordering::Relaxed);
        c.write_pos.store(pos + take as u64, Ordering::SeqCst);
        self.wake_owner_of_next();
        (take, events)
    }

    /// Notes the mutex of a condition wait that timed out (the first few such mutexes).
    fn note_flag_mutex(&self, h: &EventHeader) {
        let c = self.control();
        let n = c.flag_count.load(Ordering::Relaxed) as usize;
        let known =
            |f: &FlagMutex| f.lpid.load(Ordering::Relaxed) == h.pid.0 && f.addr.load(Ordering::Relaxed) == h.aux[1];
        if n >= FLAG_MUTEXES || c.flag_mutexes[..n].iter().any(known) {
            return;
        }
        let f = &c.flag_mutexes[n];
        f.lpid.store(h.pid.0, Ordering::Relaxed);
        f.addr.store(h.aux[1], Ordering::Relaxed);
        f.since.store(h.seq.0, Ordering::Relaxed);
        c.flag_count.store(n as u32 + 1, Ordering::Release);
    }

    /// No more events will come.
    pub fn finish(&self) {
        self.control().eof.store(1, Ordering::SeqCst);
        self.wake_all();
    }

    /// Whether every appended event was consumed and none will follow.
    pub fn exhausted(&self) -> bool {
        let c = self.control();
        c.eof.load(Ordering::SeqCst) != 0 && c.read_pos.load(Ordering::SeqCst) == c.write_pos.load(Ordering::SeqCst)
    }

    /// Switches the program to live execution and wakes every waiting thread.
    pub fn go_live(&self) {
        self.control().state.store(STATE_LIVE, Ordering::SeqCst);
        self.wake_all();
    }

    pub fn wake_all(&self) {
        let high = self.control().threads_high.load(Ordering::SeqCst).min(self.thread_count);
        for i in 0..high {
            if self.thread(i).state.load(Ordering::Acquire) == THREAD_ACTIVE {
                self.wake(i);
            }
        }
    }

    /// The sequence number of the last event consumed (zero before the first).
    pub fn delivered(&self) -> Seq {
        Seq(self.control().delivered.load(Ordering::Relaxed))
    }

    /// The divergence report, once one is complete: its sequence number and text.
    #[cfg(feature = "host")]
    pub fn take_report(&self) -> Option<(Seq, String)> {
        let c = self.control();
        if c.report_state.load(Ordering::Acquire) != 2 {
            return None;
        }
        let n = (c.report_len.load(Ordering::Relaxed) as usize).min(REPORT_BYTES);
        // SAFETY: state 2 means the writer is done; the bytes no longer change.
        let text = unsafe { String::from_utf8_lossy(&(&*c.report.get())[..n]).into_owned() };
        Some((Seq(c.report_seq.load(Ordering::Relaxed)), text))
    }

    /// A snapshot of every registered thread, for stall reports.
    #[cfg(feature = "host")]
    pub fn threads(&self) -> Vec<ThreadView> {
        let high = self.control().threads_high.load(Ordering::SeqCst).min(self.thread_count);
        (0..high)
            .map(|i| self.thread(i))
            .filter(|t| t.state.load(Ordering::Acquire) == THREAD_ACTIVE)
            .map(|t| ThreadView {
                lpid: LogicalPid(t.lpid.load(Ordering::Relaxed)),
                ltid: LogicalTid(t.ltid.load(Ordering::Relaxed)),
                os_pid: t.os_pid.load(Ordering::Relaxed),
                os_tid: t.os_tid.load(Ordering::Relaxed),
                phase: t.phase.load(Ordering::Relaxed),
                call: t.call.load(Ordering::Relaxed) as u16,
            })
            .collect()
    }
}

/// What a registered thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadView {
    pub lpid: LogicalPid,
    pub ltid: LogicalTid,
    pub os_pid: i32,
    pub os_tid: i32,
    pub phase: u32,
    pub call: u16,
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;
    use crate::call::Call;
    use crate::record::encode_into;
    use crate::ring::{Geometry, Mode, SharedRegion, MIN_FEED_BYTES};
    use std::sync::Arc;

    fn events(range: std::ops::Range<u64>, tid_of: impl Fn(u64) -> u32) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in range {
            let payload = vec![seq as u8; (seq % 5) as usize * 100];
            let h = EventHeader {
                pid: LogicalPid(1),
                tid: LogicalTid(tid_of(seq)),
                payload_len: payload.len() as u32,
                ..EventHeader::new(Seq(seq), Call::Read)
            };
            encode_into(&mut out, &h, &payload);
        }
        out
    }

    /// Two threads take turns strictly by the feed: each consumes only its own events, and the
    /// merged order of consumption is the feed's order.
    #[test]
    fn threads_consume_strictly_in_turn() {
        let shared = Arc::new(SharedRegion::create(Geometry::replay(8, MIN_FEED_BYTES), Mode::Replay).unwrap());
        let feed = shared.region().feed().unwrap();
        // Irregular ownership: runs of one thread, then alternation.
        let owner = |seq: u64| if seq % 7 < 3 { 1 } else { (seq % 2) as u32 + 1 };
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers: Vec<_> = (1..=2u32)
            .map(|tid| {
                let (keep, order) = (shared.clone(), order.clone());
                std::thread::spawn(move || {
                    let feed = keep.region().feed().unwrap();
                    let me = feed.register(1, tid, 1, tid as i32).unwrap();
                    let mine = (1..=20_000u64).filter(|&s| owner(s) == tid).count();
                    for _ in 0..mine {
                        loop {
                            let seen = feed.thread(me).wake.load(Ordering::SeqCst);
                            feed.thread(me).sleeping.store(1, Ordering::SeqCst);
                            match feed.peek() {
                                Some(n) if n.header.tid == LogicalTid(tid) => {
                                    feed.thread(me).sleeping.store(0, Ordering::Relaxed);
                                    let mut p = vec![0u8; n.header.payload_len as usize];
                                    feed.copy_payload(&n, 0, &mut p);
                                    assert!(p.iter().all(|&b| b == n.header.seq.0 as u8));
                                    order.lock().unwrap().push(n.header.seq);
                                    feed.consume(&n);
                                    break;
                                }
                                _ => feed.sleep(me, seen, 1_000_000_000),
                            }
                        }
                    }
                })
            })
            .collect();
        // Append in chunks that do not fit at once, so the feed wraps and the agent waits for room.
        let all = events(1..20_001, owner);
        let mut off = 0;
        while off < all.len() {
            let (took, _) = feed.append(&all[off..]);
            off += took;
            if took == 0 {
                std::thread::yield_now();
            }
        }
        feed.finish();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (1..=20_000).map(Seq).collect::<Vec<_>>());
        assert!(feed.exhausted());
    }

    /// A thread finds its own next event ahead of the read position, whoever's events come
    /// before it, and only events the agent has appended.
    #[test]
    fn a_thread_finds_its_next_event_ahead() {
        let shared = SharedRegion::create(Geometry::replay(2, MIN_FEED_BYTES), Mode::Replay).unwrap();
        let feed = shared.region().feed().unwrap();
        let owner = |seq: u64| if seq == 5 { 2 } else { 1 };
        feed.append(&events(1..5, owner));
        assert!(feed.find_ahead(LogicalPid(1), LogicalTid(2)).is_none(), "not appended yet");
        feed.append(&events(5..8, owner));
        let mine = feed.find_ahead(LogicalPid(1), LogicalTid(2)).unwrap();
        assert_eq!(mine.header.seq, Seq(5));
        assert_eq!(feed.find_ahead(LogicalPid(1), LogicalTid(1)).unwrap().header.seq, Seq(1));
        for _ in 0..2 {
            let n = feed.peek().unwrap();
            feed.consume(&n);
        }
        assert_eq!(feed.find_ahead(LogicalPid(1), LogicalTid(2)).unwrap().pos, mine.pos);
        assert_eq!(feed.find_ahead(LogicalPid(1), LogicalTid(1)).unwrap().header.seq, Seq(3));
        assert!(feed.find_ahead(LogicalPid(2), LogicalTid(1)).is_none());
    }

    #[test]
    fn first_report_wins() {
        let shared = SharedRegion::create(Geometry::replay(2, MIN_FEED_BYTES), Mode::Replay).unwrap();
        let feed = shared.region().feed().unwrap();
        assert!(feed.take_report().is_none());
        assert!(feed.report(Seq(7), b"first"));
        assert!(!feed.report(Seq(9), b"second"));
        assert_eq!(feed.take_report(), Some((Seq(7), "first".to_string())));
    }

    #[test]
    fn only_the_agent_frees_slots_given_back_or_left_by_dead_threads() {
        let shared = SharedRegion::create(Geometry::replay(3, MIN_FEED_BYTES), Mode::Replay).unwrap();
        let feed = shared.region().feed().unwrap();
        let exits = feed.register(1, 1, 100, 100).unwrap();
        let dies = feed.register(2, 1, 200, 200).unwrap();
        let lives = feed.register(3, 1, 300, 300).unwrap();
        assert_eq!(feed.register(4, 1, 400, 400), None, "three slots, three threads");
        feed.unregister(exits);
        // Given back, but not free until the agent says so.
        assert_eq!(feed.register(4, 1, 400, 400), None);
        assert_eq!(feed.find(1, 1), None);
        let alive = |_pid: i32, tid: i32| tid != 200;
        assert_eq!(feed.reap(None), 1, "a slot given back is freed without asking who lives");
        assert_eq!(feed.reap(Some(&alive)), 1, "the dead thread's slot is freed");
        assert_eq!(feed.find(3, 1), Some(lives));
        let mut taken = [feed.register(4, 1, 400, 400).unwrap(), feed.register(5, 1, 500, 500).unwrap()];
        taken.sort();
        let mut expected = [exits, dies];
        expected.sort();
        assert_eq!(taken, expected);
        assert_eq!(feed.reap(Some(&alive)), 0);
    }
}
