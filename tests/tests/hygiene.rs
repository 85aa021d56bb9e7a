//! The derive's output names everything by its full path: a crate that
//! shadows the prelude (`Result`, `Ok`, `Err`, `Option`, `Some`, `None`,
//! `Vec`, `Default`, `Box`, `String`, ...) still derives (serde's
//! `test_gen.rs` does the same).
#![no_implicit_prelude]
#![allow(
    dead_code,
    non_camel_case_types,
    reason = "the shadowing items exist only to be in the way"
)]

#[allow(
    unused_extern_crates,
    reason = "`no_implicit_prelude` hides the extern prelude from plain paths; the lint does not see that"
)]
extern crate checkpoint_core;
extern crate std;

use std::assert_eq;
use std::collections::BTreeMap;
use std::string::ToString;

use checkpoint_core::{Snapshot, SnapshotMeta, WindowId};

// Items with the names generated code must not rely on.
struct Result;
struct Ok;
struct Err;
struct Option;
struct Some;
struct None;
struct Vec;
struct Default;
struct Box;
struct String;
struct Write;
struct From;
struct Any;
struct Send;
struct Clone;
struct Checkpoint_;
trait Serialize {}
trait Deserialize {}
mod core {}
mod serde {}
mod postcard {}
mod io {}

fn fresh() -> u32 {
    7
}

#[derive(std::fmt::Debug, std::cmp::PartialEq, checkpoint_core::Checkpoint)]
struct Named {
    counts: BTreeMap<u32, std::string::String>,
    bytes: std::vec::Vec<u8>,
    boxed: std::boxed::Box<[u8]>,
    maybe: std::option::Option<u64>,
    #[checkpoint(nested)]
    inner: Tuple,
    #[checkpoint(transient)]
    scratch: std::vec::Vec<u32>,
    #[checkpoint(transient, default = "fresh")]
    seven: u32,
    #[checkpoint(config)]
    setting: std::string::String,
}

#[derive(std::fmt::Debug, std::cmp::PartialEq, checkpoint_core::Checkpoint)]
struct Configured<T> {
    #[checkpoint(config)]
    label: T,
    #[checkpoint(nested)]
    named: Named,
}

#[derive(std::fmt::Debug, std::cmp::PartialEq, checkpoint_core::Checkpoint)]
struct Tuple(i32, #[checkpoint(transient)] u8);

#[derive(std::fmt::Debug, std::cmp::PartialEq, checkpoint_core::Checkpoint)]
enum State {
    A,
    B(std::string::String, #[checkpoint(transient)] u8),
    C {
        #[checkpoint(nested)]
        t: Tuple,
    },
}

#[derive(std::fmt::Debug, std::cmp::PartialEq, checkpoint_core::Checkpoint)]
struct Generic<T> {
    items: std::vec::Vec<T>,
}

#[derive(std::fmt::Debug, std::cmp::PartialEq, checkpoint_core::Checkpoint)]
struct OldNamed {
    total: u32,
}

#[derive(std::fmt::Debug, std::cmp::PartialEq, checkpoint_core::Checkpoint)]
#[checkpoint(version = 2, previous = OldNamed)]
struct NewNamed {
    total: u64,
}

impl std::convert::From<OldNamed> for NewNamed {
    fn from(old: OldNamed) -> Self {
        NewNamed {
            total: <u64 as std::convert::From<u32>>::from(old.total),
        }
    }
}

#[derive(std::fmt::Debug, std::cmp::PartialEq, checkpoint_core::Checkpoint)]
#[checkpoint(stateless)]
struct Nothing {
    x: u8,
}

fn round_trip<T: checkpoint_core::Checkpoint>(state: &T) -> T {
    let meta = SnapshotMeta::new("op", WindowId::new(1, 1));
    let bytes = Snapshot::encode(state, meta).expect("encode");
    Snapshot::decode::<T>(&bytes).expect("decode").1
}

#[test]
fn derives_with_the_prelude_shadowed() {
    let mut counts = BTreeMap::new();
    counts.insert(1, "one".to_string());
    let named = Named {
        counts,
        bytes: std::vec![1, 2],
        boxed: std::vec![3u8].into_boxed_slice(),
        maybe: std::option::Option::Some(4),
        inner: Tuple(-1, 9),
        scratch: std::vec![5],
        seven: 0,
        setting: "this run".to_string(),
    };
    let mut back = round_trip(&named);
    assert_eq!(back.setting, std::string::String::new());
    let config = checkpoint_core::Checkpoint::capture_config(&named).expect("config");
    checkpoint_core::Checkpoint::restore_config(&mut back, &*config);
    assert_eq!(back.setting, named.setting);
    assert_eq!(back.counts, named.counts);
    assert_eq!(back.bytes, named.bytes);
    assert_eq!(back.boxed, named.boxed);
    assert_eq!(back.maybe, named.maybe);
    assert_eq!(back.inner, Tuple(-1, 0));
    assert_eq!(back.scratch, std::vec::Vec::<u32>::new());
    assert_eq!(back.seven, 7);

    assert_eq!(round_trip(&State::A), State::A);
    assert_eq!(round_trip(&State::B("b".to_string(), 1)), State::B("b".to_string(), 0));
    assert_eq!(round_trip(&State::C { t: Tuple(2, 2) }), State::C { t: Tuple(2, 0) });
    assert_eq!(
        round_trip(&Generic { items: std::vec![1u8] }),
        Generic { items: std::vec![1u8] }
    );
    assert_eq!(round_trip(&Nothing { x: 3 }), Nothing { x: 0 });

    let old = Snapshot::encode(&OldNamed { total: 5 }, SnapshotMeta::new("op", WindowId::new(1, 1))).expect("encode");
    assert_eq!(
        Snapshot::decode::<NewNamed>(&old).expect("upgrade").1,
        NewNamed { total: 5 }
    );
    assert_eq!(<NewNamed as checkpoint_core::Checkpoint>::VERSION, 2);
}
