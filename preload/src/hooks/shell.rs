//! Children the C library starts from `environ` itself: `system` and `popen`.
//!
//! The shim cannot hand such a child an environment of its own making, so for as long as the C
//! library may read it, `environ` names the child's logical pid (the one the record gave it). The call's event comes before the
//! child runs (it creates a process; the child's events follow it); `system`'s exit status, and
//! `pclose`'s, come in events of their own once the child has ended.
//!
//! Swaps are one at a time: two threads swapping at once could start each other's children. A
//! swap holds the right to swap until its call returns or, sooner, until its child has started
//! under the shim (it has a ring, or a slot in the replay's thread table): by then the C library
//! has read `environ`, so a shell that `system` runs for long keeps no other swap waiting.

use super::process::{current_environ, EnvBlock};
use super::{cstr, PATH_MAX_RECORDED};
use crate::state::{self, Ev, Hook};
use crate::{fdtable, real, sys};
use core::ffi::{c_char, c_int};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use eventlog::digest::{digest, digest_parts};
use eventlog::ring::{SLOT_ACTIVE, SLOT_CLOSED};
use eventlog::{Call, FdKind};
use libc::FILE;

extern "C" {
    static mut environ: *const *const c_char;
}

fn set_environ(e: *const *const c_char) {
    // SAFETY: the libc global, written only by the holder of the right to swap (see `Swap`).
    unsafe { environ = e };
}

/// Who holds the right to swap `environ`: 0 nobody; `HELD` a holder that gives it back itself (a
/// swap being undone, or one of too many at once); otherwise the logical pid of the child the
/// holder starts, whose start lets the next swap take the right over.
static HOLDER: AtomicU32 = AtomicU32::new(0);
const HELD: u32 = u32::MAX;

/// Swaps at once that can hand the right on before they end.
const MAX_SWAPS: usize = 16;
/// The environments of swaps whose calls have not returned (0: a free entry), to tell them from
/// one the program set meanwhile; and the program's own `environ`, which every swap starts from.
/// Both change only under the right to swap.
static SWAPPED: [AtomicUsize; MAX_SWAPS] = [const { AtomicUsize::new(0) }; MAX_SWAPS];
static PROGRAM_ENVIRON: AtomicUsize = AtomicUsize::new(0);

/// Whether the process with logical pid `lpid` has started under the shim.
fn has_started(lpid: u32) -> bool {
    if let Some(feed) = state::feed() {
        return feed.find(lpid, eventlog::ids::MAIN_TID.0).is_some();
    }
    let Some(region) = state::region() else { return true };
    let high = region.header().slots_high.load(Ordering::Acquire).min(region.geometry().ring_count);
    (0..high).any(|i| {
        let v = region.slot_view(i);
        matches!(v.state, SLOT_ACTIVE | SLOT_CLOSED) && v.lpid.0 == lpid
    })
}

/// Takes the right to swap as `tag`: from nobody, or from a holder whose child has started.
fn take(tag: u32) {
    let mut waits = 0u32;
    loop {
        let holder = match HOLDER.compare_exchange(0, tag, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(holder) => holder,
        };
        if holder != HELD
            && has_started(holder)
            && HOLDER.compare_exchange(holder, tag, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            return;
        }
        // A child starts within a millisecond or two (a shell's exec).
        sys::sleep_ns(if waits < 50 { 20_000 } else { 500_000 });
        waits = waits.saturating_add(1);
    }
}

/// Gives the right back, unless another swap has taken it over.
fn give(tag: u32) {
    let _ = HOLDER.compare_exchange(tag, 0, Ordering::Release, Ordering::Relaxed);
}

fn is_swapped(e: *const *const c_char) -> bool {
    !e.is_null() && SWAPPED.iter().any(|s| s.load(Ordering::Relaxed) == e as usize)
}

/// `environ` pointing at an environment made for one child, from `begin` to `end`.
struct Swap {
    block: Option<EnvBlock>,
    /// The swap's tag while it holds the right.
    tag: u32,
    /// The program's environment when the swap began.
    program: *const *const c_char,
}

impl Swap {
    /// Points `environ` at the program's environment naming `child`, holding the right to swap
    /// until `child` has started or the swap ends.
    fn begin(child: u32) -> Swap {
        take(child);
        let now = current_environ();
        if !is_swapped(now) {
            // The program's own: it may have set another since the last swap.
            PROGRAM_ENVIRON.store(now as usize, Ordering::Relaxed);
        }
        let program = PROGRAM_ENVIRON.load(Ordering::Relaxed) as *const *const c_char;
        // SAFETY: the program's environment array; the block lives until `end`.
        let block = unsafe { EnvBlock::build(program, child, 0) };
        let mut tag = child;
        if let Some(b) = &block {
            match SWAPPED.iter().find(|s| s.load(Ordering::Relaxed) == 0) {
                Some(free) => free.store(b.envp() as usize, Ordering::Relaxed),
                None => {
                    // Too many at once to tell apart: this one keeps the right until it ends.
                    HOLDER.store(HELD, Ordering::Release);
                    tag = HELD;
                }
            }
            set_environ(b.envp());
        }
        Swap { block, tag, program }
    }

    /// Puts the program's environment back, unless the program set one of its own meanwhile, and
    /// frees the swap's, unless the program's new one may point into it.
    fn end(self) {
        if HOLDER.compare_exchange(self.tag, HELD, Ordering::AcqRel, Ordering::Acquire).is_err() {
            take(HELD);
        }
        if let Some(b) = self.block {
            let mine = b.envp();
            for s in &SWAPPED {
                let _ = s.compare_exchange(mine as usize, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
            let now = current_environ();
            if now == mine {
                set_environ(self.program);
            }
            if now == mine || now == self.program || is_swapped(now) {
                drop(b);
            } else {
                core::mem::forget(b);
            }
        }
        give(HELD);
    }
}

/// In a fork child: the threads that were swapping are not there; the program's environment is
/// back and the right is free.
pub fn after_fork() {
    let program = PROGRAM_ENVIRON.load(Ordering::Relaxed) as *const *const c_char;
    if is_swapped(current_environ()) {
        set_environ(program);
    }
    for s in &SWAPPED {
        s.store(0, Ordering::Relaxed);
    }
    HOLDER.store(0, Ordering::Release);
}

/// Runs `call` with `environ` naming `child` for as long as the C library may read it; errno as
/// the call left it.
fn swapped<R>(child: u32, call: impl FnOnce() -> R) -> R {
    let swap = Swap::begin(child);
    let r = call();
    let errno = sys::errno();
    swap.end();
    sys::set_errno(errno);
    r
}

/// system(3): the shell's logical pid, recorded before it runs, is in `environ` while the C
/// library starts it; its exit status is compared once it has ended.
#[no_mangle]
pub unsafe extern "C" fn system(command: *const c_char) -> c_int {
    // SAFETY: forwarding the program's own command.
    let pass = || unsafe { real::system(command) };
    let Some(hook) = Hook::enter() else { return pass() };
    let Some(region) = state::region() else { return pass() };
    if command.is_null() {
        // Only asks whether a shell exists: no process is started.
        return pass();
    }
    // SAFETY: a valid C string, per system(3).
    let text = unsafe { cstr(command, PATH_MAX_RECORDED) };
    let d = digest(text);
    let child = match hook.turn(Call::System) {
        Some(t) => {
            t.expect_digest(d);
            t.header().aux[0] as u32
        }
        None => {
            let child = region.take_lpid();
            hook.emit(Ev::new(Call::System).digest(d).aux(child as u64, 0), &[text]);
            child
        }
    };
    let r = swapped(child, pass);
    match hook.turn(Call::SystemStatus) {
        Some(t) => t.expect("the shell's exit status", t.result(), r as i64),
        None => hook.emit(Ev::new(Call::SystemStatus).result(r as i64).aux(r as u32 as u64, 0), &[]),
    }
    r
}

/// popen(3): the shell's logical pid is recorded before it runs, like `system`'s. The stream's
/// pipe is one of the program's own (`FdKind::InnerPipe`), whose bytes a backup moves for real:
/// the stream's reads and writes are the C library's own. The stream's descriptor is a creation of its own,
/// recorded once the call has made it (as open's): a backup runs the real popen at the first
/// event's turn (its child follows from there), parks the descriptor out of the way, and moves it
/// to the primary's number at the second event's turn.
#[no_mangle]
pub unsafe extern "C" fn popen(command: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: forwarding the program's own arguments.
    let pass = || unsafe { real::popen(command, mode) };
    let Some(hook) = Hook::enter() else { return pass() };
    let Some(region) = state::region() else { return pass() };
    // SAFETY: valid C strings, per popen(3).
    let (text, m) = unsafe { (cstr(command, PATH_MAX_RECORDED), cstr(mode, 16)) };
    let d = digest_parts([text, m]);
    let f = match hook.turn(Call::Popen) {
        Some(t) => {
            t.expect_digest(d);
            // The turn is held while the C library makes the pipe: new descriptors come one at a
            // time on a backup.
            let f = swapped(t.header().aux[0] as u32, pass);
            if !f.is_null() {
                let errno = sys::errno();
                // SAFETY: the stream popen just made, which only this thread knows yet.
                unsafe { set_fileno(f, crate::replay::park(libc::fileno(f))) };
                sys::set_errno(errno);
            }
            f
        }
        None => {
            let child = region.take_lpid();
            hook.emit(Ev::new(Call::Popen).digest(d).aux(child as u64, 0), &[text]);
            swapped(child, pass)
        }
    };
    let errno = sys::errno();
    // SAFETY: the stream popen just made.
    let mut fd = if f.is_null() { -1 } else { unsafe { libc::fileno(f) } };
    match hook.turn(Call::PopenStream) {
        Some(t) => {
            sys::set_errno(errno);
            let placed = crate::replay::place_fd(&t, fd);
            if placed != fd {
                // SAFETY: as above; its descriptor moved to `placed`.
                unsafe { set_fileno(f, placed) };
                fd = placed;
            }
        }
        None => {
            let kind = if fd >= 0 { FdKind::InnerPipe } else { FdKind::Unknown };
            sys::set_errno(errno);
            hook.emit(Ev::new(Call::PopenStream).fd(fd, kind).result(fd as i64), &[]);
        }
    }
    if fd >= 0 {
        fdtable::set(fd, FdKind::InnerPipe);
    }
    sys::set_errno(errno);
    f
}

/// The start of the C library's `struct _IO_FILE` (a public layout, `bits/types/struct_FILE.h`),
/// up to the stream's descriptor.
#[repr(C)]
struct FileHead {
    flags: c_int,
    pointers: [*mut core::ffi::c_void; 13],
    fileno: c_int,
}

const _: () = assert!(core::mem::offset_of!(FileHead, fileno) == 112);

/// Points stream `f` at descriptor `fd`.
///
/// # Safety
/// `f` is a live stream of the C library's, not in use by another thread.
unsafe fn set_fileno(f: *mut FILE, fd: c_int) {
    // SAFETY: per the caller; `FileHead` is the start of the C library's stream structure.
    unsafe { (*(f as *mut FileHead)).fileno = fd };
}

/// pclose(3): the stream's descriptor number is released at the first event (a release: its
/// number is taken first), the stream going on to its flush and close on a copy out of the way
/// of the low numbers, so that a number the primary handed out after the event is free at that
/// point on a backup too. The real pclose (flush, close, free, wait for the shell) runs outside
/// the hook, as fclose's; the shell's exit status is recorded after, and a backup hands back the
/// primary's.
#[no_mangle]
pub unsafe extern "C" fn pclose(f: *mut FILE) -> c_int {
    // SAFETY: the program's stream; fileno only reads it.
    let fd = unsafe { libc::fileno(f) };
    if let Some(hook) = Hook::enter() {
        let kind = fdtable::kind(fd);
        // SAFETY: the program's stream, in its pclose.
        let release = || unsafe { set_fileno(f, crate::replay::park(fd)) };
        match hook.turn(Call::Pclose) {
            Some(t) => {
                t.expect("the descriptor", t.header().fd as i64, fd as i64);
                release();
            }
            None => hook.release(|| (release(), Ev::new(Call::Pclose).fd(fd, kind))),
        }
        fdtable::clear(fd);
    }
    // SAFETY: forwarding the program's own stream.
    let r = unsafe { real::pclose(f) };
    let Some(hook) = Hook::enter() else { return r };
    match hook.turn(Call::PcloseStatus) {
        Some(t) => t.ret() as c_int,
        None => {
            hook.emit(Ev::new(Call::PcloseStatus).result(r as i64).aux(r as u32 as u64, 0), &[]);
            r
        }
    }
}
