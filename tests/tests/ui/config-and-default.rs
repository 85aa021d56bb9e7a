use checkpoint_core::Checkpoint;

fn default_path() -> String {
    "input.txt".into()
}

#[derive(Checkpoint)]
struct Reader {
    offset: u64,
    #[checkpoint(config, default = "default_path")]
    path: String,
}

fn main() {}
