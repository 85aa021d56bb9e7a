use checkpoint_core::{Checkpoint, KeyedMap};

#[derive(Checkpoint)]
struct Counter {
    total: u64,
    counts: KeyedMap<String, u64>,
}

fn main() {}
