extern crate checkpoint_core as ck;

#[derive(ck::Checkpoint)]
#[checkpoint(crate = "ck")]
struct Stats {
    total: u64,
}

fn main() {}
