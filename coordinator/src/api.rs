//! The coordinator's HTTP API as callers see it: versioned write requests and the replies.
//!
//! These types are kept apart from the Raft log's command (`model::Command`): the member that
//! receives a request converts it, so the log and the API can change on their own, and a request
//! a member does not know is refused as such (400, `unsupported_request`) instead of failing to
//! parse somewhere deeper.
//!
//! A write is `{"version": 1, "id": "...", "request": {"op": "register", ...}}`. A body without
//! `version` is version 0, the form before versions: `{"id": "...", "command": {"op": ...}}`.
//! A member answers every version up to its own and refuses a newer one.

use crate::model::{self, Command};
use eventlog::{Epoch, IncarnationToken, Seq};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub use crate::model::{Mode, Refusal};

/// A member not heard from for this long (agents report at least every second) is taken for
/// gone: shown as silent, and never named primary.
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The newest request form this build speaks.
pub const API_VERSION: u64 = 1;

/// A write in this build's form (`POST /v1/write`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub version: u64,
    /// The caller's: a retry under the same id returns the first outcome.
    pub id: String,
    pub request: Request,
}

impl WriteRequest {
    pub fn new(id: String, request: Request) -> WriteRequest {
        WriteRequest { version: API_VERSION, id, request }
    }
}

/// What a caller may ask for in version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Joins (or rejoins) a group: as its primary (`primary`, which creates the group with
    /// `mode`), or as a backup holding `token` (none: a new or wiped state dir).
    Register {
        group: String,
        member: String,
        address: String,
        #[serde(default)]
        primary: bool,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        token: Option<IncarnationToken>,
    },
    /// A member's position: a backup's durable seq, or the primary's recorded and released seqs.
    Report {
        group: String,
        member: String,
        epoch: Epoch,
        held: Seq,
        released: Seq,
        #[serde(default)]
        diverged: bool,
    },
    /// Names a new primary: `to`, or the most up-to-date eligible backup.
    Failover {
        group: String,
        #[serde(default)]
        to: Option<String>,
    },
    /// A member stops on purpose: the primary of `epoch` (its group is then stopped, and its
    /// primary may start it again as a new incarnation), or a backup (marked exited, and
    /// `diverged` when it stopped on a mismatch).
    Stop {
        group: String,
        member: String,
        epoch: Epoch,
        #[serde(default)]
        diverged: bool,
    },
    /// Takes a backup out of its group.
    RemoveMember { group: String, member: String },
    /// Forgets a group, so that a primary may create it again. Refused while its primary holds a
    /// lease, unless `force`.
    Reset {
        group: String,
        #[serde(default)]
        force: bool,
    },
}

/// The ops of version 1, to tell an unknown op from a malformed request.
const OPS: &[&str] = &["register", "report", "failover", "stop", "remove_member", "reset"];

impl Request {
    /// The Raft command for this request; `new_incarnation` names the group if it creates it.
    pub fn into_command(self, new_incarnation: IncarnationToken) -> Command {
        match self {
            Request::Register { group, member, address, primary, mode, token } => Command::Register {
                group,
                member,
                address,
                primary,
                mode,
                token: token.map(|t| t.to_string()),
                new_incarnation,
            },
            Request::Report { group, member, epoch, held, released, diverged } => {
                Command::Report { group, member, epoch, held, released, diverged }
            }
            Request::Failover { group, to } => Command::Failover { group, to, silent: Vec::new() },
            Request::Stop { group, member, epoch, diverged } => Command::Stop { group, member, epoch, diverged },
            Request::RemoveMember { group, member } => Command::RemoveMember { group, member },
            Request::Reset { group, .. } => Command::Reset { group },
        }
    }
}

/// Version 0, the form before versions: the Raft command of that time, frozen here so the model
/// may change without changing what this form means.
mod v0 {
    use super::Mode;
    use eventlog::IncarnationToken;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct Write {
        pub id: String,
        pub command: Command,
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case")]
    pub enum Command {
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
            /// Chosen by the receiving member when absent or empty, as it was then.
            #[serde(default, deserialize_with = "empty_or_token")]
            new_incarnation: Option<IncarnationToken>,
        },
        Report {
            group: String,
            member: String,
            epoch: u64,
            held: u64,
            released: u64,
            diverged: bool,
        },
        Failover {
            group: String,
            to: Option<String>,
        },
        LeaseExpired {
            group: String,
            epoch: u64,
        },
    }

    pub const OPS: &[&str] = &["register", "report", "failover", "lease_expired"];

    /// `""` was "none chosen yet" in this form.
    fn empty_or_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IncarnationToken>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// A write this member understood, in the version it came in.
#[derive(Debug)]
pub struct Write(Form);

#[derive(Debug)]
enum Form {
    V0(v0::Write),
    Current(WriteRequest),
}

/// Why a write body was refused before it reached the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("this member speaks API version {API_VERSION}; request version {version} is newer (upgrade the member)")]
    NewerVersion { version: u64 },
    #[error("this member speaks API version {API_VERSION}; request op \"{op}\" is not known to it in version {version} (upgrade the member, or check the op's name)")]
    UnknownOp { version: u64, op: String },
    #[error("not a write request: {0}")]
    Malformed(String),
}

impl RequestError {
    /// The `error` field of the reply.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::NewerVersion { .. } | RequestError::UnknownOp { .. } => "unsupported_request",
            RequestError::Malformed(_) => "bad_request",
        }
    }
}

/// Reads a write body of any version this member knows. The version and op are looked at before
/// the body is parsed, since a parse failure would not say which of them is not known.
pub fn parse_write(body: &[u8]) -> Result<Write, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let version = match value.get("version") {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            RequestError::Malformed(format!("version must be a whole number from 0 to {API_VERSION}, not {v}"))
        })?,
    };
    if version > API_VERSION {
        return Err(RequestError::NewerVersion { version });
    }
    let (field, ops) = if version == 0 { ("command", v0::OPS) } else { ("request", OPS) };
    // A missing or non-text op is left to the parser, which names the missing field.
    if let Some(op) = value.get(field).and_then(|r| r.get("op")).and_then(Value::as_str) {
        if !ops.contains(&op) {
            return Err(RequestError::UnknownOp { version, op: op.to_string() });
        }
    }
    let malformed = |e: serde_json::Error| RequestError::Malformed(e.to_string());
    let form = if version == 0 {
        Form::V0(serde_json::from_value(value).map_err(malformed)?)
    } else {
        Form::Current(serde_json::from_value(value).map_err(malformed)?)
    };
    Ok(Write(form))
}

impl Write {
    pub fn id(&self) -> &str {
        match &self.0 {
            Form::V0(w) => &w.id,
            Form::Current(w) => &w.id,
        }
    }

    /// Whether this is a reset, and forced: `Some(force)` for a reset.
    pub fn reset_force(&self) -> Option<bool> {
        match &self.0 {
            Form::Current(WriteRequest { request: Request::Reset { force, .. }, .. }) => Some(*force),
            _ => None,
        }
    }

    /// The version the caller spoke.
    pub fn version(&self) -> u64 {
        match &self.0 {
            Form::V0(_) => 0,
            Form::Current(w) => w.version,
        }
    }

    /// The Raft entry for this write. `new_incarnation` is asked for only when a registration
    /// may create its group and the caller named no incarnation for it.
    pub fn into_entry<E>(
        self,
        new_incarnation: impl FnOnce() -> Result<IncarnationToken, E>,
    ) -> Result<model::Request, E> {
        let (id, command) = match self.0 {
            Form::Current(w) => {
                let new = match &w.request {
                    Request::Register { primary: true, .. } => new_incarnation()?,
                    _ => IncarnationToken::NONE,
                };
                (w.id, w.request.into_command(new))
            }
            Form::V0(w) => {
                let command = match w.command {
                    v0::Command::Register { group, member, address, primary, mode, token, new_incarnation: named } => {
                        let new = match named {
                            Some(named) => named,
                            None if primary => new_incarnation()?,
                            None => IncarnationToken::NONE,
                        };
                        Command::Register { group, member, address, primary, mode, token, new_incarnation: new }
                    }
                    v0::Command::Report { group, member, epoch, held, released, diverged } => Command::Report {
                        group,
                        member,
                        epoch: Epoch(epoch),
                        held: Seq(held),
                        released: Seq(released),
                        diverged,
                    },
                    v0::Command::Failover { group, to } => Command::Failover { group, to, silent: Vec::new() },
                    v0::Command::LeaseExpired { group, epoch } => {
                        Command::LeaseExpired { group, epoch: Epoch(epoch), silent: Vec::new() }
                    }
                };
                (w.id, command)
            }
        };
        Ok(model::Request { id, command })
    }
}

/// A group as the API shows it: the reply to a write, and to a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Names this group's history: a member holding another token holds state from a history
    /// that no longer exists.
    pub incarnation: IncarnationToken,
    /// Grows by one at every change of primary.
    pub epoch: Epoch,
    pub primary: Option<String>,
    pub mode: Mode,
    /// Highest seq the primary released output for.
    pub released: Seq,
    /// The primary is gone and no backup may take over.
    pub stalled: bool,
    /// Its primary ended the program on purpose; started again, it is a new incarnation.
    #[serde(default)]
    pub stopped: bool,
    pub members: BTreeMap<String, Member>,
    /// What is left of the primary's lease, as the leader sees it (reads only; leases are
    /// leader-local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_left_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where its agent listens.
    pub address: String,
    /// Highest seq it holds durably (a backup), or has recorded (the primary).
    pub held: Seq,
    /// Joined without a token: not eligible until it caught up from the primary's start.
    pub catching_up: bool,
    /// Stopped on a mismatch with the primary: never promoted.
    pub diverged: bool,
    /// Its agent said it stopped: not promoted until it registers or reports again.
    #[serde(default)]
    pub exited: bool,
    /// The leader has not heard from it for [`SILENT_AFTER`] (reads only): not promoted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
    /// Since the leader last heard a report from it (reads only; none before the first, or
    /// since this leader took over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_ms: Option<u64>,
}

impl From<&model::Group> for Group {
    fn from(g: &model::Group) -> Group {
        Group {
            incarnation: g.incarnation,
            epoch: g.epoch,
            primary: g.primary.clone(),
            mode: g.mode,
            released: g.released,
            stalled: g.stalled,
            stopped: g.stopped,
            members: g.members.iter().map(|(name, m)| (name.clone(), Member::from(m))).collect(),
            lease_left_ms: None,
        }
    }
}

impl From<&model::Member> for Member {
    fn from(m: &model::Member) -> Member {
        Member {
            address: m.address.clone(),
            held: m.held,
            catching_up: m.catching_up,
            diverged: m.diverged,
            exited: m.exited,
            silent: false,
            last_report_ms: None,
        }
    }
}

/// The reply to a write that changed nothing (409): the refusal, and the same said in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub error: Refusal,
    pub message: String,
}

/// Any other error reply: a kind (`unsupported_request`, `bad_request`, `no_quorum`, ...) and
/// what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub error: String,
    pub message: String,
}

/// The body of `POST /v1/lease`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Renewal {
    pub group: String,
    pub member: String,
    pub epoch: Epoch,
}

/// The reply to a renewal: whether the caller is still primary, and of which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewed {
    pub primary: bool,
    pub epoch: Epoch,
    /// The coordinator's lease timeout: a primary must stop before this long after a renewal it
    /// sent, or another may be named while it still acts.
    #[serde(default)]
    pub timeout_ms: u64,
}

#[cfg(test)]
mod tests;
