//! The skeletons hooks share: [`on_fd`] for calls on a descriptor, [`input`] for calls whose
//! outcome is input from outside (time, randomness, identity) or, declared [`Replay::Verify`],
//! local facts a backup checks and then takes from the record (what `stat` says of a path).
//!
//! The skeleton every hook on a descriptor shares, driven by the call's declaration
//! (`eventlog::call`): enter the guard; on a backup take the turn, check what the declaration
//! says is checked, then re-execute or hand back as it says; on a primary order the call as
//! declared (the descriptor's lock for local state, the output gate for output), run it and record
//! it. A hook is its declaration plus a [`Particular`]: how to run the real call, which bytes it
//! defines, what it records and how a backup hands the record back.
//!
//! Everything here inlines into the hook, and the declaration is a constant, so the branches on it
//! fold away: the generic skeleton costs what the hand-written one did.

use crate::fdtable;
use crate::replay::Turn;
use crate::state::{self, Ev, Hook, ThreadCtx};
use crate::sys;
use core::ffi::c_int;
use eventlog::call::spec::{Order, Replay};
use eventlog::digest::digest;
use eventlog::ring::pipes::Way;
use eventlog::ring::sys::syscall6;
use eventlog::ring::MAX_PAYLOAD;
use eventlog::{Call, FdKind};

/// What the declaration cannot say about one call.
pub trait Particular {
    /// Runs the real call. `cap` bounds the bytes an input may bring in (recorded reads are cut to
    /// what one event can carry; a short read is legal there).
    fn real(&mut self, cap: usize) -> i64;

    /// The digest of the bytes the call defines: written (known before the call, `result` is 0
    /// then) or read from local state (after it).
    fn digest(&self, _result: i64) -> u64 {
        0
    }

    /// Records `ev` with the payload the call's declaration names (none by default).
    fn record(&self, hook: &Hook, ev: Ev) {
        hook.emit(ev, &[]);
    }

    /// The one buffer a `read` or `write` moves bytes through (and its length): a backup moves
    /// them through a stream's pipe itself (see [`stream_first`]).
    fn buffer(&self) -> Option<(*mut u8, usize)> {
        None
    }

    /// A backup answering from the record: copies the primary's data into the program's memory.
    fn hand_back(&mut self, _t: &Turn) {}

    /// A backup that does not run the call: what the call would have done to local state (the
    /// file offset a `sendfile` from a file advances).
    fn follow(&mut self, _t: &Turn) {}

    /// A backup at a call declared [`Replay::Verify`], before the record is handed back: runs
    /// the call here and checks what must agree with the primary (by default its result and
    /// errno; a stat adds a regular file's size).
    fn verify(&mut self, t: &Turn) {
        let r = self.real(usize::MAX);
        t.expect_outcome(r);
    }

    /// A backup that ran the call and got `r`: another way to the primary's outcome where this
    /// host's file system layout refused the call (its result by default).
    fn redo(&mut self, _t: &Turn, r: i64) -> i64 {
        r
    }

    /// The signal mask the call waits under (`ppoll`, `pselect`, `epoll_pwait` given one): a
    /// signal that ends the wait is delivered under it, at the call's own boundary, as the kernel
    /// would.
    fn wait_mask(&self) -> Option<u64> {
        None
    }

    /// A second descriptor the call reads or writes (`sendfile`'s source): ordered like the
    /// first, under its lock when it is local state.
    fn other_fd(&self) -> c_int {
        -1
    }

    /// The result on a stand-in for a connection that existed only on the primary, once live
    /// (`None`: run the call on the stand-in).
    fn on_dead(&self) -> Option<i64> {
        None
    }
}

/// Reads of a primary-only connection, once live, see its end.
pub const READ_AT_END: Option<i64> = Some(0);

/// Writes to a primary-only connection, once live, are refused as by a peer that went away.
#[inline(always)]
pub fn write_refused() -> Option<i64> {
    sys::set_errno(libc::ECONNRESET);
    Some(-1)
}

/// The locks held while a call runs and takes its sequence number: its descriptors' own, then
/// those of the regular files they are. Fields drop in order: descriptors first.
pub struct Ordered {
    _fds: [Option<fdtable::FdLock>; 2],
    _files: [Option<fdtable::FileLock>; 2],
}

/// The locks that order a call on `fd` (if `lock_fd`) and on `other` (if it is local state): the
/// descriptors' locks, in descriptor order, then the locks of the regular files among them, in
/// slot order, so that two calls on the same pair never wait for each other. Every thread takes
/// descriptor locks before file locks, and each kind in its order, so no two wait in a cycle.
#[inline(always)]
fn order(ctx: &ThreadCtx, fd: c_int, lock_fd: bool, other: c_int) -> Ordered {
    if other < 0 {
        if !lock_fd {
            return Ordered { _fds: [None, None], _files: [None, None] };
        }
        let fds = [Some(fdtable::lock(fd)), None];
        return Ordered { _fds: fds, _files: fdtable::lock_files(fd, -1, ctx) };
    }
    let lock_other = other >= 0 && other != fd && fdtable::kind(other).is_local_state();
    let (first, second) = if other < fd { (other, fd) } else { (fd, other) };
    let wants = |f: c_int| if f == fd { lock_fd } else { lock_other };
    let a = wants(first).then(|| fdtable::lock(first));
    let b = (second != first && wants(second)).then(|| fdtable::lock(second));
    let files = fdtable::lock_files(if lock_fd { fd } else { -1 }, if lock_other { other } else { -1 }, ctx);
    Ordered { _fds: [a, b], _files: files }
}

/// Checks what the declaration says a backup checks: the descriptor and `aux` values.
#[inline(always)]
fn check(t: &Turn, call: Call, fd: c_int, aux: [u64; 2]) {
    let checks = call.spec().checks;
    if checks.fd {
        t.expect("the descriptor", t.header().fd as i64, fd as i64);
    }
    for (i, name) in [(0, aux_name(call, 0)), (1, aux_name(call, 1))] {
        if checks.aux[i] {
            t.expect(name, t.header().aux[i] as i64, aux[i] as i64);
        }
    }
}

/// The declared name of an aux slot, for divergence reports.
const fn aux_name(call: Call, i: usize) -> &'static str {
    match call.spec().aux[i] {
        eventlog::call::spec::Slot::One(f) => f.name,
        eventlog::call::spec::Slot::Halves(lo, _) => lo.name,
        eventlog::call::spec::Slot::Unused => "an unused value",
    }
}

/// Runs one call on descriptor `fd` as its declaration says. `aux` are the values the event
/// records (and a backup checks, where declared).
#[inline(always)]
pub fn on_fd<P: Particular>(call: Call, fd: c_int, aux: [u64; 2], mut p: P) -> i64 {
    let spec = call.spec();
    let Some(hook) = Hook::enter() else { return p.real(usize::MAX) };
    // What a write writes is known before it runs (and must be taken before: another thread may
    // change the buffer once the call is under way).
    let written = matches!(spec.replay, Replay::Output);
    let written_digest = if written { p.digest(0) } else { 0 };
    if state::mode() == state::MODE_REPLAY {
        if matches!(call, Call::Read | Call::Write) {
            if let Some((buf, count)) = p.buffer() {
                if let Some(r) = pipe_first(&hook, call, fd, aux, written_digest, buf, count) {
                    return r;
                }
            }
        }
        if let Some(t) = crate::replay::turn(hook.ctx(), call) {
            // A backup at its turn: checks, then re-executes or hands back as declared.
            check(&t, call, fd, aux);
            if written {
                t.expect_digest(written_digest);
            }
            if matches!(spec.replay, Replay::Verify) {
                p.verify(&t);
                p.hand_back(&t);
                return t.ret();
            }
            let run_here = match spec.replay {
                Replay::ByKind | Replay::Output => t.kind().is_local_state(),
                Replay::HandBack => false,
                _ => true,
            };
            if run_here {
                let r = p.real(usize::MAX);
                let r = p.redo(&t, r);
                t.expect_outcome(r);
                if !written && !spec.digest.is_empty() {
                    t.expect_digest(p.digest(r));
                }
                return r;
            }
            p.follow(&t);
            p.hand_back(&t);
            return t.ret();
        }
    }
    if fdtable::is_dead(fd) {
        if let Some(r) = p.on_dead() {
            // A promoted backup recording on: its backups hand the same end back.
            let kind = fdtable::kind(fd);
            hook.emit(Ev::new(call).fd(fd, kind).result(r).aux(aux[0], aux[1]).digest(written_digest), &[]);
            return r;
        }
    }
    if matches!(call, Call::Read | Call::Write) && fdtable::kind(fd) == FdKind::InnerPipe {
        return on_pipe(&hook, call, fd, aux, written_digest, p);
    }
    if written {
        // Output to the outside world first waits for the backups (output commit); writes to
        // local state run under the descriptor's lock.
        let d = written_digest;
        let kind = fdtable::kind(fd);
        let output = kind.is_outward();
        if output {
            state::hold_output();
        }
        let _order = order(hook.ctx(), fd, kind.is_local_state(), p.other_fd());
        let r = p.real(usize::MAX);
        hook.emit(Ev::new(call).fd(fd, kind).result(r).aux(aux[0], aux[1]).digest(d).output(output), &[]);
        return r;
    }
    let kind = fdtable::kind(fd);
    let verified = matches!(spec.replay, Replay::Verify);
    if kind.is_local_state() && !matches!(spec.replay, Replay::HandBack) && !verified {
        // Local state: the backup runs the call too, so only a digest of what it read is kept.
        let _order = order(hook.ctx(), fd, matches!(spec.order, Order::UnderFdLock), p.other_fd());
        let r = p.real(usize::MAX);
        let ev = Ev::new(call).fd(fd, kind).result(r).aux(aux[0], aux[1]);
        if spec.digest.is_empty() {
            hook.emit(ev, &[]);
        } else {
            hook.emit(ev.digest(p.digest(r)), &[]);
        }
        return r;
    }
    // Input from outside: recorded as the payload, cut to what one event carries. What a backup
    // verifies on local state is ordered as declared, like the calls that change that state.
    let _order = if verified {
        order(hook.ctx(), fd, kind.is_local_state() && matches!(spec.order, Order::UnderFdLock), -1)
    } else {
        Ordered { _fds: [None, None], _files: [None, None] }
    };
    let r = p.real(MAX_PAYLOAD);
    p.record(&hook, Ev::new(call).fd(fd, kind).result(r).aux(aux[0], aux[1]));
    r
}

/// A primary's `read` or `write` on one of the program's own pipes: run, and numbered, under the
/// lock of the pipe's direction, its event naming the call before it that way (see
/// [`eventlog::ring::pipes`]).
fn on_pipe<P: Particular>(hook: &Hook, call: Call, fd: c_int, aux: [u64; 2], written: u64, mut p: P) -> i64 {
    let way = if call == Call::Write { Way::Write } else { Way::Read };
    let held = fdtable::lock_pipe(fd, way, hook.ctx());
    let r = p.real(usize::MAX);
    let seq = hook.reserve();
    let after = held.as_ref().map_or(0, |h| h.swap_last(seq));
    let d = if call == Call::Write { written } else { p.digest(r) };
    hook.emit_at(seq, Ev::new(call).fd(fd, FdKind::InnerPipe).result(r).aux(aux[0], after).digest(d), &[]);
    r
}

/// A backup's `read` or `write` on one of the program's own pipes (`FdKind::InnerPipe`) runs
/// before its turn; `None` when `fd` is not one here (or the call's event cannot be found ahead:
/// the program went live, or the log ends). On the primary, a read's number is taken once it has
/// returned, so the write that filled the pipe may come later in the log; one write larger than
/// the pipe returns only after several reads have drained it; and some reads and writes are the C
/// library's own (a `popen` stream's, stdio's), in no event. So the bytes move for real, each call
/// moving the primary's count (found in its event, ahead of the turn) in as many calls as the
/// pipe takes, waiting for the pipe as a blocking call would. A call that failed on the primary
/// (no bytes yet, a closed reader) moves nothing. The turn then checks the call against the
/// primary's. Outlined and given the buffer alone, so the primary's hook keeps the call's
/// particulars in registers.
#[inline(never)]
fn pipe_first(hook: &Hook, call: Call, fd: c_int, aux: [u64; 2], d: u64, buf: *mut u8, count: usize) -> Option<i64> {
    if fdtable::kind(fd) != FdKind::InnerPipe {
        return None;
    }
    let (want, after) = crate::replay::result_ahead(hook.ctx(), call)?;
    // The call before it this way on the primary has moved its bytes.
    crate::replay::wait_past(after);
    let (r, d) = if want < 0 {
        // The primary's errno stands; the call's event says which. A read read nothing.
        (-(libc::EAGAIN as i64), if call == Call::Write { d } else { digest(&[]) })
    } else if call == Call::Write {
        // SAFETY: the program's buffer of `count` bytes, as its write promised.
        (unsafe { move_bytes(fd, buf, count.min(want as usize), Direction::Write) }, d)
    } else {
        // SAFETY: the program's buffer of `count` bytes, as its read promised.
        let r = unsafe { move_bytes(fd, buf, count.min(want as usize), Direction::Read) };
        // SAFETY: the first `r` bytes were just read into it.
        (r, digest(unsafe { super::bytes(buf, r as isize) }))
    };
    let r = if r < 0 {
        sys::set_errno(-r as c_int);
        -1
    } else {
        r
    };
    let errno = sys::errno_if(r);
    let Some(t) = hook.turn(call) else {
        sys::set_errno(errno);
        return Some(r);
    };
    check(&t, call, fd, aux);
    if t.kind() != FdKind::InnerPipe {
        let kind = t.kind().name();
        t.diverge(format_args!(
            "{call} fd {fd}: a {kind} on the primary, one of the program's own pipes on this backup"
        ));
    }
    t.expect_digest(d);
    if want < 0 {
        // Nothing moved: the primary's result and errno are handed back.
        return Some(t.ret());
    }
    sys::set_errno(errno);
    t.expect_outcome(r);
    sys::set_errno(errno);
    Some(r)
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// Reads or writes exactly `want` bytes of `buf` through pipe `fd` (fewer only at end of file or
/// on a failure), waiting for the pipe when it is full or empty, even if the descriptor does not
/// block: the count, or the kernel's negative errno if nothing moved. A `want` of 0 is one read,
/// which waits for the end of file.
///
/// # Safety
/// `buf` is valid for `want` bytes (of writes, for a read).
unsafe fn move_bytes(fd: c_int, buf: *mut u8, want: usize, dir: Direction) -> i64 {
    let (eintr, eagain) = (-(libc::EINTR as isize), -(libc::EAGAIN as isize));
    let (nr, events) = match dir {
        Direction::Read => (libc::SYS_read, libc::POLLIN),
        Direction::Write => (libc::SYS_write, libc::POLLOUT),
    };
    let mut done = 0usize;
    loop {
        // SAFETY: per the caller; the rest of the buffer, after the bytes moved.
        let r = unsafe { syscall6(nr, [fd as usize, buf.add(done) as usize, want - done, 0, 0, 0]) };
        match r {
            r if r == eintr => {}
            r if r == eagain => sys::wait_ready(fd, events),
            r if r > 0 => {
                done += r as usize;
                if done >= want {
                    return done as i64;
                }
            }
            // End of file, or a failure, before the primary's count.
            r => return if done > 0 || r == 0 { done as i64 } else { r as i64 },
        }
    }
}

/// Runs one call whose outcome is input from outside (time, randomness, identity): a backup
/// checks what the declaration says it checks (and, for a call declared [`Replay::Verify`], runs
/// it and checks its outcome) and answers from the record; a primary runs it and records it. `fd`
/// is what the event's `fd` slot holds (a clock id, or -1), `aux` the values the event records
/// before the call (the particular's `record` may add what the call returned).
#[inline(always)]
pub fn input<P: Particular>(call: Call, fd: c_int, aux: [u64; 2], mut p: P) -> i64 {
    if p.wait_mask().is_some() {
        return input_under_mask(call, fd, aux, p);
    }
    let Some(hook) = Hook::enter() else { return p.real(usize::MAX) };
    if let Some(t) = hook.turn(call) {
        check(&t, call, fd, aux);
        if matches!(call.spec().replay, Replay::Verify) {
            p.verify(&t);
        }
        p.hand_back(&t);
        return t.ret();
    }
    let r = p.real(MAX_PAYLOAD);
    p.record(&hook, Ev::new(call).fd(fd, eventlog::FdKind::Unknown).result(r).aux(aux[0], aux[1]));
    r
}

/// [`input`] for a wait under a signal mask of its own: the boundary's signal is chosen and
/// delivered under that mask, then the thread's own mask is back.
#[cold]
fn input_under_mask<P: Particular>(call: Call, fd: c_int, aux: [u64; 2], mut p: P) -> i64 {
    let Some(hook) = Hook::enter() else { return p.real(usize::MAX) };
    let wait_mask = p.wait_mask();
    if let Some(t) = hook.turn(call) {
        check(&t, call, fd, aux);
        p.hand_back(&t);
        let r = t.ret();
        let outside = wait_mask.map(sys::set_sigmask);
        drop(t);
        drop(hook);
        if let Some(mask) = outside {
            sys::set_sigmask(mask);
        }
        return r;
    }
    let r = p.real(MAX_PAYLOAD);
    let outside = wait_mask.map(sys::set_sigmask);
    p.record(&hook, Ev::new(call).fd(fd, eventlog::FdKind::Unknown).result(r).aux(aux[0], aux[1]));
    drop(hook);
    if let Some(mask) = outside {
        sys::set_sigmask(mask);
    }
    r
}
