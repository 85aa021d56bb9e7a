use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
#[checkpoint(version = 0)]
struct Stats {
    total: u64,
}

fn main() {}
