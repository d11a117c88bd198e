//! `tandem primary`: record the program into the state directory's log and serve its events to
//! backups over QUIC as they are written.
//!
//! The recorder hands every batch to the [`Hub`] (a [`Tap`]). Each backup's session has a sender
//! task (batches from memory, or from the log file when the backup is further behind than memory
//! reaches) and a receiver task (ACK, CONFIRM-ACK). In sync mode every ACK moves the release
//! point: the `--min-backups`-th best acknowledged sequence number, published to the shim, whose
//! held outputs then leave. In async mode outputs leave at once and the ACKs bound the lag.

use crate::capture;
use crate::certs::Identity;
use crate::control;
use crate::error::{Error, Result};
use crate::launch::Launch;
use crate::lease::{self, Fence, Fenced};
use crate::lifetime::Stop;
use crate::metrics::{self, backup_label};
use crate::net::{self, read_frame, write_frame};
use crate::progress::{Progress, Unit};
use crate::recorder::{self, Recording, Tap};
use crate::retention::{Retain, Stored};
use crate::statedir::{random, Membership, StateDir};
use crate::status::{AgentStatus, Link, Role};
use crate::steer::Steering;
use crate::wire::frame::{Body, Frame};
use crate::wire::session::{group_ack, AckLevel, PrimarySession, SessionError, Standing, TakeOver};
use bytes::Bytes;
use coordinator::api::Mode;
use eventlog::logfile::Launch as LaunchRecord;
use eventlog::pack::{pack_events, PACK_MIN};
use eventlog::ring::{Geometry, SharedRegion};
use eventlog::{Epoch, IncarnationToken, Seq};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Batches kept in memory for sending; older ones are read back from the log file.
const MEMORY_BYTES: usize = 256 << 20;
/// Batches read back from the log ahead of the sender, when a backup catches up.
const READ_AHEAD: usize = 8;
/// How long the primary waits, after the program ends, for connected backups to hold all of it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A backup further behind than this is catching up: its progress is shown.
const CATCH_UP_EVENTS: u64 = 100_000;
/// Recorded batches whose release is timed, at most (the oldest are forgotten beyond).
const TIMED_BATCHES: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Output leaves once `min_backups` backups hold what it depends on.
    Sync,
    /// Output leaves at once; backups may lag by at most `max_lag_events` events.
    Async { max_lag_events: u64 },
}

pub struct PrimaryOptions {
    pub group: String,
    pub listen: SocketAddr,
    pub mode: OutputMode,
    pub min_backups: usize,
    /// What a backup's acknowledgement means before output that depends on it leaves (sync mode).
    pub ack: AckLevel,
    /// Event batches cross the network compressed.
    pub compress: bool,
    /// How much of the log to keep (`None`: all of it).
    pub retain: Option<Retain>,
    /// The program starts only once this many backups are connected.
    pub wait_for_backups: usize,
    pub state_dir: PathBuf,
    pub certs: PathBuf,
    pub name: String,
    pub geometry: Geometry,
    /// The coordinator's members: the group's incarnation and epoch come from there, and the
    /// primary keeps a lease; when it lapses, output is held for good (fencing).
    pub coordinator: Option<Vec<String>>,
    /// The program's data, captured for its backups before it starts.
    pub data: capture::DataChoice,
    /// Once fenced, keep the program running, its output held, instead of stopping it.
    pub keep_fenced: bool,
    /// Where to serve metrics and health over HTTP.
    pub metrics: Option<SocketAddr>,
}

struct WireBatch {
    first_seq: Seq,
    count: u32,
    wall_ns: u64,
    body: Bytes,
    /// The events compressed for the wire, once one session has sent them so (`None`: they
    /// travel as they are).
    packed: OnceLock<Option<Bytes>>,
}

impl WireBatch {
    fn new(first_seq: Seq, count: u32, wall_ns: u64, body: Bytes) -> WireBatch {
        WireBatch { first_seq, count, wall_ns, body, packed: OnceLock::new() }
    }

    /// The events compressed, if `compress` and they shrink (computed once, for every backup).
    fn packed(&self, compress: bool) -> Option<&Bytes> {
        if !compress {
            return None;
        }
        self.packed.get_or_init(|| pack_events(&self.body).map(Bytes::from)).as_ref()
    }

    fn last(&self) -> Seq {
        self.first_seq + self.count as u64 - 1
    }
}

#[derive(Default)]
struct HubState {
    memory: VecDeque<Arc<WireBatch>>,
    memory_bytes: usize,
    /// A bounded log's first kept batch: older events are gone from the file.
    kept: Option<Stored>,
    /// Acknowledged position of each connected backup, by resume handle, with the number of the
    /// session holding the handle. A backup that reconnects before this side has seen its old
    /// connection die has two sessions for a while: only the newer one counts.
    acked: BTreeMap<u128, (u64, Seq)>,
    /// Who each connected backup is, by resume handle.
    links: BTreeMap<u128, LinkInfo>,
    /// Recorded batches not yet released: their last event and when they were written.
    unreleased: VecDeque<(Seq, std::time::Instant)>,
}

struct LinkInfo {
    member: String,
    address: String,
    last_ack: std::time::Instant,
}

/// What a backup at `acked` lacks of the batches in memory: their bytes, and the age of the
/// oldest (`now_ns` and the batches' times in nanoseconds since the epoch).
fn lag_behind<'a>(memory: impl Iterator<Item = &'a WireBatch>, acked: Seq, now_ns: u64) -> (u64, f64) {
    let mut bytes = 0u64;
    let mut oldest = None;
    for b in memory.filter(|b| b.last() > acked) {
        bytes += b.body.len() as u64;
        oldest.get_or_insert(b.wall_ns);
    }
    (bytes, oldest.map_or(0.0, |t| now_ns.saturating_sub(t) as f64 / 1e9))
}

impl HubState {
    /// Records the position of session `number` of a backup, or (`None`) that the session ended.
    fn set_acked(&mut self, handle: u128, number: u64, position: Option<Seq>, sessions: &watch::Sender<usize>) {
        match position {
            Some(p) => {
                let held = self.acked.entry(handle).or_insert((number, p));
                if held.0 <= number {
                    *held = (number, p);
                }
            }
            None => {
                if self.acked.get(&handle).is_some_and(|&(n, _)| n == number) {
                    self.acked.remove(&handle);
                }
            }
        }
        sessions.send_if_modified(|n| std::mem::replace(n, self.acked.len()) != self.acked.len());
    }

    /// The connected backups' acknowledged positions.
    fn positions(&self) -> impl Iterator<Item = Seq> + '_ {
        self.acked.values().map(|&(_, p)| p)
    }
}

/// The primary's side of every session.
pub struct Hub {
    group: String,
    member: String,
    /// The address backups reach this primary at.
    address: String,
    standing: Standing,
    launch: LaunchRecord,
    /// The store holding the capture the launch names.
    captures: PathBuf,
    log: PathBuf,
    mode: OutputMode,
    min_backups: usize,
    ack: AckLevel,
    compress: bool,
    /// The program's output gate: shut for good once this agent is primary no more.
    fence: Arc<Fence>,
    /// A backup promoted to primary: where its own history began. Its backups of the old epoch
    /// resume within what it took over, and in sync mode its output waits for backups again
    /// once they hold that much (until then no backup could vouch for anything).
    took_over: Option<TakeOver>,
    /// The coordinator, through which a switchover names the next primary.
    steering: Option<Steering>,
    /// A switchover under way: no output is released and no event taken, so that the chosen
    /// backup can hold everything this primary recorded.
    paused: std::sync::atomic::AtomicBool,
    /// Turns true once the program is gone and its events are all in the log.
    gone: watch::Sender<bool>,
    /// Turns true once a switchover's answer is sent: the agent may go.
    answered: watch::Sender<bool>,
    state: Mutex<HubState>,
    /// The last event written (0 before any).
    written: watch::Sender<Seq>,
    /// The last event, once the program has ended.
    ended: watch::Sender<Option<Seq>>,
    /// The release point (the group's acknowledged position).
    released: watch::Sender<Seq>,
    /// How many backups are connected.
    sessions: watch::Sender<usize>,
    /// Numbers sessions in the order they start.
    next_session: std::sync::atomic::AtomicU64,
}

/// What a primary's hub is made of, whether its agent started the program or took it over.
pub(crate) struct HubPlan {
    pub group: String,
    pub member: String,
    pub listen: SocketAddr,
    pub standing: Standing,
    pub took_over: Option<TakeOver>,
    pub launch: LaunchRecord,
    pub captures: PathBuf,
    pub log: PathBuf,
    pub mode: OutputMode,
    pub min_backups: usize,
    pub ack: AckLevel,
    pub compress: bool,
    pub fence: Arc<Fence>,
    pub steering: Option<Steering>,
}

impl Hub {
    pub(crate) fn new(plan: HubPlan) -> Arc<Hub> {
        let held = plan.took_over.map_or(Seq::ZERO, |t| t.at);
        Arc::new(Hub {
            group: plan.group,
            member: plan.member,
            address: plan.listen.to_string(),
            standing: plan.standing,
            launch: plan.launch,
            captures: plan.captures,
            log: plan.log,
            mode: plan.mode,
            min_backups: plan.min_backups,
            ack: plan.ack,
            compress: plan.compress,
            fence: plan.fence,
            took_over: plan.took_over,
            steering: plan.steering,
            paused: Default::default(),
            gone: watch::channel(false).0,
            answered: watch::channel(false).0,
            state: Mutex::new(HubState::default()),
            written: watch::channel(held).0,
            ended: watch::channel(None).0,
            released: watch::channel(Seq::ZERO).0,
            sessions: watch::channel(0).0,
            next_session: Default::default(),
        })
    }

    /// The last event in the log and the release point: a primary's report to the coordinator.
    pub(crate) fn position(&self) -> (Seq, Seq) {
        (*self.written.borrow(), *self.released.borrow())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Recomputes the release point from the backups' positions and hands it to the shim.
    fn update_release(&self) {
        if self.fence.is_shut() || self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let point = group_ack(self.state().positions(), self.min_backups);
        if let Some(point) = point {
            let point = point.min(*self.written.borrow());
            if let Some(region) = self.fence.region() {
                region.region().release_outputs(point);
            }
            if let (OutputMode::Sync, Some(t), Some(region)) = (self.mode, self.took_over, self.fence.region()) {
                if point >= t.at && !region.region().gate_enabled() {
                    region.region().set_gate(true);
                    tracing::info!(
                        released = %point,
                        "backups hold everything up to the take-over: output waits for them again (sync mode)"
                    );
                }
            }
            let moved = self.released.send_if_modified(|r| {
                let moved = point > *r;
                *r = (*r).max(point);
                moved
            });
            if moved {
                let mut st = self.state();
                while st.unreleased.front().is_some_and(|&(last, _)| last <= point) {
                    if let Some((_, at)) = st.unreleased.pop_front() {
                        metrics::agent().output_wait.observe(at.elapsed().as_secs_f64());
                    }
                }
            }
        }
    }

    /// A backup spoke for a later epoch: another primary has been named, and this one must not
    /// go on answering clients.
    fn replaced_if(&self, e: &SessionError) {
        if let SessionError::Replaced { ours, theirs } = *e {
            self.fence.shut(&Fenced::Replaced { ours: Epoch(ours), theirs: Epoch(theirs) });
        }
    }

    /// The batch holding `seq`, from memory if it is still there.
    fn batch_in_memory(&self, seq: Seq) -> Option<Arc<WireBatch>> {
        let st = self.state();
        let i = st.memory.partition_point(|b| b.last() < seq);
        st.memory.get(i).filter(|b| b.first_seq <= seq).cloned()
    }

    fn oldest_in_memory(&self) -> Option<Seq> {
        self.state().memory.front().map(|b| b.first_seq)
    }

    /// This agent's account of itself and of its backups.
    pub(crate) fn status(&self) -> AgentStatus {
        let written = *self.written.borrow();
        let now_ns = crate::recorder::now_ns();
        let st = self.state();
        let backups = st
            .acked
            .iter()
            .filter_map(|(handle, &(_, acked))| {
                let info = st.links.get(handle)?;
                let (lag_bytes, lag_seconds) = lag_behind(st.memory.iter().map(|b| &**b), acked, now_ns);
                Some(Link {
                    member: info.member.clone(),
                    address: info.address.clone(),
                    acked: acked.0,
                    lag_events: written.saturating_since(acked),
                    lag_bytes,
                    lag_seconds,
                    last_ack_seconds: info.last_ack.elapsed().as_secs_f64(),
                })
            })
            .collect();
        let state = if self.fence.is_shut() {
            "fenced"
        } else if self.ended.borrow().is_some() {
            "ended"
        } else {
            "ok"
        };
        AgentStatus {
            group: self.group.clone(),
            member: self.member.clone(),
            role: Role::Primary,
            address: self.address.clone(),
            epoch: self.standing.epoch,
            held: written.0,
            replayed: None,
            released: Some(self.released.borrow().0),
            state: state.into(),
            backups,
            kept_from: st.kept.map(|k| k.first_seq.0),
        }
    }

    /// How many of the program's outputs are held now.
    fn held_outputs(&self) -> u64 {
        self.fence.region().map_or(0, |r| r.region().held_outputs())
    }
}

impl Tap for Hub {
    fn started(&self, region: Arc<SharedRegion>) {
        region.region().set_gate(self.mode == OutputMode::Sync && self.took_over.is_none());
        self.fence.attach(region);
        self.update_release();
    }

    fn batch(&self, first_seq: Seq, count: u32, wall_ns: u64, body: &[u8]) {
        {
            let mut st = self.state();
            st.memory_bytes += body.len();
            st.memory.push_back(Arc::new(WireBatch::new(first_seq, count, wall_ns, Bytes::copy_from_slice(body))));
            while st.memory_bytes > MEMORY_BYTES && st.memory.len() > 1 {
                if let Some(b) = st.memory.pop_front() {
                    st.memory_bytes -= b.body.len();
                }
            }
            if self.mode == OutputMode::Sync {
                st.unreleased.push_back((first_seq + count as u64 - 1, std::time::Instant::now()));
                if st.unreleased.len() > TIMED_BATCHES {
                    st.unreleased.pop_front();
                }
            }
        }
        metrics::agent().events_recorded.inc_by(count.into());
        self.written.send_replace(first_seq + count as u64 - 1);
        // Outputs wait for events that exist now; a release point capped at the old end can move.
        self.update_release();
    }

    fn may_take_more(&self, next_seq: Seq) -> bool {
        if self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        match self.mode {
            OutputMode::Sync => true,
            // The bound is on connected backups' lag; with none connected the log keeps
            // everything for the one that comes.
            OutputMode::Async { max_lag_events } => {
                let st = self.state();
                let slowest = st.positions().min();
                slowest.is_none_or(|acked| next_seq.saturating_since(acked) <= max_lag_events)
            }
        }
    }

    fn cut_off(&self) -> bool {
        self.fence.is_shut()
    }

    fn needed(&self) -> Option<Seq> {
        self.state().positions().min().map(Seq::next)
    }

    fn cut(&self, at: Stored, bound: Retain) -> bool {
        let mut st = self.state();
        if st.positions().min().is_some_and(|acked| acked.next() < at.first_seq) {
            return false;
        }
        if st.kept.is_none() {
            tracing::warn!(
                "the log keeps events from {} on (--retain {bound}): from now on a backup that needs older ones (a new one, or one that lost its state) cannot join",
                at.first_seq
            );
        }
        st.kept = Some(at);
        true
    }

    fn ended(&self, last_seq: Seq) {
        self.written.send_replace(last_seq);
        self.gone.send_replace(true);
        // A fenced primary's end is no end of the group: its backups follow another primary.
        if !self.fence.is_shut() {
            self.ended.send_replace(Some(last_seq));
        }
    }
}

/// Runs the program as the group's primary. Returns when it has ended and every connected
/// backup holds all of its events (or after a bounded wait).
pub fn run(mut launch: Launch, opts: &PrimaryOptions) -> Result<Recording> {
    let identity = Identity::load(&opts.certs, &opts.name)?;
    let dir = StateDir::open(&opts.state_dir)?;
    capture::take_for(&mut launch, &opts.data, &dir.captures_path(), &[&dir.path])?;
    let launch = &launch;
    let runtime = network_runtime()?;
    let steering =
        opts.coordinator.as_ref().map(|c| Steering::new(c, &opts.group, &opts.name, &identity)).transpose()?;
    let membership = match &steering {
        // The coordinator names the group's incarnation and epoch.
        Some(steering) => {
            let mode = match opts.mode {
                OutputMode::Sync => Mode::Sync,
                OutputMode::Async { .. } => Mode::Async,
            };
            let g = runtime.block_on(steering.register(opts.listen.to_string(), Some(mode), None))?;
            if g.epoch > Epoch::FIRST {
                // Only a stopped group takes a primary's registration in a later epoch.
                crate::notes::line(&format!(
                    "tandem: group {} had stopped; it starts again as a new incarnation ({}) in epoch {}: backups of its earlier run must start afresh",
                    opts.group, g.incarnation, g.epoch
                ));
            }
            if g.members.len() > 1 {
                return Err(Error::Setup(format!(
                    "group {} already has members following an earlier run of its primary (epoch {}): a new run of the program is a new history; use a new group name, or fail over to a backup",
                    opts.group, g.epoch
                )));
            }
            Membership { incarnation: g.incarnation, epoch: g.epoch.0, handle: 0, took_over: None }
        }
        // Every run of the program is a new incarnation of the group: backups of an earlier
        // run cannot resume into this one.
        None => Membership { incarnation: IncarnationToken(random::<16>()?), epoch: 1, handle: 0, took_over: None },
    };
    dir.store(&membership)?;
    let hub = Hub::new(HubPlan {
        group: opts.group.clone(),
        member: opts.name.clone(),
        listen: opts.listen,
        standing: Standing { incarnation: membership.incarnation, epoch: membership.epoch },
        took_over: None,
        launch: launch.record(),
        captures: dir.captures_path(),
        log: dir.log_path(),
        mode: opts.mode,
        min_backups: opts.min_backups,
        ack: opts.ack,
        compress: opts.compress,
        fence: Arc::default(),
        steering: steering.clone(),
    });
    if let Some(steering) = &steering {
        let _guard = runtime.enter();
        let epoch = Epoch(membership.epoch);
        let h = hub.clone();
        steering.report(epoch, move || h.position());
        lease::keep(steering, epoch, hub.fence.clone());
    }
    serve_status(&runtime, &hub, &dir.path, opts.metrics)?;
    let endpoint = serve_backups(&runtime, &identity, &hub, opts.listen)?;
    if opts.wait_for_backups > 0 {
        tracing::info!("waiting for {} backups before starting the program", opts.wait_for_backups);
        while hub.state().acked.len() < opts.wait_for_backups {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let stop = Stop::new(true);
    hub.fence.keep_program(opts.keep_fenced);
    hub.fence.stop_with(stop.clone());
    let rec_opts = recorder::RecordOptions {
        out: dir.log_path(),
        geometry: opts.geometry,
        incarnation: membership.incarnation,
        tap: Some(hub.clone() as Arc<dyn Tap>),
        stop: stop.clone(),
        retain: opts.retain,
    };
    let recording = recorder::record(launch, &rec_opts);
    if let (Some(steering), true) = (&steering, recording.is_ok() && !hub.fence.is_shut()) {
        // The program ended, or the agent was told to stop: the group stops with it, before
        // the lease lapses and a backup would be named.
        runtime.block_on(steering.stop(Epoch(membership.epoch), false));
    }
    if recording.is_ok() {
        drain(&runtime, &hub, &stop);
    }
    endpoint.close(0u32.into(), b"the primary's program has ended");
    runtime.shutdown_timeout(Duration::from_millis(100));
    match hub.fence.why() {
        Some(why @ Fenced::HandedOver { .. }) => Err(Error::HandedOver(why.to_string())),
        Some(why) => Err(Error::Fenced(why.to_string())),
        None => recording,
    }
}

/// Serves backups at `listen` from `runtime`: the endpoint, its accept loop, and in sync mode the
/// reports of output held for backups that do not come.
pub(crate) fn serve_backups(
    runtime: &tokio::runtime::Runtime,
    identity: &Identity,
    hub: &Arc<Hub>,
    listen: SocketAddr,
) -> Result<quinn::Endpoint> {
    let endpoint = runtime.block_on(async { net::server(identity, listen) })?;
    tracing::info!(group = %hub.group, %listen, incarnation = %hub.standing.incarnation, epoch = hub.standing.epoch, "serving backups");
    runtime.spawn(accept_loop(endpoint.clone(), hub.clone()));
    if hub.mode == OutputMode::Sync {
        runtime.spawn(report_held_output(hub.clone(), hub.min_backups));
    }
    Ok(endpoint)
}

/// After the program: each connected backup ends its session once it holds the end marker too;
/// closing before that could cut off the marker, and the backup would wait for a primary gone.
/// An agent told to stop has two seconds in all; a fenced one has no end to give.
pub(crate) fn drain(runtime: &tokio::runtime::Runtime, hub: &Hub, stop: &Stop) {
    if matches!(hub.fence.why(), Some(Fenced::HandedOver { .. })) {
        // Handed over: the operator who asked hears how it went before the agent goes.
        let mut answered = hub.answered.subscribe();
        runtime.block_on(async move {
            let _ = tokio::time::timeout(2 * SWITCHOVER_WAIT, answered.wait_for(|a| *a)).await;
        });
    }
    if hub.fence.is_shut() {
        return;
    }
    let limit = stop.drain_left().map_or(DRAIN_TIMEOUT, |left| left.min(DRAIN_TIMEOUT));
    let mut sessions = hub.sessions.subscribe();
    runtime.block_on(async move {
        let _ = tokio::time::timeout(limit, sessions.wait_for(|&n| n == 0)).await;
    });
}

/// A primary's network runtime. One network thread: a round trip in sync mode crosses the
/// sessions' tasks and quinn's drivers several times, and each hop to another thread is a
/// wake-up (sync mode ran 4-10% faster with one worker than with two); reading back has a thread
/// of its own, and compressing moves the other tasks off the worker (`block_in_place`).
pub(crate) fn network_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("tandem-net")
        .build()
        .map_err(Error::io("cannot start the network runtime"))
}

/// How often held output is reported while it waits.
const HELD_REPORT_EVERY: Duration = Duration::from_secs(3);

/// Sync mode: while the program's output waits for backups that do not come (none connected, or
/// none moving), says every few seconds how many outputs wait and for what.
async fn report_held_output(hub: Arc<Hub>, min_backups: usize) {
    let mut tick = tokio::time::interval(HELD_REPORT_EVERY);
    tick.tick().await;
    let mut last_released = Seq::ZERO;
    loop {
        tick.tick().await;
        if hub.fence.is_shut() || hub.ended.borrow().is_some() {
            return;
        }
        let Some(region) = hub.fence.region() else { continue };
        let region = region.region();
        let waiting = region.header().gate_waiters.load(std::sync::atomic::Ordering::SeqCst);
        let released = *hub.released.borrow();
        if waiting == 0 || released > last_released {
            last_released = released;
            continue;
        }
        let connected = hub.state().acked.len();
        let needed = Seq(region.input_high());
        let who = match connected {
            0 => "no backup is connected".to_string(),
            1 => "1 backup is connected".to_string(),
            n => format!("{n} backups are connected"),
        };
        tracing::warn!(
            "sync mode: {waiting} of the program's outputs (replies) are held until {min_backups} backup{} hold{} event {needed}; {who}, and output is released up to event {released}",
            if min_backups == 1 { "" } else { "s" },
            if min_backups == 1 { "s" } else { "" },
        );
    }
}

/// The control socket (status requests; a primary cannot be promoted) and, if asked for, the
/// metrics endpoint.
fn serve_status(
    runtime: &tokio::runtime::Runtime,
    hub: &Arc<Hub>,
    state_dir: &std::path::Path,
    metrics_at: Option<SocketAddr>,
) -> Result<()> {
    let _guard = runtime.enter();
    let h = hub.clone();
    let status: metrics::StatusSource = Arc::new(move || h.status());
    if let Some(addr) = metrics_at {
        let h = hub.clone();
        metrics::serve(addr, status.clone(), Arc::new(move || h.held_outputs()))
            .map_err(Error::io(format!("cannot serve metrics on {addr}")))?;
    }
    let (requests, mut asked) = mpsc::channel::<control::Request>(4);
    runtime.spawn(async move {
        while let Some(r) = asked.recv().await {
            let _ =
                r.reply.send(control::ControlReply::error("this agent is the primary; only a backup can be promoted"));
        }
    });
    let control = control::serve(state_dir.to_path_buf(), requests, status, false);
    runtime.spawn(async move {
        if let Err(e) = control.await {
            tracing::warn!("the control socket failed: {e}; `tandem status` cannot reach this agent");
        }
    });
    Ok(())
}

async fn accept_loop(endpoint: quinn::Endpoint, hub: Arc<Hub>) {
    while let Some(incoming) = endpoint.accept().await {
        let hub = hub.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    let why = net::tls_refusal(&e).unwrap_or_else(|| e.to_string());
                    tracing::warn!(%from, "refused a peer at the handshake: {why}");
                    return;
                }
            };
            let who = net::peer_name(&conn).unwrap_or_else(|| "?".into());
            match serve(&conn, &hub, &who).await {
                Ok(()) => {}
                Err(e) if net::closed_complete(&e) => {
                    tracing::info!(%from, member = %who, "the backup holds the whole program; session complete")
                }
                Err(e) => {
                    tracing::warn!(%from, member = %who, "session ended: {e}");
                    conn.close(1u32.into(), e.to_string().as_bytes());
                }
            }
        });
    }
}

/// One backup's session, from its HELLO to the end.
async fn serve(conn: &quinn::Connection, hub: &Arc<Hub>, who: &str) -> std::result::Result<(), net::NetError> {
    let (mut ctl_send, mut ctl_recv) = conn.accept_bi().await?;
    let Some(hello) = read_frame(&mut ctl_recv).await? else { return Ok(()) };
    if let Body::Switchover { to, id } = &hello.body {
        let answer = match switch_over(hub, to, id).await {
            Ok((to, epoch)) => Body::SwitchedOver { to, epoch: epoch.0 },
            Err(reason) => {
                tracing::warn!(asked_by = %who, "switchover refused: {reason}");
                Body::Refuse { reason }
            }
        };
        let sent = write_frame(&mut ctl_send, &Frame::new(hub.standing.incarnation, hub.standing.epoch, answer)).await;
        let _ = ctl_send.finish();
        if sent.is_ok() {
            // Read by the operator before the connection goes.
            let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
        }
        hub.answered.send_replace(true);
        return sent;
    }
    let number = hub.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Accepted and counted as connected at once: a bounded log keeps what the backup needs.
    let accepted = {
        let mut st = hub.state();
        // What output waits for: in async mode nothing, so a backup may sync lazily there too.
        let waits_for = match hub.mode {
            OutputMode::Sync => hub.ack,
            OutputMode::Async { .. } => AckLevel::Received,
        };
        let accepted = PrimarySession::accept(hub.standing, hub.took_over, &hub.group, &hub.launch, &hello, waits_for);
        let accepted = PrimarySession::within_kept(accepted, st.kept.map(|k| k.first_seq));
        if let Ok((session, _)) = &accepted {
            st.set_acked(session.handle, number, Some(session.holds(hub.ack)), &hub.sessions);
        }
        accepted
    };
    let (session, welcome) = match accepted {
        Ok(ok) => ok,
        Err(e) => {
            hub.replaced_if(&e);
            tracing::warn!(member = %who, "refused: {e}");
            let reason = e.to_string();
            let body = match e {
                SessionError::StartOver(_) => Body::StartOver { reason },
                _ => Body::Refuse { reason },
            };
            let refuse = Frame::new(hub.standing.incarnation, hub.standing.epoch, body);
            write_frame(&mut ctl_send, &refuse).await?;
            let _ = ctl_send.finish();
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(());
        }
    };
    let handle = session.handle;
    tracing::info!(member = %who, handle = format!("{handle:032x}"), from = %session.next_to_send, "backup connected");
    {
        let mut st = hub.state();
        let info = LinkInfo {
            member: who.to_string(),
            address: conn.remote_address().to_string(),
            last_ack: std::time::Instant::now(),
        };
        st.links.insert(handle, info);
    }
    write_frame(&mut ctl_send, &welcome).await?;
    let session = Arc::new(Mutex::new(session));
    let captures = tokio::spawn(send_captures(conn.clone(), hub.clone()));
    let data = conn.open_uni().await?;
    let sender = tokio::spawn(send_events(data, hub.clone(), session.clone()));
    let result = receive_acks(ctl_send, ctl_recv, hub, &session, number).await;
    sender.abort();
    captures.abort();
    hub.state().set_acked(handle, number, None, &hub.sessions);
    hub.update_release();
    result
}

/// How long a switchover waits for the chosen backup to hold everything, and for the
/// coordinator to hear so.
const SWITCHOVER_WAIT: Duration = Duration::from_secs(5);

/// A planned change of primary: this primary stops releasing output and taking events, the
/// chosen backup (`to`, or the connected one holding most) receives everything recorded, the
/// coordinator names it primary of the next epoch (under request id `id`), and this primary
/// stops its program to rejoin as a backup. Refused, it carries on as before. Returns the new
/// primary and epoch, or why not.
async fn switch_over(hub: &Arc<Hub>, to: &str, id: &str) -> std::result::Result<(String, Epoch), String> {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(steering) = &hub.steering else {
        return Err("this primary has no coordinator: stop it, then promote a backup with `tandem promote`".into());
    };
    if hub.fence.is_shut() {
        return Err("this agent is primary no more".into());
    }
    let candidate = {
        let st = hub.state();
        let linked = st.links.iter().filter_map(|(h, l)| Some((l.member.clone(), st.acked.get(h)?.1)));
        match to {
            "" => linked.max_by_key(|(_, acked)| *acked).map(|(m, _)| m),
            name => linked.map(|(m, _)| m).find(|m| m == name),
        }
    };
    let Some(candidate) = candidate else {
        return Err(match to {
            "" => "no backup is connected to this primary".to_string(),
            name => format!("{name} is not connected to this primary"),
        });
    };
    if hub.paused.swap(true, SeqCst) {
        return Err("a switchover is already under way".into());
    }
    tracing::info!(to = %candidate, "switching over: output held and no event taken until the backup holds all");
    let started = tokio::time::Instant::now();
    let result = async {
        // The recorder takes at most the batch it was cutting; then the log's end stays put.
        let mut last = (Seq(u64::MAX), Seq::ZERO);
        loop {
            let written = *hub.written.borrow();
            let acked = {
                let st = hub.state();
                st.links
                    .iter()
                    .filter(|(_, l)| l.member == candidate)
                    .filter_map(|(h, _)| st.acked.get(h))
                    .map(|a| a.1)
                    .max()
            };
            let Some(acked) = acked else { return Err(format!("{candidate} disconnected")) };
            if acked >= written && last.0 == written {
                break;
            }
            last = (written, acked);
            if started.elapsed() > SWITCHOVER_WAIT {
                return Err(format!("{candidate} holds events up to {acked}, this primary recorded {written}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
    .await;
    if let Err(why) = result {
        hub.paused.store(false, SeqCst);
        hub.update_release();
        return Err(why);
    }
    // The backup holds all: this primary's program ends before the backup's begins (on one
    // host they would listen on the same port), so that never two answer.
    let epoch = Epoch(hub.standing.epoch + 1);
    hub.fence.shut(&Fenced::HandedOver { to: candidate.clone(), epoch });
    let mut gone = hub.gone.subscribe();
    let _ = tokio::time::timeout(SWITCHOVER_WAIT, gone.wait_for(|g| *g)).await;
    // The coordinator judges by reported positions: once the backup's report of what it now
    // holds, and this primary's of what it released, have arrived, it is asked, once (a request
    // id's first outcome is final). Refused, this primary is gone anyway: its lease lapses and
    // the coordinator names the backup holding most.
    let refused = |e: String| {
        format!("{e}; this primary's program has stopped, and once its lease lapses the coordinator names the backup holding most")
    };
    loop {
        let g = steering.group_view().await.map_err(|e| refused(format!("the coordinator: {e}")))?;
        let held = g.members.get(&candidate).map_or(Seq::ZERO, |m| m.held);
        if held >= g.released && held >= *hub.written.borrow() {
            break;
        }
        if started.elapsed() > 2 * SWITCHOVER_WAIT {
            return Err(refused(format!(
                "the coordinator heard of {candidate} holding events up to {held} only, and of output released up to {}",
                g.released
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match steering.failover_as(id, Some(candidate.clone())).await {
        Ok(g) => {
            tracing::info!(to = %candidate, epoch = g.epoch.0, took_ms = started.elapsed().as_millis() as u64, "switched over");
            Ok((candidate, g.epoch))
        }
        Err(e) => Err(refused(format!("the coordinator refused: {e}"))),
    }
}

/// Answers a backup's requests for the capture of the program's data: each on a stream of its
/// own, the capture's digest in, the capture out.
async fn send_captures(conn: quinn::Connection, hub: Arc<Hub>) -> std::result::Result<(), net::NetError> {
    use tokio::io::AsyncReadExt;
    loop {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let mut digest = [0u8; 32];
        recv.read_exact(&mut digest).await?;
        let Some(c) = hub.launch.capture.filter(|c| c.digest == digest) else {
            let _ = send.reset(1u32.into());
            continue;
        };
        let path = capture::Store::open(&hub.captures).map(|s| s.path(&c));
        let mut file = match path.as_ref().map(tokio::fs::File::open) {
            Ok(open) => open.await.map_err(|e| net::NetError::Protocol(format!("the capture {}: {e}", c.name())))?,
            Err(e) => return Err(net::NetError::Protocol(e.to_string())),
        };
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| net::NetError::Protocol(format!("the capture {}: {e}", c.name())))?;
            if n == 0 {
                break;
            }
            send.write_all(&buf[..n]).await?;
        }
        let _ = send.finish();
    }
}

fn lock(s: &Mutex<PrimarySession>) -> std::sync::MutexGuard<'_, PrimarySession> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

async fn receive_acks(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    hub: &Arc<Hub>,
    session: &Mutex<PrimarySession>,
    number: u64,
) -> std::result::Result<(), net::NetError> {
    let mut released = hub.released.subscribe();
    let mut frames = net::frames(recv);
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame.transpose()?.flatten() else { return Ok(()) };
                let (handle, acked) = {
                    let mut s = lock(session);
                    s.receive(&frame).map_err(|e| {
                        hub.replaced_if(&e);
                        net::NetError::Protocol(e.to_string())
                    })?;
                    (s.handle, s.holds(hub.ack))
                };
                {
                    let mut st = hub.state();
                    st.set_acked(handle, number, Some(acked), &hub.sessions);
                    if let Some(info) = st.links.get_mut(&handle) {
                        info.last_ack = std::time::Instant::now();
                        metrics::agent().acks.get_or_create(&backup_label(&info.member)).inc();
                    }
                }
                hub.update_release();
            }
            changed = released.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
        let point = *released.borrow();
        let confirm = lock(session).confirm(point);
        if let Some(c) = confirm {
            write_frame(&mut send, &c).await?;
        }
    }
}

/// Sends every event from where the backup stands, as it is written, then END.
async fn send_events(
    mut data: quinn::SendStream,
    hub: Arc<Hub>,
    session: Arc<Mutex<PrimarySession>>,
) -> std::result::Result<(), net::NetError> {
    let mut written = hub.written.subscribe();
    let mut ended = hub.ended.subscribe();
    let mut cursor = None;
    let member = lock(&session).member.clone();
    let mut catching_up: Option<Progress> = None;
    loop {
        let next = lock(&session).next_to_send;
        let upto = *written.borrow_and_update();
        let behind = upto.saturating_since(next);
        if let Some(p) = catching_up.as_mut() {
            p.set(next.0.saturating_sub(1), upto.0);
        }
        if next > upto {
            if let Some(p) = catching_up.take() {
                p.finish();
            }
        } else if catching_up.is_none() && behind > CATCH_UP_EVENTS {
            let what = format!("catching up {member}");
            catching_up = Some(Progress::start(&what, next.0.saturating_sub(1), upto.0, Unit::Events));
        }
        if next <= upto {
            match hub.batch_in_memory(next) {
                Some(b) => send_batch(&mut data, &hub, &session, &b).await?,
                None => {
                    let (mut batches, reader) = read_back(&hub, next, cursor.take());
                    while let Some(b) = batches.recv().await {
                        send_batch(&mut data, &hub, &session, &b).await?;
                    }
                    let reader = reader.await.map_err(|e| net::NetError::Protocol(e.to_string()))??;
                    cursor = Some(reader);
                }
            }
            continue;
        }
        let last = *ended.borrow_and_update();
        if let Some(last) = last {
            if next > last {
                let end = lock(&session).end(last);
                if let Some(f) = end {
                    write_frame(&mut data, &f).await?;
                    let _ = data.finish();
                }
                return Ok(());
            }
        }
        tokio::select! {
            r = written.changed() => if r.is_err() { return Ok(()) },
            r = ended.changed() => if r.is_err() { return Ok(()) },
        }
    }
}

type LogCursor = eventlog::logfile::LogReader<std::io::BufReader<std::fs::File>>;

async fn send_batch(
    data: &mut quinn::SendStream,
    hub: &Hub,
    session: &Mutex<PrimarySession>,
    b: &WireBatch,
) -> std::result::Result<(), net::NetError> {
    // Compressing a large batch takes a millisecond or more: other tasks move to another
    // thread meanwhile.
    let packed = if b.packed.get().is_none() && hub.compress && b.body.len() >= PACK_MIN {
        tokio::task::block_in_place(|| b.packed(hub.compress))
    } else {
        b.packed(hub.compress)
    };
    let (frame, member) = {
        let mut s = lock(session);
        (s.data(b.first_seq, b.count, b.wall_ns, &b.body, packed), s.member.clone())
    };
    match frame {
        Some(f) => {
            let label = backup_label(&member);
            metrics::agent().batches_sent.get_or_create(&label).inc();
            let bytes = packed.map_or(b.body.len(), |p| p.len());
            metrics::agent().bytes_sent.get_or_create(&label).inc_by(bytes as u64);
            write_frame(data, &f).await
        }
        None => Ok(()),
    }
}

/// Batches read back from the log file, from the one holding `from` until the next is in
/// memory, by a thread of their own that reads (and compresses) a few batches ahead of the
/// sender. The thread hands back its reader, still open where it stopped, for the next call
/// (`cursor`): catching up reads the file once.
fn read_back(
    hub: &Arc<Hub>,
    from: Seq,
    cursor: Option<LogCursor>,
) -> (mpsc::Receiver<Arc<WireBatch>>, tokio::task::JoinHandle<std::result::Result<LogCursor, net::NetError>>) {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let hub = hub.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let bad = |e: &dyn std::fmt::Display| net::NetError::Protocol(format!("{}: {e}", hub.log.display()));
        let kept = hub.state().kept;
        let usable =
            |r: &LogCursor| r.next_seq().is_some_and(|n| n <= from) && kept.is_none_or(|k| r.offset() >= k.offset);
        let mut reader = match cursor.filter(usable) {
            Some(r) => r,
            None => {
                let mut r = recorder::open_log(&hub.log).map_err(|e| bad(&e))?;
                // A bounded log's dropped batches read as zeros.
                if let Some(k) = kept {
                    r.skip_to(k.offset, k.first_seq).map_err(|e| bad(&e))?;
                }
                r
            }
        };
        // Batches are compressed a few at a time, one per core.
        let width = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let mut ahead = Vec::with_capacity(width);
        let mut done = false;
        while !done {
            match reader.follow().map_err(|e| bad(&e))?.flatten() {
                Some(b) => {
                    let end = b.first_seq + b.event_count as u64;
                    if end > from {
                        ahead.push(WireBatch::new(b.first_seq, b.event_count, b.wall_ns, b.body.into()));
                    }
                    done = end >= hub.oldest_in_memory().unwrap_or(Seq(u64::MAX));
                }
                None => done = true,
            }
            if ahead.len() == width || done {
                if hub.compress {
                    std::thread::scope(|s| {
                        for b in ahead.iter().skip(1) {
                            s.spawn(|| b.packed(true));
                        }
                        if let Some(b) = ahead.first() {
                            b.packed(true);
                        }
                    });
                }
                for b in ahead.drain(..) {
                    if tx.blocking_send(Arc::new(b)).is_err() {
                        return Ok(reader);
                    }
                }
            }
        }
        Ok(reader)
    });
    (rx, reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_lags_by_the_bytes_and_the_age_of_what_it_has_not_acknowledged() {
        let batch = |first, wall_ns| WireBatch::new(Seq(first), 10, wall_ns, Bytes::from(vec![0u8; 100]));
        let memory = [batch(1, 1_000_000_000), batch(11, 2_000_000_000), batch(21, 3_000_000_000)];
        assert_eq!(lag_behind(memory.iter(), Seq(10), 4_500_000_000), (200, 2.5));
        assert_eq!(lag_behind(memory.iter(), Seq(30), 4_500_000_000), (0, 0.0));
    }

    #[test]
    fn a_backup_back_before_its_old_session_ended_is_counted_once_and_stays_counted() {
        let (sessions, seen) = watch::channel(0);
        let mut st = HubState::default();
        st.set_acked(7, 0, Some(Seq(10)), &sessions);
        st.set_acked(9, 1, Some(Seq(30)), &sessions);
        // Backup 7 reconnects (session 2) while its first session still lingers.
        st.set_acked(7, 2, Some(Seq(12)), &sessions);
        assert_eq!(*seen.borrow(), 2);
        // A late word from the old session does not move the new one's position back.
        st.set_acked(7, 0, Some(Seq(11)), &sessions);
        assert_eq!(st.positions().collect::<Vec<_>>(), [Seq(12), Seq(30)]);
        // The old session ends: the backup is still connected through the new one.
        st.set_acked(7, 0, None, &sessions);
        assert_eq!(st.positions().collect::<Vec<_>>(), [Seq(12), Seq(30)]);
        assert_eq!(*seen.borrow(), 2);
        st.set_acked(7, 2, None, &sessions);
        assert_eq!(st.positions().collect::<Vec<_>>(), [Seq(30)]);
        assert_eq!(*seen.borrow(), 1);
    }
}
