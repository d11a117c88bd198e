//! `tandem log show` and `tandem log stats`.

use crate::describe;
use crate::error::{Error, Result};
use crate::recorder::open_log;
use eventlog::{Call, Event, LogicalPid, LogicalTid, Seq};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Visits every event of a log in sequence order. Events of a batch are only visited once the
/// whole batch has been verified; a damaged batch ends the walk with an error naming it.
pub fn for_each_event(path: &Path, mut f: impl FnMut(&Event) -> std::io::Result<()>) -> Result<LogSummary> {
    let mut reader = open_log(path)?;
    let mut summary = LogSummary { created_ns: reader.header().created_unix_ns, ..LogSummary::default() };
    let log_err = |source| Error::Log { path: path.to_path_buf(), source };
    summary.kept_from = reader.skip_dropped().map_err(Error::io(path.display().to_string()))?;
    while let Some(batch) = reader.next_batch().map_err(log_err)? {
        summary.batches += 1;
        summary.last_batch_ns = batch.wall_ns;
        for e in batch.events() {
            f(&e).map_err(Error::io("cannot write output"))?;
        }
    }
    summary.end_ns = reader.end_wall_ns();
    summary.logged_bytes = reader.offset();
    Ok(summary)
}

#[derive(Default, Debug)]
pub struct LogSummary {
    pub batches: u64,
    pub created_ns: u64,
    pub last_batch_ns: u64,
    pub end_ns: Option<u64>,
    /// Where the log's written part ends (a backup's file goes on with space made ready).
    pub logged_bytes: u64,
    /// The first event a bounded log (`--retain`) still holds, when it dropped older ones.
    pub kept_from: Option<Seq>,
}

pub fn show(path: &Path, json: bool, out: &mut impl Write) -> Result<()> {
    for_each_event(path, |e| {
        if json {
            writeln!(out, "{}", describe::json(e))
        } else {
            writeln!(out, "{}", describe::line(e))
        }
    })?;
    out.flush().map_err(Error::io("cannot write output"))
}

#[derive(Default)]
struct Tally {
    events: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, e: &Event) {
        self.events += 1;
        self.bytes += e.payload.len() as u64;
    }
}

/// Events per call, process and thread; bytes; duration. As text, or as one JSON object.
pub fn stats(path: &Path, json: bool, out: &mut impl Write) -> Result<()> {
    let mut by_call: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut by_thread: BTreeMap<(LogicalPid, LogicalTid), Tally> = BTreeMap::new();
    let mut by_process: BTreeMap<LogicalPid, Tally> = BTreeMap::new();
    let mut total = Tally::default();
    let (mut first_seq, mut last_seq) = (None, Seq::ZERO);
    let mut record_bytes = 0u64;
    let summary = for_each_event(path, |e| {
        let h = &e.header;
        record_bytes += h.record_len() as u64;
        by_call.entry(h.call().map_or("?", Call::name)).or_default().add(e);
        by_thread.entry((h.pid, h.tid)).or_default().add(e);
        by_process.entry(h.pid).or_default().add(e);
        total.add(e);
        first_seq.get_or_insert(h.seq);
        last_seq = h.seq;
        Ok(())
    })?;
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let end = summary.end_ns.unwrap_or(summary.last_batch_ns);
    let secs = end.saturating_sub(summary.created_ns) as f64 / 1e9;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(Error::io("cannot write output"));
    let mut calls: Vec<_> = by_call.into_iter().collect();
    calls.sort_by(|a, b| b.1.events.cmp(&a.1.events).then(a.0.cmp(b.0)));
    if json {
        let tally = |t: &Tally| serde_json::json!({ "events": t.events, "bytes": t.bytes });
        let with = |mut v: serde_json::Value, k: &str, x: serde_json::Value| {
            v[k] = x;
            v
        };
        let report = serde_json::json!({
            "log": path.display().to_string(),
            "events": total.events,
            "first_seq": first_seq.unwrap_or(Seq::ZERO).0,
            "last_seq": last_seq.0,
            "batches": summary.batches,
            "kept_from": summary.kept_from.map(|s| s.0),
            "file_bytes": file_bytes,
            "logged_bytes": summary.logged_bytes,
            "record_bytes": record_bytes,
            "payload_bytes": total.bytes,
            "duration_s": secs,
            "calls": calls.iter().map(|(name, t)| with(tally(t), "call", (*name).into())).collect::<Vec<_>>(),
            "processes": by_process.iter().map(|(pid, t)| with(tally(t), "pid", pid.0.into())).collect::<Vec<_>>(),
            "threads": by_thread
                .iter()
                .map(|((pid, tid), t)| with(with(tally(t), "pid", pid.0.into()), "tid", tid.0.into()))
                .collect::<Vec<_>>(),
        });
        w(out, report.to_string())?;
        return out.flush().map_err(Error::io("cannot write output"));
    }
    w(out, format!("log       {}", path.display()))?;
    w(out, format!("events    {} (seq {}..={})", total.events, first_seq.unwrap_or(Seq::ZERO), last_seq))?;
    w(out, format!("batches   {}", summary.batches))?;
    if let Some(kept) = summary.kept_from {
        w(out, format!("kept      from event {kept} on: older events were dropped (--retain)"))?;
    }
    w(
        out,
        format!("bytes     {} logged ({} in the file), {} of payload", summary.logged_bytes, file_bytes, total.bytes),
    )?;
    w(
        out,
        format!("duration  {secs:.3} s ({:.0} events/s)", if secs > 0.0 { total.events as f64 / secs } else { 0.0 }),
    )?;
    w(out, String::new())?;
    w(out, format!("{:<26} {:>10} {:>12}", "call", "events", "bytes"))?;
    for (name, t) in calls {
        w(out, format!("{:<26} {:>10} {:>12}", name, t.events, t.bytes))?;
    }
    w(out, String::new())?;
    w(out, format!("{:<26} {:>10} {:>12}", "process", "events", "bytes"))?;
    for (pid, t) in by_process {
        w(out, format!("{:<26} {:>10} {:>12}", pid, t.events, t.bytes))?;
    }
    w(out, String::new())?;
    w(out, format!("{:<26} {:>10} {:>12}", "thread (pid.tid)", "events", "bytes"))?;
    for ((pid, tid), t) in by_thread {
        w(out, format!("{:<26} {:>10} {:>12}", format!("{pid}.{tid}"), t.events, t.bytes))?;
    }
    out.flush().map_err(Error::io("cannot write output"))
}
