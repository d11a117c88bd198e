//! Where the agent's notes go: its own lines, its `tracing` output and the shim's notes.
//!
//! The program inherits the agent's stderr. When that is a regular file, every byte the agent
//! writes there moves the file's offset and size, which the program sees (CPython seeks its
//! stderr at start): a backup's program would see other values than its primary's. So an agent
//! whose stderr is a regular file writes its notes to a file of its own instead (see
//! [`divert_from_shared_stderr`]) and says nothing on stderr, not even where they went. Pipes,
//! terminals and `/dev/null` have no offset the program can observe and keep the notes. An error
//! that stops the agent before it starts the program (no program shares anything yet) is said on
//! stderr all the same ([`error_line`]).

use eventlog::ring::notes::NOTE_SLOTS;
use eventlog::ring::{Region, SharedRegion};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The agent's own notes file, once chosen.
static FILE: OnceLock<File> = OnceLock::new();
/// Set once the program is started: from then on it shares the agent's stderr.
static LAUNCHED: AtomicBool = AtomicBool::new(false);

/// How often the shim's notes are printed at the latest (a posted note wakes the printer).
const SHIM_NOTES_EVERY: Duration = Duration::from_millis(100);

/// Whether the agent's stderr is a regular file (and so, shared with the program, a place the
/// agent must not write to).
pub fn stderr_is_a_file() -> bool {
    io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.file_type().is_file())
}

/// The notes file of `tandem record -o LOG` and `tandem replay LOG`: `LOG.notes`.
pub fn beside_log(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".notes");
    PathBuf::from(name)
}

/// The notes file of an agent with a state directory.
pub fn in_state_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.log")
}

/// When stderr is a regular file, sends every note from now on to `file` instead (appended;
/// created, with its directory, if need be). Returns whether notes were diverted.
pub fn divert_from_shared_stderr(file: &Path) -> io::Result<bool> {
    if !stderr_is_a_file() {
        return Ok(false);
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::statedir::create_private_dir(dir)?;
    }
    // Notes quote the program's calls: its owner's alone, like the log.
    let f = std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().create(true).append(true), 0o600)
        .open(file)?;
    let _ = FILE.set(f);
    Ok(true)
}

/// Whether notes go to a terminal (for colours).
pub fn to_terminal() -> bool {
    FILE.get().is_none() && io::IsTerminal::is_terminal(&io::stderr())
}

/// The program has started (and shares the agent's stderr).
pub fn launched() {
    LAUNCHED.store(true, Ordering::SeqCst);
}

/// The line of an error that stops the agent: on stderr if the program never started, else where
/// notes go.
pub fn error_line(text: &str) {
    if LAUNCHED.load(Ordering::SeqCst) {
        line(text);
    } else {
        let _ = writeln!(io::stderr(), "{text}");
    }
}

/// Writes one note (a newline is added) where notes go.
pub fn line(text: &str) {
    let mut buf = Vec::with_capacity(text.len() + 1);
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'\n');
    let _ = writer().write_all(&buf);
}

/// A writer to where notes go (for `tracing`'s subscriber: one write per event).
pub fn writer() -> NotesWriter {
    NotesWriter
}

pub struct NotesWriter;

impl Write for NotesWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match FILE.get() {
            Some(mut f) => f.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match FILE.get() {
            Some(mut f) => f.write_all(buf),
            None => io::stderr().lock().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Prints the shim's notes (posted to the region's notes area) as they come, from a thread of its
/// own, and once more when dropped: drop it once the program has ended.
pub struct ShimNotes {
    shared: Arc<SharedRegion>,
    stop: Arc<AtomicBool>,
    printer: Option<std::thread::JoinHandle<u64>>,
    observer: Option<Observer>,
}

/// Sees each of the shim's notes as it is printed.
pub type Observer = Arc<dyn Fn(&str) + Send + Sync>;

impl ShimNotes {
    pub fn start(shared: Arc<SharedRegion>) -> ShimNotes {
        ShimNotes::watched(shared, None)
    }

    /// Also shows every note to `observer` (the agent acts on some).
    pub fn watched(shared: Arc<SharedRegion>, observer: Option<Observer>) -> ShimNotes {
        let stop = Arc::new(AtomicBool::new(false));
        let printer = {
            let (shared, stop, observer) = (shared.clone(), stop.clone(), observer.clone());
            std::thread::Builder::new()
                .name("tandem-notes".into())
                .spawn(move || {
                    let region = shared.region();
                    let mut lost = 0;
                    while !stop.load(Ordering::Acquire) {
                        let seen = region.notes_bell();
                        print_shim_notes(&region, &mut lost, observer.as_ref());
                        region.wait_notes(seen, SHIM_NOTES_EVERY.as_nanos() as u64);
                    }
                    lost
                })
                .ok()
        };
        ShimNotes { shared, stop, printer, observer }
    }
}

impl Drop for ShimNotes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let region = self.shared.region();
        region.ring_notes_bell();
        let mut lost = self.printer.take().and_then(|t| t.join().ok()).unwrap_or(0);
        print_shim_notes(&region, &mut lost, self.observer.as_ref());
    }
}

/// Prints the notes posted since the last call, in the order they were posted, and how many were
/// lost since `lost` (updated).
fn print_shim_notes(region: &Region, lost: &mut u64, observer: Option<&Observer>) {
    let mut notes = Vec::new();
    region.take_notes(|order, text| notes.push((order, String::from_utf8_lossy(text).into_owned())));
    notes.sort_unstable_by_key(|(order, _)| *order);
    for (_, text) in notes {
        line(&format!("tandem: {text}"));
        if let Some(observe) = observer {
            observe(&text);
        }
    }
    let now = region.notes_lost();
    if now > *lost {
        line(&format!(
            "tandem: {} notes from the program's processes were lost: more than {NOTE_SLOTS} waited to be printed at once",
            now - *lost
        ));
        *lost = now;
    }
}
