//! What `tandem status` shows, without I/O: an agent's own account of itself (the answer to a
//! control socket's `status` request), the coordinator's view of a group, and the table both
//! make, one row per member.

use coordinator::api;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The part an agent plays in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Backup,
    /// A backup that keeps the log without running the program.
    Witness,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Witness => "witness",
        }
    }
}

/// An agent's account of itself, as its control socket gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub group: String,
    pub member: String,
    pub role: Role,
    /// The host address others know it by: the primary's listening address, a backup's address
    /// on the way to its primary.
    pub address: String,
    pub epoch: u64,
    /// The last event recorded (the primary) or held durably (a backup).
    pub held: u64,
    /// A backup: the last event its program has replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
    /// The primary: the last event output was released for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<u64>,
    /// `ok`, `catching up`, `live` (a promoted backup), `fenced`, `ended`, `diverged`,
    /// `disconnected`.
    pub state: String,
    /// The primary: each connected backup as the primary sees it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<Link>,
    /// The primary: the first event its bounded log (`--retain`) still keeps, once it dropped
    /// older ones. No backup that needs an older one can join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_from: Option<u64>,
}

/// A connected backup, as its primary sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub member: String,
    pub address: String,
    /// The last event it acknowledged as durable.
    pub acked: u64,
    pub lag_events: u64,
    /// The bytes of the batches it has not acknowledged (those still in the primary's memory).
    pub lag_bytes: u64,
    /// How old the oldest event it has not acknowledged is.
    pub lag_seconds: f64,
    /// Since its last acknowledgement.
    pub last_ack_seconds: f64,
}

/// One member's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRow {
    pub member: String,
    pub address: String,
    pub role: String,
    pub epoch: u64,
    pub held: u64,
    pub lag_events: Option<u64>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    /// Seconds since the member last reported (to the coordinator, or acknowledged to its primary).
    pub last_report_seconds: Option<f64>,
    /// The primary's lease, as the coordinator's leader sees it.
    pub lease_left_seconds: Option<f64>,
    /// How much of the primary's history it holds while it catches up (0 to 1).
    pub progress: Option<f64>,
    /// `ok`, `catching up`, `diverged`, `exited` (its agent said it stopped), `silent` (the
    /// coordinator has not heard from it for 5 s), `stopped` (no report for 3 s), `fenced`, ...
    pub state: String,
}

/// One group's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: String,
    pub epoch: u64,
    pub primary: Option<String>,
    /// Where the view comes from: `coordinator` or `agents`.
    pub source: String,
    #[serde(default)]
    pub stalled: bool,
    /// The first event the primary's bounded log keeps, once it dropped older ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_from: Option<u64>,
    pub members: Vec<MemberRow>,
}

/// A member that has not reported for this long is taken as stopped: agents report at least
/// every second.
pub const STOPPED_AFTER_MS: u64 = 3_000;

/// Share of `of` that `held` covers, while it lags.
fn progress(held: u64, of: u64) -> Option<f64> {
    (of > held).then(|| if of == 0 { 0.0 } else { held as f64 / of as f64 })
}

fn row_of_agent(a: &AgentStatus) -> MemberRow {
    MemberRow {
        member: a.member.clone(),
        address: a.address.clone(),
        role: a.role.name().into(),
        epoch: a.epoch,
        held: a.held,
        lag_events: (a.role == Role::Primary).then_some(0),
        lag_bytes: (a.role == Role::Primary).then_some(0),
        lag_seconds: (a.role == Role::Primary).then_some(0.0),
        last_report_seconds: None,
        lease_left_seconds: None,
        progress: None,
        state: a.state.clone(),
    }
}

/// A backup's own account, laid over what its primary said of it: its state is its own.
fn merge_own(row: &mut MemberRow, own: &AgentStatus) {
    row.state = own.state.clone();
    row.held = row.held.max(own.held);
    row.epoch = row.epoch.max(own.epoch);
    if row.address.is_empty() {
        row.address = own.address.clone();
    }
}

/// Groups made from the agents' own accounts alone (no coordinator): each primary names its
/// connected backups with their lag; backups that answered themselves add their state, and one
/// whose primary did not answer here shows without a lag.
pub fn from_agents(agents: &[AgentStatus]) -> Vec<GroupStatus> {
    let mut groups: BTreeMap<&str, Vec<&AgentStatus>> = BTreeMap::new();
    for a in agents {
        groups.entry(&a.group).or_default().push(a);
    }
    groups
        .into_iter()
        .map(|(name, members)| {
            let primary = members.iter().find(|a| a.role == Role::Primary);
            let mut rows: Vec<MemberRow> = Vec::new();
            if let Some(p) = primary {
                rows.push(row_of_agent(p));
                let mut links: Vec<&Link> = p.backups.iter().collect();
                links.sort_by(|a, b| a.member.cmp(&b.member));
                for l in links {
                    rows.push(MemberRow {
                        member: l.member.clone(),
                        address: l.address.clone(),
                        role: "backup".into(),
                        epoch: p.epoch,
                        held: l.acked,
                        lag_events: Some(l.lag_events),
                        lag_bytes: Some(l.lag_bytes),
                        lag_seconds: Some(l.lag_seconds),
                        last_report_seconds: Some(l.last_ack_seconds),
                        lease_left_seconds: None,
                        progress: progress(l.acked, p.held),
                        state: if l.lag_events > 0 { "catching up".into() } else { "ok".into() },
                    });
                }
            }
            for a in members.iter().filter(|a| a.role != Role::Primary) {
                match rows.iter_mut().find(|r| r.member == a.member) {
                    Some(row) => {
                        row.role = a.role.name().into();
                        merge_own(row, a);
                    }
                    None => rows.push(row_of_agent(a)),
                }
            }
            GroupStatus {
                group: name.to_string(),
                epoch: members.iter().map(|a| a.epoch).max().unwrap_or(0),
                primary: primary.map(|p| p.member.clone()),
                source: "agents".into(),
                stalled: false,
                kept_from: primary.and_then(|p| p.kept_from),
                members: rows,
            }
        })
        .collect()
}

/// A group as the coordinator sees it, with what local agents say of themselves laid over it.
pub fn from_coordinator(name: &str, g: &api::Group, local: &[AgentStatus]) -> GroupStatus {
    let primary_held = g.primary.as_ref().and_then(|p| g.members.get(p)).map_or(0, |m| m.held.0);
    let primary_local = local.iter().find(|a| a.group == name && a.role == Role::Primary);
    // The primary first, then the backups by name.
    let mut members: Vec<(&String, &api::Member)> = g.members.iter().collect();
    members.sort_by_key(|(name, _)| g.primary.as_ref() != Some(*name));
    let rows = members
        .into_iter()
        .map(|(member, m)| {
            let is_primary = g.primary.as_deref() == Some(member.as_str());
            let lag = primary_held.saturating_sub(m.held.0);
            let link = primary_local.and_then(|p| p.backups.iter().find(|l| &l.member == member));
            let state = if m.diverged {
                "diverged"
            } else if m.exited {
                "exited"
            } else if m.silent {
                "silent"
            } else if m.last_report_ms.is_some_and(|ms| ms > STOPPED_AFTER_MS) {
                "stopped"
            } else if m.catching_up || (!is_primary && lag > 0) {
                "catching up"
            } else {
                "ok"
            };
            let mut row = MemberRow {
                member: member.clone(),
                address: m.address.clone(),
                role: if is_primary { "primary".into() } else { "backup".into() },
                epoch: g.epoch.0,
                held: m.held.0,
                lag_events: Some(if is_primary { 0 } else { lag }),
                lag_bytes: if is_primary { Some(0) } else { link.map(|l| l.lag_bytes) },
                lag_seconds: if is_primary { Some(0.0) } else { link.map(|l| l.lag_seconds) },
                last_report_seconds: m.last_report_ms.map(|ms| ms as f64 / 1000.0),
                lease_left_seconds: if is_primary { g.lease_left_ms.map(|ms| ms as f64 / 1000.0) } else { None },
                progress: if is_primary { None } else { progress(m.held.0, primary_held) },
                state: state.into(),
            };
            if let Some(own) = local.iter().find(|a| a.group == name && &a.member == member) {
                // Its own word is fresher than its last report.
                row.held = row.held.max(own.held);
                row.role = own.role.name().into();
                if own.state != "ok" {
                    row.state = own.state.clone();
                }
            }
            row
        })
        .collect();
    GroupStatus {
        group: name.to_string(),
        epoch: g.epoch.0,
        primary: g.primary.clone(),
        source: "coordinator".into(),
        stalled: g.stalled,
        kept_from: primary_local.and_then(|p| p.kept_from),
        members: rows,
    }
}

/// A byte count as people read it.
fn bytes(n: u64) -> String {
    crate::capture::human(n)
}

fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1}s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string()
    }
}

/// The groups as tables, one after the other.
pub fn render(groups: &[GroupStatus]) -> String {
    let mut out = String::new();
    for g in groups {
        let primary = g.primary.as_deref().unwrap_or("none");
        let stalled = if g.stalled { ", stalled: no backup may take over" } else { "" };
        let kept = g.kept_from.map_or_else(String::new, |k| {
            format!(", log kept from event {k} (--retain): no backup that needs older events can join")
        });
        out.push_str(&format!(
            "group {}: epoch {}, primary {primary} (from the {}){stalled}{kept}\n",
            g.group,
            g.epoch,
            if g.source == "coordinator" { "coordinator" } else { "agents" }
        ));
        let head = [
            "MEMBER",
            "ADDRESS",
            "ROLE",
            "EPOCH",
            "HELD",
            "LAG",
            "LAG BYTES",
            "LAG TIME",
            "REPORTED",
            "LEASE",
            "PROGRESS",
            "STATE",
        ];
        let dash = || "-".to_string();
        let rows: Vec<[String; 12]> = g
            .members
            .iter()
            .map(|r| {
                [
                    r.member.clone(),
                    if r.address.is_empty() { dash() } else { r.address.clone() },
                    r.role.clone(),
                    r.epoch.to_string(),
                    r.held.to_string(),
                    r.lag_events.map_or_else(dash, |n| n.to_string()),
                    r.lag_bytes.map_or_else(dash, bytes),
                    r.lag_seconds.map_or_else(dash, seconds),
                    r.last_report_seconds.map_or_else(dash, |s| format!("{} ago", seconds(s))),
                    r.lease_left_seconds.map_or_else(dash, seconds),
                    r.progress.map_or_else(dash, |p| format!("{:.1}%", p * 100.0)),
                    r.state.clone(),
                ]
            })
            .collect();
        let mut widths = head.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let text: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
            format!("  {}\n", text.join("  ").trim_end())
        };
        out.push_str(&line(&head.map(String::from)));
        for row in &rows {
            out.push_str(&line(row));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventlog::{Epoch, IncarnationToken, Seq};

    fn primary() -> AgentStatus {
        AgentStatus {
            group: "g".into(),
            member: "p".into(),
            role: Role::Primary,
            address: "10.0.0.1:7400".into(),
            epoch: 1,
            held: 100,
            replayed: None,
            released: Some(90),
            state: "ok".into(),
            kept_from: None,
            backups: vec![Link {
                member: "b1".into(),
                address: "10.0.0.2:4711".into(),
                acked: 40,
                lag_events: 60,
                lag_bytes: 6000,
                lag_seconds: 0.5,
                last_ack_seconds: 0.1,
            }],
        }
    }

    fn backup(member: &str, held: u64) -> AgentStatus {
        AgentStatus {
            group: "g".into(),
            member: member.into(),
            role: Role::Backup,
            address: "10.0.0.3".into(),
            epoch: 1,
            held,
            replayed: Some(held),
            released: None,
            state: "ok".into(),
            kept_from: None,
            backups: vec![],
        }
    }

    #[test]
    fn agents_alone_make_one_table_per_group_with_the_primary_s_lag() {
        let groups = from_agents(&[backup("b1", 41), primary(), backup("b2", 7)]);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!((g.primary.as_deref(), g.source.as_str()), (Some("p"), "agents"));
        let names: Vec<&str> = g.members.iter().map(|r| r.member.as_str()).collect();
        assert_eq!(names, ["p", "b1", "b2"]);
        let b1 = &g.members[1];
        assert_eq!((b1.held, b1.lag_events, b1.lag_bytes, b1.state.as_str()), (41, Some(60), Some(6000), "ok"));
        assert_eq!(b1.progress, Some(0.4));
        // A backup whose primary did not answer has no lag to show.
        assert_eq!(g.members[2].lag_events, None);
        let table = render(&groups);
        assert!(table.starts_with("group g: epoch 1, primary p (from the agents)\n"), "{table}");
        assert!(table.contains("MEMBER") && table.contains("5.9 KiB") && table.contains("40.0%"), "{table}");
    }

    #[test]
    fn the_coordinator_s_view_gives_lag_in_events_reports_and_the_lease() {
        let member = |held, last| api::Member {
            address: "x".into(),
            held: Seq(held),
            catching_up: false,
            diverged: false,
            exited: false,
            silent: false,
            last_report_ms: Some(last),
        };
        let g = api::Group {
            incarnation: IncarnationToken::NONE,
            epoch: Epoch(3),
            primary: Some("p".into()),
            mode: api::Mode::Sync,
            released: Seq(90),
            stalled: false,
            stopped: false,
            members: [("p".to_string(), member(100, 50)), ("b1".to_string(), member(100, 70))].into(),
            lease_left_ms: Some(400),
        };
        let s = from_coordinator("g", &g, &[]);
        assert_eq!(s.members[1].member, "b1");
        assert_eq!((s.members[1].lag_events, s.members[1].state.as_str()), (Some(0), "ok"));
        assert_eq!(s.members[0].lease_left_seconds, Some(0.4));
        assert_eq!(s.members[1].last_report_seconds, Some(0.07));
        // A primary on this host adds bytes and time to its backups' lag.
        let s = from_coordinator("g", &g, &[primary()]);
        assert_eq!(s.members[1].lag_bytes, Some(6000));
        // A member silent for longer than agents ever are has stopped.
        let mut silent = g.clone();
        silent.members.insert("b1".into(), member(100, 5_000));
        assert_eq!(from_coordinator("g", &silent, &[]).members[1].state, "stopped");
        // What the coordinator concluded of a member is its state: an agent that said it
        // stopped, one the leader has not heard from for long.
        for (exited, silent_flag, state) in [(true, false, "exited"), (false, true, "silent")] {
            let mut g = g.clone();
            g.members.insert("b1".into(), api::Member { exited, silent: silent_flag, ..member(100, 70) });
            assert_eq!(from_coordinator("g", &g, &[]).members[1].state, state);
        }
    }
}
