//! `#[checkpoint(crate = path)]` for a crate that reaches checkpoint-core
//! under another name.

extern crate checkpoint_core as ck;

use ck::{Checkpoint, Snapshot, SnapshotMeta, WindowId};

/// A re-export path works as well as an `extern crate` alias.
mod reexport {
    pub(crate) use ck as inner;
}

#[derive(Debug, PartialEq, ck::Checkpoint)]
#[checkpoint(crate = ck)]
struct Counter {
    total: u64,
    #[checkpoint(transient)]
    pending: Vec<u64>,
}

#[derive(Debug, PartialEq, ck::Checkpoint)]
#[checkpoint(crate = crate::reexport::inner, version = 2, previous = Counter)]
struct CounterV2 {
    total: u64,
    #[checkpoint(nested)]
    last: Counter,
}

impl From<Counter> for CounterV2 {
    fn from(old: Counter) -> Self {
        CounterV2 {
            total: old.total,
            last: Counter {
                total: 0,
                pending: Vec::new(),
            },
        }
    }
}

#[test]
fn renamed_crate() {
    let meta = SnapshotMeta::new("count", WindowId::new(9, 9));
    let bytes = Snapshot::encode(
        &Counter {
            total: 3,
            pending: vec![1],
        },
        meta,
    )
    .expect("encode");
    let (_, back) = Snapshot::decode::<Counter>(&bytes).expect("decode");
    assert_eq!(
        back,
        Counter {
            total: 3,
            pending: Vec::new()
        }
    );
    let (_, upgraded) = Snapshot::decode::<CounterV2>(&bytes).expect("upgrade");
    assert_eq!(upgraded.total, 3);
    assert_eq!(CounterV2::VERSION, 2);
}
