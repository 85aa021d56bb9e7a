use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
#[checkpoint(stateless, version = 2)]
struct Splitter {
    separator: char,
}

fn main() {}
