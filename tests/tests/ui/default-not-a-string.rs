use checkpoint_core::Checkpoint;

struct LogHandle;

fn open_log() -> LogHandle {
    LogHandle
}

#[derive(Checkpoint)]
struct Stats {
    total: u64,
    #[checkpoint(transient, default = open_log)]
    log: LogHandle,
}

fn main() {}
