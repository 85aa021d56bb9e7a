//! keyed-count on the timely mode against the threaded runtime: tuple `i`
//! has key `splitmix64(i) % K`, a keyed operator counts per key
//! (`KeyedMap`), windows of a fixed tuple count.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-timely --bench keyed_count
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-timely --bench keyed_count -- \
//!     --tuples 20000000 --keys 100000 --runs 3 --checkpoints off,10
//! ```
//!
//! Configurations, interleaved: `threaded` (the threaded runtime, its keyed
//! operator in 2 partitions), `timely-1x2` (one process, 2 worker threads)
//! and `timely-2x1` (2 processes of 1 worker on loopback: the benchmark
//! runs itself twice, and the time is the workers', from their start to
//! their end, without timely's connection setup of about a second). Each
//! with checkpoints `off` or every `C` windows (`--checkpoints off,C,...`)
//! into a directory under `--dir` (default `/tmp`). Every run prints one
//! JSON line on stdout; the medians follow on stderr. Flags: `--tuples N`
//! (default 20,000,000), `--keys K` (100,000), `--window W` tuples (100,000),
//! `--runs R` (3), `--engines E,...` (all three), `--sources S` (1): the
//! source as `S` input partitions, each generating its share of the tuples
//! (`W / S` per window each), on every worker of the timely mode.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use checkpoint_core::{Checkpoint, FsStorageAgent, KeyedMap, StorageAgent, splitmix64};
use checkpoint_runtime::{Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, Runtime, WindowMode};
use checkpoint_timely::{Cluster, TimelyJob};

#[derive(Checkpoint)]
struct Keys {
    next: u64,
    end: u64,
    #[checkpoint(config)]
    keys: u64,
}

impl InputOperator for Keys {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        let end = (self.next + 1_000).min(self.end);
        for i in self.next..end {
            out.emit(splitmix64(i) % self.keys);
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
}

impl Operator for Count {
    type Input = u64;
    type Output = ();
    fn process(&mut self, key: u64, _out: Output<'_, ()>) -> OperatorResult {
        *self.counts.entry(key).or_insert(0) += 1;
        Ok(())
    }
}

#[derive(Clone)]
struct Settings {
    tuples: u64,
    keys: u64,
    window: u64,
    runs: usize,
    checkpoints: Vec<Option<u32>>,
    engines: Vec<String>,
    dir: PathBuf,
    sources: usize,
}

impl Settings {
    /// Tuples per window of each source partition.
    fn window_per_source(&self) -> u64 {
        (self.window / self.sources as u64).max(1)
    }
}

fn dag(settings: &Settings, every: Option<u32>) -> Dag {
    let mut dag = Dag::new();
    let (tuples, sources, k) = (settings.tuples, settings.sources as u64, settings.keys);
    let share = move |p: u64| Keys {
        next: tuples * p / sources,
        end: tuples * (p + 1) / sources,
        keys: k,
    };
    let keys = if settings.sources > 1 {
        dag.input_partitioned("keys", settings.sources, move |p| share(p as u64))
    } else {
        dag.input("keys", share(0))
    };
    let count = dag.operator_partitioned("count", 2, |_| Count::default());
    dag.connect_by_key(&keys, &count, |k: &u64| *k);
    dag.default_checkpoint_window_count(every.unwrap_or(1_000_000));
    dag
}

fn storage(dir: &std::path::Path) -> Arc<dyn StorageAgent> {
    Arc::new(FsStorageAgent::new(dir).expect("checkpoint directory"))
}

/// One run; the seconds it took.
fn run(settings: &Settings, engine: &str, every: Option<u32>) -> f64 {
    let dir = tempfile::tempdir_in(&settings.dir).expect("tempdir");
    match engine {
        "threaded" => {
            let mut config = Config::default().window_mode(WindowMode::Tuples(settings.window_per_source()));
            if every.is_some() {
                config = config.shared_storage(storage(dir.path()));
            }
            let start = Instant::now();
            Runtime::new(config).run(dag(settings, every)).expect("threaded run");
            start.elapsed().as_secs_f64()
        }
        "timely-1x2" => {
            let mut job = TimelyJob::new(2).window_tuples(settings.window_per_source());
            if every.is_some() {
                job = job.storage(storage(dir.path()));
            }
            let shared = settings.clone();
            let start = Instant::now();
            job.run(move || dag(&shared, every)).expect("timely run");
            start.elapsed().as_secs_f64()
        }
        "timely-2x1" => {
            let ports: Vec<u16> = {
                let listeners: Vec<_> = (0..2)
                    .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
                    .collect();
                listeners
                    .iter()
                    .map(|l| l.local_addr().expect("address").port())
                    .collect()
            };
            let addresses = ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",");
            let children: Vec<_> = (0..2)
                .map(|process| {
                    Command::new(std::env::current_exe().expect("own path"))
                        .args(["--child", &process.to_string(), &addresses])
                        .args(["--tuples", &settings.tuples.to_string()])
                        .args(["--keys", &settings.keys.to_string()])
                        .args(["--window", &settings.window.to_string()])
                        .args(["--sources", &settings.sources.to_string()])
                        .args(["--every", &every.map_or("off".to_owned(), |e| e.to_string())])
                        .args(["--dir", dir.path().to_str().expect("utf-8")])
                        .stdout(Stdio::piped())
                        .spawn()
                        .expect("spawn")
                })
                .collect();
            let mut seconds = 0.0;
            for child in children {
                let output = child.wait_with_output().expect("child");
                assert!(output.status.success(), "a child failed");
                if let Some(s) = String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("seconds ").map(str::to_owned))
                {
                    seconds = s.parse().expect("seconds");
                }
            }
            seconds
        }
        other => panic!("unknown engine {other}"),
    }
}

/// One process of `timely-2x1`: prints its dataflow's seconds.
fn child(args: &[String]) {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let settings = Settings {
        tuples: value("--tuples").parse().expect("tuples"),
        keys: value("--keys").parse().expect("keys"),
        window: value("--window").parse().expect("window"),
        runs: 1,
        checkpoints: Vec::new(),
        engines: Vec::new(),
        dir: PathBuf::from(value("--dir")),
        sources: value("--sources").parse().expect("sources"),
    };
    let every = value("--every").parse::<u32>().ok();
    let process: usize = args[1].parse().expect("process");
    let addresses = args[2].split(',').map(str::to_owned).collect();
    let mut job = TimelyJob::new(1)
        .window_tuples(settings.window_per_source())
        .cluster(Cluster { process, addresses });
    if every.is_some() {
        job = job.storage(storage(&settings.dir));
    }
    let shared = settings.clone();
    // Timely connects the processes (about a second) before a worker runs:
    // the report's time starts with the workers.
    let report = job.run(move || dag(&shared, every)).expect("timely run");
    println!("seconds {}", report.seconds);
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args);
        return;
    }
    let mut settings = Settings {
        tuples: 20_000_000,
        keys: 100_000,
        window: 100_000,
        runs: 3,
        checkpoints: vec![None, Some(10)],
        engines: vec!["threaded".into(), "timely-1x2".into(), "timely-2x1".into()],
        dir: std::env::temp_dir(),
        sources: 1,
    };
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--tuples" => settings.tuples = value.parse().expect("--tuples"),
            "--keys" => settings.keys = value.parse().expect("--keys"),
            "--window" => settings.window = value.parse().expect("--window"),
            "--runs" => settings.runs = value.parse().expect("--runs"),
            "--dir" => settings.dir = PathBuf::from(value),
            "--sources" => settings.sources = value.parse::<usize>().expect("--sources").max(1),
            "--engines" => settings.engines = value.split(',').map(str::to_owned).collect(),
            "--checkpoints" => {
                settings.checkpoints = value
                    .split(',')
                    .map(|c| {
                        if c == "off" {
                            None
                        } else {
                            Some(c.parse().expect("--checkpoints"))
                        }
                    })
                    .collect();
            }
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    let mut results: Vec<(String, Option<u32>, Vec<f64>)> = Vec::new();
    for _ in 0..settings.runs {
        for engine in &settings.engines {
            for every in &settings.checkpoints {
                let seconds = run(&settings, engine, *every);
                let rate = settings.tuples as f64 / seconds;
                println!(
                    "{{\"engine\":\"{engine}\",\"checkpoint_every_windows\":{},\"tuples\":{},\"keys\":{},\"window\":{},\"sources\":{},\"seconds\":{seconds:.3},\"tuples_per_second\":{rate:.0}}}",
                    every.map_or("null".to_owned(), |e| e.to_string()),
                    settings.tuples,
                    settings.keys,
                    settings.window,
                    settings.sources
                );
                match results.iter_mut().find(|(e, c, _)| e == engine && c == every) {
                    Some((_, _, rates)) => rates.push(rate),
                    None => results.push((engine.clone(), *every, vec![rate])),
                }
            }
        }
    }
    eprintln!("| engine | checkpoints | runs | median tuples/s |");
    eprintln!("|---|---|---:|---:|");
    for (engine, every, mut rates) in results {
        let runs = rates.len();
        eprintln!(
            "| {engine} | {} | {runs} | {:.2}M |",
            every.map_or("off".to_owned(), |e| format!("every {e} windows")),
            median(&mut rates) / 1e6
        );
    }
}
