//! Checkpoints a running aggregate to a local directory after every window
//! and resumes from the newest good checkpoint when run again.
//!
//! ```text
//! cargo run -p checkpoint-examples --bin resume-demo             # 5 windows, ./checkpoints
//! cargo run -p checkpoint-examples --bin resume-demo -- --windows 3 --dir /tmp/ck
//! ```
//!
//! Until the runtime lands this is the project's main example: it shows the
//! `Checkpoint` trait, the snapshot envelope and `FsStorageAgent` on their
//! own. Each run continues the window sequence of the last one, keeping the
//! job's original window base, as a restarted Apex job does.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use checkpoint_core::{FsStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
use checkpoint_examples::ride_totals::RideTotals;

const OPERATOR: &str = "ride-totals";
/// Checkpoints kept: the newest plus one older good one.
const RETAINED: usize = 2;

struct Args {
    dir: String,
    windows: u32,
}

const HELP: &str = "\
resume-demo: checkpoint an aggregate after every window; resume after a restart

USAGE:
    resume-demo [--dir DIR] [--windows N]

OPTIONS:
    --dir DIR      checkpoint directory (default: ./checkpoints)
    --windows N    windows to process in this run (default: 5)
    -h, --help     print this help

Run it twice: the second run restores the newest checkpoint and continues
the window sequence where the first stopped.";

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        dir: "checkpoints".to_owned(),
        windows: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--dir" => args.dir = it.next().ok_or("--dir needs a directory")?,
            "--windows" => {
                let n = it.next().ok_or("--windows needs a number")?;
                args.windows = n.parse().map_err(|_| format!("--windows: {n:?} is not a number"))?;
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Some(args))
}

/// The job's window base, kept in the job manifest so every run continues
/// the same window sequence.
fn window_base(storage: &FsStorageAgent) -> Result<u32, Box<dyn std::error::Error>> {
    if let Some(bytes) = storage.load_manifest()? {
        let text = String::from_utf8(bytes)?;
        let base = text
            .strip_prefix("window-base=")
            .map(str::trim)
            .ok_or_else(|| format!("unrecognized job manifest {text:?}"))?;
        return Ok(base.parse()?);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let base = u32::try_from(now)?;
    storage.save_manifest(format!("window-base={base}\n").as_bytes())?;
    Ok(base)
}

/// The newest checkpoint that decodes; a corrupt one is reported and skipped,
/// so an older good one is used.
fn restore(storage: &FsStorageAgent) -> Result<Option<(WindowId, RideTotals)>, Box<dyn std::error::Error>> {
    for window in storage.windows(OPERATOR)?.into_iter().rev() {
        let decoded = storage
            .load(OPERATOR, window)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Snapshot::decode::<RideTotals>(&bytes).map_err(|e| e.to_string()));
        match decoded {
            Ok((_, state)) => return Ok(Some((window, state))),
            Err(e) => eprintln!("skipping checkpoint at {window}: {e}"),
        }
    }
    Ok(None)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let storage = FsStorageAgent::new(&args.dir)?;
    storage.remove_stale_temp_files()?;
    let base = window_base(&storage)?;
    let (mut window, mut totals) = match restore(&storage)? {
        Some((window, totals)) => {
            println!(
                "restored {OPERATOR} from checkpoint {window} in {}: {} rides so far",
                args.dir, totals.rides
            );
            (window.checked_next().ok_or("window sequence exhausted")?, totals)
        }
        None => {
            println!("no checkpoint in {}: starting at window base {base}", args.dir);
            (WindowId::new(base, 0), RideTotals::default())
        }
    };
    let mut buf = Vec::new();
    for _ in 0..args.windows {
        totals.process_window(window);
        Snapshot::encode_into(&totals, SnapshotMeta::new(OPERATOR, window), &mut buf)?;
        storage.save(OPERATOR, window, &buf)?;
        let saved = storage.windows(OPERATOR)?;
        for old in saved.iter().take(saved.len().saturating_sub(RETAINED)) {
            storage.delete(OPERATOR, *old)?;
        }
        let busiest = totals.busiest_zone().unwrap_or_default();
        println!(
            "window {window} (#{}): {} rides, ${}.{:02} revenue, busiest zone {busiest}, checkpoint {} bytes",
            window.sequence(),
            totals.rides,
            totals.revenue_cents / 100,
            totals.revenue_cents % 100,
            buf.len()
        );
        window = window.checked_next().ok_or("window sequence exhausted")?;
    }
    println!(
        "run again to resume from the newest checkpoint; delete {} to start over",
        args.dir
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args() {
        Ok(None) => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("resume-demo: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("resume-demo: {e}");
            ExitCode::from(2)
        }
    }
}
