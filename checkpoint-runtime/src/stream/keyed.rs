//! Keyed routing: each tuple to the partition that owns its key's group.

use std::any::Any;
use std::sync::Arc;

use checkpoint_core::{KeyGroups, WindowId};
use crossbeam_channel::Select;

use super::channel::{Channel, send_each};
use super::cursor::{ChannelSink, Flow, Link, Sink};
use super::{Message, Reconnect, Reconnected, Subscriber};
use crate::failure::Failure;

/// The partition (of `partitions`) that owns the group of key hash `hash`.
#[inline]
pub(crate) fn partition_of(key_groups: KeyGroups, hash: u64, partitions: usize) -> usize {
    key_groups.partition_of_group(key_groups.group_of_hash(hash), partitions)
}

/// A key-partitioned edge: each tuple to the partition that owns its key's
/// group; window boundaries to all partitions.
pub(crate) struct KeyedSubscriber<T> {
    pub(crate) key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
    pub(crate) key_groups: KeyGroups,
    pub(crate) partitions: Vec<Channel<T>>,
    pub(crate) link: Link,
}

impl<T: Clone + Send + Sync + 'static> KeyedSubscriber<T> {
    fn split(&self, tuples: impl Iterator<Item = T>, len: usize) -> Vec<Vec<T>> {
        let n = self.partitions.len();
        // Sized for an even spread plus a margin: most shares never regrow.
        let share = len / n + len / (8 * n) + 1;
        let mut split: Vec<Vec<T>> = (0..n).map(|_| Vec::with_capacity(share)).collect();
        for tuple in tuples {
            split[partition_of(self.key_groups, (self.key)(&tuple), n)].push(tuple);
        }
        split
    }

    fn send_split(&mut self, split: Vec<Vec<T>>) -> Result<(), Failure> {
        for (channel, part) in self.partitions.iter_mut().zip(split) {
            if !part.is_empty() {
                channel.send(Message::Batch(Arc::new(part)), &self.link)?;
            }
        }
        Ok(())
    }
}

impl<T: Clone + Send + Sync + 'static> Subscriber<T> for KeyedSubscriber<T> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        send_each(&mut self.partitions, &Message::Begin(window), &self.link)
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        let split = self.split(batch.iter().cloned(), batch.len());
        self.send_split(split)
    }
    fn batch_owned(&mut self, batch: Arc<Vec<T>>) -> Result<(), Failure> {
        let split = match Arc::try_unwrap(batch) {
            Ok(owned) => {
                let len = owned.len();
                self.split(owned.into_iter(), len)
            }
            Err(shared) => self.split(shared.iter().cloned(), shared.len()),
        };
        self.send_split(split)
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        send_each(&mut self.partitions, &Message::End { window, last }, &self.link)
    }
    fn close(&mut self) -> Result<(), Failure> {
        send_each(&mut self.partitions, &Message::Closed, &self.link)
    }
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        how: &Reconnect,
    ) -> Result<Reconnected<T>, Failure> {
        let partitions = self.partitions.len();
        let Some(partition) = self.partitions.iter().position(|c| c.target == target) else {
            return Ok(Reconnected::NotHere);
        };
        Ok(match self.partitions[partition].reconnect(target, sender, how)? {
            None => Reconnected::NotHere,
            Some(None) => Reconnected::Direct,
            Some(Some(inner)) => Reconnected::CatchUp(Box::new(KeyedSink {
                key: Arc::clone(&self.key),
                key_groups: self.key_groups,
                partitions,
                partition,
                inner,
            })),
        })
    }
    fn close_target(&mut self, target: usize) -> Result<bool, Failure> {
        match self.partitions.iter_mut().find(|c| c.target == target) {
            Some(channel) => channel.close_now(&self.link).map(|()| true),
            None => Ok(false),
        }
    }
}

/// A cursor's end at one partition of a keyed edge: each batch's share for
/// that partition.
pub(crate) struct KeyedSink<T> {
    pub(crate) key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
    pub(crate) key_groups: KeyGroups,
    pub(crate) partitions: usize,
    pub(crate) partition: usize,
    pub(crate) inner: ChannelSink<T>,
}

impl<T: Clone + Send + Sync + 'static> Sink<T> for KeyedSink<T> {
    fn offer(&mut self, message: &Message<T>) -> Flow {
        match message {
            Message::Batch(batch) => {
                let share: Vec<T> = batch
                    .iter()
                    .filter(|t| partition_of(self.key_groups, (self.key)(t), self.partitions) == self.partition)
                    .cloned()
                    .collect();
                if share.is_empty() {
                    return Flow::Sent;
                }
                self.inner.offer_owned(Message::Batch(Arc::new(share)))
            }
            other => self.inner.offer(other),
        }
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
