//! Storing a recording's log on a thread of its own: the agent that takes events hands it
//! gathered batches of them, and the thread compresses, writes and, for a bounded log, cuts.
//! Taking events (and handing them to backups) never waits for compression or the disk, unless
//! the thread falls two batches behind.

use crate::recorder::Tap;
use crate::retention::{Kept, Stored};
use eventlog::logfile::LogWriter;
use eventlog::Seq;
use std::fs::File;
use std::io::BufWriter;
use std::sync::mpsc;
use std::sync::Arc;

pub type Writer = LogWriter<BufWriter<File>>;

/// Events to store as one batch.
struct Gathered {
    events: Vec<u8>,
    first: Seq,
    count: u32,
    wall_ns: u64,
}

/// What the thread owns.
struct Storer {
    writer: Writer,
    tap: Option<Arc<dyn Tap>>,
    /// The stored batches a bounded log keeps, and where its batches begin (what a cut frees
    /// starts there).
    kept: Option<(Kept, u64)>,
}

impl Storer {
    /// Stores one batch, compressed if that shrinks it, then cuts a bounded log.
    fn store(&mut self, g: &Gathered) -> std::io::Result<()> {
        let offset = self.writer.bytes_written();
        match eventlog::pack::pack_events(&g.events) {
            Some(packed) => {
                self.writer.write_packed_batch(&packed, g.events.len() as u32, g.first, g.count, g.wall_ns)?
            }
            None => self.writer.write_batch(&g.events, g.first, g.count, g.wall_ns)?,
        }
        // Readers of the file (a backup catching up from the start) see whole batches.
        self.writer.flush()?;
        if let Some((kept, _)) = &mut self.kept {
            kept.stored(Stored { first_seq: g.first, offset, wall_ns: g.wall_ns });
        }
        self.cut_if_due(g.wall_ns)
    }

    /// Drops the oldest stored batches past the retention bound, unless a connected backup
    /// still lacks their events: punches them out of the file (its space goes back to the file
    /// system; the file keeps its length, and its header and launch).
    fn cut_if_due(&mut self, now_ns: u64) -> std::io::Result<()> {
        let (Some((kept, data_start)), Some(tap)) = (&mut self.kept, &self.tap) else { return Ok(()) };
        let Some(at) = kept.cut_at(self.writer.bytes_written(), now_ns, tap.needed()) else { return Ok(()) };
        if !tap.cut(at, kept.bound()) {
            return Ok(());
        }
        kept.cut(at);
        use std::os::fd::AsFd;
        let fd = self.writer.get_ref().get_ref().as_fd();
        let flags = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
        nix::fcntl::fallocate(fd, flags, *data_start as i64, (at.offset - *data_start) as i64)
            .map_err(std::io::Error::from)
    }
}

/// The storing thread, seen from the agent that takes events.
pub struct Store {
    to_store: Option<mpsc::SyncSender<Gathered>>,
    /// Buffers the thread is done with, to gather the next batches in.
    spent: mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<Writer>>>,
}

impl Store {
    pub fn start(writer: Writer, tap: Option<Arc<dyn Tap>>, kept: Option<(Kept, u64)>) -> std::io::Result<Store> {
        let (to_store, gathered) = mpsc::sync_channel::<Gathered>(2);
        let (give_back, spent) = mpsc::channel();
        let mut storer = Storer { writer, tap, kept };
        let thread = std::thread::Builder::new().name("tandem-store".into()).spawn(move || {
            for mut g in gathered {
                storer.store(&g)?;
                g.events.clear();
                let _ = give_back.send(g.events);
            }
            Ok(storer.writer)
        })?;
        Ok(Store { to_store: Some(to_store), spent, thread: Some(thread) })
    }

    /// An empty buffer to gather events in (one the thread is done with, if any).
    pub fn buffer(&self) -> Vec<u8> {
        self.spent.try_recv().unwrap_or_default()
    }

    /// Stores `events`, `count` of them from `first`, as one batch.
    pub fn store(&mut self, events: Vec<u8>, first: Seq, count: u32, wall_ns: u64) -> std::io::Result<()> {
        let sent = self.to_store.as_ref().map(|t| t.send(Gathered { events, first, count, wall_ns }));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped on an error: it says which.
            _ => self.finish().map(|_| ()),
        }
    }

    /// Waits until everything handed over is stored: the writer, to end the log.
    pub fn finish(&mut self) -> std::io::Result<Writer> {
        self.to_store = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the storing thread panicked")),
            None => Err(std::io::Error::other("the log was finished already")),
        }
    }
}
