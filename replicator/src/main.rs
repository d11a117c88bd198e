//! The `tandem` command.

use clap::{Parser, Subcommand};
use eventlog::ring::{Geometry, MIN_RING_BYTES};
use replicator::error::{Error, Result};
use replicator::launch::Launch;
use replicator::recorder::{self, RecordOptions};
use replicator::show;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// tandem: keeps a hot standby of an unmodified Linux program by recording (and replaying) its
/// calls in one total order.
#[derive(Parser)]
#[command(name = "tandem", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program under the shim and write every recorded event to a log file. Exits with the
    /// program's own status (128 + signal if it was killed).
    Record {
        /// The log file to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Most threads alive at once, across all processes of the program.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
        max_threads: u32,
        /// Bytes of ring per thread (a power of two, at least 4 MiB).
        #[arg(long, default_value_t = MIN_RING_BYTES)]
        ring_bytes: u32,
        /// The program and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PROGRAM"
        )]
        command: Vec<OsString>,
    },
    /// Read log files.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Print one event per line, in sequence order.
    Show {
        file: PathBuf,
        /// JSON lines (seq, pid, tid, call, result, errno, len, fd, fd_kind, digest, aux).
        #[arg(long)]
        json: bool,
    },
    /// Events per call, per thread and per process; bytes; duration.
    Stats { file: PathBuf },
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Record {
            out,
            max_threads,
            ring_bytes,
            command,
        } => {
            let geometry = Geometry {
                ring_count: max_threads,
                ring_bytes,
            };
            if !geometry.is_valid() {
                return Err(Error::Setup(format!(
                    "--ring-bytes {ring_bytes}: must be a power of two of at least {MIN_RING_BYTES}"
                )));
            }
            let launch = Launch::new(&command[0], &command[1..], "record")?;
            let rec = recorder::record(
                &launch,
                &RecordOptions {
                    out: out.clone(),
                    geometry,
                },
            )?;
            if rec.lost > 0 {
                eprintln!(
                    "tandem: {} events were lost (their threads died while recording them); they are marked `lost` in {}",
                    rec.lost,
                    out.display()
                );
            }
            Ok(rec.exit_code.clamp(0, 255) as u8)
        }
        Command::Log {
            command: LogCommand::Show { file, json },
        } => {
            show::show(&file, json, &mut std::io::stdout().lock())?;
            Ok(0)
        }
        Command::Log {
            command: LogCommand::Stats { file },
        } => {
            show::stats(&file, &mut std::io::stdout().lock())?;
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tandem: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
