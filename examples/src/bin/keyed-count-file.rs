//! Counts the words (keys) of a text file per window, exactly once: an
//! idempotent file input, a keyed counter, and an exactly-once file sink,
//! checkpointed to a directory (or an S3 prefix, `--checkpoints
//! s3://bucket/prefix`). Run it again with the same arguments after a crash
//! and it resumes; the published output is the same byte for byte as
//! that of a run that never failed.
//!
//! ```text
//! cargo run -p checkpoint-examples --bin keyed-count-file -- \
//!     --input words.txt --output counts --checkpoints checkpoints
//! cat counts/*        # one file per window: `<key> <count in window> <running total>`
//! ```
//!
//! The pipeline is `lines` ([`LineInput`]) -> `count` (a keyed counter) ->
//! `sink` ([`ExactlyOnceFileSink`]). Windows are cut every `--window-lines`
//! lines ([`WindowMode::Tuples`]), so the output does not depend on timing.
//!
//! # Progress lines
//!
//! On standard output, flushed one by one (tests read them to know how far
//! the job got):
//!
//! - `start new` / `start resume`: whether the checkpoint directory already
//!   held this job;
//! - `window <seq>`: the sink finished writing window `<seq>` (pending);
//! - `committed <seq>`: the sink published every window through `<seq>`;
//! - `crashing <point> <seq> ...`: an armed crash point fired (see below);
//! - at the end, `resumed <operator> <seq>` for every operator restored from
//!   a checkpoint, `note <text>` for what the runtime noted (a corrupt
//!   checkpoint skipped, say), and `done committed <seq>`.
//!
//! # Crash points
//!
//! For crash tests, `CKPT_CRASH=<point>:<window sequence>[:<argument>]` makes
//! the process kill itself with SIGKILL (no unwinding, no flushing: as if the
//! machine's power went, except that the kernel's page cache survives):
//!
//! - `mid-window:<W>:<K>`: in `count`, after the `K`-th tuple (line) of window
//!   `W`;
//! - `after-save:<W>:<operator>` (a checkpoint directory only): once the checkpoint of `<operator>` (`lines`,
//!   `count` or `sink`) at window `W` is durable (the storage agent's
//!   [`SavePhase::AfterDirFsync`]), on the thread that saved it;
//! - `before-save:<W>:<operator>` (a checkpoint directory only): once that checkpoint's bytes are written
//!   to its temp file, before anything makes them durable
//!   ([`SavePhase::AfterWrite`]); at window 0 (the initial checkpoints) this
//!   is a kill during the job's start-up, after its manifest exists;
//! - `checkpointed:<W>:<operator>`: in the `checkpointed(W)` hook of `count`
//!   or `sink`: the checkpoint is saved, the commit has not come;
//! - `publish:<W>`: in the sink's `committed` hook, right after window `W`
//!   was published, while later windows of the same commit are still
//!   pending (with this point armed, the sink publishes the windows of a
//!   commit one at a time).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use checkpoint_core::{Checkpoint, FsStorageAgent, SavePhase, StorageAgent, WindowId};
use checkpoint_examples::location::CheckpointLocation;
use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput};
use checkpoint_runtime::{
    Config, Dag, Operator, OperatorContext, OperatorResult, Output, RecoveryScope, Runtime, WindowMode,
};
use serde::{Deserialize, Serialize};

/// The environment variable that arms a crash point.
const CRASH_VAR: &str = "CKPT_CRASH";

const HELP: &str = "\
keyed-count-file: count the words of a text file per window, exactly once

USAGE:
    keyed-count-file --input FILE [--output DIR] [--checkpoints DIR|URL]
                     [--window-lines N] [--checkpoint-windows N]

OPTIONS:
    --input FILE             the text file to read (required); every
                             whitespace-separated word of a line is a key
    --output DIR             where published windows go, one file per window
                             (default: ./keyed-count-output)
    --checkpoints DIR|URL    checkpoint directory (default: ./keyed-count-checkpoints),
                             or an S3 prefix s3://BUCKET/PREFIX (see ENVIRONMENT)
    --window-lines N         lines per window (default: 100)
    --checkpoint-windows N   windows between checkpoints (default: 10)
    -h, --help               print this help

Each published window file holds one line per key seen in the window, sorted:
`<key> <count in the window> <running total>`.

Run it again with the same arguments after it was killed and it resumes
from its checkpoints; the published output is the same as that of a run that
never failed. Start a new job with empty directories.

ENVIRONMENT:
    CKPT_CRASH=<point>:<window>[:<arg>]   kill the process with SIGKILL at a
        crash point, for crash tests: mid-window:<W>:<K> (after the K-th line
        of window W in `count`), after-save:<W>:<lines|count|sink> (once that
        operator's checkpoint at W is durable), before-save:<W>:<lines|count|sink>
        (once it is written, not yet durable), checkpointed:<W>:<count|sink>
        (in its checkpointed(W) hook), publish:<W> (in the sink's commit, right
        after publishing window W); after-save and before-save need a
        checkpoint directory
    AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_REGION, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY   the S3 endpoint (AWS_ALLOW_HTTP=true for plain
        http://) and credentials of an s3:// --checkpoints";

/// Where the process kills itself.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Crash {
    /// In `count`, after the `tuple`-th tuple of window `window`.
    MidWindow { window: u32, tuple: u64 },
    /// When `operator`'s checkpoint at `window` is durable.
    AfterSave { window: u32, operator: String },
    /// When `operator`'s checkpoint at `window` is written, not yet durable.
    BeforeSave { window: u32, operator: String },
    /// In `operator`'s `checkpointed(window)` hook.
    Checkpointed { window: u32, operator: String },
    /// In the sink's commit, right after publishing `window`.
    Publish { window: u32 },
}

impl Crash {
    fn parse(spec: &str) -> Result<Crash, String> {
        let bad = |why: &str| format!("{CRASH_VAR}={spec:?}: {why} (try --help)");
        let mut parts = spec.split(':');
        let point = parts.next().unwrap_or_default();
        let window: u32 = parts
            .next()
            .ok_or_else(|| bad("no window"))?
            .parse()
            .map_err(|_| bad("the window is not a number"))?;
        let arg = parts.next();
        if parts.next().is_some() {
            return Err(bad("too many fields"));
        }
        let operator = |allowed: &[&str]| match arg {
            Some(op) if allowed.contains(&op) => Ok(op.to_owned()),
            _ => Err(bad(&format!("the operator must be one of {}", allowed.join(", ")))),
        };
        match point {
            "mid-window" => {
                let tuple = arg
                    .ok_or_else(|| bad("no tuple number"))?
                    .parse()
                    .map_err(|_| bad("the tuple number is not a number"))?;
                Ok(Crash::MidWindow { window, tuple })
            }
            "after-save" => Ok(Crash::AfterSave {
                window,
                operator: operator(&["lines", "count", "sink"])?,
            }),
            "before-save" => Ok(Crash::BeforeSave {
                window,
                operator: operator(&["lines", "count", "sink"])?,
            }),
            "checkpointed" => Ok(Crash::Checkpointed {
                window,
                operator: operator(&["count", "sink"])?,
            }),
            "publish" if arg.is_none() => Ok(Crash::Publish { window }),
            "publish" => Err(bad("publish takes no argument")),
            _ => Err(bad("unknown crash point")),
        }
    }
}

/// The armed crash point, set once in `main` before the job starts. A
/// global rather than operator state: operators restored from a checkpoint
/// are decoded, not built by `main`.
static CRASH: OnceLock<Option<Crash>> = OnceLock::new();

fn crash_point() -> Option<&'static Crash> {
    CRASH.get().and_then(Option::as_ref)
}

/// Writes one progress line and flushes it. Errors are ignored: progress
/// is for whoever watches, and a closed pipe must not fail the job.
fn progress(line: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Reports the crash point, then kills the process with SIGKILL.
fn crash_now(what: fmt::Arguments<'_>) -> ! {
    progress(format_args!("crashing {what}"));
    // SAFETY: `kill` and `getpid` have no memory-safety preconditions; the
    // signal ends this process at once.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught, so this is not reached; abort just in case.
    std::process::abort()
}

/// One output line: a key's count in one window and its running total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyCount {
    key: String,
    count: u64,
    total: u64,
}

impl fmt::Display for KeyCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.key, self.count, self.total)
    }
}

/// Counts every word of every line per window and in total; emits, at the
/// end of each window, one [`KeyCount`] per key of the window, sorted by
/// key (a `BTreeMap`), so a replayed window emits the same tuples in the same
/// order.
#[derive(Debug, Default, Checkpoint)]
struct KeyedCount {
    /// Counts of the current window (empty at every checkpoint, which is
    /// taken after `end_window`).
    window: BTreeMap<String, u64>,
    /// Running totals over every window so far.
    totals: BTreeMap<String, u64>,
    #[checkpoint(transient)]
    current: Option<WindowId>,
    /// Tuples processed in the current window.
    #[checkpoint(transient)]
    tuples: u64,
}

impl Operator for KeyedCount {
    type Input = String;
    type Output = KeyCount;

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.current = Some(window);
        self.tuples = 0;
        self.window.clear();
        Ok(())
    }

    fn process(&mut self, line: String, _out: Output<'_, KeyCount>) -> OperatorResult {
        for word in line.split_whitespace() {
            *self.window.entry(word.to_owned()).or_default() += 1;
        }
        self.tuples += 1;
        if let (Some(Crash::MidWindow { window, tuple }), Some(current)) = (crash_point(), self.current)
            && current.sequence() == *window
            && self.tuples == *tuple
        {
            crash_now(format_args!("mid-window {window} {tuple}"));
        }
        Ok(())
    }

    fn end_window(&mut self, out: Output<'_, KeyCount>) -> OperatorResult {
        for (key, count) in std::mem::take(&mut self.window) {
            let total = self.totals.entry(key.clone()).or_default();
            *total += count;
            out.emit(KeyCount {
                key,
                count,
                total: *total,
            });
        }
        Ok(())
    }

    fn checkpointed(&mut self, window: WindowId) -> OperatorResult {
        crash_if_checkpointed("count", window);
        Ok(())
    }
}

fn crash_if_checkpointed(name: &str, at: WindowId) {
    if let Some(Crash::Checkpointed { window, operator }) = crash_point()
        && operator == name
        && at.sequence() == *window
    {
        crash_now(format_args!("checkpointed {window} {operator}"));
    }
}

/// The exactly-once file sink, with progress lines and the `publish` crash
/// point around it: every hook delegates to the [`ExactlyOnceFileSink`].
#[derive(Debug, Checkpoint)]
struct Sink {
    #[checkpoint(nested)]
    inner: ExactlyOnceFileSink<KeyCount>,
    #[checkpoint(transient)]
    current: Option<WindowId>,
}

impl Operator for Sink {
    type Input = KeyCount;
    type Output = ();

    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        self.inner.setup(ctx)
    }

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.current = Some(window);
        self.inner.begin_window(window)
    }

    fn process(&mut self, tuple: KeyCount, out: Output<'_, ()>) -> OperatorResult {
        self.inner.process(tuple, out)
    }

    fn end_window(&mut self, out: Output<'_, ()>) -> OperatorResult {
        self.inner.end_window(out)?;
        if let Some(window) = self.current.take() {
            progress(format_args!("window {}", window.sequence()));
        }
        Ok(())
    }

    fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult {
        self.inner.before_checkpoint(window)
    }

    fn checkpointed(&mut self, window: WindowId) -> OperatorResult {
        self.inner.checkpointed(window)?;
        crash_if_checkpointed("sink", window);
        Ok(())
    }

    /// Publishes through `window`. With the `publish` crash point armed, the
    /// pending windows are published one at a time (a commit covers every
    /// earlier window, so committing them in order is the same commit), and
    /// the process dies right after the armed one.
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        if let Some(Crash::Publish { window: armed }) = crash_point() {
            let pending: Vec<WindowId> = self
                .inner
                .pending_windows()
                .into_iter()
                .filter(|w| *w <= window)
                .collect();
            for (i, w) in pending.iter().enumerate() {
                self.inner.committed(*w)?;
                if w.sequence() == *armed {
                    let left = pending.len() - i - 1;
                    crash_now(format_args!("publish {armed} {left} more pending"));
                }
            }
        }
        self.inner.committed(window)?;
        progress(format_args!("committed {}", window.sequence()));
        Ok(())
    }

    fn teardown(&mut self) {
        self.inner.teardown();
    }
}

#[derive(Debug)]
struct Args {
    input: PathBuf,
    output: PathBuf,
    checkpoints: CheckpointLocation,
    window_lines: u64,
    checkpoint_windows: u32,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut input = None;
    let mut output = PathBuf::from("keyed-count-output");
    let mut checkpoints = CheckpointLocation::Directory(PathBuf::from("keyed-count-checkpoints"));
    let mut window_lines: u64 = 100;
    let mut checkpoint_windows: u32 = 10;
    let mut it = args.into_iter();
    fn positive<T: std::str::FromStr + PartialEq + Default>(flag: &str, value: Option<String>) -> Result<T, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a number"))?;
        match value.parse::<T>() {
            Ok(n) if n != T::default() => Ok(n),
            _ => Err(format!("{flag}: {value:?} is not a positive number")),
        }
    }
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--input" => input = Some(PathBuf::from(it.next().ok_or("--input needs a file")?)),
            "--output" => output = PathBuf::from(it.next().ok_or("--output needs a directory")?),
            "--checkpoints" => {
                let value = it
                    .next()
                    .ok_or("--checkpoints needs a directory or s3://BUCKET/PREFIX")?;
                checkpoints = value.parse().map_err(|e| format!("--checkpoints: {e}"))?;
            }
            "--window-lines" => window_lines = positive("--window-lines", it.next())?,
            "--checkpoint-windows" => checkpoint_windows = positive("--checkpoint-windows", it.next())?,
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Some(Args {
        input: input.ok_or("--input FILE is required (try --help)")?,
        output,
        checkpoints,
        window_lines,
        checkpoint_windows,
    }))
}

/// Lines per `emit_tuples` call: the largest divisor of the window size up
/// to 1,000, so every window (but the last) has exactly `window_lines`
/// lines.
fn lines_per_call(window_lines: u64) -> usize {
    (1..=window_lines.min(1_000))
        .rev()
        .find(|d| window_lines.is_multiple_of(*d))
        .map_or(1, |d| d as usize)
}

fn storage(location: &CheckpointLocation) -> Result<Arc<dyn StorageAgent>, Box<dyn std::error::Error>> {
    let CheckpointLocation::Directory(dir) = location else {
        if let Some(Crash::AfterSave { .. } | Crash::BeforeSave { .. }) = crash_point() {
            return Err(format!(
                "{CRASH_VAR}: the after-save and before-save crash points hook into the filesystem agent's saves; \
                 give --checkpoints a directory to use them"
            )
            .into());
        }
        return Ok(location.open()?);
    };
    let storage = FsStorageAgent::new(dir).map_err(|e| format!("checkpoint directory {}: {e}", dir.display()))?;
    Ok(Arc::new(match crash_point() {
        Some(Crash::AfterSave { window, operator }) => {
            let (window, operator) = (*window, operator.clone());
            storage.on_save_phase(move |name, at, phase| {
                if phase == SavePhase::AfterDirFsync && name == operator && at.sequence() == window {
                    crash_now(format_args!("after-save {window} {operator}"));
                }
            })
        }
        Some(Crash::BeforeSave { window, operator }) => {
            let (window, operator) = (*window, operator.clone());
            storage.on_save_phase(move |name, at, phase| {
                if phase == SavePhase::AfterWrite && name == operator && at.sequence() == window {
                    crash_now(format_args!("before-save {window} {operator}"));
                }
            })
        }
        _ => storage,
    }))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    // The input's own error would come from inside the job; say it plainly.
    if !args.input.is_file() {
        return Err(format!("input file {} does not exist or is not a file", args.input.display()).into());
    }
    let storage = storage(&args.checkpoints)?;
    let resuming = storage
        .load_manifest()
        .map_err(|e| {
            format!(
                "reading the job manifest in {}: {e}{}",
                args.checkpoints,
                args.checkpoints.hint()
            )
        })?
        .is_some();
    progress(format_args!("start {}", if resuming { "resume" } else { "new" }));

    let mut dag = Dag::new();
    let lines = dag.input(
        "lines",
        LineInput::new(&args.input).lines_per_call(lines_per_call(args.window_lines)),
    );
    let count = dag.operator("count", KeyedCount::default());
    let sink = dag.operator(
        "sink",
        Sink {
            inner: ExactlyOnceFileSink::new(&args.output),
            current: None,
        },
    );
    dag.connect(&lines, &count)
        .connect(&count, &sink)
        .default_checkpoint_window_count(args.checkpoint_windows);
    let report = Runtime::new(
        // A file read again exactly (`LineInput`): nothing needs to be kept
        // for replay while the job runs.
        Config::default()
            .shared_storage(storage)
            .window_mode(WindowMode::Tuples(args.window_lines))
            .recovery_scope(RecoveryScope::Global),
    )
    .run(dag)?;

    for (operator, window) in &report.resumed_from {
        progress(format_args!("resumed {operator} {}", window.sequence()));
    }
    for note in &report.notes {
        progress(format_args!("note {note}"));
    }
    match report.committed {
        Some(window) => progress(format_args!("done committed {}", window.sequence())),
        None => progress(format_args!("done committed none")),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Some(args)) => args,
        Err(e) => {
            eprintln!("keyed-count-file: {e}");
            return ExitCode::from(2);
        }
    };
    let crash = match std::env::var(CRASH_VAR) {
        Ok(spec) => match Crash::parse(&spec) {
            Ok(crash) => Some(crash),
            Err(e) => {
                eprintln!("keyed-count-file: {e}");
                return ExitCode::from(2);
            }
        },
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln!("keyed-count-file: {CRASH_VAR} is not UTF-8");
            return ExitCode::from(2);
        }
    };
    // Set once, before any thread reads it.
    let _ = CRASH.set(crash);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyed-count-file: {e}");
            ExitCode::FAILURE
        }
    }
}
