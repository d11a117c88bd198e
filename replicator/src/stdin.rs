//! The program's standard input, owned by its agent.
//!
//! The C library's own reads (`fgets`, `scanf`, `getline` on `stdin`) call no hooked function, so
//! what a program reads of its standard input that way is in no event. So when the agent's own
//! standard input carries anything (it is not a terminal, nor `/dev/null`), the agent gives the
//! program a pipe instead and hands over what it reads, each piece first logged as a `stdin` event
//! of its own ([`AGENT_PID`]), then written into the pipe: everything the program can read there is
//! in the log before it can read it. A backup's agent gives its program a pipe too, and writes the
//! same pieces into it as their events come up in the replay. The pipe is one of the program's own
//! (the region names it, see `note_outside_pipes` in the shim), so the program's own reads on it
//! move the bytes for real on a backup, like the C library's.

use crate::error::{Error, Result};
use eventlog::ids::{LogicalPid, LogicalTid, Seq, AGENT_PID};
use eventlog::ring::{Producer, SharedRegion, MAX_PAYLOAD};
use eventlog::{Call, EventHeader};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The agent's end of the pipe the program gets as its standard input.
pub struct StdinPipe {
    agent_end: OwnedFd,
}

/// Whether the agent's own standard input carries anything: neither a terminal (the program
/// keeps it, as an interactive program must) nor `/dev/null`.
pub fn worth_owning() -> bool {
    let stdin = std::io::stdin();
    if nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        return false;
    }
    match (std::fs::metadata("/proc/self/fd/0"), std::fs::metadata("/dev/null")) {
        (Ok(ours), Ok(null)) => !(ours.file_type().is_char_device() && ours.rdev() == null.rdev()),
        (Ok(_), Err(_)) => true,
        (Err(_), _) => false,
    }
}

impl StdinPipe {
    /// A new pipe, its inode named in `region` as the program's own: the program's end (for its
    /// descriptor 0) and the agent's.
    pub fn new(region: &SharedRegion) -> Result<(OwnedFd, StdinPipe)> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::Setup(format!("cannot make a pipe for the program's standard input: {e}")))?;
        let inode = nix::sys::stat::fstat(&read)
            .map_err(|e| Error::Setup(format!("cannot look at the standard input's pipe: {e}")))?
            .st_ino;
        region.region().header().stdin_pipe.store(inode, Ordering::Relaxed);
        Ok((read, StdinPipe { agent_end: write }))
    }

    /// A primary's: hands the agent's standard input over to the program, each piece logged
    /// first, until it ends (then the program reads the end) or the program closes its end.
    pub fn hand_over(self, region: Arc<SharedRegion>) {
        let mut pipe = std::fs::File::from(self.agent_end);
        let spawned = std::thread::Builder::new().name("tandem-stdin".into()).spawn(move || {
            let tid = nix::unistd::gettid().as_raw();
            let pid = nix::unistd::getpid().as_raw();
            let Some(mut producer) = Producer::claim(region.region(), pid, tid, AGENT_PID.0, 0) else {
                crate::notes::line("tandem: every event slot is taken: the program's standard input is closed");
                return;
            };
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; MAX_PAYLOAD.min(64 << 10)];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                log_piece(&mut producer, &buf[..n]);
                if n == 0 || pipe.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            producer.close();
        });
        if spawned.is_err() {
            crate::notes::line("tandem: cannot start the thread that hands over standard input: it is closed");
        }
    }

    /// A backup's: writes the pieces the log hands over into the program's pipe as their events
    /// come up, until the end of them, or `stop` (the replay ended, or the program went live:
    /// the pipe stays open then, without more input).
    pub fn follow(self, region: Arc<SharedRegion>, stop: Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let mut pipe = std::fs::File::from(self.agent_end);
        // Writes wait for the program to read; the turns must not.
        let writer = std::thread::Builder::new().name("tandem-stdin-writer".into()).spawn(move || {
            for piece in rx.iter() {
                if piece.is_empty() {
                    return;
                }
                if pipe.write_all(&piece).is_err() {
                    return;
                }
            }
            // Live without the end of the input: the program waits for more, as it would have.
            std::mem::forget(pipe);
        });
        let taker = std::thread::Builder::new().name("tandem-stdin".into()).spawn(move || {
            let Some(feed) = region.region().feed() else { return };
            let tid = nix::unistd::gettid().as_raw();
            let Some(me) = feed.register(AGENT_PID.0, 0, nix::unistd::getpid().as_raw(), tid) else {
                crate::notes::line(
                    "tandem: every thread slot is taken: the program's standard input is not handed over",
                );
                return;
            };
            let mine = |h: &EventHeader| h.pid == AGENT_PID && h.tid == LogicalTid(0);
            while !stop.load(Ordering::Acquire) && !feed.is_live() {
                let slot = feed.thread(me);
                let seen = slot.wake.load(Ordering::SeqCst);
                if let Some(next) = feed.peek().filter(|n| mine(&n.header)) {
                    let mut piece = vec![0u8; next.header.payload_len as usize];
                    feed.copy_payload(&next, 0, &mut piece);
                    let end = piece.is_empty();
                    let _ = tx.send(piece);
                    feed.consume(&next);
                    if end {
                        break;
                    }
                    continue;
                }
                slot.sleeping.store(1, Ordering::SeqCst);
                if feed.peek().filter(|n| mine(&n.header)).is_none() {
                    feed.sleep(me, seen, Duration::from_millis(20).as_nanos() as u64);
                }
                slot.sleeping.store(0, Ordering::Relaxed);
            }
            feed.unregister(me);
        });
        if writer.is_err() || taker.is_err() {
            crate::notes::line("tandem: cannot start the threads that hand over standard input");
        }
    }
}

/// Logs one piece of standard input (empty: its end) as the agent's event.
fn log_piece(producer: &mut Producer, piece: &[u8]) {
    let seq = producer.take_seq();
    producer.note_input(seq);
    producer.write_with(
        piece.len(),
        |h| {
            h.seq = Seq(seq);
            h.pid = LogicalPid(AGENT_PID.0);
            h.tid = LogicalTid(0);
            h.call = Call::Stdin as u16;
            h.flags = 0;
            h.fd = 0;
            h.result = piece.len() as i64;
            h.errno = 0;
            h.digest = eventlog::digest::digest(piece);
            h.aux = [0, 0];
        },
        &[piece],
    );
    producer.region().ring_doorbell();
}
