//! The loops of operator threads: an input's loop asks its source for
//! tuples and cuts windows; an operator's loop aligns windows across its
//! upstreams.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpoint_core::WindowId;
use crossbeam_channel::{Receiver, Select, TryRecvError};

use crate::core::{AsInput, AsOperator, Core};
use crate::failure::Failure;
use crate::operator::{Emit, InputOperator, Operator, ProcessingMode};
use crate::stream::Message;
use crate::window_gen::WindowGenerator;

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
    if core.ended() {
        // Restored from the final checkpoint of a stream that ended: an
        // uninterrupted run opens no further window, so neither does this.
        core.close_stream()?;
        return core.await_shutdown();
    }
    let base = core.activation().base_seconds();
    let Some(first) = core.activation().checked_next() else {
        return Err(Failure::exhausted(core.name(), core.activation()));
    };
    let mut sequence = first.sequence();
    core.begin_window(first)?;
    // In a deterministic window mode a stop waits for the natural end of a
    // window where every operator's application window ends too, so a
    // resumed job cuts the same windows as an uninterrupted one (an idle
    // input keeps the window open, as it does without a stop).
    let deterministic = generator.is_deterministic();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && !deterministic {
            core.end_window(WindowId::new(base, sequence), true)?;
            break;
        }
        match core.emit_tuples()? {
            Emit::Done => {
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
        if stopping && u64::from(sequence) < target && generator.may_stop_after(sequence) {
            core.end_window(WindowId::new(base, sequence), true)?;
            break;
        }
        while u64::from(sequence) < target {
            // Checked before the window ends: a checkpoint at the last
            // window id would leave a restart nowhere to go.
            let Some(next) = sequence.checked_add(1) else {
                return Err(Failure::exhausted(core.name(), WindowId::new(base, sequence)));
            };
            core.end_window(WindowId::new(base, sequence), false)?;
            sequence = next;
            core.begin_window(WindowId::new(base, sequence))?;
        }
    }
    core.await_shutdown()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdgeStatus {
    /// Waiting for the edge's `Begin` of the next window.
    AwaitBegin,
    /// The edge is in the current window.
    Began,
    /// The edge ended the current window; `last` ends its stream too.
    Ended { last: bool },
    /// The edge is in a window this operator drops whole (at or before its
    /// restored checkpoint, or missed while it rejoins).
    Skipping,
    /// Rejoining (AT_MOST_ONCE): the edge's first window began; the edge is
    /// not read until every edge has shown its first window.
    Held(WindowId),
    /// The edge's stream is over: it left the alignment set.
    Closed,
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    /// AT_MOST_ONCE after a restore: learning where every edge resumes.
    Rejoining,
    Opening(WindowId),
    InWindow(WindowId),
}

/// An operator's thread: processes window W only after every live upstream
/// has begun W, ends W only after every live upstream has ended it.
///
/// It reads only the edges that have not yet reached the alignment point,
/// so an upstream that is ahead is back-pressured by its full channel; that
/// cannot deadlock, because an upstream blocked on window W+1 has already
/// sent everything of W to every downstream.
///
/// A restored operator drops whole windows up to its checkpoint (replays
/// start at its upstreams' recovery points, which may be older). An
/// AT_MOST_ONCE operator rejoins at the first application window that
/// starts after everything its upstreams are already past.
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
    let mut status = vec![EdgeStatus::AwaitBegin; inputs.len()];
    let mut skip_through = core.activation();
    let mut stage = if core.restored() && core.mode() == ProcessingMode::AtMostOnce {
        Stage::Rejoining
    } else {
        // Restored at the last window id, no upstream can begin a window
        // after it: every edge is skipped until it closes.
        Stage::Opening(core.activation().checked_next().unwrap_or(core.activation()))
    };
    let app = core.application_window_count();
    let mut next_edge = 0usize;
    loop {
        let readable: Vec<usize> = (0..inputs.len())
            .filter(|&i| match stage {
                Stage::Rejoining => status[i] == EdgeStatus::AwaitBegin,
                Stage::Opening(_) => matches!(status[i], EdgeStatus::AwaitBegin | EdgeStatus::Skipping),
                Stage::InWindow(_) => status[i] == EdgeStatus::Began,
            })
            .collect();
        if readable.is_empty() {
            match stage {
                Stage::Rejoining => {
                    // Resume at an application window start after every
                    // edge's first window and after the restored checkpoint.
                    let after = skip_through
                        .checked_next()
                        .ok_or_else(|| Failure::exhausted(core.name(), skip_through))?;
                    let first = status
                        .iter()
                        .filter_map(|s| if let EdgeStatus::Held(w) = s { Some(*w) } else { None })
                        .max()
                        .unwrap_or(after)
                        .max(after);
                    let mut resume = first;
                    while !resume.sequence().is_multiple_of(app) {
                        resume = resume
                            .checked_next()
                            .ok_or_else(|| Failure::exhausted(core.name(), resume))?;
                    }
                    skip_through = resume.checked_prev().unwrap_or(resume);
                    for s in &mut status {
                        if let EdgeStatus::Held(w) = *s {
                            *s = if w == resume {
                                EdgeStatus::Began
                            } else {
                                EdgeStatus::Skipping
                            };
                        }
                    }
                    stage = Stage::Opening(resume);
                }
                Stage::Opening(window) => {
                    if status.iter().all(|s| *s == EdgeStatus::Closed) {
                        // Every upstream ended before this operator's restored
                        // checkpoint (or, rejoining, before it could): its
                        // stream ends there too, without another window.
                        core.close_stream()?;
                        break;
                    }
                    core.begin_window(window)?;
                    stage = Stage::InWindow(window);
                }
                Stage::InWindow(window) => {
                    for s in &mut status {
                        *s = match *s {
                            EdgeStatus::Ended { last: true } => EdgeStatus::Closed,
                            EdgeStatus::Ended { last: false } => EdgeStatus::AwaitBegin,
                            other => other,
                        };
                    }
                    let last = status.iter().all(|s| *s == EdgeStatus::Closed);
                    core.end_window(window, last)?;
                    if last {
                        break;
                    }
                    let next = window
                        .checked_next()
                        .ok_or_else(|| Failure::exhausted(core.name(), window))?;
                    stage = Stage::Opening(next);
                }
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
                            if let Stage::Opening(_) | Stage::Rejoining = stage {
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
        let out_of_order = |what: &str, window: WindowId| {
            Failure::operator(
                core.name(),
                None,
                format!("internal error: upstream {what} window {window} out of order"),
            )
        };
        match message {
            Message::Closed => status[edge] = EdgeStatus::Closed,
            Message::Begin(window) => match stage {
                Stage::Rejoining => status[edge] = EdgeStatus::Held(window),
                _ if window <= skip_through => status[edge] = EdgeStatus::Skipping,
                Stage::Opening(expected) if window == expected => status[edge] = EdgeStatus::Began,
                _ => return Err(out_of_order("began", window)),
            },
            Message::Batch(batch) => {
                if status[edge] != EdgeStatus::Skipping {
                    core.process_batch(batch)?;
                }
            }
            Message::End { window, last } => {
                if status[edge] == EdgeStatus::Skipping {
                    status[edge] = if last {
                        EdgeStatus::Closed
                    } else {
                        EdgeStatus::AwaitBegin
                    };
                } else {
                    match stage {
                        Stage::InWindow(current) if window == current => status[edge] = EdgeStatus::Ended { last },
                        _ => return Err(out_of_order("ended", window)),
                    }
                }
            }
        }
        // A busy operator that emits little still feeds recovered
        // downstreams reading its store.
        core.out.advance_cursors()?;
    }
    core.await_shutdown()
}
