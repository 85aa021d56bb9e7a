use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Stats<'a> {
    total: u64,
    last_key: &'a str,
}

fn main() {}
