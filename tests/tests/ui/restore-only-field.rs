use checkpoint_core::Checkpoint;

#[derive(serde::Serialize)]
struct ZoneTotals {
    rides: u64,
}

#[derive(Checkpoint)]
struct Stats {
    total: u64,
    zones: ZoneTotals,
}

fn main() {}
