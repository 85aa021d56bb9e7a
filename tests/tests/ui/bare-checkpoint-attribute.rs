use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Stats {
    total: u64,
    #[checkpoint]
    scratch: Vec<u8>,
}

fn main() {}
