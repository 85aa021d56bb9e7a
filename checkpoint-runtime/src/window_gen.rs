//! The window generator: when inputs end one streaming window and begin the
//! next.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How streaming windows are cut.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use checkpoint_runtime::WindowMode;
///
/// let live = WindowMode::Time(Duration::from_millis(500)); // the default
/// let test = WindowMode::Tuples(1_000); // deterministic: for tests and replays
/// # let _ = (live, test);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WindowMode {
    /// Processing-time windows of this length, the same boundaries for every
    /// input of the job (Apex's `STREAMING_WINDOW_SIZE_MILLIS`).
    Time(Duration),
    /// Deterministic: an input ends its window after the `emit_tuples` call
    /// that brings it to at least this many tuples in that window. `Idle`
    /// never ends a window in this mode.
    Tuples(u64),
    /// Deterministic: windows end when the test calls
    /// [`WindowStepper::step`].
    Stepped(WindowStepper),
}

impl Default for WindowMode {
    fn default() -> Self {
        WindowMode::Time(Duration::from_millis(500))
    }
}

impl WindowMode {
    /// The streaming window length reported to operators (500 ms unless
    /// time-based with another length).
    pub(crate) fn streaming_window(&self) -> Duration {
        match self {
            WindowMode::Time(d) => *d,
            _ => Duration::from_millis(500),
        }
    }

    /// How the job manifest records the mode: a restart under another
    /// one would cut other windows, so it is refused.
    pub(crate) fn describe(&self) -> String {
        match self {
            WindowMode::Time(d) => format!("time {}ms", d.as_millis()),
            WindowMode::Tuples(n) => format!("tuples {n}"),
            WindowMode::Stepped(_) => "stepped".to_owned(),
        }
    }
}

/// Advances windows by hand, for tests: every input ends its current window
/// at its next chance after a step.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{WindowMode, WindowStepper};
///
/// let stepper = WindowStepper::new();
/// let mode = WindowMode::Stepped(stepper.clone());
/// stepper.step();
/// assert_eq!(stepper.steps(), 1);
/// # let _ = mode;
/// ```
#[derive(Debug, Clone, Default)]
pub struct WindowStepper {
    inner: Arc<(Mutex<u32>, Condvar)>,
}

impl WindowStepper {
    /// A stepper at step 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the current window of every input.
    pub fn step(&self) {
        let (steps, changed) = &*self.inner;
        *steps.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        changed.notify_all();
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the step count passes `seen` or `timeout` elapses.
    fn wait_past(&self, seen: u32, timeout: Duration) {
        let (steps, changed) = &*self.inner;
        let guard = steps.lock().unwrap_or_else(|p| p.into_inner());
        let _ = changed.wait_timeout_while(guard, timeout, |s| *s <= seen);
    }
}

/// One input's view of the generator.
#[derive(Debug, Clone)]
pub(crate) struct WindowGenerator {
    mode: WindowMode,
    start: Instant,
    /// The sequence number of the first window of this run.
    first_sequence: u32,
    /// A stop in a deterministic mode ends the stream after a window whose
    /// `sequence + 1` is a multiple of this (every operator's application
    /// window ends there), so a resumed job cuts the same windows.
    stop_alignment: u32,
}

impl WindowGenerator {
    pub(crate) fn new(mode: WindowMode, start: Instant, first_sequence: u32) -> Self {
        WindowGenerator {
            stop_alignment: 1,
            mode,
            start,
            first_sequence,
        }
    }

    /// Sets where a stop in a deterministic mode may end the stream.
    pub(crate) fn with_stop_alignment(mut self, windows: u32) -> Self {
        self.stop_alignment = windows.max(1);
        self
    }

    /// Whether a stop may end the stream after window `sequence`.
    pub(crate) fn may_stop_after(&self, sequence: u32) -> bool {
        (sequence + 1).is_multiple_of(self.stop_alignment)
    }

    /// Whether windows are cut by tuple counts or steps, not by the clock.
    pub(crate) fn is_deterministic(&self) -> bool {
        !matches!(self.mode, WindowMode::Time(_))
    }

    /// The sequence number the input should be in now, given the one it is
    /// in and what it emitted there.
    pub(crate) fn target(&self, current: u32, emitted_in_window: u64) -> u32 {
        match &self.mode {
            WindowMode::Time(period) => {
                let elapsed = self.start.elapsed().as_nanos() / period.as_nanos().max(1);
                self.first_sequence
                    .saturating_add(u32::try_from(elapsed).unwrap_or(u32::MAX))
                    .max(current)
            }
            WindowMode::Tuples(n) => {
                if emitted_in_window >= *n {
                    current + 1
                } else {
                    current
                }
            }
            WindowMode::Stepped(stepper) => self.first_sequence.saturating_add(stepper.steps()).max(current),
        }
    }

    /// How long an idle input waits before asking its source again: until
    /// the next boundary, at most a millisecond.
    pub(crate) fn idle_wait(&self, current: u32) {
        match &self.mode {
            WindowMode::Time(period) => {
                let next = self.start + *period * (current - self.first_sequence + 1);
                let wait = next
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(1));
                std::thread::sleep(wait);
            }
            WindowMode::Tuples(_) => std::thread::sleep(Duration::from_micros(200)),
            WindowMode::Stepped(stepper) => {
                let seen = current - self.first_sequence;
                stepper.wait_past(seen, Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_mode_ends_a_window_at_the_threshold() {
        let generator = WindowGenerator::new(WindowMode::Tuples(10), Instant::now(), 1);
        assert_eq!(generator.target(1, 9), 1);
        assert_eq!(generator.target(1, 10), 2);
        assert_eq!(generator.target(5, 25), 6);
    }

    #[test]
    fn stepped_mode_follows_the_steps() {
        let stepper = WindowStepper::new();
        let generator = WindowGenerator::new(WindowMode::Stepped(stepper.clone()), Instant::now(), 1);
        assert_eq!(generator.target(1, 1_000), 1);
        stepper.step();
        stepper.step();
        assert_eq!(generator.target(1, 0), 3);
    }

    #[test]
    fn time_mode_counts_elapsed_periods() {
        let start = Instant::now() - Duration::from_millis(2_500);
        let generator = WindowGenerator::new(WindowMode::Time(Duration::from_secs(1)), start, 1);
        assert_eq!(generator.target(1, 0), 3);
        assert_eq!(generator.target(4, 0), 4, "never goes back");
    }
}
