use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Reader {
    offset: u64,
    #[checkpoint(config, transient)]
    path: String,
}

fn main() {}
