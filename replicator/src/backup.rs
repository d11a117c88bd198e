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
use crate::lifetime::{catch_signals, watch_signals, Stop};
use crate::metrics::{self, StatusSource};
use crate::net::{self, read_frame, write_frame, NetError};
use crate::primary::{self, Hub, HubPlan, OutputMode};
use crate::progress::{Progress, Unit};
use crate::recorder::now_ns;
use crate::recorder::Tap;
use crate::replayer::{self, Following, Outcome, Promotion, ReplayOptions, TakeOverTo, ViewPlace};
use crate::runway::Runway;
use crate::statedir::{random, Membership, StateDir};
use crate::status::{AgentStatus, Role};
use crate::steer::Steering;
use crate::wire::frame::Body;
use crate::wire::session::{AckLevel, BackupAction, BackupSession, SessionError, Standing, TakeOver};
use eventlog::logfile::{holds_batch_header, CaptureRef, Launch as LaunchRecord, LogError, LogReader, LogWriter};
use eventlog::ring::{Geometry, SharedRegion};
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
    /// The primary's address; with a coordinator, the group's primary is asked for there.
    pub primary: Option<SocketAddr>,
    /// Where to serve backups once promoted: the program then records on as the group's
    /// primary (`None`: it goes live unrecorded, with no backups of its own).
    pub listen: Option<SocketAddr>,
    /// How it serves them.
    pub serve: Serving,
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
    /// Promoted and then fenced, keep the program running, its output held, instead of stopping it.
    pub keep_fenced: bool,
    /// Where to serve metrics and health over HTTP.
    pub metrics: Option<SocketAddr>,
}

/// How a promoted backup serves its own backups: as `tandem primary` would.
#[derive(Clone, Copy, Debug)]
pub struct Serving {
    pub mode: OutputMode,
    pub min_backups: usize,
    pub ack: AckLevel,
    pub compress: bool,
    pub retain: Option<crate::retention::Retain>,
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
    /// Once promoted and recording on: the hub serving its backups.
    hub: std::sync::OnceLock<Arc<Hub>>,
}

impl Whereabouts {
    /// What the coordinator hears: what the log holds durably, or as primary, what it recorded
    /// and released.
    fn position(&self) -> (Seq, Seq) {
        match self.hub.get() {
            Some(hub) => hub.position(),
            None => (Seq(self.held.load(Ordering::Relaxed)), Seq::ZERO),
        }
    }

    fn status(&self) -> AgentStatus {
        if let Some(hub) = self.hub.get() {
            return hub.status();
        }
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
            role: match (self.witness, state) {
                (true, _) => Role::Witness,
                // Promoted: its program serves as the group's primary.
                (false, "live") => Role::Primary,
                (false, _) => Role::Backup,
            },
            address: self.address.clone(),
            epoch: self.epoch.load(Ordering::Relaxed),
            held,
            replayed,
            released: None,
            state: state.into(),
            kept_from: None,
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
    /// Where the log ended at its last sync, and the event that comes next there.
    synced: (u64, Option<Seq>),
}

impl LocalLog {
    fn new(writer: Writer, written: Arc<AtomicU64>) -> std::io::Result<LocalLog> {
        let runway = Runway::start(writer.get_ref().get_ref(), writer.bytes_written())?;
        written.store(writer.bytes_written(), Ordering::Release);
        let synced = (writer.bytes_written(), writer.next_seq());
        Ok(LocalLog { writer, runway, written, synced })
    }

    /// The log as it was at its last sync, after a write or sync failed (a full disk): whatever
    /// was written past that point, part of a batch perhaps, is cut off and fetched again.
    fn back_to_last_sync(mut self) -> std::io::Result<LocalLog> {
        self.runway.stop();
        let (end, next_seq) = self.synced;
        // Bytes still buffered are dropped, never written after the cut.
        let (mut file, _unwritten) = self.writer.into_inner().into_parts();
        file.set_len(end)?;
        file.seek(SeekFrom::Start(end))?;
        let writer = LogWriter::resume(BufWriter::with_capacity(1 << 20, file), end, next_seq);
        LocalLog::new(writer, self.written)
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

    /// Hands every batch appended to the kernel, readable by the replay: where the log ends now,
    /// for [`LocalLog::synced_to`] once a sync begun after this has ended.
    fn hand_over(&mut self) -> std::io::Result<(u64, Option<Seq>)> {
        self.writer.flush()?;
        let end = self.writer.bytes_written();
        self.runway.synced(end - self.written.swap(end, Ordering::AcqRel));
        Ok((end, self.writer.next_seq()))
    }

    /// Starts making what [`LocalLog::hand_over`] handed over durable, on a thread of its own:
    /// batches keep arriving, and being written, meanwhile.
    fn start_sync(&self) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
        let file = self.writer.get_ref().get_ref().try_clone()?;
        Ok(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let synced = file.sync_data();
            metrics::agent().fsync.observe(started.elapsed().as_secs_f64());
            synced
        }))
    }

    /// The log was durable up to `mark` (from [`LocalLog::hand_over`]).
    fn synced_to(&mut self, mark: (u64, Option<Seq>)) {
        self.synced = mark;
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
        None => Membership {
            incarnation: IncarnationToken::NONE,
            epoch: 0,
            handle: u128::from_be_bytes(random()?),
            took_over: None,
        },
    };
    // A former primary's directory has no resume handle of its own.
    let membership = match membership.handle {
        0 => Membership { handle: u128::from_be_bytes(random()?), ..membership },
        _ => membership,
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
    following.fence.keep_program(opts.keep_fenced);
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
        address: match (opts.listen, opts.primary) {
            (Some(listen), _) => listen.to_string(),
            (None, Some(primary)) => net::local_address_towards(primary).map_or_else(String::new, |ip| ip.to_string()),
            (None, None) => String::new(),
        },
        held: held.clone(),
        epoch: AtomicU64::new(membership.epoch),
        connected: AtomicBool::new(false),
        following: following.clone(),
        hub: std::sync::OnceLock::new(),
    });
    let steering =
        opts.coordinator.as_ref().map(|c| Steering::new(c, &opts.group, &opts.name, &identity)).transpose()?;
    if !ended {
        let net = Network {
            identity,
            primary: std::sync::Mutex::new(opts.primary),
            log: log.clone(),
            dir: dir.clone(),
            following: following.clone(),
            witness: opts.witness,
            ready: ready_tx,
            steering: steering.clone(),
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
        let stop = Stop::new(false);
        let _watcher = watch_signals(catch_signals(), None, stop.clone());
        while !following.stop.load(Ordering::SeqCst) {
            if let Some(why) = following.fatal.get() {
                return Err(Error::Setup(why.clone()));
            }
            if let Some(signal) = stop.signal() {
                return Ok(Outcome::Stopped { signal, events: held.load(Ordering::SeqCst) });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(why) = following.fatal.get() {
            return Err(Error::Setup(why.clone()));
        }
        return Ok(Outcome::Completed { events: held.load(Ordering::SeqCst) });
    }
    let stop = Stop::new(false);
    let take_over = match opts.listen {
        Some(listen) => {
            let successor = Successor {
                identity: Identity::load(&opts.certs, &opts.name)?,
                dir: dir.clone(),
                listen,
                serve: opts.serve,
                standing: standing.clone(),
                stop: stop.clone(),
                steering,
                serving: None,
            };
            Some(std::sync::Mutex::new(Box::new(successor) as Box<dyn TakeOverTo>))
        }
        None => None,
    };
    let outcome = replayer::replay(&ReplayOptions {
        log,
        command: opts.command.clone(),
        go_live: false,
        geometry: opts.geometry,
        stall_after: opts.stall_after,
        follow: Some(following.clone()),
        view: Some(ViewPlace { store: dir.captures_path(), root: dir.view_path() }),
        stop,
        take_over,
    });
    following.stop.store(true, Ordering::SeqCst);
    if let Some(why) = following.start_over.get() {
        return Err(Error::StartOver(why.clone()));
    }
    outcome
}

/// A promoted backup serving as the group's primary: once its program goes live it builds its
/// hub, listens for backups, and its program's events are recorded on into its log.
struct Successor {
    identity: Identity,
    dir: Arc<StateDir>,
    listen: SocketAddr,
    serve: Serving,
    standing: Arc<Whereabouts>,
    stop: Arc<Stop>,
    steering: Option<Steering>,
    serving: Option<(tokio::runtime::Runtime, quinn::Endpoint, Arc<Hub>)>,
}

impl TakeOverTo for Successor {
    fn retain(&self) -> Option<crate::retention::Retain> {
        self.serve.retain
    }

    fn start(&mut self, _region: &Arc<SharedRegion>, last: Seq, launch: &LaunchRecord) -> Result<Arc<dyn Tap>> {
        let following = &self.standing.following;
        let Some(p) = following.promotion.get().copied() else {
            return Err(Error::Setup("going live without a promotion".into()));
        };
        let took_over = TakeOver { from_epoch: p.from_epoch, at: last };
        // From here the log is this epoch's history: a restarted agent, or a backup of the old
        // epoch, is judged by it.
        self.dir.store(&Membership {
            incarnation: p.incarnation,
            epoch: p.epoch,
            handle: p.handle,
            took_over: Some(took_over),
        })?;
        let runtime = primary::network_runtime()?;
        let hub = Hub::new(HubPlan {
            group: self.standing.group.clone(),
            member: self.standing.member.clone(),
            listen: self.listen,
            standing: Standing { incarnation: p.incarnation, epoch: p.epoch },
            took_over: Some(took_over),
            launch: launch.clone(),
            captures: self.dir.captures_path(),
            log: self.dir.log_path(),
            mode: self.serve.mode,
            min_backups: self.serve.min_backups,
            ack: self.serve.ack,
            compress: self.serve.compress,
            fence: following.fence.clone(),
            steering: self.steering.clone(),
        });
        let endpoint = primary::serve_backups(&runtime, &self.identity, &hub, self.listen)
            .map_err(|e| Error::Setup(format!("cannot serve backups as the group's primary: {e}")))?;
        let _ = self.standing.hub.set(hub.clone());
        self.standing.epoch.store(p.epoch, Ordering::Relaxed);
        tracing::info!(epoch = p.epoch, from = %last.next(), listen = %self.listen, "the group's primary now: recording on");
        self.serving = Some((runtime, endpoint, hub.clone()));
        Ok(hub)
    }

    fn finish(&mut self) {
        if let Some((runtime, endpoint, hub)) = self.serving.take() {
            primary::drain(&runtime, &hub, &self.stop);
            endpoint.close(0u32.into(), b"the primary's program has ended");
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

struct Network {
    identity: Identity,
    /// The primary's address: as given, then as the coordinator names it.
    primary: std::sync::Mutex<Option<SocketAddr>>,
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
                            let standing = self.standing.clone();
                            steering.report_held(g.epoch, move || standing.position());
                            steering.await_promotion(
                                g.epoch,
                                requests_tx.clone(),
                                self.following.fence.clone(),
                                self.following.named_epoch.clone(),
                            );
                        }
                    }
                    Err(e) => {
                        let _ = self.ready.send(Err(e.to_string()));
                        self.following.stop.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
            let control = control::serve(self.dir.path.clone(), requests_tx, status, self.steering.is_some());
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
                        // Final: another try is refused the same way.
                        Err(e) if net::refusal(&e).is_some() => {
                            let why = net::refusal(&e).unwrap_or_default();
                            let why = format!("the primary at {} refused this backup at the handshake: {why}", self.primary_name());
                            tracing::error!("{why}");
                            self.give_up(why);
                            break;
                        }
                        Err(NetError::StartOver(why)) => {
                            self.start_over(why, session.log_epoch);
                            break;
                        }
                        Err(NetError::Protocol(why)) if why.starts_with("refused") => {
                            tracing::error!(primary = %self.primary_name(), "{why}");
                            self.give_up(why);
                            break;
                        }
                        Err(NetError::LocalLog { path, source }) => {
                            // The log goes back to its last sync: the primary resumes there.
                            if let Some(w) = writer.take() {
                                match w.back_to_last_sync() {
                                    Ok(w) => writer = Some(w),
                                    Err(e) => {
                                        let why = format!("cannot write {}: {source}; and cannot cut it back to its last sync: {e}", path.display());
                                        tracing::error!("{why}");
                                        self.give_up(why);
                                        break;
                                    }
                                }
                            }
                            if out_of_space(&source) {
                                wait_for_room(&path, &source).await;
                            } else {
                                tracing::warn!("cannot write {}: {source}; trying again", path.display());
                                tokio::time::sleep(RECONNECT_EVERY).await;
                            }
                            continue;
                        }
                        Err(e) => {
                            failures += 1;
                            // The first failure and then one line every ten seconds: a dead primary
                            // must not flood the log.
                            if failures == 1 || failures.is_multiple_of(50) {
                                tracing::warn!(primary = %self.primary_name(), held = %session.held, "no session: {e}; reconnecting");
                            } else {
                                tracing::debug!(primary = %self.primary_name(), "no session: {e}; reconnecting");
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

    fn primary_name(&self) -> String {
        match *self.primary.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(addr) => addr.to_string(),
            None => "(not known yet)".into(),
        }
    }

    /// Where the group's primary is: with a coordinator, the address its primary registered (a
    /// promoted backup's own --listen), so that backups follow a new primary by themselves;
    /// else the address given.
    async fn find_primary(&self) -> std::result::Result<SocketAddr, NetError> {
        if let Some(steering) = &self.steering {
            if let Ok(g) = steering.group_view().await {
                let named = g.primary.as_ref().filter(|p| **p != self.standing.member);
                let addr = named.and_then(|p| g.members.get(p)).and_then(|m| m.address.parse::<SocketAddr>().ok());
                if let Some(addr) = addr.filter(|a| !a.ip().is_unspecified()) {
                    *self.primary.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
                    return Ok(addr);
                }
            }
        }
        let known = *self.primary.lock().unwrap_or_else(|p| p.into_inner());
        known.ok_or_else(|| NetError::Protocol("the coordinator names no primary with an address yet".into()))
    }

    /// The primary's history does not hold this backup's log: its state is set aside (kept,
    /// never replayed), its program stopped, and the agent starts over.
    fn start_over(&self, why: String, log_epoch: u64) {
        let why = match self.dir.set_aside(log_epoch) {
            Ok(kept) => format!("{why}; the old state is kept in {}", kept.display()),
            Err(e) => format!("{why}; and setting the old state aside failed: {e}"),
        };
        tracing::warn!("{why}");
        let _ = self.following.start_over.set(why.clone());
        self.give_up(why);
    }

    /// The backup cannot go on: the agent stops its program and exits with `why`.
    fn give_up(&self, why: String) {
        let _ = self.following.fatal.set(why.clone());
        let _ = self.ready.send(Err(why));
        self.following.stop.store(true, Ordering::SeqCst);
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
        // The coordinator's epoch, or without one the next.
        let epoch = match self.following.named_epoch.load(Ordering::SeqCst) {
            0 => session.standing.epoch + 1,
            named => named,
        };
        let _ = self.following.promotion.set(Promotion {
            incarnation: session.standing.incarnation,
            from_epoch: session.log_epoch,
            epoch,
            handle: session.handle,
        });
        self.following.go_live.store(true, Ordering::SeqCst);
        self.following.stop.store(true, Ordering::SeqCst);
        tracing::info!(held = %session.held, epoch, "promoted: replaying the events held, then going live");
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
        let primary = self.find_primary().await?;
        let conn = net::connect(endpoint, primary).await?;
        let end = self.follow(&conn, session, writer).await;
        if let Err(e) = &end {
            // Said, so the primary does not take the connection's end for a complete session.
            conn.close(net::FAILED.into(), e.to_string().as_bytes());
        }
        end
    }

    /// One session on `conn`, from HELLO to the end of the program or the first failure.
    async fn follow(
        &self,
        conn: &quinn::Connection,
        session: &mut BackupSession,
        writer: &mut Option<LocalLog>,
    ) -> std::result::Result<SessionEnd, NetError> {
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
            Err(SessionError::StartOver(why)) => return Err(NetError::StartOver(why)),
            Err(e @ (SessionError::Incarnation { .. } | SessionError::StaleEpoch { .. })) => {
                return Err(NetError::Protocol(format!("refused: {e}")))
            }
            Err(e) => return Err(NetError::Protocol(e.to_string())),
        }
        let store = |s: &BackupSession| {
            self.dir.store(&Membership {
                incarnation: s.standing.incarnation,
                epoch: s.log_epoch,
                handle: s.handle,
                took_over: None,
            })
        };
        store(session).map_err(|e| NetError::Protocol(e.to_string()))?;
        // Welcomed: connected until this session ends. (The primary's data stream shows only
        // once it sends on it.)
        let _connected = Connected::new(&self.standing.connected);
        self.standing.epoch.store(session.standing.epoch, Ordering::Relaxed);
        if let Some(c) = launch.as_ref().and_then(|l| l.capture) {
            self.fetch_capture(conn, &c).await?;
        }
        let io = |source: std::io::Error| NetError::LocalLog { path: self.log.clone(), source };
        if writer.is_none() {
            let launch = launch.unwrap_or_default();
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
        tracing::info!(primary = %self.primary_name(), from = %session.held.next(), "following the primary");
        let mut data = net::frames(conn.accept_uni().await?);
        let mut control = net::frames(recv);
        let mut ended_at = None;
        // The commit path is pipelined: batches are verified, written and acknowledged as
        // RECEIVED at once, while one sync at a time makes them durable; a sync covers every
        // batch that arrived before it began (group commit), and its ACK follows when it ends.
        let mut syncing: Option<Sync> = None;
        let mut unsynced: Option<Seq> = None;
        // When the primary's output waits only for RECEIVED, syncs come at most every
        // LAZY_SYNC_EVERY: a flush per round costs the CPU the program shares.
        let lazy = session.ack_received;
        let mut next_sync_at = tokio::time::Instant::now();
        // The primary finishes its streams after END: then only the last sync is waited for.
        let mut finished = false;
        let closed = || NetError::Protocol("the primary closed a stream".into());
        loop {
            let next = tokio::select! {
                f = data.recv(), if !finished => Arrived::Frame(f),
                f = control.recv(), if !finished => Arrived::Frame(f),
                r = async { (&mut syncing.as_mut().expect("a sync runs").task).await }, if syncing.is_some() => {
                    Arrived::Synced(r)
                }
                _ = tokio::time::sleep_until(next_sync_at), if syncing.is_none() && unsynced.is_some() => {
                    Arrived::SyncDue
                }
                else => return Err(closed()),
            };
            let first = match next {
                Arrived::Frame(f) => Some(f),
                Arrived::Synced(r) => {
                    let Some(sync) = syncing.take() else { unreachable!("a sync ran") };
                    r.map_err(|e| NetError::Protocol(format!("the log's sync failed: {e}")))?.map_err(io)?;
                    let Some(w) = writer.as_mut() else { unreachable!("the log exists once welcomed") };
                    w.synced_to(sync.mark);
                    self.held.store(sync.last.0, Ordering::Relaxed);
                    write_frame(&mut send, &session.durable(sync.last)).await?;
                    None
                }
                Arrived::SyncDue => None,
            };
            if let Some(first) = first {
                let mut appended = None;
                let mut next = Some(first.ok_or_else(closed)?);
                while let Some(frame) = next {
                    let Some(frame) = frame? else {
                        if ended_at.is_some() {
                            finished = true;
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
                    w.hand_over().map_err(io)?;
                    // RECEIVED only where something waits for it: at the durable level the
                    // primary counts ACKs (each also counts as received).
                    if lazy {
                        write_frame(&mut send, &session.in_memory(last)).await?;
                    }
                    unsynced = Some(last);
                }
            }
            let due = !lazy || tokio::time::Instant::now() >= next_sync_at || ended_at.is_some();
            if syncing.is_none() && due {
                if let (Some(last), Some(w)) = (unsynced.take(), writer.as_mut()) {
                    let mark = w.hand_over().map_err(io)?;
                    syncing = Some(Sync { task: w.start_sync().map_err(io)?, last, mark });
                    next_sync_at = tokio::time::Instant::now() + LAZY_SYNC_EVERY;
                }
            }
            if ended_at.is_some_and(|last| session.held >= last) {
                conn.close(net::COMPLETE.into(), b"complete");
                return Ok(SessionEnd::Complete);
            }
        }
    }
}

/// What a backup's session waited for: a frame, the end of the log's sync, or the time for a
/// lazy one.
enum Arrived<F> {
    Frame(Option<F>),
    Synced(std::result::Result<std::io::Result<()>, tokio::task::JoinError>),
    SyncDue,
}

/// How often a backup syncs its log at most when the primary's output waits only for RECEIVED
/// (`--ack received`, or async mode).
const LAZY_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// A sync of the log under way: it makes the events up to `last` durable, the log up to `mark`.
struct Sync {
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    last: Seq,
    mark: (u64, Option<Seq>),
}

/// Whether a write failed for want of space (or of quota).
fn out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::ENOSPC | nix::libc::EDQUOT))
}

/// Free space a full disk must have again before the backup resumes.
const ROOM_TO_RESUME: u64 = 16 << 20;

/// Waits until the file system holding `log` has room again, saying so when it fills and when it
/// has room.
async fn wait_for_room(log: &Path, cause: &std::io::Error) {
    let dir = log.parent().unwrap_or(log);
    tracing::error!(
        "the disk holding {} is full ({cause}): this backup stops receiving, waits for room and then resumes by itself",
        log.display()
    );
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let free = nix::sys::statvfs::statvfs(dir).map(|s| s.blocks_available().saturating_mul(s.fragment_size()));
        if free.is_ok_and(|free| free >= ROOM_TO_RESUME) {
            tracing::info!("the disk holding {} has room again: resuming", log.display());
            return;
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

    /// Hands `log` over and syncs it, as a backup's session does in two steps.
    fn sync(log: &mut LocalLog) {
        let mark = log.hand_over().unwrap();
        log.writer.get_ref().get_ref().sync_data().unwrap();
        log.synced_to(mark);
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
    fn a_log_that_could_not_be_written_goes_back_to_its_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.tlog");
        let writer = LogWriter::create(
            BufWriter::new(File::create(&path).unwrap()),
            IncarnationToken::NONE,
            1,
            &LaunchRecord::default(),
        )
        .unwrap();
        let mut log = LocalLog::new(writer, Arc::default()).unwrap();
        let batch = |first: u64| {
            let mut body = Vec::new();
            for i in 0..4 {
                let h = EventHeader { payload_len: 100, ..EventHeader::new(Seq(first + i), Call::Read) };
                encode_into(&mut body, &h, &[7; 100]);
            }
            body
        };
        log.append(Seq(1), 4, 0, &batch(1), None).unwrap();
        sync(&mut log);
        let synced = log.writer.bytes_written();
        // A batch half on the disk, half still buffered, when the disk filled up.
        log.append(Seq(5), 4, 0, &batch(5), None).unwrap();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"TBAT half a batch").unwrap();
        let mut log = log.back_to_last_sync().unwrap();
        assert_eq!((log.writer.bytes_written(), log.writer.next_seq()), (synced, Some(Seq(5))));
        assert_eq!(log.written.load(Ordering::Acquire), synced);
        // The primary sends the batch again; the log reads back whole.
        log.append(Seq(5), 4, 0, &batch(5), None).unwrap();
        sync(&mut log);
        drop(log);
        let (_, held, ended) = resume_log(&path).unwrap();
        assert_eq!((held, ended), (Seq(8), false));
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
