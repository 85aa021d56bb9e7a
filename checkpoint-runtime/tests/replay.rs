//! Replay buffers on disk: each job spills into a directory of its own,
//! removed when the job ends; one a killed job left behind is swept by the
//! next job on the same base; two jobs in one process with the same
//! operator names never read each other's spilled windows.
//!
//! The crash test kills a real process with SIGKILL while it spills: the
//! test binary runs itself again as the child (`SPILL_KILL_CHILD_BASE`
//! names the child's spill base), the child's job reports every spilled
//! window on stdout, and the parent kills it at chosen and at random
//! reports (`SPILL_KILL_SEED=<seed>` reruns the same choices).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::{Checkpoint, MemoryStorageAgent, Snapshot, StorageAgent, WindowId, lock_directory};
use checkpoint_runtime::{Config, Dag, Fault, Operator, OperatorResult, Output, Runtime, WindowMode};
use common::{Counting, Summer, Tagged, with_watchdog};

const BASE: u32 = 0x6553_f100;
const TUPLES: u64 = 200;

/// `source -> summer`, spilling every window (cap 0) under `spill`, with
/// `faults`; returns the summer's final (count, sum).
fn spilling_job(spill: &Path, faults: &[Fault]) -> (u64, u64) {
    let storage = MemoryStorageAgent::new();
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 3));
    let summer = dag.operator("summer", Summer::default());
    dag.connect(&source, &summer).default_checkpoint_window_count(4);
    let mut config = Config::default()
        .storage(storage.clone())
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .batch_size(4)
        .replay_memory_cap(0)
        .spill_dir(spill);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("the job");
    assert_eq!(report.recoveries.len(), faults.len(), "{:?}", report.recoveries);
    let window = *storage
        .windows("summer")
        .expect("windows")
        .last()
        .expect("a checkpoint");
    let (_, summer) = Snapshot::decode::<Summer>(&storage.load("summer", window).expect("load")).expect("decode");
    (summer.count, summer.sum)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_jobs_spill_directory_goes_with_it_and_a_killed_jobs_is_swept() {
    let spill = tempfile::tempdir().expect("tempdir");
    // What a killed job left: its directory, its lock free.
    let stale = spill.path().join("job-4000000-0-0");
    fs::create_dir(&stale).expect("mkdir");
    fs::write(stale.join(".lock"), b"").expect("lock file");
    fs::write(stale.join("4000000-0-source-6553f10000000001.spill"), b"old").expect("spill file");
    // A job still running elsewhere: its directory is locked.
    let running = spill.path().join("job-4000001-0-0");
    fs::create_dir(&running).expect("mkdir");
    fs::write(running.join("4000001-0-source-6553f10000000001.spill"), b"in use").expect("spill file");
    let held = lock_directory(&running, "spill directory").expect("lock");
    // A job killed between making its directory and naming it: an hour old.
    let staging = spill.path().join(".new-job-4000002-0-0");
    fs::create_dir(&staging).expect("mkdir");
    fs::write(staging.join(".lock"), b"").expect("lock file");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::open(&staging)
        .expect("open")
        .set_modified(hour_ago)
        .expect("age it");
    // One made just now may be a job starting this instant: left alone.
    let starting = spill.path().join(".new-job-4000003-0-0");
    fs::create_dir(&starting).expect("mkdir");

    // A recovery replays spilled windows, so they were really written.
    let result = spilling_job(spill.path(), &[Fault::panic("summer", 9)]);
    assert_eq!(result, (TUPLES, TUPLES * (TUPLES - 1) / 2));
    assert_eq!(
        names(spill.path()),
        [".new-job-4000003-0-0", "job-4000001-0-0"],
        "swept and cleaned up"
    );
    assert_eq!(
        fs::read(running.join("4000001-0-source-6553f10000000001.spill")).expect("left alone"),
        b"in use"
    );
    drop(held);
}

#[test]
fn two_jobs_in_one_process_with_the_same_names_never_share_spilled_windows() {
    let spill = tempfile::tempdir().expect("tempdir");
    let expected = (TUPLES, TUPLES * (TUPLES - 1) / 2);
    for round in 0..5 {
        let jobs: Vec<_> = [7u32, 11]
            .into_iter()
            .map(|fail_at| {
                let spill = spill.path().to_path_buf();
                std::thread::spawn(move || spilling_job(&spill, &[Fault::panic("summer", fail_at)]))
            })
            .collect();
        for job in jobs {
            assert_eq!(job.join().expect("job thread"), expected, "round {round}");
        }
        assert!(
            names(spill.path()).is_empty(),
            "round {round}: {:?}",
            names(spill.path())
        );
    }
}

#[test]
fn the_global_scope_keeps_no_replay_data_and_no_spill_directory() {
    let spill = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 3));
    let summer = dag.operator("summer", Summer::default());
    dag.connect(&source, &summer).default_checkpoint_window_count(4);
    let config = Config::default()
        .shared_storage(storage.clone())
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .replay_memory_cap(0)
        .spill_dir(spill.path())
        .recovery_scope(checkpoint_runtime::RecoveryScope::Global)
        .inject(Fault::panic("summer", 9));
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("the job");
    assert_eq!(report.recoveries.len(), 1);
    assert_eq!(report.recoveries[0].restored.len(), 2, "every operator goes back");
    assert!(
        report.operators.iter().all(|o| o.replay_bytes == 0),
        "{:?}",
        report.operators
    );
    assert!(names(spill.path()).is_empty(), "{:?}", names(spill.path()));
    let window = *storage
        .windows("summer")
        .expect("windows")
        .last()
        .expect("a checkpoint");
    let (_, summer) = Snapshot::decode::<Summer>(&storage.load("summer", window).expect("load")).expect("decode");
    assert_eq!((summer.count, summer.sum), (TUPLES, TUPLES * (TUPLES - 1) / 2));
}

/// The crash test's own name: the child runs only it (`--exact`).
const CRASH_TEST: &str = "a_job_killed_while_spilling_leaves_no_spill_files_after_its_next_run";
/// Set (to the spill base) in the child's environment: the crash test then
/// runs the endless spilling job instead of killing one.
const CHILD_BASE_VAR: &str = "SPILL_KILL_CHILD_BASE";
/// Reruns the crash test's random choices.
const SEED_VAR: &str = "SPILL_KILL_SEED";
/// What the child prints after each window its upstream spilled.
const REPORT: &str = "SPILLING ";
/// A child that has not reached its crash point after this long is hung.
const CHILD_WATCHDOG: Duration = Duration::from_secs(60);
/// Kills after a random number of reported windows, each in `1..=MAX_RANDOM_WINDOWS`.
const RANDOM_KILLS: usize = 3;
const MAX_RANDOM_WINDOWS: u64 = 64;

/// The child's sink: after every window that brought it tuples it prints
/// `SPILLING <n>`, n such windows so far. With a replay cap of 0 its
/// upstream's replay buffer wrote each of them to a spill file before the
/// window's end reached this operator.
#[derive(Default, Checkpoint)]
struct Reporter {
    windows: u64,
    #[checkpoint(transient)]
    tuples: u64,
}

impl Operator for Reporter {
    type Input = Tagged;
    type Output = ();

    fn begin_window(&mut self, _window: WindowId) -> OperatorResult {
        self.tuples = 0;
        Ok(())
    }

    fn process(&mut self, _tuple: Tagged, _out: Output<'_, ()>) -> OperatorResult {
        self.tuples += 1;
        Ok(())
    }

    fn end_window(&mut self, _out: Output<'_, ()>) -> OperatorResult {
        if self.tuples > 0 {
            self.windows += 1;
            println!("{REPORT}{}", self.windows);
        }
        Ok(())
    }
}

/// The child: an input that never ends -> `Reporter`, spilling every
/// window under `base`. No checkpoint window comes within reach, so no
/// commit deletes a spilled window before the parent kills the job.
fn run_endless_spilling_job(base: &Path) -> ! {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(u64::MAX, 3));
    let reporter = dag.operator("reporter", Reporter::default());
    dag.connect(&source, &reporter)
        .default_checkpoint_window_count(1_000_000);
    let config = Config::default()
        .storage(MemoryStorageAgent::new())
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .batch_size(4)
        .replay_memory_cap(0)
        .spill_dir(base);
    let result = Runtime::new(config).run(dag);
    panic!("the child's job ended before it was killed: {result:?}");
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum CrashPoint {
    /// As soon as the child reports its first spilled window.
    FirstWindow,
    /// Once the child reported this many spilled windows.
    AfterWindows(u64),
    /// After its first spilled window and a whole job that another process
    /// (this test) ran on the same base meanwhile: that job's sweep must
    /// have left the live child's directory alone.
    AfterNeighbour,
}

/// The child process, killed (and reaped) when dropped, whatever the path
/// out of the test.
struct SpillingChild {
    process: std::process::Child,
    /// Its stdout, line by line, read as it comes so it never blocks on a
    /// full pipe.
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    /// Lines other than reports, for failure messages.
    other: Vec<String>,
}

impl SpillingChild {
    fn spawn(base: &Path) -> Self {
        let mut process = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_BASE_VAR, base)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let stdout = process.stdout.take().expect("piped stdout");
        let mut stderr = process.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        SpillingChild {
            process,
            lines,
            stderr: Some(stderr),
            other: Vec::new(),
        }
    }

    /// Waits until the child reports `windows` spilled windows; fails if it
    /// exits first or takes longer than `CHILD_WATCHDOG`.
    fn wait_for_report(&mut self, windows: u64, context: &str) {
        let deadline = Instant::now() + CHILD_WATCHDOG;
        loop {
            let line = match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => self.fail(
                    &format!("watchdog: no report of {windows} spilled windows in {CHILD_WATCHDOG:?}"),
                    context,
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => self.fail(
                    &format!("the child exited before reporting {windows} spilled windows"),
                    context,
                ),
            };
            // libtest may print `test <name> ... ` ahead of the first report on its line.
            match line.split_once(REPORT).map(|(_, n)| n.trim().parse::<u64>()) {
                Some(Ok(n)) if n >= windows => return,
                Some(Ok(_)) => {}
                _ => self.other.push(line),
            }
        }
    }

    /// Kills the child, then fails with what it printed.
    fn fail(&mut self, what: &str, context: &str) -> ! {
        let _ = self.process.kill();
        let status = self.process.wait();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        panic!(
            "{context}: {what}; it ended with {status:?}, printed {:?}; stderr:\n{}",
            self.other,
            stderr.unwrap_or_default()
        );
    }

    /// SIGKILLs the child and waits until it is gone (and its lock with it).
    fn kill(mut self, context: &str) {
        self.process.kill().expect("SIGKILL the child");
        let status = self.process.wait().expect("wait for the child");
        if status.signal() != Some(libc::SIGKILL) {
            let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
            panic!(
                "{context}: the child was not killed but ended with {status}; stderr:\n{}",
                stderr.unwrap_or_default()
            );
        }
    }
}

impl Drop for SpillingChild {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The one `job-<pid>-*` directory of process `pid` under `base`.
fn job_dir_of(base: &Path, pid: u32, context: &str) -> PathBuf {
    let prefix = format!("job-{pid}-");
    let dirs: Vec<String> = names(base).into_iter().filter(|n| n.starts_with(&prefix)).collect();
    assert_eq!(
        dirs.len(),
        1,
        "{context}: the child's spill directories: {:?}",
        names(base)
    );
    base.join(&dirs[0])
}

fn spill_files(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| n.ends_with(".spill")).collect()
}

/// Every path under `dir`, for failure messages.
fn everything_under(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in fs::read_dir(dir).expect("list").map(|e| e.expect("entry")) {
        all.push(entry.path());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            all.extend(everything_under(&entry.path()));
        }
    }
    all
}

/// One kill: runs the child until `point`, SIGKILLs it, checks it left its
/// spill directory and spilled windows behind, then runs the next job on the
/// same base and checks that job's result and that nothing is left.
fn kill_while_spilling_then_rerun(point: CrashPoint, context: &str) {
    let spill = tempfile::tempdir().expect("tempdir");
    let expected = (TUPLES, TUPLES * (TUPLES - 1) / 2);
    let mut child = SpillingChild::spawn(spill.path());
    let pid = child.process.id();
    match point {
        CrashPoint::FirstWindow => child.wait_for_report(1, context),
        CrashPoint::AfterWindows(n) => child.wait_for_report(n, context),
        CrashPoint::AfterNeighbour => {
            child.wait_for_report(1, context);
            let dir = job_dir_of(spill.path(), pid, context);
            let before = spill_files(&dir);
            assert!(
                !before.is_empty(),
                "{context}: the child reported a spilled window: {before:?}"
            );
            // This job starts (and sweeps) while the child holds its lock.
            assert_eq!(
                spilling_job(spill.path(), &[]),
                expected,
                "{context}: the neighbour job"
            );
            assert!(
                child.process.try_wait().expect("try_wait").is_none(),
                "{context}: the child died while the neighbour job ran"
            );
            let dir_name = dir.file_name().expect("name").to_string_lossy().into_owned();
            assert_eq!(
                names(spill.path()),
                [dir_name],
                "{context}: the live child's directory was kept"
            );
            let lost: Vec<&String> = before.iter().filter(|f| !dir.join(f).exists()).collect();
            assert!(
                lost.is_empty(),
                "{context}: a sweep deleted the live child's spilled windows {lost:?}"
            );
        }
    }
    child.kill(context);

    // It was spilling: its directory and spilled windows outlive it.
    let dir = job_dir_of(spill.path(), pid, context);
    assert!(dir.join(".lock").is_file(), "{context}: {:?}", names(&dir));
    let spilled = spill_files(&dir);
    assert!(
        !spilled.is_empty(),
        "{context}: no spill file in {}: {:?}",
        dir.display(),
        names(&dir)
    );
    assert!(
        spilled.iter().all(|f| f.starts_with(&format!("{pid}-"))),
        "{context}: {spilled:?}"
    );

    // The next job on the same base: right result (a recovery replays its
    // own spilled windows), and nothing of either job left.
    let result = spilling_job(spill.path(), &[Fault::panic("summer", 9)]);
    assert_eq!(result, expected, "{context}: the next job's result");
    assert!(
        names(spill.path()).is_empty(),
        "{context}: left under the spill base after the next run: {:?}",
        everything_under(spill.path())
    );
    println!("{context}: killed after {} spilled windows", spilled.len());
}

/// A job killed while spilling leaves no spill files behind after its next
/// run; and while the killed job was alive, a job started on the same base
/// left its directory alone.
#[test]
fn a_job_killed_while_spilling_leaves_no_spill_files_after_its_next_run() {
    if let Some(base) = std::env::var_os(CHILD_BASE_VAR) {
        run_endless_spilling_job(Path::new(&base));
    }
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("spill kill seed {seed} (rerun with {SEED_VAR}={seed})");
    let mut state = seed;
    let mut points = vec![CrashPoint::FirstWindow, CrashPoint::AfterNeighbour];
    for _ in 0..RANDOM_KILLS {
        state = splitmix64(state);
        points.push(CrashPoint::AfterWindows(1 + state % MAX_RANDOM_WINDOWS));
    }
    for point in points {
        let started = Instant::now();
        let context = format!("{point:?} (seed {seed})");
        kill_while_spilling_then_rerun(point, &context);
        println!("{context}: {:?}", started.elapsed());
    }
}
