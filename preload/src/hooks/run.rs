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
                if let Some(r) = stream_first(&hook, call, fd, aux, written_digest, buf, count) {
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
            return r;
        }
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

/// A backup's `read` or `write` on a stream's pipe (`FdKind::Stream`) runs before its turn;
/// `None` when `fd` is not one here (or the read's event cannot be found ahead: the program went
/// live, or the log ends). The stream reads and writes where the shim cannot see, so on the
/// primary the bytes may have moved, and the stream's process gone on to calls recorded before
/// this call's event, before that event was taken: a write's reader may have taken its bytes, a
/// read may have made the room a writer waited for. A write needs nothing from the record; a read
/// reads the primary's count, found in its event ahead of the turn, in as many reads as the pipe
/// takes. The turn then checks the call against the primary's. Outlined and given the buffer
/// alone, so the primary's hook keeps the call's particulars in registers.
#[inline(never)]
fn stream_first(hook: &Hook, call: Call, fd: c_int, aux: [u64; 2], d: u64, buf: *mut u8, count: usize) -> Option<i64> {
    if fdtable::kind(fd) != FdKind::Stream {
        return None;
    }
    let (r, d) = if call == Call::Write {
        // SAFETY: the program's buffer of `count` bytes, as its write promised.
        (unsafe { syscall6(libc::SYS_write, [fd as usize, buf as usize, count, 0, 0, 0]) } as i64, d)
    } else {
        let want = crate::replay::result_ahead(hook.ctx(), call)?;
        // SAFETY: the program's buffer of `count` bytes, as its read promised.
        let r = unsafe { fill(fd, buf, count, want) };
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
    if let Some(t) = hook.turn(call) {
        check(&t, call, fd, aux);
        if t.kind() != FdKind::Stream {
            let kind = t.kind().name();
            t.diverge(format_args!("{call} fd {fd}: a {kind} on the primary, a stream's pipe on this backup"));
        }
        t.expect_digest(d);
        sys::set_errno(errno);
        t.expect_outcome(r);
    }
    sys::set_errno(errno);
    Some(r)
}

/// Reads the primary's `want` bytes (at most `count`) into `buf`, in as many reads as the pipe
/// takes: the count, or the kernel's negative errno if the first read failed. A `want` of 0 or
/// less (end of file, a failure) is one read of up to `count`, which waits for it.
///
/// # Safety
/// `buf` is valid for `count` bytes of writes.
unsafe fn fill(fd: c_int, buf: *mut u8, count: usize, want: i64) -> i64 {
    let eintr = -(libc::EINTR as isize);
    if want <= 0 {
        loop {
            // SAFETY: per the caller.
            let r = unsafe { sys::read(fd, buf, count) };
            if r != eintr {
                return r as i64;
            }
        }
    }
    let want = (want as usize).min(count);
    let mut got = 0usize;
    while got < want {
        // SAFETY: per the caller; the rest of the buffer, after the bytes read.
        let r = unsafe { sys::read(fd, buf.add(got), want - got) };
        match r {
            r if r == eintr => {}
            r if r > 0 => got += r as usize,
            // End of file, or a failure, before the primary's count.
            r => return if got > 0 { got as i64 } else { r as i64 },
        }
    }
    got as i64
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
