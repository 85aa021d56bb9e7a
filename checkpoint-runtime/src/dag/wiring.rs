//! Type-erased edge wiring: what `connect` captures while the types are
//! known, so that the supervisor can build each edge's channels and
//! subscribers (and rebuild them on recovery), and another engine its
//! portable subscribers.

use std::marker::PhantomData;
use std::sync::Arc;

use checkpoint_core::KeyGroups;
use crossbeam_channel::Sender;

use crate::operator::Tuple;
use crate::portable::Outbox;
use crate::portable::instance::{PortableSubscriber, Routing as PortableRouting};
use crate::stream::{
    BroadcastSubscriber, Channel, ChannelSubscriber, ConvertSubscriber, KeyedSubscriber, Link, Message, Subscriber,
};

/// A type-erased value whose type the two ends of an edge agree on.
use super::factory::{Erased, downcast_all};

/// How one edge's channels and subscribers are made, typed at `connect`
/// time.
pub(crate) trait EdgeWiring: Send {
    /// A channel to one downstream partition: an erased
    /// `Sender<Message<W>>` (W: what the upstream's subscriber sends) and
    /// the erased `Receiver<Message<In>>` of the downstream.
    fn channel(&self, capacity: usize) -> (Erased, Erased);

    /// The `Box<dyn Subscriber<T>>` of one upstream partition, from its
    /// channels to the downstream partitions (downstream node, sender), in
    /// partition order.
    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, key_groups: KeyGroups) -> Erased;

    /// For a thread-local edge: the upstream's subscriber for the chained
    /// downstream (`Box<dyn Subscriber<In>>` in, `Box<dyn Subscriber<T>>` out).
    fn chain(&self, downstream: Erased) -> Erased;

    /// Whether it sends every tuple to every downstream partition.
    fn broadcasts(&self) -> bool {
        false
    }

    /// The `Box<dyn Subscriber<T>>` of upstream partition `partition` for
    /// another engine: it encodes what it is given into `outbox`, as edge
    /// `edge`, routed over `downstream` partitions.
    fn portable(
        &self,
        edge: usize,
        partition: usize,
        downstream: usize,
        outbox: Outbox,
        key_groups: KeyGroups,
    ) -> Erased;
}

/// A plain edge's route: to the downstream's one partition, or, between
/// two operators of equal partitions (a chained edge), to the same one.
fn forward(partition: usize, downstream: usize) -> PortableRouting<()> {
    PortableRouting::To(if downstream > 1 { partition } else { 0 })
}

fn portable_subscriber<T: Tuple>(edge: usize, outbox: Outbox, routing: PortableRouting<T>) -> Box<dyn Subscriber<T>> {
    Box::new(PortableSubscriber { edge, outbox, routing })
}

fn retype<T>(routing: PortableRouting<()>) -> PortableRouting<T> {
    match routing {
        PortableRouting::To(partition) => PortableRouting::To(partition),
        _ => PortableRouting::All,
    }
}

fn channel_of<W: Tuple>(capacity: usize) -> (Erased, Erased) {
    let (tx, rx) = crossbeam_channel::bounded::<Message<W>>(capacity);
    (Box::new(tx), Box::new(rx))
}

fn channels_of<W: Tuple>(channels: Vec<(usize, Erased)>) -> Vec<Channel<W>> {
    channels
        .into_iter()
        .map(|(target, tx)| match tx.downcast::<Sender<Message<W>>>() {
            Ok(tx) => Channel::new(target, *tx),
            Err(_) => unreachable!("edge wiring of the wrong type"),
        })
        .collect()
}

pub(super) fn plain_edge<T: Tuple>() -> Box<dyn EdgeWiring> {
    Box::new(PlainEdge::<T>(PhantomData))
}

struct PlainEdge<T>(PhantomData<fn() -> T>);

impl<T: Tuple> EdgeWiring for PlainEdge<T> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<T>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, _key_groups: KeyGroups) -> Erased {
        let mut channels = channels_of::<T>(channels);
        let Some(channel) = channels.pop() else {
            unreachable!("a plain edge has one downstream partition");
        };
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ChannelSubscriber {
            channel,
            link: link.clone(),
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        downstream
    }

    fn portable(
        &self,
        edge: usize,
        partition: usize,
        downstream: usize,
        outbox: Outbox,
        _key_groups: KeyGroups,
    ) -> Erased {
        Box::new(portable_subscriber::<T>(
            edge,
            outbox,
            retype(forward(partition, downstream)),
        ))
    }
}

pub(super) fn convert_edge<T: Tuple, In: Tuple>(
    convert: impl Fn(T) -> In + Send + Sync + 'static,
) -> Box<dyn EdgeWiring> {
    Box::new(ConvertEdge::<T, In> {
        convert: Arc::new(convert),
        broadcast: false,
    })
}

struct ConvertEdge<T, In> {
    convert: Arc<dyn Fn(T) -> In + Send + Sync>,
    /// To every downstream partition (else to the one there is).
    broadcast: bool,
}

impl<T: Tuple, In: Tuple> EdgeWiring for ConvertEdge<T, In> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<In>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, _key_groups: KeyGroups) -> Erased {
        let mut channels = channels_of::<In>(channels);
        let inner: Box<dyn Subscriber<In>> = if self.broadcast {
            Box::new(BroadcastSubscriber {
                partitions: channels,
                link: link.clone(),
            })
        } else {
            let Some(channel) = channels.pop() else {
                unreachable!("a converting edge has one downstream partition");
            };
            Box::new(ChannelSubscriber {
                channel,
                link: link.clone(),
            })
        };
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ConvertSubscriber {
            convert: Arc::clone(&self.convert),
            inner,
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        let inner = downcast_all::<Box<dyn Subscriber<In>>>(vec![downstream]).remove(0);
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ConvertSubscriber {
            convert: Arc::clone(&self.convert),
            inner,
        });
        Box::new(subscriber)
    }

    fn broadcasts(&self) -> bool {
        self.broadcast
    }

    fn portable(
        &self,
        edge: usize,
        partition: usize,
        downstream: usize,
        outbox: Outbox,
        _key_groups: KeyGroups,
    ) -> Erased {
        let routing = if self.broadcast {
            PortableRouting::All
        } else {
            retype(forward(partition, downstream))
        };
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ConvertSubscriber {
            convert: Arc::clone(&self.convert),
            inner: portable_subscriber::<In>(edge, outbox, routing),
        });
        Box::new(subscriber)
    }
}

pub(super) fn broadcast_edge<T: Tuple>() -> Box<dyn EdgeWiring> {
    Box::new(BroadcastEdge::<T>(PhantomData))
}

struct BroadcastEdge<T>(PhantomData<fn() -> T>);

impl<T: Tuple> EdgeWiring for BroadcastEdge<T> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<T>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, _key_groups: KeyGroups) -> Erased {
        let subscriber: Box<dyn Subscriber<T>> = Box::new(BroadcastSubscriber {
            partitions: channels_of::<T>(channels),
            link: link.clone(),
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        // Validation allows thread-local edges only as plain edges.
        downstream
    }

    fn portable(
        &self,
        edge: usize,
        _partition: usize,
        _downstream: usize,
        outbox: Outbox,
        _key_groups: KeyGroups,
    ) -> Erased {
        Box::new(portable_subscriber::<T>(edge, outbox, PortableRouting::All))
    }
}

pub(super) fn broadcast_convert_edge<T: Tuple, In: Tuple>(
    convert: impl Fn(T) -> In + Send + Sync + 'static,
) -> Box<dyn EdgeWiring> {
    Box::new(ConvertEdge::<T, In> {
        convert: Arc::new(convert),
        broadcast: true,
    })
}

pub(super) fn keyed_edge<T: Tuple>(key: impl Fn(&T) -> u64 + Send + Sync + 'static) -> Box<dyn EdgeWiring> {
    Box::new(KeyedEdge::<T> { key: Arc::new(key) })
}

struct KeyedEdge<T> {
    key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
}

impl<T: Tuple> EdgeWiring for KeyedEdge<T> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<T>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, key_groups: KeyGroups) -> Erased {
        let subscriber: Box<dyn Subscriber<T>> = Box::new(KeyedSubscriber {
            key: Arc::clone(&self.key),
            key_groups,
            partitions: channels_of::<T>(channels),
            link: link.clone(),
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        // Validation allows thread-local edges only as plain edges.
        downstream
    }

    fn portable(
        &self,
        edge: usize,
        _partition: usize,
        downstream: usize,
        outbox: Outbox,
        key_groups: KeyGroups,
    ) -> Erased {
        let routing = PortableRouting::Keyed {
            key: Arc::clone(&self.key),
            key_groups,
            partitions: downstream.max(1),
        };
        Box::new(portable_subscriber::<T>(edge, outbox, routing))
    }
}
