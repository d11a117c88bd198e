//! The stat family (`stat`, `lstat`, `fstat`, `fstatat`, `statx`, and glibc's older `__xstat`
//! entry points): what the file system says about a file.
//!
//! Input. A backup's data directories hold the primary's names and contents, but it runs later in
//! real time, on other disks: the times of the files its program wrote, inode and device numbers,
//! the directories above the data all differ from the primary's. A primary records the struct the
//! call filled (and the path looked up); a backup runs the call too and checks that it succeeds
//! or fails as the primary's did, with the same errno, and that a regular file has the same size,
//! then hands the primary's struct to the program. Paths under `/proc`, `/sys` and `/dev`, and
//! descriptors that are not local state (sockets, pipes, ttys, stand-ins), belong to the host:
//! there a backup takes the primary's answer without asking its own kernel. `fstat` of a local
//! file takes its sequence number under the descriptor's lock, like the writes that change the
//! size it reports.

use super::fd::host_specific;
use super::run::{self, Particular};
use super::{bytes, cstr, PATH_MAX_RECORDED};
use crate::real;
use crate::replay::Turn;
use crate::state::{Ev, Hook};
use crate::sys;
use core::ffi::{c_char, c_int, c_uint};
use core::fmt;
use eventlog::digest::digest;
use eventlog::{Call, FdKind};

/// Where a struct keeps what a backup compares.
#[derive(Clone, Copy)]
struct Layout {
    len: usize,
    mode: usize,
    /// `st_mode` is 4 bytes, `stx_mode` 2.
    mode_len: usize,
    size: usize,
    /// statx: the bits of `stx_mask` (at offset 0) that must be set for the type and size to be
    /// filled in.
    mask: u32,
}

const STAT: Layout = Layout { len: 144, mode: 24, mode_len: 4, size: 48, mask: 0 };
const STATX: Layout = Layout { len: 256, mode: 28, mode_len: 2, size: 40, mask: libc::STATX_TYPE | libc::STATX_SIZE };

const _: () = assert!(core::mem::size_of::<libc::stat>() == STAT.len);
const _: () = assert!(core::mem::size_of::<libc::statx>() == STATX.len);

/// What a backup compares of one filled struct: its type and, for a regular file, its size.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Facts {
    Regular(u64),
    Other(u32),
    /// statx did not fill in the type and size (it was not asked for them).
    Unknown,
}

impl Layout {
    /// The facts in a struct of this layout; `read(offset, out)` fills `out` from it.
    fn facts(self, mut read: impl FnMut(usize, &mut [u8])) -> Facts {
        if self.mask != 0 {
            let mut mask = [0u8; 4];
            read(0, &mut mask);
            if u32::from_le_bytes(mask) & self.mask != self.mask {
                return Facts::Unknown;
            }
        }
        let mut mode = [0u8; 4];
        read(self.mode, &mut mode[..self.mode_len]);
        let mode = u32::from_le_bytes(mode);
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Facts::Other(mode);
        }
        let mut size = [0u8; 8];
        read(self.size, &mut size);
        Facts::Regular(u64::from_le_bytes(size))
    }
}

/// What a report names: the path looked up, or the descriptor.
pub(super) struct Subject<'a>(pub(super) Option<&'a [u8]>, pub(super) c_int);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(path) = self.0 else { return write!(f, "fd {}", self.1) };
        f.write_str("\"")?;
        for chunk in path.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

/// One stat-like call. `path` is the path looked up (`None` for `fstat`), `fd` the descriptor
/// it is relative to.
struct Query<'a, F> {
    call: Call,
    fd: c_int,
    path: Option<&'a [u8]>,
    buf: *mut u8,
    layout: Layout,
    real: F,
}

impl<F: FnMut() -> c_int> Query<'_, F> {
    fn subject(&self) -> Subject<'_> {
        Subject(self.path, self.fd)
    }

    /// The primary looked up another path: a divergence naming both.
    #[cold]
    fn other_path(&self, t: &Turn) -> ! {
        let mut theirs = [0u8; 512];
        let at = if t.result() >= 0 { self.layout.len } else { 0 };
        let n = t.payload(at, &mut theirs);
        let there = Subject(Some(&theirs[..n]), self.fd);
        t.diverge(format_args!("{}: the primary looked up {there}, this backup {}", self.call, self.subject()))
    }

    /// This backup's call succeeded or failed otherwise than the primary's.
    #[cold]
    fn other_outcome(&self, t: &Turn, errno: c_int) -> ! {
        let (call, what) = (self.call, self.subject());
        match (t.result() < 0, errno) {
            (false, e) => t.diverge(format_args!("{call} {what}: succeeded on the primary, failed here (errno {e})")),
            (true, 0) => {
                t.diverge(format_args!("{call} {what}: failed on the primary (errno {}), succeeded here", t.errno()))
            }
            (true, e) => t.diverge(format_args!("{call} {what}: errno {} on the primary, {e} here", t.errno())),
        }
    }

    /// The file is not what the primary's was.
    #[cold]
    fn other_file(&self, t: &Turn, there: Facts, here: Facts) -> ! {
        let (call, what) = (self.call, self.subject());
        match (there, here) {
            (Facts::Regular(a), Facts::Regular(b)) => {
                t.diverge(format_args!("{call} {what}: a regular file of {a} bytes on the primary, {b} bytes here"))
            }
            (Facts::Regular(a), Facts::Other(m)) => {
                t.diverge(format_args!("{call} {what}: a regular file of {a} bytes on the primary, mode {m:o} here"))
            }
            (_, Facts::Regular(b)) => {
                t.diverge(format_args!("{call} {what}: not a regular file on the primary, {b} bytes here"))
            }
            _ => t.diverge(format_args!("{call} {what}: a different file on the primary")),
        }
    }
}

impl<F: FnMut() -> c_int> Particular for Query<'_, F> {
    #[inline(always)]
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)() as i64
    }

    #[inline(always)]
    fn record(&self, hook: &Hook, ev: Ev) {
        let filled = if ev.result >= 0 { self.layout.len as isize } else { 0 };
        // SAFETY: the call filled the program's struct of `len` bytes when it succeeded.
        let st = unsafe { bytes(self.buf, filled) };
        match self.path {
            Some(p) => hook.emit(ev.digest(digest(p)), &[st, p]),
            None => hook.emit(ev, &[st]),
        }
    }

    fn verify(&mut self, t: &Turn) {
        match self.path {
            Some(p) => {
                if t.header().digest != digest(p) {
                    self.other_path(t);
                }
                if host_specific(p) {
                    return;
                }
            }
            // A descriptor the primary had closed is asked about here too (the same EBADF).
            None if !matches!(t.kind(), FdKind::Unknown) && !t.kind().is_local_state() => return,
            None => {}
        }
        let r = (self.real)();
        let errno = sys::errno_if(r as i64);
        if (r < 0) != (t.result() < 0) || (r < 0 && errno != t.errno()) {
            self.other_outcome(t, errno);
        }
        if r < 0 || self.buf.is_null() {
            return;
        }
        let buf = self.buf;
        let here = self.layout.facts(|at, out| {
            // SAFETY: the call just filled the program's struct, `len` bytes, and the reads stay
            // in it (`at + out.len()` is at most the layout's `size + 8`).
            unsafe { core::ptr::copy_nonoverlapping(buf.add(at), out.as_mut_ptr(), out.len()) }
        });
        let there = self.layout.facts(|at, out| {
            t.payload(at, out);
        });
        // A regular file on either side must be one on both, of the same size (a statx that was
        // not asked for the type and size on either side is not compared).
        let regular = |f: Facts| matches!(f, Facts::Regular(_));
        let known = |f: Facts| !matches!(f, Facts::Unknown);
        if here != there && (regular(here) || regular(there)) && known(here) && known(there) {
            self.other_file(t, there, here);
        }
    }

    #[inline(always)]
    fn hand_back(&mut self, t: &Turn) {
        if t.result() >= 0 && !self.buf.is_null() {
            // SAFETY: the program's struct of `len` bytes, which its call asked to be filled.
            t.payload(0, unsafe { core::slice::from_raw_parts_mut(self.buf, self.layout.len) });
        }
    }
}

/// A lookup of `path` (relative to `dirfd`): `fd` and `aux` are what the event's slots hold.
///
/// # Safety
/// `path` is null or a valid C string; `buf` is null or the program's struct of `layout`.
#[inline(always)]
unsafe fn by_path(
    call: Call,
    dirfd: c_int,
    aux: [u64; 2],
    path: *const c_char,
    buf: *mut u8,
    layout: Layout,
    real: impl FnMut() -> c_int,
) -> c_int {
    // SAFETY: per the caller.
    let p = unsafe { cstr(path, PATH_MAX_RECORDED) };
    run::input(call, dirfd, aux, Query { call, fd: dirfd, path: Some(p), buf, layout, real }) as c_int
}

/// `fstat` of `fd` into the program's `buf`; `real` runs it.
#[inline(always)]
fn of_fd(fd: c_int, buf: *mut libc::stat, real: impl FnMut() -> c_int) -> c_int {
    let q = Query { call: Call::Fstat, fd, path: None, buf: buf as *mut u8, layout: STAT, real };
    run::on_fd(Call::Fstat, fd, [0; 2], q) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { by_path(Call::Stat, libc::AT_FDCWD, [0; 2], path, buf as *mut u8, STAT, || real::stat(path, buf)) }
}

#[no_mangle]
pub unsafe extern "C" fn stat64(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: the same call: struct stat64 is struct stat on this ABI.
    unsafe { stat(path, buf) }
}

#[no_mangle]
pub unsafe extern "C" fn __xstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarding the program's own arguments; the real __xstat checks the version.
    unsafe { by_path(Call::Stat, libc::AT_FDCWD, [0; 2], path, buf as *mut u8, STAT, || real::__xstat(ver, path, buf)) }
}

#[no_mangle]
pub unsafe extern "C" fn __xstat64(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: the same call: struct stat64 is struct stat on this ABI.
    unsafe { __xstat(ver, path, buf) }
}

#[no_mangle]
pub unsafe extern "C" fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    unsafe { by_path(Call::Lstat, libc::AT_FDCWD, [0; 2], path, buf as *mut u8, STAT, || real::lstat(path, buf)) }
}

#[no_mangle]
pub unsafe extern "C" fn lstat64(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: the same call: struct stat64 is struct stat on this ABI.
    unsafe { lstat(path, buf) }
}

#[no_mangle]
pub unsafe extern "C" fn __lxstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarding the program's own arguments; the real __lxstat checks the version.
    unsafe {
        by_path(Call::Lstat, libc::AT_FDCWD, [0; 2], path, buf as *mut u8, STAT, || real::__lxstat(ver, path, buf))
    }
}

#[no_mangle]
pub unsafe extern "C" fn __lxstat64(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: the same call: struct stat64 is struct stat on this ABI.
    unsafe { __lxstat(ver, path, buf) }
}

#[no_mangle]
pub unsafe extern "C" fn fstat(fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    of_fd(fd, buf, || unsafe { real::fstat(fd, buf) })
}

#[no_mangle]
pub unsafe extern "C" fn fstat64(fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: the same call: struct stat64 is struct stat on this ABI.
    unsafe { fstat(fd, buf) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstat(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarding the program's own arguments; the real __fxstat checks the version.
    of_fd(fd, buf, || unsafe { real::__fxstat(ver, fd, buf) })
}

#[no_mangle]
pub unsafe extern "C" fn __fxstat64(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: the same call: struct stat64 is struct stat on this ABI.
    unsafe { __fxstat(ver, fd, buf) }
}

#[no_mangle]
pub unsafe extern "C" fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
    let aux = [flags as u32 as u64, 0];
    // SAFETY: forwarding the program's own arguments.
    unsafe { by_path(Call::Fstatat, dirfd, aux, path, buf as *mut u8, STAT, || real::fstatat(dirfd, path, buf, flags)) }
}

#[no_mangle]
pub unsafe extern "C" fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
    // SAFETY: the same call: struct stat64 is struct stat on this ABI.
    unsafe { fstatat(dirfd, path, buf, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstatat(
    ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    let aux = [flags as u32 as u64, 0];
    // SAFETY: forwarding the program's own arguments; the real __fxstatat checks the version.
    unsafe {
        by_path(Call::Fstatat, dirfd, aux, path, buf as *mut u8, STAT, || {
            real::__fxstatat(ver, dirfd, path, buf, flags)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstatat64(
    ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: the same call: struct stat64 is struct stat on this ABI.
    unsafe { __fxstatat(ver, dirfd, path, buf, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut libc::statx,
) -> c_int {
    let aux = [flags as u32 as u64, mask as u64];
    // SAFETY: forwarding the program's own arguments.
    unsafe {
        by_path(Call::Statx, dirfd, aux, path, buf as *mut u8, STATX, || real::statx(dirfd, path, flags, mask, buf))
    }
}
