//! Checkpoint save latency and throughput per checkpoint size, for the
//! filesystem agent and the object-store agent on a loopback S3 endpoint
//! (issue 12).
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-object-store --bench save_latency
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-object-store --bench save_latency -- \
//!     --runs 3 --agents s3 --cases whole-1mb       # a subset
//! # another S3-compatible server, with a bucket that already exists:
//! CHECKPOINT_S3_ENDPOINT=http://127.0.0.1:9000 CHECKPOINT_S3_BUCKET=bench \
//!     cargo bench -p checkpoint-object-store --bench save_latency -- --agents s3
//! ```
//!
//! The S3 endpoint is `CHECKPOINT_S3_ENDPOINT` if set (with
//! `CHECKPOINT_S3_BUCKET` naming an existing bucket, for a server that does
//! not create buckets from an unsigned `PUT /bucket`), else a `moto` server
//! this process starts on a free loopback port (`python3 -m moto.server`;
//! the same helper as the crate's S3 tests).
//!
//! Cases (`--cases`, default all four):
//! - `whole-1mb`: a 1,000,000-byte `Vec<u8>` state, one `save` of its whole
//!   snapshot;
//! - `whole-23mb`: the same with as many bytes as the keyed state's chunks
//!   (22.9 MB);
//! - `incr-full`: a `KeyedMap<u64, u64>` of 5,000,000 keys (128 key groups,
//!   what the keyed-count benchmark's counter holds at K = 5,000,000), its
//!   first incremental checkpoint: every group written as a chunk
//!   (`save_chunks`), then the snapshot (`save`);
//! - `incr-8keys`: the next checkpoint after 8 keys changed: only their
//!   groups' chunks (at most 8 of 128) and the snapshot.
//!
//! The time of a run is from the start of the save until the agent returns
//! (the checkpoint is durable: fsync'd, or acknowledged by the server). For
//! the incremental cases it is `FrozenSnapshot::finish` (which encodes the
//! changed groups, then hands them to `save_chunks`) plus the snapshot's
//! `save`; `storage_ms` is the part spent inside the agent. The freeze
//! itself (on the operator's thread in a job) is not timed here. Each
//! save goes to a fresh window; what it wrote is deleted, untimed, before
//! the next case.
//!
//! Runs are interleaved (run 1 of every case and agent, then run 2, ...).
//! Every run prints one JSON object on stdout; the medians follow on
//! stderr. Flags (all optional): `--runs R` (default 5), `--agents fs,s3`
//! (default both), `--cases ...` (default all), `--dir PATH` (where the
//! filesystem agent's directory is made, default `/tmp`).
//!
//! Figures and their reading are in `docs/BENCHMARKS.md`.
#![allow(missing_docs, reason = "a benchmark binary, not an API")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use checkpoint_core::{
    Checkpoint, FsStorageAgent, KeyedMap, Snapshot, SnapshotMeta, StorageAgent, StorageError, WindowId, splitmix64,
};

/// A whole-snapshot state of a given size (`Vec<u8>` goes through
/// `serde_bytes` in the derive: written as one slice).
#[derive(Checkpoint)]
struct Blob {
    bytes: Vec<u8>,
}

/// The keyed-count benchmark's counter state.
#[derive(Checkpoint)]
struct Counts {
    #[checkpoint(keyed)]
    counts: KeyedMap<u64, u64>,
}

const KEYS: u64 = 5_000_000;
const CHANGED_KEYS: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Whole1Mb,
    Whole23Mb,
    IncrFull,
    Incr8Keys,
}

impl Case {
    const ALL: [Case; 4] = [Case::Whole1Mb, Case::Whole23Mb, Case::IncrFull, Case::Incr8Keys];

    fn name(self) -> &'static str {
        match self {
            Case::Whole1Mb => "whole-1mb",
            Case::Whole23Mb => "whole-23mb",
            Case::IncrFull => "incr-full",
            Case::Incr8Keys => "incr-8keys",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        Case::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown case {s:?} (whole-1mb, whole-23mb, incr-full, incr-8keys)"))
    }
}

struct Options {
    runs: usize,
    agents: Vec<String>,
    cases: Vec<Case>,
    dir: PathBuf,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        runs: 5,
        agents: vec!["fs".to_owned(), "s3".to_owned()],
        cases: Case::ALL.to_vec(),
        dir: PathBuf::from("/tmp"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--bench" {
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => options.runs = value.parse().map_err(|e| format!("--runs {value:?}: {e}"))?,
            "--agents" => {
                options.agents = value.split(',').map(|a| a.trim().to_owned()).collect();
                if let Some(bad) = options.agents.iter().find(|a| !matches!(a.as_str(), "fs" | "s3")) {
                    return Err(format!("unknown agent {bad:?} (fs, s3)"));
                }
            }
            "--cases" => {
                options.cases = value
                    .split(',')
                    .map(|c| Case::parse(c.trim()))
                    .collect::<Result<_, _>>()?
            }
            "--dir" => options.dir = PathBuf::from(value),
            _ => {
                return Err(format!(
                    "unknown flag {flag:?} (see the top of benches/save_latency.rs)"
                ));
            }
        }
    }
    Ok(options)
}

/// What one measured save wrote and how long it took.
struct Measured {
    ms: f64,
    storage_ms: f64,
    bytes: u64,
    chunks: usize,
}

/// One agent under test, and what it has to clean up.
struct Agent {
    name: &'static str,
    storage: Box<dyn StorageAgent>,
}

/// The fixed inputs of the cases, made once.
struct Inputs {
    blob_1mb: Blob,
    blob_23mb: Blob,
    counts: Counts,
}

fn inputs(cases: &[Case]) -> Result<Inputs, String> {
    // Counts 1..=40, one varint byte each, like the keyed-count counter's
    // after N = 100,000,000 tuples over K = 5,000,000 keys (20 on average).
    let mut counts = KeyedMap::new();
    if cases
        .iter()
        .any(|c| matches!(c, Case::IncrFull | Case::Incr8Keys | Case::Whole23Mb))
    {
        counts.extend((0..KEYS).map(|k| (k, splitmix64(k) % 40 + 1)));
    }
    let counts = Counts { counts };
    // The 23 MB blob has as many bytes as the keyed state's chunks.
    let full = if counts.counts.is_empty() {
        22_900_000
    } else {
        let frozen = Snapshot::freeze(&counts, SnapshotMeta::new("size", WindowId::new(1, 1)), Vec::new(), &[])
            .map_err(|e| e.to_string())?;
        frozen.finish(|_| Ok(())).map_err(|e| e.to_string())?.written_bytes as usize
    };
    let bytes = |n: usize| (0..n as u64).map(|i| splitmix64(i) as u8).collect::<Vec<u8>>();
    Ok(Inputs {
        blob_1mb: Blob {
            bytes: bytes(1_000_000),
        },
        blob_23mb: Blob { bytes: bytes(full) },
        counts,
    })
}

/// Saves `value` whole at `window`: the timed part is the `save` alone.
fn save_whole<T: Checkpoint>(
    agent: &dyn StorageAgent,
    op: &str,
    window: WindowId,
    value: &T,
) -> Result<Measured, String> {
    let bytes = Snapshot::encode(value, SnapshotMeta::new(op, window)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    agent.save(op, window, &bytes).map_err(|e| e.to_string())?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    agent.delete(op, window).map_err(|e| e.to_string())?;
    Ok(Measured {
        ms,
        storage_ms: ms,
        bytes: bytes.len() as u64,
        chunks: 0,
    })
}

/// One incremental checkpoint of `state` at `window` over `previous`:
/// `finish` (encode the changed groups, `save_chunks`) and `save`, timed.
fn save_incremental(
    agent: &dyn StorageAgent,
    op: &str,
    window: WindowId,
    state: &Counts,
    previous: &[checkpoint_core::ChunkRef],
) -> Result<(Measured, checkpoint_core::FinishedSnapshot), String> {
    let frozen =
        Snapshot::freeze(state, SnapshotMeta::new(op, window), Vec::new(), previous).map_err(|e| e.to_string())?;
    let mut storage_s = 0.0;
    let started = Instant::now();
    let finished = frozen
        .finish(|chunks| {
            let at = Instant::now();
            let saved = agent.save_chunks(op, chunks);
            storage_s += at.elapsed().as_secs_f64();
            saved
        })
        .map_err(|e| e.to_string())?;
    let at = Instant::now();
    agent.save(op, window, &finished.bytes).map_err(|e| e.to_string())?;
    storage_s += at.elapsed().as_secs_f64();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let measured = Measured {
        ms,
        storage_ms: storage_s * 1e3,
        bytes: finished.written_bytes + finished.bytes.len() as u64,
        chunks: finished.written_chunks,
    };
    Ok((measured, finished))
}

/// Deletes an operator's snapshots and chunks (untimed).
fn clean(agent: &dyn StorageAgent, op: &str) -> Result<(), StorageError> {
    for window in agent.windows(op)? {
        agent.delete(op, window)?;
    }
    for chunk in agent.chunks(op)? {
        agent.delete_chunk(op, chunk)?;
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.is_empty() {
        f64::NAN
    } else if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

struct Record {
    agent: &'static str,
    case: Case,
    measured: Measured,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("save_latency: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let options = parse_args()?;
    let started = Instant::now();
    let mut inputs = inputs(&options.cases)?;
    eprintln!(
        "save_latency: inputs made in {:.1} s ({} keys, 23 MB blob {} bytes)",
        started.elapsed().as_secs_f64(),
        inputs.counts.counts.len(),
        inputs.blob_23mb.bytes.len()
    );

    let tmp = tempfile::Builder::new()
        .prefix("save-latency-")
        .tempdir_in(&options.dir)
        .map_err(|e| format!("making a directory in {}: {e}", options.dir.display()))?;
    let mut agents = Vec::new();
    for name in &options.agents {
        agents.push(match name.as_str() {
            "fs" => Agent {
                name: "fs",
                storage: Box::new(FsStorageAgent::new(tmp.path()).map_err(|e| e.to_string())?),
            },
            _ => {
                let endpoint = common::endpoint();
                eprintln!("save_latency: S3 endpoint {endpoint}");
                Agent {
                    name: "s3",
                    storage: Box::new(common::agent("bench")),
                }
            }
        });
    }
    // Warm-up: directories made, connections open, server code paths hot.
    for agent in &agents {
        for _ in 0..3 {
            save_whole(&*agent.storage, "warmup", WindowId::new(1, 1), &inputs.blob_1mb)?;
        }
    }

    let mut records = Vec::new();
    // Every save goes to a window of its own.
    let mut seq = 0u32;
    let mut next_window = || {
        seq += 1;
        WindowId::new(2, seq)
    };
    let mut changed = 0u64;
    for run in 0..options.runs {
        for &case in &options.cases {
            if case == Case::Incr8Keys && options.cases.contains(&Case::IncrFull) {
                // Measured right after `incr-full`, over its chunks.
                continue;
            }
            for agent in &agents {
                let storage = &*agent.storage;
                let mut out = Vec::new();
                match case {
                    Case::Whole1Mb => out.push((case, save_whole(storage, "whole", next_window(), &inputs.blob_1mb)?)),
                    Case::Whole23Mb => {
                        out.push((case, save_whole(storage, "whole", next_window(), &inputs.blob_23mb)?));
                    }
                    Case::IncrFull | Case::Incr8Keys => {
                        let (full, first) = save_incremental(storage, "keyed", next_window(), &inputs.counts, &[])?;
                        if case == Case::IncrFull {
                            out.push((Case::IncrFull, full));
                        }
                        if options.cases.contains(&Case::Incr8Keys) {
                            for _ in 0..CHANGED_KEYS {
                                changed += 1;
                                let key = splitmix64(changed.wrapping_mul(0x9E37)) % KEYS;
                                *inputs.counts.counts.get_mut(&key).ok_or("a key is missing")? += 1;
                            }
                            let (small, _) =
                                save_incremental(storage, "keyed", next_window(), &inputs.counts, &first.chunks)?;
                            out.push((Case::Incr8Keys, small));
                        }
                        clean(storage, "keyed").map_err(|e| e.to_string())?;
                    }
                }
                for (case, measured) in out {
                    println!(
                        "{}",
                        serde_json::json!({
                            "agent": agent.name,
                            "case": case.name(),
                            "run": run,
                            "ms": measured.ms,
                            "storage_ms": measured.storage_ms,
                            "bytes": measured.bytes,
                            "chunks": measured.chunks,
                            "mb_per_s": measured.bytes as f64 / 1e6 / (measured.ms / 1e3),
                        })
                    );
                    records.push(Record {
                        agent: agent.name,
                        case,
                        measured,
                    });
                }
            }
        }
    }

    eprintln!();
    eprintln!("| case | agent | runs | bytes written | chunks | median ms | median storage ms | median MB/s |");
    eprintln!("|---|---|---:|---:|---:|---:|---:|---:|");
    for &case in &options.cases {
        for agent in &agents {
            let runs: Vec<&Measured> = records
                .iter()
                .filter(|r| r.case == case && r.agent == agent.name)
                .map(|r| &r.measured)
                .collect();
            let mut ms: Vec<f64> = runs.iter().map(|m| m.ms).collect();
            let mut storage_ms: Vec<f64> = runs.iter().map(|m| m.storage_ms).collect();
            let mut rate: Vec<f64> = runs.iter().map(|m| m.bytes as f64 / 1e6 / (m.ms / 1e3)).collect();
            let mut bytes: Vec<f64> = runs.iter().map(|m| m.bytes as f64).collect();
            let mut chunks: Vec<f64> = runs.iter().map(|m| m.chunks as f64).collect();
            eprintln!(
                "| {} | {} | {} | {:.2} MB | {} | {:.1} | {:.1} | {:.0} |",
                case.name(),
                agent.name,
                runs.len(),
                median(&mut bytes) / 1e6,
                median(&mut chunks),
                median(&mut ms),
                median(&mut storage_ms),
                median(&mut rate)
            );
        }
    }
    for agent in &agents {
        clean(&*agent.storage, "warmup").map_err(|e| e.to_string())?;
    }
    Ok(())
}
