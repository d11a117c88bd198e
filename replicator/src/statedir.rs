//! An agent's state directory: its identity in the group (incarnation token, epoch, resume
//! handle), checksummed and replaced atomically, and the group's event log.

use crate::error::{Error, Result};
use crate::wire::session::TakeOver;
use eventlog::ids::{IncarnationToken, Seq};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What an agent must remember across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    pub incarnation: IncarnationToken,
    pub epoch: u64,
    /// A backup's resume handle (generated once, kept for good).
    pub handle: u128,
    /// A promoted backup's start as primary: its backups of the old epoch resume within it.
    pub took_over: Option<TakeOver>,
}

/// Creates `path` (and its missing parents) for its owner alone: tandem's directories hold the
/// program's whole environment and every input. An existing directory is left as it is.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700).create(path)
}

/// Creates (or truncates) the file at `path`, readable and writable by its owner alone if it is
/// new, for what tandem writes: logs hold the program's environment and inputs. An existing
/// file keeps its mode (it may be a device, like `/dev/null`).
pub fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    std::os::unix::fs::OpenOptionsExt::mode(fs::OpenOptions::new().write(true).create(true).truncate(true), 0o600)
        .open(path)
}

/// A member's state directory when none is named: GROUP/NAME under `$TANDEM_STATE_HOME`,
/// `$XDG_STATE_HOME/tandem`, `~/.local/state/tandem`, or `/var/lib/tandem` for root. Never inside
/// the working directory, which is the program's data by default.
pub fn default_for(group: &str, name: &str) -> PathBuf {
    state_home().join(group).join(name)
}

/// Where members' state directories are by default (each GROUP/NAME below it).
pub fn state_home() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("TANDEM_STATE_HOME")
        .or_else(|| var("XDG_STATE_HOME").map(|x| x.join("tandem")))
        .or_else(|| {
            (!nix::unistd::geteuid().is_root()).then(|| var("HOME")).flatten().map(|h| h.join(".local/state/tandem"))
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/tandem"))
}

pub struct StateDir {
    pub path: PathBuf,
    /// Held for the agent's life: two agents on one directory would interleave one log.
    _lock: fs::File,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Random bytes from the kernel.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    eventlog::ids::random().map_err(Error::io("/dev/urandom"))
}

impl StateDir {
    pub fn open(path: &Path) -> Result<StateDir> {
        create_private_dir(path).map_err(Error::io(format!("cannot create the state directory {}", path.display())))?;
        let lock_path = path.join("lock");
        let lock = create_private_file(&lock_path).map_err(Error::io(lock_path.display().to_string()))?;
        lock.try_lock().map_err(|_| {
            Error::Setup(format!("another agent uses the state directory {}; give each agent its own", path.display()))
        })?;
        Ok(StateDir { path: path.to_owned(), _lock: lock })
    }

    pub fn log_path(&self) -> PathBuf {
        self.path.join("log.tlog")
    }

    /// The store of the program's data captures.
    pub fn captures_path(&self) -> PathBuf {
        self.path.join("captures")
    }

    /// Where a backup's program keeps its private view of its data.
    pub fn view_path(&self) -> PathBuf {
        self.path.join("view")
    }

    fn membership_path(&self) -> PathBuf {
        self.path.join("membership")
    }

    /// The stored membership; `None` in a new (or wiped) directory. A damaged file is an error
    /// naming it, never silently replaced.
    pub fn membership(&self) -> Result<Option<Membership>> {
        let path = self.membership_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path.display().to_string())(e)),
        };
        let bad = || Error::Setup(format!("{} is damaged; restore it or wipe the state directory", path.display()));
        let (body, crc_line) = text.rsplit_once("crc=").ok_or_else(bad)?;
        if u32::from_str_radix(crc_line.trim(), 16).ok() != Some(crc32c::crc32c(body.as_bytes())) {
            return Err(bad());
        }
        let field = |k: &str| body.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('='));
        let incarnation = IncarnationToken(unhex::<16>(field("incarnation").ok_or_else(bad)?).ok_or_else(bad)?);
        let epoch = field("epoch").and_then(|e| e.parse().ok()).ok_or_else(bad)?;
        let handle = u128::from_be_bytes(unhex::<16>(field("handle").ok_or_else(bad)?).ok_or_else(bad)?);
        let took_over = match field("took_over") {
            None => None,
            Some(v) => {
                let (e, at) = v.split_once(':').ok_or_else(bad)?;
                Some(TakeOver { from_epoch: e.parse().map_err(|_| bad())?, at: Seq(at.parse().map_err(|_| bad())?) })
            }
        };
        Ok(Some(Membership { incarnation, epoch, handle, took_over }))
    }

    /// Stores the membership durably: written beside, synced, renamed over, directory synced.
    pub fn store(&self, m: &Membership) -> Result<()> {
        let mut body = format!(
            "incarnation={}\nepoch={}\nhandle={}\n",
            hex(&m.incarnation.0),
            m.epoch,
            hex(&m.handle.to_be_bytes())
        );
        if let Some(t) = m.took_over {
            body.push_str(&format!("took_over={}:{}\n", t.from_epoch, t.at.0));
        }
        let text = format!("{body}crc={:08x}\n", crc32c::crc32c(body.as_bytes()));
        let path = self.membership_path();
        let tmp = self.path.join("membership.new");
        let io = |what: &Path| Error::io(what.display().to_string());
        let mut f = create_private_file(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.path).and_then(|d| d.sync_all()).map_err(io(&self.path))
    }
}

impl StateDir {
    /// Moves the log and the membership out of the way, kept (never replayed) under
    /// `set-aside/`, named by the epoch they belonged to and the time: a backup whose log another
    /// epoch's primary cut off catches up from the start. Returns where they went.
    pub fn set_aside(&self, epoch: u64) -> Result<PathBuf> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let to = self.path.join("set-aside").join(format!("epoch-{epoch}-{secs}"));
        create_private_dir(&to).map_err(Error::io(to.display().to_string()))?;
        for from in [self.log_path(), self.membership_path()] {
            let Some(name) = from.file_name() else { continue };
            match fs::rename(&from, to.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(from.display().to_string())(e)),
            }
        }
        fs::File::open(&self.path).and_then(|d| d.sync_all()).map_err(Error::io(self.path.display().to_string()))?;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        assert_eq!(sd.membership().unwrap(), None);
        let m = Membership {
            incarnation: IncarnationToken([0xab; 16]),
            epoch: 7,
            handle: 0x1234 << 70 | 9,
            took_over: Some(TakeOver { from_epoch: 6, at: Seq(12) }),
        };
        sd.store(&m).unwrap();
        assert_eq!(sd.membership().unwrap(), Some(m));
        let path = dir.path().join("membership");
        let text = std::fs::read_to_string(&path).unwrap().replace("epoch=7", "epoch=8");
        std::fs::write(&path, text).unwrap();
        let err = sd.membership().unwrap_err().to_string();
        assert!(err.contains("membership is damaged"), "{err}");
    }

    #[test]
    fn state_set_aside_is_kept_and_leaves_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        let m = Membership { incarnation: IncarnationToken([1; 16]), epoch: 2, handle: 5, took_over: None };
        sd.store(&m).unwrap();
        std::fs::write(sd.log_path(), b"events").unwrap();
        let kept = sd.set_aside(2).unwrap();
        assert_eq!(sd.membership().unwrap(), None);
        assert!(!sd.log_path().exists());
        assert!(kept.starts_with(dir.path().join("set-aside")) && kept.to_string_lossy().contains("epoch-2-"));
        assert_eq!(std::fs::read(kept.join(sd.log_path().file_name().unwrap())).unwrap(), b"events");
    }

    #[test]
    fn one_agent_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        let err = StateDir::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("another agent uses"), "{err}");
        drop(first);
        StateDir::open(dir.path()).unwrap();
    }
}
