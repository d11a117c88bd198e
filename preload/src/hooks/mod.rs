//! The exported hooks, by family. Each hook enters through [`Hook::enter`](crate::state::Hook),
//! calls the real function, and records one event whose sequence number is taken while the
//! resource it orders is still held: after an acquisition (lock, open, wait), before a release
//! (unlock, close, post, thread or process creation).

pub mod alloc;
pub mod dir;
pub mod fd;
pub mod identity;
pub mod io;
pub mod net;
pub mod poll;
pub mod process;
pub mod random;
pub mod run;
pub mod shell;
pub mod stat;
pub mod sync;
pub mod syscall;
pub mod temp;
pub mod thread;
pub mod time;

use core::ffi::c_char;

/// The bytes of a NUL-terminated string (at most `max`), or empty for null.
///
/// # Safety
/// `s` is null or a valid C string.
pub unsafe fn cstr<'a>(s: *const c_char, max: usize) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    // SAFETY: the caller guarantees a valid C string; we stop at its NUL or at `max`.
    unsafe {
        let mut n = 0;
        while n < max && *s.add(n) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(s as *const u8, n)
    }
}

/// The first `n` bytes at `buf` (empty when `n <= 0`).
///
/// # Safety
/// `buf` holds at least `n` initialised bytes when `n > 0`.
#[inline(always)]
pub unsafe fn bytes<'a, T>(buf: *const T, n: isize) -> &'a [u8] {
    if n <= 0 || buf.is_null() {
        return &[];
    }
    // SAFETY: per the caller.
    unsafe { core::slice::from_raw_parts(buf as *const u8, n as usize) }
}

/// Paths recorded with open-like calls are cut to this length.
pub const PATH_MAX_RECORDED: usize = 4096;
