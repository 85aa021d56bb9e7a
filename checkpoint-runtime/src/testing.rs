//! Test support: drive an operator's hooks by hand, without a running job.
//!
//! Compiled only with the `testing` feature (see the crate docs), so that
//! it is not part of the runtime's stable API.

use std::sync::{Arc, Mutex};

use checkpoint_core::{StorageAgent, WindowId};

use crate::failure::Failure;
use crate::operator::{OperatorContext, Tuple};
use crate::stream::{Cursors, Emitter, Subscriber};

impl OperatorContext {
    /// A context for calling an operator's `setup` by hand in a test: one
    /// partition named `name`, activated at `activation` (the checkpoint it
    /// was "restored" from, or the initial one), with `storage` as the job's
    /// storage agent. Other settings are the defaults (a 500 ms streaming
    /// window, application window count 1, checkpoint window count 60).
    /// Only with the `testing` feature.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::WindowId;
    /// use checkpoint_runtime::OperatorContext;
    ///
    /// let ctx = OperatorContext::for_test("lines", WindowId::new(1, 4), None);
    /// assert_eq!((ctx.name(), ctx.activation_window()), ("lines", WindowId::new(1, 4)));
    /// assert!(ctx.storage().is_none());
    /// ```
    pub fn for_test(name: &str, activation: WindowId, storage: Option<Arc<dyn StorageAgent>>) -> Self {
        OperatorContext {
            name: name.to_owned(),
            operator: name.to_owned(),
            partition: 0,
            partitions: 1,
            activation_window: activation,
            streaming_window: std::time::Duration::from_millis(500),
            application_window_count: 1,
            checkpoint_window_count: crate::dag::DEFAULT_CHECKPOINT_WINDOW_COUNT,
            storage,
        }
    }
}

/// Collects what the emitter sends.
struct Collector<T> {
    tuples: Arc<Mutex<Vec<T>>>,
}

impl<T: Tuple> Subscriber<T> for Collector<T> {
    fn begin_window(&mut self, _window: WindowId) -> Result<(), Failure> {
        Ok(())
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        self.tuples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batch.iter().cloned());
        Ok(())
    }
    fn end_window(&mut self, _window: WindowId, _last: bool) -> Result<(), Failure> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), Failure> {
        Ok(())
    }
}

/// An [`Emitter`] for calling an operator's hooks by hand in a test: pass
/// [`output`](TestOutput::output) where a hook takes an `Output`, then
/// [`take`](TestOutput::take) what it emitted.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::testing::TestOutput;
///
/// let mut out = TestOutput::<u64>::new();
/// out.output().emit(1);
/// out.output().emit(2);
/// assert_eq!(out.take(), [1, 2]);
/// assert!(out.take().is_empty());
/// ```
pub struct TestOutput<T> {
    emitter: Emitter<T>,
    tuples: Arc<Mutex<Vec<T>>>,
}

impl<T> std::fmt::Debug for TestOutput<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestOutput").field("emitter", &self.emitter).finish()
    }
}

impl<T: Tuple> Default for TestOutput<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Tuple> TestOutput<T> {
    /// An output that keeps everything emitted into it.
    pub fn new() -> Self {
        let tuples = Arc::new(Mutex::new(Vec::new()));
        let collector: Box<dyn Subscriber<T>> = Box::new(Collector {
            tuples: Arc::clone(&tuples),
        });
        TestOutput {
            emitter: Emitter::new(64, vec![collector], None, Cursors::default()),
            tuples,
        }
    }

    /// The emitter to pass to a hook.
    pub fn output(&mut self) -> &mut Emitter<T> {
        &mut self.emitter
    }

    /// The tuples emitted since the last `take`, in order.
    pub fn take(&mut self) -> Vec<T> {
        self.emitter.flush();
        std::mem::take(&mut *self.tuples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
