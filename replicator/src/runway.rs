//! Space made ready ahead of a log that is synced after every batch (a backup's).
//!
//! Syncing an append must also commit the file's new size and extents: a journal commit on top
//! of the data write and the cache flush. A thread of its own keeps the next few MiB past the
//! writer filled with zeros and synced, so that a batch lands in space that already exists and
//! its sync is only the data and the flush. Readers take a header of zeros as the end of what is
//! written (`eventlog::logfile`).
//!
//! The filler never writes where the writer has claimed space, and the writer waits only when it
//! needs space that is being filled at that moment. If filling fails (a full disk), the writer
//! simply appends as it would without it.
//!
//! Filling costs a write of its own (about 0.7 ms per MiB with its sync, on a virtual disk) and
//! saves one journal commit per sync (about 80 µs): it pays while syncs are small and frequent
//! (live following), not while each covers megabytes (catching up), when the filler rests.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Filled at a time.
const CHUNK: u64 = 4 << 20;
/// The filler starts another chunk when less than this is ready past the writer.
const LOW_WATER: u64 = 2 << 20;
/// Filling pays while syncs cover less than this on average.
const WORTH_BELOW: u64 = 64 << 10;

#[derive(Default)]
struct State {
    /// The file holds synced zeros (or the writer's bytes) up to here.
    ready: u64,
    /// The writer may write up to here.
    claimed: u64,
    /// The range being filled now.
    filling: Option<(u64, u64)>,
    /// Average bytes per sync (moving, an eighth per sync).
    per_sync: u64,
    stop: bool,
}

impl State {
    fn worth_filling(&self) -> bool {
        self.per_sync < WORTH_BELOW
    }

    /// Where the next fill would start.
    fn fill_from(&self) -> u64 {
        self.ready.max(self.claimed)
    }

    /// Whether the filler has work now: it is idle, filling pays, and little is ready ahead.
    fn wants_fill(&self) -> bool {
        !self.stop && self.filling.is_none() && self.worth_filling() && self.fill_from() - self.claimed < LOW_WATER
    }
}

struct Shared {
    state: Mutex<State>,
    moved: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Runway {
    shared: Arc<Shared>,
    filler: Option<JoinHandle<()>>,
}

impl Runway {
    /// Starts filling past `end`, where the writer of `file` stands now.
    pub fn start(file: &File, end: u64) -> io::Result<Runway> {
        let file = file.try_clone()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { ready: end, claimed: end, ..State::default() }),
            moved: Condvar::new(),
        });
        let s = shared.clone();
        let filler = std::thread::Builder::new().name("tandem-runway".into()).spawn(move || fill(&s, &file))?;
        Ok(Runway { shared, filler: Some(filler) })
    }

    /// The writer is about to write up to byte `end`: waits if that space is being filled now.
    pub fn claim(&self, end: u64) {
        let mut st = self.shared.lock();
        while st.filling.is_some_and(|(from, _)| end > from) {
            st = self.shared.moved.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.claimed = st.claimed.max(end);
        // Waking the filler is a system call: only when it has work.
        if st.wants_fill() {
            drop(st);
            self.shared.moved.notify_all();
        }
    }

    /// The writer synced `bytes` written since its previous sync.
    pub fn synced(&self, bytes: u64) {
        let mut st = self.shared.lock();
        st.per_sync = st.per_sync - st.per_sync / 8 + bytes / 8;
        if st.wants_fill() {
            drop(st);
            self.shared.moved.notify_all();
        }
    }

    /// Bytes ready ahead of what the writer claimed.
    #[cfg(test)]
    fn ready_ahead(&self) -> u64 {
        let st = self.shared.lock();
        st.ready.saturating_sub(st.claimed)
    }

    /// Stops filling, and waits for the filler to be done with the file.
    pub fn stop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.moved.notify_all();
        if let Some(filler) = self.filler.take() {
            let _ = filler.join();
        }
    }
}

impl Drop for Runway {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fill(shared: &Shared, file: &File) {
    let zeros = vec![0u8; CHUNK as usize];
    let mut st = shared.lock();
    loop {
        if st.stop {
            return;
        }
        if !st.wants_fill() {
            st = shared.moved.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let from = st.fill_from();
        st.filling = Some((from, from + CHUNK));
        drop(st);
        let filled = file.write_all_at(&zeros, from).and_then(|()| file.sync_data());
        st = shared.lock();
        st.filling = None;
        match filled {
            Ok(()) => st.ready = from + CHUNK,
            Err(e) => {
                // Appending still works; only the syncs are slower.
                tracing::warn!("cannot make room ahead of the log ({e}); batches are appended instead");
                st.stop = true;
            }
        }
        shared.moved.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn the_filler_keeps_zeros_ahead_and_never_writes_over_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"head").unwrap();
        let mut runway = Runway::start(&file, 4).unwrap();
        // The writer overtakes whatever is ready, many times over, while the filler runs.
        let mut expected = b"head".to_vec();
        for i in 0..3000u32 {
            let piece = vec![(i % 251) as u8 + 1; 4096 + (i as usize % 7)];
            runway.claim(expected.len() as u64 + piece.len() as u64);
            file.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        // The filler catches up once the writer rests (on a busy machine, only then).
        let waited = std::time::Instant::now();
        while runway.ready_ahead() < LOW_WATER && waited.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        runway.stop();
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(&back[..expected.len()], &expected[..], "the filler wrote over the writer's bytes");
        let tail = &back[expected.len()..];
        assert!(!tail.is_empty() && tail.iter().all(|&b| b == 0), "no zeros were made ready ahead");
        assert!(tail.len() as u64 >= LOW_WATER);
        // Cut to the end of what was written, as a finished log is.
        file.set_len(expected.len() as u64).unwrap();
        assert_eq!(file.seek(SeekFrom::End(0)).unwrap(), expected.len() as u64);
    }

    #[test]
    fn the_filler_rests_while_each_sync_covers_megabytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("log")).unwrap();
        let runway = Runway::start(&file, 0).unwrap();
        let mut end = 0u64;
        let mut write = |bytes: usize| {
            runway.claim(end + bytes as u64);
            file.write_all(&vec![1u8; bytes]).unwrap();
            end += bytes as u64;
            runway.synced(bytes as u64);
            end
        };
        for _ in 0..40 {
            write(2 << 20);
        }
        let end = write(0);
        let settled = |runway: &Runway| loop {
            let st = runway.shared.lock();
            if st.filling.is_none() {
                return st.ready;
            }
            drop(st);
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let ready = settled(&runway);
        assert!(ready <= end, "the filler kept filling ahead of large syncs ({ready} > {end})");
        // Small syncs again: it fills ahead once more.
        let mut end = end;
        for _ in 0..64 {
            end = write(1000);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while settled(&runway) <= end {
            assert!(std::time::Instant::now() < deadline, "the filler did not resume for small syncs");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
