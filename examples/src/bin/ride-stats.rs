//! `ride-stats`: the project's main example job.
//!
//! A synthetic ride-service stream (seeded: pickup and drop-off zones with a
//! few busy ones, a rush-hour pattern, fares and distances) aggregated per
//! zone and per hour over application windows, with the top zones by
//! revenue, written exactly once per window to an output directory, and
//! checkpointed to `./checkpoints` (or to an S3 prefix: `--checkpoints
//! s3://bucket/prefix`). Ctrl-C stops it with a final checkpoint;
//! a kill does not; either way running it again resumes, and the output is
//! the same as an uninterrupted run's.
//!
//! ```text
//! cargo run -p checkpoint-examples --bin ride-stats                      # 300,000 rides, ~5 s
//! cargo run -p checkpoint-examples --bin ride-stats -- --fail-at-window 9  # watch a recovery
//! AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
//!   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//!   cargo run -p checkpoint-examples --bin ride-stats -- --checkpoints s3://bucket/rides
//! cargo run -p checkpoint-examples --bin ride-stats -- --help
//! ```
//!
//! The job itself lives in `checkpoint_examples::rides`; the progress line in
//! `checkpoint_examples::progress`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use checkpoint_examples::location::{CheckpointLocation, LOCATION_HELP};
use checkpoint_examples::progress::{
    LiveProgress, ProgressSettings, install_ctrl_c, install_panic_hook, short_duration,
};
use checkpoint_examples::rides::{self, JobSettings, OUTPUT_FORMAT, RIDES_PER_CALL, thousands};
use checkpoint_runtime::{Config, Fault, RunError, RunReport, Runtime, WindowMode};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

/// The window base of a new job in the deterministic mode, so window ids
/// (and the output's file names) are the same in every run.
const DETERMINISTIC_BASE: u32 = 1_700_000_000;

/// Exit status of a run that failed (usage errors exit with 2).
const FAILED: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "ride-stats",
    version,
    about = "Per-zone and per-hour statistics of a synthetic ride stream, checkpointed, exactly once",
    long_about = "Per-zone and per-hour statistics of a synthetic ride stream, checkpointed, exactly once.\n\n\
        A seeded stream of rides (pickup and drop-off zones with a few busy ones, a rush-hour pattern, \
        fares and distances) goes through an aggregating operator that reports, per application window, \
        rides and revenue per zone and per simulated hour and the top zones by revenue. Each streaming \
        window's report lines are published to the output directory once the window is committed \
        (one file per window, named by its window id), exactly once.",
    after_help = "Ctrl-C stops the job gracefully: the current window ends, a final checkpoint is taken and \
        committed windows are published. Running the same command again resumes from the checkpoints, \
        after Ctrl-C or a kill alike, with the settings the job was started with. Delete the checkpoints \
        and the output directory to start over.\n\n\
        Exit status: 0 when the job finished or was stopped by Ctrl-C, 1 when it failed, 2 for bad arguments."
)]
struct Args {
    /// Rides in the stream (a new job only; a resumed job keeps its own)
    #[arg(long, value_name = "N", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    rides: u64,

    /// Seed of the ride stream (a new job only)
    #[arg(long, value_name = "S", default_value_t = 42)]
    seed: u64,

    /// Rides per second at most, 0 for as fast as possible (a new job only)
    #[arg(long, value_name = "R", default_value_t = 60_000)]
    rate: u64,

    /// Zones in each window's ranking by revenue (a new job only)
    #[arg(long, value_name = "K", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    top: u32,

    /// Checkpoint directory or s3://BUCKET/PREFIX: resumed if it holds this job
    #[arg(long, value_name = "DIR|URL", default_value = "./checkpoints", long_help = checkpoints_help())]
    checkpoints: CheckpointLocation,

    /// Output directory: one file per committed window (a new job only)
    #[arg(long, value_name = "DIR", default_value = "./out")]
    output: PathBuf,

    /// Streaming window length in milliseconds (time-based windows)
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    window_ms: u64,

    /// Deterministic windows of N rides (rounded up to a multiple of 100)
    /// instead of time-based ones, with a fixed window base: reproducible
    /// output, for tests
    #[arg(long, value_name = "N", conflicts_with = "window_ms", value_parser = clap::value_parser!(u64).range(1..))]
    deterministic: Option<u64>,

    /// Streaming windows per application window of the statistics
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    app_windows: u32,

    /// Streaming windows between checkpoints (a multiple of --app-windows)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    checkpoint_every: u32,

    /// Make the statistics operator fail (panic) once, at the start of
    /// streaming window W, to watch it recover
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..))]
    fail_at_window: Option<u32>,

    /// Serve the job's metrics as Prometheus text at http://ADDR/metrics
    /// while it runs (127.0.0.1:9184, say)
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if !args.checkpoint_every.is_multiple_of(args.app_windows) {
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--checkpoint-every {} is not a multiple of --app-windows {}: checkpoints can only be taken \
                     at application window boundaries",
                    args.checkpoint_every, args.app_windows
                ),
            )
            .exit();
    }
    match run(&args, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ride-stats: error: {message}");
            ExitCode::from(FAILED)
        }
    }
}

/// Whether the user gave `id` on the command line (not its default).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(ValueSource::CommandLine)
}

fn run(args: &Args, matches: &ArgMatches) -> Result<(), String> {
    let checkpoints = args.checkpoints.to_string();
    let storage = args.checkpoints.open()?;
    // What the runtime will resume from; `None` for a new job.
    let stored = rides::stored_job(&*storage).map_err(|e| {
        format!(
            "cannot resume the job in {checkpoints}: {e}\n  (use other --checkpoints for a new job, or \
             delete {checkpoints} to start over){}",
            args.checkpoints.hint()
        )
    })?;
    let resuming = stored.is_some();

    // The sink's directory is configuration: a resumed job writes where
    // this run's --output says.
    let output = args.output.clone();
    let out = output.display().to_string();
    if !resuming && rides::has_output(&output).map_err(|e| format!("cannot read the output directory {out}: {e}"))? {
        return Err(format!(
            "{out} already holds output of an earlier job, and {checkpoints} holds no job to resume: delete \
             {out} (or choose another --output) to start a new job"
        ));
    }
    if let Some(job) = &stored
        && job.source.position() >= job.source.end()
    {
        print_finished(args, job, &output);
        return Ok(());
    }
    checkpoint_core::create_dir_all_durable(&output)
        .map_err(|e| format!("cannot create the output directory {out}: {e}"))?;
    std::fs::write(output.join("README.txt"), OUTPUT_FORMAT)
        .map_err(|e| format!("cannot write to the output directory {out}: {e}"))?;

    let settings = JobSettings {
        rides: args.rides,
        seed: args.seed,
        rate: args.rate,
        top: args.top,
        output: output.clone(),
        application_windows: args.app_windows,
        checkpoint_every: args.checkpoint_every,
    };
    let (window_mode, window_text) = match args.deterministic {
        Some(n) => {
            let n = n.div_ceil(RIDES_PER_CALL) * RIDES_PER_CALL;
            (WindowMode::Tuples(n), format!("{} rides (deterministic)", thousands(n)))
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
    if let Some(window) = args.fail_at_window {
        config = config.inject(Fault::panic(rides::STATS, window).printed());
    }

    // What this run starts from.
    let (total, done_before, window_before) = match &stored {
        Some(job) => (job.source.end(), job.source.position(), job.window.sequence()),
        None => (args.rides, 0, 0),
    };
    print_header(args, &settings, stored.as_ref(), &window_text, matches);

    if let Some(addr) = args.metrics {
        checkpoint_examples::metrics::serve(addr)?;
    }
    let runtime = Runtime::new(config);
    let live = LiveProgress::start(
        runtime.progress(),
        ProgressSettings::new("rides")
            .total(total)
            .resumed(done_before, window_before),
    );
    let printer = live.printer();
    install_ctrl_c("ride-stats", runtime.stop_handle(), printer.clone());
    install_panic_hook(printer.clone());

    let result = runtime.run(rides::dag(&settings));
    live.finish();
    let stopped = runtime.stop_handle().is_stopped();
    match result {
        Ok(report) => {
            print_summary(args, &report, stored.as_ref(), total, stopped, &output);
            Ok(())
        }
        Err(e) => Err(explain(&e, &args.checkpoints)),
    }
}

fn print_header(
    args: &Args,
    settings: &JobSettings,
    stored: Option<&rides::StoredJob>,
    window_text: &str,
    matches: &ArgMatches,
) {
    let rate = |rate: u64| {
        if rate == 0 {
            "as fast as possible".to_owned()
        } else {
            format!("at most {}/s", thousands(rate))
        }
    };
    match stored {
        Some(job) => {
            let s = &job.source;
            println!(
                "ride-stats: resuming the job in {} at ride {} of {} (its checkpoints at window {})",
                args.checkpoints,
                thousands(s.position()),
                thousands(s.end()),
                job.window.sequence(),
            );
            // The stream (seed, length) is state; the rate and the output
            // directory are configuration, taken from this run.
            println!(
                "  the job keeps its stream: seed {}, {} rides; this run: {}, output to {}",
                s.seed(),
                thousands(s.end()),
                rate(settings.rate),
                settings.output.display()
            );
            let mut ignored = Vec::new();
            if given(matches, "rides") && args.rides != s.end() {
                ignored.push("--rides");
            }
            if given(matches, "seed") && args.seed != s.seed() {
                ignored.push("--seed");
            }
            if given(matches, "top") {
                ignored.push("--top");
            }
            if !ignored.is_empty() {
                println!(
                    "  note: {} ignored: a resumed job keeps the settings in its checkpoints (use other \
                     --checkpoints for a new job)",
                    ignored.join(", ")
                );
            }
        }
        None => println!(
            "ride-stats: {} synthetic rides (seed {}, {}) -> per-zone and per-hour statistics",
            thousands(settings.rides),
            settings.seed,
            rate(settings.rate),
        ),
    }
    println!(
        "  windows: {window_text} each, application windows of {}, a checkpoint every {} windows",
        settings.application_windows, settings.checkpoint_every
    );
    println!(
        "  checkpoints: {}   output: {} (a file per window, published once committed)",
        args.checkpoints,
        settings.output.display()
    );
    if let Some(window) = args.fail_at_window {
        println!("  the stats operator will fail at the start of window {window} (--fail-at-window)");
    }
    if std::io::stdout().is_terminal() {
        println!("  Ctrl-C stops with a final checkpoint; running the same command again resumes.");
    }
}

/// The job in the checkpoint directory is complete: says so, runs nothing.
fn print_finished(args: &Args, job: &rides::StoredJob, output: &Path) {
    println!(
        "ride-stats: the job in {} already finished: all {} rides (seed {}) were processed, up to window {}",
        args.checkpoints,
        thousands(job.source.end()),
        job.source.seed(),
        job.window.sequence()
    );
    print_output(output);
    print_inspect(&args.checkpoints);
    println!(
        "  next:          delete {} and {} to run it again from scratch",
        args.checkpoints,
        output.display()
    );
}

fn print_summary(
    args: &Args,
    report: &RunReport,
    stored: Option<&rides::StoredJob>,
    total: u64,
    stopped: bool,
    output: &Path,
) {
    let emitted = report.operator(rides::RIDES).map_or(0, |o| o.tuples_out);
    // The position is known if the runtime resumed where we read it would.
    let before = match stored {
        Some(job) => report
            .resumed_from
            .iter()
            .any(|(name, w)| name == rides::RIDES && *w == job.window)
            .then_some(job.source.position()),
        None if report.resumed_from.is_empty() => Some(0),
        None => None,
    };
    let position = before.map(|b| b + emitted);
    // `run` returns without a stop only once every input is done.
    let finished = !stopped || position == Some(total);
    let secs = report.elapsed.as_secs_f64();
    let per_sec = if secs > 0.0 { (emitted as f64 / secs) as u64 } else { 0 };

    println!();
    if finished {
        println!(
            "ride-stats: finished: {} rides this run in {secs:.1} s ({}/s)",
            thousands(emitted),
            thousands(per_sec)
        );
    } else {
        let at = position.map_or_else(String::new, |p| {
            format!(" at ride {} of {}", thousands(p), thousands(total))
        });
        println!(
            "ride-stats: stopped{at}: {} rides this run in {secs:.1} s",
            thousands(emitted)
        );
    }
    if !report.resumed_from.is_empty() {
        let from: Vec<String> = report
            .resumed_from
            .iter()
            .map(|(name, w)| format!("{name} @{}", w.sequence()))
            .collect();
        println!("  resumed from:  checkpoints {}", from.join(", "));
    }
    let last_window = report
        .operators
        .iter()
        .filter_map(|o| o.last_checkpoint)
        .max()
        .or(report.committed);
    println!(
        "  windows:       {} this run{}",
        plural(
            report.operator(rides::RIDES).map_or(0, |o| o.windows),
            "streaming window"
        ),
        last_window.map_or_else(String::new, |w| format!(", up to window {}", w.sequence())),
    );
    let checkpoints: u64 = report.operators.iter().map(|o| o.checkpoints).sum();
    let bytes: u64 = report.operators.iter().map(|o| o.last_checkpoint_bytes).sum();
    println!(
        "  checkpoints:   {} in {} ({}), the newest {} in all",
        plural(checkpoints, "snapshot"),
        args.checkpoints,
        report
            .operators
            .iter()
            .map(|o| format!("{} {}", o.name, o.checkpoints))
            .collect::<Vec<_>>()
            .join(", "),
        plural(bytes, "byte"),
    );
    let slowest = |f: fn(&checkpoint_runtime::OperatorReport) -> Duration| {
        report.operators.iter().map(f).max().unwrap_or_default()
    };
    println!(
        "                 the longest operator pause to encode one {}, the longest save to disk {}",
        short_duration(slowest(|o| o.max_encode_time)),
        short_duration(slowest(|o| o.max_durable_latency)),
    );
    // The newest checkpoints, from the run report's history.
    for c in report.checkpoint_history.iter().rev().take(3).rev() {
        println!(
            "                 {} at window {}: {}, encoded in {}, durable {} later",
            c.operator,
            c.window.sequence(),
            plural(c.bytes, "byte"),
            short_duration(c.encode),
            short_duration(c.durable),
        );
    }
    match report.committed {
        Some(w) => println!(
            "  committed:     window {} ({w}): every window up to it is published",
            w.sequence()
        ),
        None => println!("  committed:     no window yet"),
    }
    if report.recoveries.is_empty() {
        let note = match args.fail_at_window {
            Some(w) => format!(" (--fail-at-window {w} was not reached in this run)"),
            None => String::new(),
        };
        println!("  recoveries:    none{note}");
    }
    for recovery in &report.recoveries {
        let at = recovery
            .window
            .map_or_else(String::new, |w| format!(" at window {} ({w})", w.sequence()));
        println!("  recovery:      {} failed{at}: {}", recovery.operator, recovery.cause);
        let restored: Vec<String> = recovery
            .restored
            .iter()
            .map(|(name, w)| format!("{name} from its checkpoint @{}", w.sequence()))
            .collect();
        println!(
            "                 restored {}; the windows since were replayed from the replay buffer of {}",
            restored.join(", "),
            rides::RIDES
        );
    }
    for note in &report.notes {
        println!("  note:          {note}");
    }
    if !finished && args.deterministic.is_none() {
        println!(
            "  note:          the stop ended the last window early, so after a resume the windows hold other rides \
             than an uninterrupted run's (the totals are the same; with --deterministic they are identical)"
        );
    }
    print_output(output);
    print_inspect(&args.checkpoints);
    if finished {
        println!(
            "  next:          the job is complete; delete {} and {} to run it again from scratch",
            args.checkpoints,
            output.display()
        );
    } else {
        println!(
            "  next:          run the same command again to resume from the checkpoints in {}",
            args.checkpoints
        );
    }
}

/// The output lines of the summary: what is published and how to look.
fn print_output(output: &Path) {
    let out = output.display();
    let files = checkpoint_runtime::io::published_windows(output).map_or(0, |w| w.len());
    let text = checkpoint_runtime::io::read_output(output).unwrap_or_default();
    let lines = text.iter().filter(|b| **b == b'\n').count() as u64;
    let reports = text
        .split(|b| *b == b'\n')
        .filter(|l| l.windows(9).any(|w| w == b" summary "))
        .count() as u64;
    println!(
        "  output:        {out}: {}, {}, {} ({out}/README.txt explains them)",
        plural(files as u64, "window file"),
        plural(lines, "line"),
        plural(reports, "application window report"),
    );
    println!("                 e.g. cat {out}/[0-9a-f]* | grep top=1   (the top zone of each application window)");
}

/// How to look at the checkpoints.
fn print_inspect(checkpoints: &CheckpointLocation) {
    println!("  inspect:       cargo run -p checkpoint-cli -- ls {checkpoints}");
}

/// The long help of `--checkpoints`.
fn checkpoints_help() -> String {
    format!("Where the checkpoints go: resumed if it holds this job. {LOCATION_HELP}")
}

/// `1 window`, `2 windows`, `1,000 windows`.
fn plural(n: u64, what: &str) -> String {
    format!("{} {what}{}", thousands(n), if n == 1 { "" } else { "s" })
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
