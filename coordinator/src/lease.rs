//! Primaries' leases, kept by the leader alone: a renewal is a map update, not a Raft round.
//! Only the lapse goes through Raft. A leader that takes over does not know when the primaries
//! last renewed with its predecessor, so it gives each a full timeout from its own start.

use crate::server::ELECTION_MAX_MS;
use eventlog::Epoch;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The default lease timeout. It must outlast a Raft election and a renewal: a primary fences
/// itself at four fifths of it (600 ms) without a confirmed renewal, and a renewal period
/// (100 ms) before the leader dies, an election (at most about 300 ms, see
/// `server::ELECTION_MAX_MS`) and a retry round (50 ms, or 150 ms spent on a member that hangs)
/// come to 450 to 550 ms. And a dead primary is replaced a lease plus a promotion (about 100 ms)
/// after its last renewal: within a second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(750);

#[derive(Debug)]
pub struct Leases {
    timeout: Duration,
    /// Per group: the epoch the lease is for, and when it lapses.
    deadlines: Mutex<BTreeMap<String, (Epoch, Instant)>>,
}

impl Leases {
    pub fn new(timeout: Duration) -> Leases {
        Leases { timeout, deadlines: Mutex::new(BTreeMap::new()) }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How recently a majority must have acknowledged the leader for it to confirm a renewal
    /// (`CONFIRMED_WITHIN`, less under a short timeout).
    pub fn confirmed_within(&self) -> Duration {
        CONFIRMED_WITHIN.min(Duration::from_millis(ELECTION_MAX_MS) + self.timeout / 5)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Epoch, Instant)>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn renew(&self, group: &str, epoch: Epoch) {
        self.renew_at(group, epoch, Instant::now());
    }

    fn renew_at(&self, group: &str, epoch: Epoch, now: Instant) {
        self.map().insert(group.to_string(), (epoch, now + self.timeout));
    }

    /// What is left of `group`'s lease, if this member keeps one for it.
    pub fn left(&self, group: &str) -> Option<Duration> {
        self.map().get(group).map(|(_, deadline)| deadline.saturating_duration_since(Instant::now()))
    }

    /// On becoming leader: every lease runs a full timeout from now.
    pub fn extend_all(&self) {
        let now = Instant::now();
        for (_, deadline) in self.map().values_mut() {
            *deadline = now + self.timeout;
        }
    }

    /// The groups (with the epoch) whose primary let its lease lapse, among `groups` (each group
    /// that has a primary, with its epoch). A primary not seen before gets a full timeout.
    pub fn lapsed(&self, groups: &[(String, Epoch)]) -> Vec<(String, Epoch)> {
        self.lapsed_at(groups, Instant::now())
    }

    fn lapsed_at(&self, groups: &[(String, Epoch)], now: Instant) -> Vec<(String, Epoch)> {
        let mut map = self.map();
        map.retain(|name, _| groups.iter().any(|(g, _)| g == name));
        let mut out = Vec::new();
        for (group, epoch) in groups {
            let entry = map.entry(group.clone()).or_insert((*epoch, now + self.timeout));
            if entry.0 != *epoch {
                *entry = (*epoch, now + self.timeout);
            } else if now >= entry.1 {
                out.push((group.clone(), *epoch));
                // Asked once per timeout, until the epoch changes.
                entry.1 = now + self.timeout;
            }
        }
        out
    }
}

/// How recently a majority must have acknowledged a leader for it to confirm a renewal, at
/// most. A member that acknowledged the leader refuses to vote for another for `ELECTION_MAX_MS`
/// (openraft's leader lease), so no other leader exists before the acknowledged heartbeat plus
/// that, and a new leader gives every lease a full timeout `T` from its own start. The primary
/// fences four fifths of `T` after it sent the confirmed renewal, which it sent at most this long
/// after that heartbeat left: safe while the bound is at most `ELECTION_MAX_MS + T/5` (270 ms at
/// the default 750 ms; `Leases::confirmed_within`). A leader cut off from the majority (it
/// believes it leads until it hears of a new term), or whose Raft core is stalled on its disk,
/// stops confirming within the bound.
pub const CONFIRMED_WITHIN: Duration = Duration::from_millis(200);

/// When a majority last acknowledged this member as leader, from its Raft metrics: the age they
/// report plus the time since they were reported. The core reports at every tick while it runs;
/// one stalled on a slow disk reports nothing, so the age goes on growing.
#[derive(Debug, Default)]
pub struct QuorumClock {
    seen: Mutex<Option<(Instant, Option<u64>)>>,
    refusing: AtomicBool,
}

impl QuorumClock {
    /// The metrics just reported `millis_since_quorum_ack`.
    pub fn saw(&self, millis_since_quorum_ack: Option<u64>) {
        self.saw_at(millis_since_quorum_ack, Instant::now());
    }

    fn saw_at(&self, millis: Option<u64>, now: Instant) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, millis));
    }

    /// Since when a majority last acknowledged this member (none: not since it leads).
    pub fn age(&self) -> Option<Duration> {
        self.age_at(Instant::now())
    }

    fn age_at(&self, now: Instant) -> Option<Duration> {
        match *self.seen.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, Some(ms))) => Some(Duration::from_millis(ms) + now.saturating_duration_since(at)),
            _ => None,
        }
    }

    /// Whether a leader with `voters` voters, acknowledged by a majority at most `within` ago,
    /// may confirm a renewal now; if not, how long ago a majority last acknowledged it (none:
    /// not since it leads).
    pub fn confirm(&self, voters: usize, within: Duration) -> Result<(), Option<Duration>> {
        self.confirm_at(voters, within, Instant::now())
    }

    fn confirm_at(&self, voters: usize, within: Duration, now: Instant) -> Result<(), Option<Duration>> {
        match self.age_at(now) {
            _ if voters <= 1 => Ok(()),
            Some(age) if age <= within => Ok(()),
            age => Err(age),
        }
    }

    /// Notes whether renewals are being refused; true when that just changed (a refusal after
    /// confirmations, or a confirmation after refusals), so that a stall is logged once each way.
    pub fn refusing(&self, now: bool) -> bool {
        self.refusing.swap(now, Ordering::Relaxed) != now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_lease_asks_for_a_fresher_acknowledgement() {
        assert_eq!(Leases::new(DEFAULT_TIMEOUT).confirmed_within(), CONFIRMED_WITHIN);
        assert_eq!(Leases::new(Duration::from_millis(300)).confirmed_within(), Duration::from_millis(180));
    }

    #[test]
    fn a_leader_confirms_only_while_a_majority_acknowledged_it_lately() {
        const W: Duration = CONFIRMED_WITHIN;
        let clock = QuorumClock::default();
        let t0 = Instant::now();
        assert_eq!(clock.confirm_at(3, W, t0), Err(None), "nothing reported yet");
        assert_eq!(clock.confirm_at(1, W, t0), Ok(()), "a single member is its own majority");
        clock.saw_at(None, t0);
        assert_eq!(clock.confirm_at(3, W, t0), Err(None), "a new leader no majority acknowledged yet");
        clock.saw_at(Some(40), t0);
        assert_eq!(clock.confirm_at(3, W, t0 + Duration::from_millis(160)), Ok(()));
        assert_eq!(
            clock.confirm_at(3, W, t0 + Duration::from_millis(161)),
            Err(Some(Duration::from_millis(201))),
            "no report since: the core is stalled, the age goes on growing"
        );
        clock.saw_at(Some(0), t0 + Duration::from_millis(500));
        assert_eq!(clock.confirm_at(3, W, t0 + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn refusals_are_noted_once_each_way() {
        let clock = QuorumClock::default();
        assert!(!clock.refusing(false), "confirming from the start is no change");
        assert!(clock.refusing(true));
        assert!(!clock.refusing(true), "the second refusal in a row");
        assert!(clock.refusing(false));
    }

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn a_renewed_lease_holds_and_a_silent_one_lapses_after_the_timeout() {
        let leases = Leases::new(T);
        let t0 = Instant::now();
        let groups = vec![("g".to_string(), Epoch(3))];
        assert!(leases.lapsed_at(&groups, t0).is_empty(), "a primary first seen gets a full timeout");
        leases.renew_at("g", Epoch(3), t0 + Duration::from_millis(400));
        assert!(leases.lapsed_at(&groups, t0 + Duration::from_millis(800)).is_empty());
        assert_eq!(leases.lapsed_at(&groups, t0 + Duration::from_millis(900)), groups);
        // Not asked again at once.
        assert!(leases.lapsed_at(&groups, t0 + Duration::from_millis(901)).is_empty());
    }

    #[test]
    fn a_new_epoch_starts_a_new_lease() {
        let leases = Leases::new(T);
        let t0 = Instant::now();
        leases.lapsed_at(&[("g".to_string(), Epoch(1))], t0);
        let later = t0 + Duration::from_millis(600);
        assert!(leases.lapsed_at(&[("g".to_string(), Epoch(2))], later).is_empty());
        assert_eq!(leases.lapsed_at(&[("g".to_string(), Epoch(2))], later + T), vec![("g".to_string(), Epoch(2))]);
    }
}
