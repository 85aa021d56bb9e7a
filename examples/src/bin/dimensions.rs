//! `dimensions`: real-time dimensional aggregation of a synthetic ad event
//! stream, partitioned by key across threads, written exactly once per
//! window.
//!
//! Seeded ad events (publisher, advertiser, location, impressions, clicks,
//! cost) are expanded into one tuple per dimension combination (publisher,
//! advertiser, publisher×location), routed by key to the partitions of an
//! aggregator that sums them per application window and per bucket of
//! several application windows, merged and sorted by one operator, and
//! published by an exactly-once file sink. Running it again resumes from
//! `./checkpoints-dimensions` (or the S3 prefix `--checkpoints
//! s3://bucket/prefix` names, configured from the `AWS_*` environment
//! variables).
//!
//! ```text
//! cargo run -p checkpoint-examples --bin dimensions                      # 200,000 events, ~4 s
//! cargo run -p checkpoint-examples --bin dimensions -- --partitions 8
//! cargo run -p checkpoint-examples --bin dimensions -- --help
//! ```
//!
//! The job itself lives in `checkpoint_examples::ads`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use checkpoint_examples::ads::{self, EVENTS_PER_CALL, JobSettings, OUTPUT_FORMAT};
use checkpoint_examples::location::{CheckpointLocation, LOCATION_HELP};
use checkpoint_examples::progress::{LiveProgress, ProgressSettings, install_ctrl_c};
use checkpoint_examples::rides::thousands;
use checkpoint_runtime::{Config, RunError, RunReport, Runtime, WindowMode};
use clap::Parser;

/// The window base of a new job in the deterministic mode, so window ids
/// (and the output's file names) are the same in every run.
const DETERMINISTIC_BASE: u32 = 1_700_000_000;

/// Exit status of a run that failed (usage errors exit with 2).
const FAILED: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "dimensions",
    version,
    about = "Dimensional aggregation of a synthetic ad event stream, partitioned by key, exactly once",
    long_about = "Dimensional aggregation of a synthetic ad event stream, partitioned by key, exactly once.\n\n\
        A seeded stream of ad events (publisher, advertiser, location, impressions, clicks, cost) is \
        expanded into one tuple per dimension combination (per publisher, per advertiser, per publisher \
        and location), routed by key to the partitions of an aggregator, which sums events, impressions, \
        clicks and cost per application window and per bucket of several application windows. One merge \
        operator sorts each window's lines and an exactly-once sink publishes them to the output \
        directory once the window is committed (one file per window, named by its window id).",
    after_help = "Ctrl-C stops the job gracefully with a final checkpoint. Running the same command again \
        resumes from the checkpoints, with the settings the job was started with. Delete the checkpoints \
        and the output directory to start over.\n\n\
        Exit status: 0 when the job finished or was stopped by Ctrl-C, 1 when it failed, 2 for bad arguments."
)]
struct Args {
    /// Ad events in the stream (a new job only)
    #[arg(long, value_name = "N", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,

    /// Seed of the event stream (a new job only)
    #[arg(long, value_name = "S", default_value_t = 7)]
    seed: u64,

    /// Events per second at most, 0 for as fast as possible (a new job only)
    #[arg(long, value_name = "R", default_value_t = 50_000)]
    rate: u64,

    /// Partitions (threads) of the aggregator (a new job only)
    #[arg(long, value_name = "P", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    partitions: u64,

    /// Checkpoint directory or s3://BUCKET/PREFIX: resumed if it holds this job
    #[arg(long, value_name = "DIR|URL", default_value = "./checkpoints-dimensions", long_help = checkpoints_help())]
    checkpoints: CheckpointLocation,

    /// Output directory: one file per committed window (a new job only)
    #[arg(long, value_name = "DIR", default_value = "./out-dimensions")]
    output: PathBuf,

    /// Streaming window length in milliseconds (time-based windows)
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    window_ms: u64,

    /// Deterministic windows of N events (rounded up to a multiple of 100)
    /// instead of time-based ones, with a fixed window base: reproducible
    /// output, for tests
    #[arg(long, value_name = "N", conflicts_with = "window_ms", value_parser = clap::value_parser!(u64).range(1..))]
    deterministic: Option<u64>,

    /// Streaming windows per application window (and between checkpoints)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    app_windows: u32,

    /// Application windows per long time bucket (a new job only)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    bucket: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("dimensions: error: {message}");
            ExitCode::from(FAILED)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let checkpoints = args.checkpoints.to_string();
    let storage = args.checkpoints.open()?;
    let stored = ads::stored_job(&*storage).map_err(|e| {
        format!(
            "cannot resume the job in {checkpoints}: {e}\n  (use other --checkpoints for a new job, or \
             delete {checkpoints} to start over){}",
            args.checkpoints.hint()
        )
    })?;

    // The sink's directory is configuration: a resumed job writes where
    // this run's --output says.
    let output = args.output.clone();
    let out = output.display().to_string();
    if stored.is_none()
        && ads::has_output(&output).map_err(|e| format!("cannot read the output directory {out}: {e}"))?
    {
        return Err(format!(
            "{out} already holds output of an earlier job, and {checkpoints} holds no job to resume: delete \
             {out} (or choose another --output) to start a new job"
        ));
    }
    let source = stored.as_ref().and_then(|s| s.source.as_ref());
    if let Some((window, source)) = source
        && source.position() >= source.end()
    {
        println!(
            "dimensions: the job in {checkpoints} already finished: all {} events (seed {}) were processed, up to \
             window {}",
            thousands(source.end()),
            source.seed(),
            window.sequence()
        );
        print_output(&output);
        println!("  next:          delete {checkpoints} and {out} to run it again from scratch");
        return Ok(());
    }
    checkpoint_core::create_dir_all_durable(&output)
        .map_err(|e| format!("cannot create the output directory {out}: {e}"))?;
    std::fs::write(output.join("README.txt"), OUTPUT_FORMAT)
        .map_err(|e| format!("cannot write to the output directory {out}: {e}"))?;

    // A resumed job keeps the DAG shape in its manifest.
    let settings = JobSettings {
        events: args.events,
        seed: args.seed,
        rate: args.rate,
        partitions: stored.as_ref().map_or(args.partitions as usize, |s| s.partitions),
        application_windows: stored.as_ref().map_or(args.app_windows, |s| s.application_windows),
        bucket_apps: args.bucket,
        output: output.clone(),
    };
    let (window_mode, window_text) = match args.deterministic {
        Some(n) => {
            let n = n.div_ceil(EVENTS_PER_CALL) * EVENTS_PER_CALL;
            (
                WindowMode::Tuples(n),
                format!("{} events (deterministic)", thousands(n)),
            )
        }
        None => (
            WindowMode::Time(Duration::from_millis(args.window_ms)),
            format!("{} ms", args.window_ms),
        ),
    };
    let mut config = Config::default().shared_storage(storage).window_mode(window_mode);
    if args.deterministic.is_some() {
        config = config.window_base(DETERMINISTIC_BASE);
    }

    let (total, done_before, window_before) = match source {
        Some((window, s)) => (s.end(), s.position(), window.sequence()),
        None => (args.events, 0, 0),
    };
    match &stored {
        Some(job) => {
            println!(
                "dimensions: resuming the job in {checkpoints} at event {} of {} ({} partitions; its settings are \
                 kept, the command line's ignored)",
                thousands(done_before),
                thousands(total),
                job.partitions
            );
            if job.partitions != args.partitions as usize {
                println!(
                    "  note: --partitions {} ignored: the job runs with the {} partitions it was started with",
                    args.partitions, job.partitions
                );
            }
        }
        None => println!(
            "dimensions: {} synthetic ad events (seed {}, {}) -> aggregates per publisher, advertiser and \
             publisher x location, across {} partitions",
            thousands(args.events),
            args.seed,
            if args.rate == 0 {
                "as fast as possible".to_owned()
            } else {
                format!("at most {}/s", thousands(args.rate))
            },
            settings.partitions
        ),
    }
    println!(
        "  windows: {window_text} each, application windows of {} (a checkpoint after each), buckets of {} \
         application windows",
        settings.application_windows, settings.bucket_apps
    );
    println!("  checkpoints: {checkpoints}   output: {out} (a file per window, published once committed)");
    if std::io::stdout().is_terminal() {
        println!("  Ctrl-C stops with a final checkpoint; running the same command again resumes.");
    }

    let runtime = Runtime::new(config);
    let live = LiveProgress::start(
        runtime.progress(),
        ProgressSettings::new("events")
            .total(total)
            .resumed(done_before, window_before),
    );
    let printer = live.printer();
    install_ctrl_c("dimensions", runtime.stop_handle(), printer);

    let result = runtime.run(ads::dag(&settings));
    live.finish();
    let stopped = runtime.stop_handle().is_stopped();
    match result {
        Ok(report) => {
            print_summary(args, &report, stopped, &output);
            Ok(())
        }
        Err(e) => Err(explain(&e, &args.checkpoints)),
    }
}

fn print_summary(args: &Args, report: &RunReport, stopped: bool, output: &Path) {
    let emitted = report.operator(ads::EVENTS).map_or(0, |o| o.tuples_out);
    let secs = report.elapsed.as_secs_f64();
    let per_sec = if secs > 0.0 { (emitted as f64 / secs) as u64 } else { 0 };
    println!();
    println!(
        "dimensions: {}: {} events this run in {secs:.1} s ({}/s)",
        if stopped { "stopped" } else { "finished" },
        thousands(emitted),
        thousands(per_sec)
    );
    if !report.resumed_from.is_empty() {
        let from: Vec<String> = report
            .resumed_from
            .iter()
            .map(|(name, w)| format!("{name} @{}", w.sequence()))
            .collect();
        println!("  resumed from:  checkpoints {}", from.join(", "));
    }
    let partitions: Vec<String> = report
        .operators
        .iter()
        .filter(|o| o.name.starts_with(&format!("{}#", ads::AGGREGATE)))
        .map(|o| format!("{} {}", o.name, thousands(o.tuples_in)))
        .collect();
    println!("  partitions:    dimension tuples in: {}", partitions.join(", "));
    let checkpoints: u64 = report.operators.iter().map(|o| o.checkpoints).sum();
    let bytes: u64 = report.operators.iter().map(|o| o.last_checkpoint_bytes).sum();
    println!(
        "  checkpoints:   {} snapshots in {}, the newest {} bytes in all",
        thousands(checkpoints),
        args.checkpoints,
        thousands(bytes)
    );
    match report.committed {
        Some(w) => println!(
            "  committed:     window {} ({w}): every window up to it is published",
            w.sequence()
        ),
        None => println!("  committed:     no window yet"),
    }
    for recovery in &report.recoveries {
        println!("  recovery:      {} failed: {}", recovery.operator, recovery.cause);
    }
    for note in &report.notes {
        println!("  note:          {note}");
    }
    print_output(output);
    if stopped {
        println!(
            "  next:          run the same command again to resume from {}",
            args.checkpoints
        );
    } else {
        println!(
            "  next:          the job is complete; delete {} and {} to run it again from scratch",
            args.checkpoints,
            output.display()
        );
    }
}

/// The long help of `--checkpoints`.
fn checkpoints_help() -> String {
    format!("Where the checkpoints go: resumed if it holds this job. {LOCATION_HELP}")
}

/// What is published and how to look.
fn print_output(output: &Path) {
    let out = output.display();
    let files = checkpoint_runtime::io::published_windows(output).map_or(0, |w| w.len());
    let text = checkpoint_runtime::io::read_output(output).unwrap_or_default();
    let lines = text.iter().filter(|b| **b == b'\n').count();
    println!(
        "  output:        {out}: {} window files, {} lines ({out}/README.txt explains them)",
        thousands(files as u64),
        thousands(lines as u64)
    );
    println!("                 e.g. cat {out}/[0-9a-f]* | grep 'bucket=app publisher=daily-news advertiser=\\*'");
}

/// The error message, with what to do about it.
fn explain(error: &RunError, checkpoints: &CheckpointLocation) -> String {
    match error {
        RunError::Manifest { .. } | RunError::StorageInUse { .. } => {
            format!("{error}\n  (does {checkpoints} hold another job's checkpoints? use other --checkpoints)")
        }
        RunError::OperatorFailed { .. } => format!(
            "{error}\n  the checkpoints in {checkpoints} are intact: fix the cause and run again to resume from the \
             last committed window"
        ),
        RunError::Storage(_) | RunError::UnusableCheckpoint { .. } => format!("{error}{}", checkpoints.hint()),
        other => other.to_string(),
    }
}
