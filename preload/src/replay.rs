//! Replay: a backup's threads follow the primary's log.
//!
//! A hook in replay mode first waits for its turn: the event at the feed's read position must be
//! this thread's (same logical pid and tid) and must be the same call, or the backup has diverged.
//! Holding the turn, the hook either hands back the recorded result (input from outside, time,
//! randomness) or runs the call for real and checks the outcome against the record (local state:
//! files, locks, descriptors, processes). Consuming the event wakes exactly the owner of the next.
//!
//! Also here: what a backup needs to go live when the log ends (the addresses its listening
//! sockets must bind, the primary-only connections that must read as closed), and the map from
//! the primary's child pids to this backup's.

use crate::msg::StackBuf;
use crate::real;
use crate::signals::RECORDED_SIGNAL;
use crate::state::{self, ThreadCtx, LPID};
use crate::{fdtable, sys};
use core::ffi::c_int;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use eventlog::record::flags::SIGNAL_NEXT;
use eventlog::ring::feed::{Feed, Next, PHASE_IN_CALL, PHASE_RUNNING, PHASE_WAITING};
use eventlog::{Call, EventHeader, FdKind, LogicalPid, LogicalTid};

/// This thread holds the turn for one recorded event; dropping it consumes the event and hands
/// the turn on.
pub struct Turn {
    next: Next,
    feed: Feed,
    ctx: &'static ThreadCtx,
}

/// `TANDEM_TRACE=1`: print every event a backup thread takes (for finding where a program
/// differs from its log).
pub static TRACE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// How long a waiting thread sleeps before looking again on its own (the agent and the thread
/// handing over the turn wake it; this only bounds a lost wake-up).
const SLEEP_NS: u64 = 200_000_000;
/// Looks at the feed this many times before sleeping: a hand-over usually comes within a few
/// microseconds, and a futex sleep costs more than that.
const SPINS: u32 = 200;

/// Waits (without taking it) until this thread's next event is the next to be delivered, or the
/// program goes live.
pub fn wait_until_next_is_mine(ctx: &'static ThreadCtx) {
    wait_until_next_is_mine_or(ctx, u64::MAX);
}

/// [`wait_until_next_is_mine`], giving up once no event at all has been consumed for `patience`
/// nanoseconds: a replay that is slow (a loaded host) is still waited for.
fn wait_until_next_is_mine_or(ctx: &'static ThreadCtx, patience: u64) {
    let Some(feed) = state::feed() else { return };
    let me = ctx.slot.get();
    if me == state::NO_SLOT {
        return;
    }
    let slot = feed.thread(me);
    let (lpid, ltid) = (LogicalPid(LPID.load(Ordering::Relaxed)), LogicalTid(ctx.ltid.get()));
    let mine = |n: &Next| n.header.pid == lpid && n.header.tid == ltid;
    let mut spins = 0;
    // The last event consumed, and when this thread first saw it so (0: not looked yet).
    let (mut last, mut since) = (0u64, 0u64);
    slot.phase.store(PHASE_WAITING, Ordering::Relaxed);
    while !feed.is_live() {
        let seen = slot.wake.load(Ordering::SeqCst);
        if feed.peek().filter(mine).is_some() {
            break;
        }
        // The clock is a system call: read only once spinning is over.
        if patience != u64::MAX && spins >= SPINS {
            let (delivered, now) = (feed.control().delivered.load(Ordering::Relaxed), sys::now_ns());
            if delivered != last || since == 0 {
                (last, since) = (delivered, now);
            } else if now - since >= patience {
                break;
            }
        }
        pause(&feed, me, seen, &mut spins, mine);
    }
    slot.phase.store(PHASE_RUNNING, Ordering::Relaxed);
}

/// One round of waiting for a turn: a short spin (a hand-over usually comes within
/// microseconds), then sleep on the slot's futex until woken. `seen` is the slot's wake word read
/// before the caller last looked at the feed, so a wake-up in between is not lost.
fn pause(feed: &Feed, me: u32, seen: u32, spins: &mut u32, mine: impl Fn(&Next) -> bool) {
    if *spins < SPINS {
        *spins += 1;
        core::hint::spin_loop();
        return;
    }
    let slot = feed.thread(me);
    slot.sleeping.store(1, Ordering::SeqCst);
    if feed.peek().filter(|n| mine(n)).is_none() && !feed.is_live() {
        feed.sleep(me, seen, SLEEP_NS);
    }
    slot.sleeping.store(0, Ordering::Relaxed);
}

/// In replay, before a real call that may make calls of its own (through the program's
/// allocator, say): waits until this thread's next event is due, so that those calls, and the
/// real call's effects, come exactly after everything the primary did before them.
pub fn wait_for_own_turn() {
    if state::mode() == state::MODE_REPLAY {
        wait_until_next_is_mine(state::ctx());
    }
}

/// A backup's read or write on one of the program's own pipes runs before its turn (see
/// `hooks/run.rs`), for the primary's count: the result and second `aux` value of this thread's
/// next event, found ahead of the read position (waiting for the agent to append it). `None` when
/// the program has gone live, the log ends first, or the next event is another call (the turn
/// reports that).
pub fn result_ahead(ctx: &'static ThreadCtx, call: Call) -> Option<(i64, u64)> {
    let feed = state::feed()?;
    let (lpid, ltid) = (LogicalPid(LPID.load(Ordering::Relaxed)), LogicalTid(ctx.ltid.get()));
    let mut looks = 0u32;
    loop {
        if feed.is_live() {
            return None;
        }
        if let Some(n) = feed.find_ahead(lpid, ltid) {
            return (n.header.call == call as u16).then_some((n.header.result, n.header.aux[1]));
        }
        if feed.control().eof.load(Ordering::SeqCst) != 0 && feed.find_ahead(lpid, ltid).is_none() {
            return None;
        }
        if looks < SPINS {
            looks += 1;
            core::hint::spin_loop();
        } else {
            sys::sleep_ns(100_000);
        }
    }
}

/// Waits until the event numbered `seq` (0: none) has had its turn, or the program went live.
pub fn wait_past(seq: u64) {
    let Some(feed) = state::feed() else { return };
    let mut looks = 0u32;
    while seq != 0 && !feed.is_live() && feed.delivered().0 < seq {
        if feed.peek().is_some_and(|n| n.header.seq.0 > seq) {
            return;
        }
        if looks < SPINS {
            looks += 1;
            core::hint::spin_loop();
        } else {
            sys::sleep_ns(50_000);
        }
    }
}

/// Waits until the next event is this thread's and is `call`. `None` when the program has gone
/// live (run the call for real).
pub fn turn(ctx: &'static ThreadCtx, call: Call) -> Option<Turn> {
    let feed = state::feed()?;
    let me = ctx.slot.get();
    if me == state::NO_SLOT {
        return None;
    }
    let slot = feed.thread(me);
    let (lpid, ltid) = (LogicalPid(LPID.load(Ordering::Relaxed)), LogicalTid(ctx.ltid.get()));
    slot.call.store(call as u32, Ordering::Relaxed);
    slot.phase.store(PHASE_WAITING, Ordering::Relaxed);
    let mine = |n: &Next| n.header.pid == lpid && n.header.tid == ltid;
    let mut spins = 0;
    loop {
        if feed.is_live() {
            slot.phase.store(PHASE_RUNNING, Ordering::Relaxed);
            go_live();
            return None;
        }
        let seen = slot.wake.load(Ordering::SeqCst);
        if let Some(next) = feed.peek().filter(mine) {
            slot.phase.store(PHASE_IN_CALL, Ordering::Relaxed);
            if TRACE.load(Ordering::Relaxed) {
                let recorded = next.header.call().map_or("?", Call::name);
                crate::msg::trace!(
                    "replay: seq {} thread {lpid}.{ltid}: {recorded} (here {})",
                    next.header.seq,
                    call.name()
                );
            }
            if next.header.call != call as u16 {
                let recorded = next.header.call().map_or("an unknown call", Call::name);
                diverge(
                    &next.header,
                    format_args!("the primary made {recorded} here, this backup makes {}", call.name()),
                );
            }
            return Some(Turn { next, feed, ctx });
        }
        pause(&feed, me, seen, &mut spins, mine);
    }
}

impl Turn {
    pub fn header(&self) -> &EventHeader {
        &self.next.header
    }

    /// The thread holding this turn.
    pub fn ctx(&self) -> &'static ThreadCtx {
        self.ctx
    }

    pub fn result(&self) -> i64 {
        self.next.header.result
    }

    pub fn errno(&self) -> i32 {
        self.next.header.errno
    }

    pub fn kind(&self) -> FdKind {
        self.next.header.fd_kind()
    }

    pub fn payload_len(&self) -> usize {
        self.next.header.payload_len as usize
    }

    /// Copies recorded payload bytes `[offset, offset + out.len())` into `out`; returns how many.
    pub fn payload(&self, offset: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.payload_len().saturating_sub(offset));
        self.feed.copy_payload(&self.next, offset, &mut out[..n]);
        n
    }

    /// The recorded result as an errno-style call returns it (errno set on failure).
    pub fn ret(&self) -> i64 {
        if self.result() < 0 && self.errno() != 0 {
            sys::set_errno(self.errno());
        }
        self.result()
    }

    /// Stops the backup: what it does differs from what the primary did.
    pub fn diverge(&self, args: fmt::Arguments<'_>) -> ! {
        diverge(&self.next.header, args)
    }

    /// Checks a value the primary and this backup must agree on.
    pub fn expect(&self, what: &str, recorded: i64, here: i64) {
        if recorded != here {
            let call = self.call_name();
            self.diverge(format_args!("{call}: {what} was {recorded} on the primary, {here} here"));
        }
    }

    /// Checks the bytes a call wrote or read against the primary's.
    pub fn expect_digest(&self, here: u64) {
        let recorded = self.next.header.digest;
        if recorded != here {
            let (call, fd) = (self.call_name(), self.next.header.fd);
            self.diverge(format_args!(
                "{call} fd {fd}: the bytes differ from the primary's (digest {recorded:016x} there, {here:016x} here)"
            ));
        }
    }

    /// Checks the outcome of a call this backup ran for real (result, and errno on failure).
    pub fn expect_outcome(&self, result: i64) {
        let errno = sys::errno_if(result);
        let (r, e) = (self.result(), self.errno());
        if r != result || (r < 0 && e != errno) {
            let call = self.call_name();
            self.diverge(format_args!(
                "{call}: returned {r} (errno {e}) on the primary, {result} (errno {errno}) here"
            ));
        }
    }

    /// Checks the error number a pthread-style call returned.
    pub fn expect_status(&self, status: i32) {
        self.expect("the result", self.result(), status as i64);
    }

    fn call_name(&self) -> &'static str {
        self.next.header.call().map_or("?", Call::name)
    }

    /// Consumes the event (also what dropping the turn does).
    pub fn done(self) {}
}

impl Drop for Turn {
    fn drop(&mut self) {
        let flags = self.next.header.flags;
        self.feed.consume(&self.next);
        if let Some(slot) = feed_slot(&self.feed, self.ctx) {
            slot.phase.store(PHASE_RUNNING, Ordering::Relaxed);
        }
        if flags & SIGNAL_NEXT != 0 {
            self.ctx.signal_after.set(RECORDED_SIGNAL);
        }
        if self.feed.control().flag_count.load(Ordering::Relaxed) != 0 {
            hold_for_flag_mutexes(&self.feed, self.ctx);
        }
        hold_before_trylock(&self.feed, self.ctx, false);
    }
}

/// A new thread, before it runs the program's start routine: its first read may come before a
/// trylock too (see [`hold_before_trylock`]). Its first event may not be appended yet when it
/// starts: it waits for that (a while at most) rather than run on blind.
pub fn hold_new_thread(ctx: &'static ThreadCtx) {
    if state::mode() == state::MODE_REPLAY {
        if let Some(feed) = state::feed() {
            hold_before_trylock(&feed, ctx, true);
        }
    }
}

/// How far ahead a thread looks for its next event after one of its own (see
/// [`hold_before_trylock`]).
const TRYLOCK_LOOK: usize = 1024;

/// How long a thread waiting for its trylock to be due waits with no event consumed at all
/// before it runs on anyway: the events before it may wait on something the thread does first
/// without a call (a flag it sets). Then nothing moves, while a loaded host only moves slowly.
const TRYLOCK_PATIENCE_NS: u64 = 20_000_000;

/// Allocators read shared counters just before they take a lock, and take it with a trylock
/// first: jemalloc's background thread reads how many dirty pages an arena holds, trylocks the
/// arena's decay mutex, and sleeps for good if there were none. The other threads change those
/// counters between their calls, so what the read sees depends on how far they got. On the
/// primary the read fell just before the trylock; on a backup the thread would run on to it as
/// soon as its previous event is consumed, ahead of the events between (a redis backup's
/// background thread slept for a while where the primary's slept for good, 1 run in 20). So a
/// thread whose next event is a trylock, with other threads' events before it, runs on only
/// once the trylock is due. `appended`: wait for the thread's next event to be appended.
fn hold_before_trylock(feed: &Feed, ctx: &'static ThreadCtx, appended: bool) {
    if ctx.slot.get() == state::NO_SLOT {
        return;
    }
    let (lpid, ltid) = (LogicalPid(LPID.load(Ordering::Relaxed)), LogicalTid(ctx.ltid.get()));
    // Most often the thread's next event is next in line: nothing to wait for.
    let mut end = ctx.known_end.get();
    let own = feed.peek_seen(&mut end).is_some_and(|n| n.header.pid == lpid && n.header.tid == ltid);
    ctx.known_end.set(end);
    if own {
        return;
    }
    // Read the clock only when about to wait: it is a system call, and this runs after every event.
    let mut deadline = 0;
    let mut deadline = || {
        if deadline == 0 {
            deadline = sys::now_ns() + TRYLOCK_PATIENCE_NS;
        }
        deadline
    };
    let mut looks = 0u32;
    while !feed.is_live() {
        match feed.next_within(lpid, ltid, TRYLOCK_LOOK) {
            Some(Some((next, before))) if before > 0 && next.header.call == Call::MutexTrylock as u16 => {
                return wait_until_next_is_mine_or(ctx, TRYLOCK_PATIENCE_NS);
            }
            Some(_) => return,
            None if !appended || feed.control().eof.load(Ordering::SeqCst) != 0 => return,
            None if looks < SPINS => {
                looks += 1;
                core::hint::spin_loop();
            }
            None if sys::now_ns() >= deadline() => return,
            None => sys::sleep_ns(100_000),
        }
    }
}

/// How long a waiter whose condition wait timed out waits for the threads that ran on past its
/// flag (see [`let_runners_pass`]): a thread blocked in a real call (a read on the program's own
/// pipe) would never come.
const RUNNERS_WAIT_NS: u64 = 50_000_000;

/// The other half of [`hold_for_flag_mutexes`]: the waiter of a condition wait that timed out on
/// the primary sets its flag only once every thread running between events here whose next event
/// is not on a flagged mutex has reached that next call: on the primary, those ran past any
/// look at the flag before it was set (a backup's waiter is not held back by the wait's time).
pub fn let_runners_pass(ctx: &'static ThreadCtx) {
    let Some(feed) = state::feed() else { return };
    let me = ctx.slot.get();
    let lpid = LPID.load(Ordering::Relaxed);
    let high = feed.control().threads_high.load(Ordering::SeqCst).min(feed.thread_count());
    let deadline = sys::now_ns() + RUNNERS_WAIT_NS;
    for i in (0..high).filter(|&i| i != me) {
        let t = feed.thread(i);
        let running = || t.is_active() && t.phase.load(Ordering::Relaxed) == PHASE_RUNNING;
        if t.lpid.load(Ordering::Relaxed) != lpid || !running() {
            continue;
        }
        let ltid = LogicalTid(t.ltid.load(Ordering::Relaxed));
        match feed.find_ahead(LogicalPid(lpid), ltid) {
            Some(next) if !feed.on_flag_mutex(&next.header) => {}
            _ => continue,
        }
        let mut looks = 0u32;
        while running() && !feed.is_live() && sys::now_ns() < deadline {
            if looks < SPINS {
                looks += 1;
                core::hint::spin_loop();
            } else {
                sys::sleep_ns(20_000);
            }
        }
    }
}

/// A condition wait that times out is how some programs ask a thread that runs without calls to
/// give something up: CPython's waiter for the GIL sets a flag the holder reads between
/// bytecodes, and the next holder clears it, around calls on the GIL's mutex. Those reads race
/// with the other threads' calls; the primary's log shows which way each went only through what
/// the thread did next. Once a condition wait on a mutex has timed out, a thread whose next event
/// is on that mutex, after another thread's event on it, runs on to it only once everything
/// before it has happened: it read what the other threads did there (the holder saw the request
/// it gives the GIL up for; the one that had just let it go saw it cleared, and asks for the GIL
/// again). A thread whose next event is another call read before them, as it runs on at once.
fn hold_for_flag_mutexes(feed: &Feed, ctx: &'static ThreadCtx) {
    let (lpid, ltid) = (LogicalPid(LPID.load(Ordering::Relaxed)), LogicalTid(ctx.ltid.get()));
    let mut looks = 0u32;
    loop {
        if feed.is_live() {
            return;
        }
        match feed.held_back_by_flag_mutex(lpid, ltid) {
            Some(true) => return wait_until_next_is_mine(ctx),
            Some(false) => return,
            None if feed.control().eof.load(Ordering::SeqCst) != 0 => return,
            None => {}
        }
        if looks < SPINS {
            looks += 1;
            core::hint::spin_loop();
        } else {
            sys::sleep_ns(100_000);
        }
    }
}

fn feed_slot<'f>(feed: &'f Feed, ctx: &ThreadCtx) -> Option<&'f eventlog::ring::feed::ThreadSlot> {
    let i = ctx.slot.get();
    (i != state::NO_SLOT).then(|| feed.thread(i))
}

/// Reports the first difference between the primary and this backup, then waits to be stopped.
pub fn diverge(h: &EventHeader, args: fmt::Arguments<'_>) -> ! {
    let mut text = StackBuf::<1024>::new();
    let _ = write!(text, "seq {}, process {} thread {}: {}", h.seq, h.pid, h.tid, args);
    if let (Some(feed), Some(region)) = (state::feed(), state::region()) {
        feed.report(h.seq, text.as_bytes());
        region.ring_doorbell();
    } else {
        crate::msg::report!("{}", core::str::from_utf8(text.as_bytes()).unwrap_or("diverged"));
    }
    loop {
        sys::sleep_ns(1_000_000_000);
    }
}

// ---- descriptors -----------------------------------------------------------------------------

fn fd_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only queries the descriptor.
    fd >= 0 && unsafe { real::fcntl(fd, libc::F_GETFD, 0) } >= 0
}

/// Moves descriptor `got` to number `want` (keeping close-on-exec), unless it is there already.
fn move_fd(t: &Turn, got: c_int, want: c_int) -> c_int {
    if got == want {
        return got;
    }
    if fd_open(want) {
        t.diverge(format_args!("descriptor {want}, which the primary got here, is already open on this backup"));
    }
    // SAFETY: plain descriptor operations on descriptors this call just created.
    unsafe {
        let cloexec = real::fcntl(got, libc::F_GETFD, 0) & libc::FD_CLOEXEC != 0;
        if real::dup3(got, want, if cloexec { libc::O_CLOEXEC } else { 0 }) != want {
            t.diverge(format_args!("cannot move descriptor {got} to {want}: errno {}", sys::errno()));
        }
        real::close(got);
    }
    fdtable::set(want, fdtable::kind(got));
    fdtable::clear(got);
    want
}

/// The backup ran a call that creates a descriptor and got `got`: it must succeed or fail as on
/// the primary, and the descriptor takes the primary's number.
pub fn place_fd(t: &Turn, got: c_int) -> c_int {
    let want = t.result() as c_int;
    if (got < 0) != (want < 0) {
        t.expect_outcome(got as i64);
    }
    if got < 0 {
        t.expect_outcome(got as i64);
        return got;
    }
    move_fd(t, got, want)
}

/// Places both descriptors of a pair (pipe, socketpair) at the primary's numbers. Both are
/// parked out of the way first: moving one straight into place could close the other.
pub fn place_pair(t: &Turn, got: (c_int, c_int), want: (c_int, c_int)) -> (c_int, c_int) {
    if got == want {
        return got;
    }
    let parked = (park(got.0), park(got.1));
    (move_fd(t, parked.0, want.0), move_fd(t, parked.1, want.1))
}

/// Moves a descriptor out of the way of the low numbers (keeping close-on-exec): one a call just
/// created, until it can take the primary's number, or one whose number must be free now while
/// its file lives on a little longer. Returns where it went (itself if it could not move).
pub fn park(fd: c_int) -> c_int {
    // SAFETY: plain descriptor operations on a descriptor the caller owns.
    unsafe {
        let parked = real::fcntl(fd, libc::F_DUPFD, PARK_FROM);
        if parked < 0 {
            return fd;
        }
        let cloexec = real::fcntl(fd, libc::F_GETFD, 0) & libc::FD_CLOEXEC;
        if cloexec != 0 {
            real::fcntl(parked, libc::F_SETFD, libc::FD_CLOEXEC as libc::c_ulong);
        }
        real::close(fd);
        parked
    }
}

/// Where descriptors are parked while they wait to be moved into place.
const PARK_FROM: libc::c_ulong = 512;

/// Gives the backup a stand-in at the primary's descriptor number for something that exists only
/// on the primary (a connection, a device whose input is replayed): `make` creates it.
pub fn placeholder(t: &Turn, kind: FdKind, make: impl FnOnce() -> c_int) -> c_int {
    let want = t.result() as c_int;
    if want < 0 {
        return t.ret() as c_int;
    }
    let got = make();
    if got < 0 {
        t.diverge(format_args!("cannot create a stand-in for descriptor {want}: errno {}", sys::errno()));
    }
    let fd = move_fd(t, got, want);
    fdtable::set(fd, kind);
    fd
}

/// A stand-in at descriptor `want` for one the primary received over a Unix socket
/// (`SCM_RIGHTS`): a socket of the program's own, never connected, that reads as closed once live.
pub fn stand_in_received(t: &Turn, want: c_int) {
    let got = stand_in_socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
    if got < 0 {
        t.diverge(format_args!("cannot create a stand-in for descriptor {want}: errno {}", sys::errno()));
    }
    let fd = move_fd(t, got, want);
    fdtable::set(fd, FdKind::SocketPair);
    fdtable::set_dead(fd);
}

/// A socket to stand in for one of the primary's: the same family and type, never connected.
pub fn stand_in_socket(domain: c_int, ty: c_int) -> c_int {
    // SAFETY: plain socket creation.
    unsafe { real::socket(domain, ty, 0) }
}

// ---- going live ------------------------------------------------------------------------------

/// A socket bound on the primary, to bind for real when going live.
struct Binding {
    fd: AtomicI32,
    len: AtomicU32,
    /// -1: bound but not listening.
    backlog: AtomicI32,
    addr: [AtomicU64; 16],
}

const BINDINGS: usize = 64;
static BINDINGS_TABLE: [Binding; BINDINGS] = [const {
    Binding {
        fd: AtomicI32::new(-1),
        len: AtomicU32::new(0),
        backlog: AtomicI32::new(-1),
        addr: [const { AtomicU64::new(0) }; 16],
    }
}; BINDINGS];

/// Remembers the address a socket was bound to (replaying `bind`).
pub fn remember_bind(fd: c_int, addr: &[u8]) {
    let n = addr.len().min(128);
    let slot = BINDINGS_TABLE.iter().find(|b| b.fd.load(Ordering::Relaxed) == fd).or_else(|| {
        BINDINGS_TABLE.iter().find(|b| b.fd.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed).is_ok())
    });
    let Some(b) = slot else {
        crate::msg::report!("more than {BINDINGS} bound sockets: descriptor {fd} will not be bound when going live");
        return;
    };
    let mut words = [0u64; 16];
    for (i, byte) in addr[..n].iter().enumerate() {
        words[i / 8] |= (*byte as u64) << ((i % 8) * 8);
    }
    for (w, v) in b.addr.iter().zip(words) {
        w.store(v, Ordering::Relaxed);
    }
    b.len.store(n as u32, Ordering::Relaxed);
    b.backlog.store(-1, Ordering::Release);
}

/// Remembers that a bound socket listens (replaying `listen`).
pub fn remember_listen(fd: c_int, backlog: c_int) {
    if let Some(b) = BINDINGS_TABLE.iter().find(|b| b.fd.load(Ordering::Relaxed) == fd) {
        b.backlog.store(backlog.max(0), Ordering::Release);
    }
}

/// Forgets a descriptor's binding (it was closed).
pub fn forget_binding(fd: c_int) {
    for b in BINDINGS_TABLE.iter() {
        let _ = b.fd.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// 0: replaying; 1: this process is switching to live; 2: live.
static LIVE: AtomicU32 = AtomicU32::new(0);

/// The log is exhausted: bind and listen where the primary did, and run everything for real from
/// here on: recorded, if the agent serves backups as the group's new primary, or else with the
/// program's own signal handlers back. Once per process; other threads
/// wait until it is done.
pub fn go_live() {
    if LIVE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        while LIVE.load(Ordering::Acquire) != 2 {
            sys::sleep_ns(100_000);
        }
        return;
    }
    for b in BINDINGS_TABLE.iter() {
        let fd = b.fd.load(Ordering::Acquire);
        if fd < 0 {
            continue;
        }
        let mut addr = [0u8; 128];
        for (i, w) in b.addr.iter().enumerate() {
            addr[i * 8..i * 8 + 8].copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let len = b.len.load(Ordering::Relaxed);
        // SAFETY: `addr` holds the `len`-byte address the program bound on the primary.
        let bound = unsafe { real::bind(fd, addr.as_ptr() as *const libc::sockaddr, len) };
        if bound != 0 {
            crate::msg::report!(
                "going live: cannot bind descriptor {fd} where the primary did: errno {}",
                sys::errno()
            );
            continue;
        }
        let backlog = b.backlog.load(Ordering::Acquire);
        // SAFETY: listen on the socket just bound.
        if backlog >= 0 && unsafe { real::listen(fd, backlog) } != 0 {
            crate::msg::report!("going live: cannot listen on descriptor {fd}: errno {}", sys::errno());
        }
        fdtable::set_kind(fd, if backlog >= 0 { FdKind::Listener } else { FdKind::Socket });
    }
    if state::region().is_some_and(|r| r.records_after_replay()) {
        // The group's primary now: every call from here is recorded, numbered on from the log's
        // end, and signals keep being taken at call boundaries, as on any primary.
        state::MODE.store(state::MODE_RECORD, Ordering::Release);
    } else {
        crate::signals::unwrap_all();
        state::MODE.store(state::MODE_LIVE, Ordering::Release);
    }
    LIVE.store(2, Ordering::Release);
}

// ---- processes -------------------------------------------------------------------------------

/// The primary's pid for each child this backup process created, and the backup's own.
struct Child {
    primary: AtomicI32,
    here: AtomicI32,
}

const CHILDREN: usize = 256;
static CHILDREN_TABLE: [Child; CHILDREN] =
    [const { Child { primary: AtomicI32::new(0), here: AtomicI32::new(0) } }; CHILDREN];
/// This process's pid on the primary, once a recorded getpid told us.
pub static PRIMARY_SELF: AtomicI32 = AtomicI32::new(0);

pub fn remember_child(primary: i32, here: i32) {
    if primary <= 0 || here <= 0 {
        return;
    }
    match CHILDREN_TABLE
        .iter()
        .find(|c| c.primary.compare_exchange(0, primary, Ordering::AcqRel, Ordering::Relaxed).is_ok())
    {
        Some(c) => c.here.store(here, Ordering::Release),
        None => crate::msg::report!("more than {CHILDREN} children: pid {primary} will not be followed"),
    }
}

/// This backup's pid for the primary's child `primary`.
pub fn child_here(primary: i32) -> Option<i32> {
    CHILDREN_TABLE.iter().find(|c| c.primary.load(Ordering::Acquire) == primary).map(|c| c.here.load(Ordering::Acquire))
}

/// The primary's child `primary` was reaped.
pub fn forget_child(primary: i32) {
    if let Some(c) = CHILDREN_TABLE.iter().find(|c| c.primary.load(Ordering::Acquire) == primary) {
        c.here.store(0, Ordering::Relaxed);
        c.primary.store(0, Ordering::Release);
    }
}

/// A fork child has no children yet.
pub fn forget_children() {
    for c in CHILDREN_TABLE.iter() {
        c.primary.store(0, Ordering::Relaxed);
        c.here.store(0, Ordering::Relaxed);
    }
    PRIMARY_SELF.store(0, Ordering::Relaxed);
}

/// Whether an exec'd image should drop the old image's thread slots: they were this process's
/// threads before exec and are gone.
pub fn drop_stale_threads(feed: &Feed, os_pid: i32) {
    let high = state::region().map_or(0, |r| r.geometry().thread_count);
    for i in 0..high {
        let t = feed.thread(i);
        if t.os_pid.load(Ordering::Relaxed) == os_pid && t.state.load(Ordering::Acquire) != 0 {
            feed.unregister(i);
        }
    }
}
