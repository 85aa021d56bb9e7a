use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
#[checkpoint(transient)]
struct Stats {
    total: u64,
}

fn main() {}
