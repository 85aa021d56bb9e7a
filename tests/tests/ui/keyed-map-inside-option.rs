use checkpoint_core::{Checkpoint, KeyedMap};

#[derive(Checkpoint)]
struct Counter {
    #[checkpoint(keyed)]
    counts: KeyedMap<String, u64>,
    pending: Option<KeyedMap<String, u64>>,
}

fn main() {}
