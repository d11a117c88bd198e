//! Bytes through descriptors.
//!
//! Local files (and devices such as /dev/null) are re-executed on a backup: their calls run under
//! the descriptor's lock, so sequence order equals the order of effects, and record only a digest.
//! Everything else (sockets, pipes, ttys, random devices, /proc) is input a backup cannot
//! reproduce: the bytes read are the payload, handed back in replay. Writes record a digest of the
//! bytes the program tried to write; a backup checks its own against it and writes for real only
//! to local files. Once live, stand-ins for the primary's connections read as closed and refuse
//! writes with ECONNRESET.

use super::bytes;
use super::run::{self, Particular};
use crate::fdtable;
use crate::real;
use crate::replay::Turn;
use crate::state::{Ev, Hook};
use crate::sys;
use core::ffi::{c_int, c_uint, c_void};
use eventlog::digest::{digest, digest_parts};
use eventlog::ring::MAX_PAYLOAD;
use eventlog::{Call, FdKind};
use libc::{iovec, msghdr, off_t, size_t, sockaddr, socklen_t, ssize_t};

/// Most iovecs a recorded vector read uses (more are legal to leave unfilled: a short read).
const MAX_IOV: usize = 64;

/// A read into one buffer; `real` performs it for at most the given byte count.
pub(super) struct IntoBuf<F> {
    pub buf: *mut c_void,
    pub count: usize,
    pub real: F,
}

impl<F: FnMut(usize) -> isize> Particular for IntoBuf<F> {
    #[inline(always)]
    fn real(&mut self, cap: usize) -> i64 {
        (self.real)(self.count.min(cap)) as i64
    }

    #[inline(always)]
    fn digest(&self, result: i64) -> u64 {
        // SAFETY: the kernel filled `result` bytes of `buf`.
        digest(unsafe { bytes(self.buf, result as isize) })
    }

    #[inline(always)]
    fn record(&self, hook: &Hook, ev: Ev) {
        // SAFETY: as above.
        hook.emit(ev, &[unsafe { bytes(self.buf, ev.result as isize) }]);
    }

    #[inline(always)]
    fn hand_back(&mut self, t: &Turn) {
        let n = t.result().clamp(0, self.count as i64) as usize;
        // SAFETY: `buf` holds `count >= n` bytes, as the program's call promised.
        t.payload(0, unsafe { core::slice::from_raw_parts_mut(self.buf as *mut u8, n) });
    }

    #[inline(always)]
    fn buffer(&self) -> Option<(*mut u8, usize)> {
        Some((self.buf as *mut u8, self.count))
    }

    fn on_dead(&self) -> Option<i64> {
        run::READ_AT_END
    }
}

/// A read into one buffer. `real` performs the call for at most the given byte count.
///
/// # Safety
/// `buf` is valid for `count` bytes, as the real call requires.
#[inline(always)]
pub unsafe fn read_into(
    call: Call,
    fd: c_int,
    buf: *mut c_void,
    count: usize,
    real: impl FnMut(usize) -> isize,
) -> isize {
    run::on_fd(call, fd, [count as u64, 0], IntoBuf { buf, count, real }) as isize
}

/// A write of one buffer; `real` performs it.
struct FromBuf<F> {
    buf: *const c_void,
    count: usize,
    real: F,
}

impl<F: FnMut() -> isize> Particular for FromBuf<F> {
    #[inline(always)]
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)() as i64
    }

    #[inline(always)]
    fn digest(&self, _result: i64) -> u64 {
        // SAFETY: `buf` is valid for `count` bytes, as the program's call promised.
        digest(unsafe { bytes(self.buf, self.count as isize) })
    }

    #[inline(always)]
    fn buffer(&self) -> Option<(*mut u8, usize)> {
        Some((self.buf as *mut u8, self.count))
    }

    fn on_dead(&self) -> Option<i64> {
        run::write_refused()
    }
}

/// A write of one buffer (`real` performs it).
///
/// # Safety
/// `buf` is valid for `count` bytes.
#[inline(always)]
pub unsafe fn write_from(
    call: Call,
    fd: c_int,
    buf: *const c_void,
    count: usize,
    aux1: u64,
    real: impl FnMut() -> isize,
) -> isize {
    run::on_fd(call, fd, [count as u64, aux1], FromBuf { buf, count, real }) as isize
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: forwarding the program's own arguments.
    unsafe { read_into(Call::Read, fd, buf, count, |n| real::read(fd, buf, n)) }
}

#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, count: size_t, buflen: size_t) -> ssize_t {
    // SAFETY: as above; the real __read_chk keeps its overflow check.
    unsafe { read_into(Call::Read, fd, buf, count, |n| real::__read_chk(fd, buf, n, buflen)) }
}

#[no_mangle]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: as above.
    unsafe { read_into(Call::Pread, fd, buf, count, |n| real::pread(fd, buf, n, off)) }
}

#[no_mangle]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: as above (off_t is 64-bit here).
    unsafe { pread(fd, buf, count, off) }
}

#[no_mangle]
pub unsafe extern "C" fn __pread_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    off: off_t,
    buflen: size_t,
) -> ssize_t {
    // SAFETY: as above.
    unsafe { read_into(Call::Pread, fd, buf, count, |n| real::__pread_chk(fd, buf, n, off, buflen)) }
}

#[no_mangle]
pub unsafe extern "C" fn __pread64_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    off: off_t,
    buflen: size_t,
) -> ssize_t {
    // SAFETY: as above.
    unsafe { __pread_chk(fd, buf, count, off, buflen) }
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, count: size_t, flags: c_int) -> ssize_t {
    // SAFETY: as above.
    unsafe { read_into(Call::Recv, fd, buf, count, |n| real::recv(fd, buf, n, flags)) }
}

#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: as above.
    unsafe { read_into(Call::Recv, fd, buf, count, |n| real::__recv_chk(fd, buf, n, buflen, flags)) }
}

/// Copies a replayed address into the program's `addr`/`len` (as the kernel would: cut to the
/// buffer, full length reported).
///
/// # Safety
/// `addr` is null or valid for `*len` bytes; `len` is null or valid.
unsafe fn hand_back_addr(t: &Turn, offset: usize, full: usize, addr: *mut sockaddr, len: *mut socklen_t) {
    if addr.is_null() || len.is_null() {
        return;
    }
    // SAFETY: per the caller.
    unsafe {
        let room = (*len as usize).min(full);
        t.payload(offset, core::slice::from_raw_parts_mut(addr as *mut u8, room));
        *len = full as socklen_t;
    }
}

/// recvfrom: the payload is the data followed by the source address (its length in aux[1]).
struct From<F> {
    data: IntoBuf<F>,
    addr: *mut sockaddr,
    len: *mut socklen_t,
}

impl<F: FnMut(usize) -> isize> Particular for From<F> {
    #[inline(always)]
    fn real(&mut self, cap: usize) -> i64 {
        self.data.real(cap)
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        let r = ev.result as isize;
        // SAFETY: the kernel filled `r` bytes of the buffer and `*len` bytes of `addr` (if given).
        unsafe {
            let alen =
                if r >= 0 && !self.addr.is_null() && !self.len.is_null() { (*self.len as usize).min(128) } else { 0 };
            hook.emit(ev.aux(ev.aux[0], alen as u64), &[bytes(self.data.buf, r), bytes(self.addr, alen as isize)]);
        }
    }

    fn hand_back(&mut self, t: &Turn) {
        self.data.hand_back(t);
        let n = t.result().clamp(0, self.data.count as i64) as usize;
        // SAFETY: the address and its length as the program passed them.
        unsafe { hand_back_addr(t, n, t.header().aux[1] as usize, self.addr, self.len) };
    }

    fn on_dead(&self) -> Option<i64> {
        run::READ_AT_END
    }
}

/// # Safety
/// As for recvfrom(2).
unsafe fn recvfrom_with(
    fd: c_int,
    buf: *mut c_void,
    count: usize,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    real: impl FnMut(usize) -> isize,
) -> isize {
    let p = From { data: IntoBuf { buf, count, real }, addr, len };
    run::on_fd(Call::Recvfrom, fd, [count as u64, 0], p) as isize
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    // SAFETY: forwarding the program's own arguments.
    unsafe { recvfrom_with(fd, buf, count, addr, len, |n| real::recvfrom(fd, buf, n, flags, addr, len)) }
}

#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    // SAFETY: as above.
    unsafe { recvfrom_with(fd, buf, count, addr, len, |n| real::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len)) }
}

/// The slices of `iov` that `filled` bytes occupy, into `parts`; returns how many.
///
/// # Safety
/// `iov` holds `cnt` valid iovecs whose first `filled` bytes were written.
unsafe fn filled_parts(iov: *const iovec, cnt: usize, mut filled: usize, parts: &mut [&[u8]; MAX_IOV]) -> usize {
    let mut n = 0;
    while filled > 0 && n < cnt.min(MAX_IOV) {
        // SAFETY: per the caller.
        let v = unsafe { &*iov.add(n) };
        let take = v.iov_len.min(filled);
        // SAFETY: per the caller.
        parts[n] = unsafe { bytes(v.iov_base, take as isize) };
        filled -= take;
        n += 1;
    }
    n
}

/// Scatters `len` replayed payload bytes starting at `offset` over the program's iovecs.
///
/// # Safety
/// `iov` holds `cnt` valid, writable iovecs.
unsafe fn scatter(t: &Turn, mut offset: usize, mut len: usize, iov: *const iovec, cnt: usize) {
    for i in 0..cnt {
        if len == 0 {
            break;
        }
        // SAFETY: per the caller.
        let v = unsafe { &*iov.add(i) };
        let take = v.iov_len.min(len);
        // SAFETY: per the caller; `take <= iov_len`.
        t.payload(offset, unsafe { core::slice::from_raw_parts_mut(v.iov_base as *mut u8, take) });
        offset += take;
        len -= take;
    }
}

/// Copies up to MAX_IOV iovecs, trimmed so they hold at most MAX_PAYLOAD bytes.
///
/// # Safety
/// `iov` holds `cnt` valid iovecs.
unsafe fn capped_iov(iov: *const iovec, cnt: c_int, out: &mut [iovec; MAX_IOV]) -> usize {
    let mut room = MAX_PAYLOAD;
    let mut n = 0;
    while n < (cnt.max(0) as usize).min(MAX_IOV) && room > 0 {
        // SAFETY: per the caller.
        let v = unsafe { *iov.add(n) };
        out[n] = iovec { iov_base: v.iov_base, iov_len: v.iov_len.min(room) };
        room -= out[n].iov_len;
        n += 1;
    }
    n
}

/// A vector read: the program's iovecs, cut to what one event can carry when the bytes are
/// recorded.
struct IntoVec {
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    capped: [iovec; MAX_IOV],
    used: usize,
}

impl Particular for IntoVec {
    #[inline(always)]
    fn real(&mut self, cap: usize) -> i64 {
        // SAFETY: the program's iovecs, or a copy of them trimmed to `MAX_PAYLOAD` bytes.
        unsafe {
            if cap == usize::MAX {
                return real::readv(self.fd, self.iov, self.cnt) as i64;
            }
            self.used = capped_iov(self.iov, self.cnt, &mut self.capped);
            real::readv(self.fd, self.capped.as_ptr(), self.used as c_int) as i64
        }
    }

    fn digest(&self, result: i64) -> u64 {
        let mut parts: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
        // SAFETY: the kernel filled the first `result` bytes of the program's iovecs.
        let n = unsafe { filled_parts(self.iov, self.cnt.max(0) as usize, result.max(0) as usize, &mut parts) };
        digest_parts(parts[..n].iter().copied())
    }

    fn record(&self, hook: &Hook, ev: Ev) {
        let mut parts: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
        // SAFETY: the kernel filled the first `result` bytes of the capped iovecs.
        let n = unsafe { filled_parts(self.capped.as_ptr(), self.used, ev.result.max(0) as usize, &mut parts) };
        hook.emit(ev, &parts[..n]);
    }

    fn hand_back(&mut self, t: &Turn) {
        // SAFETY: the program's writable iovecs.
        unsafe { scatter(t, 0, t.result().max(0) as usize, self.iov, self.cnt.max(0) as usize) };
    }

    fn on_dead(&self) -> Option<i64> {
        run::READ_AT_END
    }
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    let empty = iovec { iov_base: core::ptr::null_mut(), iov_len: 0 };
    let p = IntoVec { fd, iov, cnt, capped: [empty; MAX_IOV], used: 0 };
    run::on_fd(Call::Readv, fd, [cnt as u64, 0], p) as isize
}

/// The descriptors the primary received in `m`'s control messages (`SCM_RIGHTS`, the primary's
/// numbers, as handed back) get stand-ins at those numbers: the program uses and closes them.
///
/// # Safety
/// `m` is the program's message, its control buffer filled with `msg_controllen` bytes.
unsafe fn stand_in_received_fds(t: &Turn, m: &msghdr) {
    // SAFETY: walking the control buffer the C library's way, within `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const c_int;
                let n = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..n {
                    crate::replay::stand_in_received(t, data.add(i).read_unaligned());
                }
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
}

/// recvmsg: payload = [name_len u32, control_len u32, msg_flags i32, 0u32] name control data.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    // SAFETY: forwarding the program's own arguments; we read back only what the kernel filled
    // and write only within the program's buffers.
    unsafe {
        let Some(hook) = Hook::enter() else { return real::recvmsg(fd, msg, flags) };
        let m = &mut *msg;
        if let Some(t) = hook.turn(Call::Recvmsg) {
            t.expect("the descriptor", t.header().fd as i64, fd as i64);
            let mut meta = [0u8; 16];
            t.payload(0, &mut meta);
            let word = |i: usize| {
                u32::from_le_bytes([meta[i * 4], meta[i * 4 + 1], meta[i * 4 + 2], meta[i * 4 + 3]]) as usize
            };
            let (name_len, control_len) = (word(0), word(1));
            if !m.msg_name.is_null() {
                let room = (m.msg_namelen as usize).min(name_len);
                t.payload(16, core::slice::from_raw_parts_mut(m.msg_name as *mut u8, room));
                m.msg_namelen = name_len as socklen_t;
            }
            if !m.msg_control.is_null() {
                let room = m.msg_controllen.min(control_len);
                t.payload(16 + name_len, core::slice::from_raw_parts_mut(m.msg_control as *mut u8, room));
                m.msg_controllen = room as _;
                stand_in_received_fds(&t, m);
            }
            m.msg_flags = word(2) as c_int;
            scatter(&t, 16 + name_len + control_len, t.result().max(0) as usize, m.msg_iov, m.msg_iovlen);
            return t.ret() as isize;
        }
        let kind = fdtable::kind(fd);
        if fdtable::is_dead(fd) {
            // The end of a connection only the old primary had, recorded if recording on.
            let meta = [0u8; 16];
            hook.emit(Ev::new(Call::Recvmsg).fd(fd, kind).result(0).aux(flags as u64, 0), &[&meta]);
            return 0;
        }
        let mut capped = [iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; MAX_IOV];
        let used = capped_iov(m.msg_iov, m.msg_iovlen as c_int, &mut capped);
        let (orig_iov, orig_len) = (m.msg_iov, m.msg_iovlen);
        m.msg_iov = capped.as_mut_ptr();
        m.msg_iovlen = used as _;
        let r = real::recvmsg(fd, msg, flags);
        m.msg_iov = orig_iov;
        m.msg_iovlen = orig_len;
        let mut parts: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
        let ok = r >= 0;
        let name_len = if ok && !m.msg_name.is_null() { (m.msg_namelen as usize).min(128) } else { 0 };
        let control_len = if ok && !m.msg_control.is_null() { m.msg_controllen.min(4096) } else { 0 };
        let meta: [u32; 4] = [name_len as u32, control_len as u32, if ok { m.msg_flags as u32 } else { 0 }, 0];
        parts[0] = bytes(meta.as_ptr(), 16);
        parts[1] = bytes(m.msg_name, name_len as isize);
        parts[2] = bytes(m.msg_control, control_len as isize);
        let mut data: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
        let n = filled_parts(capped.as_ptr(), used, r.max(0) as usize, &mut data);
        let n = n.min(MAX_IOV - 3);
        parts[3..3 + n].copy_from_slice(&data[..n]);
        hook.emit(Ev::new(Call::Recvmsg).fd(fd, kind).result(r as i64).aux(flags as u64, 0), &parts[..3 + n]);
        r
    }
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: forwarding the program's own arguments.
    unsafe { write_from(Call::Write, fd, buf, count, 0, || real::write(fd, buf, count)) }
}

#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: as above.
    unsafe { write_from(Call::Pwrite, fd, buf, count, off as u64, || real::pwrite(fd, buf, count, off)) }
}

#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, count: size_t, off: off_t) -> ssize_t {
    // SAFETY: as above.
    unsafe { pwrite(fd, buf, count, off) }
}

#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, count: size_t, flags: c_int) -> ssize_t {
    // SAFETY: as above.
    unsafe { write_from(Call::Send, fd, buf, count, flags as u64, || real::send(fd, buf, count, flags)) }
}

#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    count: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    // SAFETY: as above; the destination goes into the event's aux as a digest.
    unsafe {
        let dest = digest(bytes(addr, if addr.is_null() { 0 } else { len as isize }));
        write_from(Call::Sendto, fd, buf, count, dest, || real::sendto(fd, buf, count, flags, addr, len))
    }
}

/// Total length of `cnt` iovecs.
///
/// # Safety
/// `iov` is null or holds `cnt` valid iovecs.
unsafe fn iov_len(iov: *const iovec, cnt: usize) -> usize {
    if iov.is_null() {
        return 0;
    }
    // SAFETY: per the caller.
    unsafe { core::slice::from_raw_parts(iov, cnt) }.iter().map(|v| v.iov_len).sum()
}

/// A vector write (`writev`, `sendmsg`); `real` performs it.
struct FromVec<F> {
    iov: *const iovec,
    cnt: usize,
    real: F,
}

impl<F: FnMut() -> isize> Particular for FromVec<F> {
    #[inline(always)]
    fn real(&mut self, _cap: usize) -> i64 {
        (self.real)() as i64
    }

    fn digest(&self, _result: i64) -> u64 {
        if self.iov.is_null() {
            return digest(&[]);
        }
        // SAFETY: the program's iovecs, each valid for its length.
        let vs = unsafe { core::slice::from_raw_parts(self.iov, self.cnt) };
        // SAFETY: as above.
        digest_parts(vs.iter().map(|v| unsafe { bytes(v.iov_base, v.iov_len as isize) }))
    }

    fn on_dead(&self) -> Option<i64> {
        run::write_refused()
    }
}

/// A vector write (`writev`, `sendmsg`).
///
/// # Safety
/// `iov` is null or holds `cnt` valid iovecs.
unsafe fn write_vec(
    call: Call,
    fd: c_int,
    iov: *const iovec,
    cnt: usize,
    aux1: u64,
    real: impl FnMut() -> isize,
) -> isize {
    // SAFETY: per the caller.
    let total = unsafe { iov_len(iov, cnt) };
    run::on_fd(call, fd, [total as u64, aux1], FromVec { iov, cnt, real }) as isize
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    // SAFETY: forwarding the program's own arguments.
    unsafe { write_vec(Call::Writev, fd, iov, cnt.max(0) as usize, 0, || real::writev(fd, iov, cnt)) }
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: as above.
    unsafe {
        let (iov, cnt) =
            if msg.is_null() { (core::ptr::null(), 0) } else { ((*msg).msg_iov as *const iovec, (*msg).msg_iovlen) };
        write_vec(Call::Sendmsg, fd, iov, cnt, flags as u64, || real::sendmsg(fd, msg, flags))
    }
}

/// A call on a descriptor whose result is all there is to record.
struct Plain<F>(F);

impl<F: FnMut() -> i64> Particular for Plain<F> {
    #[inline(always)]
    fn real(&mut self, _cap: usize) -> i64 {
        (self.0)()
    }
}

/// A call on a descriptor whose result is all there is to record. A backup runs it for real on
/// local state (and checks the result), and hands back the primary's result otherwise.
#[inline(always)]
pub fn simple_fd_call(call: Call, fd: c_int, aux: [u64; 2], real: impl FnMut() -> i64) -> i64 {
    run::on_fd(call, fd, aux, Plain(real))
}

#[no_mangle]
pub unsafe extern "C" fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    // SAFETY: forwarding the program's own arguments.
    simple_fd_call(Call::Lseek, fd, [off as u64, whence as u64], || unsafe { real::lseek(fd, off, whence) })
}

#[no_mangle]
pub unsafe extern "C" fn lseek64(fd: c_int, off: off_t, whence: c_int) -> off_t {
    // SAFETY: as above.
    unsafe { lseek(fd, off, whence) }
}

#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    // SAFETY: forwarding the program's own arguments.
    simple_fd_call(Call::Fsync, fd, [0; 2], || unsafe { real::fsync(fd) } as i64) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    // SAFETY: as above.
    simple_fd_call(Call::Fdatasync, fd, [0; 2], || unsafe { real::fdatasync(fd) } as i64) as c_int
}

/// What a zero-copy call that a backup does not run did to its source file: its offset moved past
/// the `moved` bytes, the program's own offset (`offset` given) or the descriptor's.
///
/// # Safety
/// `offset` is null or the program's valid offset.
unsafe fn advance_source(fd: c_int, offset: *mut off_t, moved: i64) {
    if moved <= 0 {
        return;
    }
    if offset.is_null() {
        // SAFETY: moves the program's own descriptor's offset, as its call did on the primary.
        unsafe { real::lseek(fd, moved, libc::SEEK_CUR) };
    } else {
        // SAFETY: per the caller; the call advances it past what it moved.
        unsafe { *offset += moved };
    }
}

/// sendfile: output on `out_fd` of bytes read from the local file `in_fd`. A backup that does not
/// send (its `out_fd` is a stand-in) still moves the file's offset as the primary's call did.
struct FileTo {
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: usize,
}

impl Particular for FileTo {
    fn real(&mut self, _cap: usize) -> i64 {
        // SAFETY: the program's arguments.
        unsafe { real::sendfile(self.out_fd, self.in_fd, self.offset, self.count) as i64 }
    }

    fn other_fd(&self) -> c_int {
        self.in_fd
    }

    fn follow(&mut self, t: &Turn) {
        // SAFETY: the program's offset pointer, as it passed it.
        unsafe { advance_source(self.in_fd, self.offset, t.result()) };
    }

    fn on_dead(&self) -> Option<i64> {
        run::write_refused()
    }
}

#[no_mangle]
pub unsafe extern "C" fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t {
    let p = FileTo { out_fd, in_fd, offset, count };
    run::on_fd(Call::Sendfile, out_fd, [count as u64, in_fd as u64], p) as isize
}

#[no_mangle]
pub unsafe extern "C" fn sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t {
    // SAFETY: the same call (off_t is 64-bit here).
    unsafe { sendfile(out_fd, in_fd, offset, count) }
}

/// copy_file_range: a write to the local file `fd_out` of bytes from the local file `fd_in`; a
/// backup copies for real under the same order (both descriptors' locks).
struct FileRange {
    fd_in: c_int,
    off_in: *mut off_t,
    fd_out: c_int,
    off_out: *mut off_t,
    len: usize,
    flags: c_uint,
}

impl Particular for FileRange {
    fn real(&mut self, _cap: usize) -> i64 {
        // SAFETY: the program's arguments.
        unsafe {
            real::copy_file_range(self.fd_in, self.off_in, self.fd_out, self.off_out, self.len, self.flags) as i64
        }
    }

    fn other_fd(&self) -> c_int {
        self.fd_in
    }

    /// Across file systems the kernel refuses (EXDEV): a backup whose data lies in its private
    /// view, and the destination elsewhere, copies the primary's count through a buffer instead.
    fn redo(&mut self, t: &Turn, r: i64) -> i64 {
        if r >= 0 || t.result() < 0 || sys::errno() != libc::EXDEV {
            return r;
        }
        let mut buf = [0u8; 16 << 10];
        let mut done = 0i64;
        while done < t.result() {
            let want = buf.len().min((t.result() - done) as usize);
            // SAFETY: the program's descriptors and offsets, as it passed them; our own buffer.
            let got = unsafe {
                if self.off_in.is_null() {
                    real::read(self.fd_in, buf.as_mut_ptr().cast(), want)
                } else {
                    real::pread(self.fd_in, buf.as_mut_ptr().cast(), want, *self.off_in)
                }
            };
            if got <= 0 {
                break;
            }
            // SAFETY: as above; `got` bytes of the buffer were filled.
            let put = unsafe {
                if self.off_out.is_null() {
                    real::write(self.fd_out, buf.as_ptr().cast(), got as usize)
                } else {
                    real::pwrite(self.fd_out, buf.as_ptr().cast(), got as usize, *self.off_out)
                }
            };
            if put != got {
                break;
            }
            // SAFETY: the program's offsets advance as the call's would.
            unsafe {
                if !self.off_in.is_null() {
                    *self.off_in += got as off_t;
                }
                if !self.off_out.is_null() {
                    *self.off_out += got as off_t;
                }
            }
            done += got as i64;
        }
        if done > 0 || t.result() == 0 {
            done
        } else {
            r
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn copy_file_range(
    fd_in: c_int,
    off_in: *mut off_t,
    fd_out: c_int,
    off_out: *mut off_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    let aux = [len as u64, fd_in as u32 as u64 | (flags as u64) << 32];
    run::on_fd(Call::CopyFileRange, fd_out, aux, FileRange { fd_in, off_in, fd_out, off_out, len, flags }) as isize
}

/// splice between a pipe and a socket, file or pipe. Into a pipe or a socket it is output, as a
/// write there is (a backup answers from the record, and moves a source file's offset as the
/// primary's call did). Into a local file from a pipe or socket, the bytes come from outside and
/// a backup must write them too: the hook moves them through a buffer of its own as a read and a
/// write, recorded as such, so a backup reads the primary's bytes and writes them for real.
struct Splice {
    range: FileRange,
}

impl Particular for Splice {
    fn real(&mut self, _cap: usize) -> i64 {
        let r = &self.range;
        // SAFETY: the program's arguments.
        unsafe { real::splice(r.fd_in, r.off_in, r.fd_out, r.off_out, r.len, r.flags) as i64 }
    }

    fn other_fd(&self) -> c_int {
        self.range.fd_in
    }

    fn follow(&mut self, t: &Turn) {
        let r = &self.range;
        if crate::fdtable::kind(r.fd_in).is_local_state() {
            // SAFETY: the program's offset pointer, as it passed it.
            unsafe { advance_source(r.fd_in, r.off_in, t.result()) };
        }
    }

    fn on_dead(&self) -> Option<i64> {
        run::write_refused()
    }
}

/// Bytes one spliced read-and-write moves at most (a short splice is legal).
const SPLICE_BUFFER: usize = 16 << 10;

/// A splice as the read and the write it amounts to, each through its hook: one into a local file
/// from outside (the read is input, the write a file's), or one from or into the program's own
/// pipe (whose bytes a backup moves for real, in the order of the pipe's calls).
///
/// # Safety
/// `off_in` and `off_out` are null or the program's valid offsets.
unsafe fn splice_by_copy(fd_in: c_int, off_in: *mut off_t, fd_out: c_int, off_out: *mut off_t, len: usize) -> isize {
    let mut buf = [0u8; SPLICE_BUFFER];
    let want = len.min(SPLICE_BUFFER);
    // SAFETY: our own buffer; the offsets per the caller.
    unsafe {
        let n = if off_in.is_null() {
            read(fd_in, buf.as_mut_ptr() as *mut c_void, want)
        } else {
            let n = pread(fd_in, buf.as_mut_ptr() as *mut c_void, want, *off_in);
            if n > 0 {
                *off_in += n as off_t;
            }
            n
        };
        if n <= 0 {
            return n;
        }
        if off_out.is_null() {
            return write(fd_out, buf.as_ptr() as *const c_void, n as usize);
        }
        let w = pwrite(fd_out, buf.as_ptr() as *const c_void, n as usize, *off_out);
        if w > 0 {
            *off_out += w as off_t;
        }
        w
    }
}

#[no_mangle]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut off_t,
    fd_out: c_int,
    off_out: *mut off_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    use crate::fdtable::kind;
    let inner_pipe = |fd: c_int| kind(fd) == FdKind::InnerPipe;
    let into_file_from_outside = || kind(fd_out).is_local_state() && !kind(fd_in).is_local_state();
    if crate::state::active() && (inner_pipe(fd_in) || inner_pipe(fd_out) || into_file_from_outside()) {
        // SAFETY: per the program's call.
        return unsafe { splice_by_copy(fd_in, off_in, fd_out, off_out, len) };
    }
    let aux = [len as u64, fd_in as u32 as u64 | (flags as u64) << 32];
    let range = FileRange { fd_in, off_in, fd_out, off_out, len, flags };
    run::on_fd(Call::Splice, fd_out, aux, Splice { range }) as isize
}
