//! A member's Prometheus metrics (`GET /metrics`) and its health (`/health`, `/ready`): the
//! counters move as requests are served; the Raft and group gauges are read at each scrape.

use crate::model::Group;
use openraft::ServerState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The content type of the text `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub writes: Family<Labels, Counter>,
    pub lease_renewals: Counter,
    pub lease_refusals: Counter,
    pub lease_unconfirmed: Counter,
    pub lease_lapses: Counter,
    pub reports: Counter,
    term: Gauge,
    role: Family<Labels, Gauge>,
    leader: Gauge,
    last_applied: Gauge,
    quorum_ack_age: Gauge<f64, AtomicU64>,
    healthy: Gauge,
    groups: Gauge,
    epoch: Family<Labels, Gauge>,
    held: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("tandem_coordinator");
        let m = Metrics {
            registry: Registry::default(),
            writes: Family::default(),
            lease_renewals: Counter::default(),
            lease_refusals: Counter::default(),
            lease_unconfirmed: Counter::default(),
            lease_lapses: Counter::default(),
            reports: Counter::default(),
            term: Gauge::default(),
            role: Family::default(),
            leader: Gauge::default(),
            last_applied: Gauge::default(),
            quorum_ack_age: Gauge::default(),
            healthy: Gauge::default(),
            groups: Gauge::default(),
            epoch: Family::default(),
            held: Family::default(),
            lag: Family::default(),
        };
        let r = &mut registry;
        r.register("writes", "Writes this member proposed, by outcome (ok, refused, failed)", m.writes.clone());
        r.register("lease_renewals", "Lease renewals this member granted as leader", m.lease_renewals.clone());
        r.register("lease_refusals", "Lease renewals refused: the caller is primary no more", m.lease_refusals.clone());
        r.register(
            "lease_unconfirmed",
            "Lease renewals this leader did not confirm: no majority acknowledged it lately",
            m.lease_unconfirmed.clone(),
        );
        r.register("lease_lapses", "Primaries' leases that lapsed (their epoch ended)", m.lease_lapses.clone());
        r.register("reports", "Position reports applied", m.reports.clone());
        r.register("raft_term", "This member's Raft term", m.term.clone());
        r.register("raft_role", "This member's Raft role (1 for the current one)", m.role.clone());
        r.register("raft_leader", "The leader this member knows (0: none)", m.leader.clone());
        r.register("raft_last_applied", "The last Raft log index this member applied", m.last_applied.clone());
        r.register(
            "quorum_ack_age_seconds",
            "On the leader: since a majority last acknowledged it",
            m.quorum_ack_age.clone(),
        );
        r.register("healthy", "1 while this member is part of a working majority", m.healthy.clone());
        r.register("groups", "Groups the coordinator knows", m.groups.clone());
        r.register("group_epoch", "Each group's epoch", m.epoch.clone());
        r.register("member_held", "The last event each member reported it holds", m.held.clone());
        r.register("member_lag_events", "Events each backup lags behind its primary", m.lag.clone());
        Metrics { registry, ..m }
    }
}

/// What the Raft node says of itself, for health and metrics.
#[derive(Debug, Clone, Copy)]
pub struct RaftView {
    pub state: ServerState,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_applied: Option<u64>,
    pub millis_since_quorum_ack: Option<u64>,
    pub voters: usize,
}

/// How long a leader may go without a majority's acknowledgement before it is unhealthy:
/// several election timeouts, so one lost heartbeat does not count.
pub const QUORUM_STALE: Duration = Duration::from_millis(3 * 600);

/// Whether the member is part of a working majority, and why not.
pub fn health(raft: &RaftView) -> Result<(), String> {
    match (raft.state, raft.leader) {
        (ServerState::Shutdown, _) => Err("the Raft node has stopped".into()),
        (_, None) => Err("no leader is known: fewer than a majority of members answer".into()),
        (ServerState::Leader, _) if raft.voters > 1 => match raft.millis_since_quorum_ack {
            Some(ms) if ms <= QUORUM_STALE.as_millis() as u64 => Ok(()),
            Some(ms) => Err(format!("this leader has not heard from a majority for {} ms", ms)),
            None => Err("this leader has not heard from a majority yet".into()),
        },
        _ => Ok(()),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl Metrics {
    /// A write's outcome: `ok`, `refused` or `failed`.
    pub fn wrote(&self, outcome: &str) {
        self.writes.get_or_create(&labels(&[("outcome", outcome)])).inc();
    }

    /// The text of a scrape, the gauges set from `raft` and `groups` first.
    pub fn render(&self, raft: &RaftView, groups: &BTreeMap<String, Group>) -> String {
        self.term.set(raft.term as i64);
        self.role.clear();
        self.role.get_or_create(&labels(&[("role", role_name(raft.state))])).set(1);
        self.leader.set(raft.leader.unwrap_or(0) as i64);
        self.last_applied.set(raft.last_applied.unwrap_or(0) as i64);
        self.quorum_ack_age.set(raft.millis_since_quorum_ack.map_or(0.0, |ms| ms as f64 / 1000.0));
        self.healthy.set(health(raft).is_ok() as i64);
        self.groups.set(groups.len() as i64);
        // Groups and members come and go: only those that exist now are shown.
        self.epoch.clear();
        self.held.clear();
        self.lag.clear();
        for (name, g) in groups {
            self.epoch.get_or_create(&labels(&[("group", name)])).set(g.epoch.0 as i64);
            let primary_held = g.primary.as_ref().and_then(|p| g.members.get(p)).map_or(0, |m| m.held.0);
            for (member, m) in &g.members {
                let l = labels(&[("group", name), ("member", member)]);
                self.held.get_or_create(&l).set(m.held.0 as i64);
                if g.primary.as_deref() != Some(member.as_str()) {
                    self.lag.get_or_create(&l).set(primary_held.saturating_sub(m.held.0) as i64);
                }
            }
        }
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: ServerState, leader: Option<u64>, ack: Option<u64>, voters: usize) -> RaftView {
        RaftView { state, term: 3, leader, last_applied: Some(9), millis_since_quorum_ack: ack, voters }
    }

    #[test]
    fn a_member_is_healthy_only_with_a_working_majority() {
        assert!(health(&view(ServerState::Leader, Some(1), Some(40), 3)).is_ok());
        assert!(health(&view(ServerState::Follower, Some(2), None, 3)).is_ok());
        // A lone member is its own majority.
        assert!(health(&view(ServerState::Leader, Some(1), None, 1)).is_ok());
        let stale = health(&view(ServerState::Leader, Some(1), Some(5000), 3)).unwrap_err();
        assert!(stale.contains("5000 ms"), "{stale}");
        let none = health(&view(ServerState::Candidate, None, None, 3)).unwrap_err();
        assert!(none.contains("no leader"), "{none}");
    }

    #[test]
    fn a_scrape_shows_the_raft_role_and_the_counters() {
        let m = Metrics::default();
        m.wrote("ok");
        m.lease_renewals.inc();
        let text = m.render(&view(ServerState::Leader, Some(1), Some(10), 3), &BTreeMap::new());
        assert!(text.contains("tandem_coordinator_writes_total{outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("tandem_coordinator_raft_role{role=\"leader\"} 1"), "{text}");
        assert!(text.contains("tandem_coordinator_healthy 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
