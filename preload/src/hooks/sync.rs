//! Locks, condition variables and semaphores. An acquisition takes its sequence number after the
//! real call returns (the lock is held, so nobody else can take it in between); a release takes
//! its number before the real call (the lock is still held). So sequence order is the order in
//! which the program really took its locks. aux[0] is the object's address (for reading the
//! log; a backup never uses it).

use crate::real;
use crate::state::{Ev, Hook};
use core::ffi::{c_int, c_void};
use eventlog::Call;
use libc::{clockid_t, pthread_cond_t, pthread_mutex_t, pthread_rwlock_t, sem_t, timespec};

/// How a call reports failure.
#[derive(Clone, Copy)]
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

#[inline(always)]
fn acquire(
    call: Call,
    obj: *const c_void,
    aux1: u64,
    ret: Ret,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let r = real();
    hook.emit(ev(call, r, ret, obj, aux1), &[]);
    r
}

#[inline(always)]
fn release(call: Call, obj: *const c_void, ret: Ret, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    let seq = hook.reserve();
    let r = real();
    hook.emit_at(seq, ev(call, r, ret, obj, 0), &[]);
    r
}

macro_rules! sync_hooks {
    ($( $kind:ident $name:ident ( $obj:ident : $oty:ty $(, $a:ident : $t:ty)* ) => $call:ident, $ret:ident, $aux:expr; )*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($obj: $oty $(, $a: $t)*) -> c_int {
                let aux: u64 = $aux;
                let _ = aux;
                // SAFETY: forwarding the program's own arguments.
                sync_hooks!(@$kind $call, $obj, aux, $ret, || unsafe { real::$name($obj $(, $a)*) })
            }
        )*
    };
    (@acquire $call:ident, $obj:ident, $aux:ident, $ret:ident, $f:expr) => {
        acquire(Call::$call, $obj as *const c_void, $aux, Ret::$ret, $f)
    };
    (@release $call:ident, $obj:ident, $aux:ident, $ret:ident, $f:expr) => {
        release(Call::$call, $obj as *const c_void, Ret::$ret, $f)
    };
}

sync_hooks! {
    acquire pthread_mutex_lock(m: *mut pthread_mutex_t) => MutexLock, Status, 0;
    acquire pthread_mutex_trylock(m: *mut pthread_mutex_t) => MutexTrylock, Status, 0;
    acquire pthread_mutex_timedlock(m: *mut pthread_mutex_t, ts: *const timespec) => MutexTimedlock, Status, 0;
    acquire pthread_mutex_clocklock(m: *mut pthread_mutex_t, clk: clockid_t, ts: *const timespec) => MutexTimedlock, Status, clk as u64;
    release pthread_mutex_unlock(m: *mut pthread_mutex_t) => MutexUnlock, Status, 0;
    acquire pthread_rwlock_rdlock(l: *mut pthread_rwlock_t) => RwlockRdlock, Status, 0;
    acquire pthread_rwlock_tryrdlock(l: *mut pthread_rwlock_t) => RwlockTryrdlock, Status, 0;
    acquire pthread_rwlock_timedrdlock(l: *mut pthread_rwlock_t, ts: *const timespec) => RwlockTimedrdlock, Status, 0;
    acquire pthread_rwlock_clockrdlock(l: *mut pthread_rwlock_t, clk: clockid_t, ts: *const timespec) => RwlockTimedrdlock, Status, clk as u64;
    acquire pthread_rwlock_wrlock(l: *mut pthread_rwlock_t) => RwlockWrlock, Status, 0;
    acquire pthread_rwlock_trywrlock(l: *mut pthread_rwlock_t) => RwlockTrywrlock, Status, 0;
    acquire pthread_rwlock_timedwrlock(l: *mut pthread_rwlock_t, ts: *const timespec) => RwlockTimedwrlock, Status, 0;
    acquire pthread_rwlock_clockwrlock(l: *mut pthread_rwlock_t, clk: clockid_t, ts: *const timespec) => RwlockTimedwrlock, Status, clk as u64;
    release pthread_rwlock_unlock(l: *mut pthread_rwlock_t) => RwlockUnlock, Status, 0;
    acquire pthread_cond_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) => CondWait, Status, m as u64;
    acquire pthread_cond_timedwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, ts: *const timespec) => CondTimedwait, Status, m as u64;
    acquire pthread_cond_clockwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, clk: clockid_t, ts: *const timespec) => CondTimedwait, Status, m as u64;
    release pthread_cond_signal(c: *mut pthread_cond_t) => CondSignal, Status, 0;
    release pthread_cond_broadcast(c: *mut pthread_cond_t) => CondBroadcast, Status, 0;
    acquire sem_wait(s: *mut sem_t) => SemWait, Errno, 0;
    acquire sem_trywait(s: *mut sem_t) => SemTrywait, Errno, 0;
    acquire sem_timedwait(s: *mut sem_t, ts: *const timespec) => SemTimedwait, Errno, 0;
    acquire sem_clockwait(s: *mut sem_t, clk: clockid_t, ts: *const timespec) => SemTimedwait, Errno, clk as u64;
    release sem_post(s: *mut sem_t) => SemPost, Errno, 0;
}
