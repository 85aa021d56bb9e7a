//! The fan-in alignment of streaming windows across an operator's input
//! edges, as a state machine with no channels, threads or operator: the
//! operator's loop (`worker::run_operator`) reads one of the edges it says
//! are [`readable`](Aligner::readable), tells it what arrived
//! ([`on_message`](Aligner::on_message)), and performs the actions it
//! returns ([`next_action`](Aligner::next_action)).
//!
//! An operator processes window W only after every live upstream has begun
//! W, and ends W only after every live upstream has ended it, so its
//! checkpoints are consistent cuts with no extra barrier. Only the edges
//! that have not reached the alignment point are readable: an upstream that
//! is ahead is back-pressured by its full channel. That cannot deadlock,
//! because an upstream blocked on window W+1 has already sent everything of
//! W to every downstream.
//!
//! An edge whose stream is over (`End { last: true }`, or `Closed`) leaves
//! the alignment set, so nothing waits for it; when every edge has left, the
//! operator's stream ends too.
//!
//! A restored operator drops whole windows up to its checkpoint (replays
//! start at its upstreams' recovery points, which may be older). An
//! AT_MOST_ONCE operator restored rejoins at the first application window
//! that starts after everything its upstreams are already past and after its
//! checkpoint; what it missed is lost.

use checkpoint_core::WindowId;

/// What arrived on an input edge: a stream message without its tuples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// The upstream began a window.
    Begin(WindowId),
    /// A batch of tuples of the upstream's current window.
    Batch,
    /// The upstream ended a window; `last` ends its stream too.
    End { window: WindowId, last: bool },
    /// The upstream's stream ended before the windows this operator needs.
    Closed,
}

/// What the operator does with a message it fed to the aligner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// A batch to process.
    Process,
    /// A batch of a window this operator drops whole: dropped unread.
    Drop,
    /// A window marker or a close, taken by the aligner: nothing to do.
    Consumed,
}

/// What the operator does next, once no edge has to be read first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Begin this window: every live edge has begun it.
    Begin(WindowId),
    /// End this window: every live edge has ended it. `last`: every edge's
    /// stream is over, so the operator's stream ends with this window.
    End { window: WindowId, last: bool },
    /// Every upstream's stream ended before the windows this operator needs
    /// (it was restored at or after their end, or while rejoining): its
    /// stream ends too, without another window.
    Close,
}

/// Which window marker came out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// A `Begin`.
    Begin,
    /// An `End`.
    End,
}

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Marker::Begin => "began",
            Marker::End => "ended",
        })
    }
}

/// Why the alignment cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AlignError {
    /// An upstream began or ended a window this operator did not expect
    /// there: a broken stream protocol, an internal error.
    #[error("internal error: upstream {marker} window {window} out of order")]
    OutOfOrder {
        /// The edge it arrived on.
        edge: usize,
        /// What it was.
        marker: Marker,
        /// The window it named.
        window: WindowId,
    },
    /// The operator would have to begin a window after this one, the last
    /// window id there is.
    #[error("no window id follows {0}")]
    Exhausted(WindowId),
}

/// Where one input edge is.
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

/// Where the operator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// AT_MOST_ONCE after a restore: learning where every edge resumes.
    Rejoining,
    /// Between windows, this one next.
    Opening(WindowId),
    /// In this window.
    InWindow(WindowId),
    /// This window, the last window id there is, ended with more to come:
    /// the alignment can only fail.
    Exhausted(WindowId),
    /// The operator's stream is over.
    Done,
}

/// The window alignment of one operator across its input edges
/// (numbered from 0).
#[derive(Debug, Clone)]
pub(crate) struct Aligner {
    status: Vec<EdgeStatus>,
    /// Windows at or before this one are dropped whole.
    skip_through: WindowId,
    stage: Stage,
    /// Rejoining starts at a multiple of this (sequence numbers).
    application_window_count: u32,
}

impl Aligner {
    /// An operator activated at `activation` (its initial or restored
    /// checkpoint): it drops whole windows up to it and begins the next.
    pub(crate) fn new(edges: usize, activation: WindowId) -> Self {
        Aligner {
            status: vec![EdgeStatus::AwaitBegin; edges],
            skip_through: activation,
            // Restored at the last window id, no upstream can begin a window
            // after it: every edge is skipped until it closes.
            stage: Stage::Opening(activation.checked_next().unwrap_or(activation)),
            application_window_count: 1,
        }
    }

    /// An AT_MOST_ONCE operator restored at `checkpoint`: it rejoins at the
    /// first application window (of `application_window_count` streaming
    /// windows, at least 1) that starts after every edge's first window and
    /// after `checkpoint`.
    pub(crate) fn rejoining(edges: usize, checkpoint: WindowId, application_window_count: u32) -> Self {
        Aligner {
            stage: Stage::Rejoining,
            application_window_count,
            ..Aligner::new(edges, checkpoint)
        }
    }

    /// The edges to read before the alignment can go on, ascending. None
    /// when [`next_action`](Aligner::next_action) has something to do, or
    /// the stream is over.
    pub(crate) fn readable(&self) -> impl Iterator<Item = usize> + '_ {
        let stage = self.stage;
        self.status
            .iter()
            .enumerate()
            .filter(move |(_, status)| match stage {
                Stage::Rejoining => **status == EdgeStatus::AwaitBegin,
                Stage::Opening(_) => matches!(status, EdgeStatus::AwaitBegin | EdgeStatus::Skipping),
                Stage::InWindow(_) => **status == EdgeStatus::Began,
                Stage::Exhausted(_) | Stage::Done => false,
            })
            .map(|(edge, _)| edge)
    }

    /// Whether the operator is between windows (where it may take control
    /// messages that wait for a window boundary).
    pub(crate) fn between_windows(&self) -> bool {
        matches!(self.stage, Stage::Rejoining | Stage::Opening(_))
    }

    /// Whether the operator's stream is over: the loop stops.
    pub(crate) fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Advances the alignment if no edge is readable: the action to
    /// perform, or `None` when an edge must be read first or the stream is
    /// over.
    pub(crate) fn next_action(&mut self) -> Result<Option<Action>, AlignError> {
        loop {
            if self.readable().next().is_some() {
                return Ok(None);
            }
            match self.stage {
                Stage::Rejoining => self.rejoin()?,
                Stage::Opening(window) => {
                    if self.status.iter().all(|s| *s == EdgeStatus::Closed) {
                        // Every upstream ended before this operator's restored
                        // checkpoint (or, rejoining, before it could): its
                        // stream ends there too, without another window.
                        self.stage = Stage::Done;
                        return Ok(Some(Action::Close));
                    }
                    self.stage = Stage::InWindow(window);
                    return Ok(Some(Action::Begin(window)));
                }
                Stage::InWindow(window) => {
                    for s in &mut self.status {
                        *s = match *s {
                            EdgeStatus::Ended { last: true } => EdgeStatus::Closed,
                            EdgeStatus::Ended { last: false } => EdgeStatus::AwaitBegin,
                            other => other,
                        };
                    }
                    let last = self.status.iter().all(|s| *s == EdgeStatus::Closed);
                    self.stage = match window.checked_next() {
                        _ if last => Stage::Done,
                        Some(next) => Stage::Opening(next),
                        // The window still ends; the next step fails.
                        None => Stage::Exhausted(window),
                    };
                    return Ok(Some(Action::End { window, last }));
                }
                Stage::Exhausted(window) => return Err(AlignError::Exhausted(window)),
                Stage::Done => return Ok(None),
            }
        }
    }

    /// Takes what arrived on `edge` (one of the readable edges).
    pub(crate) fn on_message(&mut self, edge: usize, message: Incoming) -> Result<Disposition, AlignError> {
        let status = &mut self.status[edge];
        match message {
            Incoming::Closed => *status = EdgeStatus::Closed,
            Incoming::Begin(window) => match self.stage {
                Stage::Rejoining => *status = EdgeStatus::Held(window),
                _ if window <= self.skip_through => *status = EdgeStatus::Skipping,
                Stage::Opening(expected) if window == expected => *status = EdgeStatus::Began,
                _ => {
                    return Err(AlignError::OutOfOrder {
                        edge,
                        marker: Marker::Begin,
                        window,
                    });
                }
            },
            Incoming::Batch => {
                return Ok(if *status == EdgeStatus::Skipping {
                    Disposition::Drop
                } else {
                    Disposition::Process
                });
            }
            Incoming::End { window, last } => {
                if *status == EdgeStatus::Skipping {
                    *status = if last {
                        EdgeStatus::Closed
                    } else {
                        EdgeStatus::AwaitBegin
                    };
                } else {
                    match self.stage {
                        Stage::InWindow(current) if window == current => *status = EdgeStatus::Ended { last },
                        _ => {
                            return Err(AlignError::OutOfOrder {
                                edge,
                                marker: Marker::End,
                                window,
                            });
                        }
                    }
                }
            }
        }
        Ok(Disposition::Consumed)
    }

    /// Every edge has shown its first window or closed: resume at an
    /// application window start after every edge's first window and after
    /// the restored checkpoint; the edges in earlier windows skip to it.
    fn rejoin(&mut self) -> Result<(), AlignError> {
        if self.status.iter().all(|s| *s == EdgeStatus::Closed) {
            // Nothing to rejoin: the stream closes (`Opening` says so), even
            // at the last window id, where no resume point could be named.
            self.stage = Stage::Opening(self.skip_through);
            return Ok(());
        }
        let after = self
            .skip_through
            .checked_next()
            .ok_or(AlignError::Exhausted(self.skip_through))?;
        let first = self
            .status
            .iter()
            .filter_map(|s| if let EdgeStatus::Held(w) = s { Some(*w) } else { None })
            .max()
            .unwrap_or(after)
            .max(after);
        let mut resume = first;
        while !resume.sequence().is_multiple_of(self.application_window_count) {
            resume = resume.checked_next().ok_or(AlignError::Exhausted(resume))?;
        }
        self.skip_through = resume.checked_prev().unwrap_or(resume);
        for s in &mut self.status {
            if let EdgeStatus::Held(w) = *s {
                *s = if w == resume {
                    EdgeStatus::Began
                } else {
                    EdgeStatus::Skipping
                };
            }
        }
        self.stage = Stage::Opening(resume);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u32 = 7;
    const LAST: u32 = u32::MAX;

    fn w(sequence: u32) -> WindowId {
        WindowId::new(BASE, sequence)
    }

    /// How a case's aligner starts (window sequence numbers).
    #[derive(Debug, Clone, Copy)]
    enum Start {
        /// Activated at this checkpoint (0: a fresh start).
        At(u32),
        /// AT_MOST_ONCE, restored at `checkpoint`.
        Rejoin { checkpoint: u32, app: u32 },
    }

    /// A message fed on an edge (window sequence numbers).
    #[derive(Debug, Clone, Copy)]
    enum In {
        Begin(u32),
        Batch,
        End(u32),
        /// `End { last: true }`.
        Last(u32),
        Closed,
    }

    /// What the operator's loop does: a batch's disposition, then the
    /// actions it performs until it must read an edge again.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum A {
        Process,
        Drop,
        Begin(u32),
        End(u32),
        /// `Action::End { last: true }`.
        Last(u32),
        Close,
        OutOfOrder(usize, Marker, u32),
        Exhausted(u32),
    }

    impl From<Action> for A {
        fn from(action: Action) -> A {
            match action {
                Action::Begin(window) => A::Begin(window.sequence()),
                Action::End { window, last: false } => A::End(window.sequence()),
                Action::End { window, last: true } => A::Last(window.sequence()),
                Action::Close => A::Close,
            }
        }
    }

    impl From<AlignError> for A {
        fn from(error: AlignError) -> A {
            match error {
                AlignError::OutOfOrder { edge, marker, window } => A::OutOfOrder(edge, marker, window.sequence()),
                AlignError::Exhausted(window) => A::Exhausted(window.sequence()),
            }
        }
    }

    /// One step: the edge and what arrived on it, what the loop does then,
    /// and the edges readable afterwards.
    type Step = (usize, In, &'static [A], &'static [usize]);

    struct Case {
        name: &'static str,
        start: Start,
        edges: usize,
        steps: &'static [Step],
        /// Whether the stream is over after the last step.
        done: bool,
    }

    use In::{Batch, Begin, Closed, End, Last};

    const CASES: &[Case] = &[
        Case {
            name: "two edges, one ahead: it is not read until the other catches up",
            start: Start::At(0),
            edges: 2,
            steps: &[
                (0, Begin(1), &[], &[1]),
                (1, Begin(1), &[A::Begin(1)], &[0, 1]),
                (0, Batch, &[A::Process], &[0, 1]),
                (0, End(1), &[], &[1]),
                (1, Batch, &[A::Process], &[1]),
                (1, End(1), &[A::End(1)], &[0, 1]),
                (1, Begin(2), &[], &[0]),
                (0, Begin(2), &[A::Begin(2)], &[0, 1]),
            ],
            done: false,
        },
        Case {
            name: "an empty window still begins and ends",
            start: Start::At(0),
            edges: 1,
            steps: &[
                (0, Begin(1), &[A::Begin(1)], &[0]),
                (0, End(1), &[A::End(1)], &[0]),
                (0, Begin(2), &[A::Begin(2)], &[0]),
                (0, Batch, &[A::Process], &[0]),
                (0, End(2), &[A::End(2)], &[0]),
            ],
            done: false,
        },
        Case {
            name: "a done input leaves the set while the other continues",
            start: Start::At(0),
            edges: 2,
            steps: &[
                (0, Begin(1), &[], &[1]),
                (1, Begin(1), &[A::Begin(1)], &[0, 1]),
                (0, Last(1), &[], &[1]),
                (1, End(1), &[A::End(1)], &[1]),
                (1, Begin(2), &[A::Begin(2)], &[1]),
                (1, Batch, &[A::Process], &[1]),
                (1, End(2), &[A::End(2)], &[1]),
            ],
            done: false,
        },
        Case {
            name: "all inputs done, one after the other: the stream ends with last",
            start: Start::At(0),
            edges: 2,
            steps: &[
                (0, Begin(1), &[], &[1]),
                (1, Begin(1), &[A::Begin(1)], &[0, 1]),
                (0, Last(1), &[], &[1]),
                (1, End(1), &[A::End(1)], &[1]),
                (1, Begin(2), &[A::Begin(2)], &[1]),
                (1, Last(2), &[A::Last(2)], &[]),
            ],
            done: true,
        },
        Case {
            name: "all inputs done in the same window",
            start: Start::At(0),
            edges: 2,
            steps: &[
                (1, Begin(1), &[], &[0]),
                (0, Begin(1), &[A::Begin(1)], &[0, 1]),
                (1, Last(1), &[], &[0]),
                (0, Last(1), &[A::Last(1)], &[]),
            ],
            done: true,
        },
        Case {
            name: "restored: one edge closed, the other's windows follow the checkpoint",
            start: Start::At(5),
            edges: 2,
            steps: &[
                (1, Closed, &[], &[0]),
                (0, Begin(6), &[A::Begin(6)], &[0]),
                (0, Last(6), &[A::Last(6)], &[]),
            ],
            done: true,
        },
        Case {
            name: "restored: skips windows <= its checkpoint on one edge while the other starts later",
            start: Start::At(5),
            edges: 2,
            steps: &[
                (0, Begin(4), &[], &[0, 1]),
                (0, Batch, &[A::Drop], &[0, 1]),
                (1, Begin(6), &[], &[0]),
                (0, End(4), &[], &[0]),
                (0, Begin(5), &[], &[0]),
                (0, Batch, &[A::Drop], &[0]),
                (0, End(5), &[], &[0]),
                (0, Begin(6), &[A::Begin(6)], &[0, 1]),
                (1, Batch, &[A::Process], &[0, 1]),
                (0, Batch, &[A::Process], &[0, 1]),
                (0, End(6), &[], &[1]),
                (1, End(6), &[A::End(6)], &[0, 1]),
            ],
            done: false,
        },
        Case {
            name: "restored after every upstream ended (closed, skipped then last): closes without a window",
            start: Start::At(5),
            edges: 2,
            steps: &[
                (0, Closed, &[], &[1]),
                (1, Begin(5), &[], &[1]),
                (1, Batch, &[A::Drop], &[1]),
                (1, Last(5), &[A::Close], &[]),
            ],
            done: true,
        },
        Case {
            name: "restored at the last window id: every window is skipped until the stream closes",
            start: Start::At(LAST),
            edges: 1,
            steps: &[
                (0, Begin(LAST), &[], &[0]),
                (0, Batch, &[A::Drop], &[0]),
                (0, Last(LAST), &[A::Close], &[]),
            ],
            done: true,
        },
        Case {
            name: "rejoin: edges at different first windows, application windows of 3, resumes at 9",
            start: Start::Rejoin { checkpoint: 5, app: 3 },
            edges: 2,
            steps: &[
                (0, Begin(7), &[], &[1]),
                // Held: every edge has shown its first window, resume at
                // the first multiple of 3 from max(7, 8, 5 + 1) = 8.
                (1, Begin(8), &[], &[0, 1]),
                (1, Batch, &[A::Drop], &[0, 1]),
                (1, End(8), &[], &[0, 1]),
                (1, Begin(9), &[], &[0]),
                (0, Batch, &[A::Drop], &[0]),
                (0, End(7), &[], &[0]),
                (0, Begin(8), &[], &[0]),
                (0, Batch, &[A::Drop], &[0]),
                (0, End(8), &[], &[0]),
                (0, Begin(9), &[A::Begin(9)], &[0, 1]),
                (0, Batch, &[A::Process], &[0, 1]),
                (1, Batch, &[A::Process], &[0, 1]),
                (1, End(9), &[], &[0]),
                (0, End(9), &[A::End(9)], &[0, 1]),
            ],
            done: false,
        },
        Case {
            name: "rejoin: an edge whose first window is the resume point begins it at once",
            start: Start::Rejoin { checkpoint: 7, app: 2 },
            edges: 2,
            steps: &[
                (0, Begin(6), &[], &[1]),
                // Resume at 8 = max(6, 8, 7 + 1), even: edge 1 is in it.
                (1, Begin(8), &[], &[0]),
                (0, End(6), &[], &[0]),
                (0, Begin(7), &[], &[0]),
                (0, End(7), &[], &[0]),
                (0, Begin(8), &[A::Begin(8)], &[0, 1]),
            ],
            done: false,
        },
        Case {
            name: "rejoin: the checkpoint bounds the resume point, a closed edge is not waited for",
            start: Start::Rejoin { checkpoint: 10, app: 4 },
            edges: 2,
            steps: &[
                (1, Closed, &[], &[0]),
                // Resume at 12: the first multiple of 4 after 10.
                (0, Begin(3), &[], &[0]),
                (0, End(3), &[], &[0]),
                (0, Begin(12), &[A::Begin(12)], &[0]),
            ],
            done: false,
        },
        Case {
            name: "rejoin: every edge closed closes without a window",
            start: Start::Rejoin { checkpoint: 5, app: 3 },
            edges: 2,
            steps: &[(0, Closed, &[], &[1]), (1, Closed, &[A::Close], &[])],
            done: true,
        },
        Case {
            name: "out of order: a Begin of another window than the next",
            start: Start::At(0),
            edges: 2,
            steps: &[
                (0, Begin(1), &[], &[1]),
                (1, Begin(2), &[A::OutOfOrder(1, Marker::Begin, 2)], &[1]),
            ],
            done: false,
        },
        Case {
            name: "out of order: an End of another window than the current one",
            start: Start::At(0),
            edges: 1,
            steps: &[
                (0, Begin(1), &[A::Begin(1)], &[0]),
                (0, End(2), &[A::OutOfOrder(0, Marker::End, 2)], &[0]),
            ],
            done: false,
        },
        Case {
            name: "out of order: an End before any Begin",
            start: Start::At(0),
            edges: 1,
            steps: &[(0, End(1), &[A::OutOfOrder(0, Marker::End, 1)], &[0])],
            done: false,
        },
        Case {
            name: "out of order: an End while rejoining",
            start: Start::Rejoin { checkpoint: 5, app: 1 },
            edges: 1,
            steps: &[(0, End(6), &[A::OutOfOrder(0, Marker::End, 6)], &[0])],
            done: false,
        },
        Case {
            name: "the last window id ends, then no window can follow",
            start: Start::At(LAST - 1),
            edges: 1,
            steps: &[
                (0, Begin(LAST), &[A::Begin(LAST)], &[0]),
                (0, End(LAST), &[A::End(LAST), A::Exhausted(LAST)], &[]),
            ],
            done: false,
        },
    ];

    /// Drives an aligner as `worker::run_operator` does, recording what the
    /// loop would do, and checks each step and the state after it.
    fn run(case: &Case) {
        let mut aligner = match case.start {
            Start::At(activation) => Aligner::new(case.edges, w(activation)),
            Start::Rejoin { checkpoint, app } => Aligner::rejoining(case.edges, w(checkpoint), app),
        };
        let name = case.name;
        let all: Vec<usize> = (0..case.edges).collect();
        assert_eq!(aligner.readable().collect::<Vec<_>>(), all, "{name}: at the start");
        assert_eq!(aligner.next_action(), Ok(None), "{name}: at the start");
        assert!(aligner.between_windows(), "{name}: at the start");
        let mut open = false;
        for (n, &(edge, input, expected, readable)) in case.steps.iter().enumerate() {
            let at = format!("{name}, step {n} ({input:?} on edge {edge})");
            assert!(aligner.readable().any(|e| e == edge), "{at}: the edge is not readable");
            let message = match input {
                In::Begin(s) => Incoming::Begin(w(s)),
                In::Batch => Incoming::Batch,
                In::End(s) => Incoming::End {
                    window: w(s),
                    last: false,
                },
                In::Last(s) => Incoming::End {
                    window: w(s),
                    last: true,
                },
                In::Closed => Incoming::Closed,
            };
            let mut did = Vec::new();
            let mut failed = false;
            match aligner.on_message(edge, message) {
                Ok(Disposition::Process) => did.push(A::Process),
                Ok(Disposition::Drop) => did.push(A::Drop),
                Ok(Disposition::Consumed) => {}
                Err(e) => {
                    did.push(e.into());
                    failed = true;
                }
            }
            while !failed && !aligner.is_done() {
                match aligner.next_action() {
                    Ok(Some(action)) => {
                        open = matches!(action, Action::Begin(_));
                        did.push(action.into());
                    }
                    Ok(None) => break,
                    Err(e) => {
                        did.push(e.into());
                        failed = true;
                    }
                }
            }
            assert_eq!(did, expected, "{at}");
            assert_eq!(aligner.readable().collect::<Vec<_>>(), readable, "{at}: readable after");
            if failed {
                assert_eq!(n + 1, case.steps.len(), "{at}: the loop stops at an error");
            } else if !aligner.is_done() {
                assert_eq!(aligner.between_windows(), !open, "{at}: between windows");
            }
        }
        assert_eq!(aligner.is_done(), case.done, "{name}: done at the end");
        if case.done {
            assert_eq!(aligner.next_action(), Ok(None), "{name}: nothing after the end");
            assert!(!aligner.between_windows(), "{name}: not between windows once done");
        }
    }

    #[test]
    fn alignment_cases() {
        for case in CASES {
            run(case);
        }
    }

    #[test]
    fn out_of_order_errors_read_as_before() {
        let error = AlignError::OutOfOrder {
            edge: 1,
            marker: Marker::Begin,
            window: WindowId::new(1, 3),
        };
        assert_eq!(
            error.to_string(),
            "internal error: upstream began window 0x0000000100000003 out of order"
        );
        let error = AlignError::OutOfOrder {
            edge: 0,
            marker: Marker::End,
            window: WindowId::new(1, 3),
        };
        assert_eq!(
            error.to_string(),
            "internal error: upstream ended window 0x0000000100000003 out of order"
        );
    }

    #[test]
    fn rejoining_past_the_last_window_id_is_exhausted_unless_every_upstream_closed() {
        // Restored at the last window id with every upstream over: the
        // stream closes, as it does for an operator that does not rejoin.
        let mut aligner = Aligner::rejoining(1, w(LAST), 1);
        assert_eq!(aligner.on_message(0, Incoming::Closed), Ok(Disposition::Consumed));
        assert_eq!(aligner.next_action(), Ok(Some(Action::Close)));
        assert!(aligner.is_done());
        // Restored at the last window id, an upstream still going: nothing
        // can follow it.
        let mut aligner = Aligner::rejoining(1, w(LAST), 1);
        assert_eq!(
            aligner.on_message(0, Incoming::Begin(w(LAST))),
            Ok(Disposition::Consumed)
        );
        assert_eq!(aligner.next_action(), Err(AlignError::Exhausted(w(LAST))));
        // No application window of 4 starts at or after the edge's first
        // window (2^32 - 2 and 2^32 - 1 are not multiples of 4).
        let mut aligner = Aligner::rejoining(1, w(LAST - 2), 4);
        assert_eq!(
            aligner.on_message(0, Incoming::Begin(w(LAST - 1))),
            Ok(Disposition::Consumed)
        );
        assert_eq!(aligner.next_action(), Err(AlignError::Exhausted(w(LAST))));
    }
}
