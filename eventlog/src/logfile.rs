//! Log files: a header, then batches of events, each with its own checksums, then an end
//! marker. A reader checks every batch before handing out any of its events, so a truncated or
//! corrupted file is reported (naming the batch and its offset), never half-read silently.
//!
//! ```text
//! FileHeader (64 bytes)
//! LaunchHeader (24 bytes, magic "TLCH") body: the program's argv, environment and cwd, then
//!                                        its data directories and the capture of them, and
//!                                        its executable's and libraries' identities
//! BatchHeader (40 bytes, magic "TBAT")  body: event records, body_len bytes
//!   or, with flag BATCH_PACKED: the records' length (u32) and the records packed (`pack`)
//! ...
//! BatchHeader (magic "TEND", no body)   written when the recording finished cleanly
//! zero bytes                             space made ready for batches not yet written
//! ```
//!
//! A writer that syncs every batch (a backup) writes into space it filled with zeros and synced
//! beforehand: syncing a batch there commits no change of the file's size or extents. So a log
//! may end in zeros, and a batch header of zeros is where the written part ends.

use crate::ids::{IncarnationToken, Seq};
use crate::record::{Event, RecordError};
use bytemuck::{Pod, Zeroable};
use std::io::{self, Read, Seek, SeekFrom, Write};

pub const FILE_MAGIC: [u8; 8] = *b"TNDMLOG\0";
/// Bump whenever the file, batch or event layout changes.
pub const FILE_VERSION: u32 = 6;
/// The oldest version this reader still reads: version 5 differs only in compressing batches
/// without coding them (flag BATCH_ZSTD), version 4 also in naming no data
/// directories or capture, version 3 also in never ending in zeros, version 2 also in having no
/// batch flags.
pub const MIN_FILE_VERSION: u32 = 2;
/// Batch flag of logs up to version 5: the body is the events' length and the events
/// zstd-compressed.
pub const BATCH_ZSTD: u32 = 1;
/// Batch flag: the body is the events' length and the events packed ([`crate::pack`]); a
/// backup keeps batches as they crossed the network.
pub const BATCH_PACKED: u32 = 2;
pub const LAUNCH_MAGIC: u32 = u32::from_le_bytes(*b"TLCH");
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"TBAT");
pub const END_MAGIC: u32 = u32::from_le_bytes(*b"TEND");
/// Upper bound on one batch body; a larger length is treated as corruption, not allocated.
pub const MAX_BATCH_BODY: u32 = 64 << 20;

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct FileHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_len: u32,
    pub incarnation: IncarnationToken,
    pub created_unix_ns: u64,
    pub flags: u32,
    pub reserved: [u8; 16],
    /// crc32c of the 60 bytes before it.
    pub crc: u32,
}

const _: () = assert!(core::mem::size_of::<FileHeader>() == 64);

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BatchHeader {
    pub magic: u32,
    pub flags: u32,
    pub first_seq: Seq,
    pub event_count: u32,
    pub body_len: u32,
    /// Wall-clock time (ns since the epoch) when the agent cut the batch.
    pub wall_ns: u64,
    pub body_crc: u32,
    /// crc32c of the 36 bytes before it.
    pub header_crc: u32,
}

const _: () = assert!(core::mem::size_of::<BatchHeader>() == 40);

/// How the program was started: a backup must start it the same way. The environment matters as
/// much as the arguments (programs copy and size things after it).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Launch {
    pub argv: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    /// The directories whose contents at the program's start are replicated with it (absolute
    /// paths, as the primary names them).
    pub data: Vec<Vec<u8>>,
    /// The capture of `data` taken before the program started.
    pub capture: Option<CaptureRef>,
    /// The program's executable and the libraries it names, each with its identity (`build-id:HEX`
    /// or `sha256:HEX`) and path: a backup must run the same ones.
    pub binaries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The program's standard input is a pipe its agent owns: what the agent hands over through
    /// it is in the log (`stdin` events), and a backup's agent hands the same over.
    pub stdin: bool,
}

/// A capture of the data directories, stored once under its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureRef {
    /// SHA-256 of the stored capture.
    pub digest: [u8; 32],
    /// Its stored size.
    pub bytes: u64,
}

impl CaptureRef {
    /// The digest in hex: the capture's name in a store.
    pub fn name(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn encode(&self) -> String {
        format!("{}:{}", self.name(), self.bytes)
    }

    fn decode(text: &[u8]) -> Option<CaptureRef> {
        let text = core::str::from_utf8(text).ok()?;
        let (hex, bytes) = text.split_once(':')?;
        if hex.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (i, d) in digest.iter_mut().enumerate() {
            *d = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(CaptureRef { digest, bytes: bytes.parse().ok()? })
    }
}

/// Tags of the entries after the working directory (a path is never empty nor holds a NUL).
const DATA_TAG: &[u8] = b"data=";
const CAPTURE_TAG: &[u8] = b"capture=";
const BINARY_TAG: &[u8] = b"binary=";
const STDIN_PIPE: &[u8] = b"stdin=pipe";

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct LaunchHeader {
    pub magic: u32,
    pub argc: u32,
    pub envc: u32,
    pub body_len: u32,
    pub body_crc: u32,
    /// crc32c of the 20 bytes before it.
    pub header_crc: u32,
}

const _: () = assert!(core::mem::size_of::<LaunchHeader>() == 24);

impl Launch {
    /// argv, then env, then cwd, then `data=PATH` for each data directory and
    /// `capture=DIGEST:BYTES`, each NUL-terminated.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let data = self.data.iter().map(|d| [DATA_TAG, d].concat());
        let capture = self.capture.iter().map(|c| [CAPTURE_TAG, c.encode().as_bytes()].concat());
        let binaries = self.binaries.iter().map(|(id, path)| [BINARY_TAG, id, b" ", path].concat());
        let stdin = self.stdin.then(|| STDIN_PIPE.to_vec());
        let tagged: Vec<Vec<u8>> = data.chain(capture).chain(binaries).chain(stdin).collect();
        for s in self.argv.iter().chain(&self.env).chain(core::iter::once(&self.cwd)).chain(&tagged) {
            body.extend_from_slice(s);
            body.push(0);
        }
        body
    }

    pub fn decode(argc: u32, envc: u32, body: &[u8]) -> Option<Launch> {
        let body = body.strip_suffix(&[0])?;
        let mut parts = body.split(|&b| b == 0);
        let mut take = |n: u32| (0..n).map(|_| parts.next().map(<[u8]>::to_vec)).collect::<Option<Vec<_>>>();
        let argv = take(argc)?;
        let env = take(envc)?;
        let cwd = take(1)?.pop()?;
        let mut launch = Launch { argv, env, cwd, ..Launch::default() };
        for part in parts {
            if let Some(path) = part.strip_prefix(DATA_TAG) {
                launch.data.push(path.to_vec());
            } else if let Some(c) = part.strip_prefix(CAPTURE_TAG) {
                launch.capture = Some(CaptureRef::decode(c)?);
            } else if let Some(b) = part.strip_prefix(BINARY_TAG) {
                let space = b.iter().position(|&c| c == b' ')?;
                launch.binaries.push((b[..space].to_vec(), b[space + 1..].to_vec()));
            } else if part == STDIN_PIPE {
                launch.stdin = true;
            } else {
                return None;
            }
        }
        Some(launch)
    }
}

impl FileHeader {
    pub fn new(incarnation: IncarnationToken, created_unix_ns: u64) -> FileHeader {
        let mut h = FileHeader {
            magic: FILE_MAGIC,
            version: FILE_VERSION,
            header_len: core::mem::size_of::<FileHeader>() as u32,
            incarnation,
            created_unix_ns,
            flags: 0,
            reserved: [0; 16],
            crc: 0,
        };
        h.crc = crc32c::crc32c(&bytemuck::bytes_of(&h)[..60]);
        h
    }
}

impl BatchHeader {
    fn seal(mut self) -> BatchHeader {
        self.header_crc = crc32c::crc32c(&bytemuck::bytes_of(&self)[..36]);
        self
    }

    fn header_ok(&self) -> bool {
        self.header_crc == crc32c::crc32c(&bytemuck::bytes_of(self)[..36])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read the log: {0}")]
    Io(#[from] io::Error),
    #[error("not a tandem log (no log header at offset 0)")]
    NotALog,
    #[error("log format version {found} is not supported (this build reads version {supported})")]
    Version { found: u32, supported: u32 },
    #[error("log header at offset 0 is corrupted (checksum mismatch)")]
    HeaderChecksum,
    #[error("batch {batch} at offset {offset}: truncated: its {what} needs {needed} bytes, the file has {available}")]
    Truncated { batch: u64, offset: u64, what: &'static str, needed: u64, available: u64 },
    #[error("batch {batch} at offset {offset}: {what} checksum mismatch (corrupted)")]
    Checksum { batch: u64, offset: u64, what: &'static str },
    #[error("batch {batch} at offset {offset}: corrupted: {detail}")]
    Corrupt { batch: u64, offset: u64, detail: String },
    #[error("batch {batch} at offset {offset}: sequence gap: expected seq {expected}, found {found}")]
    SeqGap { batch: u64, offset: u64, expected: Seq, found: Seq },
    #[error("log ends at offset {offset} after batch {batch} without an end marker: the recording was cut short")]
    Unterminated { batch: u64, offset: u64 },
}

/// Writes a log file.
pub struct LogWriter<W: Write> {
    out: W,
    offset: u64,
    batches: u64,
    next_seq: Option<Seq>,
}

impl<W: Write> LogWriter<W> {
    pub fn create(
        mut out: W,
        incarnation: IncarnationToken,
        created_unix_ns: u64,
        launch: &Launch,
    ) -> io::Result<Self> {
        let header = FileHeader::new(incarnation, created_unix_ns);
        out.write_all(bytemuck::bytes_of(&header))?;
        let body = launch.encode();
        let body_len = u32::try_from(body.len()).ok().filter(|&l| l <= MAX_BATCH_BODY).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "program arguments and environment too large")
        })?;
        let mut lh = LaunchHeader {
            magic: LAUNCH_MAGIC,
            argc: launch.argv.len() as u32,
            envc: launch.env.len() as u32,
            body_len,
            body_crc: crc32c::crc32c(&body),
            header_crc: 0,
        };
        lh.header_crc = crc32c::crc32c(&bytemuck::bytes_of(&lh)[..20]);
        out.write_all(bytemuck::bytes_of(&lh))?;
        out.write_all(&body)?;
        let offset = header.header_len as u64 + 24 + body.len() as u64;
        Ok(LogWriter { out, offset, batches: 0, next_seq: None })
    }

    /// Continues a log whose complete part ends at byte `offset` (the caller has cut anything
    /// after it and positioned `out` there); the next batch must start at `next_seq`.
    pub fn resume(out: W, offset: u64, next_seq: Option<Seq>) -> Self {
        LogWriter { out, offset, batches: 0, next_seq }
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The output, as it is (nothing more is written to it).
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Appends a batch of `event_count` encoded events starting at `first_seq`. Sequence numbers
    /// must continue where the previous batch stopped.
    pub fn write_batch(&mut self, body: &[u8], first_seq: Seq, event_count: u32, wall_ns: u64) -> io::Result<()> {
        self.append(&[body], 0, first_seq, event_count, wall_ns)
    }

    /// Appends a batch whose `raw_len` bytes of events are given packed
    /// ([`crate::pack::pack_events`]). The caller has checked that they unpack to the events it
    /// names; a reader checks again.
    pub fn write_packed_batch(
        &mut self,
        packed: &[u8],
        raw_len: u32,
        first_seq: Seq,
        event_count: u32,
        wall_ns: u64,
    ) -> io::Result<()> {
        self.append(&[&raw_len.to_le_bytes(), packed], BATCH_PACKED, first_seq, event_count, wall_ns)
    }

    fn append(&mut self, body: &[&[u8]], flags: u32, first_seq: Seq, event_count: u32, wall_ns: u64) -> io::Result<()> {
        if let Some(expected) = self.next_seq {
            if expected != first_seq {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("batch starts at seq {first_seq}, log is at {expected}"),
                ));
            }
        }
        let len: usize = body.iter().map(|part| part.len()).sum();
        let body_len = u32::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_BATCH_BODY)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "batch body too large"))?;
        let header = BatchHeader {
            magic: BATCH_MAGIC,
            flags,
            first_seq,
            event_count,
            body_len,
            wall_ns,
            body_crc: body.iter().fold(0, |crc, part| crc32c::crc32c_append(crc, part)),
            header_crc: 0,
        }
        .seal();
        self.out.write_all(bytemuck::bytes_of(&header))?;
        for part in body {
            self.out.write_all(part)?;
        }
        self.offset += (core::mem::size_of::<BatchHeader>() + len) as u64;
        self.batches += 1;
        self.next_seq = Some(first_seq + event_count as u64);
        Ok(())
    }

    /// The sequence number the next batch must start with (None before the first batch).
    pub fn next_seq(&self) -> Option<Seq> {
        self.next_seq
    }

    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Where the log will end once a batch of `events_len` bytes of events is written, given
    /// compressed (`packed`, with their length before them) or as they are.
    pub fn end_after(&self, events_len: usize, packed: Option<&[u8]>) -> u64 {
        let body = packed.map_or(events_len, |p| core::mem::size_of::<u32>() + p.len());
        self.offset + (core::mem::size_of::<BatchHeader>() + body) as u64
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the end marker and flushes. A log without it reads as cut short.
    pub fn finish(mut self, wall_ns: u64) -> io::Result<W> {
        let header = BatchHeader {
            magic: END_MAGIC,
            flags: 0,
            first_seq: self.next_seq.unwrap_or(Seq::FIRST),
            event_count: 0,
            body_len: 0,
            wall_ns,
            body_crc: crc32c::crc32c(&[]),
            header_crc: 0,
        }
        .seal();
        self.out.write_all(bytemuck::bytes_of(&header))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One verified batch.
#[derive(Debug)]
pub struct Batch {
    pub index: u64,
    pub offset: u64,
    pub first_seq: Seq,
    pub event_count: u32,
    pub wall_ns: u64,
    pub body: Vec<u8>,
}

impl Batch {
    /// The batch's events (already verified when the batch was read).
    pub fn events(&self) -> impl Iterator<Item = Event<'_>> {
        let mut rest = &self.body[..];
        core::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let (e, r) = Event::parse(rest).ok()?;
            rest = r;
            Some(e)
        })
    }
}

/// Reads and verifies a log file batch by batch.
pub struct LogReader<R: Read> {
    input: R,
    header: FileHeader,
    launch: Launch,
    offset: u64,
    batch: u64,
    next_seq: Option<Seq>,
    end_wall_ns: Option<u64>,
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<R: Read> LogReader<R> {
    pub fn open(mut input: R) -> Result<Self, LogError> {
        let mut buf = [0u8; 64];
        let got = read_full(&mut input, &mut buf)?;
        if got < 8 || buf[..8] != FILE_MAGIC {
            return Err(LogError::NotALog);
        }
        if got < buf.len() {
            return Err(LogError::Truncated {
                batch: 0,
                offset: 0,
                what: "file header",
                needed: 64,
                available: got as u64,
            });
        }
        let header: FileHeader = bytemuck::pod_read_unaligned(&buf);
        if !(MIN_FILE_VERSION..=FILE_VERSION).contains(&header.version) {
            return Err(LogError::Version { found: header.version, supported: FILE_VERSION });
        }
        if header.crc != crc32c::crc32c(&buf[..60]) {
            return Err(LogError::HeaderChecksum);
        }
        let launch = read_launch(&mut input)?;
        let offset = 64 + 24 + launch.1;
        Ok(LogReader { input, header, launch: launch.0, offset, batch: 0, next_seq: None, end_wall_ns: None })
    }

    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// How the primary started the program.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// Byte offset just past the last batch read (where the next one starts).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The sequence number the next batch must start with (None before the first batch).
    pub fn next_seq(&self) -> Option<Seq> {
        self.next_seq
    }

    /// Wall time of the end marker, once it has been read.
    pub fn end_wall_ns(&self) -> Option<u64> {
        self.end_wall_ns
    }

    /// The next verified batch; `Ok(None)` after the end marker.
    pub fn next_batch(&mut self) -> Result<Option<Batch>, LogError> {
        if self.end_wall_ns.is_some() {
            return Ok(None);
        }
        let (batch, offset) = (self.batch + 1, self.offset);
        let mut buf = [0u8; 40];
        let got = read_full(&mut self.input, &mut buf)?;
        if got == 0 {
            return Err(LogError::Unterminated { batch: self.batch, offset });
        }
        if got < buf.len() {
            return Err(LogError::Truncated { batch, offset, what: "header", needed: 40, available: got as u64 });
        }
        if buf == [0; 40] {
            return Err(LogError::Unterminated { batch: self.batch, offset });
        }
        let header: BatchHeader = bytemuck::pod_read_unaligned(&buf);
        if header.magic != BATCH_MAGIC && header.magic != END_MAGIC {
            return Err(LogError::Corrupt { batch, offset, detail: format!("bad batch magic {:#010x}", header.magic) });
        }
        if !header.header_ok() {
            return Err(LogError::Checksum { batch, offset, what: "header" });
        }
        if header.body_len > MAX_BATCH_BODY {
            return Err(LogError::Corrupt {
                batch,
                offset,
                detail: format!("body length {} too large", header.body_len),
            });
        }
        if let Some(expected) = self.next_seq {
            if header.first_seq != expected {
                return Err(LogError::SeqGap { batch, offset, expected, found: header.first_seq });
            }
        }
        if header.magic == END_MAGIC {
            self.end_wall_ns = Some(header.wall_ns);
            self.offset += 40;
            return Ok(None);
        }
        let mut body = vec![0u8; header.body_len as usize];
        let got = read_full(&mut self.input, &mut body)?;
        if got < body.len() {
            return Err(LogError::Truncated {
                batch,
                offset,
                what: "body",
                needed: header.body_len as u64,
                available: got as u64,
            });
        }
        if crc32c::crc32c(&body) != header.body_crc {
            return Err(LogError::Checksum { batch, offset, what: "body" });
        }
        let corrupt = |detail: String| LogError::Corrupt { batch, offset, detail };
        let body = match header.flags {
            0 => body,
            BATCH_ZSTD | BATCH_PACKED => unpack(header.flags, &body).map_err(corrupt)?,
            other => return Err(corrupt(format!("unknown batch flags {other:#x}"))),
        };
        verify_events(&body, header.first_seq, header.event_count).map_err(corrupt)?;
        self.batch = batch;
        self.offset += 40 + header.body_len as u64;
        self.next_seq = Some(header.first_seq + header.event_count as u64);
        Ok(Some(Batch {
            index: batch,
            offset,
            first_seq: header.first_seq,
            event_count: header.event_count,
            wall_ns: header.wall_ns,
            body,
        }))
    }
}

impl<R: Read + Seek> LogReader<R> {
    /// Moves to the batch at `offset`, whose first event is `first_seq`: a bounded log's first
    /// kept batch (the batches before it were dropped and read as zeros).
    pub fn skip_to(&mut self, offset: u64, first_seq: Seq) -> io::Result<()> {
        self.input.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        self.next_seq = Some(first_seq);
        Ok(())
    }

    /// A bounded log (`--retain`) reads as zeros where its oldest batches were dropped: if this
    /// one was cut so, moves to its first kept batch and returns that batch's first event. Call
    /// it before the first batch.
    pub fn skip_dropped(&mut self) -> io::Result<Option<Seq>> {
        let start = self.offset;
        let mut head = [0u8; 40];
        let got = read_full(&mut self.input, &mut head)?;
        let found =
            if got == head.len() && head.iter().all(|&b| b == 0) { find_batch_header(&mut self.input)? } else { None };
        match found {
            Some((at, header)) if header.magic == BATCH_MAGIC => {
                self.skip_to(start + head.len() as u64 + at, header.first_seq)?;
                Ok(Some(header.first_seq))
            }
            _ => {
                self.input.seek(SeekFrom::Start(start))?;
                Ok(None)
            }
        }
    }

    /// Like [`next_batch`](Self::next_batch), for a log another process is still writing:
    /// `Ok(None)` when the next batch is not (completely) there yet, after putting the reader
    /// back at its start so a later call reads it whole. `Ok(Some(None))` after the end marker.
    pub fn follow(&mut self) -> Result<Option<Option<Batch>>, LogError> {
        let start = self.offset;
        match self.next_batch() {
            Ok(b) => Ok(Some(b)),
            Err(LogError::Unterminated { .. } | LogError::Truncated { .. }) => {
                self.input.seek(SeekFrom::Start(start))?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether a sealed batch header (or end marker) starts anywhere in `input`. After a batch that
/// fails its checks, none means the batch is the torn last write of a writer that died; one
/// means the damage is in the middle of the log.
pub fn holds_batch_header(input: impl Read) -> io::Result<bool> {
    Ok(find_batch_header(input)?.is_some())
}

/// The first sealed batch header (or end marker) in `input`: how far in it starts, and it.
fn find_batch_header(mut input: impl Read) -> io::Result<Option<(u64, BatchHeader)>> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK + 40];
    // Bytes carried over from the previous chunk, so a header across the seam is seen.
    let mut kept = 0;
    // Where `buf` starts in `input`.
    let mut base = 0u64;
    loop {
        let got = read_full(&mut input, &mut buf[kept..])?;
        let end = kept + got;
        for at in 0..end.saturating_sub(39) {
            let magic = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            if magic == BATCH_MAGIC || magic == END_MAGIC {
                let header = bytemuck::pod_read_unaligned::<BatchHeader>(&buf[at..at + 40]);
                if header.header_ok() {
                    return Ok(Some((base + at as u64, header)));
                }
            }
        }
        if got < buf.len() - kept {
            return Ok(None);
        }
        buf.copy_within(end - 39..end, 0);
        base += (end - 39) as u64;
        kept = 39;
    }
}

/// The events of a packed batch body (flag `flags`): their length, then them packed.
fn unpack(flags: u32, stored: &[u8]) -> Result<Vec<u8>, String> {
    let (len, packed) = stored.split_first_chunk::<4>().ok_or("a compressed batch without its length")?;
    let len = u32::from_le_bytes(*len);
    match flags {
        BATCH_ZSTD => crate::pack::unpack_plain(len, packed),
        _ => crate::pack::unpack_events(len, packed),
    }
}

/// Reads the launch section after the file header; returns it and its body length.
fn read_launch(input: &mut impl Read) -> Result<(Launch, u64), LogError> {
    let bad = |detail: String| LogError::Corrupt { batch: 0, offset: 64, detail };
    let mut buf = [0u8; 24];
    let got = read_full(input, &mut buf)?;
    if got < buf.len() {
        return Err(LogError::Truncated {
            batch: 0,
            offset: 64,
            what: "launch record",
            needed: 24,
            available: got as u64,
        });
    }
    let lh: LaunchHeader = bytemuck::pod_read_unaligned(&buf);
    if lh.magic != LAUNCH_MAGIC {
        return Err(bad(format!("bad launch record magic {:#010x}", lh.magic)));
    }
    if lh.header_crc != crc32c::crc32c(&buf[..20]) {
        return Err(LogError::Checksum { batch: 0, offset: 64, what: "launch record header" });
    }
    if lh.body_len > MAX_BATCH_BODY {
        return Err(bad(format!("launch record of {} bytes is too large", lh.body_len)));
    }
    let mut body = vec![0u8; lh.body_len as usize];
    let got = read_full(input, &mut body)?;
    if got < body.len() {
        return Err(LogError::Truncated {
            batch: 0,
            offset: 64,
            what: "launch record",
            needed: lh.body_len as u64,
            available: got as u64,
        });
    }
    if crc32c::crc32c(&body) != lh.body_crc {
        return Err(LogError::Checksum { batch: 0, offset: 64, what: "launch record body" });
    }
    let launch = Launch::decode(lh.argc, lh.envc, &body).ok_or_else(|| bad("malformed launch record".into()))?;
    Ok((launch, body.len() as u64))
}

/// Checks that `body` holds exactly `count` well-formed events numbered from `first_seq`.
pub fn verify_events(body: &[u8], first_seq: Seq, count: u32) -> Result<(), String> {
    if first_seq.checked_add(count as u64).is_none() {
        return Err(format!("{count} events from seq {first_seq} run past the last sequence number"));
    }
    let mut rest = body;
    for i in 0..count {
        let seq = first_seq + i as u64;
        let (e, r) = Event::parse(rest).map_err(|e: RecordError| format!("event {i} of {count}: {e}"))?;
        if e.header.seq != seq {
            return Err(format!("event {i} has seq {}, expected {seq}", e.header.seq));
        }
        rest = r;
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last of {count} events", rest.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Call;
    use crate::record::{encode_into, EventHeader};

    fn event(seq: u64, payload: &[u8]) -> (EventHeader, Vec<u8>) {
        let h = EventHeader {
            pid: crate::ids::LogicalPid(1),
            fd: 3,
            result: payload.len() as i64,
            payload_len: payload.len() as u32,
            ..EventHeader::new(Seq(seq), Call::Read)
        };
        (h, payload.to_vec())
    }

    fn launch() -> Launch {
        Launch {
            argv: vec![b"/bin/prog".to_vec(), b"--flag".to_vec()],
            env: vec![b"A=1".to_vec(), b"EMPTY=".to_vec()],
            cwd: b"/tmp".to_vec(),
            data: vec![b"/srv/data".to_vec(), b"/tmp".to_vec()],
            capture: Some(CaptureRef { digest: [0xab; 32], bytes: 4096 }),
            binaries: vec![(b"build-id:00ff".to_vec(), b"/usr/bin/a program".to_vec())],
            stdin: true,
        }
    }

    #[test]
    fn a_launch_reads_back_with_its_data_and_capture_and_without_them() {
        let full = launch();
        let body = full.encode();
        assert_eq!(Launch::decode(2, 2, &body), Some(full.clone()));
        let bare = Launch { data: vec![], capture: None, binaries: vec![], stdin: false, ..full };
        assert_eq!(Launch::decode(2, 2, &bare.encode()), Some(bare.clone()));
        // An empty argument is an argument, not the end.
        let empty_arg = Launch { argv: vec![b"prog".to_vec(), vec![]], ..bare };
        assert_eq!(Launch::decode(2, 2, &empty_arg.encode()), Some(empty_arg));
        let mut unknown = body.clone();
        unknown.extend_from_slice(b"what=1\0");
        assert_eq!(Launch::decode(2, 2, &unknown), None);
        assert_eq!(Launch::decode(2, 2, &body[..body.len() - 1]), None);
    }

    fn sample_log() -> Vec<u8> {
        let mut w = LogWriter::create(Vec::new(), IncarnationToken::NONE, 1, &launch()).unwrap();
        let mut seq = 1;
        for b in 0..3 {
            let mut body = Vec::new();
            for i in 0..5 {
                let (h, p) = event(seq, &vec![b as u8; i * 3]);
                encode_into(&mut body, &h, &p);
                seq += 1;
            }
            w.write_batch(&body, Seq(seq - 5), 5, 100 + b).unwrap();
        }
        w.finish(200).unwrap()
    }

    /// A log whose middle batch is kept compressed, as a backup keeps what arrived so.
    fn packed_log(packed: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        packed_log_as(BATCH_PACKED, packed)
    }

    fn packed_log_as(flags: u32, packed: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut w = LogWriter::create(Vec::new(), IncarnationToken::NONE, 1, &launch()).unwrap();
        let plain = sample_log();
        let mut r = LogReader::open(&plain[..]).unwrap();
        while let Some(b) = r.next_batch().unwrap() {
            let compressed = (b.index == 2).then(|| packed(&b.body));
            let end = w.end_after(b.body.len(), compressed.as_deref());
            match &compressed {
                Some(p) => {
                    let len = (b.body.len() as u32).to_le_bytes();
                    w.append(&[&len, p], flags, b.first_seq, b.event_count, b.wall_ns)
                }
                None => w.write_batch(&b.body, b.first_seq, b.event_count, b.wall_ns),
            }
            .unwrap();
            assert_eq!(w.bytes_written(), end, "end_after foretold another end");
        }
        w.finish(200).unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<u64>, LogError> {
        let mut r = LogReader::open(bytes)?;
        let mut seqs = Vec::new();
        while let Some(b) = r.next_batch()? {
            seqs.extend(b.events().map(|e| e.header.seq.0));
        }
        Ok(seqs)
    }

    #[test]
    fn round_trip() {
        let log = sample_log();
        assert_eq!(read_all(&log).unwrap(), (1..=15).collect::<Vec<_>>());
        assert_eq!(LogReader::open(&log[..]).unwrap().launch(), &launch());
    }

    #[test]
    fn a_cut_log_reads_from_its_first_kept_batch() {
        let seqs = |r: &mut LogReader<std::io::Cursor<&[u8]>>| {
            let mut seqs = Vec::new();
            while let Some(b) = r.next_batch().unwrap() {
                seqs.extend(b.events().map(|e| e.header.seq.0));
            }
            seqs
        };
        let whole = sample_log();
        let mut r = LogReader::open(std::io::Cursor::new(&whole[..])).unwrap();
        assert_eq!(r.skip_dropped().unwrap(), None, "a log that was not cut");
        assert_eq!(seqs(&mut r), (1..=15).collect::<Vec<_>>());

        // --retain drops the first batch: its bytes read as zeros.
        let mut r = LogReader::open(std::io::Cursor::new(&whole[..])).unwrap();
        let first = r.offset() as usize;
        r.next_batch().unwrap();
        let second = r.offset() as usize;
        let mut cut = whole.clone();
        cut[first..second].fill(0);
        let mut r = LogReader::open(std::io::Cursor::new(&cut[..])).unwrap();
        assert_eq!(r.skip_dropped().unwrap(), Some(Seq(6)));
        assert_eq!(seqs(&mut r), (6..=15).collect::<Vec<_>>());
    }

    #[test]
    fn every_truncation_is_reported() {
        let log = sample_log();
        for cut in 0..log.len() {
            let err = read_all(&log[..cut]).unwrap_err();
            match err {
                LogError::NotALog | LogError::Truncated { .. } | LogError::Unterminated { .. } => {}
                other => panic!("cut at {cut}: unexpected {other}"),
            }
        }
    }

    fn assert_every_flip_is_reported(log: &[u8]) {
        for at in 0..log.len() {
            let mut bad = log.to_vec();
            bad[at] ^= 0x40;
            assert!(read_all(&bad).is_err(), "flip at {at} went unnoticed");
        }
    }

    #[test]
    fn every_flipped_byte_is_reported() {
        assert_every_flip_is_reported(&sample_log());
    }

    #[test]
    fn error_names_batch_and_offset() {
        let mut log = sample_log();
        let mut r = LogReader::open(&log[..]).unwrap();
        r.next_batch().unwrap();
        let second_batch = r.next_batch().unwrap().unwrap().offset as usize;
        let launch_len = 24 + launch().encode().len();
        assert_eq!(second_batch, 64 + launch_len + 40 + (5 * 64 + 8 + 8 + 16 + 16));
        log[second_batch + 40 + 70] ^= 1;
        let msg = read_all(&log).unwrap_err().to_string();
        assert_eq!(msg, format!("batch 2 at offset {second_batch}: body checksum mismatch (corrupted)"));
    }

    #[test]
    fn compressed_batches_read_as_their_events() {
        let log = packed_log(|events| crate::pack::pack(events).unwrap());
        assert_eq!(read_all(&log).unwrap(), (1..=15).collect::<Vec<_>>());
        let plain = sample_log();
        let (mut a, mut b) = (LogReader::open(&log[..]).unwrap(), LogReader::open(&plain[..]).unwrap());
        for _ in 0..3 {
            assert_eq!(a.next_batch().unwrap().unwrap().body, b.next_batch().unwrap().unwrap().body);
        }
        assert_every_flip_is_reported(&log);
    }

    #[test]
    fn version_5_compressed_batches_still_read() {
        let log = packed_log_as(BATCH_ZSTD, |events| zstd::bulk::compress(events, 1).unwrap());
        assert_eq!(read_all(&log).unwrap(), (1..=15).collect::<Vec<_>>());
        let short = packed_log_as(BATCH_ZSTD, |events| zstd::bulk::compress(&events[..events.len() - 64], 1).unwrap());
        let msg = read_all(&short).unwrap_err().to_string();
        assert!(msg.contains("the batch says"), "{msg}");
    }

    #[test]
    fn compressed_batches_that_do_not_decompress_are_corrupt() {
        let log = packed_log(|events| {
            let mut p = crate::pack::pack(events).unwrap();
            p.truncate(4);
            p.extend([0x5a; 40]);
            p
        });
        let msg = read_all(&log).unwrap_err().to_string();
        assert!(msg.starts_with("batch 2 at offset") && msg.contains("events do not decompress"), "{msg}");
        let short = packed_log(|events| {
            // Every record but the last.
            let (mut rest, mut last) = (events, 0);
            while !rest.is_empty() {
                last = events.len() - rest.len();
                rest = Event::parse(rest).unwrap().1;
            }
            crate::pack::pack(&events[..last]).unwrap()
        });
        let msg = read_all(&short).unwrap_err().to_string();
        assert!(msg.contains("end inside"), "{msg}");
    }

    #[test]
    fn version_2_logs_still_read() {
        let mut log = sample_log();
        log[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&log[..60]);
        log[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(read_all(&log).unwrap(), (1..=15).collect::<Vec<_>>());
    }

    #[test]
    fn writer_refuses_gaps() {
        let mut w = LogWriter::create(Vec::new(), IncarnationToken::NONE, 1, &launch()).unwrap();
        let mut body = Vec::new();
        let (h, p) = event(1, b"x");
        encode_into(&mut body, &h, &p);
        w.write_batch(&body, Seq(1), 1, 0).unwrap();
        assert!(w.write_batch(&body, Seq(5), 1, 0).is_err());
    }

    #[test]
    fn a_zero_filled_tail_is_where_the_written_part_ends() {
        let full = sample_log();
        let end = full.len() - 40; // without the end marker
        let mut log = full[..end].to_vec();
        log.resize(end + 4096, 0);
        let mut r = LogReader::open(&log[..]).unwrap();
        let mut seqs = Vec::new();
        let err = loop {
            match r.next_batch() {
                Ok(Some(b)) => seqs.extend(b.events().map(|e| e.header.seq.0)),
                Ok(None) => panic!("no end marker was written"),
                Err(e) => break e,
            }
        };
        assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
        assert!(matches!(err, LogError::Unterminated { batch: 3, .. }), "{err}");
        assert_eq!(r.offset() as usize, end);
        // What is written there later is read: here, the end marker.
        log[end..end + 40].copy_from_slice(&full[end..]);
        assert_eq!(read_all(&log).unwrap(), seqs);
    }

    #[test]
    fn a_torn_last_batch_is_told_from_damage_in_the_middle() {
        let full = sample_log();
        let head = 64 + 24 + launch().encode().len();
        let first_body = {
            let mut r = LogReader::open(&full[..]).unwrap();
            r.next_batch().unwrap().unwrap();
            r.offset() as usize
        };
        // What follows the first batch holds the others (and the end marker).
        assert!(holds_batch_header(&full[first_body..]).unwrap());
        // A batch torn at the end: its header, part of its body, then zeros.
        let mut torn = full[head..head + 50].to_vec();
        torn.resize(3 << 20, 0);
        assert!(!holds_batch_header(&torn[40..]).unwrap());
        // A header across the scan's chunk seam is still found.
        let mut seam = vec![0u8; (1 << 20) - 20];
        seam.extend_from_slice(&full[first_body..first_body + 40]);
        seam.resize(3 << 20, 0);
        assert!(holds_batch_header(&seam[..]).unwrap());
        // A magic with a damaged header is not a header.
        let mut fake = [0u8; 100];
        fake[10..50].copy_from_slice(&full[first_body..first_body + 40]);
        fake[30] ^= 1;
        assert!(!holds_batch_header(&fake[..]).unwrap());
    }

    /// A reader following a log that grows in uneven pieces sees every batch once, whole.
    #[test]
    fn follow_reads_a_growing_log() {
        let full = sample_log();
        let path = tempfile::NamedTempFile::new().unwrap();
        let mut w = std::fs::OpenOptions::new().append(true).open(path.path()).unwrap();
        let head = 64 + 24 + launch().encode().len();
        w.write_all(&full[..head]).unwrap();
        let mut r = LogReader::open(std::io::BufReader::new(std::fs::File::open(path.path()).unwrap())).unwrap();
        let (mut seqs, mut at, mut ended) = (Vec::new(), head, false);
        while !ended {
            match r.follow().unwrap() {
                Some(Some(b)) => seqs.extend(b.events().map(|e| e.header.seq.0)),
                Some(None) => ended = true,
                None => {
                    let step = 7.min(full.len() - at);
                    assert!(step > 0, "the whole file is written but the reader did not end");
                    w.write_all(&full[at..at + step]).unwrap();
                    at += step;
                }
            }
        }
        assert_eq!(seqs, read_all(&full).unwrap());
    }
}
