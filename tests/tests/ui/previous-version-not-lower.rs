use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
#[checkpoint(version = 2)]
struct StatsV2 {
    total: u32,
}

#[derive(Checkpoint)]
#[checkpoint(version = 2, previous = StatsV2)]
struct Stats {
    total: u64,
}

impl From<StatsV2> for Stats {
    fn from(old: StatsV2) -> Self {
        Stats { total: old.total.into() }
    }
}

fn main() {}
