//! The two ends of a replication session, as state machines: frames in, frames and actions out.
//! No I/O and no clocks here; the agents do the sending, the writing to disk and the timing.
//!
//! The exchange, per session:
//!
//! ```text
//! backup                                   primary
//!   HELLO(group, member, handle, held)  ->
//!                                       <-  WELCOME(resume_from = held + 1, launch)
//!                                       <-  DATA(events)            ...
//!   RECEIVED(n): every event <= n is in
//!   the backup's memory                 ->
//!   ACK(n): every event <= n is durable ->
//!                                       <-  CONFIRM(n): output depending on events <= n is out
//!   CONFIRM-ACK(n)                      ->  (the primary may drop its retransmission buffer <= n)
//!                                       <-  END(last): the program has ended
//! ```
//!
//! Every frame carries the group's incarnation token and epoch. A frame of another incarnation,
//! or of an epoch older than this end's, is refused. A newer epoch is the two ends' one
//! difference: a backup adopts it from its primary's frames (that is how it learns the epoch
//! moved), but a primary never does: a backup speaking for a later epoch means another primary
//! has been named, and the primary's session ends as replaced.

use super::frame::{Body, Frame};
use bytes::Bytes;
use eventlog::ids::{IncarnationToken, Seq};
use eventlog::logfile::Launch;
use eventlog::record::{EventHeader, HEADER_LEN};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("frame of incarnation {got}, this group is incarnation {ours}")]
    Incarnation { got: IncarnationToken, ours: IncarnationToken },
    #[error("frame of epoch {got}, older than this group's epoch {ours}")]
    StaleEpoch { got: u64, ours: u64 },
    /// The primary's end only: the backup speaks for a later epoch.
    #[error(
        "this primary's epoch {ours} is over: a backup speaks for epoch {theirs}, so another primary has been named"
    )]
    Replaced { ours: u64, theirs: u64 },
    #[error("the peer is in group `{got}`, this agent serves group `{ours}`")]
    Group { got: String, ours: String },
    #[error("unexpected {0} frame in this state")]
    Unexpected(&'static str),
    #[error("{0}")]
    Protocol(String),
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// The backup's log holds events this primary's history does not share.
    #[error("{0}")]
    StartOver(String),
    /// The backup would need events a bounded log dropped.
    #[error(
        "this backup needs events from {need} on, but the primary's log keeps events from {kept_from} on (--retain): no backup can join from further back until the group starts again, with a larger --retain or none"
    )]
    NotKept { need: Seq, kept_from: Seq },
}

/// Where this end stands in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub incarnation: IncarnationToken,
    pub epoch: u64,
}

impl Standing {
    /// Refuses a frame of another incarnation or of an older epoch.
    fn check(&self, f: &Frame) -> Result<(), SessionError> {
        if f.incarnation != self.incarnation {
            return Err(SessionError::Incarnation { got: f.incarnation, ours: self.incarnation });
        }
        if f.epoch < self.epoch {
            return Err(SessionError::StaleEpoch { got: f.epoch, ours: self.epoch });
        }
        Ok(())
    }

    /// The backup's rule: a frame from its primary of a later epoch moves this end to it.
    fn adopt(&mut self, f: &Frame) -> Result<(), SessionError> {
        self.check(f)?;
        self.epoch = f.epoch;
        Ok(())
    }

    /// The primary's rule: its epoch is its own; a backup's frame of a later one means another
    /// primary has been named.
    fn refuse_newer(&self, f: &Frame) -> Result<(), SessionError> {
        self.check(f)?;
        if f.epoch > self.epoch {
            return Err(SessionError::Replaced { ours: self.epoch, theirs: f.epoch });
        }
        Ok(())
    }

    fn frame(&self, body: Body) -> Frame {
        Frame::new(self.incarnation, self.epoch, body)
    }
}

// ---- the primary's end ------------------------------------------------------------------------

/// Where a promoted primary's own history began: as a backup of epoch `from_epoch`'s primary it
/// held that primary's events up to `at`, and numbered its own from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakeOver {
    pub from_epoch: u64,
    pub at: Seq,
}

/// Whether a backup holding events up to `held`, from the primary of epoch `log_epoch`, holds a
/// part of this primary's history: each epoch has one primary and its log only grows, so the
/// backup's log is a prefix of ours if it came from us, or from the primary we took over from
/// and ends where we took over or before. Anything else may hold events no primary of ours
/// recorded: the backup starts over.
fn shares_history(
    standing: Standing,
    took_over: Option<TakeOver>,
    log_epoch: u64,
    held: Seq,
) -> Result<(), SessionError> {
    if held == Seq::ZERO || log_epoch == standing.epoch {
        return Ok(());
    }
    if log_epoch > standing.epoch {
        return Err(SessionError::Replaced { ours: standing.epoch, theirs: log_epoch });
    }
    if took_over.is_some_and(|t| t.from_epoch == log_epoch && held <= t.at) {
        return Ok(());
    }
    let ours = match took_over {
        Some(t) => format!("this primary took over from epoch {}'s at event {}", t.from_epoch, t.at),
        None => "this primary's history does not include it".to_string(),
    };
    Err(SessionError::StartOver(format!(
        "this backup holds events up to {held} from epoch {log_epoch}'s primary, but {ours} (epoch {}): its state is set aside and it catches up from the first event",
        standing.epoch
    )))
}

/// The primary's view of one backup.
#[derive(Debug)]
pub struct PrimarySession {
    pub standing: Standing,
    pub member: String,
    pub handle: u128,
    /// The next event to send.
    pub next_to_send: Seq,
    /// Every event up to here is durable on the backup.
    pub acked: Seq,
    /// Every event up to here is in the backup's memory (RECEIVED), durable or not.
    pub received: Seq,
    /// Highest CONFIRM sent.
    pub confirmed: Seq,
    /// Highest CONFIRM-ACK received: the retransmission buffer may drop events up to here.
    pub confirm_acked: Seq,
    pub ended: bool,
}

/// What a backup's acknowledgement must mean before output that depends on it may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AckLevel {
    /// The backup has verified the events and handed them to its log writer: they survive the
    /// loss of the primary's host, not the loss of both hosts at once.
    Received,
    /// The backup has synced them to its disk: they survive the loss of both hosts too.
    #[default]
    Durable,
}

impl PrimarySession {
    /// What the backup holds at `level`: output depending on events up to here may leave.
    pub fn holds(&self, level: AckLevel) -> Seq {
        match level {
            AckLevel::Received => self.received,
            AckLevel::Durable => self.acked,
        }
    }

    /// Answers a backup's first frame: the session and its WELCOME, or the reason to refuse.
    /// A backup with no token (a new or wiped state directory) joins only through a full
    /// catch-up, from the first event.
    pub fn accept(
        standing: Standing,
        took_over: Option<TakeOver>,
        group: &str,
        launch: &Launch,
        hello: &Frame,
        ack: AckLevel,
    ) -> Result<(PrimarySession, Frame), SessionError> {
        let Body::Hello { group: their_group, member, handle, held, log_epoch } = &hello.body else {
            return Err(SessionError::Unexpected(hello.body.name()));
        };
        if their_group != group {
            return Err(SessionError::Group { got: their_group.clone(), ours: group.to_string() });
        }
        let held = if hello.incarnation.is_none() {
            if *held != Seq::ZERO {
                return Err(SessionError::Protocol(format!(
                    "backup {member} holds events up to {held} but no incarnation token; wipe its state directory"
                )));
            }
            Seq::ZERO
        } else {
            // A backup of an older epoch is welcome if its log is a part of this history.
            if hello.incarnation != standing.incarnation {
                return Err(SessionError::Incarnation { got: hello.incarnation, ours: standing.incarnation });
            }
            if hello.epoch > standing.epoch {
                return Err(SessionError::Replaced { ours: standing.epoch, theirs: hello.epoch });
            }
            shares_history(standing, took_over, *log_epoch, *held)?;
            *held
        };
        let session = PrimarySession {
            standing,
            member: member.clone(),
            handle: *handle,
            next_to_send: held.next(),
            acked: held,
            received: held,
            confirmed: Seq::ZERO,
            confirm_acked: Seq::ZERO,
            ended: false,
        };
        let welcome = standing.frame(Body::Welcome {
            resume_from: held.next(),
            ack_received: ack == AckLevel::Received,
            launch: launch.clone(),
        });
        Ok((session, welcome))
    }

    /// [`accept`](Self::accept)'s answer, for a primary whose log keeps events from `kept_from`
    /// on: a backup that would need an older one (to resume, or to start over from the first)
    /// is refused.
    pub fn within_kept(
        accepted: Result<(PrimarySession, Frame), SessionError>,
        kept_from: Option<Seq>,
    ) -> Result<(PrimarySession, Frame), SessionError> {
        let need = match &accepted {
            Ok((session, _)) => session.next_to_send,
            Err(SessionError::StartOver(_)) => Seq::FIRST,
            Err(_) => return accepted,
        };
        match kept_from {
            Some(kept_from) if need < kept_from => Err(SessionError::NotKept { need, kept_from }),
            _ => accepted,
        }
    }

    /// Takes a frame from the backup.
    pub fn receive(&mut self, f: &Frame) -> Result<(), SessionError> {
        self.standing.refuse_newer(f)?;
        match &f.body {
            Body::Ack { seq } | Body::Received { seq } => {
                if *seq >= self.next_to_send {
                    return Err(SessionError::Protocol(format!(
                        "{}({seq}) for events not sent yet (sent up to {})",
                        f.body.name(),
                        self.next_to_send - 1
                    )));
                }
                if matches!(f.body, Body::Ack { .. }) {
                    self.acked = self.acked.max(*seq);
                }
                self.received = self.received.max(*seq);
                Ok(())
            }
            Body::ConfirmAck { seq } => {
                if *seq > self.confirmed {
                    return Err(SessionError::Protocol(format!(
                        "CONFIRM-ACK({seq}) beyond the last CONFIRM({})",
                        self.confirmed
                    )));
                }
                self.confirm_acked = self.confirm_acked.max(*seq);
                Ok(())
            }
            Body::Refuse { reason } => Err(SessionError::Refused(reason.clone())),
            other => Err(SessionError::Unexpected(other.name())),
        }
    }

    /// A DATA frame for the next batch, which must start where this session stands. A batch the
    /// backup already holds (it resumed beyond its start) is cut to what it lacks.
    pub fn data(
        &mut self,
        first_seq: Seq,
        count: u32,
        wall_ns: u64,
        events: &Bytes,
        packed: Option<&Bytes>,
    ) -> Option<Frame> {
        let last = first_seq + count as u64 - 1;
        if last < self.next_to_send || first_seq > self.next_to_send {
            return None;
        }
        // A batch the backup holds part of is cut, and goes uncompressed.
        let (first_seq, count, events, packed) = if first_seq < self.next_to_send {
            let skip = (self.next_to_send - first_seq) as usize;
            (self.next_to_send, count - skip as u32, events.slice(skip_events(events, skip)..), None)
        } else {
            (first_seq, count, events.clone(), packed.cloned())
        };
        self.next_to_send = last + 1;
        Some(self.standing.frame(Body::Data { first_seq, count, wall_ns, events, packed }))
    }

    /// A CONFIRM frame, if `released` moves past what this backup was last told (and it holds it).
    pub fn confirm(&mut self, released: Seq) -> Option<Frame> {
        let n = released.min(self.acked);
        (n > self.confirmed).then(|| {
            self.confirmed = n;
            self.standing.frame(Body::Confirm { seq: n })
        })
    }

    /// The END frame, once every event up to `last_seq` has been sent.
    pub fn end(&mut self, last_seq: Seq) -> Option<Frame> {
        (!self.ended && self.next_to_send > last_seq).then(|| {
            self.ended = true;
            self.standing.frame(Body::End { last_seq })
        })
    }
}

/// Byte offset of the `n`-th event of a verified batch body.
fn skip_events(body: &[u8], n: usize) -> usize {
    let mut at = 0;
    for _ in 0..n {
        let Some(h) = body.get(at..at + HEADER_LEN) else { return body.len() };
        let h: EventHeader = bytemuck::pod_read_unaligned(h);
        at += h.record_len();
    }
    at.min(body.len())
}

/// The highest sequence number that `min_backups` backups all hold: outputs depending only on
/// events up to it may leave. `None` when fewer backups are connected.
pub fn group_ack(acked: impl IntoIterator<Item = Seq>, min_backups: usize) -> Option<Seq> {
    if min_backups == 0 {
        return Some(Seq(u64::MAX));
    }
    let mut all: Vec<Seq> = acked.into_iter().collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.get(min_backups - 1).copied()
}

// ---- the backup's end -------------------------------------------------------------------------

/// What the backup's agent must do with a frame it received.
#[derive(Debug, PartialEq, Eq)]
pub enum BackupAction {
    /// Start (or keep) the program with this launch; events follow from `resume_from`.
    Welcomed { resume_from: Seq, adopted_token: bool },
    /// Make these events durable, then feed them to the program, then call `durable`.
    Append { first_seq: Seq, count: u32, wall_ns: u64, events: Bytes, packed: Option<Bytes> },
    /// A batch it already held: nothing to do.
    Duplicate,
    /// Store the confirmation, then send the frame.
    Confirmed { seq: Seq, reply: Frame },
    /// The primary's program ended at `last_seq`.
    Ended { last_seq: Seq },
}

#[derive(Debug)]
pub struct BackupSession {
    pub standing: Standing,
    pub group: String,
    pub member: String,
    pub handle: u128,
    /// Every event up to here is durable here.
    pub held: Seq,
    /// Every event up to here has been received (durable or being made so).
    pub received: Seq,
    pub welcomed: bool,
    /// The epoch of the primary the log came from: the epoch stored with it, then the epoch of
    /// the primary that welcomed this backup (whose history the log is, from then on).
    pub log_epoch: u64,
    /// The primary's output waits only for RECEIVED: durability may come later.
    pub ack_received: bool,
}

impl BackupSession {
    pub fn new(standing: Standing, group: &str, member: &str, handle: u128, held: Seq) -> BackupSession {
        BackupSession {
            standing,
            group: group.to_string(),
            member: member.to_string(),
            handle,
            held,
            received: held,
            welcomed: false,
            log_epoch: standing.epoch,
            ack_received: false,
        }
    }

    /// The session's first frame. Sent again, with the same handle, on every reconnection.
    pub fn hello(&mut self) -> Frame {
        self.welcomed = false;
        self.received = self.held;
        self.standing.frame(Body::Hello {
            group: self.group.clone(),
            member: self.member.clone(),
            handle: self.handle,
            held: self.held,
            log_epoch: self.log_epoch,
        })
    }

    pub fn receive(&mut self, f: Frame) -> Result<BackupAction, SessionError> {
        match &f.body {
            Body::Refuse { reason } => return Err(SessionError::Refused(reason.clone())),
            Body::StartOver { reason } => return Err(SessionError::StartOver(reason.clone())),
            _ => {}
        }
        if !self.welcomed {
            let Body::Welcome { resume_from, ack_received, .. } = f.body else {
                return Err(SessionError::Unexpected(f.body.name()));
            };
            let adopted_token = self.standing.incarnation.is_none();
            if adopted_token {
                if self.held != Seq::ZERO || resume_from != Seq::FIRST {
                    return Err(SessionError::Protocol("a backup without a token must catch up from the start".into()));
                }
                self.standing.incarnation = f.incarnation;
            }
            self.standing.adopt(&f)?;
            self.log_epoch = self.standing.epoch;
            if resume_from != self.held.next() {
                return Err(SessionError::Protocol(format!(
                    "the primary resumes at {resume_from}, this backup holds up to {}",
                    self.held
                )));
            }
            self.welcomed = true;
            self.ack_received = ack_received;
            return Ok(BackupAction::Welcomed { resume_from, adopted_token });
        }
        self.standing.adopt(&f)?;
        match f.body {
            Body::Data { first_seq, count, wall_ns, events, packed } => {
                let last = first_seq + count as u64 - 1;
                if last <= self.received {
                    return Ok(BackupAction::Duplicate);
                }
                if first_seq > self.received.next() {
                    return Err(SessionError::Protocol(format!(
                        "DATA from {first_seq}, but events from {} are missing",
                        self.received.next()
                    )));
                }
                let skip = (self.received.next() - first_seq) as usize;
                // A batch held in part is cut, and kept uncompressed.
                let (events, packed) = match skip {
                    0 => (events, packed),
                    _ => (events.slice(skip_events(&events, skip)..), None),
                };
                self.received = last;
                Ok(BackupAction::Append {
                    first_seq: first_seq + skip as u64,
                    count: count - skip as u32,
                    wall_ns,
                    events,
                    packed,
                })
            }
            Body::Confirm { seq } => {
                Ok(BackupAction::Confirmed { seq, reply: self.standing.frame(Body::ConfirmAck { seq }) })
            }
            Body::End { last_seq } => Ok(BackupAction::Ended { last_seq }),
            other => Err(SessionError::Unexpected(other.name())),
        }
    }

    /// Events up to `seq` are verified and handed to the log writer: the RECEIVED to send.
    pub fn in_memory(&self, seq: Seq) -> Frame {
        self.standing.frame(Body::Received { seq: seq.min(self.received) })
    }

    /// Events up to `seq` are now durable: the ACK to send.
    pub fn durable(&mut self, seq: Seq) -> Frame {
        self.held = self.held.max(seq.min(self.received));
        self.standing.frame(Body::Ack { seq: self.held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_learns_from_its_welcome_whether_output_waits_only_for_received() {
        for level in [AckLevel::Received, AckLevel::Durable] {
            let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 1 }, "g", "b", 1, Seq(0));
            let (_, welcome) =
                PrimarySession::accept(primary_standing(), None, "g", &launch(), &b.hello(), level).unwrap();
            b.receive(welcome).unwrap();
            assert_eq!(b.ack_received, level == AckLevel::Received);
        }
    }

    #[test]
    fn received_holds_at_the_received_level_and_ack_at_both() {
        let standing = Standing { incarnation: TOKEN, epoch: 1 };
        let hello = Frame::new(
            TOKEN,
            1,
            Body::Hello { group: "g".into(), member: "b".into(), handle: 1, held: Seq(0), log_epoch: 0 },
        );
        let (mut p, _) =
            PrimarySession::accept(standing, None, "g", &Launch::default(), &hello, AckLevel::Durable).unwrap();
        p.next_to_send = Seq(21);
        p.receive(&Frame::new(TOKEN, 1, Body::Received { seq: Seq(15) })).unwrap();
        assert_eq!((p.holds(AckLevel::Received), p.holds(AckLevel::Durable)), (Seq(15), Seq(0)));
        p.receive(&Frame::new(TOKEN, 1, Body::Ack { seq: Seq(10) })).unwrap();
        assert_eq!((p.holds(AckLevel::Received), p.holds(AckLevel::Durable)), (Seq(15), Seq(10)));
        p.receive(&Frame::new(TOKEN, 1, Body::Ack { seq: Seq(20) })).unwrap();
        assert_eq!((p.holds(AckLevel::Received), p.holds(AckLevel::Durable)), (Seq(20), Seq(20)));
        let ahead = p.receive(&Frame::new(TOKEN, 1, Body::Received { seq: Seq(21) }));
        assert!(ahead.is_err(), "RECEIVED beyond what was sent");
    }

    const TOKEN: IncarnationToken = IncarnationToken([9; 16]);

    use crate::wire::sample_events as events;

    fn launch() -> Launch {
        Launch { argv: vec![b"prog".to_vec()], env: vec![], cwd: b"/".to_vec(), ..Launch::default() }
    }

    fn primary_standing() -> Standing {
        Standing { incarnation: TOKEN, epoch: 1 }
    }

    /// Opens a session: HELLO, WELCOME.
    fn connect(backup: &mut BackupSession) -> PrimarySession {
        let hello = backup.hello();
        let (session, welcome) =
            PrimarySession::accept(primary_standing(), None, "g", &launch(), &hello, AckLevel::Durable).unwrap();
        assert!(matches!(backup.receive(welcome).unwrap(), BackupAction::Welcomed { .. }));
        session
    }

    #[test]
    fn a_new_backup_adopts_the_token_and_starts_from_one() {
        let mut b =
            BackupSession::new(Standing { incarnation: IncarnationToken::NONE, epoch: 0 }, "g", "b1", 7, Seq(0));
        let hello = b.hello();
        let (p, welcome) =
            PrimarySession::accept(primary_standing(), None, "g", &launch(), &hello, AckLevel::Durable).unwrap();
        assert_eq!(p.next_to_send, Seq(1));
        assert_eq!(b.receive(welcome).unwrap(), BackupAction::Welcomed { resume_from: Seq(1), adopted_token: true });
        assert_eq!(b.standing, primary_standing());
    }

    #[test]
    fn a_backup_that_needs_events_a_bounded_log_dropped_is_refused() {
        let accept = |held: u64, log_epoch: u64| {
            let took_over = Some(TakeOver { from_epoch: 2, at: Seq(100) });
            let ours = Standing { incarnation: TOKEN, epoch: 3 };
            let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: log_epoch }, "g", "b", 1, Seq(held));
            b.standing.epoch = 3;
            PrimarySession::accept(ours, took_over, "g", &launch(), &b.hello(), AckLevel::Durable)
        };
        let kept = Some(Seq(500));
        assert!(PrimarySession::within_kept(accept(499, 3), kept).is_ok());
        let err = PrimarySession::within_kept(accept(498, 3), kept).unwrap_err();
        assert!(matches!(err, SessionError::NotKept { need: Seq(499), kept_from: Seq(500) }), "{err}");
        // One that would start over needs the first event.
        let err = PrimarySession::within_kept(accept(101, 2), kept).unwrap_err();
        assert!(matches!(err, SessionError::NotKept { need: Seq(1), .. }), "{err}");
        assert!(PrimarySession::within_kept(accept(498, 3), None).is_ok());
    }

    #[test]
    fn another_incarnation_an_older_epoch_or_group_is_refused() {
        let mut other =
            BackupSession::new(Standing { incarnation: IncarnationToken([1; 16]), epoch: 1 }, "g", "b", 1, Seq(5));
        let err = PrimarySession::accept(primary_standing(), None, "g", &launch(), &other.hello(), AckLevel::Durable)
            .unwrap_err();
        assert!(matches!(err, SessionError::Incarnation { .. }));
        let mut stale = BackupSession::new(Standing { incarnation: TOKEN, epoch: 1 }, "g", "b", 1, Seq(5));
        let err = PrimarySession::accept(primary_standing(), None, "h", &launch(), &stale.hello(), AckLevel::Durable)
            .unwrap_err();
        assert!(matches!(err, SessionError::Group { .. }));
        // A frame of an older epoch mid-session.
        let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 3 }, "g", "b", 1, Seq(0));
        let hello = b.hello();
        let (_, welcome) = PrimarySession::accept(
            Standing { incarnation: TOKEN, epoch: 3 },
            None,
            "g",
            &launch(),
            &hello,
            AckLevel::Durable,
        )
        .unwrap();
        b.receive(welcome).unwrap();
        let old = Frame::new(TOKEN, 2, Body::Confirm { seq: Seq(1) });
        assert_eq!(b.receive(old).unwrap_err(), SessionError::StaleEpoch { got: 2, ours: 3 });
    }

    #[test]
    fn a_primary_session_seeing_a_newer_epoch_is_replaced_and_keeps_its_own() {
        // Mid-session: a backup's frame speaks for epoch 2.
        let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 1 }, "g", "b", 1, Seq(0));
        let mut p = connect(&mut b);
        p.data(Seq(1), 3, 0, &events(1, 3), None).unwrap();
        let newer = Frame::new(TOKEN, 2, Body::Ack { seq: Seq(3) });
        assert_eq!(p.receive(&newer).unwrap_err(), SessionError::Replaced { ours: 1, theirs: 2 });
        assert_eq!(p.standing.epoch, 1, "the primary adopted the backup's epoch");
        assert_eq!(p.acked, Seq(0), "a replaced primary counted the frame");
        // Its frames still carry its own epoch.
        assert_eq!(p.confirm(Seq(3)), None);
        assert_eq!(p.end(Seq(3)).unwrap().epoch, 1);

        // At HELLO: a backup that learnt of epoch 2 (from the coordinator) is not welcomed.
        let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 2 }, "g", "b", 1, Seq(0));
        let err = PrimarySession::accept(primary_standing(), None, "g", &launch(), &b.hello(), AckLevel::Durable)
            .unwrap_err();
        assert_eq!(err, SessionError::Replaced { ours: 1, theirs: 2 });
        assert!(err.to_string().contains("epoch 1 is over"), "{err}");
    }

    #[test]
    fn a_backup_of_an_older_epoch_resumes_only_within_the_shared_history() {
        let ours = Standing { incarnation: TOKEN, epoch: 3 };
        let took_over = Some(TakeOver { from_epoch: 2, at: Seq(100) });
        let hello = |log_epoch: u64, held: u64, told: u64| {
            let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: log_epoch }, "g", "b", 1, Seq(held));
            // What the coordinator told it of the group moves its frames, not its log's epoch.
            b.standing.epoch = told;
            b.hello()
        };
        // A backup of the primary this one took over from, holding no more than was taken over.
        for held in [1, 100] {
            let (p, welcome) =
                PrimarySession::accept(ours, took_over, "g", &launch(), &hello(2, held, 3), AckLevel::Durable).unwrap();
            assert_eq!(p.next_to_send, Seq(held + 1));
            assert!(matches!(welcome.body, Body::Welcome { .. }));
        }
        // Holding more: events the old primary recorded that this one never had.
        let err =
            PrimarySession::accept(ours, took_over, "g", &launch(), &hello(2, 101, 3), AckLevel::Durable).unwrap_err();
        assert!(matches!(err, SessionError::StartOver(_)), "{err}");
        assert!(err.to_string().contains("took over from epoch 2's at event 100"), "{err}");
        // Of another epoch, or of a primary with no take-over: its log cannot be vouched for.
        for (took, log_epoch) in [(took_over, 1), (None, 2)] {
            let err = PrimarySession::accept(ours, took, "g", &launch(), &hello(log_epoch, 5, 3), AckLevel::Durable)
                .unwrap_err();
            assert!(matches!(err, SessionError::StartOver(_)), "{err}");
        }
        // Nothing held, or a log of this very epoch: welcome.
        assert!(PrimarySession::accept(ours, None, "g", &launch(), &hello(1, 0, 3), AckLevel::Durable).is_ok());
        assert!(PrimarySession::accept(ours, None, "g", &launch(), &hello(3, 50, 3), AckLevel::Durable).is_ok());
        // A log from a later epoch's primary: this one has been replaced.
        let err =
            PrimarySession::accept(ours, took_over, "g", &launch(), &hello(4, 5, 3), AckLevel::Durable).unwrap_err();
        assert_eq!(err, SessionError::Replaced { ours: 3, theirs: 4 });
        // Welcomed, the backup's log is this epoch's history from then on.
        let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 2 }, "g", "b", 1, Seq(7));
        let (_, welcome) =
            PrimarySession::accept(ours, took_over, "g", &launch(), &b.hello(), AckLevel::Durable).unwrap();
        b.receive(welcome).unwrap();
        assert_eq!(b.log_epoch, 3);
    }

    #[test]
    fn a_backup_adopts_its_primarys_newer_epoch() {
        // A new backup learns the group's epoch from the WELCOME.
        let mut b = BackupSession::new(Standing { incarnation: IncarnationToken::NONE, epoch: 0 }, "g", "b", 1, Seq(0));
        let primary = Standing { incarnation: TOKEN, epoch: 2 };
        let (_, welcome) =
            PrimarySession::accept(primary, None, "g", &launch(), &b.hello(), AckLevel::Durable).unwrap();
        assert!(matches!(b.receive(welcome).unwrap(), BackupAction::Welcomed { .. }));
        assert_eq!(b.standing, primary);
        // A later epoch in its primary's frames moves it, and its answers carry it.
        let confirm = Frame::new(TOKEN, 3, Body::Confirm { seq: Seq(0) });
        let BackupAction::Confirmed { reply, .. } = b.receive(confirm).unwrap() else { panic!() };
        assert_eq!((b.standing.epoch, reply.epoch), (3, 3));
    }

    #[test]
    fn data_ack_confirm_round() {
        let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 1 }, "g", "b", 1, Seq(0));
        let mut p = connect(&mut b);
        let data = p.data(Seq(1), 10, 0, &events(1, 10), None).unwrap();
        let BackupAction::Append { first_seq: Seq(1), count: 10, .. } = b.receive(data).unwrap() else { panic!() };
        p.receive(&b.durable(Seq(10))).unwrap();
        assert_eq!(p.acked, Seq(10));
        assert!(p.confirm(Seq(4)).is_some());
        assert!(p.confirm(Seq(4)).is_none(), "no repeated CONFIRM");
        let c = p.confirm(Seq(20)).unwrap();
        assert_eq!(c.body, Body::Confirm { seq: Seq(10) }, "never confirms beyond what the backup holds");
        let BackupAction::Confirmed { reply, .. } = b.receive(c).unwrap() else { panic!() };
        p.receive(&reply).unwrap();
        assert_eq!(p.confirm_acked, Seq(10));
        assert!(p.receive(&Frame::new(TOKEN, 1, Body::Ack { seq: Seq(11) })).is_err(), "ACK beyond what was sent");
    }

    /// A cut loses frames in flight; the backup reconnects with its handle and what it holds, the
    /// primary resumes there, and repeated batches are dropped: every event is appended once.
    #[test]
    fn resume_after_a_cut_loses_and_repeats_nothing() {
        let batches: Vec<(u64, u32)> = (0..20).map(|i| (1 + i * 7, 7)).collect();
        let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 1 }, "g", "b", 42, Seq(0));
        let mut appended = Vec::new();
        let mut p = connect(&mut b);
        for (round, &(first, count)) in batches.iter().enumerate() {
            let Some(f) = p.data(Seq(first), count, 0, &events(first, count as u64), None) else { continue };
            if round == 5 {
                continue; // lost in the cut
            }
            if round == 6 {
                // The session notices the gap and ends; the backup made durable what it had.
                assert!(matches!(b.receive(f), Err(SessionError::Protocol(_))));
                b.durable(b.received);
                p = connect(&mut b);
                assert_eq!(p.handle, 42);
                assert_eq!(p.next_to_send, Seq(36));
                // The primary resends from where the backup stands, batch boundaries and all.
                for &(first, count) in &batches[5..=round] {
                    let f = p.data(Seq(first), count, 0, &events(first, count as u64), None).unwrap();
                    let BackupAction::Append { first_seq, count, .. } = b.receive(f.clone()).unwrap() else { panic!() };
                    appended.extend(first_seq.0..first_seq.0 + count as u64);
                    assert_eq!(b.receive(f).unwrap(), BackupAction::Duplicate);
                }
                continue;
            }
            let BackupAction::Append { first_seq, count, .. } = b.receive(f).unwrap() else { panic!() };
            appended.extend(first_seq.0..first_seq.0 + count as u64);
            p.receive(&b.durable(first_seq + count as u64 - 1)).unwrap();
        }
        assert_eq!(appended, (1..=140).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_that_overlaps_what_is_held_is_cut() {
        let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 1 }, "g", "b", 1, Seq(4));
        let mut p = connect(&mut b);
        // The primary's batch 1..=10 straddles the resume point 5.
        let f = p.data(Seq(1), 10, 0, &events(1, 10), None).unwrap();
        let BackupAction::Append { first_seq, count, events: got, .. } = b.receive(f).unwrap() else { panic!() };
        assert_eq!((first_seq, count), (Seq(5), 6));
        assert_eq!(got, events(5, 6));
    }

    #[test]
    fn group_ack_is_the_nth_best_backup() {
        let acked = [Seq(5), Seq(9), Seq(7)];
        assert_eq!(group_ack(acked, 1), Some(Seq(9)));
        assert_eq!(group_ack(acked, 2), Some(Seq(7)));
        assert_eq!(group_ack(acked, 3), Some(Seq(5)));
        assert_eq!(group_ack(acked, 4), None);
        assert_eq!(group_ack([], 0), Some(Seq(u64::MAX)));
    }

    #[test]
    fn end_comes_after_the_last_event() {
        let mut b = BackupSession::new(Standing { incarnation: TOKEN, epoch: 1 }, "g", "b", 1, Seq(0));
        let mut p = connect(&mut b);
        assert!(p.end(Seq(3)).is_none());
        p.data(Seq(1), 3, 0, &events(1, 3), None).unwrap();
        let end = p.end(Seq(3)).unwrap();
        assert!(p.end(Seq(3)).is_none());
        assert_eq!(b.receive(end).unwrap(), BackupAction::Ended { last_seq: Seq(3) });
    }
}
