//! Temporary names (`mkstemp` and its variants, `mkdtemp`, `mktemp`, `tmpnam`, `tmpnam_r`,
//! `tempnam`) and unnamed temporary files (`tmpfile`). The C library makes the name from
//! randomness the shim cannot see, so the name is input: a primary records the name it got; a
//! backup takes the same name and makes the same file or directory there, so that a later open,
//! rename or unlink by that name finds it. A `tmpfile` has no name anyone can use: a backup makes
//! a file of its own the same way, at the primary's descriptor number.

use super::{cstr, PATH_MAX_RECORDED};
use crate::replay::{self, Turn};
use crate::state::{self, Ev, Hook};
use crate::{fdtable, real, sys};
use core::ffi::{c_char, c_int};
use eventlog::ring::sys::syscall6;
use eventlog::{Call, FdKind};
use libc::FILE;

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

/// Where the C library makes `tmpfile`'s files (`P_tmpdir`).
const TMP_DIR: &core::ffi::CStr = c"/tmp";

/// A new file that no name leads to, made as the C library's `tmpfile` makes it: unnamed in
/// `/tmp` (`O_TMPFILE`), or where the file system cannot do that, named and unlinked at once.
/// The descriptor, or -1 with errno.
fn unnamed_file() -> c_int {
    let flags = libc::O_RDWR | libc::O_TMPFILE | libc::O_EXCL;
    // SAFETY: a raw openat of a constant, NUL-terminated path.
    let fd = unsafe {
        syscall6(libc::SYS_openat, [libc::AT_FDCWD as usize, TMP_DIR.as_ptr() as usize, flags as usize, 0o600, 0, 0])
    };
    if fd >= 0 {
        return fd as c_int;
    }
    let mut name = *b"/tmp/tmpfXXXXXX\0";
    // SAFETY: a writable, NUL-terminated template of our own.
    let fd = unsafe { real::mkostemps(name.as_mut_ptr() as *mut c_char, 0, 0) };
    if fd >= 0 {
        // SAFETY: the NUL-terminated name just made; the file lives on through its descriptor.
        unsafe { syscall6(libc::SYS_unlinkat, [libc::AT_FDCWD as usize, name.as_ptr() as usize, 0, 0, 0, 0]) };
    }
    fd
}

/// tmpfile: the descriptor is what the event records. The file is made inside the hook; the
/// stream, which the program's allocator provides, outside it (as fopen's), so calls the
/// allocator makes are events like any other, after this one on every host.
#[no_mangle]
pub unsafe extern "C" fn tmpfile() -> *mut FILE {
    let fd = {
        let Some(hook) = Hook::enter() else {
            // SAFETY: plain tmpfile.
            return unsafe { real::tmpfile() };
        };
        let fd = match hook.turn(Call::Tmpfile) {
            Some(t) if t.result() < 0 => {
                t.ret();
                return core::ptr::null_mut();
            }
            Some(t) => {
                let fd = unnamed_file();
                replay::place_fd(&t, fd)
            }
            None => {
                let fd = unnamed_file();
                let kind = if fd >= 0 { FdKind::File } else { FdKind::Unknown };
                hook.emit(Ev::new(Call::Tmpfile).fd(fd, kind).result(fd as i64), &[]);
                fd
            }
        };
        if fd < 0 {
            return core::ptr::null_mut();
        }
        fdtable::set(fd, FdKind::File);
        fd
    };
    // SAFETY: our own new descriptor, opened for reading and writing; "w+" as the C library's.
    let f = unsafe { real::fdopen(fd, c"w+".as_ptr()) };
    if f.is_null() {
        let errno = sys::errno();
        // SAFETY: our own descriptor; closed through the hook, so the close is an event.
        unsafe { super::fd::close(fd) };
        sys::set_errno(errno);
    }
    f
}

#[no_mangle]
pub unsafe extern "C" fn tmpfile64() -> *mut FILE {
    // SAFETY: the same call (off_t is 64-bit here).
    unsafe { tmpfile() }
}

/// The C library's `L_tmpnam`: room for a name tmpnam makes, with its NUL.
const L_TMPNAM: usize = 20;

/// What `tmpnam(NULL)` returns on a backup: the primary's name, in a buffer of the shim's (the
/// C library's own is as static, and as shared by every call).
static mut TMPNAM_BUFFER: [u8; L_TMPNAM] = [0; L_TMPNAM];

/// tmpnam and tmpnam_r: the name, into `s` or (tmpnam with a null `s`) a static buffer. The
/// result is 0, or -1 when the call gave no name.
///
/// # Safety
/// `s` is null or holds `L_TMPNAM` bytes, as the C calls require.
unsafe fn name_into(s: *mut c_char, static_when_null: bool, real: impl FnOnce() -> *mut c_char) -> *mut c_char {
    let Some(hook) = Hook::enter() else { return real() };
    if let Some(t) = hook.turn(Call::Tmpnam) {
        let out = match (s.is_null(), static_when_null) {
            (false, _) => s,
            (true, true) => core::ptr::addr_of_mut!(TMPNAM_BUFFER) as *mut c_char,
            (true, false) => core::ptr::null_mut(),
        };
        if t.result() < 0 || out.is_null() {
            t.ret();
            return core::ptr::null_mut();
        }
        let n = t.payload_len();
        if n >= L_TMPNAM {
            t.diverge(format_args!("the primary's name is {n} bytes long, more than a tmpnam buffer holds"));
        }
        // SAFETY: `out` holds L_TMPNAM bytes (the program's, per the caller, or ours); the name
        // and its NUL fit.
        unsafe {
            t.payload(0, core::slice::from_raw_parts_mut(out as *mut u8, n));
            *out.add(n) = 0;
        }
        return out;
    }
    let r = real();
    // SAFETY: a name the C library just made, or null.
    let name = unsafe { cstr(r, PATH_MAX_RECORDED) };
    hook.emit(Ev::new(Call::Tmpnam).result(if r.is_null() { -1 } else { 0 }), &[name]);
    r
}

#[no_mangle]
pub unsafe extern "C" fn tmpnam(s: *mut c_char) -> *mut c_char {
    // SAFETY: forwarding the program's own buffer.
    unsafe { name_into(s, true, || real::tmpnam(s)) }
}

#[no_mangle]
pub unsafe extern "C" fn tmpnam_r(s: *mut c_char) -> *mut c_char {
    // SAFETY: as above; tmpnam_r gives no name without a buffer.
    unsafe { name_into(s, false, || real::tmpnam_r(s)) }
}

/// tempnam: a name in memory from the program's allocator. The real call runs outside the hook on
/// every host (as fopen's), so the allocator's own calls are events in the same place; a backup
/// then writes the primary's name over its own, which has the same length unless the hosts'
/// temporary directories differ (then it gets a string of the right length instead).
#[no_mangle]
pub unsafe extern "C" fn tempnam(dir: *const c_char, pfx: *const c_char) -> *mut c_char {
    if !state::active() {
        // SAFETY: forwarding the program's own arguments.
        return unsafe { real::tempnam(dir, pfx) };
    }
    replay::wait_for_own_turn();
    // SAFETY: as above.
    let got = unsafe { real::tempnam(dir, pfx) };
    let Some(hook) = Hook::enter() else { return got };
    // SAFETY: a name the C library just made, or null.
    let here = unsafe { cstr(got, PATH_MAX_RECORDED) };
    let Some(t) = hook.turn(Call::Tempnam) else {
        hook.emit(Ev::new(Call::Tempnam).result(if got.is_null() { -1 } else { 0 }), &[here]);
        return got;
    };
    let mut name = [0u8; PATH_MAX_RECORDED];
    let n = t.payload(0, &mut name);
    if t.result() >= 0 && !got.is_null() && here.len() == n {
        // SAFETY: the string tempnam just allocated, `n` bytes before its NUL.
        t.payload(0, unsafe { core::slice::from_raw_parts_mut(got as *mut u8, n) });
        return got;
    }
    let failed = t.result() < 0;
    t.ret();
    let errno = sys::errno();
    drop(t);
    drop(hook);
    // SAFETY: the program's allocator, outside the hook, as the real call used it: the string
    // this backup got is given back, one of the primary's length made.
    unsafe {
        if !got.is_null() {
            libc::free(got as *mut libc::c_void);
        }
        if failed {
            sys::set_errno(errno);
            return core::ptr::null_mut();
        }
        let out = libc::malloc(n + 1) as *mut u8;
        if !out.is_null() {
            core::ptr::copy_nonoverlapping(name.as_ptr(), out, n);
            *out.add(n) = 0;
        }
        out as *mut c_char
    }
}
