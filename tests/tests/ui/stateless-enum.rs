use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
#[checkpoint(stateless)]
enum Mode {
    Fast,
    Slow,
}

fn main() {}
