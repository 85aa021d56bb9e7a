//! Snapshot encode/decode throughput beside a plain memcpy of the same bytes.
//!
//! ```text
//! cargo bench -p checkpoint-core --bench snapshot
//! ```
//!
//! Figures and their reading are in `docs/BENCHMARKS.md`.
#![allow(missing_docs, reason = "criterion's macros generate undocumented items")]

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use checkpoint_core::{Checkpoint, LayoutHasher, PayloadError, Snapshot, SnapshotMeta, WindowId, payload};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ENTRIES: u64 = 1_000_000;
const BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
struct Counts(HashMap<u64, u64>);

impl Checkpoint for Counts {
    const TYPE_NAME: &'static str = "Counts";
    const FINGERPRINT: u64 = LayoutHasher::new()
        .write_str("Counts")
        .write_str("HashMap<u64,u64>")
        .finish();

    fn encode_state<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        payload::encode(&self.0, out)
    }

    fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError> {
        payload::decode(input).map(Counts)
    }
}

#[derive(Debug, Default)]
struct Blob(Vec<u8>);

impl Checkpoint for Blob {
    const TYPE_NAME: &'static str = "Blob";
    const FINGERPRINT: u64 = LayoutHasher::new().write_str("Blob").write_str("Vec<u8>").finish();

    fn encode_state<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        payload::encode(serde_bytes::Bytes::new(&self.0), out)
    }

    fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError> {
        payload::decode::<serde_bytes::ByteBuf>(input).map(|b| Blob(b.into_vec()))
    }
}

fn meta() -> SnapshotMeta<'static> {
    SnapshotMeta::new("bench", WindowId::new(1_700_000_000, 59))
}

fn hashmap(c: &mut Criterion) {
    let state = Counts(
        (0..ENTRIES)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i))
            .collect(),
    );
    let mut payload_buf = Vec::new();
    payload::encode(&state.0, &mut payload_buf).expect("encode");
    let payload_len = payload_buf.len();
    let snapshot = Snapshot::encode(&state, meta()).expect("encode");

    let mut group = c.benchmark_group("hashmap_1m");
    group.throughput(Throughput::Bytes(payload_len as u64));
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    group.bench_function("payload_encode", |b| {
        b.iter(|| {
            payload_buf.clear();
            payload::encode(black_box(&state.0), &mut payload_buf).expect("encode");
        })
    });
    let mut buf = Vec::new();
    group.bench_function("snapshot_encode", |b| {
        b.iter(|| Snapshot::encode_into(black_box(&state), meta(), &mut buf).expect("encode"))
    });
    group.bench_function("snapshot_decode", |b| {
        b.iter(|| Snapshot::decode::<Counts>(black_box(&snapshot)).expect("decode"))
    });
    let mut dst = vec![0u8; payload_len];
    group.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(&payload_buf))));
    group.finish();
}

fn bytes(c: &mut Criterion) {
    let state = Blob((0..BYTES).map(|i| (i as u64).wrapping_mul(0x9E37_79B9) as u8).collect());
    let snapshot = Snapshot::encode(&state, meta()).expect("encode");

    let mut group = c.benchmark_group("bytes_64mib");
    group.throughput(Throughput::Bytes(BYTES as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    let mut buf = Vec::new();
    group.bench_function("snapshot_encode", |b| {
        b.iter(|| Snapshot::encode_into(black_box(&state), meta(), &mut buf).expect("encode"))
    });
    group.bench_function("snapshot_decode", |b| {
        b.iter(|| Snapshot::decode::<Blob>(black_box(&snapshot)).expect("decode"))
    });
    let mut plain = Vec::new();
    group.bench_function("postcard_plain_vec_encode", |b| {
        b.iter(|| {
            plain.clear();
            payload::encode(black_box(&state.0), &mut plain).expect("encode");
        })
    });
    group.bench_function("crc32c", |b| b.iter(|| crc32c::crc32c(black_box(&state.0))));
    let mut dst = vec![0u8; BYTES];
    group.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(&state.0))));
    group.finish();
}

criterion_group!(benches, hashmap, bytes);
criterion_main!(benches);
