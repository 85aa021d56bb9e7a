//! Runs the `resume-demo` binary as a newcomer would: twice against one
//! directory, then again after corrupting its newest checkpoint.

use std::path::Path;
use std::process::Command;

fn run(dir: &Path, windows: u32) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_resume-demo"))
        .args([
            "--dir",
            dir.to_str().expect("utf-8 path"),
            "--windows",
            &windows.to_string(),
        ])
        .output()
        .expect("run resume-demo");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    let stderr = String::from_utf8(output.stderr).expect("utf-8 output");
    assert!(output.status.success(), "resume-demo failed: {stdout}\n{stderr}");
    stdout + &stderr
}

/// The window ids printed as `window 0x... (#seq)`.
fn windows(out: &str) -> Vec<(u32, u32)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("window 0x"))
        .map(|l| {
            let hex = &l[..16];
            let raw = u64::from_str_radix(hex, 16).expect("hex window id");
            ((raw >> 32) as u32, raw as u32)
        })
        .collect()
}

fn rides(out: &str) -> u64 {
    let last = out.lines().rfind(|l| l.starts_with("window ")).expect("a window line");
    let (_, rest) = last.split_once("): ").expect("rides");
    rest.split_whitespace().next().expect("count").parse().expect("number")
}

#[test]
fn second_run_resumes_the_window_sequence_and_the_totals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = run(dir.path(), 3);
    assert!(first.contains("no checkpoint"), "{first}");
    let first_windows = windows(&first);
    assert_eq!(first_windows.iter().map(|w| w.1).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(rides(&first), 3_000);

    let second = run(dir.path(), 2);
    assert!(second.contains("restored ride-totals from checkpoint"), "{second}");
    let second_windows = windows(&second);
    assert_eq!(second_windows.iter().map(|w| w.1).collect::<Vec<_>>(), [3, 4]);
    // The job keeps its window base across restarts.
    assert!(second_windows.iter().all(|w| w.0 == first_windows[0].0));
    assert_eq!(rides(&second), 5_000);

    // Retention keeps two checkpoints.
    let kept = std::fs::read_dir(dir.path().join("ride-totals"))
        .expect("operator dir")
        .count();
    assert_eq!(kept, 2);
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), 3);
    let op_dir = dir.path().join("ride-totals");
    let mut files: Vec<_> = std::fs::read_dir(&op_dir)
        .expect("operator dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let newest = files.last().expect("a checkpoint");
    let mut bytes = std::fs::read(newest).expect("read");
    // A bit in the operator name (bytes 44..) and one in the payload.
    bytes[45] ^= 0x40;
    let in_payload = bytes.len() - 6;
    bytes[in_payload] ^= 0x01;
    std::fs::write(newest, bytes).expect("write");

    let out = run(dir.path(), 1);
    assert!(
        out.contains("skipping checkpoint") && out.contains("checksum mismatch"),
        "{out}"
    );
    // Restored from window #1 (2,000 rides), so it redoes window #2.
    assert_eq!(windows(&out).iter().map(|w| w.1).collect::<Vec<_>>(), [2]);
    assert_eq!(rides(&out), 3_000);
}

#[test]
fn help_and_bad_arguments() {
    let help = Command::new(env!("CARGO_BIN_EXE_resume-demo"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("USAGE"));
    let bad = Command::new(env!("CARGO_BIN_EXE_resume-demo"))
        .args(["--windows", "many"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a number"));
}
