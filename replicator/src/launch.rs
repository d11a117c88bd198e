//! Starting a program under the shim: find libtandem.so, check the program, give it the shared
//! region at a fixed descriptor, and give it exactly the environment it must have.
//!
//! The environment is an input like any other: programs copy it, size buffers after it, hash it.
//! A primary's launch (argv, environment) is written into its log, and a backup starts the
//! program with the same environment, string for string. `LD_PRELOAD` is padded to a fixed width
//! so the shim's location on each host does not change the strings' lengths.

use crate::elfcheck;
use crate::error::{Error, Result};
use crate::view::View;
use eventlog::logfile;
use eventlog::ring::SharedRegion;
use eventlog::{env, ids};
use nix::fcntl::{fcntl, FcntlArg};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// libtandem.so: `TANDEM_PRELOAD`, else beside the running `tandem` executable.
pub fn find_preload() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env::PRELOAD_OVERRIDE) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Setup(format!("{}={} does not name a file", env::PRELOAD_OVERRIDE, p.display())))
        };
    }
    let exe = std::env::current_exe().map_err(Error::io("cannot locate the tandem executable"))?;
    let beside = exe.with_file_name("libtandem.so");
    if beside.is_file() {
        return Ok(beside);
    }
    Err(Error::Setup(format!(
        "libtandem.so not found beside {} (build it with `cargo build --release`, or set {})",
        exe.display(),
        env::PRELOAD_OVERRIDE
    )))
}

/// The program's path, searching PATH for a bare name like a shell would.
pub fn resolve_program(name: &OsStr) -> Result<PathBuf> {
    let p = Path::new(name);
    if name.as_bytes().contains(&b'/') {
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(p))
        .find(|c| c.is_file())
        .ok_or_else(|| Error::NotFound(name.to_string_lossy().into_owned()))
}

/// The shim's path padded with leading `/`s to [`env::PRELOAD_WIDTH`] bytes.
fn padded_preload(preload: &Path) -> Result<OsString> {
    let p = preload.canonicalize().map_err(Error::io(preload.display().to_string()))?;
    let bytes = p.as_os_str().as_bytes();
    if bytes.len() > env::PRELOAD_WIDTH {
        return Err(Error::Setup(format!("{}: path longer than {} bytes", p.display(), env::PRELOAD_WIDTH)));
    }
    let mut v = vec![b'/'; env::PRELOAD_WIDTH - bytes.len()];
    v.extend_from_slice(bytes);
    Ok(OsString::from_vec(v))
}

/// How a program runs under the shim.
pub struct Launch {
    /// What is executed.
    pub program: PathBuf,
    /// argv, argv[0] included, as the program sees it.
    pub argv: Vec<OsString>,
    /// `NAME=value` entries, exactly the program's environment.
    pub env: Vec<OsString>,
    /// The shim, as found on this host.
    shim: PathBuf,
    /// The directories replicated with the program (absolute), and their capture once taken.
    pub data: Vec<PathBuf>,
    pub capture: Option<logfile::CaptureRef>,
    /// A backup's: the primary's working directory.
    pub cwd: Option<PathBuf>,
    /// The executable's and its libraries' identities and paths (a primary's, for its log).
    pub binaries: Vec<(String, PathBuf)>,
    /// The program's standard input is a pipe its agent owns (see `stdin.rs`).
    pub stdin: bool,
}

fn entry(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut e = OsString::from(name);
    e.push("=");
    e.push(value);
    e
}

impl Launch {
    /// A program started fresh (recording): `argv` as given, this process's environment minus
    /// tandem's own variables and `LD_PRELOAD`, then the shim's variables. A program whose
    /// threads synchronise where the shim cannot see is refused unless `allow_unseen_sync`.
    pub fn new(argv: &[OsString], mode: &str, allow_unseen_sync: bool) -> Result<Launch> {
        let shim = find_preload()?;
        let preload = padded_preload(&shim)?;
        let program = resolve_program(&argv[0])?;
        elfcheck::check(&program)?;
        if let Some(why) = elfcheck::unseen_sync(&program)? {
            if !allow_unseen_sync {
                return Err(Error::Refused {
                    program: program.clone(),
                    why: format!("{why} (--allow-unseen-sync records it anyway; its replays may stall or diverge)"),
                });
            }
            crate::notes::line(&format!(
                "tandem: warning: {} {why}; recording it anyway (--allow-unseen-sync): its replays may stall or diverge",
                program.display()
            ));
        }
        let mut their_preload = None;
        let mut env: Vec<OsString> = std::env::vars_os()
            .filter(|(k, v)| {
                if k == "LD_PRELOAD" {
                    their_preload = Some(v.clone()).filter(|v| !v.is_empty());
                    return false;
                }
                !k.as_bytes().starts_with(b"TANDEM_")
            })
            .map(|(k, v)| {
                let mut e = k;
                e.push("=");
                e.push(v);
                e
            })
            .collect();
        let mut ld = preload;
        if let Some(theirs) = their_preload {
            ld.push(" ");
            ld.push(theirs);
        }
        env.push(entry("LD_PRELOAD", ld));
        env.push(entry(env::SHM_FD, env::SHM_FD_NUMBER.to_string()));
        env.push(entry(env::MODE, mode));
        env.push(entry(env::LPID, ids::FIRST_PID.to_string()));
        env.push(entry(env::LPID_OWNER, env::OWNER_NONE));
        env.sort();
        let binaries = crate::binaries::of_launch(&program, &shim)?;
        let stdin = crate::stdin::worth_owning();
        Ok(Launch {
            program,
            argv: argv.to_vec(),
            env,
            shim,
            data: Vec::new(),
            capture: None,
            cwd: None,
            binaries,
            stdin,
        })
    }

    /// The primary's launch, for a backup: its environment with the mode changed and this host's
    /// shim in `LD_PRELOAD`; its argv unless `argv` overrides it.
    pub fn replaying(recorded: &logfile::Launch, argv: Option<&[OsString]>, mode: &str) -> Result<Launch> {
        let shim = find_preload()?;
        let preload = padded_preload(&shim)?;
        let argv = match argv {
            Some(a) => a.to_vec(),
            None => recorded.argv.iter().map(|a| OsString::from_vec(a.clone())).collect(),
        };
        if argv.is_empty() {
            return Err(Error::Setup("the log records no program to run; name it after --".into()));
        }
        let program = resolve_program(&argv[0])?;
        elfcheck::check(&program)?;
        let env = recorded
            .env
            .iter()
            .map(|e| {
                let e = OsString::from_vec(e.clone());
                let b = e.as_bytes();
                if let Some(v) = b.strip_prefix(b"LD_PRELOAD=") {
                    let mut ours = entry("LD_PRELOAD", &preload);
                    ours.push(OsStr::from_bytes(v.get(env::PRELOAD_WIDTH..).unwrap_or_default()));
                    ours
                } else if b.starts_with(format!("{}=", env::MODE).as_bytes()) {
                    entry(env::MODE, mode)
                } else {
                    e
                }
            })
            .collect();
        let path = |b: &Vec<u8>| PathBuf::from(OsString::from_vec(b.clone()));
        Ok(Launch {
            program,
            argv,
            env,
            shim,
            data: recorded.data.iter().map(path).collect(),
            capture: recorded.capture,
            cwd: Some(path(&recorded.cwd)).filter(|c| !c.as_os_str().is_empty()),
            binaries: Vec::new(),
            stdin: recorded.stdin,
        })
    }

    /// What the log records of this launch.
    pub fn record(&self) -> logfile::Launch {
        let cwd = std::env::current_dir().map(|d| d.into_os_string().into_vec()).unwrap_or_default();
        logfile::Launch {
            argv: self.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: self.env.iter().map(|e| e.as_bytes().to_vec()).collect(),
            cwd,
            data: self.data.iter().map(|d| d.as_os_str().as_bytes().to_vec()).collect(),
            capture: self.capture,
            binaries: self
                .binaries
                .iter()
                .map(|(id, p)| (id.clone().into_bytes(), p.as_os_str().as_bytes().to_vec()))
                .collect(),
            stdin: self.stdin,
        }
    }

    /// Starts the program with `region` at descriptor [`env::SHM_FD_NUMBER`], in `view` when
    /// given (a backup's), else here; `stdin`, when given, is its standard input.
    ///
    /// Address-space randomisation is turned off for this process and inherited by the program,
    /// so a backup running the same program lays memory out the same way. The program runs under
    /// a keeper (`crate::lifetime`), the child returned, which ends once the program's whole
    /// tree has and takes the tree down with it if the agent dies. The agent becomes a subreaper
    /// too: a tree whose keeper was killed is its to end.
    pub fn spawn(&self, region: &SharedRegion, view: Option<&View>, stdin: Option<OwnedFd>) -> Result<Child> {
        use nix::sys::personality::{self, Persona};
        let persona =
            personality::get().map_err(|e| Error::Setup(format!("cannot read the process personality: {e}")))?;
        personality::set(persona | Persona::ADDR_NO_RANDOMIZE)
            .map_err(|e| Error::Setup(format!("cannot turn off address-space randomisation: {e}")))?;
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::Setup(format!("cannot become the subreaper of the program: {e}")))?;
        let fd = fcntl(region.as_fd(), FcntlArg::F_DUPFD(env::SHM_FD_NUMBER)).map_err(|e| {
            Error::Setup(format!("cannot place the event region at descriptor {}: {e}", env::SHM_FD_NUMBER))
        })?;
        if fd != env::SHM_FD_NUMBER {
            let _ = nix::unistd::close(fd);
            return Err(Error::Setup(format!(
                "descriptor {} is already in use in tandem itself; cannot hand the event region over",
                env::SHM_FD_NUMBER
            )));
        }
        let mut cmd = match view {
            Some(view) => {
                let argv: Vec<&OsStr> = self.argv.iter().map(OsString::as_os_str).collect();
                let env: Vec<&OsStr> = self.env.iter().map(OsString::as_os_str).collect();
                let cwd = self.cwd.as_deref().map_or(&[][..], |c| c.as_os_str().as_bytes());
                let cmd = view.command(&self.program, &argv, &env, cwd, &self.shim);
                cmd.inspect_err(|_| {
                    let _ = nix::unistd::close(fd);
                })?
            }
            None => {
                // The keeper runs with the program's environment (not in its arguments, which
                // anyone may read) and gives it on as it is; it must not load the shim itself.
                let exe = std::env::current_exe().map_err(Error::io("cannot locate the tandem executable"));
                let exe = exe.inspect_err(|_| {
                    let _ = nix::unistd::close(fd);
                })?;
                let mut cmd = Command::new(exe);
                cmd.arg("keep").arg("--agent").arg(std::process::id().to_string()).env_clear();
                for e in &self.env {
                    let b = e.as_bytes();
                    if let Some(eq) = b.iter().position(|&c| c == b'=') {
                        let name = OsStr::from_bytes(&b[..eq]);
                        let name =
                            if name == "LD_PRELOAD" { OsStr::new(crate::lifetime::KEEPER_PRELOAD) } else { name };
                        cmd.env(name, OsStr::from_bytes(&b[eq + 1..]));
                    }
                }
                cmd.arg("--").arg(&self.program).args(&self.argv);
                cmd
            }
        };
        if let Some(fd) = stdin {
            cmd.stdin(fd);
        }
        let child = cmd.spawn().map_err(Error::io(format!("cannot start {}", self.program.display())));
        if child.is_ok() {
            crate::notes::launched();
        }
        // The program holds its own copy now; ours must not leak into anything else we start.
        let _ = nix::unistd::close(fd);
        child
    }
}

/// Test knobs the agent passes to the shim through the region: `TANDEM_JITTER_US`, `TANDEM_TRACE`.
pub fn apply_knobs(region: &SharedRegion) {
    let h = region.region();
    let num = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    h.header().jitter_us.store(num(env::JITTER_US), std::sync::atomic::Ordering::Relaxed);
    h.header().trace.store(num(env::TRACE), std::sync::atomic::Ordering::Relaxed);
}
