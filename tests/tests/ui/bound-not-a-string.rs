use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
#[checkpoint(bound = T: Clone)]
struct Stats<T> {
    items: Vec<T>,
}

fn main() {}
