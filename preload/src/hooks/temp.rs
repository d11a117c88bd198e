//! Temporary names (`mkstemp` and its variants, `mkdtemp`, `mktemp`). The C library makes the
//! name from randomness the shim cannot see, so the name is input: a primary records the name it
//! got; a backup takes the same name and makes the same file or directory there, so that a later
//! open, rename or unlink by that name finds it.

use super::{cstr, PATH_MAX_RECORDED};
use crate::fdtable;
use crate::real;
use crate::replay::{self, Turn};
use crate::state::{Ev, Hook};
use core::ffi::{c_char, c_int};
use eventlog::ring::sys::syscall6;
use eventlog::Call;

/// Puts the primary's name into the program's template, which must be as long as the name.
///
/// # Safety
/// `template` is the program's NUL-terminated template.
unsafe fn take_name(t: &Turn, template: *mut c_char) {
    // SAFETY: per the caller.
    let here = unsafe { cstr(template, PATH_MAX_RECORDED) }.len();
    if here != t.payload_len() {
        t.diverge(format_args!("the template is {here} bytes long here, the primary's name {} bytes", t.payload_len()));
    }
    // SAFETY: per the caller; exactly `here` bytes, leaving the template's NUL in place.
    t.payload(0, unsafe { core::slice::from_raw_parts_mut(template as *mut u8, here) });
}

/// The mkstemp family: `suffix_len` and `flags` as mkostemps takes them.
///
/// # Safety
/// `template` is the program's NUL-terminated, writable template.
unsafe fn make_file(template: *mut c_char, suffix_len: c_int, flags: c_int) -> c_int {
    let Some(hook) = Hook::enter() else {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::mkostemps(template, suffix_len, flags) };
    };
    let aux = [flags as u32 as u64, suffix_len as u64];
    if let Some(t) = hook.turn(Call::Mkstemp) {
        t.expect("the flags", t.header().aux[0] as i64, aux[0] as i64);
        t.expect("the suffix length", t.header().aux[1] as i64, aux[1] as i64);
        if t.result() < 0 {
            return t.ret() as c_int;
        }
        // SAFETY: per the caller; the name is the primary's, in this backup's own directory.
        let fd = unsafe {
            take_name(&t, template);
            let create = libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | (flags & !libc::O_EXCL);
            real::open(template, create, 0o600)
        };
        let fd = replay::place_fd(&t, fd);
        // SAFETY: per the caller.
        fdtable::classify_opened(fd, Some(unsafe { cstr(template, PATH_MAX_RECORDED) }));
        return fd;
    }
    // SAFETY: forwarding the program's own arguments.
    let r = unsafe { real::mkostemps(template, suffix_len, flags) };
    // SAFETY: per the caller; on success the template holds the name made.
    let name = if r >= 0 { unsafe { cstr(template, PATH_MAX_RECORDED) } } else { &[] };
    fdtable::classify_opened(r, Some(name));
    let ev = Ev::new(Call::Mkstemp).fd(r, fdtable::kind(r)).result(r as i64).aux(aux[0], aux[1]);
    hook.emit(ev, &[name]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn mkstemp(template: *mut c_char) -> c_int {
    // SAFETY: forwarding the program's own template.
    unsafe { make_file(template, 0, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn mkostemp(template: *mut c_char, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { make_file(template, 0, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn mkstemps(template: *mut c_char, suffix_len: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { make_file(template, suffix_len, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn mkostemps(template: *mut c_char, suffix_len: c_int, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { make_file(template, suffix_len, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn mkstemp64(template: *mut c_char) -> c_int {
    // SAFETY: the same call (off_t is 64-bit here).
    unsafe { make_file(template, 0, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn mkostemp64(template: *mut c_char, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { make_file(template, 0, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn mkstemps64(template: *mut c_char, suffix_len: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { make_file(template, suffix_len, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn mkostemps64(template: *mut c_char, suffix_len: c_int, flags: c_int) -> c_int {
    // SAFETY: as above.
    unsafe { make_file(template, suffix_len, flags) }
}

/// mkdtemp and mktemp: the result is 0 (the template holds the name) or -1 with errno; `make`
/// is what a backup does with the primary's name (mkdtemp: the directory).
///
/// # Safety
/// `template` is the program's NUL-terminated, writable template.
unsafe fn make_name(
    call: Call,
    template: *mut c_char,
    real: impl FnOnce() -> *mut c_char,
    make: impl FnOnce(*mut c_char),
) -> *mut c_char {
    let Some(hook) = Hook::enter() else { return real() };
    if let Some(t) = hook.turn(call) {
        if t.result() < 0 {
            t.ret();
            if call == Call::Mktemp {
                // mktemp fails with an empty name rather than a null pointer.
                // SAFETY: per the caller.
                unsafe { *template = 0 };
                return template;
            }
            return core::ptr::null_mut();
        }
        // SAFETY: per the caller.
        unsafe { take_name(&t, template) };
        make(template);
        return template;
    }
    let r = real();
    // SAFETY: per the caller; on success the template holds the name.
    let name = if r.is_null() { &[][..] } else { unsafe { cstr(template, PATH_MAX_RECORDED) } };
    let ev = Ev::new(call).result(if r.is_null() || name.is_empty() { -1 } else { 0 });
    hook.emit(ev, &[name]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn mkdtemp(template: *mut c_char) -> *mut c_char {
    // SAFETY: forwarding the program's own template; the backup makes the primary's directory
    // in its own directory (a raw mkdir: the call is the shim's own).
    unsafe {
        make_name(
            Call::Mkdtemp,
            template,
            || real::mkdtemp(template),
            |name| {
                syscall6(libc::SYS_mkdir, [name as usize, 0o700, 0, 0, 0, 0]);
            },
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn mktemp(template: *mut c_char) -> *mut c_char {
    // SAFETY: forwarding the program's own template; mktemp makes nothing but the name.
    unsafe { make_name(Call::Mktemp, template, || real::mktemp(template), |_| {}) }
}
