//! Runs the `wordcount` example in the deterministic window mode and checks
//! its output against word totals computed here, independently.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wordcount");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/declaration.txt");

/// Word totals of `text`: runs of alphanumerics, lower-cased.
fn expected_totals(text: &str) -> HashMap<String, u64> {
    let mut totals = HashMap::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() {
            word.push(c);
        } else if !word.is_empty() {
            *totals.entry(word.to_lowercase()).or_default() += 1;
            word.clear();
        }
    }
    totals
}

/// The output's final running totals (the last line of each word), after
/// checking that every window is sorted and that each total is the previous
/// one plus the window's count.
fn output_totals(output: &[u8]) -> HashMap<String, u64> {
    let text = std::str::from_utf8(output).expect("the output is UTF-8");
    let mut totals: HashMap<String, u64> = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [word, count, total] = fields[..] else {
            panic!("bad output line {line:?}");
        };
        let count: u64 = count.parse().expect("a count");
        let total: u64 = total.parse().expect("a total");
        let before = totals.get(word).copied().unwrap_or(0);
        assert_eq!(before + count, total, "running total of {word:?}");
        totals.insert(word.to_owned(), total);
    }
    totals
}

/// Runs the binary; asserts success; returns its stdout.
fn run(args: &[&str], checkpoints: &Path, output: &Path) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args(["--rate", "0", "--checkpoints"])
        .arg(checkpoints)
        .arg("--output")
        .arg(output)
        .output()
        .expect("run wordcount");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wordcount {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn read_output(dir: &Path) -> Vec<u8> {
    checkpoint_runtime::io::read_output(dir).expect("read the output")
}

#[test]
fn shipped_text_totals_match_and_a_rerun_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ck, out) = (tmp.path().join("ck"), tmp.path().join("out"));
    let stdout = run(&["--deterministic", "8"], &ck, &out);
    assert!(stdout.contains("finished"), "{stdout}");
    let text = std::fs::read_to_string(SHIPPED).expect("the shipped text");
    let output = read_output(&out);
    assert_eq!(output_totals(&output), expected_totals(&text));
    // 51 lines, 8 per window: 7 windows.
    let windows = checkpoint_runtime::io::published_windows(&out).expect("windows");
    assert_eq!(windows.len(), 7);

    // Running it again resumes the finished job: the output is unchanged.
    let stdout = run(&["--deterministic", "8"], &ck, &out);
    assert!(stdout.contains("resuming"), "{stdout}");
    let again = read_output(&out);
    assert!(again.starts_with(&output));
    assert_eq!(output_totals(&again), expected_totals(&text));
}

#[test]
fn a_directory_of_generated_files_and_a_failure_give_the_same_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("input");
    std::fs::create_dir(&input).expect("mkdir");
    let vocabulary = [
        "Liberty", "liberty", "LIBERTY!", "naïve", "Éclair", "it's", "x-ray", "42", "tyranny,", "(people)",
    ];
    let mut all = String::new();
    for (f, lines) in [("b.txt", 137u64), ("a.txt", 61), ("c.txt", 5)] {
        let mut text = String::new();
        let mut state = lines * 7919;
        for i in 0..lines {
            for _ in 0..(i % 6) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(vocabulary[(state >> 33) as usize % vocabulary.len()]);
                text.push(' ');
            }
            text.push('\n');
        }
        std::fs::write(input.join(f), &text).expect("write input");
        all.push_str(&text);
    }
    // Hidden files are not inputs.
    std::fs::write(input.join(".hidden"), "ignored words\n").expect("write hidden");

    let args = ["--deterministic", "10", "--checkpoint-every", "3"];
    let input_arg = input.to_str().expect("a UTF-8 path");
    let (ck, out) = (tmp.path().join("ck"), tmp.path().join("out"));
    run(&[&args[..], &[input_arg]].concat(), &ck, &out);
    let clean = read_output(&out);
    assert_eq!(output_totals(&clean), expected_totals(&all));

    let (ck2, out2) = (tmp.path().join("ck2"), tmp.path().join("out2"));
    let stdout = run(
        &[&args[..], &[input_arg, "--fail-at-window", "5"]].concat(),
        &ck2,
        &out2,
    );
    assert!(stdout.contains("recovery:"), "{stdout}");
    assert_eq!(read_output(&out2), clean, "a failure changed the output");

    // Application windows of 3 streaming windows: other windows, same totals.
    let (ck3, out3) = (tmp.path().join("ck3"), tmp.path().join("out3"));
    run(&[&args[..], &[input_arg, "--app-windows", "3"]].concat(), &ck3, &out3);
    assert_eq!(output_totals(&read_output(&out3)), expected_totals(&all));

    // A glob pattern selects files: `[ab].txt` leaves out c.txt.
    std::fs::write(input.join("notes.md"), "not a text input\n").expect("write");
    let pattern = format!("{input_arg}/[ab].txt");
    let (ck4, out4) = (tmp.path().join("ck4"), tmp.path().join("out4"));
    run(&[&args[..], &[pattern.as_str()]].concat(), &ck4, &out4);
    let a_and_b = std::fs::read_to_string(input.join("a.txt")).expect("read")
        + &std::fs::read_to_string(input.join("b.txt")).expect("read");
    assert_eq!(output_totals(&read_output(&out4)), expected_totals(&a_and_b));
}

#[test]
fn bad_input_fails_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg(tmp.path().join("missing.txt"))
        .arg("--checkpoints")
        .arg(tmp.path().join("ck"))
        .output()
        .expect("run wordcount");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let out = Command::new(BIN).arg("--bogus").output().expect("run wordcount");
    assert_eq!(out.status.code(), Some(2));
}
