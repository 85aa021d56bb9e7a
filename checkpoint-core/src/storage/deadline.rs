//! A deadline for the storage calls a thread makes: how the runtime tells
//! an agent that can give up on a slow operation (a request to a remote
//! store) when a checkpoint stops being worth saving, without a deadline
//! argument on every method of [`StorageAgent`](crate::StorageAgent).

use std::cell::Cell;
use std::time::Instant;

thread_local! {
    static CURRENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline of the storage calls made on this thread inside
/// [`Deadline::scope`].
///
/// An agent that can cancel an operation in flight (the object-store
/// agent's requests) gives up at [`Deadline::current`] with an I/O error
/// of kind [`TimedOut`](std::io::ErrorKind::TimedOut); one that cannot
/// (a local file system's writes) ignores it.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
///
/// use checkpoint_core::Deadline;
///
/// assert_eq!(Deadline::current(), None);
/// let at = Instant::now() + Duration::from_secs(5);
/// let seen = Deadline::scope(at, || Deadline::current());
/// assert_eq!(seen, Some(at));
/// assert_eq!(Deadline::current(), None, "only inside the scope");
/// ```
#[derive(Debug)]
pub struct Deadline(());

impl Deadline {
    /// Runs `f` with `deadline` as this thread's storage deadline (the
    /// earlier one if a scope is already open).
    pub fn scope<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
        let outer = CURRENT.with(Cell::get);
        let inner = outer.map_or(deadline, |o| o.min(deadline));
        struct Restore(Option<Instant>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(outer);
        CURRENT.with(|c| c.set(Some(inner)));
        f()
    }

    /// This thread's storage deadline, if a [`scope`](Deadline::scope) is
    /// open.
    pub fn current() -> Option<Instant> {
        CURRENT.with(Cell::get)
    }
}
