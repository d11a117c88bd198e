//! The coordinator's replicated state machine, free of I/O: every member applies the same
//! commands in the order Raft agreed and reaches the same state. Anything nondeterministic (a new
//! incarnation token, the time) is chosen by the member that proposes a command and carried in it.

use eventlog::{Epoch, IncarnationToken, Seq};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// How many request outcomes are kept for retries (oldest forgotten first).
pub const REMEMBERED_REQUESTS: usize = 100_000;

/// How a group's primary releases output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Outputs wait for the backups: a failover must land on a backup holding every event the
    /// primary released output for.
    Sync,
    /// Outputs leave at once: a failover lands on the most up-to-date backup.
    Async,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where its agent listens (the primary's replication address, a backup's control address).
    pub address: String,
    /// Highest seq it holds durably (a backup), or has recorded (the primary).
    pub held: Seq,
    /// Joined without a token: holds nothing until it has caught up from the primary's start.
    pub catching_up: bool,
    /// Stopped on a mismatch with the primary: never promoted.
    pub diverged: bool,
    /// Its agent said it stopped (its program ended, or it was told to stop): not promoted until
    /// it registers or reports again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Names this group's history; a member holding another group's or an older token holds
    /// state from a history that no longer exists.
    pub incarnation: IncarnationToken,
    /// Grows by one at every change of primary; frames and acks of older epochs are refused.
    pub epoch: Epoch,
    pub primary: Option<String>,
    pub mode: Mode,
    /// Highest seq the primary released output for (reported by it): a sync-mode failover needs
    /// a backup holding at least this much.
    pub released: Seq,
    /// The primary is gone and no backup is eligible: nothing is promoted onto a hole.
    pub stalled: bool,
    /// Its primary ended the program on purpose (it ended, or the agent was told to stop): no
    /// lease is kept and nobody is promoted; a primary registering again starts a new
    /// incarnation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    pub members: BTreeMap<String, Member>,
}

/// A change to the state, as proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// A member joins (or rejoins) a group: as its primary (`primary`, which creates the group
    /// with `mode`), or as a backup. `token` is the incarnation it holds (none for a new or wiped
    /// state dir); `new_incarnation` names the group if this creates it (the member that proposes
    /// the command chooses it). `token` stays the text the member presented: older builds logged
    /// whatever callers sent, and their entries must still read.
    Register {
        group: String,
        member: String,
        address: String,
        #[serde(default)]
        primary: bool,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        new_incarnation: IncarnationToken,
    },
    /// A member's position: a backup's durable seq, or the primary's recorded and released seqs.
    Report { group: String, member: String, epoch: Epoch, held: Seq, released: Seq, diverged: bool },
    /// Names a new primary: `to`, or the most up-to-date eligible backup. `silent`: members the
    /// proposing leader has not heard from for a while (chosen by it), never named.
    Failover {
        group: String,
        to: Option<String>,
        #[serde(default)]
        silent: Vec<String>,
    },
    /// The primary of `epoch` let its lease lapse (proposed by the leader that saw it).
    LeaseExpired {
        group: String,
        epoch: Epoch,
        #[serde(default)]
        silent: Vec<String>,
    },
    /// A member stops on purpose: the primary of `epoch` (the group is then stopped), or a
    /// backup (marked exited; `diverged` when it stopped on a mismatch).
    Stop {
        group: String,
        member: String,
        epoch: Epoch,
        #[serde(default)]
        diverged: bool,
    },
    /// Takes `member`, a backup, out of the group.
    RemoveMember { group: String, member: String },
    /// Forgets the group (the proposing member checked that its primary holds no lease, unless
    /// told otherwise): a primary may then create it again.
    Reset { group: String },
}

impl Command {
    pub fn group(&self) -> &str {
        match self {
            Command::Register { group, .. }
            | Command::Report { group, .. }
            | Command::Failover { group, .. }
            | Command::LeaseExpired { group, .. }
            | Command::Stop { group, .. }
            | Command::RemoveMember { group, .. }
            | Command::Reset { group } => group,
        }
    }
}

/// A write as clients send it: `id` is theirs, so a retry returns the first outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub command: Command,
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum Refusal {
    #[error("no group named {group}")]
    NoGroup { group: String },
    #[error("{member} is not a member of group {group}")]
    NoMember { group: String, member: String },
    #[error("{member} holds incarnation {held} but group {group} is incarnation {current}: its state is from a history that no longer exists; wipe its state dir to rejoin by full catch-up")]
    StaleIncarnation { group: String, member: String, held: String, current: IncarnationToken },
    #[error("{member} reports epoch {reported} but group {group} is at epoch {current}")]
    StaleEpoch { group: String, member: String, reported: Epoch, current: Epoch },
    #[error("{member} cannot be promoted in group {group}: {why}")]
    NotEligible { group: String, member: String, why: String },
    #[error("group {group} has no backup that may be promoted (each is diverged, stopped, silent, catching up, or behind what the primary released)")]
    NoEligible { group: String },
    #[error("group {group} registered mode {current}; {member} asked for {asked}")]
    ModeMismatch { group: String, member: String, current: String, asked: String },
    #[error("{member} cannot be primary of group {group}: {}; start {member} as a backup", who_is_primary(.primary, .epoch))]
    NotPrimary { group: String, member: String, primary: Option<String>, epoch: Epoch },
    #[error("group {group} is stopped (its primary ended the program): nobody is promoted; start its primary again to run it")]
    Stopped { group: String },
    #[error("{member} is the primary of group {group}: it cannot be removed (fail over first)")]
    IsPrimary { group: String, member: String },
    #[error("the primary of group {group}, {primary}, holds a lease ({left_ms} ms left): stop it first, or reset with --force if it is gone")]
    PrimaryLive { group: String, primary: String, left_ms: u64 },
}

/// How a refusal names a group's primary.
fn who_is_primary(primary: &Option<String>, epoch: &Epoch) -> String {
    match primary {
        Some(p) => format!("its primary is {p} in epoch {epoch}"),
        None => format!("it has no primary in epoch {epoch} (the group is stalled; `tandem group reset` forgets it)"),
    }
}

/// The result of a command: the group as it stands after it, or why it changed nothing.
pub type Outcome = Result<Group, Refusal>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub groups: BTreeMap<String, Group>,
    /// Outcomes of the last requests, by request id, oldest first in `request_order`.
    requests: BTreeMap<String, Outcome>,
    request_order: VecDeque<String>,
}

impl State {
    /// Applies `req` once: a request id seen before returns its first outcome unchanged.
    pub fn apply(&mut self, req: &Request) -> Outcome {
        if let Some(first) = self.requests.get(&req.id) {
            return first.clone();
        }
        let outcome = self.execute(&req.command);
        self.requests.insert(req.id.clone(), outcome.clone());
        self.request_order.push_back(req.id.clone());
        while self.request_order.len() > REMEMBERED_REQUESTS {
            if let Some(old) = self.request_order.pop_front() {
                self.requests.remove(&old);
            }
        }
        outcome
    }

    /// The outcome already recorded for a request id, if any.
    pub fn outcome_of(&self, id: &str) -> Option<&Outcome> {
        self.requests.get(id)
    }

    fn execute(&mut self, cmd: &Command) -> Outcome {
        match cmd {
            Command::Register { group, member, address, primary, mode, token, new_incarnation } => {
                self.register(group, member, address, *primary, *mode, token.as_deref(), *new_incarnation)
            }
            Command::Report { group, member, epoch, held, released, diverged } => {
                let g = self.group_mut(group)?;
                if *epoch != g.epoch {
                    return Err(Refusal::StaleEpoch {
                        group: group.clone(),
                        member: member.clone(),
                        reported: *epoch,
                        current: g.epoch,
                    });
                }
                let is_primary = g.primary.as_deref() == Some(member.as_str());
                let m = g
                    .members
                    .get_mut(member)
                    .ok_or_else(|| Refusal::NoMember { group: group.clone(), member: member.clone() })?;
                m.held = m.held.max(*held);
                m.diverged |= *diverged;
                m.exited = false;
                // A backup that reports a position has caught up from the start.
                m.catching_up &= *held == Seq::ZERO;
                if is_primary {
                    g.released = g.released.max(*released);
                }
                Ok(g.clone())
            }
            Command::Failover { group, to, silent } => self.failover(group, to.as_deref(), false, silent),
            Command::LeaseExpired { group, epoch, silent } => {
                let g = self.group_mut(group)?;
                if *epoch != g.epoch || g.primary.is_none() || g.stopped {
                    // Already handled: a failover happened since, the group is stalled, or its
                    // primary stopped it.
                    return Ok(g.clone());
                }
                self.failover(group, None, true, silent)
            }
            Command::Stop { group, member, epoch, diverged } => {
                let g = self.group_mut(group)?;
                if g.primary.as_deref() == Some(member.as_str()) {
                    if *epoch != g.epoch {
                        return Err(Refusal::StaleEpoch {
                            group: group.clone(),
                            member: member.clone(),
                            reported: *epoch,
                            current: g.epoch,
                        });
                    }
                    g.stopped = true;
                    return Ok(g.clone());
                }
                let m = g
                    .members
                    .get_mut(member)
                    .ok_or_else(|| Refusal::NoMember { group: group.clone(), member: member.clone() })?;
                m.exited = true;
                m.diverged |= *diverged;
                Ok(g.clone())
            }
            Command::RemoveMember { group, member } => {
                let g = self.group_mut(group)?;
                if g.primary.as_deref() == Some(member.as_str()) && !g.stopped {
                    return Err(Refusal::IsPrimary { group: group.clone(), member: member.clone() });
                }
                if g.members.remove(member).is_none() {
                    return Err(Refusal::NoMember { group: group.clone(), member: member.clone() });
                }
                Ok(g.clone())
            }
            Command::Reset { group } => {
                self.groups.remove(group).ok_or_else(|| Refusal::NoGroup { group: group.clone() })
            }
        }
    }

    fn group_mut(&mut self, group: &str) -> Result<&mut Group, Refusal> {
        self.groups.get_mut(group).ok_or_else(|| Refusal::NoGroup { group: group.to_string() })
    }

    #[allow(clippy::too_many_arguments)]
    fn register(
        &mut self,
        group: &str,
        member: &str,
        address: &str,
        as_primary: bool,
        mode: Option<Mode>,
        token: Option<&str>,
        new_incarnation: IncarnationToken,
    ) -> Outcome {
        if !self.groups.contains_key(group) {
            if !as_primary {
                return Err(Refusal::NoGroup { group: group.to_string() });
            }
            self.groups.insert(
                group.to_string(),
                Group {
                    incarnation: new_incarnation,
                    epoch: Epoch::FIRST,
                    primary: Some(member.to_string()),
                    mode: mode.unwrap_or(Mode::Sync),
                    released: Seq::ZERO,
                    stalled: false,
                    stopped: false,
                    members: BTreeMap::new(),
                },
            );
        }
        let g = self.group_mut(group)?;
        if as_primary && g.stopped {
            // Its primary ended the program: a new run is a new history, with its own token and
            // a later epoch (epochs only grow); whoever followed the old run must join afresh.
            g.incarnation = new_incarnation;
            g.epoch = g.epoch.next();
            g.primary = Some(member.to_string());
            g.mode = mode.unwrap_or(g.mode);
            g.released = Seq::ZERO;
            g.stalled = false;
            g.stopped = false;
            g.members.clear();
        }
        if let Some(held) = token {
            // Compared as text, as every build before did: members of two builds replaying the
            // same entry must reach the same outcome.
            if held != g.incarnation.to_string() {
                return Err(Refusal::StaleIncarnation {
                    group: group.to_string(),
                    member: member.to_string(),
                    held: held.to_string(),
                    current: g.incarnation,
                });
            }
        }
        if let Some(mode) = mode.filter(|m| *m != g.mode) {
            return Err(Refusal::ModeMismatch {
                group: group.to_string(),
                member: member.to_string(),
                current: g.mode.to_string(),
                asked: mode.to_string(),
            });
        }
        if as_primary && g.primary.as_deref() != Some(member) {
            return Err(Refusal::NotPrimary {
                group: group.to_string(),
                member: member.to_string(),
                primary: g.primary.clone(),
                epoch: g.epoch,
            });
        }
        let creating = g.members.is_empty();
        let m = g.members.entry(member.to_string()).or_insert_with(|| Member {
            address: String::new(),
            held: Seq::ZERO,
            catching_up: token.is_none() && !creating,
            diverged: false,
            exited: false,
        });
        m.address = address.to_string();
        m.exited = false;
        if token.is_none() && !creating {
            // No token: whatever it holds is not trusted; it catches up from the start.
            m.held = Seq::ZERO;
            m.catching_up = true;
        }
        Ok(g.clone())
    }

    /// Names a new primary. When the old one is gone (`primary_lost`) and no backup is eligible,
    /// the group stalls; otherwise a failover with nowhere to go changes nothing.
    fn failover(&mut self, group: &str, to: Option<&str>, primary_lost: bool, silent: &[String]) -> Outcome {
        let g = self.group_mut(group)?;
        if g.stopped {
            return Err(Refusal::Stopped { group: group.to_string() });
        }
        let old = g.primary.clone();
        let may_lead = |name: &str, m: &Member| -> Result<(), String> {
            eligible(name, m, old.as_deref(), g.mode, g.released, silent)
        };
        let chosen = match to {
            Some(name) => {
                let m = g
                    .members
                    .get(name)
                    .ok_or_else(|| Refusal::NoMember { group: group.to_string(), member: name.to_string() })?;
                may_lead(name, m).map_err(|why| Refusal::NotEligible {
                    group: group.to_string(),
                    member: name.to_string(),
                    why,
                })?;
                Some(name.to_string())
            }
            // The most up-to-date eligible backup; ties go to the first name, so every member
            // chooses the same one.
            None => g
                .members
                .iter()
                .filter(|(name, m)| may_lead(name, m).is_ok())
                .max_by(|a, b| a.1.held.cmp(&b.1.held).then_with(|| b.0.cmp(a.0)))
                .map(|(name, _)| name.clone()),
        };
        if chosen.is_none() && !primary_lost {
            return Err(Refusal::NoEligible { group: group.to_string() });
        }
        // The old primary's epoch is over: it may release nothing more.
        g.epoch = g.epoch.next();
        if let Some(old) = &old {
            g.members.remove(old);
        }
        g.stalled = chosen.is_none();
        g.primary = chosen;
        Ok(g.clone())
    }
}

/// Whether `name` may be named primary, and why not: not the primary, not diverged, not exited,
/// not silent, caught up, and in sync mode holding what the primary released output for.
pub fn eligible(
    name: &str,
    m: &Member,
    primary: Option<&str>,
    mode: Mode,
    released: Seq,
    silent: &[String],
) -> Result<(), String> {
    if Some(name) == primary {
        return Err("it is the primary".into());
    }
    if m.diverged {
        return Err("it diverged from the primary".into());
    }
    if m.exited {
        return Err("its agent stopped".into());
    }
    if silent.iter().any(|s| s == name) {
        return Err("it has not reported for a while (its agent may be gone)".into());
    }
    if m.catching_up {
        return Err("it has not caught up from the primary's start".into());
    }
    if mode == Mode::Sync && m.held < released {
        return Err(format!("it holds events up to {} but the primary released output for {}", m.held, released));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
