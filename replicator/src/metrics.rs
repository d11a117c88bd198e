//! An agent's Prometheus metrics and health, served over HTTP with `--metrics ADDR`
//! (`/metrics`, `/health`, `/ready`). One registry per process: the parts of the agent count into
//! it where the work happens; what is a position rather than a count is read from the agent's
//! status at each scrape.

use crate::status::{AgentStatus, Role};
use coordinator::http::{serve_get, Answer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

type Labels = Vec<(String, String)>;

/// Where an agent's account of itself comes from (the control socket asks the same).
pub type StatusSource = Arc<dyn Fn() -> AgentStatus + Send + Sync>;

pub struct AgentMetrics {
    registry: Registry,
    /// The primary: events recorded.
    pub events_recorded: Counter,
    /// The primary, per backup: batches and bytes sent, acknowledgements received.
    pub batches_sent: Family<Labels, Counter>,
    pub bytes_sent: Family<Labels, Counter>,
    pub acks: Family<Labels, Counter>,
    /// The primary: how long recorded events waited for their release (what a held output waits).
    pub output_wait: Histogram,
    /// A backup: batches, events and bytes received, and the time each group commit's sync took.
    pub batches_received: Counter,
    pub bytes_received: Counter,
    pub fsync: Histogram,
    /// Lease renewals confirmed and failed (either agent, while it is primary).
    pub lease_renewals: Counter,
    pub lease_failures: Counter,
    events_replayed: Counter,
    replayed_seen: AtomicU64,
    held: Gauge,
    released: Gauge,
    epoch: Gauge,
    held_outputs: Gauge,
    lag_events: Family<Labels, Gauge>,
    lag_bytes: Family<Labels, Gauge>,
    lag_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
}

fn seconds_buckets() -> Histogram {
    // 50 µs to about 100 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 22))
}

impl Default for AgentMetrics {
    fn default() -> AgentMetrics {
        let mut registry = Registry::with_prefix("tandem");
        let m = AgentMetrics {
            registry: Registry::default(),
            events_recorded: Counter::default(),
            batches_sent: Family::default(),
            bytes_sent: Family::default(),
            acks: Family::default(),
            output_wait: seconds_buckets(),
            batches_received: Counter::default(),
            bytes_received: Counter::default(),
            fsync: seconds_buckets(),
            lease_renewals: Counter::default(),
            lease_failures: Counter::default(),
            events_replayed: Counter::default(),
            replayed_seen: AtomicU64::new(0),
            held: Gauge::default(),
            released: Gauge::default(),
            epoch: Gauge::default(),
            held_outputs: Gauge::default(),
            lag_events: Family::default(),
            lag_bytes: Family::default(),
            lag_seconds: Family::default(),
        };
        let r = &mut registry;
        r.register("events_recorded", "Events the primary recorded", m.events_recorded.clone());
        r.register("batches_sent", "Event batches sent to each backup", m.batches_sent.clone());
        r.register("bytes_sent", "Bytes of events sent to each backup (as sent)", m.bytes_sent.clone());
        r.register("acks", "Acknowledgements received from each backup", m.acks.clone());
        r.register(
            "output_wait_seconds",
            "From an event's recording to the release of output depending on it",
            m.output_wait.clone(),
        );
        r.register("batches_received", "Event batches a backup received", m.batches_received.clone());
        r.register("bytes_received", "Bytes of events a backup received (as sent)", m.bytes_received.clone());
        r.register("fsync_seconds", "Time a backup's sync of its log took", m.fsync.clone());
        r.register("lease_renewals", "Lease renewals the coordinator confirmed", m.lease_renewals.clone());
        r.register("lease_failures", "Lease renewals not confirmed", m.lease_failures.clone());
        r.register("events_replayed", "Events a backup's program replayed", m.events_replayed.clone());
        r.register("held_seq", "The last event recorded (primary) or held durably (backup)", m.held.clone());
        r.register("released_seq", "The last event output was released for (primary)", m.released.clone());
        r.register("epoch", "The group's epoch this agent acts in", m.epoch.clone());
        r.register("held_outputs", "The program's outputs waiting for their release now", m.held_outputs.clone());
        r.register("backup_lag_events", "Events each backup has not acknowledged", m.lag_events.clone());
        r.register("backup_lag_bytes", "Bytes each backup has not acknowledged", m.lag_bytes.clone());
        r.register(
            "backup_lag_seconds",
            "Age of the oldest event each backup has not acknowledged",
            m.lag_seconds.clone(),
        );
        AgentMetrics { registry, ..m }
    }
}

/// The process's metrics.
pub fn agent() -> &'static AgentMetrics {
    static METRICS: OnceLock<AgentMetrics> = OnceLock::new();
    METRICS.get_or_init(AgentMetrics::default)
}

pub fn backup_label(member: &str) -> Labels {
    vec![("backup".to_string(), member.to_string())]
}

impl AgentMetrics {
    /// The text of a scrape, its gauges set from `status` and `held_outputs` first.
    pub fn render(&self, status: &AgentStatus, held_outputs: u64) -> String {
        self.held.set(status.held as i64);
        self.released.set(status.released.unwrap_or(0) as i64);
        self.epoch.set(status.epoch as i64);
        self.held_outputs.set(held_outputs as i64);
        if let Some(replayed) = status.replayed {
            let before = self.replayed_seen.fetch_max(replayed, Ordering::Relaxed);
            self.events_replayed.inc_by(replayed.saturating_sub(before));
        }
        self.lag_events.clear();
        self.lag_bytes.clear();
        self.lag_seconds.clear();
        for l in &status.backups {
            let label = backup_label(&l.member);
            self.lag_events.get_or_create(&label).set(l.lag_events as i64);
            self.lag_bytes.get_or_create(&label).set(l.lag_bytes as i64);
            self.lag_seconds.get_or_create(&label).set(l.lag_seconds);
        }
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Whether the agent does its work: not fenced, not stopped.
pub fn health(s: &AgentStatus) -> Result<(), String> {
    match s.state.as_str() {
        "fenced" => Err("the primary is fenced: its output is held for good".into()),
        "diverged" => Err("the program diverged from the primary's".into()),
        "ended" => Err("the program has ended".into()),
        _ => Ok(()),
    }
}

/// Whether the agent is ready for its part: healthy, and a backup follows its primary with
/// nothing left to catch up.
pub fn ready(s: &AgentStatus) -> Result<(), String> {
    health(s)?;
    match (s.role, s.state.as_str()) {
        (Role::Primary, _) | (_, "live") => Ok(()),
        (_, "disconnected") => Err("not connected to the primary".into()),
        (_, "catching up") => Err("catching up with the primary".into()),
        _ => Ok(()),
    }
}

fn health_answer(key: &str, verdict: Result<(), String>) -> Answer {
    let ok = verdict.is_ok();
    let body = serde_json::json!({ key: ok, "reason": verdict.err() }).to_string();
    (if ok { 200 } else { 503 }, "application/json", body)
}

/// Serves `/metrics`, `/health` and `/ready` on `listen`, on the caller's runtime.
pub fn serve(
    listen: SocketAddr,
    status: StatusSource,
    held_outputs: Arc<dyn Fn() -> u64 + Send + Sync>,
) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let answer = Arc::new(move |path: &str| -> Answer {
        match path {
            "/metrics" => (200, coordinator::metrics::CONTENT_TYPE, agent().render(&status(), held_outputs())),
            "/health" => health_answer("healthy", health(&status())),
            "/ready" => health_answer("ready", ready(&status())),
            _ => (404, "text/plain", "served here: /metrics, /health, /ready\n".into()),
        }
    });
    tokio::spawn(async move {
        if let Err(e) = serve_get(listener, answer).await {
            tracing::warn!("the metrics endpoint failed: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Link;

    fn status(state: &str, role: Role) -> AgentStatus {
        AgentStatus {
            group: "g".into(),
            member: "p".into(),
            role,
            address: "a".into(),
            epoch: 2,
            held: 10,
            replayed: Some(7),
            released: Some(9),
            state: state.into(),
            kept_from: None,
            backups: vec![Link {
                member: "b1".into(),
                address: "b".into(),
                acked: 8,
                lag_events: 2,
                lag_bytes: 300,
                lag_seconds: 0.25,
                last_ack_seconds: 0.1,
            }],
        }
    }

    #[test]
    fn a_scrape_carries_positions_lag_and_counters() {
        let m = AgentMetrics::default();
        m.events_recorded.inc_by(10);
        m.batches_sent.get_or_create(&backup_label("b1")).inc();
        let text = m.render(&status("ok", Role::Primary), 3);
        for line in [
            "tandem_events_recorded_total 10",
            "tandem_batches_sent_total{backup=\"b1\"} 1",
            "tandem_backup_lag_events{backup=\"b1\"} 2",
            "tandem_held_outputs 3",
            "tandem_epoch 2",
            "tandem_events_replayed_total 7",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // The replayed count moves by what was replayed since the last scrape.
        let text = m.render(&AgentStatus { replayed: Some(12), ..status("ok", Role::Primary) }, 0);
        assert!(text.contains("tandem_events_replayed_total 12"), "{text}");
    }

    #[test]
    fn health_and_readiness_follow_the_agent_s_state() {
        assert!(health(&status("ok", Role::Primary)).is_ok());
        assert!(health(&status("fenced", Role::Primary)).unwrap_err().contains("fenced"));
        assert!(ready(&status("ok", Role::Backup)).is_ok());
        assert!(ready(&status("disconnected", Role::Backup)).unwrap_err().contains("not connected"));
    }
}
