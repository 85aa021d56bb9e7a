use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
#[checkpoint(version = "2")]
struct Stats {
    total: u64,
}

fn main() {}
