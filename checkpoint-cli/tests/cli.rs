//! The `checkpoint` tool on real checkpoint directories: one written by a
//! runtime job (numbers -> a stateless doubler -> a counter in two
//! partitions -> a sink) that failed part-way, and one laid out as the
//! `resume-demo` example leaves it (with its state type, `RideTotals`, which
//! `dump` decodes), plus corrupted and garbage files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output as ProcessOutput};
use std::sync::Arc;

use checkpoint_core::{Checkpoint, FsStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
use checkpoint_examples::ride_totals::RideTotals;
use checkpoint_examples::rides::{self, JobSettings, RideStats};
use checkpoint_runtime::coordinator::{OperatorCheckpoints, Topology, plan};
use checkpoint_runtime::io::WindowDataManager;
use checkpoint_runtime::{
    Config, Dag, Emit, Fault, InputOperator, JobManifest, Operator, OperatorResult, Output, RunError, RunReport,
    Runtime, WindowMode,
};

const BASE: u32 = 0x6553_f100;
const TUPLES: u64 = 400;

#[derive(Checkpoint)]
struct Numbers {
    next: u64,
    end: u64,
}

impl InputOperator for Numbers {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        let stop = (self.next + 3).min(self.end);
        for n in self.next..stop {
            out.emit(n);
        }
        self.next = stop;
        Ok(if self.next == self.end {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

#[derive(Default, Checkpoint)]
#[checkpoint(stateless)]
struct Double;

impl Operator for Double {
    type Input = u64;
    type Output = u64;
    fn process(&mut self, n: u64, out: Output<'_, u64>) -> OperatorResult {
        out.emit(2 * n);
        Ok(())
    }
}

#[derive(Default, Checkpoint)]
struct Counter {
    count: u64,
    sum: u64,
}

impl Operator for Counter {
    type Input = u64;
    type Output = u64;
    fn process(&mut self, n: u64, out: Output<'_, u64>) -> OperatorResult {
        self.count += 1;
        self.sum += n;
        out.emit(n);
        Ok(())
    }
}

#[derive(Default, Checkpoint)]
struct Sink {
    total: u64,
}

impl Operator for Sink {
    type Input = u64;
    type Output = ();
    fn process(&mut self, n: u64, _out: Output<'_, ()>) -> OperatorResult {
        self.total += n;
        Ok(())
    }
}

fn dag() -> Dag {
    let mut dag = Dag::new();
    let numbers = dag.input("numbers", Numbers { next: 0, end: TUPLES });
    let double = dag.operator("double", Double);
    let count = dag.operator_partitioned("count", 2, |_| Counter::default());
    let sink = dag.operator("sink", Sink::default());
    dag.connect(&numbers, &double)
        .connect_by_key(&double, &count, |n: &u64| *n)
        .connect(&count, &sink);
    dag.default_checkpoint_window_count(3).checkpoint_window_count(&sink, 4);
    dag
}

fn run_job(dir: &Path, faults: &[Fault]) -> Result<RunReport, RunError> {
    let mut config = Config::default()
        .storage(FsStorageAgent::new(dir).expect("storage"))
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .batch_size(4)
        // Synchronous saves: when the sink fails at window 23, every
        // checkpoint its upstreams took before it is on disk, so the
        // directory's shape does not depend on thread timing.
        .async_checkpoints(false)
        .restart_limit(0);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    Runtime::new(config).run(dag())
}

/// A job that failed at window 23 (no restarts allowed), leaving the
/// checkpoints a restart resumes from, and older ones.
fn failed_job() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    match run_job(dir.path(), &[Fault::error("sink", 23)]) {
        Err(RunError::OperatorFailed { operator, .. }) => assert_eq!(operator, "sink"),
        other => panic!("expected the job to fail, got {other:?}"),
    }
    dir
}

fn checkpoint(args: &[&str]) -> ProcessOutput {
    Command::new(env!("CARGO_BIN_EXE_checkpoint"))
        .args(args)
        .output()
        .expect("run checkpoint")
}

fn text(output: &ProcessOutput) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the tool, expecting success; returns its stdout.
fn ok(args: &[&str]) -> String {
    let output = checkpoint(args);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "checkpoint {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// Runs the tool, expecting exit status 1; returns stdout and stderr.
fn fails(args: &[&str]) -> (String, String) {
    let output = checkpoint(args);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "checkpoint {args:?} should fail:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn snapshot_path(dir: &Path, operator: &str, window: WindowId) -> PathBuf {
    dir.join(operator).join(format!("{:016x}", window.as_u64()))
}

/// Every snapshot file under `dir`, by operator.
fn files(dir: &Path) -> BTreeMap<String, Vec<WindowId>> {
    let storage = FsStorageAgent::new(dir).expect("storage");
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

fn manifest(dir: &Path) -> JobManifest {
    let storage = FsStorageAgent::new(dir).expect("storage");
    JobManifest::from_bytes(&storage.load_manifest().expect("load").expect("a manifest")).expect("manifest")
}

/// The recovery checkpoint of every stateful physical operator, computed
/// with the runtime's `plan` from the manifest's DAG and the checkpoints on
/// disk, the way a restart chooses them.
fn planned_recovery(dir: &Path) -> BTreeMap<String, WindowId> {
    let manifest = manifest(dir);
    let storage = FsStorageAgent::new(dir).expect("storage");
    let mut names = Vec::new();
    let mut stateless = Vec::new();
    let mut first = BTreeMap::new();
    for op in &manifest.operators {
        first.insert(op.name.clone(), (names.len(), op.physical.len()));
        for name in &op.physical {
            names.push(name.clone());
            stateless.push(op.stateless);
        }
    }
    let mut downstream = vec![Vec::new(); names.len()];
    for edge in &manifest.edges {
        let (from, from_n) = first[&edge.from];
        let (to, to_n) = first[&edge.to];
        for list in &mut downstream[from..from + from_n] {
            list.extend(to..to + to_n);
        }
    }
    let lists: Vec<OperatorCheckpoints> = names
        .iter()
        .zip(&stateless)
        .map(|(name, stateless)| {
            if *stateless {
                OperatorCheckpoints::stateless(WindowId::from_u64(u64::MAX))
            } else {
                OperatorCheckpoints::durable(storage.windows(name).expect("windows"))
            }
        })
        .collect();
    let planned = plan(&Topology::new(downstream), &lists);
    names
        .iter()
        .zip(&stateless)
        .zip(&planned.recovery)
        .filter(|((_, stateless), _)| !**stateless)
        .map(|((name, _), r)| (name.clone(), r.expect("a recovery checkpoint")))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Where a restart of the job on a copy of `dir` resumes each operator.
fn resumed_from(dir: &Path) -> BTreeMap<String, WindowId> {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(dir, copy.path());
    let report = run_job(copy.path(), &[]).expect("the restarted job");
    report.resumed_from.into_iter().collect()
}

/// The window `ls` marks as `name`'s recovery checkpoint, read from its
/// `  name: recovery checkpoint 0x... (#n)` line.
fn ls_recovery(ls: &str, name: &str) -> WindowId {
    let prefix = format!("  {name}: recovery checkpoint ");
    let line = ls
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no recovery line for {name}:\n{ls}"));
    line.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no window in {line:?}"))
}

/// The marks `ls` prints on the line of `window` in `name`'s listing.
fn ls_marks(ls: &str, name: &str, window: WindowId) -> String {
    let mut in_operator = false;
    for line in ls.lines() {
        if line.starts_with(&format!("  {name}:")) {
            in_operator = true;
        } else if in_operator && !line.starts_with("    ") {
            in_operator = false;
        } else if in_operator && line.trim_start().starts_with(&window.to_string()) {
            return line.to_owned();
        }
    }
    panic!("no line for {name} at {window}:\n{ls}")
}

#[test]
fn ls_shows_the_committed_window_and_the_recovery_checkpoints() {
    let dir = failed_job();
    let root = path_str(dir.path());
    let ls = ok(&["ls", root]);

    let manifest = manifest(dir.path());
    let committed = manifest.committed.expect("a committed window");
    assert!(
        ls.contains(&format!("committed window: {committed} (#{})", committed.sequence())),
        "{ls}"
    );
    // The keyed operator's partitions, each with the key groups it owns.
    assert_eq!(manifest.key_groups, Some(128));
    assert!(ls.contains("count#0: key groups 0..64 of 128"), "{ls}");
    assert!(ls.contains("count#1: key groups 64..128 of 128"), "{ls}");
    assert!(!ls.contains("double: key groups"), "{ls}");
    for name in ["numbers", "count#0", "count#1", "sink"] {
        assert!(ls.contains(&format!("  {name}: recovery checkpoint")), "{name}: {ls}");
    }
    assert!(ls.contains("  double: stateless"), "{ls}");

    // The tool's recovery checkpoints are the plan's and what a restart
    // really resumes from.
    let planned = planned_recovery(dir.path());
    let resumed = resumed_from(dir.path());
    for (name, window) in &planned {
        assert_eq!(ls_recovery(&ls, name), *window, "{name}:\n{ls}");
        assert_eq!(resumed.get(name), Some(window), "{name}: {resumed:?}");
        assert!(ls_marks(&ls, name, *window).contains("recovery"), "{name}:\n{ls}");
    }
    // This DAG is a case where the recovery checkpoint is not simply the
    // newest: the counter ran ahead of the sink.
    let on_disk = files(dir.path());
    assert!(
        planned.iter().any(|(name, w)| on_disk[name].last() != Some(w)),
        "{planned:?} {on_disk:?}"
    );
    // The committed window's checkpoints are marked where they still exist.
    let mut marked = 0;
    for (name, windows) in &on_disk {
        if windows.contains(&committed) {
            assert!(ls_marks(&ls, name, committed).contains("committed"), "{name}:\n{ls}");
            marked += 1;
        }
    }
    assert!(marked > 0, "{ls}");
    for name in ["numbers", "count#0", "sink"] {
        for window in &on_disk[name] {
            let line = ls_marks(&ls, name, *window);
            let size = std::fs::metadata(snapshot_path(dir.path(), name, *window))
                .expect("file")
                .len();
            assert!(line.contains(&format!(" {size} B")), "{line}");
            assert!(line.contains(&format!("#{}", window.sequence())), "{line}");
        }
    }
}

#[test]
fn show_prints_the_header_and_the_checksum_status() {
    let dir = failed_job();
    let root = path_str(dir.path());
    let newest = *files(dir.path())["count#1"].last().expect("a checkpoint");
    let path = snapshot_path(dir.path(), "count#1", newest);
    let size = std::fs::metadata(&path).expect("file").len();

    for out in [
        ok(&["show", root, "count#1"]),
        ok(&["show", root, "count#1", &newest.to_string()]),
        ok(&["show", root, "count#1", &newest.sequence().to_string()]),
    ] {
        assert!(out.contains("operator:       count#1"), "{out}");
        assert!(out.contains(&format!("window:         {newest}")), "{out}");
        assert!(out.contains("type:           Counter"), "{out}");
        assert!(out.contains("state version:  1"), "{out}");
        assert!(
            out.contains(&format!(
                "fingerprint:    {:#018x}",
                <Counter as Checkpoint>::FINGERPRINT
            )),
            "{out}"
        );
        assert!(out.contains(&format!("total size:     {size} bytes")), "{out}");
        assert!(out.contains("checksum:       ok"), "{out}");
    }

    let mut bytes = std::fs::read(&path).expect("read");
    let in_payload = bytes.len() - 6;
    bytes[in_payload] ^= 0x04;
    std::fs::write(&path, &bytes).expect("write");
    let (out, err) = fails(&["show", root, "count#1"]);
    assert!(out.contains("checksum:       MISMATCH: stored CRC-32C 0x"), "{out}");
    assert!(out.contains(", computed 0x"), "{out}");
    assert!(err.contains(&path.display().to_string()), "{err}");

    let (_, err) = fails(&["show", root, "count#1", "0x1"]);
    assert!(err.contains("no checkpoint at window 0x1"), "{err}");
    let (_, err) = fails(&["show", root, "counter"]);
    assert!(
        err.contains("no operator \"counter\"") && err.contains("count#0"),
        "{err}"
    );
}

#[test]
fn verify_passes_then_names_the_corrupted_file() {
    let dir = failed_job();
    let root = path_str(dir.path());
    let out = ok(&["verify", root]);
    let count: usize = files(dir.path()).values().map(Vec::len).sum();
    assert!(out.contains(&format!("verified {count} snapshots")), "{out}");
    assert!(out.contains("all ok"), "{out}");

    let oldest = files(dir.path())["numbers"][0];
    let path = snapshot_path(dir.path(), "numbers", oldest);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[50] ^= 0x10;
    std::fs::write(&path, &bytes).expect("write");

    let (out, err) = fails(&["verify", root]);
    let flagged: Vec<&str> = out.lines().filter(|l| l.starts_with("CORRUPT")).collect();
    assert_eq!(flagged.len(), 1, "{out}");
    assert!(flagged[0].contains(&path.display().to_string()), "{out}");
    assert!(flagged[0].contains("checksum mismatch"), "{out}");
    assert!(err.contains("1 problem"), "{err}");

    // A snapshot moved to another window's name is misplaced, not fine.
    std::fs::write(&path, {
        bytes[50] ^= 0x10;
        &bytes
    })
    .expect("write");
    ok(&["verify", root]);
    let other = snapshot_path(dir.path(), "numbers", WindowId::new(BASE, 9_999));
    std::fs::copy(&path, &other).expect("copy");
    let (out, _) = fails(&["verify", root]);
    assert!(
        out.contains(&other.display().to_string()) && out.contains("misplaced"),
        "{out}"
    );
}

/// A checkpoint directory as the `resume-demo` example leaves it after
/// `--windows 4`: `RideTotals` snapshots of windows 2 and 3 of operator
/// `ride-totals` (it keeps the newest two) and its own (non-runtime) job
/// manifest. Returns the state at window 3.
fn resume_demo_directory(dir: &Path) -> RideTotals {
    let storage = FsStorageAgent::new(dir).expect("storage");
    storage
        .save_manifest(format!("window-base={BASE}\n").as_bytes())
        .expect("manifest");
    let mut totals = RideTotals::default();
    for seq in 0..4 {
        let window = WindowId::new(BASE, seq);
        totals.process_window(window);
        let bytes = Snapshot::encode(&totals, SnapshotMeta::new("ride-totals", window)).expect("encode");
        storage.save("ride-totals", window, &bytes).expect("save");
        if seq >= 2 {
            storage
                .delete("ride-totals", WindowId::new(BASE, seq - 2))
                .expect("delete");
        }
    }
    totals
}

#[test]
fn dump_prints_the_state_the_job_computed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = resume_demo_directory(dir.path());

    let out = ok(&["dump", path_str(dir.path()), "ride-totals", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(json["rides"], expected.rides);
    assert_eq!(json["revenue_cents"], expected.revenue_cents);
    let per_zone = json["per_zone"].as_object().expect("per_zone");
    assert_eq!(per_zone.len(), expected.per_zone.len());
    for (zone, n) in &expected.per_zone {
        assert_eq!(per_zone[&zone.to_string()], *n, "zone {zone}");
    }
    assert!(json.get("busiest_cache").is_none(), "transient: {json}");

    // The older checkpoint by sequence number, and the heading without --json.
    let out = ok(&["dump", path_str(dir.path()), "ride-totals", "2"]);
    let (heading, body) = out.split_once('\n').expect("a heading");
    assert!(
        heading.starts_with("# ride-totals at window 0x") && heading.contains("RideTotals"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(json["rides"], 3_000);
}

#[test]
fn purge_keeps_what_recovery_needs_and_dry_run_deletes_nothing() {
    let dir = failed_job();
    let root = path_str(dir.path());
    let before = files(dir.path());
    let planned = planned_recovery(dir.path());
    let committed = manifest(dir.path()).committed.expect("committed");

    let out = ok(&["purge", root, "--keep", "1", "--dry-run"]);
    assert_eq!(files(dir.path()), before, "--dry-run deleted something:\n{out}");
    let would: Vec<&str> = out.lines().filter(|l| l.starts_with("would delete ")).collect();
    assert!(!would.is_empty(), "nothing old to purge in {before:?}:\n{out}");

    let out = ok(&["purge", root, "--keep", "1"]);
    let after = files(dir.path());
    let deleted: Vec<&str> = out.lines().filter(|l| l.starts_with("deleted ")).collect();
    assert_eq!(deleted.len(), would.len(), "{out}");
    for (name, windows) in &before {
        let kept = &after[name];
        // The newest one, the recovery checkpoint and everything newer, and
        // the committed window's.
        assert_eq!(kept.last(), windows.last(), "{name}");
        if let Some(r) = planned.get(name) {
            for w in windows.iter().filter(|w| *w >= r) {
                assert!(kept.contains(w), "{name} lost {w} (recovery {r})");
            }
            let old: Vec<&WindowId> = kept.iter().filter(|w| *w < r && **w != committed).collect();
            assert!(
                old.is_empty(),
                "{name} kept {old:?}, older than its recovery checkpoint {r}, with --keep 1"
            );
        }
        if windows.contains(&committed) {
            assert!(
                kept.contains(&committed),
                "{name} lost the committed window's checkpoint"
            );
        }
        for w in windows.iter().filter(|w| !kept.contains(w)) {
            let path = snapshot_path(dir.path(), name, *w).display().to_string();
            assert!(
                deleted.iter().any(|l| l.contains(&path)),
                "{path} deleted silently:\n{out}"
            );
        }
    }
    assert_ne!(after, before);
    // Recovery is unchanged: the same plan, and a restart resumes from it.
    assert_eq!(planned_recovery(dir.path()), planned);
    let resumed = resumed_from(dir.path());
    for (name, window) in &planned {
        assert_eq!(resumed.get(name), Some(window), "{name}");
    }
    // Purging again finds nothing more to delete.
    let out = ok(&["purge", root, "--keep", "1"]);
    assert!(out.contains("deleted 0 checkpoints"), "{out}");

    // Without a job manifest nothing is purged.
    let demo = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(demo.path()).expect("storage"));
    let w = WindowId::new(BASE, 1);
    storage
        .save(
            "op",
            w,
            &Snapshot::encode(&5u64, checkpoint_core::SnapshotMeta::new("op", w)).expect("encode"),
        )
        .expect("save");
    let (_, err) = fails(&["purge", path_str(demo.path()), "--keep", "0"]);
    assert!(err.contains("no job manifest"), "{err}");
    assert_eq!(files(demo.path())["op"], [w]);
}

#[test]
fn clear_errors_for_a_missing_directory_and_a_garbage_file() {
    let dir = failed_job();
    let root = path_str(dir.path());
    let missing = dir.path().join("no-such-dir");
    for command in ["ls", "verify"] {
        let (_, err) = fails(&[command, path_str(&missing)]);
        assert!(
            err.contains("no such directory") && err.contains("no-such-dir"),
            "{err}"
        );
    }
    let (_, err) = fails(&["show", path_str(&missing), "sink"]);
    assert!(err.contains("no such directory"), "{err}");
    let (_, err) = fails(&["purge", path_str(&missing), "--keep", "1"]);
    assert!(err.contains("no such directory"), "{err}");
    assert!(!missing.exists(), "the tool created the directory");

    let manifest_path = dir.path().join(".manifest");
    let (_, err) = fails(&["ls", path_str(&manifest_path)]);
    assert!(err.contains("is not a directory"), "{err}");
    let empty = tempfile::tempdir().expect("tempdir");
    let (_, err) = fails(&["verify", path_str(empty.path())]);
    assert!(err.contains("not a checkpoint directory"), "{err}");

    // A file with a snapshot's name that is not a snapshot.
    let garbage = snapshot_path(dir.path(), "sink", WindowId::new(BASE, 999));
    std::fs::write(&garbage, "this is not a checkpoint\n").expect("write");
    let (out, _) = fails(&["verify", root]);
    let line = out.lines().find(|l| l.starts_with("CORRUPT")).expect("a CORRUPT line");
    assert!(
        line.contains(&garbage.display().to_string()) && line.contains("not a checkpoint"),
        "{out}"
    );
    let (_, err) = fails(&["show", root, "sink"]);
    assert!(
        err.contains(&garbage.display().to_string()) && err.contains("not a readable checkpoint"),
        "{err}"
    );
    let (_, err) = fails(&["dump", root, "sink", "--json"]);
    assert!(err.contains("not a checkpoint"), "{err}");
    let ls = ok(&["ls", root]);
    assert!(
        ls_marks(&ls, "sink", WindowId::new(BASE, 999)).contains("CORRUPT"),
        "{ls}"
    );
    // The garbage does not count as a checkpoint, and purge leaves it alone.
    assert_eq!(ls_recovery(&ls, "sink"), planned_recovery_without(dir.path(), &garbage));
    ok(&["purge", root, "--keep", "0"]);
    assert!(garbage.exists());

    // A damaged job manifest.
    std::fs::write(&manifest_path, "{\"format\": 1, \"window_base\": ").expect("write");
    let (out, _) = fails(&["verify", root]);
    assert!(out.contains(".manifest: not a readable job manifest"), "{out}");
    let (_, err) = fails(&["purge", root, "--keep", "1"]);
    assert!(err.contains("damaged"), "{err}");
}

/// `sink`'s recovery checkpoint, with `garbage` out of the way.
fn planned_recovery_without(dir: &Path, garbage: &Path) -> WindowId {
    let aside = garbage.with_extension("aside");
    std::fs::rename(garbage, &aside).expect("rename");
    let r = planned_recovery(dir)["sink"];
    std::fs::rename(&aside, garbage).expect("rename back");
    r
}

#[test]
fn every_command_has_help() {
    let out = ok(&["--help"]);
    for command in ["ls", "show", "verify", "dump", "purge", "history"] {
        assert!(out.contains(command), "{out}");
        let help = ok(&[command, "--help"]);
        assert!(help.contains("Usage: checkpoint"), "{help}");
    }
    let bad = checkpoint(&["purge", "x"]);
    assert_eq!(bad.status.code(), Some(2), "--keep is required");
}

#[test]
fn an_inputs_window_data_is_listed_apart_and_never_purged() {
    let dir = failed_job();
    let root = path_str(dir.path());
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let data = WindowDataManager::new(storage, "numbers");
    for seq in [2, 3] {
        data.save(
            WindowId::new(BASE, seq),
            &(u64::from(seq) * 10, u64::from(seq + 1) * 10),
        )
        .expect("save");
    }

    let ls = ok(&["ls", root]);
    assert!(ls.contains("window data"), "{ls}");
    assert!(ls.contains("  numbers#window-data: 2 records"), "{ls}");
    assert!(!ls.contains("not in the job manifest"), "{ls}");
    let out = ok(&["verify", root]);
    assert!(!out.contains("note"), "{out}");
    ok(&["show", root, "numbers#window-data", "3"]);

    let out = ok(&["purge", root, "--keep", "0"]);
    assert!(!out.contains("window-data"), "{out}");
    assert_eq!(files(dir.path())["numbers#window-data"].len(), 2);
}

#[test]
fn verify_fails_on_a_directory_a_restart_cannot_resume_and_says_why() {
    let dir = failed_job();
    ok(&["verify", path_str(dir.path())]);
    assert!(manifest(dir.path()).committed.is_some(), "the job committed a window");
    // Every checkpoint of one partition is gone: after a commit, retention
    // has deleted what an older restore point would need.
    let partition = dir.path().join("count#1");
    for window in files(dir.path())["count#1"].clone() {
        std::fs::remove_file(snapshot_path(dir.path(), "count#1", window)).expect("remove");
    }
    assert!(partition.is_dir());
    let (stdout, stderr) = fails(&["verify", path_str(dir.path())]);
    assert!(
        stdout.contains("CANNOT RESUME") && stdout.contains("\"count#1\"") && stdout.contains("no usable checkpoint"),
        "{stdout}"
    );
    assert!(stderr.contains("a restart cannot resume"), "{stderr}");
    // And a restart agrees, with the same reason, deleting nothing.
    let before = files(dir.path());
    let error = run_job(dir.path(), &[]).expect_err("cannot resume");
    let message = error.to_string();
    assert!(
        message.contains("\"count#1\"") && message.contains("no usable checkpoint"),
        "{message}"
    );
    assert_eq!(files(dir.path()), before);
}

#[test]
fn purge_refuses_while_a_job_holds_the_directory() {
    let dir = failed_job();
    let before = files(dir.path());
    let lock = FsStorageAgent::new(dir.path()).expect("storage").lock().expect("lock");
    let (_, stderr) = fails(&["purge", path_str(dir.path()), "--keep", "1"]);
    assert!(stderr.contains("in use by another job"), "{stderr}");
    assert_eq!(files(dir.path()), before, "nothing purged");
    drop(lock);
    ok(&["purge", path_str(dir.path()), "--keep", "1"]);
    assert_ne!(files(dir.path()), before, "purged once the job is gone");
}

#[test]
fn a_corrupt_checkpoint_set_aside_by_a_restart_is_listed_and_purged() {
    let dir = failed_job();
    let newest = *files(dir.path())["count#0"].last().expect("a checkpoint");
    let path = snapshot_path(dir.path(), "count#0", newest);
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() - 5;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).expect("corrupt");
    run_job(dir.path(), &[]).expect("the restart resumes past it");
    let aside = dir
        .path()
        .join("count#0")
        .join(format!(".{:016x}.corrupt", newest.as_u64()));
    assert_eq!(std::fs::read(&aside).expect("set aside"), bytes);
    let stdout = ok(&["verify", path_str(dir.path())]);
    assert!(stdout.contains("set aside"), "{stdout}");
    let stdout = ok(&["purge", path_str(dir.path()), "--keep", "1"]);
    assert!(stdout.contains(".corrupt"), "{stdout}");
    assert!(!aside.exists(), "purged on request");
}

#[test]
fn ls_says_when_an_inputs_stream_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_job(dir.path(), &[]).expect("a complete run");
    let ls = ok(&["ls", path_str(dir.path())]);
    let numbers = ls
        .lines()
        .find(|l| l.trim_start().starts_with("numbers: recovery checkpoint"))
        .unwrap_or_else(|| panic!("no line for numbers:\n{ls}"));
    assert!(numbers.contains("its stream ended there"), "{numbers}");
    // A job stopped by a failure has not ended.
    let failed = failed_job();
    let ls = ok(&["ls", path_str(failed.path())]);
    assert!(!ls.contains("stream ended"), "{ls}");
}

#[test]
fn history_lists_the_newest_durable_checkpoints_of_a_stored_job() {
    let dir = failed_job();
    let stored = manifest(dir.path());
    assert!(
        !stored.history.is_empty(),
        "the runtime records the history at each commit"
    );
    let out = ok(&["history", path_str(dir.path())]);
    // One line per recorded checkpoint, each naming a checkpoint that was
    // durable: a window the operator saved (retention may have removed it
    // since, never a window past the committed one of its commit).
    let lines: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| {
            !l.ends_with(&format!(
                "committed window {}",
                stored.committed.expect("committed").sequence()
            ))
        })
        .collect();
    assert_eq!(lines.len(), stored.history.len(), "{out}");
    for (line, c) in lines.iter().zip(&stored.history) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], c.operator, "{out}");
        assert_eq!(words[1], c.window.sequence().to_string(), "{out}");
        assert_eq!(words[2], c.bytes.to_string(), "{out}");
        assert!(c.bytes > 0 || c.operator == "double", "{c:?}");
    }
    let operators: std::collections::BTreeSet<&str> = stored.history.iter().map(|c| c.operator.as_str()).collect();
    assert!(
        operators.contains("count#0") && operators.contains("sink"),
        "{operators:?}"
    );
    let (_, err) = fails(&["history", "/nonexistent/checkpoints"]);
    assert!(err.contains("/nonexistent/checkpoints"), "{err}");
}

/// The state `checkpoint dump` prints for `operator` at `window`.
fn dumped(dir: &Path, operator: &str, window: WindowId) -> serde_json::Value {
    let window = format!("{:016x}", window.as_u64());
    let out = ok(&["dump", path_str(dir), operator, &window, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("dump {operator} {window}: {e}:\n{out}"))
}

/// The same state decoded here, with the job's own types: an independent
/// decoding to compare the tool's with.
fn decoded_here(dir: &Path, operator: &str, window: WindowId) -> serde_json::Value {
    let bytes = std::fs::read(snapshot_path(dir, operator, window)).expect("read snapshot");
    match operator {
        "numbers" => {
            let (_, n) = Snapshot::decode::<Numbers>(&bytes).expect("decode");
            serde_json::json!({"next": n.next, "end": n.end})
        }
        "sink" => {
            let (_, s) = Snapshot::decode::<Sink>(&bytes).expect("decode");
            serde_json::json!({"total": s.total})
        }
        _ => {
            let (_, c) = Snapshot::decode::<Counter>(&bytes).expect("decode");
            serde_json::json!({"count": c.count, "sum": c.sum})
        }
    }
}

#[test]
fn dump_decodes_a_job_the_tool_was_not_built_with() {
    // `Numbers`, `Counter` and `Sink` exist only in this test: the tool
    // decodes them from the descriptions their snapshots carry.
    let job = failed_job();
    let mut decoded = 0;
    for (operator, windows) in files(job.path()) {
        for window in windows {
            assert_eq!(
                dumped(job.path(), &operator, window),
                decoded_here(job.path(), &operator, window),
                "{operator} at {window}"
            );
            decoded += 1;
        }
    }
    assert!(decoded >= 8, "only {decoded} snapshots");
    let show = ok(&["show", path_str(job.path()), "sink"]);
    assert!(show.contains("described"), "{show}");
}

#[test]
fn dump_decodes_the_library_operators_of_an_example_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = tempfile::tempdir().expect("tempdir");
    let settings = JobSettings {
        seed: 11,
        application_windows: 2,
        checkpoint_every: 4,
        ..JobSettings::new(3_000, output.path())
    };
    let config = Config::default()
        .storage(FsStorageAgent::new(dir.path()).expect("storage"))
        .window_mode(WindowMode::Tuples(300))
        .window_base(BASE);
    Runtime::new(config).run(rides::dag(&settings)).expect("the job runs");
    let mut operators = 0;
    for (operator, windows) in files(dir.path()) {
        let Some(newest) = windows.last() else { continue };
        let json = dumped(dir.path(), &operator, *newest);
        assert!(json.is_object(), "{operator}: {json}");
        operators += 1;
    }
    assert!(operators >= 3, "{operators} operators");
    // The stats operator's state, as the job's own type decodes it.
    let stats = files(dir.path())[rides::STATS]
        .last()
        .copied()
        .expect("a stats checkpoint");
    let bytes = std::fs::read(snapshot_path(dir.path(), rides::STATS, stats)).expect("read");
    let (_, state) = Snapshot::decode::<RideStats>(&bytes).expect("decode");
    let expected = serde_json::to_value(&state).expect("to JSON");
    assert_eq!(dumped(dir.path(), rides::STATS, stats), expected);
}

#[test]
fn edit_changes_the_state_a_resume_starts_from() {
    let job = failed_job();
    let untouched = tempfile::tempdir().expect("tempdir");
    copy_dir(job.path(), untouched.path());
    let recovery = planned_recovery(job.path())["sink"];
    let before = std::fs::read(snapshot_path(job.path(), "sink", recovery)).expect("read");
    let (_, sink) = Snapshot::decode::<Sink>(&before).expect("decode");
    let old_total = sink.total;
    const EDITED: u64 = 1_000_000;

    let backup = job.path().join("sink.backup");
    let out = ok(&[
        "edit",
        path_str(job.path()),
        "sink",
        "--set",
        &format!("/total={EDITED}"),
        "--backup",
        path_str(&backup),
    ]);
    assert!(out.contains(&format!("/total: {old_total} -> {EDITED}")), "{out}");
    assert!(out.contains("recovery checkpoint"), "{out}");
    assert_eq!(
        std::fs::read(&backup).expect("backup"),
        before,
        "the backup is the original"
    );
    let after = std::fs::read(snapshot_path(job.path(), "sink", recovery)).expect("read");
    let (header, sink) = Snapshot::decode::<Sink>(&after).expect("the edited checkpoint decodes");
    assert_eq!((header.window, sink.total), (recovery, EDITED));
    ok(&["verify", path_str(job.path())]);

    // Both resume from the same checkpoints; only the sink's total differs.
    run_job(job.path(), &[]).expect("the edited job resumes");
    run_job(untouched.path(), &[]).expect("the untouched job resumes");
    let final_total = |dir: &Path| {
        let newest = *files(dir)["sink"].last().expect("a final checkpoint");
        let (_, sink) = Snapshot::decode::<Sink>(&std::fs::read(snapshot_path(dir, "sink", newest)).expect("read"))
            .expect("decode");
        sink.total
    };
    let expected_total: u64 = (0..TUPLES).map(|n| 2 * n).sum();
    assert_eq!(final_total(untouched.path()), expected_total);
    assert_eq!(final_total(job.path()), expected_total - old_total + EDITED);
}

#[test]
fn edit_refuses_what_does_not_fit_and_changes_nothing() {
    let job = failed_job();
    let recovery = planned_recovery(job.path())["sink"];
    let path = snapshot_path(job.path(), "sink", recovery);
    let before = std::fs::read(&path).expect("read");
    let backup = job.path().join("refused.backup");
    let dir = path_str(job.path());
    for (set, expected) in [
        ("/total=\"many\"", "does not fit"),
        ("/total=-1", "does not fit"),
        ("/totals=1", "does not fit"),
        ("/total/x=1", "has no member"),
        ("/total=many", "not JSON"),
        ("total=1", "not a JSON pointer"),
    ] {
        let (_, err) = fails(&["edit", dir, "sink", "--set", set, "--backup", path_str(&backup)]);
        assert!(err.contains(expected), "--set {set}: {err}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "--set {set} changed the checkpoint"
        );
        assert!(!backup.exists(), "--set {set} wrote a backup");
    }
    // An existing backup file is never overwritten.
    std::fs::write(&backup, b"keep me").expect("write");
    let (_, err) = fails(&["edit", dir, "sink", "--set", "/total=1", "--backup", path_str(&backup)]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&backup).expect("read"), b"keep me");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn dump_refuses_a_mismatched_or_damaged_description() {
    let job = failed_job();
    let recovery = planned_recovery(job.path())["sink"];
    let path = snapshot_path(job.path(), "sink", recovery);
    let original = std::fs::read(&path).expect("read");
    let (header, payload) = Snapshot::payload(&original).expect("valid");
    let description = header.description.clone().expect("a description");
    let rewrite = |description: &str| {
        let layout = checkpoint_core::StateLayout {
            type_name: &header.type_name,
            version: header.state_version,
            fingerprint: header.fingerprint,
        };
        let bytes = Snapshot::from_payload(
            SnapshotMeta::new(&header.operator, header.window),
            layout,
            payload,
            Some(description),
        )
        .expect("envelope");
        std::fs::write(&path, bytes).expect("write");
    };
    let dir = path_str(job.path());
    let window = format!("{:016x}", recovery.as_u64());

    // Another field name, checksum intact: the fingerprint does not match.
    rewrite(&description.replace("\"total\"", "\"totals\""));
    let (out, err) = fails(&["dump", dir, "sink", &window, "--json"]);
    assert!(err.contains("does not describe this state"), "{err}");
    assert!(out.is_empty(), "printed a value: {out}");

    // Another format for the same field (`i64` would read the zig-zag
    // varint as another number), type text and checksum intact.
    assert!(description.contains("\"format\":\"u64\""), "{description}");
    rewrite(&description.replace("\"format\":\"u64\"", "\"format\":\"i64\""));
    let (out, err) = fails(&["dump", dir, "sink", &window, "--json"]);
    assert!(err.contains("says field `total` of type `u64` is I64"), "{err}");
    assert!(out.is_empty(), "printed a value: {out}");

    // Not a description at all.
    rewrite("{\"not\": \"a description\"}");
    let (_, err) = fails(&["dump", dir, "sink", &window, "--json"]);
    assert!(err.contains("damaged"), "{err}");

    // A flipped bit inside the description: the checksum catches it.
    let mut flipped = original.clone();
    let at = original.len() - 4 - description.len() / 2;
    flipped[at] ^= 0x01;
    std::fs::write(&path, flipped).expect("write");
    let (out, err) = fails(&["dump", dir, "sink", &window, "--json"]);
    assert!(err.contains("corrupt") || err.contains("checksum"), "{err}");
    assert!(out.is_empty(), "printed a value: {out}");
}
