use checkpoint_core::Checkpoint;

#[derive(Default)]
struct Connection {
    url: String,
}

#[derive(Checkpoint)]
struct Sink {
    written: u64,
    #[checkpoint(config)]
    connection: Connection,
}

fn main() {}
