//! Where a stop ends the stream in a deterministic window mode: one window
//! for every input, agreed among them. Each input cuts its own windows, so
//! when they see the stop they are in different windows; an input that
//! ended its stream before another would leave a gap a resumed job cannot
//! fill (its downstream, restored at the later window, drops the windows
//! the early input would read next).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The inputs' agreement on the window a stop ends the stream after.
#[derive(Debug, Default)]
pub(crate) struct StopAgreement {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Inputs still reading (not ended), by physical name.
    live: BTreeSet<String>,
    /// The window each live input proposed: the first one it may stop
    /// after, from the window it was in when it saw the stop.
    proposed: BTreeMap<String, u32>,
}

/// What an input at the end of a window does while a stop is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopDecision {
    /// End the stream with this window.
    Stop,
    /// Go on to the next window: the agreed window is later.
    Continue,
    /// Stay at the end of this window (emit nothing more) until every live
    /// input has proposed: this window may be the agreed one.
    Wait,
}

impl StopAgreement {
    /// An agreement among `inputs` (physical names).
    pub(crate) fn new(inputs: impl IntoIterator<Item = String>) -> Self {
        StopAgreement {
            state: Mutex::new(State {
                live: inputs.into_iter().collect(),
                proposed: BTreeMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `input` saw the stop and may stop after `window` at the earliest (a
    /// later proposal of the same input, after a recovery, keeps the
    /// larger).
    pub(crate) fn propose(&self, input: &str, window: u32) {
        let mut state = self.state();
        let entry = state.proposed.entry(input.to_owned()).or_insert(window);
        *entry = (*entry).max(window);
    }

    /// `input`'s source is done: the others no longer wait for it. (An
    /// input that stopped stays: the others stop where it did.)
    pub(crate) fn leave(&self, input: &str) {
        let mut state = self.state();
        state.live.remove(input);
    }

    /// What `input`, at the end of window `window` (complete), does.
    pub(crate) fn decide(&self, window: u32) -> StopDecision {
        let state = self.state();
        let target = state
            .live
            .iter()
            .filter_map(|name| state.proposed.get(name))
            .copied()
            .max()
            .unwrap_or(window);
        let all = state.live.iter().all(|name| state.proposed.contains_key(name));
        match (all, window.cmp(&target)) {
            (_, std::cmp::Ordering::Less) => StopDecision::Continue,
            (true, _) => StopDecision::Stop,
            (false, _) => StopDecision::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_stop_after_the_latest_window_any_was_in() {
        let agreement = StopAgreement::new(["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        agreement.propose("a", 30);
        // b has not seen the stop yet: a waits at 30, which may be the
        // agreed window.
        assert_eq!(agreement.decide(30), StopDecision::Wait);
        agreement.propose("b", 28);
        assert_eq!(agreement.decide(28), StopDecision::Continue);
        // c ended its stream: nobody waits for it.
        agreement.leave("c");
        assert_eq!(agreement.decide(30), StopDecision::Stop);
        assert_eq!(agreement.decide(29), StopDecision::Continue);
    }

    #[test]
    fn a_later_proposal_moves_the_window_on() {
        let agreement = StopAgreement::new(["a".to_owned(), "b".to_owned()]);
        agreement.propose("a", 10);
        agreement.propose("b", 12);
        assert_eq!(agreement.decide(10), StopDecision::Continue);
        assert_eq!(agreement.decide(12), StopDecision::Stop);
    }
}
