//! Messages from inside the program: formatted into a stack buffer and posted to the notes area
//! of the shared region, which the agent prints (see `eventlog::ring::notes`): the shim never
//! writes to the program's own descriptors. No allocation, no stdio, no locks.

use core::fmt::{self, Write};

pub struct StackBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    pub const fn new() -> Self {
        StackBuf { bytes: [0; N], len: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn push(&mut self, b: &[u8]) {
        let n = b.len().min(N - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
}

impl<const N: usize> Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// How long a trace line waits for a free slot before it is given up.
const TRACE_WAIT_MS: u32 = 1000;

/// Posts `args` to the agent, waiting up to `wait_ms` for a free slot before the note is
/// counted lost. False when no region is mapped (the shim was loaded without an agent).
fn post(args: fmt::Arguments<'_>, wait_ms: u32) -> bool {
    let Some(region) = crate::state::region() else { return false };
    let mut buf = StackBuf::<{ eventlog::ring::notes::NOTE_TEXT }>::new();
    let _ = buf.write_fmt(args);
    let mut waited = 0;
    while !region.post_note(buf.as_bytes()) {
        if waited == wait_ms {
            region.note_lost();
            break;
        }
        crate::sys::sleep_ns(1_000_000);
        waited += 1;
    }
    true
}

/// Posts a note for the agent to print as `tandem: <message>`; lost (and counted) if every
/// slot is taken.
pub fn report_args(args: fmt::Arguments<'_>) {
    post(args, 0);
}

/// A line of the replay trace (`TANDEM_TRACE`): waits for room rather than losing the line.
pub fn trace_args(args: fmt::Arguments<'_>) {
    post(args, TRACE_WAIT_MS);
}

/// Reports and aborts the program: for states the shim cannot continue from safely. Only when
/// no agent's region is mapped does it write to the program's stderr, as a last resort.
pub fn fatal_args(args: fmt::Arguments<'_>) -> ! {
    if !post(args, 100) {
        let mut buf = StackBuf::<512>::new();
        buf.push(b"tandem: ");
        let _ = buf.write_fmt(args);
        buf.push(b"\n");
        crate::sys::write_all(2, buf.as_bytes());
    }
    // SAFETY: abort never returns and is not a hooked function.
    unsafe { libc::abort() }
}

macro_rules! report {
    ($($t:tt)*) => { $crate::msg::report_args(format_args!($($t)*)) };
}

macro_rules! fatal {
    ($($t:tt)*) => { $crate::msg::fatal_args(format_args!($($t)*)) };
}

macro_rules! trace {
    ($($t:tt)*) => { $crate::msg::trace_args(format_args!($($t)*)) };
}

pub(crate) use {fatal, report, trace};

/// Writes `v` in decimal at the start of `out`; returns the number of bytes written.
pub fn write_decimal(out: &mut [u8], v: i64) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    let neg = v < 0;
    let mut u = v.unsigned_abs();
    loop {
        digits[n] = b'0' + (u % 10) as u8;
        n += 1;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    let mut i = 0;
    if neg && i < out.len() {
        out[i] = b'-';
        i += 1;
    }
    while n > 0 && i < out.len() {
        n -= 1;
        out[i] = digits[n];
        i += 1;
    }
    i
}

/// Parses a non-negative decimal number.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u64))
}
