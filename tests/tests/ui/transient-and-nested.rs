use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Stats {
    #[checkpoint(transient, nested)]
    total: u64,
}

fn main() {}
