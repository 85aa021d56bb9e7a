use checkpoint_core::Checkpoint;

#[derive(serde::Serialize, serde::Deserialize)]
struct ZoneTotals {
    rides: u64,
}

#[derive(Checkpoint)]
struct Stats {
    total: u64,
    #[checkpoint(nested)]
    zones: ZoneTotals,
}

fn main() {}
