use checkpoint_core::{Checkpoint, KeyedMap};

#[derive(Checkpoint)]
struct Counter {
    #[checkpoint(transient, keyed)]
    counts: KeyedMap<String, u64>,
}

fn main() {}
