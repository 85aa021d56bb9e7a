//! Runs the `dimensions` binary in the deterministic window mode: its output
//! against an independent computation from the pure event function, the
//! same output with other partition counts, and a finished job's re-run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use checkpoint_examples::ads::{ADVERTISERS, EVENTS_PER_CALL, LOCATIONS, PUBLISHERS, event};
use checkpoint_runtime::io::published_windows;

/// The window base the binary fixes in the deterministic mode.
const BASE: u64 = 1_700_000_000;

const SEED: u64 = 11;
const EVENTS: u64 = 5_000;
const WINDOW: u64 = 300;
const APP_WINDOWS: u32 = 3;
const BUCKET: u32 = 2;

struct Job {
    _dir: tempfile::TempDir,
    checkpoints: PathBuf,
    output: PathBuf,
}

impl Job {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Job {
            checkpoints: dir.path().join("checkpoints"),
            output: dir.path().join("out"),
            _dir: dir,
        }
    }

    /// Runs the small deterministic job with `partitions`; panics unless it
    /// succeeds. Returns stdout.
    fn run(&self, partitions: u32) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_dimensions"))
            .arg("--checkpoints")
            .arg(&self.checkpoints)
            .arg("--output")
            .arg(&self.output)
            .args(["--events", &EVENTS.to_string()])
            .args(["--seed", &SEED.to_string()])
            .args(["--deterministic", &WINDOW.to_string()])
            .args(["--app-windows", &APP_WINDOWS.to_string()])
            .args(["--bucket", &BUCKET.to_string()])
            .args(["--partitions", &partitions.to_string()])
            .args(["--rate", "0"])
            .output()
            .expect("run dimensions");
        assert!(output.status.success(), "dimensions failed:\n{}", describe(&output));
        String::from_utf8(output.stdout).expect("utf-8 stdout")
    }

    fn files(&self) -> BTreeMap<String, String> {
        output_files(&self.output)
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The published window files, by name, with their contents.
fn output_files(dir: &Path) -> BTreeMap<String, String> {
    published_windows(dir)
        .expect("list the output")
        .into_iter()
        .map(|w| {
            let name = format!("{:016x}", w.as_u64());
            let text = std::fs::read_to_string(dir.join(&name)).expect("read a window file");
            (name, text)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The independent computation: plain loops over `event(seed, i)`, keyed by
// names, with the window, application window and bucket boundaries worked out
// from the settings.

/// (publisher, advertiser, location) names, `*` for aggregated over.
type Key = (&'static str, &'static str, &'static str);

/// events, impressions, clicks, cost in cents.
type Sums = [u64; 4];

fn keys_of(i: u64) -> ([Key; 3], Sums) {
    let e = event(SEED, i);
    let p = PUBLISHERS[e.publisher as usize].0;
    let a = ADVERTISERS[e.advertiser as usize].name;
    let l = LOCATIONS[e.location as usize].0;
    let sums = [
        1,
        u64::from(e.impressions),
        u64::from(e.clicks),
        u64::from(e.cost_cents),
    ];
    ([(p, "*", "*"), ("*", a, "*"), (p, "*", l)], sums)
}

fn sum_into(map: &mut HashMap<Key, Sums>, from: u64, to: u64) {
    for i in from..to {
        let (keys, sums) = keys_of(i);
        for key in keys {
            let entry = map.entry(key).or_default();
            for (total, x) in entry.iter_mut().zip(sums) {
                *total += x;
            }
        }
    }
}

fn text(window: u32, bucket: &str, key: &Key, s: &Sums) -> String {
    format!(
        "window={window} bucket={bucket} publisher={} advertiser={} location={} events={} impressions={} clicks={} \
         cost={}.{:02}\n",
        key.0,
        key.1,
        key.2,
        s[0],
        s[1],
        s[2],
        s[3] / 100,
        s[3] % 100
    )
}

/// Every window file the job should publish, by name.
fn expected_files() -> BTreeMap<String, String> {
    let per_window = WINDOW.div_ceil(EVENTS_PER_CALL) * EVENTS_PER_CALL;
    let windows = EVENTS.div_ceil(per_window) as u32;
    let span = APP_WINDOWS * BUCKET;
    let first_event = |s: u32| (u64::from(s - 1) * per_window).min(EVENTS);
    let mut files: BTreeMap<String, String> = (1..=windows)
        .map(|s| (format!("{:016x}", BASE << 32 | u64::from(s)), String::new()))
        .collect();
    // Application windows end at sequences s with (s + 1) % count == 0, and
    // at the last window.
    let mut start = 1;
    for s in 1..=windows {
        if (s + 1) % APP_WINDOWS != 0 && s != windows {
            continue;
        }
        let (from, to) = (first_event(start), first_event(s + 1));
        let mut app = HashMap::new();
        sum_into(&mut app, from, to);
        let bucket_first = (start / span * span).max(1);
        let mut bucket = HashMap::new();
        sum_into(&mut bucket, first_event(bucket_first), to);
        let label = format!("{}-{}", bucket_first, start / span * span + span - 1);
        let mut lines: Vec<String> = Vec::new();
        for (key, sums) in &app {
            lines.push(text(start, "app", key, sums));
            lines.push(text(start, &label, key, &bucket[key]));
        }
        lines.sort();
        let name = format!("{:016x}", BASE << 32 | u64::from(s));
        files.insert(name, lines.concat());
        start = s + 1;
    }
    files
}

#[test]
fn output_matches_an_independent_computation_for_any_partition_count() {
    let expected = expected_files();
    assert!(expected.values().any(|t| t.contains(" bucket=6-11 ")), "{expected:?}");

    let job = Job::new();
    let stdout = job.run(4);
    assert!(stdout.contains("dimensions: finished: 5,000 events"), "{stdout}");
    let files = job.files();
    assert_eq!(files.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (name, text) in &expected {
        assert_eq!(&files[name], text, "window file {name}");
    }

    for partitions in [1, 3] {
        let other = Job::new();
        other.run(partitions);
        assert_eq!(other.files(), files, "{partitions} partitions");
    }

    // Running a finished job again resumes it, finds nothing left, and
    // leaves the output alone.
    let stdout = job.run(4);
    assert!(stdout.contains("already finished"), "{stdout}");
    assert_eq!(job.files(), files);
}

#[test]
fn help_and_bad_arguments() {
    let help = Command::new(env!("CARGO_BIN_EXE_dimensions"))
        .arg("--help")
        .output()
        .expect("run dimensions --help");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--partitions") && text.contains("--deterministic"),
        "{text}"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_dimensions"))
        .args(["--partitions", "0"])
        .output()
        .expect("run dimensions");
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
}
