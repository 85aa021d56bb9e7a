//! The examples with `--checkpoints s3://...`, against an S3 endpoint on
//! loopback (`CHECKPOINT_S3_ENDPOINT`, or a moto server this test process
//! starts): `ride-stats` checkpoints there, is stopped and resumes from it,
//! and publishes what a run with a checkpoint directory publishes. The
//! binaries get the endpoint the way a user gives it, through the `AWS_*`
//! environment variables. (The `checkpoint` tool's S3 tests are in
//! `checkpoint-cli/tests/s3.rs`.)

#[path = "../../checkpoint-object-store/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use checkpoint_core::{StorageAgent, WindowId};
use checkpoint_runtime::io::read_output;

/// How long a run may go without printing a line.
const WATCHDOG: Duration = Duration::from_secs(60);

/// A small deterministic job: 30 windows of 300 rides, a checkpoint every 4.
const SMALL: [&str; 12] = [
    "--rides",
    "9000",
    "--deterministic",
    "300",
    "--app-windows",
    "2",
    "--checkpoint-every",
    "4",
    "--rate",
    "0",
    "--seed",
    "11",
];

/// Every operator's windows.
fn listing(storage: &dyn StorageAgent) -> BTreeMap<String, Vec<WindowId>> {
    storage
        .operators()
        .expect("operators")
        .into_iter()
        .map(|op| {
            let windows = storage.windows(&op).expect("windows");
            (op, windows)
        })
        .collect()
}

fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ride_stats(checkpoints: &str, output: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ride-stats"));
    if checkpoints.starts_with("s3://") {
        common::s3_env(&mut command);
    }
    command
        .arg("--checkpoints")
        .arg(checkpoints)
        .arg("--output")
        .arg(output)
        .args(args);
    command
}

/// Runs `ride-stats` to completion; panics unless it succeeds. Returns stdout.
fn run_ride_stats(checkpoints: &str, output: &Path, args: &[&str]) -> String {
    let result = ride_stats(checkpoints, output, args).output().expect("run ride-stats");
    assert!(result.status.success(), "ride-stats failed:\n{}", describe(&result));
    String::from_utf8(result.stdout).expect("utf-8 stdout")
}

/// The committed sequence of a progress line `window <seq> committed <seq|-> ...`.
fn committed(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    (words.next()? == "window").then_some(())?;
    words.next()?;
    (words.next()? == "committed").then_some(())?;
    words.next()?.parse().ok()
}

#[test]
fn ride_stats_stopped_and_resumed_on_s3_publishes_what_a_run_with_a_directory_does() {
    // Paced so the run lasts about two seconds: time to be stopped mid-way.
    let args = [
        "--rides",
        "30000",
        "--deterministic",
        "500",
        "--app-windows",
        "2",
        "--checkpoint-every",
        "2",
        "--rate",
        "15000",
    ];
    let url = common::location("jobs/rides");
    let work = tempfile::tempdir().expect("tempdir");
    let output = work.path().join("out-s3");

    // Ctrl-C once a window is committed: the job stops with a final
    // checkpoint in S3.
    let mut child: Child = ride_stats(&url, &output, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ride-stats");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut transcript = Vec::new();
    let mut interrupted = false;
    loop {
        match lines.recv_timeout(WATCHDOG) {
            Ok(line) => {
                if !interrupted && committed(&line).is_some_and(|c| c >= 2) {
                    let pid = i32::try_from(child.id()).expect("a pid");
                    // SAFETY: sends a signal to our own child process.
                    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
                    assert_eq!(sent, 0, "kill -INT {pid}");
                    interrupted = true;
                }
                transcript.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no output for {WATCHDOG:?}:\n{}", transcript.join("\n"));
            }
        }
    }
    let stopped = child.wait_with_output().expect("wait");
    let text = transcript.join("\n");
    assert!(
        stopped.status.success(),
        "{}\n{text}\nstderr:\n{}",
        stopped.status,
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(text.contains(&format!("checkpoints: {url}")), "{text}");
    assert!(text.contains("ride-stats: stopped at ride"), "{text}");

    // The checkpoints are in the bucket, under the prefix.
    let stored = listing(&common::agent_at(&url));
    assert_eq!(
        stored.keys().map(String::as_str).collect::<Vec<_>>(),
        ["output", "rides", "stats"],
        "{stored:?}"
    );
    assert!(stored.values().all(|w| !w.is_empty()), "{stored:?}");
    assert!(common::agent_at(&url).load_manifest().expect("manifest").is_some());

    let resumed = run_ride_stats(&url, &output, &args);
    assert!(
        resumed.contains(&format!("resuming the job in {url} at ride")),
        "{resumed}"
    );
    assert!(resumed.contains("finished"), "{resumed}");

    let directory = work.path().join("checkpoints");
    let reference = work.path().join("out-dir");
    let mut unpaced = args;
    unpaced[9] = "0";
    run_ride_stats(directory.to_str().expect("utf-8 path"), &reference, &unpaced);
    let expected = read_output(&reference).expect("the directory run's output");
    assert!(expected.len() > 1000, "a report worth comparing");
    assert!(
        read_output(&output).expect("the S3 run's output") == expected,
        "the output of the job stopped and resumed on S3 differs from the directory run's"
    );
}

#[test]
fn malformed_urls_are_usage_errors_and_save_phase_crash_points_need_a_directory() {
    // No endpoint needed: these fail before any request.
    for bad in ["s3://", "s3:///prefix", "S3://bucket/x", "gs://bucket/x"] {
        let work = tempfile::tempdir().expect("tempdir");
        let output = Command::new(env!("CARGO_BIN_EXE_ride-stats"))
            .args(["--checkpoints", bad, "--output"])
            .arg(work.path().join("out"))
            .output()
            .expect("run ride-stats");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--checkpoints"), "{bad}: {err}");
        assert!(!work.path().join("out").exists(), "nothing ran");
    }

    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("words.txt");
    std::fs::write(&input, "a b c\n").expect("write input");
    let output = Command::new(env!("CARGO_BIN_EXE_keyed-count-file"))
        .env("CKPT_CRASH", "after-save:2:count")
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(work.path().join("out"))
        .args(["--checkpoints", "s3://bucket/counts"])
        .output()
        .expect("run keyed-count-file");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("give --checkpoints a directory"), "{err}");
}

/// A directory whose name merely contains `s3:` is still a directory.
#[test]
fn a_path_is_a_directory_even_with_a_colon() {
    let work = tempfile::tempdir().expect("tempdir");
    let odd: PathBuf = work.path().join("s3:").join("rides");
    let odd_str = odd.to_str().expect("utf-8 path");
    let stdout = run_ride_stats(odd_str, &work.path().join("out"), &SMALL);
    assert!(stdout.contains("finished"), "{stdout}");
    assert!(
        odd.join(".manifest").is_file(),
        "checkpointed to the directory {odd_str}"
    );
}
