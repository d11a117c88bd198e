//! Primaries' leases, kept by the leader alone: a renewal is a map update, not a Raft round.
//! Only the lapse goes through Raft. A leader that takes over does not know when the primaries
//! last renewed with its predecessor, so it gives each a full timeout from its own start.

use eventlog::Epoch;
use std::collections::BTreeMap;
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

#[cfg(test)]
mod tests {
    use super::*;

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
