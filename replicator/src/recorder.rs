//! `tandem record`: run a program under the shim and write every event it produces, in sequence
//! order, to a log file.

use crate::error::{Error, Result};
use crate::launch::Launch;
use crate::lifetime::{catch_signals, kill_tree, reap_children, watch_signals, Stop};
use crate::retention::{Kept, Retain, Stored};
use crate::store::Store;
use eventlog::logfile::LogWriter;
use eventlog::merge::Merger;
use eventlog::ring::{Geometry, Mode, Region, SharedRegion};
use eventlog::{IncarnationToken, Seq};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A batch is cut at this size (or when the rings run dry).
const BATCH_BYTES: usize = 1 << 20;
/// How long the agent sleeps when the rings are empty, unless a producer rings.
const IDLE_WAIT: Duration = Duration::from_millis(2);
/// How often dead threads' rings are looked for.
pub(crate) const REAP_EVERY: Duration = Duration::from_millis(50);

pub struct RecordOptions {
    pub out: PathBuf,
    pub geometry: Geometry,
    pub incarnation: IncarnationToken,
    /// Who else gets the events as they are written (a primary's backups).
    pub tap: Option<std::sync::Arc<dyn Tap>>,
    /// Asked to stop the program (a termination signal, a fence).
    pub stop: std::sync::Arc<Stop>,
    /// How much of the log to keep (a primary's; `None`: all of it).
    pub retain: Option<Retain>,
}

/// Receives a recording as it is made.
pub trait Tap: Send + Sync {
    /// The shared region exists; the program has not started yet.
    fn started(&self, region: std::sync::Arc<SharedRegion>);
    /// A batch is in the log file (written and flushed).
    fn batch(&self, first_seq: Seq, count: u32, wall_ns: u64, body: &[u8]);
    /// Whether the agent may take events beyond `next_seq` now; while not, the program's rings
    /// fill and its threads wait (back-pressure).
    fn may_take_more(&self, next_seq: Seq) -> bool;
    /// The recording is complete: `last_seq` is its last event.
    fn ended(&self, last_seq: Seq);
    /// Whether the program's history goes on elsewhere (this agent is primary no more): its log
    /// then has no end marker, and the agent may rejoin as a backup from it.
    fn cut_off(&self) -> bool {
        false
    }
    /// The oldest event a connected backup still lacks (`None`: none is connected): a bounded
    /// log keeps it.
    fn needed(&self) -> Option<Seq> {
        None
    }
    /// A bounded log (`bound`) is about to drop every event before `at`: whether it may (not if
    /// a backup came to need one meanwhile). From then on it serves no backup that needs one.
    fn cut(&self, _at: Stored, _bound: Retain) -> bool {
        false
    }
}

/// What a finished recording amounts to.
#[derive(Debug)]
pub struct Recording {
    /// The program's exit status as a shell reports it (128 + signal if killed).
    pub exit_code: i32,
    pub events: u64,
    /// Events whose writer died before writing them (recorded as `lost`).
    pub lost: u64,
}

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Whether thread `tid` of process `pid` still runs (a zombie does not).
pub fn thread_alive(pid: i32, tid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|s| s.trim_start().chars().next()), Some('Z' | 'X')),
        Err(_) => false,
    }
}

/// The stored log gathers batches until they hold this many bytes of events, then keeps them as
/// one batch, compressed: a busy program's batches and an idle one's alike (idle-time batches are
/// small and repetitive, and compress to a few percent together).
const STORE_BYTES: usize = 256 << 10;
/// ... or until the oldest waited this long: a log read while it grows (a backup catching up
/// from the file) is at most this far behind the backups, which get every batch at once.
const STORE_WAIT: Duration = Duration::from_secs(1);

/// Hands merged events to the backups at once, and to the log's storing thread gathered.
struct Sink {
    /// The last event taken (the log may begin with events this agent did not record).
    last: Seq,
    /// Events taken but not yet stored (the batch being taken goes on at their end): their
    /// count, and when the oldest was taken.
    pending: Vec<u8>,
    pending_count: u32,
    pending_since: Option<Instant>,
    tap: Option<std::sync::Arc<dyn Tap>>,
    store: Store,
}

impl Sink {
    /// Where the batch being taken starts in `pending`.
    fn batch_start(&self) -> usize {
        self.pending.len()
    }

    /// The `count` events from `start` in `pending` are a batch: to the backups at once, to the
    /// log once enough are pending.
    fn flush_batch(&mut self, start: usize, count: u32) -> std::io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        let first = self.last.next();
        let wall_ns = now_ns();
        self.last = first + count as u64 - 1;
        // Backups get the batch before it is stored: storing never delays the wire.
        if let Some(tap) = &self.tap {
            tap.batch(first, count, wall_ns, &self.pending[start..]);
        }
        self.pending_count += count;
        self.pending_since.get_or_insert_with(Instant::now);
        if self.pending.len() >= STORE_BYTES {
            self.store(wall_ns)?;
        }
        Ok(())
    }

    /// Hands the pending events to the storing thread, as one batch.
    fn store(&mut self, wall_ns: u64) -> std::io::Result<()> {
        if self.pending_count == 0 {
            return Ok(());
        }
        let first = self.last + 1 - self.pending_count as u64;
        let events = std::mem::replace(&mut self.pending, self.store.buffer());
        self.store.store(events, first, self.pending_count, wall_ns)?;
        self.pending_count = 0;
        self.pending_since = None;
        Ok(())
    }

    /// Stores the pending events if the oldest waited long enough.
    fn store_if_due(&mut self) -> std::io::Result<()> {
        match self.pending_since {
            Some(t) if t.elapsed() >= STORE_WAIT => self.store(now_ns()),
            _ => Ok(()),
        }
    }
}

/// Takes a running program's events from its rings, in sequence order, into the log's batches
/// (and to the tap): the primary's one way of recording, from the program's start or, on a
/// backup promoted to primary, from where its log ends.
pub struct Taker {
    merger: Merger,
    sink: Sink,
    outside: crate::outside::OutsideWrites,
    last_reap: Instant,
    lost: u64,
}

impl Taker {
    /// Takes events after `last` (the log's last event) into `writer`, which continues the log
    /// (bounded by `retain`, its batches starting at the offset given).
    pub fn new(
        region: Region,
        writer: LogWriter<BufWriter<File>>,
        last: Seq,
        tap: Option<std::sync::Arc<dyn Tap>>,
        outside: crate::outside::OutsideWrites,
        retain: Option<(Retain, u64)>,
    ) -> std::io::Result<Taker> {
        let kept = retain.map(|(bound, data_start)| (Kept::new(bound), data_start));
        Ok(Taker {
            merger: Merger::from_seq(region, last.next()),
            sink: Sink {
                last,
                pending: Vec::with_capacity(2 * BATCH_BYTES),
                pending_count: 0,
                pending_since: None,
                store: Store::start(writer, tap.clone(), kept)?,
                tap,
            },
            outside,
            last_reap: Instant::now(),
            lost: 0,
        })
    }

    /// Whether the tap holds the program back now (its backups lag too far).
    pub fn held_back(&self) -> bool {
        self.sink.tap.as_ref().is_some_and(|t| !t.may_take_more(self.sink.last.next()))
    }

    /// Takes what the rings hold now: the number of events taken.
    pub fn take(&mut self) -> std::io::Result<u32> {
        let start = self.sink.batch_start();
        let n = self.merger.drain(&mut self.sink.pending, start + BATCH_BYTES);
        let followed = self.merger.calls_taken().meets(&crate::outside::OutsideWrites::CALLS);
        let written = if followed { self.outside.scan(&self.sink.pending[start..]) } else { Vec::new() };
        for path in written {
            crate::notes::line(&format!(
                "tandem: warning: the program writes {} outside its data: a backup's program does not find it there when it takes over (name its directory with --data to replicate it)",
                path.display()
            ));
        }
        self.sink.flush_batch(start, n)?;
        Ok(n)
    }

    /// Now and then: gives back the rings of threads that ended, and fills the numbers a thread
    /// that died mid-event took.
    pub fn reap_now_and_then(&mut self) -> std::io::Result<()> {
        if self.last_reap.elapsed() >= REAP_EVERY {
            self.merger.reap(thread_alive);
            let start = self.sink.batch_start();
            let missing = self.merger.fill_dead_writer_gap(&mut self.sink.pending, thread_alive);
            self.lost += missing;
            self.sink.flush_batch(start, missing as u32)?;
            self.last_reap = Instant::now();
        }
        self.sink.store_if_due()
    }

    /// Every process is gone: closes what is left open, takes the rest, fills gaps.
    pub fn take_rest(&mut self) -> std::io::Result<()> {
        self.merger.reap(|_, _| false);
        loop {
            let start = self.sink.batch_start();
            let n = self.merger.drain(&mut self.sink.pending, start + BATCH_BYTES);
            self.sink.flush_batch(start, n)?;
            if n == 0 {
                let missing = self.merger.fill_gap(&mut self.sink.pending);
                if missing == 0 {
                    return Ok(());
                }
                self.lost += missing;
                self.sink.flush_batch(start, missing as u32)?;
            }
        }
    }

    /// Ends the log with its end marker (none if the history goes on elsewhere), synced: (the
    /// last event, events lost).
    pub fn finish(mut self) -> std::io::Result<(Seq, u64)> {
        self.sink.store(now_ns())?;
        let writer = self.sink.store.finish()?;
        let last = self.sink.last;
        let cut_off = self.sink.tap.as_ref().is_some_and(|t| t.cut_off());
        if let Some(tap) = &self.sink.tap {
            tap.ended(last);
        }
        let mut out = match cut_off {
            false => writer.finish(now_ns())?,
            true => writer.into_inner(),
        };
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok((last, self.lost))
    }
}

pub fn record(launch: &Launch, opts: &RecordOptions) -> Result<Recording> {
    let out_name = || opts.out.display().to_string();
    let file =
        crate::statedir::create_private_file(&opts.out).map_err(Error::io(format!("cannot create {}", out_name())))?;
    let writer =
        LogWriter::create(BufWriter::with_capacity(1 << 20, file), opts.incarnation, now_ns(), &launch.record())
            .map_err(Error::io(out_name()))?;
    let shared = std::sync::Arc::new(
        SharedRegion::create(opts.geometry, Mode::Record)
            .map_err(Error::io("cannot create the shared event region"))?,
    );
    crate::launch::apply_knobs(&shared);
    let shim_notes = crate::notes::ShimNotes::start(shared.clone());
    if let Some(tap) = &opts.tap {
        tap.started(shared.clone());
    }
    let region = shared.region();
    let (program_stdin, stdin) = match launch.stdin {
        true => crate::stdin::StdinPipe::new(&shared).map(|(p, s)| (Some(p), Some(s)))?,
        false => (None, None),
    };
    let signals = catch_signals();
    let mut child = launch.spawn(&shared, None, program_stdin)?;
    if let Some(stdin) = stdin {
        stdin.hand_over(shared.clone());
    }
    let top = Pid::from_raw(child.id() as i32);
    let forwarder = watch_signals(signals, Some(top), opts.stop.clone());

    let cwd = std::env::current_dir().unwrap_or_default();
    let outside = crate::outside::OutsideWrites::new(&launch.data, cwd);
    let retain = opts.retain.map(|bound| (bound, writer.bytes_written()));
    let mut taker =
        Taker::new(region, writer, Seq::ZERO, opts.tap.clone(), outside, retain).map_err(Error::io(out_name()))?;
    let write_err = |e| Error::Io { what: out_name(), source: e };
    let mut exit_code = None;
    let mut killed = false;
    loop {
        // Asked to stop and past its time, or its keeper is gone (killed) while processes of its
        // tree may remain: the tree is this agent's to end. The remaining events are taken
        // below, as those of a program that ended.
        if !killed && (opts.stop.due() || exit_code.is_some()) {
            kill_tree(top, &mut exit_code);
            killed = true;
        }
        let seen = region.header().doorbell.load(std::sync::atomic::Ordering::Acquire);
        // While held back the rings fill; once the program is gone its remaining events are
        // taken regardless.
        if taker.held_back() && !reap_children(top, &mut exit_code) {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        if taker.take().map_err(write_err)? > 0 {
            continue;
        }
        if reap_children(top, &mut exit_code) {
            taker.take_rest().map_err(write_err)?;
            break;
        }
        taker.reap_now_and_then().map_err(write_err)?;
        region.wait_doorbell(seen, IDLE_WAIT.as_nanos() as u64);
    }
    let (last, lost) = taker.finish().map_err(write_err)?;
    drop(forwarder);
    drop(shim_notes);
    let _ = child.try_wait();
    Ok(Recording { exit_code: exit_code.unwrap_or(125), events: last.0, lost })
}

/// Opens a log for reading (shared by `log show`, `log stats` and replay).
pub fn open_log(path: &Path) -> Result<eventlog::logfile::LogReader<std::io::BufReader<File>>> {
    let f = File::open(path).map_err(Error::io(path.display().to_string()))?;
    eventlog::logfile::LogReader::open(std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|source| Error::Log { path: path.to_path_buf(), source })
}
