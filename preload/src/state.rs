//! Process and thread state of the shim, and the guard every hook enters through.

use crate::sys;
use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use eventlog::ring::{Producer, Region};
use eventlog::{Call, FdKind};

/// Hooks pass straight through (not launched by tandem, or before the constructor).
pub const MODE_OFF: u32 = 0;
pub const MODE_RECORD: u32 = 1;

pub static MODE: AtomicU32 = AtomicU32::new(MODE_OFF);

/// This process's logical pid.
pub static LPID: AtomicU32 = AtomicU32::new(0);
/// Threads created so far by this process (the next one gets this + 1).
pub static THREADS_CREATED: AtomicU32 = AtomicU32::new(0);
/// Descriptor of the shared region in this process.
pub static SHM_FD: AtomicI32 = AtomicI32::new(-1);

/// The shared region, set once by the constructor before MODE leaves MODE_OFF.
struct RegionCell(UnsafeCell<Option<Region>>);
// SAFETY: written only by the constructor (single-threaded, before any hook is active), read-only
// afterwards.
unsafe impl Sync for RegionCell {}
static REGION: RegionCell = RegionCell(UnsafeCell::new(None));

pub fn set_region(region: Region) {
    // SAFETY: called from the constructor only, before MODE is set (see RegionCell).
    unsafe { *REGION.0.get() = Some(region) }
}

pub fn region() -> Option<Region> {
    // SAFETY: see RegionCell; after the constructor the cell is never written again.
    unsafe { *REGION.0.get() }
}

/// The mode's name in the `TANDEM_MODE` variable.
pub fn mode_name() -> &'static [u8] {
    match MODE.load(Ordering::Relaxed) {
        MODE_RECORD => b"record",
        _ => b"off",
    }
}

/// A fork child takes its logical pid and starts over as thread 0 with a ring of its own.
pub fn become_child(lpid: u32) {
    LPID.store(lpid, Ordering::Relaxed);
    THREADS_CREATED.store(0, Ordering::Relaxed);
    crate::fdtable::set_process(sys::getpid());
    crate::signals::reset_after_fork();
    ctx().start(eventlog::ids::MAIN_TID);
}

#[inline(always)]
pub fn active() -> bool {
    MODE.load(Ordering::Relaxed) != MODE_OFF
}

/// Per-thread state. Const-initialised and free of destructors, so the thread-local is a plain
/// TLS slot: no lazy registration, safe to touch from signal handlers and during thread exit.
pub struct ThreadCtx {
    in_hook: Cell<bool>,
    pub ltid: Cell<u32>,
    producer: UnsafeCell<Option<Producer>>,
    /// Thread-directed signals caught by the wrapper handler, delivered at the next boundary.
    pub pending_signals: AtomicU64,
}

thread_local! {
    static CTX: ThreadCtx = const {
        ThreadCtx {
            in_hook: Cell::new(false),
            ltid: Cell::new(0),
            producer: UnsafeCell::new(None),
            pending_signals: AtomicU64::new(0),
        }
    };
}

/// This thread's context.
#[inline(always)]
pub fn ctx() -> &'static ThreadCtx {
    // SAFETY: the thread-local lives as long as the thread, and the reference never leaves it
    // (ThreadCtx is !Sync, so &ThreadCtx is !Send).
    CTX.with(|c| unsafe { &*(c as *const ThreadCtx) })
}

impl ThreadCtx {
    /// Gives this thread its identity and ring (thread start, constructor, fork child).
    pub fn start(&self, ltid: u32) {
        self.ltid.set(ltid);
        // SAFETY: only this thread touches its producer, and not while a hook of its own is using
        // it (start runs outside hooks or as the first thing in a new thread/child).
        unsafe { *self.producer.get() = None };
        self.claim();
    }

    /// Claims a ring for this thread, waiting while every ring is taken.
    fn claim(&self) {
        let Some(region) = region() else { return };
        let lpid = LPID.load(Ordering::Relaxed);
        let mut warned = false;
        loop {
            if let Some(p) =
                Producer::claim(region, sys::getpid(), sys::gettid(), lpid, self.ltid.get())
            {
                // SAFETY: as in `start`.
                unsafe { *self.producer.get() = Some(p) };
                return;
            }
            if !warned {
                crate::msg::report!(
                    "all {} event rings are taken; thread {lpid}.{} waits for one (raise --max-threads)",
                    region.geometry().ring_count,
                    self.ltid.get()
                );
                warned = true;
            }
            sys::sleep_ns(1_000_000);
        }
    }

    /// Closes this thread's ring (thread exit, before exec).
    pub fn finish(&self) {
        // SAFETY: as in `start`.
        if let Some(p) = unsafe { (*self.producer.get()).take() } {
            p.close();
        }
    }

    /// This thread's ring, claiming one first if needed; null when there is no region.
    ///
    /// The pointer is only dereferenced by the `Hook` methods of this thread, one at a time: hooks
    /// do not nest (the in_hook guard) and signal handlers never touch the ring.
    #[inline(always)]
    fn producer(&self) -> *mut Producer {
        // SAFETY: only this thread touches its producer cell (see above).
        unsafe {
            if (*self.producer.get()).is_none() {
                self.claim();
            }
            match &mut *self.producer.get() {
                Some(p) => p,
                None => core::ptr::null_mut(),
            }
        }
    }
}

/// What one event says, before it gets its sequence number and identity.
#[derive(Clone, Copy)]
pub struct Ev {
    pub call: Call,
    pub fd: i32,
    pub flags: u16,
    pub result: i64,
    pub errno: i32,
    pub digest: u64,
    pub aux: [u64; 2],
}

impl Ev {
    #[inline(always)]
    pub const fn new(call: Call) -> Ev {
        Ev {
            call,
            fd: -1,
            flags: 0,
            result: 0,
            errno: 0,
            digest: 0,
            aux: [0; 2],
        }
    }

    #[inline(always)]
    pub const fn fd(mut self, fd: i32, kind: FdKind) -> Ev {
        self.fd = fd;
        self.flags = (self.flags & !FdKind::MASK) | kind as u16;
        self
    }

    /// The call's result; errno is taken from the thread when `result` is negative.
    #[inline(always)]
    pub fn result(mut self, result: i64) -> Ev {
        self.result = result;
        self.errno = sys::errno_if(result);
        self
    }

    /// A failure the shim itself decided (-1 with `errno`).
    #[inline(always)]
    pub const fn failed(mut self, errno: i32) -> Ev {
        self.result = -1;
        self.errno = errno;
        self
    }

    /// For calls that return an error number instead of setting errno (pthread_*).
    #[inline(always)]
    pub const fn status(mut self, status: i32) -> Ev {
        self.result = status as i64;
        self.errno = status;
        self
    }

    #[inline(always)]
    pub const fn digest(mut self, digest: u64) -> Ev {
        self.digest = digest;
        self
    }

    #[inline(always)]
    pub const fn aux(mut self, a: u64, b: u64) -> Ev {
        self.aux = [a, b];
        self
    }
}

/// Proof that the current thread is inside a hook with the shim active. Dropping it leaves the
/// hook and delivers signals that arrived meanwhile (the call boundary).
pub struct Hook {
    ctx: &'static ThreadCtx,
}

impl Hook {
    /// Enters a hook; `None` means "pass through": the shim is off, or this thread is already
    /// inside a hook (the shim's own work must not be recorded).
    #[inline(always)]
    pub fn enter() -> Option<Hook> {
        if !active() {
            return None;
        }
        let ctx = ctx();
        if ctx.in_hook.replace(true) {
            return None;
        }
        Some(Hook { ctx })
    }

    pub fn ctx(&self) -> &'static ThreadCtx {
        self.ctx
    }

    /// Takes a sequence number now, for an event written after a call that must be ordered by
    /// its start (creations).
    #[inline(always)]
    pub fn reserve(&self) -> u64 {
        // SAFETY: see `ThreadCtx::producer`: the only live reference, for this hook only.
        unsafe { self.ctx.producer().as_mut() }.map_or(0, |p| p.take_seq())
    }

    /// Records `ev` with a new sequence number; `payload` parts are stored back to back.
    #[inline(always)]
    pub fn emit(&self, ev: Ev, payload: &[&[u8]]) {
        // SAFETY: see `ThreadCtx::producer`: the only live reference, for this hook only.
        if let Some(p) = unsafe { self.ctx.producer().as_mut() } {
            let seq = p.take_seq();
            write(p, self.ctx, seq, ev, payload);
        }
    }

    /// A release (unlock, post, close): takes the sequence number before `call` runs (the
    /// resource is still held), runs it, and records the event `call` describes.
    #[inline(always)]
    pub fn release<R>(&self, call: impl FnOnce() -> (R, Ev)) -> R {
        // SAFETY: see `ThreadCtx::producer`: the only live reference, for this hook only.
        match unsafe { self.ctx.producer().as_mut() } {
            Some(p) => {
                let seq = p.take_seq();
                let (r, ev) = call();
                write(p, self.ctx, seq, ev, &[]);
                r
            }
            None => call().0,
        }
    }

    /// Records `ev` under a sequence number taken earlier with [`Hook::reserve`].
    #[inline(always)]
    pub fn emit_at(&self, seq: u64, ev: Ev, payload: &[&[u8]]) {
        // SAFETY: see `ThreadCtx::producer`: the only live reference, for this hook only.
        if let Some(p) = unsafe { self.ctx.producer().as_mut() } {
            write(p, self.ctx, seq, ev, payload);
        }
    }
}

#[inline(always)]
fn write(p: &mut Producer, ctx: &ThreadCtx, seq: u64, ev: Ev, payload: &[&[u8]]) {
    let mut len = 0usize;
    for part in payload {
        len += part.len();
    }
    let (pid, tid) = (LPID.load(Ordering::Relaxed), ctx.ltid.get());
    p.write_with(
        len,
        |h| {
            h.seq = seq;
            h.pid = pid;
            h.tid = tid;
            h.call = ev.call as u16;
            h.flags = ev.flags;
            h.fd = ev.fd;
            h.result = ev.result;
            h.errno = ev.errno;
            h.digest = ev.digest;
            h.aux = ev.aux;
        },
        payload,
    );
}

impl Drop for Hook {
    #[inline(always)]
    fn drop(&mut self) {
        self.ctx.in_hook.set(false);
        if crate::signals::any_pending(self.ctx) {
            crate::signals::deliver_pending();
        }
    }
}

/// Leaves a hook without the boundary's signal delivery (used by the delivery itself).
pub fn leave_without_delivery(hook: Hook) {
    hook.ctx.in_hook.set(false);
    core::mem::forget(hook);
}
