//! Exactly-once I/O: the window data manager, the idempotent line input and
//! the exactly-once file sink, driven hook by hook against a real
//! `FsStorageAgent` (crashes simulated by dropping operators and restoring
//! them from their decoded snapshots), and through a real job.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkpoint_core::{Checkpoint, FsStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
use checkpoint_runtime::io::{
    ExactlyOnceFileSink, FileOperatorError, LineInput, WindowDataError, WindowDataManager, published_windows,
    read_output,
};
use checkpoint_runtime::testing::TestOutput;
use checkpoint_runtime::{
    Config, Dag, DagError, Emit, Fault, FaultPoint, InputOperator, Operator, OperatorContext, OperatorResult, Output,
    RunError, Runtime, WindowMode,
};

const BASE: u32 = 0x6553_f100;

fn w(seq: u32) -> WindowId {
    WindowId::new(BASE, seq)
}

fn fs_storage(dir: &Path) -> Arc<dyn StorageAgent> {
    Arc::new(FsStorageAgent::new(dir).expect("storage"))
}

fn ctx(name: &str, activation: WindowId, storage: &Arc<dyn StorageAgent>) -> OperatorContext {
    OperatorContext::for_test(name, activation, Some(Arc::clone(storage)))
}

fn snapshot<T: Checkpoint>(op: &T, name: &str, window: WindowId) -> Vec<u8> {
    Snapshot::encode(op, SnapshotMeta::new(name, window)).expect("encode")
}

/// Decodes a snapshot as the runtime restores it: with the configuration
/// (`#[checkpoint(config)]` fields) of `this_run`, the value handed to the
/// DAG in this run.
fn restore<T: Checkpoint>(bytes: &[u8], this_run: &T) -> T {
    let mut restored = Snapshot::decode::<T>(bytes).expect("decode").1;
    if let Some(config) = this_run.capture_config() {
        restored.restore_config(&*config);
    }
    restored
}

/// splitmix64, for reproducible generated input.
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const WORDS: [&str; 12] = [
    "apex",
    "window",
    "checkpoint",
    "commit",
    "replay",
    "stream",
    "tuple",
    "sink",
    "input",
    "state",
    "rust",
    "exactly",
];

/// `lines` lines of 0 to 5 generated words; some lines end in `\r\n`, the
/// last has no newline.
fn generated_text(lines: u64) -> String {
    let mut text = String::new();
    for i in 0..lines {
        let r = splitmix64(i);
        let words = (r % 6) as usize;
        let line: Vec<&str> = (0..words)
            .map(|k| WORDS[(splitmix64(r.wrapping_add(k as u64)) % WORDS.len() as u64) as usize])
            .collect();
        text.push_str(&line.join(" "));
        if i + 1 < lines {
            text.push_str(if r.is_multiple_of(7) { "\r\n" } else { "\n" });
        }
    }
    text
}

fn write_input(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("input.txt");
    fs::write(&path, text).expect("write input");
    path
}

/// Calls `emit_tuples` the way the runtime does in `WindowMode::Tuples(n)`:
/// until the window holds at least `n` tuples or the input is done. Returns
/// the window's tuples, whether the input is done, and the calls made.
fn emit_window(input: &mut LineInput, out: &mut TestOutput<String>, n: usize) -> (Vec<String>, bool, usize) {
    let mut tuples = Vec::new();
    let mut calls = 0;
    loop {
        let emit = input.emit_tuples(out.output()).expect("emit_tuples");
        calls += 1;
        tuples.extend(out.take());
        match emit {
            Emit::Done => return (tuples, true, calls),
            Emit::Idle => panic!("an input that is not replaying is never idle"),
            Emit::Continue if tuples.len() >= n => return (tuples, false, calls),
            Emit::Continue => {}
        }
    }
}

/// One whole window of the input: begin, emit, end.
fn input_window(input: &mut LineInput, window: WindowId, n: usize) -> (Vec<String>, bool) {
    let mut out = TestOutput::new();
    input.begin_window(window).expect("begin_window");
    let (mut tuples, done, _) = emit_window(input, &mut out, n);
    input.end_window(out.output()).expect("end_window");
    tuples.extend(out.take());
    (tuples, done)
}

// ---------------------------------------------------------------------------
// WindowDataManager

#[test]
fn window_data_round_trips_through_the_file_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = fs_storage(dir.path());
    let data = WindowDataManager::new(Arc::clone(&storage), "lines");
    assert_eq!(data.largest_recorded().expect("largest"), None);
    assert_eq!(data.load::<(u64, u64)>(w(1)).expect("load"), None);

    data.save(w(1), &(0u64, 120u64)).expect("save");
    data.save(w(2), &(120u64, 250u64)).expect("save");
    data.save(w(3), &(250u64, 250u64)).expect("save");
    // Replacing a record is allowed (a window recorded again).
    data.save(w(3), &(250u64, 260u64)).expect("save again");

    // Stored under the derived name, one snapshot envelope per window.
    assert_eq!(data.name(), "lines#window-data");
    assert_eq!(storage.operators().expect("operators"), ["lines#window-data"]);
    let bytes = storage.load("lines#window-data", w(2)).expect("load raw");
    let header = Snapshot::verify(&bytes).expect("a valid envelope");
    assert_eq!((header.operator.as_str(), header.window), ("lines#window-data", w(2)));

    // A new manager (after a restart) reads the same records.
    let data = WindowDataManager::new(fs_storage(dir.path()), "lines");
    assert_eq!(data.windows().expect("windows"), [w(1), w(2), w(3)]);
    assert_eq!(data.largest_recorded().expect("largest"), Some(w(3)));
    assert_eq!(data.load::<(u64, u64)>(w(2)).expect("load"), Some((120, 250)));
    assert_eq!(data.load::<(u64, u64)>(w(3)).expect("load"), Some((250, 260)));
    assert_eq!(data.load::<(u64, u64)>(w(4)).expect("load"), None);

    // Another operator's records are separate.
    let other = WindowDataManager::new(fs_storage(dir.path()), "lines-2");
    assert!(other.windows().expect("windows").is_empty());
}

#[test]
fn window_data_is_purged_on_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = WindowDataManager::new(fs_storage(dir.path()), "lines");
    for seq in 1..=6 {
        data.save(w(seq), &seq).expect("save");
    }
    data.committed(w(3)).expect("commit");
    assert_eq!(data.windows().expect("windows"), [w(4), w(5), w(6)]);
    assert_eq!(data.load::<u32>(w(2)).expect("load"), None);
    // Idempotent, and an older commit does nothing.
    data.committed(w(3)).expect("commit again");
    data.committed(w(1)).expect("older commit");
    assert_eq!(data.windows().expect("windows"), [w(4), w(5), w(6)]);
    data.committed(w(6)).expect("commit all");
    assert_eq!(data.largest_recorded().expect("largest"), None);
    assert!(
        fs::read_dir(dir.path().join("lines#window-data"))
            .expect("dir")
            .next()
            .is_none(),
        "no files left"
    );
}

#[test]
fn a_corrupt_record_is_a_clear_error_never_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = WindowDataManager::new(fs_storage(dir.path()), "lines");
    data.save(w(5), &(7u64, 99u64)).expect("save");
    let path = dir
        .path()
        .join("lines#window-data")
        .join(format!("{:016x}", w(5).as_u64()));
    let good = fs::read(&path).expect("read record");

    // A flipped payload byte: the checksum catches it.
    let mut flipped = good.clone();
    let at = flipped.len() - 6;
    flipped[at] ^= 0x40;
    fs::write(&path, &flipped).expect("corrupt");
    let err = data.load::<(u64, u64)>(w(5)).expect_err("corrupt");
    assert!(
        matches!(err, WindowDataError::Corrupt { window, .. } if window == w(5)),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("\"lines#window-data\""), "{message}");
    assert!(message.contains(&w(5).to_string()), "{message}");
    assert!(message.contains("checksum"), "{message}");

    // Garbage, a truncated record, an empty file.
    for bytes in [
        b"not a record at all".to_vec(),
        good[..good.len() / 2].to_vec(),
        Vec::new(),
    ] {
        fs::write(&path, &bytes).expect("corrupt");
        let err = data.load::<(u64, u64)>(w(5)).expect_err("corrupt");
        assert!(matches!(err, WindowDataError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    // A valid envelope of another window, copied over this one.
    data.save(w(6), &(1u64, 2u64)).expect("save");
    let other = fs::read(path.with_file_name(format!("{:016x}", w(6).as_u64()))).expect("read");
    fs::write(&path, other).expect("copy");
    let err = data.load::<(u64, u64)>(w(5)).expect_err("misplaced");
    assert!(err.to_string().contains("names operator"), "{err}");

    // A valid record of another type.
    data.save(w(7), &"seven").expect("save");
    let err = data.load::<(u64, u64)>(w(7)).expect_err("wrong type");
    assert!(matches!(err, WindowDataError::Record { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot be read as (u64, u64)"), "{err}");
    let err = data.load::<u8>(w(7)).expect_err("trailing bytes");
    assert!(matches!(err, WindowDataError::Record { .. }), "{err:?}");
}

#[test]
fn window_data_names_never_collide_with_operator_names() {
    assert_eq!(WindowDataManager::storage_name("lines"), "lines#window-data");
    assert!(WindowDataManager::is_storage_name("count#3#window-data"));
    // An operator cannot be given the derived name: `#` is reserved for
    // partition numbers, so the DAG refuses it.
    let mut dag = Dag::new();
    let input = dag.input("lines#window-data", LineInput::new("x"));
    let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new("out"));
    dag.connect(&input, &sink);
    let errors = dag.validate().expect_err("a reserved name");
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, DagError::InvalidName { name, .. } if name == "lines#window-data")),
        "{errors:?}"
    );
}

// ---------------------------------------------------------------------------
// LineInput

#[test]
fn line_input_replays_a_recorded_window_byte_identically_after_a_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = generated_text(40);
    let path = write_input(dir.path(), &text);
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let all: Vec<String> = text.lines().map(str::to_owned).collect();

    let mut input = LineInput::new(&path).lines_per_call(2);
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    let mut original = BTreeMap::new();
    let mut checkpoint = Vec::new();
    for seq in 1..=4 {
        let (lines, done) = input_window(&mut input, w(seq), 6);
        assert!(!done);
        original.insert(seq, lines);
        if seq == 2 {
            input.before_checkpoint(w(2)).expect("before_checkpoint");
            checkpoint = snapshot(&input, "lines", w(2));
        }
    }
    assert_eq!(original.values().flatten().cloned().collect::<Vec<_>>(), all[..24]);
    let offset_at_2 = all[..12].iter().map(|l| l.len()).sum::<usize>();
    drop(input); // the crash: no teardown, nothing else

    // Decoded from the snapshot: the offset is the checkpoint's, the file
    // handle is gone until `setup`.
    let mut input = restore(&checkpoint, &LineInput::new(&path).lines_per_call(2));
    assert!(input.offset() >= offset_at_2 as u64, "offset {}", input.offset());
    input.setup(&ctx("lines", w(2), &storage)).expect("setup after restore");

    for seq in 3..=4 {
        let mut out = TestOutput::new();
        input.begin_window(w(seq)).expect("begin_window");
        // The whole recorded range in the first call, then idle until the
        // window ends.
        assert_eq!(input.emit_tuples(out.output()).expect("emit"), Emit::Continue);
        assert_eq!(out.take(), original[&seq], "window {seq} replayed exactly");
        assert_eq!(input.emit_tuples(out.output()).expect("emit"), Emit::Idle);
        assert_eq!(input.emit_tuples(out.output()).expect("emit"), Emit::Idle);
        input.end_window(out.output()).expect("end_window");
        assert!(out.take().is_empty());
    }
    // Then it reads on where window 4 ended.
    let (lines, _) = input_window(&mut input, w(5), 6);
    assert_eq!(lines, all[24..30]);
}

#[test]
fn a_replayed_window_ends_the_stream_where_the_original_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_input(dir.path(), "a\nb\nc\nd\ne\n");
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let mut input = LineInput::new(&path).lines_per_call(2);
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    let initial = snapshot(&input, "lines", w(0));
    assert_eq!(
        input_window(&mut input, w(1), 4),
        (vec!["a".into(), "b".into(), "c".into(), "d".into()], false)
    );
    assert_eq!(input_window(&mut input, w(2), 4), (vec!["e".into()], true));

    let mut input = restore(&initial, &LineInput::new(&path).lines_per_call(2));
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    assert_eq!(input_window(&mut input, w(1), 4).0, ["a", "b", "c", "d"]);
    let mut out = TestOutput::new();
    input.begin_window(w(2)).expect("begin");
    assert_eq!(input.emit_tuples(out.output()).expect("emit"), Emit::Done);
    assert_eq!(out.take(), ["e"]);
}

#[test]
fn a_replayed_window_without_an_emit_call_is_emitted_by_end_window() {
    // In time mode the runtime can end a window before calling the input.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_input(dir.path(), "a\nb\nc\nd\ne\nf\n");
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let mut input = LineInput::new(&path).lines_per_call(3);
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    let initial = snapshot(&input, "lines", w(0));
    input_window(&mut input, w(1), 3);

    let mut input = restore(&initial, &LineInput::new(&path).lines_per_call(3));
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    let mut out = TestOutput::new();
    input.begin_window(w(1)).expect("begin");
    input.end_window(out.output()).expect("end");
    assert_eq!(out.take(), ["a", "b", "c"]);
    assert_eq!(
        input_window(&mut input, w(2), 3),
        (vec!["d".into(), "e".into(), "f".into()], true)
    );
}

#[test]
fn line_input_purges_records_one_commit_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_input(dir.path(), &generated_text(30));
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let mut input = LineInput::new(&path).lines_per_call(1);
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    for seq in 1..=6 {
        input_window(&mut input, w(seq), 2);
    }
    let data = WindowDataManager::new(Arc::clone(&storage), "lines");
    assert_eq!(data.windows().expect("windows"), (1..=6).map(w).collect::<Vec<_>>());
    input.committed(w(2)).expect("commit");
    assert_eq!(data.windows().expect("windows").len(), 6, "kept for a fallback restore");
    input.committed(w(4)).expect("commit");
    assert_eq!(data.windows().expect("windows"), [w(3), w(4), w(5), w(6)]);
    // A repeated or older commit does not advance the purge.
    input.committed(w(4)).expect("commit again");
    input.committed(w(3)).expect("older commit");
    assert_eq!(data.windows().expect("windows"), [w(3), w(4), w(5), w(6)]);
    input.committed(w(6)).expect("commit");
    assert_eq!(data.windows().expect("windows"), [w(5), w(6)]);
}

#[test]
fn line_input_without_storage_just_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = generated_text(17);
    let path = write_input(dir.path(), &text);
    let mut input = LineInput::new(&path).lines_per_call(4);
    input
        .setup(&OperatorContext::for_test("lines", w(0), None))
        .expect("setup");
    let mut lines = Vec::new();
    for seq in 1.. {
        let (window, done) = input_window(&mut input, w(seq), 5);
        lines.extend(window);
        if done {
            break;
        }
    }
    assert_eq!(lines, text.lines().collect::<Vec<_>>());
    // An exhausted input stays done.
    let mut out = TestOutput::new();
    assert_eq!(input.emit_tuples(out.output()).expect("emit"), Emit::Done);
}

#[test]
fn a_missing_input_file_fails_setup_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-file.txt");
    let mut input = LineInput::new(&missing);
    let err = input
        .setup(&OperatorContext::for_test("lines", w(0), None))
        .expect_err("missing file");
    let message = err.to_string();
    assert!(message.starts_with("opening the input file "), "{message}");
    assert!(message.contains(&missing.display().to_string()), "{message}");
    assert!(matches!(
        err.downcast_ref::<FileOperatorError>(),
        Some(FileOperatorError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
    ));
    // Emitting without a file is an error too, not a panic.
    let mut out = TestOutput::new();
    assert!(input.emit_tuples(out.output()).is_err());
}

#[test]
fn a_line_that_is_not_utf8_names_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("input.txt");
    fs::write(&path, b"ok\n\xff\xfe\n").expect("write");
    let mut input = LineInput::new(&path);
    input
        .setup(&OperatorContext::for_test("lines", w(0), None))
        .expect("setup");
    let mut out = TestOutput::new();
    let err = input.emit_tuples(out.output()).expect_err("not UTF-8");
    assert!(
        err.to_string().contains("the line at byte 3 is not valid UTF-8"),
        "{err}"
    );
}

#[test]
fn a_changed_input_file_makes_replay_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_input(dir.path(), "one\ntwo\nthree\nfour\nfive\nsix\n");
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let mut input = LineInput::new(&path).lines_per_call(2);
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    let initial = snapshot(&input, "lines", w(0));
    input_window(&mut input, w(1), 2);
    input_window(&mut input, w(2), 2);

    // The file is rewritten shorter: window 2's recorded range is gone.
    fs::write(&path, "one\ntwo\n").expect("rewrite");
    let mut input = restore(&initial, &LineInput::new(&path).lines_per_call(2));
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    assert_eq!(input_window(&mut input, w(1), 2).0, ["one", "two"]);
    let mut out = TestOutput::new();
    input.begin_window(w(2)).expect("begin");
    let err = input.emit_tuples(out.output()).expect_err("changed file");
    let message = err.to_string();
    assert!(message.contains(&format!("cannot replay window {}", w(2))), "{message}");
    assert!(message.contains("the file changed"), "{message}");

    // A checkpoint offset past the end of the file fails setup.
    let mut input = LineInput::new(&path);
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    input_window(&mut input, w(1), 2);
    let at_1 = snapshot(&input, "lines", w(1));
    fs::write(&path, "").expect("truncate");
    let mut input = restore(&at_1, &LineInput::new(&path));
    let err = input.setup(&ctx("lines", w(1), &storage)).expect_err("shrunk file");
    assert!(err.to_string().contains("the file has only 0 bytes"), "{err}");
}

#[test]
fn a_corrupt_record_fails_the_replayed_window_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_input(dir.path(), "a\nb\nc\nd\n");
    let root = dir.path().join("checkpoints");
    let storage = fs_storage(&root);
    let mut input = LineInput::new(&path).lines_per_call(2);
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    let initial = snapshot(&input, "lines", w(0));
    input_window(&mut input, w(1), 2);
    input_window(&mut input, w(2), 2);
    let record = root.join("lines#window-data").join(format!("{:016x}", w(1).as_u64()));
    fs::write(&record, b"garbage").expect("corrupt");

    let mut input = restore(&initial, &LineInput::new(&path).lines_per_call(2));
    input.setup(&ctx("lines", w(0), &storage)).expect("setup");
    let err = input.begin_window(w(1)).expect_err("corrupt record");
    let message = err.to_string();
    assert!(message.contains("window data \"lines#window-data\""), "{message}");
    assert!(message.contains("is corrupt"), "{message}");
}

// ---------------------------------------------------------------------------
// ExactlyOnceFileSink

fn sink_window(sink: &mut ExactlyOnceFileSink<String>, window: WindowId, lines: &[&str]) {
    let mut out = TestOutput::new();
    sink.begin_window(window).expect("begin_window");
    for line in lines {
        sink.process((*line).to_owned(), out.output()).expect("process");
    }
    sink.end_window(out.output()).expect("end_window");
}

fn pending_files(dir: &Path) -> Vec<WindowId> {
    published_windows(dir.join(".pending")).expect("pending")
}

#[test]
fn the_sink_keeps_windows_pending_until_committed_and_publishes_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let mut sink = ExactlyOnceFileSink::<String>::new(&out);
    sink.setup(&ctx("sink", w(0), &storage)).expect("setup");
    sink_window(&mut sink, w(1), &["a", "b"]);
    sink_window(&mut sink, w(2), &[]);
    sink_window(&mut sink, w(3), &["c"]);
    assert_eq!(pending_files(&out), [w(1), w(2), w(3)]);
    assert_eq!(
        fs::read(out.join(".pending").join("6553f10000000001")).expect("pending"),
        b"a\nb\n"
    );
    assert!(published_windows(&out).expect("published").is_empty());

    sink.before_checkpoint(w(2)).expect("before_checkpoint");
    sink.checkpointed(w(2)).expect("checkpointed");
    assert!(
        published_windows(&out).expect("published").is_empty(),
        "durable, not published"
    );

    sink.committed(w(2)).expect("committed");
    assert_eq!(published_windows(&out).expect("published"), [w(1), w(2)]);
    assert_eq!(pending_files(&out), [w(3)]);
    assert_eq!(read_output(&out).expect("output"), b"a\nb\n");
    assert_eq!(sink.last_published(), Some(w(2)));

    // Committing again (or an older window) changes nothing.
    sink.committed(w(2)).expect("committed twice");
    sink.committed(w(1)).expect("older commit");
    assert_eq!(published_windows(&out).expect("published"), [w(1), w(2)]);
    assert_eq!(read_output(&out).expect("output"), b"a\nb\n");

    sink.committed(w(3)).expect("committed");
    assert_eq!(read_output(&out).expect("output"), b"a\nb\nc\n");
    assert!(pending_files(&out).is_empty());
    assert_eq!(fs::read(out.join("6553f10000000003")).expect("published"), b"c\n");
}

#[test]
fn setup_after_a_restore_deletes_only_pending_windows_after_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let mut sink = ExactlyOnceFileSink::<String>::new(&out);
    sink.setup(&ctx("sink", w(0), &storage)).expect("setup");
    sink_window(&mut sink, w(1), &["one"]);
    sink.committed(w(1)).expect("commit 1");
    sink_window(&mut sink, w(2), &["two"]);
    sink_window(&mut sink, w(3), &["three"]);
    sink.before_checkpoint(w(3)).expect("before_checkpoint");
    let at_3 = snapshot(&sink, "sink", w(3));
    sink_window(&mut sink, w(4), &["four"]);
    // A window half written when the process died.
    let mut half = TestOutput::new();
    sink.begin_window(w(5)).expect("begin");
    sink.process("fi".to_owned(), half.output()).expect("process");
    assert_eq!(pending_files(&out), [w(2), w(3), w(4), w(5)]);
    drop(sink);

    let mut sink = restore(&at_3, &ExactlyOnceFileSink::<String>::new(&out));
    assert_eq!(sink.last_published(), Some(w(1)));
    sink.setup(&ctx("sink", w(3), &storage)).expect("setup after restore");
    assert_eq!(
        pending_files(&out),
        [w(2), w(3)],
        "windows after the checkpoint are replayed"
    );
    assert_eq!(sink.pending_windows(), [w(2), w(3)]);
    // The kept windows are published at the next commit.
    sink.committed(w(3)).expect("commit 3");
    assert_eq!(read_output(&out).expect("output"), b"one\ntwo\nthree\n");
    // The replay writes 4 and 5 again.
    sink_window(&mut sink, w(4), &["four"]);
    sink_window(&mut sink, w(5), &["five"]);
    sink.before_checkpoint(w(5)).expect("before_checkpoint");
    sink.committed(w(5)).expect("commit 5");
    assert_eq!(read_output(&out).expect("output"), b"one\ntwo\nthree\nfour\nfive\n");
    assert!(pending_files(&out).is_empty());
}

#[test]
fn a_replayed_window_already_published_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let mut sink = ExactlyOnceFileSink::<String>::new(&out);
    sink.setup(&ctx("sink", w(0), &storage)).expect("setup");
    sink_window(&mut sink, w(1), &["one"]);
    sink_window(&mut sink, w(2), &["two"]);
    sink.before_checkpoint(w(2)).expect("before_checkpoint");
    let at_2 = snapshot(&sink, "sink", w(2));
    sink_window(&mut sink, w(3), &["three"]);
    sink_window(&mut sink, w(4), &["four"]);
    sink.before_checkpoint(w(4)).expect("before_checkpoint");
    sink.committed(w(4)).expect("commit");
    assert_eq!(read_output(&out).expect("output"), b"one\ntwo\nthree\nfour\n");
    // The first incarnation is gone (it holds the directory's lock until then).
    sink.teardown();
    // A stale pending copy of a published window (as if left by a crash).
    fs::write(out.join(".pending").join("6553f10000000002"), "stale\n").expect("write");

    // Restored from the older checkpoint (the newest being unreadable, say).
    let mut sink = restore(&at_2, &ExactlyOnceFileSink::<String>::new(&out));
    assert_eq!(sink.last_published(), None);
    sink.setup(&ctx("sink", w(2), &storage)).expect("setup");
    assert!(
        pending_files(&out).is_empty(),
        "published windows leave no pending copy"
    );
    sink_window(&mut sink, w(3), &["something else"]);
    sink_window(&mut sink, w(4), &["entirely"]);
    assert!(
        pending_files(&out).is_empty(),
        "published windows are not written again"
    );
    sink_window(&mut sink, w(5), &["five"]);
    sink.before_checkpoint(w(5)).expect("before_checkpoint");
    sink.committed(w(5)).expect("commit");
    assert_eq!(read_output(&out).expect("output"), b"one\ntwo\nthree\nfour\nfive\n");
    assert_eq!(sink.last_published(), Some(w(5)));
}

#[test]
fn without_checkpointing_the_sink_publishes_every_window_at_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let mut sink = ExactlyOnceFileSink::<String>::new(&out);
    sink.setup(&OperatorContext::for_test("sink", w(0), None))
        .expect("setup");
    sink_window(&mut sink, w(1), &["a"]);
    assert_eq!(published_windows(&out).expect("published"), [w(1)]);
    sink_window(&mut sink, w(2), &["b", "c"]);
    assert_eq!(read_output(&out).expect("output"), b"a\nb\nc\n");
    assert!(pending_files(&out).is_empty());
}

#[test]
fn a_lost_pending_window_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let storage = fs_storage(&dir.path().join("checkpoints"));
    let mut sink = ExactlyOnceFileSink::<String>::new(&out);
    sink.setup(&ctx("sink", w(0), &storage)).expect("setup");
    sink_window(&mut sink, w(1), &["a"]);
    fs::remove_file(out.join(".pending").join("6553f10000000001")).expect("remove");
    let err = sink.committed(w(1)).expect_err("lost");
    let message = err.to_string();
    assert!(
        message.contains(&format!("the pending output of window {} is missing", w(1))),
        "{message}"
    );
    // Hooks before setup are errors, not panics.
    let mut fresh = ExactlyOnceFileSink::<String>::new(&out);
    assert!(fresh.begin_window(w(1)).is_err());
    let mut none = TestOutput::new();
    assert!(fresh.process("x".to_owned(), none.output()).is_err());
}

// ---------------------------------------------------------------------------
// The pipeline: LineInput -> per-window word count -> ExactlyOnceFileSink

/// Counts words per window and emits, at the end of each window that had
/// lines, the running line total, then `word count` lines sorted by word (a
/// `HashMap`'s order would differ between processes).
///
/// An empty window emits nothing: a job restored from its final checkpoint
/// (a crash after the last save) runs one more, empty, window before its
/// input says it is done again.
#[derive(Default, Checkpoint)]
struct WordCount {
    lines: u64,
    #[checkpoint(transient)]
    window: HashMap<String, u64>,
    #[checkpoint(transient)]
    lines_in_window: u64,
}

impl Operator for WordCount {
    type Input = String;
    type Output = String;

    fn process(&mut self, line: String, _out: Output<'_, String>) -> OperatorResult {
        self.lines += 1;
        self.lines_in_window += 1;
        for word in line.split_whitespace() {
            *self.window.entry(word.to_owned()).or_default() += 1;
        }
        Ok(())
    }

    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        if std::mem::take(&mut self.lines_in_window) == 0 {
            return Ok(());
        }
        out.emit(format!("lines so far: {}", self.lines));
        let mut counts: Vec<(String, u64)> = self.window.drain().collect();
        counts.sort();
        for (word, count) in counts {
            out.emit(format!("{word} {count}"));
        }
        Ok(())
    }
}

/// What the pipeline must publish, computed without any operator: windows
/// of `per_window` lines.
fn expected_output(text: &str, per_window: usize) -> Vec<u8> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut total = 0;
    for chunk in lines.chunks(per_window) {
        total += chunk.len();
        out.push_str(&format!("lines so far: {total}\n"));
        let mut counts = BTreeMap::<&str, u64>::new();
        for word in chunk.iter().flat_map(|l| l.split_whitespace()) {
            *counts.entry(word).or_default() += 1;
        }
        for (word, count) in counts {
            out.push_str(&format!("{word} {count}\n"));
        }
    }
    out.into_bytes()
}

const INPUT: &str = "lines";
const COUNT: &str = "count";
const SINK: &str = "sink";

/// Where a simulated crash (the process dies: nothing more is called) hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// After the input's first `emit_tuples` call of the window.
    MidWindow,
    /// After the input's `end_window` recorded the window, before the
    /// downstream operators got it.
    AfterRecord,
    /// After the input saved the checkpoint, before the others did.
    BetweenSaves,
    /// After every checkpoint is saved, before the commit.
    BeforeCommit,
    /// After the sink published the committed windows, before the input
    /// heard of the commit.
    DuringCommit,
}

/// A lock-step model of the runtime for one chain: windows in
/// `WindowMode::Tuples(per_window)`, a checkpoint every `every` windows,
/// recovery from each operator's recovery checkpoint computed from what is
/// on disk (a sink's newest readable one, an upstream's newest one not after
/// its downstream's), dropping whole windows an operator's checkpoint
/// already covers.
struct Harness {
    storage: Arc<dyn StorageAgent>,
    input_path: PathBuf,
    out: PathBuf,
    per_window: usize,
    every: u32,
    /// Windows the input replayed from its records, over all restores.
    replayed: std::cell::Cell<usize>,
}

struct Running {
    input: LineInput,
    count: WordCount,
    sink: ExactlyOnceFileSink<String>,
    /// The checkpoint each of input, count, sink was restored from.
    activation: [WindowId; 3],
    /// The newest window the input had a record of when restored.
    recorded_through: Option<WindowId>,
}

impl Harness {
    fn save<T: Checkpoint>(&self, op: &T, name: &str, window: WindowId) {
        self.storage
            .save(name, window, &snapshot(op, name, window))
            .expect("save checkpoint");
    }

    /// The operator values a run hands to the DAG.
    fn fresh(&self) -> Running {
        Running {
            input: LineInput::new(&self.input_path).lines_per_call(2),
            count: WordCount::default(),
            sink: ExactlyOnceFileSink::new(&self.out),
            activation: [w(0); 3],
            recorded_through: None,
        }
    }

    fn start(&self) -> Running {
        let mut run = self.fresh();
        run.input.setup(&ctx(INPUT, w(0), &self.storage)).expect("setup");
        run.count.setup(&ctx(COUNT, w(0), &self.storage)).expect("setup");
        run.sink.setup(&ctx(SINK, w(0), &self.storage)).expect("setup");
        self.save(&run.input, INPUT, w(0));
        self.save(&run.count, COUNT, w(0));
        self.save(&run.sink, SINK, w(0));
        run
    }

    /// The newest checkpoint of `name` that decodes, at or before `limit`.
    fn newest<T: Checkpoint>(&self, name: &str, limit: Option<WindowId>) -> (WindowId, T) {
        let windows = self.storage.windows(name).expect("windows");
        for &window in windows.iter().rev() {
            if limit.is_some_and(|limit| window > limit) {
                continue;
            }
            let decoded = self
                .storage
                .load(name, window)
                .ok()
                .and_then(|bytes| Snapshot::decode::<T>(&bytes).ok());
            if let Some((_, op)) = decoded {
                return (window, op);
            }
        }
        panic!("no readable checkpoint of {name}");
    }

    fn restore(&self) -> Running {
        let (sink_at, mut sink) = self.newest::<ExactlyOnceFileSink<String>>(SINK, None);
        let (count_at, mut count) = self.newest::<WordCount>(COUNT, Some(sink_at));
        let (input_at, mut input) = self.newest::<LineInput>(INPUT, Some(count_at));
        // As the runtime does: this run's configuration on the decoded state.
        let fresh = self.fresh();
        if let Some(config) = fresh.input.capture_config() {
            input.restore_config(&*config);
        }
        if let Some(config) = fresh.sink.capture_config() {
            sink.restore_config(&*config);
        }
        input.setup(&ctx(INPUT, input_at, &self.storage)).expect("setup input");
        count.setup(&ctx(COUNT, count_at, &self.storage)).expect("setup count");
        sink.setup(&ctx(SINK, sink_at, &self.storage)).expect("setup sink");
        let recorded_through = WindowDataManager::new(Arc::clone(&self.storage), INPUT)
            .largest_recorded()
            .expect("records");
        Running {
            input,
            count,
            sink,
            activation: [input_at, count_at, sink_at],
            recorded_through,
        }
    }

    /// Runs windows until the input is done or `crash` (window, point) hits.
    /// Returns whether the job finished.
    fn run(&self, run: &mut Running, crash: Option<(u32, Crash)>) -> bool {
        let crashes = |seq: u32, point: Crash| crash == Some((seq, point));
        let [input_at, count_at, sink_at] = run.activation;
        let mut seq = input_at.sequence() + 1;
        loop {
            let window = w(seq);
            let (counting, sinking) = (window > count_at, window > sink_at);
            let mut lines = TestOutput::<String>::new();
            let mut counted = TestOutput::<String>::new();
            let mut none = TestOutput::<()>::new();
            run.input.begin_window(window).expect("input begin");
            if counting {
                run.count.begin_window(window).expect("count begin");
            }
            if sinking {
                run.sink.begin_window(window).expect("sink begin");
            }
            let mut emitted = 0;
            let mut calls = 0;
            let done = loop {
                let emit = run.input.emit_tuples(lines.output()).expect("emit_tuples");
                calls += 1;
                let batch = lines.take();
                emitted += batch.len();
                if crashes(seq, Crash::MidWindow) {
                    return false;
                }
                for line in batch.into_iter().filter(|_| counting) {
                    run.count.process(line, counted.output()).expect("count process");
                }
                match emit {
                    Emit::Done => break true,
                    Emit::Continue if emitted >= self.per_window => break false,
                    Emit::Continue => {}
                    other => panic!("window {seq}: unexpected {other:?} in tuple mode"),
                }
            };
            if run.recorded_through.is_some_and(|through| window <= through) {
                // A replay: the whole recorded range in one call.
                assert_eq!(calls, 1, "window {seq} is replayed from its record");
                self.replayed.set(self.replayed.get() + 1);
            }
            run.input.end_window(lines.output()).expect("input end");
            assert!(lines.take().is_empty());
            if crashes(seq, Crash::AfterRecord) {
                return false;
            }
            if counting {
                run.count.end_window(counted.output()).expect("count end");
            }
            for tuple in counted.take().into_iter().filter(|_| sinking) {
                run.sink.process(tuple, none.output()).expect("sink process");
            }
            if sinking {
                run.sink.end_window(none.output()).expect("sink end");
            }

            if (seq + 1).is_multiple_of(self.every) || done {
                run.input.before_checkpoint(window).expect("before_checkpoint");
                self.save(&run.input, INPUT, window);
                if crashes(seq, Crash::BetweenSaves) {
                    return false;
                }
                if counting {
                    run.count.before_checkpoint(window).expect("before_checkpoint");
                    self.save(&run.count, COUNT, window);
                }
                if sinking {
                    run.sink.before_checkpoint(window).expect("before_checkpoint");
                    self.save(&run.sink, SINK, window);
                }
                run.input.checkpointed(window).expect("checkpointed");
                run.count.checkpointed(window).expect("checkpointed");
                run.sink.checkpointed(window).expect("checkpointed");
                if crashes(seq, Crash::BeforeCommit) {
                    return false;
                }
                // Every operator has a checkpoint at or after `window`.
                run.sink.committed(window).expect("sink committed");
                if crashes(seq, Crash::DuringCommit) {
                    return false;
                }
                run.count.committed(window).expect("count committed");
                run.input.committed(window).expect("input committed");
            }
            if done {
                run.input.teardown();
                run.count.teardown();
                run.sink.teardown();
                return true;
            }
            seq += 1;
        }
    }

    /// Runs the job to the end through the crash schedule, restoring after
    /// each crash (and before restoring, calling `between` with the crash).
    fn run_with_crashes(&self, schedule: &[(u32, Crash)], between: impl Fn(&Self, (u32, Crash))) {
        let mut run = self.start();
        for &crash in schedule {
            assert!(!self.run(&mut run, Some(crash)), "the crash at {crash:?} happened");
            drop(run);
            between(self, crash);
            run = self.restore();
        }
        assert!(self.run(&mut run, None), "the job finished");
    }
}

fn harness(dir: &Path, text: &str, per_window: usize, every: u32) -> Harness {
    Harness {
        storage: fs_storage(&dir.join("checkpoints")),
        input_path: write_input(dir, text),
        out: dir.join("out"),
        per_window,
        every,
        replayed: std::cell::Cell::new(0),
    }
}

#[test]
fn the_pipeline_without_failures_publishes_the_expected_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = generated_text(203);
    let job = harness(dir.path(), &text, 10, 3);
    job.run_with_crashes(&[], |_, _| {});
    let expected = expected_output(&text, 10);
    assert_eq!(read_output(&job.out).expect("output"), expected);
    assert_eq!(published_windows(&job.out).expect("published").len(), 21);
    assert!(pending_files(&job.out).is_empty());
}

#[test]
fn the_pipeline_output_is_exact_after_crashes_at_every_kind_of_point() {
    let text = generated_text(203);
    let expected = expected_output(&text, 10);
    let points = [
        Crash::MidWindow,
        Crash::AfterRecord,
        Crash::BetweenSaves,
        Crash::BeforeCommit,
        Crash::DuringCommit,
    ];
    // Checkpoints (every 3 windows) at sequences 2, 5, 8, ...; the last
    // window is 21. Crash in the first window, a checkpoint window, the one
    // after it, and the last.
    for point in points {
        for seq in [1u32, 2, 3, 5, 6, 20, 21] {
            let checkpoint_only = matches!(point, Crash::BetweenSaves | Crash::BeforeCommit | Crash::DuringCommit);
            if checkpoint_only && !((seq + 1).is_multiple_of(3) || seq == 21) {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let job = harness(dir.path(), &text, 10, 3);
            job.run_with_crashes(&[(seq, point)], |_, _| {});
            assert_eq!(
                String::from_utf8_lossy(&read_output(&job.out).expect("output")),
                String::from_utf8_lossy(&expected),
                "crash {point:?} at window {seq}"
            );
            assert!(pending_files(&job.out).is_empty(), "crash {point:?} at window {seq}");
        }
    }
}

#[test]
fn the_pipeline_output_is_exact_after_many_crashes_in_one_run() {
    let text = generated_text(311);
    let expected = expected_output(&text, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = harness(dir.path(), &text, 8, 4);
    // The same window can fail again after a restore.
    let schedule = [
        (2, Crash::MidWindow),
        (3, Crash::BetweenSaves),
        (3, Crash::BeforeCommit),
        (5, Crash::AfterRecord),
        (7, Crash::DuringCommit),
        (9, Crash::MidWindow),
        (11, Crash::BeforeCommit),
        (15, Crash::DuringCommit),
        (16, Crash::AfterRecord),
        (38, Crash::MidWindow),
        (39, Crash::BeforeCommit),
    ];
    job.run_with_crashes(&schedule, |_, _| {});
    assert_eq!(read_output(&job.out).expect("output"), expected);
    assert!(job.replayed.get() >= 10, "replayed {} windows", job.replayed.get());
}

#[test]
fn the_pipeline_output_is_exact_when_the_newest_checkpoints_are_corrupt() {
    let text = generated_text(150);
    let expected = expected_output(&text, 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = harness(dir.path(), &text, 10, 2);
    // Flip a byte of the newest checkpoint of one operator after each crash:
    // the restore falls back to its previous checkpoint, before the last
    // commit, and replays windows the others already processed or
    // published.
    let corrupt_newest = |job: &Harness, (seq, _): (u32, Crash)| {
        let name = [INPUT, COUNT, SINK][seq as usize % 3];
        let newest = *job
            .storage
            .windows(name)
            .expect("windows")
            .last()
            .expect("a checkpoint");
        let path = dir
            .path()
            .join("checkpoints")
            .join(name)
            .join(format!("{:016x}", newest.as_u64()));
        let mut bytes = fs::read(&path).expect("read");
        let at = bytes.len() - 5;
        bytes[at] ^= 0x01;
        fs::write(&path, bytes).expect("corrupt");
    };
    let schedule = [
        (6, Crash::MidWindow),
        (8, Crash::AfterRecord),
        (10, Crash::MidWindow),
        (12, Crash::MidWindow),
    ];
    job.run_with_crashes(&schedule, corrupt_newest);
    assert_eq!(read_output(&job.out).expect("output"), expected);
    assert!(job.replayed.get() >= 4, "replayed {} windows", job.replayed.get());
}

#[test]
fn a_real_job_publishes_the_expected_word_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = generated_text(1_001);
    let path = write_input(dir.path(), &text);
    let out = dir.path().join("out");
    let storage = fs_storage(&dir.path().join("checkpoints"));

    let mut dag = Dag::new();
    let lines = dag.input(INPUT, LineInput::new(&path).lines_per_call(5));
    let count = dag.operator(COUNT, WordCount::default());
    let sink = dag.operator(SINK, ExactlyOnceFileSink::<String>::new(&out));
    dag.connect(&lines, &count).connect(&count, &sink);
    dag.default_checkpoint_window_count(3);
    let config = Config::default()
        .shared_storage(Arc::clone(&storage))
        .window_mode(WindowMode::Tuples(50))
        .window_base(BASE)
        .batch_size(16);
    let report = Runtime::new(config).run(dag).expect("run");

    // 1,001 lines in windows of 50: 21 windows, the last of 1 line.
    assert_eq!(report.committed, Some(w(21)));
    assert_eq!(read_output(&out).expect("output"), expected_output(&text, 50));
    assert_eq!(
        published_windows(&out).expect("published"),
        (1..=21).map(w).collect::<Vec<_>>()
    );
    assert!(pending_files(&out).is_empty());
    // The input's records were purged up to the commit before the last one.
    let records = WindowDataManager::new(storage, INPUT).windows().expect("records");
    assert!(!records.is_empty() && records.iter().all(|r| *r > w(17)), "{records:?}");
}

#[test]
fn a_job_whose_input_file_is_missing_fails_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.txt");
    let mut dag = Dag::new();
    let lines = dag.input(INPUT, LineInput::new(&missing));
    let sink = dag.operator(SINK, ExactlyOnceFileSink::<String>::new(dir.path().join("out")));
    dag.connect(&lines, &sink);
    let config = Config::default().window_mode(WindowMode::Tuples(10));
    match Runtime::new(config).run(dag) {
        Err(RunError::OperatorFailed { operator, cause, .. }) => {
            assert_eq!(operator, INPUT);
            assert!(cause.contains("opening the input file"), "{cause}");
            assert!(cause.contains("missing.txt"), "{cause}");
        }
        other => panic!("expected the input to fail, got {other:?}"),
    }
}

/// The word-count job through the runtime: `text` in windows of 50 lines, a
/// checkpoint every 3 windows, `faults` injected.
fn word_count_job(
    dir: &Path,
    text: &str,
    faults: &[Fault],
    restart_limit: Option<u32>,
) -> (Result<checkpoint_runtime::RunReport, RunError>, PathBuf) {
    let path = write_input(dir, text);
    let out = dir.join("out");
    let mut dag = Dag::new();
    let lines = dag.input(INPUT, LineInput::new(&path).lines_per_call(5));
    let count = dag.operator(COUNT, WordCount::default());
    let sink = dag.operator(SINK, ExactlyOnceFileSink::<String>::new(&out));
    dag.connect(&lines, &count).connect(&count, &sink);
    dag.default_checkpoint_window_count(3);
    let mut config = Config::default()
        .shared_storage(fs_storage(&dir.join("checkpoints")))
        .window_mode(WindowMode::Tuples(50))
        .window_base(BASE)
        .batch_size(16);
    if let Some(limit) = restart_limit {
        config = config.restart_limit(limit);
    }
    for fault in faults {
        config = config.inject(fault.clone());
    }
    (Runtime::new(config).run(dag), out)
}

#[test]
fn a_real_job_recovering_from_failures_publishes_the_failure_free_output() {
    let text = generated_text(1_001);
    let expected = expected_output(&text, 50);
    // Checkpoints at windows 2, 5, 8, ...; the last window is 21.
    for (name, seq) in [
        (INPUT, 1),
        (INPUT, 2),
        (INPUT, 3),
        (INPUT, 21),
        (COUNT, 2),
        (COUNT, 3),
        (SINK, 1),
        (SINK, 3),
        (SINK, 21),
    ] {
        for fault in [
            Fault::panic(name, seq),
            Fault::error(name, seq).at(FaultPoint::Tuple(1)),
            Fault::error(name, seq).at(FaultPoint::EndWindow),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (report, out) = word_count_job(dir.path(), &text, std::slice::from_ref(&fault), None);
            let report = report.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
            assert_eq!(report.recoveries.len(), 1, "{fault:?}: {:?}", report.recoveries);
            assert_eq!(report.recoveries[0].operator, name, "{fault:?}");
            assert_eq!(
                String::from_utf8_lossy(&read_output(&out).expect("output")),
                String::from_utf8_lossy(&expected),
                "{fault:?}"
            );
            assert!(pending_files(&out).is_empty(), "{fault:?}");
        }
    }
}

#[test]
fn a_real_job_restarted_from_storage_publishes_the_failure_free_output() {
    let text = generated_text(1_001);
    let expected = expected_output(&text, 50);
    for (name, seq, corrupt_newest) in [
        (INPUT, 9, false),
        (COUNT, 10, false),
        (SINK, 12, false),
        (INPUT, 9, true),
        (SINK, 15, true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        // The first run fails for good (no restarts allowed).
        let fault = Fault::error(name, seq).at(FaultPoint::Tuple(3));
        let (first, out) = word_count_job(dir.path(), &text, &[fault], Some(0));
        assert!(
            matches!(&first, Err(RunError::OperatorFailed { operator, .. }) if operator == name),
            "{first:?}"
        );
        if corrupt_newest {
            let root = dir.path().join("checkpoints");
            let storage = fs_storage(&root);
            let newest = *storage.windows(name).expect("windows").last().expect("a checkpoint");
            let path = root.join(name).join(format!("{:016x}", newest.as_u64()));
            let mut bytes = fs::read(&path).expect("read");
            let at = bytes.len() - 5;
            bytes[at] ^= 0x01;
            fs::write(&path, bytes).expect("corrupt");
        }
        // The same job against the same storage resumes and finishes.
        let (second, _) = word_count_job(dir.path(), &text, &[], None);
        let second = second.unwrap_or_else(|e| panic!("{name} at {seq}: {e}"));
        assert!(!second.resumed_from.is_empty(), "{name} at {seq}: resumed");
        assert_eq!(
            String::from_utf8_lossy(&read_output(&out).expect("output")),
            String::from_utf8_lossy(&expected),
            "{name} at {seq}, corrupt newest: {corrupt_newest}"
        );
        assert!(pending_files(&out).is_empty());
    }
}
