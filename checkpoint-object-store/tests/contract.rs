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

#[test]
fn large_snapshots_and_chunks_go_up_in_parts_and_come_back_whole() {
    use checkpoint_core::{Chunk, ChunkId, Snapshot, SnapshotMeta, WindowId};

    #[derive(checkpoint_core::Checkpoint)]
    struct Blob {
        bytes: Vec<u64>,
    }
    // 12 MiB of state: three parts of 5 MiB (the last one shorter).
    let window = WindowId::new(1, 7);
    let blob = Blob {
        bytes: (0..(12u64 << 20) / 8).map(checkpoint_core::splitmix64).collect(),
    };
    let snapshot = Snapshot::encode(&blob, SnapshotMeta::new("big", window)).expect("encode");
    assert!(snapshot.len() > 12 << 20);
    let id = ChunkId {
        window,
        map: 0,
        group: 1,
    };
    let payload: Vec<u8> = snapshot[..(7 << 20)].to_vec();
    let (chunk, _) = Chunk::encode("big", id, 8, 1, &payload).expect("chunk");
    let url = common::location("jobs/parts");
    for agent in [
        ObjectStoreAgent::from_url("memory://jobs/parts").expect("agent"),
        common::agent_at(&url),
    ] {
        let agent = agent.with_multipart(6 << 20, 5 << 20);
        agent.save("big", window, &snapshot).expect("save in parts");
        assert!(agent.load("big", window).expect("load") == snapshot, "{agent:?}");
        agent
            .save_chunks("big", &[(id, chunk.clone())])
            .expect("chunk in parts");
        assert!(agent.load_chunk("big", id).expect("load chunk") == chunk, "{agent:?}");
        assert_eq!(agent.windows("big").expect("windows"), [window]);
    }
    // S3 names an object uploaded in parts by its parts: `"<md5>-<count>"`.
    let rest = url.strip_prefix("s3://").expect("s3 URL");
    let (bucket, prefix) = rest.split_once('/').expect("a prefix");
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
    for (key, value) in common::settings() {
        builder = builder.with_config(key.parse().expect("a setting"), value);
    }
    let store = builder.build().expect("client");
    let path = object_store::path::Path::from(format!("{prefix}/big/{:016x}", window.as_u64()));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let meta = runtime
        .block_on(object_store::ObjectStore::head(&store, &path))
        .expect("head");
    let e_tag = meta.e_tag.expect("an ETag");
    assert!(
        e_tag.trim_matches('"').ends_with("-3"),
        "not uploaded in 3 parts: {e_tag}"
    );
}
