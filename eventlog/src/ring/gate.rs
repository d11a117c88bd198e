//! Output commit. On a primary in sync mode, bytes for the outside world (a client's socket, a
//! terminal, a pipe) leave only once the backups hold every event they can depend on: every
//! event that was not itself output, up to the newest any thread has recorded. Outputs do not
//! wait for each other, so a program writing many replies after one round of input waits for
//! the backups once (group commit).
//!
//! The agent publishes how far the backups hold (`released`) and wakes the waiting threads; a
//! waiting thread rings the agent's doorbell so its events go out at once.

use super::{sys, Producer, Region};
use core::sync::atomic::Ordering;

/// How long a held output sleeps before looking again on its own (the agent wakes it).
const GATE_SLEEP_NS: u64 = 50_000_000;

impl Region {
    pub fn gate_enabled(&self) -> bool {
        self.header().output_gate.load(Ordering::Relaxed) != 0
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
            if h.released.load(Ordering::SeqCst) >= seq || h.output_gate.load(Ordering::Relaxed) == 0 {
                return;
            }
            h.gate_waiters.fetch_add(1, Ordering::SeqCst);
            self.ring_doorbell();
            if h.released.load(Ordering::SeqCst) < seq {
                sys::futex_wait(&h.gate_wake, seen, GATE_SLEEP_NS);
            }
            h.gate_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The agent: outputs depending on events up to `seq` may leave.
    pub fn release_outputs(&self, seq: u64) {
        let h = self.header();
        if h.released.fetch_max(seq, Ordering::SeqCst) >= seq {
            return;
        }
        h.gate_wake.fetch_add(1, Ordering::SeqCst);
        if h.gate_waiters.load(Ordering::SeqCst) != 0 {
            sys::futex_wake(&h.gate_wake, i32::MAX as u32);
        }
    }

    /// The agent: turns the gate on or off (off releases every waiting output).
    pub fn set_gate(&self, on: bool) {
        let h = self.header();
        h.output_gate.store(on as u32, Ordering::SeqCst);
        if !on {
            h.gate_wake.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(&h.gate_wake, i32::MAX as u32);
        }
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
        region.release_outputs(input);
        waiter.join().unwrap();
        assert!(left.load(Ordering::SeqCst));
        // Nothing new to depend on: the next output leaves at once.
        region.wait_released(region.input_high());
    }
}
