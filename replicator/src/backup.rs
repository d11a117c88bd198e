//! `tandem backup`: receive the primary's events into the state directory's log, acknowledge
//! them once durable, and run the same program in replay mode following that log.
//!
//! The network side (a thread with its own runtime) only ever appends whole, verified batches to
//! the log and syncs them before acknowledging; the replay follows the file as it grows. After a
//! cut it reconnects with the same resume handle and what the log holds, and the primary
//! continues from there. A restarted agent finds its log, replays it from the start and resumes
//! the stream where the log ends.

use crate::capture;
use crate::certs::Identity;
use crate::control::{self, ControlReply, ControlRequest};
use crate::error::{Error, Result};
use crate::metrics::{self, StatusSource};
use crate::net::{self, read_frame, write_frame, NetError};
use crate::progress::{Progress, Unit};
use crate::recorder::now_ns;
use crate::replayer::{self, Following, Outcome, ReplayOptions, ViewPlace};
use crate::runway::Runway;
use crate::statedir::{random, Membership, StateDir};
use crate::status::{AgentStatus, Role};
use crate::steer::Steering;
use crate::wire::frame::Body;
use crate::wire::session::{BackupAction, BackupSession, SessionError, Standing};
use eventlog::logfile::{holds_batch_header, CaptureRef, LogError, LogReader, LogWriter};
use eventlog::ring::Geometry;
use eventlog::{IncarnationToken, Seq};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Pause between reconnection attempts.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);
/// A replay further behind what the backup holds than this is catching up: its progress is shown.
const CATCH_UP_EVENTS: u64 = 100_000;
/// A replay this close to what the backup holds has caught up (the program's last call, a sleep
/// say, may not have returned yet).
const CAUGHT_UP_EVENTS: u64 = 1_000;

pub struct BackupOptions {
    pub group: String,
    pub primary: SocketAddr,
    pub state_dir: PathBuf,
    pub certs: PathBuf,
    pub name: String,
    pub geometry: Geometry,
    pub stall_after: Duration,
    /// The program and its arguments; `None` runs the primary's.
    pub command: Option<Vec<OsString>>,
    /// Keep the stream durably without running the program: a copy of the log that cannot take
    /// over, but can seed a backup later.
    pub witness: bool,
    /// The coordinator's members: the backup registers, reports its position, and promotes
    /// itself when the coordinator names it primary.
    pub coordinator: Option<Vec<String>>,
    /// Where to serve metrics and health over HTTP.
    pub metrics: Option<SocketAddr>,
}

/// Where a backup stands, for its status.
struct Whereabouts {
    group: String,
    member: String,
    witness: bool,
    /// This host's address on the way to the primary.
    address: String,
    held: Arc<AtomicU64>,
    epoch: AtomicU64,
    connected: AtomicBool,
    following: Following,
}

impl Whereabouts {
    fn status(&self) -> AgentStatus {
        let held = self.held.load(Ordering::Relaxed);
        let replayed = (!self.witness).then(|| self.following.replayed.load(Ordering::Relaxed));
        let state = if self.following.go_live.load(Ordering::Relaxed) {
            "live"
        } else if self.following.stop.load(Ordering::Relaxed) {
            "ended"
        } else if !self.connected.load(Ordering::Relaxed) {
            "disconnected"
        } else if replayed.is_some_and(|r| held.saturating_sub(r) > CATCH_UP_EVENTS) {
            "catching up"
        } else {
            "ok"
        };
        AgentStatus {
            group: self.group.clone(),
            member: self.member.clone(),
            role: if self.witness { Role::Witness } else { Role::Backup },
            address: self.address.clone(),
            epoch: self.epoch.load(Ordering::Relaxed),
            held,
            replayed,
            released: None,
            state: state.into(),
            backups: vec![],
        }
    }
}

/// Shows the replay's progress while it is far behind what the backup holds (a late backup
/// replaying its catch-up), from a thread of its own.
fn follow_replay_progress(standing: Arc<Whereabouts>) {
    let watch = move || {
        let mut progress: Option<Progress> = None;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let held = standing.held.load(Ordering::Relaxed);
            let replayed = standing.following.replayed.load(Ordering::Relaxed);
            if let Some(p) = progress.as_mut() {
                p.set(replayed, held);
            }
            if held.saturating_sub(replayed) <= CAUGHT_UP_EVENTS {
                if let Some(p) = progress.take() {
                    p.finish();
                }
            } else if progress.is_none() && held - replayed > CATCH_UP_EVENTS {
                progress = Some(Progress::start("replaying the primary's events", replayed, held, Unit::Events));
            }
        }
    };
    let _ = std::thread::Builder::new().name("tandem-progress".into()).spawn(watch);
}

type Writer = LogWriter<BufWriter<File>>;

/// The backup's copy of the group's log. Batches land in space made ready ahead of the writer
/// ([`Runway`]), are synced before they are acknowledged, and are published to the replay
/// (`Following::written`) once whole.
struct LocalLog {
    writer: Writer,
    runway: Runway,
    written: Arc<AtomicU64>,
}

impl LocalLog {
    fn new(writer: Writer, written: Arc<AtomicU64>) -> std::io::Result<LocalLog> {
        let runway = Runway::start(writer.get_ref().get_ref(), writer.bytes_written())?;
        written.store(writer.bytes_written(), Ordering::Release);
        Ok(LocalLog { writer, runway, written })
    }

    fn append(
        &mut self,
        first_seq: Seq,
        count: u32,
        wall_ns: u64,
        events: &[u8],
        packed: Option<&[u8]>,
    ) -> std::io::Result<()> {
        self.runway.claim(self.writer.end_after(events.len(), packed));
        match packed {
            Some(p) => self.writer.write_packed_batch(p, events.len() as u32, first_seq, count, wall_ns),
            None => self.writer.write_batch(events, first_seq, count, wall_ns),
        }
    }

    /// Makes every batch appended durable, and readable by the replay.
    fn sync(&mut self) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        self.writer.flush()?;
        let end = self.writer.bytes_written();
        self.runway.synced(end - self.written.swap(end, Ordering::AcqRel));
        self.writer.get_ref().get_ref().sync_data()?;
        metrics::agent().fsync.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Nothing more will be written (the backup is promoted).
    fn close(&mut self) -> std::io::Result<()> {
        self.runway.stop();
        self.writer.flush()?;
        cut_at_end(self.writer.get_ref().get_ref(), self.writer.bytes_written(), &self.written)
    }

    /// Writes the end marker: the primary's program ended and this log holds all of it.
    fn finish(mut self) -> std::io::Result<()> {
        self.runway.stop();
        let out = self.writer.finish(now_ns())?;
        let file = out.get_ref();
        let end = (&*file).stream_position()?;
        cut_at_end(file, end, &self.written)
    }
}

/// The log ends at `end`: the space made ready past it is cut off, and the replay may read to it.
fn cut_at_end(file: &File, end: u64, written: &AtomicU64) -> std::io::Result<()> {
    file.set_len(end)?;
    file.sync_all()?;
    written.store(end, Ordering::Release);
    Ok(())
}

/// The local log, continued where its complete part ends: (writer, last event held, ended).
fn resume_log(path: &Path) -> Result<(Writer, Seq, bool)> {
    let bad = |source| Error::Log { path: path.to_owned(), source };
    let io = || Error::io(path.display().to_string());
    let mut reader = LogReader::open(std::io::BufReader::new(File::open(path).map_err(io())?)).map_err(bad)?;
    let ended = loop {
        match reader.follow() {
            Ok(Some(Some(_))) => {}
            Ok(Some(None)) => break true,
            Ok(None) => break false,
            // A batch torn by a crash while it was written is the last thing in the file (it was
            // never acknowledged); one followed by others is damage, and is reported.
            Err(e @ (LogError::Checksum { .. } | LogError::Corrupt { .. } | LogError::SeqGap { .. })) => {
                let mut rest = File::open(path).map_err(io())?;
                // Past the failing batch's own magic.
                rest.seek(SeekFrom::Start(reader.offset() + 4)).map_err(io())?;
                if holds_batch_header(std::io::BufReader::new(rest)).map_err(io())? {
                    return Err(bad(e));
                }
                tracing::warn!(log = %path.display(), "{e}: a batch torn when this agent stopped; it is cut off and fetched again");
                break false;
            }
            Err(e) => return Err(bad(e)),
        }
    };
    let held = reader.next_seq().map_or(Seq::ZERO, |n| n - 1);
    let mut file = OpenOptions::new().write(true).open(path).map_err(io())?;
    // Cut a half-written last batch (the agent died while writing it) and any space made ready.
    file.set_len(reader.offset()).map_err(io())?;
    file.seek(SeekFrom::Start(reader.offset())).map_err(io())?;
    let writer = LogWriter::resume(BufWriter::with_capacity(1 << 20, file), reader.offset(), reader.next_seq());
    Ok((writer, held, ended))
}

pub fn run(opts: &BackupOptions) -> Result<Outcome> {
    let identity = Identity::load(&opts.certs, &opts.name)?;
    let dir = Arc::new(StateDir::open(&opts.state_dir)?);
    let log = dir.log_path();
    let membership = match dir.membership()? {
        Some(m) => m,
        None => Membership { incarnation: IncarnationToken::NONE, epoch: 0, handle: u128::from_be_bytes(random()?) },
    };
    // Without a token the log cannot be trusted to be this group's: catch up from the start.
    let (writer, held, ended) = if !membership.incarnation.is_none() && log.exists() {
        let (w, held, ended) = resume_log(&log)?;
        (Some(w), held, ended)
    } else {
        let _ = std::fs::remove_file(&log);
        (None, Seq::ZERO, false)
    };
    dir.store(&membership)?;

    let following = Following::default();
    following.stop.store(ended, Ordering::SeqCst);
    let writer = match writer {
        Some(w) if ended => {
            following.written.store(w.bytes_written(), Ordering::Release);
            None
        }
        Some(w) => Some(LocalLog::new(w, following.written.clone()).map_err(Error::io(log.display().to_string()))?),
        None => None,
    };
    let resumed = writer.is_some() || ended;
    let held = Arc::new(AtomicU64::new(held.0));
    let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), String>>();
    if resumed {
        let _ = ready_tx.send(Ok(()));
    }
    let standing = Arc::new(Whereabouts {
        group: opts.group.clone(),
        member: opts.name.clone(),
        witness: opts.witness,
        address: net::local_address_towards(opts.primary).map_or_else(String::new, |ip| ip.to_string()),
        held: held.clone(),
        epoch: AtomicU64::new(membership.epoch),
        connected: AtomicBool::new(false),
        following: following.clone(),
    });
    if !ended {
        let steering =
            opts.coordinator.as_ref().map(|c| Steering::new(c, &opts.group, &opts.name, &identity)).transpose()?;
        let net = Network {
            identity,
            primary: opts.primary,
            log: log.clone(),
            dir: dir.clone(),
            following: following.clone(),
            witness: opts.witness,
            ready: ready_tx,
            steering,
            held: held.clone(),
            standing: standing.clone(),
            metrics: opts.metrics,
        };
        let standing = Standing { incarnation: membership.incarnation, epoch: membership.epoch };
        let session =
            BackupSession::new(standing, &opts.group, &opts.name, membership.handle, Seq(held.load(Ordering::SeqCst)));
        // Detached: it serves the control socket for as long as the agent lives.
        std::thread::Builder::new()
            .name("tandem-backup-net".into())
            .spawn(move || net.run(session, writer))
            .map_err(Error::io("cannot start the network thread"))?;
    }
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(Error::Setup(why)),
        Err(_) => return Err(Error::Setup("the network thread ended before the primary welcomed this backup".into())),
    }
    if !opts.witness {
        follow_replay_progress(standing.clone());
    }
    if opts.witness {
        while !following.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        return Ok(Outcome::Completed { events: held.load(Ordering::SeqCst) });
    }
    let outcome = replayer::replay(&ReplayOptions {
        log,
        command: opts.command.clone(),
        go_live: false,
        geometry: opts.geometry,
        stall_after: opts.stall_after,
        follow: Some(following.clone()),
        view: Some(ViewPlace { store: dir.captures_path(), root: dir.view_path() }),
    });
    following.stop.store(true, Ordering::SeqCst);
    outcome
}

struct Network {
    identity: Identity,
    primary: SocketAddr,
    log: PathBuf,
    dir: Arc<StateDir>,
    following: Following,
    witness: bool,
    ready: mpsc::Sender<std::result::Result<(), String>>,
    steering: Option<Steering>,
    /// The last event held durably (reported to the coordinator): a [`Seq`]'s number.
    held: Arc<AtomicU64>,
    standing: Arc<Whereabouts>,
    metrics: Option<SocketAddr>,
}

enum SessionEnd {
    /// The primary's program ended and this backup holds all of it.
    Complete,
}

impl Network {
    fn run(self, mut session: BackupSession, mut writer: Option<LocalLog>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                let _ = self.ready.send(Err(format!("cannot start the network runtime: {e}")));
                return;
            }
        };
        runtime.block_on(async {
            let (requests_tx, mut requests) = tokio::sync::mpsc::channel(4);
            let standing = self.standing.clone();
            let status: StatusSource = Arc::new(move || standing.status());
            if let Some(addr) = self.metrics {
                if let Err(e) = metrics::serve(addr, status.clone(), Arc::new(|| 0)) {
                    let _ = self.ready.send(Err(format!("cannot serve metrics on {addr}: {e}")));
                    self.following.stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
            if let Some(steering) = &self.steering {
                let held = Some(session.standing.incarnation);
                let registered = steering
                    .register_when_ready(self.standing.address.clone(), held)
                    .await
                    .map(|g| (g.incarnation, g));
                match registered {
                    Ok((token, g)) => {
                        tracing::info!(
                            group = steering.group,
                            epoch = g.epoch.0,
                            primary = g.primary.as_deref().unwrap_or("none"),
                            "registered with the coordinator"
                        );
                        // The primary must speak for the group's incarnation and epoch.
                        session.standing.incarnation = token;
                        session.standing.epoch = session.standing.epoch.max(g.epoch.0);
                        self.standing.epoch.store(session.standing.epoch, Ordering::Relaxed);
                        if !self.witness {
                            let held = self.held.clone();
                            steering.report(g.epoch, move || (Seq(held.load(Ordering::Relaxed)), Seq::ZERO));
                            steering.await_promotion(g.epoch, requests_tx.clone(), self.following.fence.clone());
                        }
                    }
                    Err(e) => {
                        let _ = self.ready.send(Err(e.to_string()));
                        self.following.stop.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
            let control = control::serve(self.dir.path.clone(), requests_tx, status);
            tokio::spawn(async move {
                if let Err(e) = control.await {
                    tracing::warn!("the control socket failed: {e}; `tandem promote` cannot reach this agent");
                }
            });
            let endpoint = match net::client(&self.identity) {
                Ok(e) => e,
                Err(e) => {
                    let _ = self.ready.send(Err(e.to_string()));
                    return;
                }
            };
            let mut failures = 0u32;
            while !self.following.stop.load(Ordering::SeqCst) {
                let request = tokio::select! {
                    end = self.session(&endpoint, &mut session, &mut writer) => match end {
                        Ok(SessionEnd::Complete) => {
                            // Said before the log's end marker is written: the replay may end
                            // the process as soon as it reads that marker.
                            tracing::info!(held = %session.held, "the primary's program ended; this backup holds all of it");
                            if let Some(w) = writer.take() {
                                if let Err(e) = w.finish() {
                                    tracing::error!("cannot finish {}: {e}", self.log.display());
                                }
                            }
                            self.following.stop.store(true, Ordering::SeqCst);
                            break;
                        }
                        Err(e @ NetError::Refused { .. }) => {
                            tracing::error!("refused at the handshake: {e}");
                            let _ = self.ready.send(Err(format!("the primary refused this backup at the handshake: {e}")));
                            self.following.stop.store(true, Ordering::SeqCst);
                            break;
                        }
                        Err(NetError::Protocol(why)) if why.starts_with("refused") => {
                            tracing::error!(primary = %self.primary, "{why}");
                            let _ = self.ready.send(Err(why));
                            self.following.stop.store(true, Ordering::SeqCst);
                            break;
                        }
                        Err(e) => {
                            failures += 1;
                            // The first failure and then one line every ten seconds: a dead primary
                            // must not flood the log.
                            if failures == 1 || failures.is_multiple_of(50) {
                                tracing::warn!(primary = %self.primary, held = %session.held, "no session: {e}; reconnecting");
                            } else {
                                tracing::debug!(primary = %self.primary, "no session: {e}; reconnecting");
                            }
                            tokio::time::sleep(RECONNECT_EVERY).await;
                            continue;
                        }
                    },
                    Some(request) = requests.recv() => request,
                };
                failures = 0;
                // The session was dropped at an await point, never inside a log write: the log
                // ends with a whole batch.
                let reply = self.handle(&request.request, &session, &mut writer);
                let _ = request.reply.send(reply);
            }
            // Still answer, so that scripts learn where this agent stands.
            while let Some(request) = requests.recv().await {
                let _ = request.reply.send(self.handle(&request.request, &session, &mut writer));
            }
        });
    }

    /// A control request, between sessions.
    fn handle(&self, request: &ControlRequest, session: &BackupSession, writer: &mut Option<LocalLog>) -> ControlReply {
        match request {
            ControlRequest::Promote => self.promote(session, writer),
            // Answered by the socket itself.
            ControlRequest::Status => ControlReply::Report { agent: Box::new(self.standing.status()) },
        }
    }

    fn promote(&self, session: &BackupSession, writer: &mut Option<LocalLog>) -> ControlReply {
        if self.following.go_live.load(Ordering::SeqCst) {
            return ControlReply::error("already promoted");
        }
        if self.witness {
            return ControlReply::error("a witness keeps the log without running the program; it cannot take over");
        }
        if self.following.stop.load(Ordering::SeqCst) {
            return ControlReply::error("the primary's program ended; there is nothing to take over");
        }
        let Some(w) = writer.as_mut() else {
            return ControlReply::error("this backup holds nothing of the primary's yet; it cannot take over");
        };
        if let Err(e) = w.close() {
            return ControlReply::error(format!("cannot flush {}: {e}", self.log.display()));
        }
        self.following.go_live.store(true, Ordering::SeqCst);
        self.following.stop.store(true, Ordering::SeqCst);
        tracing::info!(held = %session.held, "promoted: replaying the events held, then going live");
        ControlReply::ok(format!("promoted: the program goes live after event {}", session.held))
    }

    /// Receives the capture of the program's data, unless this backup holds it already.
    async fn fetch_capture(&self, conn: &quinn::Connection, c: &CaptureRef) -> std::result::Result<(), NetError> {
        let failed = |e: crate::error::Error| NetError::Protocol(e.to_string());
        let store = capture::Store::open(&self.dir.captures_path()).map_err(failed)?;
        if store.holds(c) {
            return Ok(());
        }
        tracing::info!(capture = %c.name(), bytes = %capture::human(c.bytes), "receiving the program's data");
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&c.digest).await?;
        let _ = send.finish();
        let mut incoming = store.incoming_capture(c).map_err(failed)?;
        let mut progress = Progress::start("receiving the program's data", 0, c.bytes, Unit::Bytes);
        let mut received = 0u64;
        loop {
            match recv.read_chunk(1 << 16, true).await {
                Ok(Some(chunk)) => {
                    incoming.push(&chunk.bytes).map_err(failed)?;
                    received += chunk.bytes.len() as u64;
                    progress.set(received, c.bytes);
                }
                Ok(None) => {
                    progress.finish();
                    break;
                }
                Err(e) => return Err(NetError::Protocol(format!("receiving the capture {}: {e}", c.name()))),
            }
        }
        incoming.finish().map_err(failed)
    }

    async fn session(
        &self,
        endpoint: &quinn::Endpoint,
        session: &mut BackupSession,
        writer: &mut Option<LocalLog>,
    ) -> std::result::Result<SessionEnd, NetError> {
        let conn = net::connect(endpoint, self.primary).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, &session.hello()).await?;
        let Some(welcome) = read_frame(&mut recv).await? else {
            return Err(NetError::Protocol("the primary closed the session before WELCOME".into()));
        };
        let first = welcome.body.name();
        let launch = match &welcome.body {
            Body::Welcome { launch, .. } => Some(launch.clone()),
            _ => None,
        };
        match session.receive(welcome) {
            Ok(BackupAction::Welcomed { .. }) => {}
            Ok(_) => return Err(NetError::Protocol(format!("the primary sent {first} where WELCOME was due"))),
            Err(SessionError::Refused(why)) => {
                return Err(NetError::Protocol(format!("refused by the primary: {why}")))
            }
            Err(e @ (SessionError::Incarnation { .. } | SessionError::StaleEpoch { .. })) => {
                return Err(NetError::Protocol(format!("refused: {e}")))
            }
            Err(e) => return Err(NetError::Protocol(e.to_string())),
        }
        let store = |s: &BackupSession| {
            self.dir.store(&Membership {
                incarnation: s.standing.incarnation,
                epoch: s.standing.epoch,
                handle: s.handle,
            })
        };
        store(session).map_err(|e| NetError::Protocol(e.to_string()))?;
        // Welcomed: connected until this session ends. (The primary's data stream shows only
        // once it sends on it.)
        let _connected = Connected::new(&self.standing.connected);
        self.standing.epoch.store(session.standing.epoch, Ordering::Relaxed);
        if let Some(c) = launch.as_ref().and_then(|l| l.capture) {
            self.fetch_capture(&conn, &c).await?;
        }
        if writer.is_none() {
            let launch = launch.unwrap_or_default();
            let io = |e: std::io::Error| NetError::Protocol(format!("{}: {e}", self.log.display()));
            let file = crate::statedir::create_private_file(&self.log).map_err(io)?;
            let mut w = LogWriter::create(
                BufWriter::with_capacity(1 << 20, file),
                session.standing.incarnation,
                now_ns(),
                &launch,
            )
            .map_err(io)?;
            w.flush().map_err(io)?;
            *writer = Some(LocalLog::new(w, self.following.written.clone()).map_err(io)?);
            let _ = self.ready.send(Ok(()));
        }
        tracing::info!(primary = %self.primary, from = %session.held.next(), "following the primary");
        let mut data = net::frames(conn.accept_uni().await?);
        let mut control = net::frames(recv);
        let mut ended_at = None;
        let io = |e: std::io::Error| NetError::Protocol(format!("{}: {e}", self.log.display()));
        loop {
            let first = tokio::select! {
                f = data.recv() => f,
                f = control.recv() => f,
            };
            // Group commit: every batch that has already arrived is appended, then one sync and
            // one ACK cover them all.
            let closed = || NetError::Protocol("the primary closed a stream".into());
            let mut appended = None;
            let mut next = Some(first.ok_or_else(closed)?);
            while let Some(frame) = next {
                let Some(frame) = frame? else {
                    // The primary finishes its streams after END.
                    if ended_at.is_some() {
                        break;
                    }
                    return Err(closed());
                };
                match session.receive(frame).map_err(|e| NetError::Protocol(e.to_string()))? {
                    BackupAction::Append { first_seq, count, wall_ns, events, packed } => {
                        let Some(w) = writer.as_mut() else { unreachable!("the log exists once welcomed") };
                        // Kept as it crossed the network: compressed batches stay compressed.
                        w.append(first_seq, count, wall_ns, &events, packed.as_deref()).map_err(io)?;
                        metrics::agent().batches_received.inc();
                        let bytes = packed.as_ref().map_or(events.len(), |p| p.len());
                        metrics::agent().bytes_received.inc_by(bytes as u64);
                        appended = Some(first_seq + count as u64 - 1);
                    }
                    BackupAction::Confirmed { reply, .. } => write_frame(&mut send, &reply).await?,
                    BackupAction::Duplicate | BackupAction::Welcomed { .. } => {}
                    BackupAction::Ended { last_seq } => ended_at = Some(last_seq),
                }
                next = data.try_recv().or_else(|_| control.try_recv()).ok();
            }
            if let (Some(last), Some(w)) = (appended, writer.as_mut()) {
                w.sync().map_err(io)?;
                self.held.store(last.0, Ordering::Relaxed);
                write_frame(&mut send, &session.durable(last)).await?;
            }
            if ended_at.is_some_and(|last| session.held >= last) {
                conn.close(net::COMPLETE.into(), b"complete");
                return Ok(SessionEnd::Complete);
            }
        }
    }
}

/// Marks the backup connected for as long as it lives (a session's life).
struct Connected<'a>(&'a AtomicBool);

impl<'a> Connected<'a> {
    fn new(flag: &'a AtomicBool) -> Connected<'a> {
        flag.store(true, Ordering::Relaxed);
        Connected(flag)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventlog::logfile::Launch as LaunchRecord;
    use eventlog::record::encode_into;
    use eventlog::{Call, EventHeader};
    use std::io::Write;

    /// A log of `batches` batches of 4 events each, as the backup writes it (no end marker).
    fn log_bytes(batches: u64) -> (Vec<u8>, Vec<u64>) {
        let mut w = LogWriter::create(Vec::new(), IncarnationToken::NONE, 1, &LaunchRecord::default()).unwrap();
        let mut starts = Vec::new();
        for b in 0..batches {
            let mut body = Vec::new();
            for i in 0..4 {
                let h = EventHeader { payload_len: 300, ..EventHeader::new(Seq(b * 4 + i + 1), Call::Read) };
                encode_into(&mut body, &h, &[b as u8 + 1; 300]);
            }
            starts.push(w.bytes_written());
            w.write_batch(&body, Seq(b * 4 + 1), 4, 0).unwrap();
        }
        w.flush().unwrap();
        (w.get_ref().clone(), starts)
    }

    fn write_log(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("log.tlog");
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    #[test]
    fn a_restarted_backup_cuts_the_space_made_ready_and_a_torn_last_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (whole, starts) = log_bytes(3);
        // Space made ready past the log.
        let mut bytes = whole.clone();
        bytes.resize(whole.len() + (1 << 20), 0);
        let path = write_log(dir.path(), &bytes);
        let (w, held, ended) = resume_log(&path).unwrap();
        assert_eq!((held, ended, w.bytes_written()), (Seq(12), false, whole.len() as u64));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole.len() as u64);

        // The last batch torn: its header and half its body reached the disk, then zeros.
        let mut bytes = whole.clone();
        let torn_at = starts[2] as usize;
        bytes[torn_at + 40 + 600..].fill(0);
        bytes.resize(whole.len() + 4096, 0);
        let path = write_log(dir.path(), &bytes);
        let (w, held, _) = resume_log(&path).unwrap();
        assert_eq!((held, w.bytes_written()), (Seq(8), torn_at as u64));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), torn_at as u64);
    }

    #[test]
    fn a_damaged_batch_before_others_is_reported_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut bytes, starts) = log_bytes(3);
        bytes[starts[1] as usize + 100] ^= 0x40;
        let path = write_log(dir.path(), &bytes);
        let err = resume_log(&path).err().expect("a damaged log must not be resumed").to_string();
        assert!(err.contains("log.tlog") && err.contains("batch 2"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the damaged log was changed");
    }
}
