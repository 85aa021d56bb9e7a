//! Fault injection: make an operator fail at a chosen window, for tests and
//! demonstrations of recovery.

use std::sync::{Arc, Mutex};

use checkpoint_core::WindowId;

/// Where in a window an injected fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultPoint {
    /// Before the operator's `begin_window` hook (for an operator whose
    /// application window spans several streaming windows: at the streaming
    /// window's start, hook or not).
    BeginWindow,
    /// After the operator processed (or, for an input, emitted) this many
    /// tuples of the window.
    Tuple(u64),
    /// Before the operator's `end_window` hook.
    EndWindow,
}

impl std::fmt::Display for FaultPoint {
    /// Where in the window, as a message can say it.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::FaultPoint;
    ///
    /// assert_eq!(FaultPoint::Tuple(5).to_string(), "after tuple 5");
    /// assert_eq!(FaultPoint::BeginWindow.to_string(), "at the start of the window");
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultPoint::BeginWindow => f.write_str("at the start of the window"),
            FaultPoint::Tuple(k) => write!(f, "after tuple {k}"),
            FaultPoint::EndWindow => f.write_str("before end_window"),
        }
    }
}

/// How an injected fault fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// The operator panics.
    Panic,
    /// The hook returns an error.
    Error,
}

/// "Fail operator X at window W", once or several times.
///
/// Faults live in the runtime's [`Config`](crate::Config), not in the
/// operator, so a fault that fires twice fires again in the restored
/// operator.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{Config, Fault, FaultPoint};
///
/// let config = Config::default()
///     .inject(Fault::panic("count#1", 12))                   // once, at window 12's start
///     .inject(Fault::error("sink", 30).at(FaultPoint::Tuple(5)).times(2));
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub(crate) operator: String,
    pub(crate) sequence: u32,
    pub(crate) point: FaultPoint,
    pub(crate) kind: FaultKind,
    pub(crate) times: u32,
    /// A panic goes through the panic hook (printed).
    pub(crate) printed: bool,
}

impl Fault {
    /// The physical operator `operator` (`count#1` for a partition) panics
    /// at the start of the window with sequence number `window_sequence`.
    /// The panic unwinds without the panic hook, so nothing is printed for
    /// it (the run report and the run error name it); [`Fault::printed`]
    /// has it printed, with a backtrace under `RUST_BACKTRACE`.
    pub fn panic(operator: &str, window_sequence: u32) -> Self {
        Fault {
            operator: operator.to_owned(),
            sequence: window_sequence,
            point: FaultPoint::BeginWindow,
            kind: FaultKind::Panic,
            times: 1,
            printed: false,
        }
    }

    /// Like [`Fault::panic`], but the hook returns an error.
    pub fn error(operator: &str, window_sequence: u32) -> Self {
        Fault {
            kind: FaultKind::Error,
            ..Fault::panic(operator, window_sequence)
        }
    }

    /// A panic that goes through the panic hook, as an unexpected one does:
    /// printed (with a backtrace under `RUST_BACKTRACE`), or reported by a
    /// hook the program installed (the examples print one line).
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::Fault;
    ///
    /// let fault = Fault::panic("count", 9).printed();
    /// # let _ = fault;
    /// ```
    pub fn printed(mut self) -> Self {
        self.printed = true;
        self
    }

    /// Fires at `point` of the window instead of its start.
    pub fn at(mut self, point: FaultPoint) -> Self {
        self.point = point;
        self
    }

    /// Fires `times` times (each time the window is processed again after a
    /// recovery), 1 unless set.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }
}

/// The faults of a job, with how many times each may still fire.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    armed: Arc<Mutex<Vec<Fault>>>,
}

impl Faults {
    pub(crate) fn add(&self, fault: Fault) {
        self.armed.lock().unwrap_or_else(|p| p.into_inner()).push(fault);
    }

    /// The operators faults are injected into, each once, in order.
    pub(crate) fn operators(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for fault in self.armed.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if !names.contains(&fault.operator) {
                names.push(fault.operator.clone());
            }
        }
        names
    }

    /// Whether any fault targets `operator`.
    pub(crate) fn targets(&self, operator: &str) -> bool {
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|f| f.operator == operator)
    }

    /// Fires the fault armed for this point, if any: a panic, or the error
    /// to return.
    pub(crate) fn check(&self, operator: &str, window: WindowId, point: FaultPoint) -> Result<(), String> {
        let (kind, printed) = {
            let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
            let Some(fault) = armed
                .iter_mut()
                .find(|f| f.operator == operator && f.sequence == window.sequence() && f.point == point && f.times > 0)
            else {
                return Ok(());
            };
            fault.times -= 1;
            (fault.kind, fault.printed)
        };
        let message = format!("injected fault at window {window}, {point}");
        match kind {
            // An injected panic unwinds like any other but skips the panic
            // hook, which would print it (with a backtrace under
            // `RUST_BACKTRACE`) although the runtime recovers from it and
            // reports it; `printed` asks for the hook.
            FaultKind::Panic if printed => panic!("{message}"),
            FaultKind::Panic => std::panic::resume_unwind(Box::new(message)),
            FaultKind::Error => Err(message),
        }
    }
}
