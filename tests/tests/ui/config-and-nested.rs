use checkpoint_core::Checkpoint;

#[derive(Checkpoint)]
struct Settings {
    lines_per_window: u64,
}

#[derive(Checkpoint)]
struct Reader {
    offset: u64,
    #[checkpoint(config)]
    #[checkpoint(nested)]
    settings: Settings,
}

fn main() {}
