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

/// `tandem replay LOG [options] [-- command]` in `dir`, with jitter of its own.
pub fn replay_in(dir: &Path, log: &Path, options: &[&str], command: &[&str], jitter_us: u32) -> Output {
    let mut c = tandem();
    c.current_dir(dir).env("TANDEM_JITTER_US", jitter_us.to_string()).arg("replay").arg(log).args(options);
    if !command.is_empty() {
        c.arg("--").args(command);
    }
    c.output().expect("run tandem")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A cluster CA in `dir` and a member certificate for each of `names`.
pub fn certs(dir: &Path, names: &[&str]) {
    let ok = |o: Output| assert!(o.status.success(), "{}", text(&o.stderr));
    ok(tandem().args(["certs", "init", "--dir"]).arg(dir).output().expect("run tandem"));
    for n in names {
        ok(tandem().args(["certs", "issue", "--dir"]).arg(dir).args(["--name", n]).output().expect("run tandem"));
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
