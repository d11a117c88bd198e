//! `tandem group` and `tandem failover`: an operator's requests to the coordinator about its
//! groups (list, show, take a member out, forget a group, name a new primary), and how their
//! answers are printed.

use crate::certs::Identity;
use crate::error::{Error, Result};
use coordinator::api::{Group, Refusal, Request};
use coordinator::client::{Client, ClientError};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The coordinator, as one command speaks to it.
pub struct Coordinator {
    client: Client,
    runtime: tokio::runtime::Runtime,
}

/// A refusal is said as the coordinator put it; anything else names the coordinator.
fn said(e: ClientError) -> Error {
    match e {
        ClientError::Refused(r) => Error::Declined(r.to_string()),
        e => Error::Setup(format!("coordinator: {e}")),
    }
}

impl Coordinator {
    /// The members at `addresses` (`https://ADDR` with this host's certificate `identity`).
    pub fn connect(addresses: &[String], identity: Option<(PathBuf, String)>) -> Result<Coordinator> {
        let client = match identity {
            Some((dir, name)) => {
                let (transport, bare) = crate::steer::transport(addresses, &Identity::load(&dir, &name)?)?;
                Client::new(bare, transport)
            }
            None if addresses.iter().any(|a| a.starts_with("https://")) => {
                return Err(Error::Setup(
                    "--coordinator names members over https: give this host's certificate too, with --certs DIR --name NAME".into(),
                ))
            }
            None => Client::new(addresses.to_vec(), coordinator::http::Transport::plain()),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("cannot start a runtime to ask the coordinator"))?;
        Ok(Coordinator { client, runtime })
    }

    pub fn list(&self) -> Result<BTreeMap<String, Group>> {
        self.runtime.block_on(self.client.groups()).map_err(said)
    }

    pub fn show(&self, group: &str) -> Result<Group> {
        match self.runtime.block_on(self.client.group(group)) {
            Err(ClientError::BadReply(why)) if why.contains("no_group") => {
                Err(Error::Declined(Refusal::NoGroup { group: group.to_string() }.to_string()))
            }
            other => other.map_err(said),
        }
    }

    pub fn remove_member(&self, group: &str, member: &str) -> Result<Group> {
        let asked = Request::RemoveMember { group: group.to_string(), member: member.to_string() };
        self.runtime.block_on(self.client.write(asked)).map_err(said)
    }

    /// Forgets `group`; refused while its primary holds a lease, unless `force`.
    pub fn reset(&self, group: &str, force: bool) -> Result<Group> {
        let asked = Request::Reset { group: group.to_string(), force };
        self.runtime.block_on(self.client.write(asked)).map_err(said)
    }

    /// Asks for a new primary of `group` (`to`, or the most up-to-date eligible backup) under
    /// the request id `id`: asked again under the same id, it happens once. A refusal because no
    /// backup holds what the primary released is retried for `patience`: after a primary's
    /// death the backups' last reports may still be on their way. The coordinator remembers each
    /// request id's outcome, refusals too, so retry N goes as `ID/retry-N`: the same ids in the
    /// same order whenever the command is run again with `ID`.
    pub fn failover(&self, group: &str, to: Option<&str>, id: &str, patience: Duration) -> Result<Group> {
        let asked = Request::Failover { group: group.to_string(), to: to.map(str::to_string) };
        let deadline = Instant::now() + patience;
        self.runtime.block_on(async {
            let mut this = id.to_string();
            let mut retry = 0u64;
            loop {
                match self.client.write_as(&this, asked.clone()).await {
                    Err(ClientError::Refused(r)) if may_pass(&r) && Instant::now() < deadline => {
                        tokio::time::sleep(RETRY_EVERY).await;
                        retry += 1;
                        this = format!("{id}/retry-{retry}");
                    }
                    other => return other.map_err(said),
                }
            }
        })
    }
}

/// How often a refused failover is asked again while the backups' reports may come.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// A refusal that the backups' next reports may lift: behind what the primary released.
fn may_pass(r: &Refusal) -> bool {
    match r {
        Refusal::NoEligible { .. } => true,
        Refusal::NotEligible { why, .. } => why.contains("released output") || why.contains("not reported"),
        _ => false,
    }
}

/// What a group's state is, in a word.
pub fn state_of(g: &Group) -> &'static str {
    if g.stopped {
        "stopped"
    } else if g.stalled {
        "stalled"
    } else {
        "running"
    }
}

/// One line per group.
pub fn render_list(groups: &BTreeMap<String, Group>) -> String {
    if groups.is_empty() {
        return "no groups\n".into();
    }
    let mut out =
        format!("{:<20} {:<8} {:>6} {:<16} {:<6} {:>7}\n", "GROUP", "STATE", "EPOCH", "PRIMARY", "MODE", "MEMBERS");
    for (name, g) in groups {
        let primary = g.primary.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "{name:<20} {:<8} {:>6} {primary:<16} {:<6} {:>7}",
            state_of(g),
            g.epoch.0,
            g.mode,
            g.members.len()
        );
    }
    out
}

/// A group and each of its members.
pub fn render_group(name: &str, g: &Group) -> String {
    let mut out = format!(
        "group {name}: {}, epoch {}, {} mode, incarnation {}\nprimary: {}",
        state_of(g),
        g.epoch.0,
        g.mode,
        g.incarnation,
        g.primary.as_deref().unwrap_or("none")
    );
    if let Some(left) = g.lease_left_ms.filter(|_| !g.stopped) {
        let _ = write!(out, " (lease: {left} ms left)");
    }
    let _ = writeln!(out, "\nreleased output up to event {}", g.released.0);
    let _ = writeln!(out, "{:<16} {:<8} {:>12} {:>12}  STATE", "MEMBER", "ROLE", "HELD", "LAST REPORT");
    for (member, m) in &g.members {
        let role = if g.primary.as_deref() == Some(member.as_str()) { "primary" } else { "backup" };
        let last = m.last_report_ms.map_or("-".to_string(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0));
        let mut marks = Vec::new();
        if m.diverged {
            marks.push("diverged: never promoted");
        }
        if m.exited {
            marks.push("exited: not promoted until it is back");
        }
        if m.silent {
            marks.push("silent: no report for 5s, not promoted");
        }
        if m.catching_up {
            marks.push("catching up");
        }
        let state = if marks.is_empty() { "ok".to_string() } else { marks.join("; ") };
        let _ = writeln!(out, "{member:<16} {role:<8} {:>12} {last:>12}  {state}", m.held.0);
    }
    out
}
