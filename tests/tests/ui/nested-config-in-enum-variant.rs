use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Reader {
    offset: u64,
    #[checkpoint(config)]
    path: String,
}

#[derive(Checkpoint)]
enum Stage {
    Idle,
    Reading(#[checkpoint(nested)] Reader),
}

fn main() {}
