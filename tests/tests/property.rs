//! Arbitrary values of derived state types round-trip exactly through
//! `Snapshot::encode` / `Snapshot::decode` (transient fields excepted,
//! which come back as their defaults).

use std::collections::{BTreeMap, HashMap};

use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, WindowId};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde::{Deserialize, Serialize};

/// A plain serde enum, saved through serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle { radius: f64 },
    Polygon(Vec<(i32, i32)>),
}

/// A derived enum, saved through its own `Checkpoint` impl.
#[derive(Debug, Clone, PartialEq, Checkpoint)]
enum Phase {
    Warmup(u16),
    Steady {
        rate: f32,
        #[checkpoint(transient)]
        probe: Option<u8>,
    },
    Draining,
}

#[derive(Debug, Clone, PartialEq, Checkpoint)]
struct Inner {
    name: String,
    counts: BTreeMap<String, i64>,
    #[checkpoint(transient)]
    scratch: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Checkpoint)]
struct State {
    per_key: HashMap<u64, (u32, Option<String>)>,
    label: String,
    last: Option<WindowId>,
    bytes: Vec<u8>,
    boxed: Box<[u8]>,
    shape: Shape,
    #[checkpoint(nested)]
    phase: Phase,
    #[checkpoint(nested)]
    inner: Inner,
    nested_options: Option<Option<bool>>,
    wide: i128,
    #[checkpoint(transient)]
    cache: HashMap<u64, String>,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Point),
        any::<f64>()
            .prop_filter("NaN never equals itself", |r| !r.is_nan())
            .prop_map(|radius| Shape::Circle { radius }),
        prop::collection::vec(any::<(i32, i32)>(), 0..8).prop_map(Shape::Polygon),
    ]
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        any::<u16>().prop_map(Phase::Warmup),
        (
            any::<f32>().prop_filter("NaN never equals itself", |r| !r.is_nan()),
            any::<Option<u8>>()
        )
            .prop_map(|(rate, probe)| Phase::Steady { rate, probe }),
        Just(Phase::Draining),
    ]
}

fn inner() -> impl Strategy<Value = Inner> {
    (
        ".{0,12}",
        prop::collection::btree_map(".{0,6}", any::<i64>(), 0..6),
        prop::collection::vec(any::<u64>(), 0..4),
    )
        .prop_map(|(name, counts, scratch)| Inner { name, counts, scratch })
}

fn state() -> impl Strategy<Value = State> {
    (
        prop::collection::hash_map(any::<u64>(), (any::<u32>(), proptest::option::of(".{0,8}")), 0..12),
        ".{0,24}",
        proptest::option::of(any::<u64>().prop_map(WindowId::from_u64)),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Vec::into_boxed_slice),
        shape(),
        phase(),
        inner(),
        any::<Option<Option<bool>>>(),
        any::<i128>(),
        prop::collection::hash_map(any::<u64>(), ".{0,4}", 0..3),
    )
        .prop_map(
            |(per_key, label, last, bytes, boxed, shape, phase, inner, nested_options, wide, cache)| State {
                per_key,
                label,
                last,
                bytes,
                boxed,
                shape,
                phase,
                inner,
                nested_options,
                wide,
                cache,
            },
        )
}

/// What a restore gives: the state with its transient fields reset.
fn restored_form(state: &State) -> State {
    let mut expected = state.clone();
    expected.cache = HashMap::new();
    expected.inner.scratch = Vec::new();
    if let Phase::Steady { probe, .. } = &mut expected.phase {
        *probe = None;
    }
    expected
}

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x00c0_ffee),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn derived_state_round_trips(state in state(), seq in any::<u32>()) {
        let window = WindowId::new(1_700_000_000, seq);
        let bytes = Snapshot::encode(&state, SnapshotMeta::new("prop", window)).expect("encode");
        let (header, back) = Snapshot::decode::<State>(&bytes).expect("decode");
        prop_assert_eq!(header.window, window);
        prop_assert_eq!(header.fingerprint, State::FINGERPRINT);
        prop_assert_eq!(back, restored_form(&state));
    }

    #[test]
    fn truncated_payloads_are_errors_not_panics(state in state(), cut in any::<prop::sample::Index>()) {
        let mut payload = Vec::new();
        state.encode_state(&mut payload).expect("encode_state");
        let cut = cut.index(payload.len().max(1)).min(payload.len().saturating_sub(1));
        let mut input = &payload[..cut];
        // Cutting the payload short must fail cleanly (it can never succeed:
        // every field is needed).
        prop_assert!(State::decode_state(&mut input).is_err());
    }
}
