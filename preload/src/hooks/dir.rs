//! Directory listings: `readdir` and `readdir_r` (and their 64-bit names, the same functions on
//! this ABI), the `getdents64` wrapper and the `getdents64` and `getdents` system calls.
//!
//! Input. A backup's data directories hold the primary's names, but the order a directory lists
//! them in is its file system's: ext4's hash order is seeded per file system, and the view's
//! overlay lists the captured entries first, then those written during the run. A program that
//! does something per entry in listing order (`ls -l` stats them) would diverge. A primary records
//! each entry it is given (or the buffer `getdents` filled); a backup hands back the primary's,
//! in the primary's order, with the primary's `d_ino` and `d_off`, and checks that each named
//! entry is in its own directory (an `fstatat` of the name, by raw system call, not following a
//! link) and, where the primary's entry says, of the same type. Directories under `/proc`, `/sys`
//! and `/dev` belong to the host: there the primary's entries are taken unasked.
//!
//! A backup does not read its own stream: `readdir` hands back a pointer into a buffer the shim
//! owns, one per stream (a small table keyed by the `DIR` pointer), valid until the next
//! `readdir` on that stream, as POSIX allows. `opendir`, `closedir`, `rewinddir`, `seekdir` and
//! `telldir` run for real; the C library's own listings (`scandir`, `glob`, `nftw`, `fts`) read
//! the directory through internal calls that are not hooked.

use super::fd::host_specific;
use super::run::{self, Particular};
use super::stat::Subject;
use super::{bytes, cstr};
use crate::real;
use crate::replay::Turn;
use crate::state::{Ev, Hook};
use crate::sys;
use core::cell::{Cell, UnsafeCell};
use core::ffi::{c_int, c_long, c_void};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use eventlog::ring::sys::syscall6;
use eventlog::{Call, FdKind};

type Dirent = libc::dirent64;

/// Where `d_name` starts in a `struct dirent64` (after `d_ino`, `d_off`, `d_reclen`, `d_type`);
/// a recorded entry is these bytes and the name, without its NUL.
const NAME: usize = 19;
const TYPE: usize = 18;
const DIRENT: usize = core::mem::size_of::<Dirent>();
const _: () = assert!(core::mem::offset_of!(Dirent, d_name) == NAME);
const _: () = assert!(core::mem::offset_of!(Dirent, d_type) == TYPE);

/// How many streams a backup keeps an entry for at once; the one used longest ago gives its
/// buffer up to a new stream (a closed stream's buffer so goes back into use).
const STREAMS: usize = 64;

#[repr(C, align(8))]
struct Buffer {
    /// The `DIR` pointer of the stream it holds an entry of, or 0.
    dir: AtomicUsize,
    /// When it was last handed out (a count of handouts).
    used: AtomicU64,
    entry: UnsafeCell<[u8; DIRENT]>,
}

// SAFETY: `dir` and `used` are atomics; `entry` is written only by the thread reading the stream
// that holds the buffer, as a `DIR`'s own buffer is (the C library's readdir takes the stream's
// lock; a program that reads one stream from two threads at once gets no more from POSIX).
unsafe impl Sync for Buffer {}

static BUFFERS: [Buffer; STREAMS] =
    [const { Buffer { dir: AtomicUsize::new(0), used: AtomicU64::new(0), entry: UnsafeCell::new([0; DIRENT]) } };
        STREAMS];
static HANDOUTS: AtomicU64 = AtomicU64::new(0);

/// The shim's buffer for the entries of stream `dir` (a backup's `readdir` returns it).
fn buffer_for(dir: usize) -> *mut Dirent {
    let now = HANDOUTS.fetch_add(1, Ordering::Relaxed) + 1;
    let take = |b: &Buffer| {
        b.used.store(now, Ordering::Relaxed);
        b.entry.get() as *mut Dirent
    };
    if let Some(b) = BUFFERS.iter().find(|b| b.dir.load(Ordering::Acquire) == dir) {
        return take(b);
    }
    loop {
        // A free buffer, else the one handed out longest ago.
        let age = |b: &Buffer| if b.dir.load(Ordering::Relaxed) == 0 { 0 } else { b.used.load(Ordering::Relaxed) };
        let oldest = BUFFERS.iter().fold(&BUFFERS[0], |a, b| if age(b) < age(a) { b } else { a });
        let was = oldest.dir.load(Ordering::Relaxed);
        if oldest.dir.compare_exchange(was, dir, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return take(oldest);
        }
    }
}

/// A `d_type` as a word for reports.
fn type_name(t: u8) -> &'static str {
    match t {
        libc::DT_REG => "a regular file",
        libc::DT_DIR => "a directory",
        libc::DT_LNK => "a symbolic link",
        libc::DT_FIFO => "a fifo",
        libc::DT_SOCK => "a socket",
        libc::DT_CHR => "a character device",
        libc::DT_BLK => "a block device",
        _ => "of another type",
    }
}

/// Whether a backup asks its own file system about the entries of directory `fd`: not where the
/// primary's descriptor was not local state, nor for a directory of the host.
fn asked(t: &Turn, fd: c_int) -> bool {
    let kind = t.kind();
    if !matches!(kind, FdKind::Unknown) && !kind.is_local_state() {
        return false;
    }
    let mut buf = [0u8; 512];
    let path = sys::fd_path(fd, &mut buf);
    !(host_specific(path) || matches!(path, b"/proc" | b"/sys" | b"/dev"))
}

/// Checks that the primary's entry `name` (of `d_type` `kind`) is in this backup's directory `fd`.
#[inline(never)]
fn check_entry(t: &Turn, call: Call, fd: c_int, name: &[u8], kind: u8) {
    let mut z = [0u8; 257];
    let n = name.len().min(256);
    z[..n].copy_from_slice(&name[..n]);
    // SAFETY: all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let args = [fd as usize, z.as_ptr() as usize, &mut st as *mut _ as usize, libc::AT_SYMLINK_NOFOLLOW as usize, 0, 0];
    // SAFETY: a NUL-terminated name and a `stat` to fill, both on this stack; the raw system call
    // (the shim's fstatat is a hook).
    let r = unsafe { syscall6(libc::SYS_newfstatat, args) };
    let what = Subject(Some(name), fd);
    if r < 0 {
        t.diverge(format_args!("{call} fd {fd}: the primary listed {what}, which is not here (errno {})", -r));
    }
    let here = ((st.st_mode & libc::S_IFMT) >> 12) as u8;
    if kind != libc::DT_UNKNOWN && here != kind {
        let (there, here) = (type_name(kind), type_name(here));
        t.diverge(format_args!("{call} fd {fd}: {what} is {there} on the primary, {here} here"));
    }
}

/// One `readdir` or `readdir_r` on stream `dir` (descriptor `fd`).
struct Entry<'a, F> {
    dir: *mut libc::DIR,
    fd: c_int,
    /// Where a backup writes the primary's entry: `readdir_r`'s, or null for the shim's buffer.
    dest: *mut Dirent,
    /// The entry the call gives the program.
    got: &'a Cell<*mut Dirent>,
    /// Runs the call: 1 with `got` set for an entry, 0 at the end, -1 with errno on failure.
    real: F,
}

impl<F: FnMut(&Cell<*mut Dirent>) -> i64> Particular for Entry<'_, F> {
    #[inline(always)]
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)(self.got)
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        let e = self.got.get();
        if ev.result != 1 || e.is_null() {
            hook.emit(ev, &[]);
            return;
        }
        // SAFETY: the C library's entry, valid until the next readdir on the stream; `d_name` is
        // NUL-terminated within its 256 bytes.
        let name = unsafe { cstr((*e).d_name.as_ptr(), 256) };
        // SAFETY: the entry's fixed fields and its name, all inside the struct.
        let entry = unsafe { bytes(e, (NAME + name.len()) as isize) };
        hook.emit(ev, &[entry]);
    }

    fn verify(&mut self, t: &Turn) {
        if t.result() != 1 {
            return;
        }
        let dest = if self.dest.is_null() { buffer_for(self.dir as usize) } else { self.dest };
        let n = t.payload_len().min(DIRENT - 1);
        // SAFETY: `dest` is the shim's buffer of a whole `struct dirent64`, or the entry the
        // program gave `readdir_r`, which holds a name of up to NAME_MAX bytes and its NUL: the
        // recorded entry (at most `NAME` + 255 bytes) and a NUL fit in either.
        let out = unsafe { core::slice::from_raw_parts_mut(dest as *mut u8, n + 1) };
        t.payload(0, &mut out[..n]);
        out[n] = 0;
        self.got.set(dest);
        if n > NAME && asked(t, self.fd) {
            check_entry(t, Call::Readdir, self.fd, &out[NAME..n], out[TYPE]);
        }
    }

    /// Done by `verify`, which fills the entry before it checks it.
    fn hand_back(&mut self, _t: &Turn) {}
}

/// The descriptor of stream `dir` (-1 for none).
///
/// # Safety
/// `dir` is null or a stream the program opened.
unsafe fn dir_fd(dir: *mut libc::DIR) -> c_int {
    if dir.is_null() {
        return -1;
    }
    // SAFETY: per the caller; `dirfd` is not hooked.
    unsafe { real::dirfd(dir) }
}

#[no_mangle]
pub unsafe extern "C" fn readdir64(dir: *mut libc::DIR) -> *mut Dirent {
    let got = Cell::new(null_mut());
    // SAFETY: the program's stream.
    let fd = unsafe { dir_fd(dir) };
    let real = |got: &Cell<*mut Dirent>| {
        // The end of the directory leaves errno as it was; a failure sets it.
        let saved = sys::errno();
        sys::set_errno(0);
        // SAFETY: the program's own stream.
        let e = unsafe { real::readdir64(dir) };
        if !e.is_null() {
            sys::set_errno(saved);
            got.set(e);
            return 1;
        }
        if sys::errno() != 0 {
            return -1;
        }
        sys::set_errno(saved);
        0
    };
    let r = run::on_fd(Call::Readdir, fd, [0; 2], Entry { dir, fd, dest: null_mut(), got: &got, real });
    if r == 1 {
        got.get()
    } else {
        null_mut()
    }
}

#[no_mangle]
pub unsafe extern "C" fn readdir(dir: *mut libc::DIR) -> *mut Dirent {
    // SAFETY: the same call: struct dirent64 is struct dirent on this ABI.
    unsafe { readdir64(dir) }
}

#[no_mangle]
pub unsafe extern "C" fn readdir64_r(dir: *mut libc::DIR, entry: *mut Dirent, result: *mut *mut Dirent) -> c_int {
    let got = Cell::new(null_mut());
    // SAFETY: the program's stream.
    let fd = unsafe { dir_fd(dir) };
    let real = |got: &Cell<*mut Dirent>| {
        let mut out = null_mut();
        // SAFETY: the program's stream and entry; `out` is on this stack.
        let r = unsafe { real::readdir64_r(dir, entry, &mut out) };
        if r != 0 {
            sys::set_errno(r);
            return -1;
        }
        if out.is_null() {
            return 0;
        }
        got.set(out);
        1
    };
    let saved = sys::errno();
    let r = run::on_fd(Call::Readdir, fd, [0; 2], Entry { dir, fd, dest: entry, got: &got, real });
    let status = if r < 0 { sys::errno() } else { 0 };
    sys::set_errno(saved);
    if !result.is_null() {
        // SAFETY: the program's result pointer, which readdir_r always sets.
        unsafe { *result = if r == 1 { got.get() } else { null_mut() } };
    }
    status
}

#[no_mangle]
pub unsafe extern "C" fn readdir_r(dir: *mut libc::DIR, entry: *mut Dirent, result: *mut *mut Dirent) -> c_int {
    // SAFETY: the same call: struct dirent64 is struct dirent on this ABI.
    unsafe { readdir64_r(dir, entry, result) }
}

/// One `getdents64` or `getdents` into the program's `buf` of `count` bytes.
struct Batch<F> {
    call: Call,
    fd: c_int,
    buf: *mut u8,
    count: usize,
    /// Runs the call for at most the given number of bytes.
    real: F,
}

impl<F: FnMut(usize) -> i64> Particular for Batch<F> {
    #[inline(always)]
    fn real(&mut self, cap: usize) -> i64 {
        // A smaller buffer gets fewer entries, as many as fit.
        (self.real)(self.count.min(cap))
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        // SAFETY: the call filled the first `result` bytes of the program's buffer.
        hook.emit(ev, &[unsafe { bytes(self.buf, ev.result as isize) }]);
    }

    fn verify(&mut self, t: &Turn) {
        if t.result() <= 0 || self.buf.is_null() {
            return;
        }
        let n = (t.result() as usize).min(self.count);
        // SAFETY: the program's buffer of `count` bytes, which its call asked to be filled.
        let out = unsafe { core::slice::from_raw_parts_mut(self.buf, n) };
        t.payload(0, out);
        if !asked(t, self.fd) {
            return;
        }
        // `linux_dirent64` keeps the type before the name; the old `linux_dirent` has the name
        // at 18 and the type in the record's last byte.
        let old = self.call == Call::Getdents;
        let mut at = 0usize;
        while at + NAME < n {
            let reclen = u16::from_le_bytes([out[at + 16], out[at + 17]]) as usize;
            let Some(record) = out.get(at..at + reclen).filter(|_| reclen > NAME) else { break };
            let (name, kind) =
                if old { (&record[18..reclen - 1], record[reclen - 1]) } else { (&record[NAME..], record[TYPE]) };
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            check_entry(t, self.call, self.fd, &name[..end], kind);
            at += reclen;
        }
    }

    /// Done by `verify`, which fills the buffer before it checks its entries.
    fn hand_back(&mut self, _t: &Turn) {}
}

#[no_mangle]
pub unsafe extern "C" fn getdents64(fd: c_int, buf: *mut c_void, count: usize) -> isize {
    // SAFETY: forwarding the program's own arguments, the count no more than its own.
    let real = |n: usize| unsafe { real::getdents64(fd, buf, n) } as i64;
    let b = Batch { call: Call::Getdents64, fd, buf: buf as *mut u8, count, real };
    run::on_fd(Call::Getdents64, fd, [count as u64, 0], b) as isize
}

/// `syscall(SYS_getdents, ...)`: the old `struct linux_dirent` records.
///
/// # Safety
/// `buf` is valid for `count` bytes of writes.
pub unsafe fn getdents(fd: c_int, buf: *mut c_void, count: usize) -> c_long {
    // SAFETY: forwarding the program's own arguments, the count no more than its own.
    let real =
        |n: usize| unsafe { real::syscall(libc::SYS_getdents, fd as c_long, buf as c_long, n as c_long, 0, 0, 0) };
    let b = Batch { call: Call::Getdents, fd, buf: buf as *mut u8, count, real };
    run::on_fd(Call::Getdents, fd, [count as u64, 0], b) as c_long
}
