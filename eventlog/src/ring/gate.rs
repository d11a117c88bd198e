//! Output commit. On a primary in sync mode, bytes for the outside world (a client's socket, a
//! terminal, a pipe) leave only once the backups hold every event they can depend on: every
//! event that was not itself output, up to the newest any thread has recorded. Outputs do not
//! wait for each other, so a program writing many replies after one round of input waits for
//! the backups once (group commit).
//!
//! The agent publishes how far the backups hold (`released`) and wakes the waiting threads; a
//! waiting thread rings the agent's doorbell so its events go out at once.
//!
//! An agent that is no longer the group's primary (its lease lapsed, or another was named)
//! shuts the gate: from then on no output leaves, whatever the backups hold.

use super::{sys, Producer, Region};
use crate::ids::Seq;
use core::sync::atomic::Ordering;

/// How long a held output sleeps before looking again on its own (the agent wakes it).
const GATE_SLEEP_NS: u64 = 50_000_000;

/// `ShmHeader::output_gate`: outputs leave at once.
pub const GATE_OFF: u32 = 0;
/// Outputs wait for the release point.
pub const GATE_ON: u32 = 1;
/// Outputs wait for good (the agent was fenced). Never opened again.
pub const GATE_SHUT: u32 = 2;

impl Region {
    pub fn gate_enabled(&self) -> bool {
        self.header().output_gate.load(Ordering::Relaxed) != GATE_OFF
    }

    pub fn gate_shut(&self) -> bool {
        self.header().output_gate.load(Ordering::SeqCst) == GATE_SHUT
    }

    /// The newest sequence number of an event that was not output.
    pub fn input_high(&self) -> u64 {
        let high = self.header().slots_high.load(Ordering::SeqCst).min(self.geometry.ring_count);
        (0..high).map(|i| self.slot(i).last_input.load(Ordering::SeqCst)).max().unwrap_or(0)
    }

    /// Waits until outputs depending on events up to `seq` may leave.
    pub fn wait_released(&self, seq: u64) {
        let h = self.header();
        loop {
            let seen = h.gate_wake.load(Ordering::SeqCst);
            let gate = h.output_gate.load(Ordering::SeqCst);
            if gate == GATE_OFF || (gate == GATE_ON && h.released.load(Ordering::SeqCst) >= seq) {
                return;
            }
            h.gate_waiters.fetch_add(1, Ordering::SeqCst);
            self.ring_doorbell();
            if gate == GATE_SHUT || h.released.load(Ordering::SeqCst) < seq {
                sys::futex_wait(&h.gate_wake, seen, GATE_SLEEP_NS);
            }
            h.gate_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// How many of the program's threads wait at the gate with an output held now.
    pub fn held_outputs(&self) -> u64 {
        self.header().gate_waiters.load(Ordering::Relaxed).into()
    }

    /// The agent: outputs depending on events up to `seq` may leave.
    pub fn release_outputs(&self, seq: Seq) {
        let (h, seq) = (self.header(), seq.0);
        if h.released.fetch_max(seq, Ordering::SeqCst) >= seq {
            return;
        }
        h.gate_wake.fetch_add(1, Ordering::SeqCst);
        if h.gate_waiters.load(Ordering::SeqCst) != 0 {
            sys::futex_wake(&h.gate_wake, i32::MAX as u32);
        }
    }

    /// The agent: turns the gate on or off (off releases every waiting output). A shut gate
    /// stays shut.
    pub fn set_gate(&self, on: bool) {
        let h = self.header();
        let want = if on { GATE_ON } else { GATE_OFF };
        let was = h.output_gate.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |g| (g != GATE_SHUT).then_some(want));
        if !on && was.is_ok() {
            h.gate_wake.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(&h.gate_wake, i32::MAX as u32);
        }
    }

    /// The agent: no output leaves from now on, whatever the backups hold.
    pub fn shut_gate(&self) {
        self.header().output_gate.store(GATE_SHUT, Ordering::SeqCst);
    }
}

impl Producer {
    /// Notes that event `seq`, which this thread recorded, was not output.
    #[inline(always)]
    pub fn note_input(&self, seq: u64) {
        self.slot().last_input.store(seq, Ordering::Release);
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use crate::ids::Seq;
    use crate::ring::{Geometry, Mode, Producer, SharedRegion, MIN_RING_BYTES};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn an_output_waits_for_the_inputs_before_it_and_not_for_other_outputs() {
        let shared = Arc::new(SharedRegion::create(Geometry::record(4, MIN_RING_BYTES), Mode::Record).unwrap());
        let region = shared.region();
        region.set_gate(true);
        let p = Producer::claim(region, 1, 1, 1, 0).unwrap();
        let input = p.take_seq();
        p.note_input(input);
        let _output = p.take_seq(); // an output: not noted
        assert_eq!(region.input_high(), input);

        let left = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (shared, left) = (shared.clone(), left.clone());
            std::thread::spawn(move || {
                let region = shared.region();
                region.wait_released(region.input_high());
                left.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!left.load(Ordering::SeqCst), "the output left before the backups held its input");
        region.release_outputs(Seq(input));
        waiter.join().unwrap();
        assert!(left.load(Ordering::SeqCst));
        // Nothing new to depend on: the next output leaves at once.
        region.wait_released(region.input_high());
    }

    #[test]
    fn a_shut_gate_holds_every_output_and_stays_shut() {
        // A replay region (a promoted backup's) records nothing: its outputs depend on no input.
        let shared = Arc::new(SharedRegion::create(Geometry::replay(4, 4 << 20), Mode::Replay).unwrap());
        let region = shared.region();
        assert_eq!(region.input_high(), 0);
        region.shut_gate();
        region.set_gate(false);
        region.release_outputs(Seq(u64::MAX));
        assert!(region.gate_shut() && region.gate_enabled());
        let left = Arc::new(AtomicBool::new(false));
        {
            let (shared, left) = (shared.clone(), left.clone());
            // Detached: it never returns.
            std::thread::spawn(move || {
                let region = shared.region();
                region.wait_released(region.input_high());
                left.store(true, Ordering::SeqCst);
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!(!left.load(Ordering::SeqCst), "an output left through a shut gate");
    }
}
