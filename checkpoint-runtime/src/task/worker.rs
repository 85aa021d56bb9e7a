//! The loops of operator threads: an input's loop asks its source for
//! tuples and cuts windows; an operator's loop reads its upstreams as its
//! window aligner says.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpoint_core::WindowId;
use crossbeam_channel::{Receiver, Select, TryRecvError};

use super::{AsInput, AsOperator, Core};
use crate::failure::Failure;
use crate::operator::{Emit, InputOperator, Operator, ProcessingMode};
use crate::stream::Message;
use crate::window::{Action, AlignError, Aligner, Disposition, Incoming, StopDecision, WindowGenerator};

/// Keeps the generator's stop flag shared between inputs and the stop handle.
pub(crate) type StopFlag = Arc<AtomicBool>;

/// An input's thread: windows cut by the generator, between two
/// `emit_tuples` calls. A restored input resumes at the window after its
/// checkpoint.
pub(crate) fn run_input<I: InputOperator>(
    core: &mut Core<AsInput<I>>,
    generator: &WindowGenerator,
    stop: &AtomicBool,
) -> Result<(), Failure> {
    core.start()?;
    let agreement = generator.stop_agreement();
    if core.ended() {
        // Restored from the final checkpoint of a stream that ended: an
        // uninterrupted run opens no further window, so neither does this.
        agreement.leave(core.name());
        core.close_stream()?;
        return core.await_shutdown();
    }
    let base = core.activation().base_seconds();
    let Some(first) = core.activation().checked_next() else {
        return Err(Failure::exhausted(core.name(), core.activation()));
    };
    let mut sequence = first.sequence();
    agreement.join(core.name(), sequence);
    core.begin_window(first)?;
    // In a deterministic window mode a stop waits for the natural end of a
    // window where every operator's application window ends too, so a
    // resumed job cuts the same windows as an uninterrupted one (an idle
    // input keeps the window open, as it does without a stop). With several
    // inputs, every one ends its stream after the same window (see
    // `window::stop`): the first to see the stop fixes it.
    let deterministic = generator.is_deterministic();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && !deterministic {
            core.end_window(WindowId::new(base, sequence), true)?;
            break;
        }
        if stopping {
            agreement.fix(|latest| generator.first_stop_at_or_after(latest));
        }
        match core.emit_tuples()? {
            Emit::Done => {
                agreement.leave(core.name());
                core.record_end(WindowId::new(base, sequence))?;
                core.end_window(WindowId::new(base, sequence), true)?;
                break;
            }
            Emit::Idle => {
                core.poll_control()?;
                generator.idle_wait(sequence);
            }
            Emit::Continue => core.poll_control()?,
        }
        let target = generator.target(sequence, core.out.emitted_in_window());
        let mut stopped = false;
        while u64::from(sequence) < target {
            // Each complete window: the stream ends with it if a stop fixed
            // it as the last.
            if agreement.next(core.name(), sequence) == StopDecision::Stop {
                core.end_window(WindowId::new(base, sequence), true)?;
                stopped = true;
                break;
            }
            // Checked before the window ends: a checkpoint at the last
            // window id would leave a restart nowhere to go.
            let Some(next) = sequence.checked_add(1) else {
                return Err(Failure::exhausted(core.name(), WindowId::new(base, sequence)));
            };
            core.end_window(WindowId::new(base, sequence), false)?;
            sequence = next;
            core.begin_window(WindowId::new(base, sequence))?;
        }
        if stopped {
            break;
        }
    }
    core.await_shutdown()
}

/// An operator's thread: reads its input edges as its [`Aligner`] says,
/// and performs what it returns (see `window::aligner` for the rules: an
/// operator processes window W only after every live upstream has begun W,
/// ends W only after every live upstream has ended it; a restored operator
/// drops whole windows up to its checkpoint; an AT_MOST_ONCE operator
/// rejoins at the next application window).
pub(crate) fn run_operator<O: Operator>(
    core: &mut Core<AsOperator<O>>,
    inputs: Vec<Receiver<Message<O::Input>>>,
) -> Result<(), Failure> {
    core.start()?;
    let Some(control) = core.control().cloned() else {
        return Err(Failure::operator(
            core.name(),
            None,
            "internal error: a thread without a control channel",
        ));
    };
    let kill = core.kill().clone();
    let mut aligner = if core.restored() && core.mode() == ProcessingMode::AtMostOnce {
        Aligner::rejoining(inputs.len(), core.activation(), core.application_window_count())
    } else {
        Aligner::new(inputs.len(), core.activation())
    };
    let mut next_edge = 0usize;
    // The alignment wait (Flink's checkpointAlignmentTime, here at every
    // window): from the first input's end of a window to the last one's.
    let mut first_end: Option<std::time::Instant> = None;
    let alignment = metrics::histogram!("checkpoint_alignment_wait_seconds", "operator" => core.name().to_owned());
    while !aligner.is_done() {
        let readable: Vec<usize> = aligner.readable().collect();
        if readable.is_empty() {
            match aligner.next_action().map_err(|e| align_failure(core.name(), e))? {
                Some(Action::Begin(window)) => core.begin_window(window)?,
                Some(Action::End { window, last }) => {
                    if let Some(first) = first_end.take() {
                        alignment.record(first.elapsed().as_secs_f64());
                    }
                    core.end_window(window, last)?
                }
                Some(Action::Close) => core.close_stream()?,
                // Nothing readable and nothing to do: the stream is over.
                None => {}
            }
            continue;
        }

        // A message from a readable edge without blocking, round robin so no
        // upstream starves; else block on the edges, control and kill.
        let mut received = None;
        for k in 0..readable.len() {
            let i = readable[(next_edge + k) % readable.len()];
            match inputs[i].try_recv() {
                Ok(message) => {
                    received = Some((i, message));
                    next_edge = next_edge.wrapping_add(k + 1);
                    break;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(Failure::Aborted),
            }
        }
        let (edge, message) = match received {
            Some(r) => r,
            None => {
                // Block on the edges, control, kill, and the channels of
                // this thread's catching-up cursors; then try what woke.
                let mut select = Select::new();
                for &i in &readable {
                    select.recv(&inputs[i]);
                }
                let control_index = select.recv(&control);
                let kill_index = select.recv(&kill);
                match core.cursors().ready(select, kill_index + 1)? {
                    Some(index) if index == kill_index => return Err(Failure::Aborted),
                    Some(index) if index == control_index => match control.try_recv() {
                        Ok(message) => {
                            core.accept(message)?;
                            if aligner.between_windows() {
                                core.between_windows()?;
                            }
                        }
                        Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Disconnected) => return Err(Failure::Aborted),
                    },
                    // An edge has a message (read at the top of the loop),
                    // or cursors advanced.
                    Some(_) | None => {}
                }
                continue;
            }
        };
        if inputs.len() > 1 && first_end.is_none() && matches!(message, Message::End { .. }) {
            first_end = Some(std::time::Instant::now());
        }
        let disposition = aligner
            .on_message(edge, incoming(&message))
            .map_err(|e| align_failure(core.name(), e))?;
        if let (Disposition::Process, Message::Batch(batch)) = (disposition, message) {
            core.process_batch(batch)?;
        }
        // A busy operator that emits little still feeds recovered
        // downstreams reading its store.
        core.out.advance_cursors()?;
    }
    core.await_shutdown()
}

/// The failure an operator reports when its alignment cannot go on.
fn align_failure(operator: &str, error: AlignError) -> Failure {
    match error {
        AlignError::Exhausted(last) => Failure::exhausted(operator, last),
        AlignError::OutOfOrder { .. } => Failure::operator(operator, None, error),
    }
}

/// What the aligner needs to know of a message.
fn incoming<T>(message: &Message<T>) -> Incoming {
    match message {
        Message::Begin(window) => Incoming::Begin(*window),
        Message::Batch(_) => Incoming::Batch,
        Message::End { window, last } => Incoming::End {
            window: *window,
            last: *last,
        },
        Message::Closed => Incoming::Closed,
    }
}
