//! A live progress line for the example jobs, fed by
//! [`Runtime::progress`](checkpoint_runtime::Runtime::progress).
//!
//! On a terminal it is an `indicatif` bar (or a spinner when the total is
//! unknown) redrawn about ten times a second, truncated to the terminal's
//! width: tuples done, the last completed window, the committed window,
//! tuples per second over the last second, and the newest checkpoint's window,
//! total size (every operator's last snapshot) and how long the slowest of
//! them took from encoded to durable:
//!
//! ```text
//! ⠙ [████████▍       ] 150,000/300,000 rides · window 10 · committed 7 · 59,980/s · checkpoint @7 345 B durable in 2.1ms
//! ```
//!
//! When stdout is not a terminal (a pipe, a file, a test) it prints a
//! machine-readable line instead whenever the window or the committed window
//! changes:
//!
//! ```text
//! window 10 committed 7 rides 150000 checkpoint 7 bytes 345
//! ```
//!
//! Window numbers are sequence numbers (the low 32 bits of window ids);
//! `committed` and `checkpoint` are `-` before there is one.
//!
//! # Examples
//!
//! ```
//! use checkpoint_examples::progress::{DisplayMode, LiveProgress, ProgressSettings};
//! use checkpoint_runtime::Runtime;
//!
//! let runtime = Runtime::new(Default::default());
//! let live = LiveProgress::start_with(
//!     runtime.progress(),
//!     ProgressSettings::new("rides").total(1_000),
//!     DisplayMode::Off,
//! );
//! live.printer().println("messages go above the bar");
//! // ... runtime.run(dag) ...
//! live.finish();
//! ```

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use checkpoint_runtime::{Progress, ProgressSnapshot};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stop_signal::{Sender, channel};

/// How often the display is refreshed.
const INTERVAL: Duration = Duration::from_millis(100);

/// The span the tuples-per-second rate is measured over.
const RATE_SPAN: Duration = Duration::from_secs(1);

/// What the progress line knows besides the runtime's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressSettings {
    /// What the inputs emit, for the count and the rate (`"rides"`).
    pub unit: &'static str,
    /// Tuples the inputs emit in the whole job, if known: a bar instead of
    /// a spinner.
    pub total: Option<u64>,
    /// Tuples emitted before this run (a resumed job), added to the count.
    pub done_before: u64,
    /// The sequence number of the last window before this run: 0 for a new
    /// job, the inputs' restored checkpoint for a resumed one.
    pub window_before: u32,
}

impl ProgressSettings {
    /// Counting `unit`, total unknown, a new job.
    pub fn new(unit: &'static str) -> Self {
        ProgressSettings {
            unit,
            total: None,
            done_before: 0,
            window_before: 0,
        }
    }

    /// The job emits `total` tuples in all.
    pub fn total(mut self, total: u64) -> Self {
        self.total = Some(total);
        self
    }

    /// A resumed job: `done` tuples were emitted and windows up to
    /// `window` completed before this run.
    pub fn resumed(mut self, done: u64, window: u32) -> Self {
        self.done_before = done;
        self.window_before = window;
        self
    }
}

/// Where the progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisplayMode {
    /// A bar on stdout if it is a terminal, machine-readable lines if not.
    Auto,
    /// The bar (hidden by `indicatif` if stdout is not a terminal).
    Bar,
    /// Machine-readable lines on stdout.
    Lines,
    /// Nothing.
    Off,
}

/// Prints messages without garbling the progress bar: above it on a
/// terminal, as plain lines otherwise. Cheap to clone, usable from any
/// thread (a Ctrl-C handler, a panic hook).
#[derive(Debug, Clone)]
pub struct Printer {
    bar: Option<ProgressBar>,
}

impl Printer {
    /// Prints `line` (and a newline) to stdout.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.suspend(|| println!("{line}")),
            _ => println!("{line}"),
        }
    }
}

/// A progress display running on its own thread until
/// [`finish`](LiveProgress::finish)ed.
#[derive(Debug)]
pub struct LiveProgress {
    printer: Printer,
    stop: Option<Sender>,
    thread: Option<JoinHandle<()>>,
}

impl LiveProgress {
    /// Starts the display that suits stdout ([`DisplayMode::Auto`]).
    pub fn start(progress: Progress, settings: ProgressSettings) -> Self {
        Self::start_with(progress, settings, DisplayMode::Auto)
    }

    /// Starts a display of the chosen kind.
    pub fn start_with(progress: Progress, settings: ProgressSettings, display: DisplayMode) -> Self {
        let display = match display {
            DisplayMode::Auto if std::io::stdout().is_terminal() => DisplayMode::Bar,
            DisplayMode::Auto => DisplayMode::Lines,
            other => other,
        };
        let bar = (display == DisplayMode::Bar).then(|| new_bar(&settings));
        let printer = Printer { bar: bar.clone() };
        if display == DisplayMode::Off {
            return LiveProgress {
                printer,
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = channel();
        let thread = std::thread::Builder::new()
            .name("progress".to_owned())
            .spawn(move || {
                let mut view = View::new(settings, bar);
                loop {
                    view.update(progress.snapshot());
                    if stopped.wait(INTERVAL) {
                        view.update(progress.snapshot());
                        view.finish();
                        break;
                    }
                }
            })
            // Without a thread there is no live display; the job runs anyway.
            .ok();
        LiveProgress {
            printer,
            stop: Some(stop),
            thread,
        }
    }

    /// A printer for messages while the display runs.
    pub fn printer(&self) -> Printer {
        self.printer.clone()
    }

    /// Shows the final state and stops the display (clearing the bar).
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send();
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the display thread only lost the display.
            let _ = thread.join();
        }
    }
}

impl Drop for LiveProgress {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn new_bar(settings: &ProgressSettings) -> ProgressBar {
    let unit = settings.unit;
    let (bar, template) = match settings.total {
        Some(total) => (
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout()),
            format!("{{spinner:.green}} [{{bar:16.cyan/blue}}] {{human_pos}}/{{human_len}} {unit} · {{wide_msg}}"),
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout()),
            format!("{{spinner:.green}} {{human_pos}} {unit} · {{wide_msg}}"),
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
    }
    bar.set_position(settings.done_before);
    bar
}

/// The display thread's state.
struct View {
    settings: ProgressSettings,
    bar: Option<ProgressBar>,
    /// Recent (time, tuples) samples for the rate.
    samples: VecDeque<(Instant, u64)>,
    /// The last (window, committed) printed as a line.
    printed: Option<(u32, Option<u32>)>,
    last: Option<ProgressSnapshot>,
}

impl View {
    fn new(settings: ProgressSettings, bar: Option<ProgressBar>) -> Self {
        View {
            settings,
            bar,
            samples: VecDeque::new(),
            printed: None,
            last: None,
        }
    }

    fn update(&mut self, snapshot: Option<ProgressSnapshot>) {
        let Some(snapshot) = snapshot else { return };
        let now = Instant::now();
        self.samples.push_back((now, snapshot.input_tuples));
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|s| now - s.0 >= RATE_SPAN) {
            self.samples.pop_front();
        }
        let done = self.settings.done_before + snapshot.input_tuples;
        let window = self.settings.window_before.saturating_add(snapshot.windows as u32);
        let committed = snapshot.committed.map(|w| w.sequence());
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(self.message(&snapshot, window));
                bar.tick();
            }
            None => {
                if self.printed != Some((window, committed)) {
                    self.printed = Some((window, committed));
                    println!(
                        "window {window} committed {} {} {done} checkpoint {} bytes {}",
                        seq_or_dash(committed),
                        self.settings.unit,
                        seq_or_dash(snapshot.last_checkpoint.map(|w| w.sequence())),
                        snapshot.last_checkpoint_bytes,
                    );
                }
            }
        }
        self.last = Some(snapshot);
    }

    /// Tuples per second over the last second or so.
    fn rate(&self) -> u64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(first), Some(last)) if last.0 > first.0 => {
                let secs = (last.0 - first.0).as_secs_f64();
                ((last.1.saturating_sub(first.1)) as f64 / secs) as u64
            }
            _ => 0,
        }
    }

    fn message(&self, snapshot: &ProgressSnapshot, window: u32) -> String {
        let checkpoint = match snapshot.last_checkpoint {
            Some(w) => {
                let durable = snapshot
                    .operators
                    .iter()
                    .map(|o| o.last_durable_latency)
                    .max()
                    .unwrap_or_default();
                format!(
                    "checkpoint @{} {} durable in {}",
                    w.sequence(),
                    HumanBytes(snapshot.last_checkpoint_bytes),
                    short_duration(durable)
                )
            }
            None => "no checkpoint yet".to_owned(),
        };
        format!(
            "window {window} · committed {} · {}/s · {checkpoint}",
            seq_or_dash(snapshot.committed.map(|w| w.sequence())),
            crate::rides::thousands(self.rate()),
        )
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `850µs`, `12.3ms`, `1.20s`.
pub fn short_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

fn seq_or_dash(sequence: Option<u32>) -> String {
    sequence.map_or_else(|| "-".to_owned(), |s| s.to_string())
}

/// A one-shot stop signal with a timed wait (std only).
mod stop_signal {
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::time::Duration;

    /// Sends the stop.
    #[derive(Debug)]
    pub(super) struct Sender(mpsc::Sender<()>);

    /// Waits for the stop.
    #[derive(Debug)]
    pub(super) struct Receiver(mpsc::Receiver<()>);

    pub(super) fn channel() -> (Sender, Receiver) {
        let (tx, rx) = mpsc::channel();
        (Sender(tx), Receiver(rx))
    }

    impl Sender {
        pub(super) fn send(&self) {
            // The display thread may already be gone.
            let _ = self.0.send(());
        }
    }

    impl Receiver {
        /// Whether the stop came (or the sender is gone) within `timeout`.
        pub(super) fn wait(&self, timeout: Duration) -> bool {
            !matches!(self.0.recv_timeout(timeout), Err(RecvTimeoutError::Timeout))
        }
    }
}

/// Ctrl-C for the example jobs: the first asks `stop` for a graceful stop
/// (final checkpoint, commits delivered); a second exits at once (the
/// checkpoints on disk stay usable). `job` names the program in messages.
///
/// # Examples
///
/// ```no_run
/// use checkpoint_examples::progress::{LiveProgress, ProgressSettings, install_ctrl_c};
/// use checkpoint_runtime::Runtime;
///
/// let runtime = Runtime::new(Default::default());
/// let live = LiveProgress::start(runtime.progress(), ProgressSettings::new("rides"));
/// install_ctrl_c("ride-stats", runtime.stop_handle(), live.printer());
/// ```
pub fn install_ctrl_c(job: &'static str, stop: checkpoint_runtime::StopHandle, printer: Printer) {
    let handler_printer = printer.clone();
    let installed = ctrlc::set_handler(move || {
        if stop.is_stopped() {
            handler_printer.println(&format!(
                "{job}: second Ctrl-C: exiting now; run again to resume from the last checkpoint"
            ));
            std::process::exit(130);
        }
        handler_printer.println(&format!(
            "{job}: Ctrl-C: stopping after this window with a final checkpoint (Ctrl-C again to quit at once)"
        ));
        stop.stop();
    });
    if let Err(e) = installed {
        printer.println(&format!("{job}: warning: Ctrl-C will not stop gracefully: {e}"));
    }
}

/// Reports the panic of a fault injected with `--fail-at-window` in one
/// line (the runtime catches it and recovers); any other panic gets the
/// default report.
///
/// # Examples
///
/// ```no_run
/// use checkpoint_examples::progress::{LiveProgress, ProgressSettings, install_panic_hook};
///
/// let runtime = checkpoint_runtime::Runtime::new(Default::default());
/// let live = LiveProgress::start(runtime.progress(), ProgressSettings::new("rides"));
/// install_panic_hook(live.printer());
/// ```
pub fn install_panic_hook(printer: Printer) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("");
        if message.starts_with("injected fault") {
            let thread = std::thread::current();
            printer.println(&format!(
                "! operator {} panicked: {message} (--fail-at-window); the runtime restores it from its \
                 checkpoint and replays the windows since",
                thread.name().unwrap_or("?")
            ));
        } else {
            default(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(short_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(short_duration(Duration::from_micros(12_345)), "12.3ms");
        assert_eq!(short_duration(Duration::from_millis(1_200)), "1.20s");
    }

    #[test]
    fn settings_builder() {
        let s = ProgressSettings::new("rides").total(10).resumed(4, 2);
        assert_eq!((s.total, s.done_before, s.window_before), (Some(10), 4, 2));
    }

    #[test]
    fn an_unstarted_job_shows_nothing_and_finishing_is_clean() {
        let runtime = checkpoint_runtime::Runtime::new(Default::default());
        let live = LiveProgress::start_with(runtime.progress(), ProgressSettings::new("rides"), DisplayMode::Lines);
        live.printer().println("hello");
        live.finish();
    }
}
