//! Human-readable rendering of events, for `tandem log show` and divergence reports.

use eventlog::{Call, Event, Family};
use std::fmt::Write;

/// errno's symbolic name (`EAGAIN`), or its number.
pub fn errno_name(e: i32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(e));
    if name == "UnknownErrno" {
        e.to_string()
    } else {
        name
    }
}

/// Up to `max` bytes as a quoted, escaped string.
pub fn preview(bytes: &[u8], max: usize) -> String {
    let mut s = String::from("\"");
    for &b in bytes.iter().take(max) {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    if bytes.len() > max {
        s.push_str("...");
    }
    s
}

fn signal_name(sig: u64) -> String {
    nix::sys::signal::Signal::try_from(sig as i32).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}

fn epoll_events(mask: u32) -> String {
    let names = [(0x001, "IN"), (0x004, "OUT"), (0x008, "ERR"), (0x010, "HUP"), (0x002, "PRI"), (0x2000, "RDHUP")];
    let v: Vec<&str> = names.iter().filter(|(b, _)| mask & b != 0).map(|(_, n)| *n).collect();
    if v.is_empty() {
        format!("{mask:#x}")
    } else {
        v.join("|")
    }
}

/// The event's arguments and decoded data, after the call name.
pub fn details(e: &Event) -> String {
    let h = &e.header;
    let Some(call) = h.call() else {
        return String::new();
    };
    let fd = || format!("fd={}({})", h.fd, h.fd_kind().name());
    let [a0, a1] = h.aux;
    match call {
        Call::ClockGettime => format!("clock={} -> {}.{:09}", h.fd, a0, a1),
        Call::Gettimeofday => format!("-> {}.{:06}", a0, a1),
        Call::Nanosleep | Call::ClockNanosleep => format!("{}ns", a0),
        Call::Usleep => format!("{}us", a0),
        Call::Sleep => format!("{}s", a0),
        Call::Fork => format!("child pid {}", a0),
        Call::PosixSpawn => format!("child pid {} (os pid {})", a0, a1 as i64),
        Call::ProcessStart => format!("started through an unseen spawn from pid {}", a0),
        Call::PthreadCreate => format!("thread {}", a0),
        Call::Exit | Call::ExitNow => format!("status {}", a0 as i32),
        Call::Execve | Call::Open | Call::Openat | Call::Creat | Call::Fopen => preview(e.payload, 200),
        Call::Waitpid | Call::Wait4 => format!("pid={} status={:#x}", a1 as u32 as i32, a0 as u32),
        Call::Waitid => format!("idtype={} code={} status={}", a1 as u32, (a0 >> 32) as u32, a0 as u32 as i32),
        Call::Signal => signal_name(a0),
        Call::IoUringSetup => format!("syscall {} refused", a0),
        Call::Pipe | Call::Pipe2 | Call::Socketpair => format!("fds [{}, {}]", h.fd, a0 as i64),
        Call::Socket => format!("domain={} type={:#x}", a0, a1 as u32),
        Call::Accept | Call::Accept4 => format!("{} peer {}", fd(), preview(e.payload, 32)),
        Call::Bind | Call::Connect | Call::Getsockname | Call::Getpeername => {
            format!("{} addr {}", fd(), preview(e.payload, 32))
        }
        Call::EpollCtl => {
            let op = match a0 as u32 as i32 {
                1 => "ADD",
                2 => "DEL",
                3 => "MOD",
                _ => "?",
            };
            format!("epfd={} {} fd={} {}", h.fd, op, (a0 >> 32) as i32, epoll_events(a1 as u32))
        }
        Call::EpollWait | Call::EpollPwait => {
            let ready: Vec<String> = e
                .payload
                .chunks_exact(12)
                .map(|c| {
                    let events = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    let fd = i32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                    format!("{}:{}", fd, epoll_events(events))
                })
                .collect();
            format!("epfd={} [{}]", h.fd, ready.join(" "))
        }
        Call::Gethostname => preview(e.payload, 64),
        Call::Fcntl => format!("{} cmd={} arg={:#x}", fd(), a0, a1),
        Call::Lseek => format!("{} off={} whence={}", fd(), a0 as i64, a1),
        _ => match call.family() {
            Family::Sync => format!("{:#x}", a0),
            Family::Io if !e.payload.is_empty() => format!("{} {}", fd(), preview(e.payload, 48)),
            Family::Io => format!("{} len={} digest={:016x}", fd(), a0, h.digest),
            Family::Random if !e.payload.is_empty() => format!("{} bytes", e.payload.len()),
            Family::Fd | Family::Net => fd(),
            _ => String::new(),
        },
    }
}

/// `= 17` or `= -1 EAGAIN` (for calls returning an error number: `= EBUSY`).
pub fn outcome(e: &Event) -> String {
    let h = &e.header;
    if h.errno == 0 {
        format!("= {}", h.result)
    } else if h.result == h.errno as i64 {
        format!("= {}", errno_name(h.errno))
    } else {
        format!("= {} {}", h.result, errno_name(h.errno))
    }
}

/// One line: `seq pid.tid call(details) = result`.
pub fn line(e: &Event) -> String {
    let h = &e.header;
    let name = h.call().map_or("?", Call::name);
    format!("{:>9} {:>3}.{:<3} {:<24} {} {}", h.seq, h.pid, h.tid, name, outcome(e), details(e))
}
