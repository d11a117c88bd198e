//! The program's data: the directories whose contents at its start are replicated with it (its
//! working directory unless named with `--data`). A primary captures them before the program
//! starts into one zstd-compressed tar, stored once under its SHA-256 in a store (a state
//! directory's `captures/`, or `tandem-captures/` beside a recorded log); the log names the
//! digest, and every backup holds the same capture before it replays the first event.
//!
//! Entries are walked in name order and keep their mode, owner and modification time (to the
//! second, as tar holds it), so the same data makes the same capture. The store and everything in it is private to its owner (0700).

use crate::error::{Error, Result};
use eventlog::logfile::CaptureRef;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Default bound on the bytes of files captured (`--capture-limit`).
pub const DEFAULT_LIMIT: u64 = 256 << 20;

/// What to capture, as the user asked.
#[derive(Clone, Debug)]
pub struct DataChoice {
    /// `--data` directories; none means the working directory.
    pub dirs: Vec<PathBuf>,
    /// `--no-capture`: replicate no data (a backup runs in its own directory).
    pub none: bool,
    /// Most bytes of file contents captured.
    pub limit: u64,
}

/// What one capture holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    /// Bytes of file contents.
    pub bytes: u64,
}

impl DataChoice {
    /// The directories to capture, absolute and canonical. The working directory is refused when
    /// it is `/` or a home directory and was not named explicitly: capturing it is rarely meant.
    pub fn resolve(&self) -> Result<Vec<PathBuf>> {
        if self.none {
            return Ok(Vec::new());
        }
        if self.dirs.is_empty() {
            let cwd = std::env::current_dir().map_err(Error::io("cannot read the working directory"))?;
            let home = std::env::var_os("HOME").map(PathBuf::from).and_then(|h| h.canonicalize().ok());
            let cwd = cwd.canonicalize().unwrap_or(cwd);
            if cwd == Path::new("/") || home.as_deref() == Some(&cwd) {
                return Err(Error::Setup(format!(
                    "the working directory {} is not captured unless named: pass --data DIR for each directory the program needs (--data {} to capture it all), or --no-capture",
                    cwd.display(),
                    cwd.display()
                )));
            }
            return Ok(vec![cwd]);
        }
        let mut out: Vec<PathBuf> = Vec::new();
        for d in &self.dirs {
            let c = d.canonicalize().map_err(Error::io(format!("--data {}", d.display())))?;
            if !c.is_dir() {
                return Err(Error::Setup(format!("--data {}: not a directory", d.display())));
            }
            if let Some(other) = out.iter().find(|o| c.starts_with(o) || o.starts_with(&c)) {
                return Err(Error::Setup(format!(
                    "--data {} and {} overlap: name each directory once",
                    c.display(),
                    other.display()
                )));
            }
            out.push(c);
        }
        Ok(out)
    }
}

/// A content-addressed store of captures.
pub struct Store {
    dir: PathBuf,
}

/// Writes through to `out` and hashes what passes.
struct Hashing<W> {
    out: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(Error::io(format!("cannot create {}", path.display())))
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        private_dir(dir)?;
        Ok(Store { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a capture is kept.
    pub fn path(&self, c: &CaptureRef) -> PathBuf {
        self.dir.join(format!("{}.tar.zst", c.name()))
    }

    /// Whether the store holds `c` whole (its size; its digest was checked when it came in).
    pub fn holds(&self, c: &CaptureRef) -> bool {
        fs::metadata(self.path(c)).is_ok_and(|m| m.len() == c.bytes)
    }

    /// A new file in the store for a capture on its way in.
    fn incoming(&self) -> Result<(PathBuf, fs::File)> {
        let tmp = self.dir.join(format!(
            "incoming-{}-{:x}",
            std::process::id(),
            u64::from_be_bytes(crate::statedir::random()?)
        ));
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::io(format!("cannot create {}", tmp.display())))?;
        Ok((tmp, f))
    }

    /// Files it in under its digest (once: the same capture is stored once).
    fn settle(&self, tmp: &Path, c: &CaptureRef) -> Result<()> {
        let to = self.path(c);
        if self.holds(c) {
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
        fs::rename(tmp, &to).map_err(Error::io(format!("cannot store {}", to.display())))
    }

    /// Captures `dirs` (entry `i/` of the archive holds `dirs[i]`), leaving out `skip` (tandem's
    /// own files). Fails, naming the directories, when their files hold more than `limit` bytes.
    pub fn take(&self, dirs: &[PathBuf], skip: &[PathBuf], limit: u64) -> Result<(CaptureRef, Summary)> {
        let (tmp, file) = self.incoming()?;
        let result = self.write_archive(file, dirs, skip, limit);
        match result {
            Ok((c, summary)) => {
                self.settle(&tmp, &c)?;
                Ok((c, summary))
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_archive(
        &self,
        file: fs::File,
        dirs: &[PathBuf],
        skip: &[PathBuf],
        limit: u64,
    ) -> Result<(CaptureRef, Summary)> {
        let io = |what: &Path| Error::io(format!("cannot capture {}", what.display()));
        let out = Hashing { out: io::BufWriter::new(file), hash: Sha256::new(), bytes: 0 };
        let zstd = zstd::Encoder::new(out, 3).map_err(io(&self.dir))?;
        let mut tar = tar::Builder::new(zstd);
        tar.follow_symlinks(false);
        let mut summary = Summary::default();
        for (i, dir) in dirs.iter().enumerate() {
            let walk = walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name().into_iter();
            for entry in walk.filter_entry(|e| !skip.iter().any(|s| e.path() == s)) {
                let entry = entry.map_err(|e| Error::Setup(format!("cannot capture {}: {e}", dir.display())))?;
                let ty = entry.file_type();
                if !(ty.is_dir() || ty.is_file() || ty.is_symlink()) {
                    // Sockets, pipes and devices are made by the program or the system, not data.
                    continue;
                }
                let rel = entry.path().strip_prefix(dir).unwrap_or(Path::new(""));
                let name = Path::new(&i.to_string()).join(rel);
                if ty.is_file() {
                    summary.files += 1;
                    summary.bytes += entry.metadata().map_err(|e| io(entry.path())(e.into()))?.len();
                    if summary.bytes > limit {
                        return Err(Error::Setup(format!(
                            "the data to capture ({}) holds more than {} of files: name the directories the program needs with --data, raise --capture-limit, or pass --no-capture",
                            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
                            human(limit)
                        )));
                    }
                }
                tar.append_path_with_name(entry.path(), &name).map_err(io(entry.path()))?;
            }
        }
        let zstd = tar.into_inner().map_err(io(&self.dir))?;
        let mut out = zstd.finish().map_err(io(&self.dir))?;
        out.flush().map_err(io(&self.dir))?;
        out.out.get_ref().sync_all().map_err(io(&self.dir))?;
        let c = CaptureRef { digest: out.hash.finalize().into(), bytes: out.bytes };
        Ok((c, summary))
    }

    /// Takes `c` in from `input`, checking its size and digest before it is filed.
    pub fn receive(&self, c: &CaptureRef, mut input: impl Read) -> Result<()> {
        let mut incoming = self.incoming_capture(c)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match input.read(&mut buf) {
                Ok(0) => return incoming.finish(),
                Ok(n) => incoming.push(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("cannot receive the capture {}", c.name()))(e)),
            }
        }
    }

    /// A capture arriving piece by piece (from a primary's stream).
    pub fn incoming_capture(&self, c: &CaptureRef) -> Result<Incoming<'_>> {
        let (tmp, file) = self.incoming()?;
        Ok(Incoming {
            store: self,
            c: *c,
            tmp,
            out: Hashing { out: io::BufWriter::new(file), hash: Sha256::new(), bytes: 0 },
        })
    }

    /// The capture unpacked (once) into a directory whose entry `i` is data directory `i` as it
    /// was captured. It is the read-only lower layer of a backup's view: never written.
    pub fn unpacked(&self, c: &CaptureRef) -> Result<PathBuf> {
        let root = self.dir.join(c.name());
        if root.is_dir() {
            return Ok(root);
        }
        if !self.holds(c) {
            return Err(Error::Setup(format!(
                "{} does not hold the capture {} of the program's data that the log names",
                self.dir.display(),
                c.name()
            )));
        }
        let tmp = self.dir.join(format!("unpacking-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        private_dir(&tmp)?;
        let path = self.path(c);
        let file = fs::File::open(&path).map_err(Error::io(path.display().to_string()))?;
        let decoder = zstd::Decoder::new(file).map_err(Error::io(path.display().to_string()))?;
        let mut archive = tar::Archive::new(decoder);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
        archive.set_overwrite(false);
        archive.unpack(&tmp).map_err(Error::io(format!("cannot unpack {}", path.display())))?;
        fs::rename(&tmp, &root).map_err(Error::io(format!("cannot place {}", root.display())))?;
        // The store stays private even where a captured directory was not.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(Error::io(root.display().to_string()))?;
        Ok(root)
    }
}

/// Captures what `choice` names into the store at `store` and names it in `launch`. tandem's own
/// files (`own`: a state directory, a log) are left out, with a warning when they lie inside the
/// data: the primary's program sees them there, a backup's does not.
pub fn take_for(launch: &mut crate::launch::Launch, choice: &DataChoice, store: &Path, own: &[&Path]) -> Result<()> {
    let dirs = choice.resolve()?;
    if dirs.is_empty() {
        return Ok(());
    }
    let store = Store::open(store)?;
    let mut skip = vec![store.dir().canonicalize().unwrap_or_else(|_| store.dir().to_owned())];
    for p in own {
        if let Some(d) = inside(p, &dirs) {
            tracing::warn!(
                "{} lies inside the data directory {}: it is not captured, and only the primary's program sees it there",
                p.display(),
                d.display()
            );
        }
        skip.push(p.canonicalize().unwrap_or_else(|_| p.to_path_buf()));
    }
    let started = std::time::Instant::now();
    let (c, summary) = store.take(&dirs, &skip, choice.limit)?;
    tracing::info!(
        capture = %c.name(),
        files = summary.files,
        bytes = %human(summary.bytes),
        stored = %human(c.bytes),
        took_ms = started.elapsed().as_millis() as u64,
        "captured the program's data: {}",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    launch.data = dirs;
    launch.capture = Some(c);
    Ok(())
}

/// A capture on its way into a store: removed unless it arrives whole and intact.
pub struct Incoming<'a> {
    store: &'a Store,
    c: CaptureRef,
    tmp: PathBuf,
    out: Hashing<io::BufWriter<fs::File>>,
}

impl Incoming<'_> {
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if self.out.bytes + bytes.len() as u64 > self.c.bytes {
            return Err(Error::Setup(format!(
                "the capture {} came with more than its {} bytes",
                self.c.name(),
                self.c.bytes
            )));
        }
        self.out.write_all(bytes).map_err(Error::io(format!("cannot store the capture {}", self.c.name())))
    }

    /// Checks and files it.
    pub fn finish(mut self) -> Result<()> {
        let name = self.c.name();
        if self.out.bytes != self.c.bytes {
            return Err(Error::Setup(format!(
                "the capture {name} came with {} bytes, not {}",
                self.out.bytes, self.c.bytes
            )));
        }
        if <[u8; 32]>::from(self.out.hash.clone().finalize()) != self.c.digest {
            return Err(Error::Setup(format!("the capture {name} came damaged (its digest differs)")));
        }
        self.out.flush().map_err(Error::io(format!("cannot store the capture {name}")))?;
        self.out.out.get_ref().sync_all().map_err(Error::io(format!("cannot store the capture {name}")))?;
        self.store.settle(&self.tmp, &self.c)?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// `tandem-captures/` beside a recorded log.
pub fn beside_log(log: &Path) -> PathBuf {
    let dir = log.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join("tandem-captures")
}

/// A size as people read it.
pub fn human(bytes: u64) -> String {
    format!("{:.1}", byte_unit::Byte::from_u64(bytes).get_appropriate_unit(byte_unit::UnitType::Binary))
}

/// Whether `path` (of tandem's own) lies inside one of `dirs`: its files would then differ
/// between a primary's view and a backup's.
pub fn inside<'a>(path: &Path, dirs: &'a [PathBuf]) -> Option<&'a PathBuf> {
    let p = path.canonicalize().ok().or_else(|| {
        let parent = path.parent()?.canonicalize().ok()?;
        Some(parent.join(path.file_name()?))
    })?;
    dirs.iter().find(|d| p.starts_with(d))
}

/// What a directory shows of itself in `stat`, apart from where it lives.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: (i64, i64),
    mtime: (i64, i64),
}

impl Attrs {
    pub fn of(path: &Path) -> Result<Attrs> {
        let m = fs::metadata(path).map_err(Error::io(path.display().to_string()))?;
        Ok(Attrs {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            atime: (m.atime(), m.atime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }

    /// Gives `path` these attributes (its owner only where this process may).
    pub fn apply(&self, path: &Path) -> Result<()> {
        use nix::sys::time::TimeSpec;
        let failed = |e: nix::errno::Errno| Error::io(path.display().to_string())(e.into());
        fs::set_permissions(path, fs::Permissions::from_mode(self.mode))
            .map_err(Error::io(path.display().to_string()))?;
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(path, Some(self.uid.into()), Some(self.gid.into())).map_err(failed)?;
        }
        let ts = |(s, ns): (i64, i64)| TimeSpec::new(s, ns);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &ts(self.atime),
            &ts(self.mtime),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("a.txt"), b"alpha").unwrap();
        fs::write(root.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        fs::write(root.join("skip-me"), b"tandem's own").unwrap();
    }

    #[test]
    fn the_same_data_makes_the_same_capture_which_unpacks_to_the_same_files() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        tree(&data);
        let store = Store::open(&t.path().join("store")).unwrap();
        let skip = [data.join("skip-me")];
        let (a, summary) = store.take(std::slice::from_ref(&data), &skip, DEFAULT_LIMIT).unwrap();
        let (b, _) = store.take(std::slice::from_ref(&data), &skip, DEFAULT_LIMIT).unwrap();
        assert_eq!(a, b);
        assert_eq!(summary, Summary { files: 2, bytes: 100_005 });
        assert!(store.holds(&a));
        let root = store.unpacked(&a).unwrap();
        assert_eq!(fs::read(root.join("0/a.txt")).unwrap(), b"alpha");
        assert_eq!(fs::read(root.join("0/sub/b.bin")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(fs::read_link(root.join("0/link")).unwrap(), Path::new("a.txt"));
        assert!(root.join("0/sub/deeper").is_dir());
        assert!(!root.join("0/skip-me").exists());
        // Whole seconds: what a tar header holds.
        let mtime = |p: &Path| fs::metadata(p).unwrap().mtime();
        assert_eq!(mtime(&root.join("0/a.txt")), mtime(&data.join("a.txt")));
        assert_eq!(fs::metadata(store.dir()).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_capture_over_the_limit_is_refused_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        tree(&data);
        let store = Store::open(&t.path().join("store")).unwrap();
        let e = store.take(std::slice::from_ref(&data), &[], 50_000).unwrap_err().to_string();
        assert!(e.contains("more than 48.8 KiB") && e.contains("--capture-limit"), "{e}");
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_received_capture_is_checked_before_it_is_stored() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        tree(&data);
        let from = Store::open(&t.path().join("from")).unwrap();
        let (c, _) = from.take(std::slice::from_ref(&data), &[], DEFAULT_LIMIT).unwrap();
        let bytes = fs::read(from.path(&c)).unwrap();
        let to = Store::open(&t.path().join("to")).unwrap();
        let mut damaged = bytes.clone();
        damaged[10] ^= 1;
        let e = to.receive(&c, &damaged[..]).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        let e = to.receive(&c, &bytes[..bytes.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("bytes, not"), "{e}");
        assert!(!to.holds(&c));
        to.receive(&c, &bytes[..]).unwrap();
        assert!(to.holds(&c));
        assert_eq!(fs::read_dir(to.dir()).unwrap().count(), 1);
    }
}
