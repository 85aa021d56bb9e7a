//! The timely operator of one DAG operator: windows closed in order as
//! its input frontier passes them.

use std::collections::BTreeMap;
use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::dataflow::{Hosted, MARKER, Rec, Recs, Shared, guarded};

/// The timely operator of one DAG operator: buffers batches by window and,
/// as the input frontier passes windows, runs each hosted partition through
/// them in order, emitting at the window's time; a second output, holding a
/// capability at the first window not yet closed, is the durability stream
/// (saves are synchronous, so a closed window is a durable one).
pub(crate) fn window_operator<'s>(
    input: Recs<'s>,
    (node, name, ends): (usize, &str, usize),
    hosted: Hosted,
    shared: Rc<Shared>,
) -> (Recs<'s>, Stream<'s, u64, Vec<()>>) {
    let scope = input.scope();
    let mut builder = OperatorBuilder::new(format!("checkpoint:{name}"), scope);
    let mut input = builder.new_input(input, Exchange::new(|r: &Rec| r.0));
    let (data_out, data_stream) = builder.new_output::<Vec<Rec>>();
    let (_durable_out, durable_stream) = builder.new_output::<Vec<()>>();
    let mut data_out = OutputBuilder::<u64, CapacityContainerBuilder<Vec<Rec>>>::from(data_out);
    builder.build(move |mut caps| {
        let mut durable_cap: Option<Capability<u64>> = caps.pop();
        let mut data_cap: Option<Capability<u64>> = caps.pop();
        let mut stash: BTreeMap<u64, Vec<Rec>> = BTreeMap::new();
        // Input partitions' end markers seen so far, of `ends`.
        let mut ended = 0usize;
        // A resumed run's windows start after the one it resumed from.
        let mut next = shared.first;
        for cap in data_cap.iter_mut().chain(durable_cap.iter_mut()) {
            cap.downgrade(&next);
        }
        move |frontiers| {
            input.for_each(|cap, data| {
                let time = cap.least().copied().unwrap_or(next);
                stash.entry(time).or_default().append(data);
            });
            let frontier = &frontiers[0];
            let close_to = if frontier.is_empty() {
                stash.keys().next_back().map_or(next, |t| (t + 1).max(next))
            } else {
                frontier.frontier().iter().min().copied().unwrap_or(next)
            };
            let Some(cap) = data_cap.as_mut() else {
                return;
            };
            while next < close_to {
                let time = next;
                let batches = stash.remove(&time).unwrap_or_default();
                // The stream's last window: the one in which the last
                // input partition's marker arrived.
                let before = ended;
                ended += batches.iter().filter(|r| r.1 == MARKER).count();
                let last = ended >= ends && before < ends;
                let mut out = Vec::new();
                if !shared.failed() {
                    let window = shared.window(time);
                    for (partition, instance) in hosted.borrow_mut().iter_mut() {
                        let name = instance.name().to_owned();
                        let result = guarded(&name, Some(window), || {
                            instance.begin_window(window)?;
                            for (_, edge, target, batch) in &batches {
                                if *edge != MARKER && *target as usize == *partition {
                                    instance.process(batch)?;
                                }
                            }
                            instance.end_window(last)?;
                            shared.checkpoint(node, &mut **instance, time, last)
                        });
                        if let Err(e) = result {
                            shared.fail(e);
                        }
                        out.extend(shared.records(instance.take_output()));
                    }
                }
                if last {
                    shared.last_window.set(Some(time));
                }
                if !out.is_empty() {
                    data_out.activate().session(&*cap).give_container(&mut out);
                }
                next = time + 1;
                cap.downgrade(&next);
                // A window closed after a failure was not saved: the
                // durability stream stays where the failure was.
                if let Some(durable) = durable_cap.as_mut().filter(|_| !shared.failed()) {
                    durable.downgrade(&next);
                }
            }
            if frontier.is_empty() {
                let mut out = Vec::new();
                if !shared.failed() {
                    for (_, instance) in hosted.borrow_mut().iter_mut() {
                        let name = instance.name().to_owned();
                        if let Err(e) = guarded(&name, None, || instance.end_of_stream()) {
                            shared.fail(e);
                        }
                        out.extend(shared.records(instance.take_output()));
                    }
                }
                if !out.is_empty() {
                    data_out.activate().session(&*cap).give_container(&mut out);
                }
                data_cap = None;
                durable_cap = None;
            }
        }
    });
    (data_stream, durable_stream)
}
