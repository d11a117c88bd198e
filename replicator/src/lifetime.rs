//! How long an agent and its program live, and how they stop.
//!
//! **The program never outlives its agent.** It does not run as the agent's child but under a
//! keeper: a small tandem process (`tandem keep`, or on a backup `tandem enter-view`, which builds
//! the view first) that starts the program and is the subreaper of its whole tree, so every
//! orphan of the tree becomes its child whatever process group or session it moved to. The
//! kernel tells the keeper when the agent dies, however it dies (SIGKILL included), with SIGUSR1
//! (`PR_SET_PDEATHSIG`); the keeper then kills every process of the tree and exits. While the
//! agent lives, the keeper passes on the termination signals it is sent and exits with the
//! program's status once the whole tree is gone (128 + signal when the program was killed).
//! `PR_SET_PDEATHSIG` on the program alone would reach its first thread, not its descendants.
//! The agent is a subreaper too: when the keeper itself is killed, the tree becomes the agent's,
//! and the agent kills it (the keeper ends only once the tree has, so an early end means that).
//!
//! **Termination signals** the agent is sent are caught from before the program starts. SIGTERM
//! and SIGINT stop the agent: the program gets the signal once (not while a backup replays: its
//! program takes no real signal then and is stopped at once) and [`STOP_TIMEOUT`] to end; then
//! the agent kills its whole tree. SIGHUP and SIGQUIT are passed on and stop nothing by
//! themselves (daemons reload on a hangup). A signal the kernel sent to the agent's whole process
//! group (a terminal's Ctrl-C) is not passed on when the program is in that group: it took it
//! itself.

use crate::error::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::low_level::siginfo::Cause;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a program asked to stop (SIGTERM, SIGINT) has to end before it is killed: the agent
/// and its program are gone within two seconds of the signal, the backups told of the end.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// An agent asked to stop waits for its backups to hold the program's end until this long after
/// it was asked.
const DRAIN_UNTIL: Duration = Duration::from_millis(1400);

/// The program's `LD_PRELOAD` while its keeper, which must not load the shim, holds the
/// program's environment as its own.
pub const KEEPER_PRELOAD: &str = "TANDEM_KEEPER_LD_PRELOAD";

/// The program's environment, from its keeper's own.
pub fn program_environment() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .map(|(name, value)| if name == KEEPER_PRELOAD { ("LD_PRELOAD".into(), value) } else { (name, value) })
        .collect()
}

/// Termination signals an agent or keeper catches.
pub(crate) type Caught = signal_hook::iterator::SignalsInfo<signal_hook::iterator::exfiltrator::WithOrigin>;

/// Catches the termination signals from before the program starts: one that comes early must not
/// end the agent and leave the program to itself.
pub(crate) fn catch_signals() -> Option<Caught> {
    Caught::new([SIGTERM, SIGINT, SIGHUP, SIGQUIT]).ok()
}

/// Whether, and why, an agent is stopping its program before it ends on its own.
#[derive(Default)]
pub struct Stop {
    /// SIGTERM or SIGINT asked the agent to stop (0: not asked).
    signal: AtomicI32,
    /// When it was asked.
    asked: OnceLock<Instant>,
    /// The program is to be killed now, without waiting for it (a fenced primary's).
    kill_now: AtomicBool,
    /// Whether SIGTERM and SIGINT reach the program (a backup's program does not take them while
    /// it replays: it is killed instead).
    pass_on: AtomicBool,
}

impl Stop {
    /// A stop for an agent whose program takes SIGTERM and SIGINT itself (`pass_on`) or not.
    pub fn new(pass_on: bool) -> Arc<Stop> {
        Arc::new(Stop { pass_on: AtomicBool::new(pass_on), ..Stop::default() })
    }

    /// The program goes live (a backup's): from now on it takes the signals itself.
    pub fn pass_on_from_now(&self) {
        self.pass_on.store(true, Ordering::SeqCst);
    }

    fn ask(&self, signal: i32) {
        let _ = self.signal.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.asked.get_or_init(Instant::now);
    }

    /// Kill the program at once (the agent was fenced).
    pub fn kill_now(&self) {
        self.kill_now.store(true, Ordering::SeqCst);
        self.asked.get_or_init(Instant::now);
    }

    /// The signal that asked the agent to stop, if one did.
    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }

    /// Whether the agent was asked to stop, by a signal or a fence.
    pub fn asked(&self) -> bool {
        self.asked.get().is_some()
    }

    /// Whether the program must be killed now: the fence asked so, or the signal did not reach
    /// it, or it had [`STOP_TIMEOUT`] and is still there.
    pub fn due(&self) -> bool {
        let Some(asked) = self.asked.get() else { return false };
        self.kill_now.load(Ordering::SeqCst) || !self.pass_on.load(Ordering::SeqCst) || asked.elapsed() >= STOP_TIMEOUT
    }

    /// How long an agent asked to stop may still wait for its backups to hold the program's end:
    /// until [`DRAIN_UNTIL`] after it was asked, which leaves room within the two seconds for
    /// syncing the log and exiting on a busy host.
    pub fn drain_left(&self) -> Option<Duration> {
        let asked = self.asked.get()?;
        Some(DRAIN_UNTIL.saturating_sub(asked.elapsed()))
    }
}

/// Watches the termination signals sent to the agent (caught by [`catch_signals`]): passes them on
/// to `top` (the program's keeper) and, for SIGTERM and SIGINT, asks `stop`. Not those the program
/// took itself: a terminal sends Ctrl-C (and Ctrl-\, and the hangup of its foreground job) to its
/// whole foreground process group, and a program in the agent's group would otherwise get it
/// twice.
pub(crate) fn watch_signals(
    signals: Option<Caught>,
    top: Option<Pid>,
    stop: Arc<Stop>,
) -> Option<signal_hook::iterator::Handle> {
    let mut signals = signals?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("tandem-signals".into())
        .spawn(move || {
            for origin in signals.forever() {
                let sig = origin.signal;
                let stops = sig == SIGTERM || sig == SIGINT;
                if stops && !stop.asked() {
                    crate::notes::line(&format!(
                        "tandem: {}: stopping the program (it is killed if it has not ended within {} s)",
                        signal_name(sig),
                        STOP_TIMEOUT.as_secs_f64()
                    ));
                }
                if stops {
                    stop.ask(sig);
                }
                let Some(top) = top else { continue };
                // Sent by the kernel (si_code SI_KERNEL, no sender): a terminal's, to a group.
                if origin.cause == Cause::Kernel && program_took_it_too(top, sig) {
                    continue;
                }
                if stops && !stop.pass_on.load(Ordering::SeqCst) {
                    continue;
                }
                if let Ok(s) = Signal::try_from(sig) {
                    let _ = kill(top, s);
                }
            }
        })
        .ok()?;
    Some(handle)
}

/// `SIGTERM` for 15, and so on.
pub fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string())
}

/// Whether a signal the kernel sent this process reached `top` as well: the kernel sends a
/// terminal's signals to a whole process group, so `top` took it if it is in ours. Except a
/// hangup, which the kernel sends to a session leader alone when its terminal goes away.
fn program_took_it_too(top: Pid, signal: i32) -> bool {
    use nix::unistd::{getpgid, getpgrp, getpid, getsid};
    let same_group = getpgid(Some(top)).is_ok_and(|g| g == getpgrp());
    let session_leader = getsid(None).is_ok_and(|s| s == getpid());
    same_group && !(signal == SIGHUP && session_leader)
}

/// Reaps every exited child (this process is the subreaper of the program's tree, so every
/// descendant ends up as its child). Records `top`'s status (128 + signal if it was killed).
/// Returns true once no child is left.
pub(crate) fn reap_children(top: Pid, exit_code: &mut Option<i32>) -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if pid == top {
                    *exit_code = Some(code);
                }
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                if pid == top {
                    *exit_code = Some(128 + sig as i32);
                }
            }
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => return true,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}

/// Kills every process of the program's tree and reaps them, recording `top`'s status. The tree's
/// processes become this process's children as their parents die (it is their subreaper), so
/// each round kills the children there are; a few seconds at most.
pub(crate) fn kill_tree(top: Pid, exit_code: &mut Option<i32>) {
    let me = std::process::id() as i32;
    for _ in 0..300 {
        for pid in children_of(me) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if reap_children(top, exit_code) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(parent)
        })
        .collect()
}

/// The keeper (`tandem keep`, and `tandem enter-view` once the view is built): starts `program`
/// as the subreaper of its tree and returns its status once the whole tree is gone; kills the
/// tree when `agent` dies.
pub fn keep(mut program: Command, agent: Pid) -> Result<i32> {
    let failed = |what: &str, e: nix::errno::Errno| Error::Setup(format!("the program's keeper: {what}: {e}"));
    let mut signals = Caught::new([SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1])
        .map_err(Error::io("the program's keeper: cannot catch signals"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| failed("cannot become a subreaper", e))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1).map_err(|e| failed("cannot watch the agent", e))?;
    // The agent died before the watch was set: nothing is started.
    if nix::unistd::getppid() != agent {
        return Ok(128 + Signal::SIGKILL as i32);
    }
    let child =
        program.spawn().map_err(Error::io(format!("cannot start {}", program.get_program().to_string_lossy())))?;
    let top = Pid::from_raw(child.id() as i32);
    let mut status = None;
    for origin in signals.forever() {
        match origin.signal {
            SIGCHLD => {
                if reap_children(top, &mut status) {
                    break;
                }
            }
            SIGUSR1 => {
                if nix::unistd::getppid() != agent {
                    kill_tree(top, &mut status);
                    return Ok(128 + Signal::SIGKILL as i32);
                }
            }
            sig => {
                if origin.cause == Cause::Kernel && program_took_it_too(top, sig) {
                    continue;
                }
                if let Ok(s) = Signal::try_from(sig) {
                    let _ = kill(top, s);
                }
            }
        }
    }
    Ok(status.unwrap_or(125))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_passed_on_waits_for_the_program_and_one_not_passed_on_does_not() {
        let passed = Stop::new(true);
        assert!(!passed.asked() && !passed.due());
        passed.ask(SIGTERM);
        passed.ask(SIGINT);
        assert_eq!(passed.signal(), Some(SIGTERM));
        assert!(passed.asked() && !passed.due());
        passed.kill_now();
        assert!(passed.due());

        let replaying = Stop::new(false);
        replaying.ask(SIGINT);
        assert!(replaying.due());
        assert_eq!(signal_name(SIGINT), "SIGINT");
    }
}
