use checkpoint_core::Checkpoint;

struct LogHandle;

#[derive(Checkpoint)]
struct Stats {
    total: u64,
    #[checkpoint(transient, default = "open_log")]
    log: LogHandle,
}

fn main() {}
