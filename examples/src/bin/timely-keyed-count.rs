//! A keyed count with exactly-once output, run by the threaded runtime or
//! on timely workers, in one process or several:
//!
//! ```text
//! # the threaded runtime
//! cargo run -p checkpoint-examples --bin timely-keyed-count -- --engine threaded --output out-a --checkpoints ck-a
//! # three processes of one worker each, on loopback (start all three)
//! for p in 0 1 2; do
//!   cargo run -p checkpoint-examples --bin timely-keyed-count -- --engine timely --process $p \
//!     --addresses 127.0.0.1:2101,127.0.0.1:2102,127.0.0.1:2103 --output out-b --checkpoints ck-b &
//! done; wait
//! cat out-a/[0-9a-f]* | cmp - <(cat out-b/[0-9a-f]*)
//! ```
//!
//! Tuple `n` (`0 <= n < --tuples`) has key `n % --keys`; a keyed operator
//! counts per key and emits `key count` each time a key's count reaches a
//! multiple of 10; the lines of each window are sorted and published once
//! the window is committed, one file per window. The published files are
//! the same whatever the engine, process or worker count. A run on
//! checkpoints of an earlier run of the same job resumes it, on any number
//! of processes and threads (a rescale). `--checkpoints` is a directory
//! every process can reach or an `s3://bucket/prefix`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, FsStorageAgent, KeyedMap, StorageAgent};
use checkpoint_object_store::location::CheckpointLocation;
use checkpoint_runtime::io::{ExactlyOnceFileSink, SortWindow};
use checkpoint_runtime::{Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, Runtime, WindowMode};
use checkpoint_timely::{Cluster, TimelyJob};

/// The window ids' base: fixed, so every engine names output files alike.
const BASE: u32 = 1_700_000_000;

#[derive(Checkpoint)]
struct Numbers {
    next: u64,
    end: u64,
    /// Microseconds to wait before each ten tuples (`--pace`), so a test
    /// can kill a run part-way.
    #[checkpoint(config)]
    pace_us: u64,
}

impl InputOperator for Numbers {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        if self.pace_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(self.pace_us));
        }
        let end = (self.next + 10).min(self.end);
        for n in self.next..end {
            out.emit(n);
        }
        self.next = end;
        Ok(if self.next == self.end {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

#[derive(Default, Checkpoint)]
struct Count {
    #[checkpoint(keyed)]
    counts: KeyedMap<u64, u64>,
    #[checkpoint(config)]
    keys: u64,
}

impl Operator for Count {
    type Input = u64;
    type Output = String;
    fn process(&mut self, n: u64, out: Output<'_, String>) -> OperatorResult {
        let key = n % self.keys;
        let count = self.counts.entry(key).or_insert(0);
        *count += 1;
        if (*count).is_multiple_of(10) {
            out.emit(format!("{key} {count}"));
        }
        Ok(())
    }
}

struct Settings {
    engine: String,
    process: usize,
    addresses: Vec<String>,
    threads: usize,
    output: PathBuf,
    checkpoints: CheckpointLocation,
    tuples: u64,
    keys: u64,
    window: u64,
    pace_us: u64,
}

fn parse() -> Result<Settings, String> {
    let mut settings = Settings {
        engine: "timely".to_owned(),
        process: 0,
        addresses: Vec::new(),
        threads: 1,
        output: PathBuf::from("out"),
        checkpoints: CheckpointLocation::Directory(PathBuf::from("checkpoints")),
        tuples: 30_000,
        keys: 97,
        window: 1_000,
        pace_us: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--engine" => settings.engine = value()?,
            "--process" => settings.process = number(value()?)? as usize,
            "--addresses" => settings.addresses = value()?.split(',').map(str::to_owned).collect(),
            "--threads" => settings.threads = number(value()?)? as usize,
            "--output" => settings.output = PathBuf::from(value()?),
            "--checkpoints" => settings.checkpoints = value()?.parse()?,
            "--tuples" => settings.tuples = number(value()?)?,
            "--keys" => settings.keys = number(value()?)?.max(1),
            "--window" => settings.window = number(value()?)?.max(1),
            "--pace" => settings.pace_us = number(value()?)?,
            "--help" | "-h" => {
                return Err(
                    "usage: timely-keyed-count [--engine threaded|timely] [--process P --addresses \
                     h:p,h:p,...] [--threads T] [--output DIR] [--checkpoints DIR|s3://BUCKET/PREFIX] [--tuples N] [--keys K] \
                     [--window W] [--pace MICROSECONDS]"
                        .to_owned(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(settings)
}

fn dag(output: PathBuf, tuples: u64, keys: u64, pace_us: u64) -> Dag {
    let mut dag = Dag::new();
    let numbers = dag.input(
        "numbers",
        Numbers {
            next: 0,
            end: tuples,
            pace_us,
        },
    );
    let count = dag.operator_partitioned("count", 2, move |_| Count {
        counts: KeyedMap::default(),
        keys,
    });
    let sort = dag.operator("sort", SortWindow::<String>::new());
    let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(output));
    dag.connect_by_key(&numbers, &count, move |n: &u64| *n % keys)
        .connect(&count, &sort)
        .connect(&sort, &sink);
    dag.default_checkpoint_window_count(5);
    dag
}

fn run(settings: Settings) -> Result<String, String> {
    let storage: Arc<dyn StorageAgent> = match &settings.checkpoints {
        // The other processes of a cluster leave the directory to process
        // 0, whose sweep of temp files takes the directory's lock.
        CheckpointLocation::Directory(dir) if settings.process > 0 => {
            Arc::new(FsStorageAgent::new(dir).map_err(|e| format!("{}: {e}", dir.display()))?)
        }
        location => location.open()?,
    };
    let Settings {
        output,
        tuples,
        keys,
        pace_us,
        ..
    } = settings;
    match settings.engine.as_str() {
        "threaded" => {
            let config = Config::default()
                .shared_storage(storage)
                .window_mode(WindowMode::Tuples(settings.window))
                .window_base(BASE);
            let report = Runtime::new(config)
                .run(dag(output, tuples, keys, pace_us))
                .map_err(|e| e.to_string())?;
            Ok(format!("committed {:?}", report.committed))
        }
        "timely" => {
            let mut job = TimelyJob::new(settings.threads)
                .window_tuples(settings.window)
                .window_base(BASE)
                .storage(storage);
            if !settings.addresses.is_empty() {
                job = job.cluster(Cluster {
                    process: settings.process,
                    addresses: settings.addresses,
                });
            }
            let report = job
                .run(move || dag(output.clone(), tuples, keys, pace_us))
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "{} workers opened {} windows, committed {:?}",
                report.workers, report.windows, report.committed
            ))
        }
        other => Err(format!("unknown engine {other:?}: threaded or timely")),
    }
}

fn main() -> ExitCode {
    match parse().and_then(run) {
        Ok(summary) => {
            println!("timely-keyed-count: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("timely-keyed-count: {e}");
            ExitCode::FAILURE
        }
    }
}
