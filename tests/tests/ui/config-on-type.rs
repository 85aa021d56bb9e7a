use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
#[checkpoint(config)]
struct Reader {
    path: String,
    offset: u64,
}

fn main() {}
