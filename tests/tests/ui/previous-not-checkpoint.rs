use checkpoint_core::Checkpoint;

struct StatsV1 {
    total: u32,
}

#[derive(Checkpoint)]
#[checkpoint(version = 2, previous = StatsV1)]
struct Stats {
    total: u64,
}

impl From<StatsV1> for Stats {
    fn from(old: StatsV1) -> Self {
        Stats { total: old.total.into() }
    }
}

fn main() {}
