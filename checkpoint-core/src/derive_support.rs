//! Helpers for the code `#[derive(Checkpoint)]` generates, re-exported from
//! `__private`; not a public API.
//!
//! Each trait is implemented for every type that has what the derive needs
//! (`Serialize`, `Default`, `Checkpoint`, ...) and only forwards to it. It
//! exists for its `#[diagnostic::on_unimplemented]` message: when a field's
//! type lacks what its attribute needs, the compiler reports it on that
//! field, in the derive's words, with what to write instead.

use std::any::Any;
use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::checkpoint::{Checkpoint, StateLayout, payload};
use crate::description::{Describer, StateField};
use crate::error::{PayloadError, SnapshotError};

/// A saved field, written with serde + postcard.
#[diagnostic::on_unimplemented(
    message = "the field type `{Self}` cannot be saved: it does not implement `serde::Serialize`",
    label = "saved with serde, so this type needs `Serialize` and `Deserialize`",
    note = "derive them on the type: `#[derive(serde::Serialize, serde::Deserialize)]`",
    note = "or mark the field `#[checkpoint(nested)]` if its type implements `Checkpoint`, or \
            `#[checkpoint(transient)]` if it is not state to save"
)]
pub trait SaveField {
    /// Writes the field with postcard.
    fn save_field<W: Write>(&self, out: &mut W) -> Result<(), PayloadError>;
}

impl<T: Serialize + ?Sized> SaveField for T {
    #[inline]
    fn save_field<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        payload::encode(self, out)
    }
}

/// A saved field, read back with serde + postcard.
#[diagnostic::on_unimplemented(
    message = "the field type `{Self}` cannot be restored: it does not implement `serde::Deserialize`",
    label = "saved with serde, so this type needs `Serialize` and `Deserialize`",
    note = "derive them on the type: `#[derive(serde::Serialize, serde::Deserialize)]`",
    note = "or mark the field `#[checkpoint(nested)]` if its type implements `Checkpoint`, or \
            `#[checkpoint(transient)]` if it is not state to save"
)]
pub trait RestoreField: Sized {
    /// Reads the field with postcard from the front of `input`.
    fn restore_field(input: &mut &[u8]) -> Result<Self, PayloadError>;
    /// Describes the field.
    fn describe_field(describer: &mut Describer, name: &str, type_text: &str) -> StateField;
}

impl<T: DeserializeOwned> RestoreField for T {
    #[inline]
    fn restore_field(input: &mut &[u8]) -> Result<Self, PayloadError> {
        payload::decode(input)
    }

    fn describe_field(describer: &mut Describer, name: &str, type_text: &str) -> StateField {
        describer.plain::<T>(name, type_text)
    }
}

/// A `#[checkpoint(nested)]` field: saved through its own `Checkpoint` impl.
#[diagnostic::on_unimplemented(
    message = "the field type `{Self}` is marked `nested` but does not implement `Checkpoint`",
    label = "`nested` saves this field through its own `Checkpoint` impl",
    note = "derive it on the type: `#[derive(Checkpoint)]`",
    note = "or remove `nested` to save the field with serde (its type then needs `serde::Serialize` and \
            `serde::Deserialize`)"
)]
pub trait NestedField: Sized {
    /// The field type's layout fingerprint.
    const NESTED_FINGERPRINT: u64;
    /// Whether the field type has configuration fields.
    const NESTED_HAS_CONFIG: bool;
    /// Whether the field type holds keyed state only.
    const NESTED_KEYED_ONLY: bool;
    /// [`Checkpoint::capture_config`].
    fn capture_nested_config(&self) -> Option<Box<dyn Any + Send>>;
    /// [`Checkpoint::restore_config`].
    fn restore_nested_config(&mut self, config: &(dyn Any + Send));
    /// Writes the field's persisted state.
    fn save_nested<W: Write>(&self, out: &mut W) -> Result<(), PayloadError>;
    /// Reads the field's state from the front of `input`.
    fn restore_nested(input: &mut &[u8]) -> Result<Self, PayloadError>;
    /// Describes the field.
    fn describe_nested(describer: &mut Describer, name: &str) -> StateField;
}

impl<T: Checkpoint> NestedField for T {
    const NESTED_FINGERPRINT: u64 = <T as Checkpoint>::FINGERPRINT;
    const NESTED_HAS_CONFIG: bool = <T as Checkpoint>::HAS_CONFIG;
    const NESTED_KEYED_ONLY: bool = <T as Checkpoint>::KEYED_ONLY;

    #[inline]
    fn capture_nested_config(&self) -> Option<Box<dyn Any + Send>> {
        <T as Checkpoint>::capture_config(self)
    }

    #[inline]
    fn restore_nested_config(&mut self, config: &(dyn Any + Send)) {
        <T as Checkpoint>::restore_config(self, config)
    }

    #[inline]
    fn save_nested<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        <T as Checkpoint>::encode_state(self, out)
    }

    #[inline]
    fn restore_nested(input: &mut &[u8]) -> Result<Self, PayloadError> {
        <T as Checkpoint>::decode_state(input)
    }

    fn describe_nested(describer: &mut Describer, name: &str) -> StateField {
        describer.nested::<T>(name)
    }
}

/// A `#[checkpoint(keyed)]` field: a [`KeyedMap`](crate::KeyedMap).
#[diagnostic::on_unimplemented(
    message = "the field type `{Self}` is marked `keyed` but is not a `KeyedMap`",
    label = "`keyed` saves a `KeyedMap` group by group",
    note = "use `checkpoint_core::KeyedMap<K, V>` for state kept per key",
    note = "or remove `keyed` to save the field with serde, or mark it `nested` if it implements `Checkpoint`"
)]
pub trait KeyedField: Sized {
    /// Writes the map.
    fn save_keyed<W: Write>(&self, out: &mut W) -> Result<(), PayloadError>;
    /// Reads the map from the front of `input`.
    fn restore_keyed(input: &mut &[u8]) -> Result<Self, PayloadError>;
    /// Describes the field.
    fn describe_keyed(describer: &mut Describer, name: &str, type_text: &str) -> StateField;
}

impl<K: crate::StateKey, V: crate::StateValue> KeyedField for crate::KeyedMap<K, V> {
    #[inline]
    fn save_keyed<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        <Self as Checkpoint>::encode_state(self, out)
    }

    #[inline]
    fn restore_keyed(input: &mut &[u8]) -> Result<Self, PayloadError> {
        <Self as Checkpoint>::decode_state(input)
    }

    fn describe_keyed(describer: &mut Describer, name: &str, type_text: &str) -> StateField {
        describer.keyed::<K, V>(name, type_text)
    }
}

/// A `#[checkpoint(config)]` field: copied from the value handed to the
/// DAG and set again after every restore.
#[diagnostic::on_unimplemented(
    message = "the config field type `{Self}` cannot be carried to later restores: it needs `Clone + Send + 'static`",
    label = "copied from the operator value handed to the DAG, and set again after every restore",
    note = "derive or implement `Clone` for the type (`#[derive(Clone)]`); it must also be `Send` and own its data",
    note = "or, if the field is state to save, remove `config`"
)]
pub trait ConfigField: Sized {
    /// A copy for the carrier, or from it.
    fn clone_config(&self) -> Self;
}

impl<T: Clone + Send + 'static> ConfigField for T {
    #[inline]
    fn clone_config(&self) -> Self {
        self.clone()
    }
}

/// A `#[checkpoint(config)]` field's value between decoding a snapshot and
/// setting this run's configuration (and after a decode outside a job).
#[diagnostic::on_unimplemented(
    message = "the config field type `{Self}` does not implement `Default`, which fills it when a snapshot is decoded",
    label = "not saved: `Default::default()` until the runtime sets this run's value",
    note = "derive or implement `Default` for the type: `#[derive(Default)]`, or wrap the field in `Option`"
)]
pub trait ConfigPlaceholder: Sized {
    /// The field's value in a decoded snapshot.
    fn config_placeholder() -> Self;
}

impl<T: Default> ConfigPlaceholder for T {
    #[inline]
    fn config_placeholder() -> Self {
        T::default()
    }
}

/// A `#[checkpoint(transient)]` field without `default = "..."`.
#[diagnostic::on_unimplemented(
    message = "the transient field type `{Self}` does not implement `Default`, which restores it",
    label = "restored as `Default::default()`",
    note = "derive or implement `Default` for the type: `#[derive(Default)]`",
    note = "or name a function that builds it: `#[checkpoint(transient, default = \"path::to::fn\")]`"
)]
pub trait TransientField: Sized {
    /// The value the field has after a restore.
    fn transient_default() -> Self;
}

impl<T: Default> TransientField for T {
    #[inline]
    fn transient_default() -> Self {
        T::default()
    }
}

/// The type named by `previous = ...`.
#[diagnostic::on_unimplemented(
    message = "the `previous` type `{Self}` does not implement `Checkpoint`",
    label = "older snapshots are decoded as this type, then converted",
    note = "derive it on the type: `#[derive(Checkpoint)]`, with the version it was saved with"
)]
pub trait PreviousState: Sized {
    /// Its version.
    const PREVIOUS_VERSION: u32;
    /// [`Checkpoint::decode_versioned`].
    fn decode_previous(layout: &StateLayout<'_>, input: &mut &[u8]) -> Result<Self, SnapshotError>;
}

impl<T: Checkpoint> PreviousState for T {
    const PREVIOUS_VERSION: u32 = <T as Checkpoint>::VERSION;

    #[inline]
    fn decode_previous(layout: &StateLayout<'_>, input: &mut &[u8]) -> Result<Self, SnapshotError> {
        <T as Checkpoint>::decode_versioned(layout, input)
    }
}

/// A type with `previous = Old`: converts a restored `Old`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be built from its previous version `{Old}`",
    label = "a snapshot of `{Old}` is converted with `From<{Old}>`",
    note = "implement the upgrade: `impl From<{Old}> for {Self} {{ fn from(old: {Old}) -> Self {{ ... }} }}`"
)]
pub trait UpgradeFrom<Old>: Sized {
    /// Converts the previous version's state.
    fn upgrade_from(old: Old) -> Self;
}

impl<Old, T: From<Old>> UpgradeFrom<Old> for T {
    #[inline]
    fn upgrade_from(old: Old) -> Self {
        T::from(old)
    }
}
