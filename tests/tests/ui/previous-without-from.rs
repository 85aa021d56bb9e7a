use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct StatsV1 {
    total: u32,
}

#[derive(Checkpoint)]
#[checkpoint(version = 2, previous = StatsV1)]
struct Stats {
    total: u64,
}

fn main() {}
