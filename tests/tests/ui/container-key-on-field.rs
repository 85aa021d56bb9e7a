use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Stats {
    #[checkpoint(version = 2)]
    total: u64,
}

fn main() {}
