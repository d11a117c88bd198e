//! Locks, condition variables and semaphores. An acquisition takes its sequence number after the
//! real call returns (the lock is held, so nobody else can take it in between); a release takes
//! its number before the real call (the lock is still held). So sequence order is the order in
//! which the program really took its locks. aux[0] is the object's address (for reading the
//! log; a backup never uses it).
//!
//! On a backup, every release before an acquisition in sequence order has already run when the
//! acquisition's turn comes, so an acquisition the primary got must succeed at once: it is taken
//! with the non-blocking variant, and a busy lock is a divergence. Acquisitions that failed on the
//! primary (busy, timed out) are not attempted. A condition wait releases its mutex, waits for the
//! turn of its wake-up, and takes the mutex back: the wake-up order is the primary's, and the
//! real condition variable is never used.

use crate::real;
use crate::replay::Turn;
use crate::state::{self, Ev, Hook};
use core::ffi::{c_int, c_void};
use eventlog::Call;
use libc::{clockid_t, pthread_cond_t, pthread_mutex_t, pthread_rwlock_t, sem_t, timespec};

/// How a call reports failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ret {
    /// Returns an error number (pthread_*).
    Status,
    /// Returns -1 and sets errno (sem_*).
    Errno,
}

#[inline(always)]
fn ev(call: Call, r: c_int, ret: Ret, obj: *const c_void, aux1: u64) -> Ev {
    let e = Ev::new(call);
    let e = match ret {
        Ret::Status => e.status(r),
        Ret::Errno => e.result(r as i64),
    };
    e.aux(obj as u64, aux1)
}

/// The recorded outcome, as the call returns it.
fn recorded(t: &Turn, ret: Ret) -> c_int {
    match ret {
        Ret::Status => t.result() as c_int,
        Ret::Errno => t.ret() as c_int,
    }
}

/// Replays an acquisition: if the primary got it, take it now without blocking.
///
/// If the primary did not get it (busy, timed out), the program is most likely spinning on the
/// lock's own state (adaptive locks such as jemalloc's poll an atomic flag a few hundred times
/// before blocking): it must not look before everything the primary did until its next call has
/// happened here too, or its spin ends differently. So the thread returns only once its next
/// event is due.
fn replay_acquire(t: Turn, ret: Ret, take_now: impl FnOnce() -> c_int) -> c_int {
    if t.result() == 0 {
        let r = take_now();
        if r != 0 {
            let call = t.header().call().map_or("?", Call::name);
            t.diverge(format_args!("{call}: the primary acquired it here, but it is held on this backup"));
        }
        return recorded(&t, ret);
    }
    let r = recorded(&t, ret);
    let ctx = t.ctx();
    drop(t);
    crate::replay::wait_until_next_is_mine(ctx);
    r
}

#[inline(always)]
fn acquire(
    call: Call,
    obj: *const c_void,
    aux1: u64,
    ret: Ret,
    real: impl FnOnce() -> c_int,
    take_now: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    if let Some(t) = hook.turn(call) {
        return replay_acquire(t, ret, take_now);
    }
    let r = real();
    hook.emit(ev(call, r, ret, obj, aux1), &[]);
    r
}

#[inline(always)]
fn release(call: Call, obj: *const c_void, ret: Ret, run_on_backup: bool, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    if let Some(t) = hook.turn(call) {
        if !run_on_backup {
            return recorded(&t, ret);
        }
        let r = real();
        match ret {
            Ret::Status => t.expect_status(r),
            Ret::Errno => t.expect_outcome(r as i64),
        }
        return r;
    }
    hook.release(|| {
        let r = real();
        (r, ev(call, r, ret, obj, 0))
    })
}

// SAFETY (for every hook below): each forwards the program's own arguments to the real function
// or to its non-blocking sibling on the same object.

#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_lock(m: *mut pthread_mutex_t) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::MutexLock,
            m as _,
            0,
            Ret::Status,
            || real::pthread_mutex_lock(m),
            || real::pthread_mutex_trylock(m),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_trylock(m: *mut pthread_mutex_t) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::MutexTrylock,
            m as _,
            0,
            Ret::Status,
            || real::pthread_mutex_trylock(m),
            || real::pthread_mutex_trylock(m),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_timedlock(m: *mut pthread_mutex_t, ts: *const timespec) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::MutexTimedlock,
            m as _,
            0,
            Ret::Status,
            || real::pthread_mutex_timedlock(m, ts),
            || real::pthread_mutex_trylock(m),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_clocklock(
    m: *mut pthread_mutex_t,
    clk: clockid_t,
    ts: *const timespec,
) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::MutexTimedlock,
            m as _,
            clk as u64,
            Ret::Status,
            || real::pthread_mutex_clocklock(m, clk, ts),
            || real::pthread_mutex_trylock(m),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int {
    // SAFETY: see above.
    unsafe { release(Call::MutexUnlock, m as _, Ret::Status, true, || real::pthread_mutex_unlock(m)) }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_rdlock(l: *mut pthread_rwlock_t) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::RwlockRdlock,
            l as _,
            0,
            Ret::Status,
            || real::pthread_rwlock_rdlock(l),
            || real::pthread_rwlock_tryrdlock(l),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_tryrdlock(l: *mut pthread_rwlock_t) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::RwlockTryrdlock,
            l as _,
            0,
            Ret::Status,
            || real::pthread_rwlock_tryrdlock(l),
            || real::pthread_rwlock_tryrdlock(l),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_timedrdlock(l: *mut pthread_rwlock_t, ts: *const timespec) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::RwlockTimedrdlock,
            l as _,
            0,
            Ret::Status,
            || real::pthread_rwlock_timedrdlock(l, ts),
            || real::pthread_rwlock_tryrdlock(l),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_clockrdlock(
    l: *mut pthread_rwlock_t,
    clk: clockid_t,
    ts: *const timespec,
) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::RwlockTimedrdlock,
            l as _,
            clk as u64,
            Ret::Status,
            || real::pthread_rwlock_clockrdlock(l, clk, ts),
            || real::pthread_rwlock_tryrdlock(l),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_wrlock(l: *mut pthread_rwlock_t) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::RwlockWrlock,
            l as _,
            0,
            Ret::Status,
            || real::pthread_rwlock_wrlock(l),
            || real::pthread_rwlock_trywrlock(l),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_trywrlock(l: *mut pthread_rwlock_t) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::RwlockTrywrlock,
            l as _,
            0,
            Ret::Status,
            || real::pthread_rwlock_trywrlock(l),
            || real::pthread_rwlock_trywrlock(l),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_timedwrlock(l: *mut pthread_rwlock_t, ts: *const timespec) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::RwlockTimedwrlock,
            l as _,
            0,
            Ret::Status,
            || real::pthread_rwlock_timedwrlock(l, ts),
            || real::pthread_rwlock_trywrlock(l),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_clockwrlock(
    l: *mut pthread_rwlock_t,
    clk: clockid_t,
    ts: *const timespec,
) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::RwlockTimedwrlock,
            l as _,
            clk as u64,
            Ret::Status,
            || real::pthread_rwlock_clockwrlock(l, clk, ts),
            || real::pthread_rwlock_trywrlock(l),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_unlock(l: *mut pthread_rwlock_t) -> c_int {
    // SAFETY: see above.
    unsafe { release(Call::RwlockUnlock, l as _, Ret::Status, true, || real::pthread_rwlock_unlock(l)) }
}

/// A condition wait. It releases the mutex as it starts (inside libc): that release is an event
/// of its own, taken before the thread blocks, so whoever takes the mutex next comes after it.
/// Replay: release the mutex in turn, wait for the turn of the wake-up the primary got, take the
/// mutex back. Going live while waiting counts as a spurious wake-up (the program re-checks its
/// condition and waits for real), recorded as one by a backup that records on.
fn cond_wait_with(call: Call, c: *mut pthread_cond_t, m: *mut pthread_mutex_t, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else { return real() };
    if state::mode() == state::MODE_REPLAY {
        if let Some(t) = hook.turn(Call::CondWaitRelease) {
            // SAFETY: the program holds `m`, as a condition wait requires; it gets it back below.
            unsafe { real::pthread_mutex_unlock(m) };
            t.done();
            let Some(t) = hook.turn(call) else {
                // SAFETY: as above.
                unsafe { real::pthread_mutex_lock(m) };
                // A spurious wake-up, recorded so by a backup that records on as primary: its
                // own backups wake their waiter here too.
                hook.emit(ev(call, 0, Ret::Status, c as _, m as u64), &[]);
                return 0;
            };
            // SAFETY: as above.
            if unsafe { real::pthread_mutex_trylock(m) } != 0 {
                t.diverge(format_args!(
                    "{}: the mutex is held on this backup when the primary's waiter took it back",
                    call.name()
                ));
            }
            let r = t.result() as c_int;
            if r == libc::ETIMEDOUT {
                let ctx = t.ctx();
                drop(t);
                crate::replay::let_runners_pass(ctx);
            }
            return r;
        }
        // Gone live before the wait began: wait for real (and record it, recording on).
    }
    hook.emit_inner(Ev::new(Call::CondWaitRelease).aux(c as u64, m as u64), &[]);
    let r = real();
    hook.emit(ev(call, r, Ret::Status, c as _, m as u64), &[]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) -> c_int {
    // SAFETY: see above.
    cond_wait_with(Call::CondWait, c, m, || unsafe { real::pthread_cond_wait(c, m) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_timedwait(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    ts: *const timespec,
) -> c_int {
    // SAFETY: see above.
    cond_wait_with(Call::CondTimedwait, c, m, || unsafe { real::pthread_cond_timedwait(c, m, ts) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_clockwait(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    clk: clockid_t,
    ts: *const timespec,
) -> c_int {
    // SAFETY: see above.
    cond_wait_with(Call::CondTimedwait, c, m, || unsafe { real::pthread_cond_clockwait(c, m, clk, ts) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_signal(c: *mut pthread_cond_t) -> c_int {
    // SAFETY: see above (a backup's waiters do not sleep on the real condition variable).
    unsafe { release(Call::CondSignal, c as _, Ret::Status, false, || real::pthread_cond_signal(c)) }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_broadcast(c: *mut pthread_cond_t) -> c_int {
    // SAFETY: see above.
    unsafe { release(Call::CondBroadcast, c as _, Ret::Status, false, || real::pthread_cond_broadcast(c)) }
}

#[no_mangle]
pub unsafe extern "C" fn sem_wait(s: *mut sem_t) -> c_int {
    // SAFETY: see above.
    unsafe { acquire(Call::SemWait, s as _, 0, Ret::Errno, || real::sem_wait(s), || real::sem_trywait(s)) }
}

#[no_mangle]
pub unsafe extern "C" fn sem_trywait(s: *mut sem_t) -> c_int {
    // SAFETY: see above.
    unsafe { acquire(Call::SemTrywait, s as _, 0, Ret::Errno, || real::sem_trywait(s), || real::sem_trywait(s)) }
}

#[no_mangle]
pub unsafe extern "C" fn sem_timedwait(s: *mut sem_t, ts: *const timespec) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(Call::SemTimedwait, s as _, 0, Ret::Errno, || real::sem_timedwait(s, ts), || real::sem_trywait(s))
    }
}

#[no_mangle]
pub unsafe extern "C" fn sem_clockwait(s: *mut sem_t, clk: clockid_t, ts: *const timespec) -> c_int {
    // SAFETY: see above.
    unsafe {
        acquire(
            Call::SemTimedwait,
            s as _,
            clk as u64,
            Ret::Errno,
            || real::sem_clockwait(s, clk, ts),
            || real::sem_trywait(s),
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn sem_post(s: *mut sem_t) -> c_int {
    // SAFETY: see above.
    unsafe { release(Call::SemPost, s as _, Ret::Errno, true, || real::sem_post(s)) }
}
