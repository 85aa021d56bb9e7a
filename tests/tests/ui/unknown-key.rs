use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Stats {
    total: u64,
    #[checkpoint(skip)]
    scratch: Vec<u8>,
}

fn main() {}
