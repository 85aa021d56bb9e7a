use checkpoint_core::Checkpoint;

struct LogHandle {
    fd: i32,
}

#[derive(Checkpoint)]
struct Stats {
    total: u64,
    #[checkpoint(transient)]
    log: LogHandle,
}

fn main() {}
