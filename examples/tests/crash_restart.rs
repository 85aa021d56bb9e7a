//! Real crashes of a real job: the `keyed-count-file` binary (idempotent
//! file input -> keyed count -> exactly-once file sink, checkpointed to a
//! directory) is killed with SIGKILL again and again and restarted against
//! the same checkpoint and output directories; what it finally publishes
//! must equal, byte for byte, a reference the test computes by counting the
//! input file itself.
//!
//! Half the kills happen at crash points the child arms from `CKPT_CRASH`
//! (it kills itself: mid-window in the counter, once a checkpoint is
//! durable, between a checkpoint and its commit, in the middle of
//! publishing a commit), cycling through the points at windows just ahead
//! of the job's progress; the other half come from outside at a random
//! moment after the child printed a random number of progress lines. After
//! every kill the published windows must be a prefix of the reference,
//! window by window, and never fewer than before.
//!
//! A second test flips a byte of an operator's newest checkpoint file after
//! a kill: the restarted job must resume that operator from the older
//! checkpoint retention kept (and every other operator from the recovery
//! point the DESIGN's rule gives) and still publish exactly the reference.
//!
//! A third test, ignored until the runtime is fixed, covers an upstream
//! checkpoint at the job's last window that is unusable (corrupt, or not yet
//! durable when the process died) while the sink's is: the restarted job
//! ends without publishing the sink's pending last window.
//!
//! Every run prints its seed; `CKPT_CRASH_SEED=<seed>` reruns the same
//! input and the same random choices (crash points, line counts, delays;
//! where an outside kill lands still depends on timing). A child that
//! prints nothing for `WATCHDOG` is killed and the test fails. SIGKILL kills
//! the process, not the machine: the page cache survives, so these tests
//! prove the protocols (atomic renames, replay, skipping what was
//! published), not that the fsyncs reach the disk.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::WindowId;
use checkpoint_runtime::io::{published_windows, read_output};

const BIN: &str = env!("CARGO_BIN_EXE_keyed-count-file");
/// A child that prints nothing for this long is hung.
const WATCHDOG: Duration = Duration::from_secs(30);
/// Kills in the main test: half at crash points, half from outside.
const KILLS: usize = 24;
const WINDOW_LINES: usize = 5;
const CHECKPOINT_WINDOWS: u32 = 3;
/// 600 windows, the last one short (3 lines).
const LINES: usize = 600 * WINDOW_LINES - 2;

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic random source.
struct Rng(u64);

impl Rng {
    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 = splitmix64(self.0);
        self.0 % n
    }
}

fn seed() -> u64 {
    std::env::var("CKPT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// `lines` lines of 0 to 4 words drawn (skewed) from 40 keys; an empty line
/// now and then.
fn generate_input(seed: u64, lines: usize) -> String {
    let mut text = String::new();
    for i in 0..lines as u64 {
        let r = splitmix64(seed ^ (i << 8));
        let words = r % 5;
        let line: Vec<String> = (0..words)
            .map(|k| {
                let a = splitmix64(r.wrapping_add(k));
                format!("k{}", (a % 40).min((a >> 20) % 40))
            })
            .collect();
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    text
}

/// The reference, computed from the text alone: per window of
/// `window_lines` lines, one line per key of the window, sorted,
/// `<key> <count in the window> <running total>`.
fn expected_windows(text: &str, window_lines: usize) -> Vec<Vec<u8>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    lines
        .chunks(window_lines)
        .map(|chunk| {
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            for word in chunk.iter().flat_map(|line| line.split_whitespace()) {
                *counts.entry(word).or_default() += 1;
            }
            let mut out = String::new();
            for (key, count) in counts {
                let total = totals.entry(key).or_default();
                *total += count;
                let _ = writeln!(out, "{key} {count} {total}");
            }
            out.into_bytes()
        })
        .collect()
}

/// A progress line of the child.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Start(String),
    Window(u32),
    Committed(u32),
    /// The rest of a `crashing ...` line: `<point> <window> ...`.
    Crashing(String),
    Resumed(String, u32),
    Note(String),
    Done(String),
    Other(String),
}

fn parse_line(line: &str) -> Line {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let number = || rest.parse::<u32>().ok();
    match word {
        "start" => Line::Start(rest.to_owned()),
        "window" => number().map_or_else(|| Line::Other(line.to_owned()), Line::Window),
        "committed" => number().map_or_else(|| Line::Other(line.to_owned()), Line::Committed),
        "crashing" => Line::Crashing(rest.to_owned()),
        "resumed" => match rest.split_once(' ').map(|(op, w)| (op, w.parse::<u32>())) {
            Some((op, Ok(w))) => Line::Resumed(op.to_owned(), w),
            _ => Line::Other(line.to_owned()),
        },
        "note" => Line::Note(rest.to_owned()),
        "done" => Line::Done(rest.to_owned()),
        _ => Line::Other(line.to_owned()),
    }
}

/// One job: its input, directories and reference output.
struct Job {
    _dir: tempfile::TempDir,
    input: PathBuf,
    checkpoints: PathBuf,
    output: PathBuf,
    checkpoint_windows: u32,
    /// The expected content of each window; window sequence 1 first.
    windows: Vec<Vec<u8>>,
}

impl Job {
    fn new(seed: u64, lines: usize, checkpoint_windows: u32) -> Job {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("input.txt");
        let text = generate_input(seed, lines);
        std::fs::write(&input, &text).expect("write input");
        Job {
            input,
            checkpoints: dir.path().join("checkpoints"),
            output: dir.path().join("output"),
            checkpoint_windows,
            windows: expected_windows(&text, WINDOW_LINES),
            _dir: dir,
        }
    }

    fn last_window(&self) -> u32 {
        self.windows.len() as u32
    }

    fn is_checkpoint_window(&self, sequence: u32) -> bool {
        (sequence + 1).is_multiple_of(self.checkpoint_windows)
    }

    /// Starts the binary, with `crash` as `CKPT_CRASH` if given.
    fn spawn(&self, crash: Option<&str>) -> Running {
        let path = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
        let mut cmd = Command::new(BIN);
        cmd.args(["--input", &path(&self.input)])
            .args(["--checkpoints", &path(&self.checkpoints)])
            .args(["--output", &path(&self.output)])
            .args(["--window-lines", &WINDOW_LINES.to_string()])
            .args(["--checkpoint-windows", &self.checkpoint_windows.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match crash {
            Some(spec) => cmd.env("CKPT_CRASH", spec),
            None => cmd.env_remove("CKPT_CRASH"),
        };
        let mut child = cmd.spawn().expect("spawn keyed-count-file");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(parse_line(&line)).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running {
            child,
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// Checks what is published: windows 1..=n with no gap, each exactly
    /// its reference; returns n.
    fn check_published(&self, context: &str) -> usize {
        let windows = published_windows(&self.output).expect("list published windows");
        let sequences: Vec<u32> = windows.iter().map(|w| w.sequence()).collect();
        assert!(
            sequences.iter().copied().eq(1..=sequences.len() as u32),
            "{context}: published windows are not 1..=n: {sequences:?}"
        );
        assert!(
            windows.len() <= self.windows.len(),
            "{context}: {} windows published, the input has {}",
            windows.len(),
            self.windows.len()
        );
        if let Some(first) = windows.first() {
            assert!(
                windows.iter().all(|w| w.base_seconds() == first.base_seconds()),
                "{context}: published windows with different bases: {windows:?}"
            );
        }
        for (i, window) in windows.iter().enumerate() {
            let bytes = std::fs::read(self.output.join(format!("{:016x}", window.as_u64()))).expect("read window");
            assert!(
                bytes == self.windows[i],
                "{context}: published window {} differs from the reference:\n--- published\n{}--- expected\n{}",
                window.sequence(),
                String::from_utf8_lossy(&bytes),
                String::from_utf8_lossy(&self.windows[i])
            );
        }
        windows.len()
    }

    /// The windows of an operator's checkpoint files, ascending.
    fn checkpoint_files(&self, operator: &str) -> Vec<WindowId> {
        let mut windows: Vec<WindowId> = std::fs::read_dir(self.checkpoints.join(operator))
            .expect("operator checkpoint directory")
            .map(|e| e.expect("dir entry").file_name())
            .filter_map(|name| {
                let name = name.to_str()?.to_owned();
                (name.len() == 16).then(|| u64::from_str_radix(&name, 16).ok())?
            })
            .map(WindowId::from_u64)
            .collect();
        windows.sort_unstable();
        windows
    }

    fn checkpoint_path(&self, operator: &str, window: WindowId) -> PathBuf {
        self.checkpoints
            .join(operator)
            .join(format!("{:016x}", window.as_u64()))
    }

    /// Runs the job to its end without a crash: it must succeed and publish
    /// exactly the reference. Returns its progress lines.
    fn finish(&self, context: &str) -> Vec<Line> {
        let run = self.spawn(None);
        let (status, lines, stderr) = run.finish(context);
        assert!(status.success(), "{context}: the job failed ({status}):\n{stderr}");
        let done = format!("committed {}", self.last_window());
        assert!(
            lines.contains(&Line::Done(done)),
            "{context}: no `done committed {}` line: {lines:?}",
            self.last_window()
        );
        let published = self.check_published(context);
        if published != self.windows.len() {
            let pending: Vec<String> = std::fs::read_dir(self.output.join(".pending"))
                .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
                .unwrap_or_default();
            panic!(
                "{context}: the job succeeded but published {published} of {} windows; still pending: {pending:?}; \
                 its lines: {lines:?}",
                self.windows.len()
            );
        }
        let output = read_output(&self.output).expect("read output");
        let reference = self.windows.concat();
        if output != reference {
            let at = output.iter().zip(&reference).take_while(|(a, b)| a == b).count();
            panic!(
                "{context}: the output ({} bytes) differs from the reference ({} bytes) from byte {at}",
                output.len(),
                reference.len()
            );
        }
        let pending = std::fs::read_dir(self.output.join(".pending"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(pending, 0, "{context}: windows left pending after the job ended");
        lines
    }
}

/// A running child and its progress lines.
struct Running {
    child: Child,
    lines: mpsc::Receiver<Line>,
    stderr: Option<JoinHandle<String>>,
    /// Every line received so far.
    seen: Vec<Line>,
}

impl Running {
    /// The next progress line, `None` once the child closed its output (it
    /// exited). Kills the child and fails if it is silent for `WATCHDOG`.
    fn next(&mut self, context: &str) -> Option<Line> {
        match self.lines.recv_timeout(WATCHDOG) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                panic!(
                    "{context}: watchdog: the child printed nothing for {WATCHDOG:?}; it printed {:?}; stderr:\n{}",
                    self.seen.iter().rev().take(10).collect::<Vec<_>>(),
                    stderr.unwrap_or_default()
                );
            }
        }
    }

    /// Reads every remaining line, waits for the child: its exit status,
    /// every line it printed, its stderr.
    fn finish(mut self, context: &str) -> (ExitStatus, Vec<Line>, String) {
        while self.next(context).is_some() {}
        let status = self.child.wait().expect("wait for the child");
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status, self.seen, stderr)
    }
}

fn newest_window(lines: &[Line]) -> Option<u32> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Window(w) => Some(*w),
            _ => None,
        })
        .max()
}

fn crashing_line(lines: &[Line]) -> Option<&str> {
    lines.iter().find_map(|l| match l {
        Line::Crashing(rest) => Some(rest.as_str()),
        _ => None,
    })
}

fn assert_killed(status: ExitStatus, stderr: &str, context: &str) {
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{context}: the child was not killed by SIGKILL but ended with {status}:\n{stderr}"
    );
}

#[test]
fn the_output_survives_sigkill_at_crash_points_and_random_moments() {
    let started = Instant::now();
    let seed = seed();
    println!("crash_restart seed {seed} (rerun with CKPT_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let job = Job::new(seed, LINES, CHECKPOINT_WINDOWS);
    let last = job.last_window();
    // The newest window the sink reported writing, over every run: every
    // operator is restored from a checkpoint at or before it, so windows
    // after it are processed again by every operator.
    let mut newest = 0u32;
    let mut published = 0usize;
    let mut fired: BTreeMap<String, usize> = BTreeMap::new();
    let mut external = 0usize;

    for kill in 0..KILLS {
        let context = format!("kill {kill} (seed {seed})");
        let run_started = Instant::now();
        let (what, lines) = if kill % 2 == 0 {
            // A crash point, cycling through the four, just ahead of the job.
            let j = kill / 2;
            let from = newest + 1 + rng.below(4) as u32;
            let next_checkpoint = (from..).find(|w| job.is_checkpoint_window(*w)).unwrap_or(from);
            let (point, window, spec) = match j % 4 {
                0 => {
                    let tuple = 1 + rng.below(WINDOW_LINES as u64);
                    ("mid-window", from, format!("mid-window:{from}:{tuple}"))
                }
                1 => {
                    let op = ["lines", "count", "sink"][(j / 4) % 3];
                    let w = next_checkpoint;
                    ("after-save", w, format!("after-save:{w}:{op}"))
                }
                2 => {
                    let op = ["count", "sink"][(j / 4) % 2];
                    let w = next_checkpoint;
                    ("checkpointed", w, format!("checkpointed:{w}:{op}"))
                }
                _ => {
                    // Not a checkpoint window: the next window is pending
                    // in the same commit, so the kill lands mid-publish.
                    let w = if job.is_checkpoint_window(from) { from + 1 } else { from };
                    ("publish", w, format!("publish:{w}"))
                }
            };
            assert!(
                window + 2 < last,
                "{context}: the input is too small for this schedule (crash at window {window} of {last})"
            );
            let (status, lines, stderr) = job.spawn(Some(&spec)).finish(&context);
            assert_killed(status, &stderr, &context);
            let crashed = crashing_line(&lines)
                .unwrap_or_else(|| panic!("{context}: killed without reaching crash point {spec}: {lines:?}"));
            let expected = format!("{point} {window} ");
            assert!(
                crashed.starts_with(&expected),
                "{context}: armed {spec}, crashed at {crashed:?}"
            );
            if point == "publish" {
                let left: usize = crashed
                    .split_whitespace()
                    .nth(2)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{context}: unreadable crash line {crashed:?}"));
                assert!(
                    left >= 1,
                    "{context}: no window left to publish after the crash: {crashed:?}"
                );
            }
            *fired.entry(point.to_owned()).or_default() += 1;
            (format!("crash point {spec}"), lines)
        } else {
            // From outside, at a random moment after a random number of
            // progress lines.
            let wanted = 1 + rng.below(12);
            let delay = Duration::from_micros(rng.below(3_000));
            let mut run = job.spawn(None);
            let mut got = 0;
            while got < wanted {
                match run.next(&context) {
                    Some(Line::Window(_) | Line::Committed(_)) => got += 1,
                    Some(_) => {}
                    None => panic!("{context}: the job ended before it was killed: {:?}", run.seen),
                }
            }
            let spin = Instant::now();
            while spin.elapsed() < delay {
                std::hint::spin_loop();
            }
            run.child.kill().expect("kill the child");
            let (status, lines, stderr) = run.finish(&context);
            assert_killed(status, &stderr, &context);
            external += 1;
            (format!("kill after {wanted} lines + {delay:?}"), lines)
        };
        let resumed = lines.contains(&Line::Start("resume".to_owned()));
        assert_eq!(resumed, kill > 0, "{context}: start line: {lines:?}");
        let was = newest;
        newest = newest.max(newest_window(&lines).unwrap_or(0));
        let now = job.check_published(&context);
        assert!(
            now >= published,
            "{context}: published windows went from {published} down to {now}"
        );
        published = now;
        println!(
            "{context}: {what}; windows {was} -> {newest}, {now} published, {:?}",
            run_started.elapsed()
        );
    }
    assert_eq!(external, KILLS / 2);
    assert_eq!(fired.len(), 4, "every crash point fired: {fired:?}");
    assert!(
        published < job.windows.len(),
        "the job finished during the kills; nothing is left to recover"
    );

    let final_run = Instant::now();
    let lines = job.finish(&format!("final run (seed {seed})"));
    assert!(lines.contains(&Line::Start("resume".to_owned())), "{lines:?}");
    println!(
        "{KILLS} kills ({fired:?} at crash points, {external} from outside), then the final run ({:?}): output \
         identical to the reference ({last} windows); total {:?}",
        final_run.elapsed(),
        started.elapsed()
    );
}

/// Flips one byte (chosen by `pick`) of the newest checkpoint file of
/// `operator`, restarts the job and runs it to its end: it must resume every
/// operator from the recovery point the DESIGN's rule gives without the
/// corrupt file (`operator` from an older checkpoint), report the corrupt
/// one, and publish exactly the reference.
fn restart_with_corrupt_newest(job: &Job, operator: &str, pick: u64, context: &str) {
    let files = job.checkpoint_files(operator);
    let (&corrupt, older) = files
        .split_last()
        .unwrap_or_else(|| panic!("{context}: no checkpoint of {operator}"));
    assert!(
        !older.is_empty(),
        "{context}: retention kept no checkpoint of {operator} older than {corrupt}: {files:?}"
    );
    let path = job.checkpoint_path(operator, corrupt);
    let mut bytes = std::fs::read(&path).expect("read checkpoint");
    let at = (pick % bytes.len() as u64) as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, &bytes).expect("write corrupt checkpoint");
    println!(
        "{context}: flipped byte {at} of {}'s checkpoint at window {}",
        operator,
        corrupt.sequence()
    );

    let expected = expected_recovery(job, Some((operator, corrupt)), context);
    assert!(expected[operator] < corrupt.sequence(), "{context}");
    let out = job.finish(context);
    assert_eq!(
        resumed_from(&out),
        expected,
        "{context}: {operator}'s checkpoint at {} was corrupt; resumed from the wrong checkpoints",
        corrupt.sequence()
    );
    let noted = out.iter().any(|l| match l {
        Line::Note(note) => note.contains("corrupt") && note.contains(operator),
        _ => false,
    });
    assert!(noted, "{context}: the corrupt checkpoint was not reported: {out:?}");
}

/// The recovery point of every operator from the checkpoint files on disk,
/// leaving out `corrupt` (DESIGN, "Checkpoints, committed windows"): the
/// sink's newest checkpoint; upstream, the newest one at or before its
/// downstream's.
fn expected_recovery(job: &Job, corrupt: Option<(&str, WindowId)>, context: &str) -> BTreeMap<String, u32> {
    let good = |op: &str| -> Vec<WindowId> {
        job.checkpoint_files(op)
            .into_iter()
            .filter(|w| corrupt != Some((op, *w)))
            .collect()
    };
    let newest_at_most = |op: &str, bound: WindowId| -> WindowId {
        good(op)
            .into_iter()
            .rfind(|w| *w <= bound)
            .unwrap_or_else(|| panic!("{context}: no good checkpoint of {op} at or before {bound}"))
    };
    let sink = *good("sink").last().expect("a good sink checkpoint");
    let count = newest_at_most("count", sink);
    let lines = newest_at_most("lines", count);
    [("lines", lines), ("count", count), ("sink", sink)]
        .into_iter()
        .map(|(op, w)| (op.to_owned(), w.sequence()))
        .collect()
}

fn resumed_from(lines: &[Line]) -> BTreeMap<String, u32> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Resumed(op, w) => Some((op.clone(), *w)),
            _ => None,
        })
        .collect()
}

/// Windows in the corrupt-checkpoint jobs, with checkpoints every 3: the
/// last regular checkpoint is window 38, so the final commit (window 40)
/// publishes 39 and 40.
const SMALL_JOB_WINDOWS: usize = 40;

/// A small job killed in its final commit, right after publishing window
/// 39: every operator's newest checkpoint is then the last window.
fn killed_in_the_final_commit(seed: u64, context: &str) -> Job {
    let job = Job::new(seed, SMALL_JOB_WINDOWS * WINDOW_LINES, 3);
    let (status, out, stderr) = job.spawn(Some("publish:39")).finish(context);
    assert_killed(status, &stderr, context);
    assert_eq!(crashing_line(&out), Some("publish 39 1 more pending"), "{context}");
    for op in ["lines", "count", "sink"] {
        assert_eq!(
            job.checkpoint_files(op).last().map(|w| w.sequence()),
            Some(job.last_window()),
            "{context}: newest checkpoint of {op}"
        );
    }
    assert_eq!(job.check_published(context), 39, "{context}");
    job
}

/// A small job killed once the sink's checkpoint at window 17 is durable,
/// such that `operator`'s newest checkpoint is its recovery point. The sink's
/// always is; an upstream's is when it is not ahead of the sink's, which
/// asynchronous saves make likely but not certain: a kill that leaves it
/// ahead is retried with a new job (up to 20 times).
fn killed_mid_job(seed: u64, operator: &str, context: &str) -> Job {
    for attempt in 0..20 {
        let job = Job::new(seed.wrapping_add(attempt), SMALL_JOB_WINDOWS * WINDOW_LINES, 3);
        let (status, out, stderr) = job.spawn(Some("after-save:17:sink")).finish(context);
        assert_killed(status, &stderr, context);
        assert_eq!(crashing_line(&out), Some("after-save 17 sink"), "{context}");
        job.check_published(context);
        let recovery = expected_recovery(&job, None, context);
        let newest = job.checkpoint_files(operator).last().map(|w| w.sequence());
        if newest == Some(recovery[operator]) {
            return job;
        }
        println!("{context}: {operator}'s newest checkpoint {newest:?} is past its recovery point; again");
    }
    panic!("{context}: 20 kills left {operator}'s newest checkpoint past its recovery point");
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_older_one() {
    let seed = seed();
    println!("corrupt-checkpoint seed {seed} (rerun with CKPT_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    // Mid-job, killed once the sink's checkpoint at window 17 is durable,
    // with the operator's newest checkpoint the one the job would resume it
    // from (see `killed_mid_job`), so its corruption forces the fallback.
    for (i, operator) in ["sink", "count", "lines"].into_iter().enumerate() {
        let context = format!("corrupt {operator} after a kill mid-job (seed {seed})");
        let job = killed_mid_job(seed.wrapping_add(10 * i as u64), operator, &context);
        restart_with_corrupt_newest(&job, operator, rng.below(u64::MAX), &context);
    }

    // Killed in the final commit: the sink's checkpoint at the last window
    // is corrupt, so the job resumes everything from window 38 and must not
    // publish windows 39 (published before the kill) and 40 twice.
    let context = format!("corrupt sink after a kill in the final commit (seed {seed})");
    let job = killed_in_the_final_commit(seed.wrapping_add(3), &context);
    restart_with_corrupt_newest(&job, "sink", rng.below(u64::MAX), &context);
}

/// The same with an upstream operator's checkpoint at the last window
/// unusable (corrupt, or its save not yet durable when the process died:
/// with asynchronous saves the sink's checkpoint at a window can be durable
/// before its upstream's). The upstream resumes from window 38, the sink
/// from 40 with window 40 pending; the job ends at 40.
#[test]
fn an_upstream_checkpoint_lost_at_the_final_window_still_publishes_everything() {
    let seed = seed();
    println!("final-window seed {seed} (rerun with CKPT_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    for (i, operator) in ["lines", "count"].into_iter().enumerate() {
        let context = format!("corrupt {operator} after a kill in the final commit (seed {seed})");
        let job = killed_in_the_final_commit(seed.wrapping_add(i as u64), &context);
        restart_with_corrupt_newest(&job, operator, rng.below(u64::MAX), &context);
    }

    // No corruption: the saves of `count` and `lines` at the last window
    // were not durable yet when the process died (their files never got
    // their final names), the sink's was.
    let context = format!("upstream saves lost at the final window (seed {seed})");
    let job = killed_in_the_final_commit(seed.wrapping_add(2), &context);
    for op in ["count", "lines"] {
        let newest = *job.checkpoint_files(op).last().expect("a checkpoint");
        std::fs::remove_file(job.checkpoint_path(op, newest)).expect("remove checkpoint");
    }
    let expected = expected_recovery(&job, None, &context);
    let out = job.finish(&context);
    assert_eq!(resumed_from(&out), expected, "{context}");
}

/// Kills at chosen points of start-up (around every initial checkpoint,
/// after the manifest exists) and shut-down (around every final checkpoint,
/// in the final commit), then a restart to the end, then one more run: the
/// output is the reference and the last run publishes nothing.
#[test]
fn kills_at_every_step_of_start_up_and_shut_down_lose_and_repeat_nothing() {
    let seed = seed();
    println!("start-up/shut-down seed {seed} (rerun with CKPT_CRASH_SEED={seed})");
    let lines = 12 * WINDOW_LINES;
    let last = Job::new(seed, lines, 3).last_window();
    let mut points = Vec::new();
    for op in ["lines", "count", "sink"] {
        for window in [0, last] {
            points.push(format!("before-save:{window}:{op}"));
            points.push(format!("after-save:{window}:{op}"));
        }
    }
    points.push(format!("checkpointed:{last}:sink"));
    points.push(format!("publish:{}", last - 1));
    for point in &points {
        let context = format!("killed at {point} (seed {seed})");
        let job = Job::new(seed, lines, 3);
        let (status, out, stderr) = job.spawn(Some(point)).finish(&context);
        assert_killed(status, &stderr, &context);
        assert!(crashing_line(&out).is_some(), "{context}: {out:?}");
        job.check_published(&context);
        job.finish(&context);
        let published = published_windows(&job.output).expect("published");
        let (status, _, stderr) = job.spawn(None).finish(&context);
        assert!(status.success(), "{context}: the run after completion failed: {stderr}");
        assert_eq!(
            published_windows(&job.output).expect("published"),
            published,
            "{context}: a completed job published more"
        );
    }
}

/// Kills from outside in the first milliseconds of a job (gated on its
/// `start` line), again and again, then a run to the end.
#[test]
fn kills_in_the_first_milliseconds_leave_a_resumable_job() {
    let seed = seed();
    println!("early-kill seed {seed} (rerun with CKPT_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let job = Job::new(seed, 12 * WINDOW_LINES, 3);
    for kill in 0..12 {
        let context = format!("early kill {kill} (seed {seed})");
        let mut run = job.spawn(None);
        while !matches!(run.next(&context), Some(Line::Start(_)) | None) {}
        std::thread::sleep(Duration::from_micros(rng.below(8_000)));
        let _ = run.child.kill();
        let _ = run.finish(&context);
        job.check_published(&context);
    }
    job.finish(&format!("after the early kills (seed {seed})"));
}

#[test]
fn a_failure_free_run_publishes_the_reference() {
    let job = Job::new(7, 60 * WINDOW_LINES + 1, 4);
    let lines = job.finish("failure-free run");
    assert_eq!(lines.first(), Some(&Line::Start("new".to_owned())));

    // Run again: the job is done; it publishes nothing, not even an empty
    // window.
    let published = published_windows(&job.output).expect("published");
    let (status, again, stderr) = job.spawn(None).finish("second run");
    assert!(status.success(), "second run of a finished job failed: {stderr}");
    assert!(again.contains(&Line::Start("resume".to_owned())), "{again:?}");
    assert_eq!(published_windows(&job.output).expect("published"), published);
    assert_eq!(read_output(&job.output).expect("read output"), job.windows.concat());
}

#[test]
fn help_bad_arguments_and_a_missing_input() {
    let help = Command::new(BIN).arg("--help").output().expect("run");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("USAGE"));

    let bad = Command::new(BIN)
        .args(["--input", "x", "--window-lines", "0"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a positive number"));

    let crash = Command::new(BIN)
        .args(["--input", "x"])
        .env("CKPT_CRASH", "publish:x")
        .output()
        .expect("run");
    assert_eq!(crash.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&crash.stderr).contains("CKPT_CRASH"));

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.txt");
    let run = Command::new(BIN)
        .args(["--input", missing.to_str().expect("utf-8")])
        .args(["--checkpoints", dir.path().join("ck").to_str().expect("utf-8")])
        .args(["--output", dir.path().join("out").to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("missing.txt"));
}
