//! The shim's view of the program's descriptors: what each one is (replay treats kinds
//! differently), a per-descriptor lock for calls whose order must equal their sequence order, and
//! each descriptor's epoll registrations (the program's `epoll_data` is replaced by the fd number in
//! the kernel, so `epoll_wait` results can be recorded as fds and translated back).

use crate::sys;
use core::ffi::c_int;
use core::sync::atomic::{AtomicI32, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use eventlog::ring::pipes::Way;
use eventlog::FdKind;

/// Descriptors above this are classified on every call and cannot be in epoll sets.
pub const MAX_FDS: usize = 65536;
/// Epoll sets one descriptor can be registered in at once.
pub const EPOLL_REGS: usize = 4;

struct EpollReg {
    /// epoll fd + 1 (0: unused).
    epfd_plus1: AtomicI32,
    data: AtomicU64,
}

struct FdEntry {
    kind: AtomicU8,
    /// Non-zero: a stand-in for a connection that existed only on the primary (replay). Once
    /// live it reads as closed and refuses writes.
    dead: AtomicU8,
    /// The slot of the file's lock in the region ([`eventlog::ring::inodes`]) plus one, for a
    /// regular file; [`NOT_REGULAR`] for anything else; 0 while not known yet.
    inode: AtomicU16,
    /// The inode of one of the program's own pipes, 0 while not known yet.
    pipe: AtomicU64,
    /// Owner's real pid, plus WAITERS. A pid other than ours means the lock was held in the
    /// parent when this process forked: nobody here holds it.
    lock: AtomicU32,
    epoll: [EpollReg; EPOLL_REGS],
}

const WAITERS: u32 = 1 << 31;
/// `FdEntry::inode` of a descriptor that is not a regular file.
const NOT_REGULAR: u16 = u16::MAX;

impl FdEntry {
    const fn new() -> FdEntry {
        FdEntry {
            kind: AtomicU8::new(0),
            dead: AtomicU8::new(0),
            inode: AtomicU16::new(0),
            pipe: AtomicU64::new(0),
            lock: AtomicU32::new(0),
            epoll: [const { EpollReg { epfd_plus1: AtomicI32::new(0), data: AtomicU64::new(0) } }; EPOLL_REGS],
        }
    }
}

static TABLE: [FdEntry; MAX_FDS] = [const { FdEntry::new() }; MAX_FDS];
/// Real pid of this process, for the per-descriptor locks (updated in a fork child).
static MY_PID: AtomicU32 = AtomicU32::new(0);

fn entry(fd: c_int) -> Option<&'static FdEntry> {
    usize::try_from(fd).ok().and_then(|i| TABLE.get(i))
}

/// Called by the constructor and in a fork child.
pub fn set_process(pid: i32) {
    MY_PID.store(pid as u32, Ordering::Relaxed);
}

/// The kind of `fd`, classifying it on first sight.
#[inline]
pub fn kind(fd: c_int) -> FdKind {
    let Some(e) = entry(fd) else {
        return classify(fd, None);
    };
    match e.kind.load(Ordering::Relaxed) {
        0 => {
            let (k, inode) = classify_inode(fd, None);
            e.inode.store(inode, Ordering::Relaxed);
            e.kind.store(k as u8, Ordering::Relaxed);
            k
        }
        k => FdKind::from_bits(k as u16),
    }
}

/// Changes what an open descriptor is (it started listening), keeping its epoll registrations.
pub fn set_kind(fd: c_int, kind: FdKind) {
    if let Some(e) = entry(fd) {
        e.kind.store(kind as u8, Ordering::Relaxed);
    }
}

/// Describes a descriptor just created (or reused): its kind, and no registrations yet. Which
/// file it is, if a regular one, is looked up when a call first needs to know.
pub fn set(fd: c_int, kind: FdKind) {
    set_with_inode(fd, kind, 0);
}

fn set_with_inode(fd: c_int, kind: FdKind, inode: u16) {
    if let Some(e) = entry(fd) {
        e.inode.store(inode, Ordering::Relaxed);
        e.pipe.store(0, Ordering::Relaxed);
        e.kind.store(kind as u8, Ordering::Relaxed);
        e.dead.store(0, Ordering::Relaxed);
        for r in &e.epoll {
            r.epfd_plus1.store(0, Ordering::Relaxed);
        }
    }
}

/// Marks `fd` as a stand-in for a connection only the primary had.
pub fn set_dead(fd: c_int) {
    if let Some(e) = entry(fd) {
        e.dead.store(1, Ordering::Relaxed);
    }
}

/// Whether `fd` stands in for a connection only the primary had.
#[inline(always)]
pub fn is_dead(fd: c_int) -> bool {
    entry(fd).is_some_and(|e| e.dead.load(Ordering::Relaxed) != 0)
}

/// Forgets `fd` (closed).
pub fn clear(fd: c_int) {
    set(fd, FdKind::Unknown);
}

/// Classifies a descriptor the program just opened by `path` (None: look it up).
pub fn classify_opened(fd: c_int, path: Option<&[u8]>) {
    if fd >= 0 {
        let (k, inode) = classify_inode(fd, path);
        set_with_inode(fd, k, inode);
    }
}

/// Works out what `fd` is from the kernel's view of it.
pub fn classify(fd: c_int, path: Option<&[u8]>) -> FdKind {
    classify_inode(fd, path).0
}

/// [`classify`], with the `FdEntry::inode` value of what it found.
fn classify_inode(fd: c_int, path: Option<&[u8]>) -> (FdKind, u16) {
    let Some(st) = sys::fstat(fd) else {
        return (FdKind::Unknown, 0);
    };
    (classify_stat(fd, path, &st), inode_of(&st))
}

/// The `FdEntry::inode` value of a descriptor `fstat` says `st` of.
fn inode_of(st: &libc::stat) -> u16 {
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        eventlog::ring::inodes::inode_slot(st.st_dev, st.st_ino) + 1
    } else {
        NOT_REGULAR
    }
}

/// The slot of the lock of the regular file `fd` is (`None`: not one).
#[inline(always)]
pub fn inode_slot(fd: c_int) -> Option<u16> {
    let Some(e) = entry(fd) else {
        return sys::fstat(fd).map(|st| inode_of(&st)).filter(|&i| i != NOT_REGULAR).map(|i| i - 1);
    };
    let mut inode = e.inode.load(Ordering::Relaxed);
    if inode == 0 {
        inode = sys::fstat(fd).map_or(NOT_REGULAR, |st| inode_of(&st));
        e.inode.store(inode, Ordering::Relaxed);
    }
    (inode != NOT_REGULAR).then(|| inode - 1)
}

fn classify_stat(fd: c_int, path: Option<&[u8]>, st: &libc::stat) -> FdKind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR => {
            let mut buf = [0u8; 256];
            match path {
                Some(p) if p.first() == Some(&b'/') => FdKind::of_file(p),
                _ => FdKind::of_file(sys::fd_path(fd, &mut buf)),
            }
        }
        libc::S_IFCHR => FdKind::of_char_device(libc::major(st.st_rdev), libc::minor(st.st_rdev)),
        libc::S_IFIFO if is_inner_pipe(fd, st) => FdKind::InnerPipe,
        libc::S_IFIFO => FdKind::Pipe,
        libc::S_IFSOCK => match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) {
            Some(1) => FdKind::Listener,
            _ => FdKind::Socket,
        },
        _ => {
            let mut buf = [0u8; 64];
            FdKind::of_anon_inode(sys::fd_path(fd, &mut buf))
        }
    }
}

/// Whether the pipe `fd` (with status `st`) has both ends in the program: a pipe (not a FIFO, which
/// has a name and any process may open) that the program was not started with.
fn is_inner_pipe(fd: c_int, st: &libc::stat) -> bool {
    let mut buf = [0u8; 64];
    sys::fd_path(fd, &mut buf).starts_with(b"pipe:")
        && !crate::state::region().is_some_and(|r| r.is_outside_pipe(st.st_ino))
}

/// Notes the pipes among the descriptors the program was started with as leading outside it:
/// its first process calls this before it classifies any descriptor.
pub fn note_outside_pipes() {
    let Some(region) = crate::state::region() else { return };
    // The agent's pipe on the standard input is the program's own: the agent is part of it.
    let agents = region.header().stdin_pipe.load(Ordering::Relaxed);
    for fd in 0..OUTSIDE_SCAN {
        let Some(st) = sys::fstat(fd) else { continue };
        let pipe = st.st_mode & libc::S_IFMT == libc::S_IFIFO && st.st_ino != agents;
        if pipe && !region.add_outside_pipe(st.st_ino) {
            crate::msg::report!(
                "the program was started with more than {} pipes: the one at descriptor {fd} is taken for the program's own",
                eventlog::ring::OUTSIDE_PIPES
            );
        }
    }
}

/// Descriptors the first process looks at for pipes it was started with.
const OUTSIDE_SCAN: c_int = 256;

/// The inode of the pipe `fd` is, if it is one.
pub fn pipe_inode(fd: c_int) -> Option<u64> {
    sys::fstat(fd).filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO).map(|st| st.st_ino)
}

/// Holds `fd`'s lock: calls on the same descriptor take their sequence numbers in the order they
/// really happened.
pub struct FdLock(Option<&'static FdEntry>);

#[inline(always)]
pub fn lock(fd: c_int) -> FdLock {
    let Some(e) = entry(fd) else {
        return FdLock(None);
    };
    let me = MY_PID.load(Ordering::Relaxed);
    let mut want = me;
    loop {
        let cur = e.lock.load(Ordering::Relaxed);
        let holder = cur & !WAITERS;
        if holder != me {
            // Free, or held by the parent we were forked from.
            if e.lock.compare_exchange(cur, want, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return FdLock(Some(e));
            }
            continue;
        }
        if cur & WAITERS == 0
            && e.lock.compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            continue;
        }
        sys::futex_wait_private(&e.lock, cur | WAITERS);
        // Having slept, take the lock marked as contended so other sleepers get woken too.
        want = me | WAITERS;
    }
}

impl Drop for FdLock {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(e) = self.0 {
            if e.lock.swap(0, Ordering::Release) & WAITERS != 0 {
                sys::futex_wake_private(&e.lock, 1);
            }
        }
    }
}

/// Records that `fd` is in epoll set `epfd` with the program's `data`. False if the descriptor
/// is out of range or already in [`EPOLL_REGS`] other sets.
pub fn epoll_register(epfd: c_int, fd: c_int, data: u64) -> bool {
    let Some(e) = entry(fd) else { return false };
    let tag = epfd + 1;
    let mut free = None;
    for r in &e.epoll {
        match r.epfd_plus1.load(Ordering::Relaxed) {
            t if t == tag => {
                r.data.store(data, Ordering::Relaxed);
                return true;
            }
            0 if free.is_none() => free = Some(r),
            t if free.is_none() && kind(t - 1) != FdKind::Epoll => free = Some(r),
            _ => {}
        }
    }
    match free {
        Some(r) => {
            r.data.store(data, Ordering::Relaxed);
            r.epfd_plus1.store(tag, Ordering::Release);
            true
        }
        None => false,
    }
}

pub fn epoll_unregister(epfd: c_int, fd: c_int) {
    if let Some(e) = entry(fd) {
        for r in &e.epoll {
            let _ = r.epfd_plus1.compare_exchange(epfd + 1, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// The program's `epoll_data` for `fd` in set `epfd`.
pub fn epoll_data(epfd: c_int, fd: c_int) -> Option<u64> {
    let e = entry(fd)?;
    e.epoll.iter().find(|r| r.epfd_plus1.load(Ordering::Acquire) == epfd + 1).map(|r| r.data.load(Ordering::Relaxed))
}

/// Holds the lock of a regular file (of its slot in the region's table): calls on one file, from
/// any thread or process of the program, take their sequence numbers in the order they ran.
pub struct FileLock {
    region: eventlog::ring::Region,
    slot: u16,
}

impl Drop for FileLock {
    #[inline(always)]
    fn drop(&mut self) {
        self.region.unlock_inode(self.slot);
    }
}

/// Holds the lock of one direction of one of the program's own pipes (see
/// [`eventlog::ring::pipes`]).
pub struct PipeLock {
    region: eventlog::ring::Region,
    index: u16,
    way: Way,
}

impl PipeLock {
    /// Notes `seq` as the number of the pipe's last call this way; the one before it (0: none).
    pub fn swap_last(&self, seq: u64) -> u64 {
        self.region.pipe_swap_last(self.index, self.way, seq)
    }
}

impl Drop for PipeLock {
    #[inline(always)]
    fn drop(&mut self) {
        self.region.unlock_pipe(self.index, self.way);
    }
}

/// Takes the lock of direction `way` of the pipe `fd` is (one of the program's own), for the
/// thread `ctx`. `None` outside a region, or when `fd` is no pipe.
pub fn lock_pipe(fd: c_int, way: Way, ctx: &crate::state::ThreadCtx) -> Option<PipeLock> {
    let region = crate::state::region()?;
    let inode = match entry(fd) {
        Some(e) => match e.pipe.load(Ordering::Relaxed) {
            0 => {
                let i = pipe_inode(fd)?;
                e.pipe.store(i, Ordering::Relaxed);
                i
            }
            i => i,
        },
        None => pipe_inode(fd)?,
    };
    let index = region.lock_pipe(inode, way, ctx.os_tid());
    Some(PipeLock { region, index, way })
}

/// Takes the locks of the regular files `a` and `b` are (either may be -1, or not a regular
/// file), for the thread `ctx`: in slot order, so that two calls on the same two files never wait
/// for each other, and once when both files have the same slot.
#[inline(always)]
pub fn lock_files(a: c_int, b: c_int, ctx: &crate::state::ThreadCtx) -> [Option<FileLock>; 2] {
    let slot_of = |fd: c_int| if fd >= 0 && kind(fd) == FdKind::File { inode_slot(fd) } else { None };
    let (lo, hi) = match (slot_of(a), slot_of(b)) {
        (None, None) => return [None, None],
        (Some(x), Some(y)) => (Some(x.min(y)), (x != y).then(|| x.max(y))),
        (x, None) => (x, None),
        (None, y) => (y, None),
    };
    let Some(region) = crate::state::region() else {
        return [None, None];
    };
    let tid = ctx.os_tid();
    let take = |s: Option<u16>| {
        s.map(|slot| {
            region.lock_inode(slot, tid);
            FileLock { region, slot }
        })
    };
    let first = take(lo);
    [first, take(hi)]
}
