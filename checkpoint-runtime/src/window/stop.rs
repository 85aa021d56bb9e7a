//! Where a stop ends the stream in a deterministic window mode: one window
//! for every input. Each input cuts its own windows, so when a stop comes
//! they are in different windows; an input that ended its stream before
//! another would leave a gap a resumed job cannot fill (its downstream,
//! restored at the later window, drops the windows the early input would
//! read next).
//!
//! Every input says which window it is in as it enters it. The first input
//! to see the stop fixes the window all of them end after: the first one a
//! stop may end after (every application window ends there) at or after
//! the latest window any input still reading is in. Entering a window goes
//! through the same lock, so no input passes the fixed window, and none
//! waits for another: an input blocked on back-pressure needs not see the
//! stop for the others to know where it will end.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The inputs' agreement on the window a stop ends the stream after.
#[derive(Debug, Default)]
pub(crate) struct StopAgreement {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The window each input still reading is in, by physical name.
    current: BTreeMap<String, u32>,
    /// The window every input ends its stream after, once fixed.
    target: Option<u32>,
}

/// What an input at the complete end of a window does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopDecision {
    /// End the stream with this window.
    Stop,
    /// Go on to the next window.
    Continue,
}

impl StopAgreement {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `input` reads on from `window` (its first of this run, or after a
    /// recovery).
    pub(crate) fn join(&self, input: &str, window: u32) {
        self.state().current.insert(input.to_owned(), window);
    }

    /// `input`'s source is done: where it ended does not bound the others.
    pub(crate) fn leave(&self, input: &str) {
        self.state().current.remove(input);
    }

    /// A stop was seen: fixes (once) the window every input ends after,
    /// `align(latest window an input is in)`.
    pub(crate) fn fix(&self, align: impl FnOnce(u32) -> u32) {
        let mut state = self.state();
        if state.target.is_none()
            && let Some(latest) = state.current.values().copied().max()
        {
            state.target = Some(align(latest));
        }
    }

    /// `input` completed `window`: it ends its stream there if that is the
    /// fixed window (or later), else enters the next one.
    pub(crate) fn next(&self, input: &str, window: u32) -> StopDecision {
        let mut state = self.state();
        if state.target.is_some_and(|target| window >= target) {
            return StopDecision::Stop;
        }
        state.current.insert(input.to_owned(), window.saturating_add(1));
        StopDecision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_ends_after_the_latest_window_any_was_in() {
        let agreement = StopAgreement::default();
        agreement.join("a", 28);
        agreement.join("b", 30);
        agreement.join("c", 2);
        // c's source is done: it does not hold the others.
        agreement.leave("c");
        // a sees the stop; b, blocked, has not: b's window counts all the
        // same.
        agreement.fix(|latest| latest);
        assert_eq!(agreement.next("a", 28), StopDecision::Continue);
        assert_eq!(agreement.next("a", 29), StopDecision::Continue);
        assert_eq!(agreement.next("a", 30), StopDecision::Stop);
        assert_eq!(agreement.next("b", 30), StopDecision::Stop);
    }

    #[test]
    fn the_window_is_fixed_once_and_aligned() {
        let agreement = StopAgreement::default();
        agreement.join("a", 5);
        agreement.fix(|latest| latest.next_multiple_of(4) - 1);
        // An input that joins later (a recovery) cannot move it.
        agreement.join("b", 9);
        agreement.fix(|latest| latest);
        assert_eq!(agreement.next("b", 7), StopDecision::Stop);
        assert_eq!(agreement.next("a", 6), StopDecision::Continue);
        assert_eq!(agreement.next("a", 7), StopDecision::Stop);
    }

    #[test]
    fn entering_a_window_before_the_stop_counts() {
        let agreement = StopAgreement::default();
        agreement.join("a", 1);
        agreement.join("b", 1);
        assert_eq!(agreement.next("b", 1), StopDecision::Continue);
        assert_eq!(agreement.next("b", 2), StopDecision::Continue);
        agreement.fix(|latest| latest);
        assert_eq!(agreement.next("a", 1), StopDecision::Continue);
        assert_eq!(agreement.next("a", 2), StopDecision::Continue);
        assert_eq!(agreement.next("a", 3), StopDecision::Stop);
    }
}
