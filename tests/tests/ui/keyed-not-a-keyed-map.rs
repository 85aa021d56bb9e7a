use std::collections::HashMap;

use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Counter {
    #[checkpoint(keyed)]
    counts: HashMap<String, u64>,
}

fn main() {}
