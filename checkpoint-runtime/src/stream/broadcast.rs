//! Broadcast: every tuple to every partition of the downstream.

use std::any::Any;
use std::sync::Arc;

use checkpoint_core::WindowId;

use super::channel::{Channel, send_each};
use super::cursor::Link;
use super::{Message, Reconnect, Reconnected, Subscriber};
use crate::failure::Failure;

/// A broadcast edge: each batch, shared (one allocation, no copy of a
/// tuple), and every window boundary to all partitions.
pub(crate) struct BroadcastSubscriber<T> {
    pub(crate) partitions: Vec<Channel<T>>,
    pub(crate) link: Link,
}

impl<T: Send + Sync + 'static> Subscriber<T> for BroadcastSubscriber<T> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        send_each(&mut self.partitions, &Message::Begin(window), &self.link)
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        for channel in &mut self.partitions {
            channel.send(Message::Batch(Arc::clone(batch)), &self.link)?;
        }
        Ok(())
    }
    fn batch_owned(&mut self, batch: Arc<Vec<T>>) -> Result<(), Failure> {
        self.batch(&batch)
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        send_each(&mut self.partitions, &Message::End { window, last }, &self.link)
    }
    fn close(&mut self) -> Result<(), Failure> {
        send_each(&mut self.partitions, &Message::Closed, &self.link)
    }
    /// A recovered partition catches up on the whole stream, as on a plain
    /// edge.
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        how: &Reconnect,
    ) -> Result<Reconnected<T>, Failure> {
        let Some(channel) = self.partitions.iter_mut().find(|c| c.target == target) else {
            return Ok(Reconnected::NotHere);
        };
        Ok(match channel.reconnect(target, sender, how)? {
            None => Reconnected::NotHere,
            Some(None) => Reconnected::Direct,
            Some(Some(sink)) => Reconnected::CatchUp(Box::new(sink)),
        })
    }
    fn close_target(&mut self, target: usize) -> Result<bool, Failure> {
        match self.partitions.iter_mut().find(|c| c.target == target) {
            Some(channel) => channel.close_now(&self.link).map(|()| true),
            None => Ok(false),
        }
    }
}
