//! Helpers for the integration tests: build tandem once, compile C fixtures, run programs under
//! tandem, read logs back.

use eventlog::logfile::{LogError, LogReader};
use eventlog::{Call, EventHeader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod http;
pub mod lan;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// target/release, with `tandem`, `libtandem.so` and the agent's example peers (in `examples/`)
/// built (once per test process).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "preload", "-p", "replicator", "--lib", "--bins", "--examples"])
            .current_dir(root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building tandem failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
        target.join("release")
    })
}

pub fn tandem() -> Command {
    Command::new(bin_dir().join("tandem"))
}

/// Compiles `tests/fixtures/<name>.c` with `flags` (cached per flag set) and returns the binary.
pub fn fixture(name: &str, flags: &[&str]) -> PathBuf {
    let out_dir = bin_dir().join("fixtures");
    std::fs::create_dir_all(&out_dir).expect("fixture dir");
    let tag: String =
        flags.iter().map(|f| f.replace(|c: char| !c.is_ascii_alphanumeric(), "")).collect::<Vec<_>>().join("-");
    let out = out_dir.join(if tag.is_empty() { name.to_string() } else { format!("{name}-{tag}") });
    let src = root().join("tests/fixtures").join(format!("{name}.c"));
    let fresh = |o: &Path| {
        let (Ok(a), Ok(b)) = (std::fs::metadata(o), std::fs::metadata(&src)) else {
            return false;
        };
        a.modified().ok() >= b.modified().ok()
    };
    if !fresh(&out) {
        // Tests of one binary run as threads of one process: the name must differ per call.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = out.with_extension(format!("tmp{}-{build}", std::process::id()));
        let o = Command::new("gcc")
            .args(["-Wall", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .args(flags)
            .output()
            .expect("run gcc (install it with scripts/test.sh)");
        assert!(o.status.success(), "gcc {name} failed:\n{}", String::from_utf8_lossy(&o.stderr));
        std::fs::rename(&tmp, &out).expect("place fixture");
    }
    out
}

/// Two directories in `dir`, made: the primary's and a backup's, whose paths differ in length (a
/// replay must not depend on where it runs).
pub fn primary_and_backup_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    let (p, b) = (dir.join("primary"), dir.join("a-backup-elsewhere"));
    for d in [&p, &b] {
        std::fs::create_dir_all(d).expect("make a test directory");
    }
    (p, b)
}

/// An event read back from a log, owning its payload.
#[derive(Clone, Debug)]
pub struct LoggedEvent {
    pub header: EventHeader,
    pub payload: Vec<u8>,
}

impl LoggedEvent {
    pub fn call(&self) -> Call {
        self.header.call().expect("known call")
    }
}

pub fn read_log(path: &Path) -> Result<Vec<LoggedEvent>, LogError> {
    let f = std::fs::File::open(path)?;
    let mut r = LogReader::open(std::io::BufReader::new(f))?;
    let mut events = Vec::new();
    while let Some(b) = r.next_batch()? {
        events.extend(b.events().map(|e| LoggedEvent { header: e.header, payload: e.payload.to_vec() }));
    }
    Ok(events)
}

/// Runs `tandem record --out LOG -- program args`.
pub fn record(log: &Path, program: &Path, args: &[&str]) -> Output {
    tandem().arg("record").arg("--out").arg(log).arg("--").arg(program).args(args).output().expect("run tandem")
}

/// `tandem record` in `dir`, with the shim pausing up to `jitter_us` before each call.
pub fn record_in(dir: &Path, log: &Path, program: &Path, args: &[&str], jitter_us: u32) -> Output {
    tandem()
        .current_dir(dir)
        .env("TANDEM_JITTER_US", jitter_us.to_string())
        .arg("record")
        .arg("--out")
        .arg(log)
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .expect("run tandem")
}

/// `tandem replay LOG [options] [-- command]` in `dir`, with jitter of its own. The program's
/// private view is kept in [`view_of`]`(dir)`.
pub fn replay_in(dir: &Path, log: &Path, options: &[&str], command: &[&str], jitter_us: u32) -> Output {
    let mut c = tandem();
    c.current_dir(dir).env("TANDEM_JITTER_US", jitter_us.to_string()).arg("replay").arg(log).args(options);
    if !options.iter().any(|o| o.starts_with("--view-dir") || *o == "--no-view") {
        c.arg("--view-dir").arg(view_of(dir));
    }
    if !command.is_empty() {
        c.arg("--").args(command);
    }
    c.output().expect("run tandem")
}

/// A recording made in a primary's directory and its replay in a backup's (see [`record_then_replay`]).
pub struct RecordedAndReplayed {
    /// Holds both directories and the log; removed when dropped.
    pub dir: tempfile::TempDir,
    /// The primary's directory, as the recording left it.
    pub primary: PathBuf,
    /// The replay's view of the data, merged: what its program left.
    pub backup: PathBuf,
    pub log: PathBuf,
}

/// Records `program` in a primary's directory under `jitters.0` and replays the log in a backup's
/// directory of another length under `jitters.1`; both must exit 0.
pub fn record_then_replay(program: &Path, args: &[&str], jitters: (u32, u32)) -> RecordedAndReplayed {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let (p, b) = primary_and_backup_dirs(dir.path());
    let log = dir.path().join("run.tlog");
    let rec = record_in(&p, &log, program, args, jitters.0);
    assert!(rec.status.success(), "record failed: {}", text(&rec.stderr));
    let rep = replay_in(&b, &log, &[], &[], jitters.1);
    assert_eq!(rep.status.code(), Some(0), "replay failed:\n{}", text(&rep.stderr));
    let backup = replayed(&b, &log);
    RecordedAndReplayed { dir, primary: p, backup, log }
}

/// Where [`replay_in`] keeps the view of a replay run in `dir`.
pub fn view_of(dir: &Path) -> PathBuf {
    dir.join("tandem-view")
}

/// The files a `tandem replay` run in `dir` left in its data directory (`log`'s first): its
/// view's upper layer over the capture it started from, merged into a directory of their own.
pub fn replayed(dir: &Path, log: &Path) -> PathBuf {
    let store = log.parent().unwrap().join("tandem-captures");
    merged_view(&view_of(dir), &store, log, &dir.join("tandem-merged"))
}

/// A backup agent's view (state directory `state`) of its data, merged into `into`.
pub fn backup_view(state: &Path, into: &Path) -> PathBuf {
    merged_view(&state.join("view"), &state.join("captures"), &state.join("log.tlog"), into)
}

/// Data directory 0 of a view as its program sees it: the capture `log` names (unpacked in
/// `store`), then the view's upper layer (a character device 0:0 there deletes the name).
pub fn merged_view(view: &Path, store: &Path, log: &Path, into: &Path) -> PathBuf {
    let f = std::fs::File::open(log).expect("open the log");
    let reader = eventlog::logfile::LogReader::open(std::io::BufReader::new(f)).expect("read the log");
    let capture = reader.launch().capture.expect("the log names a capture of its data");
    let _ = std::fs::remove_dir_all(into);
    copy_tree(&store.join(capture.name()).join("0"), into);
    copy_tree(&view.join("upper/0"), into);
    into.to_path_buf()
}

fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::create_dir_all(to).expect("make a directory");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src).unwrap();
        let ty = meta.file_type();
        if ty.is_char_device() && meta.rdev() == 0 {
            let _ = std::fs::remove_dir_all(&dst).or_else(|_| std::fs::remove_file(&dst));
        } else if ty.is_dir() {
            copy_tree(&src, &dst);
        } else if ty.is_symlink() {
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ty.is_file() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A cluster CA in `dir` and a member certificate for each of `names`.
pub fn certs(dir: &Path, names: &[&str]) {
    let ok = |o: Output| assert!(o.status.success(), "{}", text(&o.stderr));
    ok(tandem().args(["certs", "init", "--certs"]).arg(dir).output().expect("run tandem"));
    for n in names {
        ok(tandem().args(["certs", "issue", "--certs"]).arg(dir).args(["--name", n]).output().expect("run tandem"));
    }
}

/// A local TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Fails the test with a clear message if a tool the test drives is missing.
pub fn require(tool: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false);
    assert!(found, "{tool} is not installed: scripts/test.sh installs everything the tests need");
}
