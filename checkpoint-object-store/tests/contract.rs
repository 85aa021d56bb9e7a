//! The storage agent contract on the object-store agent: in memory, and
//! against a real S3 endpoint over HTTP on loopback.

mod common;

#[path = "../../checkpoint-core/tests/support/contract.rs"]
mod support;

use checkpoint_core::StorageAgent;
use checkpoint_object_store::ObjectStoreAgent;

#[test]
fn the_in_memory_store_keeps_the_contract() {
    support::contract(&ObjectStoreAgent::from_url("memory://jobs/a").expect("agent"));
    support::chunk_contract(&ObjectStoreAgent::from_url("memory://jobs/b").expect("agent"));
    support::manifest_contract(&ObjectStoreAgent::from_url("memory://jobs/c").expect("agent"));
}

#[test]
fn an_s3_endpoint_keeps_the_contract() {
    support::contract(&common::agent("jobs/contract"));
    support::chunk_contract(&common::agent("jobs/chunks"));
    support::manifest_contract(&common::agent("jobs/manifest"));
}

#[test]
fn names_that_need_escaping_round_trip_and_prefixes_do_not_mix() {
    let a = common::agent("one");
    let window = checkpoint_core::WindowId::new(1, 2);
    for name in ["count#0", "zone 7", "a%b", "ünï"] {
        a.save(name, window, &support::snap(name, window, 5)).expect("save");
        assert_eq!(a.windows(name).expect("windows"), [window], "{name}");
        assert_eq!(support::value(&a, name, window), 5);
    }
    let mut expected = vec![
        "a%b".to_owned(),
        "count#0".to_owned(),
        "zone 7".to_owned(),
        "ünï".to_owned(),
    ];
    expected.sort();
    assert_eq!(a.operators().expect("operators"), expected);
    // The manifest is not an operator; another prefix sees none of it.
    a.save_manifest(b"m").expect("manifest");
    assert_eq!(a.operators().expect("operators"), expected);
}
