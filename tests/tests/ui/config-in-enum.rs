use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
enum Reader {
    Idle,
    Reading {
        offset: u64,
        #[checkpoint(config)]
        path: String,
    },
}

fn main() {}
