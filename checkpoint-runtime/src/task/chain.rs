//! Chaining (Apex's THREAD_LOCAL): a downstream operator driven by its
//! upstream's emitter on the upstream's thread.

use std::sync::Arc;

use checkpoint_core::WindowId;

use crate::failure::Failure;
use crate::operator::Operator;
use crate::protocol::Control;
use crate::stream::Subscriber;

use super::{AsOperator, Core};

/// A downstream operator chained on its upstream's thread (Apex's
/// THREAD_LOCAL): the upstream's emitter drives it directly, no queue.
pub(crate) struct InlineSubscriber<O: Operator> {
    pub(crate) core: Core<AsOperator<O>>,
    /// In a window at or before the restored checkpoint, dropped whole (the
    /// upstream of the chain may have been restored to an older one).
    pub(crate) skipping: bool,
}

impl<O: Operator> Subscriber<O::Input> for InlineSubscriber<O> {
    fn start(&mut self) -> Result<(), Failure> {
        self.core.start()
    }
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        if window <= self.core.activation() {
            self.skipping = true;
            return Ok(());
        }
        self.core.begin_window(window)
    }
    fn batch(&mut self, batch: &Arc<Vec<O::Input>>) -> Result<(), Failure> {
        if self.skipping {
            return Ok(());
        }
        self.core.process_batch(Arc::clone(batch))
    }
    fn batch_owned(&mut self, batch: Arc<Vec<O::Input>>) -> Result<(), Failure> {
        if self.skipping {
            return Ok(());
        }
        self.core.process_batch(batch)
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        if self.skipping {
            self.skipping = false;
            return if last { self.core.close_stream() } else { Ok(()) };
        }
        self.core.end_window(window, last)
    }
    fn close(&mut self) -> Result<(), Failure> {
        self.core.close_stream()
    }
    fn deliver(&mut self, node: usize, message: Control) -> Result<Option<Control>, Failure> {
        if node == self.core.node() {
            self.core.accept_own(message)?;
            return Ok(None);
        }
        self.core.out.deliver(node, message)
    }
    fn between_windows(&mut self) -> Result<(), Failure> {
        self.core.between_windows()
    }
    fn shutdown(&mut self) -> Result<(), Failure> {
        self.core.await_shutdown()
    }
    fn teardown(&mut self) {
        self.core.teardown();
    }
}
