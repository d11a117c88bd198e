//! Bounded retention of a primary's log (`--retain SIZE|DURATION`). Past the bound the oldest
//! stored batches are dropped: a hole is punched in the file (its header and launch stay) and
//! the disk space goes back to the file system. A backup that would need a dropped event is
//! refused, so from the first cut on no new backup can join, and a backup whose state is lost
//! cannot rejoin: without a checkpoint that is what a bound costs, and why retention is
//! unbounded unless asked.

use eventlog::Seq;
use std::collections::VecDeque;
use std::time::Duration;

/// How much of its log a primary keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    /// At most this many bytes of stored batches.
    Bytes(u64),
    /// Batches stored at most this long ago.
    Age(Duration),
}

impl Retain {
    /// `SIZE` (e.g. 512MiB, 20GiB) or `DURATION` (e.g. 6h, 2days).
    pub fn parse(text: &str) -> Result<Retain, String> {
        if let Ok(age) = humantime::parse_duration(text) {
            return Ok(Retain::Age(age));
        }
        crate::args::parse_size(text)
            .map(Retain::Bytes)
            .map_err(|_| format!("'{text}' is neither a size nor a duration; write it like 512MiB, 20GiB, 6h or 2days"))
    }
}

impl Retain {
    /// The bound as `--retain` takes it back.
    pub fn as_arg(&self) -> String {
        match self {
            Retain::Bytes(b) => b.to_string(),
            Retain::Age(d) => format!("{}s", d.as_secs_f64()),
        }
    }
}

impl std::fmt::Display for Retain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retain::Bytes(b) => write!(f, "{}", crate::capture::human(*b)),
            Retain::Age(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// A stored batch: its first event, where it starts in the file, and when it was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub first_seq: Seq,
    pub offset: u64,
    pub wall_ns: u64,
}

/// The stored batches a log keeps, oldest first.
#[derive(Debug)]
pub struct Kept {
    bound: Retain,
    batches: VecDeque<Stored>,
}

impl Kept {
    pub fn new(bound: Retain) -> Kept {
        Kept { bound, batches: VecDeque::new() }
    }

    pub fn bound(&self) -> Retain {
        self.bound
    }

    pub fn stored(&mut self, batch: Stored) {
        self.batches.push_back(batch);
    }

    /// The first batch to keep if the log were cut now (`None`: nothing to drop). `end` is where
    /// the log's written part ends; `needed` the oldest event a connected backup still lacks,
    /// which is never dropped. The newest batch is always kept.
    pub fn cut_at(&self, end: u64, now_ns: u64, needed: Option<Seq>) -> Option<Stored> {
        let over = |b: &Stored| match self.bound {
            Retain::Bytes(max) => end - b.offset > max,
            Retain::Age(max) => Duration::from_nanos(now_ns.saturating_sub(b.wall_ns)) > max,
        };
        let mut keep = 0;
        while keep + 1 < self.batches.len()
            && over(&self.batches[keep])
            && needed.is_none_or(|n| self.batches[keep + 1].first_seq <= n)
        {
            keep += 1;
        }
        (keep > 0).then(|| self.batches[keep])
    }

    /// The log was cut at `at` (from [`cut_at`](Self::cut_at)).
    pub fn cut(&mut self, at: Stored) {
        while self.batches.front().is_some_and(|b| b.first_seq < at.first_seq) {
            self.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(bound: Retain) -> Kept {
        let mut k = Kept::new(bound);
        for i in 0..10u64 {
            k.stored(Stored { first_seq: Seq(1 + 100 * i), offset: 1000 + 500 * i, wall_ns: i * 1_000_000_000 });
        }
        k
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(Retain::parse("64MiB"), Ok(Retain::Bytes(64 << 20)));
        assert_eq!(Retain::parse("2h"), Ok(Retain::Age(Duration::from_secs(7200))));
        assert!(Retain::parse("soon").unwrap_err().contains("neither a size nor a duration"));
    }

    #[test]
    fn a_size_bound_keeps_the_newest_batches_within_it() {
        let mut k = kept(Retain::Bytes(1200));
        // The log ends at 6000: batches from offset 4800 on are within 1200 bytes.
        let at = k.cut_at(6000, 0, None).unwrap();
        assert_eq!((at.first_seq, at.offset), (Seq(801), 5000));
        k.cut(at);
        assert_eq!(k.cut_at(6000, 0, None), None);
    }

    #[test]
    fn an_age_bound_drops_batches_stored_longer_ago() {
        let k = kept(Retain::Age(Duration::from_secs(3)));
        assert_eq!(k.cut_at(6000, 9_500_000_000, None).unwrap().first_seq, Seq(701));
    }

    #[test]
    fn what_a_connected_backup_lacks_and_the_newest_batch_are_kept() {
        let k = kept(Retain::Bytes(0));
        assert_eq!(k.cut_at(6000, 0, Some(Seq(350))).unwrap().first_seq, Seq(301));
        assert_eq!(k.cut_at(6000, 0, Some(Seq(50))), None);
        assert_eq!(k.cut_at(6000, 0, None).unwrap().first_seq, Seq(901));
    }
}
