use checkpoint_core::Checkpoint;

fn zero() -> u64 {
    0
}

#[derive(Checkpoint)]
#[checkpoint(version = 0, stateles)]
struct Stats {
    #[checkpoint(default = "zero")]
    total: u64,
    #[checkpoint(transiant)]
    scratch: Vec<u8>,
    #[checkpoint(nested, nested)]
    inner: u64,
}

// The placeholder impl keeps this use free of a second wave of errors.
fn save(stats: &Stats) -> Vec<u8> {
    let mut out = Vec::new();
    stats.encode_state(&mut out).ok();
    out
}

fn main() {}
