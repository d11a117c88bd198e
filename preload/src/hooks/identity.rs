//! Identity: pids, tids, host name, kernel name. Input like any other: a backup answers with the
//! primary's values.

use super::{bytes, cstr};
use crate::real;
use crate::state::{Ev, Hook};
use core::ffi::{c_char, c_int};
use eventlog::Call;
use libc::{pid_t, size_t, utsname};

/// Records an identity call returning a plain value (a backup answers with the primary's).
fn identity(call: Call, real: impl FnOnce() -> pid_t) -> pid_t {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    if let Some(t) = hook.turn(call) {
        if call == Call::Getpid {
            crate::replay::PRIMARY_SELF.store(t.result() as pid_t, core::sync::atomic::Ordering::Relaxed);
        }
        return t.result() as pid_t;
    }
    let r = real();
    hook.emit(Ev::new(call).result(r as i64), &[]);
    r
}

#[no_mangle]
pub extern "C" fn getpid() -> pid_t {
    // SAFETY: no arguments.
    identity(Call::Getpid, || unsafe { real::getpid() })
}

#[no_mangle]
pub extern "C" fn getppid() -> pid_t {
    // SAFETY: no arguments.
    identity(Call::Getppid, || unsafe { real::getppid() })
}

#[no_mangle]
pub extern "C" fn gettid() -> pid_t {
    // SAFETY: no arguments.
    identity(Call::Gettid, || unsafe { real::gettid() })
}

/// gethostname: the payload is the name as returned (up to its NUL).
///
/// # Safety
/// `name` is valid for `len` bytes.
unsafe fn hostname_with(name: *mut c_char, len: size_t, real: impl FnOnce() -> c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        return real();
    };
    if let Some(t) = hook.turn(Call::Gethostname) {
        if t.result() == 0 && len > 0 {
            // SAFETY: per the caller; the name is NUL-terminated when it fits.
            unsafe {
                let n = t.payload(0, core::slice::from_raw_parts_mut(name as *mut u8, len));
                if n < len {
                    *name.add(n) = 0;
                }
            }
        }
        return t.ret() as c_int;
    }
    let r = real();
    let s = if r == 0 {
        // SAFETY: on success `name` holds a string of at most `len` bytes.
        unsafe { cstr(name, len) }
    } else {
        &[]
    };
    hook.emit(Ev::new(Call::Gethostname).result(r as i64).aux(len as u64, 0), &[s]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn gethostname(name: *mut c_char, len: size_t) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { hostname_with(name, len, || real::gethostname(name, len)) }
}

#[no_mangle]
pub unsafe extern "C" fn __gethostname_chk(name: *mut c_char, len: size_t, buflen: size_t) -> c_int {
    // SAFETY: as above.
    unsafe { hostname_with(name, len, || real::__gethostname_chk(name, len, buflen)) }
}

#[no_mangle]
pub unsafe extern "C" fn uname(buf: *mut utsname) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own argument.
        return unsafe { real::uname(buf) };
    };
    if let Some(t) = hook.turn(Call::Uname) {
        if t.result() == 0 {
            // SAFETY: the program's utsname.
            t.payload(0, unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, core::mem::size_of::<utsname>()) });
        }
        return t.ret() as c_int;
    }
    // SAFETY: as above.
    let r = unsafe { real::uname(buf) };
    let n = if r == 0 { core::mem::size_of::<utsname>() as isize } else { 0 };
    // SAFETY: filled on success.
    hook.emit(Ev::new(Call::Uname).result(r as i64), &[unsafe { bytes(buf, n) }]);
    r
}
