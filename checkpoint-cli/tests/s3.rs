//! The `checkpoint` tool on an S3 prefix, against an S3 endpoint on
//! loopback (`CHECKPOINT_S3_ENDPOINT`, or a moto server this test process
//! starts): it reads and purges the prefix as it does a directory holding
//! the same checkpoints. The checkpoints are the `ride-stats` example job's,
//! run in this process through the `checkpoint-examples` library (as its
//! binary runs it, with `--deterministic 300`); the tool gets the endpoint
//! the way a user gives it, through the `AWS_*` environment variables.

#[path = "../../checkpoint-object-store/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use checkpoint_core::{FsStorageAgent, StorageAgent, WindowId};
use checkpoint_examples::rides::{self, JobSettings};
use checkpoint_runtime::{Config, Runtime, WindowMode};

/// `ride-stats --deterministic`'s window base.
const DETERMINISTIC_BASE: u32 = 1_700_000_000;

/// A small deterministic `ride-stats` job (`--rides 9000 --deterministic 300
/// --app-windows 2 --checkpoint-every 4 --rate 0 --seed 11`): 30 windows of
/// 300 rides, a checkpoint every 4, checkpointed to `storage`.
fn run_small_job(storage: Arc<dyn StorageAgent>, output: &Path) {
    let settings = JobSettings {
        seed: 11,
        application_windows: 2,
        checkpoint_every: 4,
        ..JobSettings::new(9_000, output)
    };
    let config = Config::default()
        .shared_storage(storage)
        .window_mode(WindowMode::Tuples(300))
        .window_base(DETERMINISTIC_BASE);
    let report = Runtime::new(config).run(rides::dag(&settings)).expect("the job runs");
    assert_eq!(report.operator(rides::STATS).map(|o| o.tuples_in), Some(9_000));
}

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

fn checkpoint(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_checkpoint"));
    if args.iter().any(|a| a.starts_with("s3://")) {
        common::s3_env(&mut command);
    }
    command.args(args).output().expect("run checkpoint")
}

/// Runs the tool; panics unless it succeeds. Returns stdout.
fn ok(args: &[&str]) -> String {
    let output = checkpoint(args);
    assert!(
        output.status.success(),
        "checkpoint {args:?} failed:\n{}",
        describe(&output)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// Copies everything an agent holds (snapshots, chunks, manifest) to a
/// checkpoint directory.
fn copy_to_directory(from: &dyn StorageAgent, to: &Path) {
    let copy = FsStorageAgent::new(to).expect("directory");
    for op in from.operators().expect("operators") {
        for window in from.windows(&op).expect("windows") {
            copy.save(&op, window, &from.load(&op, window).expect("load"))
                .expect("save");
        }
        for id in from.chunks(&op).expect("chunks") {
            copy.save_chunks(&op, &[(id, from.load_chunk(&op, id).expect("load chunk"))])
                .expect("save chunk");
        }
    }
    copy.save_manifest(&from.load_manifest().expect("manifest").expect("a manifest"))
        .expect("save manifest");
}

/// `ls` output without what names the location: its first line, the
/// object store's note, and the word for the groups in the total.
fn ls_body(ls: &str) -> String {
    ls.lines()
        .skip(1)
        .filter(|l| !l.starts_with("note: "))
        .map(|l| l.replace("operator prefixes", "directories"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of `ls` that a run of the same deterministic job shows
/// wherever it checkpointed: the committed window and each operator's
/// recovery checkpoint.
fn ls_recovery(ls: &str) -> Vec<&str> {
    ls.lines()
        .filter(|l| l.starts_with("committed window:") || l.contains(": recovery checkpoint "))
        .collect()
}

/// `<operator>/<window>` of each snapshot `purge` names on a line
/// `<verb> <root>/<operator>/<window>  <size>` (not the summary line).
fn purged(out: &str, verb: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(verb)?.split_whitespace().next())
        .filter_map(|location| {
            let mut parts = location.rsplit('/');
            let window = parts.next()?;
            let operator = parts.next()?;
            Some(format!("{operator}/{window}"))
        })
        .collect()
}

#[test]
fn the_checkpoint_tool_reads_and_purges_an_s3_prefix_as_it_does_a_directory() {
    let url = common::location("jobs/tool");
    let work = tempfile::tempdir().expect("tempdir");
    run_small_job(Arc::new(common::agent_at(&url)), &work.path().join("out-s3"));
    let directory = work.path().join("checkpoints");
    let dir = directory.to_str().expect("utf-8 path");
    run_small_job(
        Arc::new(FsStorageAgent::new(&directory).expect("directory")),
        &work.path().join("out-dir"),
    );
    // The same checkpoints in a directory: the tool's two ways of reading
    // must agree on them line for line.
    let copy_path = work.path().join("copy");
    let copy = copy_path.to_str().expect("utf-8 path");
    copy_to_directory(&common::agent_at(&url), &copy_path);

    // ls
    let ls_s3 = ok(&["ls", &url]);
    assert!(ls_s3.starts_with(&format!("checkpoint store {url}\n")), "{ls_s3}");
    assert!(
        ls_s3.contains("note: an S3 prefix is read through its storage agent"),
        "{ls_s3}"
    );
    assert!(
        ls_s3.contains("stray objects under the prefix are not reported"),
        "{ls_s3}"
    );
    let ls_copy = ok(&["ls", copy]);
    assert_eq!(ls_body(&ls_s3), ls_body(&ls_copy));
    let ls_dir = ok(&["ls", dir]);
    let recovery = ls_recovery(&ls_s3);
    assert_eq!(recovery.len(), 4, "the committed window and three operators:\n{ls_s3}");
    assert_eq!(recovery, ls_recovery(&ls_dir), "S3:\n{ls_s3}\ndirectory:\n{ls_dir}");
    assert!(
        ls_s3.contains("committed window: 0x6553f1000000001e (#30)"),
        "30 windows of 300 rides:\n{ls_s3}"
    );
    let stored = listing(&common::agent_at(&url));
    for (op, windows) in &stored {
        for w in windows {
            assert!(
                ls_s3.contains(&format!("    {w}  #{}", w.sequence())),
                "{op} {w} not listed:\n{ls_s3}"
            );
        }
    }

    // verify
    let snapshots: usize = stored.values().map(Vec::len).sum();
    let verified = ok(&["verify", &url]);
    assert!(
        verified.contains(&format!(
            "verified {snapshots} snapshots in 3 operator prefixes: all ok"
        )),
        "{verified}"
    );
    assert!(
        verified.contains("stray objects under the prefix are not reported"),
        "{verified}"
    );
    let verbose = ok(&["verify", "-v", &url]);
    assert!(
        verbose.contains(&format!("ok       {url}/.manifest: job manifest, 3 operators")),
        "{verbose}"
    );
    assert!(
        verbose.contains("ok       a restart can resume every operator"),
        "{verbose}"
    );

    let missing = checkpoint(&["show", &url, "nosuch"]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        err.contains(&format!(
            "no operator \"nosuch\" in {url} (it has: output, rides, stats)"
        )),
        "{err}"
    );

    // show and dump: the newest snapshot of `stats`, as the copy shows it.
    let newest = *stored["stats"].last().expect("a stats checkpoint");
    let show = ok(&["show", &url, "stats"]);
    assert!(
        show.starts_with(&format!("object:         {url}/stats/{:016x}\n", newest.as_u64())),
        "{show}"
    );
    assert!(show.contains("placement:      ok"), "{show}");
    assert!(show.contains("type:           RideStats"), "{show}");
    let show_copy = ok(&["show", copy, "stats"]);
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&show), body(&show_copy));
    let window = newest.to_string();
    let dump = ok(&["dump", &url, "stats", &window, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&dump).expect("JSON");
    assert!(json.is_object(), "{dump}");
    assert_eq!(dump, ok(&["dump", copy, "stats", &window, "--json"]));
    assert_eq!(
        dump,
        ok(&["dump", dir, "stats", &window, "--json"]),
        "the directory run's state"
    );

    // purge: a dry run deletes nothing; then both delete the same windows
    // and keep the same ones, and recovery still finds everything.
    let would = ok(&["purge", &url, "--keep", "0", "--dry-run"]);
    assert_eq!(
        listing(&common::agent_at(&url)),
        stored,
        "--dry-run deleted something:\n{would}"
    );
    let out_s3 = ok(&["purge", &url, "--keep", "0"]);
    let out_copy = ok(&["purge", copy, "--keep", "0"]);
    let deleted = purged(&out_s3, "deleted ");
    assert!(!deleted.is_empty(), "nothing to purge in {stored:?}:\n{out_s3}");
    assert_eq!(purged(&would, "would delete "), deleted);
    assert_eq!(deleted, purged(&out_copy, "deleted "));
    let after = listing(&common::agent_at(&url));
    assert_eq!(
        after,
        listing(&FsStorageAgent::new(&copy_path).expect("copy")),
        "S3:\n{out_s3}\ncopy:\n{out_copy}"
    );
    assert_ne!(after, stored);
    assert_eq!(ls_recovery(&ok(&["ls", &url])), recovery, "purge changed recovery");
    assert!(ok(&["verify", &url]).contains("all ok"));
    // What `ride-stats` reads to say "the job ... already finished".
    let job = rides::stored_job(&common::agent_at(&url))
        .expect("the job after purge")
        .expect("a job");
    assert_eq!(job.source.position(), job.source.end(), "the job still finished");
}

#[test]
fn an_empty_prefix_is_a_clear_error() {
    let url = common::location("nothing/here");
    let output = checkpoint(&["ls", &url]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(err.contains(&format!("{url} holds no checkpoints")), "{err}");
    assert!(err.contains("AWS_ENDPOINT_URL"), "{err}");
    let output = checkpoint(&["purge", &url, "--keep", "1"]);
    assert!(!output.status.success(), "{}", describe(&output));
}

#[test]
fn malformed_urls_are_usage_errors() {
    // No endpoint needed: these fail before any request.
    for bad in ["s3://", "s3:///prefix", "S3://bucket/x", "gs://bucket/x"] {
        let output = Command::new(env!("CARGO_BIN_EXE_checkpoint"))
            .args(["ls", bad])
            .output()
            .expect("run checkpoint");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("s3://BUCKET/PREFIX"), "{bad}: {err}");
    }
}
