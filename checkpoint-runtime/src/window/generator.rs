//! The window generator: when inputs end one streaming window and begin the
//! next.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::StopAgreement;

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
    ///
    /// Two defaults that surprise here: a checkpoint is taken every 60
    /// windows unless the DAG says otherwise
    /// ([`Dag::default_checkpoint_window_count`](crate::Dag::default_checkpoint_window_count)),
    /// which in this mode is every 60 × N tuples, not every 30 s (a short
    /// job may never checkpoint before its end); and the window base, the
    /// high 32 bits of every window id, is the Unix time when the job first
    /// started, so window ids, and the output file names an exactly-once
    /// sink derives from them, differ between two fresh runs unless
    /// [`Config::window_base`](crate::Config::window_base) fixes it.
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
    /// The inputs' agreement on the window a stop ends the stream after.
    stop_agreement: Arc<StopAgreement>,
}

impl WindowGenerator {
    pub(crate) fn new(mode: WindowMode, start: Instant, first_sequence: u32) -> Self {
        WindowGenerator {
            stop_alignment: 1,
            stop_agreement: Arc::default(),
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

    /// Shares `agreement` with the job's other inputs.
    pub(crate) fn with_stop_agreement(mut self, agreement: Arc<StopAgreement>) -> Self {
        self.stop_agreement = agreement;
        self
    }

    /// The inputs' agreement on where a stop ends the stream.
    pub(crate) fn stop_agreement(&self) -> &StopAgreement {
        &self.stop_agreement
    }

    /// The first window at or after `sequence` a stop may end the stream
    /// after.
    pub(crate) fn first_stop_at_or_after(&self, sequence: u32) -> u32 {
        let alignment = self.stop_alignment.max(1);
        let rest = sequence.wrapping_add(1) % alignment;
        if rest == 0 {
            sequence
        } else {
            sequence.saturating_add(alignment - rest)
        }
    }

    /// Whether windows are cut by tuple counts or steps, not by the clock.
    pub(crate) fn is_deterministic(&self) -> bool {
        !matches!(self.mode, WindowMode::Time(_))
    }

    /// The sequence number the input should be in now, given the one it is
    /// in and what it emitted there. In 64 bits: past `u32::MAX` it says the
    /// input should begin a window that no window id can name, which the
    /// input reports as an error instead of staying in its window forever.
    pub(crate) fn target(&self, current: u32, emitted_in_window: u64) -> u64 {
        let current = u64::from(current);
        let first = u64::from(self.first_sequence);
        match &self.mode {
            WindowMode::Time(period) => {
                let elapsed = self.start.elapsed().as_nanos() / period.as_nanos().max(1);
                first
                    .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
                    .max(current)
            }
            WindowMode::Tuples(n) => current + u64::from(emitted_in_window >= *n),
            WindowMode::Stepped(stepper) => (first + u64::from(stepper.steps())).max(current),
        }
    }

    /// How long an idle input waits before asking its source again: until
    /// the next boundary, at most a millisecond. An input restored at an
    /// older window than the others (`current` before the run's first
    /// sequence) is already past its boundary and does not wait.
    pub(crate) fn idle_wait(&self, current: u32) {
        let Some(windows_in) = current.checked_sub(self.first_sequence) else {
            return;
        };
        match &self.mode {
            WindowMode::Time(period) => {
                let next = period
                    .checked_mul(windows_in.saturating_add(1))
                    .and_then(|since_start| self.start.checked_add(since_start));
                let wait = next.map_or(Duration::MAX, |next| next.saturating_duration_since(Instant::now()));
                std::thread::sleep(wait.min(Duration::from_millis(1)));
            }
            WindowMode::Tuples(_) => std::thread::sleep(Duration::from_micros(200)),
            WindowMode::Stepped(stepper) => stepper.wait_past(windows_in, Duration::from_millis(5)),
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
    fn targets_go_past_the_last_sequence_instead_of_stopping_there() {
        let generator = WindowGenerator::new(WindowMode::Tuples(1), Instant::now(), u32::MAX - 1);
        assert_eq!(generator.target(u32::MAX, 1), 1 << 32);
        let stepper = WindowStepper::new();
        let generator = WindowGenerator::new(WindowMode::Stepped(stepper.clone()), Instant::now(), u32::MAX);
        stepper.step();
        assert_eq!(generator.target(u32::MAX, 0), 1 << 32);
        let started = Instant::now() - Duration::from_millis(5);
        let generator = WindowGenerator::new(WindowMode::Time(Duration::from_millis(1)), started, u32::MAX);
        assert!(generator.target(u32::MAX, 0) > u64::from(u32::MAX));
        assert_eq!(
            generator.with_stop_alignment(2).first_stop_at_or_after(u32::MAX),
            u32::MAX
        );
    }

    #[test]
    fn a_stop_ends_where_every_application_window_ends() {
        let generator = WindowGenerator::new(WindowMode::Tuples(10), Instant::now(), 1).with_stop_alignment(4);
        assert_eq!(generator.first_stop_at_or_after(5), 7);
        assert_eq!(generator.first_stop_at_or_after(7), 7);
        assert_eq!(generator.first_stop_at_or_after(8), 11);
    }

    #[test]
    fn an_input_behind_the_first_sequence_does_not_underflow() {
        let stepper = WindowStepper::new();
        for mode in [
            WindowMode::Stepped(stepper),
            WindowMode::Time(Duration::from_secs(3600)),
        ] {
            // It used to subtract the first sequence from the current one:
            // an overflow panic in both modes.
            WindowGenerator::new(mode, Instant::now(), 10).idle_wait(4);
        }
    }

    #[test]
    fn time_mode_counts_elapsed_periods() {
        let start = Instant::now() - Duration::from_millis(2_500);
        let generator = WindowGenerator::new(WindowMode::Time(Duration::from_secs(1)), start, 1);
        assert_eq!(generator.target(1, 0), 3);
        assert_eq!(generator.target(4, 0), 4, "never goes back");
    }
}
