//! Process and thread state of the shim, and the guard every hook enters through.

use crate::sys;
use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use eventlog::record::flags::SIGNAL_NEXT;
use eventlog::ring::feed::Feed;
use eventlog::ring::{Producer, Region};
use eventlog::{Call, FdKind, LogicalPid, LogicalTid, Seq};

/// Hooks pass straight through (not launched by tandem, or before the constructor).
pub const MODE_OFF: u32 = 0;
/// Every call runs for real and is recorded.
pub const MODE_RECORD: u32 = 1;
/// Calls wait for their turn in the feed and hand back (or check) the primary's results.
pub const MODE_REPLAY: u32 = 2;
/// After replay: calls run for real, nothing is recorded; placeholders of the primary's
/// connections read as closed.
pub const MODE_LIVE: u32 = 3;

pub static MODE: AtomicU32 = AtomicU32::new(MODE_OFF);

/// This process's logical pid.
pub static LPID: AtomicU32 = AtomicU32::new(0);
/// Threads created so far by this process (the next one gets this + 1).
pub static THREADS_CREATED: AtomicU32 = AtomicU32::new(0);
/// Descriptor of the shared region in this process.
pub static SHM_FD: AtomicI32 = AtomicI32::new(-1);
/// Upper bound of the random pause before each call, for schedule-perturbation tests (0: none).
pub static JITTER_NS: AtomicU64 = AtomicU64::new(0);

/// Set once by the constructor before MODE leaves MODE_OFF, read-only afterwards.
struct Once<T>(UnsafeCell<Option<T>>);
// SAFETY: written only by the constructor (single-threaded, before any hook is active).
unsafe impl<T> Sync for Once<T> {}
static REGION: Once<Region> = Once(UnsafeCell::new(None));
static FEED: Once<Feed> = Once(UnsafeCell::new(None));

pub fn set_region(region: Region) {
    // SAFETY: called from the constructor only, before MODE is set (see Once).
    unsafe {
        *REGION.0.get() = Some(region);
        *FEED.0.get() = region.feed();
    }
}

pub fn region() -> Option<Region> {
    // SAFETY: see Once; never written after the constructor.
    unsafe { *REGION.0.get() }
}

/// The replay feed (replay and live modes).
#[inline(always)]
pub fn feed() -> Option<Feed> {
    // SAFETY: see Once.
    unsafe { *FEED.0.get() }
}

/// The mode's name in the `TANDEM_MODE` variable (live processes exec'd children replay nothing,
/// so they run live as well).
pub fn mode_name() -> &'static [u8] {
    match MODE.load(Ordering::Relaxed) {
        MODE_RECORD => b"record",
        MODE_REPLAY => b"replay",
        MODE_LIVE => b"live",
        _ => b"off",
    }
}

#[inline(always)]
pub fn mode() -> u32 {
    MODE.load(Ordering::Relaxed)
}

/// A fork child takes its logical pid and starts over as thread 0.
pub fn become_child(lpid: u32) {
    LPID.store(lpid, Ordering::Relaxed);
    THREADS_CREATED.store(0, Ordering::Relaxed);
    crate::fdtable::set_process(sys::getpid());
    crate::signals::reset_after_fork();
    crate::replay::forget_children();
    crate::hooks::shell::after_fork();
    ctx().start(eventlog::ids::MAIN_TID.0);
}

#[inline(always)]
pub fn active() -> bool {
    mode() != MODE_OFF
}

/// Logical tids from here up name threads started without pthread_create.
pub const UNSEEN_THREAD_BASE: u32 = 1 << 20;
static UNSEEN_THREADS: AtomicU32 = AtomicU32::new(0);

/// `ThreadCtx::slot` when the thread has no slot in the replay thread table.
pub const NO_SLOT: u32 = u32::MAX;

/// Per-thread state. Const-initialised and free of destructors, so the thread-local is a plain
/// TLS slot: no lazy registration, safe to touch from signal handlers and during thread exit.
pub struct ThreadCtx {
    in_hook: Cell<bool>,
    /// Set when the thread got its identity from `start` (constructor, fork, pthread_create).
    started: Cell<bool>,
    pub ltid: Cell<u32>,
    producer: UnsafeCell<Option<Producer>>,
    /// This thread's slot in the replay feed's thread table.
    pub slot: Cell<u32>,
    /// Set by the event just written or consumed: a signal is delivered when the hook returns
    /// (recording: the signal chosen; replay: 1, the recorded one follows).
    pub signal_after: Cell<u32>,
    /// Thread-directed signals caught by the wrapper handler, delivered at the next boundary.
    pub pending_signals: AtomicU64,
    /// State of the jitter's random number generator.
    rng: Cell<u64>,
    /// The thread's OS id (0: not looked up yet), the holder's mark in a file's lock.
    os_tid: Cell<u32>,
    /// A write position of the replay feed this thread has seen (see `Feed::peek_seen`).
    pub known_end: Cell<u64>,
}

thread_local! {
    static CTX: ThreadCtx = const {
        ThreadCtx {
            in_hook: Cell::new(false),
            started: Cell::new(false),
            ltid: Cell::new(0),
            producer: UnsafeCell::new(None),
            slot: Cell::new(NO_SLOT),
            signal_after: Cell::new(0),
            pending_signals: AtomicU64::new(0),
            rng: Cell::new(0),
            os_tid: Cell::new(0),
            known_end: Cell::new(0),
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
    /// The thread's OS id (looked up once per thread, and again in a fork child).
    #[inline(always)]
    pub fn os_tid(&self) -> u32 {
        match self.os_tid.get() {
            0 => {
                let tid = sys::gettid() as u32;
                self.os_tid.set(tid);
                tid
            }
            tid => tid,
        }
    }

    /// Gives this thread its identity, and its ring (recording) or its slot in the thread table
    /// (replay): at thread start, in the constructor, in a fork child.
    pub fn start(&self, ltid: u32) {
        self.started.set(true);
        self.os_tid.set(0);
        self.known_end.set(0);
        self.ltid.set(ltid);
        self.signal_after.set(0);
        // SAFETY: only this thread touches its producer, and not while a hook of its own is using
        // it (start runs outside hooks or as the first thing in a new thread/child).
        unsafe { *self.producer.get() = None };
        self.slot.set(NO_SLOT);
        match mode() {
            MODE_RECORD => self.claim(),
            MODE_REPLAY | MODE_LIVE => self.register(),
            _ => {}
        }
    }

    /// Claims a ring for this thread, waiting while every ring is taken.
    fn claim(&self) {
        let Some(region) = region() else { return };
        let lpid = LPID.load(Ordering::Relaxed);
        if !self.started.replace(true) {
            // Started without pthread_create (raw clone): an id from a range of its own, so its
            // events are not mistaken for another thread's.
            let ltid = UNSEEN_THREAD_BASE + UNSEEN_THREADS.fetch_add(1, Ordering::Relaxed);
            self.ltid.set(ltid);
            crate::msg::report!(
                "a thread of process {lpid} (os tid {}) was started without pthread_create; it is recorded as thread {ltid} and cannot be replayed",
                sys::gettid()
            );
        }
        let mut warned = false;
        loop {
            if let Some(p) = Producer::claim(region, sys::getpid(), sys::gettid(), lpid, self.ltid.get()) {
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

    fn register(&self) {
        let Some(feed) = feed() else { return };
        let lpid = LPID.load(Ordering::Relaxed);
        // The agent frees the slots of threads that have ended within milliseconds: only a
        // wait of a second says the table is too small.
        for waited_ms in 0u32.. {
            if let Some(i) = feed.register(lpid, self.ltid.get(), sys::getpid(), sys::gettid()) {
                self.slot.set(i);
                return;
            }
            if waited_ms == 1000 {
                crate::msg::report!(
                    "all {} replay thread slots are taken; thread {lpid}.{} waits for one (raise --max-threads)",
                    feed.thread_count(),
                    self.ltid.get()
                );
            }
            sys::sleep_ns(1_000_000);
        }
    }

    /// Gives back this thread's ring or slot (thread exit, before exec).
    pub fn finish(&self) {
        // SAFETY: as in `start`.
        if let Some(p) = unsafe { (*self.producer.get()).take() } {
            p.close();
        }
        if let (Some(feed), i) = (feed(), self.slot.replace(NO_SLOT)) {
            if i != NO_SLOT {
                feed.unregister(i);
            }
        }
    }

    /// This thread's ring, claiming one first if needed; null when not recording.
    ///
    /// The pointer is only dereferenced by the `Hook` methods of this thread, one at a time: hooks
    /// do not nest (the in_hook guard) and signal handlers never touch the ring.
    #[inline(always)]
    fn producer(&self) -> *mut Producer {
        // SAFETY: only this thread touches its producer cell (see above).
        unsafe {
            if (*self.producer.get()).is_none() && mode() == MODE_RECORD {
                self.claim();
            }
            match &mut *self.producer.get() {
                Some(p) => p,
                None => core::ptr::null_mut(),
            }
        }
    }

    /// The next jitter pause, uniform in [0, max) nanoseconds.
    fn jitter(&self, max: u64) -> u64 {
        let mut x = self.rng.get();
        if x == 0 {
            x = (sys::gettid() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ sys::now_ns() | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x % max
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
    /// Output to the outside world: later outputs need not wait for the backups to hold it.
    pub output: bool,
}

impl Ev {
    #[inline(always)]
    pub const fn new(call: Call) -> Ev {
        Ev { call, fd: -1, flags: 0, result: 0, errno: 0, digest: 0, aux: [0; 2], output: false }
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

    #[inline(always)]
    pub const fn output(mut self, output: bool) -> Ev {
        self.output = output;
        self
    }
}

/// Proof that the current thread is inside a hook with the shim active. Dropping it leaves the
/// hook and delivers a signal that was scheduled at this boundary.
pub struct Hook {
    ctx: &'static ThreadCtx,
}

impl Hook {
    /// Enters a hook; `None` means "pass through": the shim is off, or this thread is already
    /// inside a hook (the shim's own work must not be recorded).
    #[inline(always)]
    pub fn enter() -> Option<Hook> {
        if !active() {
            if !crate::init::not_started() {
                return None;
            }
            crate::init::start_early();
            if !active() {
                return None;
            }
        }
        let ctx = ctx();
        if ctx.in_hook.replace(true) {
            return None;
        }
        let jitter = JITTER_NS.load(Ordering::Relaxed);
        if jitter != 0 {
            sys::sleep_ns(ctx.jitter(jitter));
        }
        Some(Hook { ctx })
    }

    pub fn ctx(&self) -> &'static ThreadCtx {
        self.ctx
    }

    /// In replay, waits for this thread's turn at `call` and returns the recorded event; `None`
    /// when recording or live (run the call for real).
    #[inline(always)]
    pub fn turn(&self, call: Call) -> Option<crate::replay::Turn> {
        if mode() != MODE_REPLAY {
            return None;
        }
        crate::replay::turn(self.ctx, call)
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
            write(p, self.ctx, seq, ev, payload, true);
        }
    }

    /// Records an event that is not a call boundary: no signal is delivered after it (a signal
    /// delivery itself, the start of a condition wait).
    pub fn emit_inner(&self, ev: Ev, payload: &[&[u8]]) {
        // SAFETY: as above.
        if let Some(p) = unsafe { self.ctx.producer().as_mut() } {
            let seq = p.take_seq();
            write(p, self.ctx, seq, ev, payload, false);
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
                write(p, self.ctx, seq, ev, &[], true);
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
            write(p, self.ctx, seq, ev, payload, true);
        }
    }
}

/// On a primary in sync mode, before output to the outside world: waits until the backups hold
/// every event that was not output, up to the newest any thread has recorded (the events this
/// output can depend on).
#[inline(always)]
pub fn hold_output() {
    if let Some(region) = region() {
        if region.gate_enabled() {
            region.wait_released(region.input_high());
        }
    }
}

#[inline(always)]
fn write(p: &mut Producer, ctx: &ThreadCtx, seq: u64, ev: Ev, payload: &[&[u8]], boundary: bool) {
    if !ev.output {
        p.note_input(seq);
    }
    let mut len = 0usize;
    for part in payload {
        len += part.len();
    }
    let mut flags = ev.flags;
    // A signal caught meanwhile is delivered right after this call: say so in its event, so a
    // backup delivers it at the same point.
    if boundary && crate::signals::any_pending(ctx) {
        let sig = crate::signals::choose_for_boundary(ctx);
        if sig != 0 {
            ctx.signal_after.set(sig as u32);
            flags |= SIGNAL_NEXT;
        }
    }
    let (pid, tid) = (LPID.load(Ordering::Relaxed), ctx.ltid.get());
    p.write_with(
        len,
        |h| {
            h.seq = Seq(seq);
            h.pid = LogicalPid(pid);
            h.tid = LogicalTid(tid);
            h.call = ev.call as u16;
            h.flags = flags;
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
        let sig = self.ctx.signal_after.replace(0);
        if sig != 0 {
            crate::signals::deliver_after_boundary(sig);
        }
    }
}

/// Leaves a hook without the boundary's signal delivery (used by the delivery itself).
pub fn leave_without_delivery(hook: Hook) {
    hook.ctx.in_hook.set(false);
    core::mem::forget(hook);
}
