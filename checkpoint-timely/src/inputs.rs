//! The loop that drives a worker's inputs: window after window, each
//! input partition until its stream ends, at most `windows_ahead` windows
//! past the durable frontier; then the end of the run, once every
//! operator has closed every window and every worker has recorded the
//! last.

use std::time::Duration;

use checkpoint_core::WindowId;
use checkpoint_runtime::portable::Instance;
use checkpoint_runtime::{Emit, RunError};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::TimelyJob;
use crate::commit::Committer;
use crate::dataflow::{Hosted, InputPort, Shared, guarded, markers};

/// Runs the inputs hosted here window by window (each ends after the job's
/// tuple count), at most `windows_ahead` windows past the durable frontier,
/// then closes them once every operator has closed every window; tells
/// every instance here of each newly committed window. Returns the windows
/// opened and the last committed one.
pub(crate) fn drive_inputs(
    worker: &mut Worker,
    job: &TimelyJob,
    shared: &Shared,
    hosted: &[Hosted],
    mut inputs: Vec<InputPort>,
    (durable, closed): (&ProbeHandle<u64>, &ProbeHandle<u64>),
    mut committer: Committer,
) -> (u64, Option<WindowId>) {
    let park = Some(Duration::from_millis(20));
    // Per input, per hosted partition: it has not ended. A partition that
    // ended before the window this run resumes after (restored from its
    // final checkpoint) ended already: it only sends its markers, in this
    // run's first window.
    let mut open: Vec<Vec<bool>> = inputs
        .iter()
        .map(|(node, _)| {
            hosted[*node]
                .borrow()
                .iter()
                .map(|(_, instance)| !shared.ended_before.contains(instance.name()))
                .collect()
        })
        .collect();
    let mut time = shared.first;
    for (i, (node, handle)) in inputs.iter_mut().enumerate() {
        handle.advance_to(time);
        for _ in open[i].iter().filter(|o| !**o) {
            for marker in markers(shared.workers) {
                handle.send(marker);
            }
        }
        debug_assert_eq!(open[i].len(), hosted[*node].borrow().len());
    }
    while open.iter().flatten().any(|o| *o) && !shared.failed() {
        while durable.less_than(&(time + 1).saturating_sub(job.windows_ahead)) && !shared.failed() {
            worker.step_or_park(park);
            committer.advance(shared, hosted, durable);
        }
        if time > u64::from(u32::MAX) {
            let (node, _) = &inputs[0];
            let operator = hosted[*node]
                .borrow()
                .first()
                .map_or_else(String::new, |(_, i)| i.name().to_owned());
            shared.fail(RunError::WindowSequenceExhausted {
                operator,
                last: shared.window(u64::from(u32::MAX)),
            });
            break;
        }
        let window = shared.window(time);
        // Each partition runs until its own stream ends; the operators end
        // theirs in the latest partition's last window.
        for (i, (node, handle)) in inputs.iter_mut().enumerate() {
            for (j, (_, instance)) in hosted[*node].borrow_mut().iter_mut().enumerate() {
                if !open[i][j] {
                    continue;
                }
                let name = instance.name().to_owned();
                let ran = guarded(&name, Some(window), || {
                    instance.begin_window(window)?;
                    let emitted = emit_window(&mut **instance, job.window_tuples, &mut || {
                        worker.step_or_park(Some(Duration::from_millis(1)));
                        !shared.failed()
                    })?;
                    let last = emitted == Emit::Done && !shared.failed();
                    instance.end_window(last)?;
                    shared.checkpoint(*node, &mut **instance, time, last)?;
                    Ok(last)
                });
                let last = ran.unwrap_or_else(|e| {
                    shared.fail(e);
                    false
                });
                for record in shared.records(instance.take_output()) {
                    handle.send(record);
                }
                if last {
                    open[i][j] = false;
                    for marker in markers(shared.workers) {
                        handle.send(marker);
                    }
                }
            }
        }
        time += 1;
        for (_, handle) in &mut inputs {
            handle.advance_to(time);
        }
        worker.step();
        committer.advance(shared, hosted, durable);
    }
    // Every operator closes every window before the inputs close: from an
    // empty frontier it could not tell which trailing empty windows there
    // were.
    while closed.less_than(&time) && !shared.failed() {
        worker.step_or_park(park);
        committer.advance(shared, hosted, durable);
    }
    drop(inputs);
    while !(closed.done() && durable.done()) {
        worker.step_or_park(park);
        committer.advance(shared, hosted, durable);
    }
    committer.advance(shared, hosted, durable);
    // The last window is recorded here: the operators are told of it once
    // every worker has recorded it.
    committer.close();
    while !committer.done() {
        worker.step_or_park(park);
        committer.advance(shared, hosted, durable);
    }
    committer.finish(shared);
    (time, committer.told())
}

/// An input's window: `emit_tuples` until the window's tuple count or the
/// end of its stream.
/// `Emit::Idle` (nothing to emit now) keeps the window open, as in the
/// threaded runtime: `wait` lets the worker run its dataflow meanwhile, and
/// says whether to go on (not after a failure).
fn emit_window(instance: &mut dyn Instance, tuples: u64, wait: &mut dyn FnMut() -> bool) -> Result<Emit, RunError> {
    let mut emitted = Emit::Continue;
    while instance.emitted_in_window() < tuples {
        emitted = instance.emit()?;
        match emitted {
            Emit::Continue => {}
            Emit::Idle => {
                if !wait() {
                    break;
                }
            }
            Emit::Done => break,
        }
    }
    Ok(emitted)
}
