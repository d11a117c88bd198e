//! Starting a program under the shim: find libtandem.so, check the program, give it the shared
//! region at a fixed descriptor, and set the environment the shim reads.

use crate::elfcheck;
use crate::error::{Error, Result};
use eventlog::env;
use eventlog::ring::SharedRegion;
use nix::fcntl::{fcntl, FcntlArg};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// libtandem.so: `TANDEM_PRELOAD`, else beside the running `tandem` executable.
pub fn find_preload() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env::PRELOAD_OVERRIDE) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Setup(format!(
                "{}={} does not name a file",
                env::PRELOAD_OVERRIDE,
                p.display()
            )))
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
    if p.components().count() > 1 || name.to_string_lossy().contains('/') {
        return Ok(p.to_path_buf());
    }
    let path =
        std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(p))
        .find(|c| c.is_file())
        .ok_or_else(|| Error::NotFound(name.to_string_lossy().into_owned()))
}

/// What the program runs as under the shim.
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub preload: PathBuf,
    pub mode: &'static str,
}

impl Launch {
    /// Resolves and checks the program; fails with a clear refusal if the shim cannot see it.
    pub fn new(program: &OsStr, args: &[OsString], mode: &'static str) -> Result<Launch> {
        let preload = find_preload()?;
        let program = resolve_program(program)?;
        elfcheck::check(&program)?;
        Ok(Launch {
            program,
            args: args.to_vec(),
            preload,
            mode,
        })
    }

    /// Starts the program with `region` at descriptor [`env::SHM_FD_NUMBER`].
    ///
    /// Address-space randomisation is turned off for this process and inherited by the program,
    /// so a backup running the same program lays memory out the same way. The agent becomes the
    /// subreaper of the program's process tree, so it can wait for every descendant.
    pub fn spawn(&self, region: &SharedRegion) -> Result<Child> {
        use nix::sys::personality::{self, Persona};
        let persona = personality::get()
            .map_err(|e| Error::Setup(format!("cannot read the process personality: {e}")))?;
        personality::set(persona | Persona::ADDR_NO_RANDOMIZE).map_err(|e| {
            Error::Setup(format!("cannot turn off address-space randomisation: {e}"))
        })?;
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
            Error::Setup(format!("cannot become the subreaper of the program: {e}"))
        })?;
        let fd = fcntl(region.as_fd(), FcntlArg::F_DUPFD(env::SHM_FD_NUMBER)).map_err(|e| {
            Error::Setup(format!(
                "cannot place the event region at descriptor {}: {e}",
                env::SHM_FD_NUMBER
            ))
        })?;
        if fd != env::SHM_FD_NUMBER {
            return Err(Error::Setup(format!(
                "descriptor {} is already in use in tandem itself; cannot hand the event region over",
                env::SHM_FD_NUMBER
            )));
        }
        let mut preload = self.preload.clone().into_os_string();
        if let Some(theirs) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
            preload.push(" ");
            preload.push(theirs);
        }
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("LD_PRELOAD", preload)
            .env(env::SHM_FD, env::SHM_FD_NUMBER.to_string())
            .env(env::MODE, self.mode)
            .env(env::LPID, eventlog::ids::FIRST_PID.to_string())
            .env(env::LPID_OWNER, env::OWNER_NONE)
            .spawn()
            .map_err(Error::io(format!(
                "cannot start {}",
                self.program.display()
            )));
        // The program holds its own copy now; ours must not leak into anything else we start.
        let _ = nix::unistd::close(fd);
        child
    }
}
