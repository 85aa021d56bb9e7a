//! `checkpoint`: inspect, verify, decode and purge a job's checkpoints: a
//! checkpoint directory (the root of an `FsStorageAgent`, as a job writes
//! it) or an S3 prefix (`s3://bucket/prefix`, an `ObjectStoreAgent`'s).
//!
//! # Install
//!
//! From the workspace root:
//!
//! ```text
//! cargo install --path checkpoint-cli      # puts `checkpoint` in ~/.cargo/bin
//! cargo run -p checkpoint-cli -- --help    # or run it without installing
//! ```
//!
//! # Use
//!
//! ```text
//! checkpoint ls checkpoints                      # operators, windows, committed, recovery
//! checkpoint show checkpoints count#0            # the newest snapshot's header and checksum
//! checkpoint show checkpoints count#0 0x6553f1000000000f
//! checkpoint verify checkpoints                  # every snapshot; non-zero exit on corruption
//! checkpoint dump checkpoints ride-totals --json # a state the tool knows, as JSON
//! checkpoint purge checkpoints --keep 2 --dry-run
//! checkpoint ls s3://bucket/jobs/rides             # the same, in an S3 prefix
//! ```
//!
//! Every command has `--help`. Exit status: 0 on success, 1 when a command
//! fails or finds a problem (`verify`), 2 for bad arguments.
//!
//! The tool reads the checkpoints itself (never through a running job) and
//! only `purge` changes anything. The layout is `docs/FORMAT.md`'s: one
//! subdirectory per operator (its physical name) holding one file per
//! checkpoint named by the window id in 16 lower-case hex digits, and the job
//! manifest in `.manifest`; an object store mirrors it under the prefix.
//!
//! A directory is read with `std::fs`, so the tool also reports what is not
//! part of the layout (stray files, temp files of interrupted saves,
//! corrupt snapshots a restart set aside). An `s3://` prefix is read through
//! the storage agent, which lists only what the layout names: the same
//! operators, snapshots, chunks and manifest, but no stray objects (the
//! output says so). Its endpoint and credentials come from the environment:
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true` (for plain `http://`),
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.
//!
//! # Decoding states
//!
//! A snapshot does not record its state's field names, so `dump` decodes
//! only the state types compiled into the tool: the example jobs' (from the
//! `checkpoint-examples` library), listed in `src/dump.rs`. To decode your
//! own job's state, register its type there.
#![warn(clippy::unwrap_used)]

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use checkpoint_object_store::location::CheckpointLocation;
use clap::{Parser, Subcommand};

use crate::source::Source;

/// Inspect, verify, decode and purge a job's checkpoints.
#[derive(Debug, Parser)]
#[command(
    name = "checkpoint",
    version,
    about = "Inspect, verify, decode and purge a job's checkpoints (a directory or s3://BUCKET/PREFIX)",
    long_about = "Inspect, verify, decode and purge a job's checkpoints: a checkpoint directory (the root \
                  of an FsStorageAgent, with one subdirectory per operator, one file per checkpoint \
                  named by its window id, and the job manifest in .manifest; docs/FORMAT.md) or an S3 \
                  prefix s3://BUCKET/PREFIX holding the same layout (an ObjectStoreAgent's).\n\n\
                  Every command takes either: an argument that starts with s3:// is a URL, anything \
                  else a directory. A directory is read file by file, so stray files, temp files of \
                  interrupted saves and corrupt snapshots a restart set aside are reported too; an S3 \
                  prefix is read through the storage agent, which lists only the operators, snapshots, \
                  chunks and manifest of the layout, so stray objects are not reported. S3 is \
                  configured from the environment: AWS_ENDPOINT_URL (an S3-compatible server; unset \
                  for AWS), AWS_ALLOW_HTTP=true (for plain http://), AWS_REGION, AWS_ACCESS_KEY_ID, \
                  AWS_SECRET_ACCESS_KEY.\n\n\
                  Only `purge` changes anything; run it while the job is stopped.",
    after_long_help = "Examples:\n  \
        checkpoint ls checkpoints\n  \
        checkpoint show checkpoints count#0 0x6553f1000000000f\n  \
        checkpoint verify checkpoints\n  \
        checkpoint dump checkpoints stats --json\n  \
        checkpoint purge checkpoints --keep 2 --dry-run\n  \
        AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \\\n      \
        AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... checkpoint ls s3://bucket/rides"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List operators, their checkpoints and sizes, the committed window and
    /// each operator's recovery checkpoint.
    ///
    /// The recovery checkpoint is the one a restart (or a failure now) would
    /// restore the operator from, computed from the job manifest's DAG and
    /// the good checkpoints on disk exactly as the runtime computes it.
    /// Without a job manifest the checkpoints on disk are listed alone.
    Ls {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
    },
    /// Print one snapshot's header (operator, window, state type, version,
    /// layout fingerprint, sizes) and whether its CRC-32C checks.
    ///
    /// Exits non-zero if the snapshot is corrupt or misplaced.
    Show {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// The operator's physical name (`count`, or `count#0` for a partition).
        operator: String,
        /// The window: `0x` + hex (as `ls` prints it), 16 hex digits (the
        /// file name) or a sequence number; default: the newest.
        window: Option<String>,
    },
    /// Check every snapshot's header and CRC-32C, and that it sits at the
    /// path its header names.
    ///
    /// Prints each problem with the file it is in; exits non-zero on any.
    Verify {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// Also list the snapshots that are fine.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Decode a snapshot's state and print it as JSON, through the layout
    /// description the snapshot carries: any job's state, without its code.
    ///
    /// The description is checked against the snapshot's layout fingerprint
    /// first; keyed state kept in chunks is loaded and checked as a restore
    /// does. The JSON is described in docs/FORMAT.md ("State as JSON").
    Dump {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// The operator's physical name.
        operator: String,
        /// The window, as for `show`; default: the newest.
        window: Option<String>,
        /// Print only the JSON (no heading line), for other programs.
        #[arg(long)]
        json: bool,
    },
    /// Change values in a stopped job's state and write its checkpoint
    /// again, so the next run resumes from the edited state.
    ///
    /// The operator's checkpoint (default: the one a restart restores it
    /// from, as `ls` shows it) is decoded as `dump` prints it; each --set
    /// replaces the value at a JSON pointer into that JSON (as in
    /// /counts/apex, or /zones/7/name) with the JSON given; the result is
    /// encoded through the same description, read back, and replaces the
    /// checkpoint. The original is written to a backup file first. The
    /// storage is locked meanwhile: a running job keeps it locked, so stop
    /// the job first.
    Edit {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// The operator's physical name.
        operator: String,
        /// The window, as for `show`; default: the operator's recovery
        /// checkpoint (its newest without a job manifest).
        window: Option<String>,
        /// POINTER=JSON: the value to write at a JSON pointer, such as
        /// --set /total=42 or --set '/label="new"' (repeatable).
        #[arg(long = "set", value_name = "POINTER=JSON", required = true)]
        sets: Vec<String>,
        /// Where to write the original checkpoint (a new file); default:
        /// OPERATOR-WINDOW.snapshot in the current directory.
        #[arg(long, value_name = "FILE")]
        backup: Option<PathBuf>,
    },
    /// The job's newest durable checkpoints (up to 64, as of its last
    /// commit), oldest first: operator, window, bytes, the operator's pause
    /// to encode, and the time until durable.
    ///
    /// Read from the job manifest, where the runtime records them at every
    /// commit.
    History {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
    },
    /// Delete old checkpoints, keeping the N newest of each operator and
    /// every checkpoint recovery could still need.
    ///
    /// Never deleted: an operator's recovery checkpoint (as `ls` shows it)
    /// and anything newer, the committed window's checkpoint, corrupt files
    /// (see `verify`), and input window data. Needs the job manifest. Stop the
    /// job first: a running job may be saving checkpoints this does not see.
    /// The storage is locked meanwhile (a job cannot start): a directory's
    /// lock file, an S3 prefix's lease (a dead job's is taken over after
    /// one lease period).
    Purge {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// Good checkpoints to keep per operator, newest first (protected
        /// ones are kept as well).
        #[arg(long, value_name = "N")]
        keep: usize,
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A failure that stops a command: printed as `checkpoint: <message>`.
type Failure = String;

/// Appends a line to a command's output (writing to a `String` cannot fail).
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

// After `say!`, which they use.
mod check;
mod dump;
mod edit;
mod format;
mod history;
mod inventory;
mod ls;
mod purge;
mod show;
mod source;
mod verify;
mod view;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Each command writes its report here; it is printed even when the
    // command fails part-way (a purge that deleted some files, say).
    let mut out = String::new();
    let result = match cli.command {
        Command::Ls { location } => Source::open(location).and_then(|source| ls::ls(&source, &mut out)),
        Command::Show {
            location,
            operator,
            window,
        } => Source::open(location).and_then(|source| show::show(&source, &operator, window.as_deref(), &mut out)),
        Command::Verify { location, verbose } => {
            Source::open(location).and_then(|source| verify::verify(&source, verbose, &mut out))
        }
        Command::Dump {
            location,
            operator,
            window,
            json,
        } => Source::open(location)
            .and_then(|source| dump::dump_state(&source, &operator, window.as_deref(), json, &mut out)),
        Command::Purge {
            location,
            keep,
            dry_run,
        } => Source::open(location).and_then(|source| purge::purge(&source, keep, dry_run, &mut out)),
        Command::History { location } => Source::open(location).and_then(|source| history::history(&source, &mut out)),
        Command::Edit {
            location,
            operator,
            window,
            sets,
            backup,
        } => Source::open(location).and_then(|source| {
            let request = edit::EditRequest {
                operator: &operator,
                window: window.as_deref(),
                sets: &sets,
                backup: backup.as_deref(),
            };
            edit::edit(&source, &request, &mut out)
        }),
    };
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("checkpoint: writing the output: {e}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("checkpoint: {message}");
            ExitCode::FAILURE
        }
    }
}
