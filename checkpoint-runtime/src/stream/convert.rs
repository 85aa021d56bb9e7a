//! Converting edges: each tuple into the downstream's input type.

use std::any::Any;
use std::sync::Arc;

use checkpoint_core::WindowId;
use crossbeam_channel::Select;

use super::cursor::{Flow, Sink};
use super::{Message, Reconnect, Reconnected, Subscriber};
use crate::failure::Failure;
use crate::protocol::Control;

/// An edge that converts each tuple into the downstream's input type (an
/// enum variant, for an operator with several upstreams).
pub(crate) struct ConvertSubscriber<T, In> {
    pub(crate) convert: Arc<dyn Fn(T) -> In + Send + Sync>,
    pub(crate) inner: Box<dyn Subscriber<In>>,
}

impl<T: Clone + Send + Sync + 'static, In: Send + Sync + 'static> ConvertSubscriber<T, In> {
    fn convert_batch(&self, batch: &Arc<Vec<T>>) -> Arc<Vec<In>> {
        Arc::new(batch.iter().cloned().map(|t| (self.convert)(t)).collect())
    }
}

impl<T: Clone + Send + Sync + 'static, In: Send + Sync + 'static> Subscriber<T> for ConvertSubscriber<T, In> {
    fn start(&mut self) -> Result<(), Failure> {
        self.inner.start()
    }
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        self.inner.begin_window(window)
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        let converted = self.convert_batch(batch);
        self.inner.batch(&converted)
    }
    fn batch_owned(&mut self, batch: Arc<Vec<T>>) -> Result<(), Failure> {
        let converted = match Arc::try_unwrap(batch) {
            Ok(owned) => Arc::new(owned.into_iter().map(|t| (self.convert)(t)).collect()),
            Err(shared) => self.convert_batch(&shared),
        };
        self.inner.batch_owned(converted)
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        self.inner.end_window(window, last)
    }
    fn close(&mut self) -> Result<(), Failure> {
        self.inner.close()
    }
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        how: &Reconnect,
    ) -> Result<Reconnected<T>, Failure> {
        Ok(match self.inner.reconnect(target, sender, how)? {
            Reconnected::NotHere => Reconnected::NotHere,
            Reconnected::Direct => Reconnected::Direct,
            Reconnected::CatchUp(inner) => Reconnected::CatchUp(Box::new(ConvertSink {
                convert: Arc::clone(&self.convert),
                inner,
            })),
        })
    }
    fn close_target(&mut self, target: usize) -> Result<bool, Failure> {
        self.inner.close_target(target)
    }
    fn deliver(&mut self, node: usize, message: Control) -> Result<Option<Control>, Failure> {
        self.inner.deliver(node, message)
    }
    fn between_windows(&mut self) -> Result<(), Failure> {
        self.inner.between_windows()
    }
    fn shutdown(&mut self) -> Result<(), Failure> {
        self.inner.shutdown()
    }
    fn teardown(&mut self) {
        self.inner.teardown();
    }
}

/// A cursor's end at a converting edge.
pub(crate) struct ConvertSink<T, In> {
    pub(crate) convert: Arc<dyn Fn(T) -> In + Send + Sync>,
    pub(crate) inner: Box<dyn Sink<In>>,
}

impl<T: Clone + Send + Sync + 'static, In: Send + Sync + 'static> Sink<T> for ConvertSink<T, In> {
    fn offer(&mut self, message: &Message<T>) -> Flow {
        let converted = match message {
            Message::Begin(w) => Message::Begin(*w),
            Message::Batch(b) => Message::Batch(Arc::new(b.iter().cloned().map(|t| (self.convert)(t)).collect())),
            Message::End { window, last } => Message::End {
                window: *window,
                last: *last,
            },
            Message::Closed => Message::Closed,
        };
        self.inner.offer(&converted)
    }
    fn retry(&mut self) -> Flow {
        self.inner.retry()
    }
    fn register<'a>(&'a self, select: &mut Select<'a>) {
        self.inner.register(select);
    }
    fn hand_back(&mut self, delivered: u64, finished: bool) {
        self.inner.hand_back(delivered, finished);
    }
}
