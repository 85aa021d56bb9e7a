use checkpoint_core::Checkpoint;

fn zero() -> u64 {
    0
}

#[derive(Checkpoint)]
struct Stats {
    #[checkpoint(default = "zero")]
    total: u64,
}

fn main() {}
