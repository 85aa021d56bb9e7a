//! Decoding never panics and never allocates more than its input justifies,
//! whatever bytes it is given: random bytes, every bit flip and truncation of
//! valid snapshots, and headers and payloads mutated with the checksum
//! recomputed so the decoder behind the CRC is exercised too.
//!
//! A counting allocator measures the peak of live heap bytes during each
//! decode on this thread; the bound is the input's length times a small
//! factor plus serde's preallocation cap (serde reserves at most 1 MiB for a
//! sequence whatever length prefix it reads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;

use checkpoint_core::{
    Checkpoint, FIXED_HEADER_LEN, LayoutHasher, PayloadError, Snapshot, SnapshotError, SnapshotMeta, TRAILER_LEN,
    WindowId, payload,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

struct CountingAlloc;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with` because the allocator runs during thread teardown too.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add_signed(delta);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Peak extra heap bytes live while `f` runs on this thread.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, PEAK.with(Cell::get) - base)
}

const SERDE_PREALLOC_CAP: usize = 1 << 20;

/// A state with nested sequences and maps, the shapes whose length prefixes
/// could ask for huge allocations.
#[derive(Debug, Clone, PartialEq)]
struct Rich {
    counts: BTreeMap<String, Vec<u64>>,
    blob: Vec<u8>,
    label: Option<String>,
}

impl Checkpoint for Rich {
    const TYPE_NAME: &'static str = "Rich";
    const FINGERPRINT: u64 = LayoutHasher::new()
        .write_str("counts")
        .write_str("BTreeMap<String,Vec<u64>>")
        .write_str("blob")
        .write_str("Vec<u8>")
        .write_str("label")
        .write_str("Option<String>")
        .finish();

    fn encode_state<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        payload::encode(&self.counts, out)?;
        payload::encode(serde_bytes::Bytes::new(&self.blob), out)?;
        payload::encode(&self.label, out)
    }

    fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError> {
        Ok(Rich {
            counts: payload::decode(input)?,
            blob: payload::decode::<serde_bytes::ByteBuf>(input)?.into_vec(),
            label: payload::decode(input)?,
        })
    }
}

fn rich() -> Rich {
    Rich {
        counts: [("a".to_owned(), vec![1, 2, 300]), ("bb".to_owned(), vec![])].into(),
        blob: vec![0xff, 0, 7],
        label: Some("x".to_owned()),
    }
}

fn samples() -> Vec<Vec<u8>> {
    let meta = SnapshotMeta::new("op#1", WindowId::new(0x6553_f100, 42));
    vec![
        Snapshot::encode(&7u64, meta).expect("encode"),
        Snapshot::encode(&"hello world".to_owned(), meta).expect("encode"),
        Snapshot::encode(&rich(), meta).expect("encode"),
        Snapshot::encode(&(), meta).expect("encode"),
    ]
}

/// Decodes `bytes` as every sample type, checking the allocation bound, and
/// returns whether any typed decode succeeded.
fn decode_all(bytes: &[u8]) -> bool {
    let limit = bytes.len() * 16 + 4 * SERDE_PREALLOC_CAP + 4096;
    let mut any_ok = false;
    macro_rules! try_type {
        ($t:ty) => {{
            let (result, peak) = peak_during(|| Snapshot::decode::<$t>(bytes).map(|_| ()));
            assert!(
                peak <= limit,
                "decoding {} bytes as {} peaked at {peak} heap bytes",
                bytes.len(),
                stringify!($t)
            );
            any_ok |= result.is_ok();
        }};
    }
    try_type!(u64);
    try_type!(String);
    try_type!(Rich);
    try_type!(());
    let (_, peak) = peak_during(|| Snapshot::verify(bytes).map(|_| ()));
    assert!(peak <= limit, "reading the header peaked at {peak}");
    any_ok
}

fn recompute_crc(bytes: &mut [u8]) {
    let end = bytes.len() - TRAILER_LEN;
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

fn runner(cases: u32) -> TestRunner {
    let seed: [u8; 32] = *b"checkpoint-core decode robustnes";
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    )
}

#[test]
fn samples_decode_to_their_values() {
    let s = samples();
    assert_eq!(Snapshot::decode::<u64>(&s[0]).expect("u64").1, 7);
    assert_eq!(Snapshot::decode::<String>(&s[1]).expect("string").1, "hello world");
    assert_eq!(Snapshot::decode::<Rich>(&s[2]).expect("rich").1, rich());
    Snapshot::decode::<()>(&s[3]).expect("unit");
}

#[test]
fn random_bytes_are_rejected() {
    let mut runner = runner(10_000);
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..600), |bytes| {
            prop_assert!(!decode_all(&bytes));
            Ok(())
        })
        .expect("random inputs");
}

#[test]
fn random_bytes_behind_a_valid_prefix_are_rejected() {
    // Past the magic and format version, so the length checks are reached.
    let mut runner = runner(10_000);
    let prefix = samples()[0][..10].to_vec();
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..600), |tail| {
            let mut bytes = prefix.clone();
            bytes.extend_from_slice(&tail);
            prop_assert!(!decode_all(&bytes));
            Ok(())
        })
        .expect("prefixed random inputs");
}

#[test]
fn every_bit_flip_and_truncation_is_caught() {
    for sample in samples() {
        for bit in 0..sample.len() * 8 {
            let mut bytes = sample.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert!(!decode_all(&bytes), "flip of bit {bit} was accepted");
        }
        for len in 0..sample.len() {
            assert!(!decode_all(&sample[..len]), "truncation to {len} bytes was accepted");
            let err = Snapshot::decode::<u64>(&sample[..len]).expect_err("truncated");
            assert!(
                matches!(err, SnapshotError::Truncated { .. }),
                "truncation to {len}: expected Truncated, got {err}"
            );
        }
    }
}

/// Header fields mutated with the CRC recomputed: lengths, versions and
/// fingerprints the decoder itself must reject.
#[test]
fn mutated_headers_behind_a_valid_crc_are_rejected() {
    let mut runner = runner(4_000);
    let strategy = (
        0..samples().len(),
        8usize..FIXED_HEADER_LEN,
        any::<u8>().prop_filter("a change", |b| *b != 0),
    );
    runner
        .run(&strategy, |(which, at, xor)| {
            let mut bytes = samples()[which].clone();
            bytes[at] ^= xor;
            recompute_crc(&mut bytes);
            // Bytes 12..20 are the window id, which any value is valid for.
            if (12..20).contains(&at) {
                prop_assert!(decode_all(&bytes));
            } else {
                prop_assert!(!decode_all(&bytes), "mutating byte {at} by {xor:#x} was accepted");
            }
            Ok(())
        })
        .expect("mutated headers");
}

#[test]
fn huge_lengths_behind_a_valid_crc_are_rejected_without_allocating() {
    for sample in samples() {
        for (at, width) in [(32usize, 2usize), (34, 2), (36, 8)] {
            for value in [u64::MAX, u64::MAX / 2, 1 << 40, 1 << 32, 65_535, 256, 1025] {
                let mut bytes = sample.clone();
                bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                recompute_crc(&mut bytes);
                assert!(!decode_all(&bytes), "length field at {at} = {value} was accepted");
            }
        }
        // With the chunk-table flag: lengths that overflow when the table's
        // count is added to them.
        for back in 0..12u64 {
            let mut bytes = sample.clone();
            bytes[10..12].copy_from_slice(&1u16.to_le_bytes());
            bytes[36..44].copy_from_slice(&(u64::MAX - back).to_le_bytes());
            recompute_crc(&mut bytes);
            assert!(
                !decode_all(&bytes),
                "payload length u64::MAX - {back} with a chunk table was accepted"
            );
        }
    }
}

/// Payloads replaced by garbage (with lengths and CRC fixed up): the
/// decoder returns an error or a value, never panics, and stays inside the
/// allocation bound. A value it returns is what the bytes say: decoding it
/// again after re-encoding gives the same value.
#[test]
fn garbage_payloads_behind_a_valid_crc_never_panic() {
    let mut runner = runner(10_000);
    let strategy = (0..samples().len(), prop::collection::vec(any::<u8>(), 0..300));
    runner
        .run(&strategy, |(which, garbage)| {
            let sample = samples()[which].clone();
            let header = Snapshot::read_header(&sample).expect("header");
            let names = FIXED_HEADER_LEN + header.operator.len() + header.type_name.len();
            let mut bytes = sample[..names].to_vec();
            bytes[36..44].copy_from_slice(&(garbage.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&garbage);
            bytes.extend_from_slice(&[0; TRAILER_LEN]);
            recompute_crc(&mut bytes);
            decode_all(&bytes);
            if let Ok((_, value)) = Snapshot::decode::<Rich>(&bytes) {
                let again =
                    Snapshot::encode(&value, SnapshotMeta::new(&header.operator, header.window)).expect("re-encode");
                prop_assert_eq!(Snapshot::decode::<Rich>(&again).expect("decode").1, value);
            }
            Ok(())
        })
        .expect("garbage payloads");
}

#[test]
fn a_huge_sequence_length_in_the_payload_stays_within_the_bound() {
    // A Rich payload whose first map claims 2^60 entries.
    let mut garbage = Vec::new();
    payload::encode(&(1u64 << 60), &mut garbage).expect("varint");
    let sample = &samples()[2];
    let header = Snapshot::read_header(sample).expect("header");
    let names = FIXED_HEADER_LEN + header.operator.len() + header.type_name.len();
    let mut bytes = sample[..names].to_vec();
    bytes[36..44].copy_from_slice(&(garbage.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&garbage);
    bytes.extend_from_slice(&[0; TRAILER_LEN]);
    recompute_crc(&mut bytes);
    assert!(!decode_all(&bytes));
    assert!(matches!(
        Snapshot::decode::<Rich>(&bytes),
        Err(SnapshotError::Payload { type_name: "Rich", .. })
    ));
}

#[test]
fn the_allocation_counter_sees_allocations() {
    let ((), peak) = peak_during(|| {
        let v = std::hint::black_box(vec![0u8; 10_000]);
        drop(v);
    });
    assert!(peak >= 10_000, "peak {peak}");
    // A Vec<u64> payload claiming 2^40 elements: serde's cap, not 8 TiB.
    let mut garbage = Vec::new();
    payload::encode(&(1u64 << 40), &mut garbage).expect("varint");
    let mut input = &garbage[..];
    let (result, peak) = peak_during(|| payload::decode::<Vec<u64>>(&mut input).map(|v| v.len()));
    assert!(result.is_err());
    assert!(peak <= SERDE_PREALLOC_CAP, "peak {peak}");
}
