//! Asynchronous signals become events at call boundaries.
//!
//! `signal`/`sigaction` install a wrapper in place of the program's handler. While recording, the
//! wrapper only notes the signal as pending (with its siginfo). When a thread next records an
//! event, it picks one pending, unblocked signal, marks the event `SIGNAL_NEXT`, and when the
//! hook returns records a `signal` event and runs the program's handler. A backup sees the mark,
//! waits for its `signal` event and runs the handler at the same point: same thread, same call
//! boundary. In replay the wrapper ignores real asynchronous signals (the log says which signals
//! arrive where); going live puts the program's own handlers back. Faults (SIGSEGV, SIGBUS,
//! SIGILL, SIGFPE, SIGTRAP) are synchronous to an instruction and go to the handler at once.

use crate::real;
use crate::state::{self, active, ctx, Ev, Hook, ThreadCtx};
use crate::sys;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use eventlog::Call;
use libc::{sighandler_t, siginfo_t};

const NSIG: usize = 65;
const SIGINFO_LEN: usize = core::mem::size_of::<siginfo_t>();

/// The program's own disposition of a signal we wrap.
struct Action {
    handler: AtomicUsize,
    flags: AtomicU64,
    mask: AtomicU64,
}

static ACTIONS: [Action; NSIG] =
    [const { Action { handler: AtomicUsize::new(0), flags: AtomicU64::new(0), mask: AtomicU64::new(0) } }; NSIG];
/// Bit (sig - 1) set while our wrapper is installed for sig.
static WRAPPED: AtomicU64 = AtomicU64::new(0);
/// Process-directed signals waiting for a boundary in any thread.
static PROC_PENDING: AtomicU64 = AtomicU64::new(0);
/// The last siginfo seen for each signal (standard signals coalesce in the kernel as well).
static INFO: [[AtomicU64; SIGINFO_LEN / 8]; NSIG] = [const { [const { AtomicU64::new(0) }; SIGINFO_LEN / 8] }; NSIG];

/// `signal_after` value meaning "the log says a signal follows" (replay).
pub const RECORDED_SIGNAL: u32 = u32::MAX;

const fn bit(sig: c_int) -> u64 {
    1u64 << (sig - 1)
}

/// Whether the program handles `sig` (through our wrapper).
pub fn is_handled(sig: c_int) -> bool {
    (1..NSIG as c_int).contains(&sig) && WRAPPED.load(Ordering::Relaxed) & bit(sig) != 0
}

#[inline(always)]
pub fn any_pending(ctx: &ThreadCtx) -> bool {
    (ctx.pending_signals.load(Ordering::Relaxed) | PROC_PENDING.load(Ordering::Relaxed)) != 0
}

fn is_fault(sig: c_int) -> bool {
    matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP)
}

/// Calls the program's handler for `sig` the way the kernel would have.
///
/// # Safety
/// `info` and `uctx` are what the handler may receive (valid or null).
unsafe fn call_handler(sig: c_int, handler: usize, flags: u64, info: *mut siginfo_t, uctx: *mut c_void) {
    if flags & libc::SA_SIGINFO as u64 != 0 {
        // SAFETY: the program installed `handler` with SA_SIGINFO, so it has this signature.
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = unsafe { core::mem::transmute(handler) };
        f(sig, info, uctx);
    } else {
        // SAFETY: without SA_SIGINFO the handler takes the signal number only.
        let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(handler) };
        f(sig);
    }
}

extern "C" fn on_signal(sig: c_int, info: *mut siginfo_t, uctx: *mut c_void) {
    if !(1..NSIG as c_int).contains(&sig) {
        return;
    }
    let saved_errno = sys::errno();
    let a = &ACTIONS[sig as usize];
    if is_fault(sig) {
        // SAFETY: forwarding the kernel's own arguments to the program's handler.
        unsafe { call_handler(sig, a.handler.load(Ordering::Relaxed), a.flags.load(Ordering::Relaxed), info, uctx) };
    } else if state::mode() == state::MODE_RECORD {
        let mut code = 0;
        if !info.is_null() {
            // SAFETY: the kernel passes a valid siginfo of SIGINFO_LEN bytes.
            let words = unsafe { core::slice::from_raw_parts(info as *const u64, SIGINFO_LEN / 8) };
            for (slot, w) in INFO[sig as usize].iter().zip(words) {
                slot.store(*w, Ordering::Relaxed);
            }
            // SAFETY: as above.
            code = unsafe { (*info).si_code };
        }
        if code == libc::SI_TKILL {
            ctx().pending_signals.fetch_or(bit(sig), Ordering::Relaxed);
        } else {
            PROC_PENDING.fetch_or(bit(sig), Ordering::Relaxed);
        }
    }
    sys::set_errno(saved_errno);
}

/// A fork child does not inherit its parent's pending signals.
pub fn reset_after_fork() {
    PROC_PENDING.store(0, Ordering::Relaxed);
    ctx().pending_signals.store(0, Ordering::Relaxed);
}

/// Recording: takes one pending signal this thread can receive now (not blocked), or 0.
pub fn choose_for_boundary(ctx: &ThreadCtx) -> c_int {
    let blocked = sys::current_sigmask();
    loop {
        let mine = ctx.pending_signals.load(Ordering::Relaxed) & !blocked;
        let shared = PROC_PENDING.load(Ordering::Relaxed) & !blocked;
        let (set, bits) = if mine != 0 { (&ctx.pending_signals, mine) } else { (&PROC_PENDING, shared) };
        if bits == 0 {
            return 0;
        }
        let sig = bits.trailing_zeros() as c_int + 1;
        if set.fetch_and(!bit(sig), Ordering::AcqRel) & bit(sig) != 0 {
            return sig;
        }
    }
}

/// Runs after a hook whose event announced a signal: records (or, in replay, takes from the log)
/// the delivery, then runs the program's handler.
#[cold]
pub fn deliver_after_boundary(chosen: u32) {
    let Some(hook) = Hook::enter() else { return };
    let mut info = [0u64; SIGINFO_LEN / 8];
    let sig = if chosen == RECORDED_SIGNAL {
        let Some(turn) = hook.turn(Call::Signal) else { return };
        turn.payload(0, words_as_bytes_mut(&mut info));
        let sig = turn.header().aux[0] as c_int;
        turn.done();
        sig
    } else {
        let sig = chosen as c_int;
        for (w, slot) in info.iter_mut().zip(&INFO[sig as usize]) {
            *w = slot.load(Ordering::Relaxed);
        }
        hook.emit_inner(Ev::new(Call::Signal).aux(sig as u64, 0), &[words_as_bytes(&info)]);
        sig
    };
    state::leave_without_delivery(hook);
    if !(1..NSIG as c_int).contains(&sig) {
        return;
    }
    let a = &ACTIONS[sig as usize];
    let (handler, flags, mask) =
        (a.handler.load(Ordering::Relaxed), a.flags.load(Ordering::Relaxed), a.mask.load(Ordering::Relaxed));
    if handler == libc::SIG_IGN {
        return;
    }
    if handler == libc::SIG_DFL {
        // The program reset the disposition after the signal was caught: let the kernel act.
        reraise_default(sig);
        return;
    }
    let blocked = sys::current_sigmask();
    let mut run_mask = blocked | mask;
    if flags & libc::SA_NODEFER as u64 == 0 {
        run_mask |= bit(sig);
    }
    if flags & libc::SA_RESETHAND as u64 != 0 {
        a.handler.store(libc::SIG_DFL, Ordering::Relaxed);
    }
    let old = sys::set_sigmask(run_mask);
    // SAFETY: the program's handler, called with the saved siginfo; there is no interrupted
    // context to hand over, so ucontext is null.
    unsafe { call_handler(sig, handler, flags, info.as_mut_ptr() as *mut siginfo_t, core::ptr::null_mut()) };
    sys::set_sigmask(old);
}

fn words_as_bytes(words: &[u64; SIGINFO_LEN / 8]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte is a valid u8; the length is exact.
    unsafe { core::slice::from_raw_parts(words.as_ptr() as *const u8, SIGINFO_LEN) }
}

fn words_as_bytes_mut(words: &mut [u64; SIGINFO_LEN / 8]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid u64.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, SIGINFO_LEN) }
}

fn reraise_default(sig: c_int) {
    // SAFETY: all-zero sigaction with SIG_DFL is valid; raw tgkill to ourselves.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        real::sigaction(sig, &sa, core::ptr::null_mut());
    }
    WRAPPED.fetch_and(!bit(sig), Ordering::Relaxed);
    sys::tgkill(sys::getpid(), sys::gettid(), sig);
}

/// Going live: the program's own handlers replace the wrapper, so signals reach them directly.
pub fn unwrap_all() {
    let wrapped = WRAPPED.swap(0, Ordering::AcqRel);
    for sig in 1..NSIG as c_int {
        if wrapped & bit(sig) == 0 {
            continue;
        }
        let a = &ACTIONS[sig as usize];
        // SAFETY: a zeroed sigaction with the program's handler, flags and mask is valid.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = a.handler.load(Ordering::Relaxed);
            sa.sa_flags = a.flags.load(Ordering::Relaxed) as c_int;
            set_sigset_low64(&mut sa.sa_mask, a.mask.load(Ordering::Relaxed));
            real::sigaction(sig, &sa, core::ptr::null_mut());
        }
    }
}

/// Installs `act` for `sig` as the program asked, with our wrapper standing in for a handler.
///
/// # Safety
/// `act` and `old` are null or valid, as for sigaction(2).
pub unsafe fn install(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: the caller vouches for the pointers; real::sigaction has the libc contract.
    unsafe {
        if !active()
            || state::mode() == state::MODE_LIVE
            || !(1..NSIG as c_int).contains(&sig)
            || sig == libc::SIGKILL
            || sig == libc::SIGSTOP
        {
            return real::sigaction(sig, act, old);
        }
        if sig == libc::SIGSYS && crate::seccomp::owns_sigsys() {
            return crate::seccomp::program_sigsys_action(act, old);
        }
        let a = &ACTIONS[sig as usize];
        let was_wrapped = WRAPPED.load(Ordering::Relaxed) & bit(sig) != 0;
        let prev = (a.handler.load(Ordering::Relaxed), a.flags.load(Ordering::Relaxed), a.mask.load(Ordering::Relaxed));
        let mut kernel_old: libc::sigaction = core::mem::zeroed();
        let r = if act.is_null() {
            real::sigaction(sig, core::ptr::null(), &mut kernel_old)
        } else {
            let want = *act;
            let handler = want.sa_sigaction;
            if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
                let r = real::sigaction(sig, act, &mut kernel_old);
                if r == 0 {
                    WRAPPED.fetch_and(!bit(sig), Ordering::Relaxed);
                    a.handler.store(handler, Ordering::Relaxed);
                }
                r
            } else {
                a.handler.store(handler, Ordering::Relaxed);
                a.flags.store(want.sa_flags as u64, Ordering::Relaxed);
                a.mask.store(sigset_low64(&want.sa_mask), Ordering::Relaxed);
                let mut ours = want;
                ours.sa_sigaction = on_signal as *const () as sighandler_t;
                ours.sa_flags = want.sa_flags | libc::SA_SIGINFO;
                let r = real::sigaction(sig, &ours, &mut kernel_old);
                if r == 0 {
                    WRAPPED.fetch_or(bit(sig), Ordering::Relaxed);
                } else {
                    a.handler.store(prev.0, Ordering::Relaxed);
                    a.flags.store(prev.1, Ordering::Relaxed);
                    a.mask.store(prev.2, Ordering::Relaxed);
                }
                r
            }
        };
        if r == 0 && !old.is_null() {
            *old = kernel_old;
            if was_wrapped {
                (*old).sa_sigaction = prev.0;
                (*old).sa_flags = prev.1 as c_int;
                set_sigset_low64(&mut (*old).sa_mask, prev.2);
            }
        }
        r
    }
}

fn sigset_low64(set: &libc::sigset_t) -> u64 {
    // SAFETY: sigset_t is at least 8 bytes of plain integers; the first 64 bits are signals 1-64.
    unsafe { *(set as *const libc::sigset_t as *const u64) }
}

fn set_sigset_low64(set: &mut libc::sigset_t, bits: u64) {
    // SAFETY: as above.
    unsafe { *(set as *mut libc::sigset_t as *mut u64) = bits }
}

#[no_mangle]
pub unsafe extern "C" fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: same contract as ours.
    unsafe { install(sig, act, old) }
}

/// BSD semantics, as glibc's `signal`: restart interrupted calls, block the signal in its handler.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: a zeroed sigaction is valid; the pointers passed to install are live locals.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        if (1..NSIG as c_int).contains(&sig) {
            set_sigset_low64(&mut sa.sa_mask, bit(sig));
        }
        let mut old: libc::sigaction = core::mem::zeroed();
        if install(sig, &sa, &mut old) != 0 {
            return libc::SIG_ERR;
        }
        old.sa_sigaction
    }
}

/// Changing the mask is a call like any other: a signal it unblocks is delivered on the way out.
/// A backup changes its own mask too (it matters once live).
fn sigmask_with(how: c_int, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    if let Some(t) = hook.turn(Call::Sigprocmask) {
        let r = real();
        t.expect_outcome(r as i64);
        return r;
    }
    let r = real();
    hook.emit(Ev::new(Call::Sigprocmask).result(r as i64).aux(how as u64, 0), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn sigprocmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    // SAFETY: same contract as ours.
    sigmask_with(how, || unsafe { real::sigprocmask(how, set, old) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    // SAFETY: same contract as ours.
    sigmask_with(how, || unsafe { real::pthread_sigmask(how, set, old) })
}

/// A wait for a signal (`sigsuspend`, `pause`): the signal that ends it is delivered at the wait's
/// own boundary, under the mask the wait put in place (`mask`, or the thread's own for `pause`),
/// as the kernel would. A backup does not wait: the log says which signal ended the wait, and it
/// is delivered the same way.
fn suspend_with(mask: Option<u64>, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    let recorded = hook.turn(Call::Sigsuspend);
    if recorded.is_none() {
        // Returns once a signal's wrapper has run (marking it pending), with EINTR.
        real();
    }
    // Whatever signal ended the wait is chosen, and its handler runs, under the wait's mask.
    let old = mask.map(sys::set_sigmask);
    match recorded {
        Some(t) => t.done(),
        None => hook.emit(Ev::new(Call::Sigsuspend).failed(libc::EINTR), &[]),
    }
    drop(hook);
    if let Some(old) = old {
        sys::set_sigmask(old);
    }
    sys::set_errno(libc::EINTR);
    -1
}

#[no_mangle]
pub unsafe extern "C" fn sigsuspend(mask: *const libc::sigset_t) -> c_int {
    // SAFETY: the program's mask, as sigsuspend(2) requires.
    let wait_mask = if mask.is_null() { None } else { Some(sigset_low64(unsafe { &*mask })) };
    // SAFETY: same contract as ours.
    suspend_with(wait_mask, || unsafe { real::sigsuspend(mask) })
}

#[no_mangle]
pub extern "C" fn pause() -> c_int {
    // SAFETY: no arguments.
    suspend_with(None, || unsafe { real::pause() })
}

/// Taking a blocked signal synchronously (`sigwait`, `sigwaitinfo`, `sigtimedwait`): no handler
/// runs; the signal taken (and its siginfo) is input, handed back to a backup.
///
/// # Safety
/// `info` is null or valid for a siginfo_t.
unsafe fn take_with(info: *mut siginfo_t, real: impl FnOnce(*mut siginfo_t) -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real(info) };
    let mut got = [0u64; SIGINFO_LEN / 8];
    if let Some(t) = hook.turn(Call::Sigwait) {
        t.payload(0, words_as_bytes_mut(&mut got));
        if t.result() > 0 && !info.is_null() {
            // SAFETY: per the caller; the primary's siginfo, as its kernel filled it.
            unsafe { core::ptr::copy_nonoverlapping(got.as_ptr() as *const u8, info as *mut u8, SIGINFO_LEN) };
        }
        return t.ret() as c_int;
    }
    let r = real(got.as_mut_ptr() as *mut siginfo_t);
    if r > 0 && !info.is_null() {
        // SAFETY: per the caller.
        unsafe { core::ptr::copy_nonoverlapping(got.as_ptr() as *const u8, info as *mut u8, SIGINFO_LEN) };
    }
    let filled = if r > 0 { words_as_bytes(&got) } else { &[] };
    hook.emit(Ev::new(Call::Sigwait).result(r as i64).aux(r.max(0) as u64, 0), &[filled]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn sigwaitinfo(set: *const libc::sigset_t, info: *mut siginfo_t) -> c_int {
    // SAFETY: forwarding the program's own arguments (a null timeout waits as sigwaitinfo does).
    unsafe { take_with(info, |i| real::sigtimedwait(set, i, core::ptr::null())) }
}

#[no_mangle]
pub unsafe extern "C" fn sigtimedwait(
    set: *const libc::sigset_t,
    info: *mut siginfo_t,
    timeout: *const libc::timespec,
) -> c_int {
    // SAFETY: as above.
    unsafe { take_with(info, |i| real::sigtimedwait(set, i, timeout)) }
}

/// sigwait returns the error number and stores the signal; it is sigwaitinfo without the siginfo.
#[no_mangle]
pub unsafe extern "C" fn sigwait(set: *const libc::sigset_t, sig: *mut c_int) -> c_int {
    // SAFETY: as above.
    let r = unsafe { take_with(core::ptr::null_mut(), |i| real::sigtimedwait(set, i, core::ptr::null())) };
    if r < 0 {
        return sys::errno();
    }
    if !sig.is_null() {
        // SAFETY: the program's slot for the signal taken.
        unsafe { *sig = r };
    }
    0
}
