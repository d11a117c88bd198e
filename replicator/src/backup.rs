//! `tandem backup`: receive the primary's events into the state directory's log, acknowledge
//! them once durable, and run the same program in replay mode following that log.
//!
//! The network side (a thread with its own runtime) only ever appends whole, verified batches to
//! the log and syncs them before acknowledging; the replay follows the file as it grows. After a
//! cut it reconnects with the same resume handle and what the log holds, and the primary
//! continues from there. A restarted agent finds its log, replays it from the start and resumes
//! the stream where the log ends.

use crate::certs::Identity;
use crate::error::{Error, Result};
use crate::net::{self, read_frame, write_frame, NetError};
use crate::recorder::now_ns;
use crate::replayer::{self, Outcome, ReplayOptions};
use crate::statedir::{random, Membership, StateDir};
use crate::wire::frame::Body;
use crate::wire::session::{BackupAction, BackupSession, SessionError, Standing};
use eventlog::logfile::{LogReader, LogWriter};
use eventlog::ring::Geometry;
use eventlog::IncarnationToken;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Pause between reconnection attempts.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);

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
}

type Writer = LogWriter<BufWriter<File>>;

/// The local log, continued where its complete part ends: (writer, last event held, ended).
fn resume_log(path: &Path) -> Result<(Writer, u64, bool)> {
    let bad = |source| Error::Log { path: path.to_owned(), source };
    let mut reader =
        LogReader::open(std::io::BufReader::new(File::open(path).map_err(Error::io(path.display().to_string()))?))
            .map_err(bad)?;
    let ended = loop {
        match reader.follow().map_err(bad)? {
            Some(Some(_)) => {}
            Some(None) => break true,
            None => break false,
        }
    };
    let held = reader.next_seq().map_or(0, |n| n - 1);
    let io = Error::io(path.display().to_string());
    let mut file = OpenOptions::new().write(true).open(path).map_err(Error::io(path.display().to_string()))?;
    // Cut a half-written last batch (the agent died while writing it).
    file.set_len(reader.offset()).map_err(Error::io(path.display().to_string()))?;
    file.seek(SeekFrom::Start(reader.offset())).map_err(io)?;
    let writer = LogWriter::resume(BufWriter::with_capacity(1 << 20, file), reader.offset(), reader.next_seq());
    Ok((writer, held, ended))
}

pub fn run(opts: &BackupOptions) -> Result<Outcome> {
    let identity = Identity::load(&opts.certs, &opts.name)?;
    let dir = StateDir::open(&opts.state_dir)?;
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
        (None, 0, false)
    };
    dir.store(&membership)?;

    let stop_following = Arc::new(AtomicBool::new(ended));
    let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), String>>();
    if writer.is_some() {
        let _ = ready_tx.send(Ok(()));
    }
    let network = if ended {
        None
    } else {
        let net = Network {
            identity,
            primary: opts.primary,
            log: log.clone(),
            dir,
            stop: stop_following.clone(),
            ready: ready_tx,
        };
        let standing = Standing { incarnation: membership.incarnation, epoch: membership.epoch };
        let session = BackupSession::new(standing, &opts.group, &opts.name, membership.handle, held);
        Some(
            std::thread::Builder::new()
                .name("tandem-backup-net".into())
                .spawn(move || net.run(session, writer))
                .map_err(Error::io("cannot start the network thread"))?,
        )
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(Error::Setup(why)),
        Err(_) => return Err(Error::Setup("the network thread ended before the primary welcomed this backup".into())),
    }
    let outcome = replayer::replay(&ReplayOptions {
        log,
        command: opts.command.clone(),
        go_live: false,
        geometry: opts.geometry,
        stall_after: opts.stall_after,
        follow: Some(stop_following.clone()),
    });
    stop_following.store(true, Ordering::SeqCst);
    drop(network);
    outcome
}

struct Network {
    identity: Identity,
    primary: SocketAddr,
    log: PathBuf,
    dir: StateDir,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<std::result::Result<(), String>>,
}

enum SessionEnd {
    /// The primary's program ended and this backup holds all of it.
    Complete,
}

impl Network {
    fn run(self, mut session: BackupSession, mut writer: Option<Writer>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                let _ = self.ready.send(Err(format!("cannot start the network runtime: {e}")));
                return;
            }
        };
        runtime.block_on(async {
            let endpoint = match net::client(&self.identity) {
                Ok(e) => e,
                Err(e) => {
                    let _ = self.ready.send(Err(e.to_string()));
                    return;
                }
            };
            while !self.stop.load(Ordering::SeqCst) {
                match self.session(&endpoint, &mut session, &mut writer).await {
                    Ok(SessionEnd::Complete) => {
                        if let Some(w) = writer.take() {
                            if let Err(e) = w.finish(now_ns()).and_then(|f| f.get_ref().sync_all()) {
                                tracing::error!("cannot finish {}: {e}", self.log.display());
                            }
                        }
                        self.stop.store(true, Ordering::SeqCst);
                        tracing::info!(held = session.held, "the primary's program ended; this backup holds all of it");
                        return;
                    }
                    Err(NetError::Protocol(why)) if why.starts_with("refused") => {
                        tracing::error!(primary = %self.primary, "{why}");
                        let _ = self.ready.send(Err(why));
                        self.stop.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(primary = %self.primary, held = session.held, "no session: {e}; reconnecting");
                        tokio::time::sleep(RECONNECT_EVERY).await;
                    }
                }
            }
        });
    }

    async fn session(
        &self,
        endpoint: &quinn::Endpoint,
        session: &mut BackupSession,
        writer: &mut Option<Writer>,
    ) -> std::result::Result<SessionEnd, NetError> {
        let conn = net::connect(endpoint, self.primary).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, &session.hello()).await?;
        let Some(welcome) = read_frame(&mut recv).await? else {
            return Err(NetError::Protocol("the primary closed the session before WELCOME".into()));
        };
        let launch = match &welcome.body {
            Body::Welcome { launch, .. } => Some(launch.clone()),
            _ => None,
        };
        match session.receive(welcome) {
            Ok(BackupAction::Welcomed { .. }) => {}
            Ok(other) => return Err(NetError::Protocol(format!("unexpected {other:?} before WELCOME"))),
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
        if writer.is_none() {
            let launch = launch.unwrap_or_default();
            let io = |e: std::io::Error| NetError::Protocol(format!("{}: {e}", self.log.display()));
            let file = File::create(&self.log).map_err(io)?;
            let mut w = LogWriter::create(
                BufWriter::with_capacity(1 << 20, file),
                session.standing.incarnation,
                now_ns(),
                &launch,
            )
            .map_err(io)?;
            w.flush().map_err(io)?;
            *writer = Some(w);
            let _ = self.ready.send(Ok(()));
        }
        tracing::info!(primary = %self.primary, from = session.held + 1, "following the primary");
        let mut data = conn.accept_uni().await?;
        let mut ended_at = None;
        loop {
            let frame = tokio::select! {
                f = read_frame(&mut data) => f?,
                f = read_frame(&mut recv) => f?,
            };
            let Some(frame) = frame else {
                return Err(NetError::Protocol("the primary closed a stream".into()));
            };
            match session.receive(frame).map_err(|e| NetError::Protocol(e.to_string()))? {
                BackupAction::Append { first_seq, count, wall_ns, events } => {
                    let Some(w) = writer.as_mut() else { unreachable!("the log exists once welcomed") };
                    let io = |e: std::io::Error| NetError::Protocol(format!("{}: {e}", self.log.display()));
                    w.write_batch(&events, first_seq, count, wall_ns).map_err(io)?;
                    w.flush().map_err(io)?;
                    w.get_ref().get_ref().sync_data().map_err(io)?;
                    let ack = session.durable(first_seq + count as u64 - 1);
                    write_frame(&mut send, &ack).await?;
                }
                BackupAction::Confirmed { reply, .. } => write_frame(&mut send, &reply).await?,
                BackupAction::Duplicate | BackupAction::Welcomed { .. } => {}
                BackupAction::Ended { last_seq } => ended_at = Some(last_seq),
            }
            if ended_at.is_some_and(|last| session.held >= last) {
                conn.close(0u32.into(), b"complete");
                return Ok(SessionEnd::Complete);
            }
        }
    }
}
