//! `mallctl`: jemalloc's background thread stays off under the shim.
//!
//! That thread decides when to purge from counters it reads and writes without a lock while the
//! other threads change them between their calls (dirty pages per arena, the next wake-up), so no
//! order of calls makes a backup's copy decide as the primary's did: its next call differs and the
//! replay diverges (redis turns the thread on at start, `jemalloc-bg-thread yes`). Without it,
//! jemalloc purges from the allocating threads as they go, under locks the shim orders: memory is
//! given back to the system on the next allocations instead of on a timer, and nothing the
//! program computes changes. A program that asks for the thread gets success and no thread; the
//! agent says so once.
//!
//! Only the runtime switch is covered: `MALLOC_CONF=background_thread:true` starts the thread
//! before any call, and is not supported (docs/support.md).

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

type MallctlFn = unsafe extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;

/// The allocator's own `mallctl` (0: the program has no jemalloc).
static REAL_MALLCTL: AtomicUsize = AtomicUsize::new(0);
static SAID: AtomicBool = AtomicBool::new(false);

/// Looks up the allocator's `mallctl`, from the library's constructor (its absence is normal:
/// most programs do not use jemalloc). A jemalloc loaded later with `dlopen` is not seen.
pub fn resolve() {
    let p = crate::dl::real_dlsym(libc::RTLD_NEXT, c"mallctl".as_ptr());
    REAL_MALLCTL.store(p as usize, Ordering::Relaxed);
}

/// Whether a `mallctl` call turns jemalloc's background thread on.
///
/// # Safety
/// `name` is null or a C string; `newp` is null or points to `newlen` bytes.
unsafe fn starts_background_thread(name: *const c_char, newp: *const c_void, newlen: usize) -> bool {
    if newp.is_null() || newlen != 1 {
        return false;
    }
    // SAFETY: per the caller; the name is read up to its NUL or one byte past the one we match.
    let name = unsafe { super::cstr(name, 32) };
    // SAFETY: `newp` points to `newlen` (1) bytes: jemalloc's bool.
    name == b"background_thread" && unsafe { *(newp as *const u8) } != 0
}

/// # Safety
/// jemalloc's contract for `mallctl`.
#[no_mangle]
pub unsafe extern "C" fn mallctl(
    name: *const c_char,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *mut c_void,
    newlen: usize,
) -> c_int {
    let real = REAL_MALLCTL.load(Ordering::Relaxed);
    if real == 0 {
        return libc::ENOENT;
    }
    // SAFETY: `real` is the address dlsym returned for jemalloc's mallctl, whose signature
    // MallctlFn mirrors.
    let real: MallctlFn = unsafe { core::mem::transmute(real) };
    let mut off = 0u8;
    let mut newp = newp;
    // SAFETY: the program's own arguments, per mallctl's contract.
    if crate::state::active() && unsafe { starts_background_thread(name, newp, newlen) } {
        newp = &mut off as *mut u8 as *mut c_void;
        if !SAID.swap(true, Ordering::Relaxed) {
            crate::msg::report!(
                "jemalloc's background thread is kept off: it purges from counters no call orders (memory goes back to the system on later allocations instead)"
            );
        }
    }
    // SAFETY: the program's arguments, with `newp` at most swapped for a local bool that lives
    // through the call.
    unsafe { real(name, oldp, oldlenp, newp, newlen) }
}
