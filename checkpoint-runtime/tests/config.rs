//! Configuration fields (`#[checkpoint(config)]`) through real jobs: a
//! restored operator, whether the whole job resumes from storage or one
//! operator recovers in the run, has the settings of the value handed to
//! the DAG in this run, never those of the run that wrote the checkpoint.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use checkpoint_core::{Checkpoint, FsStorageAgent, StorageAgent, WindowId};
use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput, WindowDataManager, published_windows, read_output};
use checkpoint_runtime::{
    Config, Dag, Fault, FaultPoint, Operator, OperatorResult, Output, RunError, RunReport, Runtime, WindowMode,
};
use common::with_watchdog;

const BASE: u32 = 0x6553_f100;
const LINES: u64 = 200;

fn w(seq: u32) -> WindowId {
    WindowId::new(BASE, seq)
}

/// `LINES` lines `<tag> 0001` ... of the same length whatever the tag, so
/// a byte offset in one file is a line boundary in the other.
fn write_lines(path: &Path, tag: &str) -> PathBuf {
    let text: String = (1..=LINES).map(|i| format!("{tag} {i:04}\n")).collect();
    fs::write(path, text).expect("write input");
    path.to_owned()
}

fn line_number(line: &str) -> u64 {
    line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)
}

/// What a collector saw, per window sequence: a window redone after a
/// recovery replaces what the first attempt collected.
type Seen = Arc<Mutex<BTreeMap<u32, Vec<String>>>>;

/// Collects lines into a map the test holds. The map is configuration:
/// after a restore the operator writes into this run's map, which a
/// transient field would have replaced with an empty one.
#[derive(Default, Checkpoint)]
struct Collect {
    count: u64,
    #[checkpoint(config)]
    seen: Seen,
    #[checkpoint(transient)]
    window: u32,
}

impl Collect {
    fn new(seen: &Seen) -> Self {
        Collect {
            seen: Arc::clone(seen),
            ..Collect::default()
        }
    }
}

impl Operator for Collect {
    type Input = String;
    type Output = ();

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = window.sequence();
        self.seen
            .lock()
            .map_err(|_| "poisoned")?
            .insert(self.window, Vec::new());
        Ok(())
    }

    fn process(&mut self, line: String, _out: Output<'_, ()>) -> OperatorResult {
        self.count += 1;
        let mut seen = self.seen.lock().map_err(|_| "poisoned")?;
        seen.entry(self.window).or_default().push(line);
        Ok(())
    }
}

fn storage(root: &Path) -> Arc<dyn StorageAgent> {
    Arc::new(FsStorageAgent::new(root).expect("storage"))
}

/// Windows of 20 tuples, a checkpoint every 3 windows (sequences 2, 5, 8).
fn config(storage: &Arc<dyn StorageAgent>, faults: &[Fault], restart_limit: u32) -> Config {
    let mut config = Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(20))
        .window_base(BASE)
        .batch_size(4)
        // Synchronous saves: every checkpoint taken before a failure is
        // durable when the job stops, whatever the threads' timing.
        .async_checkpoints(false)
        .restart_limit(restart_limit);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    config
}

/// input -> collect, reading `path` `lines_per_call` lines at a time.
fn collect_job(path: &Path, lines_per_call: usize, seen: &Seen) -> Dag {
    let mut dag = Dag::new();
    let lines = dag.input("lines", LineInput::new(path).lines_per_call(lines_per_call));
    let collect = dag.operator("collect", Collect::new(seen));
    dag.connect(&lines, &collect);
    dag.default_checkpoint_window_count(3);
    dag
}

fn run(config: Config, dag: Dag) -> Result<RunReport, RunError> {
    with_watchdog(move || Runtime::new(config).run(dag))
}

fn resumed_at(report: &RunReport, name: &str) -> WindowId {
    report
        .resumed_from
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, w)| *w)
        .unwrap_or_else(|| panic!("{name} did not resume: {report:?}"))
}

/// A job stopped by a failure and resumed with `--input` pointing at
/// another file reads that file from the restored offset, `lines_per_call`
/// at a time as this run says; with a failure in the resumed run too, the
/// input recovered in the run still reads this run's file.
#[test]
fn a_resumed_job_reads_the_input_path_and_settings_of_this_run() {
    for second_run_faults in [vec![], vec![Fault::error("lines", 8).at(FaultPoint::Tuple(1))]] {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = write_lines(&dir.path().join("old.txt"), "old");
        let new = write_lines(&dir.path().join("new.txt"), "new");
        let storage = storage(&dir.path().join("checkpoints"));

        let first_seen = Seen::default();
        // The input fails in window 6: it has recorded what it read in
        // windows 1-5 and nothing after.
        let fault = Fault::error("lines", 6).at(FaultPoint::Tuple(3));
        let first = run(config(&storage, &[fault], 0), collect_job(&old, 5, &first_seen));
        assert!(
            matches!(&first, Err(RunError::OperatorFailed { operator, .. }) if operator == "lines"),
            "{first:?}"
        );
        let recorded: Vec<u32> = storage
            .windows(&WindowDataManager::storage_name("lines"))
            .expect("window data")
            .iter()
            .map(|w| w.sequence())
            .collect();
        assert!(recorded.iter().all(|w| *w <= 5), "{recorded:?}");

        let seen = Seen::default();
        let report = run(config(&storage, &second_run_faults, 1), collect_job(&new, 7, &seen)).expect("resumed run");
        // A checkpoint window before the failure (which one depends on how
        // far the collector had got when the input failed).
        let resumed = resumed_at(&report, "lines").sequence();
        assert!(resumed == 2 || resumed == 5, "resumed at {resumed}");
        assert_eq!(
            report.recoveries.len(),
            second_run_faults.len(),
            "{:?}",
            report.recoveries
        );

        let seen = seen.lock().expect("lock").clone();
        let lines: Vec<&String> = seen.values().flatten().collect();
        assert!(
            lines.iter().all(|line| line.starts_with("new ")),
            "the resumed job read the old file: {lines:?}"
        );
        // From the restored offset (20 lines per window) to the end.
        let numbers: Vec<u64> = lines.iter().map(|line| line_number(line)).collect();
        assert_eq!(numbers, (20 * u64::from(resumed) + 1..=LINES).collect::<Vec<_>>());
        // Windows the input recorded past its checkpoint replay as read the
        // first time (20 lines); from window 6 on, windows of 21 lines: 3
        // calls of this run's 7, not 4 of the old 5.
        let replayed: Vec<u32> = recorded.iter().copied().filter(|w| *w > resumed).collect();
        assert_eq!(replayed, (resumed + 1..=5).collect::<Vec<_>>());
        let mut expected = vec![20; replayed.len()];
        expected.extend([21, 21, 21, 21, 16]);
        let sizes: Vec<usize> = seen.values().map(Vec::len).collect();
        assert_eq!(sizes, expected);
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (resumed + 1..=10).collect::<Vec<_>>()
        );
    }
}

/// A copy of a checkpoint directory, resumed with a new input file and a
/// new sink directory, publishes only into the new directory (the original
/// job's directory is left exactly as it was), and what it publishes there
/// is what a failure-free run publishes for those windows.
#[test]
fn a_copied_checkpoint_directory_resumed_with_new_paths_writes_only_to_the_new_paths() {
    let sink_job = |input: &Path, out: &Path, storage: &Arc<dyn StorageAgent>, faults: &[Fault], limit: u32| {
        let mut dag = Dag::new();
        let lines = dag.input("lines", LineInput::new(input).lines_per_call(5));
        let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(out));
        dag.connect(&lines, &sink);
        dag.default_checkpoint_window_count(3);
        run(config(storage, faults, limit), dag)
    };

    let reference = tempfile::tempdir().expect("tempdir");
    let reference_out = reference.path().join("out");
    let input = write_lines(&reference.path().join("input.txt"), "line");
    sink_job(
        &input,
        &reference_out,
        &storage(&reference.path().join("checkpoints")),
        &[],
        0,
    )
    .expect("failure-free run");

    let original = tempfile::tempdir().expect("tempdir");
    let original_out = original.path().join("out");
    let original_input = write_lines(&original.path().join("input.txt"), "line");
    let fault = Fault::error("sink", 7).at(FaultPoint::Tuple(2));
    let first = sink_job(
        &original_input,
        &original_out,
        &storage(&original.path().join("checkpoints")),
        &[fault],
        0,
    );
    assert!(
        matches!(&first, Err(RunError::OperatorFailed { operator, .. }) if operator == "sink"),
        "{first:?}"
    );
    let before = tree(&original_out);
    assert!(!published_windows(&original_out).expect("published").is_empty());

    // The checkpoints are copied elsewhere, with the input; the original
    // job's files stay where they were.
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(&original.path().join("checkpoints"), &copy.path().join("checkpoints"));
    let copied_input = copy.path().join("input.txt");
    fs::copy(&original_input, &copied_input).expect("copy input");
    let new_out = copy.path().join("out");
    let report = sink_job(
        &copied_input,
        &new_out,
        &storage(&copy.path().join("checkpoints")),
        &[],
        0,
    )
    .expect("resumed copy");

    assert_eq!(tree(&original_out), before, "the original job's directory changed");
    let resumed = resumed_at(&report, "sink");
    let published = published_windows(&new_out).expect("published");
    assert_eq!(
        published,
        (resumed.sequence() + 1..=10).map(w).collect::<Vec<_>>(),
        "the windows after the sink's checkpoint"
    );
    for window in published {
        let name = format!("{:016x}", window.as_u64());
        assert_eq!(
            fs::read(new_out.join(&name)).expect("published window"),
            fs::read(reference_out.join(&name)).expect("reference window"),
            "window {window}"
        );
    }
    assert_eq!(read_output(&reference_out).expect("reference").len(), 200 * 10);
}

/// Every file under `dir` with its contents, recursively.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = String::from_utf8_lossy(&fs::read(&path).expect("read")).into_owned();
                files.insert(path, text);
            }
        }
    }
    files
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create_dir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// In-run recoveries of a partitioned operator: each restored partition
/// writes into its own map of this run again (a transient map would be a
/// new, empty one; the wrong partition's would overwrite the other's
/// windows), so every line is seen once, by exactly one partition.
#[test]
fn an_in_run_recovery_keeps_each_partitions_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_lines(&dir.path().join("input.txt"), "line");
    let storage = storage(&dir.path().join("checkpoints"));
    let partitions: Vec<Seen> = vec![Seen::default(), Seen::default()];

    let mut dag = Dag::new();
    let lines = dag.input("lines", LineInput::new(&input).lines_per_call(5));
    let maps = partitions.clone();
    let collect = dag.operator_partitioned("collect", 2, move |p| Collect::new(&maps[p]));
    dag.connect_by_key(&lines, &collect, |line: &String| line_number(line));
    dag.default_checkpoint_window_count(3);
    let faults = [
        Fault::panic("collect#1", 4),
        Fault::error("collect#0", 7).at(FaultPoint::Tuple(1)),
        Fault::error("lines", 9).at(FaultPoint::Tuple(2)),
    ];
    let report = run(config(&storage, &faults, 3), dag).expect("run");
    assert_eq!(report.recoveries.len(), 3, "{:?}", report.recoveries);

    let mut all = Vec::new();
    for (p, seen) in partitions.iter().enumerate() {
        let seen = seen.lock().expect("lock");
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>(),
            "partition {p}"
        );
        let numbers: Vec<u64> = seen.values().flatten().map(|line| line_number(line)).collect();
        assert!(!numbers.is_empty(), "partition {p}");
        all.extend(numbers);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=LINES).collect::<Vec<_>>());
}
