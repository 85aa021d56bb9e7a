//! The layout fingerprint is stable (the same on every build, asserted
//! against literals computed once) and sees exactly what
//! `docs/FINGERPRINT.md` says: field names and order, persisted field types
//! by their last path segment plus generic arguments, nested fingerprints,
//! variant names and the version; not the type's name, path prefixes or
//! transient fields.

#![allow(dead_code, reason = "the types exist for their fingerprints only")]

use std::collections::HashMap;

use checkpoint_core::{Checkpoint, LayoutHasher};

mod zone {
    /// A type reached through a module path.
    #[derive(serde::Serialize, serde::Deserialize)]
    pub(crate) struct Zone(pub(crate) u32);
}
use zone::Zone;

#[derive(Checkpoint)]
struct Inner {
    seen: u64,
    #[checkpoint(transient)]
    buffer: Vec<u8>,
}

/// The reference layout.
#[derive(Checkpoint)]
struct Stats {
    total: u64,
    per_zone: std::collections::HashMap<u32, zone::Zone>,
    #[checkpoint(nested)]
    inner: Inner,
}

/// The same layout under another name, with short paths and an extra
/// transient field.
#[derive(Checkpoint)]
struct RenamedWithShortPaths {
    total: u64,
    per_zone: HashMap<u32, Zone>,
    #[checkpoint(transient)]
    cache: Vec<String>,
    #[checkpoint(nested)]
    inner: Inner,
}

#[derive(Checkpoint)]
struct FieldRenamed {
    sum: u64,
    per_zone: HashMap<u32, Zone>,
    #[checkpoint(nested)]
    inner: Inner,
}

#[derive(Checkpoint)]
struct FieldsReordered {
    per_zone: HashMap<u32, Zone>,
    total: u64,
    #[checkpoint(nested)]
    inner: Inner,
}

#[derive(Checkpoint)]
struct FieldTypeChanged {
    total: u32,
    per_zone: HashMap<u32, Zone>,
    #[checkpoint(nested)]
    inner: Inner,
}

#[derive(Checkpoint)]
struct GenericArgumentChanged {
    total: u64,
    per_zone: HashMap<u64, Zone>,
    #[checkpoint(nested)]
    inner: Inner,
}

#[derive(Checkpoint)]
#[checkpoint(version = 2)]
struct VersionBumped {
    total: u64,
    per_zone: HashMap<u32, Zone>,
    #[checkpoint(nested)]
    inner: Inner,
}

#[derive(Checkpoint)]
struct FieldMadeTransient {
    total: u64,
    #[checkpoint(transient)]
    per_zone: HashMap<u32, Zone>,
    #[checkpoint(nested)]
    inner: Inner,
}

#[derive(Checkpoint)]
struct FieldAdded {
    total: u64,
    per_zone: HashMap<u32, Zone>,
    #[checkpoint(nested)]
    inner: Inner,
    extra: bool,
}

/// `Inner` with another persisted field changes every type that nests it.
mod other_inner {
    use super::*;

    #[derive(Checkpoint)]
    pub(crate) struct Inner {
        seen: u64,
        dropped: u64,
    }

    #[derive(Checkpoint)]
    pub(crate) struct Stats {
        total: u64,
        per_zone: HashMap<u32, Zone>,
        #[checkpoint(nested)]
        inner: Inner,
    }
}

#[derive(Checkpoint)]
enum Mode {
    Idle,
    Running { since: u64 },
    Done(u64),
}

#[derive(Checkpoint)]
enum ModeRenamedVariant {
    Idle,
    Running { since: u64 },
    Finished(u64),
}

#[derive(Checkpoint)]
enum ModeReordered {
    Running { since: u64 },
    Idle,
    Done(u64),
}

#[derive(Checkpoint)]
#[checkpoint(stateless)]
struct Stateless {
    x: u64,
}

#[derive(Checkpoint)]
#[checkpoint(stateless)]
struct OtherStateless {
    y: String,
}

/// Literal values, computed once. They must never change: a change means
/// every snapshot written by these types is refused after an upgrade.
#[test]
fn fingerprints_are_stable_literals() {
    assert_eq!(Inner::FINGERPRINT, 0x58b0_5ae3_52c2_cdd8);
    assert_eq!(Stats::FINGERPRINT, 0xd198_4a4d_4680_7ea9);
    assert_eq!(Mode::FINGERPRINT, 0x5e1b_8636_d812_c4d7);
    assert_eq!(Stateless::FINGERPRINT, 0x44ff_ba21_12c5_d037);
}

/// The recipe of `docs/FINGERPRINT.md`, step by step.
#[test]
fn fingerprints_follow_the_documented_recipe() {
    const INNER: u64 = LayoutHasher::new()
        .write_str("struct")
        .write_u64(1)
        .write_str("seen")
        .write_u64(0)
        .write_str("u64")
        .write_u64(1)
        .finish();
    assert_eq!(Inner::FINGERPRINT, INNER);

    const STATS: u64 = LayoutHasher::new()
        .write_str("struct")
        .write_u64(3)
        .write_str("total")
        .write_u64(0)
        .write_str("u64")
        .write_str("per_zone")
        .write_u64(0)
        .write_str("HashMap<u32,Zone>")
        .write_str("inner")
        .write_u64(1)
        .write_u64(INNER)
        .write_u64(1)
        .finish();
    assert_eq!(Stats::FINGERPRINT, STATS);

    const MODE: u64 = LayoutHasher::new()
        .write_str("enum")
        .write_u64(3)
        .write_str("Idle")
        .write_u64(0)
        .write_str("Running")
        .write_u64(1)
        .write_str("since")
        .write_u64(0)
        .write_str("u64")
        .write_str("Done")
        .write_u64(1)
        .write_str("0")
        .write_u64(0)
        .write_str("u64")
        .write_u64(1)
        .finish();
    assert_eq!(Mode::FINGERPRINT, MODE);

    const STATELESS: u64 = LayoutHasher::new().write_str("stateless").write_u64(1).finish();
    assert_eq!(Stateless::FINGERPRINT, STATELESS);
}

#[test]
fn what_does_not_change_the_fingerprint() {
    // The type's name, path prefixes and transient fields.
    assert_eq!(RenamedWithShortPaths::FINGERPRINT, Stats::FINGERPRINT);
    // A stateless type's fields.
    assert_eq!(OtherStateless::FINGERPRINT, Stateless::FINGERPRINT);
}

#[test]
fn what_changes_the_fingerprint() {
    let reference = Stats::FINGERPRINT;
    for (what, fingerprint) in [
        ("a field renamed", FieldRenamed::FINGERPRINT),
        ("fields reordered", FieldsReordered::FINGERPRINT),
        ("a field's type changed", FieldTypeChanged::FINGERPRINT),
        ("a generic argument changed", GenericArgumentChanged::FINGERPRINT),
        ("the version bumped", VersionBumped::FINGERPRINT),
        ("a field made transient", FieldMadeTransient::FINGERPRINT),
        ("a field added", FieldAdded::FINGERPRINT),
        ("a nested type's layout changed", other_inner::Stats::FINGERPRINT),
    ] {
        assert_ne!(fingerprint, reference, "{what} must change the fingerprint");
    }
    assert_ne!(ModeRenamedVariant::FINGERPRINT, Mode::FINGERPRINT, "a variant renamed");
    assert_ne!(ModeReordered::FINGERPRINT, Mode::FINGERPRINT, "variants reordered");
}
