//! Messages from inside the program: formatted into a stack buffer and written with a raw
//! `write(2)` to stderr. No allocation, no stdio, no locks.

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

/// Writes `tandem: <message>` and a newline to stderr.
pub fn report_args(args: fmt::Arguments<'_>) {
    let mut buf = StackBuf::<512>::new();
    buf.push(b"tandem: ");
    let _ = buf.write_fmt(args);
    buf.push(b"\n");
    crate::sys::write_all(2, buf.as_bytes());
}

/// Reports and aborts the program: for states the shim cannot continue from safely.
pub fn fatal_args(args: fmt::Arguments<'_>) -> ! {
    report_args(args);
    // SAFETY: abort never returns and is not a hooked function.
    unsafe { libc::abort() }
}

macro_rules! report {
    ($($t:tt)*) => { $crate::msg::report_args(format_args!($($t)*)) };
}

macro_rules! fatal {
    ($($t:tt)*) => { $crate::msg::fatal_args(format_args!($($t)*)) };
}

pub(crate) use {fatal, report};

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
