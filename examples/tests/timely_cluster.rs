//! The `timely-keyed-count` job as three processes on loopback: the same
//! published files, byte for byte, as the threaded runtime's, with a
//! process killed, with a restart on another process count, and on an S3
//! prefix (`CHECKPOINT_S3_ENDPOINT`, or a moto server this test process
//! starts). Ports are chosen free by the test; a watchdog kills every child
//! that outlives it.

#[path = "../../checkpoint-object-store/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use checkpoint_core::{FsStorageAgent, StorageAgent};

const WATCHDOG: Duration = Duration::from_secs(120);

/// Windows of the job: 20,000 tuples in windows of 500.
const JOB_WINDOWS: usize = 40;

fn job(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_timely-keyed-count"));
    command
        .args(args)
        .args(["--tuples", "20000", "--window", "500", "--keys", "61"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Free ports on loopback: all bound at once (so they differ), then let go.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("address").port())
        .collect()
}

/// Waits for every child, killing all of them at the watchdog; returns
/// each one's exit status and output.
fn wait_all(mut children: Vec<Child>) -> Vec<(Option<i32>, String)> {
    let deadline = Instant::now() + WATCHDOG;
    let mut done: Vec<Option<Option<i32>>> = vec![None; children.len()];
    while done.iter().any(Option::is_none) {
        for (child, status) in children.iter_mut().zip(done.iter_mut()) {
            if status.is_none()
                && let Some(exit) = child.try_wait().expect("try_wait")
            {
                *status = Some(exit.code());
            }
        }
        if Instant::now() > deadline {
            for child in &mut children {
                let _ = child.kill();
            }
            panic!("watchdog: the processes did not finish in {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children
        .into_iter()
        .zip(done)
        .map(|(child, status)| {
            let output = child.wait_with_output().expect("output");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            (status.flatten(), text)
        })
        .collect()
}

fn published(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("output directory")
        .map(|entry| entry.expect("entry"))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).expect("read"))
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    files.sort();
    files
}

/// The threaded runtime's published files for the job.
fn threaded_output() -> Vec<(String, Vec<u8>)> {
    let threaded = tempfile::tempdir().expect("tempdir");
    let (out, ck) = (threaded.path().join("out"), threaded.path().join("ck"));
    let child = job(&[
        "--engine",
        "threaded",
        "--output",
        out.to_str().expect("utf-8"),
        "--checkpoints",
        ck.to_str().expect("utf-8"),
    ])
    .spawn()
    .expect("spawn");
    let results = wait_all(vec![child]);
    assert_eq!(results[0].0, Some(0), "{}", results[0].1);
    let expected = published(&out);
    assert!(expected.len() >= 40, "{} windows published", expected.len());
    expected
}

/// Starts the job as `processes` processes of one worker on fresh loopback
/// ports, checkpointing to `ck` (a directory or an `s3://` URL).
fn start_cluster(processes: usize, out: &Path, ck: &str, extra: &[&str]) -> Vec<Child> {
    let addresses = free_ports(processes)
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    (0..processes)
        .map(|process| {
            let process = process.to_string();
            let mut args = vec![
                "--engine",
                "timely",
                "--process",
                &process,
                "--addresses",
                &addresses,
                "--output",
                out.to_str().expect("utf-8"),
                "--checkpoints",
                ck,
            ];
            args.extend_from_slice(extra);
            let mut command = job(&args);
            if ck.starts_with("s3://") {
                common::s3_env(&mut command);
            }
            command.spawn().expect("spawn")
        })
        .collect()
}

#[test]
fn three_processes_publish_what_the_threaded_runtime_does() {
    let expected = threaded_output();
    let cluster = tempfile::tempdir().expect("tempdir");
    let (out, ck) = (cluster.path().join("out"), cluster.path().join("ck"));
    let ck = ck.to_str().expect("utf-8");
    for (process, (status, text)) in wait_all(start_cluster(3, &out, ck, &[])).into_iter().enumerate() {
        assert_eq!(status, Some(0), "process {process}:\n{text}");
    }
    assert_eq!(published(&out), expected);
}

/// Runs the cluster of `processes` (before, after) paced, kills process
/// `victim` with SIGKILL once `after` windows are published (progress the
/// job reports through its output), lets the others stop, then starts the
/// cluster again on the same storage (`s3`: an `s3://` URL; else a
/// directory), with as many processes as before or another count (a
/// rescale): the published files are the failure-free ones.
fn kill_and_restart(
    expected: &[(String, Vec<u8>)],
    processes: (usize, usize),
    (victim, after): (usize, usize),
    s3: Option<String>,
    context: &str,
) {
    let cluster = tempfile::tempdir().expect("tempdir");
    let out = cluster.path().join("out");
    let ck = s3.unwrap_or_else(|| cluster.path().join("ck").to_str().expect("utf-8").to_owned());
    let ck = ck.as_str();
    let mut children = start_cluster(processes.0, &out, ck, &["--pace", "2000"]);
    // The test's own view of the checkpoints, to see the workers' records.
    let storage: Box<dyn StorageAgent> = if ck.starts_with("s3://") {
        Box::new(common::agent_at(ck))
    } else {
        Box::new(FsStorageAgent::new(ck).expect("the checkpoint directory"))
    };
    // Every worker has recorded a committed window: the restart resumes
    // (a window is published before its workers record it, so the
    // published files alone do not say so).
    let recorded = || {
        (0..processes.0).all(|i| {
            storage
                .windows(&format!("timely-worker#{i}"))
                .is_ok_and(|w| !w.is_empty())
        })
    };
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let windows = if out.exists() { published(&out).len() } else { 0 };
        if windows >= after && recorded() {
            break;
        }
        let finished = children.iter_mut().any(|c| c.try_wait().ok().flatten().is_some());
        if finished || Instant::now() > deadline {
            for child in &mut children {
                let _ = child.kill();
            }
            panic!("{context}: a process ended (or the watchdog fired) before {after} windows were published");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    children[victim].kill().expect("SIGKILL");
    let ended = wait_all(children);
    assert_ne!(ended[victim].0, Some(0), "{context}: the killed process");
    assert!(
        published(&out).len() < expected.len(),
        "{context}: the job ended before the kill"
    );
    let restarted = wait_all(start_cluster(processes.1, &out, ck, &[]));
    for (process, (status, text)) in restarted.iter().enumerate() {
        assert_eq!(
            *status,
            Some(0),
            "{context}: process {process} after the restart:\n{text}"
        );
    }
    // It resumed: a restart from scratch would publish the same files.
    let opened = restarted[0]
        .1
        .split_once("opened ")
        .and_then(|(_, rest)| rest.split_once(' '))
        .and_then(|(n, _)| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{context}: no window count in {:?}", restarted[0].1));
    assert!(
        opened < JOB_WINDOWS,
        "{context}: the restart opened {opened} windows of {JOB_WINDOWS}"
    );
    assert_eq!(published(&out), expected, "{context}");
}

#[test]
fn a_process_killed_at_chosen_and_random_points_resumes_byte_for_byte() {
    let expected = threaded_output();
    // Chosen: a process without inputs early, the one with the inputs and
    // the sink half-way.
    kill_and_restart(&expected, (3, 3), (1, 4), None, "process 1 after 4 windows");
    kill_and_restart(&expected, (3, 3), (0, 20), None, "process 0 after 20 windows");
    // Random, from a seed printed to rerun it.
    let seed = std::env::var("TIMELY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    println!("random kill: seed {seed} (rerun with TIMELY_CRASH_SEED={seed})");
    let mixed = checkpoint_core::splitmix64(seed);
    let victim = (mixed % 3) as usize;
    let after = 2 + (mixed >> 8) as usize % (expected.len() - 10);
    kill_and_restart(
        &expected,
        (3, 3),
        (victim, after),
        None,
        &format!("seed {seed}: process {victim} after {after} windows"),
    );
}

/// A rescale: two processes, one killed, restarted as three; the keyed
/// count's two partitions are split into three by key group.
#[test]
fn two_processes_restarted_as_three_publish_byte_for_byte() {
    let expected = threaded_output();
    kill_and_restart(
        &expected,
        (2, 3),
        (1, 12),
        None,
        "2 processes, process 1 killed after 12 windows, restarted as 3",
    );
}

/// On an S3 prefix: three processes, process 0 (the inputs, the sink, the
/// prefix's lease) killed, restarted as two (a rescale down; the restart
/// takes the dead process's lease over once it lapses).
#[test]
fn on_an_s3_prefix_three_processes_restarted_as_two_publish_byte_for_byte() {
    let expected = threaded_output();
    kill_and_restart(
        &expected,
        (3, 2),
        (0, 10),
        Some(common::location("timely")),
        "S3: 3 processes, process 0 killed after 10 windows, restarted as 2",
    );
}
