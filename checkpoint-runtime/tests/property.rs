//! A property test over random DAG shapes (chains, fan-out, fan-in,
//! partitions, thread-local edges) and random failure schedules: with
//! AT_LEAST_ONCE recovery, every operator ends in exactly the state of the
//! failure-free run of the same DAG, whatever failed where.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, MemoryStorageAgent, Snapshot, StorageAgent, WindowId};
use checkpoint_runtime::{
    Config, Dag, Fault, FaultPoint, Node, Operator, OperatorResult, Output, RecoveryScope, Runtime, WindowMode,
};
use common::{Counting, Tagged, with_watchdog_secs};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

const BASE: u32 = 0x6553_f100;
const PER_WINDOW: u64 = 8;

/// Counts what it sees per window, and passes it on.
#[derive(Default, Checkpoint)]
struct Stage {
    per_window: BTreeMap<u32, (u64, u64)>,
    #[checkpoint(transient)]
    window: Option<WindowId>,
}

impl Operator for Stage {
    type Input = Tagged;
    type Output = Tagged;
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        Ok(())
    }
    fn process(&mut self, t: Tagged, out: Output<'_, Tagged>) -> OperatorResult {
        let seq = self.window.map_or(0, |w| w.sequence());
        let entry = self.per_window.entry(seq).or_default();
        entry.0 += 1;
        entry.1 += t.value;
        out.emit(t);
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Shape {
    /// Tuples of each input (1 or 2 inputs).
    inputs: Vec<u64>,
    /// Per operator after the inputs: its upstreams (indices of earlier
    /// nodes, inputs first), partitions, and whether its single upstream
    /// edge is thread-local.
    operators: Vec<(Vec<usize>, usize, bool)>,
    faults: Vec<(usize, u32, u8)>,
    checkpoint_every: u32,
}

fn shape() -> impl Strategy<Value = Shape> {
    (prop::collection::vec(20u64..120, 1..=2), 1usize..=5, 1u32..=4).prop_flat_map(|(inputs, n, checkpoint_every)| {
        let n_inputs = inputs.len();
        let operators = (0..n)
            .map(|i| {
                let earlier = n_inputs + i;
                (
                    prop::collection::btree_set(0..earlier, 1..=2.min(earlier)),
                    prop_oneof![3 => Just(1usize), 1 => 2usize..=3],
                    any::<bool>(),
                )
                    .prop_map(|(ups, partitions, local)| (ups.into_iter().collect::<Vec<_>>(), partitions, local))
            })
            .collect::<Vec<_>>();
        let total = n_inputs + n;
        (
            Just(inputs),
            operators,
            prop::collection::vec((0..total, 1u32..16, 0u8..3), 0..=3),
            Just(checkpoint_every),
        )
            .prop_map(|(inputs, mut operators, faults, checkpoint_every)| {
                // Every input feeds something.
                for input in 0..inputs.len() {
                    if !operators.iter().any(|(ups, _, _)| ups.contains(&input)) {
                        operators[0].0.push(input);
                    }
                }
                Shape {
                    inputs,
                    operators,
                    faults,
                    checkpoint_every,
                }
            })
    })
}

/// Builds the DAG; returns the physical operator names of every node.
fn build(shape: &Shape) -> (Dag, Vec<Vec<String>>) {
    let mut dag = Dag::new();
    let mut names = Vec::new();
    let mut partitions = Vec::new();
    let mut inputs_of: Vec<Node<checkpoint_runtime::NoInput, Tagged>> = Vec::new();
    for (i, n) in shape.inputs.iter().enumerate() {
        let name = format!("in{i}");
        inputs_of.push(dag.input(&name, Counting::new(*n, 1 + (*n % 3))));
        names.push(vec![name]);
        partitions.push(1);
    }
    let mut ops: Vec<Node<Tagged, Tagged>> = Vec::new();
    for (i, (ups, parts, local)) in shape.operators.iter().enumerate() {
        let name = format!("op{i}");
        let node = if *parts == 1 {
            dag.operator(&name, Stage::default())
        } else {
            dag.operator_partitioned(&name, *parts, |_| Stage::default())
        };
        let single_plain = ups.len() == 1 && *parts == 1 && partitions[ups[0]] == 1;
        for &u in ups {
            let thread_local = *local && single_plain;
            match (u < shape.inputs.len(), *parts > 1, thread_local) {
                (true, true, _) => {
                    dag.connect_by_key(&inputs_of[u], &node, |t: &Tagged| t.value);
                }
                (true, false, true) => {
                    dag.connect_thread_local(&inputs_of[u], &node);
                }
                (true, false, false) => {
                    dag.connect(&inputs_of[u], &node);
                }
                (false, true, _) => {
                    dag.connect_by_key(&ops[u - shape.inputs.len()], &node, |t: &Tagged| t.value);
                }
                (false, false, true) => {
                    dag.connect_thread_local(&ops[u - shape.inputs.len()], &node);
                }
                (false, false, false) => {
                    dag.connect(&ops[u - shape.inputs.len()], &node);
                }
            }
        }
        ops.push(node);
        names.push(if *parts == 1 {
            vec![name]
        } else {
            (0..*parts).map(|p| format!("{name}#{p}")).collect()
        });
        partitions.push(*parts);
    }
    dag.default_checkpoint_window_count(shape.checkpoint_every);
    (dag, names)
}

type States = BTreeMap<String, String>;

/// Runs the shape; returns every operator's final state (payload bytes of
/// its newest checkpoint) and the number of recoveries.
fn run(shape: &Shape, faults: &[Fault], scope: RecoveryScope) -> (States, usize) {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let (dag, names) = build(shape);
    let mut config = Config::default()
        .shared_storage(Arc::clone(&storage))
        .window_mode(WindowMode::Tuples(PER_WINDOW))
        .window_base(BASE)
        .batch_size(5)
        .channel_capacity(2)
        .restart_limit(10)
        .replay_memory_cap(64)
        .recovery_scope(scope);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    let report =
        with_watchdog_secs(30, move || Runtime::new(config).run(dag)).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
    if scope == RecoveryScope::Global {
        // Nothing is kept for replay in the global scope.
        for op in &report.operators {
            assert_eq!(
                (op.replay_peak_bytes, op.spilled_windows),
                (0, 0),
                "{shape:?}: {} kept replay data",
                op.name
            );
        }
        for recovery in &report.recoveries {
            assert_eq!(
                recovery.restored.len(),
                names.iter().flatten().count(),
                "{shape:?}: a global recovery restores every operator"
            );
        }
    }
    let mut states = BTreeMap::new();
    for name in names.iter().flatten() {
        let window = *storage.windows(name).expect("windows").last().expect("a checkpoint");
        let bytes = storage.load(name, window).expect("load");
        let state = if name.starts_with("in") {
            let (_, c) = Snapshot::decode::<Counting>(&bytes).expect("input");
            format!("{window} next={}", c.next)
        } else {
            let (_, s) = Snapshot::decode::<Stage>(&bytes).expect("stage");
            format!("{window} {:?}", s.per_window)
        };
        states.insert(name.clone(), state);
    }
    (states, report.recoveries.len())
}

#[test]
fn random_dags_recover_to_the_failure_free_state() {
    random_dags(RecoveryScope::Partial);
}

#[test]
fn random_dags_recover_to_the_failure_free_state_in_the_global_scope() {
    random_dags(RecoveryScope::Global);
}

/// Random DAGs and failure schedules in `scope`.
fn random_dags(scope: RecoveryScope) {
    // A fixed seed, so CI runs the same cases; PROPERTY_SEED (any text)
    // explores others.
    let mut seed: [u8; 32] = *b"random dags, random failures....";
    if let Ok(text) = std::env::var("PROPERTY_SEED") {
        for (i, b) in text.bytes().enumerate() {
            seed[i % 32] ^= b;
        }
        println!("PROPERTY_SEED={text}");
    }
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases: std::env::var("PROPERTY_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(40),
            failure_persistence: None,
            ..ProptestConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let recovered = std::cell::Cell::new(0);
    runner
        .run(&shape(), |shape| {
            if std::env::var_os("PROPERTY_TRACE").is_some() {
                eprintln!("case {shape:?}");
            }
            let (reference, none) = run(&shape, &[], scope);
            prop_assert_eq!(none, 0);
            let (_, names) = build(&shape);
            let names: Vec<String> = names.into_iter().flatten().collect();
            let faults: Vec<Fault> = shape
                .faults
                .iter()
                .map(|(node, seq, kind)| {
                    let name = &names[node % names.len()];
                    let point = match kind {
                        0 => FaultPoint::BeginWindow,
                        1 => FaultPoint::Tuple(3),
                        _ => FaultPoint::EndWindow,
                    };
                    Fault::panic(name, *seq).at(point)
                })
                .collect();
            let (states, recoveries) = run(&shape, &faults, scope);
            recovered.set(recovered.get() + recoveries);
            prop_assert_eq!(states, reference, "shape {:?} faults {:?}", shape, faults);
            Ok(())
        })
        .expect("every random DAG recovers exactly");
    let recovered = recovered.get();
    assert!(recovered >= 10, "the schedules exercised only {recovered} recoveries");
}

/// Faults in an input and in the partitioned operator it feeds, close
/// together: a case the property test once found hanging.
#[test]
fn two_inputs_into_partitions_with_two_faults() {
    let shape = Shape {
        inputs: vec![32, 48],
        operators: vec![(vec![0, 1], 3, false)],
        faults: vec![],
        checkpoint_every: 4,
    };
    let (reference, _) = run(&shape, &[], RecoveryScope::Partial);
    let faults = [
        Fault::panic("in0", 2),
        Fault::panic("in0", 15).at(FaultPoint::EndWindow),
        Fault::panic("op0#0", 2).at(FaultPoint::EndWindow),
    ];
    for scope in [RecoveryScope::Partial, RecoveryScope::Global] {
        let (states, recoveries) = run(&shape, &faults, scope);
        assert!(recoveries >= 2, "{scope:?}");
        assert_eq!(states, reference, "{scope:?}");
    }
}
