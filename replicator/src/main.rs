//! The `tandem` command.

#![forbid(unsafe_code)]

use clap::{CommandFactory, Parser, Subcommand};
use eventlog::ring::{Geometry, MIN_RING_BYTES};
use replicator::args::{parse_addr, parse_duration, parse_size, parse_size_u32};
use replicator::error::{Error, Result};
use replicator::launch::Launch;
use replicator::notes;
use replicator::recorder::{self, RecordOptions};
use replicator::replayer::{self, Outcome, ReplayOptions};
use replicator::show;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Bytes of shared memory between the replay agent and the program: log batches are fed through it.
const FEED_BYTES: u64 = 64 << 20;

/// Shorter stall timeouts would report a program that is merely descheduled.
const MIN_STALL_TIMEOUT: Duration = Duration::from_millis(100);

/// The exit statuses a command documents in its `--help`, in order: its own below 2, 2 (shared),
/// its own from 3 to 124, 125 (shared), its own from 126 up; the groups separated by `;`.
macro_rules! exit_statuses {
    ($($low:literal),* $(; $($mid:literal),* $(; $($high:literal),*)?)? $(,)?) => {
        concat!(
            "Exit status:\n",
            $("  ", $low, "\n",)*
            "  2    the command line is wrong (the message says what, with a suggestion)\n",
            $($("  ", $mid, "\n",)*)?
            "  125  tandem itself failed (the message says what and what to do)",
            $($($("\n  ", $high,)*)?)?
        )
    };
}

/// What `record` and `primary` exit with.
const PROGRAM_STATUSES: &str = exit_statuses!(
    "N    the program's own status (128 + N if signal N killed it)";;
    "126  the program cannot run under tandem (statically linked, Go, setuid, 32-bit...)",
    "127  the program was not found",
);

/// What `tandem group` commands exit with.
const GROUP_STATUSES: &str = exit_statuses!("0    done", "1    the coordinator refused (the message says why)");

/// What the commands reading a log exit with.
const LOG_STATUSES: &str = exit_statuses!("0    done", "1    the log is damaged or not a tandem log");

/// tandem: keeps a hot standby of an unmodified Linux program by recording (and replaying) its
/// calls in one total order.
///
/// The program to run always comes after `--`: `tandem record --out LOG -- PROGRAM ARGS...`.
#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about,
    after_help = exit_statuses!(
        "0    done; record and primary exit with their program's status",
        "1    a log is damaged or not a tandem log";
        "3    a replay diverged from its log",
        "4    a replay stalled";
        "126  the program cannot run under tandem",
        "127  the program was not found",
    ),
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program under the shim and write every recorded event to a log file. Exits with the
    /// program's own status (128 + signal if it was killed).
    #[command(after_help = PROGRAM_STATUSES)]
    Record {
        /// The log file to write.
        #[arg(long, short, value_name = "LOG")]
        out: PathBuf,
        /// Most threads alive at once, across all processes of the program.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096), value_name = "N")]
        max_threads: u32,
        /// Size of the ring per thread (a power of two, at least 4MiB; bytes, or with a unit).
        #[arg(long, default_value = "4MiB", value_parser = parse_size_u32, value_name = "SIZE")]
        ring_bytes: u32,
        /// Record a program whose threads synchronise without the C library (Rust's standard
        /// library, a Java virtual machine), which is refused otherwise: its replays may stall or
        /// diverge.
        #[arg(long)]
        allow_unseen_sync: bool,
        #[command(flatten)]
        data: DataArgs,
        /// The program and its arguments, after `--`.
        #[arg(required = true, last = true, value_name = "PROGRAM")]
        command: Vec<OsString>,
    },
    /// Run a program as a backup, following a recorded log: every call waits for its turn in the
    /// log's order and gets the primary's results for everything nondeterministic. Exits 0 when
    /// the log is replayed to its end, 3 when the program diverges from the log, 4 when the
    /// replay stalls.
    #[command(after_help = exit_statuses!(
        "0    the program followed the whole log (and was stopped at its end)",
        "N    with --go-live, once live: the program's own status",
        "1    the log is damaged or not a tandem log";
        "3    the program diverged from the log (the report names where)",
        "4    the replay stalled (the report names the event waited for)";
        "126  the program cannot run under tandem",
        "127  the program was not found",
    ))]
    Replay {
        /// The log to follow.
        log: PathBuf,
        /// At the end of the log, let the program continue for real (listening sockets bind
        /// where the primary's did) instead of stopping it; then exit with its status.
        #[arg(long)]
        go_live: bool,
        /// Most threads alive at once, across all processes of the program.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096), value_name = "N")]
        max_threads: u32,
        /// How long without progress before the replay is reported as stalled (with a unit: 5s, 500ms).
        #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
        stall_timeout: Duration,
        /// Keep the program's private view here: what it writes to its data is left in
        /// DIR/upper/N for data directory N (by default the view is a temporary directory,
        /// removed at the end).
        #[arg(long, value_name = "DIR")]
        view_dir: Option<PathBuf>,
        /// Run the program here, on this host's files, instead of in a private view of the data
        /// captured with the log.
        #[arg(long, conflicts_with = "view_dir")]
        no_view: bool,
        /// The program and its arguments, after `--`; by default the primary's, as the log
        /// recorded them (the environment is always the primary's).
        #[arg(last = true, value_name = "PROGRAM")]
        command: Vec<OsString>,
    },
    /// Run a program as its group's primary: record it into the state directory and stream its
    /// events to backups over QUIC. Exits with the program's own status.
    #[command(after_help = PROGRAM_STATUSES)]
    Primary {
        /// The replica group's name; backups must name the same group.
        #[arg(long)]
        group: String,
        /// Address to accept backups on (UDP): HOST:PORT, e.g. 0.0.0.0:7400 or localhost:7400.
        #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
        listen: SocketAddr,
        #[command(flatten)]
        serve: ServeArgs,
        /// Start the program only once this many backups are connected (by default at once: a
        /// backup that comes later catches up from the log).
        #[arg(long, default_value_t = 0, value_name = "N")]
        wait_for_backups: usize,
        /// Run a program whose threads synchronise without the C library (Rust's standard
        /// library, a Java virtual machine), which is refused otherwise: its backups may stall
        /// or diverge.
        #[arg(long)]
        allow_unseen_sync: bool,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        member: MemberArgs,
        /// The program and its arguments, after `--`.
        #[arg(required = true, last = true, value_name = "PROGRAM")]
        command: Vec<OsString>,
    },
    /// Run a program as a backup of its group's primary: receive its events, keep them durably in
    /// the state directory, and replay them. Exits 0 when the primary's program ended and this
    /// one followed it to the end, 3 on divergence, 4 on a stall.
    #[command(after_help = exit_statuses!(
        "0    the primary's program ended and this one followed it to the end",
        "N    once promoted and live: the program's own status",
        "1    its log is damaged";
        "3    the program diverged from the primary's (the report names where)",
        "4    the replay stalled (the report names the event waited for)";
        "126  the program cannot run under tandem, or is not the primary's build",
        "127  the program was not found",
    ))]
    Backup {
        /// The replica group's name, as the primary names it.
        #[arg(long)]
        group: String,
        /// The primary's address: HOST:PORT, e.g. 10.0.0.1:7400 or primary.example:7400. With
        /// --coordinator it may be left out: the group's primary is found there, and a new
        /// primary after a failover too.
        #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT", required_unless_present = "coordinator")]
        primary: Option<SocketAddr>,
        /// Where to serve backups once this backup is promoted (UDP HOST:PORT, an address the
        /// other hosts reach): its program then records on as the group's primary and the
        /// group keeps its standby. Registered with the coordinator, so backups find it.
        /// Without it a promoted backup's program goes live with no backups of its own.
        #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        serve: ServeArgs,
        /// How long without progress (with events waiting) before the replay is reported as
        /// stalled (with a unit: 5s, 500ms).
        #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
        stall_timeout: Duration,
        /// Keep the primary's log durably without running the program (a witness cannot be
        /// promoted, but its state directory can seed a backup).
        #[arg(long)]
        witness: bool,
        #[command(flatten)]
        member: MemberArgs,
        /// The program and its arguments, after `--`; by default the primary's.
        #[arg(last = true, value_name = "PROGRAM")]
        command: Vec<OsString>,
    },
    /// Hand a group over to one of its backups, as planned: the primary stops releasing output,
    /// the backup receives everything the primary recorded, the coordinator names it primary of
    /// the next epoch, and the old primary rejoins as its backup. No acknowledged write is lost;
    /// clients see a pause. Prints the new primary and epoch; refused, says why (exit 125), and
    /// the group carries on as it was.
    #[command(after_help = exit_statuses!("0    switched over (or the named backup is the primary already)"))]
    Switchover {
        /// The group.
        #[arg(long)]
        group: String,
        /// The backup to hand over to; by default the one holding most.
        #[arg(long, value_name = "NAME")]
        to: Option<String>,
        /// Names this request: run again with the same id (after a timeout, say), it changes
        /// nothing more. By default a new one.
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// The coordinator's members (ADDR,ADDR,...).
        #[arg(long, value_delimiter = ',', value_name = "ADDR,...", required = true)]
        coordinator: Vec<String>,
        /// The cluster's certificates, to reach the primary.
        #[arg(long, default_value = "certs", value_name = "DIR")]
        certs: PathBuf,
        /// Whose certificate (NAME.crt in --certs) to present.
        #[arg(long)]
        name: String,
    },
    /// Make a backup take over: it stops following the primary, replays every event it holds,
    /// and its program goes live from exactly there (listening where the primary's did). Make
    /// sure the old primary is gone first. Prints where the program goes live.
    #[command(after_help = exit_statuses!("0    the backup's program is live"))]
    Promote {
        /// The backup agent's state directory (by default the one its --group and --name give).
        #[arg(long, required_unless_present_all = ["group", "name"], value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The backup's group, to find its default state directory.
        #[arg(long, requires = "name")]
        group: Option<String>,
        /// The backup's name, to find its default state directory.
        #[arg(long, requires = "group")]
        name: Option<String>,
        /// The backup follows this coordinator (ADDR,...): ask it to name the backup primary
        /// (`tandem failover --to NAME`) instead; the backup then promotes itself. A steered
        /// backup refuses a promotion asked without it.
        #[arg(long, requires_all = ["group", "name"], value_delimiter = ',', value_name = "ADDR,...")]
        coordinator: Option<Vec<String>>,
        /// The cluster's certificates, to reach the coordinator over TLS (as --name).
        #[arg(long, requires = "coordinator", value_name = "DIR")]
        certs: Option<PathBuf>,
    },
    /// Show each group's members: role, epoch, what each holds, how far each lags (events,
    /// bytes, time), when each last reported, the primary's lease, a catching-up backup's
    /// progress. From the coordinator with --coordinator; else from the agents on this host
    /// (their control sockets: every agent under the default state home, or those named with
    /// --state-dir).
    #[command(after_help = exit_statuses!("0    shown"))]
    Status {
        /// The coordinator's members (ADDR,ADDR,...; https://ADDR for TLS, with --certs and --name).
        #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
        coordinator: Option<Vec<String>>,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// A local agent's state directory (repeat for several): ask its control socket.
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dirs: Vec<PathBuf>,
        /// The cluster's certificates, to reach a coordinator over TLS.
        #[arg(long, requires = "name", value_name = "DIR")]
        certs: Option<PathBuf>,
        /// This host's certificate name in --certs.
        #[arg(long, requires = "certs")]
        name: Option<String>,
        /// One JSON object ({"groups": [...]}) instead of tables.
        #[arg(long)]
        json: bool,
        /// Show it again every DURATION (1s when no duration is given) until interrupted.
        #[arg(long, value_parser = parse_duration, num_args = 0..=1, default_missing_value = "1s", value_name = "DURATION")]
        watch: Option<Duration>,
    },
    /// Look after the coordinator's groups: list them, show one, take a backup out, or forget a
    /// group that has no live primary so that it can be started again.
    #[command(after_help = GROUP_STATUSES)]
    Group {
        #[command(subcommand)]
        action: GroupAction,
    },
    /// Ask the coordinator to name a new primary of a group: the backup given with --to, or the
    /// most up-to-date one that may take over. Prints the new epoch and primary. Safe to repeat
    /// under the same --request-id: it happens once.
    #[command(after_help = exit_statuses!(
        "0    the group has a new primary (printed)",
        "1    the coordinator refused (the message says why)",
    ))]
    Failover {
        /// The group.
        #[arg(long)]
        group: String,
        /// The backup to name (by default the most up-to-date one that may take over).
        #[arg(long, value_name = "MEMBER")]
        to: Option<String>,
        /// The request's id: the same id asked again returns the first outcome instead of
        /// failing over twice (by default a fresh random one).
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// How long a refusal because no backup holds what the primary released is retried: the
        /// backups' last reports may still be on their way.
        #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
        patience: Duration,
        #[command(flatten)]
        at: CoordinatorArgs,
    },
    /// Run a coordinator member: the authority on each group's primary, epoch and incarnation,
    /// serving an HTTP/JSON API. Alone (the default) it is the whole coordinator; with --peers it
    /// is one member of a Raft cluster of 3 or 5.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = exit_statuses!("     a member serves until it is killed: it exits only on failure"),
    )]
    Coordinator {
        #[command(subcommand)]
        action: Option<CoordinatorAction>,
        /// Where this member keeps its Raft log, state and identity.
        #[arg(long, alias = "data-dir", default_value = "tandem-coordinator", value_name = "DIR")]
        state_dir: PathBuf,
        /// Address of the API (and of the members' Raft traffic): HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:7500", value_parser = parse_addr, value_name = "HOST:PORT")]
        listen: SocketAddr,
        /// This member's id in --peers.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// Every member of the cluster, this one included: ID=ADDR,ID=ADDR,... (by default this
        /// member alone, at --listen).
        #[arg(long, value_parser = coordinator::server::parse_peers, value_name = "ID=ADDR,...")]
        peers: Option<std::collections::BTreeMap<u64, String>>,
        /// Serve (and reach the other members) over HTTPS with mutual TLS: the cluster's
        /// certificates from `tandem certs`, this member's being NAME.crt (see --name). Agents
        /// then name the members as https://ADDR.
        #[arg(long, value_name = "DIR")]
        certs: Option<PathBuf>,
        /// This member's certificate name in --certs (default: coordinator-ID).
        #[arg(long)]
        name: Option<String>,
        /// How long without a renewal before a primary's lease lapses and its epoch ends
        /// (primaries fence themselves at four fifths of this without a confirmed renewal). It
        /// must outlast a Raft election of the members (about 300 ms) and a renewal: below
        /// 600ms a primary may fence itself when the coordinator's leader dies.
        #[arg(long, default_value = "750ms", value_parser = parse_duration, value_name = "DURATION")]
        lease_timeout: Duration,
        /// The lease timeout in milliseconds: the older spelling of --lease-timeout.
        #[arg(long, hide = true, conflicts_with = "lease_timeout")]
        lease_timeout_ms: Option<u64>,
    },
    /// Read log files.
    #[command(after_help = LOG_STATUSES)]
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// The cluster's certificates: agents accept only peers whose certificate the cluster's CA issued.
    #[command(after_help = exit_statuses!("0    done"))]
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Print a completion script for SHELL on stdout (see the README for where to put it).
    #[command(after_help = exit_statuses!("0    done"))]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print tandem's manual page (roff) on stdout, or write one page per command into DIR.
    #[command(after_help = exit_statuses!("0    done"))]
    Man {
        /// Write tandem.1, tandem-record.1, ... here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Builds a backup's private view from PLAN and runs its program there, as its keeper
    /// (started by agents).
    #[command(hide = true)]
    EnterView { plan: PathBuf },
    /// Runs a program as the subreaper of its tree, which dies with the agent AGENT (started by
    /// agents, with the program's environment).
    #[command(hide = true)]
    Keep {
        #[arg(long)]
        agent: i32,
        /// The program, its argv[0] and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Sync,
    Async,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AckArg {
    Received,
    Durable,
}

/// The program's data: what a backup's program finds in its private view.
#[derive(clap::Args)]
struct DataArgs {
    /// A directory whose contents at the program's start are replicated with it (repeat for
    /// several; by default the working directory). Backups and replays run the program where
    /// this data appears at the same path, in a private view of their own.
    #[arg(long = "data", value_name = "DIR")]
    data: Vec<PathBuf>,
    /// Replicate no data: a backup's program runs in its agent's directory, on its host's files.
    #[arg(long, conflicts_with = "data")]
    no_capture: bool,
    /// Most bytes of files the data may hold (e.g. 64MiB, 2GiB); more is refused.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    capture_limit: u64,
}

impl DataArgs {
    fn choice(self) -> replicator::capture::DataChoice {
        replicator::capture::DataChoice { dirs: self.data, none: self.no_capture, limit: self.capture_limit }
    }
}

/// How a primary serves its backups (and a backup, once promoted, its own).
#[derive(clap::Args)]
struct ServeArgs {
    /// sync: output to clients waits until --min-backups backups hold what it depends on;
    /// async: output leaves at once and backups may lag by --max-lag-events.
    #[arg(long, value_enum, default_value_t = ModeArg::Sync)]
    mode: ModeArg,
    /// Backups that must hold an event before output depending on it leaves.
    #[arg(long, default_value_t = 1, value_name = "N")]
    min_backups: usize,
    /// Sync mode: what "hold" means. durable: on the backup's disk (survives losing every
    /// host at once); received: verified in the backup's memory and handed to its log writer
    /// (survives losing the primary's host, as Remus, COLO and Redis WAIT do).
    #[arg(long, value_enum, default_value_t = AckArg::Durable)]
    ack: AckArg,
    /// Async mode: most events a connected backup may lag behind before the program is held back.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    max_lag_events: u64,
    /// Send event batches to backups as they are, not compressed (zstd): for links faster
    /// than a core compresses, about a gigabyte a second.
    #[arg(long)]
    no_compress: bool,
    /// Keep at most this much of the log (a size, e.g. 20GiB, or an age, e.g. 6h); older
    /// events are dropped once every connected backup holds them. From then on no backup that
    /// needs them (a new one, or one that lost its state) can join: without it, all is kept.
    #[arg(long, value_parser = replicator::retention::Retain::parse, value_name = "SIZE|DURATION")]
    retain: Option<replicator::retention::Retain>,
}

impl ServeArgs {
    fn mode(&self) -> replicator::primary::OutputMode {
        match self.mode {
            ModeArg::Sync => replicator::primary::OutputMode::Sync,
            ModeArg::Async => replicator::primary::OutputMode::Async { max_lag_events: self.max_lag_events },
        }
    }

    fn ack(&self) -> replicator::wire::session::AckLevel {
        match self.ack {
            AckArg::Received => replicator::wire::session::AckLevel::Received,
            AckArg::Durable => replicator::wire::session::AckLevel::Durable,
        }
    }

    /// The same, as command-line arguments.
    fn as_args(&self) -> Vec<OsString> {
        fn name(v: &impl clap::ValueEnum) -> OsString {
            v.to_possible_value().map_or_else(OsString::new, |p| p.get_name().into())
        }
        let mut args: Vec<OsString> = vec!["--mode".into(), name(&self.mode), "--ack".into(), name(&self.ack)];
        args.extend(["--min-backups".into(), self.min_backups.to_string().into()]);
        args.extend(["--max-lag-events".into(), self.max_lag_events.to_string().into()]);
        if self.no_compress {
            args.push("--no-compress".into());
        }
        if let Some(retain) = self.retain {
            args.extend(["--retain".into(), retain.as_arg().into()]);
        }
        args
    }

    fn serving(&self) -> replicator::backup::Serving {
        replicator::backup::Serving {
            mode: self.mode(),
            min_backups: self.min_backups,
            ack: self.ack(),
            compress: !self.no_compress,
            retain: self.retain,
        }
    }
}

/// What every agent of a group needs.
#[derive(clap::Args)]
struct MemberArgs {
    /// Where the agent keeps its membership, the group's log and the program's data (by default
    /// GROUP/NAME under $TANDEM_STATE_HOME, $XDG_STATE_HOME/tandem, ~/.local/state/tandem, or
    /// /var/lib/tandem for root).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The cluster's certificates (ca.crt, NAME.crt, NAME.key), from `tandem certs`.
    #[arg(long, default_value = "certs", value_name = "DIR")]
    certs: PathBuf,
    /// This member's name: its certificate is NAME.crt in --certs.
    #[arg(long)]
    name: String,
    /// Most threads alive at once, across all processes of the program.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096), value_name = "N")]
    max_threads: u32,
    /// The coordinator's members (ADDR,ADDR,...): the agent registers with its group there and
    /// follows its decisions (a primary keeps a lease; a backup named primary promotes itself).
    #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
    coordinator: Option<Vec<String>>,
    /// Once fenced (another primary was named, or the lease lapsed), keep the program running
    /// with its output held for good, instead of stopping it.
    #[arg(long)]
    keep_fenced: bool,
    /// Serve Prometheus metrics (/metrics) and health (/health, /ready) over HTTP here:
    /// HOST:PORT, e.g. 127.0.0.1:9400.
    #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
    metrics: Option<SocketAddr>,
}

/// How a command reaches the coordinator.
#[derive(clap::Args)]
struct CoordinatorArgs {
    /// The coordinator's members (ADDR,ADDR,...; https://ADDR for TLS, with --certs and --name).
    #[arg(long, required = true, value_delimiter = ',', value_name = "ADDR,...")]
    coordinator: Vec<String>,
    /// The cluster's certificates, to reach a coordinator over TLS.
    #[arg(long, requires = "name", value_name = "DIR")]
    certs: Option<PathBuf>,
    /// This host's certificate name in --certs.
    #[arg(long, requires = "certs")]
    name: Option<String>,
}

impl CoordinatorArgs {
    fn connect(self) -> Result<replicator::groups::Coordinator> {
        replicator::groups::Coordinator::connect(&self.coordinator, self.certs.zip(self.name))
    }
}

#[derive(Subcommand)]
enum GroupAction {
    /// Every group: its state (running, stalled, stopped), epoch, primary, mode and members.
    #[command(after_help = GROUP_STATUSES)]
    List {
        /// One JSON object, the groups by name, as the coordinator gives them.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: CoordinatorArgs,
    },
    /// One group: its state, epoch, primary and lease, and each member's position, last report
    /// and state (diverged, exited, silent for 5s, catching up: such a member is never named
    /// primary).
    #[command(after_help = GROUP_STATUSES)]
    Show {
        group: String,
        /// The group as JSON, as the coordinator gives it.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: CoordinatorArgs,
    },
    /// Take a backup out of its group (stop its agent first, or it joins again).
    #[command(after_help = GROUP_STATUSES)]
    RemoveMember {
        group: String,
        member: String,
        #[command(flatten)]
        at: CoordinatorArgs,
    },
    /// Forget a group that has no live primary (stalled, stopped, or its primary gone), so that
    /// `tandem primary` can create it again. Refused while its primary holds a lease.
    #[command(after_help = GROUP_STATUSES)]
    Reset {
        group: String,
        /// Forget it even though its primary holds a lease (it is gone, and you will not wait
        /// for the lease to lapse).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        at: CoordinatorArgs,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create the cluster's certificate authority (ca.crt, ca.key) in DIR.
    #[command(after_help = exit_statuses!("0    done"))]
    Init {
        /// The cluster's certificates directory, as agents are given it.
        #[arg(long, alias = "dir", value_name = "DIR")]
        certs: PathBuf,
    },
    /// Issue a member certificate (NAME.crt, NAME.key) from the CA in DIR.
    #[command(after_help = exit_statuses!("0    done"))]
    Issue {
        /// The cluster's certificates directory, holding its CA.
        #[arg(long, alias = "dir", value_name = "DIR")]
        certs: PathBuf,
        /// The member's name, as other members' logs will show it.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum CoordinatorAction {
    /// Start a new incarnation on this (stopped) member, when the old one is held by fewer than
    /// a majority of members and its data may be lost. Discards the member's state; started
    /// again, it forms the new incarnation with the others, and clients of the old incarnation
    /// are told their data was lost.
    #[command(after_help = exit_statuses!("0    the member has a new incarnation"))]
    Reinit {
        /// The member's state directory, as it is started with.
        #[arg(long, alias = "data-dir", default_value = "tandem-coordinator", value_name = "DIR")]
        state_dir: PathBuf,
        /// The member's id in --peers.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// Every member of the cluster, as the members are started with.
        #[arg(long, value_parser = coordinator::server::parse_peers, value_name = "ID=ADDR,...")]
        peers: Option<std::collections::BTreeMap<u64, String>>,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Print one event per line, in sequence order.
    #[command(after_help = LOG_STATUSES)]
    Show {
        /// The log to read.
        file: PathBuf,
        /// JSON lines (seq, pid, tid, call, result, errno, len, fd, fd_kind, digest, aux).
        #[arg(long)]
        json: bool,
    },
    /// Events per call, per thread and per process; bytes; duration.
    #[command(after_help = LOG_STATUSES)]
    Stats {
        /// The log to read.
        file: PathBuf,
        /// One JSON object (events, batches, bytes, duration_s, and calls, processes and
        /// threads each with their events and bytes).
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Record { out, max_threads, ring_bytes, allow_unseen_sync, data, command } => {
            divert_notes(&notes::beside_log(&out))?;
            init_tracing("warn");
            let geometry = Geometry::record(max_threads, ring_bytes);
            if !geometry.is_valid() {
                return Err(Error::Setup(format!(
                    "--ring-bytes {}: must be a power of two of at least {}",
                    replicator::capture::human(ring_bytes.into()),
                    replicator::capture::human(MIN_RING_BYTES.into())
                )));
            }
            let mut launch = Launch::new(&command, "record", allow_unseen_sync)?;
            let store = replicator::capture::beside_log(&out);
            replicator::capture::take_for(&mut launch, &data.choice(), &store, &[&out])?;
            let opts = RecordOptions {
                out: out.clone(),
                geometry,
                incarnation: eventlog::IncarnationToken::NONE,
                tap: None,
                stop: replicator::lifetime::Stop::new(true),
                retain: None,
            };
            let rec = recorder::record(&launch, &opts)?;
            if rec.lost > 0 {
                notes::line(&format!(
                    "tandem: {} events were lost (their threads died while recording them); they are marked `lost` in {}",
                    rec.lost,
                    out.display()
                ));
            }
            Ok(rec.exit_code.clamp(0, 255) as u8)
        }
        Command::Replay { log, go_live, max_threads, stall_timeout, view_dir, no_view, command } => {
            divert_notes(&notes::beside_log(&log))?;
            // A view of its own unless one is named; removed at the end.
            let scratch = match (&view_dir, no_view) {
                (None, false) => Some(
                    tempfile::Builder::new()
                        .prefix("tandem-view-")
                        .tempdir()
                        .map_err(Error::io("cannot create a directory for the replay's view"))?,
                ),
                _ => None,
            };
            let view = (!no_view).then(|| replicator::replayer::ViewPlace {
                store: replicator::capture::beside_log(&log),
                root: view_dir.clone().or_else(|| scratch.as_ref().map(|s| s.path().to_owned())).unwrap_or_default(),
            });
            let opts = ReplayOptions {
                log,
                command: (!command.is_empty()).then_some(command),
                go_live,
                geometry: Geometry::replay(max_threads, FEED_BYTES),
                stall_after: stall_timeout.max(MIN_STALL_TIMEOUT),
                follow: None,
                view,
                stop: replicator::lifetime::Stop::new(false),
                take_over: None,
            };
            let outcome = replayer::replay(&opts)?;
            report(&outcome);
            Ok(outcome.exit_code().clamp(0, 255) as u8)
        }
        Command::Log { command: LogCommand::Show { file, json } } => {
            show::show(&file, json, &mut std::io::stdout().lock())?;
            Ok(0)
        }
        Command::Primary { group, listen, serve, wait_for_backups, allow_unseen_sync, data, member, command } => {
            let state_dir =
                member.state_dir.clone().unwrap_or_else(|| replicator::statedir::default_for(&group, &member.name));
            divert_notes(&notes::in_state_dir(&state_dir))?;
            init_tracing("info");
            let launch = Launch::new(&command, "record", allow_unseen_sync)?;
            // Handed over in a switchover, this agent goes on as a backup of the same group.
            let mut rejoin: Vec<OsString> = vec!["backup".into(), "--group".into(), group.clone().into()];
            rejoin.extend(["--listen".into(), listen.to_string().into(), "--name".into(), member.name.clone().into()]);
            rejoin.extend([
                "--certs".into(),
                member.certs.clone().into(),
                "--state-dir".into(),
                state_dir.clone().into(),
            ]);
            rejoin.extend(["--max-threads".into(), member.max_threads.to_string().into()]);
            rejoin.extend(serve.as_args());
            if let Some(c) = &member.coordinator {
                rejoin.extend(["--coordinator".into(), c.join(",").into()]);
            }
            if member.keep_fenced {
                rejoin.push("--keep-fenced".into());
            }
            if let Some(m) = member.metrics {
                rejoin.extend(["--metrics".into(), m.to_string().into()]);
            }
            let opts = replicator::primary::PrimaryOptions {
                state_dir,
                group,
                listen,
                mode: serve.mode(),
                min_backups: serve.min_backups,
                ack: serve.ack(),
                compress: !serve.no_compress,
                retain: serve.retain,
                wait_for_backups,
                certs: member.certs,
                name: member.name,
                geometry: Geometry::record(member.max_threads, MIN_RING_BYTES),
                coordinator: member.coordinator,
                data: data.choice(),
                keep_fenced: member.keep_fenced,
                metrics: member.metrics,
            };
            let rec = match replicator::primary::run(launch, &opts) {
                Err(Error::HandedOver(why)) => {
                    return Err(start_again(&format!("{why}; rejoining as a backup"), rejoin))
                }
                other => other?,
            };
            Ok(rec.exit_code.clamp(0, 255) as u8)
        }
        Command::Backup { group, primary, listen, serve, stall_timeout, witness, member, command } => {
            let state_dir =
                member.state_dir.clone().unwrap_or_else(|| replicator::statedir::default_for(&group, &member.name));
            // A witness runs no program: its stderr is its own.
            if !witness {
                divert_notes(&notes::in_state_dir(&state_dir))?;
            }
            init_tracing("info");
            let steered =
                member.coordinator.clone().map(|c| (c, member.certs.clone(), member.name.clone(), group.clone()));
            let opts = replicator::backup::BackupOptions {
                state_dir,
                group,
                primary,
                listen,
                serve: serve.serving(),
                certs: member.certs,
                name: member.name,
                geometry: match listen {
                    // Rings for recording on, once promoted.
                    Some(_) => {
                        Geometry::replay(member.max_threads, FEED_BYTES).with_rings(member.max_threads, MIN_RING_BYTES)
                    }
                    None => Geometry::replay(member.max_threads, FEED_BYTES),
                },
                stall_after: stall_timeout.max(MIN_STALL_TIMEOUT),
                command: (!command.is_empty()).then_some(command),
                witness,
                coordinator: member.coordinator,
                keep_fenced: member.keep_fenced,
                metrics: member.metrics,
            };
            let outcome = replicator::backup::run(&opts)?;
            if let Some((coordinator, certs, name, group)) = steered {
                // Stopped on purpose, at the end, or on a mismatch: the coordinator names it no more.
                if let Ok(identity) = replicator::certs::Identity::load(&certs, &name) {
                    let diverged = matches!(outcome, Outcome::Diverged { .. });
                    replicator::steer::say_stopped(&coordinator, &group, &name, &identity, diverged);
                }
            }
            match outcome {
                Outcome::Completed { events } if witness => {
                    notes::line(&format!("tandem: holds all {events} events of the primary's log"))
                }
                _ => report(&outcome),
            }
            Ok(outcome.exit_code().clamp(0, 255) as u8)
        }
        Command::Switchover { group, to, request_id, coordinator, certs, name } => {
            let id = match request_id {
                Some(id) => id,
                None => format!("switchover-{:032x}", u128::from_be_bytes(replicator::statedir::random()?)),
            };
            let opts = replicator::switchover::SwitchoverOptions { coordinator, group, to, id, certs, name };
            println!("{}", replicator::switchover::run(&opts)?);
            Ok(0)
        }
        Command::Promote { group: Some(group), name: Some(name), coordinator: Some(coordinator), certs, .. } => {
            let id = coordinator::server::random_token().map_err(|e| Error::Setup(e.to_string()))?;
            let at = replicator::groups::Coordinator::connect(&coordinator, certs.map(|c| (c, name.clone())))?;
            let g = at.failover(&group, Some(&name), &id, Duration::from_secs(3))?;
            println!("group {group}: epoch {}, primary {}; the backup promotes itself", g.epoch.0, name);
            Ok(0)
        }
        Command::Promote { state_dir, group, name, .. } => {
            let state_dir = match (state_dir, group, name) {
                (Some(d), _, _) => d,
                (None, Some(g), Some(n)) => replicator::statedir::default_for(&g, &n),
                _ => return Err(Error::Setup("name the backup: --state-dir DIR, or --group G --name N".into())),
            };
            println!("{}", replicator::control::request(&state_dir, &replicator::control::ControlRequest::Promote)?);
            Ok(0)
        }
        Command::Status { coordinator, group, state_dirs, certs, name, json, watch } => {
            let survey = replicator::survey::Survey { coordinator, group, state_dirs, identity: certs.zip(name) };
            show_status(&survey, json, watch)?;
            Ok(0)
        }
        Command::Group { action } => {
            match action {
                GroupAction::List { json, at } => {
                    let groups = at.connect()?.list()?;
                    if json {
                        println!("{}", serde_json::to_string(&groups).map_err(|e| Error::Setup(e.to_string()))?);
                    } else {
                        print!("{}", replicator::groups::render_list(&groups));
                    }
                }
                GroupAction::Show { group, json, at } => {
                    let g = at.connect()?.show(&group)?;
                    if json {
                        println!("{}", serde_json::to_string(&g).map_err(|e| Error::Setup(e.to_string()))?);
                    } else {
                        print!("{}", replicator::groups::render_group(&group, &g));
                    }
                }
                GroupAction::RemoveMember { group, member, at } => {
                    let g = at.connect()?.remove_member(&group, &member)?;
                    println!("removed {member} from group {group} ({} members left)", g.members.len());
                }
                GroupAction::Reset { group, force, at } => {
                    let g = at.connect()?.reset(&group, force)?;
                    println!(
                        "forgot group {group} (it was {} in epoch {}); a primary may start it again",
                        replicator::groups::state_of(&g),
                        g.epoch.0
                    );
                }
            }
            Ok(0)
        }
        Command::Failover { group, to, request_id, patience, at } => {
            let id = match request_id {
                Some(id) => id,
                None => coordinator::server::random_token().map_err(|e| Error::Setup(e.to_string()))?,
            };
            let g = at.connect()?.failover(&group, to.as_deref(), &id, patience)?;
            println!(
                "group {group}: epoch {}, primary {} (request {id})",
                g.epoch.0,
                g.primary.as_deref().unwrap_or("none")
            );
            Ok(0)
        }
        Command::Certs { command: CertsCommand::Init { certs } } => {
            let ca = replicator::certs::init(&certs)?;
            println!("created the cluster CA {}; keep ca.key where members are issued only", ca.display());
            Ok(0)
        }
        Command::Certs { command: CertsCommand::Issue { certs, name } } => {
            let cert = replicator::certs::issue(&certs, &name)?;
            println!("issued {} (with its key beside it)", cert.display());
            Ok(0)
        }
        Command::Coordinator { action: Some(CoordinatorAction::Reinit { state_dir, id, peers }), .. } => {
            let members = peers.map_or(1, |p| p.len());
            let (old, new) = coordinator::server::reinit(&state_dir, id, members)?;
            match old {
                Some(old) => println!("member {id}: new incarnation {new}, replacing {old}; start the member again"),
                None => println!("member {id}: new incarnation {new}; start the member again"),
            }
            Ok(0)
        }
        Command::Coordinator {
            action: None,
            state_dir,
            listen,
            id,
            peers,
            certs,
            name,
            lease_timeout,
            lease_timeout_ms,
        } => {
            let transport = match certs {
                None => coordinator::http::Transport::plain(),
                Some(dir) => {
                    let identity =
                        replicator::certs::Identity::load(&dir, &name.unwrap_or(format!("coordinator-{id}")))?;
                    coordinator::http::Transport::tls(
                        identity.client_config()?,
                        Some(identity.server_config()?),
                        replicator::certs::CLUSTER_NAME,
                    )
                    .map_err(|e| Error::Setup(format!("coordinator TLS: {e}")))?
                }
            };
            let peers = peers.unwrap_or_else(|| [(id, listen.to_string())].into());
            if !peers.contains_key(&id) {
                return Err(Error::Setup(format!("--peers does not name this member (id {id})")));
            }
            let config = coordinator::server::Config {
                data_dir: state_dir,
                listen,
                id,
                peers,
                lease_timeout: lease_timeout_ms.map_or(lease_timeout, Duration::from_millis),
                transport,
            };
            init_tracing("info");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(Error::io("cannot start the coordinator's runtime"))?;
            runtime.block_on(coordinator::server::run(config))?;
            Ok(0)
        }
        Command::EnterView { plan } => Ok(replicator::view::enter(&plan)?.clamp(0, 255) as u8),
        Command::Keep { agent, command } => {
            use std::os::unix::process::CommandExt;
            let [program, argv0, args @ ..] = command.as_slice() else {
                return Err(Error::Setup("tandem keep: name the program and its argv[0]".into()));
            };
            let mut cmd = std::process::Command::new(program);
            cmd.arg0(argv0).args(args).env_clear().envs(replicator::lifetime::program_environment());
            let code = replicator::lifetime::keep(cmd, nix::unistd::Pid::from_raw(agent))?;
            Ok(code.clamp(0, 255) as u8)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "tandem", &mut std::io::stdout().lock());
            Ok(0)
        }
        Command::Man { dir: None } => {
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout().lock())
                .map_err(Error::io("cannot write the manual page"))?;
            Ok(0)
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .map_err(Error::io(format!("cannot write the manual pages into {}", dir.display())))?;
            Ok(0)
        }
        Command::Log { command: LogCommand::Stats { file, json } } => {
            show::stats(&file, json, &mut std::io::stdout().lock())?;
            Ok(0)
        }
    }
}

/// Prints the groups' status once, or again every `watch` (a terminal's screen redrawn).
fn show_status(survey: &replicator::survey::Survey, json: bool, watch: Option<Duration>) -> Result<()> {
    use std::io::{IsTerminal, Write};
    let redraw = watch.is_some() && !json && std::io::stdout().is_terminal();
    loop {
        let groups = survey.take()?;
        let text = if json {
            let mut line = serde_json::json!({ "groups": groups }).to_string();
            line.push('\n');
            line
        } else {
            replicator::status::render(&groups)
        };
        let mut out = std::io::stdout().lock();
        if redraw {
            // Home and clear: the table is drawn over the last one.
            out.write_all(b"\x1b[H\x1b[2J").map_err(Error::io("cannot write the status"))?;
        }
        out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(Error::io("cannot write the status"))?;
        match watch {
            Some(every) => std::thread::sleep(every),
            None => return Ok(()),
        }
    }
}

fn report(outcome: &Outcome) {
    match outcome {
        Outcome::Diverged { seq, report } => {
            notes::line(&format!("tandem: {}", replayer::divergence_line(*seq, report)))
        }
        Outcome::Stalled { report } => notes::line(&format!("tandem: {report}")),
        Outcome::Completed { events } => notes::line(&format!("tandem: replayed all {events} events of the log")),
        Outcome::Live { .. } => {}
        Outcome::Stopped { signal, events } => notes::line(&format!(
            "tandem: stopped by {} after {events} events of the log",
            replicator::lifetime::signal_name(*signal)
        )),
    }
}

/// An agent that runs a program shares its stderr with it: when that is a regular file, the
/// agent's notes go to `file` instead (see `replicator::notes`).
fn divert_notes(file: &std::path::Path) -> Result<()> {
    notes::divert_from_shared_stderr(file).map(drop).map_err(Error::io(format!("cannot open {}", file.display())))
}

/// Agents log where their notes go (stderr, or their notes file), one line an event;
/// `TANDEM_LOG` filters (default `level`, with the Raft library's own chatter at `warn`).
fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},openraft=warn")));
    let ansi = notes::to_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(notes::writer)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// The agent again, as `tandem ARGS`, in place of this one (same pid, so a supervisor sees one
/// agent; the state directory's lock goes with the old image). Returns only if that fails.
fn start_again(why: &str, args: impl IntoIterator<Item = OsString>) -> Error {
    use std::os::unix::process::CommandExt;
    notes::line(&format!("tandem: {why}"));
    let argv0 = std::env::args_os().next().unwrap_or_else(|| "tandem".into());
    let exe = std::env::current_exe().unwrap_or_else(|_| argv0.clone().into());
    let e = std::process::Command::new(exe).arg0(argv0).args(args).exec();
    Error::Setup(format!("cannot start the agent again: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        // Output piped into `head` and the like: the reader has what it wanted.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        // A backup whose state was set aside: the same agent again, in a state directory that
        // holds nothing yet (its lock went with the old image).
        Err(Error::StartOver(why) | Error::HandedOver(why)) => {
            let e = start_again(&format!("{why}; starting over"), std::env::args_os().skip(1));
            notes::error_line(&format!("tandem: {e}"));
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            notes::error_line(&format!("tandem: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
