//! `wordcount`: word counts of text files, per application window and in
//! total, written exactly once per window, checkpointed.
//!
//! ```text
//! cargo run -p checkpoint-examples --bin wordcount                    # the shipped text
//! cargo run -p checkpoint-examples --bin wordcount -- books/          # every file of a directory
//! cargo run -p checkpoint-examples --bin wordcount -- --fail-at-window 3 # watch a recovery
//! cargo run -p checkpoint-examples --bin wordcount -- --help
//! ```
//!
//! The DAG is `lines-0`, `lines-1`, ... ([`LineInput`], one per input file,
//! idempotent) -> `count` (fan-in: windows are aligned across the files) ->
//! `sink` ([`ExactlyOnceFileSink`]). A directory stands for its regular,
//! non-hidden files in sorted order, not recursively. Words are the maximal
//! runs of alphanumeric characters, lower-cased (`Nature's` is `nature` and
//! `s`). At the end of each application window, `count` emits one line per
//! word seen in it, sorted: `<word> <count in the window> <running total>`;
//! the sink publishes them once the window is committed, a file per
//! streaming window, named by its window id. The last line of a word in the
//! output holds its total over everything read.
//!
//! Running the same command again resumes from the checkpoints (after
//! Ctrl-C, a kill or a failure); the output is the same as that of a run that
//! never stopped. `--checkpoints` takes a directory or an S3 prefix
//! (`s3://bucket/prefix`, configured from the `AWS_*` environment variables).

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use checkpoint_core::{Checkpoint, WindowId};
use checkpoint_examples::location::{CheckpointLocation, LOCATION_HELP};
use checkpoint_examples::progress::{
    LiveProgress, ProgressSettings, install_ctrl_c, install_panic_hook, short_duration,
};
use checkpoint_examples::rides::thousands;
use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput};
use checkpoint_runtime::{
    Config, Dag, Emit, Fault, InputOperator, Operator, OperatorContext, OperatorResult, Output, RecoveryScope,
    RunError, RunReport, Runtime, WindowMode,
};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// The window base of a new job in the deterministic mode, so window ids
/// (and the output's file names) are the same in every run.
const DETERMINISTIC_BASE: u32 = 1_700_000_000;

/// Exit status of a run that failed (usage errors exit with 2).
const FAILED: u8 = 1;

/// The counting operator's name.
const COUNT: &str = "count";

/// The sink's name.
const SINK: &str = "sink";

/// At most this many input files (each is an input operator, on its own
/// thread).
const MAX_FILES: usize = 64;

/// The shipped default input.
const DEFAULT_INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/declaration.txt");

#[derive(Debug, Parser)]
#[command(
    name = "wordcount",
    version,
    about = "Word counts of text files per application window and in total, checkpointed, exactly once",
    long_about = "Word counts of text files per application window and in total, checkpointed, exactly once.\n\n\
        Each input file is read line by line by its own idempotent input operator (a directory stands for \
        its files in sorted order, a quoted glob pattern such as 'texts/*.txt' for the files it matches); the inputs fan in to a counting operator that, at the end of each \
        application window, emits `<word> <count in the window> <running total>` for every word seen in \
        it, sorted. Words are runs of letters and digits, lower-cased. Each streaming window's lines are \
        published to the output directory once the window is committed (one file per window, named by \
        its window id), exactly once: the last line of a word holds its total.",
    after_help = "Ctrl-C stops the job gracefully: the current window ends, a final checkpoint is taken and \
        committed windows are published. Running the same command again resumes from the checkpoints, \
        after Ctrl-C, a kill or a failure; the inputs must not change meanwhile. Delete the checkpoints \
        and the output directory to start over.\n\n\
        Exit status: 0 when the job finished or was stopped by Ctrl-C, 1 when it failed, 2 for bad arguments."
)]
struct Args {
    /// Text files, or directories standing for their regular, non-hidden
    /// files in sorted order [default: the shipped examples/data/declaration.txt]
    #[arg(value_name = "PATH")]
    inputs: Vec<PathBuf>,

    /// Checkpoint directory or s3://BUCKET/PREFIX: resumed if it holds this job
    #[arg(long, value_name = "DIR|URL", default_value = "./checkpoints-wordcount", long_help = checkpoints_help())]
    checkpoints: CheckpointLocation,

    /// Output directory: one file per committed window (a resumed job keeps
    /// its own)
    #[arg(long, value_name = "DIR", default_value = "./wordcount-output")]
    output: PathBuf,

    /// Streaming window length in milliseconds (time-based windows)
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    window_ms: u64,

    /// Deterministic windows of N lines per input file instead of time-based
    /// ones, with a fixed window base: reproducible output, for tests
    #[arg(long, value_name = "N", conflicts_with = "window_ms", value_parser = clap::value_parser!(u64).range(1..))]
    deterministic: Option<u64>,

    /// Lines per second each input reads at most, 0 for as fast as possible
    /// (so that the shipped text spans a few windows)
    #[arg(long, value_name = "R", default_value_t = 100)]
    rate: u64,

    /// Streaming windows per application window of the counter
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    app_windows: u32,

    /// Streaming windows between checkpoints (a multiple of --app-windows)
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    checkpoint_every: u32,

    /// Words in the summary's ranking
    #[arg(long, value_name = "K", default_value_t = 10)]
    top: usize,

    /// Make the counter fail (panic) once, at the start of streaming window
    /// W, to watch it recover
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..))]
    fail_at_window: Option<u32>,
}

/// One output line: a word's count in one application window and its
/// running total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WordCount {
    word: String,
    count: u64,
    total: u64,
}

impl fmt::Display for WordCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.word, self.count, self.total)
    }
}

/// The words of `line`: maximal runs of alphanumeric characters,
/// lower-cased.
fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Counts words per application window and in total; emits, at the end of
/// each application window, one [`WordCount`] per word of the window, sorted
/// (a `BTreeMap`), so a replayed window emits the same tuples in the same
/// order.
#[derive(Debug, Default, Checkpoint)]
struct Counter {
    /// Counts of the current application window (empty at every checkpoint,
    /// which is taken after `end_window`).
    window: BTreeMap<String, u64>,
    /// Running totals over every window so far.
    totals: BTreeMap<String, u64>,
}

impl Operator for Counter {
    type Input = String;
    type Output = WordCount;

    fn begin_window(&mut self, _window: WindowId) -> OperatorResult {
        self.window.clear();
        Ok(())
    }

    fn process(&mut self, line: String, _out: Output<'_, WordCount>) -> OperatorResult {
        for word in words(&line) {
            *self.window.entry(word).or_default() += 1;
        }
        Ok(())
    }

    fn end_window(&mut self, out: Output<'_, WordCount>) -> OperatorResult {
        for (word, count) in std::mem::take(&mut self.window) {
            let total = self.totals.entry(word.clone()).or_default();
            *total += count;
            out.emit(WordCount {
                word,
                count,
                total: *total,
            });
        }
        Ok(())
    }
}

/// The pause after each `emit_tuples` call of an input, for `--rate`.
fn pause_for(rate: u64) -> Duration {
    match rate {
        0 => Duration::ZERO,
        rate => Duration::from_secs_f64(1.0 / rate as f64),
    }
}

/// A [`LineInput`] that pauses after each call, so a small file spans a few
/// time windows; every hook delegates to it.
#[derive(Debug, Checkpoint)]
struct PacedLines {
    /// Its file and lines per call are configuration of `LineInput`, so a
    /// resumed job reads the files given to this run.
    #[checkpoint(nested)]
    inner: LineInput,
    /// `--rate` is configuration: a resumed or recovered input paces as
    /// this run says.
    #[checkpoint(config)]
    pause: Duration,
}

impl InputOperator for PacedLines {
    type Output = String;

    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        self.inner.setup(ctx)
    }

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.inner.begin_window(window)
    }

    fn emit_tuples(&mut self, out: Output<'_, String>) -> OperatorResult<Emit> {
        let emit = self.inner.emit_tuples(out)?;
        if emit != Emit::Done && !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
        Ok(emit)
    }

    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        self.inner.end_window(out)
    }

    fn teardown(&mut self) {
        self.inner.teardown();
    }

    fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult {
        self.inner.before_checkpoint(window)
    }

    fn checkpointed(&mut self, window: WindowId) -> OperatorResult {
        self.inner.checkpointed(window)
    }

    fn committed(&mut self, window: WindowId) -> OperatorResult {
        self.inner.committed(window)
    }
}

/// The input operator's name for file `i`.
fn input_name(i: usize) -> String {
    format!("lines-{i}")
}

/// Lines per `emit_tuples` call: with deterministic windows of `n` lines,
/// the largest divisor of `n` up to 1,000 (so every window but the last has
/// exactly `n` lines); paced, one line (a pause per line); else 1,000.
fn lines_per_call(deterministic: Option<u64>, paced: bool) -> usize {
    match deterministic {
        _ if paced => 1,
        Some(n) => (1..=n.min(1_000))
            .rev()
            .find(|d| n.is_multiple_of(*d))
            .map_or(1, |d| d as usize),
        None => 1_000,
    }
}

/// The input files: each path, a directory's regular, non-hidden files in
/// sorted order, or the files a glob pattern (`texts/*.txt`) matches, sorted.
fn input_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        let text = path.to_string_lossy();
        if !path.exists() && text.contains(['*', '?', '[']) {
            let matches = glob::glob(&text).map_err(|e| format!("bad pattern {text:?}: {e}"))?;
            let mut found = Vec::new();
            for entry in matches {
                let entry = entry.map_err(|e| format!("cannot read a match of {text:?}: {e}"))?;
                if entry.is_file() {
                    found.push(entry);
                }
            }
            if found.is_empty() {
                return Err(format!("the pattern {text:?} matches no files"));
            }
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else if path.is_dir() {
            let entries =
                std::fs::read_dir(path).map_err(|e| format!("cannot read the directory {}: {e}", path.display()))?;
            let mut found = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| format!("cannot read the directory {}: {e}", path.display()))?;
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if !hidden && entry.path().is_file() {
                    found.push(entry.path());
                }
            }
            if found.is_empty() {
                return Err(format!("the directory {} holds no files", path.display()));
            }
            found.sort();
            files.extend(found);
        } else {
            return Err(format!(
                "{} does not exist or is not a file or a directory",
                path.display()
            ));
        }
    }
    if files.len() > MAX_FILES {
        return Err(format!(
            "{} input files: at most {MAX_FILES} (each is an input operator on its own thread); concatenate them",
            files.len()
        ));
    }
    Ok(files)
}

/// The job's DAG: `lines-0`, `lines-1`, ... -> `count` -> `sink`.
fn dag(files: &[PathBuf], args: &Args, output: &Path) -> Dag {
    let pause = pause_for(args.rate);
    let per_call = lines_per_call(args.deterministic, !pause.is_zero());
    let mut dag = Dag::new();
    let count = dag.operator(COUNT, Counter::default());
    let sink = dag.operator(SINK, ExactlyOnceFileSink::<WordCount>::new(output));
    for (i, file) in files.iter().enumerate() {
        let input = dag.input(
            &input_name(i),
            PacedLines {
                inner: LineInput::new(file).lines_per_call(per_call),
                pause,
            },
        );
        dag.connect(&input, &count);
    }
    dag.connect(&count, &sink)
        .application_window_count(&count, args.app_windows)
        .default_checkpoint_window_count(args.checkpoint_every);
    dag
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.checkpoint_every.is_multiple_of(args.app_windows) {
        eprintln!(
            "wordcount: error: --checkpoint-every {} is not a multiple of --app-windows {}: checkpoints can only \
             be taken at application window boundaries",
            args.checkpoint_every, args.app_windows
        );
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wordcount: error: {message}");
            ExitCode::from(FAILED)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let paths = if args.inputs.is_empty() {
        vec![PathBuf::from(DEFAULT_INPUT)]
    } else {
        args.inputs.clone()
    };
    let files = input_files(&paths)?;
    let checkpoints = args.checkpoints.to_string();
    let storage = args.checkpoints.open()?;
    let resuming = storage
        .load_manifest()
        .map_err(|e| {
            format!(
                "cannot read the job manifest in {checkpoints}: {e}{}",
                args.checkpoints.hint()
            )
        })?
        .is_some();
    let out = args.output.display().to_string();
    let published = checkpoint_runtime::io::published_windows(&args.output).map_or(0, |w| w.len());
    if !resuming && published > 0 {
        return Err(format!(
            "{out} already holds output of an earlier job, and {checkpoints} holds no job to resume: delete {out} \
             (or choose another --output) to start a new job"
        ));
    }

    let (window_mode, window_text) = match args.deterministic {
        Some(n) => (
            WindowMode::Tuples(n),
            format!("{} lines per input (deterministic)", thousands(n)),
        ),
        None => (
            WindowMode::Time(Duration::from_millis(args.window_ms)),
            format!("{} ms", args.window_ms),
        ),
    };
    // Files read again exactly (`LineInput`): the global scope keeps no
    // replay data while the job runs, and a failure restores every
    // operator, as a Flink user would have it.
    let mut config = Config::default()
        .shared_storage(storage)
        .window_mode(window_mode)
        .recovery_scope(RecoveryScope::Global);
    if args.deterministic.is_some() {
        config = config.window_base(DETERMINISTIC_BASE);
    }
    if let Some(window) = args.fail_at_window {
        config = config.inject(Fault::panic(COUNT, window).printed());
    }

    print_header(args, &files, resuming, &window_text);
    let runtime = Runtime::new(config);
    let mut settings = ProgressSettings::new("lines");
    if !resuming {
        settings = settings.total(files.iter().map(|f| count_lines(f)).sum());
    }
    let live = LiveProgress::start(runtime.progress(), settings);
    let printer = live.printer();
    install_ctrl_c("wordcount", runtime.stop_handle(), printer.clone());
    install_panic_hook(printer);

    let result = runtime.run(dag(&files, args, &args.output));
    live.finish();
    let stopped = runtime.stop_handle().is_stopped();
    match result {
        Ok(report) => {
            print_summary(args, &files, &report, stopped);
            Ok(())
        }
        Err(e) => Err(explain(&e, &args.checkpoints)),
    }
}

/// Lines in `file` (for the progress bar; 0 if unreadable: the job reports
/// the error).
fn count_lines(file: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(file) else { return 0 };
    let newlines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
    newlines + u64::from(bytes.last().is_some_and(|b| *b != b'\n'))
}

fn print_header(args: &Args, files: &[PathBuf], resuming: bool, window_text: &str) {
    let names: Vec<String> = files.iter().take(3).map(|f| f.display().to_string()).collect();
    let more = files.len().saturating_sub(3);
    let list = if more > 0 {
        format!("{} and {more} more", names.join(", "))
    } else {
        names.join(", ")
    };
    if resuming {
        println!(
            "wordcount: resuming the job in {} ({})",
            args.checkpoints,
            plural(files.len() as u64, "input file")
        );
    } else {
        println!(
            "wordcount: {} ({list}) -> word counts per window and running totals",
            plural(files.len() as u64, "input file")
        );
    }
    let rate = match args.rate {
        0 => "as fast as possible".to_owned(),
        r => format!("at most {} lines/s per file", thousands(r)),
    };
    println!(
        "  windows: {window_text} each, read {rate}, application windows of {}, a checkpoint every {} windows",
        args.app_windows, args.checkpoint_every
    );
    println!(
        "  checkpoints: {}   output: {} (a file per window: `<word> <count in window> <running total>`)",
        args.checkpoints,
        args.output.display()
    );
    if let Some(window) = args.fail_at_window {
        println!("  the counter will fail at the start of window {window} (--fail-at-window)");
    }
    if std::io::stdout().is_terminal() {
        println!("  Ctrl-C stops with a final checkpoint; running the same command again resumes.");
    }
}

/// The running totals in published output: the last total of each word.
fn final_totals(output: &[u8]) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for line in String::from_utf8_lossy(output).lines() {
        let mut fields = line.split(' ');
        if let (Some(word), Some(_), Some(total), None) = (fields.next(), fields.next(), fields.next(), fields.next())
            && let Ok(total) = total.parse::<u64>()
        {
            totals.insert(word.to_owned(), total);
        }
    }
    totals
}

fn print_summary(args: &Args, files: &[PathBuf], report: &RunReport, stopped: bool) {
    let lines: u64 = (0..files.len())
        .filter_map(|i| report.operator(&input_name(i)))
        .map(|o| o.tuples_out)
        .sum();
    let secs = report.elapsed.as_secs_f64();
    println!();
    if stopped {
        println!(
            "wordcount: stopped: {} read this run in {secs:.1} s",
            plural(lines, "line")
        );
    } else {
        println!(
            "wordcount: finished: {} read this run in {secs:.1} s",
            plural(lines, "line")
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
    let count = report.operator(COUNT);
    println!(
        "  windows:       {} this run",
        plural(count.map_or(0, |o| o.windows), "streaming window")
    );
    let snapshots: u64 = report.operators.iter().map(|o| o.checkpoints).sum();
    let bytes: u64 = report.operators.iter().map(|o| o.last_checkpoint_bytes).sum();
    let slowest = report
        .operators
        .iter()
        .map(|o| o.max_durable_latency)
        .max()
        .unwrap_or_default();
    println!(
        "  checkpoints:   {} in {}, the newest {} in all, the longest save {}",
        plural(snapshots, "snapshot"),
        args.checkpoints,
        plural(bytes, "byte"),
        short_duration(slowest),
    );
    match report.committed {
        Some(w) => println!(
            "  committed:     window {} ({w}): every window up to it is published",
            w.sequence()
        ),
        None => println!("  committed:     no window yet"),
    }
    if report.recoveries.is_empty()
        && let Some(w) = args.fail_at_window
    {
        println!("  recoveries:    none (--fail-at-window {w} was not reached in this run)");
    }
    for recovery in &report.recoveries {
        let at = recovery
            .window
            .map_or_else(String::new, |w| format!(" at window {}", w.sequence()));
        let restored: Vec<String> = recovery
            .restored
            .iter()
            .map(|(name, w)| format!("{name} @{}", w.sequence()))
            .collect();
        println!(
            "  recovery:      {} failed{at}: {}; restored {} and replayed the windows since",
            recovery.operator,
            recovery.cause,
            restored.join(", ")
        );
    }
    for note in &report.notes {
        println!("  note:          {note}");
    }
    // A resumed job's sink keeps the directory in its checkpoint; this
    // reports on the one given, the same unless --output changed.
    let output = &args.output;
    let out = output.display();
    let text = checkpoint_runtime::io::read_output(output).unwrap_or_default();
    let files_out = checkpoint_runtime::io::published_windows(output).map_or(0, |w| w.len());
    let totals = final_totals(&text);
    let words: u64 = totals.values().sum();
    println!(
        "  output:        {out}: {}; so far {} in all, {}",
        plural(files_out as u64, "window file"),
        plural(words, "word"),
        plural(totals.len() as u64, "distinct word"),
    );
    if args.top > 0 && !totals.is_empty() {
        let mut ranked: Vec<(&String, &u64)> = totals.iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let top: Vec<String> = ranked.iter().take(args.top).map(|(w, n)| format!("{w} {n}")).collect();
        println!("  top words:     {}", top.join(", "));
    }
    println!("                 e.g. cat {out}/[0-9a-f]* | grep '^liberty '   (a word's count per window and total)");
    println!(
        "  inspect:       cargo run -p checkpoint-cli -- ls {}",
        args.checkpoints
    );
    if stopped {
        println!(
            "  next:          run the same command again to resume from the checkpoints in {}",
            args.checkpoints
        );
    } else {
        println!(
            "  next:          the job is complete; delete {} and {out} to run it again from scratch",
            args.checkpoints
        );
    }
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
            format!(
                "{error}\n  (does {checkpoints} hold the checkpoints of another job, or of other input files? use \
                 other --checkpoints)"
            )
        }
        RunError::OperatorFailed { .. } => format!(
            "{error}\n  the checkpoints in {checkpoints} are intact: fix the cause and run again to resume from the \
             last committed window"
        ),
        RunError::Storage(_) | RunError::UnusableCheckpoint { .. } => format!("{error}{}", checkpoints.hint()),
        other => other.to_string(),
    }
}
