//! `tandem replay`: run a program under the shim in replay mode, fed from a recorded log, until
//! the log ends (then stop it, or let it go live), it diverges, or it stalls.

use crate::error::{Error, Result};
use crate::launch::Launch;
use crate::lifetime::{catch_signals, kill_tree, reap_children, watch_signals, Stop};
use crate::recorder::{Taker, Tap};
use crate::view::View;
use eventlog::logfile::{Launch as LaunchRecord, LogError, LogWriter};
use eventlog::ring::feed::{Feed, ThreadView, PHASE_IN_CALL, PHASE_WAITING};
use eventlog::ring::{Geometry, Mode, SharedRegion};
use eventlog::{Call, Seq};
use nix::unistd::Pid;
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ReplayOptions {
    pub log: PathBuf,
    /// The program and its arguments; `None` runs the primary's, as the log recorded them.
    pub command: Option<Vec<std::ffi::OsString>>,
    /// At the end of the log, let the program continue for real instead of stopping it.
    pub go_live: bool,
    pub geometry: Geometry,
    /// No progress for this long is a stall.
    pub stall_after: Duration,
    /// Set when another process is still appending to the log (a backup's agent receiving the
    /// primary's stream).
    pub follow: Option<Following>,
    /// Where the program's private view of its data is built (`None`: it runs here, on the
    /// host's files).
    pub view: Option<ViewPlace>,
    /// Asked to stop the program (a termination signal, a fence).
    pub stop: Arc<Stop>,
    /// A backup that serves as the group's primary once promoted: its program records on where
    /// the log ends (`None`: it goes live unrecorded).
    pub take_over: Option<std::sync::Mutex<Box<dyn TakeOverTo>>>,
}

/// Where a promoted backup's program's events go once it records on.
pub trait TakeOverTo: Send {
    /// The program goes live after event `last` in `region`: the tap that serves its events to
    /// the group from here (listening for backups), or why it cannot.
    fn start(&mut self, region: &Arc<SharedRegion>, last: Seq, launch: &LaunchRecord) -> Result<Arc<dyn Tap>>;
    /// The program has ended and the log is finished: connected backups take the end.
    fn finish(&mut self);
    /// How much of the log the program's new primary keeps (`None`: all of it).
    fn retain(&self) -> Option<crate::retention::Retain> {
        None
    }
}

/// Records a promoted backup's program on from event `last`, the end of its log: its next event
/// and process numbers follow the log's, and its events are appended to the log and served.
fn record_on(
    opts: &ReplayOptions,
    to: &mut dyn TakeOverTo,
    shared: &Arc<SharedRegion>,
    last: Seq,
    next_lpid: u32,
    launch: &LaunchRecord,
    outside: crate::outside::OutsideWrites,
) -> Result<Taker> {
    let io = Error::io(opts.log.display().to_string());
    let mut file = std::fs::OpenOptions::new().write(true).open(&opts.log).map_err(io)?;
    let end = file.seek(std::io::SeekFrom::End(0)).map_err(Error::io(opts.log.display().to_string()))?;
    let writer = LogWriter::resume(std::io::BufWriter::with_capacity(1 << 20, file), end, Some(last.next()));
    let tap = to.start(shared, last, launch)?;
    shared.region().record_on_from(last.next().0, next_lpid);
    tap.started(shared.clone());
    let retain = match to.retain() {
        Some(bound) => Some((bound, crate::recorder::open_log(&opts.log)?.offset())),
        None => None,
    };
    Taker::new(shared.region(), writer, last, Some(tap), outside, retain)
        .map_err(Error::io(opts.log.display().to_string()))
}

/// The places a replay's private view needs.
#[derive(Clone, Debug)]
pub struct ViewPlace {
    /// The store holding the capture the log names.
    pub store: PathBuf,
    /// The view's own directory (its upper layers), reset when the replay starts.
    pub root: PathBuf,
}

/// How a replay follows a log that is still growing.
#[derive(Clone, Default)]
pub struct Following {
    /// The replay waits at an incomplete end for more, until this turns true (no more will come).
    pub stop: Arc<AtomicBool>,
    /// Turns true when the backup is promoted: at the end, the program goes live.
    pub go_live: Arc<AtomicBool>,
    /// How far the log holds whole batches: the replay reads no further. Past it, space made
    /// ready ahead of the writer may hold a batch half copied in.
    pub written: Arc<AtomicU64>,
    /// The program's output gate, for the lease of a backup promoted by the coordinator.
    pub fence: Arc<crate::lease::Fence>,
    /// Why the backup cannot go on (its certificate refused, say): the replay stops the program
    /// and fails with it.
    pub fatal: Arc<std::sync::OnceLock<String>>,
    /// The last event the program has replayed (for the agent's status).
    pub replayed: Arc<AtomicU64>,
    /// Set when the backup is promoted: whose primary it becomes, from which log.
    pub promotion: Arc<std::sync::OnceLock<Promotion>>,
    /// The epoch the coordinator named this backup primary of (0: none named).
    pub named_epoch: Arc<AtomicU64>,
    /// Why the backup's state was set aside: the agent starts over, catching up from the start.
    pub start_over: Arc<std::sync::OnceLock<String>>,
}

/// A backup promoted: it becomes primary of `epoch` in the group's incarnation, its log having
/// come from `from_epoch`'s primary.
#[derive(Clone, Copy, Debug)]
pub struct Promotion {
    pub incarnation: eventlog::IncarnationToken,
    pub from_epoch: u64,
    pub epoch: u64,
    /// Its resume handle, kept.
    pub handle: u128,
}

/// The log file, read no further than `end` when one is given.
struct LogInput {
    file: std::fs::File,
    pos: u64,
    end: Option<Arc<AtomicU64>>,
}

impl Read for LogInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = self.end.as_ref().map_or(buf.len() as u64, |e| e.load(Ordering::Acquire).saturating_sub(self.pos));
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for LogInput {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

/// How a replay ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every event was replayed; the program was stopped at the end of the log, or exited there
    /// on its own as the primary did.
    Completed { events: u64 },
    /// The program went live at the end of the log and later exited with this status.
    Live { events: u64, exit_code: i32 },
    /// The backup did something the primary did not.
    Diverged { seq: Seq, report: String },
    /// The replay stopped moving.
    Stalled { report: String },
    /// A termination signal stopped the agent (the program ended or was killed).
    Stopped { signal: i32, events: u64 },
}

impl Outcome {
    /// Exit status of `tandem replay`: 0 completed, the program's own once live, 3 diverged,
    /// 4 stalled, 128 + the signal when one stopped it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Completed { .. } => 0,
            Outcome::Live { exit_code, .. } => *exit_code,
            Outcome::Diverged { .. } => 3,
            Outcome::Stalled { .. } => 4,
            Outcome::Stopped { signal, .. } => 128 + signal,
        }
    }
}

/// Pulls verified batches from the log into the feed as room allows.
struct Feeder {
    reader: eventlog::logfile::LogReader<std::io::BufReader<LogInput>>,
    log: PathBuf,
    follow: Option<Following>,
    batch: Option<(Vec<u8>, usize)>,
    done: bool,
    events: u64,
    /// The highest logical pid an event names.
    high_pid: u32,
}

impl Feeder {
    /// Appends what fits; returns whether anything moved.
    fn pump(&mut self, feed: &Feed) -> Result<bool> {
        let mut moved = false;
        loop {
            if self.batch.is_none() && !self.done {
                let following = self.follow.as_ref().is_some_and(|f| !f.stop.load(Ordering::Acquire));
                let next = if following {
                    match self.reader.follow() {
                        Ok(Some(b)) => Ok(b),
                        Ok(None) => return Ok(moved),
                        Err(e) => Err(e),
                    }
                } else {
                    self.reader.next_batch()
                };
                match next {
                    Ok(Some(b)) => {
                        self.high_pid = b.events().map(|e| e.header.pid.0).fold(self.high_pid, u32::max);
                        self.batch = Some((b.body, 0));
                    }
                    Ok(None) => {
                        self.done = true;
                        feed.finish();
                    }
                    // A recorder that died (its host did) leaves a log without its end marker, or
                    // with its last batch half written: what is complete is still the primary's
                    // history, and exactly what a backup must replay.
                    Err(e @ (LogError::Unterminated { .. } | LogError::Truncated { .. })) => {
                        // A promoted backup's own log ends so by design; its agent says so.
                        if self.follow.is_none() {
                            crate::notes::line(&format!(
                                "tandem: {}: {e}; replaying the {} complete events before it",
                                self.log.display(),
                                self.events
                            ));
                        }
                        self.done = true;
                        feed.finish();
                    }
                    Err(source) => return Err(Error::Log { path: self.log.clone(), source }),
                }
            }
            let Some((body, off)) = self.batch.as_mut() else { return Ok(moved) };
            let (took, events) = feed.append(&body[*off..]);
            *off += took;
            self.events += events;
            moved |= took > 0;
            if *off == body.len() {
                self.batch = None;
            } else {
                return Ok(moved);
            }
        }
    }
}

/// A log at least this long shows the progress of its replay.
const LONG_LOG: u64 = 64 << 20;

/// The progress of reading a long log into the feed (`tandem replay`; a backup shows its own).
fn long_log_progress(opts: &ReplayOptions) -> Option<(crate::progress::Progress, u64)> {
    let total = std::fs::metadata(&opts.log).map(|m| m.len()).ok().filter(|&n| n >= LONG_LOG)?;
    let what = format!("replaying {}", opts.log.display());
    opts.follow
        .is_none()
        .then(|| (crate::progress::Progress::start(&what, 0, total, crate::progress::Unit::Bytes), total))
}

pub fn replay(opts: &ReplayOptions) -> Result<Outcome> {
    let file = std::fs::File::open(&opts.log).map_err(Error::io(opts.log.display().to_string()))?;
    let input = LogInput { file, pos: 0, end: opts.follow.as_ref().map(|f| f.written.clone()) };
    let mut reader = eventlog::logfile::LogReader::open(std::io::BufReader::with_capacity(1 << 20, input))
        .map_err(|source| Error::Log { path: opts.log.clone(), source })?;
    if opts.follow.is_none() {
        if let Some(kept) = reader.skip_dropped().map_err(Error::io(opts.log.display().to_string()))? {
            return Err(Error::Setup(format!(
                "{}: this log keeps events from {kept} on (its older ones were dropped by --retain), and a replay starts the program from its first event: replay a log recorded without --retain",
                opts.log.display()
            )));
        }
    }
    let mut launch = Launch::replaying(reader.launch(), opts.command.as_deref(), "replay")?;
    // A backup runs the primary's build or nothing; `tandem replay` runs whatever it is given
    // (a different program shows as a divergence).
    if opts.follow.is_some() && opts.command.is_none() {
        crate::binaries::check(&reader.launch().binaries, &crate::launch::find_preload()?)?;
    }
    let view = match (&opts.view, launch.capture) {
        (Some(place), Some(capture)) => {
            let store = crate::capture::Store::open(&place.store)?;
            let unpacked = store.unpacked(&capture)?;
            Some(View::reset(&place.root, &unpacked, &reader.launch().data)?)
        }
        _ => {
            // On the host's files, in this directory.
            launch.cwd = None;
            let here = std::env::current_dir().map(|d| d.into_os_string()).unwrap_or_default();
            let there = std::ffi::OsStr::from_bytes(&reader.launch().cwd);
            if !there.is_empty() && here != there {
                crate::notes::line(&format!(
                    "tandem: note: the primary ran in {}, this replay runs in {} without the primary's data; a program that builds absolute paths from its working directory will diverge",
                    there.to_string_lossy(),
                    here.to_string_lossy()
                ));
            }
            None
        }
    };
    let shared = Arc::new(
        SharedRegion::create(opts.geometry, Mode::Replay)
            .map_err(Error::io("cannot create the shared replay region"))?,
    );
    if let Some(follow) = &opts.follow {
        follow.fence.attach(shared.clone());
        follow.fence.stop_with(opts.stop.clone());
    }
    crate::launch::apply_knobs(&shared);
    // The shim says so when the program cannot bind where the primary did, going live.
    let cannot_go_live = Arc::new(std::sync::OnceLock::<String>::new());
    let observer: crate::notes::Observer = {
        let cannot_go_live = cannot_go_live.clone();
        Arc::new(move |note: &str| {
            if note.starts_with("going live: cannot") {
                let _ = cannot_go_live.set(note.to_string());
            }
        })
    };
    // Dropped on every way out, after the program has been stopped: its last notes are printed.
    let shim_notes = crate::notes::ShimNotes::watched(shared.clone(), Some(observer));
    let region = shared.region();
    let Some(feed) = region.feed() else { return Err(Error::Setup("replay region without a feed".into())) };
    let mut feeder = Feeder {
        reader,
        log: opts.log.clone(),
        follow: opts.follow.clone(),
        batch: None,
        done: false,
        events: 0,
        high_pid: 0,
    };
    // Fill the feed before the program starts, so it does not begin by waiting.
    feeder.pump(&feed)?;
    let (program_stdin, stdin) = match launch.stdin {
        true => crate::stdin::StdinPipe::new(&shared).map(|(p, s)| (Some(p), Some(s)))?,
        false => (None, None),
    };
    let signals = catch_signals();
    let child = launch.spawn(&shared, view.as_ref(), program_stdin)?;
    let stop_stdin = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_stdin = StopOnDrop(stop_stdin.clone());
    if let Some(stdin) = stdin {
        stdin.follow(shared.clone(), stop_stdin);
    }
    let top = Pid::from_raw(child.id() as i32);
    let _watcher = watch_signals(signals, Some(top), opts.stop.clone());
    let stop_all = |exit_code: &mut Option<i32>| kill_tree(top, exit_code);

    let mut live = false;
    // Once a promoted backup's program records on: takes its events into the log.
    let mut taker: Option<Taker> = None;
    let mut exit_code = None;
    let mut gone_since: Option<Instant> = None;
    let mut last_reap = Instant::now();
    let mut last = (feed.delivered(), Instant::now());
    let mut progress = long_log_progress(opts);
    loop {
        let seen = region.header().doorbell.load(Ordering::Acquire);
        if let Some(why) = opts.follow.as_ref().and_then(|f| f.fatal.get()) {
            stop_all(&mut exit_code);
            return Err(Error::Setup(why.clone()));
        }
        if let Some(note) = cannot_go_live.get() {
            stop_all(&mut exit_code);
            // Its notes are printed before the agent's last line.
            drop(shim_notes);
            return Err(going_live_failed(&opts.log, note));
        }
        if opts.stop.due() {
            stop_all(&mut exit_code);
            wind_up(taker.take(), opts)?;
            match opts.follow.as_ref().and_then(|f| f.fence.why()) {
                Some(why @ crate::lease::Fenced::HandedOver { .. }) => return Err(Error::HandedOver(why.to_string())),
                Some(why) => return Err(Error::Fenced(why.to_string())),
                None => {}
            }
            let signal = opts.stop.signal().unwrap_or(nix::libc::SIGKILL);
            return Ok(match exit_code {
                // It ended in time on its own.
                Some(code) if live && code != 128 + nix::libc::SIGKILL => {
                    Outcome::Live { events: feeder.events, exit_code: code }
                }
                _ => Outcome::Stopped { signal, events: feeder.events },
            });
        }
        if let Err(e) = feeder.pump(&feed) {
            stop_all(&mut exit_code);
            return Err(e);
        }
        if let Some(follow) = &opts.follow {
            follow.replayed.store(feed.delivered().0, Ordering::Relaxed);
        }
        if let Some((p, total)) = progress.as_mut() {
            p.set(feeder.reader.offset().min(*total), *total);
            if feeder.done {
                if let Some((p, _)) = progress.take() {
                    p.finish();
                }
            }
        }
        if let Some((seq, report)) = feed.take_report() {
            stop_all(&mut exit_code);
            return Ok(Outcome::Diverged { seq, report });
        }
        if let Some(t) = taker.as_mut() {
            let taken = if t.held_back() { Ok(0) } else { t.take() };
            if let Err(e) = taken.and_then(|_| t.reap_now_and_then()) {
                stop_all(&mut exit_code);
                return Err(Error::Io { what: opts.log.display().to_string(), source: e });
            }
        }
        let mut all_gone = reap_children(top, &mut exit_code);
        if exit_code.is_some() && !all_gone {
            // The keeper was killed, not the tree: this agent ends it.
            stop_all(&mut exit_code);
            all_gone = true;
        }
        // Thread slots of the program's ended threads and processes are taken again by new ones.
        if last_reap.elapsed() >= crate::recorder::REAP_EVERY {
            feed.reap(Some(&crate::recorder::thread_alive));
            last_reap = Instant::now();
        } else {
            feed.reap(None);
        }
        if feeder.done && feed.exhausted() && !live {
            let promoted = opts.follow.as_ref().is_some_and(|f| f.go_live.load(Ordering::Acquire));
            if !opts.go_live && !promoted {
                stop_all(&mut exit_code);
                return Ok(Outcome::Completed { events: feeder.events });
            }
            if let (true, Some(to)) = (promoted, &opts.take_over) {
                let mut to = to.lock().unwrap_or_else(|p| p.into_inner());
                let cwd = std::env::current_dir().unwrap_or_default();
                let outside = crate::outside::OutsideWrites::new(&launch.data, cwd);
                match record_on(
                    opts,
                    &mut **to,
                    &shared,
                    feed.delivered(),
                    feeder.high_pid + 1,
                    feeder.reader.launch(),
                    outside,
                ) {
                    Ok(t) => taker = Some(t),
                    Err(e) => {
                        stop_all(&mut exit_code);
                        return Err(e);
                    }
                }
            }
            feed.go_live();
            live = true;
            opts.stop.pass_on_from_now();
            crate::notes::line(&format!(
                "tandem: end of the log after {} events: the program runs live",
                feeder.events
            ));
        }
        // A backup's program can exit (as the primary's did) just before the stream's end
        // reaches the log: wait for that end a while before judging.
        let end_on_its_way = all_gone
            && opts.follow.as_ref().is_some_and(|f| !f.stop.load(Ordering::Acquire))
            && *gone_since.get_or_insert_with(Instant::now) + opts.stall_after > Instant::now();
        if all_gone && !end_on_its_way {
            wind_up(taker.take(), opts)?;
            return Ok(match exit_code {
                Some(code) if live => Outcome::Live { events: feeder.events, exit_code: code },
                _ if feed.exhausted() => Outcome::Completed { events: feeder.events },
                _ => Outcome::Stalled { report: stall_report(&feed, "the program exited before the end of the log") },
            });
        }
        if !live {
            // Time counts only while an event waits: a primary quiet for a while (a cut link,
            // a program blocked in a call) leaves nothing to deliver, and its next event must
            // be given the whole timeout too.
            let delivered = feed.delivered();
            if delivered != last.0 || feed.peek().is_none() {
                last = (delivered, Instant::now());
            } else if last.1.elapsed() >= opts.stall_after {
                let why = format!("no progress for {:.1} s", last.1.elapsed().as_secs_f64());
                let report = stall_report(&feed, &why);
                stop_all(&mut exit_code);
                return Ok(Outcome::Stalled { report });
            }
        }
        region.wait_doorbell(seen, Duration::from_millis(2).as_nanos() as u64);
    }
}

/// A promoted backup's program is gone: its last events go into the log, which ends, and its
/// backups take the end.
fn wind_up(taker: Option<Taker>, opts: &ReplayOptions) -> Result<()> {
    let Some(mut t) = taker else { return Ok(()) };
    let io = |source| Error::Io { what: opts.log.display().to_string(), source };
    t.take_rest().map_err(io)?;
    t.finish().map_err(io)?;
    if let Some(to) = &opts.take_over {
        to.lock().unwrap_or_else(|p| p.into_inner()).finish();
    }
    Ok(())
}

/// Sets its flag when dropped: on every way out of a replay.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the replay waits for, and what each thread is doing.
fn stall_report(feed: &Feed, why: &str) -> String {
    let threads = feed.threads();
    let describe_thread = |t: &ThreadView| {
        let call = Call::from_id(t.call).map_or("?", Call::name);
        match t.phase {
            PHASE_WAITING => format!("waits for its turn to make {call}"),
            PHASE_IN_CALL => format!("is inside {call}"),
            _ => "is running the program's own code".to_string(),
        }
    };
    let mut out = match feed.peek() {
        Some(next) => {
            let h = next.header;
            let call = h.call().map_or("?", Call::name);
            let owner = threads.iter().find(|t| t.lpid == h.pid && t.ltid == h.tid);
            let state = owner.map_or_else(|| "has not started (or has already exited)".to_string(), describe_thread);
            format!(
                "replay stalled at seq {} ({why}): the next event is process {} thread {}'s {call}, and that thread {state}",
                h.seq, h.pid, h.tid
            )
        }
        None => format!("replay stalled ({why}) with no event left to deliver"),
    };
    for t in &threads {
        out.push_str(&format!(
            "\n  thread {}.{} (os tid {}) {}{}",
            t.lpid,
            t.ltid,
            t.os_tid,
            describe_thread(t),
            kernel_view(t.os_pid, t.os_tid)
        ));
    }
    out
}

/// What the kernel says the thread is doing (its state and the function it sleeps in), so a
/// thread the shim believes waiting can be told from one blocked elsewhere.
fn kernel_view(pid: i32, tid: i32) -> String {
    let task = format!("/proc/{pid}/task/{tid}");
    let Ok(stat) = std::fs::read_to_string(format!("{task}/stat")) else { return " [gone]".into() };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("?");
    let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
    match wchan.trim() {
        "" | "0" => format!(" [kernel: {state}]"),
        w => format!(" [kernel: {state} in {w}]"),
    }
}

/// Why going live failed, naming the address the program could not take (from the log's record
/// of the primary's `bind` on that descriptor), from the shim's note.
fn going_live_failed(log: &std::path::Path, note: &str) -> Error {
    // "going live: cannot bind descriptor FD where the primary did: errno E"
    let number_after = |word: &str| -> Option<i32> {
        let rest = note.split_once(word)?.1.trim_start();
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let errno = number_after("errno ").map(nix::errno::Errno::from_raw);
    let address = number_after("descriptor ").and_then(|fd| bound_address(log, fd));
    let what = match (address, errno) {
        (Some(a), Some(e)) => format!("cannot listen on {a} where the primary did: {}", e.desc()),
        (None, Some(e)) => format!("{}: {}", note.split(": errno").next().unwrap_or(note), e.desc()),
        _ => note.to_string(),
    };
    Error::GoLive(what)
}

/// The address the primary's program last bound descriptor `fd` to, as the log recorded it.
fn bound_address(log: &std::path::Path, fd: i32) -> Option<String> {
    let mut reader = crate::recorder::open_log(log).ok()?;
    let mut found = None;
    while let Ok(Some(batch)) = reader.next_batch() {
        for e in batch.events() {
            if e.header.call() == Some(Call::Bind) && e.header.fd == fd && e.header.result == 0 {
                found = eventlog::call::decode::fields(&e)
                    .into_iter()
                    .find(|(name, _)| *name == "address")
                    .map(|(_, value)| value.text());
            }
        }
    }
    found
}

/// One line for a divergence, as `tandem replay` prints it.
pub fn divergence_line(seq: Seq, report: &str) -> String {
    format!("replay diverged at seq {seq}: {report}")
}
