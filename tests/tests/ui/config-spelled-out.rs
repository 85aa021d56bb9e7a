use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Reader {
    #[checkpoint(configuration)]
    path: String,
    offset: u64,
}

fn main() {}
