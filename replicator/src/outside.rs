//! Files the program writes outside its replicated data, named once each while it is recorded.
//!
//! A backup's program starts from the capture of the data directories and writes everything else
//! into a view of its own (`/tmp` private and empty, the rest its host's files): what the primary's
//! program wrote to `/var/log/...` or `/tmp` is not there when a backup takes over. The recorder
//! follows, per process, which descriptors were opened on which paths and names a path the first
//! time the program writes through it, so the user can add its directory with `--data`.

use eventlog::call::CallSet;
use eventlog::record::{record_len, Event, EventHeader, HEADER_LEN};
use eventlog::{Call, FdKind};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a call followed by [`OutsideWrites::scan`] does to its map of open files.
#[derive(Clone, Copy)]
enum Step {
    Open,
    Duplicate,
    Close,
    Write,
}

const fn step_of(id: u16) -> Option<Step> {
    match Call::from_id(id) {
        Some(Call::Open | Call::Openat | Call::Creat | Call::Fopen) => Some(Step::Open),
        Some(Call::Dup | Call::Dup2 | Call::Dup3) => Some(Step::Duplicate),
        Some(Call::Close | Call::Fclose) => Some(Step::Close),
        Some(Call::Write | Call::Writev | Call::Pwrite) => Some(Step::Write),
        _ => None,
    }
}

/// The step of each call id (a table: this runs on every event the agent takes).
static STEPS: [Option<Step>; 1 << 9] = {
    let mut steps = [None; 1 << 9];
    let mut id = 0;
    while id < steps.len() {
        steps[id] = step_of(id as u16);
        id += 1;
    }
    steps
};

// Every call has a row.
const _: () = {
    let mut i = 0;
    while i < Call::ALL.len() {
        assert!((Call::ALL[i] as usize) < STEPS.len());
        i += 1;
    }
};

fn step(id: u16) -> Option<Step> {
    STEPS.get(id as usize).copied().flatten()
}

const CALL_AT: usize = std::mem::offset_of!(EventHeader, call);
const PAYLOAD_LEN_AT: usize = std::mem::offset_of!(EventHeader, payload_len);

/// `openat`'s "relative to the working directory".
const AT_FDCWD: i32 = -100;

pub struct OutsideWrites {
    data: Vec<PathBuf>,
    cwd: PathBuf,
    /// Descriptors open on paths outside the data, by logical pid and number.
    open: HashMap<(u32, i32), PathBuf>,
    named: HashSet<PathBuf>,
}

impl OutsideWrites {
    /// The calls [`OutsideWrites::scan`] follows: events of no other call change what it knows.
    pub const CALLS: CallSet = {
        let mut set = CallSet::EMPTY;
        let mut id = 0;
        while id < 1 << 9 {
            if step_of(id).is_some() {
                set = set.with(id);
            }
            id += 1;
        }
        set
    };

    /// For a program started in `cwd` whose data directories are `data`.
    pub fn new(data: &[PathBuf], cwd: PathBuf) -> OutsideWrites {
        OutsideWrites { data: data.to_vec(), cwd, open: HashMap::new(), named: HashSet::new() }
    }

    /// Follows one batch of events; the paths outside the data written to for the first time.
    pub fn scan(&mut self, mut events: &[u8]) -> Vec<PathBuf> {
        let mut first_writes = Vec::new();
        while events.len() >= HEADER_LEN {
            // Most events are of no interest here: their call id and length are all that is
            // read of them (this runs on every event the agent takes).
            let id = u16::from_le_bytes([events[CALL_AT], events[CALL_AT + 1]]);
            let Some(step) = step(id) else {
                let payload_len = events[PAYLOAD_LEN_AT..PAYLOAD_LEN_AT + 4].try_into().map_or(0, u32::from_le_bytes);
                events = events.get(record_len(payload_len as usize)..).unwrap_or_default();
                continue;
            };
            let Ok((e, rest)) = Event::parse(events) else { break };
            events = rest;
            let h = &e.header;
            let key = (h.pid.0, h.fd);
            match step {
                Step::Open if h.result >= 0 => {
                    let relative_to_cwd = h.call() != Some(Call::Openat) || h.aux[1] as i32 == AT_FDCWD;
                    let path = Path::new(OsStr::from_bytes(e.payload));
                    let path = match (path.is_absolute(), relative_to_cwd) {
                        (true, _) => path.to_path_buf(),
                        (false, true) => self.cwd.join(path),
                        (false, false) => continue,
                    };
                    let fd = (h.pid.0, h.result as i32);
                    if self.is_outside(&path) {
                        self.open.insert(fd, path);
                    } else {
                        self.open.remove(&fd);
                    }
                }
                Step::Duplicate if h.result >= 0 => {
                    // The new descriptor is the old one's file (a shell's `> file`).
                    let to = (h.pid.0, h.result as i32);
                    match self.open.get(&key).cloned() {
                        Some(path) => self.open.insert(to, path),
                        None => self.open.remove(&to),
                    };
                }
                Step::Close => {
                    self.open.remove(&key);
                }
                Step::Write if h.fd_kind() == FdKind::File => {
                    if let Some(path) = self.open.get(&key) {
                        if self.named.insert(path.clone()) {
                            first_writes.push(path.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        first_writes
    }

    fn is_outside(&self, path: &Path) -> bool {
        let system = ["/dev", "/proc", "/sys"].iter().any(|d| path.starts_with(d));
        !system && !self.data.iter().any(|d| path.starts_with(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_batches_with_a_followed_call_need_a_scan() {
        let followed = |c: Call| CallSet::EMPTY.with(c as u16).meets(&OutsideWrites::CALLS);
        assert!([Call::Write, Call::Openat, Call::Fopen, Call::Close, Call::Dup2].into_iter().all(followed));
        assert!(![Call::MutexLock, Call::ClockGettime, Call::Read].into_iter().any(followed));
    }
    use eventlog::record::{encode_into, EventHeader};
    use eventlog::{LogicalPid, Seq};

    fn event(out: &mut Vec<u8>, pid: u32, call: Call, fd: i32, result: i64, kind: FdKind, path: &str) {
        let h = EventHeader {
            pid: LogicalPid(pid),
            fd,
            result,
            flags: kind as u16,
            payload_len: path.len() as u32,
            ..EventHeader::new(Seq(1), call)
        };
        encode_into(out, &h, path.as_bytes());
    }

    #[test]
    fn a_write_outside_the_data_is_named_once_and_one_inside_never() {
        let mut w = OutsideWrites::new(&[PathBuf::from("/srv/app")], PathBuf::from("/srv/app"));
        let mut b = Vec::new();
        event(&mut b, 1, Call::Open, -1, 5, FdKind::File, "/var/log/app.log");
        event(&mut b, 1, Call::Fopen, -1, 6, FdKind::File, "state/db");
        event(&mut b, 1, Call::Open, -1, 7, FdKind::File, "/tmp/scratch");
        event(&mut b, 1, Call::Write, 5, 10, FdKind::File, "");
        event(&mut b, 1, Call::Write, 5, 10, FdKind::File, "");
        event(&mut b, 1, Call::Write, 6, 10, FdKind::File, "");
        event(&mut b, 2, Call::Write, 7, 10, FdKind::File, "");
        assert_eq!(w.scan(&b), vec![PathBuf::from("/var/log/app.log")], "pid 2 never opened its 7");
        let mut b = Vec::new();
        event(&mut b, 1, Call::Write, 7, 10, FdKind::File, "");
        event(&mut b, 1, Call::Close, 7, 0, FdKind::File, "");
        event(&mut b, 1, Call::Write, 7, 10, FdKind::File, "");
        event(&mut b, 1, Call::Write, 5, 10, FdKind::File, "");
        event(&mut b, 1, Call::Open, -1, 3, FdKind::File, "/etc/app.conf");
        event(&mut b, 1, Call::Dup2, 3, 1, FdKind::File, "");
        event(&mut b, 1, Call::Write, 1, 10, FdKind::File, "");
        assert_eq!(w.scan(&b), vec![PathBuf::from("/tmp/scratch"), PathBuf::from("/etc/app.conf")]);
    }
}
