//! The loops of operator threads: an input's loop asks its source for
//! tuples and cuts windows; an operator's loop aligns windows across its
//! upstreams.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpoint_core::WindowId;
use crossbeam_channel::{Receiver, Select, TryRecvError};

use crate::core::{AsInput, AsOperator, Core};
use crate::failure::Failure;
use crate::operator::{Emit, InputOperator, Operator};
use crate::stream::Message;
use crate::window_gen::WindowGenerator;

/// An input's thread: windows cut by the generator, between two
/// `emit_tuples` calls.
pub(crate) fn run_input<I: InputOperator>(
    core: &mut Core<AsInput<I>>,
    generator: &WindowGenerator,
    stop: &AtomicBool,
) -> Result<(), Failure> {
    core.start()?;
    let base = core.activation().base_seconds();
    let mut sequence = core.activation().sequence() + 1;
    core.begin_window(WindowId::new(base, sequence))?;
    loop {
        if stop.load(Ordering::Relaxed) {
            core.end_window(WindowId::new(base, sequence), true)?;
            break;
        }
        match core.emit_tuples()? {
            Emit::Done => {
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
        while sequence < target {
            core.end_window(WindowId::new(base, sequence), false)?;
            sequence += 1;
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
    /// The edge's stream is over: it left the alignment set.
    Closed,
}

enum Wake<T> {
    Abort,
    Control(Result<crate::coordinator::Control, crossbeam_channel::RecvError>),
    Edge(usize, Result<Message<T>, crossbeam_channel::RecvError>),
}

enum Stage {
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
pub(crate) fn run_operator<O: Operator>(
    core: &mut Core<AsOperator<O>>,
    inputs: Vec<Receiver<Message<O::Input>>>,
) -> Result<(), Failure> {
    core.start()?;
    let mut status = vec![EdgeStatus::AwaitBegin; inputs.len()];
    let mut stage = Stage::Opening(core.activation().next());
    let mut next_edge = 0usize;
    loop {
        let readable: Vec<usize> = (0..inputs.len())
            .filter(|&i| match stage {
                Stage::Opening(_) => status[i] == EdgeStatus::AwaitBegin,
                Stage::InWindow(_) => status[i] == EdgeStatus::Began,
            })
            .collect();
        if readable.is_empty() {
            match stage {
                Stage::Opening(window) => {
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
                    stage = Stage::Opening(window.next());
                }
            }
            continue;
        }

        // A message from a readable edge without blocking, round robin so no
        // upstream starves; else block on the edges, control and abort.
        let mut received = None;
        for k in 0..readable.len() {
            let i = readable[(next_edge + k) % readable.len()];
            match inputs[i].try_recv() {
                Ok(message) => {
                    received = Some((i, Ok(message)));
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
                let wake = {
                    let mut select = Select::new();
                    for &i in &readable {
                        select.recv(&inputs[i]);
                    }
                    let control_index = select.recv(core.control());
                    let abort_index = select.recv(core.abort());
                    let operation = select.select();
                    let index = operation.index();
                    if index == abort_index {
                        let _ = operation.recv(core.abort());
                        Wake::Abort
                    } else if index == control_index {
                        Wake::Control(operation.recv(core.control()))
                    } else {
                        let i = readable[index];
                        Wake::Edge(i, operation.recv(&inputs[i]))
                    }
                };
                match wake {
                    Wake::Abort => return Err(Failure::Aborted),
                    Wake::Control(message) => {
                        core.accept(message.map_err(|_| Failure::Aborted)?)?;
                        if let Stage::Opening(_) = stage {
                            core.between_windows()?;
                        }
                        continue;
                    }
                    Wake::Edge(i, message) => (i, message.map_err(|_| Failure::Aborted)),
                }
            }
        };
        match message? {
            Message::Begin(window) => match stage {
                Stage::Opening(expected) if window == expected => status[edge] = EdgeStatus::Began,
                _ => {
                    return Err(Failure::operator(
                        core.name(),
                        None,
                        format!("internal error: upstream began window {window} out of order"),
                    ));
                }
            },
            Message::Batch(batch) => core.process_batch(batch)?,
            Message::End { window, last } => match stage {
                Stage::InWindow(current) if window == current => status[edge] = EdgeStatus::Ended { last },
                _ => {
                    return Err(Failure::operator(
                        core.name(),
                        None,
                        format!("internal error: upstream ended window {window} out of order"),
                    ));
                }
            },
        }
    }
    core.await_shutdown()
}

/// Keeps the generator's stop flag shared between inputs and the stop handle.
pub(crate) type StopFlag = Arc<AtomicBool>;
