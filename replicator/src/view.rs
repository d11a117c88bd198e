//! A backup's private file view. Its program runs in a mount namespace of its own where:
//!
//! - each data directory appears at the primary's path as an overlay: the capture below, an
//!   upper layer in the view's directory above, so the program starts from exactly the primary's
//!   files and whatever it writes there stays in the view;
//! - `/tmp` and `/var/tmp` are private: an overlay of an empty directory, so temporary files never
//!   meet the host's (a backup beside its primary makes the primary's temporary names without
//!   touching its files). The shim, and the directory of the program's executable (with what the
//!   program runs from beside it), are bound in when they live there.
//!
//! The view's directory holds `upper/` and `work/` (emptied whenever a replay starts from the
//! beginning, so leftovers of an earlier run are never seen) and the plan the namespace is built
//! from. The agent starts `tandem enter-view PLAN`, which builds the namespace and starts the
//! program there, as its keeper (see `crate::lifetime`).

use crate::capture::Attrs;
use crate::error::{Error, Result};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directories every view makes private.
const PRIVATE_DIRS: [&str; 2] = ["/tmp", "/var/tmp"];

/// One overlay of the view.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Layer {
    target: Vec<u8>,
    lower: Vec<u8>,
    upper: Vec<u8>,
    work: Vec<u8>,
}

/// What `tandem enter-view` builds and runs. Paths are bytes: they need not be UTF-8.
#[derive(Serialize, Deserialize, Debug)]
pub struct Plan {
    /// The private directories, mounted first.
    private: Vec<Layer>,
    /// The data directories (which may lie inside a private one).
    data: Vec<Layer>,
    /// Host files and directories made visible again inside the private directories.
    binds: Vec<Vec<u8>>,
    /// Directories made inside the private ones above data directories, with the host's
    /// attributes.
    ancestors: Vec<(Vec<u8>, Attrs)>,
    cwd: Vec<u8>,
    program: Vec<u8>,
    argv: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    /// The agent's pid: its program's tree dies with it.
    #[serde(default)]
    agent: i32,
}

/// A view ready to run a program in.
pub struct View {
    root: PathBuf,
    private: Vec<Layer>,
    data: Vec<Layer>,
    ancestors: Vec<(Vec<u8>, Attrs)>,
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

impl View {
    /// The view in `root` over the capture unpacked at `capture` (entry `i` for `data[i]`), reset
    /// to the capture: upper layers from an earlier run are removed.
    pub fn reset(root: &Path, capture: &Path, data: &[Vec<u8>]) -> Result<View> {
        for d in ["upper", "work"] {
            let p = root.join(d);
            match fs::remove_dir_all(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("cannot reset the view {}", p.display()))(e)),
            }
        }
        let empty = root.join("empty");
        for d in [root.join("upper"), root.join("work"), empty.clone()] {
            fs::DirBuilder::new()
                .recursive(true)
                .create(&d)
                .map_err(Error::io(format!("cannot create {}", d.display())))?;
        }
        Attrs::of(root)?.apply(&empty)?;
        let layer = |name: String, target: &Path, lower: PathBuf| -> Result<Layer> {
            let (upper, work) = (root.join("upper").join(&name), root.join("work").join(&name));
            for d in [&upper, &work] {
                fs::create_dir(d).map_err(Error::io(format!("cannot create {}", d.display())))?;
            }
            // An overlay's root shows its upper layer's owner, mode and times.
            Attrs::of(if lower == empty { target } else { &lower })?.apply(&upper)?;
            Ok(Layer { target: bytes(target), lower: bytes(&lower), upper: bytes(&upper), work: bytes(&work) })
        };
        let mut private = Vec::new();
        for (i, dir) in PRIVATE_DIRS.iter().enumerate() {
            let dir = Path::new(dir);
            let covered = data.iter().any(|d| dir.starts_with(path(d)));
            if dir.is_dir() && !covered {
                private.push(layer(format!("private{i}"), dir, empty.clone())?);
            }
        }
        let data = data
            .iter()
            .enumerate()
            .map(|(i, d)| layer(i.to_string(), path(d), capture.join(i.to_string())))
            .collect::<Result<Vec<_>>>()?;
        // Directories above the data inside a private directory are made again there; they show
        // what the host's show (a program listing `..` sees the same entry).
        let mut ancestors = Vec::new();
        for l in &data {
            for a in path(&l.target).ancestors().skip(1) {
                let inside = private.iter().any(|p| a.starts_with(path(&p.target)) && a != path(&p.target));
                if inside && !ancestors.iter().any(|(b, _)| b == &bytes(a)) {
                    if let Ok(attrs) = Attrs::of(a) {
                        ancestors.push((bytes(a), attrs));
                    }
                }
            }
        }
        Ok(View { root: root.to_owned(), private, data, ancestors })
    }

    /// Where the program's writes to data directory `i` are kept.
    pub fn upper(&self, i: usize) -> PathBuf {
        self.root.join("upper").join(i.to_string())
    }

    /// The command that runs `program` in the view: `tandem enter-view`, which replaces itself
    /// with the program.
    pub fn command(&self, program: &Path, argv: &[&OsStr], env: &[&OsStr], cwd: &[u8], shim: &Path) -> Result<Command> {
        let private: Vec<&Path> = PRIVATE_DIRS.iter().map(Path::new).collect();
        let beside = program.canonicalize().ok().and_then(|p| p.parent().map(Path::to_path_buf));
        let binds = [Some(shim.to_path_buf()), beside]
            .iter()
            .filter_map(|p| p.as_ref()?.canonicalize().ok())
            .filter(|p| private.iter().any(|d| p.starts_with(d)))
            .map(|p| bytes(&p))
            .collect();
        let plan = Plan {
            private: self.private.clone(),
            data: self.data.clone(),
            binds,
            ancestors: self.ancestors.clone(),
            cwd: cwd.to_vec(),
            program: bytes(program),
            argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: env.iter().map(|e| e.as_bytes().to_vec()).collect(),
            agent: std::process::id() as i32,
        };
        let plan_path = self.root.join("plan.json");
        let text = serde_json::to_vec(&plan).map_err(|e| Error::Setup(format!("cannot write the view's plan: {e}")))?;
        fs::write(&plan_path, text).map_err(Error::io(format!("cannot write {}", plan_path.display())))?;
        let exe = std::env::current_exe().map_err(Error::io("cannot locate the tandem executable"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("enter-view").arg(&plan_path).env_clear();
        Ok(cmd)
    }
}

/// An `O_PATH` descriptor's name, usable in mount options after the path itself is covered.
struct Held(fs::File);

impl Held {
    fn open(p: &[u8]) -> Result<Held> {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH)
            .open(path(p))
            .map(Held)
            .map_err(Error::io(format!("cannot open {}", path(p).display())))
    }

    fn name(&self) -> String {
        format!("/proc/self/fd/{}", self.0.as_raw_fd())
    }
}

/// Each layer with its directories held open.
fn hold(layers: &[Layer]) -> Result<Vec<(&Layer, [Held; 3])>> {
    layers.iter().map(|l| Ok((l, [Held::open(&l.lower)?, Held::open(&l.upper)?, Held::open(&l.work)?]))).collect()
}

fn setup(what: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> Error {
    move |e| Error::Setup(format!("cannot build the backup's private view: {what}: {e}"))
}

/// `tandem enter-view PLAN`: builds the namespace the plan describes and runs the program there,
/// as its keeper (`crate::lifetime::keep`); returns its status.
pub fn enter(plan_path: &Path) -> Result<i32> {
    let (cmd, agent) = build(plan_path)?;
    crate::lifetime::keep(cmd, nix::unistd::Pid::from_raw(agent))
}

fn build(plan_path: &Path) -> Result<(Command, i32)> {
    let text = fs::read(plan_path).map_err(Error::io(plan_path.display().to_string()))?;
    let plan: Plan = serde_json::from_slice(&text)
        .map_err(|e| Error::Setup(format!("{}: not a view plan: {e}", plan_path.display())))?;
    let root = nix::unistd::geteuid().is_root();
    if root {
        nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(setup("unshare"))?;
    } else {
        // Without privilege, a user namespace that maps this user to itself allows the mounts.
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(setup("unshare"))?;
        let write = |file: &str, text: String| {
            fs::write(file, text).map_err(Error::io(format!("cannot build the backup's private view: {file}")))
        };
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(setup("making mounts private"))?;
    // Held from inside the namespace (an overlay's layers must be mounts of its own namespace)
    // and before any is covered.
    let (private, data) = (hold(&plan.private)?, hold(&plan.data)?);
    let binds = plan.binds.iter().map(|b| Ok((b, Held::open(b)?))).collect::<Result<Vec<_>>>()?;
    let overlay = |(l, [lower, upper, work]): &(&Layer, [Held; 3])| -> Result<()> {
        let target = path(&l.target);
        fs::create_dir_all(target).map_err(Error::io(format!("cannot create {}", target.display())))?;
        let mut options = format!("lowerdir={},upperdir={},workdir={}", lower.name(), upper.name(), work.name());
        if !root {
            options.push_str(",userxattr");
        }
        nix::mount::mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
            .map_err(setup(format!("overlay at {}", target.display())))
    };
    private.iter().try_for_each(overlay)?;
    // What the program needs from inside the private directories comes back.
    for (b, from) in &binds {
        let to = path(b);
        if from.0.metadata().is_ok_and(|m| m.is_dir()) {
            fs::create_dir_all(to).map_err(Error::io(format!("cannot create {}", to.display())))?;
        } else {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(Error::io(format!("cannot create {}", parent.display())))?;
            }
            fs::write(to, b"").map_err(Error::io(format!("cannot create {}", to.display())))?;
        }
        nix::mount::mount(Some(from.name().as_str()), to, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(setup(format!("binding {}", to.display())))?;
    }
    data.iter().try_for_each(overlay)?;
    for (a, attrs) in &plan.ancestors {
        attrs.apply(path(a))?;
    }
    drop((private, data, binds));
    let cwd = path(&plan.cwd);
    let mut cmd = Command::new(path(&plan.program));
    if let Some((argv0, rest)) = plan.argv.split_first() {
        cmd.arg0(OsStr::from_bytes(argv0)).args(rest.iter().map(|a| OsStr::from_bytes(a)));
    }
    cmd.env_clear();
    for e in &plan.env {
        if let Some(eq) = e.iter().position(|&c| c == b'=') {
            cmd.env(OsStr::from_bytes(&e[..eq]), OsStr::from_bytes(&e[eq + 1..]));
        }
    }
    if !plan.cwd.is_empty() {
        cmd.current_dir(cwd);
    }
    Ok((cmd, plan.agent))
}
