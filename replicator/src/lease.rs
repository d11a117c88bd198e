//! The primary's lease and its fence, the same for whichever agent is primary: `tandem primary`,
//! or a backup the coordinator named primary of a later epoch.
//!
//! The agent renews its lease every [`LEASE_PERIOD`]. Once it can no longer be sure it is the
//! group's primary (the coordinator answered with a later epoch, no renewal was confirmed in
//! time, or a backup speaks for a later epoch) it shuts the program's output gate for good, so two
//! primaries never both answer clients, and stops the program (with `--keep-fenced` the program
//! goes on running, but nothing it says reaches the outside world).

use crate::lifetime::Stop;
use crate::steer::Steering;
use coordinator::api::Renewed;
use eventlog::ring::SharedRegion;
use eventlog::Epoch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often a primary renews its lease.
pub const LEASE_PERIOD: Duration = Duration::from_millis(100);
/// A primary that has not had its lease confirmed for this long fences itself, until the first
/// renewal tells it the coordinator's timeout (it then fences at four fifths of that): sooner than
/// the lease lapses there, counted from the renewal's sending, so the old primary stops before
/// the coordinator can name another.
pub const FENCE_AFTER: Duration = Duration::from_millis(400);

/// Why an agent stopped acting as the group's primary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// A renewal was answered with a later epoch.
    #[error("the coordinator ended this primary's epoch {ours} (the group is in epoch {now})")]
    EpochEnded { ours: Epoch, now: Epoch },
    /// No renewal was confirmed in time: the coordinator may end the epoch without this agent
    /// hearing of it.
    #[error(
        "the coordinator ended this primary's epoch {ours}, or is about to: no renewal of its lease was confirmed within {} ms",
        within.as_millis()
    )]
    Unconfirmed { ours: Epoch, within: Duration },
    /// A backup spoke for a later epoch: another primary has been named.
    #[error("this primary was replaced in epoch {theirs}: a backup spoke for that epoch, and this primary's epoch {ours} is over")]
    Replaced { ours: Epoch, theirs: Epoch },
    /// A switchover: this primary handed the group over to a backup holding all it recorded.
    #[error("this primary handed group over to {to}, primary in epoch {epoch}")]
    HandedOver { to: String, epoch: Epoch },
}

/// The program's output gate as the lease sees it: shut for good once the agent is primary no
/// more, and the program stopped then (unless it is to be kept, held). Shared by whatever else
/// releases output (the primary's release point).
#[derive(Default)]
pub struct Fence {
    region: OnceLock<Arc<SharedRegion>>,
    shut: AtomicBool,
    why: OnceLock<Fenced>,
    /// How the agent stops its program.
    stop: OnceLock<Arc<Stop>>,
    /// A fenced program keeps running, its output held (`--keep-fenced`).
    keep_program: AtomicBool,
}

impl Fence {
    /// The program's region, once it runs. A fence shut before then shuts its gate at once.
    pub fn attach(&self, region: Arc<SharedRegion>) {
        let region = self.region.get_or_init(|| region);
        if self.is_shut() {
            region.region().shut_gate();
        }
    }

    /// A fenced program is kept running, its output held, instead of stopped.
    pub fn keep_program(&self, keep: bool) {
        self.keep_program.store(keep, Ordering::SeqCst);
    }

    /// How the agent stops its program, once it runs. A fence shut before then stops it at once.
    pub fn stop_with(&self, stop: Arc<Stop>) {
        let stop = self.stop.get_or_init(|| stop);
        if self.is_shut() && !self.keep_program.load(Ordering::SeqCst) {
            stop.kill_now();
        }
    }

    /// Why the agent was fenced, once it was.
    pub fn why(&self) -> Option<&Fenced> {
        self.why.get()
    }

    pub fn region(&self) -> Option<&SharedRegion> {
        self.region.get().map(|r| &**r)
    }

    pub fn is_shut(&self) -> bool {
        self.shut.load(Ordering::SeqCst)
    }

    /// Holds every output of the program from now on and stops the program (unless it is kept);
    /// says why once, however often called.
    pub fn shut(&self, why: &Fenced) {
        let _ = self.why.set(why.clone());
        if self.shut.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(region) = self.region() {
            region.region().shut_gate();
        }
        if self.keep_program.load(Ordering::SeqCst) {
            tracing::error!("{why}: its program's output is held for good (the program keeps running: --keep-fenced)");
            return;
        }
        match why {
            Fenced::HandedOver { .. } => tracing::info!("{why}: its program is stopped; it rejoins as a backup"),
            _ => tracing::error!("{why}: its program's output is held for good, and the program is stopped"),
        }
        if let Some(stop) = self.stop.get() {
            stop.kill_now();
        }
    }
}

/// What became of one renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The coordinator confirmed this member as primary; its lease timeout, when it says it.
    Confirmed { timeout_ms: u64 },
    /// The coordinator answered that the group is in this epoch, with another primary.
    Moved { epoch: Epoch },
    /// No answer, or an error: the lease stands as long as the last confirmation allows.
    Failed,
}

/// When the lease holder must fence itself, judged from its renewals alone (no I/O, and the
/// caller's clock).
#[derive(Debug, Clone)]
pub struct LeaseClock {
    epoch: Epoch,
    /// When the last confirmed renewal was sent (or the lease taken).
    confirmed: Instant,
    fence_after: Duration,
}

impl LeaseClock {
    pub fn new(epoch: Epoch, now: Instant) -> LeaseClock {
        LeaseClock { epoch, confirmed: now, fence_after: FENCE_AFTER }
    }

    /// A renewal still unanswered at this point is too late.
    pub fn deadline(&self) -> Instant {
        self.confirmed + self.fence_after
    }

    pub fn fence_after(&self) -> Duration {
        self.fence_after
    }

    /// Takes the outcome of a renewal sent at `sent`; `Some` when, at `now`, the holder must
    /// fence itself.
    pub fn judge(&mut self, sent: Instant, outcome: Renewal, now: Instant) -> Option<Fenced> {
        match outcome {
            Renewal::Confirmed { timeout_ms } => {
                self.confirmed = self.confirmed.max(sent);
                if timeout_ms > 0 {
                    self.fence_after = Duration::from_millis(timeout_ms * 4 / 5);
                }
            }
            Renewal::Moved { epoch } => return Some(Fenced::EpochEnded { ours: self.epoch, now: epoch }),
            Renewal::Failed => {}
        }
        (now >= self.deadline()).then_some(Fenced::Unconfirmed { ours: self.epoch, within: self.fence_after })
    }
}

/// Renews this member's lease as primary of `epoch` every LEASE_PERIOD, and shuts `fence` once
/// the lease lapses. Runs on the caller's runtime until then.
pub fn keep(steering: &Steering, epoch: Epoch, fence: Arc<Fence>) {
    let steering = steering.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LEASE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut clock = LeaseClock::new(epoch, Instant::now());
        loop {
            tick.tick().await;
            // Fenced for another reason (replaced): the lease no longer matters. Handing over, it
            // holds until the coordinator names the next primary, so that no lapse names another.
            if fence.is_shut() && !matches!(fence.why(), Some(Fenced::HandedOver { .. })) {
                return;
            }
            let sent = Instant::now();
            let renewal = steering.client.renew_by(&steering.group, &steering.member, epoch, clock.deadline());
            let outcome = match renewal.await {
                Ok(Renewed { primary: true, timeout_ms, .. }) => Renewal::Confirmed { timeout_ms },
                Ok(Renewed { epoch: now, .. }) => Renewal::Moved { epoch: now },
                Err(e) => {
                    tracing::warn!(group = steering.group, "could not renew the lease: {e}");
                    Renewal::Failed
                }
            };
            match outcome {
                Renewal::Confirmed { .. } => crate::metrics::agent().lease_renewals.inc(),
                _ => crate::metrics::agent().lease_failures.inc(),
            };
            if let Some(why) = clock.judge(sent, outcome, Instant::now()) {
                fence.shut(&why);
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_a_confirmed_renewal_within_four_fifths_of_the_timeout_the_holder_fences() {
        let t0 = Instant::now();
        let mut clock = LeaseClock::new(Epoch(3), t0);
        // Before the coordinator has said its timeout, the default bound holds.
        assert_eq!(clock.judge(t0, Renewal::Failed, t0 + 399 * MS), None);
        assert_eq!(
            clock.judge(t0, Renewal::Failed, t0 + FENCE_AFTER),
            Some(Fenced::Unconfirmed { ours: Epoch(3), within: FENCE_AFTER })
        );

        let mut clock = LeaseClock::new(Epoch(3), t0);
        // Confirmed, with a 500 ms timeout: the bound is 400 ms from the renewal's sending, not
        // from its answer.
        assert_eq!(clock.judge(t0 + 100 * MS, Renewal::Confirmed { timeout_ms: 500 }, t0 + 150 * MS), None);
        assert_eq!(clock.deadline(), t0 + 500 * MS);
        assert_eq!(clock.judge(t0 + 200 * MS, Renewal::Failed, t0 + 499 * MS), None);
        assert_eq!(
            clock.judge(t0 + 300 * MS, Renewal::Failed, t0 + 500 * MS),
            Some(Fenced::Unconfirmed { ours: Epoch(3), within: 400 * MS })
        );

        // A longer timeout moves the bound with it.
        let mut clock = LeaseClock::new(Epoch(3), t0);
        clock.judge(t0, Renewal::Confirmed { timeout_ms: 2000 }, t0);
        assert_eq!(clock.judge(t0, Renewal::Failed, t0 + 1599 * MS), None);
        assert!(clock.judge(t0, Renewal::Failed, t0 + 1600 * MS).is_some());
    }

    #[test]
    fn a_later_epoch_fences_at_once_and_renewals_keep_the_lease() {
        let t0 = Instant::now();
        let mut clock = LeaseClock::new(Epoch(2), t0);
        for i in 1..50u32 {
            let sent = t0 + LEASE_PERIOD * i;
            assert_eq!(clock.judge(sent, Renewal::Confirmed { timeout_ms: 500 }, sent + 5 * MS), None);
        }
        let sent = t0 + LEASE_PERIOD * 50;
        assert_eq!(
            clock.judge(sent, Renewal::Moved { epoch: Epoch(3) }, sent),
            Some(Fenced::EpochEnded { ours: Epoch(2), now: Epoch(3) })
        );
    }

    #[test]
    fn a_fence_shuts_once_and_a_region_attached_later_starts_shut() {
        let fence = Fence::default();
        let why = Fenced::Replaced { ours: Epoch(1), theirs: Epoch(2) };
        assert!(!fence.is_shut());
        fence.shut(&why);
        fence.shut(&why);
        assert!(fence.is_shut());
        assert!(why.to_string().contains("replaced in epoch 2"), "{why}");
        let geometry = eventlog::ring::Geometry::replay(2, eventlog::ring::MIN_FEED_BYTES);
        let shared = Arc::new(SharedRegion::create(geometry, eventlog::ring::Mode::Replay).unwrap());
        fence.attach(shared.clone());
        assert!(shared.region().gate_shut());
    }
}
