//! Restores the global order: events arrive in one ring per thread, each ring in sequence order;
//! the merger hands them out strictly by sequence number, waiting when the next one has been
//! taken by a thread that has not finished writing it.

use crate::call::{Call, CallSet};
use crate::ids::Seq;
use crate::record::{encode_into, EventHeader, HEADER_LEN};
use crate::ring::{Region, SLOT_ACTIVE, SLOT_CLOSED, SLOT_FREE};

pub struct Merger {
    region: Region,
    next_seq: Seq,
    /// Per slot: how far we have read, and the producer's tail as last seen. The tail is
    /// re-read only when we catch up with it, so a busy producer's cache line is not pulled over
    /// on every event.
    cursors: Vec<Cursor>,
    /// Slots that were not free at the last refresh.
    live: Vec<u32>,
    /// The slot the previous event came from (threads write in bursts).
    last: Option<u32>,
    /// The calls of the events the last drain took.
    taken: CallSet,
}

#[derive(Clone, Copy, Default)]
struct Cursor {
    head: u64,
    tail: u64,
}

impl Merger {
    pub fn new(region: Region) -> Merger {
        Merger::from_seq(region, Seq::FIRST)
    }

    /// A merger whose first event is `first` (a backup's program recording on where its log
    /// ends).
    pub fn from_seq(region: Region, first: Seq) -> Merger {
        let cursors = (0..region.geometry().ring_count)
            .map(|i| {
                let v = region.slot_view(i);
                Cursor { head: v.head, tail: v.head }
            })
            .collect();
        Merger { region, next_seq: first, cursors, live: Vec::new(), last: None, taken: CallSet::EMPTY }
    }

    /// The sequence number the merge is waiting for.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    fn refresh(&mut self) {
        self.live.clear();
        for i in 0..self.region.geometry().ring_count {
            if self.region.slot_view(i).state != SLOT_FREE {
                self.live.push(i);
            }
        }
    }

    /// The seq of the record at slot `index`'s head, if there is one.
    fn head_seq(&mut self, index: u32) -> Option<Seq> {
        let c = &mut self.cursors[index as usize];
        if c.tail - c.head < HEADER_LEN as u64 {
            c.tail = self.region.published_tail(index);
        }
        self.region.peek_header(index, c.head, c.tail).map(|h| h.seq)
    }

    /// Moves the run of consecutive events starting at `next_seq` out of slot `index`: walks
    /// their numbers and lengths, then copies the run in one piece.
    fn take_run(&mut self, index: u32, out: &mut Vec<u8>, max_bytes: usize) -> u32 {
        let c = &mut self.cursors[index as usize];
        let start = c.head;
        let budget = max_bytes.saturating_sub(out.len()) as u64;
        let mut end = start;
        let mut n = 0;
        while end - start < budget {
            if c.tail - end < HEADER_LEN as u64 {
                c.tail = self.region.published_tail(index);
                if c.tail - end < HEADER_LEN as u64 {
                    break;
                }
            }
            let (seq, call, len) = self.region.peek_seq_call_len(index, end);
            // A record is published whole: one reaching past the tail has a damaged length.
            if seq != self.next_seq.0 || end + len as u64 > c.tail {
                break;
            }
            end += len as u64;
            self.taken.add(call);
            self.next_seq = self.next_seq.next();
            n += 1;
        }
        if n > 0 {
            self.region.copy_records(index, start, (end - start) as usize, out);
            c.head = end;
            self.region.advance_head(index, end);
        }
        n
    }

    /// Appends events in sequence order to `out` until it holds `max_bytes` or the next event is
    /// not available yet. Returns how many events were appended.
    pub fn drain(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> u32 {
        self.refresh();
        self.taken = CallSet::EMPTY;
        let mut n = 0;
        'runs: while out.len() < max_bytes {
            if let Some(last) = self.last {
                let got = self.take_run(last, out, max_bytes);
                if got > 0 {
                    n += got;
                    continue;
                }
            }
            for k in 0..self.live.len() {
                let i = self.live[k];
                if Some(i) != self.last && self.head_seq(i) == Some(self.next_seq) {
                    self.last = Some(i);
                    continue 'runs;
                }
            }
            break;
        }
        n
    }

    /// The calls of the events the last [`Merger::drain`] took (so a reader that follows only
    /// some calls can skip a batch without them).
    pub fn calls_taken(&self) -> CallSet {
        self.taken
    }

    /// Closes every active slot whose owner `is_alive` says is gone, and frees drained closed
    /// slots. Returns how many slots were closed for dead owners.
    pub fn reap(&mut self, is_alive: impl Fn(i32, i32) -> bool) -> usize {
        let mut closed = 0;
        for i in 0..self.region.geometry().ring_count {
            let v = self.region.slot_view(i);
            if v.state == SLOT_ACTIVE && !is_alive(v.owner_pid, v.owner_tid) && self.region.close_orphan(i) {
                closed += 1;
            }
            if self.region.slot_view(i).state == SLOT_CLOSED {
                self.region.free_slot(i);
            }
        }
        closed
    }

    /// While producers still run: if the next number was taken by a thread that died before
    /// writing its event, appends a `lost` event for it (and for any that follow the same way).
    /// Returns how many.
    pub fn fill_dead_writer_gap(&mut self, out: &mut Vec<u8>, is_alive: impl Fn(i32, i32) -> bool) -> u64 {
        let mut filled = 0;
        loop {
            self.refresh();
            let live = self.live.clone();
            let at_head = live.iter().any(|&i| self.head_seq(i) == Some(self.next_seq));
            let dead_holder = !at_head
                && live.iter().any(|&i| {
                    let v = self.region.slot_view(i);
                    v.reserved == self.next_seq && (v.state == SLOT_CLOSED || !is_alive(v.owner_pid, v.owner_tid))
                });
            if !dead_holder {
                return filled;
            }
            push_lost(out, self.next_seq);
            self.next_seq = self.next_seq.next();
            filled += 1;
        }
    }

    /// After every producer is gone: if the next event will never come (its writer died between
    /// taking the number and writing), appends a `lost` event for each missing number up to the
    /// lowest one still in a ring, and returns how many. 0 when nothing is missing.
    pub fn fill_gap(&mut self, out: &mut Vec<u8>) -> u64 {
        self.refresh();
        let live = self.live.clone();
        let lowest = live.iter().filter_map(|&i| self.head_seq(i)).min();
        let Some(lowest) = lowest else { return 0 };
        let missing = lowest.saturating_since(self.next_seq);
        for seq in self.next_seq.0..lowest.0 {
            push_lost(out, Seq(seq));
        }
        self.next_seq = lowest.max(self.next_seq);
        missing
    }

    /// Whether any ring still holds unread bytes.
    pub fn pending(&self) -> bool {
        (0..self.region.geometry().ring_count).any(|i| {
            let v = self.region.slot_view(i);
            v.state != SLOT_FREE && self.cursors[i as usize].head != v.tail
        })
    }
}

fn push_lost(out: &mut Vec<u8>, seq: Seq) {
    encode_into(out, &EventHeader::new(seq, Call::Lost), &[]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LogicalPid, LogicalTid};
    use crate::record::Event;
    use crate::ring::{Geometry, Mode, Producer, SharedRegion, MIN_RING_BYTES};
    use std::sync::Arc;

    fn header(seq: u64, tid: u32) -> EventHeader {
        EventHeader { pid: LogicalPid(1), tid: LogicalTid(tid), ..EventHeader::new(Seq(seq), Call::MutexLock) }
    }

    fn seqs(bytes: &[u8]) -> Vec<u64> {
        let mut rest = bytes;
        let mut v = Vec::new();
        while !rest.is_empty() {
            let (e, r) = Event::parse(rest).unwrap();
            v.push(e.header.seq.0);
            rest = r;
        }
        v
    }

    #[test]
    fn threads_merge_into_one_gapless_order() {
        let shared = Arc::new(SharedRegion::create(Geometry::record(8, MIN_RING_BYTES), Mode::Record).unwrap());
        let region = shared.region();
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let keep = shared.clone();
                std::thread::spawn(move || {
                    let _keep = keep;
                    let mut p = Producer::claim(region, 1, t as i32, 1, t).unwrap();
                    for _ in 0..20_000 {
                        let seq = p.take_seq();
                        p.write(&header(seq, t), &[]);
                    }
                    p.close();
                })
            })
            .collect();
        let mut merger = Merger::new(region);
        let mut out = Vec::new();
        let mut all = Vec::new();
        while all.len() < 80_000 {
            out.clear();
            merger.drain(&mut out, 1 << 20);
            all.extend(seqs(&out));
            merger.reap(|_, _| true);
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(all, (1..=80_000).collect::<Vec<_>>());
        merger.reap(|_, _| true);
        assert!(!merger.pending());
    }

    #[test]
    fn a_drain_names_the_calls_it_took() {
        let shared = SharedRegion::create(Geometry::record(2, MIN_RING_BYTES), Mode::Record).unwrap();
        let region = shared.region();
        let mut p = Producer::claim(region, 1, 1, 1, 0).unwrap();
        let mut merger = Merger::new(region);
        let mut out = Vec::new();
        for call in [Call::MutexLock, Call::Write] {
            let seq = p.take_seq();
            p.write(&EventHeader::new(Seq(seq), call), &[]);
        }
        assert_eq!(merger.drain(&mut out, 1 << 20), 2);
        let taken = merger.calls_taken();
        assert_eq!(taken, CallSet::EMPTY.with(Call::MutexLock as u16).with(Call::Write as u16));
        assert_eq!(merger.drain(&mut out, 1 << 20), 0);
        assert_eq!(merger.calls_taken(), CallSet::EMPTY, "each drain starts afresh");
    }

    #[test]
    fn merge_waits_for_a_reserved_number_then_fills_a_dead_writers_gap() {
        let shared = SharedRegion::create(Geometry::record(2, MIN_RING_BYTES), Mode::Record).unwrap();
        let region = shared.region();
        let mut a = Producer::claim(region, 1, 1, 1, 0).unwrap();
        let b = Producer::claim(region, 1, 2, 1, 1).unwrap();
        let s1 = a.take_seq();
        let _reserved_by_b = b.take_seq();
        let s3 = a.take_seq();
        a.write(&header(s1, 0), &[]);
        a.write(&header(s3, 0), &[]);
        let mut merger = Merger::new(region);
        let mut out = Vec::new();
        assert_eq!(merger.drain(&mut out, 1 << 20), 1);
        assert_eq!(merger.drain(&mut out, 1 << 20), 0, "seq 2 is not written yet");
        assert_eq!(merger.fill_dead_writer_gap(&mut out, |_, _| true), 0, "b is alive: wait");
        // b dies without writing seq 2.
        assert_eq!(merger.fill_dead_writer_gap(&mut out, |_, tid| tid != 2), 1);
        assert_eq!(merger.drain(&mut out, 1 << 20), 1);
        assert_eq!(seqs(&out), vec![1, 2, 3]);
        assert_eq!(merger.fill_gap(&mut out), 0);
    }
}
