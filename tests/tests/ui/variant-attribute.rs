use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
enum Session {
    Idle,
    #[checkpoint(transient)]
    Open { user: String },
}

fn main() {}
