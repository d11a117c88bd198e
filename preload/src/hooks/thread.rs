//! Threads. `pthread_create` gives the new thread its logical id (the creating process's n-th
//! thread is thread n) and starts it through a trampoline that sets up its ring (or, on a backup,
//! its slot in the thread table) before the program's start routine runs. The creation takes its
//! sequence number before the real call, so every event of the new thread comes after it. A
//! backup starts the same thread under the id the primary's event recorded.

use crate::real::{self, StartRoutine};
use crate::state::{ctx, Ev, Hook, THREADS_CREATED};
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use eventlog::Call;
use libc::{pthread_attr_t, pthread_t};

/// Hand-over from creator to new thread: a fixed pool, so creating a thread allocates nothing.
struct Launch {
    busy: AtomicU32,
    start: AtomicUsize,
    arg: AtomicUsize,
    ltid: AtomicU32,
}

const LAUNCHES: usize = 256;
static POOL: [Launch; LAUNCHES] = [const {
    Launch { busy: AtomicU32::new(0), start: AtomicUsize::new(0), arg: AtomicUsize::new(0), ltid: AtomicU32::new(0) }
}; LAUNCHES];

fn take_launch() -> &'static Launch {
    loop {
        for l in &POOL {
            if l.busy.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return l;
            }
        }
        // Every slot is mid-hand-over to a thread that has not started yet: wait for one.
        crate::sys::sleep_ns(100_000);
    }
}

extern "C" fn trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the pool slot the creator filled; we copy it out and free it.
    let l = unsafe { &*(p as *const Launch) };
    let (start, arg, ltid) =
        (l.start.load(Ordering::Relaxed), l.arg.load(Ordering::Relaxed), l.ltid.load(Ordering::Relaxed));
    l.busy.store(0, Ordering::Release);
    let c = ctx();
    c.start(ltid);
    crate::replay::hold_new_thread(c);
    // SAFETY: `start` is the program's start routine as it passed it to pthread_create.
    let f: StartRoutine = unsafe { core::mem::transmute(start) };
    let ret = f(arg as *mut c_void);
    c.finish();
    ret
}

#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    t: *mut pthread_t,
    attr: *const pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::pthread_create(t, attr, start, arg) };
    };
    let launch = |ltid: u32| {
        let l = take_launch();
        l.start.store(start as usize, Ordering::Relaxed);
        l.arg.store(arg as usize, Ordering::Relaxed);
        l.ltid.store(ltid, Ordering::Relaxed);
        // SAFETY: the trampoline takes the launch slot as its argument; the rest is the program's.
        let r = unsafe { real::pthread_create(t, attr, trampoline, l as *const Launch as *mut c_void) };
        if r != 0 {
            l.busy.store(0, Ordering::Release);
        }
        r
    };
    // The creation is recorded first (every event of the new thread comes after it); the real
    // call runs outside the hook, since it allocates through the program's allocator.
    let ltid = match hook.turn(Call::PthreadCreate) {
        Some(turn) => turn.header().aux[0] as u32,
        None => {
            let ltid = THREADS_CREATED.fetch_add(1, Ordering::Relaxed) + 1;
            hook.emit(Ev::new(Call::PthreadCreate).aux(ltid as u64, 0), &[]);
            ltid
        }
    };
    THREADS_CREATED.fetch_max(ltid, Ordering::Relaxed);
    drop(hook);
    let r = launch(ltid);
    if r != 0 {
        if let Some(hook) = Hook::enter() {
            match hook.turn(Call::PthreadCreateFailed) {
                Some(turn) => turn.expect_status(r),
                None => hook.emit(Ev::new(Call::PthreadCreateFailed).status(r).aux(ltid as u64, 0), &[]),
            }
        }
    }
    r
}

/// pthread_join frees the thread's resources through the program's allocator: the real call runs
/// outside the hook, and the join is recorded after it.
#[no_mangle]
pub unsafe extern "C" fn pthread_join(t: pthread_t, ret: *mut *mut c_void) -> c_int {
    crate::replay::wait_for_own_turn();
    // SAFETY: forwarding the program's own arguments.
    let r = unsafe { real::pthread_join(t, ret) };
    let Some(hook) = Hook::enter() else { return r };
    match hook.turn(Call::PthreadJoin) {
        Some(turn) => turn.expect_status(r),
        None => hook.emit(Ev::new(Call::PthreadJoin).status(r), &[]),
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn pthread_exit(ret: *mut c_void) -> ! {
    if let Some(hook) = Hook::enter() {
        match hook.turn(Call::PthreadExit) {
            Some(turn) => turn.done(),
            None => hook.emit(Ev::new(Call::PthreadExit), &[]),
        }
        hook.ctx().finish();
    }
    // SAFETY: forwarding the program's own argument; never returns.
    unsafe { real::pthread_exit(ret) };
    unreachable_exit()
}

/// After a libc function that does not return.
pub fn unreachable_exit() -> ! {
    crate::msg::fatal!("a call that never returns returned")
}
