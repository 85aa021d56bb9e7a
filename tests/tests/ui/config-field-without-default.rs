use checkpoint_core::Checkpoint;

#[derive(Clone)]
enum Format {
    Csv,
    Json,
}

#[derive(Checkpoint)]
struct Sink {
    written: u64,
    #[checkpoint(config)]
    format: Format,
}

fn main() {}
