//! Fencing on an S3 endpoint: one job per prefix. A second job is refused
//! while the first runs and resumes after it; a job whose holder died
//! takes the prefix over after one lease period; a job cut off from the
//! store long enough to be taken over stops, once it reaches the store
//! again, and deletes nothing.

mod common;
mod proxy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use checkpoint_core::{Checkpoint, StorageAgent, StorageError};
use checkpoint_object_store::ObjectStoreAgent;
use checkpoint_runtime::{
    Config, Dag, Emit, InputOperator, JobManifest, Operator, OperatorResult, Output, RunError, RunReport, Runtime,
    WindowMode,
};
use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload};
use proxy::{Fault, Proxy, Rule};

const TUPLES: u64 = 600;
const LEASE: Duration = Duration::from_millis(600);

/// Emits `0..TUPLES`, holding still (idle) at `TUPLES / 2` until released.
#[derive(Checkpoint)]
struct Gated {
    next: u64,
    #[checkpoint(transient)]
    gate: Option<Arc<AtomicBool>>,
}

impl InputOperator for Gated {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        let open = self.gate.as_ref().is_none_or(|g| g.load(Ordering::SeqCst));
        if self.next >= TUPLES / 2 && !open {
            return Ok(Emit::Idle);
        }
        out.emit(self.next);
        self.next += 1;
        Ok(if self.next == TUPLES {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

#[derive(Default, Checkpoint)]
struct Sum {
    total: u64,
}

impl Operator for Sum {
    type Input = u64;
    type Output = ();
    fn process(&mut self, n: u64, _out: Output<'_, ()>) -> OperatorResult {
        self.total += n;
        Ok(())
    }
}

fn run(url: &str, gate: Option<Arc<AtomicBool>>) -> Result<RunReport, RunError> {
    run_on(Arc::new(common::agent_at(url).with_lease(LEASE)), gate, |c| c)
}

fn run_on(
    storage: Arc<dyn StorageAgent>,
    gate: Option<Arc<AtomicBool>>,
    tune: impl FnOnce(Config) -> Config,
) -> Result<RunReport, RunError> {
    let mut dag = Dag::new();
    let numbers = dag.input("numbers", Gated { next: 0, gate });
    let sum = dag.operator("sum", Sum::default());
    dag.connect(&numbers, &sum).default_checkpoint_window_count(2);
    let config = Config::default()
        .shared_storage(storage)
        .window_mode(WindowMode::Tuples(20))
        .window_base(0x6553_f100)
        .restart_limit(0);
    Runtime::new(tune(config)).run(dag)
}

fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    std::thread::spawn(f)
}

/// Waits for `f` to hold, failing the test after 60 s (a hang).
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: {what} did not happen in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn manifest(url: &str) -> Option<JobManifest> {
    let bytes = common::agent_at(url).load_manifest().expect("manifest")?;
    Some(JobManifest::from_bytes(&bytes).expect("a manifest"))
}

/// Every object under the prefix: path and ETag (which a rewrite changes).
fn objects(url: &str) -> BTreeMap<String, Option<String>> {
    let (store, prefix) = raw_store(url);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
        .expect("list")
        .into_iter()
        .map(|meta| (meta.location.to_string(), meta.e_tag))
        .collect()
}

/// The `holder=` line of the prefix's lease.
fn lease_holder(url: &str) -> String {
    let (store, prefix) = raw_store(url);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let lease = runtime
        .block_on(async { store.get(&prefix.child(".lease")).await?.bytes().await })
        .expect("lease");
    let lease = String::from_utf8(lease.to_vec()).expect("text");
    lease
        .lines()
        .find(|l| l.starts_with("holder="))
        .expect("a holder")
        .to_owned()
}

fn put_raw(url: &str, name: &str, bytes: Vec<u8>) {
    let (store, prefix) = raw_store(url);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(store.put(&prefix.child(name), PutPayload::from(bytes)))
        .expect("put");
}

/// The first job, started and holding still half way with a committed
/// window; its gate and its thread.
fn first_job_half_way(url: &str) -> (Arc<AtomicBool>, std::thread::JoinHandle<Result<RunReport, RunError>>) {
    let gate = Arc::new(AtomicBool::new(false));
    let first = in_thread({
        let (url, gate) = (url.to_owned(), Arc::clone(&gate));
        move || run(&url, Some(gate))
    });
    wait_for("a commit of the first job", || {
        assert!(
            !first.is_finished(),
            "the first job ended early: {:?}",
            first.is_finished()
        );
        manifest(url).is_some_and(|m| m.committed.is_some_and(|c| c.sequence() >= 4))
    });
    (gate, first)
}

#[test]
fn a_second_job_is_refused_while_the_first_runs_and_resumes_after_it() {
    let url = common::location("jobs/second");
    let (gate, first) = first_job_half_way(&url);
    let holder = lease_holder(&url);
    let second = run(&url, None).expect_err("the prefix is in use");
    assert!(
        matches!(second, RunError::Storage(StorageError::Locked { .. })),
        "{second}"
    );
    assert!(second.to_string().contains("in use by another job"), "{second}");
    assert!(second.to_string().contains(&url), "names the prefix: {second}");
    // The refused job took nothing: the lease and the generation are the
    // first job's.
    assert_eq!(lease_holder(&url), holder);
    assert_eq!(manifest(&url).expect("manifest").generation, 1);

    gate.store(true, Ordering::SeqCst);
    let report = first.join().expect("thread").expect("the first job, unharmed");
    assert!(report.resumed_from.is_empty());
    // Released at its end: the next job takes the prefix at once and
    // resumes from what the first left.
    let resumed = run(&url, None).expect("resumed");
    assert!(!resumed.resumed_from.is_empty(), "{resumed:?}");
    assert_eq!(manifest(&url).expect("manifest").generation, 2);
}

#[test]
fn a_job_whose_holder_died_takes_the_prefix_over_after_one_lease_period() {
    let url = common::location("jobs/dead");
    // What a killed job leaves: a lease still marked held, never renewed.
    put_raw(
        &url,
        ".lease",
        b"holder=process 1 on a crashed host (run 0)\nlease_ms=300\nstate=held\nbeat=7\n".to_vec(),
    );
    let started = std::time::Instant::now();
    run(&url, None).expect("took over and ran");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited the dead holder's lease period first"
    );
    let (store, prefix) = raw_store(&url);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let lease = runtime
        .block_on(async { store.get(&prefix.child(".lease")).await?.bytes().await })
        .expect("lease");
    let lease = String::from_utf8(lease.to_vec()).expect("text");
    assert!(lease.contains("state=released"), "{lease}");
    assert!(!lease.contains("crashed host"), "{lease}");
}

#[test]
fn a_job_cut_off_from_the_store_is_taken_over_and_then_stops_and_deletes_nothing() {
    let proxy = Proxy::start(&common::endpoint());
    let url = common::location("jobs/superseded");
    // The first job reaches the endpoint through the proxy; its requests
    // give up after 2 s.
    let gate = Arc::new(AtomicBool::new(false));
    let first = in_thread({
        let (url, gate, endpoint) = (url.clone(), Arc::clone(&gate), proxy.url());
        move || {
            let mut settings = common::settings();
            settings.push(("timeout", "2s".to_owned()));
            for (key, value) in &mut settings {
                if *key == "aws_endpoint" {
                    value.clone_from(&endpoint);
                }
            }
            let agent = ObjectStoreAgent::from_url_with(&url, settings.iter().map(|(k, v)| (*k, v.as_str())))
                .expect("agent")
                .with_lease(LEASE);
            // Saves failing while it is cut off are tolerated: what stops
            // it is the takeover.
            run_on(Arc::new(agent), Some(gate), |c| {
                c.save_timeout(Duration::from_secs(2))
                    .stop_timeout(Duration::from_secs(10))
                    .tolerable_failed_checkpoints(u32::MAX)
            })
        }
    });
    wait_for("a commit of the first job", || {
        assert!(!first.is_finished(), "the first job ended early");
        manifest(&url).is_some_and(|m| m.committed.is_some_and(|c| c.sequence() >= 4))
    });
    // Cut off from the store (every request swallowed), the first job goes
    // on: it would commit, and delete what its commits make obsolete.
    proxy.set(Rule {
        method: "*",
        path: String::new(),
        skip: 0,
        count: u32::MAX,
        fault: Fault::Swallow,
    });
    let cut = std::time::Instant::now();
    gate.store(true, Ordering::SeqCst);
    // A second job sees the lease silent for a whole period, takes the
    // prefix over and runs the job to its end.
    let second = run(&url, None).expect("the second job takes over");
    assert!(cut.elapsed() >= LEASE, "took over only after a silent lease period");
    assert!(!second.resumed_from.is_empty(), "{second:?}");
    let taken = manifest(&url).expect("manifest");
    assert_eq!(taken.generation, 2);
    let before = objects(&url);
    // The first job reaches the store again: it finds its lease taken and
    // stops, and deletes nothing of the second job's.
    proxy.clear();
    let error = first.join().expect("thread").expect_err("superseded");
    assert!(
        matches!(error, RunError::Storage(StorageError::Superseded { .. })),
        "{error}"
    );
    let after = objects(&url);
    let changed: Vec<_> = before
        .iter()
        .filter(|(path, e_tag)| after.get(*path) != Some(e_tag))
        .map(|(path, _)| path)
        .collect();
    assert!(
        changed.is_empty(),
        "the superseded job deleted or rewrote {changed:?} ({error})"
    );
    assert_eq!(
        manifest(&url),
        Some(taken),
        "the second job's manifest is untouched ({error})"
    );
}

#[test]
fn of_jobs_that_start_together_exactly_one_gets_the_prefix() {
    let url = common::location("jobs/race");
    const STARTERS: usize = 4;
    let barrier = Arc::new(Barrier::new(STARTERS));
    let starters: Vec<_> = (0..STARTERS)
        .map(|_| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            in_thread(move || {
                let agent = common::agent_at(&url).with_lease(LEASE);
                barrier.wait();
                let lock = agent.lock();
                // Every starter has its answer before the winner lets go.
                barrier.wait();
                lock.map(|_| ())
            })
        })
        .collect();
    let results: Vec<_> = starters.into_iter().map(|s| s.join().expect("thread")).collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for result in &results {
        if let Err(e) = result {
            assert!(matches!(e, StorageError::Locked { .. }), "{e}");
        }
    }
}

/// A plain S3 client on the bucket of `url` and the prefix's path in it,
/// for tests that look at or write objects behind an agent's back.
fn raw_store(url: &str) -> (object_store::aws::AmazonS3, object_store::path::Path) {
    let rest = url.strip_prefix("s3://").expect("an s3:// URL");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
    for (key, value) in common::settings() {
        builder = builder.with_config(key.parse().expect("a setting"), value);
    }
    (builder.build().expect("client"), object_store::path::Path::from(prefix))
}
