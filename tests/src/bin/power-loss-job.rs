//! The exactly-once job that `tests/power_loss.rs` cuts the power under: an
//! idempotent [`LineInput`] over a text file -> `number` (a per-window
//! operator with state) -> [`ExactlyOnceFileSink`], checkpointed with an
//! [`FsStorageAgent`], in the deterministic window mode.
//!
//! ```text
//! power-loss-job <input> <checkpoints> <output> <window base> <lines per window> <checkpoint windows>
//! ```
//!
//! The window base is used only by a new job: a job resumed from its
//! checkpoints keeps the base it started with. The test passes a new base to
//! every start, as the wall clock would after a reboot, so a job that lost
//! its checkpoints shows it in the window ids it publishes.
//!
//! Progress lines on standard output, each flushed at once (the test gates
//! its random power cuts on them): `checkpoint <storage name> <sequence>`
//! when a save is durable, then, once the job ended, `note <text>` for each
//! note of its run report (a corrupt checkpoint set aside, say) and `done`.
//!
//! `POWER_LOSS_JOB_FAIL=<operator>:<sequence>` injects a failure: the
//! operator fails with an error at the start of the window with that
//! sequence number, once ([`Fault::error`]), and the running job recovers
//! it from its checkpoints.

use std::io::Write;
use std::process::ExitCode;

use checkpoint_core::{Checkpoint, FsStorageAgent, SavePhase};
use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput};
use checkpoint_runtime::{Config, Dag, Fault, Operator, OperatorResult, Output, Runtime, WindowMode};

/// Numbers every line across the whole input and ends each window with its
/// line count, so a wrong restore (of its counter, or of the windows replayed
/// to it) changes the output.
#[derive(Default, Checkpoint)]
struct Number {
    lines: u64,
    in_window: u64,
}

impl Operator for Number {
    type Input = String;
    type Output = String;

    fn process(&mut self, line: String, out: Output<'_, String>) -> OperatorResult {
        self.lines += 1;
        self.in_window += 1;
        out.emit(format!("{} {line}", self.lines));
        Ok(())
    }

    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        out.emit(format!("-- {} lines", std::mem::take(&mut self.in_window)));
        Ok(())
    }
}

fn progress(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the test is gone; the job's result is what counts.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [input, checkpoints, output, base, window_lines, checkpoint_windows] = args else {
        return Err("usage: power-loss-job <input> <checkpoints> <output> <window base> \
                    <lines per window> <checkpoint windows>"
            .into());
    };
    let storage = FsStorageAgent::new(checkpoints)?.on_save_phase(|operator, window, phase| {
        if phase == SavePhase::AfterDirFsync {
            progress(&format!("checkpoint {operator} {}", window.sequence()));
        }
    });
    let mut dag = Dag::new();
    let lines = dag.input("lines", LineInput::new(input).lines_per_call(1));
    let number = dag.operator("number", Number::default());
    let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(output));
    dag.connect(&lines, &number).connect(&number, &sink);
    dag.default_checkpoint_window_count(checkpoint_windows.parse()?);
    let mut config = Config::default()
        .storage(storage)
        .window_mode(WindowMode::Tuples(window_lines.parse()?))
        .window_base(base.parse()?);
    if let Ok(fail) = std::env::var("POWER_LOSS_JOB_FAIL") {
        let (operator, sequence) = fail
            .split_once(':')
            .ok_or("POWER_LOSS_JOB_FAIL is <operator>:<window sequence>")?;
        config = config.inject(Fault::error(operator, sequence.parse()?));
    }
    let report = Runtime::new(config).run(dag)?;
    for note in &report.notes {
        progress(&format!("note {note}"));
    }
    progress("done");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("power-loss-job: {e}");
            ExitCode::FAILURE
        }
    }
}
