//! `dlsym`: a program or library that looks up one of the shim's hooked functions by name (to call
//! it without going through the dynamic linker's usual binding) gets the hook, not libc's
//! function. jemalloc, for one, starts its background thread through
//! `dlsym(RTLD_NEXT, "pthread_create")`.
//!
//! Any other lookup must behave exactly as without the shim, including `RTLD_NEXT`, which libc
//! resolves relative to the caller's return address: the hook is a trampoline that asks whether
//! the name is one of ours and otherwise jumps (not calls) to the real `dlsym`, leaving the
//! caller's return address in place.

use core::ffi::{c_char, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

/// The real dlsym (libc's), and this library's load address.
static REAL_DLSYM: AtomicUsize = AtomicUsize::new(0);
static OWN_BASE: AtomicUsize = AtomicUsize::new(0);
/// 0: not looked up; 1: being looked up; 2: done.
static RESOLVED: AtomicUsize = AtomicUsize::new(0);

type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

/// Finds libc's dlsym (through dlvsym, which the shim does not hook) and this library's load
/// address. Allocates nothing: it can run inside the first malloc of an allocator that itself
/// calls dlsym while it initialises.
pub fn resolve() {
    if RESOLVED.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    // SAFETY: dlvsym and dladdr with constant strings and a local Dl_info.
    unsafe {
        let mut p = libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), c"GLIBC_2.34".as_ptr());
        if p.is_null() {
            p = libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), c"GLIBC_2.2.5".as_ptr());
        }
        REAL_DLSYM.store(p as usize, Ordering::Release);
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(resolve as *const c_void, &mut info) != 0 {
            OWN_BASE.store(info.dli_fbase as usize, Ordering::Release);
        }
    }
    RESOLVED.store(2, Ordering::Release);
}

/// libc's dlsym, for the shim's own lookups (relative to this library).
pub fn real_dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    resolve();
    let p = REAL_DLSYM.load(Ordering::Acquire);
    if p == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: `p` is libc's dlsym; arguments are passed through.
    unsafe { core::mem::transmute::<usize, DlsymFn>(p)(handle, name) }
}

/// The shim's own definition of `name`, if it hooks that function.
extern "C" fn own_definition(name: *const c_char) -> *mut c_void {
    resolve();
    let base = OWN_BASE.load(Ordering::Acquire);
    if base == 0 || name.is_null() || RESOLVED.load(Ordering::Acquire) != 2 {
        return core::ptr::null_mut();
    }
    // The global scope finds the program's own definition first, then ours (we are preloaded).
    let p = real_dlsym(libc::RTLD_DEFAULT, name);
    if p.is_null() {
        return p;
    }
    // SAFETY: dladdr on an address dlsym returned, with a local Dl_info.
    let ours = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        libc::dladdr(p, &mut info) != 0 && info.dli_fbase as usize == base
    };
    if ours {
        p
    } else {
        core::ptr::null_mut()
    }
}

#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    core::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "mov rdi, rsi",
        "call {own}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jnz 2f",
        "jmp qword ptr [rip + {real}]",
        "2:",
        "ret",
        own = sym own_definition,
        real = sym REAL_DLSYM,
    )
}
